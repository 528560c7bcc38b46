/* png.c: 8-bit RGB pixels to a PNG file image: filters, zlib framing, stored or
 * LZ77 + fixed-Huffman deflate, CRC-32 and Adler-32. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "plot.h"

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint32_t bits; /* pending bits, LSB first as deflate packs them */
    int nbits;
    int oom;
} bytebuf;

static void bb_reserve(bytebuf *b, size_t more) {
    if (b->oom || b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->buf = p;
    b->cap = cap;
}

static void bb_put(bytebuf *b, const void *p, size_t n) {
    bb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void bb_u32be(bytebuf *b, uint32_t v) {
    uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    bb_put(b, q, 4);
}

static void bb_bits(bytebuf *b, uint32_t v, int n) {
    b->bits |= v << b->nbits;
    b->nbits += n;
    while (b->nbits >= 8) {
        uint8_t byte = (uint8_t)b->bits;
        bb_put(b, &byte, 1);
        b->bits >>= 8;
        b->nbits -= 8;
    }
}

static void bb_align(bytebuf *b) {
    if (b->nbits)
        bb_bits(b, 0, 8 - b->nbits);
}

/* Huffman codes are sent most significant bit first, inside an LSB-first bit stream. */
static void bb_huff(bytebuf *b, uint32_t code, int len) {
    uint32_t rev = 0;
    for (int i = 0; i < len; i++)
        rev |= ((code >> i) & 1u) << (len - 1 - i);
    bb_bits(b, rev, len);
}

/* Fixed literal/length code of RFC 1951 section 3.2.6. */
static void put_litlen(bytebuf *b, int sym) {
    if (sym < 144)
        bb_huff(b, 0x30 + sym, 8);
    else if (sym < 256)
        bb_huff(b, 0x190 + sym - 144, 9);
    else if (sym < 280)
        bb_huff(b, sym - 256, 7);
    else
        bb_huff(b, 0xc0 + sym - 280, 8);
}

/* RFC 1951 3.2.5: base value and extra bits of each length and distance code */
static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,    25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513,   769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bytebuf *b, int len, int dist) {
    int li = 28, di = 29;
    while (len_base[li] > len)
        li--;
    while (dist_base[di] > dist)
        di--;
    put_litlen(b, 257 + li);
    bb_bits(b, (uint32_t)(len - len_base[li]), len_extra[li]);
    bb_huff(b, (uint32_t)di, 5);
    bb_bits(b, (uint32_t)(dist - dist_base[di]), dist_extra[di]);
}

#define LZ_WINDOW 32768
#define LZ_HASH_BITS 15
#define LZ_MAX_CHAIN 48

/* One fixed-Huffman block with greedy LZ77 over hash chains: plots are mostly flat
 * colour, so this gets most of what a full deflate would at a fraction of the code. */
static int deflate_fixed(bytebuf *b, const uint8_t *d, size_t n) {
    int64_t *head = malloc(sizeof(int64_t) << LZ_HASH_BITS), *prev = malloc(sizeof(int64_t) * LZ_WINDOW);
    if (!head || !prev) {
        free(head);
        free(prev);
        return -1;
    }
    for (size_t i = 0; i < (1u << LZ_HASH_BITS); i++)
        head[i] = -1;
    bb_bits(b, 1, 1); /* BFINAL */
    bb_bits(b, 1, 2); /* BTYPE 01: fixed Huffman */
    size_t i = 0;
#define LZ_HASH(p) ((((uint32_t)(p)[0] << 10) ^ ((uint32_t)(p)[1] << 5) ^ (p)[2]) & ((1u << LZ_HASH_BITS) - 1))
#define LZ_INSERT(pos)                                                                                                 \
    do {                                                                                                               \
        uint32_t h_ = LZ_HASH(d + (pos));                                                                             \
        prev[(pos) % LZ_WINDOW] = head[h_];                                                                            \
        head[h_] = (int64_t)(pos);                                                                                     \
    } while (0)
    while (i < n) {
        size_t best = 0, best_dist = 0;
        if (i + 3 <= n) {
            int64_t cand = head[LZ_HASH(d + i)];
            size_t maxlen = n - i < 258 ? n - i : 258;
            for (int chain = 0; cand >= 0 && i - (size_t)cand <= LZ_WINDOW && chain < LZ_MAX_CHAIN; chain++) {
                const uint8_t *a = d + cand, *c = d + i;
                size_t l = 0;
                while (l < maxlen && a[l] == c[l])
                    l++;
                if (l > best) {
                    best = l;
                    best_dist = i - (size_t)cand;
                    if (l == maxlen)
                        break;
                }
                int64_t nx = prev[cand % LZ_WINDOW];
                if (nx >= cand) /* the slot was reused by a newer position: chain ends */
                    break;
                cand = nx;
            }
            LZ_INSERT(i);
        }
        if (best >= 3) {
            put_match(b, (int)best, (int)best_dist);
            for (size_t k = 1; k < best; k++)
                if (i + k + 3 <= n)
                    LZ_INSERT(i + k);
            i += best;
        } else {
            put_litlen(b, d[i]);
            i++;
        }
    }
#undef LZ_INSERT
#undef LZ_HASH
    put_litlen(b, 256); /* end of block */
    bb_align(b);
    free(head);
    free(prev);
    return 0;
}

static void deflate_stored(bytebuf *b, const uint8_t *d, size_t n) {
    size_t i = 0;
    do {
        size_t k = n - i > 65535 ? 65535 : n - i;
        uint8_t hdr[5] = {(uint8_t)(i + k == n), (uint8_t)k, (uint8_t)(k >> 8), (uint8_t)~k, (uint8_t)(~k >> 8)};
        bb_put(b, hdr, 5); /* BFINAL, BTYPE 00, padding to the byte; LEN, NLEN */
        bb_put(b, d + i, k);
        i += k;
    } while (i < n);
}

static void crc_table_make(uint32_t t[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
}

static uint32_t crc32_of(const uint32_t t[256], const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = t[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static uint32_t adler32_of(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    while (n) {
        size_t k = n < 5552 ? n : 5552; /* largest run before b can overflow 32 bits */
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return (b << 16) | a;
}

static void png_chunk(bytebuf *b, const uint32_t crc_t[256], const char type[4], const uint8_t *data, size_t n) {
    bb_u32be(b, (uint32_t)n);
    size_t at = b->len;
    bb_put(b, type, 4);
    if (n)
        bb_put(b, data, n);
    if (!b->oom)
        bb_u32be(b, crc32_of(crc_t, b->buf + at, n + 4));
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

int sy_png_encode(const uint8_t *rgb, int width, int height, int stored, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > 100000 || height > 100000) {
        sy_seterr("png: bad image size %dx%d", width, height);
        return -1;
    }
    size_t stride = (size_t)width * 3, fl = (stride + 1) * height;
    uint8_t *filt = malloc(fl), *cand = malloc(4 * stride);
    bytebuf z = {0}, png = {0};
    uint32_t crc_t[256];
    crc_table_make(crc_t);
    if (!filt || !cand)
        goto oom;
    /* per row, the filter (none, sub, up, paeth) with the smallest sum of |signed
     * residuals|: the usual heuristic, it turns flat areas and repeated rows into zeros */
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
    uint8_t zhdr[2] = {0x78, 0x01}; /* deflate, 32K window; (0x7801 % 31) == 0 */
    bb_put(&z, zhdr, 2);
    if (stored)
        deflate_stored(&z, filt, fl);
    else if (deflate_fixed(&z, filt, fl))
        goto oom;
    bb_u32be(&z, adler32_of(filt, fl));
    if (z.oom)
        goto oom;

    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {(uint8_t)(width >> 24), (uint8_t)(width >> 16), (uint8_t)(width >> 8), (uint8_t)width,
                        (uint8_t)(height >> 24), (uint8_t)(height >> 16), (uint8_t)(height >> 8), (uint8_t)height,
                        8 /* bits per sample */, 2 /* RGB */, 0, 0, 0 /* no interlace */};
    bb_put(&png, sig, 8);
    png_chunk(&png, crc_t, "IHDR", ihdr, 13);
    png_chunk(&png, crc_t, "IDAT", z.buf, z.len);
    png_chunk(&png, crc_t, "IEND", NULL, 0);
    if (png.oom)
        goto oom;
    free(filt);
    free(cand);
    free(z.buf);
    *out = png.buf;
    *len = png.len;
    return 0;
oom:
    free(filt);
    free(cand);
    free(z.buf);
    free(png.buf);
    sy_seterr("png: out of memory encoding a %dx%d image", width, height);
    return -1;
}
