/* status_format.c: a StatusReply as a table, JSON or Prometheus text. Strings in the
 * reply come from the network (host names, paths, event texts), so every one is treated
 * as untrusted bytes: the table shows them sanitised and cut to fit, JSON and Prometheus
 * escape them and repair invalid UTF-8 so the output always parses. */
#include "status_format.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define S(x) ((x) ? (x) : "")

/* ---- UTF-8 ---- */

#define BAD_CP 0xFFFFFFFFu

/* Decodes the sequence at s (NUL-terminated); returns its length in bytes (>= 1) and the
 * code point in *cp, or BAD_CP for a byte that does not start a well-formed sequence
 * (overlong forms, surrogates and values past U+10FFFF are not well formed). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp) {
    unsigned b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (b >= 0xC2 && b <= 0xDF) {
        n = 1;
        v = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 2;
        v = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 3;
        v = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F;
    } else {
        *cp = BAD_CP;
        return 1;
    }
    for (int i = 1; i <= n; i++) {
        unsigned c = s[i];
        if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xBF)) {
            *cp = BAD_CP;
            return 1;
        }
        v = (v << 6) | (c & 0x3F);
    }
    *cp = v;
    return (size_t)n + 1;
}

/* Terminal columns of a printable code point: 0 for combining marks and zero-width
 * characters, 2 for East Asian wide and emoji blocks, 1 otherwise. An approximation of
 * wcwidth() that does not depend on the locale. */
static int cp_width(uint32_t c) {
    if ((c >= 0x0300 && c <= 0x036F) || (c >= 0x200B && c <= 0x200F) || (c >= 0xFE00 && c <= 0xFE0F))
        return 0;
    if ((c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0x303E) || (c >= 0x3041 && c <= 0x33FF) ||
        (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xA000 && c <= 0xA4CF) ||
        (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE30 && c <= 0xFE4F) ||
        (c >= 0xFF00 && c <= 0xFF60) || (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x1F300 && c <= 0x1F64F) ||
        (c >= 0x1F900 && c <= 0x1F9FF) || (c >= 0x20000 && c <= 0x3FFFD))
        return 2;
    return 1;
}

/* ---- table: lines built with column accounting ---- */

typedef struct {
    char b[1024];
    size_t len;  /* bytes */
    int cols;    /* terminal columns */
} line;

typedef struct {
    char b[4];
    unsigned char n, w;
} glyph;

/* s as displayable glyphs: control characters and invalid bytes become '?'. Returns the
 * count (0 for "" or when out of memory); *out is malloc'ed (free it). */
static size_t to_glyphs(const char *s, glyph **out) {
    size_t n = strlen(s);
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return 0;
    size_t k = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        size_t len = utf8_next(p, &cp);
        glyph *g = &(*out)[k++];
        if (cp == BAD_CP || cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0x2028 || cp == 0x2029) {
            g->b[0] = '?';
            g->n = 1;
            g->w = 1;
        } else {
            memcpy(g->b, p, len);
            g->n = (unsigned char)len;
            g->w = (unsigned char)cp_width(cp);
        }
        p += len;
    }
    return k;
}

static void line_raw(line *l, const char *b, size_t n, int w) {
    if (l->len + n >= sizeof l->b || l->cols + w > SY_STATUS_WIDTH)
        return;
    memcpy(l->b + l->len, b, n);
    l->len += n;
    l->cols += w;
}

static void line_pad(line *l, int col) {
    if (col > SY_STATUS_WIDTH)
        col = SY_STATUS_WIDTH;
    while (l->cols < col)
        line_raw(l, " ", 1, 1);
}

/* Appends s in at most `width` columns (and never past SY_STATUS_WIDTH); a longer s is
 * cut and marked with "...", at its end, or at its start when keep_tail (for paths,
 * whose end is the informative part). Returns the columns written. */
