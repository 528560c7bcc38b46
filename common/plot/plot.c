/* plot.c: run log reader (flat JSON lines), the two-panel training-curve figure, and
 * its two back ends: SVG text and a small anti-aliased rasterizer with a bitmap font
 * and a PNG encoder (CRC-32, Adler-32, LZ77 + fixed-Huffman deflate, all here because
 * the project links no image or compression library). */
#include "plot.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

/* ======================================================================== reader */

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

/* ======================================================================== font */

/* 5x9 bitmap font for ASCII 32..126: rows top to bottom, '#' = ink. Rows 0-6 hold
 * capitals and digits (baseline under row 6); rows 7-8 are descenders (g j p q y , ;).
 * Written out as pictures so a wrong pixel is easy to see and fix. */
#define G7(a, b, c, d, e, f, g) a b c d e f g "....." "....."
#define G9(a, b, c, d, e, f, g, h, i) a b c d e f g h i
#define GLYPH_W 5
#define GLYPH_H 9
#define GLYPH_ADV 6 /* columns per character, including the gap */
#define GLYPH_CAP 7 /* rows above the baseline */
static const char font5x9[95][GLYPH_W * GLYPH_H + 1] = {
    G7(".....", ".....", ".....", ".....", ".....", ".....", "....."), /* space */
    G7("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."), /* ! */
    G7(".#.#.", ".#.#.", ".#.#.", ".....", ".....", ".....", "....."), /* " */
    G7(".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."), /* # */
    G7("..#..", ".####", "#.#..", ".###.", "..#.#", "####.", "..#.."), /* $ */
    G7("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"), /* % */
    G7(".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"), /* & */
    G7("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."), /* ' */
    G7("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."), /* ( */
    G7(".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."), /* ) */
    G7(".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", "....."), /* * */
    G7(".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."), /* + */
    G9(".....", ".....", ".....", ".....", ".....", ".##..", "..#..", ".#...", "....."), /* , */
    G7(".....", ".....", ".....", "#####", ".....", ".....", "....."), /* - */
    G7(".....", ".....", ".....", ".....", ".....", ".##..", ".##.."), /* . */
    G7(".....", "....#", "...#.", "..#..", ".#...", "#....", "....."), /* / */
    G7(".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."), /* 0 */
    G7("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."), /* 1 */
    G7(".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"), /* 2 */
    G7("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."), /* 3 */
    G7("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."), /* 4 */
    G7("#####", "#....", "####.", "....#", "....#", "#...#", ".###."), /* 5 */
    G7("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."), /* 6 */
    G7("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."), /* 7 */
    G7(".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."), /* 8 */
    G7(".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."), /* 9 */
    G7(".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."), /* : */
    G9(".....", ".##..", ".##..", ".....", ".##..", ".##..", "..#..", ".#...", "....."), /* ; */
    G7("...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."), /* < */
    G7(".....", ".....", "#####", ".....", "#####", ".....", "....."), /* = */
    G7(".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."), /* > */
    G7(".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."), /* ? */
    G7(".###.", "#...#", "....#", ".##.#", "#.#.#", "#.#.#", ".###."), /* @ */
    G7(".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"), /* A */
    G7("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."), /* B */
    G7(".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."), /* C */
    G7("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."), /* D */
    G7("#####", "#....", "#....", "####.", "#....", "#....", "#####"), /* E */
    G7("#####", "#....", "#....", "####.", "#....", "#....", "#...."), /* F */
    G7(".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"), /* G */
    G7("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"), /* H */
    G7(".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."), /* I */
    G7("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."), /* J */
    G7("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"), /* K */
    G7("#....", "#....", "#....", "#....", "#....", "#....", "#####"), /* L */
    G7("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"), /* M */
    G7("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"), /* N */
    G7(".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."), /* O */
    G7("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."), /* P */
    G7(".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"), /* Q */
    G7("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"), /* R */
    G7(".####", "#....", "#....", ".###.", "....#", "....#", "####."), /* S */
    G7("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."), /* T */
    G7("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."), /* U */
    G7("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."), /* V */
    G7("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."), /* W */
    G7("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"), /* X */
    G7("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."), /* Y */
    G7("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"), /* Z */
    G7(".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."), /* [ */
    G7(".....", "#....", ".#...", "..#..", "...#.", "....#", "....."), /* backslash */
    G7(".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."), /* ] */
    G7("..#..", ".#.#.", "#...#", ".....", ".....", ".....", "....."), /* ^ */
    G9(".....", ".....", ".....", ".....", ".....", ".....", ".....", "#####", "....."), /* _ */
    G7(".#...", "..#..", "...#.", ".....", ".....", ".....", "....."), /* ` */
    G7(".....", ".....", ".###.", "....#", ".####", "#...#", ".####"), /* a */
    G7("#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."), /* b */
    G7(".....", ".....", ".###.", "#....", "#....", "#...#", ".###."), /* c */
    G7("....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"), /* d */
    G7(".....", ".....", ".###.", "#...#", "#####", "#....", ".###."), /* e */
    G7("..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."), /* f */
    G9(".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."), /* g */
    G7("#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"), /* h */
    G7("..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."), /* i */
    G9("...#.", ".....", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."), /* j */
    G7("#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."), /* k */
    G7(".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."), /* l */
    G7(".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"), /* m */
    G7(".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"), /* n */
    G7(".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."), /* o */
    G9(".....", ".....", "####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."), /* p */
    G9(".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"), /* q */
    G7(".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."), /* r */
    G7(".....", ".....", ".####", "#....", ".###.", "....#", "####."), /* s */
    G7(".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."), /* t */
    G7(".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"), /* u */
    G7(".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."), /* v */
    G7(".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."), /* w */
    G7(".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"), /* x */
    G9(".....", ".....", "#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."), /* y */
    G7(".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"), /* z */
    G7("...#.", "..#..", "..#..", ".#...", "..#..", "..#..", "...#."), /* { */
    G7("..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."), /* | */
    G7(".#...", "..#..", "..#..", "...#.", "..#..", "..#..", ".#..."), /* } */
    G7(".....", ".....", ".#...", "#.#.#", "...#.", ".....", "....."), /* ~ */
};

static const char *glyph(char ch) {
    unsigned char u = (unsigned char)ch;
    return font5x9[(u >= 32 && u <= 126 ? u : '?') - 32];
}

/* Pixel width of s drawn at an integer scale (no trailing gap). */
static double text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (double)(n * GLYPH_ADV - 1) * scale : 0;
}

/* ======================================================================== canvas */

