#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "ffn.h"
#include "kernels.h"
#include "log.h"
#include "trace.h"
#include "rng.h"
#include "router.h"

/* A part of the pass in the step's timeline (--trace): "layer 1 attention", from t0. */
static void trace_part(const char *what, int l, double t0) {
    if (!sy_trace_on())
        return;
    char name[64];
    if (l >= 0)
        snprintf(name, sizeof name, "layer %d %s", l, what);
    else
        snprintf(name, sizeof name, "%s", what);
    sy_trace_span(name, t0, sy_now(), NULL);
}

/* ---------------------------------------------------------------- layout */

static int add_param(sy_layout *lay, int *cap, const char *name, int ndim, int s0, int s1, int layer, int expert) {
    if (lay->n_params == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        sy_param *p = realloc(lay->params, (size_t)*cap * sizeof *p);
        if (!p) {
            sy_seterr("out of memory laying out parameters");
            return -1;
        }
        lay->params = p;
    }
    sy_param *p = &lay->params[lay->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = s0;
    p->shape[1] = ndim > 1 ? s1 : 1;
    p->numel = (size_t)s0 * (ndim > 1 ? s1 : 1);
    p->offset = lay->total;
    p->layer = layer;
    p->expert = expert;
    p->decay = ndim > 1;
    /* keep every tensor 64-byte aligned inside the arena */
    lay->total += (p->numel + 15) & ~(size_t)15;
    return 0;
}

int sy_layout_init(sy_layout *lay, const sy_model_cfg *c, const unsigned char *held) {
    memset(lay, 0, sizeof *lay);
    lay->cfg = *c;
    int cap = 0, C = c->d_model, F = c->d_ff, E = c->n_experts, V = c->vocab;
    char name[64];
    lay->held = calloc((size_t)(E > 0 ? E : 1), 1);
    if (!lay->held)
        goto oom;
    for (int e = 0; e < E; e++)
        lay->held[e] = held ? held[e] != 0 : 1;
    /* replicated parameters first (so they form one contiguous all-reduce region), in
     * canonical order; then the experts held here. */
    if (add_param(lay, &cap, "wte", 2, V, C, -1, -1) || add_param(lay, &cap, "wpe", 2, c->seq_len, C, -1, -1))
        goto fail;
    for (int l = 0; l < c->n_layers; l++) {
#define P(suffix, nd, a, b)                                                                                         \
    do {                                                                                                           \
        snprintf(name, sizeof name, "layers.%d.%s", l, suffix);                                                    \
        if (add_param(lay, &cap, name, nd, a, b, l, -1))                                                           \
            goto fail;                                                                                             \
    } while (0)
        P("norm1", 1, C, 1);
        P("attn.wqkv", 2, C, 3 * C);
        P("attn.wo", 2, C, C);
        P("norm2", 1, C, 1);
        if (sy_is_switch_layer(c, l)) {
            P("router", 2, C, E);
        } else {
            P("ffn.w1", 2, C, F);
            P("ffn.w2", 2, F, C);
        }
#undef P
    }
    if (add_param(lay, &cap, "normf", 1, C, 1, -1, -1) || add_param(lay, &cap, "lm_head", 2, C, V, -1, -1))
        goto fail;
    lay->dense_total = lay->total;
    for (int l = 0; l < c->n_layers; l++) {
        if (!sy_is_switch_layer(c, l))
            continue;
        for (int e = 0; e < E; e++) {
            if (!lay->held[e])
                continue;
            snprintf(name, sizeof name, "layers.%d.experts.%d.w1", l, e);
            if (add_param(lay, &cap, name, 2, C, F, l, e))
                goto fail;
            snprintf(name, sizeof name, "layers.%d.experts.%d.w2", l, e);
            if (add_param(lay, &cap, name, 2, F, C, l, e))
                goto fail;
        }
    }
    return 0;
oom:
    sy_seterr("out of memory laying out parameters");
fail:
    sy_layout_free(lay);
    return -1;
}

void sy_layout_free(sy_layout *lay) {
    free(lay->params);
    free(lay->held);
    memset(lay, 0, sizeof *lay);
}

int sy_layout_find(const sy_layout *lay, const char *name) {
    for (int i = 0; i < lay->n_params; i++)
        if (!strcmp(lay->params[i].name, name))
            return i;
    return -1;
}

int sy_weights_bind(sy_weights *w, const sy_layout *lay, float *base) {
    const sy_model_cfg *c = &lay->cfg;
    memset(w, 0, sizeof *w);
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers)
        return -1;
    for (int l = 0; l < c->n_layers; l++) {
        if (sy_is_switch_layer(c, l)) {
            w->layers[l].ew1 = calloc((size_t)c->n_experts, sizeof(float *));
            w->layers[l].ew2 = calloc((size_t)c->n_experts, sizeof(float *));
            if (!w->layers[l].ew1 || !w->layers[l].ew2) {
                sy_weights_free(w);
                return -1;
            }
        }
    }
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        float *ptr = base + p->offset;
        if (p->layer < 0) {
            if (!strcmp(p->name, "wte"))
                w->wte = ptr;
            else if (!strcmp(p->name, "wpe"))
                w->wpe = ptr;
            else if (!strcmp(p->name, "normf"))
                w->normf = ptr;
            else if (!strcmp(p->name, "lm_head"))
                w->lm_head = ptr;
            continue;
        }
        sy_layer_w *lw = &w->layers[p->layer];
        const char *s = strchr(p->name + 7, '.') + 1; /* after "layers.N." */
        if (p->expert >= 0) {
            if (!strcmp(strrchr(s, '.'), ".w1"))
                lw->ew1[p->expert] = ptr;
            else
                lw->ew2[p->expert] = ptr;
        } else if (!strcmp(s, "norm1"))
            lw->norm1 = ptr;
        else if (!strcmp(s, "attn.wqkv"))
            lw->wqkv = ptr;
        else if (!strcmp(s, "attn.wo"))
            lw->wo = ptr;
        else if (!strcmp(s, "norm2"))
            lw->norm2 = ptr;
        else if (!strcmp(s, "ffn.w1"))
            lw->w1 = ptr;
        else if (!strcmp(s, "ffn.w2"))
            lw->w2 = ptr;
        else if (!strcmp(s, "router"))
            lw->router = ptr;
    }
    return 0;
}

void sy_weights_free(sy_weights *w) {
    if (!w->layers)
        return;
    /* the layer count is not stored; ew arrays were calloc'd per switch layer and the
     * layers array is NULL-terminated by the caller's knowledge: free what is set. */
    free(w->layers);
    w->layers = NULL;
}

