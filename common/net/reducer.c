#define _GNU_SOURCE /* pthread_setname_np */
#include "reducer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "trace.h"
#include "peer.h"

#define MAX_PARTS 1024

typedef struct {
    sy_reducer_job_fn fn; /* a job (sy_reducer_call), or NULL: an all-reduce part */
    void *arg;
    const int *members;
    int n;
    int64_t step;
    uint32_t tag;
    float *data;
    size_t count, off, len;
    int bf16;
    size_t chunk_bytes;
    sy_reducer_job_fn then[2]; /* sy_reducer_then: run after it, in this order, without a place of their own */
    void *then_arg[2];
} part;

struct sy_reducer {
    sy_peer *peer;          /* used by the thread while parts are queued, else by the caller */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    part q[MAX_PARTS];
    int head, tail;         /* q[head..tail) still to do (indices mod MAX_PARTS, tail - head <= MAX_PARTS) */
    int busy;               /* the thread is running a part */
    int quit;
    int rc;                 /* first failure since the last wait */
    char err[1024];
    volatile int cancel;    /* the peer watches it */
};

static void *run(void *arg) {
    sy_trace_thread("overlap");
    sy_reducer *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->quit && r->head == r->tail)
            pthread_cond_wait(&r->work, &r->mu);
        if (r->quit)
            break;
        part j = r->q[r->head % MAX_PARTS];
        int skip = r->rc != 0 || r->cancel;
        r->busy = 1;
        pthread_mutex_unlock(&r->mu);
        int rc = skip    ? 0
                 : j.fn ? j.fn(j.arg, r->peer)
                        : sy_peer_allreduce_part(r->peer, j.members, j.n, j.step, j.tag, j.data, j.count, j.off, j.len,
                                                 j.bf16, j.chunk_bytes);
        for (int k = 0; k < 2 && !skip && !rc && j.then[k]; k++)
            rc = j.then[k](j.then_arg[k], r->peer);
        pthread_mutex_lock(&r->mu);
        if (rc && !r->rc) {
            r->rc = rc;
            snprintf(r->err, sizeof r->err, "%s", sy_lasterr());
        }
        r->head++;
        r->busy = 0;
        if (r->head == r->tail)
            pthread_cond_broadcast(&r->idle);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

sy_reducer *sy_reducer_new(void *zctx, const char *bind_ep) { return sy_reducer_new_secure(zctx, bind_ep, NULL, NULL); }

