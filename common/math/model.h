/* model.h: the Switch Transformer of docs/design.md ("The model, exactly"): parameter layout
 * by canonical name, forward and backward over a local batch split into routing groups.
 *
 * Shapes: B rows, T positions, N = B*T tokens, C d_model, H heads, F d_ff, E experts,
 * V vocab, L layers, k experts per token.
 * Arenas: parameters and gradients are each one float array laid out by sy_layout;
 * activations are one arena sized once for (B, T). Nothing is allocated in a step.
 * Gradients: sy_model_backward ACCUMULATES into the gradient arena; the caller zeroes it
 * (sy_model_zero_grad) once per optimizer step.
 *
 * Switch layers hand their routed rows to an expert exchange: by default the experts
 * run here (all experts held locally); a distributed worker installs one that sends the
 * rows to the experts' owners (all-to-all) and back. */
#ifndef SY_MODEL_H
#define SY_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model_cfg.h"

typedef struct {
    char name[64];     /* canonical name: wte, layers.1.experts.3.w1, ... */
    int ndim;
    int shape[2];
    size_t offset;     /* in floats, into a parameter-shaped arena */
    size_t numel;
    int layer;         /* -1 for wte, wpe, normf, lm_head */
    int expert;        /* expert index, or -1 for a replicated (dense) parameter */
    int decay;         /* AdamW weight decay applies (matrices, not norms) */
} sy_param;

typedef struct {
    sy_model_cfg cfg;
    int n_params;
    sy_param *params;
    size_t total;                 /* floats in a parameter-shaped arena */
    size_t dense_total;           /* floats of replicated (non-expert) parameters; they come first */
    unsigned char *held;          /* [E]: 1 when expert e (in every switch layer) is held here */
} sy_layout;

/* Lays out every parameter held here. held: [E] flags, or NULL for every expert. */
int sy_layout_init(sy_layout *lay, const sy_model_cfg *cfg, const unsigned char *held);
void sy_layout_free(sy_layout *lay);
/* Index of the parameter with this name, or -1. */
int sy_layout_find(const sy_layout *lay, const char *name);

/* Named views into a parameter-shaped arena. */
typedef struct {
    float *norm1, *wqkv, *wo, *norm2;
    float *w1, *w2;        /* dense FFN (non-switch layers) */
    float *router;         /* switch layers */
    float **ew1, **ew2;    /* [E] expert weights, NULL when not held here */
} sy_layer_w;

typedef struct {
    float *wte, *wpe, *normf, *lm_head;
    sy_layer_w *layers;    /* [L] */
} sy_weights;

int sy_weights_bind(sy_weights *w, const sy_layout *lay, float *base);
void sy_weights_free(sy_weights *w);

/* One forward (and backward) pass: what is computed here and how it is normalised. */
typedef struct {
    int B, T;              /* rows here and positions per row */
    int groups;            /* routing groups the local rows split into (B % groups == 0) */
    double ce_denom;       /* tokens the cross-entropy mean is over (the global batch); 0 = B*T */
    double group_denom;    /* groups the aux and z means are over (all replicas); 0 = groups */
    int training;          /* jitter, dropouts and the training capacity factor */
    uint64_t seed;
    int64_t step;
    int64_t token0;        /* global index of the first token here (dropout and jitter draws) */
    /* Called by the backward as soon as a part of the gradients is final (so a caller may
     * start reducing it while the backward goes on), with a stage, in this order:
     * 2*n_layers: the head (normf, lm_head); 2l+1: layer l's feed-forward half (norm2,
     * ffn.w1/w2 or the router, and its experts held here); 2l: layer l's attention half
     * (norm1, attn.wqkv, attn.wo); -1: the embeddings. Non-zero fails the backward.
     * NULL: no calls. */
    int (*grads_final)(void *ctx, int stage);
    void *grads_ctx;
    /* Non-zero: the backward may put off the weight gradients of the dense matrices of the
     * layers above the lowest switch layer (the head, attention, dense feed-forward), up
     * to two half-layers behind, and compute them while the expert exchange waits for a
     * peer (sy_model_backward_idle) or when their buffers are needed; their grads_final
     * calls follow them, in the same order. Every gradient is the same call on the same
     * inputs, so the same bits. */
    int defer;
} sy_pass;

/* Loss terms from the tokens here, already divided by the global denominators, so the
 * terms of all replicas add up to the global batch's. aux and z are sums over switch layers. */
typedef struct {
    double total, ce, aux, z;
} sy_losses;

/* Runs the experts of switch layer `layer` on rows packed expert-major: counts[e] rows for
 * expert e, e = 0..E-1, rows of C floats; tok[i] is row i's global token index. */
typedef struct {
    void *ctx;
    int (*forward)(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *x, const int64_t *tok,
                   float *y);
    /* dy: gradients wrt y (same layout); writes dx; accumulates the experts' weight gradients */
    int (*backward)(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *dy, float *dx);
} sy_expert_exchange;

typedef struct sy_model sy_model;

/* A model for up to max_B rows of T positions. held: [E] experts held here, or NULL (all).
 * Returns NULL with sy_lasterr on failure. */
sy_model *sy_model_new(const sy_model_cfg *cfg, int max_B, int T, const unsigned char *held);
void sy_model_destroy(sy_model **m);

const sy_layout *sy_model_layout(const sy_model *m);
float *sy_model_params(sy_model *m);
float *sy_model_grads(sy_model *m);
/* [n_params]: room for each gradient's sum of squares (the step's global norm); NaN
 * until someone sums it (sy_model_zero_grad resets them). */
