/* model_cfg.h: the hyper-parameters that fix a model's shape and its routing maths.
 * Plain data: no YAML here (config.c fills it), no buffers (model.c uses it). */
#ifndef SY_MODEL_CFG_H
#define SY_MODEL_CFG_H

/* The most experts a switch layer may have: the distributed expert exchange keeps
 * per-expert tables of this size (common/net/exchange.c); config.c refuses more. */
#define SY_MAX_EXPERTS 1024

typedef struct {
    int vocab;                  /* V: 256, byte-level */
    int d_model;                /* C */
    int n_layers;               /* L */
    int n_heads;                /* H; head dim hd = C / H */
    int d_ff;                   /* F: hidden width of the dense FFN and of each expert */
    int n_experts;              /* E */
    int switch_every;           /* layer l is a switch layer when l % switch_every == switch_every-1; 0 = none */
    int seq_len;                /* Tmax: positions in wpe */
    int top_k;                  /* experts per token; 1 is the Switch Transformer */
    float capacity_factor;      /* training: capacity per group = ceil(cf * tokens_in_group / E) */
    float eval_capacity_factor; /* the same for evaluation */
    float aux_loss_coef;        /* load-balancing loss weight */
    float z_loss_coef;          /* router z-loss weight */
    float router_jitter;        /* eps of multiplicative U(1-eps, 1+eps) noise on the router input; training only */
    float expert_dropout;       /* dropout on expert hidden units; training only */
    float dropout;              /* dropout on dense sub-layer outputs; training only */
    float init_scale;           /* weights ~ truncated normal, std = sqrt(init_scale / fan_in) */
} sy_model_cfg;

/* The defaults every field of a config file starts from. */
sy_model_cfg sy_model_cfg_default(void);
/* 1 when layer l is a switch (mixture-of-experts) layer. */
static inline int sy_is_switch_layer(const sy_model_cfg *c, int l) {
    return c->switch_every > 0 && c->n_experts > 0 && l % c->switch_every == c->switch_every - 1;
}
/* Checks the shape constraints; on failure sets sy_seterr naming the key ("model.d_model: ...")
 * and returns -1. */
int sy_model_cfg_check(const sy_model_cfg *c);

#endif
