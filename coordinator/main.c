/* switchyard-coordinator: admits workers, plans the mesh, drives the steps and collects
 * checkpoints. A plain zmq_poll loop over the control ROUTER and the status socket; the
 * periodic work is one tick(), each handler is named after the message it handles.
 * Validation runs in a thread (eval.c), the reference-check mode in refcheck.c, the
 * status socket in status.c. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "blas_setup.h"
#include "checkpoint.h"
#include "config.h"
#include "ctrl.h"
#include "curve.h"
#include "data.h"
#include "log.h"
#include "mesh.h"
#include "model.h"
#include "model_ckpt.h"
#include "msgsize.h"
#include "peer.h"
#include "refcase.h"
#include "sanitize.h"

#include "coord.h"

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

static void recover(coord *c, const char *reason);
static void stop_now(coord *c, const char *why);

/* Fault drill: SWITCHYARD_FAULT="kill@STEP:save" kills the coordinator halfway through
 * collecting checkpoint STEP (some tensors written to the temporary directory, no
 * commit). Used by tests/elastic.sh; nothing happens unless it is set. */
static int64_t g_fault_step = -1;
static int g_fault_shards;
static int standby_count(const coord *c);

/* ---------------------------------------------------------------- sending */

int coord_send_to(coord *c, const member *mb, Switchyard__Envelope *env) {
    if (sy_ctrl_send(c->router, mb->id, strlen(mb->id), env, NULL, 0)) {
        sy_warn("cannot send to %s: %s", mb->id, sy_lasterr());
        return -1;
    }
    return 0;
}

static void broadcast_shutdown(coord *c, const char *reason) {
    Switchyard__Shutdown s = SWITCHYARD__SHUTDOWN__INIT;
    s.reason = (char *)reason;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &s;
    for (int i = 0; i < c->pool.n; i++)
        if (c->pool.m[i].alive) {
            sy_ctrl_send(c->router, c->pool.m[i].id, strlen(c->pool.m[i].id), &env, NULL, 0);
            sy_ctrl_send(c->router, c->pool.m[i].hb_id, strlen(c->pool.m[i].hb_id), &env, NULL, 0);
        }
}

static void send_heartbeats(coord *c) {
    Switchyard__Heartbeat h = SWITCHYARD__HEARTBEAT__INIT;
    h.epoch = c->epoch;
    h.step = c->step;
    h.state = (uint32_t)c->phase;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &h;
    for (int i = 0; i < c->pool.n; i++)
        if (c->pool.m[i].alive)
            sy_ctrl_send(c->router, c->pool.m[i].hb_id, strlen(c->pool.m[i].hb_id), &env, NULL, 0);
}

/* ---------------------------------------------------------------- planning */

/* Sends rank r what it holds of the last checkpoint: every replicated tensor, and its
 * experts' tensors (parameters and AdamW moments), then a SaveDone marking the end. */
static int send_state(coord *c, const member *mb, int r) {
    sy_ckpt *ck = sy_ckpt_open(c->ckpt.last);
    if (!ck)
        return -1;
    int p = sy_mesh_p(&c->plan.mesh, r), sent = 0, rc = 0;
    void *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < sy_ckpt_count(ck) && !rc; i++) {
        const sy_ckpt_tensor *t = sy_ckpt_tensor_at(ck, i);
        int e = sy_model_io_expert_of(t->name);
        if (e >= 0 && (e < c->plan.mesh.e_begin[p] || e >= c->plan.mesh.e_end[p]))
            continue; /* another rank's expert */
        if (t->bytes > cap) {
            free(buf);
            cap = t->bytes;
            if (!(buf = malloc(cap))) {
                sy_seterr("out of memory");
                rc = -1;
                break;
            }
        }
        if (sy_ckpt_read(ck, t->name, buf, t->bytes)) {
            rc = -1;
            break;
        }
        Switchyard__TensorShard ts = SWITCHYARD__TENSOR_SHARD__INIT;
        ts.epoch = c->epoch;
        ts.step = c->ckpt.last_step;
        ts.name = t->name;
        ts.dtype = (char *)sy_dtype_name(t->dtype);
        ts.n_shape = (size_t)t->ndim;
        ts.shape = (int64_t *)t->shape;
        ts.bytes = t->bytes;
        ts.crc32c = t->crc;
        Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_SHARD;
        env.shard = &ts;
        /* a blocking send: the state must arrive whole (a full queue waits, never drops) */
        if (sy_ctrl_send_blocking(c->router, mb->id, strlen(mb->id), &env, buf, t->bytes)) {
            rc = -1;
            break;
        }
        sent++;
    }
    free(buf);
    sy_ckpt_close(&ck);
    if (rc)
        return -1;
    Switchyard__SaveDone sd = SWITCHYARD__SAVE_DONE__INIT;
    sd.epoch = c->epoch;
    sd.step = c->ckpt.last_step;
    sd.tensors = (uint32_t)sent;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_SAVE_DONE;
    env.save_done = &sd;
    return sy_ctrl_send_blocking(c->router, mb->id, strlen(mb->id), &env, NULL, 0);
}

void coord_broadcast_abort(coord *c, const char *reason);

/* A member the control socket cannot reach while a mesh is handed out: declared dead at
 * once (no waiting for its heartbeat timeout), the epoch being handed out is aborted
 * everywhere and the main loop plans again with the workers left. */
static void drop_unreachable(coord *c, member *mb, const char *why) {
    mb->alive = 0;
    sy_error("worker %s unreachable (%s): dropped from the mesh, planning again", mb->id, why);
    sy_coord_event(c, "worker %s unreachable: dropped", mb->id);
    coord_broadcast_abort(c, "a worker of the new mesh is unreachable: planning again");
    c->phase = WAITING;
}

/* Plans a mesh of the live workers and hands it out. 0: handed out; 1: a worker was
 * unreachable and dropped, plan again; -1: error (message set). */
static int start_epoch(coord *c) {
    int W = 0;
    double gf[MAX_WORKERS];
    int measured = 1;
    for (int i = 0; i < c->pool.n; i++) {
        c->pool.m[i].rank = -1;
        c->pool.m[i].ready = c->pool.m[i].reported = c->pool.m[i].saved = 0;
        if (c->pool.m[i].alive) {
            c->plan.rank_member[W] = i;
            /* shares follow measured compute (balance.c), never the start-up sgemm probe */
            gf[W] = c->pool.m[i].speed;
            measured &= gf[W] > 0;
            c->pool.m[i].rank = W++;
        }
    }
    sy_balance_reset(c);
    const sy_model_cfg *mc = coord_model(c);
    int B = coord_global_batch(c);
    sy_mesh_free(&c->plan.mesh);
    if (coord_refcheck_split(c, W))
        return -1;
    int by_speed = !c->ref.on && c->cfg.cluster.balance_by_speed && measured;
    if (sy_mesh_plan(&c->plan.mesh, W, mc->n_experts, B, by_speed ? gf : NULL, 1.0))
        return -1;
    /* rows follow the measured compute per row; experts stay evenly spread, or the
     * expert work moved with them would skew the next measurement */
    sy_mesh_equal_experts(&c->plan.mesh);
    c->plan.world = W;
    c->epoch++;
    c->step = c->ckpt.last[0] ? c->ckpt.last_step : 0;
    c->bal.epoch_step0 = c->step;
    sy_info("epoch %" PRIu64 ": mesh of %d worker%s = %d data group%s x %d expert rank%s%s", c->epoch, W,
            W == 1 ? "" : "s", c->plan.mesh.dp, c->plan.mesh.dp == 1 ? "" : "s", c->plan.mesh.ep, c->plan.mesh.ep == 1 ? "" : "s",
            c->plan.mesh.balanced ? " (shares follow measured speed)" : "");
    c->rh.redo_save = 0;
    return coord_send_assignments(c, 0);
}

