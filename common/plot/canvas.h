/* canvas.h: the drawing interface between the figure (figure.c) and its back ends
 * (svg.c, raster.c). Internal to common/plot/. */
#ifndef SY_PLOT_CANVAS_H
#define SY_PLOT_CANVAS_H

#include <stddef.h>
#include <stdint.h>

#include "plot.h"

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

/* Checks the requested size and that the log has points; *W, *H: the size to draw. */
int sy_figure_size(const sy_runlog *L, const sy_plot_opts *opts, int *W, int *H);
/* Draws the whole figure for log L on a W x H canvas; *lay: where things landed. */
int sy_figure_draw(const sy_runlog *L, int W, int H, canvas *cv, sy_plot_layout *lay);

#endif
