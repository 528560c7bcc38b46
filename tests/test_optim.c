/* test_optim: the learning-rate schedule, global-norm clipping and AdamW, against values
 * worked out by hand and against a scalar AdamW written here in double (PyTorch's
 * torch.optim.AdamW: bias-corrected moments, decoupled weight decay), applied only to
 * parameters with sy_param.decay set (matrices, not norms). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "train_cfg.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "blas_setup.h"

static sy_train_cfg train_cfg(sy_schedule sched, int64_t steps, int64_t warmup, float lr, float min_lr) {
    sy_train_cfg tc;
    memset(&tc, 0, sizeof tc);
    tc.steps = steps;
    tc.batch_size = 8;
    tc.seq_len = 16;
    tc.groups = 1;
    tc.seed = 1;
    tc.lr = lr;
    tc.min_lr = min_lr;
    tc.warmup_steps = warmup;
    tc.schedule = sched;
    tc.weight_decay = 0.1f;
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    tc.grad_clip = 1.0f;
    return tc;
}

static void assert_rel(double got, double want, double rtol, const char *what) {
    if (!(fabs(got - want) <= rtol * fabs(want)))
        fail_msg("%s: got %.9g, want %.9g", what, got, want);
}

/* ------------------------------------------------------------ schedule */

/* Warmup: linear from lr/warmup at step 0 to lr at step warmup-1. */
static void test_lr_warmup(void **state) {
    (void)state;
    const sy_schedule scheds[] = {SY_SCHED_COSINE, SY_SCHED_LINEAR, SY_SCHED_CONSTANT};
    for (int s = 0; s < 3; s++) {
        sy_train_cfg tc = train_cfg(scheds[s], 100, 10, 1e-3f, 1e-5f);
        for (int64_t i = 0; i < 10; i++)
            assert_rel(sy_lr_at(&tc, i), 1e-3 * (double)(i + 1) / 10.0, 1e-6, "warmup");
        assert_rel(sy_lr_at(&tc, 0), 1e-4, 1e-6, "first warmup step");
        assert_rel(sy_lr_at(&tc, 9), 1e-3, 1e-6, "last warmup step");
        /* the first step after warmup starts the decay from lr itself */
        assert_rel(sy_lr_at(&tc, 10), 1e-3, 1e-6, "first step after warmup");
    }
    /* warmup of one step: full rate at once; no warmup: step 0 is lr */
    sy_train_cfg tc = train_cfg(SY_SCHED_COSINE, 100, 1, 2e-3f, 0.0f);
    assert_rel(sy_lr_at(&tc, 0), 2e-3, 1e-6, "warmup 1");
    tc.warmup_steps = 0;
    assert_rel(sy_lr_at(&tc, 0), 2e-3, 1e-6, "no warmup");
}

/* Cosine: lr after warmup, (lr + min_lr) / 2 half way through the decay, min_lr at the
 * last step (step steps-1), and never below min_lr after it. */
static void test_lr_cosine(void **state) {
    (void)state;
    /* steps 0..100: warmup 0..9, decay over steps 10..100 (91 steps, last = 100) */
    sy_train_cfg tc = train_cfg(SY_SCHED_COSINE, 101, 10, 1e-3f, 1e-5f);
    double lr = 1e-3, mn = (double)1e-5f;
    assert_rel(sy_lr_at(&tc, 100), mn, 1e-5, "cosine at the last step (step 100 of 0..100)");
    for (int64_t i = 10; i <= 100; i++) {
        double frac = (double)(i - 10) / 90.0;
        double want = mn + (lr - mn) * 0.5 * (1.0 + cos(M_PI * frac));
        assert_rel(sy_lr_at(&tc, i), want, 1e-5, "cosine");
    }
    assert_rel(sy_lr_at(&tc, 55), (lr + mn) / 2.0, 1e-5, "cosine half way");
    for (int64_t i = 101; i < 200; i += 7)
        assert_rel(sy_lr_at(&tc, i), mn, 1e-6, "cosine after the end");
    /* non-increasing after warmup */
    for (int64_t i = 10; i < 150; i++)
        assert_true(sy_lr_at(&tc, i + 1) <= sy_lr_at(&tc, i));
}

