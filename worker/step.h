/* step.h: one distributed training step on a worker, independent of how bytes move:
 * the batch slice, forward and backward through the expert exchange, gradient
 * all-reduce (dense gradients over all replicas, expert gradients over the replicas of
 * each expert), global-norm clipping and AdamW, identically on every worker. */
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
typedef int (*sy_allreduce_fn)(void *comm, int group, float *data, size_t n, uint32_t tag);

typedef struct {
    double compute, alltoall, allreduce, optimizer; /* seconds */
} sy_step_times;

typedef struct {
    sy_losses loss;        /* this rank's share (already globally normalised: sum over ranks = global) */
    double grad_norm;
    float lr;
    sy_step_times t;
    int64_t tokens;        /* tokens computed here */
    double soft;           /* this rank's share of the distillation soft term (0 without a teacher) */
} sy_step_result;

/* Runs step `step` (0-based). batch: [nrows, T+1] scratch; lang: [nrows, T] language of
 * each input token, filled here (may be NULL); m, v: optimizer moments;
 * a2a_seconds: time the exchange spent in its transport during this step (the caller
 * reads it from the exchange; it is subtracted from compute). distill: a teacher for
 * these rows (train.distill_from), or NULL. */
int sy_step_run(sy_model *m, const sy_config *cfg, const sy_mesh *mesh, int rank, const sy_tokens *train,
                int32_t *batch, int16_t *lang, float *mom, float *vel, int64_t step, sy_allreduce_fn allreduce, void *comm,
                double (*a2a_seconds)(void *), void *a2a_ctx, sy_distill *distill, sy_step_result *out);

#endif
