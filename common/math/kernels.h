/* kernels.h: the model's building blocks, each a forward/backward pair over caller-owned
 * row-major float32 buffers. N rows (tokens), C channels, K/M matrix dims, V vocab.
 * Backward functions ACCUMULATE (+=) into parameter gradients and into input gradients;
 * the caller zeroes them once per step (model.c). */
#ifndef SY_KERNELS_H
#define SY_KERNELS_H

#include <stddef.h>

#define SY_RMSNORM_EPS 1e-6f

/* out[N,M] = inp[N,K] @ w[K,M]  (beta = 0: overwrite; 1: accumulate) */
void sy_matmul_forward(float *out, const float *inp, const float *w, int N, int K, int M, float beta);
/* dinp[N,K] += dout[N,M] @ w^T (skipped when dinp NULL); dw[K,M] += inp^T @ dout (skipped when dw NULL) */
void sy_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int K,
                        int M);

/* out[N,C] = x / sqrt(mean(x^2) + eps) * w;  rstd[N] saved for backward */
void sy_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C);
/* dx[N,C] += ..., dw[C] += ... */
void sy_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd,
                         int N, int C);

/* in place: x = max(x, 0) */
void sy_relu_forward(float *x, size_t n);
/* dx *= (y > 0), where y is the relu output */
void sy_relu_backward(float *dx, const float *y, size_t n);

/* Cross-entropy of logits[N,V] against targets[N]. Returns the SUM of -log p[target]
 * (in double). When dlogits is not NULL it is SET to scale * (softmax - onehot). */
double sy_crossentropy(float *dlogits, const float *logits, const int *targets, int N, int V, float scale);

/* Row softmax in place over n entries; returns logsumexp of the row. */
float sy_softmax_row(float *x, int n);

/* y[i] += a * x[i] */
void sy_axpy(float *y, const float *x, float a, size_t n);

#endif
