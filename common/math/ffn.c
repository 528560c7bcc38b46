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

void sy_ffn_backward_input(float *dX, float *dH, const float *dY, const float *H, const float *w1, const float *w2,
                           const float *mask, int n, int C, int F) {
    if (n == 0)
        return;
    size_t nf = (size_t)n * F;
    /* dH = dY w2^T (overwritten by sgemm's beta 0: no pass to zero n*F floats first) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, F, C, 1.0f, dY, C, w2, C, 0.0f, dH, F);
    if (mask)
        for (size_t i = 0; i < nf; i++)
            dH[i] *= mask[i];
    /* H = relu(.) * mask: where mask != 0, H > 0 exactly where the relu passed */
    sy_relu_backward(dH, H, nf);
    sy_matmul_backward(dX, NULL, dH, NULL, w1, n, C, F);
}

void sy_ffn_backward_weights(float *dw1, float *dw2, const float *dH, const float *dY, const float *X, const float *H,
                             int n, int C, int F) {
    if (n == 0)
        return;
    sy_matmul_backward(NULL, dw2, dY, H, NULL, n, F, C); /* dw2 += H^T dY */
    sy_matmul_backward(NULL, dw1, dH, X, NULL, n, C, F); /* dw1 += X^T dH */
}

void sy_ffn_backward(float *dX, float *dw1, float *dw2, float *dH, const float *dY, const float *X, const float *H,
                     const float *w1, const float *w2, const float *mask, int n, int C, int F) {
    sy_ffn_backward_input(dX, dH, dY, H, w1, w2, mask, n, C, F);
    sy_ffn_backward_weights(dw1, dw2, dH, dY, X, H, n, C, F);
}