static int line_fit(line *l, const char *s, int width, int keep_tail) {
    if (width > SY_STATUS_WIDTH - l->cols)
        width = SY_STATUS_WIDTH - l->cols;
    if (width <= 0)
        return 0;
    glyph *g;
    size_t n = to_glyphs(S(s), &g);
    int total = 0;
    for (size_t i = 0; i < n; i++)
        total += g[i].w;
    int c0 = l->cols;
    if (total <= width) {
        for (size_t i = 0; i < n; i++)
            line_raw(l, g[i].b, g[i].n, g[i].w);
    } else {
        int dots = width >= 4 ? 3 : 0, room = width - dots, used = 0;
        if (!keep_tail) {
            for (size_t i = 0; i < n && used + g[i].w <= room; i++) {
                line_raw(l, g[i].b, g[i].n, g[i].w);
                used += g[i].w;
            }
            line_raw(l, "...", (size_t)dots, dots);
        } else {
            size_t first = n;
            while (first > 0 && used + g[first - 1].w <= room)
                used += g[--first].w;
            line_raw(l, "...", (size_t)dots, dots);
            for (size_t i = first; i < n; i++)
                line_raw(l, g[i].b, g[i].n, g[i].w);
        }
    }
    free(g);
    return l->cols - c0;
}

static void line_put(line *l, const char *s) { line_fit(l, s, SY_STATUS_WIDTH, 0); }

static void __attribute__((format(printf, 2, 3))) line_printf(line *l, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    line_put(l, tmp);
}

/* A column of `width`: s cut to fit, left- or right-aligned, then one space. */
static void line_cell(line *l, const char *s, int width, int right) {
    int start = l->cols;
    if (right) {
        line s2 = {.len = 0};
        int w = line_fit(&s2, s, width, 0);
        line_pad(l, start + width - w);
        line_raw(l, s2.b, s2.len, s2.cols);
    } else {
        line_fit(l, s, width, 0);
        line_pad(l, start + width);
    }
    line_pad(l, start + width + 1);
}

/* Writes the line (without trailing spaces) and empties it. */
static void line_emit(FILE *out, line *l) {
    while (l->len > 0 && l->b[l->len - 1] == ' ')
        l->len--;
    fwrite(l->b, 1, l->len, out);
    fputc('\n', out);
    l->len = 0;
    l->cols = 0;
}

/* ---- table: number formats; "-" for a value that is not there ---- */

static const char *fmt_f(char *b, size_t n, const char *fmt, double v) {
    if (!isfinite(v))
        snprintf(b, n, "-");
    else
        snprintf(b, n, fmt, v);
    return b;
}

static const char *fmt_age(char *b, size_t n, double s) {
    if (!isfinite(s) || s < 0)
        snprintf(b, n, "-");
    else if (s < 10)
        snprintf(b, n, "%.1fs", s);
    else
        sy_fmt_duration(b, n, s);
    return b;
}

static const char *fmt_ms(char *b, size_t n, double s) {
    if (!isfinite(s) || s < 0)
        return fmt_f(b, n, "", NAN);
    return fmt_f(b, n, s < 0.01 ? "%.1f" : "%.0f", s * 1e3);
}

static const char *fmt_rate(char *b, size_t n, double v) {
    if (!isfinite(v))
        return fmt_f(b, n, "", v);
    if (v >= 1e6)
        return fmt_f(b, n, "%.2fM", v / 1e6);
    if (v >= 1e5)
        return fmt_f(b, n, "%.1fk", v / 1e3);
    return fmt_f(b, n, "%.0f", v);
}

/* "0-3" for experts [begin, end), "3" for one, "-" for none. */
static const char *fmt_bytes(char *b, size_t n, double v) {
    if (v >= 1e9)
        snprintf(b, n, "%.2f GB", v / 1e9);
    else if (v >= 1e6)
        snprintf(b, n, "%.1f MB", v / 1e6);
    else if (v >= 1e3)
        snprintf(b, n, "%.1f kB", v / 1e3);
    else
        snprintf(b, n, "%.0f B", v);
    return b;
}

