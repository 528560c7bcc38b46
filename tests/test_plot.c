/* test_plot.c: the run log reader (good lines, missing keys, nulls, malformed lines
 * skipped and counted with their line numbers, very long lines, mutated input), the
 * SVG and PNG renderings of a synthetic log (PNG checked here: chunk CRCs by a bitwise
 * CRC-32, zlib framing and Adler-32, the deflate stream through zlib's inflate, filters,
 * then pixels where the curves must be), file writing errors, and `switchyard plot`. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include "log.h"
#include "plot.h"

/* ------------------------------------------------------------------ helpers */

#define SY_TMPDIR_NAME "plot"
#include "tmpdir.h"

static sy_runlog *parse_str(const char *s) { return sy_runlog_parse(s, strlen(s), "test.jsonl"); }

/* ------------------------------------------------------------------ parsing */

static void test_parse_good_lines(void **state) {
    (void)state;
    const char *text =
        "{\"run_id\":\"6b0b8c39-342f\",\"epoch\":117697487962113,\"step\":50,\"loss\":3.549,\"ce\":3.526,"
        "\"aux\":2.097,\"z\":2.380,\"lr\":0.003,\"grad_norm\":0.52,\"tokens_per_s\":6472.1,\"step_ms\":633.2,"
        "\"compute_ms\":554.1,\"alltoall_ms\":73.0,\"allreduce_ms\":13.2,\"workers\":2,\"time\":31.0}\n"
        "{\"run_id\":\"6b0b8c39-342f\",\"step\":100,\"loss\":2.53,\"ce\":2.50,\"aux\":2.05,\"z\":0.62,"
        "\"val_ce\":2.85,\"lr\":0.00287,\"grad_norm\":0.44,\"tokens_per_s\":5614.0,\"workers\":1,\"time\":67.5}\n";
    sy_runlog *L = parse_str(text);
    assert_non_null(L);
    assert_int_equal(L->n, 2);
    assert_int_equal(L->lines, 2);
    assert_int_equal(L->malformed, 0);
    assert_int_equal(L->no_step, 0);
    assert_int_equal(L->n_run_ids, 1);
    assert_string_equal(L->run_ids[0], "6b0b8c39-342f");
    const sy_runlog_point *a = &L->pts[0], *b = &L->pts[1];
    assert_true(a->step == 50 && a->loss == 3.549 && a->ce == 3.526 && a->tokens_per_s == 6472.1);
    assert_true(a->workers == 2 && a->epoch == 117697487962113.0 && a->run == 0);
    assert_true(isnan(a->val_ce)); /* missing key */
    assert_true(b->step == 100 && b->val_ce == 2.85 && b->workers == 1 && b->run == 0);
    assert_true(isnan(b->epoch));
    sy_runlog_destroy(&L);
    assert_null(L);
    sy_runlog_destroy(&L); /* NULL is fine */
}

static void test_parse_missing_null_types(void **state) {
    (void)state;
    const char *text =
        "{\"step\":1}\n"                                                                  /* 1: only a step */
        "{\"step\":2,\"ce\":null,\"val_ce\":null,\"loss\":\"high\",\"workers\":true}\n"  /* 2: null, wrong types */
        "{\"ce\":1.5,\"unknown\":{\"a\":[1,2,{\"b\":null}],\"c\":\"x\"},\"step\":3,\"x\":[]}\n" /* 3: nested unknowns */
        "{\"step\":4,\"ce\":NaN,\"loss\":-nan,\"tokens_per_s\":inf,\"val_ce\":-Infinity}\n" /* 4: C/Python non-finite */
        "{\"step\":5,\"ce\":1.0,\"ce\":2.0,\"step\":6}\n"                           /* 5: last one wins */
        "{\"step\":7e0,\"ce\":-0.5E+1,\"loss\":1e999,\"tokens_per_s\":0}\n"               /* 6: exponents, overflow */
        "{\"step\":8,\"run_id\":\"a\\u0062c\\n\\u00e9\\\"\",\"workers\":3}\n"             /* 7: escapes */
        "{}\n";                                                                           /* 8: no step */
    sy_runlog *L = parse_str(text);
    assert_non_null(L);
    assert_int_equal(L->lines, 8);
    assert_int_equal(L->malformed, 0);
    assert_int_equal(L->no_step, 1);
    assert_int_equal(L->n_bad_lines, 1);
    assert_int_equal(L->bad_lines[0], 8);
    assert_int_equal(L->n, 7);
    const sy_runlog_point *p = L->pts;
    assert_true(p[0].step == 1 && isnan(p[0].ce) && isnan(p[0].loss) && isnan(p[0].workers) && p[0].run == -1);
    assert_true(p[1].step == 2 && isnan(p[1].ce) && isnan(p[1].val_ce) && isnan(p[1].loss) && isnan(p[1].workers));
    assert_true(p[2].step == 3 && p[2].ce == 1.5);
    assert_true(p[3].step == 4 && isnan(p[3].ce) && isnan(p[3].loss) && isnan(p[3].tokens_per_s) &&
                isnan(p[3].val_ce));
    assert_true(p[4].step == 6 && p[4].ce == 2.0);
    assert_true(p[5].step == 7 && p[5].ce == -5.0 && isnan(p[5].loss) && p[5].tokens_per_s == 0);
    assert_true(p[6].step == 8 && p[6].workers == 3 && p[6].run == 0);
    assert_int_equal(L->n_run_ids, 1);
    assert_string_equal(L->run_ids[0], "abc??\""); /* \n and a non-ASCII char become '?' */
    sy_runlog_destroy(&L);
}

