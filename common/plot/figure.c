/* figure.c: the two-panel training-curve figure (loss terms over steps, tokens/s over
 * steps, dashed markers where membership changed), drawn once through a canvas. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "font.h"
#include "log.h"

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
    if (sy_text_width(s, scale) <= maxw)
        return;
    while (n > 3 && sy_text_width(s, scale) > maxw) {
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
int sy_figure_draw(const sy_runlog *L, int W, int H, canvas *cv, sy_plot_layout *lay) {
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
            maxw = fmax(maxw, sy_text_width(lab, fs));
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
            lw = fmax(lw, sy_text_width(lab, fs));
        }
        if (target <= 2 || (W - x0 - 30) / fmax(1, ax.n - 1) >= lw + 3 * GLYPH_ADV * fs)
            break;
    }
    char lastlab[48];
    tick_label(lastlab, sizeof lastlab, ax.hi, ax.step);
    double x1 = px_center(W - fmax(24, sy_text_width(lastlab, fs) / 2 + 8));
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
    double subw = sy_text_width(sub, fs);
    fit_text(title, W - 20 - (subw + 30), ts);
    if (sy_text_width(title, ts) + subw + 30 > W - 20)
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
            double bw = sy_text_width(lab, fs) + 6, bx = mx + 3;
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
        legw += (leg[i].dot ? 12 : 26) + 6 + sy_text_width(leg[i].name, fs) + (i ? 20 : 0);
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
        lx += sy_text_width(leg[i].name, fs);
    }
    const char *hA_name = "loss (nats)";
    if (x0 + sy_text_width(hA_name, fs) + 20 < x1 - legw)
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

int sy_figure_size(const sy_runlog *L, const sy_plot_opts *opts, int *W, int *H) {
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