/* The figure is drawn once through this interface; the SVG and raster back ends turn
 * the same calls into markup or pixels, so both outputs show the same picture.
 * Coordinates are pixels, y down; pixel (i, j) covers [i, i+1) x [j, j+1), so a
 * 1-pixel line is crisp at k + 0.5. Text is placed by the top of its character cell. */
enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END };
typedef struct canvas canvas;
struct canvas {
    /* open polyline of n points (xy pairs); dash > 0: dashes of that length */
    void (*line)(canvas *cv, const double *xy, size_t n, uint32_t rgb, double width, double dash);
    void (*rect)(canvas *cv, double x, double y, double w, double h, uint32_t rgb, double alpha);
    void (*dot)(canvas *cv, double cx, double cy, double r, uint32_t rgb);
    void (*text)(canvas *cv, double x, double y, const char *s, int scale, int anchor, uint32_t rgb);
};

/* ======================================================================== figure */

#define C_BG 0xffffffu
#define C_FRAME 0x404040u
#define C_GRID 0xe4e4e4u
#define C_TEXT 0x1a1a1au
#define C_MUTED 0x5a5a5au
#define C_CE 0x1f62b4u   /* training ce: the curve to read */
#define C_LOSS 0x9cc3e6u /* total loss: same hue, lighter, behind */
#define C_VAL 0xe6550du  /* validation ce */
#define C_TPS 0x2c9a2cu
#define C_MARK 0x7a7a7au

enum { F_CE, F_LOSS, F_VAL, F_TPS };

static double fieldv(const sy_runlog_point *p, int f) {
    switch (f) {
    case F_CE: return p->ce;
    case F_LOSS: return p->loss;
    case F_VAL: return p->val_ce;
    default: return p->tokens_per_s;
    }
}

/* Tick spacing 1, 2 or 5 x 10^k giving about `target` intervals, at least min_step
 * (steps are whole numbers: no tick at step 6.8); the range is widened to whole ticks. */
typedef struct {
    double lo, hi, step;
    int n; /* tick count, lo .. hi inclusive */
} axis;

#define AXIS_LIMIT 1e15 /* beyond this a log value is garbage; keep the arithmetic finite */

static void axis_fit(axis *a, double lo, double hi, int target, double min_step) {
    if (!isfinite(lo) || !isfinite(hi)) {
        lo = 0;
        hi = 1;
    }
    lo = fmax(-AXIS_LIMIT, fmin(AXIS_LIMIT, lo));
    hi = fmax(-AXIS_LIMIT, fmin(AXIS_LIMIT, hi));
    if (hi < lo) {
        double t = lo;
        lo = hi;
        hi = t;
    }
    if (hi - lo <= fmax(fabs(hi), fabs(lo)) * 1e-9) { /* flat: give it some height */
        double d = fabs(lo) * 0.05;
        if (d < 1e-9)
            d = 1;
        lo -= d;
        hi += d;
    }
    if (target < 2)
        target = 2;
    double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double st = fmax(min_step, (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag);
    a->lo = floor(lo / st + 1e-9) * st;
    a->hi = ceil(hi / st - 1e-9) * st;
    if (a->hi <= a->lo)
        a->hi = a->lo + st;
    a->step = st;
    double n = floor((a->hi - a->lo) / st + 0.5) + 1;
    a->n = n > 60 ? 60 : (int)n;
}

static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6)
        v = 0; /* no "-0.0" */
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e9 || dec > 8)
        snprintf(buf, n, "%.4g", v);
    else
        snprintf(buf, n, "%.*f", dec, v);
}

static double clampc(double v) { return fmax(-1e5, fmin(1e5, v)); }

static double map_x(const sy_plot_layout *lay, const sy_plot_panel *p, double v) {
    return clampc(p->x0 + (v - lay->xmin) / (lay->xmax - lay->xmin) * (p->x1 - p->x0));
}

static double map_y(const sy_plot_panel *p, double v) {
    return clampc(p->y1 - (v - p->ymin) / (p->ymax - p->ymin) * (p->y1 - p->y0));
}

static double px_center(double v) { return floor(v) + 0.5; }

/* Frame, grid, ticks and tick labels of one panel. */
static void draw_panel(canvas *cv, const sy_plot_layout *lay, const sy_plot_panel *p, const axis *ax,
                       const axis *ay, int fs) {
    double seg[10];
    for (int i = 0; i < ax->n; i++) {
        double v = ax->lo + i * ax->step, x = px_center(map_x(lay, p, v));
        char lab[48];
        seg[0] = x, seg[1] = p->y0, seg[2] = x, seg[3] = p->y1;
        if (i > 0 && i < ax->n - 1)
            cv->line(cv, seg, 2, C_GRID, 1, 0);
        seg[1] = p->y1, seg[3] = p->y1 + 5;
        cv->line(cv, seg, 2, C_FRAME, 1, 0);
        tick_label(lab, sizeof lab, v, ax->step);
        cv->text(cv, x, p->y1 + 8, lab, fs, ANCHOR_MIDDLE, C_TEXT);
    }
    for (int i = 0; i < ay->n; i++) {
        double v = ay->lo + i * ay->step, y = px_center(map_y(p, v));
        char lab[48];
        seg[0] = p->x0, seg[1] = y, seg[2] = p->x1, seg[3] = y;
        if (i > 0 && i < ay->n - 1)
            cv->line(cv, seg, 2, C_GRID, 1, 0);
        seg[0] = p->x0 - 5, seg[2] = p->x0;
        cv->line(cv, seg, 2, C_FRAME, 1, 0);
        tick_label(lab, sizeof lab, v, ay->step);
        cv->text(cv, p->x0 - 8, y - GLYPH_CAP * fs / 2.0, lab, fs, ANCHOR_END, C_TEXT);
    }
    double fr[10] = {p->x0, p->y0, p->x1, p->y0, p->x1, p->y1, p->x0, p->y1, p->x0, p->y0};
    cv->line(cv, fr, 5, C_FRAME, 1, 0);
}

/* One series as polylines; a new polyline starts where the step goes back (a resumed
 * or restarted run redoing steps), so the curve never scribbles backwards. dedupe:
 * draw a point only when its value differs from the previous one, because the trainer
 * repeats the last validation result on every line until the next evaluation. */
