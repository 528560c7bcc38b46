#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

/* Causal attention in query blocks of SY_ATT_BLOCK rows: block [i0, i1) needs the keys
 * [0, i1) only, so the scores above the diagonal are never computed except inside the
 * diagonal block, and the products with P or dS stop at column i1. With T = 256 and
 * blocks of 64 that is 10/16 of the full T x T work; smaller blocks trim more but make
 * sgemm calls too small to run at full rate. The sums are the same as the full-width
 * version (the skipped terms were zeros). */
#define SY_ATT_BLOCK 64

void sy_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int H) {
    const int hd = C / H, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * C3;
        for (int h = 0; h < H; h++) {
            const float *q = base + h * hd, *k = base + C + h * hd, *v = base + 2 * C + h * hd;
            float *p = att + ((size_t)b * H + h) * T * T;
            float *o = out + (size_t)b * T * C + h * hd;
            for (int i0 = 0; i0 < T; i0 += SY_ATT_BLOCK) {
                int i1 = i0 + SY_ATT_BLOCK < T ? i0 + SY_ATT_BLOCK : T, n = i1 - i0;
                float *pb = p + (size_t)i0 * T;
                /* S[i0:i1, 0:i1] = scale Q[i0:i1] K[0:i1]^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, i1, hd, scale, q + (size_t)i0 * C3, C3, k,
                            C3, 0.0f, pb, T);
                for (int i = i0; i < i1; i++) {
                    float *row = p + (size_t)i * T;
                    sy_softmax_row(row, i + 1);
                    memset(row + i + 1, 0, (size_t)(i1 - i - 1) * sizeof(float));
                }
                /* O[i0:i1] = P[i0:i1, 0:i1] V[0:i1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, i1, 1.0f, pb, T, v, C3, 0.0f,
                            o + (size_t)i0 * C, C);
            }
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
            for (int i0 = 0; i0 < T; i0 += SY_ATT_BLOCK) {
                int i1 = i0 + SY_ATT_BLOCK < T ? i0 + SY_ATT_BLOCK : T, n = i1 - i0;
                const float *pb = p + (size_t)i0 * T, *dOb = dO + (size_t)i0 * C;
                float *dp = scratch + (size_t)i0 * T;
                /* dP = dO V^T ; dV += P^T dO  (rows i0:i1, keys 0:i1) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, i1, hd, 1.0f, dOb, C, v, C3, 0.0f, dp, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, n, 1.0f, pb, T, dOb, C, 1.0f, dv, C3);
                /* dS = P * (dP - sum_j P dP), causal part only */
                for (int i = i0; i < i1; i++) {
                    const float *pr = p + (size_t)i * T;
                    float *dr = scratch + (size_t)i * T;
                    double s = 0.0;
                    for (int j = 0; j <= i; j++)
                        s += (double)pr[j] * dr[j];
                    for (int j = 0; j <= i; j++)
                        dr[j] = pr[j] * (dr[j] - (float)s);
                    memset(dr + i + 1, 0, (size_t)(i1 - i - 1) * sizeof(float));
                }
                /* S = scale Q K^T:  dQ += scale dS K ; dK += scale dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, i1, scale, dp, T, k, C3, 1.0f,
                            dq + (size_t)i0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, n, scale, dp, T, q + (size_t)i0 * C3, C3,
                            1.0f, dk, C3);
            }
        }
    }
}
