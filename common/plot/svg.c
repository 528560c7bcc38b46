/* svg.c: the figure as an SVG document: a canvas that writes markup. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "font.h"
#include "log.h"

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

int sy_plot_svg(const sy_runlog *log, const sy_plot_opts *opts, char **out, size_t *len, sy_plot_layout *layout) {
    int W, H;
    sy_plot_layout lay;
    *out = NULL;
    *len = 0;
    if (sy_figure_size(log, opts, &W, &H))
        return -1;
    svg_canvas s = {{sv_line, sv_rect, sv_dot, sv_text}, NULL, 0, 0, 0};
    sv_printf(&s,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n",
              W, H, W, H);
    if (sy_figure_draw(log, W, H, &s.base, &lay)) {
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
