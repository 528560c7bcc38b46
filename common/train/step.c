#include "step.h"

#include <math.h>
#include <string.h>

#include "log.h"
#include "optim.h"
#include "trace.h"

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

/* ---------------------------------------------------------------- overlap
 * Backward makes gradients final in stages: the head (normf, lm_head), layer L-1's
 * feed-forward half, its attention half, ..., layer 0's attention half, the embeddings. A region (dense gradients: group 0; expert gradients: group 1)
 * is queued from its end downwards: at each stage the part above every parameter not yet
 * final goes once it holds wire.bucket_bytes (all of what is left at the last stage). With
 * the layout's order (embeddings, layers 0..L-1, head; experts by layer) that is whole
 * half-layers as soon as they are done; another order would only overlap less. */

/* Sums of squares of the gradients whose offsets are in [lo, hi) (layer -1), or of layer
 * `layer`'s experts, into psq: a job on the communication thread once they are final. */
typedef struct {
    sy_comm_job job;
    const sy_layout *lay;
    const float *g;
    double *psq;
    size_t lo, hi;
    int layer;
} sq_job;

static int sq_job_fn(sy_comm_job *job) {
    sq_job *j = (sq_job *)job;
    for (int i = 0; i < j->lay->n_params; i++) {
        const sy_param *p = &j->lay->params[i];
        if (j->layer >= 0 ? p->layer == j->layer && p->expert >= 0 : p->offset >= j->lo && p->offset < j->hi)
            j->psq[i] = sy_sumsq(j->g + p->offset, p->numel);
    }
    return 0;
}

typedef struct {
    const sy_comm *c;
    const sy_layout *lay;
    const sy_model_cfg *mc;
    float *g;
    double *psq;         /* each gradient's sum of squares, or NULL: not on the thread */
    sq_job *jobs;
    int n_jobs, cap_jobs;
    int regions;         /* 1: dense only; 2: the expert gradients too (replicated experts) */
    size_t lo[2], hi[2]; /* region r is [lo, hi) of the arena; [lo, hi[r]) not queued yet */
    size_t bucket;       /* floats */
    uint32_t tag;
    int queued;
} overlap;

/* the stage at which parameter p's gradient is final (sy_pass.grads_final): 2*n_layers
 * (head), 2l+1 (layer l's feed-forward half), 2l (its attention half), -1 (embeddings) */
static int param_stage(const sy_param *p, int n_layers) {
    if (p->layer >= 0) {
        const char *dot = strrchr(p->name, '.');
        int attn = strstr(p->name, ".attn.") || (dot && !strcmp(dot, ".norm1"));
        return 2 * p->layer + !attn;
    }
    return strcmp(p->name, "normf") && strcmp(p->name, "lm_head") ? -1 : 2 * n_layers;
}

static int queue_sq(overlap *o, size_t lo, size_t hi, int layer) {
    if (!o->psq || o->n_jobs == o->cap_jobs)
        return 0; /* the main thread sums what no job did */
    sq_job *j = &o->jobs[o->n_jobs++];
    *j = (sq_job){.job = {.fn = sq_job_fn}, .lay = o->lay, .g = o->g, .psq = o->psq, .lo = lo, .hi = hi, .layer = layer};
    return o->c->part_call(o->c->ctx, &j->job);
}

static int overlap_queue(overlap *o, int stage) {
    for (int r = 0; r < o->regions; r++) {
        /* floats at or above `bound` are final */
        size_t bound = o->lo[r];
        for (int i = 0; i < o->lay->n_params; i++) {
            const sy_param *p = &o->lay->params[i];
            if (p->offset < o->lo[r] || p->offset >= o->hi[r] || param_stage(p, o->mc->n_layers) >= stage)
                continue;
            if (p->offset + p->numel > bound)
                bound = p->offset + p->numel;
        }
        if (bound >= o->hi[r] || (stage >= 0 && o->hi[r] - bound < o->bucket))
            continue;
        size_t base = r ? o->lay->dense_total : 0, end = r ? o->lay->total : o->lay->dense_total;
        if (o->c->part_start(o->c->ctx, r, o->g + base, end - base, bound - base, o->hi[r] - bound,
                             o->tag + (uint32_t)(o->queued++ << 1 | r)))
            return -1;
        if (queue_sq(o, bound, o->hi[r], -1))
            return -1;
        o->hi[r] = bound;
    }
    return 0;
}

static int on_grads_final(void *ctx, int stage) {
    overlap *o = ctx;
    if (overlap_queue(o, stage))
        return -1;
    if (o->c->stage_final && o->c->stage_final(o->c->ctx, stage))
        return -1;
    /* experts that are not all-reduced: final here, the replica job's (stand-ins) included */
    if (o->regions == 1 && stage >= 0 && (stage & 1) && stage < 2 * o->mc->n_layers &&
        sy_is_switch_layer(o->mc, (stage - 1) / 2))
        return queue_sq(o, 0, 0, (stage - 1) / 2);
    return 0;
}

