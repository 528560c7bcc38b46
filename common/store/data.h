/* data.h: byte-level training data. Text (or any bytes) becomes a stream of tokens in
 * 0..255; `prepare` collects documents, splits them into train/validation and writes
 * token files; training draws batches from them as pure functions of (seed, step, row).
 *
 * Token file format "SYTOK1", version 1. All integers little-endian.
 *
 *   offset size  field
 *   0      6     magic "SYTOK1"
 *   6      2     u16 version = 1
 *   8      4     u32 header size = 64
 *   12     4     u32 n_langs (1..SY_MAX_LANGS)
 *   16     8     u64 n_docs
 *   24     8     u64 n_bytes (length of the token stream)
 *   32     8     u64 fingerprint of the inputs prepare built it from (0: none)
 *   40     8     u64 checksum: sy_data_hash(whole file with these 8 bytes zero, seed 0)
 *   48     4     u32 part: 0 train, 1 validation, 2 whole corpus (informational)
 *   52     12    reserved, zero
 *   64     16 * n_langs   language names, NUL-padded (1..15 chars of [A-Za-z0-9_.-])
 *   ...    16 * n_docs    document index: u64 offset, u32 length, u16 lang id, u16 zero
 *   ...    n_bytes        the documents' bytes, concatenated in index order
 *
 * Documents are contiguous: doc 0 starts at 0, each starts where the previous ends, the
 * last ends at n_bytes, every length is > 0. The file size is exactly
 * 64 + 16*n_langs + 16*n_docs + n_bytes. The train and validation files of one prepare
 * run carry the same language table, so a language id means the same in both.
 * A validation file may be empty (n_docs = n_bytes = 0).
 *
 * Documents. A fortune-style file (lines consisting of just "%", optionally followed by
 * "\r", separate documents) gives one document per fortune: the text between separators,
 * with CRLF turned into LF and a final "\n" added if missing; whitespace-only fortunes
 * are dropped. Any other file is one document, its bytes unchanged (binary is fine).
 * SY_SPLIT_AUTO treats a file as fortune-style when it has a "%" line and no NUL byte.
 *
 * Train/validation split: a document goes to validation iff
 * u = sy_data_hash(its bytes, SY_SPLIT_SEED) / 2^64 < val_fraction, so it depends only
 * on the document's content (adding files never moves existing documents; duplicates
 * land together). Degenerate case: when that leaves one side empty although
 * 0 < val_fraction and there are >= 2 documents, the one document nearest the threshold
 * crosses over (with a warning).
 *
 * Default corpus (no input files): the Debian packages' fortunes under ROOT (default
 * /usr/share/games), each fortune one document:
 *   en  fortunes (+fortunes-min)  ROOT/fortunes/NAME: regular files with a NAME.dat
 *                                 next to them; symlinks (NAME.u8, and fortunes-it's
 *                                 links into it/) and subdirectories (off/, de/...) skipped
 *   de  fortunes-de               ROOT/fortunes/de/NAME (its .dat files live in
 *                                 ROOT/fortunes-de/, the .dat/.u8 symlinks are skipped)
 *   es  fortunes-es               ROOT/fortunes/es/NAME.fortunes (off/ skipped)
 *   it  fortunes-it               ROOT/fortunes/it/NAME
 *   ru  fortunes-ru               ROOT/fortunes/ru/NAME
 * In every directory: regular files only (no symlinks), no dotfiles, no *.dat, no *.u8,
 * no subdirectories, in byte order of their names. Files are UTF-8 on Debian 12; a file
 * that is not valid UTF-8 is converted with iconv from the language's legacy encoding
 * (KOI8-R for ru, ISO-8859-1 otherwise). Language ids: en 0, de 1, es 2, it 3, ru 4. */
#ifndef SY_DATA_H
#define SY_DATA_H

#include <stddef.h>
#include <stdint.h>

#define SY_TOKFILE_MAGIC "SYTOK1"
#define SY_TOKFILE_VERSION 1
#define SY_TOKFILE_HEADER 64
#define SY_MAX_LANGS 64
#define SY_LANG_NAME_MAX 16 /* including the NUL */
#define SY_SPLIT_SEED 0x53504c4954ull /* "SPLIT": seed of the content hash deciding the split */

enum { SY_PART_TRAIN = 0, SY_PART_VAL = 1, SY_PART_ALL = 2 };

/* 64-bit hash of n bytes (checksums, content hashes). Not cryptographic. */
uint64_t sy_data_hash(const void *p, size_t n, uint64_t seed);

