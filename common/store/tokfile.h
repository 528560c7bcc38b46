/* tokfile.h: what the token-file reader (tokens.c), the corpus writer (corpus.c) and
 * prepare (prepare.c) share: little-endian byte access for the SYTOK1 format (data.h)
 * and whole-file reading. Internal to common/store/. */
#ifndef SY_TOKFILE_H
#define SY_TOKFILE_H

#include <stddef.h>
#include <stdint.h>

#include "fsutil.h"

static inline void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* A whole file as bytes (fsutil's reader, which keeps a spare NUL after them). */
static inline int read_whole(const char *path, uint8_t **out, size_t *n_out) {
    char *buf = NULL;
    int rc = sy_read_file(path, 0, &buf, n_out);
    *out = (uint8_t *)buf;
    return rc;
}

/* Converts buf (n bytes, from path) from encoding `enc` to UTF-8 with iconv(3);
 * replaces *buf and *n on success. */
int sy_corpus_to_utf8(const char *path, const char *enc, uint8_t **buf, size_t *n);

/* 1 when s is a valid language name: 1..15 characters of [A-Za-z0-9_.-]. */
int sy_tokens_lang_name_ok(const char *s);

#endif