static const char *fmt_range(char *b, size_t n, uint32_t begin, uint32_t end) {
    if (end <= begin)
        snprintf(b, n, "-");
    else if (end - begin == 1)
        snprintf(b, n, "%u", begin);
    else
        snprintf(b, n, "%u-%u", begin, end - 1);
    return b;
}

static const char *lang_name(const Switchyard__StatusReply *r, size_t g, char *b, size_t n) {
    if (g < r->n_languages && r->languages[g] && r->languages[g][0])
        return r->languages[g];
    snprintf(b, n, "lang%zu", g);
    return b;
}

/* "ru 41%": the language with the largest share of an expert's tokens, or "-". */
static const char *fmt_top_lang(char *b, size_t n, const Switchyard__StatusReply *r, const Switchyard__ExpertStatus *x) {
    size_t best = SIZE_MAX;
    for (size_t g = 0; g < x->n_lang_share; g++)
        if (isfinite(x->lang_share[g]) && x->lang_share[g] > 0 &&
            (best == SIZE_MAX || x->lang_share[g] > x->lang_share[best]))
            best = g;
    if (best == SIZE_MAX) {
        snprintf(b, n, "-");
        return b;
    }
    char nb[32];
    snprintf(b, n, "%s %.0f%%", lang_name(r, best, nb, sizeof nb), 100 * x->lang_share[best]);
    return b;
}

static int rank_order(const Switchyard__WorkerStatus *w) { return w->rank >= 0 ? w->rank : INT32_MAX; }

static void table_workers(FILE *out, const Switchyard__StatusReply *r) {
    line l = {.len = 0};
    if (r->n_workers == 0) {
        line_put(&l, "no workers registered");
        line_emit(out, &l);
        return;
    }
    /* in-mesh workers by rank, then the others in the coordinator's order */
    size_t *ix = malloc(r->n_workers * sizeof *ix);
    if (!ix)
        return;
    for (size_t i = 0; i < r->n_workers; i++) {
        size_t j = i;
        while (j > 0 && rank_order(r->workers[ix[j - 1]]) > rank_order(r->workers[i])) {
            ix[j] = ix[j - 1];
            j--;
        }
        ix[j] = i;
    }
    static const int W[] = {4, 26, 5, 8, 9, 8, 9, 8, 10};
    static const int R[] = {1, 0, 0, 0, 0, 1, 1, 1, 0};
    static const char *H[] = {"rank", "host", "d/p", "experts", "rows", "GFLOP/s", "heartbeat", "step", "state"};
    line_put(&l, "  ");
    for (int c = 0; c < 9; c++)
        line_cell(&l, H[c], W[c], R[c]);
    line_emit(out, &l);
    for (size_t i = 0; i < r->n_workers; i++) {
        const Switchyard__WorkerStatus *w = r->workers[ix[i]];
        char v[9][48];
        int in = w->rank >= 0;
        snprintf(v[0], sizeof v[0], in ? "%d" : "-", w->rank);
        if (in)
            snprintf(v[2], sizeof v[2], "%d/%d", w->data_rank, w->expert_rank);
        else
            snprintf(v[2], sizeof v[2], "-");
        fmt_range(v[3], sizeof v[3], w->expert_begin, in ? w->expert_end : w->expert_begin);
        fmt_range(v[4], sizeof v[4], w->row0, (uint32_t)(w->row0 + (in ? w->nrows : 0)));
        fmt_f(v[5], sizeof v[5], "%.1f", w->gflops > 0 ? w->gflops : NAN);
        fmt_age(v[6], sizeof v[6], w->heartbeat_age_s);
        fmt_f(v[7], sizeof v[7], "%.3fs", w->step_time_s > 0 ? w->step_time_s : NAN);
        line_put(&l, "  ");
        for (int c = 0; c < 9; c++)
            line_cell(&l, c == 1 ? S(w->host) : c == 8 ? S(w->state) : v[c], W[c], R[c]);
        line_emit(out, &l);
    }
    free(ix);
}

