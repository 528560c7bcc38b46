/* The distributed expert exchange, with W threads standing in for W workers and a
 * shared-memory all-to-all: a step on W "workers" (each holding its rows and its
 * experts) must give the loss and gradients of one process with W groups, and the
 * pipelined exchange (one expert at a time over a chunked transport, here a shared-memory
 * mailbox whose chunks arrive in any order) exactly the bits of the whole all-to-all.
 * The ZeroMQ transport is tested separately (test_peer, tests/overlap.sh, distributed
 * refcheck). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "exchange.h"
#include "log.h"
#include "mesh.h"
#include "model.h"
#include "refcase.h"

#define MAXW 8

typedef struct {
    int W;
    pthread_barrier_t bar;
    const void *post[MAXW][MAXW];
    size_t post_bytes[MAXW][MAXW];
    uint32_t tag[MAXW];
} shm_world;

/* the chunked transport: a mailbox of posted chunks */
typedef struct mail {
    int src, dst;
    uint32_t tag, chunk;
    void *data;
    size_t bytes;
    struct mail *next;
} mail;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mail *box;
} shm_mailbox;

typedef struct {
    shm_world *w;
    int rank;       /* rank == index in the (single) data group here */
    void *copy[MAXW];
    size_t cap[MAXW];
    shm_mailbox *mb;
    mail *taken;    /* chunks handed out, freed by release */
} shm_comm;

static int shm_send_chunk(void *comm, uint32_t tag, uint32_t chunk, int q, const void *data, size_t bytes) {
    shm_comm *c = comm;
    mail *m = calloc(1, sizeof *m);
    m->data = malloc(bytes + 1);
    memcpy(m->data, data, bytes);
    *m = (mail){.src = c->rank, .dst = q, .tag = tag, .chunk = chunk, .data = m->data, .bytes = bytes};
    pthread_mutex_lock(&c->mb->mu);
    m->next = c->mb->box; /* newest first: chunks are found in another order than sent */
    c->mb->box = m;
    pthread_cond_broadcast(&c->mb->cv);
    pthread_mutex_unlock(&c->mb->mu);
    return 0;
}

static int shm_recv_chunk(void *comm, uint32_t tag, uint32_t chunk, int q, const void **data, size_t *bytes) {
    shm_comm *c = comm;
    pthread_mutex_lock(&c->mb->mu);
    for (;;) {
        for (mail **pm = &c->mb->box; *pm; pm = &(*pm)->next) {
            mail *m = *pm;
            if (m->src == q && m->dst == c->rank && m->tag == tag && m->chunk == chunk) {
                *pm = m->next;
                pthread_mutex_unlock(&c->mb->mu);
                m->next = c->taken;
                c->taken = m;
                *data = m->data;
                *bytes = m->bytes;
                return 0;
            }
        }
        pthread_cond_wait(&c->mb->cv, &c->mb->mu);
    }
}

static void shm_release(void *comm) {
    shm_comm *c = comm;
    while (c->taken) {
        mail *m = c->taken;
        c->taken = m->next;
        free(m->data);
        free(m);
    }
}

static int shm_a2a(void *comm, uint32_t tag, void *const *send, const size_t *send_bytes, const void **recv,
                   size_t *recv_bytes) {
    shm_comm *c = comm;
    shm_world *w = c->w;
    for (int q = 0; q < w->W; q++) {
        w->post[c->rank][q] = send[q];
        w->post_bytes[c->rank][q] = send_bytes[q];
    }
    w->tag[c->rank] = tag;
    pthread_barrier_wait(&w->bar);
    for (int s = 0; s < w->W; s++) {
        if (w->tag[s] != tag)
            return -1;
        size_t n = w->post_bytes[s][c->rank];
        if (n > c->cap[s]) {
            c->copy[s] = realloc(c->copy[s], n);
            c->cap[s] = n;
        }
        memcpy(c->copy[s], w->post[s][c->rank], n);
        recv[s] = c->copy[s];
        recv_bytes[s] = n;
    }
    pthread_barrier_wait(&w->bar); /* senders may reuse their buffers after this */
    return 0;
}