int coord_send_assignments(coord *c, int rehome) {
    int W = c->plan.world, B = coord_global_batch(c);
    coord_rehome_buddies(c);
    uint32_t eb[MAX_WORKERS], ee[MAX_WORKERS], r0[MAX_WORKERS], nr[MAX_WORKERS];
    char *peers[MAX_WORKERS], *keys[MAX_WORKERS], *local[MAX_WORKERS];
    for (int p = 0; p < c->plan.mesh.ep; p++) {
        eb[p] = (uint32_t)c->plan.mesh.e_begin[p];
        ee[p] = (uint32_t)c->plan.mesh.e_end[p];
    }
    for (int r = 0; r < W; r++) {
        r0[r] = (uint32_t)c->plan.mesh.row0[r];
        nr[r] = (uint32_t)c->plan.mesh.nrows[r];
        peers[r] = c->pool.m[c->plan.rank_member[r]].endpoint;
        keys[r] = c->pool.m[c->plan.rank_member[r]].key;
        local[r] = c->pool.m[c->plan.rank_member[r]].local_ep;
    }
    for (int r = 0; r < W; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        int p = sy_mesh_p(&c->plan.mesh, r);
        sy_info("  rank %d: %s (%s, %.1f GFLOP/s): rows %d..%d, experts %d..%d", r, mb->id, mb->endpoint, mb->gflops,
                c->plan.mesh.row0[r], c->plan.mesh.row0[r] + c->plan.mesh.nrows[r] - 1, c->plan.mesh.e_begin[p], c->plan.mesh.e_end[p] - 1);
        Switchyard__Assignment a = SWITCHYARD__ASSIGNMENT__INIT;
        a.run_id = c->books.run_id;
        a.epoch = c->epoch;
        a.rank = (uint32_t)r;
        a.world = (uint32_t)W;
        a.ep = (uint32_t)c->plan.mesh.ep;
        a.dp = (uint32_t)c->plan.mesh.dp;
        a.n_expert_begin = a.n_expert_end = (size_t)c->plan.mesh.ep;
        a.expert_begin = eb;
        a.expert_end = ee;
        a.n_row0 = a.n_nrows = a.n_peers = (size_t)W;
        a.row0 = r0;
        a.nrows = nr;
        a.peers = peers;
        a.n_peer_keys = c->sec.zap ? (size_t)W : 0; /* each rank's data socket accepts these keys only */
        a.peer_keys = keys;
        a.n_local_peers = (size_t)W;
        a.local_peers = local;
        a.config_yaml = c->yaml;
        a.start_step = c->step;
        a.global_batch = (uint32_t)B;
        a.job = c->ref.on ? SWITCHYARD__JOB__JOB_REFCHECK : SWITCHYARD__JOB__JOB_TRAIN;
        a.refcase_dir = c->ref.on ? (char *)c->ref.dir : "";
        a.state_follows = !rehome && c->ckpt.last[0] != 0;
        a.rehome = rehome;
        a.n_buddy = (size_t)W;
        a.buddy = c->rh.buddy;
        a.grow = rehome && c->rh.grow;
        if (a.grow) {
            a.prev_world = (uint32_t)c->rh.prev_world;
            a.n_prev_expert_begin = a.n_prev_expert_end = (size_t)c->rh.prev_world;
            a.prev_expert_begin = c->rh.prev_begin;
            a.prev_expert_end = c->rh.prev_end;
        }
        Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_ASSIGNMENT;
        env.assignment = &a;
        if (coord_send_to(c, mb, &env)) {
            /* a worker that cannot be reached now (killed with another one, say) leaves the
             * mesh; the others are told to drop this epoch and everyone re-plans */
            sy_err_prefix("sending the assignment to rank %d", r);
            drop_unreachable(c, mb, sy_lasterr());
            return 1;
        }
    }
    /* the states after every assignment: each rank learns its peers' keys before any
     * peer, done with its own assignment, knocks at its data socket */
    for (int r = 0; r < W && !rehome && c->ckpt.last[0]; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        if (send_state(c, mb, r)) {
            sy_err_prefix("sending the state of %s to rank %d", c->ckpt.last, r);
            drop_unreachable(c, mb, sy_lasterr());
            return 1;
        }
    }
    c->phase = ASSIGNING;
    c->plan.assign_started = sy_now();
    return 0;
}

static member *by_id(coord *c, const char *id) {
    for (int i = 0; i < c->pool.n; i++)
        if (!strcmp(c->pool.m[i].id, id) || !strcmp(c->pool.m[i].hb_id, id))
            return &c->pool.m[i];
    return NULL;
}

static int live_count(const coord *c) {
    int k = 0;
    for (int i = 0; i < c->pool.n; i++)
        k += c->pool.m[i].alive;
    return k;
}

/* ---------------------------------------------------------------- steps */

static void send_step(coord *c) {
    const sy_train_cfg *tc = &c->cfg.train;
    int64_t next = c->step + 1;
    int save = !c->ref.on && (next == tc->steps || (c->cfg.checkpoint.every > 0 && next % c->cfg.checkpoint.every == 0));
    Switchyard__StepCmd s = SWITCHYARD__STEP_CMD__INIT;
    s.epoch = c->epoch;
    s.step = c->step;
    s.grads = c->ref.on; /* a checkpoint is collected after the step commits (send_save_cmd) */
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_STEP;
    env.step = &s;
    c->cur = (coord_step){.grad_norm = c->cur.grad_norm, .lr = c->cur.lr}; /* status shows the last until reports come */
    for (int r = 0; r < c->plan.world; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        mb->reported = mb->saved = 0;
        coord_send_to(c, mb, &env);
    }
    c->save.expect = c->ref.on;
    c->save.after = save;
    c->save.collecting = 0;
    if (c->save.expect) {
        c->save.step = 0;
        sy_ckpt_writer_destroy(&c->save.writer);
        if (!(c->save.writer = sy_ckpt_writer_new(c->ref.out_dir, c->save.step)))
            sy_error("checkpoint: %s", sy_lasterr());
    }
    c->save.only = 0;
    c->cur.started = sy_now();
    c->phase = TRAINING;
}

/* Asks every rank for its state as it is now (no step): a checkpoint once its step has
 * committed (the command commits it on the workers), and to stop cleanly (only). */
static void send_save_cmd(coord *c, int only) {
    Switchyard__StepCmd s = SWITCHYARD__STEP_CMD__INIT;
    s.epoch = c->epoch;
    s.step = c->step;
    s.save_only = 1;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_STEP;
    env.step = &s;
    sy_ckpt_writer_destroy(&c->save.writer);
    c->save.step = c->step;
    if (!(c->save.writer = sy_ckpt_writer_new(c->cfg.checkpoint.dir, c->step))) {
        sy_error("checkpoint: %s", sy_lasterr());
        c->phase = DONE;
        return;
    }
    for (int r = 0; r < c->plan.world; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        mb->reported = 1; /* no step report comes */
        mb->saved = 0;
        coord_send_to(c, mb, &env);
    }
    c->save.expect = 1;
    c->save.only = only;
    c->save.collecting = 1;
    c->phase = TRAINING;
    if (only)
        sy_info("saving the state at step %" PRId64 " before stopping", c->step);
}

void coord_send_save(coord *c) { send_save_cmd(c, 0); }


/* The step's report sums become the last step (status), a run-log record and, every
 * log_every steps, a progress line. */
static void log_step(coord *c) {
    const sy_train_cfg *tc = &c->cfg.train;
    int64_t done = c->step + 1;
    double W = c->plan.world > 0 ? c->plan.world : 1;
    c->last.loss = c->cur.loss;
    c->last.step_time = c->cur.time;
    c->last.tps = c->cur.time > 0 ? c->cur.tokens / c->cur.time : 0;
    c->last.compute = c->cur.t_compute / W;
    c->last.a2a = c->cur.t_a2a / W;
    c->last.ar = c->cur.t_ar / W;
    sy_run_times t = {.step = c->cur.time,
                      .compute = c->last.compute,
                      .alltoall = c->last.a2a,
                      .allreduce = c->last.ar,
                      .optimizer = c->cur.t_opt / W,
                      .replica = c->cur.t_replica / W,
                      .busiest = c->cur.t_busiest};
    sy_runlog_write_step(c->books.log, &(sy_runlog_step){.run_id = c->books.run_id,
                                                         .epoch = c->epoch,
                                                         .step = done,
                                                         .loss = c->cur.loss,
                                                         .lr = c->cur.lr,
                                                         .grad_norm = c->cur.grad_norm,
                                                         .tokens_per_s = c->last.tps,
                                                         .times = &t,
                                                         .bytes_sent = c->cur.bytes_sent,
                                                         .workers = c->plan.world,
                                                         .time = sy_now() - c->books.t_start});
    sy_progress_add(&c->books.progress, &c->cur.loss, (int64_t)c->cur.tokens);
    if (sy_progress_due(done, tc->steps, c->start_step + 1, tc->log_every)) {
        sy_progress_log(&c->books.progress, done, tc->steps, (int64_t)tc->batch_size * tc->seq_len, c->cur.lr,
                        c->cur.grad_norm, &t);
        if (c->bal.straggler_rank >= 0)
            sy_info("step %6" PRId64 " | straggler rank %d (%s): the others waited %.0f ms for it", done,
                    c->bal.straggler_rank, c->pool.m[c->plan.rank_member[c->bal.straggler_rank]].id,
                    c->bal.straggler_wait * 1e3);
    }
}

