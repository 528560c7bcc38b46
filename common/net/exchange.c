#include "exchange.h"

#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "log.h"
#include "trace.h"

enum { PH_FWD_DISPATCH = 0, PH_FWD_COMBINE = 1, PH_BWD_DISPATCH = 2, PH_BWD_COMBINE = 3 };
/* the chunk of the forward dispatch that carries a rank's counts (stand-ins); expert
 * chunks are numbered by expert, below SY_MAX_EXPERTS */
#define CHUNK_COUNTS 0x10000u

struct sy_exchange {
    sy_model_cfg cfg;
    const sy_mesh *mesh;
    int rank, P, p, d;            /* my rank, group size, my index, my data group */
    int mb, me;                   /* my experts [mb, me) */
    sy_experts *experts;
    sy_alltoall_fn a2a;
    void *comm;
    int bf16;
    int max_in, max_out;
    /* per switch layer, kept from forward to backward */
    float **in_rows;              /* [L][max_in * C] rows that arrived, expert-major then source */
    int64_t **in_tok;             /* [L][max_in] */
    int **src_counts;             /* [L][P * E] rows from source s for expert e run here */
    int **comp;                   /* [L][E] the group index that runs expert e (its owner, or a stand-in) */
    /* stand-ins (sy_exchange_standins): an owner's buddy, which keeps a current replica of
     * its experts, runs some of them when that evens out the rows of a layer */
    int standin_on, standin_ready;
    int *standin_buddy;           /* [P] */
    int *heard;                   /* [P * E] the counts each rank announced for the current layer */
    uint64_t standin_rows;
    /* scratch */
    uint8_t **send;               /* [P] send buffers */
    size_t *send_cap;
    float *out_rows;              /* [max_in * C] expert outputs / input gradients */
    float *dy_rows;               /* [max_in * C] gathered output gradients */
    double a2a_seconds;
    uint64_t bytes_sent;
    sy_a2a_chunks chunks;         /* the chunked transport, if given */
    int pipeline;                 /* use it */
};

static size_t row_bytes(const sy_exchange *x) { return (size_t)x->cfg.d_model * (x->bf16 ? 2 : 4); }

static void put_rows(const sy_exchange *x, uint8_t *dst, const float *src, size_t rows) {
    size_t n = rows * x->cfg.d_model;
    if (!x->bf16) {
        memcpy(dst, src, n * 4);
        return;
    }
    sy_bf16_pack_n(dst, src, n);
}

static void get_rows(const sy_exchange *x, float *dst, const uint8_t *src, size_t rows) {
    size_t n = rows * x->cfg.d_model;
    if (!x->bf16) {
        memcpy(dst, src, n * 4);
        return;
    }
    sy_bf16_unpack_n(dst, src, n);
}

static int reserve(sy_exchange *x, int q, size_t bytes) {
    if (bytes <= x->send_cap[q])
        return 0;
    uint8_t *p = realloc(x->send[q], bytes);
    if (!p) {
        sy_seterr("exchange: out of memory (%zu bytes)", bytes);
        return -1;
    }
    x->send[q] = p;
    x->send_cap[q] = bytes;
    return 0;
}

sy_exchange *sy_exchange_new(const sy_model_cfg *cfg, const sy_mesh *mesh, int rank, sy_experts *experts,
                             sy_alltoall_fn a2a, void *comm, int bf16, int max_rows_in, int max_rows_out) {
    sy_exchange *x = calloc(1, sizeof *x);
    if (!x)
        goto oom;
    x->cfg = *cfg;
    x->mesh = mesh;
    x->rank = rank;
    x->P = mesh->ep;
    x->p = sy_mesh_p(mesh, rank);
    x->d = sy_mesh_d(mesh, rank);
    x->mb = mesh->e_begin[x->p];
    x->me = mesh->e_end[x->p];
    x->experts = experts;
    x->a2a = a2a;
    x->comm = comm;
    x->bf16 = bf16;
    x->max_in = max_rows_in;
    x->max_out = max_rows_out;
    int L = cfg->n_layers, C = cfg->d_model;
    x->in_rows = calloc((size_t)L, sizeof *x->in_rows);
    x->in_tok = calloc((size_t)L, sizeof *x->in_tok);
    x->src_counts = calloc((size_t)L, sizeof *x->src_counts);
    x->comp = calloc((size_t)L, sizeof *x->comp);
    x->standin_buddy = calloc((size_t)x->P, sizeof(int));
    x->heard = calloc((size_t)x->P * (cfg->n_experts > 0 ? cfg->n_experts : 1), sizeof(int));
    x->send = calloc((size_t)x->P, sizeof *x->send);
    x->send_cap = calloc((size_t)x->P, sizeof *x->send_cap);
    x->out_rows = malloc((size_t)(max_rows_in > 0 ? max_rows_in : 1) * C * sizeof(float));
    x->dy_rows = malloc((size_t)(max_rows_in > 0 ? max_rows_in : 1) * C * sizeof(float));
    if (!x->in_rows || !x->in_tok || !x->src_counts || !x->comp || !x->standin_buddy || !x->heard || !x->send ||
        !x->send_cap || !x->out_rows || !x->dy_rows)
        goto oom;
    for (int l = 0; l < L; l++) {
        if (!sy_is_switch_layer(cfg, l))
            continue;
        x->in_rows[l] = malloc((size_t)(max_rows_in > 0 ? max_rows_in : 1) * C * sizeof(float));
        x->in_tok[l] = malloc((size_t)(max_rows_in > 0 ? max_rows_in : 1) * sizeof(int64_t));
        x->src_counts[l] = calloc((size_t)x->P * (cfg->n_experts > 0 ? cfg->n_experts : 1), sizeof(int));
        x->comp[l] = calloc((size_t)(cfg->n_experts > 0 ? cfg->n_experts : 1), sizeof(int));
        if (!x->in_rows[l] || !x->in_tok[l] || !x->src_counts[l] || !x->comp[l])
            goto oom;
    }
    return x;
oom:
    sy_seterr("exchange: out of memory");
    sy_exchange_destroy(&x);
    return NULL;
}

