/* replica.c: buddy replicas of expert state (replica.h). */
#include "replica.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "optim.h"

/* Tags of the replica all-to-alls: above the expert exchange's and the all-reduce's. */
enum { TAG_SYNC_P = 0x30000u, TAG_SYNC_M, TAG_SYNC_V, TAG_GRADS, TAG_GRADS_LAYER = 0x30100u /* + layer */ };

/* floats [lo, hi) of an expert region (offsets from its start) hold one layer's experts */
typedef struct {
    size_t lo, hi;
} span;

/* The state of one ward (a rank whose experts this rank keeps). */
typedef struct {
    int rank;
    sy_layout lay;        /* the ward's expert parameters, offsets from 0 (no dense part) */
    float *p, *m, *v, *g; /* [lay.total] */
    int64_t at;           /* the step its state is at; -1: never received */
    int64_t g_step;       /* the step of the pending gradients; -1: none */
    span *layer;          /* [n_layers] where each layer's experts are in lay */
    span *expert;         /* [n_layers * E] where each expert of each layer is in lay (lo == hi: not the ward's) */
    int64_t *g_layer;     /* [n_layers] the step whose gradients of that layer arrived; -1: none */
} ward;

struct sy_replica {
    sy_replica_a2a_fn a2a;
    void *ctx;
    int world, rank, buddy;
    size_t own_n;         /* floats of this rank's expert part */
    size_t own_off;       /* where it starts in its arenas (the dense total) */
    int n_layers;
    span *own_expert;     /* [n_layers * E] each of its experts of each layer in it (lo == hi: not its own) */
    int n_experts;
    uint8_t **scratch;    /* [world] send buffers of gradients from stand-ins (pieces not side by side) */
    size_t *scratch_cap;
    ward *wards;
    int n_wards;
    void **send;          /* [world] scratch */
    size_t *send_bytes;
    const void **recv;
    size_t *recv_bytes;
    uint64_t bytes_sent;
};

/* Each layer's span in the expert parameters of lay, which start at `base` (lo == hi: none). */
static void layer_spans(span *out, int n_layers, const sy_layout *lay, size_t base) {
    for (int l = 0; l < n_layers; l++)
        out[l] = (span){0, 0};
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (p->expert < 0 || p->layer < 0 || p->layer >= n_layers)
            continue;
        span *s = &out[p->layer];
        size_t lo = p->offset - base, hi = lo + p->numel;
        if (s->lo == s->hi)
            *s = (span){lo, hi};
        else
            *s = (span){lo < s->lo ? lo : s->lo, hi > s->hi ? hi : s->hi};
    }
}

/* Each expert's span (w1 then w2, side by side) in each layer of lay, from `base`. */
static void expert_spans(span *out, int n_layers, int E, const sy_layout *lay, size_t base) {
    for (int i = 0; i < n_layers * E; i++)
        out[i] = (span){0, 0};
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (p->expert < 0 || p->expert >= E || p->layer < 0 || p->layer >= n_layers)
            continue;
        span *s = &out[p->layer * E + p->expert];
        size_t lo = p->offset - base, hi = lo + p->numel;
        if (s->lo == s->hi)
            *s = (span){lo, hi};
        else
            *s = (span){lo < s->lo ? lo : s->lo, hi > s->hi ? hi : s->hi};
    }
}

/* The expert parameters of a layout holding `held`, re-based at offset 0. */
static int ward_layout(sy_layout *out, const sy_model_cfg *mc, const unsigned char *held) {
    sy_layout full;
    if (sy_layout_init(&full, mc, held))
        return -1;
    memset(out, 0, sizeof *out);
    out->cfg = full.cfg;
    out->params = calloc((size_t)full.n_params + 1, sizeof(sy_param));
    if (!out->params) {
        sy_layout_free(&full);
        sy_seterr("replica: out of memory");
        return -1;
    }
    for (int i = 0; i < full.n_params; i++)
        if (full.params[i].expert >= 0) {
            sy_param q = full.params[i];
            q.offset -= full.dense_total;
            out->params[out->n_params++] = q;
        }
    out->total = full.total - full.dense_total;
    sy_layout_free(&full);
    return 0;
}

