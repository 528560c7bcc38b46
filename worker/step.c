#include "step.h"

#include <math.h>
#include <string.h>

#include "log.h"
#include "optim.h"

int sy_step_run(sy_model *m, const sy_config *cfg, const sy_mesh *mesh, int rank, const sy_tokens *train,
                int32_t *batch, int16_t *lang, float *mom, float *vel, int64_t step, sy_allreduce_fn allreduce, void *comm,
                double (*a2a_seconds)(void *), void *a2a_ctx, sy_distill *distill, sy_step_result *out) {
    const sy_train_cfg *tc = &cfg->train;
    int rows = mesh->nrows[rank], row0 = mesh->row0[rank], T = tc->seq_len;
    memset(out, 0, sizeof *out);
    double t0 = sy_now(), a0 = a2a_seconds ? a2a_seconds(a2a_ctx) : 0.0;
    if (sy_batch_fill(train, tc->seed, step, row0, rows, T, batch, lang))
        return -1;
    sy_pass ps = {.B = rows,
                  .T = T,
                  .groups = 1,
                  .ce_denom = (double)mesh->global_batch * T,
                  .group_denom = mesh->world,
                  .training = 1,
                  .seed = tc->seed,
                  .step = step,
                  .token0 = (int64_t)row0 * T};
    sy_model_zero_grad(m);
    if (distill && distill->teacher ? sy_distill_forward_backward(distill, m, &ps, batch, &out->loss, &out->soft)
                                    : sy_model_forward(m, &ps, batch, &out->loss) || sy_model_backward(m))
        return -1;
    double t1 = sy_now(), a1 = a2a_seconds ? a2a_seconds(a2a_ctx) : 0.0;
    out->t.alltoall = a1 - a0;
    out->t.compute = (t1 - t0) - out->t.alltoall;
    out->tokens = (int64_t)rows * T;

    /* gradients: the global loss is the SUM of the ranks' losses, so sums, not means */
    const sy_layout *lay = sy_model_layout(m);
    float *g = sy_model_grads(m);
    if (allreduce(comm, 0, g, lay->dense_total, (uint32_t)(step << 2)))
        return -1;
    if (mesh->dp > 1 && lay->total > lay->dense_total &&
        allreduce(comm, 1, g + lay->dense_total, lay->total - lay->dense_total, (uint32_t)(step << 2) | 1))
        return -1;
    /* global norm: dense part is the same everywhere; expert parts are spread over the P
     * ranks of a data group (and repeated in every data group), so each rank adds its
     * expert sum of squares divided by D and the total is summed over all ranks. */
    float sq[2] = {(float)sy_sumsq(g, lay->dense_total),
                   (float)(sy_sumsq(g + lay->dense_total, lay->total - lay->dense_total) / mesh->dp)};
    float dense_sq = sq[0];
    if (allreduce(comm, 0, sq + 1, 1, (uint32_t)(step << 2) | 2))
        return -1;
    double t2 = sy_now();
    out->t.allreduce = t2 - t1;
    out->grad_norm = sqrt((double)dense_sq + sq[1]);
    /* every rank sees the same global norm, so every rank stops here together */
    if (!isfinite(out->grad_norm) || !isfinite(out->loss.total)) {
        sy_seterr("the gradient norm is %g (loss share %g): training diverged; lower train.lr or set "
                  "train.grad_clip",
                  out->grad_norm, out->loss.total);
        return -1;
    }
    out->lr = sy_lr_at(tc, step);
    sy_adamw_step(lay, sy_model_params(m), g, mom, vel, step + 1, out->lr, tc,
                  sy_clip_scale(out->grad_norm, tc->grad_clip));
    out->t.optimizer = sy_now() - t2;
    return 0;
}
