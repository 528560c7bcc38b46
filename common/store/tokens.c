/* tokens.c: token files (SYTOK1, data.h): the content hash that checksums them, and
 * loading one with every field checked. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "log.h"
#include "rng.h"
#include "tokfile.h"

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* Four independent lanes (xxHash64's structure) so the loop runs near memory speed:
 * the whole file is hashed on every load. */
uint64_t sy_data_hash(const void *p, size_t n, uint64_t seed) {
    const uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull;
    const uint8_t *b = p;
    size_t i = 0;
    uint64_t h;
    if (n >= 32) {
        uint64_t a0 = seed + P1 + P2, a1 = seed + P2, a2 = seed, a3 = seed - P1;
        for (; i + 32 <= n; i += 32) {
            a0 = rotl64(a0 + load64(b + i) * P2, 31) * P1;
            a1 = rotl64(a1 + load64(b + i + 8) * P2, 31) * P1;
            a2 = rotl64(a2 + load64(b + i + 16) * P2, 31) * P1;
            a3 = rotl64(a3 + load64(b + i + 24) * P2, 31) * P1;
        }
        h = rotl64(a0, 1) + rotl64(a1, 7) + rotl64(a2, 12) + rotl64(a3, 18);
        h = (h ^ (rotl64(a0 * P2, 31) * P1)) * P1 + P3;
        h = (h ^ (rotl64(a1 * P2, 31) * P1)) * P1 + P3;
        h = (h ^ (rotl64(a2 * P2, 31) * P1)) * P1 + P3;
        h = (h ^ (rotl64(a3 * P2, 31) * P1)) * P1 + P3;
    } else {
        h = seed + P3;
    }
    h += (uint64_t)n;
    for (; i + 8 <= n; i += 8)
        h = rotl64(h ^ (rotl64(load64(b + i) * P2, 31) * P1), 27) * P1 + P3;
    for (; i < n; i++)
        h = rotl64(h ^ (b[i] * P3), 11) * P1;
    return sy_mix64(h);
}


int sy_tokens_lang_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= SY_LANG_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return 0;
    }
    return 1;
}

sy_tokens *sy_tokens_load(const char *path) {
    sy_tokens *ds = calloc(1, sizeof *ds);
    if (!ds) {
        sy_seterr("%s: out of memory", path);
        return NULL;
    }
    ds->path = strdup(path);
    size_t size = 0;
    if (!ds->path || read_whole(path, &ds->file, &size) != 0)
        goto fail;
    const uint8_t *h = ds->file;
    if (size < SY_TOKFILE_HEADER) {
        sy_seterr("%s: truncated: %zu bytes, shorter than the %d-byte header%s", path, size, SY_TOKFILE_HEADER,
                  size == 0 ? " (empty file)" : "");
        goto fail;
    }
    if (memcmp(h, SY_TOKFILE_MAGIC, 6) != 0) {
        sy_seterr("%s: not a switchyard token file (wrong magic, expected \"%s\")", path, SY_TOKFILE_MAGIC);
        goto fail;
    }
    unsigned version = get16(h + 6);
    if (version != SY_TOKFILE_VERSION) {
        sy_seterr("%s: unsupported token file version %u (this build reads %d); run `switchyard prepare --force`",
                  path, version, SY_TOKFILE_VERSION);
        goto fail;
    }
    uint32_t hsize = get32(h + 8), n_langs = get32(h + 12);
    uint64_t n_docs = get64(h + 16), n_bytes = get64(h + 24);
    if (hsize != SY_TOKFILE_HEADER) {
        sy_seterr("%s: bad header size %u (expected %d)", path, hsize, SY_TOKFILE_HEADER);
        goto fail;
    }
    if (n_langs < 1 || n_langs > SY_MAX_LANGS) {
        sy_seterr("%s: bad language count %u (1..%d)", path, n_langs, SY_MAX_LANGS);
        goto fail;
    }
    /* Bounded so the size arithmetic below cannot overflow. */
    if (n_docs > (UINT64_C(1) << 48) || n_bytes > (UINT64_C(1) << 56)) {
        sy_seterr("%s: corrupt header (absurd counts: %llu documents, %llu bytes)", path, (unsigned long long)n_docs,
                  (unsigned long long)n_bytes);
        goto fail;
    }
    uint64_t doc_off = SY_TOKFILE_HEADER + 16ull * n_langs;
    uint64_t data_off = doc_off + 16ull * n_docs;
    uint64_t expect = data_off + n_bytes;
    if ((uint64_t)size < expect) {
        sy_seterr("%s: truncated: %zu bytes, header promises %llu (%llu documents, %llu data bytes)", path, size,
                  (unsigned long long)expect, (unsigned long long)n_docs, (unsigned long long)n_bytes);
        goto fail;
    }
    if ((uint64_t)size > expect) {
        sy_seterr("%s: corrupt: %llu unexpected bytes after the data", path,
                  (unsigned long long)((uint64_t)size - expect));
        goto fail;
    }
    uint64_t stored = get64(h + 40);
    put64(ds->file + 40, 0);
    uint64_t sum = sy_data_hash(ds->file, size, 0);
    put64(ds->file + 40, stored);
    if (sum != stored) {
        sy_seterr("%s: checksum mismatch: the file is corrupt (stored %016llx, computed %016llx)", path,
                  (unsigned long long)stored, (unsigned long long)sum);
        goto fail;
    }
    ds->n_langs = (int)n_langs;
    for (uint32_t i = 0; i < n_langs; i++) {
        const uint8_t *e = h + SY_TOKFILE_HEADER + 16 * i;
        if (!memchr(e, 0, SY_LANG_NAME_MAX)) {
            sy_seterr("%s: language %u: name not NUL-terminated", path, i);
            goto fail;
        }
        memcpy(ds->lang_names[i], e, SY_LANG_NAME_MAX);
        if (!sy_tokens_lang_name_ok(ds->lang_names[i])) {
            sy_seterr("%s: language %u: bad name", path, i);
            goto fail;
        }
    }
    ds->n_docs = (int64_t)n_docs;
    ds->docs = malloc((n_docs ? n_docs : 1) * sizeof *ds->docs);
    if (!ds->docs) {
        sy_seterr("%s: out of memory for %llu documents", path, (unsigned long long)n_docs);
        goto fail;
    }
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n_docs; i++) {
        const uint8_t *e = h + doc_off + 16 * i;
        sy_doc *d = &ds->docs[i];
        d->offset = get64(e);
        d->length = get32(e + 8);
        d->lang = get16(e + 12);
        if (d->offset != pos || d->length == 0 || d->offset + d->length > n_bytes) {
            sy_seterr("%s: document %llu: bad extent (offset %llu, length %u; expected offset %llu)", path,
                      (unsigned long long)i, (unsigned long long)d->offset, d->length, (unsigned long long)pos);
            goto fail;
        }
        if (d->lang >= n_langs) {
            sy_seterr("%s: document %llu: language id %u out of range (%u languages)", path, (unsigned long long)i,
                      d->lang, n_langs);
            goto fail;
        }
        pos += d->length;
    }
    if (pos != n_bytes) {
        sy_seterr("%s: documents cover %llu bytes, header says %llu", path, (unsigned long long)pos,
                  (unsigned long long)n_bytes);
        goto fail;
    }
    ds->n_bytes = (int64_t)n_bytes;
    ds->bytes = ds->file + data_off;
    ds->fingerprint = get64(h + 32);
    ds->checksum = get64(h + 40);
    ds->part = (int)get32(h + 48);
    return ds;
