/* checkpoint.c: writing (temp dir, fsync, rename, prune) and reading (manifest parse,
 * checksum checks) of checkpoint directories. Format: see checkpoint.h. */
#define _GNU_SOURCE /* renameat2 */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "crc32c.h"
#include "fsutil.h"
#include "log.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define MANIFEST "manifest"
#define CONFIG_FILE "config.yaml"
#define TMP_PREFIX ".tmp-"
#define MAX_MANIFEST_BYTES (64u << 20)
#define MAX_CONFIG_BYTES (16u << 20)
#define IO_CHUNK (1u << 20)

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} dtypes[SY_DT_COUNT] = {
    [SY_DT_F32] = {"f32", 4}, [SY_DT_F64] = {"f64", 8}, [SY_DT_F16] = {"f16", 2},
    [SY_DT_BF16] = {"bf16", 2}, [SY_DT_I8] = {"i8", 1}, [SY_DT_I16] = {"i16", 2},
    [SY_DT_I32] = {"i32", 4}, [SY_DT_I64] = {"i64", 8}, [SY_DT_U8] = {"u8", 1},
    [SY_DT_U16] = {"u16", 2}, [SY_DT_U32] = {"u32", 4}, [SY_DT_U64] = {"u64", 8},
};

const char *sy_dtype_name(sy_dtype dt) {
    return (unsigned)dt < SY_DT_COUNT ? dtypes[dt].name : NULL;
}

size_t sy_dtype_size(sy_dtype dt) { return (unsigned)dt < SY_DT_COUNT ? dtypes[dt].size : 0; }

int sy_dtype_parse(const char *s, sy_dtype *out) {
    for (int i = 0; i < SY_DT_COUNT; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (sy_dtype)i;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------------ small helpers */

/* product(shape) * esize into *out; -1 on a negative dim or overflow. */
static int tensor_bytes(int ndim, const int64_t *shape, size_t esize, uint64_t *out) {
    uint64_t n = esize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] && n > UINT64_MAX / (uint64_t)shape[i])
            return -1;
        n *= (uint64_t)shape[i];
    }
    *out = n;
    return 0;
}

/* Tensor names: printable ASCII without space (they are manifest fields). */
static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > SY_CKPT_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] > '~')
            return 0;
    return 1;
}

static int valid_key(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > SY_CKPT_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_.:/-", c)))
            return 0;
    }
    return 1;
}

/* A file name read from a manifest must stay inside the checkpoint directory and not
 * shadow the manifest or config. */
static int valid_file(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 250 || s[0] == '.' || strchr(s, '/'))
        return 0;
    return strcmp(s, MANIFEST) && strcmp(s, CONFIG_FILE);
}

static const char hexd[] = "0123456789ABCDEF"; /* %XX escapes, upper case as in URLs */

/* name -> file stem: bytes outside [A-Za-z0-9._-] and a leading '.' become %XX
 * (injective, so distinct names give distinct files). out holds 3*len+1. */
static void escape_name(const char *name, char *out) {
    char *o = out;
    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (c == '.' && p != name);
        if (plain) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hexd[c >> 4];
            *o++ = hexd[c & 15];
        }
    }
    *o = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Strict unsigned decimal: digits only, no sign, no overflow past max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Exactly 8 lower-case hex digits (as written). */
static int parse_crc(const char *s, uint32_t *out) {
    if (strlen(s) != 8)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        int h = hexval(s[i]);
        if (h < 0 || (s[i] >= 'A' && s[i] <= 'F'))
            return -1;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return 0;
}

/* "step-NNNNNNNN" exactly as we write it (at least 8 digits, no superfluous zeros). */
static int parse_step_name(const char *s, int64_t *step) {
    uint64_t v;
    if (strncmp(s, "step-", 5) || parse_u64(s + 5, INT64_MAX, &v))
        return -1;
    char canon[32];
    snprintf(canon, sizeof canon, "step-%08" PRIu64, v);
    if (strcmp(canon, s))
        return -1;
    *step = (int64_t)v;
    return 0;
}

/* snprintf into a PATH_MAX buffer, failing (with an error) instead of truncating. */
__attribute__((format(printf, 2, 3))) static int path_fmt(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_MAX) {
        sy_seterr("checkpoint: path too long (%.80s...)", out);
        return -1;
    }
    return 0;
}

/* Growable string. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->oom = 1; /* callers only format bounded fields */
        return;
    }
    sb_put(b, tmp, (size_t)n);
}

/* ------------------------------------------------------------------ file system */

int sy_ckpt_make_root(const char *path) {
    return sy_mkdirs(path);
}

/* rm -r without following symlinks. Checkpoint dirs are flat; depth is bounded anyway. */
static int rm_tree_depth(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
    if (depth > 8)
        return -1;
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        if (path_fmt(sub, "%s/%s", path, e->d_name) < 0 || rm_tree_depth(sub, depth + 1) < 0)
            rc = -1;
    }
    closedir(d);
    if (rmdir(path) < 0 && errno != ENOENT)
        rc = -1;
    return rc;
}

static int rm_tree(const char *path) {
    int rc = rm_tree_depth(path, 0);
    if (rc < 0)
        sy_seterr("%s: cannot remove: %s", path, strerror(errno));
    return rc;
}

static uint32_t random32(void) {
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    static uint32_t ctr;
    return (uint32_t)(sy_now() * 1e9) ^ ((uint32_t)getpid() << 16) ^ ++ctr;
}

/* ------------------------------------------------------------------ writer */

