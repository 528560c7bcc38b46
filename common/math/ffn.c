#include "ffn.h"

#include <cblas.h>
#include <stddef.h>

#include "kernels.h"

void sy_ffn_forward(float *Y, float *H, const float *X, const float *w1, const float *w2, const float *mask, int n,
                    int C, int F) {
    if (n == 0)
        return;
    size_t nf = (size_t)n * F;
    sy_matmul_forward(H, X, w1, n, C, F, 0.0f);
    sy_relu_forward(H, nf);
    if (mask)
        for (size_t i = 0; i < nf; i++)
            H[i] *= mask[i];
    sy_matmul_forward(Y, H, w2, n, F, C, 0.0f);
}

void sy_ffn_backward(float *dX, float *dw1, float *dw2, float *dH, const float *dY, const float *X, const float *H,
                     const float *w1, const float *w2, const float *mask, int n, int C, int F) {
    if (n == 0)
        return;
    size_t nf = (size_t)n * F;
    /* dH = dY w2^T (overwritten by sgemm's beta 0: no pass to zero n*F floats first), dw2 += H^T dY */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, F, C, 1.0f, dY, C, w2, C, 0.0f, dH, F);
    sy_matmul_backward(NULL, dw2, dY, H, w2, n, F, C);
    if (mask)
        for (size_t i = 0; i < nf; i++)
            dH[i] *= mask[i];
    /* H = relu(.) * mask: where mask != 0, H > 0 exactly where the relu passed */
    sy_relu_backward(dH, H, nf);
    sy_matmul_backward(dX, dw1, dH, X, w1, n, C, F);
}
