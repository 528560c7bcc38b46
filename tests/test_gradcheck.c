/* test_gradcheck: finite-difference checks of every backward pass, independent of the
 * PyTorch reference cases. Each check differentiates a scalar loss numerically with
 * double-precision central differences over the float32 forward code and compares it
 * element by element with the analytic gradient:
 *   pass when |analytic - numeric| <= atol + arel * max|analytic of the tensor| + rtol * |numeric|
 * (the absolute part: float32 rounding noise of the forward does not shrink with one
 * element's gradient). Kernels use L = sum(out * R) for a fixed random R. Routing choices
 * and capacity drops are piecewise constant: an element whose perturbation changes them
 * (or, in the FFN kernel, the ReLU pattern) is skipped; the count is reported and
 * bounded. Inside the whole model ReLU kinks cannot be observed, so the step is chosen
 * per element by halving until the quotients settle (see adaptive_quotient), and each
 * tensor must also pass ||analytic - numeric|| / ||numeric|| <= 3e-2 over its sampled
 * elements. Every check prints its worst element; SY_GRADCHECK_VERBOSE=1 prints every
 * model tensor too. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attention.h"
#include "ffn.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "router.h"

/* ------------------------------------------------------------ random numbers */

/* splitmix64, local to the test so the inputs do not depend on the code under test */
static uint64_t rng_state;
static void rseed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 12345; }
static uint64_t rnext(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double runif(void) { return (double)(rnext() >> 11) * (1.0 / 9007199254740992.0); }
static void fill(float *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * runif());
}
static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}
static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------ bookkeeping */

typedef struct {
    char name[96];
    double atol, arel, rtol; /* atol + arel * max|analytic| of the tensor + rtol * |numeric| */
    double atol_eff, gmax;
    int adaptive;            /* pick the step per element by halving (ReLU kinks inside the model) */
    double norm_tol;         /* > 0: also require ||a - n|| <= norm_tol * ||n|| over the checked elements */
    double sum_d2, sum_n2;
    int checked, skipped, failed, retried, unsettled;
    double worst_ratio, worst_abs, worst_rel, worst_a, worst_n;
    char worst_where[96];
    long worst_idx;
} fdstat;

static void fd_begin(fdstat *s, double atol, double arel, double rtol, const char *fmt, ...) {
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->atol = s->atol_eff = atol;
    s->arel = arel;
    s->rtol = rtol;
    s->worst_ratio = -1.0;
}

static double fd_tol(const fdstat *s, double n) { return s->atol_eff + s->rtol * fabs(n); }

static void fd_add(fdstat *s, const char *where, long idx, double a, double n) {
    double diff = fabs(a - n), ratio = diff / fd_tol(s, n);
    if (!isfinite(ratio))
        ratio = INFINITY; /* NaN or Inf anywhere fails */
    s->checked++;
    s->sum_d2 += diff * diff;
    s->sum_n2 += n * n;
    if (!(ratio <= 1.0)) {
        s->failed++;
        if (s->failed <= 8)
            printf("  FAIL %s: %s[%ld] analytic % .8e numeric % .8e |diff| %.3e\n", s->name, where, idx, a, n, diff);
    }
    if (ratio > s->worst_ratio) {
        s->worst_ratio = ratio;
        s->worst_abs = diff;
        s->worst_rel = diff / fmax(fabs(n), 1e-30);
        s->worst_a = a;
        s->worst_n = n;
        s->worst_idx = idx;
        snprintf(s->worst_where, sizeof s->worst_where, "%s", where);
    }
}

static double fd_normerr(const fdstat *s) { return s->sum_n2 > 0 ? sqrt(s->sum_d2 / s->sum_n2) : sqrt(s->sum_d2); }

static int verbose(void) { return getenv("SY_GRADCHECK_VERBOSE") != NULL; }

static int fd_passed(const fdstat *s) { return !s->failed && !(s->norm_tol > 0 && !(fd_normerr(s) <= s->norm_tol)); }

/* Prints the worst element (quiet: only on failure or with SY_GRADCHECK_VERBOSE) and
 * fails the test on any failed element, on a norm error over norm_tol, or when more than
 * max_skip_frac of the elements had to be skipped (the check would then prove little). */
static void fd_end_q(fdstat *s, double max_skip_frac, int quiet) {
    if (!quiet || !fd_passed(s) || verbose())
        printf("gradcheck %-52s n=%4d skip=%3d smaller-step=%2d unsettled=%d worst |a-n|=%.2e rel=%.2e (%.2f of tol) "
           "at %s[%ld] a=% .5e n=% .5e; ||a-n||/||n||=%.1e\n",
           s->name, s->checked, s->skipped, s->retried, s->unsettled, s->worst_abs, s->worst_rel, s->worst_ratio,
           s->worst_where, s->worst_idx, s->worst_a, s->worst_n, fd_normerr(s));
    fflush(stdout);
    if (s->failed)
        fail_msg("%s: %d of %d elements outside tolerance (atol %.1e + %.1e max|a|, rtol %.1e)", s->name,
                 s->failed, s->checked, s->atol, s->arel, s->rtol);
    assert_true(s->checked > 0);
    if (s->norm_tol > 0 && !(fd_normerr(s) <= s->norm_tol))
        fail_msg("%s: ||analytic - numeric|| / ||numeric|| = %.3e > %.1e", s->name, fd_normerr(s), s->norm_tol);
    if (s->skipped > max_skip_frac * (s->checked + s->skipped))
        fail_msg("%s: %d of %d elements skipped (routing/ReLU changed)", s->name, s->skipped,
                 s->checked + s->skipped);
}

static void fd_end(fdstat *s, double max_skip_frac) { fd_end_q(s, max_skip_frac, 0); }

/* A problem: loss() runs the forward at the current inputs and returns the scalar loss;
 * same_piece() (optional) says whether the last loss() stayed on the base piece of a
 * piecewise smooth function. */
typedef struct fdprob fdprob;
struct fdprob {
    double (*loss)(fdprob *p);
    int (*same_piece)(fdprob *p);
};

/* Central difference of p's loss wrt x[i] with step about h. Returns 0 (skip) when
 * either side left the base piece. The step is taken as the float values actually
 * stored, so rounding of x +- h does not bias the quotient. */