typedef struct {
    const sy_refcase *rc;
    shm_world *world;
    shm_mailbox *mailbox;
    sy_mesh *mesh;
    int rank, bf16, pipeline;
    sy_losses loss;
    float *grads;   /* this rank's gradient arena */
    sy_model *m;
    int rc_code;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    const sy_refcase *rc = a->rc;
    sy_model_cfg cfg = rc->model;
    int E = cfg.n_experts, P = a->mesh->ep, q = sy_mesh_p(a->mesh, a->rank);
    unsigned char held[64] = {0};
    for (int e = a->mesh->e_begin[q]; e < a->mesh->e_end[q]; e++)
        held[e] = 1;
    int rows = a->mesh->nrows[a->rank], row0 = a->mesh->row0[a->rank], T = rc->seq;
    a->m = sy_model_new(&cfg, rows, T, held);
    assert_non_null(a->m);
    const sy_layout *lay = sy_model_layout(a->m);
    for (int i = 0; i < lay->n_params; i++) {
        const sy_ref_param *r = sy_refcase_param(rc, lay->params[i].name);
        assert_non_null(r);
        memcpy(sy_model_params(a->m) + lay->params[i].offset, r->value, r->numel * sizeof(float));
    }
    shm_comm comm = {.w = a->world, .rank = a->rank, .mb = a->mailbox};
    int max_in = rc->batch * T * cfg.top_k;
    sy_experts *ex = sy_experts_new(&cfg, sy_model_weights(a->m), sy_model_grad_views(a->m), max_in);
    sy_exchange *x = sy_exchange_new(&cfg, a->mesh, a->rank, ex, shm_a2a, &comm, a->bf16, max_in, rows * T * cfg.top_k);
    assert_non_null(x);
    sy_exchange_set_chunks(x, &(sy_a2a_chunks){.send = shm_send_chunk, .recv = shm_recv_chunk, .release = shm_release});
    sy_exchange_pipeline(x, a->pipeline);
    sy_expert_exchange iface = sy_exchange_interface(x);
    sy_model_set_exchange(a->m, &iface);
    sy_pass ps = {.B = rows, .T = T, .groups = 1, .ce_denom = (double)rc->batch * T, .group_denom = a->mesh->world,
                  .training = 1, .token0 = (int64_t)row0 * T};
    sy_model_zero_grad(a->m);
    a->rc_code = sy_model_forward(a->m, &ps, rc->tokens + (size_t)row0 * (T + 1), &a->loss) || sy_model_backward(a->m);
    if (a->rc_code)
        fprintf(stderr, "rank %d: %s\n", a->rank, sy_lasterr());
    (void)E;
    (void)P;
    sy_exchange_destroy(&x);
    sy_experts_destroy(&ex);
    shm_release(&comm);
    for (int s = 0; s < MAXW; s++)
        free(comm.copy[s]);
    return NULL;
}

