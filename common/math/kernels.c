#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void sy_matmul_forward(float *out, const float *inp, const float *w, int N, int K, int M, float beta) {
    if (N == 0 || M == 0)
        return;
    if (K == 0) {
        if (beta == 0.0f)
            memset(out, 0, (size_t)N * M * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, M, K, 1.0f, inp, K, w, M, beta, out, M);
}

void sy_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int K,
                        int M) {
    if (N == 0 || K == 0 || M == 0)
        return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, K, M, 1.0f, dout, M, w, M, 1.0f, dinp, K);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, M, N, 1.0f, inp, K, dout, M, 1.0f, dw, M);
}

void sy_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++)
            ss += (double)xi[c] * xi[c];
        float r = (float)(1.0 / sqrt(ss / C + SY_RMSNORM_EPS));
        rstd[i] = r;
        for (int c = 0; c < C; c++)
            oi[c] = xi[c] * r * w[c];
    }
}

/* y_c = w_c x_c r,  r = (mean x^2 + eps)^-1/2
 * dx_j = r w_j dy_j - (r^3 / C) x_j sum_c dy_c w_c x_c;  dw_c = sum_i dy_c x_c r */
void sy_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd,
                         int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        const float *di = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float r = rstd[i];
        double dot = 0.0;
        for (int c = 0; c < C; c++) {
            dot += (double)di[c] * w[c] * xi[c];
            dw[c] += di[c] * xi[c] * r;
        }
        float k = (float)(dot * r * r * r / C);
        for (int c = 0; c < C; c++)
            dxi[c] += r * w[c] * di[c] - k * xi[c];
    }
}

void sy_relu_forward(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void sy_relu_backward(float *dx, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
}

float sy_softmax_row(float *x, int n) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    double s = 0.0;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        s += x[j];
    }
    float inv = (float)(1.0 / s);
    for (int j = 0; j < n; j++)
        x[j] *= inv;
    return mx + (float)log(s);
}

double sy_crossentropy(float *dlogits, const float *logits, const int *targets, int N, int V, float scale) {
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        const float *li = logits + (size_t)i * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++)
            mx = li[v] > mx ? li[v] : mx;
        double s = 0.0;
        for (int v = 0; v < V; v++)
            s += exp((double)li[v] - mx);
        double lse = mx + log(s);
        total += lse - li[targets[i]];
        if (dlogits) {
            float *d = dlogits + (size_t)i * V;
            for (int v = 0; v < V; v++)
                d[v] = scale * (float)exp((double)li[v] - lse);
            d[targets[i]] -= scale;
        }
    }
    return total;
}

void sy_axpy(float *y, const float *x, float a, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}
