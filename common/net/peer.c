#include "peer.h"

#include <errno.h>
#include <malloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bf16.h"
#include "ctrl.h"
#include "curve.h"
#include "fsutil.h"
#include "sanitize.h"
#include "msgsize.h"
#include "log.h"
#include "trace.h"
#include "switchyard.pb-c.h"

enum { OP_A2A = 1, OP_ALLREDUCE = 2, OP_BARRIER = 3, OP_A2A_CHUNK = 4 };
enum { DT_BYTES = 0, DT_F32 = 1, DT_BF16 = 2 };
#define MAX_PENDING 65536

typedef struct {
    Switchyard__DataHeader *h;
    zmq_msg_t payload;
} pending_msg;

struct sy_peer {
    void *ctx;
    void *pull;
    char endpoint[256];
    void **push;          /* [world], NULL for self */
    int world, rank;
    uint64_t epoch;
    int timeout_ms;
    const volatile int *abort_flag;
    const volatile int *cancel_flag; /* a second reason to give up (the owner's), or NULL */
    pending_msg *pending;
    int n_pending, cap_pending;
    zmq_msg_t *held;      /* payloads handed out by the last all-to-all */
    int n_held, cap_held;
    zmq_msg_t **kept;     /* payloads handed out by sy_peer_recv_chunk (each its own allocation: a
                             small frame's bytes live inside its zmq_msg_t, which must not move) */
    int n_kept, cap_kept;
    uint8_t *scratch;     /* send conversion buffer */
    size_t scratch_cap;
    uint64_t bytes_sent;
    int *zc_refs;         /* 1 (this epoch's owner) + zero-copy payloads ZeroMQ still holds (atomic) */
    /* CURVE: this worker's certificate, the ZAP handler of its context, and the key
     * each rank of the current epoch must send with (a message whose key is not its
     * claimed source rank's is dropped and counted) */
    int secure;
    sy_cert own;
    sy_zap *zap;
    char (*keys)[SY_KEY_LEN + 1];
    int n_keys;
    uint64_t forged;
    sy_ratelog drop_log;
    /* the same PULL socket also bound at an ipc:// path (no CURVE there: only this user can
     * reach the private directory), and whether keyless messages (which only that path
     * delivers) are accepted in this epoch; local[r]: rank r is reached over its path */
    char local_endpoint[256];
    char (*local_eps)[256];
    int n_local_eps;
    unsigned char *local;
    int (*idle)(void *ctx); /* sy_peer_set_idle */
    void *idle_ctx;
};

/* ZeroMQ may release a zero-copy payload after the peer has moved to another epoch or
 * been destroyed, so the count lives in its own block, freed by whoever drops the last
 * reference. */
static int *zc_refs_new(void) {
    int *r = malloc(sizeof *r);
    if (r)
        *r = 1;
    return r;
}