static void draw_series(canvas *cv, const sy_runlog *L, const sy_plot_layout *lay, const sy_plot_panel *p,
                        int f, double *buf, uint32_t rgb, double width, int dots, int dedupe) {
    /* dots: a marker at every point over the line; without, a lone point gets a dot
     * because a one-point polyline would be invisible */
    size_t n = 0;
    double prev_step = 0, prev_v = NAN;
    for (size_t i = 0; i <= L->n; i++) {
        const sy_runlog_point *pt = i < L->n ? &L->pts[i] : NULL;
        double v = pt ? fieldv(pt, f) : NAN;
        if (pt && !isfinite(v))
            continue;
        if (pt && dedupe && v == prev_v)
            continue;
        if (!pt || (n && pt->step <= prev_step)) {
            if (n == 1 && !dots)
                cv->dot(cv, buf[0], buf[1], width * 1.5, rgb);
            else if (n > 1)
                cv->line(cv, buf, n, rgb, width, 0);
            if (dots)
                for (size_t k = 0; k < n; k++) {
                    cv->dot(cv, buf[2 * k], buf[2 * k + 1], 5, C_BG);
                    cv->dot(cv, buf[2 * k], buf[2 * k + 1], 3.6, rgb);
                }
            n = 0;
        }
        if (!pt)
            break;
        buf[2 * n] = map_x(lay, p, pt->step);
        buf[2 * n + 1] = map_y(p, v);
        n++;
        prev_step = pt->step;
        prev_v = v;
    }
}

/* A membership change, shown before the line where it was first seen. */
typedef struct {
    double step;
    int run;        /* run ordinal (1-based) when the run id changed, else 0 */
    int epoch;      /* epoch ordinal in this log when the epoch changed, else 0 */
    double workers; /* the new worker count when it changed, else NAN */
} marker;

/* "run 2, epoch 3, 2 workers"; compact: "r2 e3 2w", for crowded places. */
static void marker_label(const marker *m, int compact, char *lab, size_t n) {
    size_t o = 0;
    lab[0] = 0;
#define ADD(...) o += (size_t)snprintf(lab + o, o < n ? n - o : 0, __VA_ARGS__)
    if (m->run)
        ADD(compact ? "r%d" : "run %d", m->run);
    if (m->epoch)
        ADD(compact ? "%se%d" : "%sepoch %d", o ? (compact ? " " : ", ") : "", m->epoch);
    if (isfinite(m->workers))
        ADD(compact ? "%s%.0fw" : "%s%.0f worker%s", o ? (compact ? " " : ", ") : "", m->workers,
            m->workers == 1 ? "" : "s");
#undef ADD
}

/* Membership changes between consecutive lines: the run id, the coordinator's epoch
 * (shown as its ordinal in this log: the raw value is a timestamp-derived number), and
 * the worker count. A line missing a value is compared with the last line that had it. */
static size_t find_markers(const sy_runlog *L, marker *m) {
    size_t nm = 0;
    double last_w = NAN, last_e = NAN;
    int last_run = -1, epoch_ord = 0;
    for (size_t i = 0; i < L->n; i++) {
        const sy_runlog_point *p = &L->pts[i];
        marker k = {p->step, 0, 0, NAN};
        if (p->run >= 0 && last_run >= 0 && p->run != last_run)
            k.run = p->run + 1;
        if (isfinite(p->epoch)) {
            if (!isfinite(last_e))
                epoch_ord = 1;
            else if (p->epoch != last_e)
                k.epoch = ++epoch_ord;
        }
        if (isfinite(p->workers) && isfinite(last_w) && p->workers != last_w)
            k.workers = p->workers;
        if (k.run || k.epoch || isfinite(k.workers))
            m[nm++] = k;
        if (p->run >= 0)
            last_run = p->run;
        if (isfinite(p->epoch))
            last_e = p->epoch;
        if (isfinite(p->workers))
            last_w = p->workers;
    }
    return nm;
}

/* Shortens s in place to at most maxw pixels, ending it with "..." when cut. */
static void fit_text(char *s, double maxw, int scale) {
    size_t n = strlen(s);
    if (text_width(s, scale) <= maxw)
        return;
    while (n > 3 && text_width(s, scale) > maxw) {
        s[--n] = 0;
        memcpy(s + n - 3, "...", 3);
    }
}

#define MARKER_ROWS_MAX 8

typedef struct {
    const char *name;
    uint32_t rgb;
    double width;
    int dot;
} legend_item;

