/* plot.h: training curves of a run log, drawn for a person to look at.
 *
 * A run log is JSON lines, one flat object per logged step, written by the coordinator
 * (CHECKPOINT_DIR/run_log.jsonl) or the single-process trainer (train_log.jsonl). The
 * reader takes the keys it plots (run_id, epoch, step, loss, ce, val_ce, tokens_per_s,
 * workers) and ignores the rest; a key may be missing or null in any line. Lines that
 * are not a JSON object are skipped and counted, never fatal.
 *
 * The figure has two panels sharing the step axis: (a) training ce, total loss and
 * validation ce; (b) tokens/s; a dashed vertical marker wherever membership changed
 * (the workers count, the coordinator's epoch, or the run id). It is written as SVG or
 * as PNG (own rasterizer and bitmap font; zlib compresses). The run-log reader is
 * runlog.c, the parts of the figure are figure.c, svg.c, raster.c, font.c, png.c. */
#ifndef SY_PLOT_H
#define SY_PLOT_H

#include <stddef.h>
#include <stdint.h>

/* One logged step. Absent, null, non-numeric or non-finite values are NAN. */
typedef struct {
    double step;
    double loss, ce, val_ce, tokens_per_s;
    double workers, epoch;
    int run; /* index into sy_runlog.run_ids, -1 if the line had no run_id */
} sy_runlog_point;

#define SY_RUNLOG_MAX_BAD_LINES 8

typedef struct {
    char *name;              /* file name (or the name given to sy_runlog_parse), for messages */
    sy_runlog_point *pts;    /* usable lines in file order */
    size_t n;
    char **run_ids;          /* run ids in log order, one entry each time the id changes from the
                              * previous line's (printable ASCII, at most 63 characters) */
    size_t n_run_ids;
    size_t lines;            /* non-blank lines seen */
    size_t malformed;        /* skipped: not a well-formed JSON object */
    size_t no_step;          /* skipped: well-formed but without a finite numeric "step" */
    size_t bad_lines[SY_RUNLOG_MAX_BAD_LINES]; /* 1-based numbers of the first skipped lines */
    size_t n_bad_lines;
} sy_runlog;

/* Reads a run log file. Skipped lines are counted and the first few are warned about
 * with their line number. Returns NULL (sy_lasterr names the file) only when the file
 * cannot be opened or read; a log with no usable line is returned with n == 0. */
sy_runlog *sy_runlog_read(const char *path);
/* Same, from memory (text need not be NUL-terminated); name is used in messages. */
sy_runlog *sy_runlog_parse(const char *text, size_t len, const char *name);
void sy_runlog_destroy(sy_runlog **log);

typedef enum { SY_PLOT_PNG = 0, SY_PLOT_SVG = 1 } sy_plot_format;

typedef struct {
    int width, height; /* pixels; 0 = default 1000 x 760 */
    int png_stored;    /* PNG: uncompressed (stored) deflate blocks instead of compressed ones */
} sy_plot_opts;

/* Where things landed, for callers and tests: a panel's plot area in pixels (x0,y0 top
 * left, x1,y1 bottom right; a data value v maps linearly from [ymin,ymax] to [y1,y0],
 * a step from [xmin,xmax] to [x0,x1]). */
typedef struct {
    double x0, y0, x1, y1;
    double ymin, ymax;
} sy_plot_panel;

typedef struct {
    int width, height;
    double xmin, xmax;
    sy_plot_panel loss, tps;
    size_t points;  /* log points drawn */
    size_t markers; /* membership-change marker lines */
} sy_plot_layout;

/* SVG/PNG from a file name's extension (.svg / .png, any case); -1 if neither. */
int sy_plot_format_from_path(const char *path);

/* Renders the figure as an SVG document (*out is malloc'd and NUL-terminated). */
int sy_plot_svg(const sy_runlog *log, const sy_plot_opts *opts, char **out, size_t *len, sy_plot_layout *layout);
/* Renders the figure into a malloc'd 8-bit RGB buffer of width*height*3 bytes. */
int sy_plot_rgb(const sy_runlog *log, const sy_plot_opts *opts, uint8_t **rgb, sy_plot_layout *layout);
/* Encodes 8-bit RGB pixels as a PNG file image (*out malloc'd). stored != 0 writes
 * uncompressed deflate blocks, otherwise zlib's best compression. */
int sy_png_encode(const uint8_t *rgb, int width, int height, int stored, uint8_t **out, size_t *len);

/* Renders the log and writes it to path (format from the extension), through a
 * temporary file renamed into place. layout may be NULL. Fails (negative, sy_lasterr)
 * on a log without usable points, an unknown extension or an unwritable path. */
int sy_plot_write(const sy_runlog *log, const char *path, const sy_plot_opts *opts, sy_plot_layout *layout);

#endif
