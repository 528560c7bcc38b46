/* checkpoint.h: checkpoints on disk. The only module that writes checkpoint files.
 * It knows nothing about the model: a checkpoint is a set of named tensors (raw
 * little-endian bytes, row-major) plus string metadata and an optional config text.
 *
 * Layout: ROOT/step-NNNNNNNN/ (step zero-padded to 8 digits, more if it needs them)
 *   manifest        the index below, checksummed as a whole
 *   config.yaml     the run's config text, if the writer was given one
 *   NAME.DTYPE      one file per tensor, e.g. "layers.1.experts.3.w1.f32";
 *                   bytes outside [A-Za-z0-9._-] in NAME (and a leading '.') become
 *                   %XX, so "adam.m/wte" is stored as "adam.m%2Fwte.f32".
 *
 * Manifest (text, '\n'-terminated lines, fields separated by one space):
 *   switchyard-checkpoint 1                       format name and version, always first
 *   step 42                                       the step, always second
 *   meta KEY VALUE                                zero or more; VALUE is %XX-escaped
 *                                                 (every byte outside '!'..'~', and '%');
 *                                                 "meta KEY" alone: the empty string
 *   config BYTES CRC32C config.yaml               at most one
 *   tensor NAME DTYPE [D0,D1,...] BYTES CRC32C FILE   one per tensor ("[]" = scalar)
 *   crc32c XXXXXXXX                               CRC-32C of every byte before this
 *                                                 line; always last
 * CRC32C fields are 8 lower-case hex digits. A truncated or edited manifest fails the
 * last line's check, so it is never mistaken for a smaller checkpoint.
 *
 * Atomicity: a writer fills ROOT/.tmp-step-NNNNNNNN-PID-RANDOM/, fsyncs every file and
 * the directory, then renames it to step-NNNNNNNN and fsyncs ROOT. Until that rename
 * nothing named step-* changes, so a crash at any point leaves the previous checkpoints
 * as they were. A live writer holds flock() on its temporary directory; a later commit
 * removes .tmp-* directories that nobody holds (their writer died). */
#ifndef SY_CHECKPOINT_H
#define SY_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define SY_CKPT_FORMAT "switchyard-checkpoint"
#define SY_CKPT_VERSION 1
#define SY_CKPT_MAX_DIMS 8
#define SY_CKPT_MAX_NAME 200 /* bytes in a tensor name or metadata key */

/* Conventional metadata keys (values are whatever string the caller stores). */
#define SY_CKPT_KEY_RUN_ID "run_id"
#define SY_CKPT_KEY_DATA_POS "data_position"
#define SY_CKPT_KEY_RNG "rng_state"

typedef enum {
    SY_DT_F32, SY_DT_F64, SY_DT_F16, SY_DT_BF16,
    SY_DT_I8, SY_DT_I16, SY_DT_I32, SY_DT_I64,
    SY_DT_U8, SY_DT_U16, SY_DT_U32, SY_DT_U64,
    SY_DT_COUNT
} sy_dtype;

/* "f32", "bf16", "i32", "u8", ...; NULL for an invalid value. */
const char *sy_dtype_name(sy_dtype dt);
/* Bytes per element; 0 for an invalid value. */
size_t sy_dtype_size(sy_dtype dt);
/* Parses a dtype name; -1 if unknown. */
int sy_dtype_parse(const char *s, sy_dtype *out);

/* One tensor as the manifest describes it. */
typedef struct {
    char *name;                      /* canonical name, e.g. "layers.0.attn.wqkv" */
    sy_dtype dtype;
    int ndim;                        /* 0 = scalar */
    int64_t shape[SY_CKPT_MAX_DIMS];
    uint64_t bytes;                  /* = product(shape) * sy_dtype_size(dtype) */
    uint32_t crc;                    /* CRC-32C of the file's bytes */
    char *file;                      /* file name inside the checkpoint directory */
} sy_ckpt_tensor;

/* ---- writing ---- */

/* Creates a checkpoint root (and its parents) if missing. Returns 0 or -1. */
int sy_ckpt_make_root(const char *root);

typedef struct sy_ckpt_writer sy_ckpt_writer;

/* Starts checkpoint `step` (>= 0) under root (created if missing) in a fresh temporary
 * directory. NULL on failure. */
sy_ckpt_writer *sy_ckpt_writer_new(const char *root, int64_t step);

/* Writes one tensor: `bytes` from data (may be NULL when bytes == 0) to its own file,
 * fully and fsynced, computing its CRC-32C. bytes must equal product(shape) * dtype
 * size; names are unique, 1..SY_CKPT_MAX_NAME printable non-space ASCII bytes.
 * Returns 0 or -1. Works the same for a tensor computed here or a shard received from a
 * peer. */
int sy_ckpt_writer_add(sy_ckpt_writer *w, const char *name, sy_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, size_t bytes);

/* As sy_ckpt_writer_add, for bytes that arrived over the wire with the sender's
 * CRC-32C: fails (writing nothing) if the bytes do not match it. */