/* Draws the whole figure. lay receives the geometry. Returns -1 when out of memory. */
static int draw_figure(const sy_runlog *L, int W, int H, canvas *cv, sy_plot_layout *lay) {
    int fs = W >= 640 ? 2 : 1, ts = W >= 700 ? 3 : 2;
    double lh = GLYPH_H * fs;
    double *buf = malloc((2 * L->n + 2) * sizeof *buf);
    marker *mk = malloc((L->n + 1) * sizeof *mk);
    if (!buf || !mk) {
        free(buf);
        free(mk);
        sy_seterr("%s: out of memory drawing %zu points", L->name, L->n);
        return -1;
    }
    memset(lay, 0, sizeof *lay);
    lay->width = W;
    lay->height = H;

    /* data ranges */
    double xlo = INFINITY, xhi = -INFINITY, llo = INFINITY, lhi = -INFINITY, thi = -INFINITY, tlo = INFINITY;
    int have[4] = {0};
    double tps_sum = 0, last_ce = NAN, last_val = NAN, last_tps = NAN;
    size_t val_drawn = 0;
    for (size_t i = 0; i < L->n; i++) {
        const sy_runlog_point *p = &L->pts[i];
        xlo = fmin(xlo, p->step);
        xhi = fmax(xhi, p->step);
        for (int f = F_CE; f <= F_VAL; f++) {
            double v = fieldv(p, f);
            if (isfinite(v)) {
                llo = fmin(llo, v);
                lhi = fmax(lhi, v);
                have[f]++;
            }
        }
        if (isfinite(p->ce))
            last_ce = p->ce;
        if (isfinite(p->val_ce)) {
            val_drawn += p->val_ce != last_val; /* as draw_series counts them */
            last_val = p->val_ce;
        }
        if (isfinite(p->tokens_per_s)) {
            tlo = fmin(tlo, p->tokens_per_s);
            thi = fmax(thi, p->tokens_per_s);
            tps_sum += p->tokens_per_s;
            last_tps = p->tokens_per_s;
            have[F_TPS]++;
        }
    }

    /* vertical layout: title, header A, panel A, ticks, header B, panel B, ticks, "step" */
    double y = 14, title_y = y;
    y += GLYPH_H * ts + 6;
    double hdrA_y = y;
    y += lh + 8;
    double below = (8 + lh) + 18 + (lh + 8) + (8 + lh) + (4 + lh) + 8;
    double avail = fmax(80, H - y - below);
    double hA = floor(avail * 0.62), hB = floor(avail - hA);
    lay->loss.y0 = y + 0.5;
    lay->loss.y1 = lay->loss.y0 + hA;
    double hdrB_y = lay->loss.y1 + 8 + lh + 18;
    lay->tps.y0 = hdrB_y + lh + 8 + 0.5;
    lay->tps.y1 = lay->tps.y0 + hB;
    double step_y = lay->tps.y1 + 8 + lh + 4;

    /* value axes; throughput starts at 0 so a drop reads as the share it is */
    axis al, at, ax;
    axis_fit(&al, llo, lhi, (int)(hA / 50), 0);
    axis_fit(&at, have[F_TPS] ? fmin(0, tlo) : 0, have[F_TPS] ? thi : 1, (int)(hB / 40), 0);
    double maxw = 0;
    for (int k = 0; k < 2; k++) {
        const axis *a = k ? &at : &al;
        for (int i = 0; i < a->n; i++) {
            char lab[48];
            tick_label(lab, sizeof lab, a->lo + i * a->step, a->step);
            maxw = fmax(maxw, text_width(lab, fs));
        }
    }
    double x0 = px_center(12 + maxw + 10);
    /* as many step ticks as fit with their labels a few characters apart */
    for (int target = (int)((W - x0 - 30) / 110);; target--) {
        axis_fit(&ax, xlo, xhi, target, 1);
        double lw = 0;
        for (int i = 0; i < ax.n; i++) {
            char lab[48];
            tick_label(lab, sizeof lab, ax.lo + i * ax.step, ax.step);
            lw = fmax(lw, text_width(lab, fs));
        }
        if (target <= 2 || (W - x0 - 30) / fmax(1, ax.n - 1) >= lw + 3 * GLYPH_ADV * fs)
            break;
    }
    char lastlab[48];
    tick_label(lastlab, sizeof lastlab, ax.hi, ax.step);
    double x1 = px_center(W - fmax(24, text_width(lastlab, fs) / 2 + 8));
    lay->loss.x0 = lay->tps.x0 = x0;
    lay->loss.x1 = lay->tps.x1 = x1;
    lay->xmin = ax.lo;
    lay->xmax = ax.hi;
    lay->loss.ymin = al.lo;
    lay->loss.ymax = al.hi;
    lay->tps.ymin = at.lo;
    lay->tps.ymax = at.hi;
    lay->points = L->n;

    cv->rect(cv, 0, 0, W, H, C_BG, 1);

    /* title: run id(s) and span on the left, last values on the right */
    char title[256], sub[128];
    if (L->n_run_ids == 1)
        snprintf(title, sizeof title, "run %s", L->run_ids[0]);
    else if (L->n_run_ids > 1)
        snprintf(title, sizeof title, "runs %s .. %s (%zu)", L->run_ids[0], L->run_ids[L->n_run_ids - 1],
                 L->n_run_ids);
    else {
        const char *b = strrchr(L->name, '/');
        snprintf(title, sizeof title, "%s", b ? b + 1 : L->name);
    }
    size_t o = xlo == xhi ? (size_t)snprintf(sub, sizeof sub, "step %.0f", xlo)
                          : (size_t)snprintf(sub, sizeof sub, "steps %.0f-%.0f", xlo, xhi);
    if (isfinite(last_ce))
        o += (size_t)snprintf(sub + o, sizeof sub - o, "  last ce %.4f", last_ce);
    if (isfinite(last_val) && o < sizeof sub)
        snprintf(sub + o, sizeof sub - o, "  val %.4f", last_val);
    double subw = text_width(sub, fs);
    fit_text(title, W - 20 - (subw + 30), ts);
    if (text_width(title, ts) + subw + 30 > W - 20)
        sub[0] = 0;
    cv->text(cv, 10, title_y, title, ts, ANCHOR_START, C_TEXT);
    if (sub[0])
        cv->text(cv, W - 10, title_y + (GLYPH_CAP * ts - GLYPH_CAP * fs), sub, fs, ANCHOR_END, C_MUTED);

    draw_panel(cv, lay, &lay->loss, &ax, &al, fs);
    draw_panel(cv, lay, &lay->tps, &ax, &at, fs);

    /* membership markers under the curves, labels over them */
    size_t nm = find_markers(L, mk);
    lay->markers = nm;
    for (size_t i = 0; i < nm; i++) {
        double mx = px_center(map_x(lay, &lay->loss, mk[i].step));
        double seg[4] = {mx, lay->loss.y0, mx, lay->loss.y1};
        cv->line(cv, seg, 2, C_MARK, 1.2, 5);
        seg[1] = lay->tps.y0, seg[3] = lay->tps.y1;
        cv->line(cv, seg, 2, C_MARK, 1.2, 5);
    }

    draw_series(cv, L, lay, &lay->loss, F_LOSS, buf, C_LOSS, 1.5, 0, 0);
    draw_series(cv, L, lay, &lay->loss, F_CE, buf, C_CE, 2.2, 0, 0);
    /* validation dots while they stay apart; past that the line alone reads better */
    draw_series(cv, L, lay, &lay->loss, F_VAL, buf, C_VAL, 1, val_drawn <= (x1 - x0) / 8, 1);
    draw_series(cv, L, lay, &lay->tps, F_TPS, buf, C_TPS, 1.8, 0, 0);

    /* marker labels: right of their line (left when near the right edge), in the first
     * of a few rows at the top of the loss panel where they overlap nothing; where it is
     * crowded the compact form, and where even that does not fit, the line alone */
    int rows = (int)fmin(MARKER_ROWS_MAX, fmax(1, floor(hA * 0.4 / (lh + 6))));
    double (*spans)[2] = malloc((nm + 1) * sizeof *spans); /* placed boxes, x extent */
    int *span_row = malloc((nm + 1) * sizeof *span_row);
    size_t nspans = 0;
    if (!spans || !span_row) {
        free(spans);
        free(span_row);
        free(buf);
        free(mk);
        sy_seterr("%s: out of memory drawing markers", L->name);
        return -1;
    }
    for (size_t i = 0; i < nm; i++) {
        double mx = px_center(map_x(lay, &lay->loss, mk[i].step));
        char lab[64];
        for (int compact = 0; compact < 2; compact++) {
            marker_label(&mk[i], compact, lab, sizeof lab);
            double bw = text_width(lab, fs) + 6, bx = mx + 3;
            if (bx + bw > x1 - 2)
                bx = mx - 3 - bw;
            int row = -1;
            for (int r = 0; r < rows && row < 0; r++) {
                int clash = bx < x0 + 2;
                for (size_t k = 0; k < nspans && !clash; k++)
                    clash = span_row[k] == r && bx < spans[k][1] + 4 && bx + bw > spans[k][0] - 4;
                if (!clash)
                    row = r;
            }
            if (row < 0)
                continue;
            spans[nspans][0] = bx;
            spans[nspans][1] = bx + bw;
            span_row[nspans++] = row;
            double by = lay->loss.y0 + 4 + row * (lh + 6);
            cv->rect(cv, bx, by, bw, lh + 2, C_BG, 0.85);
            cv->text(cv, bx + 3, by + 2, lab, fs, ANCHOR_START, C_MUTED);
            break;
        }
    }
    free(spans);
    free(span_row);

    /* panel headers and the legend (above the loss panel, right-aligned) */
    legend_item leg[3];
    int nl = 0;
    if (have[F_CE])
        leg[nl++] = (legend_item){"train ce", C_CE, 2.2, 0};
    if (have[F_LOSS])
        leg[nl++] = (legend_item){"train loss (ce+aux+z)", C_LOSS, 1.5, 0};
    if (have[F_VAL])
        leg[nl++] = (legend_item){"val ce", C_VAL, 0, 1};
    double legw = 0;
    for (int i = 0; i < nl; i++)
        legw += (leg[i].dot ? 12 : 26) + 6 + text_width(leg[i].name, fs) + (i ? 20 : 0);
    double lx = x1 - legw, ly = hdrA_y + GLYPH_CAP * fs / 2.0;
    for (int i = 0; i < nl; i++) {
        if (i)
            lx += 20;
        if (leg[i].dot) {
            cv->dot(cv, lx + 6, ly, 3.6, leg[i].rgb);
            lx += 12;
        } else {
            double seg[4] = {lx, ly, lx + 26, ly};
            cv->line(cv, seg, 2, leg[i].rgb, leg[i].width, 0);
            lx += 26;
        }
        lx += 6;
        cv->text(cv, lx, hdrA_y, leg[i].name, fs, ANCHOR_START, C_TEXT);
        lx += text_width(leg[i].name, fs);
    }
    const char *hA_name = "loss (nats)";
    if (x0 + text_width(hA_name, fs) + 20 < x1 - legw)
        cv->text(cv, x0 - 0.5, hdrA_y, hA_name, fs, ANCHOR_START, C_TEXT);
    char hB_name[128] = "tokens/s";
    if (have[F_TPS])
        snprintf(hB_name, sizeof hB_name, "tokens/s  (mean %.0f, last %.0f)", tps_sum / have[F_TPS], last_tps);
    fit_text(hB_name, x1 - x0, fs);
    cv->text(cv, x0 - 0.5, hdrB_y, hB_name, fs, ANCHOR_START, C_TEXT);
    cv->text(cv, (x0 + x1) / 2, step_y, "step", fs, ANCHOR_MIDDLE, C_TEXT);
    if (!have[F_CE] && !have[F_LOSS] && !have[F_VAL])
        cv->text(cv, (x0 + x1) / 2, (lay->loss.y0 + lay->loss.y1 - lh) / 2, "no loss values in this log", fs,
                 ANCHOR_MIDDLE, C_MUTED);
    if (!have[F_TPS])
        cv->text(cv, (x0 + x1) / 2, (lay->tps.y0 + lay->tps.y1 - lh) / 2, "no tokens/s values in this log", fs,
                 ANCHOR_MIDDLE, C_MUTED);
    free(buf);
    free(mk);
    return 0;
}

