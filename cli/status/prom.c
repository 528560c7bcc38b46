/* prom.c: a StatusReply as Prometheus text exposition 0.0.4, label values escaped and
 * invalid UTF-8 repaired. */
#include "status_format.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "text.h"

/* A label value: \\, \" and \n escaped; invalid UTF-8 replaced by U+FFFD (the format
 * requires UTF-8). Other bytes pass as they are, which the format allows. */
static void prom_escape(FILE *out, const char *s, int help) {
    const unsigned char *p = (const unsigned char *)S(s);
    while (*p) {
        uint32_t cp;
        size_t len = sy_utf8_next(p, &cp);
        if (cp == BAD_CP)
            fputs("\xEF\xBF\xBD", out);
        else if (cp == '\\')
            fputs("\\\\", out);
        else if (cp == '"' && !help)
            fputs("\\\"", out);
        else if (cp == '\n')
            fputs("\\n", out);
        else
            fwrite(p, 1, len, out);
        p += len;
    }
}

static void prom_value(FILE *out, double v) {
    if (isnan(v))
        fputs("NaN", out);
    else if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", out);
    else {
        char b[40];
        sy_fmt_double(b, sizeof b, v);
        fputs(b, out);
    }
}

static void prom_family(FILE *out, const char *name, const char *type, const char *help) {
    fprintf(out, "# HELP %s ", name);
    prom_escape(out, help, 1);
    fprintf(out, "\n# TYPE %s %s\n", name, type);
}

/* One sample: kv holds n label name/value pairs. */
static void prom_sample(FILE *out, const char *name, const char *const *kv, int n, double v) {
    fputs(name, out);
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s%s=\"", i ? "," : "{", kv[2 * i]);
        prom_escape(out, kv[2 * i + 1], 0);
        fputc('"', out);
    }
    fputs(n ? "} " : " ", out);
    prom_value(out, v);
    fputc('\n', out);
}

static void prom_scalar(FILE *out, const char *name, const char *type, const char *help, double v) {
    prom_family(out, name, type, help);
    prom_sample(out, name, NULL, 0, v);
}

/* Per-worker families: label set {worker, rank, host}. */
enum { W_GFLOPS, W_HEARTBEAT, W_STEP, W_EXPERTS, W_ROWS, W_CORES, W_THREADS, W_COMPUTE, W_WAIT, W_N };

static double worker_value(const Switchyard__WorkerStatus *w, int f) {
    switch (f) {
    case W_GFLOPS:
        return w->gflops;
    case W_HEARTBEAT:
        return w->heartbeat_age_s;
    case W_STEP:
        return w->step_time_s;
    case W_EXPERTS:
        return w->rank >= 0 && w->expert_end > w->expert_begin ? (double)(w->expert_end - w->expert_begin) : 0;
    case W_ROWS:
        return w->rank >= 0 ? (double)w->nrows : 0;
    case W_CORES:
        return w->cores;
    case W_COMPUTE:
        return w->compute_s;
    case W_WAIT:
        return w->wait_s;
    default:
        return w->threads;
    }
}