enum { W_OPEN, W_DONE };

struct sy_ckpt_writer {
    char root[PATH_MAX];
    char tmp[PATH_MAX];   /* ROOT/.tmp-step-NNNNNNNN-PID-RAND */
    char final[PATH_MAX]; /* ROOT/step-NNNNNNNN */
    int64_t step;
    int state;
    struct timespec created; /* ctime of tmp right after mkdir: the file system's clock */
    int lock_fd;             /* tmp opened and flock()ed: marks this writer alive */
    sy_ckpt_tensor *t;
    int nt, capt;
    char **keys, **vals;
    int nmeta, capmeta;
    int has_config;
    uint64_t config_bytes;
    uint32_t config_crc;
    uint64_t bytes;
    double seconds;
};

sy_ckpt_writer *sy_ckpt_writer_new(const char *root, int64_t step) {
    if (!root || !*root) {
        sy_seterr("checkpoint: empty root directory");
        return NULL;
    }
    if (step < 0) {
        sy_seterr("checkpoint: negative step %" PRId64, step);
        return NULL;
    }
    sy_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w) {
        sy_seterr("checkpoint: out of memory");
        return NULL;
    }
    w->step = step;
    if (path_fmt(w->root, "%s", root) < 0 || sy_ckpt_make_root(root) < 0 ||
        path_fmt(w->final, "%s/step-%08" PRId64, root, step) < 0)
        goto fail;
    for (int attempt = 0;; attempt++) {
        if (path_fmt(w->tmp, "%s/" TMP_PREFIX "step-%08" PRId64 "-%ld-%08x", root, step,
                     (long)getpid(), random32()) < 0)
            goto fail;
        if (mkdir(w->tmp, 0755) == 0)
            break;
        if (errno != EEXIST || attempt > 16) {
            sy_seterr("%s: cannot create directory: %s", w->tmp, strerror(errno));
            goto fail;
        }
    }
    /* The lock tells a committing writer in any process that this directory is in use;
     * the kernel drops it when this process dies, leaving the directory prunable. */
    struct stat st;
    w->lock_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->lock_fd < 0 || flock(w->lock_fd, LOCK_EX | LOCK_NB) < 0 || fstat(w->lock_fd, &st) < 0) {
        sy_seterr("%s: cannot lock: %s", w->tmp, strerror(errno));
        if (w->lock_fd >= 0)
            close(w->lock_fd);
        rmdir(w->tmp);
        goto fail;
    }
    w->created = st.st_ctim;
    w->state = W_OPEN;
    return w;
fail:
    free(w);
    return NULL;
}

static int writer_usable(const sy_ckpt_writer *w) {
    if (w->state != W_OPEN) {
        sy_seterr("%s: checkpoint writer already committed or aborted", w->final);
        return 0;
    }
    return 1;
}

static int writer_add(sy_ckpt_writer *w, const char *name, sy_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, size_t bytes, int check_crc,
                      uint32_t expected_crc) {
    if (!writer_usable(w))
        return -1;
    if (!name || !valid_name(name)) {
        sy_seterr("%s: invalid tensor name \"%.80s\" (1..%d printable bytes, no spaces)",
                  w->final, name ? name : "(null)", SY_CKPT_MAX_NAME);
        return -1;
    }
    if (!sy_dtype_name(dtype)) {
        sy_seterr("%s: tensor %s: invalid dtype %d", w->final, name, (int)dtype);
        return -1;
    }
    if (ndim < 0 || ndim > SY_CKPT_MAX_DIMS || (ndim > 0 && !shape)) {
        sy_seterr("%s: tensor %s: invalid rank %d", w->final, name, ndim);
        return -1;
    }
    uint64_t want;
    if (tensor_bytes(ndim, shape, sy_dtype_size(dtype), &want) < 0) {
        sy_seterr("%s: tensor %s: negative or overflowing shape", w->final, name);
        return -1;
    }
    if (want != bytes) {
        sy_seterr("%s: tensor %s: %zu bytes given, shape and dtype need %" PRIu64, w->final,
                  name, bytes, want);
        return -1;
    }
    if (bytes && !data) {
        sy_seterr("%s: tensor %s: no data", w->final, name);
        return -1;
    }
    for (int i = 0; i < w->nt; i++)
        if (!strcmp(w->t[i].name, name)) {
            sy_seterr("%s: tensor %s added twice", w->final, name);
            return -1;
        }
    double t0 = sy_now();
    uint32_t crc = sy_crc32c(0, data, bytes);
    if (check_crc && crc != expected_crc) {
        sy_seterr("%s: tensor %s: received bytes have crc32c %08x, sender said %08x",
                  w->final, name, crc, expected_crc);
        return -1;
    }
    char stem[3 * SY_CKPT_MAX_NAME + 1], file[3 * SY_CKPT_MAX_NAME + 16], path[PATH_MAX];
    escape_name(name, stem);
    snprintf(file, sizeof file, "%s.%s", stem, sy_dtype_name(dtype));
    if (strlen(file) > 250) {
        sy_seterr("%s: tensor %s: file name too long after escaping", w->final, name);
        return -1;
    }
    if (w->nt == w->capt) {
        int cap = w->capt ? 2 * w->capt : 64;
        sy_ckpt_tensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) {
            sy_seterr("checkpoint: out of memory");
            return -1;
        }
        w->t = t;
        w->capt = cap;
    }
    sy_ckpt_tensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->file = strdup(file);
    if (!t->name || !t->file) {
        sy_seterr("checkpoint: out of memory");
        goto fail;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->bytes = bytes;
    t->crc = crc;
    if (path_fmt(path, "%s/%s", w->tmp, file) < 0 || sy_write_new(path, data, bytes) < 0) {
        sy_err_prefix("tensor %s", name);
        goto fail;
    }
    w->nt++;
    w->bytes += bytes;
    w->seconds += sy_now() - t0;
    return 0;
fail:
    free(t->name);
    free(t->file);
    return -1;
}

