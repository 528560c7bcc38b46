/* The overlapped gradient all-reduce (common/net/reducer.c, sy_peer_allreduce_part) over
 * real ZeroMQ tcp sockets, one thread per rank plus each rank's communication thread:
 * buckets queued in backward order (last floats first, uneven sizes, crossing the ring's
 * segment boundaries) end with exactly the bits of one whole sy_peer_allreduce, fp32 and
 * bf16, 2-4 ranks, while the rank's own thread runs an all-to-all on its main sockets;
 * a bucket in flight is called off promptly (cancel, abort flag) and the reducer works
 * again afterwards; jobs of the caller's own (sy_reducer_call) run there in queue order. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include <cmocka.h>

#include "log.h"
#include "peer.h"
#include "reducer.h"

#define MAXR 4

typedef struct {
    void *ctx;
    int world;
    sy_peer *peer[MAXR];
    sy_reducer *red[MAXR];
    char *eps[MAXR], *red_eps[MAXR];
    int members[MAXR];
    volatile int abort_flag;
} world_t;

static void world_open(world_t *w, int n, int timeout_ms) {
    memset(w, 0, sizeof *w);
    w->ctx = zmq_ctx_new();
    w->world = n;
    for (int r = 0; r < n; r++) {
        w->members[r] = r;
        w->peer[r] = sy_peer_new(w->ctx, "tcp://127.0.0.1:*");
        w->red[r] = sy_reducer_new(w->ctx, "tcp://127.0.0.1:*");
        assert_non_null(w->peer[r]);
        assert_non_null(w->red[r]);
        w->eps[r] = strdup(sy_peer_endpoint(w->peer[r]));
        w->red_eps[r] = strdup(sy_reducer_endpoint(w->red[r]));
    }
    for (int r = 0; r < n; r++) {
        assert_int_equal(sy_peer_setup(w->peer[r], 9, r, n, w->eps, timeout_ms, &w->abort_flag), 0);
        assert_int_equal(sy_reducer_setup(w->red[r], 9, r, n, w->red_eps, NULL, timeout_ms, &w->abort_flag), 0);
    }
}

static void world_close(world_t *w) {
    for (int r = 0; r < w->world; r++) {
        sy_reducer_destroy(&w->red[r]);
        sy_peer_destroy(&w->peer[r]);
        free(w->eps[r]);
        free(w->red_eps[r]);
    }
    zmq_ctx_term(w->ctx);
}

static float value(int rank, size_t i) {
    return (float)((int)((i * 2654435761u + rank * 131u) % 4001) - 2000) / 29.0f + 1e-3f * (float)rank;
}

typedef struct {
    world_t *w;
    int rank, bf16;
    size_t n;
    float *whole, *parts;
    int rc_whole, rc_parts, rc_a2a;
} job;

/* cut points of the buckets: uneven, some tiny, some crossing segment boundaries */
static size_t cut(size_t n, int k) {
    static const double at[] = {0.0, 0.07, 0.3333, 0.34, 0.5, 0.51, 0.77, 0.999, 1.0};
    return (size_t)(at[k] * (double)n);
}
#define N_CUTS 9

static void *run(void *arg) {
    job *j = arg;
    world_t *w = j->w;
    int me = j->rank, n = w->world;
    /* the serial reference: one whole all-reduce on the main sockets */
    j->rc_whole = sy_peer_allreduce(w->peer[me], w->members, n, 5, 1, j->whole, j->n, j->bf16, 4096);
    /* buckets from the end down, queued to the communication thread */
    j->rc_parts = 0;
    for (int k = N_CUTS - 2; k >= 0 && !j->rc_parts; k--)
        j->rc_parts = sy_reducer_start(w->red[me], w->members, n, 6, (uint32_t)(16 + k), j->parts, j->n,
                                       cut(j->n, k), cut(j->n, k + 1) - cut(j->n, k), j->bf16, 4096);
    /* meanwhile this thread keeps using its own sockets (the expert all-to-all) */
    void *send[MAXR];
    size_t sb[MAXR], rb[MAXR];
    const void *recv[MAXR];
    float blob[256];
    for (int i = 0; i < 256; i++)
        blob[i] = (float)(me * 1000 + i);
    for (int q = 0; q < n; q++) {
        send[q] = blob;
        sb[q] = sizeof blob;
    }
    j->rc_a2a = 0;
    for (int it = 0; it < 20 && !j->rc_a2a; it++) {
        j->rc_a2a = sy_peer_alltoall(w->peer[me], w->members, n, 6, (uint32_t)it, send, sb, recv, rb);
        for (int q = 0; q < n && !j->rc_a2a; q++)
            if (rb[q] != sizeof blob || ((const float *)recv[q])[7] != (float)(q * 1000 + 7))
                j->rc_a2a = -1;
    }
    int rc = sy_reducer_wait(w->red[me]);
    if (!j->rc_parts)
        j->rc_parts = rc;
    return NULL;
}

