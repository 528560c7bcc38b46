/* replica.h: buddy replicas of expert state on a worker (issue 14). Every rank's experts
 * (parameters and both AdamW moments) are kept by its owner and by one other rank, its
 * buddy (the coordinator picks it: a neighbour in rank order, on another host where the
 * mesh has one, so that a dead rank's experts and rows merge with the buddy's into
 * contiguous ranges). Dense parameters need no replica: every rank holds them (they are
 * data-parallel over all ranks in every mesh).
 *
 * How a replica stays current, exactly:
 * - at the first step of an epoch (and every replica_every steps when that is > 1) the
 *   owner sends a full copy of its experts' parameters and moments (sy_replica_sync);
 * - with replica_every 1, every step the owner sends its experts' (reduced) gradients
 *   (sy_replica_send_grads; or layer by layer, sy_replica_grads_layer, on the worker's
 *   overlap thread during the backward) before it reports the step, and when the step commits the
 *   buddy applies the same AdamW update with the same learning rate, clip scale and
 *   update count (sy_replica_commit). AdamW is elementwise, so the replica stays equal
 *   to the owner's state bit for bit, at a third of the bytes of a full copy.
 * Payloads always travel as fp32 (never the bf16 wire format): a replica must be exact.
 *
 * The module knows nothing of sockets: the caller passes an all-to-all over ranks
 * 0..world-1 (every rank calls each operation, sending to its buddy only). */
#ifndef SY_REPLICA_H
#define SY_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "mesh.h"
#include "model.h"
#include "model_io.h"

/* All-to-all over every rank 0..world-1: send[i] (send_bytes[i]) to rank i; recv[i]
 * valid until the next call. */
typedef int (*sy_replica_a2a_fn)(void *ctx, uint32_t tag, int64_t step, void *const *send, const size_t *send_bytes,
                                 const void **recv, size_t *recv_bytes);

typedef struct sy_replica sy_replica;

/* The replicas rank `rank` keeps in mesh m (one data group) with buddy[world] (-1: none).
 * own: this rank's layout (dense parameters first, then its experts). NULL on failure. */
sy_replica *sy_replica_new(const sy_model_cfg *mc, const sy_mesh *m, int rank, const int *buddy,
                           const sy_layout *own, sy_replica_a2a_fn a2a, void *ctx);
void sy_replica_destroy(sy_replica **r);

/* Sends a full copy of this rank's experts (the expert part of params, m, v: state at
 * step `step`) to its buddy, receives its wards'. */
int sy_replica_sync(sy_replica *r, int64_t step, const float *params, const float *m, const float *v);
/* Sends this rank's expert gradients of step `step` to its buddy; receives its wards'
 * (kept pending until commit). */
int sy_replica_send_grads(sy_replica *r, int64_t step, const float *grads);
/* The same per switch layer, off the critical path (worker: on the overlap thread as
 * soon as the backward has made that layer's expert gradients final): sends this rank's
 * expert gradients of `layer` (grads: the whole parameter-shaped arena) of step `step`
 * to its buddy through a2a/ctx (another transport than the replica's own: the thread's
 * sockets) and receives its wards' of that layer. Every rank calls it for the same
 * layers in the same order. Once every switch layer went, sy_replica_grads_done(step)
 * makes them pending as sy_replica_send_grads would (the bits are the same: the layers
 * are copied, not summed).
 * runners: [E] the rank that ran each expert of the layer (sy_exchange_runners, with
 * stand-ins), or NULL (its owner). An expert's gradients go from the holder that ran
 * it to its other holder: an owner's own experts its buddy ran come back into grads, and
 * the wards' experts this rank ran (their gradients in the replica, sy_replica_expert)
 * go to the ward. */
int sy_replica_grads_layer(sy_replica *r, int64_t step, int layer, float *grads, const int *runners,
                           sy_replica_a2a_fn a2a, void *ctx);
/* -1 naming the layer and ward when some ward's gradients of step `step` did not all
 * arrive (nothing is pending then). */
int sy_replica_grads_done(sy_replica *r, int64_t step);
/* Step `step` committed everywhere: applies the pending gradients of that step to every
 * ward whose state is at `step` (AdamW update count step + 1). Others are left as they
 * are (stale). Pending gradients are dropped either way. */
void sy_replica_commit(sy_replica *r, int64_t step, float lr, float clip_scale, const sy_train_cfg *tc);
/* Drops pending gradients (the step was abandoned). */
void sy_replica_drop_pending(sy_replica *r);

/* The replica of canonical parameter `name` in arena `which` held here, with the step its
 * state is at in *at (-1: never received); NULL when no ward holds that parameter. */
const float *sy_replica_find(const sy_replica *r, sy_arena which, const char *name, size_t numel, int64_t *at);

/* Fills the parameter-shaped arenas np, nm, nv of layout `nl` (a re-homed rank) from
 * what this worker holds: its own arenas op, om, ov of layout `ol`, else the replica `r`
 * (which must be at step `step`). -1 naming the first tensor held nowhere here. */
int sy_replica_rehome(const sy_layout *nl, float *np, float *nm, float *nv, const sy_layout *ol, const float *op,
                      const float *om, const float *ov, const sy_replica *r, int64_t step);

/* Payload bytes sent since the last reset; bytes of replica state held here. */
uint64_t sy_replica_bytes_sent(sy_replica *r, int reset);
size_t sy_replica_memory(const sy_replica *r);
int sy_replica_wards(const sy_replica *r);
/* 1 when this rank keeps wards and every one's state is at step `step` (their experts
 * may run here in that step: stand-ins, exchange.h). */
int sy_replica_current(const sy_replica *r, int64_t step);
/* The replica's weights and gradients of ward expert e of switch layer `layer`; -1 when
 * no ward here holds it. The pointers stay valid while the replica lives. */
int sy_replica_expert(sy_replica *r, int layer, int e, float **w1, float **w2, float **g1, float **g2);

#endif