static int central(fdprob *p, float *x, size_t i, double h, double *num) {
    float x0 = x[i];
    float xp = (float)((double)x0 + h), xm = (float)((double)x0 - h);
    x[i] = xp;
    double lp = p->loss(p);
    int ok = !p->same_piece || p->same_piece(p);
    x[i] = xm;
    double lm = p->loss(p);
    ok = ok && (!p->same_piece || p->same_piece(p));
    x[i] = x0;
    *num = (lp - lm) / ((double)xp - (double)xm);
    return ok;
}

/* Inside the model a ReLU kink near x bends the difference quotient and cannot be
 * observed directly. Starting from step h, halve the step until levels t-1 and t agree
 * in two ways: the central quotients C match, and the one-sided gap
 * g = D_forward - D_backward halves with the step, as it does for a smooth function
 * (g = f'' h + O(h^3)). A kink closer to x than the step keeps g at the jump in slope
 * whatever the step, so it is caught even when C is steady. Agreement: within 0.2% or
 * 1e-3 of the tensor's largest gradient. The choice never looks at the analytic value.
 * Returns 0 when every level changed the routing (skip), 1 when settled after
 * *halvings extra halvings, 2 when no level settled (the closest pair is used). */
static int adaptive_quotient(const fdstat *s, fdprob *p, float *x, size_t i, double h, double f0, double *num,
                             int *halvings) {
    enum { LEVELS = 9 };
    double C[LEVELS], g[LEVELS], bestgap = INFINITY;
    int ok[LEVELS], any = 0;
    float x0 = x[i];
    for (int t = 0; t < LEVELS; t++) {
        double ht = h / (double)(1 << t);
        float xp = (float)((double)x0 + ht), xm = (float)((double)x0 - ht);
        x[i] = xp;
        double fp = p->loss(p);
        ok[t] = !p->same_piece || p->same_piece(p);
        x[i] = xm;
        double fm = p->loss(p);
        ok[t] = ok[t] && (!p->same_piece || p->same_piece(p));
        x[i] = x0;
        double hp = (double)xp - x0, hm = (double)x0 - xm;
        C[t] = (fp - fm) / (hp + hm);
        g[t] = (fp - f0) / hp - (f0 - fm) / hm;
        if (t == 0 || !ok[t] || !ok[t - 1])
            continue;
        double thr = 1e-3 * s->gmax + 2e-3 * fabs(C[t]) + 1e-300;
        double gap = fmax(fabs(C[t] - C[t - 1]), fabs(g[t - 1] - 2.0 * g[t]));
        any = 1;
        if (gap <= thr) {
            *num = C[t];
            *halvings = t - 1;
            return 1;
        }
        if (gap / thr < bestgap) {
            bestgap = gap / thr;
            *num = C[t];
        }
    }
    return any ? 2 : 0;
}

/* Checks a[i] = d loss / d x[i] for the listed indices (all n when idx is NULL).
 * Step: hrel * max(|x_i|, hmin) (the first step when s->adaptive). */
static void check_tensor(fdstat *s, fdprob *p, const char *where, float *x, const float *a, size_t n,
                         const size_t *idx, size_t cnt, double hrel, double hmin) {
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs((double)a[i]));
    s->atol_eff = s->atol + s->arel * gmax;
    s->gmax = gmax;
    size_t m = idx ? cnt : n;
    const double f0 = s->adaptive ? p->loss(p) : 0.0;
    for (size_t j = 0; j < m; j++) {
        size_t i = idx ? idx[j] : j;
        double h = hrel * fmax(fabs((double)x[i]), hmin), num = 0.0;
        int halvings = 0;
        int r = s->adaptive ? adaptive_quotient(s, p, x, i, h, f0, &num, &halvings) : central(p, x, i, h, &num);
        if (r == 0) {
            s->skipped++;
            continue;
        }
        s->unsettled += r == 2;
        s->retried += halvings > 0;
        fd_add(s, where, (long)i, a[i], num);
    }
}

/* Analytic gradients must come back accumulated onto what was there: the backward
 * functions add (+=). Buffers are pre-filled with `pre`, which is then subtracted. */
static void unfill(float *g, size_t n, float pre) {
    for (size_t i = 0; i < n; i++)
        g[i] -= pre;
}
static void prefill(float *g, size_t n, float pre) {
    for (size_t i = 0; i < n; i++)
        g[i] = pre;
}

/* ------------------------------------------------------------ matmul */

typedef struct {
    fdprob p;
    int N, K, M;
    float *inp, *w, *out, *R;
} mm_prob;

static double mm_loss(fdprob *p) {
    mm_prob *q = (mm_prob *)p;
    sy_matmul_forward(q->out, q->inp, q->w, q->N, q->K, q->M, 0.0f);
    return dot(q->out, q->R, (size_t)q->N * q->M);
}

static void test_matmul(void **state) {
    (void)state;
    const int shapes[][3] = {{5, 7, 3}, {16, 32, 24}, {1, 1, 1}, {3, 1, 4}, {1, 9, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1], M = shapes[s][2];
        rseed(100 + s);
        mm_prob q = {{mm_loss, NULL}, N, K, M, falloc((size_t)N * K), falloc((size_t)K * M), falloc((size_t)N * M),
                     falloc((size_t)N * M)};
        fill(q.inp, (size_t)N * K, -1, 1);
        fill(q.w, (size_t)K * M, -1, 1);
        fill(q.R, (size_t)N * M, -1, 1);
        float *dinp = falloc((size_t)N * K), *dw = falloc((size_t)K * M);
        prefill(dinp, (size_t)N * K, 0.25f);
        prefill(dw, (size_t)K * M, -0.5f);
        sy_matmul_backward(dinp, dw, q.R, q.inp, q.w, N, K, M);
        unfill(dinp, (size_t)N * K, 0.25f);
        unfill(dw, (size_t)K * M, -0.5f);
        fdstat st;
        fd_begin(&st, 1e-6, 2e-4, 1e-3, "matmul N=%d K=%d M=%d dinp", N, K, M);
        /* linear: large steps are exact */
        check_tensor(&st, &q.p, "inp", q.inp, dinp, (size_t)N * K, NULL, 0, 0.1, 0.5);
        fd_end(&st, 0.0);
        fd_begin(&st, 1e-6, 2e-4, 1e-3, "matmul N=%d K=%d M=%d dw", N, K, M);
        check_tensor(&st, &q.p, "w", q.w, dw, (size_t)K * M, NULL, 0, 0.1, 0.5);
        fd_end(&st, 0.0);
        /* NULL skips one of the two gradients and leaves the other exact */
        float *dw2 = falloc((size_t)K * M);
        sy_matmul_backward(NULL, dw2, q.R, q.inp, q.w, N, K, M);
        for (size_t i = 0; i < (size_t)K * M; i++)
            assert_true(fabsf(dw2[i] - dw[i]) <= 1e-5f * (1.0f + fabsf(dw[i])));
        free(dw2);
        free(dinp);
        free(dw);
        free(q.inp);
        free(q.w);
        free(q.out);
        free(q.R);
    }
}