double *sy_model_grad_sumsq(sy_model *m);
const sy_weights *sy_model_weights(const sy_model *m);
const sy_weights *sy_model_grad_views(const sy_model *m);
void sy_model_zero_grad(sy_model *m);
/* Truncated-normal init, std = sqrt(init_scale / fan_in), norms = 1. Each parameter's
 * values depend only on (seed, name): any subset of experts initialises identically. */
void sy_model_init_weights(sy_model *m, uint64_t seed);
/* Replace the expert exchange (NULL restores the local one). */
void sy_model_set_exchange(sy_model *m, const sy_expert_exchange *ex);
/* The local expert runner, for a worker that owns experts and runs them for others:
 * same contract as sy_expert_exchange with max_rows rows at most per layer. */
typedef struct sy_experts sy_experts;
sy_experts *sy_experts_new(const sy_model_cfg *cfg, const sy_weights *w, const sy_weights *g, int max_rows);
void sy_experts_destroy(sy_experts **x);
int sy_experts_forward(void *x, const sy_pass *pass, int layer, const int *counts, const float *in,
                       const int64_t *tok, float *out);
int sy_experts_backward(void *x, const sy_pass *pass, int layer, const int *counts, const float *dout, float *din);
/* The same one expert at a time, for a caller that overlaps its communication with them:
 * sy_experts_forward is sy_experts_forward_one for every expert e in order (its rows
 * [r0, r0 + n) of in, tok and out, r0 the rows of the experts before it), then
 * sy_experts_forward_done with the whole counts and in (kept for the backward). Expert
 * e's backward reads and writes the rows the forward's counts give it; the results are
 * bit for bit those of the whole calls, in any order of experts. */
int sy_experts_forward_one(void *x, const sy_pass *pass, int layer, int e, size_t r0, int n, const float *in,
                           const int64_t *tok, float *out);
void sy_experts_forward_done(void *x, int layer, const int *counts, const float *in);
int sy_experts_backward_one(void *x, const sy_pass *pass, int layer, int e, const float *dout, float *din);
/* sy_experts_backward_one in two halves (sy_ffn_backward_input / _weights): the input
 * gradients of expert e now, its weight gradients later, from the same dout and before
 * another layer's backward. Each expert keeps its hidden gradients at its own rows of the
 * scratch, so the input halves of all experts may come first. Same bits as whole calls. */
int sy_experts_backward_input_one(void *x, const sy_pass *pass, int layer, int e, const float *dout, float *din);
int sy_experts_backward_weights_one(void *x, int layer, int e, const float *dout);
/* Zeroes expert e's weight gradients in layer `layer` (an expert run here for another
 * rank: its gradients live outside the model's arena, which sy_model_zero_grad zeroes). */
void sy_experts_zero_grads_one(void *x, int layer, int e);
/* Points the runner at other views of the weights and gradients (the model's experts,
 * and where another rank's experts are kept here, theirs); NULL keeps the current one. */
void sy_experts_set_views(sy_experts *x, const sy_weights *w, const sy_weights *g);

/* tokens: [B, T+1] (inputs then shifted targets). Returns 0 or -1 (sy_lasterr). */
int sy_model_forward(sy_model *m, const sy_pass *pass, const int32_t *tokens, sy_losses *out);
/* Backward of the last forward; accumulates into the gradient arena. */
int sy_model_backward(sy_model *m);
/* Logits [N, V] of the last forward, (row, position) order; NULL when there is none.
 * Valid until the next backward (which turns them into gradients in place). */
const float *sy_model_logits(const sy_model *m);
/* Backward of a loss that mixes the model's own terms with one of the caller's on the
 * logits: hard_scale * mean cross-entropy + aux + z + X, where dlogits_extra [N, V] (or
 * NULL) is dX/dlogits, already divided by the caller's denominators. hard_scale 1 and
 * NULL is sy_model_backward. Used by distillation (distill.h). */
int sy_model_backward_mix(sy_model *m, float hard_scale, const float *dlogits_extra);
/* Computes one put-off weight gradient (sy_pass.defer) if the backward has one waiting:
 * for a caller that waits for a peer inside the backward (the expert exchange). Returns 1
 * if it did work, 0 if there was none (or outside a backward); a failure is kept and fails
 * the backward where it is. */
int sy_model_backward_idle(sy_model *m);

/* Routing of the last forward for switch layer l: [N, k] expert per choice (-1 dropped),
 * in (row, position) order. NULL for a dense layer. */
const int *sy_model_routing(const sy_model *m, int layer, int *k);
/* Per-expert counts of the last forward in switch layer l: choices made and kept. */
void sy_model_expert_load(const sy_model *m, int layer, int *wanted, int *kept);

/* Seconds spent in phases since the last reset (forward and backward in total, and the
 * routing math and expert compute inside them; idle: put-off weight gradients computed
 * inside a caller's wait, sy_model_backward_idle, which the caller's own timing of that
 * wait includes). */
typedef struct {
    double forward, backward, router, experts, idle;
} sy_model_times;
void sy_model_timers(sy_model *m, sy_model_times *out, int reset);

/* Bytes of the activation arena (sized once for max_B x T). */
size_t sy_model_activation_bytes(const sy_model *m);

/* Model FLOPs per token for a forward+backward pass (matmuls and attention, 3x forward). */
double sy_model_flops_per_token(const sy_model_cfg *cfg, int T);

#endif