void sy_exchange_destroy(sy_exchange **px) {
    sy_exchange *x = px ? *px : NULL;
    if (!x)
        return;
    for (int l = 0; l < x->cfg.n_layers; l++) {
        if (x->in_rows)
            free(x->in_rows[l]);
        if (x->in_tok)
            free(x->in_tok[l]);
        if (x->src_counts)
            free(x->src_counts[l]);
        if (x->comp)
            free(x->comp[l]);
    }
    if (x->send)
        for (int q = 0; q < x->P; q++)
            free(x->send[q]);
    free(x->in_rows);
    free(x->in_tok);
    free(x->src_counts);
    free(x->comp);
    free(x->standin_buddy);
    free(x->heard);
    free(x->send);
    free(x->send_cap);
    free(x->out_rows);
    free(x->dy_rows);
    free(x);
    *px = NULL;
}

static const char *phase_name(int phase) {
    return phase == PH_FWD_DISPATCH   ? "dispatch"
           : phase == PH_FWD_COMBINE  ? "combine"
           : phase == PH_BWD_DISPATCH ? "backward dispatch"
                                      : "backward combine";
}

static int run_a2a(sy_exchange *x, int layer, int phase, size_t *bytes, const void **recv, size_t *recv_bytes) {
    void *send[256];
    if (x->P > 256) {
        sy_seterr("exchange: %d ranks per data group is more than supported (256)", x->P);
        return -1;
    }
    for (int q = 0; q < x->P; q++) {
        send[q] = x->send[q];
        x->bytes_sent += q == x->p ? 0 : bytes[q];
    }
    double t0 = sy_now();
    int rc = x->a2a(x->comm, (uint32_t)(layer * 4 + phase), send, bytes, recv, recv_bytes);
    x->a2a_seconds += sy_now() - t0;
    if (rc)
        sy_err_prefix("layer %d %s", layer, phase_name(phase));
    return rc;
}

/* first row of expert e in an expert-major packing with counts[E] */
static size_t row_offset(const int *counts, int e) {
    size_t r = 0;
    for (int i = 0; i < e; i++)
        r += counts[i];
    return r;
}

/* Rows that came back from each owner q (its experts' slice of this rank's expert-major
 * packing) go to their place in out. */
static int unpack_from_owners(sy_exchange *x, int layer, const char *phase, const int *counts, const void **recv,
                              const size_t *recv_bytes, float *out) {
    const sy_mesh *m = x->mesh;
    size_t rb = row_bytes(x);
    for (int q = 0; q < x->P; q++) {
        size_t off = row_offset(counts, m->e_begin[q]), rows = row_offset(counts, m->e_end[q]) - off;
        if (recv_bytes[q] != rows * rb) {
            sy_seterr("layer %d %s: %zu bytes from group index %d, expected %zu", layer, phase, recv_bytes[q], q,
                      rows * rb);
            return -1;
        }
        get_rows(x, out + off * x->cfg.d_model, recv[q], rows);
    }
    return 0;
}

/* Packs x->out_rows (this owner's experts' results, expert-major then by source) into
 * one reply per source, each in the order that source sent its rows. */