/* ------------------------------------------------------------ rmsnorm */

typedef struct {
    fdprob p;
    int N, C;
    float *x, *w, *out, *rstd, *R;
} rn_prob;

static double rn_loss(fdprob *p) {
    rn_prob *q = (rn_prob *)p;
    sy_rmsnorm_forward(q->out, q->rstd, q->x, q->w, q->N, q->C);
    return dot(q->out, q->R, (size_t)q->N * q->C);
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int shapes[][2] = {{4, 16}, {3, 5}, {1, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t NC = (size_t)N * C;
        rseed(200 + s);
        rn_prob q = {{rn_loss, NULL}, N, C, falloc(NC), falloc((size_t)C), falloc(NC), falloc((size_t)N), falloc(NC)};
        fill(q.x, NC, -2, 2);
        /* last row tiny: mean(x^2) comparable to eps, where eps matters in the gradient */
        for (int c = 0; c < C; c++)
            q.x[(size_t)(N - 1) * C + c] *= 5e-4f;
        fill(q.w, (size_t)C, 0.5, 1.5);
        fill(q.R, NC, -1, 1);
        float *dx = falloc(NC), *dw = falloc((size_t)C);
        rn_loss(&q.p); /* rstd for the backward */
        prefill(dx, NC, 0.125f);
        prefill(dw, (size_t)C, 1.0f);
        sy_rmsnorm_backward(dx, dw, q.R, q.x, q.w, q.rstd, N, C);
        unfill(dx, NC, 0.125f);
        unfill(dw, (size_t)C, 1.0f);
        fdstat st;
        /* dx on the tiny row is large (~1/sqrt(eps) scale): the tolerances are relative */
        fd_begin(&st, 1e-6, 2e-4, 1e-3, "rmsnorm N=%d C=%d dx", N, C);
        for (int i = 0; i < N; i++) {
            /* per row: the step and the tolerance follow the row's own scale */
            double rowmax = 0.0;
            for (int c = 0; c < C; c++)
                rowmax = fmax(rowmax, fabs(q.x[(size_t)i * C + c]));
            check_tensor(&st, &q.p, "x", q.x + (size_t)i * C, dx + (size_t)i * C, (size_t)C, NULL, 0, 1e-2, rowmax);
        }
        fd_end(&st, 0.0);
        fd_begin(&st, 1e-6, 2e-4, 1e-3, "rmsnorm N=%d C=%d dw", N, C);
        check_tensor(&st, &q.p, "w", q.w, dw, (size_t)C, NULL, 0, 1e-2, 0.1);
        fd_end(&st, 0.0);
        free(dx);
        free(dw);
        free(q.x);
        free(q.w);
        free(q.out);
        free(q.rstd);
        free(q.R);
    }
}

/* ------------------------------------------------------------ ffn (relu) */

typedef struct {
    fdprob p;
    int n, C, F;
    float *X, *w1, *w2, *mask, *Y, *H, *R;
    unsigned char *on; /* base ReLU pattern */
} ffn_prob;

static double ffn_loss(fdprob *p) {
    ffn_prob *q = (ffn_prob *)p;
    sy_ffn_forward(q->Y, q->H, q->X, q->w1, q->w2, q->mask, q->n, q->C, q->F);
    return dot(q->Y, q->R, (size_t)q->n * q->C);
}

static int ffn_same(fdprob *p) {
    ffn_prob *q = (ffn_prob *)p;
    for (size_t i = 0; i < (size_t)q->n * q->F; i++)
        if ((q->H[i] > 0.0f) != q->on[i])
            return 0;
    return 1;
}

static void run_ffn(int n, int C, int F, float p_drop, uint64_t seed) {
    size_t nC = (size_t)n * C, nF = (size_t)n * F;
    rseed(seed);
    ffn_prob q = {{ffn_loss, ffn_same}, n, C, F, falloc(nC), falloc((size_t)C * F), falloc((size_t)F * C),
                  NULL, falloc(nC), falloc(nF), falloc(nC), calloc(nF, 1)};
    assert_non_null(q.on);
    fill(q.X, nC, -1, 1);
    fill(q.w1, (size_t)C * F, -1, 1);
    fill(q.w2, (size_t)F * C, -1, 1);
    fill(q.R, nC, -1, 1);
    int zeros = 0;
    if (p_drop > 0) {
        q.mask = falloc(nF);
        for (size_t i = 0; i < nF; i++) {
            q.mask[i] = runif() < p_drop ? 0.0f : 1.0f / (1.0f - p_drop);
            zeros += q.mask[i] == 0.0f;
        }
        assert_true(zeros > 0 && zeros < (int)nF);
    }
    ffn_loss(&q.p);
    for (size_t i = 0; i < nF; i++)
        q.on[i] = q.H[i] > 0.0f;
    float *dX = falloc(nC), *dw1 = falloc((size_t)C * F), *dw2 = falloc((size_t)F * C), *dH = falloc(nF);
    prefill(dX, nC, 0.5f);
    prefill(dw1, (size_t)C * F, -0.25f);
    prefill(dw2, (size_t)F * C, 2.0f);
    fill(dH, nF, 100, 200); /* scratch: its content must not matter */
    sy_ffn_backward(dX, dw1, dw2, dH, q.R, q.X, q.H, q.w1, q.w2, q.mask, n, C, F);
    unfill(dX, nC, 0.5f);
    unfill(dw1, (size_t)C * F, -0.25f);
    unfill(dw2, (size_t)F * C, 2.0f);
    const char *tag = p_drop > 0 ? "ffn+mask" : "ffn";
    fdstat st;
    fd_begin(&st, 1e-6, 2e-4, 1e-3, "%s n=%d C=%d F=%d dX", tag, n, C, F);
    check_tensor(&st, &q.p, "X", q.X, dX, nC, NULL, 0, 2e-2, 0.2);
    fd_end(&st, 0.1);
    fd_begin(&st, 1e-6, 2e-4, 1e-3, "%s n=%d C=%d F=%d dw1", tag, n, C, F);
    check_tensor(&st, &q.p, "w1", q.w1, dw1, (size_t)C * F, NULL, 0, 2e-2, 0.2);
    fd_end(&st, 0.1);
    fd_begin(&st, 1e-6, 2e-4, 1e-3, "%s n=%d C=%d F=%d dw2", tag, n, C, F);
    check_tensor(&st, &q.p, "w2", q.w2, dw2, (size_t)F * C, NULL, 0, 0.1, 0.5); /* linear in w2 */
    fd_end(&st, 0.0);
    if (q.mask) {
        /* a dropped hidden unit carries no gradient into w2's row for that token: rows of w2
         * whose unit is dropped for every token get exactly zero */
        for (int f = 0; f < F; f++) {
            int any = 0;
            for (int t = 0; t < n; t++)
                any |= q.mask[(size_t)t * F + f] != 0.0f && q.H[(size_t)t * F + f] > 0.0f;
            if (!any)
                for (int c = 0; c < C; c++)
                    assert_true(dw2[(size_t)f * C + c] == 0.0f);
        }
    }
    free(q.X);
    free(q.w1);
    free(q.w2);
    free(q.mask);
    free(q.Y);
    free(q.H);
    free(q.R);
    free(q.on);
    free(dX);
    free(dw1);
    free(dw2);
    free(dH);
}

static void test_ffn(void **state) {
    (void)state;
    run_ffn(6, 8, 12, 0.0f, 300);
    run_ffn(6, 8, 12, 0.3f, 301);
    run_ffn(1, 3, 5, 0.0f, 302);
    run_ffn(9, 4, 16, 0.5f, 303);
}

/* ------------------------------------------------------------ attention */

typedef struct {
    fdprob p;
    int B, T, C, H;
    float *qkv, *out, *att, *R;
} at_prob;

static double at_loss(fdprob *p) {
    at_prob *q = (at_prob *)p;
    sy_attention_forward(q->out, q->att, q->qkv, q->B, q->T, q->C, q->H);
    return dot(q->out, q->R, (size_t)q->B * q->T * q->C);
}

static void test_attention(void **state) {
    (void)state;
    /* the last spans two query blocks of the causal kernel (64 rows), the second partial;
     * longer sequences are checked against a float64 reference below (finite differences
     * of a float loss get too noisy there) */
    const int shapes[][4] = {{2, 5, 8, 2}, {1, 1, 4, 1}, {3, 1, 6, 2}, {2, 4, 6, 1}, {1, 7, 12, 3}, {3, 3, 8, 4},
                             {1, 70, 4, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], H = shapes[s][3];
        size_t N = (size_t)B * T;
        rseed(400 + s);
        at_prob q = {{at_loss, NULL}, B, T, C, H, falloc(N * 3 * C), falloc(N * C), falloc((size_t)B * H * T * T),
                     falloc(N * C)};
        fill(q.qkv, N * 3 * C, -1.5, 1.5);
        fill(q.R, N * C, -1, 1);
        at_loss(&q.p);
        /* saved probabilities: rows sum to 1, zero above the diagonal */
        for (size_t r = 0; r < (size_t)B * H * T; r++) {
            int i = (int)(r % T);
            double sum = 0.0;
            for (int j = 0; j < T; j++) {
                float v = q.att[r * T + j];
                if (j > i)
                    assert_true(v == 0.0f);
                sum += v;
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
        float *dqkv = falloc(N * 3 * C), *scratch = falloc((size_t)T * T);
        prefill(dqkv, N * 3 * C, 0.75f);
        fill(scratch, (size_t)T * T, -9, 9);
        sy_attention_backward(dqkv, scratch, q.R, q.qkv, q.att, B, T, C, H);
        unfill(dqkv, N * 3 * C, 0.75f);
        fdstat st;
        fd_begin(&st, 1e-6, 2e-4, 1e-3, "attention B=%d T=%d C=%d H=%d dqkv", B, T, C, H);
        check_tensor(&st, &q.p, "qkv", q.qkv, dqkv, N * 3 * C, NULL, 0, 1e-2, 0.1);
        fd_end(&st, 0.0);
        /* T = 1: the token attends only to itself, so q and k get exactly zero gradient */
        if (T == 1)
            for (size_t t = 0; t < N; t++)
                for (int c = 0; c < 2 * C; c++)
                    assert_true(dqkv[t * 3 * C + c] == 0.0f);
        /* the part of att the kernel does not write is not read either: NaN there changes nothing */
        float *dqkv2 = falloc(N * 3 * C);
        for (size_t i = 0; i < (size_t)B * H * T * T; i++)
            q.att[i] = NAN;
        at_loss(&q.p);
        prefill(dqkv2, N * 3 * C, 0.75f);
        sy_attention_backward(dqkv2, scratch, q.R, q.qkv, q.att, B, T, C, H);
        unfill(dqkv2, N * 3 * C, 0.75f);
        assert_memory_equal(dqkv, dqkv2, N * 3 * C * sizeof(float));
        free(dqkv2);
        free(dqkv);
        free(scratch);
        free(q.qkv);
        free(q.out);
        free(q.att);
        free(q.R);
    }
}

/* Causal attention written out plainly in float64, for sequences of several query blocks:
 * out[B*T,C] from qkv[B*T,3C]; given dout, dqkv[B*T,3C] (set, not accumulated). */
static void attention_ref(double *out, double *dqkv, const float *qkv, const float *dout, int B, int T, int C, int H) {
    int hd = C / H, C3 = 3 * C;
    double scale = 1.0 / sqrt((double)hd);
    double *P = calloc((size_t)T * T, sizeof(double)), *dS = calloc((size_t)T * T, sizeof(double));
    assert_non_null(P);
    assert_non_null(dS);
    memset(dqkv, 0, (size_t)B * T * C3 * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *base = qkv + (size_t)b * T * C3;
#define Q(i, c) ((double)base[(size_t)(i) * C3 + h * hd + (c)])
#define K(i, c) ((double)base[(size_t)(i) * C3 + C + h * hd + (c)])
#define V(i, c) ((double)base[(size_t)(i) * C3 + 2 * C + h * hd + (c)])
#define DO(i, c) ((double)dout[((size_t)b * T + (i)) * C + h * hd + (c)])
#define DQKV(i, part, c) dqkv[((size_t)b * T + (i)) * C3 + (part) * C + h * hd + (c)]
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= i; j++) {
                    double s = 0.0;
                    for (int c = 0; c < hd; c++)
                        s += Q(i, c) * K(j, c);
                    P[(size_t)i * T + j] = s * scale;
                    mx = fmax(mx, s * scale);
                }
                for (int j = 0; j <= i; j++)
                    sum += P[(size_t)i * T + j] = exp(P[(size_t)i * T + j] - mx);
                for (int j = 0; j <= i; j++)
                    P[(size_t)i * T + j] /= sum;
                for (int c = 0; c < hd; c++) {
                    double o = 0.0;
                    for (int j = 0; j <= i; j++)
                        o += P[(size_t)i * T + j] * V(j, c);
                    out[((size_t)b * T + i) * C + h * hd + c] = o;
                }
                double pdp = 0.0;
                for (int j = 0; j <= i; j++) {
                    double dp = 0.0;
                    for (int c = 0; c < hd; c++)
                        dp += DO(i, c) * V(j, c);
                    dS[(size_t)i * T + j] = dp;
                    pdp += P[(size_t)i * T + j] * dp;
                }
                for (int j = 0; j <= i; j++) {
                    double p = P[(size_t)i * T + j], ds = p * (dS[(size_t)i * T + j] - pdp) * scale;
                    for (int c = 0; c < hd; c++) {
                        DQKV(i, 0, c) += ds * K(j, c);
                        DQKV(j, 1, c) += ds * Q(i, c);
                        DQKV(j, 2, c) += p * DO(i, c);
                    }
                }
            }
#undef Q
#undef K
#undef V
#undef DO
#undef DQKV
        }
    free(P);
    free(dS);
}

static double rel_err(const float *a, const double *ref, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / den);
}