static void record_validation(coord *c, double val, int64_t step) {
    c->last.val_loss = val;
    c->last.val_step = step;
    if (!isnan(val))
        sy_runlog_write_val(c->books.log, c->books.run_id, step, val, c->plan.world, sy_now() - c->books.t_start);
}

/* The end of the run, once the final checkpoint's validation is in. */
/* Where the last step's checkpoint is committed. */
static void final_dir(const coord *c, char *out, size_t n) {
    snprintf(out, n, "%s/step-%08" PRId64, c->cfg.checkpoint.dir, c->step);
}

static void finish_run(coord *c, double val) {
    char dir[4096];
    final_dir(c, dir, sizeof dir);
    record_validation(c, val, c->step);
    sy_coord_event(c, "done: step %lld, validation loss %.4f", (long long)c->step, val);
    if (c->ckpt.last_step == c->step && !strcmp(c->ckpt.last, dir))
        sy_info("trained to step %" PRId64 " in %.1fs on %d worker%s; validation loss %.4f nats/byte; model saved "
                "in %s",
                c->step, c->books.t_trained - c->books.t_start, c->plan.world, c->plan.world == 1 ? "" : "s", val,
                dir);
    else {
        sy_error("trained to step %" PRId64 " but its checkpoint %s was not committed: no model saved", c->step, dir);
        c->code = 1;
    }
    sy_expert_load_print(&c->books.load, &c->cfg.model, stdout);
    coord_rehome_summary(c);
    c->phase = DONE;
}

/* Validations finish in their own thread; the last one ends the run. */
static void poll_validation(coord *c) {
    double val;
    int64_t step;
    if (coord_eval_poll(&c->eval, &val, &step)) {
        if (c->phase == EVALUATING && step == c->step)
            return finish_run(c, val);
        if (!isnan(val)) {
            record_validation(c, val, step);
            sy_info("validation loss %.4f nats/byte at step %" PRId64, val, step);
        }
    }
    /* the final validation waits for one still running on an earlier checkpoint */
    char dir[4096];
    final_dir(c, dir, sizeof dir);
    if (c->phase == EVALUATING && !c->eval.running && !coord_eval_start(&c->eval, &c->cfg, dir, c->step))
        finish_run(c, NAN);
}

int coord_commit_save(coord *c, int keep) {
    double t0 = sy_now();
    if (sy_ckpt_writer_commit(c->save.writer, keep)) {
        sy_error("checkpoint step %" PRId64 ": %s", c->save.step, sy_lasterr());
        return -1;
    }
    uint64_t bytes;
    double secs;
    sy_ckpt_writer_stats(c->save.writer, &bytes, &secs);
    sy_info("checkpoint %s: %.1f MB from %d worker%s, committed in %.2fs (%.0f MB/s)", sy_ckpt_writer_dir(c->save.writer),
            bytes / 1e6, c->plan.world, c->plan.world == 1 ? "" : "s", sy_now() - t0,
            bytes / 1e6 / (secs > 0 ? secs : 1e-9));
    return 0;
}

/* A checkpoint could not be written (a full disk, a failing device): the run stops here
 * rather than train on with nothing durable after the last good checkpoint. That one is
 * verified again (every checksum) and named, so the user knows where a restart begins. */
static void save_failed(coord *c, const char *why) {
    sy_error("checkpoint step %" PRId64 " could not be written in %s: %s", c->save.step, c->cfg.checkpoint.dir, why);
    sy_ckpt_writer_destroy(&c->save.writer); /* its temporary directory goes with it */
    c->save.expect = 0;
    char dir[4096];
    int64_t st = 0;
    int found = sy_ckpt_latest(c->cfg.checkpoint.dir, dir, sizeof dir, &st);
    if (found == 0)
        sy_error("stopping the run at step %" PRId64 " (no model saved after step %" PRId64 "); the last checkpoint "
                 "%s verifies: free space and run again to resume from it",
                 c->save.step, st, dir);
    else
        sy_error("stopping the run at step %" PRId64 "; no checkpoint in %s verifies, so a restart begins at step 0",
                 c->save.step, c->cfg.checkpoint.dir);
    sy_coord_event(c, "checkpoint step %lld failed: stopped", (long long)c->save.step);
    c->code = 1;
    c->phase = DONE;
}

static void finish_save(coord *c) {
    if (c->ref.on)
        return coord_refcheck_finish(c);
    if (!c->save.writer)
        return save_failed(c, "no checkpoint writer (see the error above)");
    if (sy_run_ckpt_meta(c->save.writer, c->books.run_id, c->save.step, c->plan.world, c->yaml) ||
        coord_commit_save(c, c->cfg.checkpoint.keep))
        return save_failed(c, sy_lasterr());
    uint64_t bytes;
    double secs;
    sy_ckpt_writer_stats(c->save.writer, &bytes, &secs);
    snprintf(c->ckpt.last, sizeof c->ckpt.last, "%s", sy_ckpt_writer_dir(c->save.writer));
    c->ckpt.last_step = c->save.step;
    c->ckpt.time = sy_now();
    sy_coord_event(c, "checkpoint step %lld (%.1f MB)", (long long)c->save.step, bytes / 1e6);
    /* validation runs on committed checkpoints, off the loop (the last one ends the run);
     * not on the one a signal asked for: the coordinator is about to stop */
    if (c->cfg.train.eval_every > 0 && c->save.step < c->cfg.train.steps && !c->save.only)
        coord_eval_start(&c->eval, &c->cfg, c->ckpt.last, c->save.step);
}

static void step_complete(coord *c) {
    c->cur.time = sy_now() - c->cur.started;
    if (c->ref.on)
        return finish_save(c);
    if (c->ckpt.recover_started) {
        sy_info("recovered: first step after the restart done %.2f s after the failure (the dead worker's last "
                "heartbeat, or the failed step)",
                sy_now() - c->ckpt.recover_started);
        sy_coord_event(c, "recovered on %d workers in %.2f s", c->plan.world, sy_now() - c->ckpt.recover_started);
        c->ckpt.recover_started = 0;
    }
    coord_rehome_step_done(c);
    if (c->save.only) {
        finish_save(c);
        sy_ckpt_writer_destroy(&c->save.writer);
        c->phase = DONE;
        return;
    }
    int saved = c->save.collecting;
    if (saved) { /* the state after the step, collected once the step committed */
        finish_save(c);
        sy_ckpt_writer_destroy(&c->save.writer);
        c->save.collecting = c->save.expect = 0;
        if (c->phase == DONE)
            return; /* the save failed: stopped */
    } else {
        sy_balance_straggler(c);
        log_step(c);
        c->step++;
        if (c->step > c->ckpt.failed_at)
            c->ckpt.failures = 0;
        if (c->save.after) {
            c->save.after = 0;
            send_save_cmd(c, 0);
            return;
        }
    }
    if (c->ckpt.stop_requested && c->step < c->cfg.train.steps) {
        if (saved) {
            c->phase = DONE;
            return;
        }
        send_save_cmd(c, 1);
        return;
    }
    if (standby_count(c) > 0 && c->step < c->cfg.train.steps && coord_rehome_join_allowed(c) &&
        coord_rehome_grow(c) == 0)
        return; /* the joiners get their state from the live workers; the step follows once all are ready */
    if (saved && standby_count(c) > 0 && c->step < c->cfg.train.steps && coord_rehome_join_allowed(c)) {
        sy_info("checkpoint boundary: admitting %d waiting worker%s", standby_count(c),
                standby_count(c) == 1 ? "" : "s");
        coord_rehome_note_join(c, standby_count(c));
        c->phase = WAITING; /* the main loop re-plans with everyone alive */
        return;
    }
    if (c->step < c->cfg.train.steps && coord_rehome_leave_due(c))
        return; /* a planned shrink: the mesh is re-homed, the step follows once it is ready */
    if (saved && c->step < c->cfg.train.steps && sy_balance_due(c)) {
        c->phase = WAITING; /* the main loop re-plans with the measured shares */
        return;
    }
    if (c->step >= c->cfg.train.steps) {
        c->books.t_trained = sy_now();
        c->phase = EVALUATING; /* the loop goes on (heartbeats) while the final validation runs */
        poll_validation(c);
        return;
    }
    send_step(c);
}

/* ---------------------------------------------------------------- handlers */

/* Tells the worker with routing id `id` why it may not take part. */
static void send_refuse(coord *c, const char *id, const char *reason) {
    Switchyard__Refuse no = SWITCHYARD__REFUSE__INIT;
    no.reason = (char *)reason;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_REFUSE;
    env.refuse = &no;
    sy_ctrl_send(c->router, id, strlen(id), &env, NULL, 0);
}