static void test_lr_linear(void **state) {
    (void)state;
    sy_train_cfg tc = train_cfg(SY_SCHED_LINEAR, 21, 5, 4e-3f, 1e-3f);
    double lr = (double)4e-3f, mn = (double)1e-3f;
    assert_rel(sy_lr_at(&tc, 20), mn, 1e-5, "linear at the last step (step 20 of 0..20)");
    /* decay over steps 5..20: 15 intervals */
    for (int64_t i = 5; i <= 20; i++)
        assert_rel(sy_lr_at(&tc, i), lr - (lr - mn) * (double)(i - 5) / 15.0, 1e-5, "linear");
    assert_rel(sy_lr_at(&tc, 1000), mn, 1e-5, "linear after the end");
}

static void test_lr_constant(void **state) {
    (void)state;
    sy_train_cfg tc = train_cfg(SY_SCHED_CONSTANT, 50, 4, 3e-4f, 1e-5f);
    for (int64_t i = 4; i < 200; i++)
        assert_rel(sy_lr_at(&tc, i), (double)3e-4f, 1e-7, "constant");
    assert_rel(sy_lr_at(&tc, 0), 3e-4 / 4, 1e-6, "constant warmup");
}

/* ------------------------------------------------------------ clipping */

static void test_clip(void **state) {
    (void)state;
    assert_true(sy_clip_scale(5.0, 0.0f) == 1.0f);  /* clipping off */
    assert_true(sy_clip_scale(5.0, -1.0f) == 1.0f);
    assert_true(sy_clip_scale(0.5, 1.0f) == 1.0f);  /* already under */
    assert_true(sy_clip_scale(1.0, 1.0f) == 1.0f);  /* at the limit */
    assert_true(sy_clip_scale(0.0, 1.0f) == 1.0f);
    assert_rel(sy_clip_scale(4.0, 1.0f), 0.25, 1e-5, "clip 4 -> 1");
    assert_rel(sy_clip_scale(1e6, 2.0f), 2e-6, 1e-5, "clip 1e6 -> 2");
    assert_rel(sy_clip_scale(1.5, 1.0f), 1.0 / 1.5, 1e-5, "clip 1.5 -> 1");
    /* the clipped norm never exceeds the limit */
    for (double n = 1.01; n < 1e4; n *= 1.7)
        assert_true(n * sy_clip_scale(n, 1.0f) <= 1.0 + 1e-6);
    /* sum of squares: 3-4-12 */
    const float g[3] = {3.0f, -4.0f, 12.0f};
    assert_true(sy_sumsq(g, 3) == 169.0);
    assert_true(sy_sumsq(g, 0) == 0.0);
    /* accumulated in double: in float, 4096^2 + 1 + 1 + ... stays at 2^24 */
    float big[1001];
    big[0] = 4096.0f;
    for (int i = 1; i <= 1000; i++)
        big[i] = 1.0f;
    assert_true(sy_sumsq(big, 1001) == 16777216.0 + 1000.0);
    /* every length, the blocks of eight and the tail: 1^2 + ... + n^2 (exact in double) */
    float seq[40];
    for (int i = 0; i < 40; i++)
        seq[i] = (float)(i + 1);
    for (int n = 0; n <= 40; n++)
        assert_true(sy_sumsq(seq, (size_t)n) == (double)n * (n + 1) * (2 * n + 1) / 6);
    /* and a long array of fractions against one running sum in long double */
    static float r[100003];
    long double ref = 0;
    for (int i = 0; i < 100003; i++) {
        r[i] = (float)((i * 2654435761u) % 1000u) / 997.0f - 0.5f;
        ref += (long double)r[i] * r[i];
    }
    assert_rel(sy_sumsq(r, 100003), (double)ref, 1e-13, "sum of squares of 100003 values");
}

/* ------------------------------------------------------------ AdamW */

static sy_model_cfg small_cfg(void) {
    sy_model_cfg c = sy_model_cfg_default();
    c.d_model = 8;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 8;
    c.n_experts = 2;
    c.switch_every = 2;
    c.seq_len = 4;
    return c;
}

/* Decay applies to matrices (wte, wpe, attention, FFN, router, experts, lm_head), not
 * to the norm weights. */
static void test_decay_flags(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg();
    sy_layout lay;
    assert_int_equal(sy_layout_init(&lay, &c, NULL), 0);
    int norms = 0, mats = 0;
    for (int i = 0; i < lay.n_params; i++) {
        const sy_param *p = &lay.params[i];
        int is_norm = strstr(p->name, "norm") != NULL;
        if (p->decay == is_norm)
            fail_msg("%s: decay %d", p->name, p->decay);
        norms += is_norm;
        mats += !is_norm;
    }
    assert_int_equal(norms, 2 * 2 + 1);              /* norm1, norm2 per layer, normf */
    /* wte wpe, wqkv wo x2, ffn w1 w2, router, experts, lm_head */
    assert_int_equal(mats, 2 + 2 * 2 + 2 + 1 + 2 * 2 + 1);
    sy_layout_free(&lay);
}

