/* balance.c: batch shares from what the workers really compute. Every step report
 * gives a rank's own compute time (its waits for peers excluded); per rank the
 * coordinator keeps the seconds of compute per batch row over a window of steps. At a
 * checkpoint boundary, when rows in proportion to the measured speeds would cut the
 * step's compute (the slowest rank's) by a clear margin, the mesh is re-planned with
 * those shares; identical workers keep equal shares, so balancing never changes the
 * training result without a gain. The same figures name the straggler of every step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "log.h"
#include "mesh.h"

#define MIN_SAMPLES 8       /* steps measured before shares may follow them */
#define GAIN_PROPORTIONAL 0.75 /* proportional shares only when they beat equal ones by 25% */
#define GAIN_REPLAN 0.85    /* and a re-plan only when it beats the current plan by 15% */

void sy_balance_sample(member *mb, double t_compute, int nrows, int first_of_epoch) {
    mb->compute_s = t_compute;
    if (first_of_epoch || nrows < 1 || !(t_compute > 0))
        return; /* the first step of an epoch warms caches and threads up */
    mb->spr[mb->n_spr % SY_BAL_WINDOW] = t_compute / nrows;
    mb->n_spr++;
}

void sy_balance_reset(coord *c) {
    for (int i = 0; i < c->n; i++)
        c->m[i].n_spr = 0;
    c->straggler_rank = -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds per row over the window, or 0 without enough samples. */
static double sec_per_row(const member *mb) {
    int n = mb->n_spr < SY_BAL_WINDOW ? mb->n_spr : SY_BAL_WINDOW;
    if (n < MIN_SAMPLES)
        return 0;
    double v[SY_BAL_WINDOW];
    memcpy(v, mb->spr, (size_t)n * sizeof(double));
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Predicted compute of a step (the slowest rank's) for the given rows. */
static double predicted(const double *spr, const int *rows, int W) {
    double worst = 0;
    for (int r = 0; r < W; r++)
        worst = fmax(worst, spr[r] * rows[r]);
    return worst;
}

int sy_balance_due(coord *c) {
    int W = c->world, B = c->cfg.train.batch_size;
    if (!c->cfg.cluster.balance_by_speed || c->have_rc || W < 2 || W > MAX_WORKERS)
        return 0;
    double spr[MAX_WORKERS], speed[MAX_WORKERS];
    int cur[MAX_WORKERS], eq[MAX_WORKERS], prop[MAX_WORKERS];
    for (int r = 0; r < W; r++) {
        if (!(spr[r] = sec_per_row(&c->m[c->rank_member[r]])))
            return 0;
        speed[r] = 1.0 / spr[r];
        cur[r] = c->mesh.nrows[r];
    }
    if (sy_apportion(B, W, NULL, eq) || sy_apportion(B, W, speed, prop))
        return 0;
    double p_cur = predicted(spr, cur, W), p_eq = predicted(spr, eq, W), p_prop = predicted(spr, prop, W);
    int use_prop = p_prop < GAIN_PROPORTIONAL * p_eq;
    const int *target = use_prop ? prop : eq;
    double p_target = use_prop ? p_prop : p_eq;
    if (!memcmp(target, cur, (size_t)W * sizeof(int)) || !(p_target < GAIN_REPLAN * p_cur))
        return 0;
    sy_info("re-balancing at the checkpoint from measured compute (median of the last %d steps): predicted step "
            "compute %.0f ms -> %.0f ms with %s shares",
            SY_BAL_WINDOW, p_cur * 1e3, p_target * 1e3, use_prop ? "speed-proportional" : "equal");
    for (int r = 0; r < W; r++) {
        member *mb = &c->m[c->rank_member[r]];
        sy_info("  rank %d (%s): %.2f ms per row, rows %d -> %d", r, mb->id, spr[r] * 1e3, cur[r], target[r]);
        mb->speed = use_prop ? speed[r] : 0;
    }
    sy_coord_event(c, "re-balanced: predicted compute %.0f -> %.0f ms", p_cur * 1e3, p_target * 1e3);
    return 1;
}

void sy_balance_straggler(coord *c) {
    int W = c->world, slow = -1;
    c->straggler_rank = -1;
    c->straggler_wait = 0;
    if (W < 2)
        return;
    double worst = 0, others = 0;
    for (int r = 0; r < W; r++) {
        double t = c->m[c->rank_member[r]].compute_s;
        if (t > worst) {
            worst = t;
            slow = r;
        }
    }
    if (slow < 0)
        return;
    for (int r = 0; r < W; r++)
        if (r != slow)
            others += worst - c->m[c->rank_member[r]].compute_s;
    c->straggler_rank = slow;
    c->straggler_wait = others / (W - 1); /* how long the others waited for it, on average */
}
