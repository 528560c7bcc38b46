/* handover.c: state moving to a grown mesh (handover.h). */
#include "handover.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

enum { TAG_HANDOVER = 0x30010u };

/* The rank that holds parameter p for the new mesh: its previous owner (experts), rank 0
 * (dense). */
static int source_of(const sy_param *p, const sy_handover_prev *prev) {
    if (p->expert < 0)
        return 0;
    for (int o = 0; o < prev->prev_world; o++)
        if (p->expert >= prev->prev_begin[o] && p->expert < prev->prev_end[o])
            return o;
    return -1;
}

/* Whether new rank q must receive parameter p (it did not hold it before). */
static int needs(int q, const sy_param *p, const sy_handover_prev *prev) {
    if (q >= prev->prev_world)
        return 1; /* a joiner holds nothing */
    return p->expert >= 0 && source_of(p, prev) != q; /* every rank held the dense tensors */
}

static int layout_of(sy_layout *lay, const sy_model_cfg *mc, const sy_mesh *m, int q) {
    unsigned char *held = calloc((size_t)mc->n_experts + 1, 1);
    if (!held) {
        sy_seterr("handover: out of memory");
        return -1;
    }
    int p = sy_mesh_p(m, q);
    for (int e = m->e_begin[p]; e < m->e_end[p]; e++)
        held[e] = 1;
    int rc = sy_layout_init(lay, mc, held);
    free(held);
    return rc;
}

int sy_handover(const sy_model_cfg *mc, const sy_mesh *m, int rank, const sy_handover_prev *prev, const sy_layout *ol,
                const float *op, const float *om, const float *ov, const sy_layout *nl, float *np, float *nm, float *nv,
                sy_replica_a2a_fn a2a, void *ctx, int64_t step) {
    int W = m->world, rc = -1;
    void **send = calloc((size_t)W, sizeof(void *));
    size_t *send_bytes = calloc((size_t)W, sizeof(size_t)), *recv_bytes = calloc((size_t)W, sizeof(size_t));
    const void **recv = calloc((size_t)W, sizeof(void *));
    if (!send || !send_bytes || !recv || !recv_bytes) {
        sy_seterr("handover: out of memory");
        goto out;
    }
    /* what this rank sends to each q: the params of q's new layout it is the source of,
     * each as params, m, v */
    for (int q = 0; q < W; q++) {
        send[q] = (void *)"";
        if (q == rank || !ol)
            continue;
        sy_layout ql;
        if (layout_of(&ql, mc, m, q))
            goto out;
        size_t n = 0;
        for (int i = 0; i < ql.n_params; i++)
            if (needs(q, &ql.params[i], prev) && source_of(&ql.params[i], prev) == rank)
                n += 3 * ql.params[i].numel;
        float *buf = n ? malloc(n * sizeof(float)) : NULL;
        if (n && !buf) {
            sy_layout_free(&ql);
            sy_seterr("handover: out of memory");
            goto out;
        }
        size_t at = 0;
        for (int i = 0; i < ql.n_params && buf; i++) {
            const sy_param *p = &ql.params[i];
            if (!needs(q, p, prev) || source_of(p, prev) != rank)
                continue;
            int k = sy_layout_find(ol, p->name);
            if (k < 0 || ol->params[k].numel != p->numel) {
                sy_layout_free(&ql);
                free(buf);
                sy_seterr("handover: rank %d should hand %s to rank %d but does not hold it", rank, p->name, q);
                goto out;
            }
            const float *src[3] = {op, om, ov};
            for (int a = 0; a < 3; a++, at += p->numel)
                memcpy(buf + at, src[a] + ol->params[k].offset, p->numel * sizeof(float));
        }
        sy_layout_free(&ql);
        if (buf) {
            send[q] = buf;
            send_bytes[q] = n * sizeof(float);
        }
    }
    if ((rc = a2a(ctx, TAG_HANDOVER, step, send, send_bytes, recv, recv_bytes)))
        goto out;
    rc = -1;
    size_t *got = calloc((size_t)W, sizeof(size_t));
    if (!got) {
        sy_seterr("handover: out of memory");
        goto out;
    }
    float *dst[3] = {np, nm, nv};
    for (int i = 0; i < nl->n_params; i++) {
        const sy_param *p = &nl->params[i];
        int src = source_of(p, prev);
        if (!needs(rank, p, prev)) { /* held before: from this rank's own arenas */
            int k = ol ? sy_layout_find(ol, p->name) : -1;
            if (k < 0 || ol->params[k].numel != p->numel) {
                free(got);
                sy_seterr("handover: %s is not held on rank %d", p->name, rank);
                goto out;
            }
            const float *s3[3] = {op, om, ov};
            for (int a = 0; a < 3; a++)
                memcpy(dst[a] + p->offset, s3[a] + ol->params[k].offset, p->numel * sizeof(float));
            continue;
        }
        if (src < 0 || src >= W || (got[src] + 3 * p->numel) * sizeof(float) > recv_bytes[src]) {
            free(got);
            sy_seterr("handover: %s did not arrive from rank %d (%zu bytes came)", p->name, src,
                      src >= 0 && src < W ? recv_bytes[src] : 0);
            goto out;
        }
        const float *in = (const float *)recv[src] + got[src];
        for (int a = 0; a < 3; a++)
            memcpy(dst[a] + p->offset, in + (size_t)a * p->numel, p->numel * sizeof(float));
        got[src] += 3 * p->numel;
    }
    rc = 0;
    for (int s = 0; s < W; s++)
        if (s != rank && got[s] * sizeof(float) != recv_bytes[s]) {
            sy_seterr("handover: rank %d sent %zu bytes, %zu expected", s, recv_bytes[s], got[s] * sizeof(float));
            rc = -1;
        }
    free(got);
out:
    for (int q = 0; send && q < W; q++)
        if (send_bytes && send_bytes[q])
            free(send[q]);
    free(send);
    free(send_bytes);
    free(recv);
    free(recv_bytes);
    return rc;
}