static int pack_for_sources(sy_exchange *x, int layer, const int *in_counts, size_t *bytes) {
    const int *sc = x->src_counts[layer];
    int mine = x->me - x->mb, C = x->cfg.d_model, E = x->cfg.n_experts;
    size_t rb = row_bytes(x);
    for (int s = 0; s < x->P; s++) {
        size_t rows_s = 0;
        for (int j = 0; j < mine; j++)
            rows_s += sc[(size_t)s * E + x->mb + j];
        if (reserve(x, s, rows_s * rb > 0 ? rows_s * rb : 1))
            return -1;
        size_t w = 0, base = 0;
        for (int j = 0; j < mine; j++) {
            size_t before_s = 0;
            for (int ss = 0; ss < s; ss++)
                before_s += sc[(size_t)ss * E + x->mb + j];
            size_t n = sc[(size_t)s * E + x->mb + j];
            put_rows(x, x->send[s] + w * rb, x->out_rows + (base + before_s) * C, n);
            w += n;
            base += in_counts[x->mb + j];
        }
        bytes[s] = rows_s * rb;
    }
    return 0;
}

/* ---------------------------------------------------------------- pipeline
 * The exchange one expert at a time over the chunked transport (sy_a2a_chunks). Chunk e
 * of a phase is expert e. Dispatch chunks carry the count, the tokens and the rows (every
 * chunk is sent, even of 0 rows: the runner learns the count from it); the other phases
 * carry rows only and skip empty chunks (both ends know the counts). Rows that stay on
 * this rank take the wire's rounding too (bf16), as they do in the whole all-to-all, so
 * both ways give the same bits.
 *
 * Stand-ins. Expert e runs at comp[e]: its owner, or (sy_exchange_standins) the owner's
 * buddy, which keeps a replica of the owner's experts current every step. At the start
 * of each layer every rank tells the others its counts and whether its replicas are
 * current (chunk CHUNK_COUNTS of the dispatch); from the same numbers every rank picks the
 * same runners (plan_layer): while the rank with the most rows to run can hand an expert
 * to that expert's other holder and so lower the larger of their two loads, it does. An
 * expert runs on the same rows in the same order (by source) wherever it runs, on the
 * same weights (the replica is equal to the owner's state bit for bit), so its outputs
 * and its weight gradients are the same bits; the weight gradients then go from whoever
 * ran the expert to its other holder (replica.h, sy_replica_grads_layer), instead of
 * always from the owner to the buddy. The rows a rank waits for at the combines were
 * the owners' imbalance; this is most of the communication time left on one machine. */

static int owner_of(const sy_exchange *x, int e) {
    for (int q = 0; q < x->P; q++)
        if (e >= x->mesh->e_begin[q] && e < x->mesh->e_end[q])
            return q;
    return -1;
}

static int chunk_send(sy_exchange *x, int layer, int phase, uint32_t chunk, int q, const void *data, size_t bytes) {
    double t0 = sy_now();
    int rc = x->chunks.send(x->comm, (uint32_t)(layer * 4 + phase), chunk, q, data, bytes);
    x->a2a_seconds += sy_now() - t0;
    x->bytes_sent += bytes;
    if (rc)
        sy_err_prefix("layer %d %s chunk %u to group index %d", layer, phase_name(phase), chunk, q);
    return rc;
}

static int chunk_recv(sy_exchange *x, int layer, int phase, uint32_t chunk, int q, const void **data,
                      size_t *bytes) {
    double t0 = sy_now();
    int rc = x->chunks.recv(x->comm, (uint32_t)(layer * 4 + phase), chunk, q, data, bytes);
    x->a2a_seconds += sy_now() - t0;
    if (rc)
        sy_err_prefix("layer %d %s chunk %u from group index %d", layer, phase_name(phase), chunk, q);
    return rc;
}

static void chunk_release(sy_exchange *x) {
    double t0 = sy_now();
    x->chunks.release(x->comm);
    x->a2a_seconds += sy_now() - t0;
}

/* The runner of every expert of this layer (x->comp[layer]): the owners, or with
 * stand-ins on, what every rank of the group picks from everyone's counts. */
