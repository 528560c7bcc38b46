#include "model_cfg.h"

#include <math.h>

#include "log.h"

sy_model_cfg sy_model_cfg_default(void) {
    return (sy_model_cfg){
        .vocab = 256,
        .d_model = 128,
        .n_layers = 4,
        .n_heads = 4,
        .d_ff = 512,
        .n_experts = 4,
        .switch_every = 2,
        .seq_len = 128,
        .top_k = 1,
        .capacity_factor = 1.25f,
        .eval_capacity_factor = 2.0f,
        .aux_loss_coef = 0.01f,
        .z_loss_coef = 0.001f,
        .router_jitter = 0.0f,
        .expert_dropout = 0.0f,
        .dropout = 0.0f,
        .init_scale = 0.1f, /* the Switch paper's reduced initialisation */
    };
}

/* A probability-like rate: dropout of 1 would zero everything, so [0, 1). */
static int check_rate(const char *key, float v) {
    if (!(v >= 0.0f && v < 1.0f)) {
        sy_seterr("%s: must be in [0, 1) (got %g)", key, (double)v);
        return -1;
    }
    return 0;
}

static int check_positive_int(const char *key, int v) {
    if (v < 1) {
        sy_seterr("%s: must be >= 1 (got %d)", key, v);
        return -1;
    }
    return 0;
}

int sy_model_cfg_check(const sy_model_cfg *c) {
    if (c->vocab != 256) {
        sy_seterr("model.vocab: must be 256, the model is byte-level (got %d)", c->vocab);
        return -1;
    }
    if (check_positive_int("model.d_model", c->d_model) < 0 ||
        check_positive_int("model.n_layers", c->n_layers) < 0 ||
        check_positive_int("model.n_heads", c->n_heads) < 0 ||
        check_positive_int("model.d_ff", c->d_ff) < 0 ||
        check_positive_int("model.n_experts", c->n_experts) < 0 ||
        check_positive_int("model.seq_len", c->seq_len) < 0)
        return -1;
    if (c->d_model % c->n_heads != 0) {
        sy_seterr("model.d_model: must be divisible by model.n_heads (%d %% %d = %d)", c->d_model,
                  c->n_heads, c->d_model % c->n_heads);
        return -1;
    }
    if (c->switch_every < 0) {
        sy_seterr("model.switch_every: must be >= 0 (got %d)", c->switch_every);
        return -1;
    }
    if (c->top_k < 1 || c->top_k > c->n_experts) {
        sy_seterr("routing.top_k: must be in [1, model.n_experts = %d] (got %d)", c->n_experts,
                  c->top_k);
        return -1;
    }
    /* The negated comparisons also refuse NaN. */
    if (!(c->capacity_factor > 0.0f) || isinf(c->capacity_factor)) {
        sy_seterr("routing.capacity_factor: must be > 0 (got %g)", (double)c->capacity_factor);
        return -1;
    }
    if (!(c->eval_capacity_factor > 0.0f) || isinf(c->eval_capacity_factor)) {
        sy_seterr("routing.eval_capacity_factor: must be > 0 (got %g)",
                  (double)c->eval_capacity_factor);
        return -1;
    }
    if (!(c->aux_loss_coef >= 0.0f) || isinf(c->aux_loss_coef)) {
        sy_seterr("routing.aux_loss_coef: must be >= 0 (got %g)", (double)c->aux_loss_coef);
        return -1;
    }
    if (!(c->z_loss_coef >= 0.0f) || isinf(c->z_loss_coef)) {
        sy_seterr("routing.z_loss_coef: must be >= 0 (got %g)", (double)c->z_loss_coef);
        return -1;
    }
    if (check_rate("routing.router_jitter", c->router_jitter) < 0 ||
        check_rate("routing.expert_dropout", c->expert_dropout) < 0 ||
        check_rate("model.dropout", c->dropout) < 0)
        return -1;
    if (!(c->init_scale > 0.0f) || isinf(c->init_scale)) {
        sy_seterr("model.init_scale: must be > 0 (got %g)", (double)c->init_scale);
        return -1;
    }
    return 0;
}
