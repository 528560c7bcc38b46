/* model_io.h: the model's state in a checkpoint, by canonical parameter name. Parameters
 * are stored as NAME, AdamW moments as adam.m/NAME and adam.v/NAME. Because names, not
 * workers, address tensors, a state saved by any mesh loads into any other. */
#ifndef SY_MODEL_IO_H
#define SY_MODEL_IO_H

#include <stdint.h>

#include "checkpoint.h"
#include "model.h"

/* Adds every parameter held in `lay` from the arenas (m, v may be NULL: weights only). */
int sy_model_io_save(sy_ckpt_writer *w, const sy_layout *lay, const float *params, const float *m, const float *v);

/* Loads every parameter held in `lay` from the checkpoint (m, v may be NULL); a missing
 * tensor or a shape that differs from the layout is an error naming the tensor. When
 * the checkpoint has no moments and m, v are given, they are zeroed and *had_moments = 0. */
int sy_model_io_load(const sy_ckpt *ck, const sy_layout *lay, float *params, float *m, float *v, int *had_moments);

#endif