static int plan_layer(sy_exchange *x, int layer, const int *counts) {
    int E = x->cfg.n_experts, P = x->P;
    int *comp = x->comp[layer], *heard = x->heard;
    for (int e = 0; e < E; e++)
        comp[e] = owner_of(x, e);
    if (!x->standin_on)
        return 0;
    uint8_t msg[4 + 4 * SY_MAX_EXPERTS];
    int32_t flag = x->standin_ready ? 1 : 0;
    memcpy(msg, &flag, 4);
    for (int e = 0; e < E; e++) {
        int32_t c = counts[e];
        memcpy(msg + 4 + 4 * (size_t)e, &c, 4);
    }
    for (int k = 1; k < P; k++)
        if (chunk_send(x, layer, PH_FWD_DISPATCH, CHUNK_COUNTS, (x->p + k) % P, msg, 4 + 4 * (size_t)E))
            return -1;
    int ready[256];
    int64_t tot[SY_MAX_EXPERTS] = {0}, load[256] = {0};
    for (int k = 0; k < P; k++) {
        int q = (x->p - k + P) % P;
        if (q == x->p) {
            ready[q] = flag;
            memcpy(heard + (size_t)q * E, counts, (size_t)E * sizeof(int));
        } else {
            const void *d;
            size_t got;
            if (chunk_recv(x, layer, PH_FWD_DISPATCH, CHUNK_COUNTS, q, &d, &got))
                return -1;
            const uint8_t *b = d;
            int32_t f = -1;
            if (got == 4 + 4 * (size_t)E)
                memcpy(&f, b, 4);
            if (f != 0 && f != 1) {
                sy_seterr("layer %d dispatch: %zu bytes of counts from group index %d, expected a flag and %d counts",
                          layer, got, q, E);
                return -1;
            }
            ready[q] = f;
            for (int e = 0; e < E; e++) {
                int32_t c;
                memcpy(&c, b + 4 + 4 * (size_t)e, 4);
                if (c < 0 || c > x->max_in) {
                    sy_seterr("layer %d dispatch: group index %d announced %d rows for expert %d", layer, q, c, e);
                    return -1;
                }
                heard[(size_t)q * E + e] = c;
            }
        }
        for (int e = 0; e < E; e++)
            tot[e] += heard[(size_t)q * E + e];
    }
    for (int e = 0; e < E; e++)
        load[comp[e]] += tot[e];
    if (P == 2 && E <= 12) {
        /* two ranks: every split of the experts that can move (at most 2^12), the one with
         * the smallest larger load, then the fewest moved, then the first found */
        int movable[SY_MAX_EXPERTS], n_mov = 0;
        for (int e = 0; e < E; e++) {
            int o = comp[e], b = x->standin_buddy[o];
            if (b >= 0 && b != o && ready[b])
                movable[n_mov++] = e;
        }
        int64_t best_max = load[0] > load[1] ? load[0] : load[1];
        unsigned best = 0;
        int best_moved = 0;
        for (unsigned mask = 1; mask < 1u << n_mov; mask++) {
            int64_t l0 = load[0], l1 = load[1];
            int moved = 0;
            for (int i = 0; i < n_mov; i++)
                if (mask >> i & 1) {
                    int e = movable[i];
                    moved++;
                    if (comp[e] == 0)
                        l0 -= tot[e], l1 += tot[e];
                    else
                        l1 -= tot[e], l0 += tot[e];
                }
            int64_t m = l0 > l1 ? l0 : l1;
            if (m < best_max || (m == best_max && best && moved < best_moved)) {
                best_max = m;
                best = mask;
                best_moved = moved;
            }
        }
        for (int i = 0; i < n_mov; i++)
            if (best >> i & 1)
                comp[movable[i]] = 1 - comp[movable[i]];
    } else {
        for (int moves = 0; moves < E; moves++) {
            int h = 0;
            for (int q = 1; q < P; q++)
                if (load[q] > load[h])
                    h = q;
            int best = -1, to = -1;
            int64_t best_max = load[h];
            for (int e = 0; e < E; e++) {
                if (comp[e] != h)
                    continue;
                /* the other holder: the owner's buddy, or back to the owner */
                int o = owner_of(x, e), a = h != o ? o : x->standin_buddy[o];
                if (a < 0 || a == h || (a != o && !ready[a]))
                    continue; /* none, or its replicas are not current */
                int64_t m = load[h] - tot[e] > load[a] + tot[e] ? load[h] - tot[e] : load[a] + tot[e];
                if (m < best_max) {
                    best_max = m;
                    best = e;
                    to = a;
                }
            }
            if (best < 0)
                break;
            load[h] -= tot[best];
            load[to] += tot[best];
            comp[best] = to;
        }
    }
    for (int e = 0; e < E; e++)
        if (comp[e] == x->p && owner_of(x, e) != x->p)
            x->standin_rows += (uint64_t)tot[e];
    return 0;
}

/* rows that stay here, through the wire's format (scratch: x->send[x->p]) */
static int keep_rows(sy_exchange *x, float *dst, const float *src, size_t rows) {
    if (!x->bf16) {
        memcpy(dst, src, rows * x->cfg.d_model * sizeof(float));
        return 0;
    }
    if (reserve(x, x->p, rows * row_bytes(x) + 1))
        return -1;
    put_rows(x, x->send[x->p], src, rows);
    get_rows(x, dst, x->send[x->p], rows);
    return 0;
}

