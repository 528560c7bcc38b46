#include "step.h"

#include <math.h>
#include <string.h>

#include "log.h"
#include "optim.h"

static int local_allreduce(void *ctx, int group, float *data, size_t n, uint32_t tag) {
    (void)ctx, (void)group, (void)data, (void)n, (void)tag;
    return 0; /* the sum over one rank is the rank's own value */
}

sy_comm sy_comm_local(void) { return (sy_comm){.allreduce = local_allreduce}; }

int sy_stepper_local(sy_stepper *st, sy_mesh *mesh, sy_model *m, const sy_config *cfg, float *mom, float *vel,
                     int32_t *batch) {
    if (sy_mesh_plan(mesh, 1, cfg->model.n_experts, cfg->train.batch_size, NULL, 2.0))
        return -1;
    *st = (sy_stepper){.model = m,
                       .cfg = cfg,
                       .mesh = mesh,
                       .rank = 0,
                       .groups = cfg->train.groups,
                       .mom = mom,
                       .vel = vel,
                       .batch = batch,
                       .comm = sy_comm_local()};
    return 0;
}

static double a2a_now(const sy_comm *c) { return c->a2a_seconds ? c->a2a_seconds(c->a2a_ctx) : 0.0; }

int sy_step_grads(sy_stepper *st, const sy_pass *pass, int64_t tag_step, sy_step_result *out) {
    const sy_comm *c = &st->comm;
    double t0 = sy_now(), a0 = a2a_now(c);
    sy_model_zero_grad(st->model);
    out->soft = 0.0;
    if (st->distill && st->distill->teacher
            ? sy_distill_forward_backward(st->distill, st->model, pass, st->batch, &out->loss, &out->soft)
            : sy_model_forward(st->model, pass, st->batch, &out->loss) || sy_model_backward(st->model))
        return -1;
    double t1 = sy_now();
    out->t.alltoall = a2a_now(c) - a0;
    out->t.compute = (t1 - t0) - out->t.alltoall;
    out->tokens = (int64_t)pass->B * pass->T;
    /* the global loss is the SUM of the ranks' losses, so sums, not means */
    const sy_layout *lay = sy_model_layout(st->model);
    float *g = sy_model_grads(st->model);
    uint32_t tag = (uint32_t)(tag_step << 2);
    if (c->allreduce(c->ctx, 0, g, lay->dense_total, tag))
        return -1;
    if (st->mesh->dp > 1 && lay->total > lay->dense_total &&
        c->allreduce(c->ctx, 1, g + lay->dense_total, lay->total - lay->dense_total, tag | 1))
        return -1;
    out->t.allreduce = sy_now() - t1;
    return 0;
}

int sy_step_prepare(sy_stepper *st, const sy_tokens *train, int64_t step, sy_step_result *out) {
    const sy_train_cfg *tc = &st->cfg->train;
    const sy_mesh *mesh = st->mesh;
    int rows = mesh->nrows[st->rank], row0 = mesh->row0[st->rank], T = tc->seq_len;
    memset(out, 0, sizeof *out);
    double t0 = sy_now();
    if (train && sy_batch_fill(train, tc->seed, step, row0, rows, T, st->batch, st->lang))
        return -1;
    double fill = sy_now() - t0;
    sy_pass ps = {.B = rows,
                  .T = T,
                  .groups = st->groups,
                  .ce_denom = (double)mesh->global_batch * T,
                  .group_denom = (double)mesh->world * st->groups,
                  .training = 1,
                  .seed = tc->seed,
                  .step = step,
                  .token0 = (int64_t)row0 * T};
    if (sy_step_grads(st, &ps, step, out))
        return -1;
    out->t.compute += fill;
    double t2 = sy_now();
    /* global norm: the dense part is the same everywhere; expert parts are spread over the
     * P ranks of a data group (and repeated in every data group), so each rank adds its
     * expert sum of squares divided by D and the total is summed over all ranks. The sums
     * travel as floats (the collective's type), so one process rounds them to float too:
     * both then clip by the same scale. */
    const sy_layout *lay = sy_model_layout(st->model);
    const float *g = sy_model_grads(st->model);
    float sq[2] = {(float)sy_sumsq(g, lay->dense_total),
                   (float)(sy_sumsq(g + lay->dense_total, lay->total - lay->dense_total) / mesh->dp)};
    if (st->comm.allreduce(st->comm.ctx, 0, sq + 1, 1, (uint32_t)(step << 2) | 2))
        return -1;
    out->t.allreduce += sy_now() - t2;
    out->grad_norm = sqrt((double)sq[0] + sq[1]);
    /* every rank sees the same global norm, so every rank stops here together */
    if (!isfinite(out->grad_norm) || !isfinite(out->loss.total)) {
        sy_seterr("the gradient norm is %g (loss share %g) at step %lld: training diverged; lower train.lr or set "
                  "train.grad_clip",
                  out->grad_norm, out->loss.total, (long long)step);
        return -1;
    }
    out->lr = sy_lr_at(tc, step);
    out->clip_scale = sy_clip_scale(out->grad_norm, tc->grad_clip);
    return 0;
}

void sy_step_commit(sy_stepper *st, int64_t step, sy_step_result *res) {
    double t3 = sy_now();
    const sy_layout *lay = sy_model_layout(st->model);
    sy_adamw_step(lay, sy_model_params(st->model), sy_model_grads(st->model), st->mom, st->vel, step + 1, res->lr,
                  &st->cfg->train, res->clip_scale);
    res->t.optimizer = sy_now() - t3;
}

int sy_step_run(sy_stepper *st, const sy_tokens *train, int64_t step, sy_step_result *out) {
    if (sy_step_prepare(st, train, step, out))
        return -1;
    sy_step_commit(st, step, out);
    return 0;
}
