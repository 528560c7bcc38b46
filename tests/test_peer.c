/* The peer collectives (common/net/peer.c) over real ZeroMQ tcp sockets, one thread per
 * rank: all-reduce and all-to-all against serial references computed here (sizes 0, 1,
 * odd, large; 2-4 ranks), bf16 wire ending bit-identical on every rank, and rejection of
 * messages with another epoch, an old step or a wrong size without corrupting results.
 * Local links (wire.local): CURVE peers on one machine reach each other over ipc sockets
 * in a private directory, fall back to TCP when the directory is open to others, and take
 * a keyless message only while local links are on and from a rank that has one. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "curve.h"
#include "log.h"
#include "peer.h"
#include "switchyard.pb-c.h"

#define MAXR 4

typedef struct {
    void *ctx;
    int world;
    sy_peer *peer[MAXR];
    char *eps[MAXR];
    volatile int abort_flag;
} world_t;

/* n ranks at epoch 7; local_dir: each also bound at local_dir/rR with local links on. */
static void world_open_in(world_t *w, int n, int timeout_ms, const char *local_dir) {
    memset(w, 0, sizeof *w);
    w->ctx = zmq_ctx_new();
    w->world = n;
    char *loc[MAXR];
    for (int r = 0; r < n; r++) {
        w->peer[r] = sy_peer_new(w->ctx, "tcp://127.0.0.1:*");
        assert_non_null(w->peer[r]);
        w->eps[r] = strdup(sy_peer_endpoint(w->peer[r]));
        if (local_dir) {
            char path[256];
            snprintf(path, sizeof path, "%s/r%d", local_dir, r);
            assert_int_equal(sy_peer_bind_local(w->peer[r], path), 0);
            loc[r] = (char *)sy_peer_local_endpoint(w->peer[r]);
        }
    }
    for (int r = 0; r < n; r++) {
        if (local_dir)
            assert_int_equal(sy_peer_set_local(w->peer[r], loc, n), 0);
        assert_int_equal(sy_peer_setup(w->peer[r], 7, r, n, w->eps, timeout_ms, &w->abort_flag), 0);
    }
}

static void world_open(world_t *w, int n, int timeout_ms) { world_open_in(w, n, timeout_ms, NULL); }

static void world_close(world_t *w) {
    for (int r = 0; r < w->world; r++) {
        sy_peer_destroy(&w->peer[r]);
        free(w->eps[r]);
    }
    zmq_ctx_term(w->ctx);
}

typedef struct {
    world_t *w;
    int rank;
    float *data;
    size_t n;
    int bf16;
    int rc;
    int op; /* 0 allreduce, 1 alltoall */
    /* all-to-all */
    size_t *send_counts; /* [world] floats to each */
    float **send;
    float **recv_copy;
    size_t *recv_counts;
} job;

static void *run(void *arg) {
    job *j = arg;
    int members[MAXR];
    for (int i = 0; i < j->w->world; i++)
        members[i] = i;
    if (j->op == 0) {
        j->rc = sy_peer_allreduce(j->w->peer[j->rank], members, j->w->world, 3, 1, j->data, j->n, j->bf16, 4096);
    } else {
        void *send[MAXR];
        size_t sb[MAXR], rb[MAXR];
        const void *recv[MAXR];
        for (int q = 0; q < j->w->world; q++) {
            send[q] = j->send[q];
            sb[q] = j->send_counts[q] * 4;
        }
        j->rc = sy_peer_alltoall(j->w->peer[j->rank], members, j->w->world, 3, 2, send, sb, recv, rb);
        for (int q = 0; q < j->w->world && !j->rc; q++) {
            j->recv_counts[q] = rb[q] / 4;
            j->recv_copy[q] = malloc(rb[q] + 4);
            memcpy(j->recv_copy[q], recv[q], rb[q]);
        }
    }
    return NULL;
}

static float value(int rank, size_t i) { return (float)((int)((i * 2654435761u + rank * 97u) % 2001) - 1000) / 37.0f; }

