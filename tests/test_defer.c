/* Put-off weight gradients (sy_pass.defer, sy_model_backward_idle): a backward that puts
 * the dense weight gradients above the lowest switch layer off, and computes them inside
 * the expert exchange's waits (none, one, all of them), or when their buffers run out
 * (six layers: more stages than buffers), gives every gradient bit for bit as the backward
 * that computes them in place, with dropout, and calls grads_final for the same stages
 * in the same order. A failing grads_final fails the backward, and the next one is whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "model.h"

enum { B = 4, T = 8, MAX_STAGES = 64 };

typedef struct {
    sy_model *m;
    sy_experts *local; /* the experts, run by the exchange below */
    int idle_calls;    /* per backward exchange: -1 = until no work is left */
    int idle_work;     /* calls that did work, over the pass */
    int stages[MAX_STAGES], n_stages;
    int fail_stage;    /* grads_final fails at this stage (INT32_MIN: never) */
} rig;

static int ex_forward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *x,
                      const int64_t *tok, float *y) {
    rig *r = ctx;
    return sy_experts_forward(r->local, pass, layer, counts, x, tok, y);
}

/* An exchange that waits: the model's put-off work fills the wait */
static int ex_backward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *dy, float *dx) {
    rig *r = ctx;
    for (int i = 0; r->idle_calls < 0 || i < r->idle_calls; i++) {
        int did = sy_model_backward_idle(r->m);
        r->idle_work += did;
        if (!did)
            break;
    }
    return sy_experts_backward(r->local, pass, layer, counts, dy, dx);
}

static int on_final(void *ctx, int stage) {
    rig *r = ctx;
    assert_true(r->n_stages < MAX_STAGES);
    r->stages[r->n_stages++] = stage;
    if (stage == r->fail_stage) {
        sy_seterr("drill: stage %d refused", stage);
        return -1;
    }
    return 0;
}

static sy_model_cfg cfg6(void) {
    sy_model_cfg c = sy_model_cfg_default();
    c.vocab = 256;
    c.d_model = 16;
    c.n_layers = 6;
    c.n_heads = 2;
    c.d_ff = 32;
    c.n_experts = 4;
    c.switch_every = 3; /* layers 2 and 5: four dense stages and the head above layer 2 */
    c.seq_len = T;
    c.top_k = 2;
    c.dropout = 0.1f;
    c.init_scale = 1.0f;
    return c;
}

/* One forward and backward; returns the backward's result. */
static int pass_once(rig *r, const int32_t *tokens, int defer, int idle_calls) {
    sy_pass ps = {.B = B,
                  .T = T,
                  .groups = 1,
                  .training = 1,
                  .seed = 5,
                  .step = 3,
                  .grads_final = on_final,
                  .grads_ctx = r,
                  .defer = defer};
    r->idle_calls = idle_calls;
    r->idle_work = 0;
    r->n_stages = 0;
    sy_model_zero_grad(r->m);
    sy_losses l;
    assert_int_equal(sy_model_forward(r->m, &ps, tokens, &l), 0);
    return sy_model_backward(r->m);
}

static void rig_open(rig *r) {
    memset(r, 0, sizeof *r);
    sy_model_cfg c = cfg6();
    r->m = sy_model_new(&c, B, T, NULL);
    assert_non_null(r->m);
    sy_model_init_weights(r->m, 77);
    r->local = sy_experts_new(&c, sy_model_weights(r->m), sy_model_grad_views(r->m), B * T * c.top_k);
    assert_non_null(r->local);
    sy_model_set_exchange(r->m, &(sy_expert_exchange){.ctx = r, .forward = ex_forward, .backward = ex_backward});
    r->fail_stage = INT32_MIN;
}

static void rig_close(rig *r) {
    sy_experts_destroy(&r->local);
    sy_model_destroy(&r->m);
}

static void tokens_fill(int32_t *tokens) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < B * (T + 1); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % 256);
    }
}