/* ======================================================================== SVG */

typedef struct {
    canvas base;
    char *buf;
    size_t len, cap;
    int oom;
} svg_canvas;

static void sv_printf(svg_canvas *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sv_printf(svg_canvas *s, const char *fmt, ...) {
    if (s->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (k < 0) {
            s->oom = 1;
            return;
        }
        if ((size_t)k < s->cap - s->len) {
            s->len += (size_t)k;
            return;
        }
        size_t cap = 2 * s->cap + (size_t)k + 1;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
}

static void sv_line(canvas *cv, const double *xy, size_t n, uint32_t rgb, double width, double dash) {
    svg_canvas *s = (svg_canvas *)cv;
    sv_printf(s, "<polyline fill=\"none\" stroke=\"#%06x\" stroke-width=\"%.1f\" stroke-linejoin=\"round\"", rgb,
              width);
    if (dash > 0)
        sv_printf(s, " stroke-dasharray=\"%.1f,%.1f\"", dash, dash * 0.75);
    else
        sv_printf(s, " stroke-linecap=\"round\"");
    sv_printf(s, " points=\"");
    for (size_t i = 0; i < n; i++)
        sv_printf(s, "%s%.1f,%.1f", i ? " " : "", xy[2 * i], xy[2 * i + 1]);
    sv_printf(s, "\"/>\n");
}

static void sv_rect(canvas *cv, double x, double y, double w, double h, uint32_t rgb, double alpha) {
    svg_canvas *s = (svg_canvas *)cv;
    sv_printf(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#%06x\"", x, y, w, h, rgb);
    if (alpha < 1)
        sv_printf(s, " fill-opacity=\"%.2f\"", alpha);
    sv_printf(s, "/>\n");
}

static void sv_dot(canvas *cv, double cx, double cy, double r, uint32_t rgb) {
    sv_printf((svg_canvas *)cv, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"#%06x\"/>\n", cx, cy, r, rgb);
}

static void sv_text(canvas *cv, double x, double y, const char *t, int scale, int anchor, uint32_t rgb) {
    svg_canvas *s = (svg_canvas *)cv;
    static const char *anchors[] = {"start", "middle", "end"};
    /* a monospace font at 10 px per scale step has about the bitmap font's 6-px advance
     * and 7-px cap height, so the layout measured for the PNG fits here too */
    sv_printf(s, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" fill=\"#%06x\" text-anchor=\"%s\"", x,
              y + GLYPH_CAP * scale, 10 * scale, rgb, anchors[anchor]);
    sv_printf(s, " xml:space=\"preserve\">"); /* keep the double spaces that separate fields */
    for (const char *p = t; *p; p++) {
        switch (*p) {
        case '<': sv_printf(s, "&lt;"); break;
        case '>': sv_printf(s, "&gt;"); break;
        case '&': sv_printf(s, "&amp;"); break;
        case '"': sv_printf(s, "&quot;"); break;
        default: sv_printf(s, "%c", (*p >= 32 && *p < 127) ? *p : '?');
        }
    }
    sv_printf(s, "</text>\n");
}

static int check_opts(const sy_runlog *L, const sy_plot_opts *opts, int *W, int *H) {
    *W = opts && opts->width ? opts->width : 1000;
    *H = opts && opts->height ? opts->height : 760;
    if (*W < 400 || *W > 8000 || *H < 300 || *H > 8000) {
        sy_seterr("plot size %dx%d out of range (400..8000 x 300..8000)", *W, *H);
        return -1;
    }
    if (!L || !L->n) {
        sy_seterr("%s: no usable lines to plot (%zu lines, %zu malformed, %zu without a step)",
                  L ? L->name : "run log", L ? L->lines : 0, L ? L->malformed : 0, L ? L->no_step : 0);
        return -1;
    }
    return 0;
}

int sy_plot_svg(const sy_runlog *log, const sy_plot_opts *opts, char **out, size_t *len, sy_plot_layout *layout) {
    int W, H;
    sy_plot_layout lay;
    *out = NULL;
    *len = 0;
    if (check_opts(log, opts, &W, &H))
        return -1;
    svg_canvas s = {{sv_line, sv_rect, sv_dot, sv_text}, NULL, 0, 0, 0};
    sv_printf(&s,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n",
              W, H, W, H);
    if (draw_figure(log, W, H, &s.base, &lay)) {
        free(s.buf);
        return -1;
    }
    sv_printf(&s, "</svg>\n");
    if (s.oom) {
        free(s.buf);
        sy_seterr("%s: out of memory writing SVG", log->name);
        return -1;
    }
    *out = s.buf;
    *len = s.len;
    if (layout)
        *layout = lay;
    return 0;
}

/* ======================================================================== raster */

/* Anti-aliased by coverage: a pixel's share of a shape is estimated from the distance
 * of its centre to the shape's edge. A polyline's coverage is collected in cov (max per
 * pixel) and composited once, so joints and overlapping dashes are not darkened twice. */
typedef struct {
    canvas base;
    int w, h;
    uint8_t *px;
    float *cov;
    int bx0, by0, bx1, by1; /* bounding box of nonzero cov, [bx0, bx1) x [by0, by1) */
} raster;

static void blend(raster *r, int x, int y, uint32_t rgb, double a) {
    if (x < 0 || y < 0 || x >= r->w || y >= r->h || a <= 0)
        return;
    if (a > 1)
        a = 1;
    uint8_t *p = r->px + 3 * ((size_t)y * r->w + x);
    for (int k = 0; k < 3; k++) {
        double src = (rgb >> (16 - 8 * k)) & 0xff;
        p[k] = (uint8_t)lrint(p[k] * (1 - a) + src * a);
    }
}

static void cov_segment(raster *r, double ax, double ay, double bx, double by, double hw) {
    double pad = hw + 1;
    int x0 = (int)floor(fmax(0, fmin(ax, bx) - pad)), x1 = (int)ceil(fmin(r->w, fmax(ax, bx) + pad));
    int y0 = (int)floor(fmax(0, fmin(ay, by) - pad)), y1 = (int)ceil(fmin(r->h, fmax(ay, by) + pad));
    if (x0 >= x1 || y0 >= y1)
        return;
    double dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            double px = x + 0.5, py = y + 0.5;
            double t = l2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double d = hypot(px - (ax + t * dx), py - (ay + t * dy));
            double c = hw + 0.5 - d;
            if (c <= 0)
                continue;
            float *cp = &r->cov[(size_t)y * r->w + x];
            if (c > *cp)
                *cp = (float)(c > 1 ? 1 : c);
        }
    r->bx0 = x0 < r->bx0 ? x0 : r->bx0;
    r->by0 = y0 < r->by0 ? y0 : r->by0;
    r->bx1 = x1 > r->bx1 ? x1 : r->bx1;
    r->by1 = y1 > r->by1 ? y1 : r->by1;
}

static void cov_flush(raster *r, uint32_t rgb) {
    for (int y = r->by0; y < r->by1; y++)
        for (int x = r->bx0; x < r->bx1; x++) {
            float *cp = &r->cov[(size_t)y * r->w + x];
            if (*cp > 0) {
                blend(r, x, y, rgb, *cp);
                *cp = 0;
            }
        }
    r->bx0 = r->w, r->by0 = r->h, r->bx1 = r->by1 = 0;
}

static void rs_line(canvas *cv, const double *xy, size_t n, uint32_t rgb, double width, double dash) {
    raster *r = (raster *)cv;
    double hw = width / 2, on = dash, period = dash * 1.75, phase = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        double ax = xy[2 * i], ay = xy[2 * i + 1], bx = xy[2 * i + 2], by = xy[2 * i + 3];
        double len = hypot(bx - ax, by - ay);
        if (dash <= 0 || !(len > 0)) {
            cov_segment(r, ax, ay, bx, by, hw);
            continue;
        }
        double ux = (bx - ax) / len, uy = (by - ay) / len;
        for (double t = 0; t < len;) {
            double in = fmod(phase, period);
            double run = fmin(in < on ? on - in : period - in, len - t);
            if (run <= 1e-9) /* rounding at a dash boundary: step over it */
                run = fmin(1e-3, len - t);
            if (in < on)
                cov_segment(r, ax + ux * t, ay + uy * t, ax + ux * (t + run), ay + uy * (t + run), hw);
            t += run;
            phase += run;
        }
    }
    cov_flush(r, rgb);
}

static void rs_rect(canvas *cv, double x, double y, double w, double h, uint32_t rgb, double alpha) {
    raster *r = (raster *)cv;
    int x0 = (int)fmax(0, lrint(x)), y0 = (int)fmax(0, lrint(y));
    int x1 = (int)fmin(r->w, lrint(x + w)), y1 = (int)fmin(r->h, lrint(y + h));
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++)
            blend(r, i, j, rgb, alpha);
}

