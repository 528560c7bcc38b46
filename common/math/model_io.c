#include "model_io.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static const char *const g_prefix[3] = {"", "adam.m/", "adam.v/"};

void sy_model_io_name(char *out, size_t n, sy_arena arena, const char *param) {
    snprintf(out, n, "%s%s", g_prefix[arena], param);
}

const char *sy_model_io_split_name(const char *tensor, sy_arena *arena) {
    for (int a = SY_ARENA_M; a <= SY_ARENA_V; a++) {
        size_t k = strlen(g_prefix[a]);
        if (!strncmp(tensor, g_prefix[a], k)) {
            *arena = (sy_arena)a;
            return tensor + k;
        }
    }
    *arena = SY_ARENA_PARAMS;
    return tensor;
}

int sy_model_io_expert_of(const char *tensor) {
    sy_arena a;
    int layer, expert, end = 0;
    const char *name = sy_model_io_split_name(tensor, &a);
    if (sscanf(name, "layers.%d.experts.%d.%n", &layer, &expert, &end) == 2 && end > 0 && expert >= 0)
        return expert;
    return -1;
}

static int name_of(char *name, sy_arena a, const sy_param *p) {
    if (snprintf(name, SY_MODEL_IO_MAX_NAME, "%s%s", g_prefix[a], p->name) >= SY_MODEL_IO_MAX_NAME) {
        sy_seterr("tensor name %s%s is too long", g_prefix[a], p->name);
        return -1;
    }
    return 0;
}

static int put_one(const sy_tensor_table *t, sy_arena a, const sy_param *p, const float *arena) {
    char name[SY_MODEL_IO_MAX_NAME];
    return name_of(name, a, p) || t->put(t->ctx, name, p, arena + p->offset) ? -1 : 0;
}

int sy_model_io_put(const sy_tensor_table *t, const sy_layout *lay, const float *params, const float *m,
                    const float *v) {
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (put_one(t, SY_ARENA_PARAMS, p, params) || (m && put_one(t, SY_ARENA_M, p, m)) ||
            (v && put_one(t, SY_ARENA_V, p, v)))
            return -1;
    }
    return 0;
}

static int get_one(const sy_tensor_table *t, sy_arena a, const sy_param *p, float *arena) {
    char name[SY_MODEL_IO_MAX_NAME];
    return name_of(name, a, p) || t->get(t->ctx, name, p, arena + p->offset) ? -1 : 0;
}

int sy_model_io_get(const sy_tensor_table *t, const sy_layout *lay, float *params, float *m, float *v,
                    int *had_moments) {
    int moments = m && v && lay->n_params > 0;
    if (moments) {
        char name[SY_MODEL_IO_MAX_NAME];
        if (name_of(name, SY_ARENA_M, &lay->params[0]))
            return -1;
        moments = t->has(t->ctx, name);
    }
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (get_one(t, SY_ARENA_PARAMS, p, params))
            return -1;
        if (moments && (get_one(t, SY_ARENA_M, p, m) || get_one(t, SY_ARENA_V, p, v)))
            return -1;
    }
    if (m && v && !moments) {
        memset(m, 0, lay->total * sizeof(float));
        memset(v, 0, lay->total * sizeof(float));
    }
    if (had_moments)
        *had_moments = moments;
    return 0;
}