/* Sequences of several query blocks (full ones and a partial last one) against float64. */
static void test_attention_long(void **state) {
    (void)state;
    const int shapes[][4] = {{2, 130, 16, 2}, {1, 256, 32, 4}, {1, 200, 8, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], H = shapes[s][3];
        size_t N = (size_t)B * T;
        rseed(900 + s);
        float *qkv = falloc(N * 3 * C), *out = falloc(N * C), *att = falloc((size_t)B * H * T * T);
        float *dout = falloc(N * C), *dqkv = falloc(N * 3 * C), *scratch = falloc((size_t)T * T);
        double *rout = calloc(N * C, sizeof(double)), *rdqkv = calloc(N * 3 * C, sizeof(double));
        assert_non_null(rout);
        assert_non_null(rdqkv);
        fill(qkv, N * 3 * C, -1.5, 1.5);
        fill(dout, N * C, -1, 1);
        sy_attention_forward(out, att, qkv, B, T, C, H);
        sy_attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, H);
        attention_ref(rout, rdqkv, qkv, dout, B, T, C, H);
        double eo = rel_err(out, rout, N * C), eg = rel_err(dqkv, rdqkv, N * 3 * C);
        printf("attention B=%d T=%d C=%d H=%d vs float64: out %.2e, dqkv %.2e (relative)\n", B, T, C, H, eo, eg);
        assert_true(eo < 1e-6);
        assert_true(eg < 1e-5);
        free(qkv);
        free(out);
        free(att);
        free(dout);
        free(dqkv);
        free(scratch);
        free(rout);
        free(rdqkv);
    }
}