fail:
    sy_tokens_destroy(&ds);
    return NULL;
}

int sy_tokens_peek_hash(const char *path, uint64_t *hash) {
    uint8_t h[SY_TOKFILE_HEADER];
    FILE *f = fopen(path, "rb");
    if (!f) {
        sy_seterr("%s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    if (n < sizeof h || memcmp(h, SY_TOKFILE_MAGIC, 6) != 0) {
        sy_seterr("%s: not a switchyard token file (%s)", path, n < sizeof h ? "shorter than a header" : "wrong magic");
        return -1;
    }
    *hash = get64(h + 40);
    return 0;
}

void sy_tokens_destroy(sy_tokens **ds) {
    if (!ds || !*ds)
        return;
    free((*ds)->path);
    free((*ds)->docs);
    free((*ds)->file);
    free(*ds);
    *ds = NULL;
}

const char *sy_tokens_lang_name(const sy_tokens *ds, int id) {
    return (id >= 0 && id < ds->n_langs) ? ds->lang_names[id] : "?";
}

int sy_tokens_lang_id(const sy_tokens *ds, const char *name) {
    for (int i = 0; i < ds->n_langs; i++)
        if (!strcmp(ds->lang_names[i], name))
            return i;
    return -1;
}

int64_t sy_tokens_doc_at(const sy_tokens *ds, int64_t pos) {
    int64_t lo = 0, hi = ds->n_docs - 1;
    while (lo < hi) { /* last doc with offset <= pos */
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (ds->docs[mid].offset <= (uint64_t)pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void sy_tokens_lang_stats(const sy_tokens *ds, int64_t *docs, int64_t *bytes) {
    for (int l = 0; l < ds->n_langs; l++) {
        if (docs)
            docs[l] = 0;
        if (bytes)
            bytes[l] = 0;
    }
    for (int64_t i = 0; i < ds->n_docs; i++) {
        if (docs)
            docs[ds->docs[i].lang]++;
        if (bytes)
            bytes[ds->docs[i].lang] += ds->docs[i].length;
    }
}

double sy_tokens_entropy(const sy_tokens *ds) {
    if (ds->n_bytes <= 0)
        return 0.0;
    int64_t count[256] = {0};
    for (int64_t i = 0; i < ds->n_bytes; i++)
        count[ds->bytes[i]]++;
    double H = 0.0, N = (double)ds->n_bytes;
    for (int b = 0; b < 256; b++)
        if (count[b]) {
            double p = (double)count[b] / N;
            H -= p * log(p);
        }
    return H;
}