static void zc_unref(int *refs) {
    if (refs && __atomic_sub_fetch(refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(refs);
}

static int gave_up(const sy_peer *p) {
    return (p->abort_flag && *p->abort_flag) || (p->cancel_flag && *p->cancel_flag);
}

sy_peer *sy_peer_new(void *zctx, const char *bind_ep) { return sy_peer_new_secure(zctx, bind_ep, NULL, NULL); }

sy_peer *sy_peer_new_secure(void *zctx, const char *bind_ep, const sy_cert *own, sy_zap *zap) {
    /* ZeroMQ allocates every received frame; with glibc's default, megabyte frames are
     * mmap'd and unmapped each time, and every page faults in again. Keep them on the
     * heap so freed frames are reused. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    sy_peer *p = calloc(1, sizeof *p);
    if (!p) {
        sy_seterr("peer: out of memory");
        return NULL;
    }
    p->ctx = zctx;
    p->drop_log = (sy_ratelog)SY_RATELOG_INIT(10.0, 5);
    if (!(p->zc_refs = zc_refs_new())) {
        free(p);
        sy_seterr("peer: out of memory");
        return NULL;
    }
    p->pull = zmq_socket(zctx, ZMQ_PULL);
    if (!p->pull)
        goto fail;
    if (own) {
        p->secure = 1;
        p->own = *own;
        p->zap = zap;
        /* a peer of the new epoch may knock before this worker has its assignment: hold it */
        if (!zap || sy_zap_set_keys(zap, "data", NULL, 0) || sy_zap_set_hold(zap, "data", 30000) ||
            sy_curve_server(p->pull, own, "data"))
            goto fail;
    }
    sy_sock_defaults(p->pull, 0);
    int buf = 4 << 20; /* kernel socket buffers sized for megabyte chunks */
    zmq_setsockopt(p->pull, ZMQ_RCVBUF, &buf, sizeof buf);
    /* a bounded queue (senders pace themselves by the protocol; a full queue blocks the
     * sender, never drops), and frames of at most 256 MiB until the run's own limit is
     * known (sy_peer_set_limit) */
    int hwm = 10000;
    zmq_setsockopt(p->pull, ZMQ_RCVHWM, &hwm, sizeof hwm);
    sy_limit_set(p->pull, (int64_t)256 << 20);
    if (zmq_bind(p->pull, bind_ep)) {
        sy_seterr("peer: cannot bind data socket at %s: %s", bind_ep, zmq_strerror(errno));
        goto fail;
    }
    size_t len = sizeof p->endpoint;
    zmq_getsockopt(p->pull, ZMQ_LAST_ENDPOINT, p->endpoint, &len);
    return p;
fail:
    if (p->pull && !sy_lasterr()[0])
        sy_seterr("peer: %s", zmq_strerror(errno));
    sy_peer_destroy(&p);
    return NULL;
}

static void release_held(sy_peer *p) {
    for (int i = 0; i < p->n_held; i++)
        zmq_msg_close(&p->held[i]);
    p->n_held = 0;
    for (int i = 0; i < p->n_kept; i++) {
        zmq_msg_close(p->kept[i]);
        free(p->kept[i]);
    }
    p->n_kept = 0;
}

static void close_push(sy_peer *p) {
    if (!p->push)
        return;
    /* a rank that finishes first must still deliver its last messages: give them a
     * bounded second to leave (LINGER 0 would drop them, the default would wait forever) */
    int linger = 1000;
    for (int r = 0; r < p->world; r++)
        if (p->push[r]) {
            zmq_setsockopt(p->push[r], ZMQ_LINGER, &linger, sizeof linger);
            zmq_close(p->push[r]);
        }
    free(p->push);
    p->push = NULL;
}

static void drop_pending(sy_peer *p, int i) {
    switchyard__data_header__free_unpacked(p->pending[i].h, NULL);
    zmq_msg_close(&p->pending[i].payload);
    p->pending[i] = p->pending[--p->n_pending];
}

void sy_peer_destroy(sy_peer **pp) {
    sy_peer *p = pp ? *pp : NULL;
    if (!p)
        return;
    release_held(p);
    while (p->n_pending)
        drop_pending(p, p->n_pending - 1);
    close_push(p);
    if (p->pull)
        zmq_close(p->pull);
    free(p->pending);
    free(p->held);
    free(p->kept);
    free(p->scratch);
    free(p->keys);
    free(p->local_eps);
    free(p->local);
    zc_unref(p->zc_refs);
    free(p);
    *pp = NULL;
}

const char *sy_peer_endpoint(const sy_peer *p) { return p->endpoint; }

int sy_peer_bind_local(sy_peer *p, const char *path) {
    char ep[sizeof p->local_endpoint];
    /* a socket path must fit sockaddr_un's 108 bytes */
    if (!path || path[0] != '/' || strlen(path) > 100) {
        sy_seterr("peer: local socket path '%s' is not absolute or longer than 100 bytes", path ? path : "");
        return -1;
    }
    snprintf(ep, sizeof ep, "ipc://%s", path);
    /* ZeroMQ copies a socket's options into each listener when it binds: the ipc listener
     * gets the NULL mechanism, the TCP one bound before keeps CURVE. With a ZAP domain set
     * ZeroMQ asks ZAP about NULL handshakes too, and this libzmq (4.3.4) refuses an empty
     * one (EINVAL): the handler admits NULL in domain "local" (SY_ZAP_LOCAL), which only
     * this listener has. */
    int zero = 0, rc;
    if (p->secure && (zmq_setsockopt(p->pull, ZMQ_CURVE_SERVER, &zero, sizeof zero) ||
                      zmq_setsockopt(p->pull, ZMQ_ZAP_DOMAIN, SY_ZAP_LOCAL, strlen(SY_ZAP_LOCAL)))) {
        sy_seterr("peer: local socket: %s", zmq_strerror(errno));
        return -1;
    }
    rc = zmq_bind(p->pull, ep);
    int err = errno;
    if (p->secure && sy_curve_server(p->pull, &p->own, "data")) {
        if (!rc)
            zmq_unbind(p->pull, ep); /* no listener this peer does not announce */
        return -1;
    }
    if (rc) {
        sy_seterr("peer: cannot bind the local data socket at %s: %s", ep, zmq_strerror(err));
        return -1;
    }
    snprintf(p->local_endpoint, sizeof p->local_endpoint, "%s", ep);
    return 0;
}

const char *sy_peer_local_endpoint(const sy_peer *p) { return p->local_endpoint; }

int sy_peer_local_endpoint_ok(const char *ep, size_t cap) {
    if (!ep || strncmp(ep, "ipc:///", 7) || strlen(ep) >= cap)
        return 0;
    for (const char *s = ep + 6; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("/._-", *s)))
            return 0;
    return !strstr(ep, "/../") && !strstr(ep, "/./");
}

