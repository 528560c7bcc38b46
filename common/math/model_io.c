#include "model_io.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static int name_of(char *name, const char *prefix, const sy_param *p) {
    if (snprintf(name, SY_MODEL_IO_MAX_NAME, "%s%s", prefix, p->name) >= SY_MODEL_IO_MAX_NAME) {
        sy_seterr("tensor name %s%s is too long", prefix, p->name);
        return -1;
    }
    return 0;
}

static int put_one(const sy_tensor_table *t, const char *prefix, const sy_param *p, const float *arena) {
    char name[SY_MODEL_IO_MAX_NAME];
    return name_of(name, prefix, p) || t->put(t->ctx, name, p, arena + p->offset) ? -1 : 0;
}

int sy_model_io_put(const sy_tensor_table *t, const sy_layout *lay, const float *params, const float *m,
                    const float *v) {
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (put_one(t, "", p, params) || (m && put_one(t, "adam.m/", p, m)) || (v && put_one(t, "adam.v/", p, v)))
            return -1;
    }
    return 0;
}

static int get_one(const sy_tensor_table *t, const char *prefix, const sy_param *p, float *arena) {
    char name[SY_MODEL_IO_MAX_NAME];
    return name_of(name, prefix, p) || t->get(t->ctx, name, p, arena + p->offset) ? -1 : 0;
}

int sy_model_io_get(const sy_tensor_table *t, const sy_layout *lay, float *params, float *m, float *v,
                    int *had_moments) {
    int moments = m && v && lay->n_params > 0;
    if (moments) {
        char name[SY_MODEL_IO_MAX_NAME];
        if (name_of(name, "adam.m/", &lay->params[0]))
            return -1;
        moments = t->has(t->ctx, name);
    }
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (get_one(t, "", p, params))
            return -1;
        if (moments && (get_one(t, "adam.m/", p, m) || get_one(t, "adam.v/", p, v)))
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