static void test_parse_malformed_skipped_counted(void **state) {
    (void)state;
    const char *lines[] = {
        "{\"step\":1,\"ce\":3.0}",            /* 1 ok */
        "{\"step\":2,\"ce\":",                /* 2 truncated value */
        "{\"step\":3,\"ce\":2.9} trailing",   /* 3 text after the object */
        "[1,2,3]",                            /* 4 not an object */
        "step=4 ce=2.8",                      /* 5 not JSON */
        "{\"step\" 5}",                       /* 6 missing colon */
        "{\"step\":6,}",                      /* 7 trailing comma */
        "{\"step\":7,\"run_id\":\"a\\qb\"}",  /* 8 bad escape */
        "{\"step\":8,\"run_id\":\"a\tb\"}",   /* 9 raw control character */
        "{\"step\":01}",                      /* 10 leading zero */
        "{\"step\":9,\"ce\":.5}",             /* 11 bare fraction */
        "{\"step\":10,\"ce\":1.}",            /* 12 dangling point */
        "{'step':11}",                        /* 13 single quotes */
        "",                                   /* 14 blank: not a log line */
        "{\"ce\":2.5}",                       /* 15 no step */
        "{\"step\":\"12\",\"ce\":2.5}",       /* 16 step as a string: no step */
        "   {\"step\":13,\"ce\":2.4}   \r",   /* 17 ok: whitespace and CR */
        "{\"step\":14,\"ce\":2.3,\"s\":\"unterminated}", /* 18 unterminated string */
        "{\"step\":15,\"ce\":2.2}",           /* 19 ok */
        "{\"step\":16,\"ce\":2.1",            /* 20 last line, unterminated, no newline */
    };
    size_t nl = sizeof lines / sizeof lines[0];
    char text[4096] = "";
    for (size_t i = 0; i < nl; i++) {
        strcat(text, lines[i]);
        if (i + 1 < nl)
            strcat(text, "\n");
    }
    sy_runlog *L = parse_str(text);
    assert_non_null(L);
    assert_int_equal(L->lines, 19);
    assert_int_equal(L->n, 3);
    assert_int_equal(L->no_step, 2);
    assert_int_equal(L->malformed, 14);
    assert_true(L->pts[0].step == 1 && L->pts[1].step == 13 && L->pts[2].step == 15);
    assert_true(L->pts[1].ce == 2.4);
    /* the first skipped lines are recorded by number */
    assert_int_equal(L->n_bad_lines, SY_RUNLOG_MAX_BAD_LINES);
    for (int i = 0; i < SY_RUNLOG_MAX_BAD_LINES; i++)
        assert_int_equal(L->bad_lines[i], (size_t)i + 2);
    sy_runlog_destroy(&L);

    /* the same through a file, with nesting deeper than the parser allows */
    char deep[300] = "{\"step\":1,\"x\":";
    for (int i = 0; i < 100; i++)
        strcat(deep, "[");
    strcat(deep, "\n{\"step\":2}\n");
    write_file(tpath("deep.jsonl"), deep, strlen(deep));
    L = sy_runlog_read(tpath("deep.jsonl"));
    assert_non_null(L);
    assert_int_equal(L->n, 1);
    assert_int_equal(L->malformed, 1);
    assert_int_equal(L->bad_lines[0], 1);
    assert_true(L->pts[0].step == 2);
    sy_runlog_destroy(&L);
}

static void test_parse_long_lines(void **state) {
    (void)state;
    /* a 2 MB run id, then a line with 50000 unknown keys, then a normal line */
    size_t big = 2u << 20;
    size_t cap = big + 50000 * 24 + 1024;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, "{\"step\":1,\"run_id\":\"");
    memset(text + o, 'r', big);
    o += big;
    o += (size_t)sprintf(text + o, "\",\"ce\":3.25}\n{\"step\":2");
    for (int i = 0; i < 50000; i++)
        o += (size_t)sprintf(text + o, ",\"k%d\":%d.5", i, i);
    o += (size_t)sprintf(text + o, ",\"ce\":3.0}\n{\"step\":3,\"ce\":2.75}\n");
    assert_true(o < cap);
    write_file(tpath("long.jsonl"), text, o);

    for (int via_file = 0; via_file < 2; via_file++) {
        sy_runlog *L = via_file ? sy_runlog_read(tpath("long.jsonl")) : sy_runlog_parse(text, o, "long");
        assert_non_null(L);
        assert_int_equal(L->n, 3);
        assert_int_equal(L->malformed, 0);
        assert_true(L->pts[0].ce == 3.25 && L->pts[1].ce == 3.0 && L->pts[2].ce == 2.75);
        assert_int_equal(L->n_run_ids, 1);
        assert_int_equal(strlen(L->run_ids[0]), 63); /* kept, truncated */
        assert_int_equal(L->run_ids[0][62], 'r');
        sy_runlog_destroy(&L);
    }
    free(text);
}

