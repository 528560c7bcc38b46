/* raster.c: the figure as 8-bit RGB pixels: a small anti-aliased rasterizer (coverage
 * from the distance to a shape's edge) with the bitmap font. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "font.h"
#include "log.h"

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
    double w = sy_text_width(t, scale);
    long ox = lrint(anchor == ANCHOR_MIDDLE ? x - w / 2 : anchor == ANCHOR_END ? x - w : x), oy = lrint(y);
    for (size_t c = 0; t[c]; c++) {
        const char *g = sy_glyph(t[c]);
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
    if (sy_figure_size(log, opts, &W, &H))
        return -1;
    raster r = {{rs_line, rs_rect, rs_dot, rs_text}, W, H, NULL, NULL, W, H, 0, 0};
    r.px = malloc((size_t)W * H * 3);
    r.cov = calloc((size_t)W * H, sizeof *r.cov);
    if (!r.px || !r.cov) {
        sy_seterr("%s: out of memory for a %dx%d image", log->name, W, H);
        goto fail;
    }
    memset(r.px, 0xff, (size_t)W * H * 3);
    if (sy_figure_draw(log, W, H, &r.base, &lay))
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
