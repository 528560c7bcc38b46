/* switchyard-coordinator: admits workers, plans the mesh, drives the steps and collects
 * checkpoints. A plain zmq_poll loop over the control ROUTER and a timer; each handler
 * is named after the message it handles. */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "append.h"
#include "blas_setup.h"
#include "checkpoint.h"
#include "config.h"
#include "ctrl.h"
#include "data.h"
#include "evaluate.h"
#include "log.h"
#include "mesh.h"
#include "model.h"
#include "model_io.h"
#include "refcase.h"

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

static int send_to(coord *c, const member *mb, Switchyard__Envelope *env) {
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
    for (int i = 0; i < c->n; i++)
        if (c->m[i].alive) {
            sy_ctrl_send(c->router, c->m[i].id, strlen(c->m[i].id), &env, NULL, 0);
            sy_ctrl_send(c->router, c->m[i].hb_id, strlen(c->m[i].hb_id), &env, NULL, 0);
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
    for (int i = 0; i < c->n; i++)
        if (c->m[i].alive)
            sy_ctrl_send(c->router, c->m[i].hb_id, strlen(c->m[i].hb_id), &env, NULL, 0);
}

/* ---------------------------------------------------------------- planning */

/* Sends rank r what it holds of the last checkpoint: every replicated tensor, and its
 * experts' tensors (parameters and AdamW moments), then a SaveDone marking the end. */
static int send_state(coord *c, const member *mb, int r) {
    sy_ckpt *ck = sy_ckpt_open(c->last_ckpt);
    if (!ck)
        return -1;
    int p = sy_mesh_p(&c->mesh, r), sent = 0, rc = 0;
    void *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < sy_ckpt_count(ck) && !rc; i++) {
        const sy_ckpt_tensor *t = sy_ckpt_tensor_at(ck, i);
        const char *name = t->name;
        if (!strncmp(name, "adam.m/", 7) || !strncmp(name, "adam.v/", 7))
            name += 7;
        const char *ex = strstr(name, ".experts.");
        if (ex) {
            int e = atoi(ex + 9);
            if (e < c->mesh.e_begin[p] || e >= c->mesh.e_end[p])
                continue;
        }
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
        ts.step = c->last_ckpt_step;
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
    sd.step = c->last_ckpt_step;
    sd.tensors = (uint32_t)sent;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_SAVE_DONE;
    env.save_done = &sd;
    return sy_ctrl_send_blocking(c->router, mb->id, strlen(mb->id), &env, NULL, 0);
}

static void broadcast_abort(coord *c, const char *reason);

/* A member the control socket cannot reach while a mesh is handed out: declared dead at
 * once (no waiting for its heartbeat timeout), the epoch being handed out is aborted
 * everywhere and the main loop plans again with the workers left. */
static void drop_unreachable(coord *c, member *mb, const char *why) {
    mb->alive = 0;
    sy_error("worker %s unreachable (%s): dropped from the mesh, planning again", mb->id, why);
    sy_coord_event(c, "worker %s unreachable: dropped", mb->id);
    broadcast_abort(c, "a worker of the new mesh is unreachable: planning again");
    c->phase = WAITING;
}

/* Plans a mesh of the live workers and hands it out. 0: handed out; 1: a worker was
 * unreachable and dropped, plan again; -1: error (message set). */
static int start_epoch(coord *c) {
    int W = 0;
    double gf[MAX_WORKERS];
    int measured = 1;
    for (int i = 0; i < c->n; i++) {
        c->m[i].rank = -1;
        c->m[i].ready = c->m[i].reported = c->m[i].saved = 0;
        if (c->m[i].alive) {
            c->rank_member[W] = i;
            /* shares follow measured compute (balance.c), never the start-up sgemm probe */
            gf[W] = c->m[i].speed;
            measured &= gf[W] > 0;
            c->m[i].rank = W++;
        }
    }
    sy_balance_reset(c);
    const sy_model_cfg *mc = c->have_rc ? &c->rc.model : &c->cfg.model;
    int B = c->have_rc ? c->rc.batch : c->cfg.train.batch_size;
    sy_mesh_free(&c->mesh);
    if (c->have_rc && B % W) {
        sy_seterr("refcheck: the case's %d rows do not split evenly over %d workers", B, W);
        return -1;
    }
    int by_speed = !c->have_rc && c->cfg.cluster.balance_by_speed && measured;
    if (sy_mesh_plan(&c->mesh, W, mc->n_experts, B, by_speed ? gf : NULL, 1.0))
        return -1;
    /* rows follow the measured compute per row; experts stay evenly spread, or the
     * expert work moved with them would skew the next measurement */
    sy_mesh_equal_experts(&c->mesh);
    c->world = W;
    c->epoch++;
    c->step = c->last_ckpt[0] ? c->last_ckpt_step : 0;
    c->epoch_step0 = c->step;
    sy_info("epoch %" PRIu64 ": mesh of %d worker%s = %d data group%s x %d expert rank%s%s", c->epoch, W,
            W == 1 ? "" : "s", c->mesh.dp, c->mesh.dp == 1 ? "" : "s", c->mesh.ep, c->mesh.ep == 1 ? "" : "s",
            c->mesh.balanced ? " (shares follow measured speed)" : "");
    uint32_t eb[MAX_WORKERS], ee[MAX_WORKERS], r0[MAX_WORKERS], nr[MAX_WORKERS];
    char *peers[MAX_WORKERS];
    for (int p = 0; p < c->mesh.ep; p++) {
        eb[p] = (uint32_t)c->mesh.e_begin[p];
        ee[p] = (uint32_t)c->mesh.e_end[p];
    }
    for (int r = 0; r < W; r++) {
        r0[r] = (uint32_t)c->mesh.row0[r];
        nr[r] = (uint32_t)c->mesh.nrows[r];
        peers[r] = c->m[c->rank_member[r]].endpoint;
    }
    for (int r = 0; r < W; r++) {
        member *mb = &c->m[c->rank_member[r]];
        int p = sy_mesh_p(&c->mesh, r);
        sy_info("  rank %d: %s (%s, %.1f GFLOP/s): rows %d..%d, experts %d..%d", r, mb->id, mb->endpoint, mb->gflops,
                c->mesh.row0[r], c->mesh.row0[r] + c->mesh.nrows[r] - 1, c->mesh.e_begin[p], c->mesh.e_end[p] - 1);
        Switchyard__Assignment a = SWITCHYARD__ASSIGNMENT__INIT;
        a.run_id = c->run_id;
        a.epoch = c->epoch;
        a.rank = (uint32_t)r;
        a.world = (uint32_t)W;
        a.ep = (uint32_t)c->mesh.ep;
        a.dp = (uint32_t)c->mesh.dp;
        a.n_expert_begin = a.n_expert_end = (size_t)c->mesh.ep;
        a.expert_begin = eb;
        a.expert_end = ee;
        a.n_row0 = a.n_nrows = a.n_peers = (size_t)W;
        a.row0 = r0;
        a.nrows = nr;
        a.peers = peers;
        a.config_yaml = c->yaml;
        a.start_step = c->step;
        a.global_batch = (uint32_t)B;
        a.job = c->have_rc ? SWITCHYARD__JOB__JOB_REFCHECK : SWITCHYARD__JOB__JOB_TRAIN;
        a.refcase_dir = c->have_rc ? (char *)c->refcheck_dir : "";
        a.state_follows = c->last_ckpt[0] != 0;
        Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_ASSIGNMENT;
        env.assignment = &a;
        if (send_to(c, mb, &env) || (a.state_follows && send_state(c, mb, r))) {
            /* a worker that cannot be reached now (killed with another one, say) leaves the
             * mesh; the others are told to drop this epoch and everyone re-plans */
            sy_err_prefix("sending %s to rank %d", a.state_follows ? "the assignment and state" : "the assignment", r);
            drop_unreachable(c, mb, sy_lasterr());
            return 1;
        }
    }
    c->phase = ASSIGNING;
    return 0;
}

static member *by_id(coord *c, const char *id) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->m[i].id, id) || !strcmp(c->m[i].hb_id, id))
            return &c->m[i];
    return NULL;
}