/* Whether ep is another worker's local endpoint this process can use: an ipc:// socket
 * of this user's in a private directory whose parent is private too (what the worker
 * makes: BASE/switchyard-UID/XXXXXX). The parent matters: a directory of a worker that
 * has exited could otherwise be made again by anyone who may write to BASE, and ZeroMQ
 * reconnects to the same path. A peer on another machine, in another container or of
 * another user fails this, and is reached over TCP. */
static int local_usable(const char *ep) {
    if (!sy_peer_local_endpoint_ok(ep, 256))
        return 0;
    struct stat s;
    if (lstat(ep + 6, &s) || !S_ISSOCK(s.st_mode) || s.st_uid != geteuid())
        return 0;
    /* the socket's directory, then its parent: the path cut at its last two slashes */
    char dir[256];
    snprintf(dir, sizeof dir, "%s", ep + 6);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            return 0;
        *slash = '\0';
        if (!sy_dir_private(dir))
            return 0;
    }
    return 1;
}

int sy_peer_set_local(sy_peer *p, char *const *local_eps, int n) {
    free(p->local_eps);
    p->local_eps = NULL;
    p->n_local_eps = 0;
    if (!local_eps || n <= 0)
        return 0;
    if (!(p->local_eps = calloc((size_t)n, sizeof *p->local_eps))) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        snprintf(p->local_eps[i], sizeof p->local_eps[i], "%s", local_eps[i] ? local_eps[i] : "");
    p->n_local_eps = n;
    return 0;
}

int sy_peer_is_local(const sy_peer *p, int rank) {
    return p->local && rank >= 0 && rank < p->world && rank != p->rank && p->local[rank];
}

int sy_peer_set_keys(sy_peer *p, char *const *keys, size_t n) {
    if (!p->secure)
        return 0;
    if (n == 0) {
        sy_seterr("peer: the assignment names no CURVE keys (is the coordinator running --insecure?)");
        return -1;
    }
    char(*k)[SY_KEY_LEN + 1] = calloc(n, sizeof *k);
    if (!k) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!sy_key_valid(keys[i])) {
            free(k);
            sy_seterr("peer: the assignment's key for rank %zu is not a CURVE key", i);
            return -1;
        }
        memcpy(k[i], keys[i], SY_KEY_LEN + 1);
    }
    free(p->keys);
    p->keys = k;
    p->n_keys = (int)n;
    return sy_zap_set_keys(p->zap, "data", (const char(*)[SY_KEY_LEN + 1])k, (int)n);
}

uint64_t sy_peer_forged(const sy_peer *p) { return p->forged; }

void sy_peer_set_limit(sy_peer *p, int64_t bytes) { sy_limit_set(p->pull, bytes); }