static void check_allreduce(int n_ranks, size_t n, int bf16) {
    world_t w;
    world_open(&w, n_ranks, 10000);
    job jobs[MAXR];
    pthread_t th[MAXR];
    for (int r = 0; r < n_ranks; r++) {
        jobs[r] = (job){.w = &w, .rank = r, .n = n, .bf16 = bf16, .op = 0};
        jobs[r].data = malloc(n * 4 + 4);
        for (size_t i = 0; i < n; i++)
            jobs[r].data[i] = value(r, i);
        pthread_create(&th[r], NULL, run, &jobs[r]);
    }
    for (int r = 0; r < n_ranks; r++)
        pthread_join(th[r], NULL);
    double worst = 0;
    for (int r = 0; r < n_ranks; r++) {
        assert_int_equal(jobs[r].rc, 0);
        for (size_t i = 0; i < n; i++) {
            double want = 0;
            for (int q = 0; q < n_ranks; q++)
                want += value(q, i);
            double err = fabs(jobs[r].data[i] - want);
            /* fp32: a few ulps of the partial sums; bf16: each hop rounds to 8 bits of mantissa */
            double tol = bf16 ? (fabs(want) + 30.0) * n_ranks * 1.0 / 128 : 1e-4 * (fabs(want) + 1);
            if (err > worst)
                worst = err;
            if (err > tol)
                fail_msg("rank %d element %zu: %g, want %g (%s, %d ranks)", r, i, jobs[r].data[i], want,
                         bf16 ? "bf16" : "fp32", n_ranks);
        }
        if (bf16 && r > 0)
            assert_memory_equal(jobs[r].data, jobs[0].data, n * 4); /* bit-identical on every rank */
    }
    for (int r = 0; r < n_ranks; r++)
        free(jobs[r].data);
    world_close(&w);
}

/* A rank that returns from an all-reduce reuses its buffer at once (the step's gradient
 * norm lives on the stack): its last segments must already be out of its hands, or a
 * neighbour sums whatever the buffer holds next. */
typedef struct {
    world_t *w;
    int rank, iters, bad;
    float last;
} reuse_job;

static void *run_reuse(void *arg) {
    reuse_job *j = arg;
    int members[MAXR];
    for (int i = 0; i < j->w->world; i++)
        members[i] = i;
    float *x = malloc(sizeof *x);
    for (int it = 0; it < j->iters; it++) {
        *x = (float)(j->rank + 1);
        if (sy_peer_allreduce(j->w->peer[j->rank], members, j->w->world, it, 2, x, 1, 0, 4096)) {
            j->bad = -1;
            break;
        }
        float want = (float)(j->w->world * (j->w->world + 1) / 2);
        if (*x != want) {
            j->bad++;
            j->last = *x;
        }
        *x = NAN; /* the caller reuses its buffer */
    }
    free(x);
    return NULL;
}

static void test_allreduce_buffer_reusable(void **s) {
    (void)s;
    world_t w;
    world_open(&w, 3, 10000);
    reuse_job jobs[3];
    pthread_t th[3];
    for (int r = 0; r < 3; r++) {
        jobs[r] = (reuse_job){.w = &w, .rank = r, .iters = 300};
        pthread_create(&th[r], NULL, run_reuse, &jobs[r]);
    }
    for (int r = 0; r < 3; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < 3; r++)
        if (jobs[r].bad)
            fail_msg("rank %d: %d of 300 all-reduces of one float came out wrong (last %g, want 6)", r, jobs[r].bad,
                     jobs[r].last);
    world_close(&w);
}