static void check_parts(int n_ranks, size_t n, int bf16) {
    world_t w;
    world_open(&w, n_ranks, 20000);
    job jobs[MAXR];
    pthread_t th[MAXR];
    for (int r = 0; r < n_ranks; r++) {
        jobs[r] = (job){.w = &w, .rank = r, .bf16 = bf16, .n = n};
        jobs[r].whole = malloc(n * 4 + 4);
        jobs[r].parts = malloc(n * 4 + 4);
        for (size_t i = 0; i < n; i++)
            jobs[r].whole[i] = jobs[r].parts[i] = value(r, i);
        pthread_create(&th[r], NULL, run, &jobs[r]);
    }
    for (int r = 0; r < n_ranks; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < n_ranks; r++) {
        assert_int_equal(jobs[r].rc_whole, 0);
        assert_int_equal(jobs[r].rc_parts, 0);
        assert_int_equal(jobs[r].rc_a2a, 0);
        for (size_t i = 0; i < n; i++) {
            if (memcmp(&jobs[r].parts[i], &jobs[r].whole[i], 4))
                fail_msg("rank %d float %zu of %zu: buckets gave %.9g, the whole all-reduce %.9g (%d ranks, %s)", r,
                         i, n, jobs[r].parts[i], jobs[r].whole[i], n_ranks, bf16 ? "bf16" : "fp32");
            /* and both are the sum (not merely equal to each other) */
            double want = 0;
            for (int q = 0; q < n_ranks; q++)
                want += value(q, i);
            double tol = bf16 ? (fabs(want) + 70.0) * n_ranks / 128 : 1e-4 * (fabs(want) + 1);
            if (fabs(jobs[r].parts[i] - want) > tol)
                fail_msg("rank %d float %zu: %g, want %g", r, i, jobs[r].parts[i], want);
        }
    }
    for (int r = 0; r < n_ranks; r++) {
        free(jobs[r].whole);
        free(jobs[r].parts);
    }
    world_close(&w);
}

static void test_buckets_equal_whole_fp32(void **s) {
    (void)s;
    for (int nr = 2; nr <= 4; nr++) {
        check_parts(nr, 100003, 0);
        check_parts(nr, 7, 0); /* fewer floats than some buckets need: empty buckets */
    }
}

static void test_buckets_equal_whole_bf16(void **s) {
    (void)s;
    for (int nr = 2; nr <= 4; nr++)
        check_parts(nr, 50021, 1);
}

/* A bucket in flight whose peer never answers (its backward failed): cancel ends it at
 * once, and the next step's buckets go through on the same sockets. The abort flag ends
 * a wait too, with SY_PEER_ABORTED. */
static void test_cancel_and_abort_in_flight(void **s) {
    (void)s;
    world_t w;
    world_open(&w, 2, 60000);
    float a[1000], b[1000];
    for (int i = 0; i < 1000; i++)
        a[i] = b[i] = (float)i;
    assert_int_equal(sy_reducer_start(w.red[0], w.members, 2, 3, 16, a, 1000, 0, 1000, 0, 4096), 0);
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    double t0 = sy_now();
    sy_reducer_cancel(w.red[0]);
    assert_true(sy_now() - t0 < 2.0);
    /* step 4 on both ranks: rank 1 drops rank 0's stale step-3 segment */
    for (int i = 0; i < 1000; i++)
        a[i] = b[i] = (float)i;
    assert_int_equal(sy_reducer_start(w.red[0], w.members, 2, 4, 16, a, 1000, 0, 1000, 0, 4096), 0);
    assert_int_equal(sy_reducer_start(w.red[1], w.members, 2, 4, 16, b, 1000, 0, 1000, 0, 4096), 0);
    assert_int_equal(sy_reducer_wait(w.red[0]), 0);
    assert_int_equal(sy_reducer_wait(w.red[1]), 0);
    for (int i = 0; i < 1000; i++) {
        assert_true(a[i] == (float)(2 * i));
        assert_true(b[i] == (float)(2 * i));
    }
    /* the abort flag (the coordinator's abort) while a bucket waits */
    assert_int_equal(sy_reducer_start(w.red[0], w.members, 2, 5, 16, a, 1000, 0, 1000, 0, 4096), 0);
    nanosleep(&pause, NULL);
    w.abort_flag = 1;
    t0 = sy_now();
    assert_int_equal(sy_reducer_wait(w.red[0]), SY_PEER_ABORTED);
    assert_true(sy_now() - t0 < 2.0);
    assert_non_null(strstr(sy_lasterr(), "aborted"));
    world_close(&w);
}

