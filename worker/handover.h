/* handover.h: state moving to a grown mesh (a worker joined at a step boundary, issue 14
 * item 3). Ranks 0..prev_world-1 of the new mesh are the previous mesh's ranks (they kept
 * their state); the others join with nothing. Every rank gets the tensors its new share
 * adds (and a joiner the dense parameters) from the rank that held them: experts from
 * their previous owner, dense tensors from rank 0; parameters and both AdamW moments, in
 * fp32, in one all-to-all. No checkpoint is read, no step is lost, and the state is the
 * previous mesh's bit for bit. Knows nothing of sockets: the caller passes the
 * all-to-all over every rank of the new mesh. */
#ifndef SY_HANDOVER_H
#define SY_HANDOVER_H

#include <stdint.h>

#include "mesh.h"
#include "model.h"
#include "replica.h"

/* The previous mesh: prev_world ranks (one data group) holding experts
 * [prev_begin[o], prev_end[o]). */
typedef struct {
    int prev_world;
    const int *prev_begin, *prev_end;
} sy_handover_prev;

/* Fills this rank's new arenas (layout nl: np, nm, nv) in mesh `m`: from its own previous
 * arenas (layout ol: op, om, ov; ol NULL for a joiner) and from the other ranks. Every
 * rank calls it once. -1 with a message naming what did not arrive. */
int sy_handover(const sy_model_cfg *mc, const sy_mesh *m, int rank, const sy_handover_prev *prev, const sy_layout *ol,
                const float *op, const float *om, const float *ov, const sy_layout *nl, float *np, float *nm, float *nv,
                sy_replica_a2a_fn a2a, void *ctx, int64_t step);

#endif