/* ---------------------------------------------------------------- activations */

typedef struct {
    float *resid_in;      /* [N,C] residual stream entering the layer */
    float *ln1, *rstd1;   /* [N,C], [N] */
    float *qkv;           /* [N,3C] */
    float *att;           /* [B,H,T,T] */
    float *atto;          /* [N,C] attention output before wo */
    float *drop1;         /* [N,C] dropout multipliers of the attention output, or NULL */
    float *mid;           /* [N,C] residual after attention */
    float *ln2, *rstd2;   /* [N,C], [N] */
    float *drop2;         /* [N,C] dropout multipliers of the FFN/switch output, or NULL */
    /* dense */
    float *hid;           /* [N,F] */
    /* switch */
    float *xr;            /* [N,C] router input after jitter (== ln2 without jitter) */
    float *jit;           /* [N,C] jitter multipliers, or NULL */
    sy_route route;       /* per token, all groups back to back */
    int *kept, *wanted;   /* [G,E] */
    int *row_of;          /* [N,k] packed row of each choice, -1 dropped */
    int *counts;          /* [E] rows per expert (all groups) */
    int rows;             /* total packed rows */
    float *xs, *ys;       /* [N*k, C] packed expert inputs and outputs */
    int64_t *tok;         /* [N*k] global token index of each packed row */
} layer_acts;

struct sy_experts {
    sy_model_cfg cfg;
    const sy_weights *w, *g;
    int max_rows;
    /* per switch layer: the inputs (caller's buffer, kept until backward), hidden units,
     * dropout masks, counts */
    const float **x;
    float **h;
    float **mask;
    int **counts;
    float *dh;            /* [max_rows, F] scratch */
};

/* A weight gradient the backward put off (sy_pass.defer), or the mark after a stage's
 * last one: running it calls grads_final and frees the stage's slot. */
enum { DJ_MATMUL, DJ_FINAL };
typedef struct {
    int kind;
    float *dw; /* MATMUL: dw[k,m] += x[n,k]^T dy[n,m] (sy_matmul_backward's weight half) */
    const float *x, *dy;
    int n, k, m;
    int stage, slot; /* FINAL */
} defer_job;
#define DQ_CAP 64
#define DQ_SLOTS 3

struct sy_model {
    sy_model_cfg cfg;
    sy_layout lay;
    float *params, *grads;
    double *grad_sq;      /* [n_params] each gradient's sum of squares (the step fills it) */
    sy_weights w, g;
    int max_B, T;
    float *act_arena;
    size_t act_floats;
    layer_acts *la;       /* [L] */
    float *final_resid;   /* [N,C] */
    float *lnf, *rstdf;   /* [N,C], [N] */
    float *logits;        /* [N,V] (dlogits in backward) */
    int *targets;         /* [N] */
    int *inputs;          /* [N] */
    /* backward scratch */
    float *dres, *dln, *dhid, *dtmp, *dqkv, *datt_scratch, *dlogits_r, *dgate;
    float *dys, *dxs;
    sy_pass pass;         /* of the last forward */
    int have_forward;
    /* put-off weight gradients of the backward (sy_pass.defer), first in, first out; a
     * job's inputs live in one of the slots until its stage's final mark has run */
    defer_job dq[DQ_CAP];
    int dq_head, dq_len;
    float *dslot[DQ_SLOTS][2]; /* [N,C] branch gradient; [N, max(3C, F)] qkv or hidden gradient */
    int dslot_busy[DQ_SLOTS];
    int in_backward, dq_failed;
    sy_experts *local;
    sy_expert_exchange ex;
    sy_model_times times;
};

/* Bump allocator over the activation arena; the first pass only counts. */
typedef struct {
    char *base;
    size_t used;
} bump;

static void *take(bump *b, size_t bytes) {
    size_t at = (b->used + 63) & ~(size_t)63;
    b->used = at + bytes;
    return b->base ? b->base + at : NULL;
}

static void lay_out_acts(sy_model *m, bump *b) {
    const sy_model_cfg *c = &m->cfg;
    size_t N = (size_t)m->max_B * m->T, C = c->d_model, F = c->d_ff, E = c->n_experts, k = c->top_k;
    size_t V = c->vocab, H = c->n_heads, T = m->T;
    int G = m->max_B; /* at most one group per row */
    for (int l = 0; l < c->n_layers; l++) {
        layer_acts *a = &m->la[l];
        a->resid_in = take(b, N * C * 4);
        a->ln1 = take(b, N * C * 4);
        a->rstd1 = take(b, N * 4);
        a->qkv = take(b, N * 3 * C * 4);
        a->att = take(b, (size_t)m->max_B * H * T * T * 4);
        a->atto = take(b, N * C * 4);
        a->drop1 = c->dropout > 0 ? take(b, N * C * 4) : NULL;
        a->mid = take(b, N * C * 4);
        a->ln2 = take(b, N * C * 4);
        a->rstd2 = take(b, N * 4);
        a->drop2 = c->dropout > 0 ? take(b, N * C * 4) : NULL;
        if (!sy_is_switch_layer(c, l)) {
            a->hid = take(b, N * F * 4);
        } else {
            a->xr = c->router_jitter > 0 ? take(b, N * C * 4) : NULL;
            a->jit = c->router_jitter > 0 ? take(b, N * C * 4) : NULL;
            a->route.logits = take(b, N * E * 4);
            a->route.probs = take(b, N * E * 4);
            a->route.lse = take(b, N * 4);
            a->route.choice = take(b, N * k * sizeof(int));
            a->route.gate = take(b, N * k * 4);
            a->route.argmax = take(b, N * sizeof(int));
            a->kept = take(b, (size_t)G * E * sizeof(int));
            a->wanted = take(b, (size_t)G * E * sizeof(int));
            a->row_of = take(b, N * k * sizeof(int));
            a->counts = take(b, E * sizeof(int));
            a->xs = take(b, N * k * C * 4);
            a->ys = take(b, N * k * C * 4);
            a->tok = take(b, N * k * sizeof(int64_t));
        }
    }
    m->final_resid = take(b, N * C * 4);
    m->lnf = take(b, N * C * 4);
    m->rstdf = take(b, N * 4);
    m->logits = take(b, N * V * 4);
    m->targets = take(b, N * sizeof(int));
    m->inputs = take(b, N * sizeof(int));
    m->dres = take(b, N * C * 4);
    m->dln = take(b, N * C * 4);
    m->dhid = take(b, N * F * 4);
    m->dtmp = take(b, N * C * 4);
    m->dqkv = take(b, N * 3 * C * 4);
    m->datt_scratch = take(b, T * T * 4);
    m->dlogits_r = take(b, N * E * 4);
    m->dgate = take(b, N * k * 4);
    m->dys = take(b, N * k * C * 4);
    m->dxs = take(b, N * k * C * 4);
}