static double a2a_now(const sy_comm *c) { return c->a2a_seconds ? c->a2a_seconds(c->a2a_ctx) : 0.0; }

int sy_step_grads(sy_stepper *st, const sy_pass *pass, int64_t tag_step, sy_step_result *out) {
    const sy_comm *c = &st->comm;
    const sy_layout *lay = sy_model_layout(st->model);
    float *g = sy_model_grads(st->model);
    int replicated = st->mesh->dp > 1 && lay->total > lay->dense_total;
    int L = st->cfg->model.n_layers;
    sq_job jobs[4 * L + 8];
    overlap ov = {.c = c,
                  .jobs = jobs,
                  .cap_jobs = 4 * L + 8,
                  .lay = lay,
                  .mc = &st->cfg->model,
                  .g = g,
                  .regions = replicated ? 2 : 1,
                  .lo = {0, lay->dense_total},
                  .hi = {lay->dense_total, lay->total},
                  .bucket = (size_t)st->cfg->wire.bucket_bytes / sizeof(float),
                  .tag = 16};
    sy_pass ps = *pass;
    int overlapped = c->part_start && st->cfg->wire.overlap;
    if (overlapped) {
        if (c->part_begin && c->part_begin(c->ctx))
            return -1;
        ps.grads_final = on_grads_final;
        ps.grads_ctx = &ov;
        ps.defer = c->fill_waits;
        if (c->part_call)
            ov.psq = sy_model_grad_sumsq(st->model);
    }
    sy_model_times mt;
    sy_model_timers(st->model, &mt, 0);
    double t0 = sy_now(), a0 = a2a_now(c), idle0 = mt.idle;
    sy_model_zero_grad(st->model);
    out->soft = 0.0;
    if (st->distill && st->distill->teacher
            ? sy_distill_forward_backward(st->distill, st->model, &ps, st->batch, &out->loss, &out->soft)
            : sy_model_forward(st->model, &ps, st->batch, &out->loss) || sy_model_backward(st->model)) {
        if (overlapped)
            c->part_cancel(c->ctx); /* the buckets in flight must not outlive the step */
        return -1;
    }
    double t1 = sy_now();
    if (sy_trace_on()) {
        sy_trace_span("forward+backward", t0, t1, "\"step\":%lld", (long long)tag_step);
        sy_trace_mark("backward done", t1, "\"step\":%lld", (long long)tag_step);
    }
    sy_model_timers(st->model, &mt, 0);
    /* the put-off weight gradients computed inside the exchange's waits are compute */
    out->t.alltoall = a2a_now(c) - a0 - (mt.idle - idle0);
    out->t.compute = (t1 - t0) - out->t.alltoall;
    out->tokens = (int64_t)pass->B * pass->T;
    /* the global loss is the SUM of the ranks' losses, so sums, not means */
    uint32_t tag = (uint32_t)(tag_step << 2);
    if (overlapped) {
        /* whatever the backward did not hand over (it always reaches the embeddings) */
        int rc = overlap_queue(&ov, -1);
        if (rc) {
            c->part_cancel(c->ctx);
            return rc;
        }
        double tw = sy_now();
        if ((rc = c->part_wait(c->ctx)))
            return rc;
        sy_trace_span("wait: gradient all-reduce", tw, sy_now(), "\"step\":%lld", (long long)tag_step);
    } else {
        if (c->allreduce(c->ctx, 0, g, lay->dense_total, tag))
            return -1;
        if (replicated && c->allreduce(c->ctx, 1, g + lay->dense_total, lay->total - lay->dense_total, tag | 1))
            return -1;
    }
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
     * both then clip by the same scale. Each gradient's sum of squares was done by a job
     * on the communication thread once its bucket was reduced (overlapped), else it is
     * done here; added up in the layout's order, so the norm has the same bits either way. */
    const sy_layout *lay = sy_model_layout(st->model);
    const float *g = sy_model_grads(st->model);
    double *psq = sy_model_grad_sumsq(st->model), dense = 0, expert = 0;
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (isnan(psq[i])) /* no job on the communication thread did it */
            psq[i] = sy_sumsq(g + p->offset, p->numel);
        if (p->expert < 0)
            dense += psq[i];
        else
            expert += psq[i];
    }
    float sq[2] = {(float)dense, (float)(expert / mesh->dp)};
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
    sy_trace_span("optimizer", t3, t3 + res->t.optimizer, "\"step\":%lld", (long long)step);
}

int sy_step_run(sy_stepper *st, const sy_tokens *train, int64_t step, sy_step_result *out) {
    if (sy_step_prepare(st, train, step, out))
        return -1;
    sy_step_commit(st, step, out);
    return 0;
}