/* A row of the member table that may be reused: a dead worker not in the current mesh. */
static member *free_slot(coord *c) {
    for (int i = 0; i < c->pool.n; i++)
        if (!c->pool.m[i].alive && c->pool.m[i].rank < 0)
            return &c->pool.m[i];
    return NULL;
}

static void on_register(coord *c, const char *id, const char *key, const Switchyard__Register *r,
                        const char *conn_addr) {
    char reason[256] = "";
    member *known = by_id(c, id);
    if (r->protocol_version != SWITCHYARD__VERSION__PROTOCOL_VERSION)
        snprintf(reason, sizeof reason, "protocol version %u, this coordinator speaks %d", r->protocol_version,
                 SWITCHYARD__VERSION__PROTOCOL_VERSION);
    else if (r->data_version != SWITCHYARD__VERSION__DATA_VERSION)
        snprintf(reason, sizeof reason,
                 "data protocol version %u, this coordinator's workers speak %d: run the same switchyard build "
                 "on every machine",
                 r->data_version, SWITCHYARD__VERSION__DATA_VERSION);
    else if (r->byte_order != 1)
        snprintf(reason, sizeof reason, "big-endian workers are not supported (tensors travel little-endian)");
    else if (!r->peer_endpoint || strncmp(r->peer_endpoint, "tcp://", 6))
        snprintf(reason, sizeof reason, "no usable peer endpoint ('%s')", r->peer_endpoint ? r->peer_endpoint : "");
    else if (c->sec.zap && known && strcmp(known->key, key))
        snprintf(reason, sizeof reason, "worker id '%s' belongs to another key", sy_esc_str(0, id));
    else if (known && known->banned)
        snprintf(reason, sizeof reason, "worker id '%s' was removed: it never finished admission", sy_esc_str(0, id));
    else if (!known && standby_count(c) >= c->sec.max_pending)
        snprintf(reason, sizeof reason, "%d workers already wait to join (--max-pending)", c->sec.max_pending);
    else if (c->pool.n >= MAX_WORKERS && !known && !free_slot(c))
        snprintf(reason, sizeof reason, "the run already has %d workers", MAX_WORKERS);
    if (reason[0]) {
        sy_ratelog_warn(&c->sec.reject_log, "refusing worker %s: %s", id, reason);
        send_refuse(c, id, reason);
        return;
    }
    member *mb = known;
    if (!mb) {
        /* a dead worker outside the mesh leaves its row to a newcomer when the table is full */
        mb = c->pool.n < MAX_WORKERS ? &c->pool.m[c->pool.n++] : free_slot(c);
        if (!mb)
            return; /* cannot happen: refused above */
        memset(mb, 0, sizeof *mb);
        snprintf(mb->id, sizeof mb->id, "%s", id);
        snprintf(mb->hb_id, sizeof mb->hb_id, "%s/hb", id);
        snprintf(mb->key, sizeof mb->key, "%s", key);
        mb->rank = -1;
    }
    /* what a peer says about itself reaches logs and the status table escaped */
    sy_esc(mb->host, sizeof mb->host, r->host, strlen(r->host));
    sy_esc(mb->endpoint, sizeof mb->endpoint, r->peer_endpoint, strlen(r->peer_endpoint));
    /* a local endpoint is only ever used by workers that find it theirs (peer.h); one that
     * is not a plain ipc:// path is left out, not refused */
    mb->local_ep[0] = '\0';
    if (sy_peer_local_endpoint_ok(r->local_endpoint, sizeof mb->local_ep))
        snprintf(mb->local_ep, sizeof mb->local_ep, "%s", r->local_endpoint);
    snprintf(mb->conn_addr, sizeof mb->conn_addr, "%s", conn_addr ? conn_addr : "");
    mb->gflops = r->gflops;
    mb->cores = r->cores;
    mb->threads = r->threads;
    mb->pid = r->pid;
    mb->last_seen = sy_now();
    if (!mb->alive) {
        mb->alive = 1;
        sy_info("worker %s joined from %s (%u cores, %u threads, %.1f GFLOP/s); %d of %d needed", id, mb->endpoint,
                mb->cores, mb->threads, mb->gflops, live_count(c), c->pool.min_workers);
        sy_coord_event(c, "worker %s joined (%s)", id, mb->host);
        if (c->phase == ASSIGNING || c->phase == TRAINING) {
            if (c->cfg.cluster.join_at_once)
                recover(c, "a worker joined (join_at_once)");
            else
                sy_info("worker %s waits for the next checkpoint to join the mesh", id);
        }
    } else if (mb->rank >= 0 && c->phase == ASSIGNING && !mb->ready &&
               sy_now() - c->plan.assign_started < c->cfg.cluster.timeout_ms / 1000.0) {
        /* sent before its Assignment reached it (a worker registers again every second
         * until it is assigned): the Assignment is on its way. A worker that got it and
         * dropped it has heard nothing for timeout_ms first, one that could not apply it
         * says so with an Error, and one that never gets ready is removed by
         * check_admission: none of them is this one. */
        sy_info("worker %s (rank %d) registered again before its assignment reached it: the assignment stands",
                id, mb->rank);
    } else if (mb->rank >= 0 && (c->phase == ASSIGNING || c->phase == TRAINING)) {
        /* a mesh member registering again has dropped its assignment: re-plan; one that
         * does it a third time without getting Ready in between never finishes admission
         * (below the 5 failed attempts that give the run up) */
        char why[400];
        if (++mb->reregs >= 3) {
            mb->alive = 0;
            mb->banned = 1;
            sy_error("worker %s (rank %d) registered again without getting ready: removed", id, mb->rank);
            sy_coord_event(c, "rank %d (%s) removed: never finished admission", mb->rank, id);
            snprintf(why, sizeof why, "rank %d (%s) never finished admission", mb->rank, id);
        } else {
            snprintf(why, sizeof why, "rank %d (%s) registered again", mb->rank, id);
        }
        recover(c, why);
    }
}

/* "127.x.x.x", "::1", "localhost" (and those inside an endpoint "tcp://HOST:PORT"). */
static int is_loopback(const char *a) {
    if (!strncmp(a, "tcp://", 6))
        a += 6;
    if (*a == '[')
        a++;
    return !strncmp(a, "127.", 4) || !strncmp(a, "::1", 3) || !strncmp(a, "::ffff:127.", 11) ||
           !strncmp(a, "localhost", 9);
}

/* A worker that advertises a loopback data endpoint can only be reached from the
 * coordinator's machine. When any live worker comes from another machine (its control
 * connection arrives from a non-loopback address), such workers are refused with the
 * reason, before a mesh is planned that could never exchange a byte. */
static void refuse_loopback_endpoints(coord *c) {
    const member *remote = NULL;
    for (int i = 0; i < c->pool.n && !remote; i++)
        if (c->pool.m[i].alive && c->pool.m[i].conn_addr[0] && !is_loopback(c->pool.m[i].conn_addr))
            remote = &c->pool.m[i];
    if (!remote)
        return;
    for (int i = 0; i < c->pool.n; i++) {
        member *mb = &c->pool.m[i];
        if (!mb->alive || !is_loopback(mb->endpoint))
            continue;
        char reason[1200];
        snprintf(reason, sizeof reason,
                 "its data endpoint %s is a loopback address, which worker %s (connecting from %s) on another machine "
                 "cannot reach; start it with --advertise ADDR (an address the other machines reach it by), or "
                 "--coordinator with the coordinator's network address",
                 mb->endpoint, remote->id, remote->conn_addr);
        sy_error("refusing worker %s: %s", mb->id, reason);
        sy_coord_event(c, "worker %s refused: loopback endpoint", mb->id);
        send_refuse(c, mb->id, reason);
        mb->alive = 0;
        if (!c->plan.epochs_started && c->pool.start_workers > c->pool.min_workers) {
            c->pool.start_workers--; /* the first mesh no longer waits for the refused worker */
            sy_info("the first mesh now waits for %d worker%s", c->pool.start_workers,
                    c->pool.start_workers == 1 ? "" : "s");
        }
    }
}

static int standby_count(const coord *c) {
    int k = 0;
    for (int i = 0; i < c->pool.n; i++)
        k += c->pool.m[i].alive && c->pool.m[i].rank < 0;
    return k;
}

static void on_leaving(coord *c, member *mb, const char *why);

/* The worker's training data must be the run's: same content hash as the coordinator's
 * train.bin (or, when the coordinator has none, as the first worker's). */
