/* batch.c: training and evaluation batches drawn from a token file as pure functions
 * of (seed, step, row) and (batch index, row). */
#include "data.h"

#include <stdint.h>
#include <string.h>

#include "log.h"
#include "rng.h"

#define DATA_BATCH_TAG 0x42415443484553ull /* "BATCHES": what the batch hash draws */

int64_t sy_batch_pos(const sy_tokens *ds, uint64_t seed, int64_t step, int64_t r, int T) {
    if (T < 1 || ds->n_bytes < (int64_t)T + 1)
        return -1;
    uint64_t range = (uint64_t)(ds->n_bytes - T); /* starts 0 .. n_bytes-T-1 */
    uint64_t h = sy_hash4(seed, DATA_BATCH_TAG, (uint64_t)step, (uint64_t)r);
    /* Multiply-high maps the hash onto the range without modulo bias worth speaking of. */
    return (int64_t)(((unsigned __int128)h * range) >> 64);
}

/* Language ids of the T bytes starting at pos. */
static void fill_lang(const sy_tokens *ds, int64_t pos, int T, int16_t *lang) {
    int64_t d = sy_tokens_doc_at(ds, pos);
    uint64_t end = ds->docs[d].offset + ds->docs[d].length;
    for (int t = 0; t < T; t++) {
        while ((uint64_t)(pos + t) >= end && d + 1 < ds->n_docs) {
            d++;
            end = ds->docs[d].offset + ds->docs[d].length;
        }
        lang[t] = (int16_t)ds->docs[d].lang;
    }
}

static int check_window(const sy_tokens *ds, int nrows, int T) {
    if (T < 1 || nrows < 0) {
        sy_seterr("%s: bad batch shape (%d rows, T=%d)", ds->path, nrows, T);
        return -1;
    }
    if (ds->n_bytes < (int64_t)T + 1) {
        sy_seterr("%s: only %lld bytes of data, a window needs T+1 = %d", ds->path, (long long)ds->n_bytes, T + 1);
        return -1;
    }
    return 0;
}

int sy_batch_fill(const sy_tokens *ds, uint64_t seed, int64_t step, int row0, int nrows, int T, int32_t *out,
                  int16_t *lang) {
    if (check_window(ds, nrows, T) != 0)
        return -1;
    if (row0 < 0) {
        sy_seterr("%s: negative batch row %d", ds->path, row0);
        return -1;
    }
    for (int i = 0; i < nrows; i++) {
        int64_t pos = sy_batch_pos(ds, seed, step, (int64_t)row0 + i, T);
        int32_t *o = out + (size_t)i * (size_t)(T + 1);
        const uint8_t *src = ds->bytes + pos;
        for (int t = 0; t <= T; t++)
            o[t] = src[t];
        if (lang)
            fill_lang(ds, pos, T, lang + (size_t)i * (size_t)T);
    }
    return 0;
}

int64_t sy_eval_windows(const sy_tokens *ds, int T) {
    if (T < 1 || ds->n_bytes < (int64_t)T + 1)
        return 0;
    return (ds->n_bytes - 1) / T;
}

int64_t sy_eval_batches(const sy_tokens *ds, int nrows, int T) {
    int64_t W = sy_eval_windows(ds, T);
    if (nrows < 1 || W == 0)
        return 0;
    return (W + nrows - 1) / nrows;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Step between consecutive evaluation windows: the odd number nearest W / golden ratio
 * that is coprime with W, so j -> j * stride mod W visits every window once and any
 * prefix of the order (a few eval batches) is spread over the whole stream. */
int64_t sy_eval_stride(int64_t W) {
    if (W <= 2)
        return 1;
    int64_t s = (int64_t)((double)W * 0.6180339887498949) | 1;
    while (gcd64(s, W) != 1)
        s += 2;
    return s;
}

static int64_t eval_start(const sy_tokens *ds, int batch_index, int nrows, int i, int T) {
    int64_t W = sy_eval_windows(ds, T);
    int64_t j = ((int64_t)batch_index * nrows + i) % W;
    return (int64_t)(((unsigned __int128)j * (uint64_t)sy_eval_stride(W)) % (uint64_t)W) * T;
}

int sy_batch_eval(const sy_tokens *ds, int batch_index, int nrows, int T, int32_t *out) {
    if (check_window(ds, nrows, T) != 0)
        return -1;
    if (batch_index < 0) {
        sy_seterr("%s: negative eval batch index %d", ds->path, batch_index);
        return -1;
    }
    for (int i = 0; i < nrows; i++) {
        const uint8_t *src = ds->bytes + eval_start(ds, batch_index, nrows, i, T);
        int32_t *o = out + (size_t)i * (size_t)(T + 1);
        for (int t = 0; t <= T; t++)
            o[t] = src[t];
    }
    return 0;
}

int sy_batch_eval_lang(const sy_tokens *ds, int batch_index, int nrows, int T, int16_t *lang) {
    if (check_window(ds, nrows, T) != 0)
        return -1;
    if (batch_index < 0) {
        sy_seterr("%s: negative eval batch index %d", ds->path, batch_index);
        return -1;
    }
    for (int i = 0; i < nrows; i++)
        fill_lang(ds, eval_start(ds, batch_index, nrows, i, T), T, lang + (size_t)i * (size_t)T);
    return 0;
}
