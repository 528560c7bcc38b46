/* rehome.c: losing a worker without losing steps (issue 14). Every rank's experts are
 * kept by the rank and by a buddy (worker/replica.h keeps the copies exact). When a rank
 * dies, the survivors keep their state, its experts and batch rows go to its buddy, the
 * epoch is bumped and the step in flight is redone: no checkpoint is read. A planned
 * shrink (--leave STEP:RANK) takes the same path at a step boundary, so a run that lost a
 * worker can be compared bit for bit with one that shrank by plan.
 *
 * Buddies are neighbours in rank order (rank r's buddy is r+1, the last rank's is r-1,
 * unless the other neighbour is on another host and this one is not): the dead rank's
 * expert range and row range are then adjacent to its buddy's, and the merged mesh keeps
 * contiguous ranges (mesh.h). The merged buddy routes its own rows and the adopted rows
 * as one group, so the run after a loss is that of the smaller mesh, not the run the full
 * mesh would have trained: exactly what the planned shrink trains.
 *
 * Re-homing needs a mesh of one data group (W <= E, the usual case; with several data
 * groups the experts are replicated by data parallelism, but the smaller mesh would not
 * factor the same way), current replicas (cluster.replica_every 1, or a death in a step
 * where a full copy was just made), the buddy alive and at least min_workers left.
 * Otherwise the run goes back to the last checkpoint, and says which state forced it. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#include "coord.h"

/* Whether rank r is alive and heard from lately: a rank that has been silent for half the
 * timeout (heartbeats come every heartbeat_ms whatever the step does) died with the one
 * being handled, even if its own timeout has not run out yet. */
static int alive_rank(const coord *c, int r) {
    const member *mb = &c->pool.m[c->plan.rank_member[r]];
    double lim = c->cfg.cluster.timeout_ms / 2000.0, hb = 2 * c->cfg.cluster.heartbeat_ms / 1000.0;
    return mb->alive && sy_now() - mb->last_seen <= (lim > hb ? lim : hb);
}

static const char *host_of(const coord *c, int r) { return c->pool.m[c->plan.rank_member[r]].host; }

void coord_rehome_buddies(coord *c) {
    int W = c->plan.world;
    for (int r = 0; r < MAX_WORKERS; r++)
        c->rh.buddy[r] = -1;
    if (c->ref.on || c->cfg.cluster.replica_every <= 0 || c->plan.mesh.dp != 1 || W < 2)
        return;
    for (int r = 0; r < W; r++) {
        int next = r + 1 < W ? r + 1 : -1, prev = r - 1;
        int first = next >= 0 ? next : prev, other = next >= 0 ? prev : -1;
        int pick = first;
        if (strcmp(host_of(c, first), host_of(c, r)) == 0 && other >= 0 && strcmp(host_of(c, other), host_of(c, r)))
            pick = other; /* the other neighbour is on another machine */
        c->rh.buddy[r] = pick;
    }
}

