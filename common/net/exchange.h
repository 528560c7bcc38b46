/* exchange.h: the distributed expert exchange of a worker. At a switch layer the rows a
 * worker routed (packed expert-major) go to the owners of their experts in the worker's
 * data group (all-to-all dispatch), the owners run their experts on everything that
 * arrived (packed expert-major, then by source rank: the same order a single process
 * with one group per worker uses), and the outputs travel back (all-to-all combine).
 * Backward mirrors it. Plugs into the model as a sy_expert_exchange. */
#ifndef SY_EXCHANGE_H
#define SY_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "mesh.h"
#include "model.h"

/* The transport: an all-to-all among the P ranks of this worker's data group (index
 * p = 0..P-1 in the group). send[p] / send_bytes[p]: what goes to index p (may be 0
 * bytes); on return recv[p] / recv_bytes[p] hold what index p sent, valid until the next
 * call. `tag` names the layer and phase so stale or misrouted buffers are refused. */
typedef int (*sy_alltoall_fn)(void *comm, uint32_t tag, void *const *send, const size_t *send_bytes,
                              const void **recv, size_t *recv_bytes);

typedef struct sy_exchange sy_exchange;

/* rank: this worker's rank in mesh; experts: the local runner for the experts held
 * here; bf16: rows travel as bf16 (fp32 accumulation). */
sy_exchange *sy_exchange_new(const sy_model_cfg *cfg, const sy_mesh *mesh, int rank, sy_experts *experts,
                             sy_alltoall_fn a2a, void *comm, int bf16, int max_rows_in, int max_rows_out);
void sy_exchange_destroy(sy_exchange **x);
/* The model-facing interface (ctx = the sy_exchange). */
sy_expert_exchange sy_exchange_interface(sy_exchange *x);
/* Seconds spent inside the all-to-all transport since the last reset, and bytes sent. */
void sy_exchange_stats(sy_exchange *x, double *a2a_seconds, uint64_t *bytes_sent, int reset);

#endif
