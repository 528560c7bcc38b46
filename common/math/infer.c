#include "infer.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "log.h"
#include "router.h"

struct sy_infer {
    sy_model_cfg cfg;
    const sy_weights *w;
    int ctx, len, cap;
    float *arena;
    float **k, **v;   /* [L] -> [ctx, C] cached keys and values */
    int *used;        /* [L, E] slots taken per switch layer and expert */
    int *choice;      /* [L, k] routing of the last step */
    /* one position's scratch */
    float *x, *ln, *qkv, *atto, *tmp, *mid, *out, *eo, *hid, *scores;
    float rstd;
    sy_route r;       /* one token's router buffers */
};

sy_infer *sy_infer_new(const sy_model_cfg *cfg, const sy_weights *w, int ctx, double capacity_factor) {
    if (sy_model_cfg_check(cfg))
        return NULL;
    if (ctx < 1 || ctx > cfg->seq_len) {
        sy_seterr("infer: context %d outside [1, model.seq_len = %d]", ctx, cfg->seq_len);
        return NULL;
    }
    if (!(capacity_factor > 0)) {
        sy_seterr("infer: capacity factor must be > 0 (got %g)", capacity_factor);
        return NULL;
    }
    int L = cfg->n_layers, C = cfg->d_model, F = cfg->d_ff, E = cfg->n_experts, k = cfg->top_k;
    sy_infer *s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->cfg = *cfg;
    s->w = w;
    s->ctx = ctx;
    s->cap = sy_router_capacity(capacity_factor, ctx, E);
    /* k, v caches; x ln atto tmp mid out eo; qkv; hid; scores; router logits, probs; gate; lse */
    size_t floats = (size_t)L * 2 * ctx * C + 7 * (size_t)C + 3 * (size_t)C + (size_t)F + (size_t)ctx +
                    2 * (size_t)E + (size_t)k + 1;
    s->arena = calloc(floats, sizeof(float));
    s->k = calloc((size_t)L, sizeof(float *));
    s->v = calloc((size_t)L, sizeof(float *));
    s->used = calloc((size_t)L * (E > 0 ? E : 1), sizeof(int));
    s->choice = calloc((size_t)L * k, sizeof(int));
    s->r.choice = calloc((size_t)k, sizeof(int));
    s->r.argmax = calloc(1, sizeof(int));
    s->r.kept = calloc((size_t)(E > 0 ? E : 1), sizeof(int));
    s->r.wanted = calloc((size_t)(E > 0 ? E : 1), sizeof(int));
    if (!s->arena || !s->k || !s->v || !s->used || !s->choice || !s->r.choice || !s->r.argmax || !s->r.kept ||
        !s->r.wanted)
        goto oom;
    float *p = s->arena;
    for (int l = 0; l < L; l++) {
        s->k[l] = p, p += (size_t)ctx * C;
        s->v[l] = p, p += (size_t)ctx * C;
    }
    s->x = p, p += C;
    s->ln = p, p += C;
    s->atto = p, p += C;
    s->tmp = p, p += C;
    s->mid = p, p += C;
    s->out = p, p += C;
    s->eo = p, p += C;
    s->qkv = p, p += 3 * (size_t)C;
    s->hid = p, p += F;
    s->scores = p, p += ctx;
    s->r.logits = p, p += E;
    s->r.probs = p, p += E;
    s->r.gate = p, p += k;
    s->r.lse = p;
    return s;
oom:
    sy_seterr("infer: out of memory");
    sy_infer_destroy(&s);
    return NULL;
}

void sy_infer_destroy(sy_infer **ps) {
    sy_infer *s = ps ? *ps : NULL;
    if (!s)
        return;
    free(s->arena);
    free(s->k);
    free(s->v);
    free(s->used);
    free(s->choice);
    free(s->r.choice);
    free(s->r.argmax);
    free(s->r.kept);
    free(s->r.wanted);
    free(s);
    *ps = NULL;
}

void sy_infer_reset(sy_infer *s) {
    s->len = 0;
    memset(s->used, 0, (size_t)s->cfg.n_layers * (s->cfg.n_experts > 0 ? s->cfg.n_experts : 1) * sizeof(int));
}

int sy_infer_len(const sy_infer *s) { return s->len; }
int sy_infer_ctx(const sy_infer *s) { return s->ctx; }

const int *sy_infer_routing(const sy_infer *s, int layer) {
    if (layer < 0 || layer >= s->cfg.n_layers || !sy_is_switch_layer(&s->cfg, layer))
        return NULL;
    return s->choice + (size_t)layer * s->cfg.top_k;
}

/* y[M] = x[K] @ w[K,M] for one row: a matrix-vector product (sgemm's blocking does not pay here) */
static void vecmat(float *y, const float *x, const float *w, int K, int M) {
    cblas_sgemv(CblasRowMajor, CblasTrans, K, M, 1.0f, w, M, x, 1, 0.0f, y, 1);
}

/* y[C] = relu(x[C] @ w1[C,F]) @ w2[F,C], hid[F] scratch: ffn.h's block for one row */
static void ffn_one(float *y, float *hid, const float *x, const float *w1, const float *w2, int C, int F) {
    vecmat(hid, x, w1, C, F);
    sy_relu_forward(hid, (size_t)F);
    vecmat(y, hid, w2, F, C);
}