static uint64_t rs = 7;
static double urand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rs >> 11) * (1.0 / 9007199254740992.0);
}

/* One AdamW step on the first element of a norm and of a matrix, by hand: at t = 1 the
 * bias-corrected update is g / (|g| + eps), i.e. the sign of g. */
static void test_adamw_first_step_by_hand(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg();
    sy_layout lay;
    assert_int_equal(sy_layout_init(&lay, &c, NULL), 0);
    size_t n = lay.total;
    float *x = calloc(n, 4), *g = calloc(n, 4), *m = calloc(n, 4), *v = calloc(n, 4);
    assert_true(x && g && m && v);
    int in = sy_layout_find(&lay, "layers.0.norm1"), iw = sy_layout_find(&lay, "layers.0.attn.wqkv");
    assert_true(in >= 0 && iw >= 0);
    size_t on = lay.params[in].offset, ow = lay.params[iw].offset;
    x[on] = 1.0f;
    g[on] = -0.3f;
    x[on + 1] = 0.8f; /* zero gradient: a norm does not move at all */
    x[ow] = 0.5f;
    g[ow] = 2.0f;
    x[ow + 1] = -0.25f; /* zero gradient: a matrix only decays */
    sy_train_cfg tc = train_cfg(SY_SCHED_CONSTANT, 10, 0, 0.01f, 0.0f);
    sy_adamw_step(&lay, x, g, m, v, 1, 0.01f, &tc, 1.0f);
    assert_rel(x[on], 1.0 + 0.01, 1e-6, "norm, t=1");                     /* - lr * sign(g) */
    assert_true(x[on + 1] == 0.8f);                                        /* no gradient, no decay */
    assert_rel(x[ow], 0.5 - 0.01 * (1.0 + 0.1 * 0.5), 1e-6, "matrix, t=1"); /* - lr (sign(g) + wd x) */
    assert_rel(x[ow + 1], -0.25 * (1.0 - 0.01 * 0.1), 1e-7, "matrix decay");
    assert_rel(m[on], 0.1 * -0.3, 1e-6, "m");
    assert_rel(v[on], 0.05 * 0.09, 1e-5, "v");
    /* grad_scale multiplies the gradient before the moments */
    memset(m, 0, n * 4);
    memset(v, 0, n * 4);
    sy_adamw_step(&lay, x, g, m, v, 1, 0.01f, &tc, 0.5f);
    assert_rel(m[ow], 0.1 * 1.0, 1e-6, "m with grad_scale");
    assert_rel(v[ow], 0.05 * 1.0, 1e-5, "v with grad_scale");
    free(x);
    free(g);
    free(m);
    free(v);
    sy_layout_free(&lay);
}

/* Several steps over a whole layout against a scalar reference in double. The gaps
 * between tensors (the arena keeps tensors 16-float aligned) must stay untouched. */