/* 1 iff the n bytes are valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
int sy_utf8_valid(const void *p, size_t n);

/* ---- reading token files ---- */

typedef struct {
    uint64_t offset; /* first byte in the stream */
    uint32_t length; /* bytes, > 0 */
    uint16_t lang;   /* index into lang_names */
} sy_doc;

/* A loaded token file. Fields are read-only for users. */
typedef struct {
    char *path;
    const uint8_t *bytes; /* [n_bytes] the token stream (token = byte value) */
    int64_t n_bytes;
    sy_doc *docs;         /* [n_docs] */
    int64_t n_docs;
    int n_langs;
    char lang_names[SY_MAX_LANGS][SY_LANG_NAME_MAX];
    uint64_t fingerprint;
    uint64_t checksum;    /* content hash recorded by prepare (header bytes 40..47), verified */
    int part;             /* SY_PART_* */
    uint8_t *file;        /* the whole file as read; bytes points into it */
} sy_tokens;

/* Reads and validates a token file (magic, version, sizes, checksum, index). NULL on
 * failure, with sy_lasterr() naming the file and what is wrong (truncated, bad magic...). */
sy_tokens *sy_tokens_load(const char *path);
void sy_tokens_destroy(sy_tokens **ds);
/* The content hash a token file's header records (what sy_tokens_load verifies), read
 * from the header alone: the data's identity, compared between machines. 0 or -1 with a
 * message naming the file. */
int sy_tokens_peek_hash(const char *path, uint64_t *hash);
/* Name of language id ("en"), or "?" for an id out of range. */
const char *sy_tokens_lang_name(const sy_tokens *ds, int id);
/* Id of a language name, or -1. */
int sy_tokens_lang_id(const sy_tokens *ds, const char *name);
/* Index of the document holding stream position pos (0 <= pos < n_bytes). */
int64_t sy_tokens_doc_at(const sy_tokens *ds, int64_t pos);
/* Documents and bytes per language: docs[n_langs], bytes[n_langs] (either may be NULL). */
void sy_tokens_lang_stats(const sy_tokens *ds, int64_t *docs, int64_t *bytes);
/* Unigram entropy of the stream in nats per byte (0 for an empty stream). */
double sy_tokens_entropy(const sy_tokens *ds);

/* ---- batches ---- */

/* Start of training window r at `step`: a counter-based hash of (seed, step, r) mapped
 * onto [0, n_bytes - T - 1]. -1 if the stream is shorter than T + 1 bytes. */
int64_t sy_batch_pos(const sy_tokens *ds, uint64_t seed, int64_t step, int64_t r, int T);

/* Rows [row0, row0 + nrows) of the global training batch of `step`. Row i of out
 * [nrows, T+1] holds the T+1 consecutive bytes at sy_batch_pos(seed, step, row0 + i):
 * inputs are out[i][0..T-1], targets out[i][1..T]. Windows may span documents. A row
 * depends only on (file, seed, step, global row), so workers holding slices of the
 * global batch together see exactly what one process sees, and a resumed run sees the
 * same data. lang [nrows, T] (may be NULL): language id of the document each input
 * token comes from. Returns 0, or -1 (with a message) if the stream is too short. */
int sy_batch_fill(const sy_tokens *ds, uint64_t seed, int64_t step, int row0, int nrows, int T, int32_t *out,
                  int16_t *lang);

/* Number of evaluation windows of length T+1: W = (n_bytes - 1) / T (0 if too short). */
int64_t sy_eval_windows(const sy_tokens *ds, int T);
/* Batches of nrows windows that cover the stream once: ceil(W / nrows). */
int64_t sy_eval_batches(const sy_tokens *ds, int nrows, int T);
/* Validation batch: row i of out [nrows, T+1] is the window starting at w*T, where
 * j = (batch_index*nrows + i) mod W and w = j * sy_eval_stride(W) mod W: a permutation
 * of the windows (the batches cover the stream once, the last wrapping round) whose
 * every prefix is spread evenly over the stream, so a few eval batches sample every
 * language, not just the first documents. Returns 0, or -1 if the stream has fewer
 * than T + 1 bytes. */
/* The window step of the validation order (coprime with W). */
int64_t sy_eval_stride(int64_t W);
int sy_batch_eval(const sy_tokens *ds, int batch_index, int nrows, int T, int32_t *out);
/* The language ids [nrows, T] of the inputs of that same validation batch. */
int sy_batch_eval_lang(const sy_tokens *ds, int batch_index, int nrows, int T, int16_t *lang);

/* ---- building a corpus in memory ---- */