static int local_forward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *x,
                         const int64_t *tok, float *y) {
    return sy_experts_forward(ctx, pass, layer, counts, x, tok, y);
}
static int local_backward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *dy, float *dx) {
    return sy_experts_backward(ctx, pass, layer, counts, dy, dx);
}

sy_model *sy_model_new(const sy_model_cfg *cfg, int max_B, int T, const unsigned char *held) {
    if (sy_model_cfg_check(cfg))
        return NULL;
    if (max_B < 1 || T < 1 || T > cfg->seq_len) {
        sy_seterr("model: batch %d x %d does not fit (seq_len %d)", max_B, T, cfg->seq_len);
        return NULL;
    }
    sy_model *m = calloc(1, sizeof *m);
    if (!m)
        goto oom;
    m->cfg = *cfg;
    m->max_B = max_B;
    m->T = T;
    if (sy_layout_init(&m->lay, cfg, held))
        goto fail;
    m->params = aligned_alloc(64, ((m->lay.total * 4 + 63) / 64) * 64);
    m->grads = aligned_alloc(64, ((m->lay.total * 4 + 63) / 64) * 64);
    m->grad_sq = calloc((size_t)m->lay.n_params + 1, sizeof(double));
    if (!m->params || !m->grads || !m->grad_sq)
        goto oom;
    memset(m->params, 0, m->lay.total * 4);
    memset(m->grads, 0, m->lay.total * 4);
    if (sy_weights_bind(&m->w, &m->lay, m->params) || sy_weights_bind(&m->g, &m->lay, m->grads))
        goto oom;
    m->la = calloc((size_t)cfg->n_layers, sizeof *m->la);
    if (!m->la)
        goto oom;
    bump b = {0};
    lay_out_acts(m, &b);
    m->act_floats = b.used / 4;
    b.base = aligned_alloc(64, (b.used + 63) / 64 * 64);
    if (!b.base)
        goto oom;
    memset(b.base, 0, b.used);
    m->act_arena = (float *)b.base;
    b.used = 0;
    lay_out_acts(m, &b);
    m->local = sy_experts_new(cfg, &m->w, &m->g, max_B * T * cfg->top_k);
    if (!m->local)
        goto fail;
    sy_model_set_exchange(m, NULL);
    return m;
oom:
    sy_seterr("model: out of memory");
fail:
    sy_model_destroy(&m);
    return NULL;
}

static void free_views(sy_weights *w, const sy_model_cfg *c) {
    if (!w->layers)
        return;
    for (int l = 0; l < c->n_layers; l++) {
        free(w->layers[l].ew1);
        free(w->layers[l].ew2);
    }
    sy_weights_free(w);
}

void sy_model_destroy(sy_model **pm) {
    sy_model *m = pm ? *pm : NULL;
    if (!m)
        return;
    sy_experts_destroy(&m->local);
    free_views(&m->w, &m->cfg);
    free_views(&m->g, &m->cfg);
    free(m->params);
    free(m->grads);
    free(m->grad_sq);
    free(m->act_arena);
    for (int i = 0; i < DQ_SLOTS; i++) {
        free(m->dslot[i][0]);
        free(m->dslot[i][1]);
    }
    free(m->la);
    sy_layout_free(&m->lay);
    free(m);
    *pm = NULL;
}

const sy_layout *sy_model_layout(const sy_model *m) { return &m->lay; }
float *sy_model_params(sy_model *m) { return m->params; }
float *sy_model_grads(sy_model *m) { return m->grads; }
double *sy_model_grad_sumsq(sy_model *m) { return m->grad_sq; }
const sy_weights *sy_model_weights(const sy_model *m) { return &m->w; }
const sy_weights *sy_model_grad_views(const sy_model *m) { return &m->g; }
void sy_model_zero_grad(sy_model *m) {
    memset(m->grads, 0, m->lay.total * sizeof(float));
    for (int i = 0; i < m->lay.n_params; i++)
        m->grad_sq[i] = NAN; /* not summed yet */
}