static void rs_dot(canvas *cv, double cx, double cy, double rad, uint32_t rgb) {
    raster *r = (raster *)cv;
    int x0 = (int)floor(fmax(0, cx - rad - 1)), x1 = (int)ceil(fmin(r->w, cx + rad + 1));
    int y0 = (int)floor(fmax(0, cy - rad - 1)), y1 = (int)ceil(fmin(r->h, cy + rad + 1));
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            blend(r, x, y, rgb, rad + 0.5 - hypot(x + 0.5 - cx, y + 0.5 - cy));
}

static void rs_text(canvas *cv, double x, double y, const char *t, int scale, int anchor, uint32_t rgb) {
    raster *r = (raster *)cv;
    double w = text_width(t, scale);
    long ox = lrint(anchor == ANCHOR_MIDDLE ? x - w / 2 : anchor == ANCHOR_END ? x - w : x), oy = lrint(y);
    for (size_t c = 0; t[c]; c++) {
        const char *g = glyph(t[c]);
        for (int row = 0; row < GLYPH_H; row++)
            for (int col = 0; col < GLYPH_W; col++) {
                if (g[row * GLYPH_W + col] != '#')
                    continue;
                long gx = ox + (long)(c * GLYPH_ADV + col) * scale, gy = oy + (long)row * scale;
                for (int j = 0; j < scale; j++)
                    for (int i = 0; i < scale; i++)
                        if (gx + i >= 0 && gx + i < r->w && gy + j >= 0 && gy + j < r->h)
                            blend(r, (int)(gx + i), (int)(gy + j), rgb, 1);
            }
    }
}

