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

static int add_one(sy_ckpt_writer *w, sy_arena a, const sy_param *p, const float *arena) {
    char name[SY_CKPT_MAX_NAME];
    sy_model_io_name(name, sizeof name, a, p->name);
    int64_t shape[2] = {p->shape[0], p->shape[1]};
    return sy_ckpt_writer_add(w, name, SY_DT_F32, p->ndim, shape, arena + p->offset, p->numel * sizeof(float));
}

int sy_model_io_save(sy_ckpt_writer *w, const sy_layout *lay, const float *params, const float *m, const float *v) {
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (add_one(w, SY_ARENA_PARAMS, p, params) || (m && add_one(w, SY_ARENA_M, p, m)) ||
            (v && add_one(w, SY_ARENA_V, p, v)))
            return -1;
    }
    return 0;
}

static int read_one(const sy_ckpt *ck, sy_arena a, const sy_param *p, float *arena) {
    char name[SY_CKPT_MAX_NAME];
    sy_model_io_name(name, sizeof name, a, p->name);
    const sy_ckpt_tensor *t = sy_ckpt_find(ck, name);
    if (!t) {
        sy_seterr("%s: no tensor %s", sy_ckpt_dir(ck), name);
        return -1;
    }
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    int shape_ok = t->dtype == SY_DT_F32 && t->ndim == p->ndim && t->shape[0] == p->shape[0] &&
                   (p->ndim < 2 || t->shape[1] == p->shape[1]) && (size_t)n == p->numel;
    if (!shape_ok) {
        sy_seterr("%s: tensor %s is %s with %d dims [%lld,%lld], the model expects f32 [%d,%d]", sy_ckpt_dir(ck),
                  name, sy_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                  (long long)(t->ndim > 1 ? t->shape[1] : 1), p->shape[0], p->shape[1]);
        return -1;
    }
    return sy_ckpt_read(ck, name, arena + p->offset, p->numel * sizeof(float));
}

int sy_model_io_load(const sy_ckpt *ck, const sy_layout *lay, float *params, float *m, float *v, int *had_moments) {
    int moments = m && v && lay->n_params > 0;
    if (moments) {
        char name[SY_CKPT_MAX_NAME];
        sy_model_io_name(name, sizeof name, SY_ARENA_M, lay->params[0].name);
        moments = sy_ckpt_find(ck, name) != NULL;
    }
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (read_one(ck, SY_ARENA_PARAMS, p, params))
            return -1;
        if (moments && (read_one(ck, SY_ARENA_M, p, m) || read_one(ck, SY_ARENA_V, p, v)))
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