int sy_ckpt_writer_add(sy_ckpt_writer *w, const char *name, sy_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, size_t bytes) {
    return writer_add(w, name, dtype, ndim, shape, data, bytes, 0, 0);
}

int sy_ckpt_writer_add_crc(sy_ckpt_writer *w, const char *name, sy_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t bytes,
                           uint32_t expected_crc) {
    return writer_add(w, name, dtype, ndim, shape, data, bytes, 1, expected_crc);
}

int sy_ckpt_writer_set(sy_ckpt_writer *w, const char *key, const char *value) {
    if (!writer_usable(w))
        return -1;
    if (!key || !valid_key(key)) {
        sy_seterr("%s: invalid metadata key \"%.80s\" (1..%d bytes of [A-Za-z0-9_.:/-])",
                  w->final, key ? key : "(null)", SY_CKPT_MAX_NAME);
        return -1;
    }
    if (!value)
        value = "";
    char *v = strdup(value);
    if (!v) {
        sy_seterr("checkpoint: out of memory");
        return -1;
    }
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->keys[i], key)) {
            free(w->vals[i]);
            w->vals[i] = v;
            return 0;
        }
    if (w->nmeta == w->capmeta) {
        int cap = w->capmeta ? 2 * w->capmeta : 16;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (k)
            w->keys = k;
        char **vv = k ? realloc(w->vals, (size_t)cap * sizeof *vv) : NULL;
        if (!vv) {
            free(v);
            sy_seterr("checkpoint: out of memory");
            return -1;
        }
        w->vals = vv;
        w->capmeta = cap;
    }
    w->keys[w->nmeta] = strdup(key);
    if (!w->keys[w->nmeta]) {
        free(v);
        sy_seterr("checkpoint: out of memory");
        return -1;
    }
    w->vals[w->nmeta++] = v;
    return 0;
}

int sy_ckpt_writer_set_config(sy_ckpt_writer *w, const char *text, size_t len) {
    if (!writer_usable(w))
        return -1;
    if (w->has_config) {
        sy_seterr("%s: config set twice", w->final);
        return -1;
    }
    if (len && !text) {
        sy_seterr("%s: config: no data", w->final);
        return -1;
    }
    if (len > MAX_CONFIG_BYTES) {
        sy_seterr("%s: config: %zu bytes, the limit is %u", w->final, len, MAX_CONFIG_BYTES);
        return -1;
    }
    char path[PATH_MAX];
    double t0 = sy_now();
    if (path_fmt(path, "%s/" CONFIG_FILE, w->tmp) < 0 || sy_write_new(path, text, len) < 0)
        return -1;
    w->has_config = 1;
    w->config_bytes = len;
    w->config_crc = sy_crc32c(0, text, len);
    w->bytes += len;
    w->seconds += sy_now() - t0;
    return 0;
}

/* %XX-escapes every byte outside '!'..'~' and '%'. */
static void sb_escaped(strbuf *b, const char *s) {
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c > ' ' && c <= '~' && c != '%')
            continue;
        sb_put(b, run, (size_t)(s - run));
        char e[3] = {'%', hexd[c >> 4], hexd[c & 15]};
        sb_put(b, e, 3);
        run = s + 1;
    }
    sb_put(b, run, (size_t)(s - run));
}

