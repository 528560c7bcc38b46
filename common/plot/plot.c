/* plot.c: a run log's figure written to a file, SVG or PNG by the name's extension. */
#include "plot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fsutil.h"
#include "log.h"

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
