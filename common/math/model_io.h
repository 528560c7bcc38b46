/* model_io.h: the model's state by canonical tensor name. Parameters are named as in the
 * layout (NAME), AdamW moments adam.m/NAME and adam.v/NAME. Because names, not workers,
 * address tensors, a state saved by any mesh loads into any other. Where the tensors go
 * is the caller's sy_tensor_table: a checkpoint (model_ckpt.h in the storage library),
 * a message, a test's array. */
#ifndef SY_MODEL_IO_H
#define SY_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define SY_MODEL_IO_MAX_NAME 200 /* bytes in a state tensor's name, prefix included */

/* The arrays the state holds per parameter: the weights and the two AdamW moments. */
typedef enum { SY_ARENA_PARAMS = 0, SY_ARENA_M = 1, SY_ARENA_V = 2 } sy_arena;

/* The tensor name of parameter `param`'s array in `arena` (NAME, adam.m/NAME, adam.v/NAME). */
void sy_model_io_name(char *out, size_t n, sy_arena arena, const char *param);
/* The other way: the arena a tensor name addresses, and the parameter name in it. */
const char *sy_model_io_split_name(const char *tensor, sy_arena *arena);
/* The expert a tensor belongs to (layers.L.experts.E.* and its moments: E), or -1 for a
 * replicated tensor. From the name alone: a checkpoint of any mesh. */
int sy_model_io_expert_of(const char *tensor);

/* A place that holds named f32 tensors. Each call gets the full name (with its prefix)
 * and the parameter whose shape and size the tensor has. Functions return 0 or -1 with
 * sy_seterr naming the tensor. */
typedef struct {
    void *ctx;
    /* Stores p->numel floats from data under name. */
    int (*put)(void *ctx, const char *name, const sy_param *p, const float *data);
    /* 1 when a tensor of that name is there, else 0. */
    int (*has)(void *ctx, const char *name);
    /* Reads tensor name into data[p->numel]; a missing tensor or one of another shape is
     * an error naming it. */
    int (*get)(void *ctx, const char *name, const sy_param *p, float *data);
} sy_tensor_table;

/* Puts every parameter held in `lay` from the arenas (m, v may be NULL: weights only). */
int sy_model_io_put(const sy_tensor_table *t, const sy_layout *lay, const float *params, const float *m,
                    const float *v);

/* Gets every parameter held in `lay` (m, v may be NULL). When the table has no moments
 * and m, v are given, they are zeroed and *had_moments = 0. */
int sy_model_io_get(const sy_tensor_table *t, const sy_layout *lay, float *params, float *m, float *v,
                    int *had_moments);

#endif