int sy_peer_setup(sy_peer *p, uint64_t epoch, int rank, int world, char *const *endpoints, int timeout_ms,
                  const volatile int *abort_flag) {
    close_push(p);
    /* payloads of the epoch before may still be queued to a dead peer: no wait counts them */
    int *refs = zc_refs_new();
    if (!refs) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    zc_unref(p->zc_refs);
    p->zc_refs = refs;
    release_held(p);
    for (int i = p->n_pending - 1; i >= 0; i--)
        if (p->pending[i].h->epoch < epoch)
            drop_pending(p, i);
    free(p->local); /* before world changes: it has world entries */
    p->local = NULL;
    p->epoch = epoch;
    p->rank = rank;
    p->world = world;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    p->abort_flag = abort_flag;
    if (p->secure && p->n_keys != world) {
        sy_seterr("peer: %d CURVE keys for a world of %d", p->n_keys, world);
        return -1;
    }
    p->local = calloc((size_t)world, 1);
    p->push = calloc((size_t)world, sizeof(void *));
    if (!p->push || !p->local) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    for (int r = 0; r < world; r++) {
        if (r == rank)
            continue;
        p->push[r] = zmq_socket(p->ctx, ZMQ_PUSH);
        if (!p->push[r]) {
            sy_seterr("peer: socket: %s", zmq_strerror(errno));
            return -1;
        }
        sy_sock_defaults(p->push[r], 0);
        int hwm = 0, buf = 4 << 20;
        zmq_setsockopt(p->push[r], ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(p->push[r], ZMQ_SNDBUF, &buf, sizeof buf);
        const char *ep = endpoints[r];
        /* local only when the table carries this peer's own local endpoint as it is: then
         * r has it too and takes keyless messages from this rank (the rule in recv_msg) */
        if (p->n_local_eps == world && p->local_endpoint[0] && !strcmp(p->local_eps[rank], p->local_endpoint) &&
            local_usable(p->local_eps[r])) {
            ep = p->local_eps[r]; /* same machine and user: no CURVE needed or wanted */
            p->local[r] = 1;
        } else if (p->secure && sy_curve_client(p->push[r], &p->own, p->keys[r])) {
            return -1;
        }
        if (zmq_connect(p->push[r], ep)) {
            sy_seterr("peer: cannot connect to rank %d at %s: %s", r, ep, zmq_strerror(errno));
            return -1;
        }
    }
    return 0;
}

void sy_peer_set_cancel(sy_peer *p, const volatile int *cancel_flag) { p->cancel_flag = cancel_flag; }

void sy_peer_set_idle(sy_peer *p, int (*idle)(void *ctx), void *ctx) {
    p->idle = idle;
    p->idle_ctx = ctx;
}

uint64_t sy_peer_bytes_sent(sy_peer *p, int reset) {
    uint64_t b = p->bytes_sent;
    if (reset)
        p->bytes_sent = 0;
    return b;
}

/* ---------------------------------------------------------------- messages */

/* ZeroMQ is done with a zero-copy payload (it has gone to the socket, or was dropped). */
static void zc_released(void *data, void *hint) {
    (void)data;
    zc_unref(hint);
}

/* Waits until ZeroMQ has released every zero-copy payload, so the caller may change or
 * free the buffers they came from. Bounded by the data timeout and the abort flag. */
static int wait_zero_copy(sy_peer *p) {
    double t0 = sy_now(), deadline = t0 + p->timeout_ms / 1000.0;
    int left, waited = 0;
    while ((left = __atomic_load_n(p->zc_refs, __ATOMIC_ACQUIRE) - 1) > 0) {
        waited = 1;
        if (gave_up(p)) {
            sy_seterr("peer: aborted while sent buffers were still queued");
            return SY_PEER_ABORTED;
        }
        if (sy_now() > deadline) {
            sy_seterr("peer: %d sent buffer%s still queued after %.1f s", left, left == 1 ? "" : "s",
                      p->timeout_ms / 1000.0);
            return -1;
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    if (waited)
        sy_trace_span("wait: sent buffers", t0, sy_now(), NULL);
    return 0;
}

/* zero_copy: the payload is handed to ZeroMQ without a copy; the bytes must stay
 * unchanged until ZeroMQ releases them. Within the ring all-reduce the data dependencies
 * see to that (a rank only overwrites a segment it sent after receiving something the
 * peer could only send once it had that segment); at its end, wait_zero_copy does (the
 * last segments may still be queued when the caller goes on and reuses its buffer). */
static int send_msg_zc(sy_peer *p, int dst, int64_t step, int op, uint32_t tag, uint32_t chunk, int dtype,
                       const void *data, size_t bytes, int zero_copy);

static int send_msg(sy_peer *p, int dst, int64_t step, int op, uint32_t tag, uint32_t chunk, int dtype,
                    const void *data, size_t bytes) {
    return send_msg_zc(p, dst, step, op, tag, chunk, dtype, data, bytes, 0);
}

static int send_msg_zc(sy_peer *p, int dst, int64_t step, int op, uint32_t tag, uint32_t chunk, int dtype,
                       const void *data, size_t bytes, int zero_copy) {
    Switchyard__DataHeader h = SWITCHYARD__DATA_HEADER__INIT;
    h.epoch = p->epoch;
    h.step = step;
    h.op = (uint32_t)op;
    h.tag = tag;
    h.chunk = chunk;
    h.src = (uint32_t)p->rank;
    h.dst = (uint32_t)dst;
    h.dtype = (uint32_t)dtype;
    h.bytes = bytes;
    uint8_t hb[128];
    size_t hn = switchyard__data_header__pack(&h, hb);
    void *s = p->push[dst];
    double t0 = sy_now();
    int rc = zmq_send(s, hb, hn, ZMQ_SNDMORE) < 0;
    if (!rc && zero_copy && bytes > 0) {
        zmq_msg_t m;
        __atomic_add_fetch(p->zc_refs, 1, __ATOMIC_RELAXED);
        zmq_msg_init_data(&m, (void *)data, bytes, zc_released, p->zc_refs);
        rc = zmq_msg_send(&m, s, 0) < 0;
        if (rc)
            zmq_msg_close(&m);
    } else if (!rc) {
        rc = zmq_send(s, data, bytes, 0) < 0;
    }
    if (rc) {
        sy_seterr("peer: send to rank %d failed: %s", dst, zmq_strerror(errno));
        return -1;
    }
    p->bytes_sent += bytes;
    if (sy_trace_on())
        sy_trace_span("send", t0, sy_now(),
                      "\"epoch\":%" PRIu64 ",\"step\":%" PRId64
                      ",\"op\":%d,\"tag\":%u,\"chunk\":%u,\"src\":%d,\"dst\":%d,\"bytes\":%zu",
                      p->epoch, step, op, tag, chunk, p->rank, dst, bytes);
    return 0;
}

static int header_matches(const Switchyard__DataHeader *h, int src, int64_t step, int op, uint32_t tag,
                          uint32_t chunk) {
    return (int)h->src == src && h->step == step && (int)h->op == op && h->tag == tag && h->chunk == chunk;
}

/* Receives the message (src, step, op, tag, chunk) into *payload (caller closes it).
 * expect_bytes: SIZE_MAX = any. */
static int recv_msg(sy_peer *p, int src, int64_t step, int op, uint32_t tag, uint32_t chunk, int dtype,
                    size_t expect_bytes, zmq_msg_t *payload) {
    for (int i = 0; i < p->n_pending; i++) {
        if (!header_matches(p->pending[i].h, src, step, op, tag, chunk))
            continue;
        pending_msg m = p->pending[i];
        p->pending[i] = p->pending[--p->n_pending];
        int ok = (int)m.h->dtype == dtype && (expect_bytes == SIZE_MAX || m.h->bytes == expect_bytes) &&
                 zmq_msg_size(&m.payload) == m.h->bytes;
        if (!ok) {
            sy_seterr("peer: rank %d sent %" PRIu64 " bytes of dtype %u for step %" PRId64 " op %d tag %u, expected "
                      "%zu of dtype %d: rejected",
                      src, (uint64_t)m.h->bytes, m.h->dtype, step, op, tag, expect_bytes, dtype);
            switchyard__data_header__free_unpacked(m.h, NULL);
            zmq_msg_close(&m.payload);
            return -1;
        }
        switchyard__data_header__free_unpacked(m.h, NULL);
        *payload = m.payload;
        return 0;
    }
    double t_wait = sy_now(), deadline = t_wait + p->timeout_ms / 1000.0;
    for (;;) {
        if (gave_up(p)) {
            sy_seterr("peer: aborted while waiting for rank %d", src);
            return SY_PEER_ABORTED;
        }
        zmq_pollitem_t it = {p->pull, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, p->idle ? 0 : 50);
        if (rc == 0 && p->idle) { /* not here yet: the caller's work for the wait first */
            if (p->idle(p->idle_ctx))
                continue;
            rc = zmq_poll(&it, 1, 50);
        }
        if (rc < 0 && errno != EINTR) {
            sy_seterr("peer: poll: %s", zmq_strerror(errno));
            return -1;
        }
        if (rc <= 0) {
            if (sy_now() > deadline) {
                char q[256] = "";
                size_t o = 0;
                for (int i = 0; i < p->n_pending && i < 6 && o < sizeof q - 64; i++)
                    o += (size_t)snprintf(q + o, sizeof q - o, " [src %u step %" PRId64 " op %u tag %x chunk %u]",
                                          p->pending[i].h->src, (int64_t)p->pending[i].h->step, p->pending[i].h->op,
                                          p->pending[i].h->tag, p->pending[i].h->chunk);
                sy_seterr("peer: no data from rank %d within %.1f s (step %" PRId64 " op %d tag %x chunk %u; %d "
                          "queued:%s)",
                          src, p->timeout_ms / 1000.0, step, op, tag, chunk, p->n_pending, q);
                return -1;
            }
            continue;
        }
        zmq_msg_t hm;
        zmq_msg_init(&hm);
        if (zmq_msg_recv(&hm, p->pull, 0) < 0) {
            zmq_msg_close(&hm);
            continue;
        }
        int m = 0;
        size_t ml = sizeof m;
        zmq_getsockopt(p->pull, ZMQ_RCVMORE, &m, &ml);
        Switchyard__DataHeader *h = switchyard__data_header__unpack(NULL, zmq_msg_size(&hm), zmq_msg_data(&hm));
        char from[SY_KEY_LEN + 1];
        snprintf(from, sizeof from, "%s", sy_msg_key(&hm));
        zmq_msg_close(&hm);
        zmq_msg_t pl;
        zmq_msg_init(&pl);
        if (m)
            zmq_msg_recv(&pl, p->pull, 0);
        /* anything after the payload frame is not ours */
        for (;;) {
            zmq_getsockopt(p->pull, ZMQ_RCVMORE, &m, &ml);
            if (!m)
                break;
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, p->pull, 0);
            zmq_msg_close(&x);
        }
        if (!h) {
            sy_ratelog_warn(&p->drop_log, "peer: dropped a data message with an undecodable header");
            zmq_msg_close(&pl);
            continue;
        }
        if (h->epoch != p->epoch || h->dst != (uint32_t)p->rank || h->src >= (uint32_t)p->world) {
            sy_ratelog_warn(&p->drop_log, "peer: dropped a message from rank %u of epoch %" PRIu64 " for rank %u (this is rank %d, epoch "
                    "%" PRIu64 ")",
                    h->src, (uint64_t)h->epoch, h->dst, p->rank, p->epoch);
            switchyard__data_header__free_unpacked(h, NULL);
            zmq_msg_close(&pl);
            continue;
        }
        /* a message without a key came through the local (ipc) socket, which only this
         * user can reach: it counts as its claimed rank's when local links are on in this
         * epoch and that rank has a local socket too (so it may have seen this one's) */
        int via_local = !from[0] && p->n_local_eps == p->world && p->local_endpoint[0] &&
                        p->local_eps[h->src][0];
        if (p->secure && !via_local && strcmp(from, p->keys[h->src])) {
            p->forged++;
            sy_ratelog_warn(&p->drop_log,
                            "peer: dropped a message claiming to be rank %u sent with another key (%s); %llu so far",
                            h->src, sy_esc_str(0, from), (unsigned long long)p->forged);
            switchyard__data_header__free_unpacked(h, NULL);
            zmq_msg_close(&pl);
            continue;
        }
        if (h->step < step) {
            sy_ratelog_warn(&p->drop_log, "peer: rejected a message from rank %u for step %" PRId64 " (now at step %" PRId64 ")", h->src,
                    (int64_t)h->step, step);
            switchyard__data_header__free_unpacked(h, NULL);
            zmq_msg_close(&pl);
            continue;
        }
        if (header_matches(h, src, step, op, tag, chunk)) {
            int ok = (int)h->dtype == dtype && (expect_bytes == SIZE_MAX || h->bytes == expect_bytes) &&
                     zmq_msg_size(&pl) == h->bytes;
            if (!ok) {
                sy_seterr("peer: rank %d sent %" PRIu64 " bytes (frame %zu) of dtype %u for step %" PRId64
                          " op %d tag %u, expected %zu of dtype %d: rejected",
                          src, (uint64_t)h->bytes, zmq_msg_size(&pl), h->dtype, step, op, tag, expect_bytes, dtype);
                switchyard__data_header__free_unpacked(h, NULL);
                zmq_msg_close(&pl);
                return -1;
            }
            switchyard__data_header__free_unpacked(h, NULL);
            *payload = pl;
            if (sy_trace_on())
                sy_trace_span("recv", t_wait, sy_now(),
                              "\"epoch\":%" PRIu64 ",\"step\":%" PRId64
                              ",\"op\":%d,\"tag\":%u,\"chunk\":%u,\"src\":%d,\"dst\":%d",
                              p->epoch, step, op, tag, chunk, src, p->rank);
            return 0;
        }
        if (p->n_pending >= MAX_PENDING) {
            sy_seterr("peer: more than %d early messages queued: a peer runs ahead or misroutes", MAX_PENDING);
            switchyard__data_header__free_unpacked(h, NULL);
            zmq_msg_close(&pl);
            return -1;
        }
        if (p->n_pending == p->cap_pending) {
            int nc = p->cap_pending ? p->cap_pending * 2 : 64;
            pending_msg *np = realloc(p->pending, (size_t)nc * sizeof *np);
            if (!np) {
                sy_seterr("peer: out of memory");
                switchyard__data_header__free_unpacked(h, NULL);
                zmq_msg_close(&pl);
                return -1;
            }
            p->pending = np;
            p->cap_pending = nc;
        }
        p->pending[p->n_pending].h = h;
        p->pending[p->n_pending].payload = pl; /* zmq_msg_t may be moved: it was never copied with zmq_msg_copy */
        p->n_pending++;
    }
}

/* ---------------------------------------------------------------- collectives */

static int my_index(const sy_peer *p, const int *members, int n) {
    for (int i = 0; i < n; i++)
        if (members[i] == p->rank)
            return i;
    return -1;
}

int sy_peer_alltoall(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, void *const *send,
                     const size_t *send_bytes, const void **recv, size_t *recv_bytes) {
    release_held(p);
    int me = my_index(p, members, n);
    if (me < 0) {
        sy_seterr("peer: rank %d is not among the members of this all-to-all", p->rank);
        return -1;
    }
    /* shifted pairwise order: every send is posted before any wait */
    for (int k = 1; k < n; k++) {
        int i = (me + k) % n;
        if (send_msg(p, members[i], step, OP_A2A, tag, 0, DT_BYTES, send[i], send_bytes[i]))
            return -1;
    }
    recv[me] = send[me];
    recv_bytes[me] = send_bytes[me];
    /* reserve every slot first: a small frame's bytes live inside its zmq_msg_t, so the
     * array must not move once pointers into it are handed out */
    while (p->cap_held < n) {
        int nc = p->cap_held ? p->cap_held * 2 : 16;
        zmq_msg_t *nh = realloc(p->held, (size_t)nc * sizeof *nh);
        if (!nh) {
            sy_seterr("peer: out of memory");
            return -1;
        }
        p->held = nh;
        p->cap_held = nc;
    }
    for (int k = 1; k < n; k++) {
        int i = (me - k + n) % n;
        zmq_msg_t *slot = &p->held[p->n_held++];
        int rc = recv_msg(p, members[i], step, OP_A2A, tag, 0, DT_BYTES, SIZE_MAX, slot);
        if (rc) {
            p->n_held--;
            return rc;
        }
        recv[i] = zmq_msg_data(slot);
        recv_bytes[i] = zmq_msg_size(slot);
    }
    return 0;
}

int sy_peer_send_chunk(sy_peer *p, int dst, int64_t step, uint32_t tag, uint32_t chunk, const void *data,
                       size_t bytes) {
    if (dst < 0 || dst >= p->world || dst == p->rank) {
        sy_seterr("peer: chunk %u of tag %u for rank %d (this is rank %d of %d)", chunk, tag, dst, p->rank, p->world);
        return -1;
    }
    return send_msg(p, dst, step, OP_A2A_CHUNK, tag, chunk, DT_BYTES, data, bytes);
}

int sy_peer_recv_chunk(sy_peer *p, int src, int64_t step, uint32_t tag, uint32_t chunk, const void **data,
                       size_t *bytes) {
    if (src < 0 || src >= p->world || src == p->rank) {
        sy_seterr("peer: chunk %u of tag %u from rank %d (this is rank %d of %d)", chunk, tag, src, p->rank, p->world);
        return -1;
    }
    if (p->n_kept == p->cap_kept) {
        int nc = p->cap_kept ? p->cap_kept * 2 : 32;
        zmq_msg_t **nk = realloc(p->kept, (size_t)nc * sizeof *nk);
        if (!nk) {
            sy_seterr("peer: out of memory");
            return -1;
        }
        p->kept = nk;
        p->cap_kept = nc;
    }
    zmq_msg_t *slot = malloc(sizeof *slot);
    if (!slot) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    int rc = recv_msg(p, src, step, OP_A2A_CHUNK, tag, chunk, DT_BYTES, SIZE_MAX, slot);
    if (rc) {
        free(slot);
        return rc;
    }
    p->kept[p->n_kept++] = slot;
    *data = zmq_msg_data(slot);
    *bytes = zmq_msg_size(slot);
    return 0;
}

void sy_peer_release(sy_peer *p) { release_held(p); }

static int reserve_scratch(sy_peer *p, size_t bytes) {
    if (bytes <= p->scratch_cap)
        return 0;
    uint8_t *s = realloc(p->scratch, bytes);
    if (!s) {
        sy_seterr("peer: out of memory");
        return -1;
    }
    p->scratch = s;
    p->scratch_cap = bytes;
    return 0;
}

/* sends floats [off, off+len) of data to dst in chunks */
static int send_segment(sy_peer *p, int dst, int64_t step, uint32_t tag, const float *data, size_t len, int bf16,
                        size_t chunk_elems) {
    uint32_t c = 0;
    for (size_t o = 0; o < len || (len == 0 && c == 0); o += chunk_elems, c++) {
        size_t n = len - o < chunk_elems ? len - o : chunk_elems;
        if (len == 0)
            n = 0;
        int rc;
        if (bf16) {
            if (reserve_scratch(p, n * 2 + 2))
                return -1;
            sy_bf16_pack_n(p->scratch, data + o, n);
            rc = send_msg(p, dst, step, OP_ALLREDUCE, tag, c, DT_BF16, p->scratch, n * 2);
        } else {
            rc = send_msg_zc(p, dst, step, OP_ALLREDUCE, tag, c, DT_F32, data + o, n * 4, 1);
        }
        if (rc)
            return -1;
        if (len == 0)
            break;
    }
    return 0;
}

/* dst[i] += src[i]; src is a received frame (malloc'd, so float-aligned in practice;
 * an odd address takes the byte-wise path) */
static void add_f32(float *restrict dst, const void *src, size_t n) {
    if (((uintptr_t)src & 3) == 0) {
        const float *restrict s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] += s[i];
        return;
    }
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        float t;
        memcpy(&t, b + 4 * i, 4);
        dst[i] += t;
    }
}

