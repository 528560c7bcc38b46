/* reducer.h: gradient all-reduces on a communication thread, so a layer's gradients
 * travel while the backward of the layers before it still runs (issue 15).
 *
 * ZeroMQ sockets belong to one thread, and the worker's main thread keeps using its own
 * peer sockets for the expert all-to-all during the backward. The reducer therefore owns
 * a second sy_peer (its own PULL socket, bound at its own endpoint, and its own PUSH
 * sockets), used only by its thread; the main thread touches it only while the thread is
 * idle (setup), under the reducer's lock. The peers' reducer endpoints are not in the
 * peer table: the worker swaps them over the main peer once per epoch.
 *
 * A part is reduced with sy_peer_allreduce_part, so however the gradients are cut into
 * buckets, every float ends with the bits one whole sy_peer_allreduce gives it. */
#ifndef SY_REDUCER_H
#define SY_REDUCER_H

#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "peer.h"

typedef struct sy_reducer sy_reducer;

/* Binds the reducer's PULL socket at bind_ep (e.g. "tcp://127.0.0.1:*") and starts its
 * thread. NULL on failure. */
sy_reducer *sy_reducer_new(void *zctx, const char *bind_ep);
/* As sy_reducer_new, with CURVE (sy_peer_new_secure): the PULL socket is a CURVE server
 * with certificate own in the ZAP domain "data" of zap, like the worker's main data socket. */
sy_reducer *sy_reducer_new_secure(void *zctx, const char *bind_ep, const sy_cert *own, sy_zap *zap);
/* A new assignment: whatever is still queued is called off (it belongs to the old epoch),
 * then the CURVE keys of the next epoch's ranks (sy_peer_set_keys; a no-op when insecure)
 * and the frame limit (sy_peer_set_limit) are set. Before sy_reducer_setup. */
int sy_reducer_set_keys(sy_reducer *r, char *const *keys, size_t n, int64_t limit_bytes);
/* Calls off whatever is queued, stops the thread, closes the sockets. */
void sy_reducer_destroy(sy_reducer **r);
const char *sy_reducer_endpoint(const sy_reducer *r);

/* sy_peer_setup of the reducer's peer (endpoints: every rank's reducer endpoint;
 * local_eps: their local ones for sy_peer_set_local, or NULL). Only while idle (after
 * sy_reducer_wait). */
int sy_reducer_setup(sy_reducer *r, uint64_t epoch, int rank, int world, char *const *endpoints,
                     char *const *local_eps, int timeout_ms, const volatile int *abort_flag);
/* sy_peer_bind_local / sy_peer_local_endpoint of the reducer's peer (before any setup). */
int sy_reducer_bind_local(sy_reducer *r, const char *path);
const char *sy_reducer_local_endpoint(const sy_reducer *r);

/* Queues sy_peer_allreduce_part(members, step, tag, data, count, off, len, bf16,
 * chunk_bytes); members and data[off, off+len) must stay untouched until
 * sy_reducer_wait returns. Parts run one at a time in the order queued, so every rank
 * must queue the same parts in the same order. */
int sy_reducer_start(sy_reducer *r, const int *members, int n, int64_t step, uint32_t tag, float *data, size_t count,
                     size_t off, size_t len, int bf16, size_t chunk_bytes);

/* A job for the communication thread besides the all-reduce parts: fn(arg, peer) runs
 * there, on the reducer's peer (every rank's reducer endpoint), in the order of the queue
 * like a part, and counts as one for sy_reducer_wait and sy_reducer_cancel (skipped after
 * a failure or a cancel; a peer operation inside it gives up on a cancel). It returns 0,
 * or negative with a message (sy_seterr), which sy_reducer_wait then returns. It must be
 * done with whatever the peer handed out (received payloads) when it returns: the next
 * part reuses the peer. arg must stay valid until sy_reducer_wait returns; whatever fn
 * writes, the caller may read after sy_reducer_wait (the reducer's lock orders them). */
typedef int (*sy_reducer_job_fn)(void *arg, sy_peer *peer);
int sy_reducer_call(sy_reducer *r, sy_reducer_job_fn fn, void *arg);
/* The same job, but run right after the last item queued (part or job) when the thread has
 * not started that one yet, without a place of its own in the queue (which holds 1024);
 * else queued as sy_reducer_call does. Skipped when that item fails. */
int sy_reducer_then(sy_reducer *r, sy_reducer_job_fn fn, void *arg);

/* Waits until every queued part is done. 0, or the first failure's code
 * (SY_PEER_ABORTED when the abort flag was raised) with its message; parts queued after
 * a failure are skipped. The reducer is idle and ready again either way. */
int sy_reducer_wait(sy_reducer *r);

/* After a failure elsewhere in the step: makes the part in flight give up at once, skips
 * the queued ones, and waits for the thread to be idle. The caller's error message is
 * left alone. */
void sy_reducer_cancel(sy_reducer *r);

/* Bytes of payload the reducer's peer sent since the last reset. Only while idle. */
uint64_t sy_reducer_bytes_sent(sy_reducer *r, int reset);

#endif