/* Rows [r, r + n) of x->out_rows (expert e's results for source s) back to s. */
static int send_back(sy_exchange *x, int layer, int phase, int e, int s, size_t r, size_t n, const int *counts,
                     float *dst) {
    int C = x->cfg.d_model;
    if (s == x->p)
        return keep_rows(x, dst + row_offset(counts, e) * C, x->out_rows + r * C, n);
    if (n == 0)
        return 0;
    size_t rb = row_bytes(x);
    if (reserve(x, s, n * rb))
        return -1;
    put_rows(x, x->send[s], x->out_rows + r * C, n);
    return chunk_send(x, layer, phase, (uint32_t)e, s, x->send[s], n * rb);
}

/* The results of the experts other ranks ran for this rank's rows, into dst. */
static int gather_back(sy_exchange *x, int layer, int phase, const int *counts, float *dst) {
    const int *comp = x->comp[layer];
    size_t rb = row_bytes(x);
    for (int k = 1; k < x->P; k++) {
        int q = (x->p - k + x->P) % x->P;
        for (int e = 0; e < x->cfg.n_experts; e++) {
            size_t n = (size_t)counts[e];
            if (comp[e] != q || n == 0)
                continue;
            const void *b;
            size_t got;
            if (chunk_recv(x, layer, phase, (uint32_t)e, q, &b, &got))
                return -1;
            if (got != n * rb) {
                sy_seterr("layer %d %s: %zu bytes from group index %d for expert %d, expected %zu", layer,
                          phase_name(phase), got, q, e, n * rb);
                return -1;
            }
            get_rows(x, dst + row_offset(counts, e) * x->cfg.d_model, b, n);
        }
    }
    chunk_release(x);
    return 0;
}

static int forward_pipelined(sy_exchange *x, const sy_pass *ps, int layer, const int *counts, const float *xrows,
                             const int64_t *tok, float *y) {
    int C = x->cfg.d_model, E = x->cfg.n_experts;
    size_t rb = row_bytes(x);
    if (E > SY_MAX_EXPERTS) {
        sy_seterr("exchange: more than %d experts", SY_MAX_EXPERTS);
        return -1;
    }
    if (plan_layer(x, layer, counts))
        return -1;
    const int *comp = x->comp[layer];
    /* dispatch, expert by expert, to every other runner */
    for (int k = 1; k < x->P; k++) {
        int q = (x->p + k) % x->P;
        for (int e = 0; e < E; e++) {
            if (comp[e] != q)
                continue;
            size_t off = row_offset(counts, e), n = (size_t)counts[e], need = 4 + n * 8 + n * rb;
            if (reserve(x, q, need))
                return -1;
            int32_t cnt = counts[e];
            memcpy(x->send[q], &cnt, 4);
            memcpy(x->send[q] + 4, tok + off, n * 8);
            put_rows(x, x->send[q] + 4 + n * 8, xrows + off * C, n);
            if (chunk_send(x, layer, PH_FWD_DISPATCH, (uint32_t)e, q, x->send[q], need))
                return -1;
        }
    }
    int in_counts[SY_MAX_EXPERTS] = {0};
    int *sc = x->src_counts[layer];
    memset(sc, 0, (size_t)x->P * E * sizeof(int));
    float *in = x->in_rows[layer];
    int64_t *itok = x->in_tok[layer];
    size_t r = 0;
    for (int e = 0; e < E; e++) {
        if (comp[e] != x->p)
            continue;
        size_t r_e = r;
        /* expert e's rows from every source, in source order */
        for (int s = 0; s < x->P; s++) {
            size_t n;
            const int64_t *t_src;
            const void *rows_src;
            const uint8_t *b = NULL;
            if (s == x->p) {
                n = (size_t)counts[e];
                t_src = tok + row_offset(counts, e);
                rows_src = NULL;
            } else {
                size_t got;
                const void *d;
                if (chunk_recv(x, layer, PH_FWD_DISPATCH, (uint32_t)e, s, &d, &got))
                    return -1;
                b = d;
                int32_t cnt = -1;
                if (got >= 4)
                    memcpy(&cnt, b, 4);
                if (cnt < 0 || got != 4 + (size_t)cnt * 8 + (size_t)cnt * rb) {
                    sy_seterr("layer %d dispatch: %zu bytes from group index %d for expert %d (count %d): not a "
                              "count, its tokens and its rows",
                              layer, got, s, e, cnt);
                    return -1;
                }
                if (x->standin_on && cnt != x->heard[(size_t)s * E + e]) {
                    sy_seterr("layer %d dispatch: group index %d sent %d rows for expert %d, it announced %d", layer,
                              s, cnt, e, x->heard[(size_t)s * E + e]);
                    return -1;
                }
                n = (size_t)cnt;
                t_src = NULL;
                rows_src = b + 4 + n * 8;
            }
            if (r + n > (size_t)x->max_in) {
                sy_seterr("layer %d dispatch: more rows arrived than the %d there is room for", layer, x->max_in);
                return -1;
            }
            sc[(size_t)s * E + e] = (int)n;
            if (t_src) {
                memcpy(itok + r, t_src, n * 8);
                if (keep_rows(x, in + r * C, xrows + row_offset(counts, e) * C, n))
                    return -1;
            } else {
                memcpy(itok + r, b + 4, n * 8);
                get_rows(x, in + r * C, rows_src, n);
            }
            r += n;
        }
        in_counts[e] = (int)(r - r_e);
        double t_e = sy_now();
        if (sy_experts_forward_one(x->experts, ps, layer, e, r_e, in_counts[e], in, itok, x->out_rows))
            return -1;
        if (sy_trace_on())
            sy_trace_span("expert", t_e, sy_now(), "\"layer\":%d,\"expert\":%d,\"rows\":%d", layer, e, in_counts[e]);
        for (int s = 0, before = 0; s < x->P; before += sc[(size_t)s * E + e], s++)
            if (send_back(x, layer, PH_FWD_COMBINE, e, s, r_e + (size_t)before, (size_t)sc[(size_t)s * E + e], counts,
                          y))
                return -1;
    }
    chunk_release(x);
    sy_experts_forward_done(x->experts, layer, in_counts, in);
    return gather_back(x, layer, PH_FWD_COMBINE, counts, y);
}