sy_reducer *sy_reducer_new_secure(void *zctx, const char *bind_ep, const sy_cert *own, sy_zap *zap) {
    sy_reducer *r = calloc(1, sizeof *r);
    if (!r) {
        sy_seterr("reducer: out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->idle, NULL);
    if (!(r->peer = sy_peer_new_secure(zctx, bind_ep, own, zap)))
        goto fail;
    sy_peer_set_cancel(r->peer, &r->cancel);
    if (pthread_create(&r->thread, NULL, run, r)) {
        sy_seterr("reducer: cannot start the communication thread");
        goto fail;
    }
    pthread_setname_np(r->thread, "sy-comm"); /* named, for top -H and perf */
    r->started = 1;
    return r;
fail:
    sy_reducer_destroy(&r);
    return NULL;
}

void sy_reducer_destroy(sy_reducer **rp) {
    sy_reducer *r = rp ? *rp : NULL;
    if (!r)
        return;
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->cancel = 1;
        r->quit = 1;
        pthread_cond_broadcast(&r->work);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    sy_peer_destroy(&r->peer);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->idle);
    pthread_mutex_destroy(&r->mu);
    free(r);
    *rp = NULL;
}

const char *sy_reducer_endpoint(const sy_reducer *r) { return sy_peer_endpoint(r->peer); }

int sy_reducer_bind_local(sy_reducer *r, const char *path) {
    pthread_mutex_lock(&r->mu);
    int rc = sy_peer_bind_local(r->peer, path);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

const char *sy_reducer_local_endpoint(const sy_reducer *r) { return sy_peer_local_endpoint(r->peer); }

int sy_reducer_setup(sy_reducer *r, uint64_t epoch, int rank, int world, char *const *endpoints,
                     char *const *local_eps, int timeout_ms, const volatile int *abort_flag) {
    /* the lock orders the thread's last use of the sockets before this one (ZeroMQ lets
     * a socket change threads across a full memory barrier) */
    pthread_mutex_lock(&r->mu);
    int rc;
    if (r->head != r->tail || r->busy) {
        sy_seterr("reducer: setup while parts are still queued");
        rc = -1;
    } else {
        rc = sy_peer_set_local(r->peer, local_eps, local_eps ? world : 0) ||
             sy_peer_setup(r->peer, epoch, rank, world, endpoints, timeout_ms, abort_flag);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int enqueue(sy_reducer *r, const part *j) {
    pthread_mutex_lock(&r->mu);
    if (r->tail - r->head >= MAX_PARTS) {
        pthread_mutex_unlock(&r->mu);
        sy_seterr("reducer: more than %d parts queued", MAX_PARTS);
        return -1;
    }
    r->q[r->tail % MAX_PARTS] = *j;
    r->tail++;
    pthread_cond_signal(&r->work);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int sy_reducer_start(sy_reducer *r, const int *members, int n, int64_t step, uint32_t tag, float *data, size_t count,
                     size_t off, size_t len, int bf16, size_t chunk_bytes) {
    return enqueue(r, &(part){.members = members,
                              .n = n,
                              .step = step,
                              .tag = tag,
                              .data = data,
                              .count = count,
                              .off = off,
                              .len = len,
                              .bf16 = bf16,
                              .chunk_bytes = chunk_bytes});
}

int sy_reducer_call(sy_reducer *r, sy_reducer_job_fn fn, void *arg) {
    return enqueue(r, &(part){.fn = fn, .arg = arg});
}

int sy_reducer_then(sy_reducer *r, sy_reducer_job_fn fn, void *arg) {
    pthread_mutex_lock(&r->mu);
    /* the last queued item, if the thread has not taken it yet (it copies an item when
     * it starts it) and it has room for one more */
    int last = r->tail - 1;
    if (last >= r->head && !(last == r->head && r->busy)) {
        part *p = &r->q[last % MAX_PARTS];
        for (int k = 0; k < 2; k++)
            if (!p->then[k]) {
                p->then[k] = fn;
                p->then_arg[k] = arg;
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
    }
    pthread_mutex_unlock(&r->mu);
    return sy_reducer_call(r, fn, arg);
}

static int drain(sy_reducer *r) {
    while (r->head != r->tail)
        pthread_cond_wait(&r->idle, &r->mu);
    int rc = r->rc;
    r->rc = 0;
    r->cancel = 0;
    /* indices stay small */
    r->head = r->tail = 0;
    return rc;
}

int sy_reducer_wait(sy_reducer *r) {
    pthread_mutex_lock(&r->mu);
    int rc = drain(r);
    if (rc)
        sy_seterr("%s", r->err);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int sy_reducer_set_keys(sy_reducer *r, char *const *keys, size_t n, int64_t limit_bytes) {
    pthread_mutex_lock(&r->mu);
    r->cancel = 1;
    drain(r);
    sy_peer_set_limit(r->peer, limit_bytes);
    int rc = sy_peer_set_keys(r->peer, keys, n);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void sy_reducer_cancel(sy_reducer *r) {
    pthread_mutex_lock(&r->mu);
    r->cancel = 1;
    drain(r);
    pthread_mutex_unlock(&r->mu);
}

uint64_t sy_reducer_bytes_sent(sy_reducer *r, int reset) {
    pthread_mutex_lock(&r->mu);
    uint64_t b = sy_peer_bytes_sent(r->peer, reset);
    pthread_mutex_unlock(&r->mu);
    return b;
}