static void test_adamw_reference(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg();
    sy_layout lay;
    assert_int_equal(sy_layout_init(&lay, &c, NULL), 0);
    size_t n = lay.total;
    float *x = malloc(n * 4), *g = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    double *rx = malloc(n * 8), *rm = calloc(n, 8), *rv = calloc(n, 8);
    unsigned char *inside = calloc(n, 1);
    assert_true(x && g && m && v && rx && rm && rv && inside);
    for (int i = 0; i < lay.n_params; i++)
        memset(inside + lay.params[i].offset, 1, lay.params[i].numel);
    for (size_t j = 0; j < n; j++) {
        x[j] = inside[j] ? (float)(urand() * 2 - 1) : 42.0f;
        rx[j] = x[j];
    }
    sy_train_cfg tc = train_cfg(SY_SCHED_COSINE, 6, 2, 3e-2f, 1e-3f);
    tc.weight_decay = 0.2f;
    const double b1 = tc.beta1, b2 = tc.beta2, eps = tc.eps;
    double worst = 0.0;
    for (int64_t t = 1; t <= 6; t++) {
        float lr = sy_lr_at(&tc, t - 1), scale = t == 3 ? 0.25f : 1.0f;
        for (size_t j = 0; j < n; j++)
            g[j] = inside[j] ? (float)((urand() * 2 - 1) * (j % 3 == 0 ? 1e-3 : 1.0)) : 1e9f;
        sy_adamw_step(&lay, x, g, m, v, t, lr, &tc, scale);
        for (int i = 0; i < lay.n_params; i++) {
            const sy_param *p = &lay.params[i];
            double wd = p->decay ? tc.weight_decay : 0.0;
            for (size_t k = 0; k < p->numel; k++) {
                size_t j = p->offset + k;
                double gj = (double)g[j] * scale;
                rm[j] = b1 * rm[j] + (1 - b1) * gj;
                rv[j] = b2 * rv[j] + (1 - b2) * gj * gj;
                double mh = rm[j] / (1 - pow(b1, (double)t)), vh = rv[j] / (1 - pow(b2, (double)t));
                rx[j] = rx[j] * (1 - (double)lr * wd) - (double)lr * mh / (sqrt(vh) + eps);
                double e = fabs(x[j] - rx[j]);
                worst = fmax(worst, e);
                if (e > 2e-6 + 1e-5 * fabs(rx[j]))
                    fail_msg("step %lld %s[%zu]: %.9g, reference %.9g", (long long)t, p->name, k, (double)x[j],
                             rx[j]);
                /* float rounding of the running mean: relative to the gradients' scale */
                double gs = j % 3 == 0 ? 1e-3 : 1.0;
                if (fabs(m[j] - rm[j]) > 1e-5 * fabs(rm[j]) + 2e-7 * gs ||
                    fabs(v[j] - rv[j]) > 1e-5 * rv[j] + 1e-15)
                    fail_msg("step %lld %s[%zu]: moments (%g, %g), reference (%g, %g)", (long long)t, p->name, k,
                             (double)m[j], (double)v[j], rm[j], rv[j]);
            }
        }
    }
    for (size_t j = 0; j < n; j++)
        if (!inside[j])
            assert_true(x[j] == 42.0f && m[j] == 0.0f && v[j] == 0.0f);
    printf("adamw: %zu floats, 6 steps, worst |param - reference| %.2e\n", n, worst);
    free(x);
    free(g);
    free(m);
    free(v);
    free(rx);
    free(rm);
    free(rv);
    free(inside);
    sy_layout_free(&lay);
}

/* The update split over threads gives the same bits as one thread, padding untouched. */
static void test_adamw_threads_same_bits(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg();
    c.d_model = 128;
    c.d_ff = 512;
    sy_layout lay;
    assert_int_equal(sy_layout_init(&lay, &c, NULL), 0);
    size_t n = lay.total;
    assert_true(n >= 2 * 65536); /* large enough to be split */
    float *x[2], *m[2], *v[2], *g = malloc(n * 4);
    assert_non_null(g);
    for (int k = 0; k < 2; k++) {
        x[k] = malloc(n * 4);
        m[k] = calloc(n, 4);
        v[k] = calloc(n, 4);
        assert_true(x[k] && m[k] && v[k]);
    }
    for (size_t j = 0; j < n; j++)
        x[0][j] = x[1][j] = (float)(urand() * 2 - 1);
    sy_train_cfg tc = train_cfg(SY_SCHED_COSINE, 6, 2, 3e-2f, 1e-3f);
    int before = sy_blas_threads();
    for (int64_t t = 1; t <= 3; t++) {
        for (size_t j = 0; j < n; j++)
            g[j] = (float)(urand() * 2 - 1);
        for (int k = 0; k < 2; k++) {
            sy_blas_set_threads(k == 0 ? 1 : 2);
            assert_int_equal(sy_blas_threads(), k == 0 ? 1 : 2);
            sy_adamw_step(&lay, x[k], g, m[k], v[k], t, 1e-2f, &tc, 0.5f);
        }
    }
    sy_blas_set_threads(before);
    assert_memory_equal(x[0], x[1], n * 4);
    assert_memory_equal(m[0], m[1], n * 4);
    assert_memory_equal(v[0], v[1], n * 4);
    for (int k = 0; k < 2; k++) {
        free(x[k]);
        free(m[k]);
        free(v[k]);
    }
    free(g);
    sy_layout_free(&lay);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_threads_same_bits),
        cmocka_unit_test(test_lr_warmup),
        cmocka_unit_test(test_lr_cosine),
        cmocka_unit_test(test_lr_linear),
        cmocka_unit_test(test_lr_constant),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_decay_flags),
        cmocka_unit_test(test_adamw_first_step_by_hand),
        cmocka_unit_test(test_adamw_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
