/* optim.h: AdamW with fp32 master weights, the learning-rate schedule and global-norm
 * gradient clipping. Pure functions over caller-owned arrays laid out by sy_layout. */
#ifndef SY_OPTIM_H
#define SY_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "train_cfg.h"
#include "model.h"

/* Learning rate at step (0-based): linear warmup to lr over warmup_steps, then decay
 * (cosine or linear) to min_lr at the last step, steps - 1; or constant. */
float sy_lr_at(const sy_train_cfg *tc, int64_t step);

/* Sum of squares of a gradient array (double accumulation, in eight interleaved sums
 * added in a fixed order: the same bits for the same values). */
double sy_sumsq(const float *g, size_t n);

/* Multiplier that brings a gradient of global norm `norm` under `clip` (1 when clip <= 0
 * or the norm is already under it). */
float sy_clip_scale(double norm, float clip);

/* One AdamW update over every parameter in the layout: m, v are parameter-shaped arenas;
 * t is the 1-based update count; grads are multiplied by grad_scale first (clipping).
 * Weight decay (decoupled) only where sy_param.decay is set. */
void sy_adamw_step(const sy_layout *lay, float *params, const float *grads, float *m, float *v, int64_t t, float lr,
                   const sy_train_cfg *tc, float grad_scale);

#endif