static void log_line(coord *c, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void log_line(coord *c, const char *event, const char *fmt, ...) {
    if (!c->rh.log)
        return;
    char extra[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(extra, sizeof extra, fmt, ap);
    va_end(ap);
    fprintf(c->rh.log, "{\"run_id\": \"%s\", \"event\": \"%s\", \"epoch\": %" PRIu64 ", %s, \"time\": %.3f}\n",
            c->books.run_id, event, c->epoch, extra, sy_now() - c->books.t_start);
    fflush(c->rh.log);
}

/* Why the state of rank `dead` cannot be re-homed now ("" when it can). */
static void cannot(const coord *c, int dead, char *why, size_t n) {
    const sy_mesh *m = &c->plan.mesh;
    int W = c->plan.world, k = c->cfg.cluster.replica_every, b = dead >= 0 && dead < W ? c->rh.buddy[dead] : -1;
    why[0] = 0;
    if (c->ref.on)
        snprintf(why, n, "a reference check keeps no replicas");
    else if (k <= 0)
        snprintf(why, n, "replicas are off (cluster.replica_every: 0)");
    else if (c->phase != TRAINING)
        snprintf(why, n, "the mesh of epoch %" PRIu64 " was still starting: its replicas were not in place", c->epoch);
    else if (m->dp != 1)
        snprintf(why, n, "the mesh has %d data groups; re-homing needs one", m->dp);
    else if (W - 1 < c->pool.min_workers || W < 2)
        snprintf(why, n, "%d worker%s would be left, cluster.min_workers is %d", W - 1, W - 1 == 1 ? "" : "s",
                 c->pool.min_workers);
    else if (b < 0)
        snprintf(why, n, "rank %d has no buddy", dead);
    else if (!alive_rank(c, b))
        snprintf(why, n, "experts %d..%d lost both copies (rank %d and its buddy rank %d are both gone)",
                 m->e_begin[dead], m->e_end[dead] - 1, dead, b);
    else if (k > 1 && c->step % k != 0)
        snprintf(why, n,
                 "the replica of experts %d..%d (rank %d) was copied at step %lld, %lld step%s behind (cluster.replica_every: "
                 "%d; only every-step replicas go on without a rollback)",
                 m->e_begin[dead], m->e_end[dead] - 1, dead, (long long)(c->step / k * k),
                 (long long)(c->step % k), c->step % k == 1 ? "" : "s", k);
}

int coord_rehome_try(coord *c, int dead, double died_at, const char *reason) {
    char why[400];
    cannot(c, dead, why, sizeof why);
    if (why[0]) {
        if (!c->ref.on)
            sy_warn("cannot re-home rank %d: %s; going back to the last checkpoint", dead, why);
        snprintf(c->rh_why, sizeof c->rh_why, "%s", why);
        return -1;
    }
    const sy_mesh *om = &c->plan.mesh;
    int W = c->plan.world, b = c->rh.buddy[dead];
    sy_mesh nm = {.world = W - 1, .ep = W - 1, .dp = 1, .n_experts = om->n_experts,
                  .global_batch = om->global_batch, .balanced = om->balanced};
    nm.e_begin = calloc((size_t)W, sizeof(int));
    nm.e_end = calloc((size_t)W, sizeof(int));
    nm.row0 = calloc((size_t)W, sizeof(int));
    nm.nrows = calloc((size_t)W, sizeof(int));
    if (!nm.e_begin || !nm.e_end || !nm.row0 || !nm.nrows) {
        sy_mesh_free(&nm);
        snprintf(c->rh_why, sizeof c->rh_why, "out of memory");
        return -1;
    }
    int members[MAX_WORKERS];
    for (int q = 0; q < W - 1; q++) {
        int r = q < dead ? q : q + 1;
        members[q] = c->plan.rank_member[r];
        nm.e_begin[q] = om->e_begin[r];
        nm.e_end[q] = om->e_end[r];
        nm.row0[q] = om->row0[r];
        nm.nrows[q] = om->nrows[r];
        if (r == b) { /* adjacent: the ranges merge */
            nm.e_begin[q] = om->e_begin[b] < om->e_begin[dead] ? om->e_begin[b] : om->e_begin[dead];
            nm.e_end[q] = om->e_end[b] > om->e_end[dead] ? om->e_end[b] : om->e_end[dead];
            nm.row0[q] = om->row0[b] < om->row0[dead] ? om->row0[b] : om->row0[dead];
            nm.nrows[q] = om->nrows[b] + om->nrows[dead];
        }
    }
    member *gone = &c->pool.m[c->plan.rank_member[dead]];
    sy_warn("re-homing (%s): rank %d's experts %d..%d and rows %d..%d go to rank %d, which keeps their replica; "
            "step %" PRId64 " is %s, no checkpoint is read",
            reason, dead, om->e_begin[dead], om->e_end[dead] - 1, om->row0[dead], om->row0[dead] + om->nrows[dead] - 1,
            b, c->step, c->rh.planned ? "next" : "redone");
    coord_broadcast_abort(c, reason);
    if (c->rh.planned && gone->alive) {
        Switchyard__Release rel = SWITCHYARD__RELEASE__INIT;
        rel.epoch = c->epoch;
        rel.reason = (char *)reason;
        Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
        env.msg_case = SWITCHYARD__ENVELOPE__MSG_RELEASE;
        env.release = &rel;
        coord_send_to(c, gone, &env);
    }
    for (int i = 0; i < c->pool.n; i++) {
        c->pool.m[i].rank = -1;
        c->pool.m[i].ready = c->pool.m[i].reported = c->pool.m[i].saved = 0;
    }
    for (int q = 0; q < W - 1; q++) {
        c->plan.rank_member[q] = members[q];
        c->pool.m[members[q]].rank = q;
    }
    sy_mesh_free(&c->plan.mesh);
    c->plan.mesh = nm;
    c->plan.world = W - 1;
    c->epoch++;
    if (c->save.collecting) /* the step had committed: collect its checkpoint again */
        c->rh.redo_save = 1;
    if (c->save.writer)
        sy_ckpt_writer_destroy(&c->save.writer);
    c->save.expect = c->save.after = c->save.collecting = 0;
    c->rh.rehomes++;
    c->rh.last_lost = 0;
    c->rh.died_at = died_at;
    c->rh.detected_at = sy_now();
    c->rh.failed_step = c->step;
    c->rh.failed_rank = dead;
    sy_info("epoch %" PRIu64 ": mesh of %d worker%s = 1 data group x %d expert rank%s (re-homed from replicas)",
            c->epoch, W - 1, W - 1 == 1 ? "" : "s", W - 1, W - 1 == 1 ? "" : "s");
    sy_coord_event(c, "%s: re-homed to rank %d, step %lld %s", reason, b, (long long)c->step,
                   c->rh.planned ? "next" : "redone");
    log_line(c, "rehome",
             "\"step\": %" PRId64 ", \"rank\": %d, \"buddy\": %d, \"planned\": %s, \"workers\": %d, \"steps_lost\": 0, "
             "\"detect_s\": %.3f",
             c->step, dead, b, c->rh.planned ? "true" : "false", W - 1, c->rh.detected_at - died_at);
    c->rh.planned = 0;
    sy_balance_reset(c);
    c->bal.epoch_step0 = c->step;
    int rc = coord_send_assignments(c, 1);
    if (rc < 0)
        sy_error("re-homing: %s", sy_lasterr());
    return 0; /* rc 1: a survivor was unreachable, the main loop plans again (from the checkpoint) */
}

int coord_rehome_leave_due(coord *c) {
    for (int i = 0; i < c->rh.n_leave; i++) {
        if (c->rh.leave_step[i] != c->step)
            continue;
        c->rh.leave_step[i] = -1; /* once */
        int r = c->rh.leave_rank[i];
        if (r < 0 || r >= c->plan.world) {
            sy_warn("--leave %d at step %" PRId64 ": the mesh has %d ranks; nothing to do", r, c->step, c->plan.world);
            continue;
        }
        char reason[200];
        snprintf(reason, sizeof reason, "rank %d leaves before step %" PRId64 " (planned)", r, c->step);
        c->rh.planned = 1;
        int rc = coord_rehome_try(c, r, sy_now(), reason);
        c->rh.planned = 0;
        if (rc == 0)
            return 1;
        sy_error("planned shrink at step %" PRId64 ": %s", c->step, c->rh_why);
    }
    return 0;
}

int coord_rehome_grow(coord *c) {
    int W = c->plan.world, n = 0, members[MAX_WORKERS];
    double gf[MAX_WORKERS];
    if (c->ref.on || c->plan.mesh.dp != 1 || c->phase != TRAINING)
        return -1;
    for (int r = 0; r < W; r++)
        members[r] = c->plan.rank_member[r];
    for (int i = 0; i < c->pool.n && W + n < MAX_WORKERS; i++)
        if (c->pool.m[i].alive && c->pool.m[i].rank < 0)
            members[W + n++] = i;
    int W2 = W + n;
    if (n == 0 || W2 > c->plan.mesh.n_experts)
        return -1; /* a mesh of several data groups: admitted at a checkpoint boundary */
    int measured = 1;
    for (int r = 0; r < W2; r++) {
        gf[r] = c->pool.m[members[r]].speed; /* as start_epoch: measured compute (balance.c) */
        measured &= gf[r] > 0;
    }
    sy_mesh nm;
    if (sy_mesh_plan(&nm, W2, c->plan.mesh.n_experts, c->plan.mesh.global_batch,
                     c->cfg.cluster.balance_by_speed && measured ? gf : NULL, 1.0))
        return -1;
    sy_mesh_equal_experts(&nm);
    if (nm.dp != 1) {
        sy_mesh_free(&nm);
        return -1;
    }
    c->rh.prev_world = W;
    for (int r = 0; r < W; r++) {
        c->rh.prev_begin[r] = (uint32_t)c->plan.mesh.e_begin[r];
        c->rh.prev_end[r] = (uint32_t)c->plan.mesh.e_end[r];
    }
    sy_info("admitting %d waiting worker%s at step %" PRId64 ": the experts of the new shares come from the live "
            "workers (no checkpoint read)",
            n, n == 1 ? "" : "s", c->step);
    coord_rehome_note_join(c, n);
    for (int i = 0; i < c->pool.n; i++) {
        c->pool.m[i].rank = -1;
        c->pool.m[i].ready = c->pool.m[i].reported = c->pool.m[i].saved = 0;
    }
    for (int r = 0; r < W2; r++) {
        c->plan.rank_member[r] = members[r];
        c->pool.m[members[r]].rank = r;
    }
    sy_mesh_free(&c->plan.mesh);
    c->plan.mesh = nm;
    c->plan.world = W2;
    c->epoch++;
    sy_info("epoch %" PRIu64 ": mesh of %d workers = 1 data group x %d expert ranks (grown at a step boundary)",
            c->epoch, W2, W2);
    sy_coord_event(c, "%d worker%s joined at step %lld (state from the live workers)", n, n == 1 ? "" : "s",
                   (long long)c->step);
    c->rh.grow = 1;
    sy_balance_reset(c);
    c->bal.epoch_step0 = c->step;
    int rc = coord_send_assignments(c, 1);
    c->rh.grow = 0;
    if (rc < 0)
        sy_error("growing the mesh: %s", sy_lasterr());
    return 0; /* rc 1: a worker was unreachable, the main loop plans again */
}

void coord_rehome_release_stale(coord *c, member *mb, uint64_t epoch) {
    double now = sy_now();
    if (epoch == 0 || now - mb->released < 1.0)
        return;
    mb->released = now;
    sy_warn("worker %s, declared dead, is heard again (epoch %" PRIu64 "): telling it to drop that assignment and "
            "register again",
            mb->id, epoch);
    Switchyard__Release rel = SWITCHYARD__RELEASE__INIT;
    rel.epoch = epoch;
    rel.reason = "declared dead by the coordinator: register again";
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_RELEASE;
    env.release = &rel;
    coord_send_to(c, mb, &env);
}

int coord_rehome_join_allowed(const coord *c) {
    if (c->rh.n_join == 0)
        return 1;
    for (int i = 0; i < c->rh.n_join; i++)
        if (c->rh.join_step[i] == c->step)
            return 1;
    return 0;
}

void coord_rehome_step_done(coord *c) {
    if (c->save.collecting)
        return; /* a checkpoint, not a step */
    c->rh.replica_bytes = c->cur.replica_bytes;
    c->rh.replica_memory = c->cur.replica_memory;
    if (c->plan.world > 0 && c->cur.replica_bytes > 0) {
        c->rh.t_replica_sum += c->cur.t_replica / c->plan.world;
        c->rh.replica_steps++;
    }
    if (!(c->rh.died_at > 0))
        return;
    double now = sy_now();
    c->rh.last_recovery = now - c->rh.died_at;
    c->rh.last_detect = c->rh.detected_at - c->rh.died_at;
    sy_info("failure figures: %" PRId64 " step%s lost beyond the step in flight; %.2f s from the failure to the next "
            "completed step (%.2f s to notice it, %.2f s after)",
            c->rh.last_lost, c->rh.last_lost == 1 ? "" : "s", c->rh.last_recovery, c->rh.last_detect,
            c->rh.last_recovery - c->rh.last_detect);
    log_line(c, "recovered",
             "\"step\": %" PRId64 ", \"steps_lost\": %" PRId64 ", \"recovery_s\": %.3f, \"detect_s\": %.3f, \"workers\": %d",
             c->step + 1, c->rh.last_lost, c->rh.last_recovery, c->rh.last_detect, c->plan.world);
    c->rh.died_at = 0;
}

void coord_rehome_summary(coord *c) {
    if (c->rh.replica_steps > 0)
        sy_info("replicas: %.1f ms per step per worker in replica transfers (mean of %" PRId64 " steps); last step %.1f "
                "MB sent, %.1f MB of replica state kept (all workers)",
                1e3 * c->rh.t_replica_sum / c->rh.replica_steps, c->rh.replica_steps, c->rh.replica_bytes / 1e6,
                c->rh.replica_memory / 1e6);
}

void coord_rehome_note_join(coord *c, int n) {
    log_line(c, "join", "\"step\": %" PRId64 ", \"joining\": %d, \"workers\": %d", c->step, n, c->plan.world + n);
}

void coord_rehome_note_rollback(coord *c, const char *reason) {
    if (c->phase != TRAINING) { /* a mesh still starting (a worker registering twice...): no step was running */
        c->rh_why[0] = 0;
        return;
    }
    int64_t back = c->ckpt.last[0] ? c->ckpt.last_step : 0;
    c->rh.rollbacks++;
    c->rh.last_lost = c->step > back ? c->step - back : 0;
    c->rh.died_at = c->ckpt.recover_started > 0 ? c->ckpt.recover_started : sy_now();
    c->rh.detected_at = sy_now();
    c->rh.failed_step = c->step;
    if (c->rh_why[0])
        sy_warn("rolling back to step %" PRId64 " because %s", back, c->rh_why);
    log_line(c, "rollback", "\"step\": %" PRId64 ", \"back_to\": %" PRId64 ", \"steps_lost\": %" PRId64
             ", \"reason\": \"%.200s\", \"because\": \"%.300s\"",
             c->step, back, c->rh.last_lost, reason, c->rh_why);
    c->rh_why[0] = 0;
}

static int parse_i64(const char *s, long long *out, char stop) {
    char *end;
    *out = strtoll(s, &end, 10);
    return end != s && *end == stop && *out >= 0 ? (int)(end - s) : -1;
}

int coord_rehome_parse_leave(coord_rehome *rh, const char *v) {
    long long st, r;
    int k = parse_i64(v, &st, ':');
    if (k < 0 || parse_i64(v + k + 1, &r, 0) < 0 || rh->n_leave >= SY_MAX_PLANNED) {
        sy_seterr("--leave '%s': expected STEP:RANK (whole numbers, at most %d of them)", v, SY_MAX_PLANNED);
        return -1;
    }
    rh->leave_step[rh->n_leave] = st;
    rh->leave_rank[rh->n_leave++] = (int)r;
    return 0;
}

int coord_rehome_parse_join(coord_rehome *rh, const char *v) {
    long long st;
    if (parse_i64(v, &st, 0) < 0 || rh->n_join >= SY_MAX_PLANNED) {
        sy_seterr("--join-at '%s': expected a step (a whole number, at most %d of them)", v, SY_MAX_PLANNED);
        return -1;
    }
    rh->join_step[rh->n_join++] = st;
    return 0;
}

void coord_rehome_open_log(coord *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/membership.jsonl", c->cfg.checkpoint.dir);
    if (!(c->rh.log = fopen(path, "a")))
        sy_warn("cannot open %s: the failure figures go to the log only", path);
}

void coord_rehome_close(coord *c) {
    if (c->rh.log)
        fclose(c->rh.log);
    c->rh.log = NULL;
}
