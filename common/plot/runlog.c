/* runlog.c: reading a JSON-lines run log: the points,
 * run ids and skipped-line counts taken from it. JSON parsing is jansson's. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "log.h"
#include "plot.h"

/* Run ids are kept to this many bytes (with the NUL), truncated. */
#define SHORT_STR 64

/* ----------------------------------------------------------------- JSON */

/* jansson reads strict JSON; a run log may also hold the non-finite numbers C's printf
 * and Python's json write (nan, -nan, inf, NaN, -Infinity) and numbers too large for a
 * double (1e999). Those tokens, outside strings, become null (= no value) before the
 * line is parsed; everything else is left for jansson to accept or refuse.
 * out: room for 2 * n + 1 bytes; returns the bytes written. */
static size_t nonfinite_to_null(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (ch == '"') { /* a string, escapes included, copied as it is */
            out[o++] = s[i++];
            while (i < n && s[i] != '"') {
                if (s[i] == '\\' && i + 1 < n)
                    out[o++] = s[i++];
                out[o++] = s[i++];
            }
            if (i < n)
                out[o++] = s[i++];
            continue;
        }
        if (strchr("{}[],: \t\r\n", ch) || !ch) {
            out[o++] = s[i++];
            continue;
        }
        size_t k = i; /* a bare token: a number, a literal, or garbage */
        while (k < n && s[k] && !strchr("{}[],:\" \t\r\n", s[k]))
            k++;
        char tok[32];
        size_t len = k - i;
        int null = 0;
        if (len < sizeof tok) {
            memcpy(tok, s + i, len);
            tok[len] = 0;
            const char *w = tok + (tok[0] == '-' || tok[0] == '+');
            if (!strcasecmp(w, "nan") || !strcasecmp(w, "inf") || !strcasecmp(w, "infinity")) {
                null = 1;
            } else if (strspn(tok, "0123456789+-.eE") == len) {
                char *end;
                double v = strtod(tok, &end);
                null = *end == 0 && isinf(v);
            }
        }
        if (null) {
            memcpy(out + o, "null", 4);
            o += 4;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
        }
        i = k;
    }
    out[o] = 0;
    return o;
}

/* A plotted number: NAN for a missing, null, non-numeric or non-finite value. */
static double number_at(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    return isfinite(x) ? x : NAN;
}

/* ----------------------------------------------------------------- run log */

typedef struct {
    sy_runlog_point p;
    char run_id[SHORT_STR];
    int has_run_id;
} line_fields;

/* The plotted keys of one parsed line; every other key is ignored. */
static void take_fields(json_t *obj, line_fields *lf) {
    lf->p.step = number_at(obj, "step");
    lf->p.loss = number_at(obj, "loss");
    lf->p.ce = number_at(obj, "ce");
    lf->p.val_ce = number_at(obj, "val_ce");
    lf->p.tokens_per_s = number_at(obj, "tokens_per_s");
    lf->p.workers = number_at(obj, "workers");
    lf->p.epoch = number_at(obj, "epoch");
    const char *id = json_string_value(json_object_get(obj, "run_id"));
    lf->has_run_id = id != NULL;
    if (!id)
        return;
    /* printable ASCII kept; a control or non-ASCII character (one per UTF-8 sequence)
     * becomes '?', so a run id prints safely in a figure and a terminal */
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)id; *c && o + 1 < sizeof lf->run_id; c++) {
        if ((*c & 0xC0) == 0x80)
            continue;
        lf->run_id[o++] = *c >= 32 && *c < 127 ? (char)*c : '?';
    }
    lf->run_id[o] = 0;
}

static sy_runlog *runlog_new(const char *name) {
    sy_runlog *L = calloc(1, sizeof *L);
    if (!L || !(L->name = strdup(name ? name : "run log"))) {
        free(L);
        sy_seterr("%s: out of memory", name ? name : "run log");
        return NULL;
    }
    return L;
}

void sy_runlog_destroy(sy_runlog **log) {
    if (!log || !*log)
        return;
    sy_runlog *L = *log;
    for (size_t i = 0; i < L->n_run_ids; i++)
        free(L->run_ids[i]);
    free(L->run_ids);
    free(L->pts);
    free(L->name);
    free(L);
    *log = NULL;
}