static char *build_manifest(const sy_ckpt_writer *w, size_t *len) {
    strbuf b = {0};
    sb_printf(&b, "%s %d\nstep %" PRId64 "\n", SY_CKPT_FORMAT, SY_CKPT_VERSION, w->step);
    for (int i = 0; i < w->nmeta; i++) {
        sb_printf(&b, "meta %s", w->keys[i]);
        if (w->vals[i][0]) {
            sb_put(&b, " ", 1);
            sb_escaped(&b, w->vals[i]);
        }
        sb_put(&b, "\n", 1);
    }
    if (w->has_config)
        sb_printf(&b, "config %" PRIu64 " %08x " CONFIG_FILE "\n", w->config_bytes, w->config_crc);
    for (int i = 0; i < w->nt; i++) {
        const sy_ckpt_tensor *t = &w->t[i];
        sb_printf(&b, "tensor %s %s [", t->name, sy_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            sb_printf(&b, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
        sb_printf(&b, "] %" PRIu64 " %08x %s\n", t->bytes, t->crc, t->file);
    }
    if (!b.oom)
        sb_printf(&b, "crc32c %08x\n", sy_crc32c(0, b.p, b.len));
    if (b.oom) {
        free(b.p);
        sy_seterr("%s: out of memory building the manifest", w->final);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* The parent directory of root, so a freshly created root's own entry is durable. */
static void fsync_parent(const char *root) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", root);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = 0;
    char *slash = strrchr(p, '/');
    if (!slash)
        snprintf(p, sizeof p, ".");
    else if (slash == p)
        p[1] = 0;
    else
        *slash = 0;
    if (sy_fsync_dir(p) < 0)
        sy_debug("checkpoint: %s", sy_lasterr()); /* best effort: may be unreadable */
}

/* Moves tmp into place as final. If final exists it is replaced: atomically with
 * RENAME_EXCHANGE where the file system has it, else by renaming it aside first (a
 * crash between the two renames loses only that step; older checkpoints stay). */
static int move_into_place(sy_ckpt_writer *w) {
    if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->final, RENAME_NOREPLACE) == 0)
        return 0;
    int e = errno;
    if (e == EINVAL || e == ENOSYS) { /* no RENAME_NOREPLACE here */
        struct stat st;
        if (lstat(w->final, &st) < 0 && errno == ENOENT) {
            if (rename(w->tmp, w->final) == 0)
                return 0;
            sy_seterr("%s: rename to %s failed: %s", w->tmp, w->final, strerror(errno));
            return -1;
        }
    } else if (e != EEXIST && e != ENOTEMPTY) {
        sy_seterr("%s: rename to %s failed: %s", w->tmp, w->final, strerror(e));
        return -1;
    }
    sy_info("checkpoint: replacing existing %s", w->final);
    char old[PATH_MAX];
    if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->final, RENAME_EXCHANGE) == 0) {
        /* w->tmp now holds the old checkpoint */
        if (sy_fsync_dir(w->root) < 0)
            return -1;
        if (rm_tree(w->tmp) < 0)
            sy_warn("checkpoint: %s", sy_lasterr());
        return 0;
    }
    if (path_fmt(old, "%s/" TMP_PREFIX "old-step-%08" PRId64 "-%ld-%08x", w->root, w->step,
                 (long)getpid(), random32()) < 0)
        return -1;
    if (rename(w->final, old) < 0) {
        sy_seterr("%s: cannot move aside to %s: %s", w->final, old, strerror(errno));
        return -1;
    }
    if (rename(w->tmp, w->final) < 0) {
        sy_seterr("%s: rename to %s failed: %s", w->tmp, w->final, strerror(errno));
        if (rename(old, w->final) < 0)
            sy_warn("checkpoint: could not restore %s from %s", w->final, old);
        return -1;
    }
    if (sy_fsync_dir(w->root) < 0)
        return -1;
    if (rm_tree(old) < 0)
        sy_warn("checkpoint: %s", sy_lasterr());
    return 0;
}

static void prune(sy_ckpt_writer *w, int keep);

int sy_ckpt_writer_commit(sy_ckpt_writer *w, int keep) {
    if (!writer_usable(w))
        return -1;
    double t0 = sy_now();
    char path[PATH_MAX];
    size_t len = 0;
    char *m = build_manifest(w, &len);
    if (!m)
        goto fail;
    int rc = path_fmt(path, "%s/" MANIFEST, w->tmp) < 0 || sy_write_new(path, m, len) < 0;
    free(m);
    if (rc || sy_fsync_dir(w->tmp) < 0 || move_into_place(w) < 0 || sy_fsync_dir(w->root) < 0)
        goto fail;
    fsync_parent(w->root);
    w->state = W_DONE;
    close(w->lock_fd);
    w->lock_fd = -1;
    w->bytes += len;
    w->seconds += sy_now() - t0;
    sy_debug("checkpoint: committed %s (%d tensors, %.1f MB in %.3f s)", w->final, w->nt,
             w->bytes / 1e6, w->seconds);
    prune(w, keep);
    return 0;
fail:
    sy_err_prefix("checkpoint step %" PRId64 " not committed", w->step);
    if (rm_tree(w->tmp) < 0)
        sy_warn("checkpoint: could not remove %s", w->tmp);
    w->state = W_DONE;
    close(w->lock_fd);
    w->lock_fd = -1;
    return -1;
}

void sy_ckpt_writer_abort(sy_ckpt_writer *w) {
    if (!w || w->state != W_OPEN)
        return;
    if (rm_tree(w->tmp) < 0)
        sy_warn("checkpoint: abort: %s", sy_lasterr());
    w->state = W_DONE;
    close(w->lock_fd);
    w->lock_fd = -1;
}

void sy_ckpt_writer_stats(const sy_ckpt_writer *w, uint64_t *bytes, double *seconds) {
    if (bytes)
        *bytes = w->bytes;
    if (seconds)
        *seconds = w->seconds;
}

const char *sy_ckpt_writer_dir(const sy_ckpt_writer *w) { return w->final; }

void sy_ckpt_writer_destroy(sy_ckpt_writer **pw) {
    if (!pw || !*pw)
        return;
    sy_ckpt_writer *w = *pw;
    sy_ckpt_writer_abort(w);
    for (int i = 0; i < w->nt; i++) {
        free(w->t[i].name);
        free(w->t[i].file);
    }
    free(w->t);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->keys[i]);
        free(w->vals[i]);
    }
    free(w->keys);
    free(w->vals);
    free(w);
    *pw = NULL;
}

/* ------------------------------------------------------------------ reader */

struct sy_ckpt {
    char *dir;
    int64_t step;
    char **keys, **vals;
    int nmeta;
    char *config;
    size_t config_len;
    sy_ckpt_tensor *t;
    int nt;
    int *by_name; /* tensor indices sorted by name, for find */
};

static int cmp_by_name(const void *a, const void *b, void *t) {
    const sy_ckpt_tensor *ts = t;
    return strcmp(ts[*(const int *)a].name, ts[*(const int *)b].name);
}
static int cmp_by_file(const void *a, const void *b, void *t) {
    const sy_ckpt_tensor *ts = t;
    return strcmp(ts[*(const int *)a].file, ts[*(const int *)b].file);
}

