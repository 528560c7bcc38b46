#include "distill.h"

#include <math.h>
#include <stddef.h>

/* logsumexp of x[V] / T */
static double lse_t(const float *x, int V, double T) {
    double mx = -INFINITY;
    for (int v = 0; v < V; v++)
        mx = x[v] / T > mx ? x[v] / T : mx;
    double s = 0.0;
    for (int v = 0; v < V; v++)
        s += exp(x[v] / T - mx);
    return mx + log(s);
}

double sy_distill_soft(float *dlogits, const float *student, const float *teacher, int N, int V, float T,
                       float scale) {
    double total = 0.0, t = T;
    for (int i = 0; i < N; i++) {
        const float *s = student + (size_t)i * V, *te = teacher + (size_t)i * V;
        double ls = lse_t(s, V, t), lt = lse_t(te, V, t), kl = 0.0;
        for (int v = 0; v < V; v++) {
            double lq = s[v] / t - ls, lp = te[v] / t - lt, p = exp(lp);
            kl += p * (lp - lq);
            if (dlogits)
                dlogits[(size_t)i * V + v] = (float)(scale * t * (exp(lq) - p));
        }
        total += t * t * kl;
    }
    return total;
}

int sy_distill_forward_backward(sy_distill *d, sy_model *student, const sy_pass *ps, const int32_t *tokens,
                                sy_losses *l, double *soft) {
    sy_pass tp = *ps;
    tp.training = 0;
    sy_losses tl;
    if (sy_model_forward(d->teacher, &tp, tokens, &tl) || sy_model_forward(student, ps, tokens, l))
        return -1;
    int N = ps->B * ps->T, V = sy_model_layout(student)->cfg.vocab;
    double denom = ps->ce_denom > 0 ? ps->ce_denom : (double)N;
    *soft = sy_distill_soft(d->dlogits, sy_model_logits(student), sy_model_logits(d->teacher), N, V, d->temperature,
                            (float)(d->alpha / denom)) /
            denom;
    return sy_model_backward_mix(student, 1.0f - d->alpha, d->dlogits);
}