static void test_read_files(void **state) {
    (void)state;
    /* missing file: NULL and the path in the message */
    sy_seterr("%s", "");
    assert_null(sy_runlog_read(tpath("nope.jsonl")));
    assert_non_null(strstr(sy_lasterr(), "nope.jsonl"));
    /* empty file: a log with nothing in it */
    write_file(tpath("empty.jsonl"), "", 0);
    sy_runlog *L = sy_runlog_read(tpath("empty.jsonl"));
    assert_non_null(L);
    assert_int_equal(L->lines, 0);
    assert_int_equal(L->n, 0);
    sy_runlog_destroy(&L);
    /* byte order mark, CRLF, blank lines, run id changes, no final newline */
    const char *t = "\xef\xbb\xbf{\"run_id\":\"A\",\"step\":1}\r\n\r\n\n{\"run_id\":\"A\",\"step\":2}\r\n"
                    "{\"run_id\":\"B\",\"step\":1}\n{\"step\":2}\n{\"run_id\":\"A\",\"step\":3}";
    write_file(tpath("crlf.jsonl"), t, strlen(t));
    L = sy_runlog_read(tpath("crlf.jsonl"));
    assert_non_null(L);
    assert_int_equal(L->lines, 5);
    assert_int_equal(L->n, 5);
    assert_int_equal(L->malformed, 0);
    assert_int_equal(L->n_run_ids, 3);
    assert_string_equal(L->run_ids[0], "A");
    assert_string_equal(L->run_ids[1], "B");
    assert_string_equal(L->run_ids[2], "A");
    int want_run[5] = {0, 0, 1, -1, 2};
    for (int i = 0; i < 5; i++)
        assert_int_equal(L->pts[i].run, want_run[i]);
    sy_runlog_destroy(&L);
    /* a directory cannot be read as a log */
    L = sy_runlog_read(g_tmp);
    assert_null(L);
}

/* Mutated lines must never crash or hang, and every line is accounted for. */
static void test_parse_mutations(void **state) {
    (void)state;
    const char *base = "{\"run_id\":\"6b0b-342f\",\"epoch\":1,\"step\":50,\"loss\":3.5e0,\"ce\":-3.5,\"val_ce\":null,"
                       "\"x\":[1,{\"y\":true}],\"workers\":2,\"ok\":false}";
    size_t bl = strlen(base);
    char buf[512];
    uint32_t rng = 12345;
    size_t total_lines = 0, total_ok = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, base, bl);
        size_t n = bl;
        int edits = 1 + (int)((rng = rng * 1664525u + 1013904223u) >> 29);
        for (int e = 0; e < edits; e++) {
            rng = rng * 1664525u + 1013904223u;
            size_t at = (rng >> 8) % n;
            int kind = (int)(rng >> 30);
            if (kind == 0)
                buf[at] = (char)(rng >> 3); /* any byte, even NUL */
            else if (kind == 1 && n > 1)
                memmove(buf + at, buf + at + 1, n - at - 1), n--; /* delete */
            else if (kind == 2 && n < sizeof buf - 1)
                memmove(buf + at + 1, buf + at, n - at), buf[at] = "{}[]\",:0-e.\\"[(rng >> 4) % 13], n++;
            else
                n = at + 1; /* truncate */
        }
        sy_log_set_level(SY_LOG_ERROR); /* thousands of skip warnings are not the point */
        sy_runlog *L = sy_runlog_parse(buf, n, "mut");
        sy_log_set_level(SY_LOG_INFO);
        assert_non_null(L);
        assert_int_equal(L->n + L->malformed + L->no_step, L->lines);
        for (size_t i = 0; i < L->n; i++)
            assert_true(isfinite(L->pts[i].step));
        total_lines += L->lines;
        total_ok += L->n;
        sy_runlog_destroy(&L);
    }
    assert_true(total_lines > 19000);
    assert_true(total_ok > 100 && total_ok < total_lines); /* some survive, most not */
}

/* ------------------------------------------------------------------ synthetic log */

/* steps 0..100 by 10: ce falls linearly 4.0 -> 2.0; val 3.5 at steps 0 and 100 (and
 * repeated in between, as the trainer does); tokens/s 2000 on 2 workers, 3000 on 3 from
 * step 30, where the worker count changes (one marker, "3 workers"). */