/* Splits line (modified in place) at single spaces; -1 on an empty field. */
static int split_fields(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max)
            return -1;
        f[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = 0;
        p = sp + 1;
    }
    for (int i = 0; i < n; i++)
        if (!*f[i])
            return -1;
    return n;
}

/* "%XX" unescaping in place; -1 on a bad escape or a NUL byte. */
static int unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
        if (l < 0 || (h == 0 && l == 0))
            return -1;
        *o++ = (char)(h << 4 | l);
        p += 2;
    }
    *o = 0;
    return 0;
}

static int parse_shape(char *s, sy_ckpt_tensor *t) {
    size_t n = strlen(s);
    if (n < 2 || s[0] != '[' || s[n - 1] != ']')
        return -1;
    s[n - 1] = 0;
    t->ndim = 0;
    if (n == 2)
        return 0;
    char *p = s + 1;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = 0;
        uint64_t d;
        if (t->ndim == SY_CKPT_MAX_DIMS || parse_u64(p, INT64_MAX, &d) < 0)
            return -1;
        t->shape[t->ndim++] = (int64_t)d;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}


static int ck_add_meta(sy_ckpt *ck, const char *key, const char *val) {
    ck->keys[ck->nmeta] = strdup(key);
    ck->vals[ck->nmeta] = strdup(val);
    if (!ck->keys[ck->nmeta] || !ck->vals[ck->nmeta]) {
        free(ck->keys[ck->nmeta]);
        free(ck->vals[ck->nmeta]);
        return -1;
    }
    ck->nmeta++;
    return 0;
}

/* Parses the manifest text (already checksum-verified, NUL-free) into ck. */
static int parse_manifest(sy_ckpt *ck, char *text, size_t len, const char *mpath,
                          uint64_t *config_bytes, uint32_t *config_crc, int *has_config) {
    /* count lines to size the arrays */
    int nlines = 0;
    for (size_t i = 0; i < len; i++)
        nlines += text[i] == '\n';
    ck->keys = calloc((size_t)nlines + 1, sizeof *ck->keys);
    ck->vals = calloc((size_t)nlines + 1, sizeof *ck->vals);
    ck->t = calloc((size_t)nlines + 1, sizeof *ck->t);
    if (!ck->keys || !ck->vals || !ck->t) {
        sy_seterr("%s: out of memory", mpath);
        return -1;
    }
    char *line = text;
    for (int ln = 1; line < text + len; ln++) {
        char *nl = strchr(line, '\n'); /* present: text ends with '\n' */
        *nl = 0;
        char *f[8];
        int nf = split_fields(line, f, 8);
        if (nf < 0) {
            sy_seterr("%s:%d: malformed line (empty field or too many fields)", mpath, ln);
            return -1;
        }
        if (ln == 1) {
            uint64_t v;
            if (nf != 2 || strcmp(f[0], SY_CKPT_FORMAT) || parse_u64(f[1], 1000000, &v) < 0) {
                sy_seterr("%s:1: not a switchyard checkpoint manifest", mpath);
                return -1;
            }
            if (v != SY_CKPT_VERSION) {
                sy_seterr("%s:1: format version %" PRIu64 " (this build reads version %d)",
                          mpath, v, SY_CKPT_VERSION);
                return -1;
            }
        } else if (ln == 2) {
            uint64_t v;
            if (nf != 2 || strcmp(f[0], "step") || parse_u64(f[1], INT64_MAX, &v) < 0) {
                sy_seterr("%s:2: expected \"step N\"", mpath);
                return -1;
            }
            ck->step = (int64_t)v;
        } else if (!strcmp(f[0], "meta")) {
            if ((nf != 2 && nf != 3) || !valid_key(f[1]) || (nf == 3 && unescape(f[2]) < 0)) {
                sy_seterr("%s:%d: bad meta line", mpath, ln);
                return -1;
            }
            for (int i = 0; i < ck->nmeta; i++)
                if (!strcmp(ck->keys[i], f[1])) {
                    sy_seterr("%s:%d: meta key %s repeated", mpath, ln, f[1]);
                    return -1;
                }
            if (ck_add_meta(ck, f[1], nf == 3 ? f[2] : "") < 0) {
                sy_seterr("%s: out of memory", mpath);
                return -1;
            }
        } else if (!strcmp(f[0], "config")) {
            uint64_t b;
            if (*has_config || nf != 4 || parse_u64(f[1], MAX_CONFIG_BYTES, &b) < 0 ||
                parse_crc(f[2], config_crc) < 0 || strcmp(f[3], CONFIG_FILE)) {
                sy_seterr("%s:%d: bad config line", mpath, ln);
                return -1;
            }
            *config_bytes = b;
            *has_config = 1;
        } else if (!strcmp(f[0], "tensor")) {
            sy_ckpt_tensor *t = &ck->t[ck->nt];
            uint64_t want;
            if (nf != 7) {
                sy_seterr("%s:%d: tensor line needs 7 fields, has %d", mpath, ln, nf);
                return -1;
            }
            if (!valid_name(f[1]) || sy_dtype_parse(f[2], &t->dtype) < 0 ||
                parse_shape(f[3], t) < 0 || parse_u64(f[4], UINT64_MAX, &t->bytes) < 0 ||
                parse_crc(f[5], &t->crc) < 0 || !valid_file(f[6])) {
                sy_seterr("%s:%d: bad tensor line (name, dtype, shape, bytes, crc or file)",
                          mpath, ln);
                return -1;
            }
            if (tensor_bytes(t->ndim, t->shape, sy_dtype_size(t->dtype), &want) < 0 ||
                want != t->bytes) {
                sy_seterr("%s:%d: tensor %s: %" PRIu64 " bytes does not match its dtype and shape",
                          mpath, ln, f[1], t->bytes);
                return -1;
            }
            t->name = strdup(f[1]);
            t->file = strdup(f[6]);
            ck->nt++; /* counted before the check so close() frees both strings */
            if (!t->name || !t->file) {
                sy_seterr("%s: out of memory", mpath);
                return -1;
            }
        } else {
            sy_seterr("%s:%d: unknown line kind \"%.40s\"", mpath, ln, f[0]);
            return -1;
        }
        line = nl + 1;
    }
    if (nlines < 2) {
        sy_seterr("%s: no step line", mpath);
        return -1;
    }
    /* names unique (indexed for find), files unique */
    ck->by_name = malloc(((size_t)ck->nt + 1) * sizeof *ck->by_name);
    int *by_file = malloc(((size_t)ck->nt + 1) * sizeof *by_file);
    if (!ck->by_name || !by_file) {
        free(by_file);
        sy_seterr("%s: out of memory", mpath);
        return -1;
    }
    for (int i = 0; i < ck->nt; i++)
        ck->by_name[i] = by_file[i] = i;
    qsort_r(ck->by_name, (size_t)ck->nt, sizeof(int), cmp_by_name, ck->t);
    qsort_r(by_file, (size_t)ck->nt, sizeof(int), cmp_by_file, ck->t);
    int rc = 0;
    for (int i = 1; i < ck->nt && !rc; i++) {
        if (!strcmp(ck->t[ck->by_name[i]].name, ck->t[ck->by_name[i - 1]].name)) {
            sy_seterr("%s: tensor %s listed twice", mpath, ck->t[ck->by_name[i]].name);
            rc = -1;
        } else if (!strcmp(ck->t[by_file[i]].file, ck->t[by_file[i - 1]].file)) {
            sy_seterr("%s: file %s listed for two tensors", mpath, ck->t[by_file[i]].file);
            rc = -1;
        }
    }
    free(by_file);
    return rc;
}

