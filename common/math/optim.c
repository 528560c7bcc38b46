#include "optim.h"

#include <math.h>
#include <pthread.h>

#include "blas_setup.h"

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

/* Eight running sums (element i goes to sum i % 8), added up in a fixed order: the same
 * bits for the same array wherever it sits, and no chain of dependent additions (one
 * sum alone waits an addition's latency per element: 6 ms for the bench model). */
double sy_sumsq(const float *g, size_t n) {
    double s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += (double)g[i + j] * g[i + j];
    for (size_t j = 0; j < 8 && i + j < n; j++)
        s[j] += (double)g[i + j] * g[i + j];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

float sy_clip_scale(double norm, float clip) {
    if (clip <= 0.0f || !(norm > clip))
        return 1.0f;
    return (float)(clip / (norm + 1e-6));
}

/* AdamW over elements [j0, j1) of one tensor. Element-wise, so any split of the work
 * gives the same bits; compiled with -fno-math-errno (common/CMakeLists.txt) so the
 * sqrtf vectorizes (sqrtps rounds exactly as sqrtss does). */
static void adamw_range(float *restrict x, const float *restrict g, float *restrict mm, float *restrict vv, size_t j0,
                        size_t j1, float b1, float b2, float eps, float c1, float c2, float lr, float wd,
                        float grad_scale) {
    for (size_t j = j0; j < j1; j++) {
        float gj = g[j] * grad_scale;
        mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
        vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
        float upd = (mm[j] * c1) / (sqrtf(vv[j] * c2) + eps);
        x[j] -= lr * (upd + wd * x[j]);
    }
}

typedef struct {
    const sy_layout *lay;
    float *params, *m, *v;
    const float *grads;
    const sy_train_cfg *tc;
    float c1, c2, lr, grad_scale;
    int part, parts;
} adamw_job;

/* Part `part` of `parts` of every tensor (cut at 16-float boundaries: no cache line is
 * written by two threads). */
static void *adamw_part(void *arg) {
    const adamw_job *a = arg;
    const sy_train_cfg *tc = a->tc;
    for (int i = 0; i < a->lay->n_params; i++) {
        const sy_param *p = &a->lay->params[i];
        size_t j0 = (p->numel * a->part / a->parts) & ~(size_t)15;
        size_t j1 = a->part + 1 == a->parts ? p->numel : (p->numel * (a->part + 1) / a->parts) & ~(size_t)15;
        adamw_range(a->params + p->offset, a->grads + p->offset, a->m + p->offset, a->v + p->offset, j0, j1,
                    tc->beta1, tc->beta2, tc->eps, a->c1, a->c2, a->lr, p->decay ? tc->weight_decay : 0.0f,
                    a->grad_scale);
    }
    return NULL;
}

/* The update streams ~28 bytes per parameter and was a single-threaded tenth of the
 * step; it runs on the compute threads (SWITCHYARD_THREADS / train.threads). */
#define SY_ADAMW_MAX_THREADS 64

void sy_adamw_step(const sy_layout *lay, float *params, const float *grads, float *m, float *v, int64_t t, float lr,
                   const sy_train_cfg *tc, float grad_scale) {
    int parts = sy_blas_threads();
    if (parts < 1)
        parts = 1;
    if (parts > SY_ADAMW_MAX_THREADS)
        parts = SY_ADAMW_MAX_THREADS;
    if (lay->total < (size_t)parts * 65536) /* small models: threads cost more than they save */
        parts = 1;
    adamw_job jobs[SY_ADAMW_MAX_THREADS];
    pthread_t th[SY_ADAMW_MAX_THREADS];
    int started[SY_ADAMW_MAX_THREADS] = {0};
    for (int k = 0; k < parts; k++)
        jobs[k] = (adamw_job){lay,
                              params,
                              m,
                              v,
                              grads,
                              tc,
                              1.0f / (1.0f - powf(tc->beta1, (float)t)),
                              1.0f / (1.0f - powf(tc->beta2, (float)t)),
                              lr,
                              grad_scale,
                              k,
                              parts};
    for (int k = 1; k < parts; k++)
        started[k] = pthread_create(&th[k], NULL, adamw_part, &jobs[k]) == 0;
    adamw_part(&jobs[0]);
    for (int k = 1; k < parts; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            adamw_part(&jobs[k]); /* no thread to be had: do its part here */
    }
}