/* ------------------------------------------------------------ cross-entropy */

typedef struct {
    fdprob p;
    int N, V;
    float scale;
    float *logits;
    int *targets;
} ce_prob;

static double ce_loss(fdprob *p) {
    ce_prob *q = (ce_prob *)p;
    return q->scale * sy_crossentropy(NULL, q->logits, q->targets, q->N, q->V, 0.0f);
}

static void test_crossentropy(void **state) {
    (void)state;
    const int shapes[][2] = {{5, 7}, {3, 256}, {1, 2}};
    const float scales[] = {0.37f, 1.0f / 32, 2.5f};
    for (size_t s = 0; s < 3; s++) {
        int N = shapes[s][0], V = shapes[s][1];
        rseed(500 + s);
        ce_prob q = {{ce_loss, NULL}, N, V, scales[s], falloc((size_t)N * V), calloc((size_t)N, sizeof(int))};
        fill(q.logits, (size_t)N * V, -3, 3);
        for (int i = 0; i < N; i++)
            q.targets[i] = (int)(rnext() % (uint64_t)V);
        /* the returned value is the sum of -log p[target], checked by hand in double */
        double want = 0.0;
        for (int i = 0; i < N; i++) {
            double se = 0.0;
            for (int v = 0; v < V; v++)
                se += exp((double)q.logits[(size_t)i * V + v]);
            want += log(se) - q.logits[(size_t)i * V + q.targets[i]];
        }
        float *dl = falloc((size_t)N * V);
        prefill(dl, (size_t)N * V, 1234.0f); /* SET, not accumulated */
        double got = sy_crossentropy(dl, q.logits, q.targets, N, V, q.scale);
        assert_true(fabs(got - want) <= 1e-6 * fabs(want));
        fdstat st;
        fd_begin(&st, 1e-7, 2e-4, 1e-3, "crossentropy N=%d V=%d scale=%g", N, V, (double)q.scale);
        check_tensor(&st, &q.p, "logits", q.logits, dl, (size_t)N * V, NULL, 0, 1e-2, 0.1);
        fd_end(&st, 0.0);
        free(dl);
        free(q.logits);
        free(q.targets);
    }
}

/* ------------------------------------------------------------ router */

typedef struct {
    fdprob p;
    int n, C, E, k, cap;
    float aux_scale, z_scale;
    float *x, *w, *R;
    sy_route r;
    int *base_choice, *base_argmax;
} rt_prob;

static void rt_alloc(rt_prob *q) {
    size_t n = (size_t)q->n, E = (size_t)q->E, k = (size_t)q->k;
    q->x = falloc(n * q->C);
    q->w = falloc((size_t)q->C * E);
    q->R = falloc(n * k);
    q->r.logits = falloc(n * E);
    q->r.probs = falloc(n * E);
    q->r.lse = falloc(n);
    q->r.gate = falloc(n * k);
    q->r.choice = calloc(n * k, sizeof(int));
    q->r.argmax = calloc(n, sizeof(int));
    q->r.kept = calloc(E, sizeof(int));
    q->r.wanted = calloc(E, sizeof(int));
    q->base_choice = calloc(n * k, sizeof(int));
    q->base_argmax = calloc(n, sizeof(int));
    assert_true(q->r.choice && q->r.argmax && q->r.kept && q->r.wanted && q->base_choice && q->base_argmax);
}

