/* runlog.c: reading a JSON-lines run log: a flat-object JSON parser and the points,
 * run ids and skipped-line counts taken from it. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "plot.h"

/* A value as the flat-object parser hands it over. Nested arrays/objects are parsed
 * (so the line must still be valid JSON) but reported as JV_OTHER: no plotted key
 * uses them, and unknown keys must not break the reader. */
enum { JV_NUM, JV_STR, JV_NULL, JV_BOOL, JV_OTHER };

#define JSON_MAX_DEPTH 32
#define SHORT_STR 64 /* keys and run ids are decoded into this much, truncated */

typedef struct {
    const char *s;
    size_t n, i;
    char err[128];
} jcur;

static int jfail(jcur *c, const char *why) {
    if (!c->err[0])
        snprintf(c->err, sizeof c->err, "column %zu: %s", c->i + 1, why);
    return -1;
}

static void jws(jcur *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\r' || c->s[c->i] == '\n'))
        c->i++;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Parses a string at c->s[c->i] == '"'. Decodes into out[outn] (truncated, always
 * NUL-terminated), keeping printable ASCII and writing '?' for anything else, because
 * the only strings we keep end up in a title drawn with an ASCII font. */
static int jstring(jcur *c, char *out, size_t outn) {
    size_t o = 0;
    c->i++; /* opening quote */
    for (;;) {
        if (c->i >= c->n)
            return jfail(c, "unterminated string");
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') {
            c->i++;
            break;
        }
        if (ch < 0x20)
            return jfail(c, "control character in string");
        char dec = (ch < 0x7f) ? (char)ch : '?';
        if (ch == '\\') {
            if (c->i + 1 >= c->n)
                return jfail(c, "unterminated string");
            char e = c->s[++c->i];
            switch (e) {
            case '"': dec = '"'; break;
            case '\\': dec = '\\'; break;
            case '/': dec = '/'; break;
            case 'b': case 'f': case 'n': case 'r': case 't': dec = '?'; break;
            case 'u': {
                if (c->i + 4 >= c->n)
                    return jfail(c, "bad \\u escape");
                int v = 0;
                for (int k = 1; k <= 4; k++) {
                    int h = hexval(c->s[c->i + k]);
                    if (h < 0)
                        return jfail(c, "bad \\u escape");
                    v = v * 16 + h;
                }
                c->i += 4;
                dec = (v >= 0x20 && v < 0x7f) ? (char)v : '?';
                break;
            }
            default: return jfail(c, "invalid escape in string");
            }
        }
        if (out && o + 1 < outn)
            out[o++] = dec;
        c->i++;
    }
    if (out && outn)
        out[o] = 0;
    return 0;
}

static int word_at(const jcur *c, const char *w) {
    size_t k = strlen(w);
    return c->n - c->i >= k && !strncasecmp(c->s + c->i, w, k);
}

/* A JSON number, or the non-standard NaN/Infinity spellings a C printf ("nan", "-nan",
 * "inf") or Python ("NaN", "Infinity") writes for a diverged loss: those become a
 * non-finite value that is then treated as absent, instead of losing the whole line. */
static int jnumber(jcur *c, double *v) {
    size_t st = c->i, i = c->i;
    int neg = 0;
    if (i < c->n && c->s[i] == '-') {
        neg = 1;
        i++;
    }
    c->i = i;
    if (word_at(c, "nan")) {
        c->i += 3;
        *v = NAN;
        return 0;
    }
    if (word_at(c, "infinity") || word_at(c, "inf")) {
        c->i += word_at(c, "infinity") ? 8 : 3;
        *v = neg ? -INFINITY : INFINITY;
        return 0;
    }
    c->i = st;
    if (i >= c->n || !isdigit((unsigned char)c->s[i]))
        return jfail(c, "bad number");
    if (c->s[i] == '0')
        i++;
    else
        while (i < c->n && isdigit((unsigned char)c->s[i]))
            i++;
    if (i < c->n && c->s[i] == '.') {
        i++;
        if (i >= c->n || !isdigit((unsigned char)c->s[i]))
            return jfail(c, "bad number");
        while (i < c->n && isdigit((unsigned char)c->s[i]))
            i++;
    }
    if (i < c->n && (c->s[i] == 'e' || c->s[i] == 'E')) {
        i++;
        if (i < c->n && (c->s[i] == '+' || c->s[i] == '-'))
            i++;
        if (i >= c->n || !isdigit((unsigned char)c->s[i]))
            return jfail(c, "bad number");
        while (i < c->n && isdigit((unsigned char)c->s[i]))
            i++;
    }
    /* strtod wants a terminated copy: the line is not NUL-terminated at the token */
    char buf[512];
    if (i - st >= sizeof buf)
        return jfail(c, "number too long");
    memcpy(buf, c->s + st, i - st);
    buf[i - st] = 0;
    *v = strtod(buf, NULL); /* overflow gives +-inf: treated as absent by the caller */
    c->i = i;
    return 0;
}

static int jvalue(jcur *c, int depth, int *type, double *num, char *str, size_t strn);

