/* balance.c: batch shares from what the workers really compute. Every step report
 * gives a rank's own compute time (its waits for peers excluded); per rank the
 * coordinator keeps the median compute per step over a window of steps, and models it as
 * a + b * rows: b from two plans with different rows (the part that grows with the
 * batch share), a the rest (its experts' work on tokens from every rank); with one plan
 * only, a = 0. At a checkpoint boundary, when other rows would cut the step's compute
 * (the slowest rank's) by a clear margin, the mesh is re-planned with them (experts stay
 * evenly spread). Identical workers keep equal shares, so balancing never changes the
 * training result without a gain. The same figures name the straggler of every step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "log.h"
#include "mesh.h"

#define MIN_SAMPLES 8          /* steps measured before shares may follow them */
#define GAIN_UNEVEN 0.75       /* uneven shares only when they beat equal ones by 25% */
#define GAIN_REPLAN 0.85       /* and a re-plan only when it beats the current plan by 15% */

void sy_balance_sample(member *mb, double t_compute, int nrows, int first_of_epoch) {
    mb->compute_s = t_compute;
    if (first_of_epoch || nrows < 1 || !(t_compute > 0))
        return; /* the first step of an epoch warms caches and threads up */
    mb->tc[mb->n_tc % SY_BAL_WINDOW] = t_compute;
    mb->n_tc++;
}

void sy_balance_reset(coord *c) {
    for (int i = 0; i < c->pool.n; i++) {
        c->pool.m[i].n_tc = 0;
        if (!c->bal.rebalancing)
            c->pool.m[i].prev_rows = 0; /* another mesh (a death, a join): old figures no longer apply */
    }
    c->bal.rebalancing = 0;
    c->bal.straggler_rank = -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median compute per step over the window, or 0 without enough samples. */
static double median_compute(const member *mb) {
    int n = mb->n_tc < SY_BAL_WINDOW ? mb->n_tc : SY_BAL_WINDOW;
    if (n < MIN_SAMPLES)
        return 0;
    double v[SY_BAL_WINDOW];
    memcpy(v, mb->tc, (size_t)n * sizeof(double));
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Predicted compute of a step (the slowest rank's) for the given rows. */
static double predicted(const double *a, const double *b, const int *rows, int W) {
    double worst = 0;
    for (int r = 0; r < W; r++)
        worst = fmax(worst, a[r] + b[r] * rows[r]);
    return worst;
}

int sy_balance_due(coord *c) {
    int W = c->plan.world, B = c->cfg.train.batch_size;
    if (!c->cfg.cluster.balance_by_speed || c->ref.on || W < 2 || W > MAX_WORKERS || B < W)
        return 0;
    double a[MAX_WORKERS], b[MAX_WORKERS], t[MAX_WORKERS];
    int cur[MAX_WORKERS], eq[MAX_WORKERS], best[MAX_WORKERS];
    for (int r = 0; r < W; r++) {
        const member *mb = &c->pool.m[c->plan.rank_member[r]];
        cur[r] = c->plan.mesh.nrows[r];
        if (!(t[r] = median_compute(mb)))
            return 0;
        b[r] = t[r] / cur[r];
        a[r] = 0;
        if (mb->prev_rows > 0 && mb->prev_rows != cur[r]) {
            double slope = (t[r] - mb->prev_t) / (cur[r] - mb->prev_rows);
            if (slope > 0 && slope * cur[r] <= t[r]) {
                b[r] = slope;
                a[r] = t[r] - slope * cur[r];
            }
        }
    }
    sy_apportion(B, W, NULL, eq);
    /* the rows that minimise the slowest rank's compute: one row at a time to the rank
     * that would finish first with it */
    for (int r = 0; r < W; r++)
        best[r] = 1;
    for (int k = W; k < B; k++) {
        int pick = 0;
        for (int r = 1; r < W; r++)
            if (a[r] + b[r] * (best[r] + 1) < a[pick] + b[pick] * (best[pick] + 1))
                pick = r;
        best[pick]++;
    }
    double p_cur = predicted(a, b, cur, W), p_eq = predicted(a, b, eq, W), p_best = predicted(a, b, best, W);
    int uneven = p_best < GAIN_UNEVEN * p_eq;
    const int *target = uneven ? best : eq;
    double p_target = uneven ? p_best : p_eq;
    if (!memcmp(target, cur, (size_t)W * sizeof(int)) || !(p_target < GAIN_REPLAN * p_cur))
        return 0;
    sy_info("re-balancing at the checkpoint from measured compute (median of the last %d steps): predicted step "
            "compute %.0f ms -> %.0f ms with %s shares",
            SY_BAL_WINDOW, p_cur * 1e3, p_target * 1e3, uneven ? "uneven" : "equal");
    for (int r = 0; r < W; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        sy_info("  rank %d (%s): %.1f ms compute per step on %d rows (%.2f ms per row), rows %d -> %d", r, mb->id,
                t[r] * 1e3, cur[r], b[r] * 1e3, cur[r], target[r]);
        mb->prev_rows = cur[r];
        mb->prev_t = t[r];
        mb->speed = uneven ? target[r] : 0; /* weights that apportion to exactly these rows */
    }
    c->bal.rebalancing = 1;
    sy_coord_event(c, "re-balanced: predicted compute %.0f -> %.0f ms", p_cur * 1e3, p_target * 1e3);
    return 1;
}

void sy_balance_straggler(coord *c) {
    int W = c->plan.world, slow = -1;
    c->bal.straggler_rank = -1;
    c->bal.straggler_wait = 0;
    if (W < 2)
        return;
    double worst = 0, others = 0;
    for (int r = 0; r < W; r++) {
        double t = c->pool.m[c->plan.rank_member[r]].compute_s;
        if (t > worst) {
            worst = t;
            slow = r;
        }
    }
    if (slow < 0)
        return;
    for (int r = 0; r < W; r++)
        if (r != slow)
            others += worst - c->pool.m[c->plan.rank_member[r]].compute_s;
    c->bal.straggler_rank = slow;
    c->bal.straggler_wait = others / (W - 1); /* how long the others waited for it, on average */
}