sy_ckpt *sy_ckpt_open(const char *dir) {
    sy_ckpt *ck = calloc(1, sizeof *ck);
    char *text = NULL, mpath[PATH_MAX];
    if (!ck || !(ck->dir = strdup(dir))) {
        sy_seterr("checkpoint: out of memory");
        goto fail;
    }
    /* drop trailing slashes so error paths read well */
    for (size_t n = strlen(ck->dir); n > 1 && ck->dir[n - 1] == '/';)
        ck->dir[--n] = 0;
    if (path_fmt(mpath, "%s/" MANIFEST, ck->dir) < 0)
        goto fail;
    size_t len = 0;
    if (sy_read_file(mpath, MAX_MANIFEST_BYTES, &text, &len) < 0)
        goto fail;
    /* last line: "crc32c XXXXXXXX\n", over every byte before it */
    if (len < 17 || text[len - 1] != '\n' || strlen(text) != len) {
        sy_seterr("%s: truncated or not a manifest (no checksum line)", mpath);
        goto fail;
    }
    size_t last = len - 1;
    while (last > 0 && text[last - 1] != '\n')
        last--;
    uint32_t stored;
    text[len - 1] = 0;
    if (strncmp(text + last, "crc32c ", 7) || parse_crc(text + last + 7, &stored) < 0) {
        sy_seterr("%s: truncated (last line is not the checksum line)", mpath);
        goto fail;
    }
    uint32_t got = sy_crc32c(0, text, last);
    if (got != stored) {
        sy_seterr("%s: checksum mismatch (stored %08x, computed %08x): corrupt", mpath, stored, got);
        goto fail;
    }
    text[last] = 0;
    uint64_t config_bytes = 0;
    uint32_t config_crc = 0;
    int has_config = 0;
    if (parse_manifest(ck, text, last, mpath, &config_bytes, &config_crc, &has_config) < 0)
        goto fail;
    /* a step-N directory must hold step N (catches misplaced copies) */
    const char *base = strrchr(ck->dir, '/');
    base = base ? base + 1 : ck->dir;
    int64_t dstep;
    if (parse_step_name(base, &dstep) == 0 && dstep != ck->step) {
        sy_seterr("%s: says step %" PRId64 " but the directory is %s", mpath, ck->step, base);
        goto fail;
    }
    if (has_config) {
        char cpath[PATH_MAX];
        if (path_fmt(cpath, "%s/" CONFIG_FILE, ck->dir) < 0 ||
            sy_read_file(cpath, MAX_CONFIG_BYTES, &ck->config, &ck->config_len) < 0)
            goto fail;
        if (ck->config_len != config_bytes) {
            sy_seterr("%s: %zu bytes, manifest says %" PRIu64, cpath, ck->config_len, config_bytes);
            goto fail;
        }
        uint32_t c = sy_crc32c(0, ck->config, ck->config_len);
        if (c != config_crc) {
            sy_seterr("%s: checksum mismatch (manifest %08x, file %08x)", cpath, config_crc, c);
            goto fail;
        }
    }
    free(text);
    return ck;
fail:
    free(text);
    sy_ckpt_close(&ck);
    return NULL;
}

