/* test_replica: buddy replicas (worker/replica.h) stay equal, bit for bit, to the state
 * their owner trains: three ranks in three threads exchange through an in-process
 * all-to-all, each runs AdamW on its own experts, the buddies apply the shipped gradients
 * to their copies; after several steps every replica equals its owner's parameters and
 * both moments exactly. Then re-homing fills a merged rank's arenas from its own state
 * and the replica, refuses a stale replica and names a tensor held nowhere. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "mesh.h"
#include "model.h"
#include "optim.h"
#include "replica.h"

#define W 3

/* The in-process all-to-all: every rank posts its sends, waits for all, reads its row. */
typedef struct {
    pthread_barrier_t bar;
    void *const *send[W];
    const size_t *bytes[W];
} board;

typedef struct rank_ctx {
    board *b;
    int rank;
    sy_layout lay;
    float *p, *m, *v, *g;
    sy_replica *rep;
    sy_train_cfg tc;
    int steps, sync_every;
    const sy_mesh *mesh;
    int by_layer;         /* gradients layer by layer (sy_replica_grads_layer); 2: layer 1 never goes at step 2;
                           * 3: with stand-ins (some experts run by their owner's buddy) */
    struct rank_ctx *all; /* every rank (the stand-in case reads the owners' layouts) */
    const int *buddy;
    const sy_model_cfg *mc;
    void *inbox[W];       /* copies of what arrived (a socket's receive buffers) */
} rank_ctx;

static int board_a2a(void *ctx, uint32_t tag, int64_t step, void *const *send, const size_t *send_bytes,
                     const void **recv, size_t *recv_bytes) {
    rank_ctx *r = ctx;
    r->b->send[r->rank] = send;
    r->b->bytes[r->rank] = send_bytes;
    pthread_barrier_wait(&r->b->bar);
    for (int q = 0; q < W; q++) {
        size_t n = r->b->bytes[q][r->rank];
        free(r->inbox[q]);
        r->inbox[q] = malloc(n + 1);
        memcpy(r->inbox[q], r->b->send[q][r->rank], n);
        recv[q] = r->inbox[q];
        recv_bytes[q] = n;
    }
    pthread_barrier_wait(&r->b->bar); /* the senders' buffers stay until all have copied */
    return 0;
}

static sy_model_cfg model_cfg(void) {
    sy_model_cfg mc = sy_model_cfg_default();
    mc.d_model = 8;
    mc.n_layers = 4;
    mc.n_heads = 2;
    mc.d_ff = 12;
    mc.n_experts = 5;
    mc.switch_every = 2;
    mc.seq_len = 8;
    return mc;
}

static sy_train_cfg train_cfg(void) {
    sy_train_cfg tc;
    memset(&tc, 0, sizeof tc);
    tc.steps = 100;
    tc.lr = 0.01f;
    tc.weight_decay = 0.1f;
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    return tc;
}

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* The gradient owner q's arena holds at index i in step s (whoever computes it). */
static float truth(int q, int64_t s, size_t i) {
    uint32_t h = (uint32_t)(q * 7919 + s * 104729) ^ (uint32_t)i * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)(h & 0xffff) / 65536.0f - 0.5f;
}

static int owner_of(const sy_mesh *m, int e) {
    for (int q = 0; q < m->ep; q++)
        if (e >= m->e_begin[q] && e < m->e_end[q])
            return q;
    return -1;
}

/* Stand-ins, as the exchange would leave them: expert e of layer l in step s ran at its
 * owner or (every other one) at the owner's buddy, which wrote its weight gradients
 * into its replica; the owner's arena holds nothing for those. After each layer's
 * sy_replica_grads_layer with those runners the owner holds every gradient of its own. */