sy_replica *sy_replica_new(const sy_model_cfg *mc, const sy_mesh *m, int rank, const int *buddy,
                           const sy_layout *own, sy_replica_a2a_fn a2a, void *ctx) {
    sy_replica *r = calloc(1, sizeof *r);
    if (!r) {
        sy_seterr("replica: out of memory");
        return NULL;
    }
    r->a2a = a2a;
    r->ctx = ctx;
    r->world = m->world;
    r->rank = rank;
    r->buddy = buddy[rank];
    r->own_off = own->dense_total;
    r->own_n = own->total - own->dense_total;
    r->n_layers = mc->n_layers;
    r->n_experts = mc->n_experts;
    size_t le = (size_t)mc->n_layers * mc->n_experts + 1;
    r->own_expert = calloc(le, sizeof(span));
    r->scratch = calloc((size_t)m->world, sizeof(uint8_t *));
    r->scratch_cap = calloc((size_t)m->world, sizeof(size_t));
    r->wards = calloc((size_t)m->world, sizeof(ward));
    r->send = calloc((size_t)m->world, sizeof(void *));
    r->send_bytes = calloc((size_t)m->world, sizeof(size_t));
    r->recv = calloc((size_t)m->world, sizeof(void *));
    r->recv_bytes = calloc((size_t)m->world, sizeof(size_t));
    unsigned char *held = calloc((size_t)mc->n_experts + 1, 1);
    if (!r->own_expert || !r->scratch || !r->scratch_cap || !r->wards || !r->send || !r->send_bytes || !r->recv ||
        !r->recv_bytes || !held) {
        free(held);
        sy_replica_destroy(&r);
        sy_seterr("replica: out of memory");
        return NULL;
    }
    expert_spans(r->own_expert, r->n_layers, r->n_experts, own, own->dense_total);
    for (int q = 0; q < m->world; q++) {
        if (q == rank || buddy[q] != rank)
            continue;
        ward *w = &r->wards[r->n_wards++];
        w->rank = q;
        w->at = w->g_step = -1;
        int p = sy_mesh_p(m, q);
        memset(held, 0, (size_t)mc->n_experts);
        for (int e = m->e_begin[p]; e < m->e_end[p]; e++)
            held[e] = 1;
        if (ward_layout(&w->lay, mc, held)) {
            free(held);
            sy_replica_destroy(&r);
            return NULL;
        }
        size_t n = w->lay.total + 1;
        w->p = calloc(n, sizeof(float));
        w->m = calloc(n, sizeof(float));
        w->v = calloc(n, sizeof(float));
        w->g = calloc(n, sizeof(float));
        w->layer = calloc((size_t)mc->n_layers + 1, sizeof(span));
        w->g_layer = calloc((size_t)mc->n_layers + 1, sizeof(int64_t));
        w->expert = calloc(le, sizeof(span));
        if (!w->p || !w->m || !w->v || !w->g || !w->layer || !w->g_layer || !w->expert) {
            free(held);
            sy_replica_destroy(&r);
            sy_seterr("replica: out of memory");
            return NULL;
        }
        layer_spans(w->layer, r->n_layers, &w->lay, 0);
        expert_spans(w->expert, r->n_layers, r->n_experts, &w->lay, 0);
        for (int l = 0; l < r->n_layers; l++)
            w->g_layer[l] = -1;
    }
    free(held);
    return r;
}

void sy_replica_destroy(sy_replica **rp) {
    sy_replica *r = *rp;
    if (!r)
        return;
    for (int i = 0; i < r->n_wards; i++) {
        ward *w = &r->wards[i];
        free(w->p);
        free(w->m);
        free(w->v);
        free(w->g);
        free(w->layer);
        free(w->g_layer);
        free(w->expert);
        free(w->lay.params);
    }
    for (int q = 0; r->scratch && q < r->world; q++)
        free(r->scratch[q]);
    free(r->scratch);
    free(r->scratch_cap);
    free(r->own_expert);
    free(r->wards);
    free(r->send);
    free(r->send_bytes);
    free(r->recv);
    free(r->recv_bytes);
    free(r);
    *rp = NULL;
}