static sy_runlog *synthetic(void) {
    char text[4096];
    size_t o = 0;
    for (int s = 0; s <= 100; s += 10) {
        int w = s < 30 ? 2 : 3;
        o += (size_t)snprintf(text + o, sizeof text - o,
                              "{\"run_id\":\"6b0b8c39-342f\",\"step\":%d,\"ce\":%.2f,\"val_ce\":3.5,"
                              "\"tokens_per_s\":%d,\"workers\":%d}\n",
                              s, 4.0 - s * 0.02, w * 1000, w);
    }
    sy_runlog *L = sy_runlog_parse(text, o, "synthetic.jsonl");
    assert_non_null(L);
    assert_int_equal(L->n, 11);
    return L;
}

/* The axis ranges for the synthetic log are nice round numbers whatever tick count the
 * layout picks (any target from 4 to 13 ticks gives these); checking them here makes
 * the pixel positions below independent of the code under test. */
static void check_layout(const sy_plot_layout *lay, int W, int H) {
    assert_int_equal(lay->width, W);
    assert_int_equal(lay->height, H);
    assert_true(lay->xmin == 0 && lay->xmax == 100);
    assert_true(fabs(lay->loss.ymin - 2.0) < 1e-12 && fabs(lay->loss.ymax - 4.0) < 1e-12);
    assert_true(lay->tps.ymin == 0 && lay->tps.ymax == 3000);
    assert_int_equal(lay->points, 11);
    assert_int_equal(lay->markers, 1);
    /* the panels are inside the image, the loss panel above the throughput panel */
    assert_true(lay->loss.x0 > 20 && lay->loss.x1 < W - 5 && lay->loss.x1 - lay->loss.x0 > W / 2);
    assert_true(lay->loss.y0 > 20 && lay->loss.y1 < lay->tps.y0 && lay->tps.y1 < H - 20);
    assert_true(lay->loss.y1 - lay->loss.y0 > lay->tps.y1 - lay->tps.y0);
}

static double px_x(const sy_plot_layout *lay, double step) {
    return lay->loss.x0 + (step - lay->xmin) / (lay->xmax - lay->xmin) * (lay->loss.x1 - lay->loss.x0);
}

static double px_y(const sy_plot_panel *p, double v) {
    return p->y1 - (v - p->ymin) / (p->ymax - p->ymin) * (p->y1 - p->y0);
}

/* ------------------------------------------------------------------ SVG */

static void test_svg(void **state) {
    (void)state;
    sy_runlog *L = synthetic();
    char *svg;
    size_t len;
    sy_plot_layout lay;
    assert_int_equal(sy_plot_svg(L, NULL, &svg, &len, &lay), 0);
    check_layout(&lay, 1000, 760);
    assert_int_equal(strlen(svg), len);
    assert_int_equal(strncmp(svg, "<svg", 4), 0);
    assert_non_null(strstr(svg, "width=\"1000\" height=\"760\""));
    assert_int_equal(strcmp(svg + len - 7, "</svg>\n"), 0);
    /* every element opened is closed: <text>..</text>, self-closing shapes */
    size_t opens = 0, closes = 0;
    for (const char *p = svg; (p = strstr(p, "<text ")); p++)
        opens++;
    for (const char *p = svg; (p = strstr(p, "</text>")); p++)
        closes++;
    assert_true(opens > 10 && opens == closes);
    assert_non_null(strstr(svg, ">run 6b0b8c39-342f</text>"));
    assert_non_null(strstr(svg, ">3 workers</text>"));
    assert_non_null(strstr(svg, ">train ce</text>"));
    assert_non_null(strstr(svg, ">val ce</text>"));
    assert_non_null(strstr(svg, "stroke-dasharray")); /* the marker line */

    /* the ce polyline: 11 points, at the positions the axis ranges give */
    char first[96], last[64];
    snprintf(first, sizeof first, "points=\"%.1f,%.1f %.1f,%.1f ", px_x(&lay, 0), px_y(&lay.loss, 4.0),
             px_x(&lay, 10), px_y(&lay.loss, 3.8));
    snprintf(last, sizeof last, " %.1f,%.1f\"/>", px_x(&lay, 100), px_y(&lay.loss, 2.0));
    const char *pl = strstr(svg, first);
    assert_non_null(pl);
    const char *end = strstr(pl, "\"/>");
    assert_non_null(end);
    assert_int_equal(strncmp(end - strlen(last) + 3, last, strlen(last)), 0);
    size_t pts = 1;
    for (const char *p = pl + 8; p < end; p++)
        pts += *p == ' ';
    assert_int_equal(pts, 11);
    /* the marker line sits at step 30 */
    char mark[64];
    snprintf(mark, sizeof mark, "points=\"%.1f,%.1f %.1f,", floor(px_x(&lay, 30)) + 0.5, lay.loss.y0,
             floor(px_x(&lay, 30)) + 0.5);
    assert_non_null(strstr(svg, mark));
    /* the repeated validation value is drawn once per change: 1 dot pair, not 11 */
    size_t circles = 0;
    for (const char *p = svg; (p = strstr(p, "<circle")); p++)
        circles++;
    assert_int_equal(circles, 2 + 1); /* white ring + dot at step 0, plus the legend dot */
    free(svg);

    /* special characters in the run id are escaped */
    sy_runlog *E = parse_str("{\"run_id\":\"<a&b>\",\"step\":1,\"ce\":2}\n");
    assert_non_null(E);
    assert_int_equal(sy_plot_svg(E, NULL, &svg, &len, NULL), 0);
    assert_non_null(strstr(svg, ">run &lt;a&amp;b&gt;</text>"));
    assert_null(strstr(svg, "<a&b>"));
    free(svg);
    sy_runlog_destroy(&E);
    sy_runlog_destroy(&L);
}