static int data_matches(coord *c, member *mb, uint64_t h) {
    if (c->ref.on)
        return 1;
    if (!c->data.hash) {
        c->data.hash = h;
        snprintf(c->data.from, sizeof c->data.from, "worker %s's (the first to report)", mb->id);
        sy_info("training data: content hash %016llx, from worker %s", (unsigned long long)h, mb->id);
        return 1;
    }
    if (h == c->data.hash)
        return 1;
    char reason[4800];
    snprintf(reason, sizeof reason,
             "its training data differs: its train.bin has content hash %016llx, %s has %016llx (copy the "
             "coordinator's data/ or run the same `switchyard prepare`)",
             (unsigned long long)h, c->data.from, (unsigned long long)c->data.hash);
    send_refuse(c, mb->id, reason);
    on_leaving(c, mb, reason);
    return 0;
}

static void on_ready(coord *c, member *mb, const Switchyard__Ready *r) {
    if (c->phase != ASSIGNING || r->epoch != c->epoch || mb->rank < 0)
        return;
    if (!data_matches(c, mb, r->data_hash))
        return;
    mb->ready = 1;
    mb->reregs = 0;
    for (int i = 0; i < c->plan.world; i++)
        if (!c->pool.m[c->plan.rank_member[i]].ready)
            return;
    sy_info("all %d workers ready for epoch %" PRIu64 "; %s at step %" PRId64, c->plan.world, c->epoch,
            c->ref.on ? "refcheck" : "training", c->step);
    c->books.progress.t0 = sy_now();
    if (c->rh.redo_save) { /* a rank died while this checkpoint was collected: collect it again */
        c->rh.redo_save = 0;
        return send_save_cmd(c, 0);
    }
    send_step(c);
}

static int all_done(coord *c) {
    for (int r = 0; r < c->plan.world; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        if (!mb->reported || (c->save.expect && !mb->saved))
            return 0;
    }
    return 1;
}

static void on_report(coord *c, member *mb, const Switchyard__StepReport *r) {
    if (c->phase != TRAINING || r->epoch != c->epoch || r->step != c->step || mb->rank != (int)r->rank) {
        sy_ratelog_warn(&c->sec.reject_log, "stale report from %s (epoch %" PRIu64 " step %" PRId64 ") ignored",
                        mb->id, (uint64_t)r->epoch, (int64_t)r->step);
        return;
    }
    if (mb->reported)
        return;
    mb->reported = 1;
    mb->step_time = r->t_compute + r->t_alltoall + r->t_allreduce + r->t_optimizer;
    mb->wait_s = r->t_alltoall + r->t_allreduce;
    sy_balance_sample(mb, r->t_compute, c->plan.mesh.nrows[mb->rank], c->step == c->bal.epoch_step0);
    c->cur.loss.total += r->loss;
    c->cur.loss.ce += r->ce;
    c->cur.loss.aux += r->aux;
    c->cur.loss.z += r->z;
    c->cur.tokens += r->tokens;
    c->cur.grad_norm = r->grad_norm;
    c->cur.lr = r->lr;
    c->cur.t_compute += r->t_compute;
    c->cur.t_a2a += r->t_alltoall;
    c->cur.t_ar += r->t_allreduce;
    c->cur.t_opt += r->t_optimizer;
    c->cur.t_busiest = fmax(c->cur.t_busiest, r->t_compute + r->t_optimizer);
    c->cur.bytes_sent += r->bytes_sent;
    c->cur.replica_bytes += r->replica_bytes;
    c->cur.replica_memory += r->replica_memory;
    c->cur.t_replica += r->t_replica;
    sy_expert_load *ld = &c->books.load;
    size_t n = sy_expert_load_count(ld);
    if (ld->wanted && r->n_expert_wanted == n && r->n_expert_kept == n) {
        int by_lang = ld->lang && (int)r->languages == ld->n_langs && r->n_expert_lang == sy_expert_load_lang_count(ld);
        sy_expert_load_add_counts(ld, r->expert_wanted, r->expert_kept, by_lang ? r->expert_lang : NULL);
    }
    if (all_done(c))
        step_complete(c);
}

static void on_shard(coord *c, member *mb, const Switchyard__TensorShard *t, const void *payload, size_t len) {
    if (!c->save.writer || t->epoch != c->epoch) {
        sy_ratelog_warn(&c->sec.reject_log, "unexpected tensor %s from %s ignored", sy_esc_str(0, t->name), mb->id);
        return;
    }
    sy_dtype dt;
    if (sy_dtype_parse(t->dtype, &dt) < 0 || t->n_shape > SY_CKPT_MAX_DIMS || len != t->bytes) {
        sy_error("tensor %s from %s: bad dtype '%s', shape or size (%zu bytes, header says %" PRIu64 ")", t->name,
                 mb->id, t->dtype, len, (uint64_t)t->bytes);
        c->code = 1;
        return;
    }
    if (g_fault_step >= 0 && c->save.step == g_fault_step && ++g_fault_shards == 10) {
        sy_warn("fault drill: killing the coordinator while checkpoint %" PRId64 " is half written", c->save.step);
        raise(SIGKILL);
    }
    if (sy_ckpt_writer_add_crc(c->save.writer, t->name, dt, (int)t->n_shape, t->shape, payload, len, t->crc32c)) {
        char why[1400];
        snprintf(why, sizeof why, "tensor %s from %s: %s", t->name, mb->id, sy_lasterr());
        if (c->ref.on) {
            sy_error("%s", why);
            c->code = 1;
        } else {
            save_failed(c, why);
        }
    }
}

static void on_save_done(coord *c, member *mb, const Switchyard__SaveDone *s) {
    if (s->epoch != c->epoch)
        return;
    mb->saved = 1;
    if (c->phase == TRAINING && all_done(c))
        step_complete(c);
}

static void on_heartbeat(coord *c, member *mb) { mb->last_seen = sy_now(); }

void coord_broadcast_abort(coord *c, const char *reason) {
    Switchyard__Abort a = SWITCHYARD__ABORT__INIT;
    a.epoch = c->epoch;
    a.reason = (char *)reason;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_ABORT;
    env.abort = &a;
    for (int i = 0; i < c->pool.n; i++)
        if (c->pool.m[i].alive) {
            sy_ctrl_send(c->router, c->pool.m[i].hb_id, strlen(c->pool.m[i].hb_id), &env, NULL, 0);
            sy_ctrl_send(c->router, c->pool.m[i].id, strlen(c->pool.m[i].id), &env, NULL, 0);
        }
}

/* The mesh changed or a step failed: drop the epoch in flight everywhere and go on from
 * the last complete checkpoint with the workers that are alive. */
static void recover(coord *c, const char *reason) {
    if (c->ref.on) {
        sy_error("refcheck: %s", reason);
        c->code = 1;
        c->phase = DONE;
        return;
    }
    if (c->ckpt.stop_requested) {
        /* the workers are going too (one signal for all): no recovery, nothing to wait for */
        stop_now(c, reason);
        return;
    }
    if (c->step == c->ckpt.failed_at) {
        if (++c->ckpt.failures >= 5) {
            sy_error("step %" PRId64 " failed %d times in a row (%s): giving up", c->step, c->ckpt.failures, reason);
            c->code = 1;
            c->phase = DONE;
            return;
        }
    } else {
        c->ckpt.failed_at = c->step;
        c->ckpt.failures = 1;
    }
    if (!c->ckpt.recover_started)
        c->ckpt.recover_started = sy_now();
    coord_broadcast_abort(c, reason);
    if (c->save.writer)
        sy_ckpt_writer_destroy(&c->save.writer); /* a half-collected checkpoint is thrown away */
    c->save.expect = c->save.after = c->save.collecting = 0;
    coord_rehome_note_rollback(c, reason);
    int live = live_count(c);
    sy_warn("recovering (%s): %d worker%s alive, resuming from %s", reason, live, live == 1 ? "" : "s",
            c->ckpt.last[0] ? c->ckpt.last : "the start (no checkpoint yet)");
    sy_coord_event(c, "recovering: %s; back to step %lld", reason, (long long)(c->ckpt.last[0] ? c->ckpt.last_step : 0));
    c->phase = WAITING;
    if (live < c->pool.min_workers)
        sy_warn("waiting for workers: %d of %d needed", live, c->pool.min_workers);
}

/* Whether a mesh is assigned or training (a failure there means recovery). */
static int in_epoch(const coord *c) { return c->phase == ASSIGNING || c->phase == TRAINING || c->phase == SAVING; }

/* A worker says it leaves the run (a signal, no usable data): it is out of the mesh now,
 * without waiting for its heartbeats to stop. */
