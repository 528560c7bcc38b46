/* step.h: THE training step, for one process (`switchyard train`, `bench`) and for a
 * worker of a distributed run alike: the batch slice, forward and backward (switch
 * layers reach the experts through the model's sy_expert_exchange), gradient all-reduce
 * (dense gradients over all replicas, expert gradients over the replicas of each
 * expert), global-norm clipping and AdamW, identically on every rank.
 *
 * The step reaches other ranks only through a sy_comm: a worker passes one over its peer
 * sockets, a single process the local one (a world of one: nothing to reduce). Because
 * the same code runs in both, a distributed step on W workers and one process with W
 * routing groups compute the same sums in the same way (DESIGN.md, the core test). */
#ifndef SY_STEP_H
#define SY_STEP_H

#include <stdint.h>

#include "config.h"
#include "data.h"
#include "distill.h"
#include "mesh.h"
#include "model.h"

/* Sum-all-reduce of n floats in place among `group` (0: every rank; 1: the replicas of
 * this rank's experts, i.e. ranks with the same expert index in every data group). */
typedef int (*sy_allreduce_fn)(void *ctx, int group, float *data, size_t n, uint32_t tag);

/* A job for the communication thread (sy_comm.part_call): fn gets the job back; the step
 * puts its own fields after it. */
typedef struct sy_comm_job {
    int (*fn)(struct sy_comm_job *job);
} sy_comm_job;

/* How a step reaches the other ranks (the expert all-to-all is the model's exchange). */
typedef struct {
    sy_allreduce_fn allreduce;
    void *ctx;
    /* seconds the expert exchange spent in its transport so far (subtracted from
     * compute), or NULL */
    double (*a2a_seconds)(void *a2a_ctx);
    void *a2a_ctx;
    /* The overlapped gradient all-reduce (wire.overlap), or NULLs. part_begin: called at
     * the start of every overlapped step, at the same point on every rank (it may set up
     * connections). part_start: queues the all-reduce of data[off, off+len) in `group` as
     * a part of one all-reduce of data[0, count): the part ends with the bits allreduce
     * over all count floats gives it; it runs while the caller goes on, and data[off,
     * off+len) is not touched until part_wait. part_wait: waits for every queued part (0
     * or the first failure). part_cancel: gives up the queued parts after a failure
     * elsewhere, leaving the caller's error message alone. All take ctx. */
    int (*part_begin)(void *ctx);
    int (*part_start)(void *ctx, int group, float *data, size_t count, size_t off, size_t len, uint32_t tag);
    int (*part_wait)(void *ctx);
    void (*part_cancel)(void *ctx);
    /* Or NULL. In an overlapped step, called at every stage of the backward (stages as
     * sy_pass.grads_final: 2l+1 when layer l's feed-forward half, its experts included,
     * is final) after that stage's parts were queued, so the caller can queue work of
     * its own on the same thread (part_wait waits for it, part_cancel calls it off). */
    int (*stage_final)(void *ctx, int stage);
    /* Or NULL. In an overlapped step, queues job->fn(job) on the same thread after what
     * is queued so far (part_wait waits for it, part_cancel calls it off); job stays
     * valid until part_wait. The step sums the squares of each bucket's gradients there
     * once it is reduced, while the data is still in cache, instead of all of them after. */
    int (*part_call)(void *ctx, struct sy_comm_job *job);
    /* Non-zero: while the expert exchange waits for a peer, the overlapped backward may
     * fill the wait with weight gradients it put off (sy_pass.defer); the caller's
     * transport then calls sy_model_backward_idle while it waits. */
    int fill_waits;
} sy_comm;

/* The communicator of a single process: a world of one rank, so every all-reduce is the
 * identity and nothing touches a socket. */
sy_comm sy_comm_local(void);

/* What a rank trains with. The caller owns every buffer. */
typedef struct {
    sy_model *model;
    const sy_config *cfg;
    const sy_mesh *mesh;   /* a single process: sy_mesh_plan(mesh, 1, E, B, NULL, ...) */
    int rank;
    int groups;            /* routing groups of this rank's rows: 1 on a worker, routing.groups in one process */
    float *mom, *vel;      /* AdamW moments, parameter-shaped */
    int32_t *batch;        /* [nrows, T+1] scratch */
    int16_t *lang;         /* [nrows, T] language of each input token, filled by the step; or NULL */
    sy_comm comm;
    sy_distill *distill;   /* a teacher for these rows (train.distill_from), or NULL */
} sy_stepper;

/* A single process's stepper: plans *mesh as one rank holding every row and expert
 * (free it with sy_mesh_free), routing.groups groups, the local communicator. */
int sy_stepper_local(sy_stepper *st, sy_mesh *mesh, sy_model *m, const sy_config *cfg, float *mom, float *vel,
                     int32_t *batch);

typedef struct {
    double compute, alltoall, allreduce, optimizer; /* seconds */
} sy_step_times;

typedef struct {
    sy_losses loss;        /* this rank's share (already globally normalised: sum over ranks = global) */
    double grad_norm;
    float lr;
    float clip_scale;      /* the multiplier clipping applies to every gradient (1: none) */
    sy_step_times t;
    int64_t tokens;        /* tokens computed here */
    double soft;           /* this rank's share of the distillation soft term (0 without a teacher) */
} sy_step_result;

/* Forward, backward and the gradient all-reduce of one pass over the rows in st->batch
 * (already filled); tag_step numbers the collectives. Gradients are zeroed first. Fills
 * out->loss, tokens and the compute, all-to-all and all-reduce times.
 *
 * With wire.overlap and a communicator that has parts (a worker), a bucket of
 * gradients (whole half-layers, attention or feed-forward, at least wire.bucket_bytes; the last one
 * whatever is left) is
 * queued as soon as the backward has made it final (sy_pass.grads_final), so it travels
 * while the backward of the layers below runs; the step waits for the last bucket
 * before it returns. Buckets are parts of one all-reduce of the dense (and the expert)
 * gradients, so the gradients are bit for bit those of the serial all-reduce; the
 * all-reduce time is then what the step waited after the backward. */
int sy_step_grads(sy_stepper *st, const sy_pass *pass, int64_t tag_step, sy_step_result *out);

/* Runs training step `step` (0-based): draws this rank's rows from `train` (NULL: the
 * caller filled st->batch), sy_step_grads, the global gradient norm, clipping, AdamW. */
int sy_step_run(sy_stepper *st, const sy_tokens *train, int64_t step, sy_step_result *out);

/* sy_step_run in two halves, for a worker that commits a step only once every rank has
 * finished it (buddy replicas, coordinator/rehome.c): prepare is everything up to the
 * optimizer (fills lr, grad_norm and clip_scale; the gradients stay in the model);
 * commit is the AdamW update of those gradients (fills t.optimizer). Nothing changes
 * the parameters or moments until commit, so a step abandoned after prepare leaves the
 * state of the step before. prepare + commit == sy_step_run, bit for bit. */
int sy_step_prepare(sy_stepper *st, const sy_tokens *train, int64_t step, sy_step_result *out);
void sy_step_commit(sy_stepper *st, int64_t step, sy_step_result *res);

#endif