static void rt_free(rt_prob *q) {
    free(q->x);
    free(q->w);
    free(q->R);
    free(q->r.logits);
    free(q->r.probs);
    free(q->r.lse);
    free(q->r.gate);
    free(q->r.choice);
    free(q->r.argmax);
    free(q->r.kept);
    free(q->r.wanted);
    free(q->base_choice);
    free(q->base_argmax);
}

static double rt_loss(fdprob *p) {
    rt_prob *q = (rt_prob *)p;
    double aux, z;
    sy_router_forward(&q->r, q->x, q->w, q->n, q->C, q->E, q->k, q->cap, &aux, &z);
    return q->aux_scale * aux + q->z_scale * z + dot(q->r.gate, q->R, (size_t)q->n * q->k);
}

static int rt_same(fdprob *p) {
    rt_prob *q = (rt_prob *)p;
    return !memcmp(q->r.choice, q->base_choice, (size_t)q->n * q->k * sizeof(int)) &&
           !memcmp(q->r.argmax, q->base_argmax, (size_t)q->n * sizeof(int));
}

static void run_router(int n, int C, int E, int k, double cf, float aux_scale, float z_scale, int use_R,
                       uint64_t seed) {
    rt_prob q;
    memset(&q, 0, sizeof q);
    q.p = (fdprob){rt_loss, rt_same};
    q.n = n;
    q.C = C;
    q.E = E;
    q.k = k;
    q.cap = sy_router_capacity(cf, n, E);
    q.aux_scale = aux_scale;
    q.z_scale = z_scale;
    rt_alloc(&q);
    rseed(seed);
    fill(q.x, (size_t)n * C, -1, 1);
    fill(q.w, (size_t)C * E, -1.5, 1.5);
    if (use_R)
        fill(q.R, (size_t)n * k, -1, 1);
    rt_loss(&q.p);
    memcpy(q.base_choice, q.r.choice, (size_t)n * k * sizeof(int));
    memcpy(q.base_argmax, q.r.argmax, (size_t)n * sizeof(int));
    int dropped = 0;
    for (int i = 0; i < n * k; i++)
        dropped += q.r.choice[i] < 0;
    float *dlog = falloc((size_t)n * E), *dx = falloc((size_t)n * C), *dw = falloc((size_t)C * E);
    prefill(dlog, (size_t)n * E, -777.0f); /* SET, not accumulated */
    sy_router_backward(dlog, &q.r, q.R, n, E, k, aux_scale, z_scale);
    sy_matmul_backward(dx, dw, dlog, q.x, q.w, n, C, E);
    char tag[96];
    snprintf(tag, sizeof tag, "router n=%d E=%d k=%d cap=%d drop=%d a=%g z=%g R=%d", n, E, k, q.cap, dropped,
             (double)aux_scale, (double)z_scale, use_R);
    fdstat st;
    fd_begin(&st, 1e-7, 2e-4, 1e-3, "%s dx", tag);
    check_tensor(&st, &q.p, "x", q.x, dx, (size_t)n * C, NULL, 0, 1e-2, 0.1);
    fd_end(&st, 0.25);
    fd_begin(&st, 1e-7, 2e-4, 1e-3, "%s dw", tag);
    check_tensor(&st, &q.p, "w", q.w, dw, (size_t)C * E, NULL, 0, 1e-2, 0.1);
    fd_end(&st, 0.5);
    free(dlog);
    free(dx);
    free(dw);
    rt_free(&q);
}

static void test_router(void **state) {
    (void)state;
    /* each term alone, then together; with capacity drops (cap 3 for 12 tokens over 4) */
    run_router(12, 6, 4, 1, 1.0, 0.0f, 0.0f, 1, 600);
    run_router(12, 6, 4, 1, 1.0, 0.7f, 0.0f, 0, 601);
    run_router(12, 6, 4, 1, 1.0, 0.0f, 0.3f, 0, 602);
    run_router(12, 6, 4, 1, 1.0, 0.5f, 0.2f, 1, 603);
    /* top-2, second choices partly dropped */
    run_router(12, 6, 4, 2, 1.0, 0.5f, 0.2f, 1, 604);
    run_router(10, 5, 3, 2, 1.25, 0.3f, 0.1f, 1, 605);
    /* no drops, E = 1, single token */
    run_router(8, 4, 4, 1, 4.0, 0.5f, 0.2f, 1, 606);
    run_router(5, 3, 1, 1, 1.0, 0.5f, 0.2f, 1, 607);
    run_router(1, 4, 3, 1, 1.0, 0.5f, 0.2f, 1, 608);
}

/* ------------------------------------------------------------ whole model */

typedef struct {
    const char *name;
    int top_k;
    float dropout, expert_dropout, jitter;
    int training;
    double ce_denom, group_denom;
    int64_t token0;
} model_variant;

typedef struct {
    fdprob p;
    sy_model *m;
    sy_pass pass;
    int32_t *tokens;
    int L, E, N, k;
    int **base_route; /* [L] */
    int *base_wanted, *base_kept, *wanted, *kept; /* [L*E] */
} md_prob;

static double md_loss(fdprob *p) {
    md_prob *q = (md_prob *)p;
    sy_losses ls;
    if (sy_model_forward(q->m, &q->pass, q->tokens, &ls))
        fail_msg("forward: %s", sy_lasterr());
    return ls.total;
}

/* Records the routing and per-expert loads of the last forward as the base piece. */
static void md_snapshot(md_prob *q) {
    for (int l = 0; l < q->L; l++) {
        int k;
        const int *r = sy_model_routing(q->m, l, &k);
        if (r) {
            assert_int_equal(k, q->k);
            memcpy(q->base_route[l], r, (size_t)q->N * k * sizeof(int));
        }
        sy_model_expert_load(q->m, l, q->base_wanted + (size_t)l * q->E, q->base_kept + (size_t)l * q->E);
    }
}

static int md_same(fdprob *p) {
    md_prob *q = (md_prob *)p;
    for (int l = 0; l < q->L; l++) {
        int k;
        const int *r = sy_model_routing(q->m, l, &k);
        if (r && memcmp(q->base_route[l], r, (size_t)q->N * k * sizeof(int)))
            return 0;
        sy_model_expert_load(q->m, l, q->wanted + (size_t)l * q->E, q->kept + (size_t)l * q->E);
    }
    return !memcmp(q->wanted, q->base_wanted, (size_t)q->L * q->E * sizeof(int)) &&
           !memcmp(q->kept, q->base_kept, (size_t)q->L * q->E * sizeof(int));
}