static void table_expert_layer(FILE *out, const Switchyard__StatusReply *r, uint32_t layer) {
    line l = {.len = 0};
    size_t ne = 0;
    double maxshare = 0, dropped = 0;
    int langs = 0;
    for (size_t i = 0; i < r->n_experts; i++) {
        const Switchyard__ExpertStatus *x = r->experts[i];
        if (x->layer != layer)
            continue;
        ne++;
        if (isfinite(x->share) && x->share > maxshare)
            maxshare = x->share;
        if (isfinite(x->share) && isfinite(x->drop_rate))
            dropped += x->share * x->drop_rate;
        langs |= x->n_lang_share > 0;
    }
    line_printf(&l, "layer %u: %zu experts, %.1f%% of routed tokens dropped", layer, ne, 100 * dropped);
    line_emit(out, &l);
    /* up to 8 experts one per line with a load bar; more are packed three to a line */
    int per_line = ne <= 8 ? 1 : 3;
    for (int c = 0; c < per_line; c++) {
        line_put(&l, "  ");
        line_cell(&l, "expert", 6, 1);
        line_cell(&l, "share", 6, 1);
        line_cell(&l, "drop", 6, 1);
        if (langs) {
            line_put(&l, " ");
            line_cell(&l, "top lang", per_line == 1 ? 12 : 8, 0);
        }
        if (per_line == 1)
            line_put(&l, "load");
    }
    line_emit(out, &l);
    int k = 0;
    for (size_t i = 0; i < r->n_experts; i++) {
        const Switchyard__ExpertStatus *x = r->experts[i];
        if (x->layer != layer)
            continue;
        char e[16], sh[16], dr[16], tl[48];
        snprintf(e, sizeof e, "%u", x->expert);
        fmt_f(sh, sizeof sh, "%.1f%%", 100 * x->share);
        fmt_f(dr, sizeof dr, "%.1f%%", 100 * x->drop_rate);
        line_put(&l, "  ");
        line_cell(&l, e, 6, 1);
        line_cell(&l, sh, 6, 1);
        line_cell(&l, dr, 6, 1);
        if (langs) {
            line_put(&l, " ");
            line_cell(&l, fmt_top_lang(tl, sizeof tl, r, x), per_line == 1 ? 12 : 8, 0);
        }
        if (per_line == 1) {
            int bar = maxshare > 0 && isfinite(x->share) && x->share > 0 ? (int)lround(30 * x->share / maxshare) : 0;
            for (int b = 0; b < bar; b++)
                line_raw(&l, "#", 1, 1);
        }
        if (++k % per_line == 0)
            line_emit(out, &l);
    }
    if (l.len)
        line_emit(out, &l);
}