/* The gradients of a pass with nothing put off (the caller frees them); *bytes: their size. */
static float *ref_grads(rig *r, const int32_t *tokens, size_t *bytes) {
    *bytes = sy_model_layout(r->m)->total * sizeof(float);
    assert_int_equal(pass_once(r, tokens, 0, 0), 0);
    float *ref = malloc(*bytes);
    assert_non_null(ref);
    memcpy(ref, sy_model_grads(r->m), *bytes);
    return ref;
}

static void test_same_bits_same_stages(void **state) {
    (void)state;
    rig r;
    rig_open(&r);
    int32_t tokens[B * (T + 1)];
    tokens_fill(tokens);
    const sy_layout *lay = sy_model_layout(r.m);
    size_t bytes;
    float *ref = ref_grads(&r, tokens, &bytes);
    int ref_stages[MAX_STAGES], n_ref = r.n_stages;
    memcpy(ref_stages, r.stages, sizeof ref_stages);
    assert_int_equal(n_ref, 2 * 6 + 2); /* the head, two halves of six layers, the embeddings */
    for (int i = 0; i < n_ref; i++)
        assert_int_equal(ref_stages[i], 2 * 6 - i);
    assert_int_equal(r.idle_work, 0); /* nothing put off: no work for the waits */
    int nonzero = 0;
    for (size_t i = 0; i < lay->total; i++)
        nonzero += ref[i] != 0.0f;
    assert_true(nonzero > (int)(lay->total / 2));

    const int idle_calls[] = {0, 1, 2, -1};
    for (size_t v = 0; v < sizeof idle_calls / sizeof idle_calls[0]; v++) {
        assert_int_equal(pass_once(&r, tokens, 1, idle_calls[v]), 0);
        if (memcmp(ref, sy_model_grads(r.m), bytes)) {
            for (int i = 0; i < lay->n_params; i++)
                if (memcmp(ref + lay->params[i].offset, sy_model_grads(r.m) + lay->params[i].offset,
                           lay->params[i].numel * sizeof(float)))
                    print_error("idle calls %d: %s differs\n", idle_calls[v], lay->params[i].name);
            fail();
        }
        assert_int_equal(r.n_stages, n_ref);
        assert_memory_equal(r.stages, ref_stages, (size_t)n_ref * sizeof(int));
        if (idle_calls[v] != 0) /* the waits did put-off work */
            assert_true(r.idle_work > 0);
        else
            assert_int_equal(r.idle_work, 0);
    }
    /* outside a backward there is no work */
    assert_int_equal(sy_model_backward_idle(r.m), 0);
    free(ref);
    rig_close(&r);
}

static void test_failing_stage(void **state) {
    (void)state;
    rig r;
    rig_open(&r);
    int32_t tokens[B * (T + 1)];
    tokens_fill(tokens);
    size_t bytes;
    float *ref = ref_grads(&r, tokens, &bytes);
    /* layer 4's feed-forward half is put off: its grads_final runs from the queue, here
     * inside the exchange's wait at layer 2, or when the buffers run out */
    const int idle_calls[] = {-1, 0};
    for (size_t v = 0; v < 2; v++) {
        r.fail_stage = 2 * 4 + 1;
        assert_int_not_equal(pass_once(&r, tokens, 1, idle_calls[v]), 0);
        assert_non_null(strstr(sy_lasterr(), "stage 9 refused"));
        assert_int_equal(r.stages[r.n_stages - 1], 9); /* nothing after the failure */
        assert_int_equal(sy_model_backward_idle(r.m), 0);
        r.fail_stage = INT32_MIN;
        assert_int_equal(pass_once(&r, tokens, 1, -1), 0);
        assert_memory_equal(ref, sy_model_grads(r.m), bytes);
        assert_int_equal(r.n_stages, 2 * 6 + 2);
    }
    free(ref);
    rig_close(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bits_same_stages),
        cmocka_unit_test(test_failing_stage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