void sy_model_set_exchange(sy_model *m, const sy_expert_exchange *ex) {
    if (ex) {
        m->ex = *ex;
    } else {
        m->ex.ctx = m->local;
        m->ex.forward = local_forward;
        m->ex.backward = local_backward;
    }
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void sy_model_init_weights(sy_model *m, uint64_t seed) {
    for (int i = 0; i < m->lay.n_params; i++) {
        const sy_param *p = &m->lay.params[i];
        float *x = m->params + p->offset;
        if (p->ndim == 1) {
            for (size_t j = 0; j < p->numel; j++)
                x[j] = 1.0f;
            continue;
        }
        /* fan_in: rows of a [in, out] matrix; for the embeddings, d_model */
        int fan_in = (!strcmp(p->name, "wte") || !strcmp(p->name, "wpe")) ? p->shape[1] : p->shape[0];
        double std = sqrt(m->cfg.init_scale / fan_in);
        sy_rng r = {sy_hash4(seed, name_hash(p->name), 0x1417, 0)};
        for (size_t j = 0; j < p->numel; j++) {
            double z;
            do { /* Box-Muller, truncated at two standard deviations */
                double u1 = sy_rng_uniform(&r), u2 = sy_rng_uniform(&r);
                z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
            } while (z < -2.0 || z > 2.0);
            x[j] = (float)(z * std);
        }
    }
}

/* ---------------------------------------------------------------- dropout and jitter draws */

enum { DRAW_ATTN = 1, DRAW_FFN = 2, DRAW_JITTER = 3, DRAW_EXPERT = 4 };

/* mask[n, width] = keep ? 1/(1-p) : 0, drawn from (seed, step, layer, what, token, unit) */
static void draw_dropout(float *mask, const sy_pass *ps, int layer, int what, const int64_t *tok, int64_t tok0, int n,
                         int width, float p) {
    float keep = 1.0f / (1.0f - p);
    for (int i = 0; i < n; i++) {
        uint64_t t = tok ? (uint64_t)tok[i] : (uint64_t)(tok0 + i);
        uint64_t base = sy_hash4(ps->seed, (uint64_t)ps->step, ((uint64_t)layer << 40) | (uint64_t)what, t);
        for (int j = 0; j < width; j++)
            mask[(size_t)i * width + j] = sy_u01(sy_mix64(base + j)) < p ? 0.0f : keep;
    }
}

static void draw_jitter(float *mult, const sy_pass *ps, int layer, int n, int C, float eps) {
    for (int i = 0; i < n; i++) {
        uint64_t base = sy_hash4(ps->seed, (uint64_t)ps->step, ((uint64_t)layer << 8) | DRAW_JITTER,
                                 (uint64_t)(ps->token0 + i));
        for (int j = 0; j < C; j++)
            mult[(size_t)i * C + j] = 1.0f - eps + 2.0f * eps * sy_u01(sy_mix64(base + j));
    }
}

/* ---------------------------------------------------------------- experts */

sy_experts *sy_experts_new(const sy_model_cfg *cfg, const sy_weights *w, const sy_weights *g, int max_rows) {
    sy_experts *x = calloc(1, sizeof *x);
    if (!x)
        goto oom;
    x->cfg = *cfg;
    x->w = w;
    x->g = g;
    x->max_rows = max_rows;
    int L = cfg->n_layers;
    x->x = calloc((size_t)L, sizeof *x->x);
    x->h = calloc((size_t)L, sizeof *x->h);
    x->mask = calloc((size_t)L, sizeof *x->mask);
    x->counts = calloc((size_t)L, sizeof *x->counts);
    if (!x->x || !x->h || !x->mask || !x->counts)
        goto oom;
    size_t hf = (size_t)(max_rows > 0 ? max_rows : 1) * cfg->d_ff;
    for (int l = 0; l < L; l++) {
        if (!sy_is_switch_layer(cfg, l))
            continue;
        x->h[l] = malloc(hf * sizeof(float));
        x->counts[l] = calloc((size_t)cfg->n_experts, sizeof(int));
        if (!x->h[l] || !x->counts[l])
            goto oom;
        if (cfg->expert_dropout > 0 && !(x->mask[l] = malloc(hf * sizeof(float))))
            goto oom;
    }
    x->dh = malloc(hf * sizeof(float));
    if (!x->dh)
        goto oom;
    return x;
oom:
    sy_seterr("experts: out of memory");
    sy_experts_destroy(&x);
    return NULL;
}

void sy_experts_destroy(sy_experts **px) {
    sy_experts *x = px ? *px : NULL;
    if (!x)
        return;
    for (int l = 0; l < x->cfg.n_layers; l++) {
        if (x->h)
            free(x->h[l]);
        if (x->mask)
            free(x->mask[l]);
        if (x->counts)
            free(x->counts[l]);
    }
    free(x->x);
    free(x->h);
    free(x->mask);
    free(x->counts);
    free(x->dh);
    free(x);
    *px = NULL;
}

int sy_experts_forward_one(void *ctx, const sy_pass *pass, int layer, int e, size_t r0, int n, const float *in,
                           const int64_t *tok, float *out) {
    sy_experts *x = ctx;
    const sy_model_cfg *c = &x->cfg;
    int C = c->d_model, F = c->d_ff;
    if (e < 0 || e >= c->n_experts || n < 0 || r0 + (size_t)n > (size_t)x->max_rows) {
        sy_seterr("experts: layer %d expert %d rows [%zu, %zu) outside the room for %d", layer, e, r0, r0 + (size_t)n,
                  x->max_rows);
        return -1;
    }
    if (n == 0)
        return 0;
    const float *w1 = x->w->layers[layer].ew1[e], *w2 = x->w->layers[layer].ew2[e];
    if (!w1 || !w2) {
        sy_seterr("experts: layer %d expert %d is not held here but %d rows came for it", layer, e, n);
        return -1;
    }
    int use_mask = pass->training && c->expert_dropout > 0;
    /* keyed by (token, expert): with top-k the copies of a token draw apart */
    if (use_mask)
        draw_dropout(x->mask[layer] + r0 * F, pass, layer, DRAW_EXPERT | (e + 1) << 3, tok + r0, 0, n, F,
                     c->expert_dropout);
    sy_ffn_forward(out + r0 * C, x->h[layer] + r0 * F, in + r0 * C, w1, w2, use_mask ? x->mask[layer] + r0 * F : NULL,
                   n, C, F);
    return 0;
}

void sy_experts_forward_done(void *ctx, int layer, const int *counts, const float *in) {
    sy_experts *x = ctx;
    x->x[layer] = in;
    memcpy(x->counts[layer], counts, (size_t)x->cfg.n_experts * sizeof(int));
}

int sy_experts_forward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *in,
                       const int64_t *tok, float *out) {
    sy_experts *x = ctx;
    int E = x->cfg.n_experts, rows = 0;
    for (int e = 0; e < E; e++)
        rows += counts[e];
    if (rows > x->max_rows) {
        sy_seterr("experts: layer %d got %d rows, room for %d", layer, rows, x->max_rows);
        return -1;
    }
    size_t r0 = 0;
    for (int e = 0; e < E; e++) {
        if (sy_experts_forward_one(x, pass, layer, e, r0, counts[e], in, tok, out))
            return -1;
        r0 += (size_t)counts[e];
    }
    sy_experts_forward_done(x, layer, counts, in);
    return 0;
}

/* expert e's rows in the forward's packing: first row and count; -1 for a bad e */
static int expert_rows(const sy_experts *x, int layer, int e, size_t *r0, int *n) {
    if (e < 0 || e >= x->cfg.n_experts) {
        sy_seterr("experts: layer %d backward of expert %d of %d", layer, e, x->cfg.n_experts);
        return -1;
    }
    *r0 = 0;
    for (int i = 0; i < e; i++)
        *r0 += (size_t)x->counts[layer][i];
    *n = x->counts[layer][e];
    return 0;
}

/* The hidden gradients of expert e sit at its own rows of the dh scratch ([max_rows, F]),
 * so that the weight half of every expert can come after the input half of all of them. */
int sy_experts_backward_input_one(void *ctx, const sy_pass *pass, int layer, int e, const float *dout, float *din) {
    sy_experts *x = ctx;
    const sy_model_cfg *c = &x->cfg;
    int C = c->d_model, F = c->d_ff, n;
    size_t r0;
    if (expert_rows(x, layer, e, &r0, &n))
        return -1;
    if (n == 0)
        return 0;
    int use_mask = pass->training && c->expert_dropout > 0;
    memset(din + r0 * C, 0, (size_t)n * C * sizeof(float));
    sy_ffn_backward_input(din + r0 * C, x->dh + r0 * F, dout + r0 * C, x->h[layer] + r0 * F, x->w->layers[layer].ew1[e],
                          x->w->layers[layer].ew2[e], use_mask ? x->mask[layer] + r0 * F : NULL, n, C, F);
    return 0;
}