static void standin_step(rank_ctx *r, const sy_mesh *mesh, int64_t s) {
    const sy_model_cfg *mc = r->mc;
    int E = mc->n_experts;
    for (size_t i = 0; i < r->lay.total; i++)
        r->g[i] = truth(r->rank, s, i);
    for (int l = mc->n_layers - 1; l >= 0; l--) {
        if (!sy_is_switch_layer(mc, l))
            continue;
        int runners[16];
        for (int e = 0; e < E; e++) {
            int o = owner_of(mesh, e);
            runners[e] = (s + e + l) % 2 ? r->buddy[o] : o;
        }
        for (int e = 0; e < E; e++) {
            int o = owner_of(mesh, e);
            char name[64];
            snprintf(name, sizeof name, "layers.%d.experts.%d.w1", l, e);
            const sy_layout *ol = &r->all[o].lay;
            int k = sy_layout_find(ol, name);
            assert_true(k >= 0);
            size_t off = ol->params[k].offset, n = ol->params[k].numel;
            if (o == r->rank && runners[e] != r->rank) /* ran at the buddy: nothing here */
                memset(r->g + off, 0, 2 * n * sizeof(float));
            if (o != r->rank && runners[e] == r->rank) { /* this rank stood in: into the replica */
                float *w1, *w2, *g1, *g2;
                assert_int_equal(sy_replica_expert(r->rep, l, e, &w1, &w2, &g1, &g2), 0);
                assert_ptr_equal(g2, g1 + n); /* w1 then w2, side by side */
                for (size_t j = 0; j < 2 * n; j++)
                    g1[j] = truth(o, s, off + j);
            }
        }
        assert_int_equal(sy_replica_grads_layer(r->rep, s, l, r->g, runners, board_a2a, r), 0);
    }
    for (size_t i = 0; i < r->lay.total; i++)
        if (r->g[i] != truth(r->rank, s, i))
            fail_msg("rank %d step %lld: gradient %zu is %g after the exchange, its own is %g", r->rank, (long long)s,
                     i, r->g[i], truth(r->rank, s, i));
}

static void *rank_main(void *arg) {
    rank_ctx *r = arg;
    uint32_t seed = 77u + (uint32_t)r->rank;
    for (int s = 0; s < r->steps; s++) {
        if (s == 0 || (r->sync_every > 1 && s % r->sync_every == 0))
            assert_int_equal(sy_replica_sync(r->rep, s, r->p, r->m, r->v), 0);
        for (size_t i = 0; i < r->lay.total; i++)
            r->g[i] = frand(&seed) * 0.3f;
        if (r->sync_every == 1 && r->by_layer == 3) {
            standin_step(r, r->mesh, s);
            assert_int_equal(sy_replica_grads_done(r->rep, s), 0);
        } else if (r->sync_every == 1 && r->by_layer) {
            /* in backward order, as the worker's overlap thread sends them */
            for (int l = r->mc->n_layers - 1; l >= 0; l--)
                if (sy_is_switch_layer(r->mc, l) && !(r->by_layer == 2 && s == 2 && l == 1))
                    assert_int_equal(sy_replica_grads_layer(r->rep, s, l, r->g, NULL, board_a2a, r), 0);
            if (r->by_layer == 2 && s == 2 && r->rank > 0) { /* ranks 1 and 2 keep wards (0 and 2; 1) */
                char want[80];
                snprintf(want, sizeof want, "layer 1 of rank %d for step 2 never arrived", r->rank == 1 ? 0 : 1);
                assert_int_equal(sy_replica_grads_done(r->rep, s), -1);
                assert_non_null(strstr(sy_lasterr(), want));
            } else {
                assert_int_equal(sy_replica_grads_done(r->rep, s), 0);
            }
        } else if (r->sync_every == 1) {
            assert_int_equal(sy_replica_send_grads(r->rep, s, r->g), 0);
        }
        float lr = 0.01f * (1.0f + 0.1f * (float)s), scale = s % 3 == 0 ? 0.7f : 1.0f; /* varying, as with clipping */
        sy_adamw_step(&r->lay, r->p, r->g, r->m, r->v, s + 1, lr, &r->tc, scale);
        sy_replica_commit(r->rep, s, lr, scale, &r->tc);
    }
    return NULL;
}

typedef struct {
    sy_mesh mesh;
    rank_ctx r[W];
    board b;
    sy_model_cfg mc;
    int buddy[W];
} world;

static void world_init(world *w, int steps, int sync_every) {
    memset(w, 0, sizeof *w);
    w->mc = model_cfg();
    assert_int_equal(sy_mesh_plan(&w->mesh, W, w->mc.n_experts, 6, NULL, 2.0), 0);
    assert_int_equal(w->mesh.dp, 1);
    int buddy[W] = {1, 2, 1}; /* as coordinator/rehome.c picks them on one host */
    memcpy(w->buddy, buddy, sizeof buddy);
    pthread_barrier_init(&w->b.bar, NULL, W);
    for (int q = 0; q < W; q++) {
        rank_ctx *r = &w->r[q];
        r->b = &w->b;
        r->rank = q;
        r->tc = train_cfg();
        r->steps = steps;
        r->sync_every = sync_every;
        r->mc = &w->mc;
        r->mesh = &w->mesh;
        r->all = w->r;
        r->buddy = w->buddy;
        unsigned char held[8] = {0};
        for (int e = w->mesh.e_begin[q]; e < w->mesh.e_end[q]; e++)
            held[e] = 1;
        assert_int_equal(sy_layout_init(&r->lay, &w->mc, held), 0);
        r->p = calloc(r->lay.total, sizeof(float));
        r->m = calloc(r->lay.total, sizeof(float));
        r->v = calloc(r->lay.total, sizeof(float));
        r->g = calloc(r->lay.total, sizeof(float));
        uint32_t seed = 5u + (uint32_t)q;
        for (size_t i = 0; i < r->lay.total; i++)
            r->p[i] = frand(&seed);
        r->rep = sy_replica_new(&w->mc, &w->mesh, q, buddy, &r->lay, board_a2a, r);
        assert_non_null(r->rep);
    }
}

