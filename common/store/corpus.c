/* corpus.c: the corpus builder: documents from text (fortune-style files split at "%"
 * lines, others whole, converted to UTF-8 by iconv), UTF-8 validation, the
 * train/validation split by content hash, and the token files it writes. */
#include "data.h"

#include <errno.h>
#include <iconv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tokfile.h"

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



struct sy_corpus {
    uint8_t *bytes;
    size_t n, cap;
    sy_doc *docs;
    int64_t n_docs, cap_docs;
    int n_langs;
    char lang_names[SY_MAX_LANGS][SY_LANG_NAME_MAX];
};

int sy_corpus_n_langs(const sy_corpus *c) { return c->n_langs; }
const char *sy_corpus_lang_name(const sy_corpus *c, int id) {
    return id >= 0 && id < c->n_langs ? c->lang_names[id] : NULL;
}

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
    if (!name || !sy_tokens_lang_name_ok(name)) {
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
int sy_corpus_to_utf8(const char *path, const char *enc, uint8_t **buf, size_t *n) {
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
    if (encoding && sy_corpus_to_utf8(path, encoding, &buf, &n) != 0) {
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
    int rc = sy_write_atomic(path, img, total);
    free(img);
    free(isval);
    return rc;
}