static int live_count(const coord *c) {
    int k = 0;
    for (int i = 0; i < c->n; i++)
        k += c->m[i].alive;
    return k;
}

/* ---------------------------------------------------------------- steps */

static int switch_layers(const sy_model_cfg *mc) {
    int k = 0;
    for (int l = 0; l < mc->n_layers; l++)
        k += sy_is_switch_layer(mc, l);
    return k;
}

static void send_step(coord *c) {
    const sy_train_cfg *tc = &c->cfg.train;
    int64_t next = c->step + 1;
    int save = !c->have_rc && (next == tc->steps || (c->cfg.checkpoint.every > 0 && next % c->cfg.checkpoint.every == 0));
    Switchyard__StepCmd s = SWITCHYARD__STEP_CMD__INIT;
    s.epoch = c->epoch;
    s.step = c->step;
    s.save_after = save;
    s.grads = c->have_rc;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_STEP;
    env.step = &s;
    c->loss = c->ce = c->aux = c->z = c->t_compute = c->t_a2a = c->t_ar = c->t_opt = 0;
    c->tokens = c->bytes_sent = 0;
    for (int r = 0; r < c->world; r++) {
        member *mb = &c->m[c->rank_member[r]];
        mb->reported = mb->saved = 0;
        send_to(c, mb, &env);
    }
    c->save_expect = save || c->have_rc;
    if (c->save_expect) {
        c->save_step = c->have_rc ? 0 : next;
        const char *root = c->have_rc ? c->out_dir : c->cfg.checkpoint.dir;
        sy_ckpt_writer_destroy(&c->writer);
        if (!(c->writer = sy_ckpt_writer_new(root, c->save_step)))
            sy_error("checkpoint: %s", sy_lasterr());
    }
    c->step_is_save_only = 0;
    c->step_started = sy_now();
    c->phase = TRAINING;
}

/* Asks every rank for its state as it is now (no step): used to stop cleanly. */
static void send_save_only(coord *c) {
    Switchyard__StepCmd s = SWITCHYARD__STEP_CMD__INIT;
    s.epoch = c->epoch;
    s.step = c->step;
    s.save_only = 1;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_STEP;
    env.step = &s;
    sy_ckpt_writer_destroy(&c->writer);
    c->save_step = c->step;
    if (!(c->writer = sy_ckpt_writer_new(c->cfg.checkpoint.dir, c->step))) {
        sy_error("checkpoint: %s", sy_lasterr());
        c->phase = DONE;
        return;
    }
    for (int r = 0; r < c->world; r++) {
        member *mb = &c->m[c->rank_member[r]];
        mb->reported = 1; /* no step report comes */
        mb->saved = 0;
        send_to(c, mb, &env);
    }
    c->save_expect = 1;
    c->step_is_save_only = 1;
    c->phase = TRAINING;
    sy_info("saving the state at step %" PRId64 " before stopping", c->step);
}


/* One record of the run log, whole or not at all (a full disk never cuts or merges
 * records); a failure is said once per streak, with the step it starts at. */
