/* peer.h: data messages between workers over plain ZeroMQ sockets, and the collectives
 * built on them: all-to-all with uneven sizes, ring all-reduce, barrier.
 *
 * Sockets: every worker binds one PULL socket (its data endpoint) and connects one PUSH
 * socket to each peer's endpoint. A PUSH blocks (never drops) when its queue is full;
 * one PULL per worker keeps the socket count linear. Every message is two frames: a
 * DataHeader (protobuf: epoch, step, op, tag, chunk, source, destination, dtype, bytes)
 * and the payload. The receiver checks every header field before it touches a payload:
 * a message of another epoch is dropped and logged, one for a step already done is
 * rejected and logged, one for a later step waits in a queue until its turn, and one
 * whose size is not what the operation expects fails the operation (never summed).
 * Every wait has a deadline (the peer timeout) and watches an abort flag. */
#ifndef SY_PEER_H
#define SY_PEER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sy_peer sy_peer;

#define SY_PEER_ABORTED (-2) /* an operation gave up because the abort flag was raised */

#include "curve.h"

/* Binds the PULL socket at bind_ep (e.g. "tcp://127.0.0.1:*"). NULL on failure. */
sy_peer *sy_peer_new(void *zctx, const char *bind_ep);
/* As sy_peer_new, with CURVE: the PULL socket is a CURVE server with certificate own in
 * ZAP domain "data" of zap (the handler of zctx), which accepts only the keys of the
 * current epoch's members (sy_peer_set_keys); every message must come with its claimed
 * source rank's key, or it is dropped and counted (sy_peer_forged). */
sy_peer *sy_peer_new_secure(void *zctx, const char *bind_ep, const sy_cert *own, sy_zap *zap);
/* The CURVE key of every rank of the next epoch (n = world; call before sy_peer_setup).
 * A no-op on an insecure peer. */
int sy_peer_set_keys(sy_peer *p, char *const *keys, size_t n);
/* ZMQ_MAXMSGSIZE of the data socket (for connections made afterwards). */
void sy_peer_set_limit(sy_peer *p, int64_t bytes);
/* Messages dropped because their key was not their claimed rank's. */
uint64_t sy_peer_forged(const sy_peer *p);
void sy_peer_destroy(sy_peer **p);
/* The endpoint peers should connect to (the bound port filled in). */
const char *sy_peer_endpoint(const sy_peer *p);

/* Also binds the PULL socket at ipc://path, without CURVE: for peers on the same machine
 * and of the same user (path's directory must be this user's, mode 0700, which is what
 * keeps others out). Once, after sy_peer_new*. */
int sy_peer_bind_local(sy_peer *p, const char *path);
/* "ipc://path" after sy_peer_bind_local, else "". */
const char *sy_peer_local_endpoint(const sy_peer *p);
/* Every rank's local endpoint ("" for none; n = world) for the next sy_peer_setup, or
 * NULL to use none. sy_peer_setup connects to rank r over its local endpoint, without
 * CURVE, when this peer has one too and r's is a socket of this user in a directory of
 * this user's that only it may enter; otherwise over TCP (and CURVE when secure). With
 * local endpoints set, a message that arrives without a key (which only the local
 * socket delivers) is taken as its claimed rank's when that rank has a local endpoint. */
int sy_peer_set_local(sy_peer *p, char *const *local_eps, int n);
/* Whether ep has the form of a local endpoint: "ipc:///" and a path of letters, digits
 * and / . _ - (no "." or ".." parts), shorter than cap bytes. Workers make only such
 * paths and the coordinator relays only such. */
int sy_peer_local_endpoint_ok(const char *ep, size_t cap);
/* 1 when this epoch's link to rank goes over its local endpoint. */
int sy_peer_is_local(const sy_peer *p, int rank);

/* Starts epoch `epoch` as `rank` of `world` with the peers' endpoints; (re)connects the
 * PUSH sockets and drops queued messages of older epochs. abort_flag: when it becomes
 * non-zero, a waiting operation returns SY_PEER_ABORTED. timeout_ms: the longest wait
 * for one message. */
int sy_peer_setup(sy_peer *p, uint64_t epoch, int rank, int world, char *const *endpoints, int timeout_ms,
                  const volatile int *abort_flag);

/* All-to-all among the ranks members[0..n) (this rank included): send[i] (send_bytes[i]
 * bytes, may be 0) goes to members[i]; on return recv[i] / recv_bytes[i] hold what
 * members[i] sent, valid until the next operation. */
int sy_peer_alltoall(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, void *const *send,
                     const size_t *send_bytes, const void **recv, size_t *recv_bytes);

/* An all-to-all in pieces, for a caller that overlaps it with its own work (the expert
 * exchange's pipeline): sy_peer_send_chunk queues `bytes` at data for rank dst as chunk
 * `chunk` of (step, tag) and returns at once (data may be reused); sy_peer_recv_chunk
 * waits for chunk `chunk` of (step, tag) from rank src, in any order of chunks and ranks
 * (others that arrive first are kept); *data stays valid until sy_peer_release or the
 * next collective. */
int sy_peer_send_chunk(sy_peer *p, int dst, int64_t step, uint32_t tag, uint32_t chunk, const void *data,
                       size_t bytes);
int sy_peer_recv_chunk(sy_peer *p, int src, int64_t step, uint32_t tag, uint32_t chunk, const void **data,
                       size_t *bytes);
void sy_peer_release(sy_peer *p);

/* Sum all-reduce in place of count floats among members[0..n) (ring: reduce-scatter
 * then all-gather, in chunks of chunk_bytes). bf16: chunks travel as bf16 (round to
 * nearest even) and are accumulated in fp32; every member ends with identical bits. */
int sy_peer_allreduce(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, float *data, size_t count,
                      int bf16, size_t chunk_bytes);

/* The same all-reduce restricted to floats [off, off+len) of the count at data: the ring's
 * segments are those of the whole array, so the part ends with exactly the bits
 * sy_peer_allreduce over all count floats would give it (whatever the other parts are).
 * Parts of one array reduced one after another, in any grouping, therefore equal one
 * whole all-reduce bit for bit. tag must differ between parts of one step. (Two ranks in
 * fp32 reduce the part as an array of its own: the sum of two floats does not depend on
 * the order, and both links work at once.) */
int sy_peer_allreduce_part(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag, float *data,
                           size_t count, size_t off, size_t len, int bf16, size_t chunk_bytes);

int sy_peer_barrier(sy_peer *p, const int *members, int n, int64_t step, uint32_t tag);

/* A second flag a waiting operation watches besides the abort flag (for an owner that
 * must call off its own operations, e.g. the overlap thread after a failed backward);
 * NULL for none. Survives sy_peer_setup. */
void sy_peer_set_cancel(sy_peer *p, const volatile int *cancel_flag);
/* Work for the waits: while a receive waits for its message, idle(ctx) is called again and
 * again as long as it returns non-zero (it did some work; 0: none left), between checks for
 * the message. NULL: none. Survives sy_peer_setup. */
void sy_peer_set_idle(sy_peer *p, int (*idle)(void *ctx), void *ctx);

/* Bytes of payload sent since the last reset. */
uint64_t sy_peer_bytes_sent(sy_peer *p, int reset);

#endif