static sy_model_cfg tiny_cfg(const model_variant *v) {
    sy_model_cfg c = sy_model_cfg_default();
    c.vocab = 256;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 32;
    c.n_experts = 4;
    c.switch_every = 2;
    c.seq_len = 8;
    c.top_k = v->top_k;
    c.capacity_factor = 1.25f;
    c.eval_capacity_factor = 2.0f;
    /* larger than the defaults so the router's aux and z gradients are well above noise */
    c.aux_loss_coef = 0.5f;
    c.z_loss_coef = 0.05f;
    c.router_jitter = v->jitter;
    c.expert_dropout = v->expert_dropout;
    c.dropout = v->dropout;
    c.init_scale = 1.0f; /* O(1) activations: gradients well above float noise */
    return c;
}

enum { MB = 4, MT = 8, MG = 2 };

/* Builds the tiny model with deterministic weights (norm weights moved off 1) and tokens. */
static sy_model *tiny_model(const model_variant *v, int32_t *tokens, uint64_t seed) {
    sy_model_cfg c = tiny_cfg(v);
    sy_model *m = sy_model_new(&c, MB, MT, NULL);
    if (!m)
        fail_msg("sy_model_new: %s", sy_lasterr());
    sy_model_init_weights(m, seed);
    const sy_layout *lay = sy_model_layout(m);
    float *P = sy_model_params(m);
    rseed(seed);
    for (int i = 0; i < lay->n_params; i++)
        if (lay->params[i].ndim == 1)
            fill(P + lay->params[i].offset, lay->params[i].numel, 0.6, 1.4);
    for (int i = 0; i < MB * (MT + 1); i++)
        tokens[i] = (int32_t)(rnext() % 256);
    return m;
}

/* Elements to check in parameter p: all when small, else `want` spread over the tensor;
 * for wte only rows of tokens that occur as inputs (the others have zero gradient). */
static size_t pick(const sy_param *p, const int32_t *tokens, size_t *idx, size_t want) {
    if (p->numel <= want) {
        for (size_t j = 0; j < p->numel; j++)
            idx[j] = j;
        return p->numel;
    }
    size_t cnt = 0;
    while (cnt < want) {
        size_t j;
        if (!strcmp(p->name, "wte")) {
            int b = (int)(rnext() % MB), t = (int)(rnext() % MT);
            j = (size_t)tokens[b * (MT + 1) + t] * p->shape[1] + rnext() % (uint64_t)p->shape[1];
        } else {
            j = (size_t)(rnext() % p->numel);
        }
        int dup = 0;
        for (size_t i = 0; i < cnt; i++)
            dup |= idx[i] == j;
        if (!dup)
            idx[cnt++] = j;
    }
    return cnt;
}

/* Every expert must get tokens (else its gradient checks prove nothing) and, in the
 * training top-1 variants, some tokens must be dropped: the first seed from `seed` on
 * whose initial weights do that is used (deterministic). */
static int routing_usable(md_prob *q, const model_variant *v, int *dropped) {
    *dropped = 0;
    for (int l = 0; l < q->L; l++) {
        if (!sy_model_routing(q->m, l, NULL))
            continue;
        for (int i = 0; i < q->N * q->k; i++)
            *dropped += q->base_route[l][i] < 0;
        for (int e = 0; e < q->E; e++)
            if (q->base_kept[(size_t)l * q->E + e] == 0)
                return 0;
    }
    return !(v->training && *dropped == 0);
}

static void run_model(const model_variant *v, uint64_t seed) {
    int32_t tokens[MB * (MT + 1)];
    md_prob q;
    memset(&q, 0, sizeof q);
    q.p = (fdprob){md_loss, md_same};
    q.tokens = tokens;
    q.pass = (sy_pass){.B = MB,
                       .T = MT,
                       .groups = MG,
                       .ce_denom = v->ce_denom,
                       .group_denom = v->group_denom,
                       .training = v->training,
                       .seed = 99,
                       .step = 5,
                       .token0 = v->token0};
    sy_model_cfg c = tiny_cfg(v);
    q.L = c.n_layers;
    q.E = c.n_experts;
    q.k = c.top_k;
    q.N = MB * MT;
    q.base_route = calloc((size_t)q.L, sizeof(int *));
    assert_non_null(q.base_route);
    for (int l = 0; l < q.L; l++)
        assert_non_null(q.base_route[l] = calloc((size_t)q.N * q.k, sizeof(int)));
    q.base_wanted = calloc((size_t)q.L * q.E, sizeof(int));
    q.base_kept = calloc((size_t)q.L * q.E, sizeof(int));
    q.wanted = calloc((size_t)q.L * q.E, sizeof(int));
    q.kept = calloc((size_t)q.L * q.E, sizeof(int));
    assert_true(q.base_wanted && q.base_kept && q.wanted && q.kept);

    double L0 = 0.0;
    int dropped = 0, tries = 0;
    for (;; seed++, tries++) {
        if (tries == 50)
            fail_msg("%s: no seed gave every expert a token", v->name);
        sy_model_destroy(&q.m);
        q.m = tiny_model(v, tokens, seed);
        L0 = md_loss(&q.p);
        md_snapshot(&q);
        if (routing_usable(&q, v, &dropped))
            break;
    }
    const sy_layout *lay = sy_model_layout(q.m);
    sy_model_zero_grad(q.m);
    assert_true(md_loss(&q.p) == L0);
    if (sy_model_backward(q.m))
        fail_msg("backward: %s", sy_lasterr());
    printf("model %s: seed %llu loss %.6f, %d choices dropped\n", v->name, (unsigned long long)seed, L0, dropped);

    float *P = sy_model_params(q.m);
    float *G = malloc(lay->total * sizeof(float));
    assert_non_null(G);
    memcpy(G, sy_model_grads(q.m), lay->total * sizeof(float));
    /* one line per variant: the worst element (by share of its tolerance) and the worst
     * tensor (by ||a - n|| / ||n||); per-tensor lines with SY_GRADCHECK_VERBOSE */
    fdstat worst_el = {.worst_ratio = -1}, worst_t = {.worst_ratio = -1};
    double worst_norm = -1.0;
    int checked = 0, skipped = 0, smaller = 0, unsettled = 0;
    size_t idx[24];
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *pp = &lay->params[i];
        size_t cnt = pick(pp, tokens, idx, 24);
        /* first step: 3.2e-2 of the tensor's typical magnitude, then halved as needed */
        double rms = sqrt(dot(P + pp->offset, P + pp->offset, pp->numel) / (double)pp->numel);
        fdstat st;
        fd_begin(&st, 1e-7, 1e-2, 5e-2, "model %s %s", v->name, pp->name);
        st.adaptive = 1;
        st.norm_tol = 3e-2;
        check_tensor(&st, &q.p, pp->name, P + pp->offset, G + pp->offset, pp->numel, idx, cnt, 3.2e-2, rms);
        checked += st.checked;
        skipped += st.skipped;
        smaller += st.retried;
        unsettled += st.unsettled;
        if (st.worst_ratio > worst_el.worst_ratio)
            worst_el = st;
        if (fd_normerr(&st) > worst_norm) {
            worst_norm = fd_normerr(&st);
            worst_t = st;
        }
        fd_end_q(&st, 0.34, 1);
    }
    printf("gradcheck model %-20s %d elements of %d tensors, %d skipped (routing changed), %d needed smaller steps, "
           "%d unsettled\n"
           "    worst element %s[%ld]: analytic % .6e numeric % .6e |diff| %.2e (%.2f of its tolerance)\n"
           "    worst tensor  %s: ||a-n||/||n|| = %.2e (tolerance %.0e)\n",
           v->name, checked, lay->n_params, skipped, smaller, unsettled, worst_el.worst_where, worst_el.worst_idx,
           worst_el.worst_a, worst_el.worst_n, worst_el.worst_abs, worst_el.worst_ratio, worst_t.worst_where,
           worst_norm, 3e-2);
    assert_true(skipped <= checked / 5);
    /* the FD loop restored every parameter: the loss is back to its base value exactly */
    assert_true(md_loss(&q.p) == L0);

    free(G);
    for (int l = 0; l < q.L; l++)
        free(q.base_route[l]);
    free(q.base_route);
    free(q.base_wanted);
    free(q.base_kept);
    free(q.wanted);
    free(q.kept);
    sy_model_destroy(&q.m);
    assert_null(q.m);
}