static void world_run(world *w) {
    pthread_t t[W];
    for (int q = 0; q < W; q++)
        pthread_create(&t[q], NULL, rank_main, &w->r[q]);
    for (int q = 0; q < W; q++)
        pthread_join(t[q], NULL);
}

static void world_free(world *w) {
    for (int q = 0; q < W; q++) {
        rank_ctx *r = &w->r[q];
        sy_replica_destroy(&r->rep);
        sy_layout_free(&r->lay);
        for (int q = 0; q < W; q++)
            free(r->inbox[q]);
        free(r->p);
        free(r->m);
        free(r->v);
        free(r->g);
    }
    pthread_barrier_destroy(&w->b.bar);
    sy_mesh_free(&w->mesh);
}

/* Every expert tensor of every rank, in all three arenas, equals its replica at `step`. */
static void assert_replicas_exact(world *w, int64_t step) {
    int checked = 0;
    for (int q = 0; q < W; q++) {
        rank_ctx *o = &w->r[q];
        const sy_replica *keeper = w->r[w->buddy[q]].rep;
        for (int i = 0; i < o->lay.n_params; i++) {
            const sy_param *p = &o->lay.params[i];
            if (p->expert < 0)
                continue;
            const float *arena[3] = {o->p, o->m, o->v};
            for (int a = 0; a < 3; a++) {
                int64_t at = -2;
                const float *x = sy_replica_find(keeper, (sy_arena)a, p->name, p->numel, &at);
                assert_non_null(x);
                assert_int_equal(at, step);
                if (memcmp(x, arena[a] + p->offset, p->numel * sizeof(float))) {
                    size_t j = 0;
                    while (x[j] == arena[a][p->offset + j])
                        j++;
                    fprintf(stderr, "replica of %s (arena %d) differs from its owner's at %zu: %.9g vs %.9g\n",
                            p->name, a, j, x[j], arena[a][p->offset + j]);
                    fail();
                }
                checked++;
            }
        }
    }
    assert_true(checked > 0);
}

static void test_every_step_replicas_are_exact(void **state) {
    (void)state;
    world w;
    world_init(&w, 7, 1);
    assert_int_equal(sy_replica_wards(w.r[1].rep), 2); /* rank 1 keeps ranks 0 and 2 */
    assert_int_equal(sy_replica_wards(w.r[0].rep), 0);
    world_run(&w);
    assert_replicas_exact(&w, 7);
    assert_true(sy_replica_bytes_sent(w.r[0].rep, 0) > 0);
    world_free(&w);
}

/* The expert gradients sent layer by layer (the overlap thread's way) keep the replicas
 * exactly as the whole send does: rank 1 keeps wards that hold another number of experts
 * than it does, so a layer's span differs between sender and receiver. */
static void test_layer_by_layer_replicas_are_exact(void **state) {
    (void)state;
    world w;
    world_init(&w, 7, 1);
    for (int q = 0; q < W; q++)
        w.r[q].by_layer = 1;
    int n0 = w.mesh.e_end[0] - w.mesh.e_begin[0], n1 = w.mesh.e_end[1] - w.mesh.e_begin[1];
    assert_true(n0 != n1); /* 5 experts on 3 ranks */
    world_run(&w);
    assert_replicas_exact(&w, 7);
    world_free(&w);
}

/* Stand-ins: experts run by their owner's buddy (every other one, by step and layer) have
 * their gradients sent back to the owner, the others go to the buddy as before; the
 * owner ends with every gradient of its own (checked in standin_step) and the replicas
 * stay exact. Rank 1 keeps two wards, rank 2 keeps rank 1, rank 0 keeps none. */
static void test_standin_gradients_reach_both_holders(void **state) {
    (void)state;
    world w;
    world_init(&w, 7, 1);
    for (int q = 0; q < W; q++)
        w.r[q].by_layer = 3;
    world_run(&w);
    assert_replicas_exact(&w, 7);
    world_free(&w);
}

/* A layer whose gradients never arrived is named, nothing of that step is applied, and
 * the replica stays at the step before: stale, never wrong. */