static void note_skipped(sy_runlog *L, size_t lineno, const char *why) {
    if (L->n_bad_lines < SY_RUNLOG_MAX_BAD_LINES) {
        L->bad_lines[L->n_bad_lines++] = lineno;
        sy_warn("%s:%zu: skipped line: %s", L->name, lineno, why);
    }
}

/* One line of the log (without caring whether it ends in '\n'). unterminated: it is
 * the last line and has no newline, so a parse failure likely means a writer is still
 * appending to it. Returns -1 only when out of memory. */
static int runlog_add_line(sy_runlog *L, const char *s, size_t n, size_t lineno, int unterminated) {
    size_t k = 0;
    while (k < n && isspace((unsigned char)s[k]))
        k++;
    if (k == n)
        return 0; /* blank lines are not log lines */
    L->lines++;
    line_fields lf = {.p = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, -1}};
    char *text = malloc(2 * n + 1);
    if (!text)
        goto oom;
    size_t tn = nonfinite_to_null(s, n, text);
    json_error_t err;
    json_t *obj = json_loadb(text, tn, JSON_DECODE_INT_AS_REAL, &err);
    free(text);
    if (!json_is_object(obj)) {
        L->malformed++;
        char why[240];
        snprintf(why, sizeof why, "%scolumn %d: %s", unterminated ? "incomplete last line (still being written?): " : "",
                 obj ? 1 : err.column, obj ? "not a JSON object" : err.text);
        json_decref(obj);
        note_skipped(L, lineno, why);
        return 0;
    }
    take_fields(obj, &lf);
    json_decref(obj);
    if (!isfinite(lf.p.step)) {
        L->no_step++;
        note_skipped(L, lineno, "no numeric \"step\"");
        return 0;
    }
    if (lf.has_run_id) {
        if (!L->n_run_ids || strcmp(L->run_ids[L->n_run_ids - 1], lf.run_id)) {
            char **r = realloc(L->run_ids, (L->n_run_ids + 1) * sizeof *r);
            if (!r)
                goto oom;
            L->run_ids = r;
            if (!(r[L->n_run_ids] = strdup(lf.run_id)))
                goto oom;
            L->n_run_ids++;
        }
        lf.p.run = (int)L->n_run_ids - 1;
    }
    if (L->n == 0 || (L->n >= 16 && !(L->n & (L->n - 1)))) { /* capacity 16, 32, 64, ... */
        size_t cap = L->n ? 2 * L->n : 16;
        sy_runlog_point *p = realloc(L->pts, cap * sizeof *p);
        if (!p)
            goto oom;
        L->pts = p;
    }
    L->pts[L->n++] = lf.p;
    return 0;
oom:
    sy_seterr("%s:%zu: out of memory", L->name, lineno);
    return -1;
}

static void runlog_summary(const sy_runlog *L) {
    size_t skipped = L->malformed + L->no_step;
    if (skipped)
        sy_warn("%s: skipped %zu of %zu lines (%zu malformed, %zu without a step; first at line %zu)", L->name,
                skipped, L->lines, L->malformed, L->no_step, L->bad_lines[0]);
}

sy_runlog *sy_runlog_parse(const char *text, size_t len, const char *name) {
    sy_runlog *L = runlog_new(name);
    if (!L)
        return NULL;
    size_t pos = 0, lineno = 0;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        pos = 3; /* a UTF-8 byte order mark from an editor */
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (runlog_add_line(L, text + pos, end - pos, ++lineno, !nl) < 0) {
            sy_runlog_destroy(&L);
            return NULL;
        }
        pos = end + 1;
    }
    runlog_summary(L);
    return L;
}

sy_runlog *sy_runlog_read(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sy_seterr("%s: %s", path, strerror(errno));
        return NULL;
    }
    sy_runlog *L = runlog_new(path);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    if (!L)
        goto fail;
    while ((got = getline(&line, &cap, f)) >= 0) {
        size_t n = (size_t)got, off = 0;
        int terminated = n && line[n - 1] == '\n';
        if (!lineno && n >= 3 && !memcmp(line, "\xef\xbb\xbf", 3))
            off = 3;
        if (runlog_add_line(L, line + off, n - off, ++lineno, !terminated) < 0)
            goto fail;
    }
    if (ferror(f)) {
        sy_seterr("%s: read error: %s", path, strerror(errno));
        goto fail;
    }
    free(line);
    fclose(f);
    runlog_summary(L);
    return L;
fail:
    free(line);
    fclose(f);
    sy_runlog_destroy(&L);
    return NULL;
}
