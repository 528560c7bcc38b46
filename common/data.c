/* data.c: token files, the corpus builder, `prepare`, and batch drawing. Format and
 * rules are documented in data.h. */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"
#include "rng.h"

#define DATA_BATCH_TAG 0x42415443484553ull /* "BATCHES": what the batch hash draws */

/* ------------------------------------------------------------------ bytes, hashing */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

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

int sy_utf8_valid(const void *p, size_t n) {
    const uint8_t *s = p;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < (size_t)len)
            return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* ------------------------------------------------------------------ files */

/* Reads a whole file into a malloc'd buffer (plus one spare NUL byte). */
static int read_whole(const char *path, uint8_t **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sy_seterr("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        sy_seterr("%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        sy_seterr("%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        sy_seterr("%s: out of memory (%zu bytes)", path, cap);
        close(fd);
        return -1;
    }
    for (;;) {
        if (n + 1 == cap) {
            /* Full at the size fstat gave: probe for EOF, grow only if the file grew. */
            uint8_t probe[4096];
            ssize_t r = read(fd, probe, sizeof probe);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                sy_seterr("%s: read error: %s", path, strerror(errno));
                goto fail;
            }
            if (r == 0)
                break;
            uint8_t *nb = realloc(buf, cap * 2 + (size_t)r);
            if (!nb) {
                sy_seterr("%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap = cap * 2 + (size_t)r;
            memcpy(buf + n, probe, (size_t)r);
            n += (size_t)r;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            sy_seterr("%s: read error: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *n_out = n;
    return 0;
fail:
    free(buf);
    close(fd);
    return -1;
}

/* Writes p[0..n) to path via path.tmp.PID, fsync, rename, fsync of the directory: a crash
 * leaves either the old file or the new one, never a torn one. */
static int write_atomic(const char *path, const void *p, size_t n) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sy_seterr("%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    const uint8_t *b = p;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, b + done, n - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            sy_seterr("%s: write error: %s", tmp, strerror(errno));
            goto fail;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        sy_seterr("%s: fsync: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        sy_seterr("%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        sy_seterr("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        goto fail;
    }
    /* Make the rename itself durable. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        sy_seterr("%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                sy_seterr("%s: cannot create directory: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == 0)
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        sy_seterr("%s: not a directory", path);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ token files: reading */

static int lang_name_ok(const char *s) {
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
        if (!lang_name_ok(ds->lang_names[i])) {
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

/* ------------------------------------------------------------------ batches */

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

/* ------------------------------------------------------------------ corpus builder */

struct sy_corpus {
    uint8_t *bytes;
    size_t n, cap;
    sy_doc *docs;
    int64_t n_docs, cap_docs;
    int n_langs;
    char lang_names[SY_MAX_LANGS][SY_LANG_NAME_MAX];
};

sy_corpus *sy_corpus_new(void) {
    sy_corpus *c = calloc(1, sizeof *c);
    if (!c)
        sy_seterr("corpus: out of memory");
    return c;
}

void sy_corpus_destroy(sy_corpus **c) {
    if (!c || !*c)
        return;
    free((*c)->bytes);
    free((*c)->docs);
    free(*c);
    *c = NULL;
}

int sy_corpus_lang(sy_corpus *c, const char *name) {
    if (!name || !lang_name_ok(name)) {
        sy_seterr("language name \"%s\": want 1..%d characters of A-Z a-z 0-9 _ - .", name ? name : "(null)",
                  SY_LANG_NAME_MAX - 1);
        return -1;
    }
    for (int i = 0; i < c->n_langs; i++)
        if (!strcmp(c->lang_names[i], name))
            return i;
    if (c->n_langs >= SY_MAX_LANGS) {
        sy_seterr("language \"%s\": too many languages (at most %d)", name, SY_MAX_LANGS);
        return -1;
    }
    snprintf(c->lang_names[c->n_langs], SY_LANG_NAME_MAX, "%s", name);
    return c->n_langs++;
}

static int reserve_bytes(sy_corpus *c, size_t more) {
    if (c->n + more <= c->cap)
        return 0;
    size_t cap = c->cap ? c->cap : 1 << 16;
    while (cap < c->n + more)
        cap *= 2;
    uint8_t *nb = realloc(c->bytes, cap);
    if (!nb) {
        sy_seterr("corpus: out of memory (%zu bytes)", cap);
        return -1;
    }
    c->bytes = nb;
    c->cap = cap;
    return 0;
}

/* Registers bytes [start, c->n) as one document. */
static int commit_doc(sy_corpus *c, size_t start, int lang) {
    if (c->n - start > UINT32_MAX) {
        sy_seterr("corpus: a document of %zu bytes is over the 4 GiB limit", c->n - start);
        c->n = start;
        return -1;
    }
    if (c->n_docs == c->cap_docs) {
        int64_t cap = c->cap_docs ? c->cap_docs * 2 : 1024;
        sy_doc *nd = realloc(c->docs, (size_t)cap * sizeof *nd);
        if (!nd) {
            sy_seterr("corpus: out of memory");
            c->n = start;
            return -1;
        }
        c->docs = nd;
        c->cap_docs = cap;
    }
    c->docs[c->n_docs++] = (sy_doc){.offset = start, .length = (uint32_t)(c->n - start), .lang = (uint16_t)lang};
    return 0;
}

static int lang_ok(const sy_corpus *c, int lang) {
    if (lang < 0 || lang >= c->n_langs) {
        sy_seterr("corpus: language id %d not registered (%d languages)", lang, c->n_langs);
        return 0;
    }
    return 1;
}

int sy_corpus_add_doc(sy_corpus *c, const void *text, size_t n, int lang) {
    if (!lang_ok(c, lang))
        return -1;
    if (n == 0)
        return 0;
    if (n > UINT32_MAX) {
        sy_seterr("corpus: a document of %zu bytes is over the 4 GiB limit", n);
        return -1;
    }
    if (reserve_bytes(c, n) != 0)
        return -1;
    size_t start = c->n;
    memcpy(c->bytes + c->n, text, n);
    c->n += n;
    return commit_doc(c, start, lang) == 0 ? 1 : -1;
}

/* A fortune separator: a line of just "%" (a trailing CR tolerated). */
static int is_sep_line(const uint8_t *s, size_t len) {
    return (len == 1 && s[0] == '%') || (len == 2 && s[0] == '%' && s[1] == '\r');
}

static int all_space(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n' || s[i] == '\f' || s[i] == '\v'))
            return 0;
    return 1;
}

/* Ends the fortune in [start, c->n): dropped if blank, else given a final newline. */
static int flush_fortune(sy_corpus *c, size_t start, int lang, int64_t *added) {
    if (all_space(c->bytes + start, c->n - start)) {
        c->n = start;
        return 0;
    }
    if (c->bytes[c->n - 1] != '\n')
        c->bytes[c->n++] = '\n'; /* room reserved by the caller */
    if (commit_doc(c, start, lang) != 0)
        return -1;
    (*added)++;
    return 0;
}

int64_t sy_corpus_add_fortunes(sy_corpus *c, const void *text, size_t n, int lang) {
    if (!lang_ok(c, lang))
        return -1;
    /* The output is never longer than the input plus one newline: every fortune but the
     * last already ends in the newline before its separator. */
    if (reserve_bytes(c, n + 2) != 0)
        return -1;
    const uint8_t *s = text;
    int64_t added = 0;
    size_t start = c->n, i = 0;
    while (i < n) {
        const uint8_t *nl = memchr(s + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - s) : n; /* line is s[i..le) */
        size_t len = le - i;
        if (is_sep_line(s + i, len)) {
            if (flush_fortune(c, start, lang, &added) != 0)
                return -1;
            start = c->n;
        } else {
            size_t keep = len;
            if (nl && keep > 0 && s[le - 1] == '\r')
                keep--; /* CRLF -> LF */
            memcpy(c->bytes + c->n, s + i, keep);
            c->n += keep;
            if (nl)
                c->bytes[c->n++] = '\n';
        }
        i = nl ? le + 1 : n;
    }
    if (flush_fortune(c, start, lang, &added) != 0)
        return -1;
    return added;
}

static int has_sep_line(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t *nl = memchr(s + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - s) : n;
        if (is_sep_line(s + i, le - i))
            return 1;
        i = le + 1;
    }
    return 0;
}

/* Converts buf from `enc` to UTF-8 with iconv(3); replaces *buf on success. */
static int to_utf8(const char *path, const char *enc, uint8_t **buf, size_t *n) {
    iconv_t cd = iconv_open("UTF-8", enc);
    if (cd == (iconv_t)-1) {
        sy_seterr("%s: cannot convert from encoding \"%s\": %s", path, enc, strerror(errno));
        return -1;
    }
    size_t cap = *n * 2 + 16, done = 0;
    uint8_t *out = malloc(cap);
    if (!out) {
        sy_seterr("%s: out of memory", path);
        iconv_close(cd);
        return -1;
    }
    char *in = (char *)*buf;
    size_t inleft = *n;
    int flushing = 0; /* after the input: emit any pending shift sequence */
    for (;;) {
        char *op = (char *)out + done;
        size_t outleft = cap - done;
        size_t r = flushing ? iconv(cd, NULL, NULL, &op, &outleft) : iconv(cd, &in, &inleft, &op, &outleft);
        int err = errno;
        done = (size_t)(op - (char *)out);
        if (r != (size_t)-1) {
            if (flushing)
                break;
            flushing = 1;
            continue;
        }
        if (err == E2BIG) {
            uint8_t *nb = realloc(out, cap * 2);
            if (!nb) {
                sy_seterr("%s: out of memory", path);
                goto fail;
            }
            out = nb;
            cap *= 2;
            continue;
        }
        sy_seterr("%s: byte %zu is not valid %s%s", path, (size_t)(in - (char *)*buf), enc,
                  err == EINVAL ? " (incomplete sequence at the end)" : "");
        goto fail;
    }
    iconv_close(cd);
    free(*buf);
    *buf = out;
    *n = done;
    return 0;
fail:
    free(out);
    iconv_close(cd);
    return -1;
}

int64_t sy_corpus_add_file(sy_corpus *c, const char *path, int lang, sy_split_mode split, const char *encoding) {
    if (!lang_ok(c, lang)) {
        sy_err_prefix("%s", path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t n = 0;
    if (read_whole(path, &buf, &n) != 0)
        return -1;
    if (encoding && to_utf8(path, encoding, &buf, &n) != 0) {
        free(buf);
        return -1;
    }
    if (split == SY_SPLIT_AUTO)
        split = (has_sep_line(buf, n) && !memchr(buf, 0, n)) ? SY_SPLIT_FORTUNE : SY_SPLIT_FILE;
    int64_t r = split == SY_SPLIT_FORTUNE ? sy_corpus_add_fortunes(c, buf, n, lang)
                                          : sy_corpus_add_doc(c, buf, n, lang);
    free(buf);
    if (r < 0)
        sy_err_prefix("%s", path);
    return r;
}

int64_t sy_corpus_n_docs(const sy_corpus *c) { return c->n_docs; }

const uint8_t *sy_corpus_doc(const sy_corpus *c, int64_t i, size_t *len, int *lang) {
    if (i < 0 || i >= c->n_docs)
        return NULL;
    if (len)
        *len = c->docs[i].length;
    if (lang)
        *lang = c->docs[i].lang;
    return c->bytes + c->docs[i].offset;
}

static double doc_score(const void *text, size_t n) {
    return (double)(sy_data_hash(text, n, SY_SPLIT_SEED) >> 11) * (1.0 / 9007199254740992.0);
}

int sy_doc_is_val(const void *text, size_t n, double val_fraction) { return doc_score(text, n) < val_fraction; }

/* is_val[i] for every document, with the degenerate-case fix-up of data.h. */
static uint8_t *split_docs(const sy_corpus *c, double frac, int warn) {
    uint8_t *v = malloc(c->n_docs ? (size_t)c->n_docs : 1);
    if (!v) {
        sy_seterr("corpus: out of memory");
        return NULL;
    }
    int64_t n_val = 0, lo = -1, hi = -1;
    double slo = 2, shi = -1;
    for (int64_t i = 0; i < c->n_docs; i++) {
        double s = doc_score(c->bytes + c->docs[i].offset, c->docs[i].length);
        v[i] = s < frac;
        n_val += v[i];
        if (s < slo)
            slo = s, lo = i;
        if (s > shi)
            shi = s, hi = i;
    }
    if (frac > 0 && c->n_docs >= 2) {
        if (n_val == 0) {
            v[lo] = 1;
            if (warn)
                sy_warn("no document fell into validation at fraction %g; holding out one document", frac);
        } else if (n_val == c->n_docs) {
            v[hi] = 0;
            if (warn)
                sy_warn("every document fell into validation at fraction %g; keeping one for training", frac);
        }
    }
    return v;
}

int sy_corpus_write(const sy_corpus *c, const char *path, int part, double val_fraction, uint64_t fingerprint) {
    if (c->n_langs < 1) {
        sy_seterr("%s: the corpus has no language", path);
        return -1;
    }
    uint8_t *isval = NULL, *img = NULL;
    if (part != SY_PART_ALL && !(isval = split_docs(c, val_fraction, part == SY_PART_TRAIN)))
        return -1;
    uint64_t nd = 0, nb = 0;
    for (int64_t i = 0; i < c->n_docs; i++)
        if (part == SY_PART_ALL || isval[i] == (part == SY_PART_VAL))
            nd++, nb += c->docs[i].length;
    size_t doc_off = SY_TOKFILE_HEADER + 16 * (size_t)c->n_langs;
    size_t data_off = doc_off + 16 * (size_t)nd;
    size_t total = data_off + (size_t)nb;
    img = calloc(1, total);
    if (!img) {
        sy_seterr("%s: out of memory (%zu bytes)", path, total);
        free(isval);
        return -1;
    }
    memcpy(img, SY_TOKFILE_MAGIC, 6);
    put16(img + 6, SY_TOKFILE_VERSION);
    put32(img + 8, SY_TOKFILE_HEADER);
    put32(img + 12, (uint32_t)c->n_langs);
    put64(img + 16, nd);
    put64(img + 24, nb);
    put64(img + 32, fingerprint);
    put32(img + 48, (uint32_t)part);
    for (int l = 0; l < c->n_langs; l++)
        memcpy(img + SY_TOKFILE_HEADER + 16 * l, c->lang_names[l], SY_LANG_NAME_MAX);
    uint64_t pos = 0, k = 0;
    for (int64_t i = 0; i < c->n_docs; i++) {
        if (!(part == SY_PART_ALL || isval[i] == (part == SY_PART_VAL)))
            continue;
        uint8_t *e = img + doc_off + 16 * k;
        put64(e, pos);
        put32(e + 8, c->docs[i].length);
        put16(e + 12, c->docs[i].lang);
        memcpy(img + data_off + pos, c->bytes + c->docs[i].offset, c->docs[i].length);
        pos += c->docs[i].length;
        k++;
    }
    put64(img + 40, sy_data_hash(img, total, 0));
    int rc = write_atomic(path, img, total);
    free(img);
    free(isval);
    return rc;
}

/* ------------------------------------------------------------------ prepare */

typedef struct {
    char *path;
    int lang;               /* corpus language id */
    sy_split_mode split;
    const char *encoding;   /* convert from this (NULL: none) */
    const char *fallback;   /* default corpus: convert from this only if not valid UTF-8 */
    struct stat st;
} source;

typedef struct {
    source *v;
    int64_t n, cap;
} source_list;

static void sources_free(source_list *s) {
    for (int64_t i = 0; i < s->n; i++)
        free(s->v[i].path);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int sources_add(source_list *s, const char *path, const struct stat *st, int lang, sy_split_mode split,
                       const char *encoding, const char *fallback) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        source *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            sy_seterr("prepare: out of memory");
            return -1;
        }
        s->v = nv;
        s->cap = cap;
    }
    source *e = &s->v[s->n];
    e->path = strdup(path);
    if (!e->path) {
        sy_seterr("prepare: out of memory");
        return -1;
    }
    e->lang = lang;
    e->split = split;
    e->encoding = encoding;
    e->fallback = fallback;
    e->st = *st;
    s->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Sorted entry names of a directory (without "." and ".."), or NULL with a message. */
static char **list_dir(const char *dir, int *count) {
    DIR *d = opendir(dir);
    *count = 0;
    if (!d) {
        sy_seterr("%s: cannot open directory: %s", dir, strerror(errno));
        return NULL;
    }
    int n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e = NULL;
    while (names && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n == cap) {
            char **nn = realloc(names, 2 * cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
            cap *= 2;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (!names || e) { /* stopped early: out of memory */
        for (int i = 0; names && i < n; i++)
            free(names[i]);
        free(names);
        sy_seterr("%s: out of memory listing the directory", dir);
        return NULL;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    *count = n;
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* A user directory: its regular files, recursively, in name order. */
static int add_user_dir(source_list *s, const char *dir, const sy_prepare_input *in, int lang, int depth) {
    if (depth > 32) {
        sy_seterr("%s: directories nested too deep", dir);
        return -1;
    }
    int n;
    char **names = list_dir(dir, &n);
    if (!names)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (names[i][0] == '.' || ends_with(names[i], ".dat"))
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) {
            sy_seterr("%s/%s: path too long", dir, names[i]);
            rc = -1;
            break;
        }
        struct stat st;
        if (lstat(p, &st) != 0) {
            sy_seterr("%s: cannot stat: %s", p, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            rc = add_user_dir(s, p, in, lang, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            rc = sources_add(s, p, &st, lang, in->split, in->encoding, NULL);
        }
    }
    free_names(names, n);
    return rc;
}

typedef struct {
    const char *lang, *package, *subdir, *legacy;
    int need_dat; /* top-level English files: only those with a NAME.dat beside them */
} fortune_source;

static const fortune_source k_fortunes[] = {
    {"en", "fortunes", "fortunes", "ISO-8859-1", 1},
    {"de", "fortunes-de", "fortunes/de", "ISO-8859-1", 0},
    {"es", "fortunes-es", "fortunes/es", "ISO-8859-1", 0},
    {"it", "fortunes-it", "fortunes/it", "ISO-8859-1", 0},
    {"ru", "fortunes-ru", "fortunes/ru", "KOI8-R", 0},
};
#define N_FORTUNE_SOURCES ((int)(sizeof k_fortunes / sizeof k_fortunes[0]))

/* The fortune files of one package; 0 files found is not an error here. */
static int add_fortune_dir(source_list *s, const char *root, const fortune_source *f, int lang) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, f->subdir);
    struct stat dst;
    if (stat(dir, &dst) != 0 || !S_ISDIR(dst.st_mode))
        return 0;
    int n;
    char **names = list_dir(dir, &n);
    if (!names)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *nm = names[i];
        if (nm[0] == '.' || ends_with(nm, ".dat") || ends_with(nm, ".u8"))
            continue;
        char p[PATH_MAX], pd[PATH_MAX + 8];
        if (snprintf(p, sizeof p, "%s/%s", dir, nm) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue; /* symlinks (duplicates, other packages' links) and subdirectories */
        if (f->need_dat) {
            snprintf(pd, sizeof pd, "%s.dat", p);
            struct stat sd;
            if (lstat(pd, &sd) != 0 || !S_ISREG(sd.st_mode))
                continue;
        }
        rc = sources_add(s, p, &st, lang, SY_SPLIT_FORTUNE, NULL, f->legacy);
    }
    free_names(names, n);
    return rc;
}

static int collect_default(source_list *s, sy_corpus *c, const char *root) {
    char missing[512] = "", where[2048] = "";
    for (int k = 0; k < N_FORTUNE_SOURCES; k++) {
        int lang = sy_corpus_lang(c, k_fortunes[k].lang);
        int64_t before = s->n;
        if (lang < 0 || add_fortune_dir(s, root, &k_fortunes[k], lang) != 0)
            return -1;
        if (s->n == before) {
            size_t m = strlen(missing), w = strlen(where);
            snprintf(missing + m, sizeof missing - m, " %s", k_fortunes[k].package);
            snprintf(where + w, sizeof where - w, "%s%s/%s", w ? ", " : "", root, k_fortunes[k].subdir);
        }
    }
    if (missing[0]) {
        sy_seterr("default corpus: Debian package(s)%s missing (no fortune files in %s); install with: sudo apt-get "
                  "install%s",
                  missing, where, missing);
        return -1;
    }
    return 0;
}

static int collect_inputs(source_list *s, sy_corpus *c, const sy_prepare_opts *o) {
    for (int i = 0; i < o->n_inputs; i++) {
        const sy_prepare_input *in = &o->inputs[i];
        int lang = sy_corpus_lang(c, in->lang ? in->lang : "unknown");
        if (lang < 0) {
            sy_err_prefix("%s", in->path);
            return -1;
        }
        struct stat st;
        if (stat(in->path, &st) != 0) {
            sy_seterr("%s: %s", in->path, strerror(errno));
            return -1;
        }
        int rc;
        if (S_ISDIR(st.st_mode)) {
            int64_t before = s->n;
            rc = add_user_dir(s, in->path, in, lang, 0);
            if (rc == 0 && s->n == before)
                sy_warn("%s: directory holds no files", in->path);
        } else if (S_ISREG(st.st_mode)) {
            rc = sources_add(s, in->path, &st, lang, in->split, in->encoding, NULL);
        } else {
            sy_seterr("%s: not a regular file or directory", in->path);
            rc = -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Fingerprint of everything the output depends on: format, split rule, val fraction,
 * language table, and every input's path, options, size and mtime. */
static uint64_t fingerprint(const source_list *s, const sy_corpus *c, double frac, int is_default) {
    uint64_t h = sy_mix64(SY_TOKFILE_VERSION ^ ((uint64_t)is_default << 32));
    uint64_t fb;
    memcpy(&fb, &frac, 8);
    h = sy_mix64(h ^ fb) ^ SY_SPLIT_SEED;
    for (int l = 0; l < c->n_langs; l++)
        h = sy_data_hash(c->lang_names[l], strlen(c->lang_names[l]), h);
    for (int64_t i = 0; i < s->n; i++) {
        const source *e = &s->v[i];
        h = sy_data_hash(e->path, strlen(e->path) + 1, h);
        if (e->encoding)
            h = sy_data_hash(e->encoding, strlen(e->encoding) + 1, h);
        uint64_t f[6] = {(uint64_t)e->lang,
                         (uint64_t)e->split,
                         (uint64_t)e->st.st_size,
                         (uint64_t)e->st.st_mtim.tv_sec,
                         (uint64_t)e->st.st_mtim.tv_nsec,
                         (uint64_t)e->st.st_ino};
        h = sy_data_hash(f, sizeof f, h);
    }
    return h ? h : 1; /* 0 means "no fingerprint" in the file */
}

static int read_source(sy_corpus *c, const source *e) {
    if (!e->fallback)
        return sy_corpus_add_file(c, e->path, e->lang, e->split, e->encoding) < 0 ? -1 : 0;
    /* Default corpus: UTF-8 as is, anything else from the package's legacy encoding. */
    uint8_t *buf;
    size_t n;
    if (read_whole(e->path, &buf, &n) != 0)
        return -1;
    if (!sy_utf8_valid(buf, n)) {
        sy_info("%s: not UTF-8, converting from %s", e->path, e->fallback);
        if (to_utf8(e->path, e->fallback, &buf, &n) != 0) {
            free(buf);
            return -1;
        }
    }
    int64_t r = sy_corpus_add_fortunes(c, buf, n, e->lang);
    free(buf);
    if (r < 0) {
        sy_err_prefix("%s", e->path);
        return -1;
    }
    return 0;
}

/* Fills the report from the two files (as written or found). */
static void fill_report(sy_prepare_report *rep, const sy_tokens *tr, const sy_tokens *va) {
    rep->n_langs = tr->n_langs;
    memcpy(rep->lang_names, tr->lang_names, sizeof rep->lang_names);
    sy_tokens_lang_stats(tr, rep->docs[SY_PART_TRAIN], rep->bytes[SY_PART_TRAIN]);
    sy_tokens_lang_stats(va, rep->docs[SY_PART_VAL], rep->bytes[SY_PART_VAL]);
    rep->train_entropy = sy_tokens_entropy(tr);
}

static int same_langs(const sy_tokens *a, const sy_tokens *b) {
    return a->n_langs == b->n_langs && !memcmp(a->lang_names, b->lang_names, sizeof a->lang_names);
}

void sy_prepare_opts_default(sy_prepare_opts *o) {
    memset(o, 0, sizeof *o);
    o->out_dir = "data";
    o->fortunes_root = "/usr/share/games";
    o->val_fraction = 0.05;
}

int sy_prepare(const sy_prepare_opts *o, sy_prepare_report *rep) {
    double t0 = sy_now();
    memset(rep, 0, sizeof *rep);
    const char *dir = o->out_dir ? o->out_dir : "data";
    const char *root = o->fortunes_root ? o->fortunes_root : "/usr/share/games";
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) {
        sy_seterr("prepare: val fraction %g out of range [0, 1)", o->val_fraction);
        return -1;
    }
    if (snprintf(rep->train_path, sizeof rep->train_path, "%s/train.bin", dir) >= (int)sizeof rep->train_path ||
        snprintf(rep->val_path, sizeof rep->val_path, "%s/val.bin", dir) >= (int)sizeof rep->val_path) {
        sy_seterr("%s: path too long", dir);
        return -1;
    }
    source_list src = {0};
    sy_corpus *c = sy_corpus_new();
    sy_tokens *tr = NULL, *va = NULL;
    int rc = -1;
    if (!c)
        goto done;
    if ((o->n_inputs == 0 ? collect_default(&src, c, root) : collect_inputs(&src, c, o)) != 0)
        goto done;
    if (src.n == 0) {
        sy_seterr("prepare: no input files");
        goto done;
    }
    rep->n_files = src.n;
    uint64_t fp = fingerprint(&src, c, o->val_fraction, o->n_inputs == 0);

    if (!o->force && access(rep->train_path, F_OK) == 0) {
        tr = sy_tokens_load(rep->train_path);
        va = tr ? sy_tokens_load(rep->val_path) : NULL;
        if (!tr || !va) {
            sy_warn("rebuilding: %s", sy_lasterr());
        } else if (tr->fingerprint == fp && va->fingerprint == fp && same_langs(tr, va)) {
            fill_report(rep, tr, va);
            rep->up_to_date = 1;
            rc = 0;
            goto done;
        } else {
            sy_info("%s: inputs changed, rebuilding", dir);
        }
        sy_tokens_destroy(&tr);
        sy_tokens_destroy(&va);
    }

    for (int64_t i = 0; i < src.n; i++) {
        if (read_source(c, &src.v[i]) != 0)
            goto done;
        if (o->progress)
            o->progress(o->progress_ctx, "reading", i + 1, src.n);
    }
    if (sy_corpus_n_docs(c) == 0) {
        sy_seterr("prepare: the inputs hold no documents (all files empty?)");
        goto done;
    }
    if (make_dirs(dir) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 0, 2);
    if (sy_corpus_write(c, rep->train_path, SY_PART_TRAIN, o->val_fraction, fp) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 1, 2);
    if (sy_corpus_write(c, rep->val_path, SY_PART_VAL, o->val_fraction, fp) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 2, 2);
    /* Read back what was written: the report then describes the files, and a bad write
     * shows up here rather than in training. */
    if (!(tr = sy_tokens_load(rep->train_path)) || !(va = sy_tokens_load(rep->val_path)))
        goto done;
    if (tr->n_bytes == 0)
        sy_warn("%s is empty: every document went to validation", rep->train_path);
    if (va->n_bytes == 0 && o->val_fraction > 0)
        sy_warn("%s is empty: only one document (use more files or fortune-style files)", rep->val_path);
    fill_report(rep, tr, va);
    rc = 0;
done:
    rep->seconds = sy_now() - t0;
    sy_tokens_destroy(&tr);
    sy_tokens_destroy(&va);
    sy_corpus_destroy(&c);
    sources_free(&src);
    return rc;
}
