/* png.c: 8-bit RGB pixels to a PNG file image: per-row filters chosen here, the
 * filtered rows compressed by zlib (deflate with zlib framing), chunks with zlib's
 * CRC-32. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "log.h"
#include "plot.h"

static void put_u32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Writes one chunk (length, type, data, CRC of type + data) at p; returns the bytes. */
static size_t put_chunk(uint8_t *p, const char type[4], const uint8_t *data, size_t n) {
    put_u32be(p, (uint32_t)n);
    memcpy(p + 4, type, 4);
    if (n)
        memcpy(p + 8, data, n);
    put_u32be(p + 8 + n, (uint32_t)crc32(0, p + 4, (uInt)(n + 4)));
    return 12 + n;
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Per row, the filter (none, sub, up, paeth) with the smallest sum of |signed
 * residuals|: the usual heuristic, it turns flat areas and repeated rows into zeros.
 * filt: height rows of 1 filter byte + stride bytes; cand: 4 * stride scratch. */
static void filter_rows(const uint8_t *rgb, size_t stride, int height, uint8_t *filt, uint8_t *cand) {
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
}

int sy_png_encode(const uint8_t *rgb, int width, int height, int stored, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > 100000 || height > 100000) {
        sy_seterr("png: bad image size %dx%d", width, height);
        return -1;
    }
    size_t stride = (size_t)width * 3, fl = (stride + 1) * height;
    uLongf zn = compressBound((uLong)fl);
    uint8_t *filt = malloc(fl), *cand = malloc(4 * stride), *z = malloc(zn), *png = NULL;
    if (!filt || !cand || !z)
        goto oom;
    filter_rows(rgb, stride, height, filt, cand);
    /* level 0: stored blocks (no compression), else zlib's best */
    int zrc = compress2(z, &zn, filt, (uLong)fl, stored ? Z_NO_COMPRESSION : Z_BEST_COMPRESSION);
    if (zrc == Z_MEM_ERROR)
        goto oom;
    if (zrc != Z_OK || zn > 0x7fffffffu) {
        sy_seterr("png: zlib could not compress a %dx%d image (%s)", width, height, zError(zrc));
        goto fail;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {0, 0, 0, 0, 0, 0, 0, 0, 8 /* bits per sample */, 2 /* RGB */, 0, 0, 0 /* no interlace */};
    put_u32be(ihdr, (uint32_t)width);
    put_u32be(ihdr + 4, (uint32_t)height);
    size_t n = 8 + (12 + 13) + (12 + zn) + 12;
    if (!(png = malloc(n)))
        goto oom;
    memcpy(png, sig, 8);
    size_t o = 8;
    o += put_chunk(png + o, "IHDR", ihdr, 13);
    o += put_chunk(png + o, "IDAT", z, zn);
    o += put_chunk(png + o, "IEND", NULL, 0);
    free(filt);
    free(cand);
    free(z);
    *out = png;
    *len = o;
    return 0;
oom:
    sy_seterr("png: out of memory encoding a %dx%d image", width, height);
fail:
    free(filt);
    free(cand);
    free(z);
    free(png);
    return -1;
}