static int backward_pipelined(sy_exchange *x, const sy_pass *ps, int layer, const int *counts, const float *dy,
                              float *dx) {
    int C = x->cfg.d_model, E = x->cfg.n_experts;
    const int *comp = x->comp[layer];
    size_t rb = row_bytes(x);
    for (int k = 1; k < x->P; k++) {
        int q = (x->p + k) % x->P;
        for (int e = 0; e < E; e++) {
            size_t n = (size_t)counts[e];
            if (comp[e] != q || n == 0)
                continue;
            if (reserve(x, q, n * rb))
                return -1;
            put_rows(x, x->send[q], dy + row_offset(counts, e) * C, n);
            if (chunk_send(x, layer, PH_BWD_DISPATCH, (uint32_t)e, q, x->send[q], n * rb))
                return -1;
        }
    }
    const int *sc = x->src_counts[layer];
    size_t r = 0;
    for (int e = 0; e < E; e++) {
        if (comp[e] != x->p)
            continue;
        size_t r_e = r;
        for (int s = 0; s < x->P; s++) {
            size_t n = (size_t)sc[(size_t)s * E + e];
            if (s == x->p) {
                if (n != (size_t)counts[e]) {
                    sy_seterr("layer %d backward: %d rows of expert %d here, the forward kept %zu", layer, counts[e],
                              e, n);
                    return -1;
                }
                if (keep_rows(x, x->dy_rows + r * C, dy + row_offset(counts, e) * C, n))
                    return -1;
            } else if (n > 0) {
                const void *d;
                size_t got;
                if (chunk_recv(x, layer, PH_BWD_DISPATCH, (uint32_t)e, s, &d, &got))
                    return -1;
                if (got != n * rb) {
                    sy_seterr("layer %d backward dispatch: %zu bytes from group index %d for expert %d, expected %zu",
                              layer, got, s, e, n * rb);
                    return -1;
                }
                get_rows(x, x->dy_rows + r * C, d, n);
            }
            r += n;
        }
        /* the input gradients go back at once; the weight gradients wait (below) */
        double t_e = sy_now();
        if (sy_experts_backward_input_one(x->experts, ps, layer, e, x->dy_rows, x->out_rows))
            return -1;
        if (sy_trace_on())
            sy_trace_span("expert input gradient", t_e, sy_now(), "\"layer\":%d,\"expert\":%d", layer, e);
        for (int s = 0, before = 0; s < x->P; before += sc[(size_t)s * E + e], s++)
            if (send_back(x, layer, PH_BWD_COMBINE, e, s, r_e + (size_t)before, (size_t)sc[(size_t)s * E + e], counts,
                          dx))
                return -1;
    }
    chunk_release(x);
    /* while the other runners' input gradients for this rank's rows are still on their
     * way (or still being computed), this rank computes its experts' weight gradients (a
     * stand-in's into its replica's gradients, which start from zero) */
    for (int e = 0; e < E; e++) {
        if (comp[e] != x->p)
            continue;
        if (owner_of(x, e) != x->p)
            sy_experts_zero_grads_one(x->experts, layer, e);
        double t_e = sy_now();
        if (sy_experts_backward_weights_one(x->experts, layer, e, x->dy_rows))
            return -1;
        if (sy_trace_on())
            sy_trace_span("expert weight gradient", t_e, sy_now(), "\"layer\":%d,\"expert\":%d", layer, e);
    }
    return gather_back(x, layer, PH_BWD_COMBINE, counts, dx);
}

