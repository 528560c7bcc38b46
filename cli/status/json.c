/* json.c: a StatusReply as one JSON object. Strings are escaped and invalid UTF-8 is
 * repaired so the output always parses; doubles in their shortest exact form, 64-bit
 * integers exact (beyond what a JSON library's signed integers hold). */
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


static void json_num(FILE *out, double v) {
    if (!isfinite(v)) {
        fputs("null", out);
        return;
    }
    char b[40];
    sy_fmt_double(b, sizeof b, v);
    fputs(b, out);
}

static void json_str(FILE *out, const char *s) {
    fputc('"', out);
    const unsigned char *p = (const unsigned char *)S(s);
    while (*p) {
        uint32_t cp;
        size_t len = sy_utf8_next(p, &cp);
        if (cp == BAD_CP)
            fputs("\xEF\xBF\xBD", out); /* U+FFFD */
        else if (cp == '"')
            fputs("\\\"", out);
        else if (cp == '\\')
            fputs("\\\\", out);
        else if (cp == '\n')
            fputs("\\n", out);
        else if (cp == '\r')
            fputs("\\r", out);
        else if (cp == '\t')
            fputs("\\t", out);
        else if (cp == '\b')
            fputs("\\b", out);
        else if (cp == '\f')
            fputs("\\f", out);
        else if (cp < 0x20 || cp == 0x7F)
            fprintf(out, "\\u%04x", (unsigned)cp);
        else
            fwrite(p, 1, len, out);
        p += len;
    }
    fputc('"', out);
}

/* Key writers: each prints the separator, the key and the value. `first` tracks the
 * comma between members of the object being written. */
typedef struct {
    FILE *out;
    int first;
} jobj;

static void jkey(jobj *o, const char *k) {
    fputs(o->first ? "" : ", ", o->out);
    o->first = 0;
    json_str(o->out, k);
    fputs(": ", o->out);
}
static void jnum(jobj *o, const char *k, double v) { jkey(o, k), json_num(o->out, v); }
static void jint(jobj *o, const char *k, int64_t v) { jkey(o, k), fprintf(o->out, "%" PRId64, v); }
static void juint(jobj *o, const char *k, uint64_t v) { jkey(o, k), fprintf(o->out, "%" PRIu64, v); }
static void jstr(jobj *o, const char *k, const char *v) { jkey(o, k), json_str(o->out, v); }

/* Top-level members go one per line; the top-level writer uses ",\n  " separators. */
static void jtop(jobj *o, const char *k) {
    fputs(o->first ? "\n  " : ",\n  ", o->out);
    o->first = 0;
    json_str(o->out, k);
    fputs(": ", o->out);
}
#define TOP(o, k, expr) (jtop(o, k), (expr))

/* Top-level arrays: jarr writes the key and '['. Arrays of objects go one element per
 * line: jelem opens element i and returns its key writer (the caller closes it with '}');
 * jarr_end closes such an array of n elements. */
static void jarr(jobj *o, const char *k) {
    jtop(o, k);
    fputc('[', o->out);
}
static jobj jelem(FILE *out, size_t i) {
    fputs(i ? ",\n    {" : "\n    {", out);
    return (jobj){out, 1};
}
static void jarr_end(FILE *out, size_t n) { fputs(n ? "\n  ]" : "]", out); }