/* One all-to-all: this rank's whole expert part `own` to its buddy; what each ward sent
 * is copied into the ward's array `which` (0 p, 1 m, 2 v, 3 g). */
static int exchange(sy_replica *r, uint32_t tag, int64_t step, const float *own, int which) {
    span s = {0, r->own_n};
    int sends = r->buddy >= 0 && r->buddy != r->rank && s.hi > s.lo;
    for (int i = 0; i < r->world; i++) {
        r->send[i] = (void *)"";
        r->send_bytes[i] = 0;
    }
    if (sends) {
        r->send[r->buddy] = (void *)(own + s.lo);
        r->send_bytes[r->buddy] = (s.hi - s.lo) * sizeof(float);
    }
    int rc = r->a2a(r->ctx, tag, step, r->send, r->send_bytes, r->recv, r->recv_bytes);
    if (rc)
        return rc;
    r->bytes_sent += sends ? (s.hi - s.lo) * sizeof(float) : 0;
    for (int i = 0; i < r->n_wards; i++) {
        ward *w = &r->wards[i];
        span d = {0, w->lay.total};
        size_t want = (d.hi - d.lo) * sizeof(float);
        if (r->recv_bytes[w->rank] != want) {
            sy_seterr("replica: rank %d sent %zu bytes of expert state (tag %#x), its experts have %zu", w->rank,
                      r->recv_bytes[w->rank], tag, want);
            return -1;
        }
        float *dst = which == 0 ? w->p : which == 1 ? w->m : which == 2 ? w->v : w->g;
        memcpy(dst + d.lo, r->recv[w->rank], want);
    }
    return 0;
}

int sy_replica_sync(sy_replica *r, int64_t step, const float *params, const float *m, const float *v) {
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].at = r->wards[i].g_step = -1; /* half-received is never used */
    int rc;
    if ((rc = exchange(r, TAG_SYNC_P, step, params + r->own_off, 0)) ||
        (rc = exchange(r, TAG_SYNC_M, step, m + r->own_off, 1)) ||
        (rc = exchange(r, TAG_SYNC_V, step, v + r->own_off, 2)))
        return rc;
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].at = step;
    return 0;
}

int sy_replica_send_grads(sy_replica *r, int64_t step, const float *grads) {
    sy_replica_drop_pending(r);
    int rc = exchange(r, TAG_GRADS, step, grads + r->own_off, 3);
    if (rc)
        return rc;
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].g_step = step;
    return 0;
}

/* Where expert e of `layer` is kept here and who else keeps it: its gradients (this
 * rank's own arena from `own`, or a ward's), the other holder (the buddy, or the ward),
 * and the owner. */
typedef struct {
    float *g;
    size_t n;
    int other, owner;
} kept;

/* 1 when expert e's gradients travel between this rank and rank q in this layer: it is
 * kept here and at q, and `runner` ran it (runners[e]; its owner without runners). */
static int travels(sy_replica *r, float *own, int layer, int e, const int *runners, int runner, int q, kept *k) {
    span s = r->own_expert[layer * r->n_experts + e];
    if (s.hi > s.lo) {
        *k = (kept){own + s.lo, s.hi - s.lo, r->buddy, r->rank};
    } else {
        const ward *w = NULL;
        for (int i = 0; i < r->n_wards && !w; i++) {
            span t = r->wards[i].expert[layer * r->n_experts + e];
            if (t.hi > t.lo) {
                w = &r->wards[i];
                s = t;
            }
        }
        if (!w)
            return 0;
        *k = (kept){w->g + s.lo, s.hi - s.lo, w->rank, w->rank};
    }
    return k->other == q && q != r->rank && (runners ? runners[e] : k->owner) == runner;
}