int sy_plot_rgb(const sy_runlog *log, const sy_plot_opts *opts, uint8_t **rgb, sy_plot_layout *layout) {
    int W, H;
    sy_plot_layout lay;
    *rgb = NULL;
    if (check_opts(log, opts, &W, &H))
        return -1;
    raster r = {{rs_line, rs_rect, rs_dot, rs_text}, W, H, NULL, NULL, W, H, 0, 0};
    r.px = malloc((size_t)W * H * 3);
    r.cov = calloc((size_t)W * H, sizeof *r.cov);
    if (!r.px || !r.cov) {
        sy_seterr("%s: out of memory for a %dx%d image", log->name, W, H);
        goto fail;
    }
    memset(r.px, 0xff, (size_t)W * H * 3);
    if (draw_figure(log, W, H, &r.base, &lay))
        goto fail;
    free(r.cov);
    *rgb = r.px;
    if (layout)
        *layout = lay;
    return 0;
fail:
    free(r.px);
    free(r.cov);
    return -1;
}

/* ======================================================================== PNG */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint32_t bits; /* pending bits, LSB first as deflate packs them */
    int nbits;
    int oom;
} bytebuf;

static void bb_reserve(bytebuf *b, size_t more) {
    if (b->oom || b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->buf = p;
    b->cap = cap;
}

static void bb_put(bytebuf *b, const void *p, size_t n) {
    bb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void bb_u32be(bytebuf *b, uint32_t v) {
    uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    bb_put(b, q, 4);
}

static void bb_bits(bytebuf *b, uint32_t v, int n) {
    b->bits |= v << b->nbits;
    b->nbits += n;
    while (b->nbits >= 8) {
        uint8_t byte = (uint8_t)b->bits;
        bb_put(b, &byte, 1);
        b->bits >>= 8;
        b->nbits -= 8;
    }
}

static void bb_align(bytebuf *b) {
    if (b->nbits)
        bb_bits(b, 0, 8 - b->nbits);
}

/* Huffman codes are sent most significant bit first, inside an LSB-first bit stream. */
static void bb_huff(bytebuf *b, uint32_t code, int len) {
    uint32_t rev = 0;
    for (int i = 0; i < len; i++)
        rev |= ((code >> i) & 1u) << (len - 1 - i);
    bb_bits(b, rev, len);
}

/* Fixed literal/length code of RFC 1951 section 3.2.6. */
static void put_litlen(bytebuf *b, int sym) {
    if (sym < 144)
        bb_huff(b, 0x30 + sym, 8);
    else if (sym < 256)
        bb_huff(b, 0x190 + sym - 144, 9);
    else if (sym < 280)
        bb_huff(b, sym - 256, 7);
    else
        bb_huff(b, 0xc0 + sym - 280, 8);
}

/* RFC 1951 3.2.5: base value and extra bits of each length and distance code */
static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,    25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513,   769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bytebuf *b, int len, int dist) {
    int li = 28, di = 29;
    while (len_base[li] > len)
        li--;
    while (dist_base[di] > dist)
        di--;
    put_litlen(b, 257 + li);
    bb_bits(b, (uint32_t)(len - len_base[li]), len_extra[li]);
    bb_huff(b, (uint32_t)di, 5);
    bb_bits(b, (uint32_t)(dist - dist_base[di]), dist_extra[di]);
}

#define LZ_WINDOW 32768
#define LZ_HASH_BITS 15
#define LZ_MAX_CHAIN 48

/* One fixed-Huffman block with greedy LZ77 over hash chains: plots are mostly flat
 * colour, so this gets most of what a full deflate would at a fraction of the code. */
static int deflate_fixed(bytebuf *b, const uint8_t *d, size_t n) {
    int64_t *head = malloc(sizeof(int64_t) << LZ_HASH_BITS), *prev = malloc(sizeof(int64_t) * LZ_WINDOW);
    if (!head || !prev) {
        free(head);
        free(prev);
        return -1;
    }
    for (size_t i = 0; i < (1u << LZ_HASH_BITS); i++)
        head[i] = -1;
    bb_bits(b, 1, 1); /* BFINAL */
    bb_bits(b, 1, 2); /* BTYPE 01: fixed Huffman */
    size_t i = 0;
#define LZ_HASH(p) ((((uint32_t)(p)[0] << 10) ^ ((uint32_t)(p)[1] << 5) ^ (p)[2]) & ((1u << LZ_HASH_BITS) - 1))
#define LZ_INSERT(pos)                                                                                                 \
    do {                                                                                                               \
        uint32_t h_ = LZ_HASH(d + (pos));                                                                             \
        prev[(pos) % LZ_WINDOW] = head[h_];                                                                            \
        head[h_] = (int64_t)(pos);                                                                                     \
    } while (0)
    while (i < n) {
        size_t best = 0, best_dist = 0;
        if (i + 3 <= n) {
            int64_t cand = head[LZ_HASH(d + i)];
            size_t maxlen = n - i < 258 ? n - i : 258;
            for (int chain = 0; cand >= 0 && i - (size_t)cand <= LZ_WINDOW && chain < LZ_MAX_CHAIN; chain++) {
                const uint8_t *a = d + cand, *c = d + i;
                size_t l = 0;
                while (l < maxlen && a[l] == c[l])
                    l++;
                if (l > best) {
                    best = l;
                    best_dist = i - (size_t)cand;
                    if (l == maxlen)
                        break;
                }
                int64_t nx = prev[cand % LZ_WINDOW];
                if (nx >= cand) /* the slot was reused by a newer position: chain ends */
                    break;
                cand = nx;
            }
            LZ_INSERT(i);
        }
        if (best >= 3) {
            put_match(b, (int)best, (int)best_dist);
            for (size_t k = 1; k < best; k++)
                if (i + k + 3 <= n)
                    LZ_INSERT(i + k);
            i += best;
        } else {
            put_litlen(b, d[i]);
            i++;
        }
    }
#undef LZ_INSERT
#undef LZ_HASH
    put_litlen(b, 256); /* end of block */
    bb_align(b);
    free(head);
    free(prev);
    return 0;
}

static void deflate_stored(bytebuf *b, const uint8_t *d, size_t n) {
    size_t i = 0;
    do {
        size_t k = n - i > 65535 ? 65535 : n - i;
        uint8_t hdr[5] = {(uint8_t)(i + k == n), (uint8_t)k, (uint8_t)(k >> 8), (uint8_t)~k, (uint8_t)(~k >> 8)};
        bb_put(b, hdr, 5); /* BFINAL, BTYPE 00, padding to the byte; LEN, NLEN */
        bb_put(b, d + i, k);
        i += k;
    } while (i < n);
}

static void crc_table_make(uint32_t t[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
}

static uint32_t crc32_of(const uint32_t t[256], const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = t[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static uint32_t adler32_of(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    while (n) {
        size_t k = n < 5552 ? n : 5552; /* largest run before b can overflow 32 bits */
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return (b << 16) | a;
}

static void png_chunk(bytebuf *b, const uint32_t crc_t[256], const char type[4], const uint8_t *data, size_t n) {
    bb_u32be(b, (uint32_t)n);
    size_t at = b->len;
    bb_put(b, type, 4);
    if (n)
        bb_put(b, data, n);
    if (!b->oom)
        bb_u32be(b, crc32_of(crc_t, b->buf + at, n + 4));
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

int sy_png_encode(const uint8_t *rgb, int width, int height, int stored, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > 100000 || height > 100000) {
        sy_seterr("png: bad image size %dx%d", width, height);
        return -1;
    }
    size_t stride = (size_t)width * 3, fl = (stride + 1) * height;
    uint8_t *filt = malloc(fl), *cand = malloc(4 * stride);
    bytebuf z = {0}, png = {0};
    uint32_t crc_t[256];
    crc_table_make(crc_t);
    if (!filt || !cand)
        goto oom;
    /* per row, the filter (none, sub, up, paeth) with the smallest sum of |signed
     * residuals|: the usual heuristic, it turns flat areas and repeated rows into zeros */
    for (int y = 0; y < height; y++) {
        const uint8_t *row = rgb + y * stride, *up = y ? row - stride : NULL;
        static const int types[4] = {0, 1, 2, 4};
        long best_sum = -1;
        int best = 0;
        for (int k = 0; k < 4; k++) {
            uint8_t *c = cand + k * stride;
            long sum = 0;
            for (size_t x = 0; x < stride; x++) {
                int a = x >= 3 ? row[x - 3] : 0, b = up ? up[x] : 0, cc = (x >= 3 && up) ? up[x - 3] : 0;
                int pred = types[k] == 0 ? 0 : types[k] == 1 ? a : types[k] == 2 ? b : paeth(a, b, cc);
                c[x] = (uint8_t)(row[x] - pred);
                sum += c[x] < 128 ? c[x] : 256 - c[x];
            }
            if (best_sum < 0 || sum < best_sum) {
                best_sum = sum;
                best = k;
            }
        }
        filt[y * (stride + 1)] = (uint8_t)types[best];
        memcpy(filt + y * (stride + 1) + 1, cand + best * stride, stride);
    }
    uint8_t zhdr[2] = {0x78, 0x01}; /* deflate, 32K window; (0x7801 % 31) == 0 */
    bb_put(&z, zhdr, 2);
    if (stored)
        deflate_stored(&z, filt, fl);
    else if (deflate_fixed(&z, filt, fl))
        goto oom;
    bb_u32be(&z, adler32_of(filt, fl));
    if (z.oom)
        goto oom;

    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {(uint8_t)(width >> 24), (uint8_t)(width >> 16), (uint8_t)(width >> 8), (uint8_t)width,
                        (uint8_t)(height >> 24), (uint8_t)(height >> 16), (uint8_t)(height >> 8), (uint8_t)height,
                        8 /* bits per sample */, 2 /* RGB */, 0, 0, 0 /* no interlace */};
    bb_put(&png, sig, 8);
    png_chunk(&png, crc_t, "IHDR", ihdr, 13);
    png_chunk(&png, crc_t, "IDAT", z.buf, z.len);
    png_chunk(&png, crc_t, "IEND", NULL, 0);
    if (png.oom)
        goto oom;
    free(filt);
    free(cand);
    free(z.buf);
    *out = png.buf;
    *len = png.len;
    return 0;
oom:
    free(filt);
    free(cand);
    free(z.buf);
    free(png.buf);
    sy_seterr("png: out of memory encoding a %dx%d image", width, height);
    return -1;
}

/* ======================================================================== files */

int sy_plot_format_from_path(const char *path) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        return -1;
    if (!strcasecmp(dot, ".png"))
        return SY_PLOT_PNG;
    if (!strcasecmp(dot, ".svg"))
        return SY_PLOT_SVG;
    return -1;
}

int sy_plot_write(const sy_runlog *log, const char *path, const sy_plot_opts *opts, sy_plot_layout *layout) {
    int fmt = sy_plot_format_from_path(path);
    if (fmt < 0) {
        sy_seterr("%s: unknown image type (the name must end in .png or .svg)", path);
        return -1;
    }
    uint8_t *data = NULL;
    size_t n = 0;
    if (fmt == SY_PLOT_SVG) {
        char *s;
        if (sy_plot_svg(log, opts, &s, &n, layout))
            return -1;
        data = (uint8_t *)s;
    } else {
        uint8_t *rgb;
        sy_plot_layout lay;
        if (sy_plot_rgb(log, opts, &rgb, &lay))
            return -1;
        int rc = sy_png_encode(rgb, lay.width, lay.height, opts ? opts->png_stored : 0, &data, &n);
        free(rgb);
        if (rc)
            return -1;
        if (layout)
            *layout = lay;
    }
    /* written beside the target and renamed: a viewer never sees half an image */
    int rc = sy_write_atomic(path, data, n);
    free(data);
    return rc;
}