/* Runs the case on W thread-workers and compares with one process of W groups. */
static void check_case(const char *name, int W, int bf16, double tol) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", SY_REFCASES_DIR, name);
    sy_refcase rc;
    assert_int_equal(sy_refcase_load(&rc, dir), 0);
    /* single process reference with W groups */
    sy_model *ref = sy_model_new(&rc.model, rc.batch, rc.seq, NULL);
    assert_non_null(ref);
    const sy_layout *rl = sy_model_layout(ref);
    for (int i = 0; i < rl->n_params; i++)
        memcpy(sy_model_params(ref) + rl->params[i].offset, sy_refcase_param(&rc, rl->params[i].name)->value,
               rl->params[i].numel * sizeof(float));
    sy_pass ps = {.B = rc.batch, .T = rc.seq, .groups = W, .training = 1};
    sy_losses want;
    sy_model_zero_grad(ref);
    assert_int_equal(sy_model_forward(ref, &ps, rc.tokens, &want), 0);
    assert_int_equal(sy_model_backward(ref), 0);

    sy_mesh mesh;
    assert_int_equal(sy_mesh_plan(&mesh, W, rc.model.n_experts, rc.batch, NULL, 0), 0);
    shm_world world = {.W = mesh.ep};
    assert_int_equal(mesh.dp, 1); /* these cases have W <= E */
    assert_int_equal(pthread_barrier_init(&world.bar, NULL, (unsigned)W), 0);
    shm_mailbox mailbox = {.box = NULL};
    pthread_mutex_init(&mailbox.mu, NULL);
    pthread_cond_init(&mailbox.cv, NULL);
    worker_arg args[MAXW], piped[MAXW];
    pthread_t th[MAXW];
    for (int pass = 0; pass < 2; pass++) {
        worker_arg *set = pass ? piped : args;
        for (int r = 0; r < W; r++) {
            set[r] = (worker_arg){.rc = &rc, .world = &world, .mailbox = &mailbox, .mesh = &mesh, .rank = r,
                                  .bf16 = bf16, .pipeline = pass};
            pthread_create(&th[r], NULL, worker, &set[r]);
        }
        for (int r = 0; r < W; r++)
            pthread_join(th[r], NULL);
    }
    assert_null(mailbox.box); /* every chunk sent was received */
    /* the pipeline: the same bits as the whole all-to-all, every loss term and gradient */
    for (int r = 0; r < W; r++) {
        assert_int_equal(piped[r].rc_code, 0);
        assert_memory_equal(&piped[r].loss, &args[r].loss, sizeof(sy_losses));
        const sy_layout *wl = sy_model_layout(args[r].m);
        assert_memory_equal(sy_model_grads(piped[r].m), sy_model_grads(args[r].m), wl->total * sizeof(float));
        sy_model_destroy(&piped[r].m);
    }
    pthread_mutex_destroy(&mailbox.mu);
    pthread_cond_destroy(&mailbox.cv);
    sy_losses got = {0};
    for (int r = 0; r < W; r++) {
        assert_int_equal(args[r].rc_code, 0);
        got.total += args[r].loss.total;
        got.ce += args[r].loss.ce;
        got.aux += args[r].loss.aux;
        got.z += args[r].loss.z;
    }
    printf("%s on %d workers%s: loss %.9f vs %.9f (one process, %d groups)\n", name, W, bf16 ? " (bf16 wire)" : "",
           got.total, want.total, W);
    assert_true(fabs(got.total - want.total) <= tol * fabs(want.total));
    assert_true(fabs(got.aux - want.aux) <= tol * fabs(want.aux) + 1e-12);
    /* gradients: dense ones summed over workers, expert ones from their owner */
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < rl->n_params; i++) {
        const sy_param *p = &rl->params[i];
        const float *g_ref = sy_model_grads(ref) + p->offset;
        double dn = 0, rn = 0;
        for (size_t j = 0; j < p->numel; j++) {
            double sum = 0.0;
            int found = 0;
            for (int r = 0; r < W; r++) {
                const sy_layout *wl = sy_model_layout(args[r].m);
                int k = sy_layout_find(wl, p->name);
                if (k < 0)
                    continue;
                found++;
                sum += sy_model_grads(args[r].m)[wl->params[k].offset + j];
            }
            assert_true(p->expert >= 0 ? found == 1 : found == W);
            dn += (sum - g_ref[j]) * (sum - g_ref[j]);
            rn += (double)g_ref[j] * g_ref[j];
        }
        double e = rn > 0 ? sqrt(dn / rn) : sqrt(dn);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
    }
    printf("  worst gradient difference: %s %.2e\n", worst_name, worst);
    assert_true(worst <= tol);
    for (int r = 0; r < W; r++)
        sy_model_destroy(&args[r].m);
    pthread_barrier_destroy(&world.bar);
    sy_mesh_free(&mesh);
    sy_model_destroy(&ref);
    sy_refcase_free(&rc);
}

static void test_tiny_two_workers(void **s) { check_case("tiny", 2, 0, 1e-5); }
static void test_nodrop_four_workers(void **s) { check_case("no-drop", 4, 0, 1e-5); }
static void test_wide_two_workers(void **s) { check_case("wide", 2, 0, 1e-5); }
static void test_allswitch_two_workers(void **s) { check_case("all-switch", 2, 0, 1e-5); }
static void test_top2_two_workers(void **s) { check_case("top2", 2, 0, 1e-5); }
static void test_top3_three_workers(void **s) { check_case("top3", 3, 0, 1e-5); }
static void test_groups4_four_workers(void **s) { check_case("groups4-short", 4, 0, 1e-5); }
/* bf16 rows on the wire: same routing here, gradients within bf16 rounding */
static void test_tiny_bf16(void **s) { check_case("tiny", 2, 1, 2e-2); }

int main(void) {
    struct stat st;
    if (stat(SY_REFCASES_DIR, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "test_exchange: the reference cases are missing: %s (they are committed in tests/refcases)\n",
                SY_REFCASES_DIR);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_two_workers),    cmocka_unit_test(test_nodrop_four_workers),
        cmocka_unit_test(test_wide_two_workers),    cmocka_unit_test(test_allswitch_two_workers),
        cmocka_unit_test(test_top2_two_workers),    cmocka_unit_test(test_top3_three_workers),
        cmocka_unit_test(test_groups4_four_workers), cmocka_unit_test(test_tiny_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