static int ex_forward(void *ctx, const sy_pass *ps, int layer, const int *counts, const float *xrows,
                      const int64_t *tok, float *y) {
    sy_exchange *x = ctx;
    if (x->pipeline && x->P > 1)
        return forward_pipelined(x, ps, layer, counts, xrows, tok, y);
    for (int e = 0; e < x->cfg.n_experts; e++)
        x->comp[layer][e] = owner_of(x, e); /* no stand-ins in the whole all-to-all */
    const sy_mesh *m = x->mesh;
    int C = x->cfg.d_model, E = x->cfg.n_experts, mine = x->me - x->mb;
    size_t rb = row_bytes(x), bytes[256];
    const void *recv[256];
    size_t recv_bytes[256];
    /* dispatch: to index q the rows of experts [e_begin[q], e_end[q]) with their counts and tokens */
    for (int q = 0; q < x->P; q++) {
        int eb = m->e_begin[q], ee = m->e_end[q];
        size_t off = row_offset(counts, eb), rows = row_offset(counts, ee) - off;
        size_t need = (size_t)(ee - eb) * 4 + rows * 8 + rows * rb;
        if (reserve(x, q, need ? need : 1))
            return -1;
        uint8_t *b = x->send[q];
        memcpy(b, counts + eb, (size_t)(ee - eb) * 4);
        memcpy(b + (size_t)(ee - eb) * 4, tok + off, rows * 8);
        put_rows(x, b + (size_t)(ee - eb) * 4 + rows * 8, xrows + off * C, rows);
        bytes[q] = need;
    }
    if (run_a2a(x, layer, PH_FWD_DISPATCH, bytes, recv, recv_bytes))
        return -1;
    /* validate and gather what arrived: expert-major, then source */
    int *sc = x->src_counts[layer];
    int total = 0;
    for (int s = 0; s < x->P; s++) {
        size_t hdr = (size_t)mine * 4;
        if (recv_bytes[s] < hdr) {
            sy_seterr("layer %d dispatch: %zu bytes from group index %d, fewer than its %d counts", layer,
                      recv_bytes[s], s, mine);
            return -1;
        }
        /* a received frame may sit at any address (small ones live inside the message) */
        const uint8_t *cb = recv[s];
        size_t rows = 0;
        for (int j = 0; j < mine; j++) {
            int32_t cnt;
            memcpy(&cnt, cb + 4 * (size_t)j, 4);
            if (cnt < 0) {
                sy_seterr("layer %d dispatch: negative count %d from group index %d", layer, cnt, s);
                return -1;
            }
            sc[(size_t)s * E + x->mb + j] = cnt;
            rows += (size_t)cnt;
        }
        if (recv_bytes[s] != hdr + rows * 8 + rows * rb) {
            sy_seterr("layer %d dispatch: %zu bytes from group index %d, expected %zu for %zu rows", layer,
                      recv_bytes[s], s, hdr + rows * 8 + rows * rb, rows);
            return -1;
        }
        total += (int)rows;
    }
    if (total > x->max_in) {
        sy_seterr("layer %d dispatch: %d rows arrived, room for %d", layer, total, x->max_in);
        return -1;
    }
    int in_counts[SY_MAX_EXPERTS];
    if (E > SY_MAX_EXPERTS) {
        sy_seterr("exchange: more than %d experts", SY_MAX_EXPERTS);
        return -1;
    }
    memset(in_counts, 0, (size_t)E * sizeof(int));
    float *in = x->in_rows[layer];
    int64_t *itok = x->in_tok[layer];
    size_t r = 0;
    for (int j = 0; j < mine; j++) {
        for (int s = 0; s < x->P; s++) {
            const uint8_t *b = recv[s];
            size_t before = 0, rows_s = 0;
            for (int jj = 0; jj < mine; jj++) {
                if (jj < j)
                    before += sc[(size_t)s * E + x->mb + jj];
                rows_s += sc[(size_t)s * E + x->mb + jj];
            }
            size_t n = sc[(size_t)s * E + x->mb + j];
            memcpy(itok + r, b + (size_t)mine * 4 + before * 8, n * 8);
            get_rows(x, in + r * C, b + (size_t)mine * 4 + rows_s * 8 + before * rb, n);
            r += n;
        }
        in_counts[x->mb + j] = 0;
        for (int s = 0; s < x->P; s++)
            in_counts[x->mb + j] += sc[(size_t)s * E + x->mb + j];
    }
    if (sy_experts_forward(x->experts, ps, layer, in_counts, in, itok, x->out_rows))
        return -1;
    /* combine: each source gets its rows' outputs back in the order it sent them */
    if (pack_for_sources(x, layer, in_counts, bytes))
        return -1;
    if (run_a2a(x, layer, PH_FWD_COMBINE, bytes, recv, recv_bytes))
        return -1;
    return unpack_from_owners(x, layer, "combine", counts, recv, recv_bytes, y);
}