/* ------------------------------------------------------------------ PNG decoding */

static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t adler32_simple(const uint8_t *p, size_t n) {
    uint64_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (uint32_t)(b << 16 | a);
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth_ref(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc)
        return a;
    return pb <= pc ? b : c;
}

typedef struct {
    int w, h;
    uint8_t *rgb;
    int first_block_type; /* BTYPE of the first deflate block: 0 stored, 1 fixed, 2 dynamic */
} decoded_png;

/* Decodes a PNG as written by sy_png_encode, checking every structural rule on the way. */
static void decode_png(const uint8_t *png, size_t n, decoded_png *d) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(n > 8 + 25 + 12 + 12);
    assert_memory_equal(png, sig, 8);
    size_t pos = 8;
    uint8_t *idat = NULL;
    size_t idat_n = 0;
    int saw_ihdr = 0, saw_iend = 0;
    while (pos < n) {
        assert_true(pos + 12 <= n);
        uint32_t len = be32(png + pos);
        assert_true(pos + 12 + len <= n);
        const uint8_t *type = png + pos + 4, *data = png + pos + 8;
        assert_int_equal(be32(data + len), crc32_bitwise(type, len + 4));
        if (!memcmp(type, "IHDR", 4)) {
            assert_int_equal(pos, 8); /* first chunk */
            assert_int_equal(len, 13);
            d->w = (int)be32(data);
            d->h = (int)be32(data + 4);
            assert_int_equal(data[8], 8);  /* bit depth */
            assert_int_equal(data[9], 2);  /* truecolour */
            assert_int_equal(data[10], 0); /* deflate */
            assert_int_equal(data[11], 0); /* adaptive filtering */
            assert_int_equal(data[12], 0); /* no interlace */
            saw_ihdr = 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            idat = realloc(idat, idat_n + len + 1);
            assert_non_null(idat);
            memcpy(idat + idat_n, data, len);
            idat_n += len;
        } else if (!memcmp(type, "IEND", 4)) {
            assert_int_equal(len, 0);
            assert_int_equal(be32(data), 0xae426082u); /* the CRC every IEND has */
            saw_iend = 1;
            assert_int_equal(pos + 12, n); /* last */
        } else {
            fail_msg("unexpected chunk %.4s", (const char *)type);
        }
        pos += 12 + len;
    }
    assert_true(saw_ihdr && saw_iend && idat_n > 6);
    /* zlib: CM 8, 32K window, header check, no dictionary */
    assert_int_equal(idat[0] & 0x0f, 8);
    assert_true((idat[0] >> 4) <= 7);
    assert_int_equal((idat[0] * 256 + idat[1]) % 31, 0);
    assert_int_equal(idat[1] & 0x20, 0);
    size_t stride = (size_t)d->w * 3, raw_n = (stride + 1) * d->h;
    uint8_t *raw = malloc(raw_n + 1);
    assert_non_null(raw);
    uLongf got = (uLongf)raw_n + 1;
    assert_int_equal(uncompress(raw, &got, idat, (uLong)idat_n), Z_OK);
    assert_int_equal(got, raw_n);
    d->first_block_type = (idat[2] >> 1) & 3;
    assert_int_equal(be32(idat + idat_n - 4), adler32_simple(raw, raw_n));
    /* undo the row filters */
    d->rgb = malloc(stride * d->h);
    assert_non_null(d->rgb);
    for (int y = 0; y < d->h; y++) {
        const uint8_t *f = raw + y * (stride + 1) + 1;
        uint8_t *row = d->rgb + y * stride, *up = y ? row - stride : NULL;
        int ft = raw[y * (stride + 1)];
        assert_true(ft <= 4);
        for (size_t x = 0; x < stride; x++) {
            int a = x >= 3 ? row[x - 3] : 0, b = up ? up[x] : 0, c = (x >= 3 && up) ? up[x - 3] : 0;
            int pred = ft == 0 ? 0 : ft == 1 ? a : ft == 2 ? b : ft == 3 ? (a + b) / 2 : paeth_ref(a, b, c);
            row[x] = (uint8_t)(f[x] + pred);
        }
    }
    free(raw);
    free(idat);
}