int sy_ckpt_writer_add_crc(sy_ckpt_writer *w, const char *name, sy_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t bytes,
                           uint32_t expected_crc);

/* Sets metadata key (1..SY_CKPT_MAX_NAME bytes of [A-Za-z0-9_.:/-]) to any string;
 * setting a key again replaces its value. Returns 0 or -1. */
int sy_ckpt_writer_set(sy_ckpt_writer *w, const char *key, const char *value);

/* Stores the run's config text (any bytes, e.g. multi-line YAML) as config.yaml.
 * Returns 0 or -1. */
int sy_ckpt_writer_set_config(sy_ckpt_writer *w, const char *text, size_t len);

/* Makes the checkpoint durable and visible as ROOT/step-NNNNNNNN (replacing one of the
 * same step, if any), then prunes: keeps the newest `keep` complete checkpoints
 * (manifest valid, every file present with its size; this one always counts), removes
 * older step-* directories, and removes .tmp-* directories whose writer is gone (no
 * process holds their lock, unchanged since this writer started). keep <= 0 keeps every
 * step-* directory. Returns 0, or -1 with the previous
 * checkpoints intact. After commit (or a failed commit) only destroy is allowed. A
 * failure while pruning is logged, not returned: the checkpoint is already safe. */
int sy_ckpt_writer_commit(sy_ckpt_writer *w, int keep);

/* Throws the checkpoint away: removes the temporary directory. */
void sy_ckpt_writer_abort(sy_ckpt_writer *w);

/* Bytes written so far (tensors, config and manifest) and the wall-clock seconds spent
 * writing them, fsyncs and the commit's renames included: bytes / seconds is the write
 * throughput. Either pointer may be NULL. */
void sy_ckpt_writer_stats(const sy_ckpt_writer *w, uint64_t *bytes, double *seconds);

/* The final directory path ROOT/step-NNNNNNNN (valid once committed). */
const char *sy_ckpt_writer_dir(const sy_ckpt_writer *w);

/* Aborts if not committed, frees, sets *w to NULL. Accepts NULL. */
void sy_ckpt_writer_destroy(sy_ckpt_writer **w);

/* ---- reading ---- */

typedef struct sy_ckpt sy_ckpt;

/* Opens a checkpoint directory: reads and validates the manifest (format, checksum,
 * every field) and the config text's checksum. Tensor data is not read. NULL on
 * failure, the error naming the file and line. */
sy_ckpt *sy_ckpt_open(const char *dir);
void sy_ckpt_close(sy_ckpt **ck);

const char *sy_ckpt_dir(const sy_ckpt *ck);
int64_t sy_ckpt_step(const sy_ckpt *ck);
/* Metadata value, or NULL if the key is absent. */
const char *sy_ckpt_get(const sy_ckpt *ck, const char *key);
/* Metadata in manifest order, for listing: returns 0, or -1 if i is out of range. */
int sy_ckpt_meta_count(const sy_ckpt *ck);
int sy_ckpt_meta_at(const sy_ckpt *ck, int i, const char **key, const char **value);
/* The config text (NUL-terminated; *len excludes the NUL), or NULL if none was stored. */
const char *sy_ckpt_config(const sy_ckpt *ck, size_t *len);

/* Tensors in manifest order (the order they were added). */
int sy_ckpt_count(const sy_ckpt *ck);
const sy_ckpt_tensor *sy_ckpt_tensor_at(const sy_ckpt *ck, int i);
/* The tensor with this name, or NULL (with sy_lasterr set). */
const sy_ckpt_tensor *sy_ckpt_find(const sy_ckpt *ck, const char *name);

/* Reads tensor `name` into buf (`bytes` must equal its size) and checks its CRC-32C.
 * Returns 0, or -1 naming the file and tensor (missing, wrong size, checksum mismatch).
 * On -1 buf holds garbage. */
int sy_ckpt_read(const sy_ckpt *ck, const char *name, void *buf, size_t bytes);

/* Re-reads tensor i's file and checks its size and CRC-32C. Returns 0 or -1. */
int sy_ckpt_verify_tensor(const sy_ckpt *ck, int i);
/* Checks every tensor. Returns the number of bad tensors (0 = all good), each logged
 * as a warning; sy_lasterr describes the first. */
int sy_ckpt_verify(const sy_ckpt *ck);

/* Steps of ROOT's step-NNNNNNNN directories (only the names, nothing is opened),
 * ascending, in a malloc'd array the caller frees. A missing root gives 0 steps.
 * Returns 0 or -1. */
int sy_ckpt_list(const char *root, int64_t **steps, size_t *n);

/* The newest checkpoint under root that verifies completely (manifest and every
 * tensor's checksum). Corrupt or partial ones are skipped with a warning naming the
 * directory and the reason. Writes its directory to out_dir (size n) and its step to
 * *step (either may be NULL/0). Returns 0 found, 1 none (also for a missing root), -1
 * error. */
int sy_ckpt_latest(const char *root, char *out_dir, size_t n, int64_t *step);

#endif