static void test_allreduce_sizes(void **s) {
    size_t sizes[] = {0, 1, 3, 1001, 4096 * 3 + 17, 1 << 20};
    for (int nr = 2; nr <= 4; nr++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            check_allreduce(nr, sizes[k], 0);
}

static void test_allreduce_bf16(void **s) {
    check_allreduce(2, 100003, 1);
    check_allreduce(3, 4097, 1);
    check_allreduce(4, 1, 1);
}

static void test_alltoall_uneven(void **s) {
    for (int nr = 2; nr <= 4; nr++) {
        world_t w;
        world_open(&w, nr, 10000);
        job jobs[MAXR];
        pthread_t th[MAXR];
        for (int r = 0; r < nr; r++) {
            jobs[r] = (job){.w = &w, .rank = r, .op = 1};
            jobs[r].send_counts = calloc(MAXR, sizeof(size_t));
            jobs[r].recv_counts = calloc(MAXR, sizeof(size_t));
            jobs[r].send = calloc(MAXR, sizeof(float *));
            jobs[r].recv_copy = calloc(MAXR, sizeof(float *));
            for (int q = 0; q < nr; q++) {
                size_t cnt = (size_t)((r * 7 + q * 3) % 5) * 331; /* includes empty buffers */
                jobs[r].send_counts[q] = cnt;
                jobs[r].send[q] = malloc(cnt * 4 + 4);
                for (size_t i = 0; i < cnt; i++)
                    jobs[r].send[q][i] = (float)(r * 1000000 + q * 10000 + (int)i);
            }
            pthread_create(&th[r], NULL, run, &jobs[r]);
        }
        for (int r = 0; r < nr; r++)
            pthread_join(th[r], NULL);
        for (int r = 0; r < nr; r++) {
            assert_int_equal(jobs[r].rc, 0);
            for (int q = 0; q < nr; q++) {
                size_t want = (size_t)((q * 7 + r * 3) % 5) * 331;
                assert_int_equal(jobs[r].recv_counts[q], want);
                for (size_t i = 0; i < want; i++)
                    assert_true(jobs[r].recv_copy[q][i] == (float)(q * 1000000 + r * 10000 + (int)i));
            }
        }
        for (int r = 0; r < nr; r++) {
            for (int q = 0; q < nr; q++) {
                free(jobs[r].send[q]);
                free(jobs[r].recv_copy[q]);
            }
            free(jobs[r].send);
            free(jobs[r].recv_copy);
            free(jobs[r].send_counts);
            free(jobs[r].recv_counts);
        }
        world_close(&w);
    }
}

/* The all-to-all in chunks (sy_peer_send_chunk / recv_chunk): every rank sends K chunks
 * of sizes from 0 bytes (a small frame's bytes live inside its zmq_msg_t) to large to
 * every other rank, then receives them in the reverse order of sending, from the ranks in
 * reverse too; every chunk's bytes are checked only once all are received (the pointers
 * handed out stay valid until release), and again after a second round on the same peer
 * has released the first. A chunk asked of this rank itself is refused. */
enum { KCH = 40 };

static size_t chunk_len(int src, int dst, int k) { return k % 5 == 0 ? 0 : (size_t)((src * 131 + dst * 17 + k * 977) % 9000) / (k % 3 ? 1 : 200); }

static uint8_t chunk_byte(int src, int dst, int k, size_t i) { return (uint8_t)(src * 37 + dst * 11 + k * 5 + i * 3); }

typedef struct {
    world_t *w;
    int rank, bad;
} chunk_job;

static void *run_chunks(void *arg) {
    chunk_job *j = arg;
    sy_peer *p = j->w->peer[j->rank];
    int n = j->w->world;
    uint8_t *buf = malloc(9001);
    const void *got[MAXR][KCH];
    size_t len[MAXR][KCH];
    for (int round = 0; round < 2; round++) {
        for (int q = 0; q < n; q++)
            for (int k = 0; q != j->rank && k < KCH; k++) {
                size_t L = chunk_len(j->rank, q, k);
                for (size_t i = 0; i < L; i++)
                    buf[i] = chunk_byte(j->rank, q, k + round, i);
                if (sy_peer_send_chunk(p, q, 3 + round, 77, (uint32_t)k, buf, L))
                    j->bad++;
                memset(buf, 0xee, L); /* the chunk was copied */
            }
        for (int q = n - 1; q >= 0; q--)
            for (int k = KCH - 1; q != j->rank && k >= 0; k--)
                if (sy_peer_recv_chunk(p, q, 3 + round, 77, (uint32_t)k, &got[q][k], &len[q][k]))
                    j->bad++;
        for (int q = 0; q < n; q++)
            for (int k = 0; q != j->rank && k < KCH; k++) {
                size_t L = chunk_len(q, j->rank, k);
                if (len[q][k] != L)
                    j->bad++;
                for (size_t i = 0; i < L && len[q][k] == L; i++)
                    if (((const uint8_t *)got[q][k])[i] != chunk_byte(q, j->rank, k + round, i)) {
                        j->bad++;
                        break;
                    }
            }
        sy_peer_release(p);
    }
    const void *d;
    size_t b;
    if (sy_peer_recv_chunk(p, j->rank, 5, 77, 0, &d, &b) == 0 || sy_peer_send_chunk(p, n, 5, 77, 0, buf, 1) == 0)
        j->bad++;
    free(buf);
    return NULL;
}

static void test_alltoall_chunks(void **s) {
    for (int nr = 2; nr <= 3; nr++) {
        world_t w;
        world_open(&w, nr, 10000);
        chunk_job jobs[MAXR];
        pthread_t th[MAXR];
        for (int r = 0; r < nr; r++) {
            jobs[r] = (chunk_job){.w = &w, .rank = r};
            pthread_create(&th[r], NULL, run_chunks, &jobs[r]);
        }
        for (int r = 0; r < nr; r++) {
            pthread_join(th[r], NULL);
            assert_int_equal(jobs[r].bad, 0);
        }
        world_close(&w);
    }
}

/* A rogue sender: raw PUSH to rank 0's endpoint with a forged header. */
static void forge(void *ctx, const char *ep, uint64_t epoch, int64_t step, uint32_t op, uint32_t tag, uint32_t chunk,
                  uint32_t src, uint32_t dtype, const void *data, size_t bytes) {
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, ep), 0);
    Switchyard__DataHeader h = SWITCHYARD__DATA_HEADER__INIT;
    h.epoch = epoch;
    h.step = step;
    h.op = op;
    h.tag = tag;
    h.chunk = chunk;
    h.src = src;
    h.dst = 0;
    h.dtype = dtype;
    h.bytes = bytes;
    uint8_t hb[128];
    size_t hn = switchyard__data_header__pack(&h, hb);
    zmq_send(s, hb, hn, ZMQ_SNDMORE);
    zmq_send(s, data, bytes, 0);
    zmq_close(s);
}

