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

/* The same all-to-all in chunks (sy_peer_send_chunk / sy_peer_recv_chunk to group index
 * q): send queues and returns at once (data may be reused), recv waits for one chunk (any
 * order; valid until release). With it the exchange runs as a pipeline, one expert at a
 * time: every rank sends its rows expert by expert, an owner runs expert j as soon as
 * expert j's rows from every source are in (while the later experts' rows still travel)
 * and sends its results back at once (while it runs expert j + 1). Every expert runs on
 * the same rows in the same order as with the whole all-to-all, so the results are the
 * same bits; only the waiting moves behind the compute. */
typedef struct {
    int (*send)(void *comm, uint32_t tag, uint32_t chunk, int q, const void *data, size_t bytes);
    int (*recv)(void *comm, uint32_t tag, uint32_t chunk, int q, const void **data, size_t *bytes);
    void (*release)(void *comm);
} sy_a2a_chunks;

/* rank: this worker's rank in mesh; experts: the local runner for the experts held
 * here; bf16: rows travel as bf16 (fp32 accumulation). */
sy_exchange *sy_exchange_new(const sy_model_cfg *cfg, const sy_mesh *mesh, int rank, sy_experts *experts,
                             sy_alltoall_fn a2a, void *comm, int bf16, int max_rows_in, int max_rows_out);
void sy_exchange_destroy(sy_exchange **x);
/* Gives the exchange the chunked transport (copied; comm as for sy_exchange_new) and says
 * whether the next layers use it (on) or the whole all-to-all (off; the default). */
void sy_exchange_set_chunks(sy_exchange *x, const sy_a2a_chunks *t);
void sy_exchange_pipeline(sy_exchange *x, int on);
/* Stand-ins for the pipelined exchange of the next steps (call after sy_exchange_pipeline,
 * every step, with the same buddy table on every rank of the group): buddy[q] is the
 * group index that keeps a replica of index q's experts, current every step (-1: none),
 * or NULL for no stand-ins. ready: this rank's replicas of its wards are at this step, so
 * it may run their experts. Then at each switch layer the ranks pick, from everyone's
 * counts, which holder of an expert runs it (see exchange.c); the results are the same
 * bits, and the weight gradients of an expert end up at whichever holder ran it
 * (sy_exchange_runners says which). */
void sy_exchange_standins(sy_exchange *x, const int *buddy, int ready);
/* [E]: the group index that ran expert e of switch layer `layer` in the last forward
 * (NULL for a layer that is not a switch layer). */
const int *sy_exchange_runners(const sy_exchange *x, int layer);
/* Rows of the wards' experts this rank ran since the last reset. */
uint64_t sy_exchange_standin_rows(sy_exchange *x, int reset);
/* The model-facing interface (ctx = the sy_exchange). */
sy_expert_exchange sy_exchange_interface(sy_exchange *x);
/* Seconds spent inside the all-to-all transport since the last reset, and bytes sent. */
void sy_exchange_stats(sy_exchange *x, double *a2a_seconds, uint64_t *bytes_sent, int reset);

#endif
