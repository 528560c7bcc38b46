/* table.c: a StatusReply as the human table. Strings in the reply come from the
 * network (host names, paths, event texts): they are shown sanitised and cut to fit. */
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
        size_t len = sy_utf8_next(p, &cp);
        glyph *g = &(*out)[k++];
        if (cp == BAD_CP || cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0x2028 || cp == 0x2029) {
            g->b[0] = '?';
            g->n = 1;
            g->w = 1;
        } else {
            memcpy(g->b, p, len);
            g->n = (unsigned char)len;
            g->w = (unsigned char)sy_cp_width(cp);
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
    snprintf(b, n, "%s %.0f%%", sy_status_lang_name(r, best, nb, sizeof nb), 100 * x->lang_share[best]);
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
    /* "comp/wait": the rank's own compute and its time in the collectives in the last
     * step, in ms (the lock-step time is the same for every rank and hides who is slow) */
    static const int W[] = {4, 26, 5, 8, 9, 8, 9, 10, 8};
    static const int R[] = {1, 0, 0, 0, 0, 1, 1, 1, 0};
    static const char *H[] = {"rank", "host", "d/p", "experts", "rows", "GFLOP/s", "heartbeat", "comp/wait", "state"};
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
        if (in && w->compute_s > 0)
            snprintf(v[7], sizeof v[7], "%.0f/%.0f", w->compute_s * 1e3, w->wait_s * 1e3);
        else
            snprintf(v[7], sizeof v[7], "-");
        line_put(&l, "  ");
        for (int c = 0; c < 9; c++)
            line_cell(&l, c == 1 ? S(w->host) : c == 8 ? S(w->state) : v[c], W[c], R[c]);
        line_emit(out, &l);
    }
    free(ix);
    for (size_t i = 0; i < r->n_workers && r->straggler_rank >= 0 && r->world > 1; i++) {
        const Switchyard__WorkerStatus *w = r->workers[i];
        if (w->rank != r->straggler_rank)
            continue;
        line_printf(&l, "  straggler: rank %d (", w->rank);
        line_fit(&l, S(w->host), 26, 0);
        line_printf(&l, "): computes %.0f ms, the others wait %.0f ms for it", w->compute_s * 1e3,
                    r->straggler_wait_s * 1e3);
        line_emit(out, &l);
    }
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
