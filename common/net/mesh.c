#include "mesh.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int sy_apportion(int total, int n, const double *w, int *out) {
    if (n <= 0 || total < n)
        return -1;
    /* shares in proportion to w (floored, at least 1 each), then the remainder by largest
     * fractional part, ties to the lower rank; a floor bumped up to 1 is paid back by the
     * largest shares */
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += w ? (w[i] > 0 ? w[i] : 0) : 1.0;
    if (!(sum > 0))
        return -1;
    double *rem = malloc((size_t)n * sizeof(double));
    if (!rem)
        return -1;
    int given = 0;
    for (int i = 0; i < n; i++) {
        double share = total * ((w ? (w[i] > 0 ? w[i] : 0) : 1.0) / sum);
        int f = (int)floor(share + 1e-9);
        rem[i] = share - f;
        out[i] = f < 1 ? 1 : f;
        given += out[i];
    }
    while (given > total) {
        int big = 0;
        for (int i = 1; i < n; i++)
            if (out[i] > out[big])
                big = i;
        out[big]--;
        given--;
    }
    while (given < total) {
        int best = 0;
        for (int i = 1; i < n; i++)
            if (rem[i] > rem[best] + 1e-12)
                best = i;
        out[best]++;
        rem[best] = -1.0;
        given++;
    }
    free(rem);
    return 0;
}

int sy_mesh_plan(sy_mesh *m, int W, int E, int B, const double *gflops, double balance_ratio) {
    memset(m, 0, sizeof *m);
    if (W < 1 || E < 1) {
        sy_seterr("mesh: need at least one worker and one expert (got %d workers, %d experts)", W, E);
        return -1;
    }
    if (B < W) {
        sy_seterr("mesh: a global batch of %d rows cannot be split over %d workers", B, W);
        return -1;
    }
    int P = 1;
    for (int p = 1; p <= W && p <= E; p++)
        if (W % p == 0)
            P = p;
    m->world = W;
    m->ep = P;
    m->dp = W / P;
    m->n_experts = E;
    m->global_batch = B;
    m->e_begin = calloc((size_t)P, sizeof(int));
    m->e_end = calloc((size_t)P, sizeof(int));
    m->row0 = calloc((size_t)W, sizeof(int));
    m->nrows = calloc((size_t)W, sizeof(int));
    int *ecount = calloc((size_t)P, sizeof(int));
    double *pw = calloc((size_t)P, sizeof(double));
    if (!m->e_begin || !m->e_end || !m->row0 || !m->nrows || !ecount || !pw) {
        free(ecount);
        free(pw);
        sy_mesh_free(m);
        sy_seterr("mesh: out of memory");
        return -1;
    }
    double lo = INFINITY, hi = 0.0;
    if (gflops)
        for (int r = 0; r < W; r++) {
            lo = gflops[r] < lo ? gflops[r] : lo;
            hi = gflops[r] > hi ? gflops[r] : hi;
        }
    m->balanced = gflops && lo > 0 && balance_ratio > 0 && hi / lo > balance_ratio;
    if (m->balanced) {
        sy_apportion(B, W, gflops, m->nrows);
        for (int p = 0; p < P; p++) {
            pw[p] = INFINITY;
            for (int d = 0; d < m->dp; d++)
                pw[p] = gflops[d * P + p] < pw[p] ? gflops[d * P + p] : pw[p];
        }
        sy_apportion(E, P, pw, ecount);
    } else {
        for (int r = 0; r < W; r++)
            m->nrows[r] = (int)((long)(r + 1) * B / W - (long)r * B / W);
        for (int p = 0; p < P; p++)
            ecount[p] = (int)((long)(p + 1) * E / P - (long)p * E / P);
    }
    int row = 0, e = 0;
    for (int r = 0; r < W; r++) {
        m->row0[r] = row;
        row += m->nrows[r];
    }
    for (int p = 0; p < P; p++) {
        m->e_begin[p] = e;
        e += ecount[p];
        m->e_end[p] = e;
    }
    free(ecount);
    free(pw);
    return 0;
}

void sy_mesh_equal_experts(sy_mesh *m) {
    int E = m->n_experts, P = m->ep;
    for (int p = 0; p < P; p++) {
        m->e_begin[p] = (int)((long)p * E / P);
        m->e_end[p] = (int)((long)(p + 1) * E / P);
    }
}

void sy_mesh_free(sy_mesh *m) {
    free(m->e_begin);
    free(m->e_end);
    free(m->row0);
    free(m->nrows);
    memset(m, 0, sizeof *m);
}

int sy_mesh_owner(const sy_mesh *m, int d, int e) {
    for (int p = 0; p < m->ep; p++)
        if (e >= m->e_begin[p] && e < m->e_end[p])
            return d * m->ep + p;
    return -1;
}
