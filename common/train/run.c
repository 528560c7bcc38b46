#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

/* ---------------------------------------------------------------- run id */

void sy_run_id_new(char *out, size_t n) {
    snprintf(out, n, "%08lx-%04x", (unsigned long)time(NULL), (unsigned)(getpid() & 0xffff));
}

void sy_run_id_from_ckpt(const sy_ckpt *ck, char *out, size_t n) {
    const char *rid = ck ? sy_ckpt_get(ck, SY_CKPT_KEY_RUN_ID) : NULL;
    if (rid)
        snprintf(out, n, "%s", rid);
}

/* ---------------------------------------------------------------- checkpoint metadata */

int sy_run_ckpt_meta(sy_ckpt_writer *w, const char *run_id, int64_t step, int workers, const char *config_yaml) {
    char pos[32], nw[16];
    snprintf(pos, sizeof pos, "%" PRId64, step);
    snprintf(nw, sizeof nw, "%d", workers);
    if (sy_ckpt_writer_set(w, SY_CKPT_KEY_RUN_ID, run_id) || sy_ckpt_writer_set(w, SY_CKPT_KEY_DATA_POS, pos) ||
        sy_ckpt_writer_set(w, "adam_t", pos) || sy_ckpt_writer_set(w, "workers", nw))
        return -1;
    return config_yaml ? sy_ckpt_writer_set_config(w, config_yaml, strlen(config_yaml)) : 0;
}

/* ---------------------------------------------------------------- progress line */

void sy_progress_start(sy_progress *p) { *p = (sy_progress){.t0 = sy_now()}; }

void sy_progress_add(sy_progress *p, const sy_losses *l, int64_t tokens) {
    p->sum.total += l->total;
    p->sum.ce += l->ce;
    p->sum.aux += l->aux;
    p->sum.z += l->z;
    p->tokens += tokens;
    p->n++;
}

int sy_progress_due(int64_t done, int64_t steps, int64_t first_done, int log_every) {
    return (log_every > 0 && done % log_every == 0) || done == steps || done == first_done;
}

void sy_progress_log(sy_progress *p, int64_t done, int64_t steps, int64_t tokens_per_step, double lr,
                     double grad_norm, const sy_run_times *t) {
    double now = sy_now(), tps = p->tokens / (now - p->t0), n = p->n > 0 ? p->n : 1;
    char eta[32], times[160] = "";
    sy_fmt_duration(eta, sizeof eta, (steps - done) * (double)tokens_per_step / tps);
    if (t)
        snprintf(times, sizeof times, " | step %.0f ms (compute %.0f, all-to-all %.0f, all-reduce %.0f)",
                 t->step * 1e3, t->compute * 1e3, t->alltoall * 1e3, t->allreduce * 1e3);
    sy_info("step %6" PRId64 "/%" PRId64 " | loss %.4f (ce %.4f aux %.3f z %.3f) | lr %.2e | |g| %.2f | %.0f tok/s%s | "
            "ETA %s",
            done, steps, p->sum.total / n, p->sum.ce / n, p->sum.aux / n, p->sum.z / n, lr, grad_norm, tps, times, eta);
    *p = (sy_progress){.t0 = now};
}

/* ---------------------------------------------------------------- run log */

struct sy_runlog {
    int fd;
    char path[4096];
    int64_t lost;  /* records a full disk (or another write error) kept out */
};

