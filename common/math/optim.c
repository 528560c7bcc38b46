#include "optim.h"

#include <math.h>

float sy_lr_at(const sy_train_cfg *tc, int64_t step) {
    if (tc->warmup_steps > 0 && step < tc->warmup_steps)
        return tc->lr * (float)(step + 1) / (float)tc->warmup_steps;
    /* the decay ends at the last step the run takes, steps - 1 */
    if (tc->schedule == SY_SCHED_CONSTANT || tc->steps - 1 <= tc->warmup_steps)
        return tc->lr;
    double frac = (double)(step - tc->warmup_steps) / (double)(tc->steps - 1 - tc->warmup_steps);
    if (frac > 1.0)
        frac = 1.0;
    double w = tc->schedule == SY_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * frac)) : 1.0 - frac;
    return (float)(tc->min_lr + (tc->lr - tc->min_lr) * w);
}

double sy_sumsq(const float *g, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * g[i];
    return s;
}

float sy_clip_scale(double norm, float clip) {
    if (clip <= 0.0f || !(norm > clip))
        return 1.0f;
    return (float)(clip / (norm + 1e-6));
}

void sy_adamw_step(const sy_layout *lay, float *params, const float *grads, float *m, float *v, int64_t t, float lr,
                   const sy_train_cfg *tc, float grad_scale) {
    const float b1 = tc->beta1, b2 = tc->beta2, eps = tc->eps;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)t)), c2 = 1.0f / (1.0f - powf(b2, (float)t));
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        float *x = params + p->offset, *mm = m + p->offset, *vv = v + p->offset;
        const float *g = grads + p->offset;
        const float wd = p->decay ? tc->weight_decay : 0.0f;
        for (size_t j = 0; j < p->numel; j++) {
            float gj = g[j] * grad_scale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            float upd = (mm[j] * c1) / (sqrtf(vv[j] * c2) + eps);
            x[j] -= lr * (upd + wd * x[j]);
        }
    }
}