int sy_experts_backward_weights_one(void *ctx, int layer, int e, const float *dout) {
    sy_experts *x = ctx;
    int C = x->cfg.d_model, F = x->cfg.d_ff, n;
    size_t r0;
    if (expert_rows(x, layer, e, &r0, &n))
        return -1;
    sy_ffn_backward_weights(x->g->layers[layer].ew1[e], x->g->layers[layer].ew2[e], x->dh + r0 * F, dout + r0 * C,
                            x->x[layer] + r0 * C, x->h[layer] + r0 * F, n, C, F);
    return 0;
}

void sy_experts_zero_grads_one(void *ctx, int layer, int e) {
    sy_experts *x = ctx;
    size_t n = (size_t)x->cfg.d_model * x->cfg.d_ff;
    if (e < 0 || e >= x->cfg.n_experts || !x->g->layers[layer].ew1 || !x->g->layers[layer].ew1[e])
        return;
    memset(x->g->layers[layer].ew1[e], 0, n * sizeof(float));
    memset(x->g->layers[layer].ew2[e], 0, n * sizeof(float));
}

void sy_experts_set_views(sy_experts *x, const sy_weights *w, const sy_weights *g) {
    if (w)
        x->w = w;
    if (g)
        x->g = g;
}

int sy_experts_backward_one(void *ctx, const sy_pass *pass, int layer, int e, const float *dout, float *din) {
    if (sy_experts_backward_input_one(ctx, pass, layer, e, dout, din))
        return -1;
    return sy_experts_backward_weights_one(ctx, layer, e, dout);
}

int sy_experts_backward(void *ctx, const sy_pass *pass, int layer, const int *counts, const float *dout, float *din) {
    sy_experts *x = ctx;
    int E = x->cfg.n_experts;
    if (memcmp(counts, x->counts[layer], (size_t)E * sizeof(int))) {
        sy_seterr("experts: layer %d backward counts differ from forward", layer);
        return -1;
    }
    for (int e = 0; e < E; e++)
        if (sy_experts_backward_one(x, pass, layer, e, dout, din))
            return -1;
    return 0;
}

/* ---------------------------------------------------------------- forward */

/* The routing buffers of group g (n tokens) inside a layer's all-groups arrays. */
static sy_route group_route(const layer_acts *a, int g, int n, int E, int k) {
    size_t t0 = (size_t)g * n;
    sy_route r = {a->route.logits + t0 * E, a->route.probs + t0 * E, a->route.lse + t0,
                  a->route.choice + t0 * k,  a->route.gate + t0 * k,  a->route.argmax + t0,
                  a->kept + (size_t)g * E,  a->wanted + (size_t)g * E};
    return r;
}

/* Routes each group, runs the experts through the exchange, combines by gate.
 * out[N,C] = switch output; *aux_out, *z_out = sums over groups of aux_g and z_g. */
static int switch_forward(sy_model *m, int l, const sy_pass *ps, float *out, double *aux_out, double *z_out) {
    const sy_model_cfg *c = &m->cfg;
    layer_acts *a = &m->la[l];
    const sy_layer_w *lw = &m->w.layers[l];
    int C = c->d_model, E = c->n_experts, k = c->top_k, N = ps->B * ps->T, G = ps->groups, n = N / G;
    const float *xr = a->ln2;
    if (ps->training && c->router_jitter > 0) {
        draw_jitter(a->jit, ps, l, N, C, c->router_jitter);
        for (size_t i = 0; i < (size_t)N * C; i++)
            a->xr[i] = a->ln2[i] * a->jit[i];
        xr = a->xr;
    }
    double t_router = sy_now();
    double cf = sy_capacity_factor_decimal(ps->training ? c->capacity_factor : c->eval_capacity_factor);
    int cap = sy_router_capacity(cf, n, E);
    double aux = 0.0, z = 0.0;
    for (int g = 0; g < G; g++) {
        size_t t0 = (size_t)g * n;
        sy_route r = group_route(a, g, n, E, k);
        double ga, gz;
        sy_router_forward(&r, xr + t0 * C, lw->router, n, C, E, k, cap, &ga, &gz);
        aux += ga;
        z += gz;
    }
    /* pack rows expert-major, then group, token, choice */
    memset(a->counts, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < N * k; i++)
        if (a->route.choice[i] >= 0)
            a->counts[a->route.choice[i]]++;
    int start[256], *st = E <= 256 ? start : malloc((size_t)E * sizeof(int));
    if (!st) {
        sy_seterr("model: out of memory");
        return -1;
    }
    int rows = 0;
    for (int e = 0; e < E; e++) {
        st[e] = rows;
        rows += a->counts[e];
    }
    for (int i = 0; i < N * k; i++) {
        int e = a->route.choice[i];
        if (e < 0) {
            a->row_of[i] = -1;
            continue;
        }
        int row = st[e]++;
        a->row_of[i] = row;
        memcpy(a->xs + (size_t)row * C, a->ln2 + (size_t)(i / k) * C, (size_t)C * sizeof(float));
        a->tok[row] = ps->token0 + i / k;
    }
    if (st != start)
        free(st);
    a->rows = rows;
    double t_ex = sy_now();
    m->times.router += t_ex - t_router;
    if (m->ex.forward(m->ex.ctx, ps, l, a->counts, a->xs, a->tok, a->ys)) {
        sy_err_prefix("layer %d experts", l);
        return -1;
    }
    m->times.experts += sy_now() - t_ex;
    memset(out, 0, (size_t)N * C * sizeof(float));
    for (int i = 0; i < N * k; i++)
        if (a->row_of[i] >= 0)
            sy_axpy(out + (size_t)(i / k) * C, a->ys + (size_t)a->row_of[i] * C, a->route.gate[i], C);
    *aux_out = aux;
    *z_out = z;
    return 0;
}

static void apply_mask(float *x, const float *mask, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] *= mask[i];
}