static void test_decoder_self_check(void **state) {
    (void)state;
    /* known vectors, so the checks below rest on a correct CRC and Adler-32 */
    assert_int_equal(crc32_bitwise((const uint8_t *)"123456789", 9), 0xcbf43926u);
    assert_int_equal(adler32_simple((const uint8_t *)"Wikipedia", 9), 0x11e60398u);
}

static void pixel(const decoded_png *d, int x, int y, int rgb[3]) {
    assert_true(x >= 0 && y >= 0 && x < d->w && y < d->h);
    const uint8_t *p = d->rgb + ((size_t)y * d->w + x) * 3;
    rgb[0] = p[0], rgb[1] = p[1], rgb[2] = p[2];
}

/* The pixel nearest (fx, fy) within 1 pixel whose colour is closest to want. */
static int near_colour(const decoded_png *d, double fx, double fy, uint32_t want) {
    int best = 1 << 30;
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
            int c[3];
            pixel(d, (int)floor(fx) + dx, (int)floor(fy) + dy, c);
            int dist = abs(c[0] - (int)(want >> 16)) + abs(c[1] - (int)((want >> 8) & 0xff)) +
                       abs(c[2] - (int)(want & 0xff));
            if (dist < best)
                best = dist;
        }
    return best;
}

static void test_png(void **state) {
    (void)state;
    sy_runlog *L = synthetic();
    uint8_t *rgb;
    sy_plot_layout lay;
    sy_plot_opts opts = {.width = 900, .height = 700};
    assert_int_equal(sy_plot_rgb(L, &opts, &rgb, &lay), 0);
    check_layout(&lay, 900, 700);

    for (int stored = 0; stored < 2; stored++) {
        uint8_t *png;
        size_t n;
        assert_int_equal(sy_png_encode(rgb, 900, 700, stored, &png, &n), 0);
        decoded_png d = {0};
        decode_png(png, n, &d);
        assert_int_equal(d.w, 900);
        assert_int_equal(d.h, 700);
        if (stored) {
            /* 700 rows of 2701 bytes, uncompressed */
            assert_int_equal(d.first_block_type, 0);
            assert_true(n > 700 * 2701);
        } else {
            assert_int_not_equal(d.first_block_type, 0);
            assert_true(n < 700 * 2701 / 10); /* a plot is mostly flat colour */
        }
        /* lossless */
        assert_memory_equal(d.rgb, rgb, (size_t)900 * 700 * 3);

        /* the ce curve passes through its data points; C_CE is 0x1f62b4 */
        for (int s = 0; s <= 100; s += 50)
            assert_true(near_colour(&d, px_x(&lay, s), px_y(&lay.loss, 4.0 - s * 0.02), 0x1f62b4) < 60);
        /* and between them (ce is linear in step) */
        assert_true(near_colour(&d, px_x(&lay, 75), px_y(&lay.loss, 2.5), 0x1f62b4) < 60);
        /* tokens/s is at 3000 at step 70 and at 2000 at step 10; C_TPS is 0x2c9a2c */
        assert_true(near_colour(&d, px_x(&lay, 70), px_y(&lay.tps, 3000), 0x2c9a2c) < 60);
        assert_true(near_colour(&d, px_x(&lay, 10), px_y(&lay.tps, 2000), 0x2c9a2c) < 60);
        /* empty plot area stays white: step 55, ce 2.3 / tokens 1500 (between grid lines) */
        int c[3];
        pixel(&d, (int)px_x(&lay, 55), (int)px_y(&lay.loss, 2.3), c);
        assert_true(c[0] == 255 && c[1] == 255 && c[2] == 255);
        pixel(&d, (int)px_x(&lay, 55), (int)px_y(&lay.tps, 1500), c);
        assert_true(c[0] == 255 && c[1] == 255 && c[2] == 255);
        /* validation ce: the dot at step 0 is orange (0xe6550d) */
        assert_true(near_colour(&d, px_x(&lay, 0) + 1, px_y(&lay.loss, 3.5), 0xe6550d) < 60);
        /* the marker at step 30 is dashed grey down the throughput panel */
        int mx = (int)floor(px_x(&lay, 30)), grey = 0, white = 0;
        for (int y = (int)lay.tps.y0 + 2; y < (int)lay.tps.y1 - 2; y++) {
            pixel(&d, mx, y, c);
            if (abs(c[0] - 0x7a) < 50 && c[0] == c[1] && c[1] == c[2])
                grey++;
            else if (c[0] > 200 && c[1] > 200 && c[2] > 200)
                white++;
        }
        assert_true(grey > 40 && white > 20);
        /* a column left of it holds no marker */
        grey = 0;
        for (int y = (int)lay.tps.y0 + 2; y < (int)lay.tps.y1 - 2; y++) {
            pixel(&d, (int)floor(px_x(&lay, 45)), y, c);
            grey += abs(c[0] - 0x7a) < 50 && c[0] == c[1] && c[1] == c[2];
        }
        assert_int_equal(grey, 0);
        free(d.rgb);
        free(png);
    }
    free(rgb);
    sy_runlog_destroy(&L);
}