static void test_missing_layer_leaves_replica_stale(void **state) {
    (void)state;
    world w;
    world_init(&w, 5, 1);
    for (int q = 0; q < W; q++)
        w.r[q].by_layer = 2;
    world_run(&w);
    int64_t at = -2;
    const sy_param *p = &w.r[0].lay.params[w.r[0].lay.n_params - 1];
    assert_non_null(sy_replica_find(w.r[1].rep, SY_ARENA_PARAMS, p->name, p->numel, &at));
    assert_int_equal(at, 2);
    p = &w.r[1].lay.params[w.r[1].lay.n_params - 1];
    assert_non_null(sy_replica_find(w.r[2].rep, SY_ARENA_M, p->name, p->numel, &at));
    assert_int_equal(at, 2);
    world_free(&w);
}

/* A replica copied every 3 steps is current right after a copy, stale otherwise. */
static void test_stale_replica_is_refused(void **state) {
    (void)state;
    world w;
    world_init(&w, 7, 3); /* copies at steps 0, 3, 6: state at 6, owners at 7 */
    world_run(&w);
    int64_t at = -2;
    const sy_param *p = &w.r[0].lay.params[w.r[0].lay.n_params - 1];
    assert_non_null(sy_replica_find(w.r[1].rep, SY_ARENA_PARAMS, p->name, p->numel, &at));
    assert_int_equal(at, 6);
    /* re-homing rank 0's experts onto rank 1 at step 7 must refuse the stale copy */
    unsigned char held[8] = {0};
    for (int e = w.mesh.e_begin[0]; e < w.mesh.e_end[1]; e++)
        held[e] = 1;
    sy_layout nl;
    assert_int_equal(sy_layout_init(&nl, &w.mc, held), 0);
    float *np = calloc(nl.total, sizeof(float)), *nm = calloc(nl.total, sizeof(float)),
          *nv = calloc(nl.total, sizeof(float));
    rank_ctx *b = &w.r[1];
    assert_int_equal(sy_replica_rehome(&nl, np, nm, nv, &b->lay, b->p, b->m, b->v, b->rep, 7), -1);
    assert_non_null(strstr(sy_lasterr(), "is at step 6"));
    free(np);
    free(nm);
    free(nv);
    sy_layout_free(&nl);
    world_free(&w);
}

/* Rank 0 dies: rank 1 (its buddy) takes experts of ranks 0 and 1; every tensor of the
 * merged layout comes out equal to its owner's. A rank with no replica of them fails,
 * naming the tensor. */
static void test_rehome_fills_merged_rank(void **state) {
    (void)state;
    world w;
    world_init(&w, 5, 1);
    world_run(&w);
    unsigned char held[8] = {0};
    for (int e = w.mesh.e_begin[0]; e < w.mesh.e_end[1]; e++)
        held[e] = 1;
    sy_layout nl;
    assert_int_equal(sy_layout_init(&nl, &w.mc, held), 0);
    float *np = calloc(nl.total, sizeof(float)), *nm = calloc(nl.total, sizeof(float)),
          *nv = calloc(nl.total, sizeof(float));
    rank_ctx *b = &w.r[1], *dead = &w.r[0];
    assert_int_equal(sy_replica_rehome(&nl, np, nm, nv, &b->lay, b->p, b->m, b->v, b->rep, 5), 0);
    for (int i = 0; i < nl.n_params; i++) {
        const sy_param *p = &nl.params[i];
        const rank_ctx *src = p->expert >= 0 && p->expert < w.mesh.e_end[0] ? dead : b;
        int k = sy_layout_find(&src->lay, p->name);
        assert_true(k >= 0);
        size_t off = src->lay.params[k].offset;
        assert_memory_equal(np + p->offset, src->p + off, p->numel * sizeof(float));
        assert_memory_equal(nm + p->offset, src->m + off, p->numel * sizeof(float));
        assert_memory_equal(nv + p->offset, src->v + off, p->numel * sizeof(float));
    }
    /* rank 2 keeps nobody's replica of rank 0: it cannot take rank 0's experts */
    rank_ctx *c = &w.r[2];
    assert_int_equal(sy_replica_rehome(&nl, np, nm, nv, &c->lay, c->p, c->m, c->v, c->rep, 5), -1);
    assert_non_null(strstr(sy_lasterr(), "neither held nor replicated"));
    free(np);
    free(nm);
    free(nv);
    sy_layout_free(&nl);
    world_free(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_step_replicas_are_exact),
        cmocka_unit_test(test_layer_by_layer_replicas_are_exact),
        cmocka_unit_test(test_standin_gradients_reach_both_holders),
        cmocka_unit_test(test_missing_layer_leaves_replica_stale),
        cmocka_unit_test(test_stale_replica_is_refused),
        cmocka_unit_test(test_rehome_fills_merged_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