/* Both ranks of a 2-rank world all-reduce 8 floats (rank r holds (r+1)(i+1)); every
 * result must be exactly 3(i+1): nothing forged before it was summed in. */
static void allreduce_8_exact(world_t *w) {
    job jobs[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        jobs[r] = (job){.w = w, .rank = r, .n = 8, .op = 0};
        jobs[r].data = malloc(8 * 4);
        for (int i = 0; i < 8; i++)
            jobs[r].data[i] = (float)(r + 1) * (i + 1);
        pthread_create(&th[r], NULL, run, &jobs[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(jobs[r].rc, 0);
        for (int i = 0; i < 8; i++)
            assert_true(jobs[r].data[i] == 3.0f * (i + 1));
        free(jobs[r].data);
    }
}

/* Messages from another epoch and for a finished step are dropped; the all-reduce still
 * gives the right sum. A message of the right op and step but the wrong size fails the
 * operation instead of being summed. */
static void test_rejects_stale_and_misshapen(void **s) {
    world_t w;
    world_open(&w, 2, 3000);
    float junk[8] = {1e9f, 1e9f, 1e9f, 1e9f, 1e9f, 1e9f, 1e9f, 1e9f};
    /* ring all-reduce of 8 floats on 2 ranks: rank 0 receives segment 1 (4 floats) at
     * tag (1<<8)|0, chunk 0 from rank 1 first */
    forge(w.ctx, w.eps[0], 6 /* old epoch */, 3, 2, (1u << 8) | 0, 0, 1, 1, junk, 16);
    forge(w.ctx, w.eps[0], 7, 2 /* finished step */, 2, (1u << 8) | 0, 0, 1, 1, junk, 16);
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    allreduce_8_exact(&w);
    world_close(&w);

    /* a well-addressed message with the wrong size: the operation fails, naming it */
    world_open(&w, 2, 2000);
    forge(w.ctx, w.eps[0], 7, 3, 2, (1u << 8) | 0, 0, 1, 1, junk, 12);
    nanosleep(&pause, NULL);
    int members[2] = {0, 1};
    float d[8] = {0};
    int rc = sy_peer_allreduce(w.peer[0], members, 2, 3, 1, d, 8, 0, 4096);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(sy_lasterr(), "rejected"));
    for (int i = 0; i < 4; i++)
        assert_true(d[4 + i] == 0.0f); /* nothing was summed into the received segment */
    world_close(&w);
}

/* A header whose source rank is out of range (as a signed int 2^31 and up is negative)
 * is dropped before anything is looked up by it: with local links on, the keyless check
 * indexed the local endpoints by it. The all-reduce after it is not disturbed. */
static void test_rejects_bad_source(void **s) {
    (void)s;
    char dir[] = "/tmp/sy-test-src-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    world_t w;
    world_open_in(&w, 2, 5000, dir);
    const char *loc0 = sy_peer_local_endpoint(w.peer[0]);
    float junk[4] = {1e9f, 1e9f, 1e9f, 1e9f};
    uint32_t bad[] = {0x80000000u, 0xffffffffu, 2u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        forge(w.ctx, w.eps[0], 7, 3, 2, (1u << 8) | 0, 0, bad[i], 1, junk, 16);
        forge(w.ctx, loc0, 7, 3, 2, (1u << 8) | 0, 0, bad[i], 1, junk, 16);
    }
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    allreduce_8_exact(&w);
    world_close(&w);
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s/r%d", dir, r);
        unlink(path);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* ---------------------------------------------------------------- local links */

typedef struct {
    sy_peer *p;
    int rank, rc;
    float got[2];
} local_job;

static void *run_local(void *arg) {
    local_job *j = arg;
    int members[2] = {0, 1};
    float mine[2] = {(float)(j->rank + 1), (float)(10 * (j->rank + 1))};
    j->rc = sy_peer_allreduce(j->p, members, 2, 5, 1, mine, 2, 0, 4096);
    memcpy(j->got, mine, sizeof mine);
    return NULL;
}

/* Two CURVE peers with local sockets in dir, set up with tcp (NULL: their real TCP
 * endpoints) and one all-reduce run between them; returns how many links went local.
 * unrelayed0: the table leaves rank 0's local endpoint out (a coordinator that would not
 * relay its path). */
static int local_pair_ex(const char *dir, char *const *tcp, int expect_ok, int unrelayed0) {
    void *ctx = zmq_ctx_new();
    sy_zap *zap = sy_zap_new(ctx);
    assert_non_null(zap);
    sy_cert cert[2];
    char *keys[2], *eps[2], *loc[2], path[2][256];
    sy_peer *p[2];
    for (int r = 0; r < 2; r++) {
        assert_int_equal(zmq_curve_keypair(cert[r].pub, cert[r].sec), 0);
        keys[r] = cert[r].pub;
    }
    for (int r = 0; r < 2; r++) {
        p[r] = sy_peer_new_secure(ctx, "tcp://127.0.0.1:*", &cert[r], zap);
        assert_non_null(p[r]);
        snprintf(path[r], sizeof path[r], "%s/rank%d", dir, r);
        assert_int_equal(sy_peer_bind_local(p[r], path[r]), 0);
        eps[r] = tcp ? tcp[r] : (char *)sy_peer_endpoint(p[r]);
        loc[r] = (char *)sy_peer_local_endpoint(p[r]);
        assert_non_null(strstr(loc[r], "ipc://"));
    }
    volatile int abort_flag = 0;
    int n_local = 0;
    char none[] = "";
    if (unrelayed0)
        loc[0] = none;
    for (int r = 0; r < 2; r++) {
        assert_int_equal(sy_peer_set_local(p[r], loc, 2), 0);
        assert_int_equal(sy_peer_set_keys(p[r], keys, 2), 0);
        assert_int_equal(sy_peer_setup(p[r], 4, r, 2, eps, expect_ok ? 10000 : 1500, &abort_flag), 0);
        n_local += sy_peer_is_local(p[r], 1 - r);
    }
    local_job jobs[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        jobs[r] = (local_job){.p = p[r], .rank = r};
        pthread_create(&th[r], NULL, run_local, &jobs[r]);
    }
    for (int r = 0; r < 2; r++) {
        pthread_join(th[r], NULL);
        if (expect_ok) {
            if (jobs[r].rc)
                fail_msg("rank %d: %s", r, sy_lasterr());
            assert_true(jobs[r].got[0] == 3.0f && jobs[r].got[1] == 30.0f);
        } else {
            assert_int_not_equal(jobs[r].rc, 0);
        }
    }
    for (int r = 0; r < 2; r++)
        sy_peer_destroy(&p[r]);
    sy_zap_destroy(&zap);
    zmq_ctx_term(ctx);
    return n_local;
}

static int local_pair(const char *dir, char *const *tcp, int expect_ok) {
    return local_pair_ex(dir, tcp, expect_ok, 0);
}

static void test_local_links(void **s) {
    (void)s;
    /* as a worker makes them: a private directory in a private parent */
    char parent[] = "/tmp/sy-test-local-XXXXXX", dir[64];
    assert_non_null(mkdtemp(parent)); /* mode 0700 */
    snprintf(dir, sizeof dir, "%s/d", parent);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* TCP endpoints nobody listens on: the all-reduce can only have gone over the local sockets */
    char dead0[] = "tcp://127.0.0.1:1", dead1[] = "tcp://127.0.0.1:1";
    char *dead[2] = {dead0, dead1};
    assert_int_equal(local_pair(dir, dead, 1), 2);
    /* rank 0's own local endpoint missing from the table: rank 1 would drop its keyless
     * messages, so rank 0 must not go local either; both stay on TCP and it works */
    assert_int_equal(local_pair_ex(dir, NULL, 1, 1), 0);
    /* a parent others may enter is not private (a directory of an exited worker could be
     * made again there by someone else): both links go over TCP (with CURVE) */
    assert_int_equal(chmod(parent, 0755), 0);
    assert_int_equal(local_pair(dir, NULL, 1), 0);
    assert_int_equal(chmod(parent, 0700), 0);
    /* nor is a directory others may enter */
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(local_pair(dir, NULL, 1), 0);
    /* ... so with dead TCP endpoints nothing gets through */
    assert_int_equal(local_pair(dir, dead, 0), 0);
    char f[300];
    for (int r = 0; r < 2; r++) {
        snprintf(f, sizeof f, "%s/rank%d", dir, r);
        unlink(f);
    }
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(rmdir(parent), 0);
}

/* A keyless message (what the local socket delivers) counts only while local links are
 * on in this epoch and only from a rank with a local endpoint; otherwise it is dropped
 * as forged and the operation is not disturbed. A plain client at the TCP endpoint, bound
 * with CURVE before the local one, gets nothing in. */
static void test_local_keyless_rules(void **s) {
    (void)s;
    char dir[] = "/tmp/sy-test-local-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/rank0", dir);
    void *ctx = zmq_ctx_new();
    sy_zap *zap = sy_zap_new(ctx);
    sy_cert cert;
    assert_int_equal(zmq_curve_keypair(cert.pub, cert.sec), 0);
    sy_peer *p = sy_peer_new_secure(ctx, "tcp://127.0.0.1:*", &cert, zap);
    assert_non_null(p);
    assert_int_equal(sy_peer_bind_local(p, path), 0);
    char other[SY_KEY_LEN + 1];
    char osec[SY_KEY_LEN + 1];
    zmq_curve_keypair(other, osec);
    char *keys[2] = {cert.pub, other};
    char tcp1[] = "tcp://127.0.0.1:1", none[] = "";
    char *eps[2] = {(char *)sy_peer_endpoint(p), tcp1};
    char *loc_on[2] = {(char *)sy_peer_local_endpoint(p), none};
    volatile int abort_flag = 0;
    int members[2] = {0, 1};
    float d[8];
    for (int mode = 0; mode < 2; mode++) {
        /* mode 0: local links off this epoch; mode 1: on, but rank 1 has no local endpoint */
        assert_int_equal(sy_peer_set_local(p, mode ? loc_on : NULL, 2), 0);
        assert_int_equal(sy_peer_set_keys(p, keys, 2), 0);
        /* an epoch of its own per mode: a late message of the one before is dropped as old */
        uint64_t epoch = 4 + (uint64_t)mode;
        assert_int_equal(sy_peer_setup(p, epoch, 0, 2, eps, 1500, &abort_flag), 0);
        uint64_t before = sy_peer_forged(p);
        float junk[4] = {1e9f, 1e9f, 1e9f, 1e9f};
        forge(ctx, loc_on[0], epoch, 3, 2, (1u << 8) | 0, 0, 1, 1, junk, 16);
        /* a plain client at the CURVE TCP listener never gets a message in at all */
        forge(ctx, eps[0], epoch, 3, 2, (1u << 8) | 0, 0, 1, 1, junk, 16);
        memset(d, 0, sizeof d);
        int rc = sy_peer_allreduce(p, members, 2, 3, 1, d, 8, 0, 4096);
        assert_int_not_equal(rc, 0); /* rank 1 never really answers */
        assert_non_null(strstr(sy_lasterr(), "no data from rank 1"));
        assert_int_equal(sy_peer_forged(p), before + 1);
        for (int i = 0; i < 8; i++)
            assert_true(d[i] == 0.0f);
    }
    sy_peer_destroy(&p);
    sy_zap_destroy(&zap);
    zmq_ctx_term(ctx);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

/* A peer that never answers: the wait ends at the deadline with the rank named, and
 * the abort flag ends it sooner. */
static void test_dead_peer_deadline_and_abort(void **s) {
    world_t w;
    world_open(&w, 2, 500);
    int members[2] = {0, 1};
    float d[4] = {0};
    double t0 = sy_now();
    int rc = sy_peer_allreduce(w.peer[0], members, 2, 3, 1, d, 4, 0, 4096);
    double took = sy_now() - t0;
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(sy_lasterr(), "rank 1"));
    assert_true(took >= 0.45 && took < 3.0);
    world_close(&w);
    world_open(&w, 2, 60000);
    w.abort_flag = 1;
    t0 = sy_now();
    rc = sy_peer_allreduce(w.peer[0], members, 2, 3, 1, d, 4, 0, 4096);
    assert_int_equal(rc, SY_PEER_ABORTED);
    assert_true(sy_now() - t0 < 1.0);
    world_close(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allreduce_sizes),
        cmocka_unit_test(test_allreduce_bf16),
        cmocka_unit_test(test_allreduce_buffer_reusable),
        cmocka_unit_test(test_alltoall_uneven),
        cmocka_unit_test(test_alltoall_chunks),
        cmocka_unit_test(test_rejects_stale_and_misshapen),
        cmocka_unit_test(test_dead_peer_deadline_and_abort),
        cmocka_unit_test(test_rejects_bad_source),
        cmocka_unit_test(test_local_links),
        cmocka_unit_test(test_local_keyless_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