sy_runlog *sy_runlog_open(const char *dir, const char *name) {
    sy_runlog *log = calloc(1, sizeof *log);
    if (!log) {
        sy_seterr("run log: out of memory");
        return NULL;
    }
    snprintf(log->path, sizeof log->path, "%s/%s", dir, name);
    if ((log->fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        sy_seterr("%s: cannot open the run log: %s", log->path, strerror(errno));
        free(log);
        return NULL;
    }
    return log;
}

void sy_runlog_close(sy_runlog **log) {
    if (!log || !*log)
        return;
    close((*log)->fd);
    free(*log);
    *log = NULL;
}

/* x as printed with fmt (the precision the log keeps); JSON null for NaN or infinity. */
static json_t *num(double x, const char *fmt) {
    if (!isfinite(x))
        return json_null();
    char s[64];
    snprintf(s, sizeof s, fmt, x);
    return json_real(strtod(s, NULL));
}

/* One line, whole or not at all (sy_append_record): a full disk never cuts a record or
 * merges two; what could not be written is counted and said, once per failure run. */
static void write_line(sy_runlog *log, json_t *o) {
    /* 15 significant digits give back exactly the decimals num() kept */
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    size_t n = text ? strlen(text) : 0;
    char *line = text ? realloc(text, n + 2) : NULL;
    if (!line) {
        free(text);
        sy_warn("%s: cannot write the run log: out of memory", log->path);
    } else {
        line[n] = '\n';
        if (sy_append_record(log->fd, line, n + 1)) {
            if (log->lost++ == 0)
                sy_error("%s: %s; run-log records are missing from here on", log->path, sy_lasterr());
        } else if (log->lost) {
            sy_warn("%s: the run log is written again; %" PRId64 " record%s missing before this one", log->path,
                    log->lost, log->lost == 1 ? " is" : "s are");
            log->lost = 0;
        }
        free(line);
    }
    json_decref(o);
}

void sy_runlog_write_step(sy_runlog *log, const sy_runlog_step *s) {
    if (!log)
        return;
    json_t *o = json_object();
    if (!o)
        return write_line(log, NULL);
    json_object_set_new(o, "run_id", json_string(s->run_id));
    if (s->epoch)
        json_object_set_new(o, "epoch", json_integer((json_int_t)s->epoch));
    json_object_set_new(o, "step", json_integer(s->step));
    json_object_set_new(o, "loss", num(s->loss.total, "%.6f"));
    json_object_set_new(o, "ce", num(s->loss.ce, "%.6f"));
    json_object_set_new(o, "aux", num(s->loss.aux, "%.6f"));
    json_object_set_new(o, "z", num(s->loss.z, "%.6f"));
    json_object_set_new(o, "lr", num(s->lr, "%.6g"));
    json_object_set_new(o, "grad_norm", num(s->grad_norm, "%.4f"));
    json_object_set_new(o, "tokens_per_s", num(s->tokens_per_s, "%.1f"));
    if (s->times) {
        json_object_set_new(o, "step_ms", num(s->times->step * 1e3, "%.2f"));
        json_object_set_new(o, "compute_ms", num(s->times->compute * 1e3, "%.2f"));
        json_object_set_new(o, "alltoall_ms", num(s->times->alltoall * 1e3, "%.2f"));
        json_object_set_new(o, "allreduce_ms", num(s->times->allreduce * 1e3, "%.2f"));
        if (s->times->optimizer > 0)
            json_object_set_new(o, "optimizer_ms", num(s->times->optimizer * 1e3, "%.2f"));
        if (s->times->replica > 0)
            json_object_set_new(o, "replica_ms", num(s->times->replica * 1e3, "%.2f"));
        if (s->times->busiest > 0)
            json_object_set_new(o, "busiest_ms", num(s->times->busiest * 1e3, "%.2f"));
    }
    if (s->bytes_sent)
        json_object_set_new(o, "bytes_sent", json_integer((json_int_t)s->bytes_sent));
    json_object_set_new(o, "workers", json_integer(s->workers));
    json_object_set_new(o, "time", num(s->time, "%.3f"));
    write_line(log, o);
}

void sy_runlog_write_val(sy_runlog *log, const char *run_id, int64_t step, double val_ce, int workers, double time) {
    if (!log)
        return;
    write_line(log, json_pack("{s:s, s:I, s:o, s:i, s:o}", "run_id", run_id, "step", (json_int_t)step, "val_ce",
                              num(val_ce, "%.6f"), "workers", workers, "time", num(time, "%.3f")));
}

/* ---------------------------------------------------------------- expert load */

int sy_expert_load_init(sy_expert_load *x, const sy_model_cfg *mc, int n_langs) {
    memset(x, 0, sizeof *x);
    for (int l = 0; l < mc->n_layers; l++)
        x->n_switch += sy_is_switch_layer(mc, l);
    x->E = mc->n_experts;
    x->n_langs = n_langs > 0 ? n_langs : 0;
    size_t n = sy_expert_load_count(x);
    x->wanted = calloc(n + 1, sizeof(int64_t));
    x->kept = calloc(n + 1, sizeof(int64_t));
    x->lang = x->n_langs ? calloc(n * x->n_langs + 1, sizeof(int64_t)) : NULL;
    x->scratch = calloc(2 * (size_t)x->E + 1, sizeof(int));
    if (!x->wanted || !x->kept || !x->scratch || (x->n_langs && !x->lang)) {
        sy_expert_load_free(x);
        sy_seterr("expert load: out of memory");
        return -1;
    }
    return 0;
}

void sy_expert_load_free(sy_expert_load *x) {
    free(x->wanted);
    free(x->kept);
    free(x->lang);
    free(x->scratch);
    memset(x, 0, sizeof *x);
}

size_t sy_expert_load_count(const sy_expert_load *x) { return (size_t)x->n_switch * x->E; }
size_t sy_expert_load_lang_count(const sy_expert_load *x) { return sy_expert_load_count(x) * x->n_langs; }

void sy_expert_load_clear(sy_expert_load *x) {
    size_t n = sy_expert_load_count(x);
    memset(x->wanted, 0, n * sizeof(int64_t));
    memset(x->kept, 0, n * sizeof(int64_t));
    if (x->lang)
        memset(x->lang, 0, n * x->n_langs * sizeof(int64_t));
}

void sy_expert_load_add_model(sy_expert_load *x, const sy_model *m, const int16_t *lang, int64_t N) {
    const sy_model_cfg *mc = &sy_model_layout(m)->cfg;
    int E = x->E, NL = x->n_langs, li = 0, *w = x->scratch, *kp = x->scratch + E;
    for (int l = 0; l < mc->n_layers && li < x->n_switch; l++) {
        int k;
        const int *route = sy_model_routing(m, l, &k);
        if (!route)
            continue;
        sy_model_expert_load(m, l, w, kp);
        for (int e = 0; e < E; e++) {
            x->wanted[(size_t)li * E + e] += w[e];
            x->kept[(size_t)li * E + e] += kp[e];
        }
        for (int64_t t = 0; lang && NL > 0 && t < N; t++)
            for (int j = 0; j < k; j++) {
                int e = route[t * k + j], g = lang[t];
                if (e >= 0 && g >= 0 && g < NL)
                    x->lang[((size_t)li * E + e) * NL + g]++;
            }
        li++;
    }
}

void sy_expert_load_add_counts(sy_expert_load *x, const uint32_t *wanted, const uint32_t *kept, const uint32_t *lang) {
    size_t n = sy_expert_load_count(x);
    for (size_t i = 0; i < n; i++) {
        x->wanted[i] += wanted[i];
        x->kept[i] += kept[i];
    }
    for (size_t i = 0; lang && x->lang && i < n * x->n_langs; i++)
        x->lang[i] += lang[i];
}

void sy_expert_load_print(const sy_expert_load *x, const sy_model_cfg *mc, FILE *out) {
    int E = x->E, li = 0;
    fprintf(out, "\nexpert load (share of routed choices / drop rate), training run:\n");
    for (int l = 0; l < mc->n_layers && li < x->n_switch; l++) {
        if (!sy_is_switch_layer(mc, l))
            continue;
        const int64_t *w = x->wanted + (size_t)li * E, *k = x->kept + (size_t)li * E;
        int64_t tw = 0, tk = 0;
        for (int e = 0; e < E; e++) {
            tw += w[e];
            tk += k[e];
        }
        fprintf(out, "layer %-3d", l);
        for (int e = 0; e < E && e < 16; e++)
            fprintf(out, "  e%d %4.1f%%/%4.1f%%", e, tw ? 100.0 * w[e] / tw : 0.0,
                    w[e] ? 100.0 * (w[e] - k[e]) / w[e] : 0.0);
        fprintf(out, "  drop %.2f%%\n", tw ? 100.0 * (tw - tk) / tw : 0.0);
        li++;
    }
    fflush(out);
}