/* receives a segment from src; add = 1 accumulates, 0 overwrites */
static int recv_segment(sy_peer *p, int src, int64_t step, uint32_t tag, float *data, size_t len, int bf16,
                        size_t chunk_elems, int add) {
    uint32_t c = 0;
    for (size_t o = 0; o < len || (len == 0 && c == 0); o += chunk_elems, c++) {
        size_t n = len - o < chunk_elems ? len - o : chunk_elems;
        if (len == 0)
            n = 0;
        zmq_msg_t m;
        int rc = recv_msg(p, src, step, OP_ALLREDUCE, tag, c, bf16 ? DT_BF16 : DT_F32, n * (bf16 ? 2 : 4), &m);
        if (rc)
            return rc;
        const void *src_bytes = zmq_msg_data(&m);
        if (bf16) {
            if (add)
                sy_bf16_accumulate_n(data + o, src_bytes, n);
            else
                sy_bf16_unpack_n(data + o, src_bytes, n);
        } else if (add) {
            add_f32(data + o, src_bytes, n);
        } else {
            memcpy(data + o, src_bytes, n * 4);
        }
        zmq_msg_close(&m);
        if (len == 0)
            break;
    }
    return 0;
}

int sy_peer_allreduce(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, float *data, size_t count,
                      int bf16, size_t chunk_bytes) {
    return sy_peer_allreduce_part(p, members, n, step, tag, data, count, 0, count, bf16, chunk_bytes);
}