typedef enum { SY_SPLIT_AUTO = 0, SY_SPLIT_FORTUNE = 1, SY_SPLIT_FILE = 2 } sy_split_mode;

typedef struct sy_corpus sy_corpus;

sy_corpus *sy_corpus_new(void);
void sy_corpus_destroy(sy_corpus **c);
/* Id of language `name`, added on first use (ids in order of first use). -1 with a
 * message for a bad name or too many languages. */
int sy_corpus_lang(sy_corpus *c, const char *name);
/* Languages registered so far, and the name of id (NULL when out of range). */
int sy_corpus_n_langs(const sy_corpus *c);
const char *sy_corpus_lang_name(const sy_corpus *c, int id);
/* Appends one document (copied). Empty text is skipped. Returns documents added (0 or 1)
 * or -1 (document over 4 GiB, bad lang). */
int sy_corpus_add_doc(sy_corpus *c, const void *text, size_t n, int lang);
/* Splits fortune-style text on "%" lines (see the top of this file) and appends each
 * fortune. Returns documents added, or -1. */
int64_t sy_corpus_add_fortunes(sy_corpus *c, const void *text, size_t n, int lang);
/* Reads a file and appends its documents. encoding NULL: bytes as they are; otherwise
 * the file is converted from that iconv encoding to UTF-8 first. Returns documents added,
 * or -1 with a message naming the file. */
int64_t sy_corpus_add_file(sy_corpus *c, const char *path, int lang, sy_split_mode split, const char *encoding);
int64_t sy_corpus_n_docs(const sy_corpus *c);
/* Bytes of document i; *len and *lang receive its length and language (may be NULL). */
const uint8_t *sy_corpus_doc(const sy_corpus *c, int64_t i, size_t *len, int *lang);
/* 1 if a document with these bytes goes to validation at this fraction (the content rule
 * above, without the degenerate-case fix-up). */
int sy_doc_is_val(const void *text, size_t n, double val_fraction);
/* Writes one part of the corpus (SY_PART_TRAIN / SY_PART_VAL by the split rule, or
 * SY_PART_ALL) as a token file: temp name, fsync, rename. 0 or -1 with a message. */
int sy_corpus_write(const sy_corpus *c, const char *path, int part, double val_fraction, uint64_t fingerprint);

/* ---- prepare: inputs -> DIR/train.bin, DIR/val.bin ---- */

typedef struct {
    const char *path;      /* a file, or a directory (its regular files, recursively,
                              sorted, without dotfiles, symlinks and *.dat) */
    const char *lang;      /* NULL: "unknown" */
    sy_split_mode split;
    const char *encoding;  /* NULL: bytes unchanged; else iconv source encoding -> UTF-8 */
} sy_prepare_input;

/* Progress of long work: `phase` ("reading", ...), done of total units. */
typedef void (*sy_progress_fn)(void *ctx, const char *phase, int64_t done, int64_t total);

typedef struct {
    const char *out_dir;            /* NULL: "data" */
    const sy_prepare_input *inputs; /* n_inputs == 0: the default fortunes corpus */
    int n_inputs;
    const char *fortunes_root;      /* NULL: "/usr/share/games" */
    double val_fraction;            /* [0, 1); default 0.05 */
    int force;                      /* rebuild even when up to date */
    sy_progress_fn progress;        /* may be NULL */
    void *progress_ctx;
} sy_prepare_opts;

typedef struct {
    int up_to_date;                 /* 1: the files matched the inputs, nothing rebuilt */
    int64_t n_files;                /* input files read (or fingerprinted) */
    int n_langs;
    char lang_names[SY_MAX_LANGS][SY_LANG_NAME_MAX];
    int64_t docs[2][SY_MAX_LANGS];  /* [SY_PART_TRAIN or SY_PART_VAL][lang] */
    int64_t bytes[2][SY_MAX_LANGS];
    double train_entropy;           /* unigram entropy of train.bin, nats/byte */
    double seconds;                 /* wall time of sy_prepare */
    char train_path[4096], val_path[4096];
} sy_prepare_report;

void sy_prepare_opts_default(sy_prepare_opts *o);
/* Builds (or finds up to date: both files present, valid, and carrying the fingerprint
 * of the inputs' paths, sizes, mtimes, options and val_fraction) DIR/train.bin and
 * DIR/val.bin, creating DIR. Fills *rep from the files as written/found. 0 or -1 with a
 * message (a missing Debian package is named with the apt-get command installing it). */
int sy_prepare(const sy_prepare_opts *o, sy_prepare_report *rep);

#endif
