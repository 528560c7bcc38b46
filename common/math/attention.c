#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

void sy_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int H) {
    const int hd = C / H, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * C3;
        for (int h = 0; h < H; h++) {
            const float *q = base + h * hd, *k = base + C + h * hd, *v = base + 2 * C + h * hd;
            float *p = att + ((size_t)b * H + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, C3, k, C3, 0.0f, p, T);
            for (int i = 0; i < T; i++) {
                float *row = p + (size_t)i * T;
                sy_softmax_row(row, i + 1);
                memset(row + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, p, T, v, C3, 0.0f,
                        out + (size_t)b * T * C + h * hd, C);
        }
    }
}

void sy_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att, int B,
                           int T, int C, int H) {
    const int hd = C / H, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * C3;
        float *dbase = dqkv + (size_t)b * T * C3;
        for (int h = 0; h < H; h++) {
            const float *q = base + h * hd, *k = base + C + h * hd, *v = base + 2 * C + h * hd;
            float *dq = dbase + h * hd, *dk = dbase + C + h * hd, *dv = dbase + 2 * C + h * hd;
            const float *p = att + ((size_t)b * H + h) * T * T;
            const float *dO = dout + (size_t)b * T * C + h * hd;
            float *dp = scratch;
            /* dP = dO V^T ; dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, C, v, C3, 0.0f, dp, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, p, T, dO, C, 1.0f, dv, C3);
            /* dS = P * (dP - sum_j P dP), causal part only */
            for (int i = 0; i < T; i++) {
                const float *pr = p + (size_t)i * T;
                float *dr = dp + (size_t)i * T;
                double s = 0.0;
                for (int j = 0; j <= i; j++)
                    s += (double)pr[j] * dr[j];
                for (int j = 0; j <= i; j++)
                    dr[j] = pr[j] * (dr[j] - (float)s);
                memset(dr + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
            }
            /* S = scale Q K^T:  dQ += scale dS K ; dK += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dp, T, k, C3, 1.0f, dq, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dp, T, q, C3, 1.0f, dk, C3);
        }
    }
}