static void on_leaving(coord *c, member *mb, const char *why) {
    if (!mb->alive)
        return;
    mb->alive = 0;
    sy_warn("worker %s (rank %d) is out of the run: %s", mb->id, mb->rank, why);
    sy_coord_event(c, "worker %s left: %.120s", mb->id, why);
    if (mb->rank >= 0 && in_epoch(c)) {
        char r[400];
        snprintf(r, sizeof r, "rank %d (%s) left", mb->rank, mb->id);
        if (c->ckpt.stop_requested)
            return stop_now(c, r); /* the others got the same signal: no new mesh to wait on */
        if (!c->ckpt.recover_started)
            c->ckpt.recover_started = sy_now();
        if (coord_rehome_try(c, mb->rank, sy_now(), r) == 0)
            return; /* its experts and rows go to its buddy, no rollback */
        /* a worker leaving is no failure of the step: it must not use up the retries */
        int failures = c->ckpt.failures;
        int64_t failed_at = c->ckpt.failed_at;
        recover(c, r);
        if (c->phase != DONE) {
            c->ckpt.failures = failures;
            c->ckpt.failed_at = failed_at;
        }
    }
}

/* A stop was asked for (a signal) and cannot complete as planned (a worker left, or the
 * save takes too long): stop now. The last complete checkpoint is untouched. */
static void stop_now(coord *c, const char *why) {
    sy_warn("stopping without saving step %" PRId64 ": %s", c->step, why);
    if (c->save.writer)
        sy_ckpt_writer_destroy(&c->save.writer); /* the half-collected save never commits */
    c->save.expect = 0;
    c->code = 130;
    c->phase = DONE;
}

/* A mesh member that has not sent Ready long after its assignment never finishes
 * admission: it is removed and the mesh re-planned without it. The bound leaves room for
 * the state transfer (10 peer timeouts, at least 5 s); its id may not register again. */
static void check_admission(coord *c) {
    if (c->phase != ASSIGNING)
        return;
    double limit = c->cfg.cluster.timeout_ms * 10 / 1000.0;
    if (limit < 5)
        limit = 5;
    if (sy_now() - c->plan.assign_started <= limit)
        return;
    for (int r = 0; r < c->plan.world; r++) {
        member *mb = &c->pool.m[c->plan.rank_member[r]];
        if (mb->ready || !mb->alive)
            continue;
        mb->alive = 0;
        mb->banned = 1;
        sy_error("worker %s (rank %d) not ready %.0f s after its assignment: removed", mb->id, r, limit);
        sy_coord_event(c, "rank %d (%s) removed: never finished admission", r, mb->id);
    }
    recover(c, "a worker never finished admission");
}

static void check_liveness(coord *c) {
    check_admission(c);
    double now = sy_now(), limit = c->cfg.cluster.timeout_ms / 1000.0;
    for (int i = 0; i < c->pool.n; i++) {
        member *mb = &c->pool.m[i];
        if (!mb->alive || now - mb->last_seen <= limit)
            continue;
        mb->alive = 0;
        sy_error("worker %s (rank %d) silent for %.1f s: declared dead", mb->id, mb->rank, now - mb->last_seen);
        sy_coord_event(c, "rank %d (%s) died", mb->rank, mb->id);
        if (mb->rank >= 0 && in_epoch(c)) {
            char why[400];
            snprintf(why, sizeof why, "rank %d (%s) died", mb->rank, mb->id);
            if (c->ckpt.stop_requested) {
                stop_now(c, why); /* no re-homing on the way out */
                return;
            }
            if (!c->ckpt.recover_started)
                c->ckpt.recover_started = mb->last_seen; /* death: when it was last heard */
            if (coord_rehome_try(c, mb->rank, mb->last_seen, why) == 0)
                continue; /* re-homed from the replicas: no rollback */
            recover(c, why);
        }
    }
}

/* ---------------------------------------------------------------- the loop */

/* The periodic work of one loop turn, whatever arrived: validations that finished,
 * heartbeats, liveness, and a new mesh once enough workers wait. -1: the run cannot go on. */
static void heartbeat_if_due(coord *c) {
    double now = sy_now();
    if (now >= c->next_heartbeat) {
        send_heartbeats(c);
        c->next_heartbeat = now + c->cfg.cluster.heartbeat_ms / 1000.0;
    }
}

static int tick(coord *c) {
    poll_validation(c);
    heartbeat_if_due(c);
    check_liveness(c);
    if (c->phase == WAITING)
        refuse_loopback_endpoints(c);
    if (c->phase == WAITING && live_count(c) >= (c->plan.epochs_started ? c->pool.min_workers : c->pool.start_workers)) {
        c->plan.epochs_started++;
        int se = start_epoch(c);
        if (se < 0) {
            sy_error("%s", sy_lasterr());
            c->code = 1;
            return -1;
        }
        if (se > 0 && live_count(c) < c->pool.min_workers)
            sy_warn("waiting for workers: %d of %d needed", live_count(c), c->pool.min_workers);
    }
    return 0;
}

/* One control message, to the handler named after it. */
static void dispatch(coord *c, const char *id, const char *key, const char *conn_addr, const Switchyard__Envelope *e,
                     const void *payload, size_t len) {
    member *mb = by_id(c, id);
    if (mb)
        mb->last_seen = sy_now();
    if (e->msg_case == SWITCHYARD__ENVELOPE__MSG_REGISTER)
        return on_register(c, id, key, e->register_, conn_addr);
    if (!mb)
        return sy_debug("message %d from unknown peer '%s' ignored", (int)e->msg_case, sy_esc_str(0, id));
    if (strcmp(mb->key, key))
        return sy_ratelog_warn(&c->sec.reject_log, "message %d for worker %s from another key (%s) dropped",
                               (int)e->msg_case, sy_esc_str(0, id), sy_esc_str(1, key));
    switch (e->msg_case) {
    case SWITCHYARD__ENVELOPE__MSG_READY:
        return on_ready(c, mb, e->ready);
    case SWITCHYARD__ENVELOPE__MSG_REPORT:
        return on_report(c, mb, e->report);
    case SWITCHYARD__ENVELOPE__MSG_SHARD:
        return on_shard(c, mb, e->shard, payload, len);
    case SWITCHYARD__ENVELOPE__MSG_SAVE_DONE:
        return on_save_done(c, mb, e->save_done);
    case SWITCHYARD__ENVELOPE__MSG_HEARTBEAT:
        if (!mb->alive) /* declared dead, yet alive: back to standby, so it can join again */
            coord_rehome_release_stale(c, mb, e->heartbeat->epoch);
        return on_heartbeat(c, mb);
    case SWITCHYARD__ENVELOPE__MSG_ERROR:
        if (e->error->leaving)
            return on_leaving(c, mb, e->error->message);
        sy_error("worker %s (rank %d): %s", mb->id, mb->rank, sy_esc_str(0, e->error->message));
        if (e->error->epoch == c->epoch && mb->rank >= 0 && in_epoch(c)) {
            char why[600];
            snprintf(why, sizeof why, "rank %d failed: %.500s", mb->rank, sy_esc_str(0, e->error->message));
            recover(c, why);
        }
        return;
    default:
        sy_debug("unexpected message %d from %s", (int)e->msg_case, mb->id);
    }
}

static void read_control(coord *c) {
    for (int k = 0; k < 64 && c->phase != DONE; k++) {
        sy_ctrl_msg m;
        int r = sy_ctrl_recv(c->router, 1, &m, ZMQ_DONTWAIT);
        if (r == -1)
            return;
        if (r == -2) {
            sy_ratelog_warn(&c->sec.reject_log, "%s", sy_lasterr());
            continue;
        }
        if (!sy_id_valid(m.id, m.id_len) || strlen(m.id) != m.id_len) {
            static sy_ratelog bad_ids = SY_RATELOG_INIT(10.0, 5);
            char escaped[SY_ID_MAX * 4 + 8];
            sy_ratelog_warn(&bad_ids, "a message from a malformed routing id '%s' dropped (ids are 1..%d printable "
                            "characters)", sy_esc(escaped, sizeof escaped, m.id, m.id_len), SY_ID_MAX);
            sy_ctrl_msg_free(&m);
            continue;
        }
        dispatch(c, m.id, m.key, m.peer_addr, m.env, m.payload, m.payload_len);
        sy_ctrl_msg_free(&m);
        /* a checkpoint's shards are written and fsynced one per message: on a busy disk
         * a burst of them outlasts the workers' timeout, and silence would make every
         * worker drop the run and register again */
        heartbeat_if_due(c);
    }
}

/* A first signal while training: finish the step, save, stop. Otherwise stop at once
 * (returns 1). */