/* Parses (and discards) an array or object: a nested value under an unknown key. */
static int jcompound(jcur *c, int depth) {
    if (depth >= JSON_MAX_DEPTH)
        return jfail(c, "nesting too deep");
    char close = c->s[c->i] == '{' ? '}' : ']';
    int obj = close == '}';
    c->i++;
    jws(c);
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        return 0;
    }
    for (;;) {
        int t;
        double d;
        if (obj) {
            if (c->i >= c->n || c->s[c->i] != '"')
                return jfail(c, "expected a key string");
            if (jstring(c, NULL, 0))
                return -1;
            jws(c);
            if (c->i >= c->n || c->s[c->i] != ':')
                return jfail(c, "expected ':' after key");
            c->i++;
            jws(c);
        }
        if (jvalue(c, depth + 1, &t, &d, NULL, 0))
            return -1;
        jws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            jws(c);
            continue;
        }
        if (c->i < c->n && c->s[c->i] == close) {
            c->i++;
            return 0;
        }
        return jfail(c, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jvalue(jcur *c, int depth, int *type, double *num, char *str, size_t strn) {
    if (c->i >= c->n)
        return jfail(c, "missing value");
    char ch = c->s[c->i];
    *num = NAN;
    if (ch == '"') {
        *type = JV_STR;
        return jstring(c, str, strn);
    }
    if (ch == '{' || ch == '[') {
        *type = JV_OTHER;
        return jcompound(c, depth);
    }
    if (c->n - c->i >= 4 && !strncmp(c->s + c->i, "null", 4)) {
        c->i += 4;
        *type = JV_NULL;
        return 0;
    }
    if (c->n - c->i >= 4 && !strncmp(c->s + c->i, "true", 4)) {
        c->i += 4;
        *type = JV_BOOL;
        return 0;
    }
    if (c->n - c->i >= 5 && !strncmp(c->s + c->i, "false", 5)) {
        c->i += 5;
        *type = JV_BOOL;
        return 0;
    }
    *type = JV_NUM;
    return jnumber(c, num);
}

typedef void (*jfield_fn)(void *ud, const char *key, int type, double num, const char *str);

/* Parses one line holding one JSON object, calling fn for each member. Returns 0, or
 * -1 with c->err saying where and why. Members seen before an error have already been
 * reported; the caller discards the line then. */
static int jobject(jcur *c, jfield_fn fn, void *ud) {
    jws(c);
    if (c->i >= c->n || c->s[c->i] != '{')
        return jfail(c, "expected '{'");
    c->i++;
    jws(c);
    if (c->i < c->n && c->s[c->i] == '}') {
        c->i++;
    } else {
        for (;;) {
            char key[SHORT_STR], str[SHORT_STR];
            int t;
            double d;
            if (c->i >= c->n || c->s[c->i] != '"')
                return jfail(c, "expected a key string");
            if (jstring(c, key, sizeof key))
                return -1;
            jws(c);
            if (c->i >= c->n || c->s[c->i] != ':')
                return jfail(c, "expected ':' after key");
            c->i++;
            jws(c);
            if (jvalue(c, 0, &t, &d, str, sizeof str))
                return -1;
            fn(ud, key, t, d, t == JV_STR ? str : NULL);
            jws(c);
            if (c->i < c->n && c->s[c->i] == ',') {
                c->i++;
                jws(c);
                continue;
            }
            if (c->i < c->n && c->s[c->i] == '}') {
                c->i++;
                break;
            }
            return jfail(c, "expected ',' or '}'");
        }
    }
    jws(c);
    if (c->i < c->n)
        return jfail(c, "unexpected text after the object");
    return 0;
}

/* ----------------------------------------------------------------- run log */

typedef struct {
    sy_runlog_point p;
    char run_id[SHORT_STR];
    int has_run_id;
} line_fields;

static void take_field(void *ud, const char *key, int type, double num, const char *str) {
    line_fields *lf = ud;
    /* wrong type, null and non-finite all mean "no value" for a plotted number */
    double v = (type == JV_NUM && isfinite(num)) ? num : NAN;
    if (!strcmp(key, "step"))
        lf->p.step = v;
    else if (!strcmp(key, "loss"))
        lf->p.loss = v;
    else if (!strcmp(key, "ce"))
        lf->p.ce = v;
    else if (!strcmp(key, "val_ce"))
        lf->p.val_ce = v;
    else if (!strcmp(key, "tokens_per_s"))
        lf->p.tokens_per_s = v;
    else if (!strcmp(key, "workers"))
        lf->p.workers = v;
    else if (!strcmp(key, "epoch"))
        lf->p.epoch = v;
    else if (!strcmp(key, "run_id")) {
        lf->has_run_id = type == JV_STR;
        if (lf->has_run_id)
            snprintf(lf->run_id, sizeof lf->run_id, "%s", str);
    }
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
    jcur c = {.s = s, .n = n};
    if (jobject(&c, take_field, &lf)) {
        L->malformed++;
        char why[200];
        snprintf(why, sizeof why, "%s%s", unterminated ? "incomplete last line (still being written?): " : "",
                 c.err);
        note_skipped(L, lineno, why);
        return 0;
    }
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