int sy_peer_allreduce_part(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, float *data,
                           size_t count, size_t off, size_t len, int bf16, size_t chunk_bytes) {
    release_held(p);
    if (n <= 1)
        return 0;
    if (off > count || len > count - off) {
        sy_seterr("peer: all-reduce part [%zu, %zu) outside the %zu floats", off, off + len, count);
        return -1;
    }
    int me = my_index(p, members, n);
    if (me < 0) {
        sy_seterr("peer: rank %d is not among the members of this all-reduce", p->rank);
        return -1;
    }
    size_t chunk_elems = chunk_bytes / 4 > 0 ? chunk_bytes / 4 : 1;
    int next = members[(me + 1) % n], prev = members[(me - 1 + n) % n];
    /* Segment k of the ring is [k*count/n, (k+1)*count/n) of the WHOLE array, clipped to
     * the part: an element is summed in an order fixed by its segment alone, so a part
     * ends with the bits the whole all-reduce gives it. A part that misses a segment
     * sends nothing for it (both ends see that); the whole array keeps its empty message. */
    int whole = off == 0 && len == count;
    if (n == 2 && !bf16 && !whole) {
        /* Two ranks in fp32: each float is one addition, and a + b == b + a exactly, so
         * the part's own ring (both directions busy at once, half the time of a clipped
         * part that sits in one segment) gives the same bits. */
        data += off;
        count = len;
        off = 0;
        whole = 1;
    }
#define SEG_LO(k) ((size_t)(k) * count / (size_t)n)
#define CLIP_LO(k) (SEG_LO(k) > off ? SEG_LO(k) : off)
#define CLIP_HI(k) (SEG_LO((k) + 1) < off + len ? SEG_LO((k) + 1) : off + len)
#define SEG_OFF(k) CLIP_LO(k)
#define SEG_LEN(k) (CLIP_HI(k) > CLIP_LO(k) ? CLIP_HI(k) - CLIP_LO(k) : 0)
    /* reduce-scatter: after n-1 steps this rank holds the sum of segment (me+1) mod n */
    for (int s = 0; s < n - 1; s++) {
        int ks = ((me - s) % n + n) % n, kr = ((me - s - 1) % n + n) % n;
        uint32_t t = (tag << 8) | (uint32_t)s;
        int rc = 0;
        if (whole || SEG_LEN(ks))
            rc = send_segment(p, next, step, t, data + SEG_OFF(ks), SEG_LEN(ks), bf16, chunk_elems);
        if (!rc && (whole || SEG_LEN(kr)))
            rc = recv_segment(p, prev, step, t, data + SEG_OFF(kr), SEG_LEN(kr), bf16, chunk_elems, 1);
        if (rc)
            return rc;
    }
    int own = (me + 1) % n;
    if (bf16) { /* every rank must end with the bits the others receive */
        float *x = data + SEG_OFF(own);
        for (size_t i = 0; i < SEG_LEN(own); i++)
            x[i] = sy_bf16_round(x[i]);
    }
    /* all-gather */
    for (int s = 0; s < n - 1; s++) {
        int ks = ((me + 1 - s) % n + n) % n, kr = ((me - s) % n + n) % n;
        uint32_t t = (tag << 8) | (uint32_t)(0x80 + s);
        int rc = 0;
        if (whole || SEG_LEN(ks))
            rc = send_segment(p, next, step, t, data + SEG_OFF(ks), SEG_LEN(ks), bf16, chunk_elems);
        if (!rc && (whole || SEG_LEN(kr)))
            rc = recv_segment(p, prev, step, t, data + SEG_OFF(kr), SEG_LEN(kr), bf16, chunk_elems, 0);
        if (rc)
            return rc;
    }
#undef SEG_LO
#undef CLIP_LO
#undef CLIP_HI
#undef SEG_OFF
#undef SEG_LEN
    return wait_zero_copy(p);
}

int sy_peer_barrier(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag) {
    void *send[256];
    size_t sb[256], rb[256];
    const void *recv[256];
    if (n > 256) {
        sy_seterr("peer: barrier over more than 256 ranks");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        send[i] = "";
        sb[i] = 0;
    }
    return sy_peer_alltoall(p, members, n, step, tag | 0x80000000u, send, sb, recv, rb);
}
