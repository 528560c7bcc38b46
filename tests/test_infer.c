/* test_infer: the incremental (key/value cache) forward of common/infer.c against the
 * full-sequence forward of common/model.c, position by position: the logits of every
 * position agree to float rounding and the routing (expert per token, -1 for a dropped
 * one) is identical, with a capacity factor small enough that half the tokens of every
 * switch layer are dropped (so the capacity semantics are exercised, not just the
 * matmuls). The full forward runs in eval mode with one group per row, the semantics
 * infer.h documents for generation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "infer.h"
#include "log.h"
#include "model.h"
#include "router.h"

static uint64_t rng_state;
static uint32_t rnext(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static sy_model_cfg small_cfg(int top_k, float eval_cf) {
    sy_model_cfg c = sy_model_cfg_default();
    c.d_model = 32;
    c.n_layers = 4;
    c.n_heads = 4;
    c.d_ff = 48;
    c.n_experts = 4;
    c.switch_every = 2;
    c.seq_len = 40;
    c.top_k = top_k;
    c.eval_capacity_factor = eval_cf;
    c.init_scale = 1.0f; /* larger weights than training's: logits and routing far from uniform */
    return c;
}

/* Runs B rows of T tokens through the full forward (eval, one group per row) and through
 * a fresh cache per row; compares every position. Returns the tokens dropped in total
 * (over rows and switch layers) so callers can insist that capacity was binding. */
static int compare(const sy_model_cfg *c, int B, int T, uint64_t seed, int expect_exact_routing) {
    sy_model *m = sy_model_new(c, B, T, NULL);
    assert_non_null(m);
    sy_model_init_weights(m, seed);
    int32_t *tok = malloc((size_t)B * (T + 1) * sizeof *tok);
    assert_non_null(tok);
    rng_state = seed;
    for (int i = 0; i < B * (T + 1); i++)
        tok[i] = (int32_t)(rnext() % 256);
    sy_pass ps = {.B = B, .T = T, .groups = B, .training = 0, .seed = seed};
    sy_losses l;
    assert_int_equal(sy_model_forward(m, &ps, tok, &l), 0);
    const float *full = sy_model_logits(m);
    assert_non_null(full);
    int V = c->vocab, L = c->n_layers, k = c->top_k;
    float *logits = malloc((size_t)V * sizeof(float));
    assert_non_null(logits);
    sy_infer *s = sy_infer_new(c, sy_model_weights(m), T, sy_capacity_factor_decimal(c->eval_capacity_factor));
    assert_non_null(s);
    double worst = 0.0, scale = 0.0;
    int dropped = 0, mismatched = 0;
    for (int b = 0; b < B; b++) {
        sy_infer_reset(s);
        for (int t = 0; t < T; t++) {
            assert_int_equal(sy_infer_step(s, tok[(size_t)b * (T + 1) + t], logits), 0);
            const float *f = full + ((size_t)b * T + t) * V;
            for (int v = 0; v < V; v++) {
                double d = fabs((double)logits[v] - f[v]);
                worst = d > worst ? d : worst;
                scale = fabs(f[v]) > scale ? fabs(f[v]) : scale;
            }
            for (int layer = 0; layer < L; layer++) {
                int kk;
                const int *route = sy_model_routing(m, layer, &kk);
                const int *inc = sy_infer_routing(s, layer);
                if (!route) {
                    assert_null(inc);
                    continue;
                }
                assert_non_null(inc);
                for (int j = 0; j < k; j++) {
                    int want = route[((size_t)b * T + t) * k + j];
                    dropped += want < 0;
                    if (inc[j] != want) {
                        mismatched++;
                        if (expect_exact_routing)
                            fprintf(stderr, "row %d position %d layer %d choice %d: full %d, cache %d\n", b, t, layer,
                                    j, want, inc[j]);
                    }
                }
            }
        }
    }
    printf("B %d T %d top-%d eval cf %g: worst |logit diff| %.3g (largest logit %.3g), %d choices dropped, "
           "%d routing mismatches\n",
           B, T, k, (double)c->eval_capacity_factor, worst, scale, dropped, mismatched);
    assert_true(worst <= 2e-5 * (scale > 1 ? scale : 1));
    if (expect_exact_routing)
        assert_int_equal(mismatched, 0);
    sy_infer_destroy(&s);
    assert_null(s);
    free(logits);
    free(tok);
    sy_model_destroy(&m);
    return dropped;
}

/* top-1 with capacity for half the tokens: exact routing, every drop reproduced */
static void test_top1_capacity_binding(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg(1, 0.5f);
    int dropped = compare(&c, 3, 40, 7, 1);
    /* 2 switch layers x 3 rows x 40 tokens, at most 4 x ceil(0.5*40/4) = 20 kept per row and layer */
    assert_true(dropped >= 2 * 3 * 20);
}

/* a window shorter than the model's seq_len: capacity follows the window */
static void test_top1_short_window(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg(1, 1.0f);
    compare(&c, 2, 17, 11, 1);
}

/* top-2 where capacity never binds: both choices and gates agree */
static void test_top2_roomy(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg(2, 4.0f);
    int dropped = compare(&c, 2, 40, 13, 1);
    assert_int_equal(dropped, 0);
}

static void test_errors(void **state) {
    (void)state;
    sy_model_cfg c = small_cfg(1, 2.0f);
    sy_model *m = sy_model_new(&c, 1, 8, NULL);
    assert_non_null(m);
    sy_model_init_weights(m, 3);
    assert_null(sy_infer_new(&c, sy_model_weights(m), 41, 2.0));
    assert_non_null(strstr(sy_lasterr(), "context 41"));
    assert_null(sy_infer_new(&c, sy_model_weights(m), 8, 0.0));
    sy_infer *s = sy_infer_new(&c, sy_model_weights(m), 3, 2.0);
    assert_non_null(s);
    float logits[256];
    assert_int_equal(sy_infer_step(s, 256, logits), -1);
    assert_non_null(strstr(sy_lasterr(), "token 256"));
    for (int i = 0; i < 3; i++)
        assert_int_equal(sy_infer_step(s, 'a' + i, logits), 0);
    assert_int_equal(sy_infer_len(s), 3);
    assert_int_equal(sy_infer_step(s, 'x', logits), -1);
    assert_non_null(strstr(sy_lasterr(), "full"));
    sy_infer_reset(s);
    assert_int_equal(sy_infer_len(s), 0);
    assert_int_equal(sy_infer_step(s, 'x', logits), 0);
    sy_infer_destroy(&s);
    sy_infer_destroy(&s); /* NULL is fine */
    sy_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top1_capacity_binding),
        cmocka_unit_test(test_top1_short_window),
        cmocka_unit_test(test_top2_roomy),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