int sy_status_table(FILE *out, const Switchyard__StatusReply *r) {
    line l = {.len = 0};
    char a[64], b[64], c[64], d[64], e[64];
    if (r->error && r->error[0]) {
        line_put(&l, "error: ");
        line_put(&l, r->error);
        line_emit(out, &l);
    }
    line_put(&l, "run ");
    line_fit(&l, S(r->run_id), 40, 0);
    line_put(&l, "  state ");
    line_fit(&l, S(r->state), 24, 0);
    line_printf(&l, "  epoch %" PRIu64 "  uptime %s", r->epoch, fmt_age(a, sizeof a, r->uptime_s));
    line_emit(out, &l);

    if (r->total_steps > 0)
        line_printf(&l, "step %" PRId64 "/%" PRId64 " (%.1f%%)", r->step, r->total_steps,
                    100.0 * (double)r->step / (double)r->total_steps);
    else
        line_printf(&l, "step %" PRId64, r->step);
    line_printf(&l, "  loss %s (ce %s, aux %s, z %s)  val loss %s", fmt_f(a, sizeof a, "%.4f", r->loss),
                fmt_f(b, sizeof b, "%.4f", r->ce), fmt_f(c, sizeof c, "%.4g", r->aux), fmt_f(d, sizeof d, "%.4g", r->z),
                fmt_f(e, sizeof e, "%.4f", r->val_loss));
    line_emit(out, &l);

    line_printf(&l, "tokens/s %s  step %s ms (compute %s, all-to-all %s, all-reduce %s ms)",
                fmt_rate(a, sizeof a, r->tokens_per_s), fmt_ms(b, sizeof b, r->step_time_s),
                fmt_ms(c, sizeof c, r->compute_s), fmt_ms(d, sizeof d, r->alltoall_s),
                fmt_ms(e, sizeof e, r->allreduce_s));
    line_emit(out, &l);

    /* workers: in the mesh against the minimum, then a count per state */
    line_printf(&l, "workers %u in mesh / min %u", r->world, r->min_workers);
    const char *seen[16];
    int nseen = 0;
    for (size_t i = 0; i < r->n_workers && nseen < 16; i++) {
        const char *st = S(r->workers[i]->state);
        int dup = 0;
        for (int j = 0; j < nseen; j++)
            dup |= !strcmp(seen[j], st);
        if (dup)
            continue;
        seen[nseen++] = st;
        int cnt = 0;
        for (size_t j = 0; j < r->n_workers; j++)
            cnt += !strcmp(S(r->workers[j]->state), st);
        line_printf(&l, "%s%d ", nseen == 1 ? "  (" : ", ", cnt);
        line_fit(&l, st[0] ? st : "?", 16, 0);
    }
    if (nseen)
        line_put(&l, ")");
    line_printf(&l, "  lr %s  grad norm %s", fmt_f(a, sizeof a, "%.3g", r->lr), fmt_f(b, sizeof b, "%.3g", r->grad_norm));
    line_emit(out, &l);

    if (r->replica_every > 0 || r->rehomes || r->rollbacks) {
        if (r->replica_every > 0)
            line_printf(&l, "replicas every %u step%s (%s/step)", r->replica_every, r->replica_every == 1 ? "" : "s",
                        fmt_bytes(a, sizeof a, (double)r->replica_bytes));
        else
            line_put(&l, "replicas off");
        line_printf(&l, "  failures: %u re-homed, %u rolled back", r->rehomes, r->rollbacks);
        line_emit(out, &l);
        if (r->last_steps_lost >= 0) {
            line_printf(&l, "last failure: %" PRId64 " step%s lost beyond the step in flight, next step %.2f s after it",
                        r->last_steps_lost, r->last_steps_lost == 1 ? "" : "s", r->last_recovery_s);
            line_emit(out, &l);
        }
    }

    if (r->checkpoint_step >= 0) {
        line_printf(&l, "checkpoint step %" PRId64 ", %s ago: ", r->checkpoint_step,
                    fmt_age(a, sizeof a, r->checkpoint_age_s));
        line_fit(&l, S(r->checkpoint_path), SY_STATUS_WIDTH, 1);
    } else {
        line_put(&l, "checkpoint none yet");
    }
    line_emit(out, &l);

    line_emit(out, &l);
    table_workers(out, r);

    /* one table per switch layer, in the order the layers first appear */
    for (size_t i = 0; i < r->n_experts; i++) {
        int first = 1;
        for (size_t j = 0; j < i && first; j++)
            first = r->experts[j]->layer != r->experts[i]->layer;
        if (!first)
            continue;
        line_emit(out, &l);
        table_expert_layer(out, r, r->experts[i]->layer);
    }

    if (r->n_events) {
        line_emit(out, &l);
        line_put(&l, "events (newest first)");
        line_emit(out, &l);
        for (size_t i = 0; i < r->n_events && i < SY_STATUS_TABLE_EVENTS; i++) {
            const Switchyard__EventStatus *ev = r->events[i];
            line_put(&l, "  ");
            line_cell(&l, fmt_age(a, sizeof a, ev->age_s), 7, 1);
            line_put(&l, "ago  ");
            line_put(&l, S(ev->what));
            line_emit(out, &l);
        }
        if (r->n_events > SY_STATUS_TABLE_EVENTS) {
            line_printf(&l, "  ... %zu older", r->n_events - SY_STATUS_TABLE_EVENTS);
            line_emit(out, &l);
        }
    }
    return ferror(out) ? -1 : 0;
}