int sy_status_json(FILE *out, const Switchyard__StatusReply *r) {
    jobj t = {out, 1};
    fputc('{', out);
    TOP(&t, "protocol_version", fprintf(out, "%u", r->protocol_version));
    TOP(&t, "run_id", json_str(out, r->run_id));
    TOP(&t, "state", json_str(out, r->state));
    TOP(&t, "epoch", fprintf(out, "%" PRIu64, r->epoch));
    TOP(&t, "step", fprintf(out, "%" PRId64, r->step));
    TOP(&t, "total_steps", fprintf(out, "%" PRId64, r->total_steps));
    TOP(&t, "loss", json_num(out, r->loss));
    TOP(&t, "ce", json_num(out, r->ce));
    TOP(&t, "aux", json_num(out, r->aux));
    TOP(&t, "z", json_num(out, r->z));
    TOP(&t, "val_loss", json_num(out, r->val_loss));
    TOP(&t, "tokens_per_s", json_num(out, r->tokens_per_s));
    TOP(&t, "step_time_s", json_num(out, r->step_time_s));
    TOP(&t, "compute_s", json_num(out, r->compute_s));
    TOP(&t, "alltoall_s", json_num(out, r->alltoall_s));
    TOP(&t, "allreduce_s", json_num(out, r->allreduce_s));

    jarr(&t, "workers");
    for (size_t i = 0; i < r->n_workers; i++) {
        const Switchyard__WorkerStatus *w = r->workers[i];
        jobj o = jelem(out, i);
        jstr(&o, "id", w->id);
        jstr(&o, "host", w->host);
        jint(&o, "rank", w->rank);
        jint(&o, "data_rank", w->data_rank);
        jint(&o, "expert_rank", w->expert_rank);
        juint(&o, "expert_begin", w->expert_begin);
        juint(&o, "expert_end", w->expert_end);
        juint(&o, "row0", w->row0);
        juint(&o, "nrows", w->nrows);
        jnum(&o, "gflops", w->gflops);
        jnum(&o, "heartbeat_age_s", w->heartbeat_age_s);
        jnum(&o, "step_time_s", w->step_time_s);
        jstr(&o, "state", w->state);
        jstr(&o, "endpoint", w->endpoint);
        juint(&o, "cores", w->cores);
        juint(&o, "threads", w->threads);
        jnum(&o, "compute_s", w->compute_s);
        jnum(&o, "wait_s", w->wait_s);
        fputc('}', out);
    }
    jarr_end(out, r->n_workers);

    jarr(&t, "experts");
    for (size_t i = 0; i < r->n_experts; i++) {
        const Switchyard__ExpertStatus *x = r->experts[i];
        jobj o = jelem(out, i);
        juint(&o, "layer", x->layer);
        juint(&o, "expert", x->expert);
        jnum(&o, "share", x->share);
        jnum(&o, "drop_rate", x->drop_rate);
        jkey(&o, "lang_share");
        fputc('[', out);
        for (size_t g = 0; g < x->n_lang_share; g++) {
            fputs(g ? ", " : "", out);
            json_num(out, x->lang_share[g]);
        }
        fputs("]}", out);
    }
    jarr_end(out, r->n_experts);

    jarr(&t, "languages");
    for (size_t g = 0; g < r->n_languages; g++) {
        fputs(g ? ", " : "", out);
        json_str(out, r->languages[g]);
    }
    fputc(']', out);

    TOP(&t, "checkpoint_step", fprintf(out, "%" PRId64, r->checkpoint_step));
    TOP(&t, "checkpoint_path", json_str(out, r->checkpoint_path));
    TOP(&t, "checkpoint_age_s", json_num(out, r->checkpoint_age_s));

    jarr(&t, "events");
    for (size_t i = 0; i < r->n_events; i++) {
        jobj o = jelem(out, i);
        jnum(&o, "age_s", r->events[i]->age_s);
        jstr(&o, "what", r->events[i]->what);
        fputc('}', out);
    }
    jarr_end(out, r->n_events);

    TOP(&t, "uptime_s", json_num(out, r->uptime_s));
    TOP(&t, "world", fprintf(out, "%u", r->world));
    TOP(&t, "min_workers", fprintf(out, "%u", r->min_workers));
    TOP(&t, "error", json_str(out, r->error));
    TOP(&t, "lr", json_num(out, r->lr));
    TOP(&t, "grad_norm", json_num(out, r->grad_norm));
    TOP(&t, "straggler_rank", fprintf(out, "%d", r->straggler_rank));
    TOP(&t, "straggler_wait_s", json_num(out, r->straggler_wait_s));
    TOP(&t, "rehomes", fprintf(out, "%u", r->rehomes));
    TOP(&t, "rollbacks", fprintf(out, "%u", r->rollbacks));
    TOP(&t, "last_steps_lost", fprintf(out, "%" PRId64, r->last_steps_lost));
    TOP(&t, "last_recovery_s", json_num(out, r->last_recovery_s));
    TOP(&t, "last_detect_s", json_num(out, r->last_detect_s));
    TOP(&t, "replica_every", fprintf(out, "%u", r->replica_every));
    TOP(&t, "replica_bytes", fprintf(out, "%" PRIu64, r->replica_bytes));
    fputs("\n}\n", out);
    return ferror(out) ? -1 : 0;
}