static int ex_backward(void *ctx, const sy_pass *ps, int layer, const int *counts, const float *dy, float *dx) {
    sy_exchange *x = ctx;
    if (x->pipeline && x->P > 1)
        return backward_pipelined(x, ps, layer, counts, dy, dx);
    const sy_mesh *m = x->mesh;
    int C = x->cfg.d_model, E = x->cfg.n_experts, mine = x->me - x->mb;
    size_t rb = row_bytes(x), bytes[256];
    const void *recv[256];
    size_t recv_bytes[256];
    for (int q = 0; q < x->P; q++) {
        size_t off = row_offset(counts, m->e_begin[q]), rows = row_offset(counts, m->e_end[q]) - off;
        if (reserve(x, q, rows * rb > 0 ? rows * rb : 1))
            return -1;
        put_rows(x, x->send[q], dy + off * C, rows);
        bytes[q] = rows * rb;
    }
    if (run_a2a(x, layer, PH_BWD_DISPATCH, bytes, recv, recv_bytes))
        return -1;
    const int *sc = x->src_counts[layer];
    int in_counts[1024];
    memset(in_counts, 0, (size_t)E * sizeof(int));
    for (int j = 0; j < mine; j++)
        for (int s = 0; s < x->P; s++)
            in_counts[x->mb + j] += sc[(size_t)s * E + x->mb + j];
    for (int s = 0; s < x->P; s++) {
        size_t rows_s = 0;
        for (int j = 0; j < mine; j++)
            rows_s += sc[(size_t)s * E + x->mb + j];
        if (recv_bytes[s] != rows_s * rb) {
            sy_seterr("layer %d backward dispatch: %zu bytes from group index %d, expected %zu", layer,
                      recv_bytes[s], s, rows_s * rb);
            return -1;
        }
    }
    /* gather output gradients in the forward's (expert, source) order */
    size_t r = 0;
    for (int j = 0; j < mine; j++)
        for (int s = 0; s < x->P; s++) {
            size_t before = 0;
            for (int jj = 0; jj < j; jj++)
                before += sc[(size_t)s * E + x->mb + jj];
            size_t n = sc[(size_t)s * E + x->mb + j];
            get_rows(x, x->dy_rows + r * C, (const uint8_t *)recv[s] + before * rb, n);
            r += n;
        }
    if (sy_experts_backward(x->experts, ps, layer, in_counts, x->dy_rows, x->out_rows))
        return -1;
    if (pack_for_sources(x, layer, in_counts, bytes))
        return -1;
    if (run_a2a(x, layer, PH_BWD_COMBINE, bytes, recv, recv_bytes))
        return -1;
    return unpack_from_owners(x, layer, "backward combine", counts, recv, recv_bytes, dx);
}

sy_expert_exchange sy_exchange_interface(sy_exchange *x) {
    sy_expert_exchange e = {.ctx = x, .forward = ex_forward, .backward = ex_backward};
    return e;
}

void sy_exchange_set_chunks(sy_exchange *x, const sy_a2a_chunks *t) {
    if (t)
        x->chunks = *t;
    else
        memset(&x->chunks, 0, sizeof x->chunks);
    if (!x->chunks.send)
        x->pipeline = 0;
}

void sy_exchange_pipeline(sy_exchange *x, int on) { x->pipeline = on && x->chunks.send && x->chunks.recv; }

void sy_exchange_standins(sy_exchange *x, const int *buddy, int ready) {
    /* buddy holds group indices: with one data group they are the ranks replicas name */
    x->standin_on = buddy && x->P > 1 && x->P <= 256 && x->pipeline && x->mesh->dp == 1;
    x->standin_ready = ready;
    for (int q = 0; q < x->P; q++)
        x->standin_buddy[q] = buddy && buddy[q] >= 0 && buddy[q] < x->P ? buddy[q] : -1;
}

const int *sy_exchange_runners(const sy_exchange *x, int layer) {
    return layer >= 0 && layer < x->cfg.n_layers && x->comp[layer] ? x->comp[layer] : NULL;
}

uint64_t sy_exchange_standin_rows(sy_exchange *x, int reset) {
    uint64_t n = x->standin_rows;
    if (reset)
        x->standin_rows = 0;
    return n;
}

void sy_exchange_stats(sy_exchange *x, double *a2a_seconds, uint64_t *bytes_sent, int reset) {
    if (a2a_seconds)
        *a2a_seconds = x->a2a_seconds;
    if (bytes_sent)
        *bytes_sent = x->bytes_sent;
    if (reset) {
        x->a2a_seconds = 0;
        x->bytes_sent = 0;
    }
}