static int on_stop_signal(coord *c, int *seen, double *deadline) {
    if (*seen || c->phase != TRAINING || c->ref.on)
        return 1;
    *seen = 1;
    /* the step and the save it asks for get a bounded time: workers that got the same
     * signal may be gone already */
    *deadline = sy_now() + 2.0 * c->cfg.cluster.timeout_ms / 1000.0 + 60.0;
    sy_warn("signal %d: finishing step %" PRId64 ", saving a checkpoint, then stopping (again to stop at once)",
            (int)g_signal, c->step);
    c->ckpt.stop_requested = 1;
    c->code = 130;
    g_signal = 0;
    return 0;
}

/* A plain poll over the control socket and the status socket, 50 ms at most per turn. */
static void run_loop(coord *c) {
    int signals_seen = 0;
    double stop_deadline = 0.0;
    while (c->phase != DONE) {
        if (stop_deadline > 0 && sy_now() > stop_deadline) {
            stop_now(c, "the step and save asked for by the signal did not finish in time");
            break;
        }
        if (g_signal && on_stop_signal(c, &signals_seen, &stop_deadline))
            break;
        if (c->ckpt.stop_requested && c->phase == WAITING) {
            /* the mesh fell apart after the signal (a worker unreachable): there is no
             * step left to finish and save, and no reason to wait for workers */
            stop_now(c, "the mesh fell apart after the signal");
            break;
        }
        zmq_pollitem_t its[2] = {{c->router, 0, ZMQ_POLLIN, 0}, {c->status, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(its, c->status ? 2 : 1, 50);
        if (c->status && (its[1].revents & ZMQ_POLLIN))
            sy_status_serve(c);
        if (tick(c))
            break;
        if (rc > 0 && (its[0].revents & ZMQ_POLLIN))
            read_control(c);
    }
    if (g_signal) {
        sy_warn("signal %d: stopping the run at step %" PRId64, (int)g_signal, c->step);
        c->code = 130;
    }
    if (c->ckpt.stop_requested && c->code == 0)
        c->code = 130;
    if (c->code == 130 && !c->ref.on) {
        if (c->ckpt.last[0])
            sy_warn("stopped on a signal; a restart resumes from %s (step %" PRId64 ")", c->ckpt.last,
                    c->ckpt.last_step);
        else
            sy_warn("stopped on a signal before any checkpoint; a restart begins at step 0");
    }
}

/* ---------------------------------------------------------------- setting up */

typedef struct {
    const char *path, *bind, *status, *refcheck, *out;
    char **sets;
    int nsets;
    int min_workers, start_workers, fresh;
    int wire;                  /* -1: from the config, else an sy_wire_dtype */
    int max_pending;           /* registered workers that may wait outside the mesh */
    sy_sec_opts sec;           /* CURVE keys, allow-lists, --insecure */
    char **leaves, **joins;    /* --leave STEP:RANK, --join-at STEP */
    int nleaves, njoins;
} coord_opts;

static void usage(void) {
    fprintf(stderr,
            "usage: switchyard-coordinator [CONFIG] [--bind EP] [--status EP] [--min-workers N] [--start-workers N]\n"
            "                              [--max-pending N (workers waiting to join, default 16)]\n"
            "                              [--set section.key=value ...] [--wire fp32|bf16] [--fresh]\n"
            "                              [--leave STEP:RANK ...] [--join-at STEP ...]\n"
            "  --leave STEP:RANK  shrink by plan: rank RANK leaves before step STEP, its experts and rows go to\n"
            "                     its buddy as when it dies (re-homing); it waits as a standby\n"
            "  --join-at STEP     standbys join only at these checkpoint steps (default: the next checkpoint)\n"
            "       switchyard-coordinator --refcheck CASE_DIR --out DIR --min-workers N [--bind EP]\n%s",
            sy_sec_usage());
}

/* A whole number >= 1 for a flag, or -1 with a message. */
static int count_arg(const char *flag, const char *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < 1 || n > MAX_WORKERS) {
        fprintf(stderr, "switchyard-coordinator: %s '%s': expected a whole number from 1 to %d\n", flag, v,
                MAX_WORKERS);
        return -1;
    }
    return (int)n;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, coord_opts *o) {
    *o = (coord_opts){.wire = -1,
                      .max_pending = 16,
                      .sets = calloc((size_t)argc + 1, sizeof(char *)),
                      .leaves = calloc((size_t)argc + 1, sizeof(char *)),
                      .joins = calloc((size_t)argc + 1, sizeof(char *))};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = v != NULL;
        if (!strcmp(a, "--bind") && takes)
            o->bind = argv[++i];
        else if (!strcmp(a, "--status") && takes)
            o->status = argv[++i];
        else if (!strcmp(a, "--min-workers") && takes) {
            if ((o->min_workers = count_arg(a, argv[++i])) < 0)
                return 2;
        } else if (!strcmp(a, "--start-workers") && takes) {
            if ((o->start_workers = count_arg(a, argv[++i])) < 0)
                return 2;
        } else if (!strcmp(a, "--max-pending") && takes) {
            if ((o->max_pending = count_arg(a, argv[++i])) < 0)
                return 2;
        } else if (sy_sec_arg(&o->sec, argc, argv, &i)) {
            continue;
        } else if (!strcmp(a, "--set") && takes)
            o->sets[o->nsets++] = argv[++i];
        else if (!strcmp(a, "--leave") && takes)
            o->leaves[o->nleaves++] = argv[++i];
        else if (!strcmp(a, "--join-at") && takes)
            o->joins[o->njoins++] = argv[++i];
        else if (!strcmp(a, "--wire") && takes) {
            i++;
            o->wire = !strcmp(v, "fp32") ? SY_WIRE_FP32 : !strcmp(v, "bf16") ? SY_WIRE_BF16 : -2;
            if (o->wire == -2) {
                fprintf(stderr, "switchyard-coordinator: --wire '%s': expected fp32 or bf16\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--fresh") || !strcmp(a, "--resume"))
            o->fresh = !strcmp(a, "--fresh");
        else if (!strcmp(a, "--refcheck") && takes)
            o->refcheck = argv[++i];
        else if (!strcmp(a, "--out") && takes)
            o->out = argv[++i];
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (a[0] == '-' || o->path) {
            fprintf(stderr, "switchyard-coordinator: unexpected argument '%s'\n", a);
            usage();
            return 2;
        } else
            o->path = a;
    }
    return -1;
}

/* The config file, then --set, then the flags as typed values; then the cross checks. */
static int configure(coord *c, const coord_opts *o) {
    sy_config *cfg = &c->cfg;
    if ((o->path ? sy_config_load(cfg, o->path) : sy_config_load_default(cfg)))
        return -1;
    for (int i = 0; i < o->nsets; i++)
        if (sy_config_set(cfg, o->sets[i]))
            return -1;
    if (o->wire >= 0)
        cfg->wire.dtype = (sy_wire_dtype)o->wire;
    if (o->bind) {
        free(cfg->cluster.coordinator);
        cfg->cluster.coordinator = strdup(o->bind);
    }
    if (o->status) {
        free(cfg->cluster.status);
        cfg->cluster.status = strdup(o->status);
    }
    if (o->min_workers > 0)
        cfg->cluster.min_workers = o->min_workers;
    for (int i = 0; i < o->nleaves; i++)
        if (coord_rehome_parse_leave(&c->rh, o->leaves[i]))
            return -1;
    for (int i = 0; i < o->njoins; i++)
        if (coord_rehome_parse_join(&c->rh, o->joins[i]))
            return -1;
    if (sy_config_check(cfg))
        return -1;
    c->pool.min_workers = cfg->cluster.min_workers;
    /* the first mesh waits for --start-workers (switchyard up's N); after a loss the run
     * goes on with min_workers */
    c->pool.start_workers = o->start_workers > c->pool.min_workers ? o->start_workers : c->pool.min_workers;
    c->sec.max_pending = o->max_pending;
    c->ref.dir = o->refcheck;
    c->ref.out_dir = o->out;
    if (c->ref.dir && coord_refcheck_load(c))
        return -1;
    if (!(c->yaml = sy_config_to_yaml(cfg))) {
        sy_seterr("out of memory");
        return -1;
    }
    return 0;
}

/* 1 (with a message) when root holds checkpoints and none of them verifies: starting
 * at step 0 then would quietly throw the run away (and prune it); --fresh says so. */
static int all_checkpoints_corrupt(const char *root) {
    int64_t *steps = NULL;
    size_t n = 0;
    if (sy_ckpt_list(root, &steps, &n) < 0 || n == 0) {
        free(steps);
        return 0;
    }
    sy_seterr("every checkpoint in %s is corrupt or incomplete (%zu found, steps %lld..%lld; the reasons are above): "
              "nothing to resume from. Restore them, or start over at step 0 with --fresh (they are left in place)",
              root, n, (long long)steps[0], (long long)steps[n - 1]);
    free(steps);
    return 1;
}

/* The run's books: run id, the per-expert load (by the data's languages), the newest
 * checkpoint to resume from (1: the run is already complete), the run log. */
static int open_run(coord *c, int fresh) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* epochs grow across coordinator restarts too, so no worker mistakes an old epoch's
     * buffers for the new one's */
    c->epoch = ((uint64_t)ts.tv_sec << 16);
    c->ckpt.failed_at = -1;
    c->rh.last_lost = -1;
    c->last.val_loss = NAN;
    c->last.val_step = -1;
    c->bal.straggler_rank = -1;
    sy_run_id_new(c->books.run_id, sizeof c->books.run_id);
    int n_langs = 0;
    if (!c->ref.on) {
        /* language names for the per-expert breakdown, from the data's own table */
        char vp[4096];
        snprintf(vp, sizeof vp, "%s/val.bin", c->cfg.data.dir);
        sy_tokens *vt = sy_tokens_load(vp);
        if (!vt) {
            sy_err_prefix("the coordinator validates every checkpoint on %s (run `switchyard prepare` here, or copy "
                          "data/ from where it was prepared)",
                          vp);
            return -1;
        }
        if (sy_eval_windows(vt, c->cfg.train.seq_len) < 1) {
            sy_seterr("%s: %lld bytes, too few for one validation window of %d tokens (prepare with a larger "
                      "--val-fraction)",
                      vp, (long long)vt->n_bytes, c->cfg.train.seq_len + 1);
            sy_tokens_destroy(&vt);
            return -1;
        }
        char tp[4096];
        snprintf(tp, sizeof tp, "%s/train.bin", c->cfg.data.dir);
        if (!sy_tokens_peek_hash(tp, &c->data.hash)) {
            snprintf(c->data.from, sizeof c->data.from, "the coordinator's %s", tp);
            sy_info("training data: %s, content hash %016llx; workers must hold the same", tp,
                    (unsigned long long)c->data.hash);
        } else {
            sy_info("no %s here: the first worker's training data is the reference for the others", tp);
        }
        {
            n_langs = vt->n_langs < SY_COORD_LANGS ? vt->n_langs : SY_COORD_LANGS;
            for (int g = 0; g < n_langs; g++)
                snprintf(c->books.langs[g], sizeof c->books.langs[g], "%s", vt->lang_names[g]);
            sy_tokens_destroy(&vt);
        }
    }
    if (sy_expert_load_init(&c->books.load, &c->cfg.model, n_langs))
        return -1;
    if (c->ref.on)
        return 0;
    if (!fresh) {
        int found = sy_ckpt_latest(c->cfg.checkpoint.dir, c->ckpt.last, sizeof c->ckpt.last, &c->ckpt.last_step);
        if (found < 0)
            return -1;
        if (found == 1 && all_checkpoints_corrupt(c->cfg.checkpoint.dir))
            return -1;
        if (found == 0) {
            sy_ckpt *ck = sy_ckpt_open(c->ckpt.last);
            sy_run_id_from_ckpt(ck, c->books.run_id, sizeof c->books.run_id);
            sy_ckpt_close(&ck);
            sy_info("resuming from %s (step %" PRId64 ")", c->ckpt.last, c->ckpt.last_step);
            sy_coord_event(c, "resumed from %s", c->ckpt.last);
            c->ckpt.time = sy_now();
            if (c->ckpt.last_step >= c->cfg.train.steps) {
                sy_info("that run is complete (%" PRId64 " steps); --fresh starts over", c->cfg.train.steps);
                return 1;
            }
        } else {
            c->ckpt.last[0] = 0;
        }
    }
    c->step = c->ckpt.last[0] ? c->ckpt.last_step : 0;
    if (sy_ckpt_make_root(c->cfg.checkpoint.dir))
        return -1;
    if (!(c->books.log = sy_runlog_open(c->cfg.checkpoint.dir, "run_log.jsonl")))
        sy_warn("%s", sy_lasterr());
    coord_rehome_open_log(c);
    return 0;
}

