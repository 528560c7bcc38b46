#include "router.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

double sy_capacity_factor_decimal(float cf) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)cf);
    return strtod(buf, NULL);
}

int sy_router_capacity(double capacity_factor, int n, int E) {
    double c = ceil(capacity_factor * n / E);
    if (c < 0)
        c = 0;
    if (c > (double)n)
        c = n; /* a group can never send more than its tokens to one expert */
    return (int)c;
}

void sy_router_forward(sy_route *r, const float *x, const float *w, int n, int C, int E, int k, int capacity,
                       double *aux, double *z) {
    sy_matmul_forward(r->logits, x, w, n, C, E, 0.0f);
    if (n > 0)
        memcpy(r->probs, r->logits, (size_t)n * E * sizeof(float));
    memset(r->kept, 0, (size_t)E * sizeof(int));
    memset(r->wanted, 0, (size_t)E * sizeof(int));
    double zsum = 0.0;
    int order[64];
    int *ord = E <= 64 ? order : malloc((size_t)E * sizeof(int));
    if (!ord)
        abort(); /* a few hundred bytes: out of memory here is not recoverable */
    for (int t = 0; t < n; t++) {
        float *p = r->probs + (size_t)t * E;
        r->lse[t] = sy_softmax_row(p, E);
        zsum += (double)r->lse[t] * r->lse[t];
        /* top-k by probability, ties to the lower expert index (as argmax does) */
        for (int e = 0; e < E; e++)
            ord[e] = e;
        for (int j = 0; j < k; j++) {
            int best = j;
            for (int e = j + 1; e < E; e++)
                if (p[ord[e]] > p[ord[best]] || (p[ord[e]] == p[ord[best]] && ord[e] < ord[best]))
                    best = e;
            int tmp = ord[j];
            ord[j] = ord[best];
            ord[best] = tmp;
            r->choice[(size_t)t * k + j] = ord[j];
        }
        r->argmax[t] = ord[0];
    }
    if (ord != order)
        free(ord);
    /* capacity: choice rank by rank, tokens in order */
    for (int j = 0; j < k; j++) {
        for (int t = 0; t < n; t++) {
            int *ch = &r->choice[(size_t)t * k + j];
            int e = *ch;
            r->wanted[e]++;
            if (r->kept[e] < capacity) {
                r->kept[e]++;
                r->gate[(size_t)t * k + j] = r->probs[(size_t)t * E + e];
            } else {
                *ch = -1;
                r->gate[(size_t)t * k + j] = 0.0f;
            }
        }
    }
    /* aux = E * sum_i f_i P_i */
    double a = 0.0;
    if (n > 0) {
        for (int e = 0; e < E; e++) {
            int cnt = 0;
            double P = 0.0;
            for (int t = 0; t < n; t++) {
                cnt += r->argmax[t] == e;
                P += r->probs[(size_t)t * E + e];
            }
            a += ((double)cnt / n) * (P / n);
        }
        a *= E;
    }
    *aux = a;
    *z = n > 0 ? zsum / n : 0.0;
}

void sy_router_backward(float *dlogits, const sy_route *r, const float *dgate, int n, int E, int k, float aux_scale,
                        float z_scale) {
    if (n == 0)
        return;
    /* d aux / d p[t,i] = E f_i / n, the same for every token */
    float daux[256];
    float *da = E <= 256 ? daux : malloc((size_t)E * sizeof(float));
    if (!da)
        abort();
    for (int e = 0; e < E; e++)
        da[e] = 0.0f;
    for (int t = 0; t < n; t++)
        da[r->argmax[t]] += 1.0f;
    for (int e = 0; e < E; e++)
        da[e] = aux_scale * (float)E * (da[e] / n) / n;
    for (int t = 0; t < n; t++) {
        const float *p = r->probs + (size_t)t * E;
        float *dl = dlogits + (size_t)t * E;
        for (int e = 0; e < E; e++)
            dl[e] = da[e]; /* dl holds dp for now */
        for (int j = 0; j < k; j++) {
            int e = r->choice[(size_t)t * k + j];
            if (e >= 0)
                dl[e] += dgate[(size_t)t * k + j];
        }
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += (double)p[e] * dl[e];
        float zt = z_scale * 2.0f * r->lse[t] / n;
        for (int e = 0; e < E; e++)
            dl[e] = p[e] * (dl[e] - (float)s) + zt * p[e];
    }
    if (da != daux)
        free(da);
}