int sy_model_forward(sy_model *m, const sy_pass *ps, const int32_t *tokens, sy_losses *out) {
    const sy_model_cfg *c = &m->cfg;
    int B = ps->B, T = ps->T, C = c->d_model, V = c->vocab, L = c->n_layers, H = c->n_heads, F = c->d_ff;
    m->have_forward = 0;
    if (B < 1 || B > m->max_B || T != m->T) {
        sy_seterr("model: batch %d x %d does not match the model's %d x %d", B, T, m->max_B, m->T);
        return -1;
    }
    if (ps->groups < 1 || B % ps->groups) {
        sy_seterr("model: %d rows do not split into %d groups", B, ps->groups);
        return -1;
    }
    size_t N = (size_t)B * T;
    double t_start = sy_now();
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) {
            int32_t x = tokens[(size_t)b * (T + 1) + t];
            if (x < 0 || x >= V) {
                sy_seterr("model: token %d at row %d position %d is outside the vocabulary [0, %d)", x, b, t, V);
                return -1;
            }
            if (t < T)
                m->inputs[(size_t)b * T + t] = x;
            if (t > 0)
                m->targets[(size_t)b * T + t - 1] = x;
        }
    m->pass = *ps;
    int drop = ps->training && c->dropout > 0;
    /* embeddings */
    float *h = L > 0 ? m->la[0].resid_in : m->final_resid;
    for (size_t i = 0; i < N; i++) {
        const float *te = m->w.wte + (size_t)m->inputs[i] * C, *pe = m->w.wpe + (size_t)(i % T) * C;
        for (int j = 0; j < C; j++)
            h[i * C + j] = te[j] + pe[j];
    }
    double aux = 0.0, z = 0.0;
    float *tmp = m->dtmp;
    for (int l = 0; l < L; l++) {
        layer_acts *a = &m->la[l];
        const sy_layer_w *lw = &m->w.layers[l];
        float *x = a->resid_in, *next = l + 1 < L ? m->la[l + 1].resid_in : m->final_resid;
        double t_part = sy_now();
        sy_rmsnorm_forward(a->ln1, a->rstd1, x, lw->norm1, (int)N, C);
        sy_matmul_forward(a->qkv, a->ln1, lw->wqkv, (int)N, C, 3 * C, 0.0f);
        sy_attention_forward(a->atto, a->att, a->qkv, B, T, C, H);
        sy_matmul_forward(tmp, a->atto, lw->wo, (int)N, C, C, 0.0f);
        if (drop) {
            draw_dropout(a->drop1, ps, l, DRAW_ATTN, NULL, ps->token0, (int)N, C, c->dropout);
            apply_mask(tmp, a->drop1, N * C);
        }
        for (size_t i = 0; i < N * C; i++)
            a->mid[i] = x[i] + tmp[i];
        trace_part("attention", l, t_part);
        t_part = sy_now();
        sy_rmsnorm_forward(a->ln2, a->rstd2, a->mid, lw->norm2, (int)N, C);
        if (sy_is_switch_layer(c, l)) {
            double la_, lz;
            if (switch_forward(m, l, ps, tmp, &la_, &lz))
                return -1;
            aux += la_;
            z += lz;
        } else {
            sy_ffn_forward(tmp, a->hid, a->ln2, lw->w1, lw->w2, NULL, (int)N, C, F);
        }
        if (drop) {
            draw_dropout(a->drop2, ps, l, DRAW_FFN, NULL, ps->token0, (int)N, C, c->dropout);
            apply_mask(tmp, a->drop2, N * C);
        }
        for (size_t i = 0; i < N * C; i++)
            next[i] = a->mid[i] + tmp[i];
        trace_part(sy_is_switch_layer(c, l) ? "switch" : "feed-forward", l, t_part);
    }
    sy_rmsnorm_forward(m->lnf, m->rstdf, m->final_resid, m->w.normf, (int)N, C);
    sy_matmul_forward(m->logits, m->lnf, m->w.lm_head, (int)N, C, V, 0.0f);
    double ce = sy_crossentropy(NULL, m->logits, m->targets, (int)N, V, 0.0f);
    double cd = ps->ce_denom > 0 ? ps->ce_denom : (double)N;
    double gd = ps->group_denom > 0 ? ps->group_denom : ps->groups;
    out->ce = ce / cd;
    out->aux = aux / gd;
    out->z = z / gd;
    out->total = out->ce + c->aux_loss_coef * out->aux + c->z_loss_coef * out->z;
    m->have_forward = 1;
    m->times.forward += sy_now() - t_start;
    return 0;
}

/* ---------------------------------------------------------------- backward */

/* dbr[N,C]: gradient wrt the switch output; accumulates into dln2[N,C] */
static int switch_backward(sy_model *m, int l, const sy_pass *ps, const float *dbr, float *dln2) {
    const sy_model_cfg *c = &m->cfg;
    layer_acts *a = &m->la[l];
    const sy_layer_w *lw = &m->w.layers[l];
    sy_layer_w *gw = &m->g.layers[l];
    int C = c->d_model, E = c->n_experts, k = c->top_k, N = ps->B * ps->T, G = ps->groups, n = N / G;
    for (int i = 0; i < N * k; i++) {
        int row = a->row_of[i];
        if (row < 0) {
            m->dgate[i] = 0.0f;
            continue;
        }
        const float *d = dbr + (size_t)(i / k) * C, *y = a->ys + (size_t)row * C;
        float *dy = m->dys + (size_t)row * C, gate = a->route.gate[i];
        double dot = 0.0;
        for (int j = 0; j < C; j++) {
            dy[j] = gate * d[j];
            dot += (double)d[j] * y[j];
        }
        m->dgate[i] = (float)dot;
    }
    double t_ex = sy_now();
    if (m->ex.backward(m->ex.ctx, ps, l, a->counts, m->dys, m->dxs)) {
        sy_err_prefix("layer %d experts backward", l);
        return -1;
    }
    double t_router = sy_now();
    m->times.experts += t_router - t_ex;
    for (int i = 0; i < N * k; i++)
        if (a->row_of[i] >= 0)
            sy_axpy(dln2 + (size_t)(i / k) * C, m->dxs + (size_t)a->row_of[i] * C, 1.0f, C);
    double gd = ps->group_denom > 0 ? ps->group_denom : G;
    float aux_scale = (float)(c->aux_loss_coef / gd), z_scale = (float)(c->z_loss_coef / gd);
    for (int g = 0; g < G; g++) {
        size_t t0 = (size_t)g * n;
        sy_route r = group_route(a, g, n, E, k);
        sy_router_backward(m->dlogits_r + t0 * E, &r, m->dgate + t0 * k, n, E, k, aux_scale, z_scale);
    }
    if (ps->training && c->router_jitter > 0) {
        float *dxr = m->dqkv; /* free at this point of the backward pass */
        memset(dxr, 0, (size_t)N * C * sizeof(float));
        sy_matmul_backward(dxr, gw->router, m->dlogits_r, a->xr, lw->router, N, C, E);
        for (size_t i = 0; i < (size_t)N * C; i++)
            dln2[i] += dxr[i] * a->jit[i];
    } else {
        sy_matmul_backward(dln2, gw->router, m->dlogits_r, a->ln2, lw->router, N, C, E);
    }
    m->times.router += sy_now() - t_router;
    return 0;
}

/* ---------------------------------------------------------------- put-off weight gradients */