void sy_ckpt_close(sy_ckpt **pck) {
    if (!pck || !*pck)
        return;
    sy_ckpt *ck = *pck;
    for (int i = 0; i < ck->nmeta; i++) {
        free(ck->keys[i]);
        free(ck->vals[i]);
    }
    free(ck->keys);
    free(ck->vals);
    for (int i = 0; i < ck->nt; i++) {
        free(ck->t[i].name);
        free(ck->t[i].file);
    }
    free(ck->t);
    free(ck->by_name);
    free(ck->config);
    free(ck->dir);
    free(ck);
    *pck = NULL;
}

const char *sy_ckpt_dir(const sy_ckpt *ck) { return ck->dir; }
int64_t sy_ckpt_step(const sy_ckpt *ck) { return ck->step; }

const char *sy_ckpt_get(const sy_ckpt *ck, const char *key) {
    for (int i = 0; i < ck->nmeta; i++)
        if (!strcmp(ck->keys[i], key))
            return ck->vals[i];
    return NULL;
}

int sy_ckpt_meta_count(const sy_ckpt *ck) { return ck->nmeta; }

int sy_ckpt_meta_at(const sy_ckpt *ck, int i, const char **key, const char **value) {
    if (i < 0 || i >= ck->nmeta)
        return -1;
    *key = ck->keys[i];
    *value = ck->vals[i];
    return 0;
}

const char *sy_ckpt_config(const sy_ckpt *ck, size_t *len) {
    if (len)
        *len = ck->config ? ck->config_len : 0;
    return ck->config;
}

int sy_ckpt_count(const sy_ckpt *ck) { return ck->nt; }

const sy_ckpt_tensor *sy_ckpt_tensor_at(const sy_ckpt *ck, int i) {
    return i >= 0 && i < ck->nt ? &ck->t[i] : NULL;
}