int sy_status_prom(FILE *out, const Switchyard__StatusReply *r) {
    char pv[16], ep[32];
    snprintf(pv, sizeof pv, "%u", r->protocol_version);
    snprintf(ep, sizeof ep, "%" PRIu64, r->epoch);
    const char *info[] = {"run_id", S(r->run_id), "state", S(r->state), "protocol_version", pv};
    prom_family(out, "switchyard_info", "gauge", "Run identity and coordinator state; the value is always 1.");
    prom_sample(out, "switchyard_info", info, 3, 1);

    prom_scalar(out, "switchyard_epoch", "gauge", "Run epoch: changes whenever the mesh is re-planned.", (double)r->epoch);
    prom_scalar(out, "switchyard_step", "gauge", "Last completed training step (goes back after a recovery).",
                (double)r->step);
    prom_scalar(out, "switchyard_total_steps", "gauge", "Steps the run is configured to train.",
                (double)r->total_steps);
    if (r->total_steps > 0)
        prom_scalar(out, "switchyard_progress_ratio", "gauge", "step / total_steps.",
                    (double)r->step / (double)r->total_steps);

    prom_family(out, "switchyard_loss_nats", "gauge", "Training loss of the last step by term (per byte).");
    const char *t_total[] = {"term", "total"}, *t_ce[] = {"term", "ce"}, *t_aux[] = {"term", "aux"},
               *t_z[] = {"term", "z"};
    prom_sample(out, "switchyard_loss_nats", t_total, 1, r->loss);
    prom_sample(out, "switchyard_loss_nats", t_ce, 1, r->ce);
    prom_sample(out, "switchyard_loss_nats", t_aux, 1, r->aux);
    prom_sample(out, "switchyard_loss_nats", t_z, 1, r->z);
    prom_scalar(out, "switchyard_val_loss_nats", "gauge", "Validation loss per byte; NaN until measured.",
                r->val_loss);
    prom_scalar(out, "switchyard_tokens_per_second", "gauge", "Training throughput over recent steps.",
                r->tokens_per_s);
    prom_scalar(out, "switchyard_step_time_seconds", "gauge", "Wall time of the last step.", r->step_time_s);
    prom_family(out, "switchyard_step_seconds", "gauge", "Time of the last step by phase.");
    const char *ph_c[] = {"phase", "compute"}, *ph_a[] = {"phase", "alltoall"}, *ph_r[] = {"phase", "allreduce"};
    prom_sample(out, "switchyard_step_seconds", ph_c, 1, r->compute_s);
    prom_sample(out, "switchyard_step_seconds", ph_a, 1, r->alltoall_s);
    prom_sample(out, "switchyard_step_seconds", ph_r, 1, r->allreduce_s);
    prom_scalar(out, "switchyard_learning_rate", "gauge", "Learning rate of the last step.", r->lr);
    prom_scalar(out, "switchyard_grad_norm", "gauge", "Global gradient norm of the last step.", r->grad_norm);
    prom_scalar(out, "switchyard_rehomes_total", "counter",
                "Worker losses recovered from buddy replicas, without a rollback.", r->rehomes);
    prom_scalar(out, "switchyard_rollbacks_total", "counter", "Failures that went back to a checkpoint.",
                r->rollbacks);
    prom_scalar(out, "switchyard_last_failure_steps_lost", "gauge",
                "Steps redone beyond the step in flight by the last failure; -1 before any.",
                (double)r->last_steps_lost);
    prom_scalar(out, "switchyard_last_failure_recovery_seconds", "gauge",
                "Last failure: seconds from the death to the next completed step.", r->last_recovery_s);
    prom_scalar(out, "switchyard_replica_every_steps", "gauge", "cluster.replica_every (0: replicas off).",
                r->replica_every);
    prom_scalar(out, "switchyard_replica_bytes", "gauge", "Buddy-replica bytes sent by all ranks in the last step.",
                (double)r->replica_bytes);
    prom_scalar(out, "switchyard_uptime_seconds_total", "counter", "Seconds since the coordinator started.",
                r->uptime_s);
    prom_scalar(out, "switchyard_world_size", "gauge", "Workers in the current mesh.", r->world);
    prom_scalar(out, "switchyard_min_workers", "gauge", "Workers the run needs to train.", r->min_workers);

    /* worker counts by state: the usual states always, so a series drops to 0 rather than
     * vanishing, plus any other state the coordinator reports */
    prom_family(out, "switchyard_workers", "gauge", "Registered workers by state.");
    const char *states[16 + 4] = {"training", "waiting", "joining", "dead"};
    int ns = 4;
    for (size_t i = 0; i < r->n_workers && ns < 20; i++) {
        int dup = 0;
        for (int j = 0; j < ns; j++)
            dup |= !strcmp(states[j], S(r->workers[i]->state));
        if (!dup)
            states[ns++] = S(r->workers[i]->state);
    }
    for (int j = 0; j < ns; j++) {
        int cnt = 0;
        for (size_t i = 0; i < r->n_workers; i++)
            cnt += !strcmp(states[j], S(r->workers[i]->state));
        const char *kv[] = {"state", states[j]};
        prom_sample(out, "switchyard_workers", kv, 1, cnt);
    }

    if (r->n_workers) {
        prom_family(out, "switchyard_worker_info", "gauge",
                    "One series per worker with its place in the mesh and state; the value is always 1.");
        for (size_t i = 0; i < r->n_workers; i++) {
            const Switchyard__WorkerStatus *w = r->workers[i];
            char rk[16], dr[16], er[16];
            snprintf(rk, sizeof rk, "%d", w->rank);
            snprintf(dr, sizeof dr, "%d", w->data_rank);
            snprintf(er, sizeof er, "%d", w->expert_rank);
            const char *kv[] = {"worker", S(w->id),       "rank",        rk,         "host",  S(w->host),
                                "data_rank", dr,          "expert_rank", er,         "state", S(w->state),
                                "endpoint", S(w->endpoint)};
            prom_sample(out, "switchyard_worker_info", kv, 7, 1);
        }
        static const char *const wname[W_N] = {
            "switchyard_worker_gflops", "switchyard_worker_heartbeat_age_seconds", "switchyard_worker_step_seconds",
            "switchyard_worker_experts", "switchyard_worker_rows", "switchyard_worker_cores",
            "switchyard_worker_threads", "switchyard_worker_compute_seconds", "switchyard_worker_wait_seconds"};
        static const char *const whelp[W_N] = {
            "Measured sgemm GFLOP/s of the worker.", "Seconds since the worker's last heartbeat.",
            "Wall time of the worker's last step.", "Experts the worker holds.",
            "Global batch rows the worker trains on.", "CPU cores of the worker's machine.",
            "Compute threads the worker uses.",
            "The worker's own compute in the last step (waits for peers excluded).",
            "The worker's all-to-all and all-reduce time in the last step (transfer and waiting for peers)."};
        for (int f = 0; f < W_N; f++) {
            prom_family(out, wname[f], "gauge", whelp[f]);
            for (size_t i = 0; i < r->n_workers; i++) {
                const Switchyard__WorkerStatus *w = r->workers[i];
                char rk[16];
                snprintf(rk, sizeof rk, "%d", w->rank);
                const char *kv[] = {"worker", S(w->id), "rank", rk, "host", S(w->host)};
                prom_sample(out, wname[f], kv, 3, worker_value(w, f));
            }
        }
    }

    if (r->n_experts) {
        static const char *const ename[2] = {"switchyard_expert_token_share", "switchyard_expert_drop_ratio"};
        static const char *const ehelp[2] = {
            "Share of the layer's routed tokens that chose this expert (sums to 1 per layer).",
            "Dropped (over capacity) / routed tokens of this expert."};
        for (int f = 0; f < 2; f++) {
            prom_family(out, ename[f], "gauge", ehelp[f]);
            for (size_t i = 0; i < r->n_experts; i++) {
                const Switchyard__ExpertStatus *x = r->experts[i];
                char ly[16], ex[16];
                snprintf(ly, sizeof ly, "%u", x->layer);
                snprintf(ex, sizeof ex, "%u", x->expert);
                const char *kv[] = {"layer", ly, "expert", ex};
                prom_sample(out, ename[f], kv, 2, f ? x->drop_rate : x->share);
            }
        }
        int any = 0;
        for (size_t i = 0; i < r->n_experts; i++)
            any |= r->experts[i]->n_lang_share > 0;
        if (any) {
            prom_family(out, "switchyard_expert_language_share", "gauge",
                        "Share of this expert's kept tokens by language of the text they came from.");
            for (size_t i = 0; i < r->n_experts; i++) {
                const Switchyard__ExpertStatus *x = r->experts[i];
                char ly[16], ex[16], nb[32];
                snprintf(ly, sizeof ly, "%u", x->layer);
                snprintf(ex, sizeof ex, "%u", x->expert);
                for (size_t g = 0; g < x->n_lang_share; g++) {
                    const char *kv[] = {"layer", ly, "expert", ex, "language", sy_status_lang_name(r, g, nb, sizeof nb)};
                    prom_sample(out, "switchyard_expert_language_share", kv, 3, x->lang_share[g]);
                }
            }
        }
    }

    prom_scalar(out, "switchyard_checkpoint_step", "gauge", "Step of the newest complete checkpoint; -1 when none.",
                (double)r->checkpoint_step);
    prom_scalar(out, "switchyard_checkpoint_age_seconds", "gauge",
                "Seconds since the newest checkpoint was committed; NaN when none.",
                r->checkpoint_step >= 0 ? r->checkpoint_age_s : NAN);
    if (r->checkpoint_step >= 0 && r->checkpoint_path && r->checkpoint_path[0]) {
        const char *kv[] = {"path", r->checkpoint_path};
        prom_family(out, "switchyard_checkpoint_info", "gauge", "Directory of the newest checkpoint; the value is 1.");
        prom_sample(out, "switchyard_checkpoint_info", kv, 1, 1);
    }
    prom_scalar(out, "switchyard_events", "gauge", "Recent events the coordinator holds (see switchyard status).",
                (double)r->n_events);
    return ferror(out) ? -1 : 0;
}
