/* model_io.h: the model's state in a checkpoint, by canonical parameter name. Parameters
 * are stored as NAME, AdamW moments as adam.m/NAME and adam.v/NAME. Because names, not
 * workers, address tensors, a state saved by any mesh loads into any other. */
#ifndef SY_MODEL_IO_H
#define SY_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "model.h"

/* The arrays a checkpoint holds per parameter: the weights and the two AdamW moments. */
typedef enum { SY_ARENA_PARAMS = 0, SY_ARENA_M = 1, SY_ARENA_V = 2 } sy_arena;

/* The checkpoint name of parameter `param`'s array in `arena` (NAME, adam.m/NAME, adam.v/NAME). */
void sy_model_io_name(char *out, size_t n, sy_arena arena, const char *param);
/* The other way: the arena a checkpoint tensor name addresses, and the parameter name in it. */
const char *sy_model_io_split_name(const char *tensor, sy_arena *arena);
/* The expert a checkpoint tensor belongs to (layers.L.experts.E.* and its moments: E),
 * or -1 for a replicated tensor. From the name alone: a checkpoint of any mesh. */
int sy_model_io_expert_of(const char *tensor);

/* Adds every parameter held in `lay` from the arenas (m, v may be NULL: weights only). */
int sy_model_io_save(sy_ckpt_writer *w, const sy_layout *lay, const float *params, const float *m, const float *v);

/* Loads every parameter held in `lay` from the checkpoint (m, v may be NULL); a missing
 * tensor or a shape that differs from the layout is an error naming the tensor. When
 * the checkpoint has no moments and m, v are given, they are zeroed and *had_moments = 0. */
int sy_model_io_load(const sy_ckpt *ck, const sy_layout *lay, float *params, float *m, float *v, int *had_moments);

#endif