int sy_replica_grads_layer(sy_replica *r, int64_t step, int layer, float *grads, const int *runners,
                           sy_replica_a2a_fn a2a, void *ctx) {
    if (layer < 0 || layer >= r->n_layers) {
        sy_seterr("replica: no layer %d", layer);
        return -1;
    }
    float *own = grads + r->own_off;
    /* to each other holder: the gradients of the experts this rank ran, by expert */
    for (int q = 0; q < r->world; q++) {
        r->send[q] = (void *)"";
        r->send_bytes[q] = 0;
    }
    for (int q = 0; q < r->world; q++) {
        size_t bytes = 0, pieces = 0;
        const float *first = NULL, *next = NULL;
        int side_by_side = 1;
        for (int e = 0; e < r->n_experts; e++) {
            kept k;
            if (!travels(r, own, layer, e, runners, r->rank, q, &k))
                continue;
            if (pieces++ == 0)
                first = k.g;
            else if (k.g != next)
                side_by_side = 0;
            next = k.g + k.n;
            bytes += k.n * sizeof(float);
        }
        if (!pieces)
            continue;
        if (side_by_side) {
            r->send[q] = (void *)first;
        } else {
            if (bytes > r->scratch_cap[q]) {
                uint8_t *b = realloc(r->scratch[q], bytes);
                if (!b) {
                    sy_seterr("replica: out of memory (%zu bytes)", bytes);
                    return -1;
                }
                r->scratch[q] = b;
                r->scratch_cap[q] = bytes;
            }
            size_t off = 0;
            for (int e = 0; e < r->n_experts; e++) {
                kept k;
                if (!travels(r, own, layer, e, runners, r->rank, q, &k))
                    continue;
                memcpy(r->scratch[q] + off, k.g, k.n * sizeof(float));
                off += k.n * sizeof(float);
            }
            r->send[q] = r->scratch[q];
        }
        r->send_bytes[q] = bytes;
    }
    int rc = a2a(ctx, TAG_GRADS_LAYER + (uint32_t)layer, step, r->send, r->send_bytes, r->recv, r->recv_bytes);
    if (rc)
        return rc;
    for (int q = 0; q < r->world; q++)
        r->bytes_sent += r->send_bytes[q];
    /* from each other holder: the gradients of the experts it ran, by expert */
    for (int q = 0; q < r->world; q++) {
        if (q == r->rank)
            continue;
        size_t want = 0;
        for (int e = 0; e < r->n_experts; e++) {
            kept k;
            if (travels(r, own, layer, e, runners, q, q, &k))
                want += k.n * sizeof(float);
        }
        if (r->recv_bytes[q] != want) {
            sy_seterr("replica: rank %d sent %zu bytes of layer %d expert gradients (tag %#x), the experts it ran "
                      "for this rank have %zu",
                      q, r->recv_bytes[q], layer, TAG_GRADS_LAYER + (uint32_t)layer, want);
            return -1;
        }
        const uint8_t *b = r->recv[q];
        for (int e = 0; e < r->n_experts; e++) {
            kept k;
            if (!travels(r, own, layer, e, runners, q, q, &k))
                continue;
            memcpy(k.g, b, k.n * sizeof(float));
            b += k.n * sizeof(float);
        }
    }
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].g_layer[layer] = step;
    return 0;
}

int sy_replica_grads_done(sy_replica *r, int64_t step) {
    sy_replica_drop_pending(r);
    for (int i = 0; i < r->n_wards; i++) {
        ward *w = &r->wards[i];
        for (int l = 0; l < r->n_layers; l++)
            if (w->layer[l].hi > w->layer[l].lo && w->g_layer[l] != step) {
                sy_seterr("replica: the expert gradients of layer %d of rank %d for step %lld never arrived", l,
                          w->rank, (long long)step);
                return -1;
            }
    }
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].g_step = step;
    return 0;
}

