#include "model_ckpt.h"

#include <stdio.h>

#include "log.h"

static int writer_put(void *ctx, const char *name, const sy_param *p, const float *data) {
    int64_t shape[2] = {p->shape[0], p->shape[1]};
    return sy_ckpt_writer_add(ctx, name, SY_DT_F32, p->ndim, shape, data, p->numel * sizeof(float));
}

int sy_model_io_save(sy_ckpt_writer *w, const sy_layout *lay, const float *params, const float *m, const float *v) {
    sy_tensor_table t = {.ctx = w, .put = writer_put};
    return sy_model_io_put(&t, lay, params, m, v);
}

static int reader_has(void *ctx, const char *name) {
    return sy_ckpt_find(ctx, name) != NULL;
}

static int reader_get(void *ctx, const char *name, const sy_param *p, float *data) {
    const sy_ckpt *ck = ctx;
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
    return sy_ckpt_read(ck, name, data, p->numel * sizeof(float));
}

int sy_model_io_load(const sy_ckpt *ck, const sy_layout *lay, float *params, float *m, float *v, int *had_moments) {
    sy_tensor_table t = {.ctx = (void *)ck, .has = reader_has, .get = reader_get};
    return sy_model_io_get(&t, lay, params, m, v, had_moments);
}