static void runlog_printf(coord *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void runlog_printf(coord *c, const char *fmt, ...) {
    static int failing;
    if (!c->runlog)
        return;
    char rec[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rec, sizeof rec, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof rec)
        return;
    if (sy_append_record(fileno(c->runlog), rec, (size_t)n)) {
        if (!failing)
            sy_error("run log %s/run_log.jsonl: %s; records from step %" PRId64 " on are missing",
                     c->cfg.checkpoint.dir, sy_lasterr(), c->step + 1);
        failing = 1;
    } else if (failing) {
        sy_warn("run log %s/run_log.jsonl: writing again at step %" PRId64, c->cfg.checkpoint.dir, c->step + 1);
        failing = 0;
    }
}

static void log_step(coord *c) {
    const sy_train_cfg *tc = &c->cfg.train;
    int64_t done = c->step + 1;
    double Wd = c->world > 0 ? c->world : 1;
    c->last_loss = c->loss;
    c->last_ce = c->ce;
    c->last_aux = c->aux;
    c->last_z = c->z;
    c->last_step_time = c->step_time;
    c->last_tps = c->step_time > 0 ? c->tokens / c->step_time : 0;
    c->last_compute = c->t_compute / Wd;
    c->last_a2a = c->t_a2a / Wd;
    c->last_ar = c->t_ar / Wd;
    runlog_printf(c,
                "{\"run_id\":\"%s\",\"epoch\":%" PRIu64 ",\"step\":%" PRId64 ",\"loss\":%.6f,\"ce\":%.6f,"
                "\"aux\":%.6f,\"z\":%.6f,\"lr\":%.6g,\"grad_norm\":%.4f,\"tokens_per_s\":%.1f,\"step_ms\":%.2f,"
                "\"compute_ms\":%.2f,\"alltoall_ms\":%.2f,\"allreduce_ms\":%.2f,\"workers\":%d,\"time\":%.3f}\n",
                c->run_id, c->epoch, done, c->loss, c->ce, c->aux, c->z, c->lr, c->grad_norm, c->last_tps,
                c->step_time * 1e3, c->last_compute * 1e3, c->last_a2a * 1e3, c->last_ar * 1e3, c->world,
                sy_now() - c->t_start);
    c->log_loss += c->loss;
    c->log_ce += c->ce;
    c->log_aux += c->aux;
    c->log_z += c->z;
    c->log_n++;
    c->log_tokens += (int64_t)c->tokens;
    if (done % tc->log_every && done != tc->steps && done != c->start_step + 1)
        return;
    double now = sy_now(), tps = c->log_tokens / (now - c->log_t0);
    char eta[32];
    sy_fmt_duration(eta, sizeof eta, (tc->steps - done) * (double)tc->batch_size * tc->seq_len / tps);
    double W = c->world;
    char strag[400] = "";
    if (c->straggler_rank >= 0)
        snprintf(strag, sizeof strag, " | straggler rank %d (%s): the others waited %.0f ms for it",
                 c->straggler_rank, c->m[c->rank_member[c->straggler_rank]].id, c->straggler_wait * 1e3);
    sy_info("step %6" PRId64 "/%" PRId64 " | loss %.4f (ce %.4f aux %.3f z %.3f) | lr %.2e | |g| %.2f | %.0f tok/s | "
            "step %.0f ms (compute %.0f, all-to-all %.0f, all-reduce %.0f) | ETA %s%s",
            done, tc->steps, c->log_loss / c->log_n, c->log_ce / c->log_n, c->log_aux / c->log_n, c->log_z / c->log_n,
            c->lr, c->grad_norm, tps, c->step_time * 1e3, c->t_compute / W * 1e3, c->t_a2a / W * 1e3,
            c->t_ar / W * 1e3, eta, strag);
    c->log_t0 = now;
    c->log_tokens = 0;
    c->log_loss = c->log_ce = c->log_aux = c->log_z = 0;
    c->log_n = 0;
}

/* Validation loss of a saved checkpoint, in this process (eval mode, one group). */
static double evaluate_checkpoint(coord *c, const char *dir) {
    const sy_config *cfg = &c->cfg;
    char path[4096];
    snprintf(path, sizeof path, "%s/val.bin", cfg->data.dir);
    sy_tokens *val = sy_tokens_load(path);
    if (!val)
        return NAN;
    int B = cfg->train.batch_size, T = cfg->train.seq_len;
    sy_model *m = sy_model_new(&cfg->model, B, T, NULL);
    sy_ckpt *ck = sy_ckpt_open(dir);
    int32_t *buf = malloc((size_t)B * (T + 1) * sizeof(int32_t));
    double v = NAN;
    if (m && ck && buf && !sy_model_io_load(ck, sy_model_layout(m), sy_model_params(m), NULL, NULL, NULL))
        v = sy_evaluate(m, val, cfg, buf);
    free(buf);
    sy_ckpt_close(&ck);
    sy_model_destroy(&m);
    sy_tokens_destroy(&val);
    return v;
}

static void *eval_main(void *arg) {
    coord *c = arg;
    c->eval_result = evaluate_checkpoint(c, c->eval_dir);
    __atomic_store_n(&c->eval_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Validation of a committed checkpoint, in a thread so no step waits for it. */
static void eval_start(coord *c, const char *dir, int64_t step) {
    if (c->eval_running || c->have_rc)
        return;
    snprintf(c->eval_dir, sizeof c->eval_dir, "%s", dir);
    c->eval_step = step;
    c->eval_done = 0;
    if (!pthread_create(&c->eval_thread, NULL, eval_main, c))
        c->eval_running = 1;
}

static void eval_poll(coord *c) {
    if (!c->eval_running || !__atomic_load_n(&c->eval_done, __ATOMIC_ACQUIRE))
        return;
    pthread_join(c->eval_thread, NULL);
    c->eval_running = 0;
    if (isnan(c->eval_result))
        return;
    c->val_loss = c->eval_result;
    c->val_step = c->eval_step;
    sy_info("validation loss %.4f nats/byte at step %" PRId64, c->val_loss, c->val_step);
    runlog_printf(c, "{\"run_id\":\"%s\",\"step\":%" PRId64 ",\"val_ce\":%.6f,\"workers\":%d,\"time\":%.3f}\n",
                  c->run_id, c->val_step, c->val_loss, c->world, sy_now() - c->t_start);
}

/* A checkpoint could not be written (a full disk, a failing device): the run stops here
 * rather than train on with nothing durable after the last good checkpoint. That one is
 * verified again (every checksum) and named, so the user knows where a restart begins. */
static void save_failed(coord *c, const char *why) {
    sy_error("checkpoint step %" PRId64 " could not be written in %s: %s", c->save_step, c->cfg.checkpoint.dir, why);
    sy_ckpt_writer_destroy(&c->writer); /* its temporary directory goes with it */
    c->save_expect = 0;
    char dir[4096];
    int64_t st = 0;
    int found = sy_ckpt_latest(c->cfg.checkpoint.dir, dir, sizeof dir, &st);
    if (found == 0)
        sy_error("stopping the run at step %" PRId64 " (no model saved after step %" PRId64 "); the last checkpoint "
                 "%s verifies: free space and run again to resume from it",
                 c->save_step, st, dir);
    else
        sy_error("stopping the run at step %" PRId64 "; no checkpoint in %s verifies, so a restart begins at step 0",
                 c->save_step, c->cfg.checkpoint.dir);
    sy_coord_event(c, "checkpoint step %lld failed: stopped", (long long)c->save_step);
    c->code = 1;
    c->phase = DONE;
}

static void finish_save(coord *c) {
    char buf[64];
    snprintf(buf, sizeof buf, "%" PRId64, c->save_step);
    sy_ckpt_writer_set(c->writer, SY_CKPT_KEY_RUN_ID, c->run_id);
    sy_ckpt_writer_set(c->writer, SY_CKPT_KEY_DATA_POS, buf);
    sy_ckpt_writer_set(c->writer, "adam_t", buf);
    snprintf(buf, sizeof buf, "%d", c->world);
    sy_ckpt_writer_set(c->writer, "workers", buf);
    if (c->have_rc) {
        char v[64];
        snprintf(v, sizeof v, "%.17g", c->loss);
        sy_ckpt_writer_set(c->writer, "loss_total", v);
        snprintf(v, sizeof v, "%.17g", c->ce);
        sy_ckpt_writer_set(c->writer, "loss_ce", v);
        snprintf(v, sizeof v, "%.17g", c->aux);
        sy_ckpt_writer_set(c->writer, "loss_aux", v);
        snprintf(v, sizeof v, "%.17g", c->z);
        sy_ckpt_writer_set(c->writer, "loss_z", v);
    } else {
        sy_ckpt_writer_set_config(c->writer, c->yaml, strlen(c->yaml));
    }
    double t0 = sy_now();
    if (!c->writer || sy_ckpt_writer_commit(c->writer, c->have_rc ? 0 : c->cfg.checkpoint.keep)) {
        if (c->have_rc) {
            sy_error("checkpoint step %" PRId64 ": %s", c->save_step, sy_lasterr());
            c->code = 1;
        } else {
            save_failed(c, c->writer ? sy_lasterr() : "no checkpoint writer (see the error above)");
        }
    } else {
        uint64_t bytes;
        double secs;
        sy_ckpt_writer_stats(c->writer, &bytes, &secs);
        sy_info("checkpoint %s: %.1f MB from %d worker%s, committed in %.2fs (%.0f MB/s)",
                sy_ckpt_writer_dir(c->writer), bytes / 1e6, c->world, c->world == 1 ? "" : "s", sy_now() - t0,
                bytes / 1e6 / (secs > 0 ? secs : 1e-9));
        if (!c->have_rc) {
            snprintf(c->last_ckpt, sizeof c->last_ckpt, "%s", sy_ckpt_writer_dir(c->writer));
            c->last_ckpt_step = c->save_step;
            c->ckpt_time = sy_now();
            sy_coord_event(c, "checkpoint step %lld (%.1f MB)", (long long)c->save_step, bytes / 1e6);
            /* validation runs on committed checkpoints (the last one synchronously, at the end) */
            if (c->cfg.train.eval_every > 0 && c->save_step < c->cfg.train.steps)
                eval_start(c, c->last_ckpt, c->save_step);
        }
    }
}

static void step_complete(coord *c) {
    c->step_time = sy_now() - c->step_started;
    if (c->have_rc) {
        finish_save(c);
        sy_info("refcheck: loss %.9f (ce %.9f aux %.9f z %.9f) gathered from %d workers", c->loss, c->ce, c->aux, c->z,
                c->world);
        c->phase = DONE;
        return;
    }
    if (c->recover_started) {
        sy_info("recovered: first step after the restart done %.2f s after the failure (the dead worker's last "
                "heartbeat, or the failed step)",
                sy_now() - c->recover_started);
        sy_coord_event(c, "recovered on %d workers in %.2f s", c->world, sy_now() - c->recover_started);
        c->recover_started = 0;
    }
    if (c->step_is_save_only) {
        finish_save(c);
        sy_ckpt_writer_destroy(&c->writer);
        c->phase = DONE;
        return;
    }
    sy_balance_straggler(c);
    log_step(c);
    int saved = c->save_expect;
    if (saved)
        finish_save(c);
    sy_ckpt_writer_destroy(&c->writer);
    if (c->phase == DONE)
        return; /* the save failed: stopped */
    c->step++;
    if (c->step > c->failed_at)
        c->failures = 0;
    if (c->stop_requested && c->step < c->cfg.train.steps) {
        if (saved) {
            c->phase = DONE;
            return;
        }
        send_save_only(c);
        return;
    }
    if (saved && standby_count(c) > 0 && c->step < c->cfg.train.steps) {
        sy_info("checkpoint boundary: admitting %d waiting worker%s", standby_count(c),
                standby_count(c) == 1 ? "" : "s");
        c->phase = WAITING; /* the main loop re-plans with everyone alive */
        return;
    }
    if (saved && c->step < c->cfg.train.steps && sy_balance_due(c)) {
        c->phase = WAITING; /* the main loop re-plans with the measured shares */
        return;
    }
    if (c->step >= c->cfg.train.steps) {
        double secs = sy_now() - c->t_start;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/step-%08" PRId64, c->cfg.checkpoint.dir, c->step);
        double val = evaluate_checkpoint(c, dir);
        c->val_loss = val;
        c->val_step = c->step;
        if (!isnan(val))
            runlog_printf(c, "{\"run_id\":\"%s\",\"step\":%" PRId64 ",\"val_ce\":%.6f,\"workers\":%d,\"time\":%.3f}\n",
                          c->run_id, c->step, val, c->world, sy_now() - c->t_start);
        sy_coord_event(c, "done: step %lld, validation loss %.4f", (long long)c->step, val);
        if (c->last_ckpt_step == c->step && !strcmp(c->last_ckpt, dir))
            sy_info("trained to step %" PRId64 " in %.1fs on %d worker%s; validation loss %.4f nats/byte; model saved "
                    "in %s",
                    c->step, secs, c->world, c->world == 1 ? "" : "s", val, dir);
        else {
            sy_error("trained to step %" PRId64 " but its checkpoint %s was not committed: no model saved", c->step,
                     dir);
            c->code = 1;
        }
        const sy_model_cfg *mc = &c->cfg.model;
        int E = mc->n_experts, li = 0;
        printf("\nexpert load (share of routed choices / drop rate), training run:\n");
        for (int l = 0; l < mc->n_layers; l++) {
            if (!sy_is_switch_layer(mc, l))
                continue;
            int64_t tw = 0, tk = 0;
            for (int e = 0; e < E; e++) {
                tw += c->load_wanted[li * E + e];
                tk += c->load_kept[li * E + e];
            }
            printf("layer %-3d", l);
            for (int e = 0; e < E && e < 16; e++) {
                int64_t w = c->load_wanted[li * E + e], k = c->load_kept[li * E + e];
                printf("  e%d %4.1f%%/%4.1f%%", e, tw ? 100.0 * w / tw : 0.0, w ? 100.0 * (w - k) / w : 0.0);
            }
            printf("  drop %.2f%%\n", tw ? 100.0 * (tw - tk) / tw : 0.0);
            li++;
        }
        fflush(stdout);
        c->phase = DONE;
        return;
    }
    send_step(c);
}

/* ---------------------------------------------------------------- handlers */

static void on_register(coord *c, const char *id, const Switchyard__Register *r, const char *conn_addr) {
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    Switchyard__Refuse no = SWITCHYARD__REFUSE__INIT;
    char reason[256] = "";
    if (r->protocol_version != SWITCHYARD__VERSION__PROTOCOL_VERSION)
        snprintf(reason, sizeof reason, "protocol version %u, this coordinator speaks %d", r->protocol_version,
                 SWITCHYARD__VERSION__PROTOCOL_VERSION);
    else if (r->byte_order != 1)
        snprintf(reason, sizeof reason, "big-endian workers are not supported (tensors travel little-endian)");
    else if (!r->peer_endpoint || strncmp(r->peer_endpoint, "tcp://", 6))
        snprintf(reason, sizeof reason, "no usable peer endpoint ('%s')", r->peer_endpoint ? r->peer_endpoint : "");
    else if (c->n >= MAX_WORKERS && !by_id(c, id))
        snprintf(reason, sizeof reason, "the run already has %d workers", MAX_WORKERS);
    if (reason[0]) {
        sy_warn("refusing worker %s: %s", id, reason);
        no.reason = reason;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_REFUSE;
        env.refuse = &no;
        sy_ctrl_send(c->router, id, strlen(id), &env, NULL, 0);
        return;
    }
    member *mb = by_id(c, id);
    if (!mb) {
        mb = &c->m[c->n++];
        memset(mb, 0, sizeof *mb);
        snprintf(mb->id, sizeof mb->id, "%s", id);
        snprintf(mb->hb_id, sizeof mb->hb_id, "%s/hb", id);
        mb->rank = -1;
    }
    snprintf(mb->host, sizeof mb->host, "%s", r->host);
    snprintf(mb->endpoint, sizeof mb->endpoint, "%s", r->peer_endpoint);
    snprintf(mb->conn_addr, sizeof mb->conn_addr, "%s", conn_addr ? conn_addr : "");
    mb->gflops = r->gflops;
    mb->cores = r->cores;
    mb->threads = r->threads;
    mb->pid = r->pid;
    mb->last_seen = sy_now();
    if (!mb->alive) {
        mb->alive = 1;
        sy_info("worker %s joined from %s (%u cores, %u threads, %.1f GFLOP/s); %d of %d needed", id, mb->endpoint,
                mb->cores, mb->threads, mb->gflops, live_count(c), c->min_workers);
        sy_coord_event(c, "worker %s joined (%s)", id, mb->host);
        if (c->phase == ASSIGNING || c->phase == TRAINING) {
            if (c->cfg.cluster.join_at_once)
                recover(c, "a worker joined (join_at_once)");
            else
                sy_info("worker %s waits for the next checkpoint to join the mesh", id);
        }
    } else if (mb->rank >= 0 && (c->phase == ASSIGNING || c->phase == TRAINING)) {
        /* a mesh member registering again has dropped its assignment */
        char why[400];
        snprintf(why, sizeof why, "rank %d (%s) registered again", mb->rank, id);
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
    for (int i = 0; i < c->n && !remote; i++)
        if (c->m[i].alive && c->m[i].conn_addr[0] && !is_loopback(c->m[i].conn_addr))
            remote = &c->m[i];
    if (!remote)
        return;
    for (int i = 0; i < c->n; i++) {
        member *mb = &c->m[i];
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
        Switchyard__Refuse no = SWITCHYARD__REFUSE__INIT;
        no.reason = reason;
        Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_REFUSE;
        env.refuse = &no;
        sy_ctrl_send(c->router, mb->id, strlen(mb->id), &env, NULL, 0);
        mb->alive = 0;
        if (!c->epochs_started && c->start_workers > c->min_workers) {
            c->start_workers--; /* the first mesh no longer waits for the refused worker */
            sy_info("the first mesh now waits for %d worker%s", c->start_workers, c->start_workers == 1 ? "" : "s");
        }
    }
}

static int standby_count(const coord *c) {
    int k = 0;
    for (int i = 0; i < c->n; i++)
        k += c->m[i].alive && c->m[i].rank < 0;
    return k;
}

static void on_leaving(coord *c, member *mb, const char *why);

/* The worker's training data must be the run's: same content hash as the coordinator's
 * train.bin (or, when the coordinator has none, as the first worker's). */
static int data_matches(coord *c, member *mb, uint64_t h) {
    if (c->have_rc)
        return 1;
    if (!c->data_hash) {
        c->data_hash = h;
        snprintf(c->data_hash_from, sizeof c->data_hash_from, "worker %s's (the first to report)", mb->id);
        sy_info("training data: content hash %016llx, from worker %s", (unsigned long long)h, mb->id);
        return 1;
    }
    if (h == c->data_hash)
        return 1;
    char reason[4800];
    snprintf(reason, sizeof reason,
             "its training data differs: its train.bin has content hash %016llx, %s has %016llx (copy the "
             "coordinator's data/ or run the same `switchyard prepare`)",
             (unsigned long long)h, c->data_hash_from, (unsigned long long)c->data_hash);
    Switchyard__Refuse no = SWITCHYARD__REFUSE__INIT;
    no.reason = reason;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_REFUSE;
    env.refuse = &no;
    sy_ctrl_send(c->router, mb->id, strlen(mb->id), &env, NULL, 0);
    on_leaving(c, mb, reason);
    return 0;
}

static void on_ready(coord *c, member *mb, const Switchyard__Ready *r) {
    if (c->phase != ASSIGNING || r->epoch != c->epoch || mb->rank < 0)
        return;
    if (!data_matches(c, mb, r->data_hash))
        return;
    mb->ready = 1;
    for (int i = 0; i < c->world; i++)
        if (!c->m[c->rank_member[i]].ready)
            return;
    sy_info("all %d workers ready for epoch %" PRIu64 "; %s at step %" PRId64, c->world, c->epoch,
            c->have_rc ? "refcheck" : "training", c->step);
    c->log_t0 = sy_now();
    send_step(c);
}

static int all_done(coord *c) {
    for (int r = 0; r < c->world; r++) {
        member *mb = &c->m[c->rank_member[r]];
        if (!mb->reported || (c->save_expect && !mb->saved))
            return 0;
    }
    return 1;
}

static size_t n_lang_slots(const coord *c) {
    return (size_t)switch_layers(&c->cfg.model) * c->cfg.model.n_experts * c->n_langs;
}

static void on_report(coord *c, member *mb, const Switchyard__StepReport *r) {
    if (c->phase != TRAINING || r->epoch != c->epoch || r->step != c->step || mb->rank != (int)r->rank) {
        sy_warn("stale report from %s (epoch %" PRIu64 " step %" PRId64 ") ignored", mb->id, (uint64_t)r->epoch,
                (int64_t)r->step);
        return;
    }
    if (mb->reported)
        return;
    mb->reported = 1;
    mb->step_time = r->t_compute + r->t_alltoall + r->t_allreduce + r->t_optimizer;
    mb->wait_s = r->t_alltoall + r->t_allreduce;
    sy_balance_sample(mb, r->t_compute, c->mesh.nrows[mb->rank], c->step == c->epoch_step0);
    if (c->load_lang && (int)r->languages == c->n_langs && r->n_expert_lang == n_lang_slots(c))
        for (size_t i = 0; i < r->n_expert_lang; i++)
            c->load_lang[i] += r->expert_lang[i];
    c->loss += r->loss;
    c->ce += r->ce;
    c->aux += r->aux;
    c->z += r->z;
    c->tokens += r->tokens;
    c->grad_norm = r->grad_norm;
    c->lr = r->lr;
    c->t_compute += r->t_compute;
    c->t_a2a += r->t_alltoall;
    c->t_ar += r->t_allreduce;
    c->t_opt += r->t_optimizer;
    c->bytes_sent += r->bytes_sent;
    const sy_model_cfg *mc = &c->cfg.model;
    size_t n = (size_t)switch_layers(mc) * mc->n_experts;
    if (c->load_wanted && r->n_expert_wanted == n && r->n_expert_kept == n)
        for (size_t i = 0; i < n; i++) {
            c->load_wanted[i] += r->expert_wanted[i];
            c->load_kept[i] += r->expert_kept[i];
        }
    if (all_done(c))
        step_complete(c);
}

static void on_shard(coord *c, member *mb, const Switchyard__TensorShard *t, const void *payload, size_t len) {
    if (!c->writer || t->epoch != c->epoch) {
        sy_warn("unexpected tensor %s from %s ignored", t->name, mb->id);
        return;
    }
    sy_dtype dt;
    if (sy_dtype_parse(t->dtype, &dt) < 0 || t->n_shape > SY_CKPT_MAX_DIMS || len != t->bytes) {
        sy_error("tensor %s from %s: bad dtype '%s', shape or size (%zu bytes, header says %" PRIu64 ")", t->name,
                 mb->id, t->dtype, len, (uint64_t)t->bytes);
        c->code = 1;
        return;
    }
    if (g_fault_step >= 0 && c->save_step == g_fault_step && ++g_fault_shards == 10) {
        sy_warn("fault drill: killing the coordinator while checkpoint %" PRId64 " is half written", c->save_step);
        raise(SIGKILL);
    }
    if (sy_ckpt_writer_add_crc(c->writer, t->name, dt, (int)t->n_shape, t->shape, payload, len, t->crc32c)) {
        char why[1400];
        snprintf(why, sizeof why, "tensor %s from %s: %s", t->name, mb->id, sy_lasterr());
        save_failed(c, why);
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

static void broadcast_abort(coord *c, const char *reason) {
    Switchyard__Abort a = SWITCHYARD__ABORT__INIT;
    a.epoch = c->epoch;
    a.reason = (char *)reason;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_ABORT;
    env.abort = &a;
    for (int i = 0; i < c->n; i++)
        if (c->m[i].alive) {
            sy_ctrl_send(c->router, c->m[i].hb_id, strlen(c->m[i].hb_id), &env, NULL, 0);
            sy_ctrl_send(c->router, c->m[i].id, strlen(c->m[i].id), &env, NULL, 0);
        }
}

/* The mesh changed or a step failed: drop the epoch in flight everywhere and go on from
 * the last complete checkpoint with the workers that are alive. */
static void recover(coord *c, const char *reason) {
    if (c->have_rc) {
        sy_error("refcheck: %s", reason);
        c->code = 1;
        c->phase = DONE;
        return;
    }
    if (c->stop_requested) {
        /* the workers are going too (one signal for all): no recovery, nothing to wait for */
        stop_now(c, reason);
        return;
    }
    if (c->step == c->failed_at) {
        if (++c->failures >= 5) {
            sy_error("step %" PRId64 " failed %d times in a row (%s): giving up", c->step, c->failures, reason);
            c->code = 1;
            c->phase = DONE;
            return;
        }
    } else {
        c->failed_at = c->step;
        c->failures = 1;
    }
    if (!c->recover_started)
        c->recover_started = sy_now();
    broadcast_abort(c, reason);
    if (c->writer)
        sy_ckpt_writer_destroy(&c->writer); /* a half-collected checkpoint is thrown away */
    c->save_expect = 0;
    int live = live_count(c);
    sy_warn("recovering (%s): %d worker%s alive, resuming from %s", reason, live, live == 1 ? "" : "s",
            c->last_ckpt[0] ? c->last_ckpt : "the start (no checkpoint yet)");
    sy_coord_event(c, "recovering: %s; back to step %lld", reason, (long long)(c->last_ckpt[0] ? c->last_ckpt_step : 0));
    c->phase = WAITING;
    if (live < c->min_workers)
        sy_warn("waiting for workers: %d of %d needed", live, c->min_workers);
}

/* A worker says it leaves the run (a signal, no usable data): it is out of the mesh now,
 * without waiting for its heartbeats to stop. */
static void on_leaving(coord *c, member *mb, const char *why) {
    if (!mb->alive)
        return;
    mb->alive = 0;
    sy_warn("worker %s (rank %d) is out of the run: %s", mb->id, mb->rank, why);
    sy_coord_event(c, "worker %s left: %.120s", mb->id, why);
    if (mb->rank >= 0 && c->phase != WAITING && c->phase != DONE) {
        char r[400];
        snprintf(r, sizeof r, "rank %d (%s) left", mb->rank, mb->id);
        if (!c->recover_started)
            c->recover_started = sy_now();
        /* a worker leaving is no failure of the step: it must not use up the retries */
        int failures = c->failures;
        int64_t failed_at = c->failed_at;
        recover(c, r);
        if (c->phase != DONE) {
            c->failures = failures;
            c->failed_at = failed_at;
        }
    }
}

/* A stop was asked for (a signal) and cannot complete as planned (a worker left, or the
 * save takes too long): stop now. The last complete checkpoint is untouched. */
static void stop_now(coord *c, const char *why) {
    sy_warn("stopping without saving step %" PRId64 ": %s", c->step, why);
    if (c->writer)
        sy_ckpt_writer_destroy(&c->writer); /* the half-collected save never commits */
    c->save_expect = 0;
    c->code = 130;
    c->phase = DONE;
}

static void check_liveness(coord *c) {
    double now = sy_now(), limit = c->cfg.cluster.timeout_ms / 1000.0;
    for (int i = 0; i < c->n; i++) {
        member *mb = &c->m[i];
        if (!mb->alive || now - mb->last_seen <= limit)
            continue;
        mb->alive = 0;
        sy_error("worker %s (rank %d) silent for %.1f s: declared dead", mb->id, mb->rank, now - mb->last_seen);
        sy_coord_event(c, "rank %d (%s) died", mb->rank, mb->id);
        if (mb->rank >= 0 && c->phase != WAITING && c->phase != DONE) {
            char why[400];
            snprintf(why, sizeof why, "rank %d (%s) died", mb->rank, mb->id);
            if (!c->recover_started)
                c->recover_started = mb->last_seen; /* death: when it was last heard */
            recover(c, why);
        }
    }
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: switchyard-coordinator [CONFIG] [--bind EP] [--status EP] [--min-workers N] [--start-workers N]\n"
            "                              [--set section.key=value ...] [--wire fp32|bf16] [--fresh]\n"
            "       switchyard-coordinator --refcheck CASE_DIR --out DIR --min-workers N [--bind EP]\n");
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

/* A worker count on the command line: a whole number in 1..MAX_WORKERS, or a message. */
static int parse_count(const char *flag, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > MAX_WORKERS) {
        fprintf(stderr, "switchyard-coordinator: %s: '%s' is not a worker count (a whole number, 1..%d)\n", flag, s,
                MAX_WORKERS);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    static coord c;
    c.code = 0;
    sy_config_defaults(&c.cfg);
    const char *path = NULL, *bind_ep = NULL, *wire = NULL, *status_ep = NULL;
    int min_workers = -1, start_workers = 0, fresh = 0;
    char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bind") && i + 1 < argc)
            bind_ep = argv[++i];
        else if (!strcmp(argv[i], "--status") && i + 1 < argc)
            status_ep = argv[++i];
        else if (!strcmp(argv[i], "--min-workers") && i + 1 < argc) {
            if (parse_count(argv[i], argv[i + 1], &min_workers))
                return 2;
            i++;
        } else if (!strcmp(argv[i], "--start-workers") && i + 1 < argc) {
            if (parse_count(argv[i], argv[i + 1], &start_workers))
                return 2;
            i++;
        }
        else if (!strcmp(argv[i], "--set") && i + 1 < argc)
            sets[nsets++] = argv[++i];
        else if (!strcmp(argv[i], "--wire") && i + 1 < argc)
            wire = argv[++i];
        else if (!strcmp(argv[i], "--fresh"))
            fresh = 1;
        else if (!strcmp(argv[i], "--resume"))
            fresh = 0;
        else if (!strcmp(argv[i], "--refcheck") && i + 1 < argc)
            c.refcheck_dir = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            c.out_dir = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "switchyard-coordinator: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        } else
            path = argv[i];
    }
    {
        const char *f = getenv("SWITCHYARD_FAULT");
        long long st;
        if (f && sscanf(f, "kill@%lld:save", &st) == 1)
            g_fault_step = st;
    }
    if (sy_blas_setup(argc, argv, "coordinator")) {
        fprintf(stderr, "switchyard-coordinator: %s\n", sy_lasterr());
        return 2;
    }
    sy_blas_set_threads(1);
    if ((path ? sy_config_load(&c.cfg, path) : sy_config_load_default(&c.cfg)))
        goto bad;
    for (int i = 0; i < nsets; i++)
        if (sy_config_set(&c.cfg, sets[i]))
            goto bad;
    if (wire) {
        char s[64];
        snprintf(s, sizeof s, "wire.dtype=%s", wire);
        if (sy_config_set(&c.cfg, s))
            goto bad;
    }
    if (bind_ep) {
        free(c.cfg.cluster.coordinator);
        c.cfg.cluster.coordinator = strdup(bind_ep);
    }
    if (status_ep) {
        free(c.cfg.cluster.status);
        c.cfg.cluster.status = strdup(status_ep);
    }
    if (min_workers > 0) {
        char s[64];
        snprintf(s, sizeof s, "cluster.min_workers=%d", min_workers);
        if (sy_config_set(&c.cfg, s))
            goto bad;
    }
    if (sy_config_check(&c.cfg))
        goto bad;
    c.min_workers = c.cfg.cluster.min_workers;
    /* the first mesh waits for --start-workers (switchyard up's N); after a loss the run goes
     * on with min_workers */
    c.start_workers = start_workers > c.min_workers ? start_workers : c.min_workers;
    if (c.refcheck_dir) {
        if (!c.out_dir) {
            sy_seterr("--refcheck needs --out DIR");
            goto bad;
        }
        if (sy_refcase_load(&c.rc, c.refcheck_dir))
            goto bad;
        c.have_rc = 1;
    }
    c.yaml = sy_config_to_yaml(&c.cfg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* epochs grow across coordinator restarts too, so no worker mistakes an old epoch's
     * buffers for the new one's */
    c.epoch = ((uint64_t)ts.tv_sec << 16);
    c.step = c.last_ckpt[0] ? c.last_ckpt_step : 0;
    c.failed_at = -1;
    if (!c.run_id[0])
        snprintf(c.run_id, sizeof c.run_id, "%08lx-%04x", (unsigned long)ts.tv_sec, (unsigned)(getpid() & 0xffff));
    size_t nl = (size_t)switch_layers(&c.cfg.model) * c.cfg.model.n_experts;
    c.load_wanted = calloc(nl + 1, sizeof(int64_t));
    c.load_kept = calloc(nl + 1, sizeof(int64_t));
    c.zctx = zmq_ctx_new();
    c.router = zmq_socket(c.zctx, ZMQ_ROUTER);
    sy_sock_defaults(c.router, 1);
    {
        /* blocking sends (the checkpoint state) give up on a peer that stops reading */
        int sndtimeo = c.cfg.cluster.timeout_ms * 4 > 10000 ? c.cfg.cluster.timeout_ms * 4 : 10000;
        zmq_setsockopt(c.router, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    }
    if (zmq_bind(c.router, c.cfg.cluster.coordinator)) {
        sy_seterr("cannot bind the control socket at %s: %s", c.cfg.cluster.coordinator, zmq_strerror(errno));
        goto bad;
    }
    c.val_loss = NAN;
    c.val_step = -1;
    c.straggler_rank = -1;
    if (!c.have_rc && sy_status_bind(&c, c.cfg.cluster.status))
        goto bad;
    if (!c.have_rc) {
        /* language names for the per-expert breakdown, from the data's own table */
        char vp[4096];
        snprintf(vp, sizeof vp, "%s/val.bin", c.cfg.data.dir);
        sy_tokens *vt = sy_tokens_load(vp);
        if (!vt) {
            sy_err_prefix("the coordinator validates every checkpoint on %s (run `switchyard prepare` here, or copy "
                          "data/ from where it was prepared)",
                          vp);
            goto bad;
        }
        if (sy_eval_windows(vt, c.cfg.train.seq_len) < 1) {
            sy_seterr("%s: %lld bytes, too few for one validation window of %d tokens (prepare with a larger "
                      "--val-fraction)",
                      vp, (long long)vt->n_bytes, c.cfg.train.seq_len + 1);
            sy_tokens_destroy(&vt);
            goto bad;
        }
        {
            char tp[4096];
            snprintf(tp, sizeof tp, "%s/train.bin", c.cfg.data.dir);
            if (!sy_tokens_peek_hash(tp, &c.data_hash)) {
                snprintf(c.data_hash_from, sizeof c.data_hash_from, "the coordinator's %s", tp);
                sy_info("training data: %s, content hash %016llx; workers must hold the same", tp,
                        (unsigned long long)c.data_hash);
            } else {
                sy_info("no %s here: the first worker's training data is the reference for the others", tp);
            }
        }
        if (vt) {
            c.n_langs = vt->n_langs < 16 ? vt->n_langs : 16;
            for (int g = 0; g < c.n_langs; g++)
                snprintf(c.langs[g], sizeof c.langs[g], "%s", vt->lang_names[g]);
            sy_tokens_destroy(&vt);
            c.load_lang = calloc(nl * c.n_langs + 1, sizeof(int64_t));
        }
    }
    if (!c.have_rc && !fresh) {
        int found = sy_ckpt_latest(c.cfg.checkpoint.dir, c.last_ckpt, sizeof c.last_ckpt, &c.last_ckpt_step);
        if (found < 0)
            goto bad;
        if (found == 1 && all_checkpoints_corrupt(c.cfg.checkpoint.dir))
            goto bad;
        if (found == 0) {
            sy_ckpt *ck = sy_ckpt_open(c.last_ckpt);
            const char *rid = ck ? sy_ckpt_get(ck, SY_CKPT_KEY_RUN_ID) : NULL;
            if (rid)
                snprintf(c.run_id, sizeof c.run_id, "%s", rid);
            sy_ckpt_close(&ck);
            sy_info("resuming from %s (step %" PRId64 ")", c.last_ckpt, c.last_ckpt_step);
            sy_coord_event(&c, "resumed from %s", c.last_ckpt);
            c.ckpt_time = sy_now();
            if (c.last_ckpt_step >= c.cfg.train.steps) {
                sy_info("that run is complete (%" PRId64 " steps); --fresh starts over", c.cfg.train.steps);
                c.code = 0;
                goto done_early;
            }
        } else {
            c.last_ckpt[0] = 0;
        }
    }
    c.step = c.last_ckpt[0] ? c.last_ckpt_step : 0;
    if (!c.have_rc) {
        if (sy_ckpt_make_root(c.cfg.checkpoint.dir))
            goto bad;
        char p[4096];
        snprintf(p, sizeof p, "%s/run_log.jsonl", c.cfg.checkpoint.dir);
        if (!(c.runlog = fopen(p, "a")))
            sy_warn("%s: cannot open the run log: %s", p, strerror(errno));
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    c.t_start = sy_now();
    sy_info("run %s: coordinator on %s, waiting for %d worker%s (goes on with at least %d)", c.run_id,
            c.cfg.cluster.coordinator, c.start_workers, c.start_workers == 1 ? "" : "s", c.min_workers);
    double next_hb = 0.0, stop_deadline = 0.0;
    int signals_seen = 0;
    while (c.phase != DONE) {
        if (stop_deadline > 0 && sy_now() > stop_deadline) {
            stop_now(&c, "the step and save asked for by the signal did not finish in time");
            break;
        }
        if (g_signal && !signals_seen) {
            signals_seen = 1;
            /* the step and the save it asks for get a bounded time: workers that got the
             * same signal may be gone already */
            stop_deadline = sy_now() + 2.0 * c.cfg.cluster.timeout_ms / 1000.0 + 60.0;
            if (c.phase == TRAINING && !c.have_rc) {
                sy_warn("signal %d: finishing step %" PRId64 ", saving a checkpoint, then stopping (again to stop "
                        "at once)",
                        (int)g_signal, c.step);
                c.stop_requested = 1;
                c.code = 130;
                g_signal = 0;
            } else {
                break;
            }
        } else if (g_signal) {
            break;
        }
        zmq_pollitem_t its[2] = {{c.router, 0, ZMQ_POLLIN, 0}, {c.status, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(its, c.status ? 2 : 1, 50);
        double now = sy_now();
        if (c.status && (its[1].revents & ZMQ_POLLIN))
            sy_status_serve(&c);
        eval_poll(&c);
        if (now >= next_hb) {
            send_heartbeats(&c);
            next_hb = now + c.cfg.cluster.heartbeat_ms / 1000.0;
        }
        check_liveness(&c);
        if (c.phase == WAITING)
            refuse_loopback_endpoints(&c);
        if (c.phase == WAITING && live_count(&c) >= (c.epochs_started ? c.min_workers : c.start_workers)) {
            c.epochs_started++;
            int se = start_epoch(&c);
            if (se < 0) {
                sy_error("%s", sy_lasterr());
                c.code = 1;
                break;
            }
            if (se > 0 && live_count(&c) < c.min_workers)
                sy_warn("waiting for workers: %d of %d needed", live_count(&c), c.min_workers);
        }
        if (rc <= 0 || !(its[0].revents & ZMQ_POLLIN))
            continue;
        for (int k = 0; k < 64; k++) {
            sy_ctrl_msg m;
            int r = sy_ctrl_recv(c.router, 1, &m, ZMQ_DONTWAIT);
            if (r == -1)
                break;
            if (r == -2) {
                sy_warn("%s", sy_lasterr());
                continue;
            }
            Switchyard__Envelope *e = m.env;
            member *mb = by_id(&c, m.id);
            if (mb)
                mb->last_seen = sy_now();
            if (e->msg_case == SWITCHYARD__ENVELOPE__MSG_REGISTER) {
                on_register(&c, m.id, e->register_, m.peer_addr);
            } else if (!mb) {
                sy_debug("message %d from unknown peer '%s' ignored", (int)e->msg_case, m.id);
            } else {
                switch (e->msg_case) {
                case SWITCHYARD__ENVELOPE__MSG_READY:
                    on_ready(&c, mb, e->ready);
                    break;
                case SWITCHYARD__ENVELOPE__MSG_REPORT:
                    on_report(&c, mb, e->report);
                    break;
                case SWITCHYARD__ENVELOPE__MSG_SHARD:
                    on_shard(&c, mb, e->shard, m.payload, m.payload_len);
                    break;
                case SWITCHYARD__ENVELOPE__MSG_SAVE_DONE:
                    on_save_done(&c, mb, e->save_done);
                    break;
                case SWITCHYARD__ENVELOPE__MSG_HEARTBEAT:
                    on_heartbeat(&c, mb);
                    break;
                case SWITCHYARD__ENVELOPE__MSG_ERROR:
                    if (e->error->leaving) {
                        on_leaving(&c, mb, e->error->message);
                        break;
                    }
                    sy_error("worker %s (rank %d): %s", mb->id, mb->rank, e->error->message);
                    if (e->error->epoch == c.epoch && c.phase != WAITING && c.phase != DONE)
                        recover(&c, "a worker failed its step");
                    break;
                default:
                    sy_debug("unexpected message %d from %s", (int)e->msg_case, mb->id);
                }
            }
            sy_ctrl_msg_free(&m);
            if (c.phase == DONE)
                break;
        }
    }
    if (g_signal) {
        sy_warn("signal %d: stopping the run at step %" PRId64, (int)g_signal, c.step);
        c.code = 130;
    }
    if (c.stop_requested && c.code == 0)
        c.code = 130;
    if (c.code == 130 && !c.have_rc) {
        if (c.last_ckpt[0])
            sy_warn("stopped on a signal; a restart resumes from %s (step %" PRId64 ")", c.last_ckpt,
                    c.last_ckpt_step);
        else
            sy_warn("stopped on a signal before any checkpoint; a restart begins at step 0");
    }
    broadcast_shutdown(&c, c.code ? "the run stopped" : "training finished");
    /* give the shutdown messages a moment to leave (LINGER is 0) */
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
    sy_ckpt_writer_destroy(&c.writer);
    if (c.eval_running)
        pthread_join(c.eval_thread, NULL);
    if (c.runlog)
        fclose(c.runlog);
    sy_status_close(&c);
    free(c.load_lang);
    zmq_close(c.router);
    zmq_ctx_term(c.zctx);
    free(c.yaml);
    free(sets);
    sy_mesh_free(&c.mesh);
    if (c.have_rc)
        sy_refcase_free(&c.rc);
    free(c.load_wanted);
    free(c.load_kept);
    sy_config_free(&c.cfg);
    return c.code;
done_early:
    sy_status_close(&c);
    zmq_close(c.router);
    zmq_ctx_term(c.zctx);
    free(c.yaml);
    free(sets);
    sy_config_free(&c.cfg);
    return c.code;
bad:
    fprintf(stderr, "switchyard-coordinator: %s\n", sy_lasterr());
    free(sets);
    sy_config_free(&c.cfg);
    return 2;
}