void sy_replica_commit(sy_replica *r, int64_t step, float lr, float clip_scale, const sy_train_cfg *tc) {
    for (int i = 0; i < r->n_wards; i++) {
        ward *w = &r->wards[i];
        if (w->g_step == step && w->at == step) {
            sy_adamw_step(&w->lay, w->p, w->g, w->m, w->v, step + 1, lr, tc, clip_scale);
            w->at = step + 1;
        }
        w->g_step = -1;
    }
}

void sy_replica_drop_pending(sy_replica *r) {
    for (int i = 0; i < r->n_wards; i++)
        r->wards[i].g_step = -1;
}

const float *sy_replica_find(const sy_replica *r, sy_arena which, const char *name, size_t numel, int64_t *at) {
    for (int i = 0; r && i < r->n_wards; i++) {
        const ward *w = &r->wards[i];
        int k = sy_layout_find(&w->lay, name);
        if (k < 0 || w->lay.params[k].numel != numel)
            continue;
        *at = w->at;
        const float *base = which == SY_ARENA_M ? w->m : which == SY_ARENA_V ? w->v : w->p;
        return base + w->lay.params[k].offset;
    }
    return NULL;
}

uint64_t sy_replica_bytes_sent(sy_replica *r, int reset) {
    uint64_t b = r ? r->bytes_sent : 0;
    if (r && reset)
        r->bytes_sent = 0;
    return b;
}

size_t sy_replica_memory(const sy_replica *r) {
    size_t b = 0;
    for (int i = 0; r && i < r->n_wards; i++)
        b += 4 * r->wards[i].lay.total * sizeof(float);
    return b;
}

int sy_replica_wards(const sy_replica *r) { return r ? r->n_wards : 0; }

int sy_replica_current(const sy_replica *r, int64_t step) {
    if (!r || r->n_wards == 0)
        return 0;
    for (int i = 0; i < r->n_wards; i++)
        if (r->wards[i].at != step)
            return 0;
    return 1;
}

int sy_replica_expert(sy_replica *r, int layer, int e, float **w1, float **w2, float **g1, float **g2) {
    for (int i = 0; r && i < r->n_wards; i++) {
        ward *w = &r->wards[i];
        char name[64];
        snprintf(name, sizeof name, "layers.%d.experts.%d.w1", layer, e);
        int k1 = sy_layout_find(&w->lay, name);
        snprintf(name, sizeof name, "layers.%d.experts.%d.w2", layer, e);
        int k2 = sy_layout_find(&w->lay, name);
        if (k1 < 0 || k2 < 0)
            continue;
        *w1 = w->p + w->lay.params[k1].offset;
        *w2 = w->p + w->lay.params[k2].offset;
        *g1 = w->g + w->lay.params[k1].offset;
        *g2 = w->g + w->lay.params[k2].offset;
        return 0;
    }
    return -1;
}

int sy_replica_rehome(const sy_layout *nl, float *np, float *nm, float *nv, const sy_layout *ol, const float *op,
                      const float *om, const float *ov, const sy_replica *r, int64_t step) {
    float *dst[3] = {np, nm, nv};
    const float *src[3] = {op, om, ov};
    for (int i = 0; i < nl->n_params; i++) {
        const sy_param *p = &nl->params[i];
        int k = sy_layout_find(ol, p->name);
        if (k >= 0 && ol->params[k].numel == p->numel) {
            for (int a = 0; a < 3; a++)
                memcpy(dst[a] + p->offset, src[a] + ol->params[k].offset, p->numel * sizeof(float));
            continue;
        }
        for (int a = 0; a < 3; a++) {
            int64_t at = -1;
            const float *x = sy_replica_find(r, (sy_arena)a, p->name, p->numel, &at);
            if (!x) {
                sy_seterr("re-homing: %s is neither held nor replicated on this worker", p->name);
                return -1;
            }
            if (at != step) {
                sy_seterr("re-homing: the replica of %s is at step %lld, the mesh goes on from step %lld (a stale "
                          "replica: cluster.replica_every > 1, or the replica was not in place yet)",
                          p->name, (long long)at, (long long)step);
                return -1;
            }
            memcpy(dst[a] + p->offset, x, p->numel * sizeof(float));
        }
    }
    return 0;
}