static int dq_push(sy_model *m, defer_job j) {
    if (m->dq_failed) /* a put-off stage failed inside a wait: the pass stops here */
        return -1;
    if (m->dq_len == DQ_CAP) { /* cannot happen: DQ_SLOTS stages of at most three jobs, the head's and marks */
        sy_seterr("model: too many put-off weight gradients");
        return -1;
    }
    m->dq[(m->dq_head + m->dq_len++) % DQ_CAP] = j;
    return 0;
}

/* 1: ran the oldest job; 0: none waiting; -1: its grads_final failed */
static int dq_run_one(sy_model *m) {
    if (m->dq_failed)
        return -1;
    if (!m->dq_len)
        return 0;
    defer_job j = m->dq[m->dq_head];
    m->dq_head = (m->dq_head + 1) % DQ_CAP;
    m->dq_len--;
    if (j.kind == DJ_MATMUL) {
        sy_matmul_backward(NULL, j.dw, j.dy, j.x, NULL, j.n, j.k, j.m);
    } else {
        if (j.slot >= 0)
            m->dslot_busy[j.slot] = 0;
        const sy_pass *ps = &m->pass;
        if (ps->grads_final && ps->grads_final(ps->grads_ctx, j.stage)) {
            m->dq_failed = 1;
            return -1;
        }
    }
    return 1;
}

static int dq_drain(sy_model *m) {
    int rc;
    while ((rc = dq_run_one(m)) > 0)
        ;
    return rc;
}

/* The end of a stage: its grads_final now, or after the jobs put off before it. */
static int dq_final(sy_model *m, int stage, int slot) {
    if (m->dq_failed)
        return -1;
    if (!m->dq_len && slot < 0) {
        const sy_pass *ps = &m->pass;
        return ps->grads_final ? ps->grads_final(ps->grads_ctx, stage) : 0;
    }
    return dq_push(m, (defer_job){.kind = DJ_FINAL, .stage = stage, .slot = slot});
}

/* A free slot for the next stage's put-off inputs (running the oldest jobs until one
 * frees), allocated on first use; -1 on failure. */
static int dq_slot(sy_model *m) {
    for (;;) {
        for (int i = 0; i < DQ_SLOTS; i++) {
            if (m->dslot_busy[i])
                continue;
            if (!m->dslot[i][0] || !m->dslot[i][1]) {
                size_t N = (size_t)m->max_B * m->T, C = (size_t)m->cfg.d_model, F = (size_t)m->cfg.d_ff;
                size_t wide = 3 * C > F ? 3 * C : F;
                if (!m->dslot[i][0])
                    m->dslot[i][0] = malloc(N * C * sizeof(float));
                if (!m->dslot[i][1])
                    m->dslot[i][1] = malloc(N * wide * sizeof(float));
                if (!m->dslot[i][0] || !m->dslot[i][1]) {
                    sy_seterr("model: out of memory (put-off weight gradients)");
                    return -1;
                }
            }
            m->dslot_busy[i] = 1;
            return i;
        }
        if (dq_run_one(m) <= 0) {
            if (!m->dq_failed)
                sy_seterr("model: no free buffer for put-off weight gradients");
            return -1;
        }
    }
}

/* dw[k,mm] += x[n,k]^T dy[n,mm] (sy_matmul_backward's weight half) now, or put off; x and
 * dy must then stay as they are until the stage's final mark runs. */
static int weight_grad(sy_model *m, int defer, float *dw, const float *x, const float *dy, int n, int k, int mm) {
    if (!defer) {
        sy_matmul_backward(NULL, dw, dy, x, NULL, n, k, mm);
        return 0;
    }
    return dq_push(m, (defer_job){.kind = DJ_MATMUL, .dw = dw, .x = x, .dy = dy, .n = n, .k = k, .m = mm});
}

/* The buffers for a stage's branch gradient and its wide one (qkv or hidden): the shared
 * scratch, or, when the stage's weight gradients are put off, a free slot's (*slot). */
static int stage_buffers(sy_model *m, int defer, float *wide_scratch, int *slot, float **dbr, float **wide) {
    *slot = -1;
    *dbr = m->dtmp;
    *wide = wide_scratch;
    if (!defer)
        return 0;
    if ((*slot = dq_slot(m)) < 0)
        return -1;
    *dbr = m->dslot[*slot][0];
    *wide = m->dslot[*slot][1];
    return 0;
}

int sy_model_backward_idle(sy_model *m) {
    if (!m->in_backward || m->dq_failed || !m->dq_len)
        return 0;
    double t0 = sy_now();
    int rc = dq_run_one(m);
    m->times.idle += sy_now() - t0;
    return rc > 0;
}

int sy_model_backward(sy_model *m) { return sy_model_backward_mix(m, 1.0f, NULL); }

const float *sy_model_logits(const sy_model *m) { return m->have_forward ? m->logits : NULL; }

static int backward_body(sy_model *m, float hard_scale, const float *dlogits_extra);

int sy_model_backward_mix(sy_model *m, float hard_scale, const float *dlogits_extra) {
    if (!m->have_forward) {
        sy_seterr("model: backward without a forward");
        return -1;
    }
    m->dq_head = m->dq_len = m->dq_failed = 0;
    memset(m->dslot_busy, 0, sizeof m->dslot_busy);
    m->in_backward = 1;
    int rc = backward_body(m, hard_scale, dlogits_extra);
    m->in_backward = 0;
    m->dq_len = 0; /* after a failure: nothing put off outlives the pass */
    return rc;
}