static void test_model_top1(void **state) {
    (void)state;
    model_variant v = {"top1", 1, 0, 0, 0, 1, 0, 0, 0};
    run_model(&v, 11);
}

static void test_model_top1_eval_sum(void **state) {
    (void)state;
    /* evaluation capacity factor, cross-entropy summed (ce_denom 1), aux/z over 1 group */
    model_variant v = {"top1-eval-sum", 1, 0, 0, 0, 0, 1.0, 1.0, 0};
    run_model(&v, 12);
}

static void test_model_top2(void **state) {
    (void)state;
    model_variant v = {"top2", 2, 0, 0, 0, 1, 0, 0, 0};
    run_model(&v, 13);
}

static void test_model_dropout(void **state) {
    (void)state;
    /* as one of two replicas of a global batch: global denominators, token offset */
    model_variant v = {"dropout", 1, 0.1f, 0.2f, 0, 1, 64.0, 4.0, 32};
    run_model(&v, 14);
}

static void test_model_jitter(void **state) {
    (void)state;
    model_variant v = {"jitter", 1, 0, 0, 0.5f, 1, 0, 0, 0};
    run_model(&v, 15);
}

static void test_model_top2_dropout(void **state) {
    (void)state;
    model_variant v = {"top2-dropout-jitter", 2, 0.1f, 0.2f, 0.05f, 1, 0, 0, 7};
    run_model(&v, 16);
}

/* Training randomness is a function of (seed, step, token): the same pass gives
 * bit-identical losses and gradients, another step gives other masks, and evaluation
 * uses none. */
static void test_dropout_repeatable(void **state) {
    (void)state;
    model_variant v = {"repeat", 1, 0.2f, 0.3f, 0.1f, 1, 0, 0, 0};
    int32_t tokens[MB * (MT + 1)];
    sy_model *m = tiny_model(&v, tokens, 21);
    const sy_layout *lay = sy_model_layout(m);
    sy_pass ps = {.B = MB, .T = MT, .groups = MG, .training = 1, .seed = 5, .step = 17, .token0 = 0};
    sy_losses a, b, c, d, e;
    float *g1 = malloc(lay->total * sizeof(float));
    assert_non_null(g1);
    sy_model_zero_grad(m);
    assert_int_equal(sy_model_forward(m, &ps, tokens, &a), 0);
    assert_int_equal(sy_model_backward(m), 0);
    memcpy(g1, sy_model_grads(m), lay->total * sizeof(float));
    sy_pass ps2 = ps;
    ps2.step = 18;
    assert_int_equal(sy_model_forward(m, &ps2, tokens, &c), 0);
    sy_pass ev = ps;
    ev.training = 0;
    assert_int_equal(sy_model_forward(m, &ev, tokens, &d), 0);
    sy_pass ps3 = ps;
    ps3.seed = 6;
    assert_int_equal(sy_model_forward(m, &ps3, tokens, &e), 0);
    sy_model_zero_grad(m);
    assert_int_equal(sy_model_forward(m, &ps, tokens, &b), 0);
    assert_int_equal(sy_model_backward(m), 0);
    printf("dropout repeat: step17 %.9f again %.9f step18 %.9f seed6 %.9f eval %.9f\n", a.total, b.total, c.total,
           e.total, d.total);
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(g1, sy_model_grads(m), lay->total * sizeof(float));
    assert_true(c.total != a.total);
    assert_true(d.total != a.total);
    assert_true(e.total != a.total);
    /* backward accumulates: a second backward of the same pass doubles the gradients */
    assert_int_equal(sy_model_forward(m, &ps, tokens, &b), 0);
    assert_int_equal(sy_model_backward(m), 0);
    const float *g2 = sy_model_grads(m);
    for (size_t i = 0; i < lay->total; i++)
        if (fabsf(g2[i] - 2.0f * g1[i]) > 1e-5f * (fabsf(g1[i]) + 1e-3f))
            fail_msg("gradient %zu: %g after two backwards, %g after one", i, (double)g2[i], (double)g1[i]);
    /* a backward without a forward is refused */
    assert_true(sy_model_backward(m) < 0);
    free(g1);
    sy_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_ffn),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_long),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_router),
        cmocka_unit_test(test_model_top1),
        cmocka_unit_test(test_model_top1_eval_sum),
        cmocka_unit_test(test_model_top2),
        cmocka_unit_test(test_model_dropout),
        cmocka_unit_test(test_model_jitter),
        cmocka_unit_test(test_model_top2_dropout),
        cmocka_unit_test(test_dropout_repeatable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