/* The control ROUTER and, unless refchecking, the status socket. */
static int open_sockets(coord *c, const sy_sec_opts *sec) {
    c->zctx = zmq_ctx_new();
    c->router = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!c->router) {
        sy_seterr("cannot create the control socket: %s", zmq_strerror(errno));
        return -1;
    }
    sy_sock_defaults(c->router, 1);
    {
        /* blocking sends (the checkpoint state) give up on a peer that stops reading */
        int sndtimeo = c->cfg.cluster.timeout_ms * 4 > 10000 ? c->cfg.cluster.timeout_ms * 4 : 10000;
        zmq_setsockopt(c->router, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    }
    /* no handover: a second connection claiming a live worker's routing id is turned away
     * instead of taking over its messages (each worker incarnation has a fresh id) */
    int no_handover = 0;
    zmq_setsockopt(c->router, ZMQ_ROUTER_HANDOVER, &no_handover, sizeof no_handover);
    /* no frame larger than the run's largest tensor (or envelope) is accepted */
    sy_limit_set(c->router, c->ref.on ? sy_limit_ctrl_bytes(&c->ref.rc.model, c->ref.rc.batch, c->ref.rc.seq)
                                      : sy_limit_ctrl_bytes(&c->cfg.model, c->cfg.train.batch_size,
                                                            c->cfg.train.seq_len));
    c->sec.status_open = sec->status_open;
    if (sec->insecure)
        sy_sec_warn_insecure("coordinator");
    else if (!(c->sec.zap = sy_sec_coordinator_start(c->zctx, sec)) ||
             sy_curve_server(c->router, sy_sec_cert(), "control"))
        return -1;
    if (zmq_bind(c->router, c->cfg.cluster.coordinator)) {
        sy_seterr("cannot bind the control socket at %s: %s", c->cfg.cluster.coordinator, zmq_strerror(errno));
        return -1;
    }
    return c->ref.on ? 0 : sy_status_bind(c, c->cfg.cluster.status);
}

static void close_all(coord *c) {
    if (c->router && c->pool.n > 0) {
        broadcast_shutdown(c, c->code ? "the run stopped" : "training finished");
        /* give the shutdown messages a moment to leave (LINGER is 0) */
        struct timespec pause = {0, 200 * 1000000L};
        nanosleep(&pause, NULL);
    }
    sy_ckpt_writer_destroy(&c->save.writer);
    coord_eval_join(&c->eval);
    sy_runlog_close(&c->books.log);
    coord_rehome_close(c);
    sy_expert_load_free(&c->books.load);
    sy_status_close(c);
    if (c->router)
        zmq_close(c->router);
    sy_zap_destroy(&c->sec.zap);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    free(c->yaml);
    sy_mesh_free(&c->plan.mesh);
    if (c->ref.on)
        sy_refcase_free(&c->ref.rc);
    sy_config_free(&c->cfg);
}

int main(int argc, char **argv) {
    static coord c;
    coord_opts o;
    int code = parse_args(argc, argv, &o);
    if (code >= 0) {
        free(o.sets);
        free(o.leaves);
        free(o.joins);
        return code;
    }
    const char *f = getenv("SWITCHYARD_FAULT");
    long long st;
    if (f && sscanf(f, "kill@%lld:save", &st) == 1)
        g_fault_step = st;
    sy_config_defaults(&c.cfg);
    c.sec.reject_log = (sy_ratelog)SY_RATELOG_INIT(10.0, 5);
    if (sy_blas_setup(argc, argv, "coordinator")) {
        fprintf(stderr, "switchyard-coordinator: %s\n", sy_lasterr());
        code = 2;
        goto out;
    }
    sy_blas_set_threads(1);
    int opened = -1;
    if (configure(&c, &o) || open_sockets(&c, &o.sec) || (opened = open_run(&c, o.fresh)) < 0) {
        fprintf(stderr, "switchyard-coordinator: %s\n", sy_lasterr());
        code = 2;
        goto out;
    }
    if (opened == 0) { /* 1: the run is already complete */
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        c.books.t_start = sy_now();
        sy_info("run %s: coordinator on %s, waiting for %d worker%s (goes on with at least %d)", c.books.run_id,
                c.cfg.cluster.coordinator, c.pool.start_workers, c.pool.start_workers == 1 ? "" : "s",
                c.pool.min_workers);
        run_loop(&c);
    }
    code = c.code;
out:
    close_all(&c);
    free(o.sets);
    free(o.leaves);
    free(o.joins);
    return code;
}