static void test_png_encoder_edges(void **state) {
    (void)state;
    /* 1x1, an odd size and noise (nothing to match), through both block types */
    int sizes[3][2] = {{1, 1}, {7, 3}, {300, 200}};
    uint32_t rng = 99;
    for (int k = 0; k < 3; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *rgb = malloc((size_t)w * h * 3);
        assert_non_null(rgb);
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            rgb[i] = (uint8_t)((rng = rng * 1103515245u + 12345u) >> 16);
        for (int stored = 0; stored < 2; stored++) {
            uint8_t *png;
            size_t n;
            assert_int_equal(sy_png_encode(rgb, w, h, stored, &png, &n), 0);
            decoded_png d = {0};
            decode_png(png, n, &d);
            assert_int_equal(d.w, w);
            assert_int_equal(d.h, h);
            assert_memory_equal(d.rgb, rgb, (size_t)w * h * 3);
            free(d.rgb);
            free(png);
        }
        free(rgb);
    }
    uint8_t *png;
    size_t n;
    uint8_t px[3] = {0};
    assert_int_equal(sy_png_encode(px, 0, 1, 0, &png, &n), -1);
    assert_null(png);
}

/* ------------------------------------------------------------------ files */

static void test_write_files(void **state) {
    (void)state;
    sy_runlog *L = synthetic();
    sy_plot_layout lay;
    assert_int_equal(sy_plot_format_from_path("a/b.PNG"), SY_PLOT_PNG);
    assert_int_equal(sy_plot_format_from_path("b.svg"), SY_PLOT_SVG);
    assert_int_equal(sy_plot_format_from_path("b.jpg"), -1);
    assert_int_equal(sy_plot_format_from_path("dir.svg/b"), -1);
    assert_int_equal(sy_plot_format_from_path("png"), -1);

    assert_int_equal(sy_plot_write(L, tpath("out.png"), NULL, &lay), 0);
    assert_int_equal(lay.markers, 1);
    size_t n;
    uint8_t *b = (uint8_t *)read_whole(tpath("out.png"), &n);
    decoded_png d = {0};
    decode_png(b, n, &d);
    assert_int_equal(d.w, 1000);
    assert_int_equal(d.h, 760);
    free(d.rgb);
    free(b);
    assert_int_equal(sy_plot_write(L, tpath("out.svg"), NULL, NULL), 0);
    b = (uint8_t *)read_whole(tpath("out.svg"), &n);
    assert_int_equal(strncmp((char *)b, "<svg", 4), 0);
    assert_non_null(strstr((char *)b, "3 workers"));
    free(b);
    /* nothing left behind but the two images */
    struct stat st;
    char probe[600];
    snprintf(probe, sizeof probe, "%s.tmp.%ld", tpath("out.png"), (long)getpid());
    assert_int_not_equal(stat(probe, &st), 0);

    /* errors name the path */
    assert_int_equal(sy_plot_write(L, tpath("no/such/dir/x.png"), NULL, NULL), -1);
    assert_non_null(strstr(sy_lasterr(), "no/such/dir/x.png"));
    assert_int_equal(sy_plot_write(L, tpath("x.gif"), NULL, NULL), -1);
    assert_non_null(strstr(sy_lasterr(), "x.gif"));
    sy_plot_opts bad = {.width = 10, .height = 10};
    assert_int_equal(sy_plot_write(L, tpath("y.png"), &bad, NULL), -1);
    assert_non_null(strstr(sy_lasterr(), "10x10"));
    assert_int_not_equal(stat(tpath("y.png"), &st), 0);
    sy_runlog *E = parse_str("garbage\n");
    assert_non_null(E);
    assert_int_equal(sy_plot_write(E, tpath("z.png"), NULL, NULL), -1);
    assert_non_null(strstr(sy_lasterr(), "no usable lines"));
    sy_runlog_destroy(&E);
    sy_runlog_destroy(&L);
}

/* Logs that once made plotting code divide by zero or loop: one point, a flat curve,
 * huge values, steps going back, markers crowding, no loss at all. */