/* Jobs (sy_reducer_call) run on the communication thread, on its own sockets, in queue
 * order with the parts: a job between two parts sees the first reduced and the second
 * not; a failing job's message comes back from wait, and what was queued after it is
 * skipped; the reducer works again afterwards. */
typedef struct {
    world_t *w;
    int rank, fail;
    int64_t step;
    float *data;     /* [2] the parts' floats */
    float seen[2];   /* data when the job ran */
    int got;         /* what the peer rank sent through the job's all-to-all */
    pthread_t thread;
    int ran;
} call_job;

static int call_fn(void *arg, sy_peer *peer) {
    call_job *c = arg;
    c->thread = pthread_self();
    c->ran++;
    c->seen[0] = c->data[0];
    c->seen[1] = c->data[1];
    if (c->fail) {
        sy_seterr("job of rank %d failed on purpose", c->rank);
        return -1;
    }
    int mine = 100 + c->rank;
    void *send[2] = {&mine, &mine};
    size_t sb[2] = {sizeof mine, sizeof mine}, rb[2];
    const void *recv[2];
    int rc = sy_peer_alltoall(peer, c->w->members, 2, c->step, 0x30100u, send, sb, recv, rb);
    if (!rc)
        memcpy(&c->got, recv[!c->rank], sizeof c->got);
    return rc;
}

static void test_jobs_in_queue_order(void **s) {
    (void)s;
    world_t w;
    world_open(&w, 2, 20000);
    float d[2][2];
    call_job c[2];
    for (int r = 0; r < 2; r++) {
        d[r][0] = d[r][1] = 1.0f + (float)r; /* sums: 3 */
        c[r] = (call_job){.w = &w, .rank = r, .step = 7, .data = d[r]};
        assert_int_equal(sy_reducer_start(w.red[r], w.members, 2, 7, 16, d[r], 2, 1, 1, 0, 4096), 0);
        assert_int_equal(sy_reducer_call(w.red[r], call_fn, &c[r]), 0);
        assert_int_equal(sy_reducer_start(w.red[r], w.members, 2, 7, 17, d[r], 2, 0, 1, 0, 4096), 0);
    }
    for (int r = 0; r < 2; r++) {
        assert_int_equal(sy_reducer_wait(w.red[r]), 0);
        assert_int_equal(c[r].ran, 1);
        assert_false(pthread_equal(c[r].thread, pthread_self()));
        assert_true(c[r].seen[1] == 3.0f && c[r].seen[0] == 1.0f + (float)r); /* part 1 done, part 0 not yet */
        assert_true(d[r][0] == 3.0f && d[r][1] == 3.0f);
        assert_int_equal(c[r].got, 100 + !r);
    }
    /* rank 0's job fails: the part queued after it is skipped, its message comes back */
    c[0] = (call_job){.w = &w, .rank = 0, .step = 8, .data = d[0], .fail = 1};
    assert_int_equal(sy_reducer_call(w.red[0], call_fn, &c[0]), 0);
    assert_int_equal(sy_reducer_start(w.red[0], w.members, 2, 8, 16, d[0], 2, 0, 2, 0, 4096), 0);
    assert_int_equal(sy_reducer_wait(w.red[0]), -1);
    assert_non_null(strstr(sy_lasterr(), "job of rank 0 failed on purpose"));
    assert_true(d[0][0] == 3.0f);
    /* and the next step goes through on both */
    for (int r = 0; r < 2; r++) {
        c[r] = (call_job){.w = &w, .rank = r, .step = 9, .data = d[r]};
        assert_int_equal(sy_reducer_call(w.red[r], call_fn, &c[r]), 0);
    }
    for (int r = 0; r < 2; r++) {
        assert_int_equal(sy_reducer_wait(w.red[r]), 0);
        assert_int_equal(c[r].got, 100 + !r);
    }
    world_close(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_equal_whole_fp32),
        cmocka_unit_test(test_buckets_equal_whole_bf16),
        cmocka_unit_test(test_cancel_and_abort_in_flight),
        cmocka_unit_test(test_jobs_in_queue_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