const sy_ckpt_tensor *sy_ckpt_find(const sy_ckpt *ck, const char *name) {
    int lo = 0, hi = ck->nt;
    while (lo < hi) {
        int mid = (lo + hi) / 2, c = strcmp(ck->t[ck->by_name[mid]].name, name);
        if (c == 0)
            return &ck->t[ck->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    sy_seterr("%s: no tensor named %s", ck->dir, name);
    return NULL;
}

/* Opens tensor t's file and checks its size; returns the fd or -1. */
static int open_tensor(const sy_ckpt *ck, const sy_ckpt_tensor *t, char *path) {
    if (path_fmt(path, "%s/%s", ck->dir, t->file) < 0)
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sy_seterr("%s: tensor %s: cannot open: %s", path, t->name, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        sy_seterr("%s: tensor %s: not a regular file", path, t->name);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size != t->bytes) {
        sy_seterr("%s: tensor %s: file is %lld bytes, manifest says %" PRIu64 " (truncated?)",
                  path, t->name, (long long)st.st_size, t->bytes);
        close(fd);
        return -1;
    }
    return fd;
}

int sy_ckpt_read(const sy_ckpt *ck, const char *name, void *buf, size_t bytes) {
    const sy_ckpt_tensor *t = sy_ckpt_find(ck, name);
    if (!t)
        return -1;
    if (bytes != t->bytes) {
        sy_seterr("%s: tensor %s is %" PRIu64 " bytes, buffer is %zu", ck->dir, name, t->bytes,
                  bytes);
        return -1;
    }
    char path[PATH_MAX];
    int fd = open_tensor(ck, t, path);
    if (fd < 0)
        return -1;
    ssize_t got = sy_read_all(fd, buf, bytes);
    close(fd);
    if (got != (ssize_t)bytes) {
        sy_seterr("%s: tensor %s: %s", path, name, got < 0 ? strerror(errno) : "short read");
        return -1;
    }
    uint32_t c = sy_crc32c(0, buf, bytes);
    if (c != t->crc) {
        sy_seterr("%s: tensor %s: checksum mismatch (manifest %08x, data %08x): corrupt", path,
                  name, t->crc, c);
        return -1;
    }
    return 0;
}

int sy_ckpt_verify_tensor(const sy_ckpt *ck, int i) {
    const sy_ckpt_tensor *t = sy_ckpt_tensor_at(ck, i);
    if (!t) {
        sy_seterr("%s: no tensor %d", ck->dir, i);
        return -1;
    }
    char path[PATH_MAX];
    int fd = open_tensor(ck, t, path);
    if (fd < 0)
        return -1;
    char *buf = malloc(IO_CHUNK);
    if (!buf) {
        close(fd);
        sy_seterr("checkpoint: out of memory");
        return -1;
    }
    uint32_t c = 0;
    uint64_t left = t->bytes;
    int rc = 0;
    while (left) {
        size_t n = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
        ssize_t got = sy_read_all(fd, buf, n);
        if (got != (ssize_t)n) {
            sy_seterr("%s: tensor %s: %s", path, t->name, got < 0 ? strerror(errno) : "short read");
            rc = -1;
            break;
        }
        c = sy_crc32c(c, buf, n);
        left -= n;
    }
    free(buf);
    close(fd);
    if (!rc && c != t->crc) {
        sy_seterr("%s: tensor %s: checksum mismatch (manifest %08x, data %08x): corrupt", path,
                  t->name, t->crc, c);
        rc = -1;
    }
    return rc;
}

int sy_ckpt_verify(const sy_ckpt *ck) {
    int bad = 0;
    char first[1024] = "";
    for (int i = 0; i < ck->nt; i++)
        if (sy_ckpt_verify_tensor(ck, i) < 0) {
            sy_warn("checkpoint: %s", sy_lasterr());
            if (!bad++)
                snprintf(first, sizeof first, "%s", sy_lasterr());
        }
    if (bad)
        sy_seterr("%s", first);
    return bad;
}

/* Cheap completeness check for pruning: manifest valid and every file the right size
 * (no data read). */
static int ckpt_complete(const char *dir) {
    sy_ckpt *ck = sy_ckpt_open(dir);
    if (!ck)
        return 0;
    int ok = 1;
    for (int i = 0; i < ck->nt && ok; i++) {
        char path[PATH_MAX];
        int fd = open_tensor(ck, &ck->t[i], path);
        if (fd < 0)
            ok = 0;
        else
            close(fd);
    }
    sy_ckpt_close(&ck);
    return ok;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int sy_ckpt_list(const char *root, int64_t **steps, size_t *n) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        sy_seterr("%s: cannot list: %s", root, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s;
        if (parse_step_name(e->d_name, &s) < 0)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *p = realloc(*steps, cap * sizeof *p);
            if (!p) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                *n = 0;
                sy_seterr("checkpoint: out of memory");
                return -1;
            }
            *steps = p;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (*n)
        qsort(*steps, *n, sizeof **steps, cmp_i64);
    return 0;
}

static int ts_cmp(struct timespec a, struct timespec b) {
    if (a.tv_sec != b.tv_sec)
        return a.tv_sec < b.tv_sec ? -1 : 1;
    return (a.tv_nsec > b.tv_nsec) - (a.tv_nsec < b.tv_nsec);
}

/* A .tmp-* directory is garbage when no live writer holds its lock and it last changed
 * no later than this writer started (the time check guards writers on other hosts of a
 * shared file system where flock may not reach). Returns an fd holding the lock (the
 * caller removes the directory, then closes it), or -1 to leave it alone. */
static int lock_if_stale(const sy_ckpt_writer *w, const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &st) < 0 || ts_cmp(st.st_ctim, w->created) > 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void prune(sy_ckpt_writer *w, int keep) {
    /* stale temp directories */
    DIR *d = opendir(w->root);
    if (!d) {
        sy_warn("checkpoint: cannot list %s to prune: %s", w->root, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        int fd;
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) ||
            path_fmt(path, "%s/%s", w->root, e->d_name) < 0 || (fd = lock_if_stale(w, path)) < 0)
            continue;
        sy_info("checkpoint: removing %s left by an unfinished writer", path);
        if (rm_tree(path) < 0)
            sy_warn("checkpoint: %s", sy_lasterr());
        close(fd);
    }
    closedir(d);
    if (keep <= 0)
        return;
    int64_t *steps;
    size_t n;
    if (sy_ckpt_list(w->root, &steps, &n) < 0) {
        sy_warn("checkpoint: prune: %s", sy_lasterr());
        return;
    }
    int kept = 0;
    for (size_t i = n; i-- > 0;) {
        char dir[PATH_MAX], aside[PATH_MAX];
        if (path_fmt(dir, "%s/step-%08" PRId64, w->root, steps[i]) < 0)
            continue;
        if (steps[i] == w->step) {
            kept++;
            continue;
        }
        if (kept < keep) {
            if (ckpt_complete(dir))
                kept++;
            else
                sy_warn("checkpoint: %s is incomplete (%s); not counted as kept", dir, sy_lasterr());
            continue;
        }
        /* rename first, so a half-removed directory is never taken for a checkpoint */
        if (path_fmt(aside, "%s/" TMP_PREFIX "pruned-step-%08" PRId64 "-%ld-%08x", w->root,
                     steps[i], (long)getpid(), random32()) < 0)
            continue;
        if (rename(dir, aside) < 0) {
            sy_warn("checkpoint: cannot prune %s: %s", dir, strerror(errno));
            continue;
        }
        sy_info("checkpoint: pruned %s (keep %d)", dir, keep);
        if (rm_tree(aside) < 0)
            sy_warn("checkpoint: %s", sy_lasterr());
    }
    free(steps);
}

int sy_ckpt_latest(const char *root, char *out_dir, size_t n, int64_t *step) {
    int64_t *steps;
    size_t ns;
    if (sy_ckpt_list(root, &steps, &ns) < 0)
        return -1;
    int rc = 1;
    for (size_t i = ns; i-- > 0 && rc == 1;) {
        char dir[PATH_MAX];
        if (path_fmt(dir, "%s/step-%08" PRId64, root, steps[i]) < 0) {
            rc = -1;
            break;
        }
        sy_ckpt *ck = sy_ckpt_open(dir);
        if (!ck) {
            sy_warn("checkpoint: skipping %s: %s", dir, sy_lasterr());
            continue;
        }
        int bad = 0;
        for (int t = 0; t < ck->nt && !bad; t++)
            bad = sy_ckpt_verify_tensor(ck, t) < 0;
        sy_ckpt_close(&ck);
        if (bad) {
            sy_warn("checkpoint: skipping %s: %s", dir, sy_lasterr());
            continue;
        }
        if (out_dir && n) {
            if (strlen(dir) >= n) {
                sy_seterr("%s: path longer than the %zu-byte buffer", dir, n);
                rc = -1;
                break;
            }
            memcpy(out_dir, dir, strlen(dir) + 1);
        }
        if (step)
            *step = steps[i];
        rc = 0;
    }
    free(steps);
    return rc;
}