static int backward_body(sy_model *m, float hard_scale, const float *dlogits_extra) {
    const sy_model_cfg *c = &m->cfg;
    const sy_pass *ps = &m->pass;
    int B = ps->B, T = ps->T, C = c->d_model, V = c->vocab, L = c->n_layers, H = c->n_heads, F = c->d_ff;
    int N = B * T;
    size_t NC = (size_t)N * C;
    int drop = ps->training && c->dropout > 0;
    double t_start = sy_now();
    /* put off weight gradients only above the lowest switch layer: below it no exchange
     * waits that they could fill, and their stages' buckets should go at once */
    int low_switch = L;
    for (int l = L - 1; l >= 0; l--)
        if (sy_is_switch_layer(c, l))
            low_switch = l;
    int defer_head = ps->defer && low_switch < L;
    double cd = ps->ce_denom > 0 ? ps->ce_denom : (double)N;
    /* logits become dlogits in place: hard_scale * d(mean CE), plus the caller's term */
    sy_crossentropy(m->logits, m->logits, m->targets, N, V, (float)(hard_scale / cd));
    if (dlogits_extra)
        sy_axpy(m->logits, dlogits_extra, 1.0f, (size_t)N * V);
    memset(m->dtmp, 0, NC * sizeof(float));
    /* dlogits and lnf stay as they are until the next forward: no slot needed */
    sy_matmul_backward(m->dtmp, NULL, m->logits, m->lnf, m->w.lm_head, N, C, V);
    if (weight_grad(m, defer_head, m->g.lm_head, m->lnf, m->logits, N, C, V))
        return -1;
    memset(m->dres, 0, NC * sizeof(float));
    sy_rmsnorm_backward(m->dres, m->g.normf, m->dtmp, m->final_resid, m->w.normf, m->rstdf, N, C);
    if (dq_final(m, 2 * L, -1))
        return -1;
    for (int l = L - 1; l >= 0; l--) {
        layer_acts *a = &m->la[l];
        const sy_layer_w *lw = &m->w.layers[l];
        sy_layer_w *gw = &m->g.layers[l];
        /* an exchange is still ahead of this layer's attention half if a switch layer is
         * below it, and of its feed-forward half also if it is one (its waits are filled) */
        int defer = ps->defer && low_switch < l, slot;
        double t_part = sy_now();
        /* next = mid + drop2 * branch(ln2(mid)) */
        float *dbr, *dwide;
        if (!(ps->defer && low_switch <= l) && dq_drain(m))
            return -1;
        if (stage_buffers(m, defer && !sy_is_switch_layer(c, l), m->dhid, &slot, &dbr, &dwide))
            return -1;
        memcpy(dbr, m->dres, NC * sizeof(float));
        if (drop)
            apply_mask(dbr, a->drop2, NC);
        memset(m->dln, 0, NC * sizeof(float));
        if (sy_is_switch_layer(c, l)) {
            if (switch_backward(m, l, ps, dbr, m->dln))
                return -1;
        } else if (slot >= 0) {
            sy_ffn_backward_input(m->dln, dwide, dbr, a->hid, lw->w1, lw->w2, NULL, N, C, F);
            /* sy_ffn_backward_weights's two calls as two jobs: a wait gets the first word
             * back sooner */
            if (weight_grad(m, 1, gw->w2, a->hid, dbr, N, F, C) || weight_grad(m, 1, gw->w1, a->ln2, dwide, N, C, F))
                return -1;
        } else {
            sy_ffn_backward(m->dln, gw->w1, gw->w2, dwide, dbr, a->ln2, a->hid, lw->w1, lw->w2, NULL, N, C, F);
        }
        sy_rmsnorm_backward(m->dres, gw->norm2, m->dln, a->mid, lw->norm2, a->rstd2, N, C);
        if (dq_final(m, 2 * l + 1, slot))
            return -1;
        trace_part(sy_is_switch_layer(c, l) ? "switch backward" : "feed-forward backward", l, t_part);
        t_part = sy_now();
        /* mid = x + drop1 * (atto @ wo) */
        float *dqkv;
        if ((!defer && dq_drain(m)) || stage_buffers(m, defer, m->dqkv, &slot, &dbr, &dqkv))
            return -1;
        memcpy(dbr, m->dres, NC * sizeof(float));
        if (drop)
            apply_mask(dbr, a->drop1, NC);
        memset(m->dln, 0, NC * sizeof(float));
        sy_matmul_backward(m->dln, NULL, dbr, a->atto, lw->wo, N, C, C);
        if (weight_grad(m, defer, gw->wo, a->atto, dbr, N, C, C))
            return -1;
        memset(dqkv, 0, NC * 3 * sizeof(float));
        sy_attention_backward(dqkv, m->datt_scratch, m->dln, a->qkv, a->att, B, T, C, H);
        memset(m->dln, 0, NC * sizeof(float));
        sy_matmul_backward(m->dln, NULL, dqkv, a->ln1, lw->wqkv, N, C, 3 * C);
        if (weight_grad(m, defer, gw->wqkv, a->ln1, dqkv, N, C, 3 * C))
            return -1;
        sy_rmsnorm_backward(m->dres, gw->norm1, m->dln, a->resid_in, lw->norm1, a->rstd1, N, C);
        if (dq_final(m, 2 * l, slot))
            return -1;
        trace_part("attention backward", l, t_part);
    }
    if (dq_drain(m))
        return -1;
    for (int i = 0; i < N; i++) {
        float *dte = m->g.wte + (size_t)m->inputs[i] * C, *dpe = m->g.wpe + (size_t)(i % T) * C;
        const float *d = m->dres + (size_t)i * C;
        for (int j = 0; j < C; j++) {
            dte[j] += d[j];
            dpe[j] += d[j];
        }
    }
    m->have_forward = 0;
    m->times.backward += sy_now() - t_start;
    if (ps->grads_final && ps->grads_final(ps->grads_ctx, -1))
        return -1;
    return 0;
}

const int *sy_model_routing(const sy_model *m, int layer, int *k) {
    if (layer < 0 || layer >= m->cfg.n_layers || !sy_is_switch_layer(&m->cfg, layer))
        return NULL;
    if (k)
        *k = m->cfg.top_k;
    return m->la[layer].route.choice;
}

void sy_model_expert_load(const sy_model *m, int layer, int *wanted, int *kept) {
    int E = m->cfg.n_experts, G = m->pass.groups;
    for (int e = 0; e < E; e++)
        wanted[e] = kept[e] = 0;
    if (!sy_is_switch_layer(&m->cfg, layer))
        return;
    const layer_acts *a = &m->la[layer];
    for (int g = 0; g < G; g++)
        for (int e = 0; e < E; e++) {
            wanted[e] += a->wanted[(size_t)g * E + e];
            kept[e] += a->kept[(size_t)g * E + e];
        }
}

void sy_model_timers(sy_model *m, sy_model_times *out, int reset) {
    if (out)
        *out = m->times;
    if (reset)
        memset(&m->times, 0, sizeof m->times);
}

size_t sy_model_activation_bytes(const sy_model *m) { return m->act_floats * sizeof(float); }

double sy_model_flops_per_token(const sy_model_cfg *c, int T) {
    double C = c->d_model, F = c->d_ff, E = c->n_experts, V = c->vocab;
    double f = 2.0 * C * V; /* lm_head */
    for (int l = 0; l < c->n_layers; l++) {
        f += 2.0 * C * 3 * C + 2.0 * C * C; /* qkv, wo */
        f += 2.0 * 2.0 * T * C;             /* scores and weighted values (full T x T as computed) */
        if (sy_is_switch_layer(c, l))
            f += 2.0 * C * E + c->top_k * 2.0 * 2.0 * C * F;
        else
            f += 2.0 * 2.0 * C * F;
    }
    return 3.0 * f;
}