/* out[hd] = softmax_j(q . K_j * scale, j <= t) V_j for one head, keys and values with row stride C */
static void attend(float *out, float *scores, const float *q, const float *K, const float *Vv, int t, int C, int hd) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int j = 0; j <= t; j++) {
        const float *kj = K + (size_t)j * C;
        float dot = 0.0f;
        for (int d = 0; d < hd; d++)
            dot += q[d] * kj[d];
        scores[j] = scale * dot;
    }
    sy_softmax_row(scores, t + 1);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int j = 0; j <= t; j++)
        sy_axpy(out, Vv + (size_t)j * C, scores[j], (size_t)hd);
}

/* The switch layer for one token: route ln[C] in float32, claim slots in arrival order,
 * out[C] = sum over kept choices of gate * expert(ln). */
static void switch_one(sy_infer *s, int l) {
    const sy_model_cfg *c = &s->cfg;
    const sy_layer_w *lw = &s->w->layers[l];
    int C = c->d_model, F = c->d_ff, E = c->n_experts, k = c->top_k;
    double aux, z;
    /* a group of one with room for it: the router's own top-k, ties and probabilities */
    sy_router_forward(&s->r, s->ln, lw->router, 1, C, E, k, 1, &aux, &z);
    int *used = s->used + (size_t)l * E, *ch = s->choice + (size_t)l * k;
    memset(s->out, 0, (size_t)C * sizeof(float));
    for (int j = 0; j < k; j++) {
        int e = s->r.choice[j];
        if (e < 0 || used[e] >= s->cap) {
            ch[j] = -1;
            continue;
        }
        used[e]++;
        ch[j] = e;
        ffn_one(s->eo, s->hid, s->ln, lw->ew1[e], lw->ew2[e], C, F);
        sy_axpy(s->out, s->eo, s->r.probs[e], (size_t)C);
    }
}

int sy_infer_step(sy_infer *s, int token, float *logits) {
    const sy_model_cfg *c = &s->cfg;
    const sy_weights *w = s->w;
    int C = c->d_model, H = c->n_heads, hd = C / H, V = c->vocab, t = s->len;
    if (token < 0 || token >= V) {
        sy_seterr("infer: token %d is outside the vocabulary [0, %d)", token, V);
        return -1;
    }
    if (t >= s->ctx) {
        sy_seterr("infer: the context window of %d positions is full", s->ctx);
        return -1;
    }
    for (int j = 0; j < C; j++)
        s->x[j] = w->wte[(size_t)token * C + j] + w->wpe[(size_t)t * C + j];
    for (int l = 0; l < c->n_layers; l++) {
        const sy_layer_w *lw = &w->layers[l];
        sy_rmsnorm_forward(s->ln, &s->rstd, s->x, lw->norm1, 1, C);
        vecmat(s->qkv, s->ln, lw->wqkv, C, 3 * C);
        memcpy(s->k[l] + (size_t)t * C, s->qkv + C, (size_t)C * sizeof(float));
        memcpy(s->v[l] + (size_t)t * C, s->qkv + 2 * C, (size_t)C * sizeof(float));
        for (int h = 0; h < H; h++)
            attend(s->atto + h * hd, s->scores, s->qkv + h * hd, s->k[l] + h * hd, s->v[l] + h * hd, t, C, hd);
        vecmat(s->tmp, s->atto, lw->wo, C, C);
        for (int j = 0; j < C; j++)
            s->mid[j] = s->x[j] + s->tmp[j];
        sy_rmsnorm_forward(s->ln, &s->rstd, s->mid, lw->norm2, 1, C);
        if (sy_is_switch_layer(c, l))
            switch_one(s, l);
        else
            ffn_one(s->out, s->hid, s->ln, lw->w1, lw->w2, C, c->d_ff);
        for (int j = 0; j < C; j++)
            s->x[j] = s->mid[j] + s->out[j];
    }
    sy_rmsnorm_forward(s->ln, &s->rstd, s->x, w->normf, 1, C);
    vecmat(logits, s->ln, w->lm_head, C, V);
    s->len++;
    return 0;
}

static int desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int sy_sample_token(float *logits, int V, float temperature, int top_k, double u) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best])
            best = v;
    if (!(temperature > 0.0f) || top_k == 1)
        return best;
    float thresh = -INFINITY;
    if (top_k > 0 && top_k < V && V <= 256) {
        float sorted[256]; /* the k-th largest logit keeps at least k tokens (more on ties) */
        memcpy(sorted, logits, (size_t)V * sizeof(float));
        qsort(sorted, (size_t)V, sizeof(float), desc);
        thresh = sorted[top_k - 1];
    }
    double sum = 0.0, mx = logits[best];
    for (int v = 0; v < V; v++) {
        double p = logits[v] >= thresh ? exp(((double)logits[v] - mx) / temperature) : 0.0;
        logits[v] = (float)p;
        sum += p;
    }
    double target = u * sum, acc = 0.0;
    int last = best;
    for (int v = 0; v < V; v++) {
        if (logits[v] <= 0.0f)
            continue;
        acc += logits[v];
        last = v;
        if (acc > target)
            return v;
    }
    return last;
}