/* ---- JSON ---- */

/* The shortest %g form that reads back as the same double. */
static void fmt_double(char *b, size_t n, double v) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, n, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            return;
    }
}

static void json_num(FILE *out, double v) {
    if (!isfinite(v)) {
        fputs("null", out);
        return;
    }
    char b[40];
    fmt_double(b, sizeof b, v);
    fputs(b, out);
}

static void json_str(FILE *out, const char *s) {
    fputc('"', out);
    const unsigned char *p = (const unsigned char *)S(s);
    while (*p) {
        uint32_t cp;
        size_t len = utf8_next(p, &cp);
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

    jtop(&t, "workers");
    fputc('[', out);
    for (size_t i = 0; i < r->n_workers; i++) {
        const Switchyard__WorkerStatus *w = r->workers[i];
        jobj o = {out, 1};
        fputs(i ? ",\n    {" : "\n    {", out);
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
        fputc('}', out);
    }
    fputs(r->n_workers ? "\n  ]" : "]", out);

    jtop(&t, "experts");
    fputc('[', out);
    for (size_t i = 0; i < r->n_experts; i++) {
        const Switchyard__ExpertStatus *x = r->experts[i];
        jobj o = {out, 1};
        fputs(i ? ",\n    {" : "\n    {", out);
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
    fputs(r->n_experts ? "\n  ]" : "]", out);

    jtop(&t, "languages");
    fputc('[', out);
    for (size_t g = 0; g < r->n_languages; g++) {
        fputs(g ? ", " : "", out);
        json_str(out, r->languages[g]);
    }
    fputc(']', out);

    TOP(&t, "checkpoint_step", fprintf(out, "%" PRId64, r->checkpoint_step));
    TOP(&t, "checkpoint_path", json_str(out, r->checkpoint_path));
    TOP(&t, "checkpoint_age_s", json_num(out, r->checkpoint_age_s));

    jtop(&t, "events");
    fputc('[', out);
    for (size_t i = 0; i < r->n_events; i++) {
        jobj o = {out, 1};
        fputs(i ? ",\n    {" : "\n    {", out);
        jnum(&o, "age_s", r->events[i]->age_s);
        jstr(&o, "what", r->events[i]->what);
        fputc('}', out);
    }
    fputs(r->n_events ? "\n  ]" : "]", out);

    TOP(&t, "uptime_s", json_num(out, r->uptime_s));
    TOP(&t, "world", fprintf(out, "%u", r->world));
    TOP(&t, "min_workers", fprintf(out, "%u", r->min_workers));
    TOP(&t, "error", json_str(out, r->error));
    TOP(&t, "lr", json_num(out, r->lr));
    TOP(&t, "grad_norm", json_num(out, r->grad_norm));
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

/* ---- Prometheus text format 0.0.4 ---- */

/* A label value: \\, \" and \n escaped; invalid UTF-8 replaced by U+FFFD (the format
 * requires UTF-8). Other bytes pass as they are, which the format allows. */
static void prom_escape(FILE *out, const char *s, int help) {
    const unsigned char *p = (const unsigned char *)S(s);
    while (*p) {
        uint32_t cp;
        size_t len = utf8_next(p, &cp);
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
        fmt_double(b, sizeof b, v);
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
enum { W_GFLOPS, W_HEARTBEAT, W_STEP, W_EXPERTS, W_ROWS, W_CORES, W_THREADS, W_N };

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
            "switchyard_worker_threads"};
        static const char *const whelp[W_N] = {
            "Measured sgemm GFLOP/s of the worker.", "Seconds since the worker's last heartbeat.",
            "Wall time of the worker's last step.", "Experts the worker holds.",
            "Global batch rows the worker trains on.", "CPU cores of the worker's machine.",
            "Compute threads the worker uses."};
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
                    const char *kv[] = {"layer", ly, "expert", ex, "language", lang_name(r, g, nb, sizeof nb)};
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
