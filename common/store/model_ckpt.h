/* model_ckpt.h: the model's state in a checkpoint: model_io.h's canonical tensor names
 * (NAME, adam.m/NAME, adam.v/NAME) over a checkpoint writer or reader. */
#ifndef SY_MODEL_CKPT_H
#define SY_MODEL_CKPT_H

#include "checkpoint.h"
#include "model_io.h"

/* Adds every parameter held in `lay` from the arenas (m, v may be NULL: weights only). */
int sy_model_io_save(sy_ckpt_writer *w, const sy_layout *lay, const float *params, const float *m, const float *v);

/* Loads every parameter held in `lay` from the checkpoint (m, v may be NULL); a missing
 * tensor or a shape that differs from the layout is an error naming the tensor. When
 * the checkpoint has no moments and m, v are given, they are zeroed and *had_moments = 0. */
int sy_model_io_load(const sy_ckpt *ck, const sy_layout *lay, float *params, float *m, float *v, int *had_moments);

#endif