static void test_render_odd_logs(void **state) {
    (void)state;
    const char *logs[] = {
        "{\"step\":7,\"ce\":2.5}\n",
        "{\"step\":1,\"ce\":2}\n{\"step\":2,\"ce\":2}\n{\"step\":3,\"ce\":2}\n",
        "{\"step\":1,\"ce\":1e300,\"tokens_per_s\":-1e300}\n{\"step\":1e18,\"ce\":-1e300}\n",
        "{\"step\":5,\"ce\":3}\n{\"step\":9,\"ce\":2.5}\n"
        "{\"step\":3,\"ce\":2.8,\"epoch\":5}\n{\"step\":7,\"epoch\":6}\n",
        "{\"step\":0,\"tokens_per_s\":10}\n{\"step\":1,\"workers\":1}\n{\"step\":2,\"workers\":2}\n"
        "{\"step\":3,\"workers\":1}\n{\"step\":4,\"workers\":2}\n{\"step\":5,\"workers\":1}\n"
        "{\"step\":6,\"workers\":2}\n{\"step\":7,\"workers\":1}\n{\"step\":8,\"workers\":2}\n",
    };
    size_t want_markers[] = {0, 0, 0, 1, 7};
    for (size_t k = 0; k < sizeof logs / sizeof logs[0]; k++) {
        sy_runlog *L = parse_str(logs[k]);
        assert_non_null(L);
        uint8_t *rgb;
        char *svg;
        size_t len;
        sy_plot_layout lay;
        sy_plot_opts o = {.width = 400, .height = 300};
        assert_int_equal(sy_plot_rgb(L, &o, &rgb, &lay), 0);
        assert_int_equal(lay.markers, want_markers[k]);
        assert_true(lay.xmax > lay.xmin && lay.loss.ymax > lay.loss.ymin && lay.tps.ymax > lay.tps.ymin);
        free(rgb);
        assert_int_equal(sy_plot_svg(L, NULL, &svg, &len, &lay), 0);
        assert_null(strstr(svg, "nan"));
        assert_null(strstr(svg, "inf"));
        free(svg);
        sy_runlog_destroy(&L);
    }
}

/* ------------------------------------------------------------------ the command */

/* Runs `switchyard ARGS` with stdout+stderr into out; returns the exit code. */
static int run_cli(const char *args, char *out, size_t outn) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/switchyard %s 2>&1", SY_BIN_DIR, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outn - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_cli(void **state) {
    (void)state;
    char out[8192], args[2048];
    struct stat st;
    run_cli("plot --help", out, sizeof out);
    assert_non_null(strstr(out, "usage: switchyard plot"));

    mkdir(tpath("run"), 0755);
    char text[4096];
    size_t o = 0;
    for (int s = 0; s <= 100; s += 10)
        o += (size_t)snprintf(text + o, sizeof text - o, "{\"step\":%d,\"ce\":%.2f,\"workers\":%d}\n", s,
                              4.0 - s * 0.02, s < 50 ? 2 : 1);
    o += (size_t)snprintf(text + o, sizeof text - o, "{broken\n");
    write_file(tpath("run/train_log.jsonl"), text, o);

    /* default output: the log's directory, loss.png */
    snprintf(args, sizeof args, "plot %s", tpath("run/train_log.jsonl"));
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_non_null(strstr(out, tpath("run/loss.png")));
    assert_non_null(strstr(out, "11 points, 1 marker"));
    assert_non_null(strstr(out, "train_log.jsonl:12")); /* the broken line, by number */
    assert_int_equal(stat(tpath("run/loss.png"), &st), 0);
    /* a directory stands for its log; SVG by extension */
    snprintf(args, sizeof args, "plot %s -o %s", tpath("run"), tpath("run/curves.svg"));
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_int_equal(stat(tpath("run/curves.svg"), &st), 0);

    /* errors: missing, empty, nothing usable, unwritable, bad extension, usage */
    snprintf(args, sizeof args, "plot %s", tpath("missing.jsonl"));
    assert_int_equal(run_cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "missing.jsonl"));
    write_file(tpath("empty.jsonl"), "", 0);
    snprintf(args, sizeof args, "plot %s", tpath("empty.jsonl"));
    assert_int_equal(run_cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "empty log"));
    write_file(tpath("junk.jsonl"), "junk\n{\"ce\":1}\n", 15);
    snprintf(args, sizeof args, "plot %s -o %s", tpath("junk.jsonl"), tpath("junk.png"));
    assert_int_equal(run_cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "no usable lines"));
    assert_int_not_equal(stat(tpath("junk.png"), &st), 0);
    snprintf(args, sizeof args, "plot %s -o %s", tpath("run"), tpath("nodir/x.png"));
    assert_int_equal(run_cli(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "nodir/x.png"));
    snprintf(args, sizeof args, "plot %s -o %s", tpath("run"), tpath("x.jpg"));
    assert_int_equal(run_cli(args, out, sizeof out), 2);
    assert_int_equal(run_cli("plot", out, sizeof out), 2);
    assert_non_null(strstr(out, "usage"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good_lines),
        cmocka_unit_test(test_parse_missing_null_types),
        cmocka_unit_test_setup_teardown(test_parse_malformed_skipped_counted, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_parse_long_lines, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_read_files, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_parse_mutations),
        cmocka_unit_test(test_svg),
        cmocka_unit_test(test_decoder_self_check),
        cmocka_unit_test(test_png),
        cmocka_unit_test(test_png_encoder_edges),
        cmocka_unit_test_setup_teardown(test_write_files, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_render_odd_logs),
        cmocka_unit_test_setup_teardown(test_cli, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
