/* test_checkpoint.c: checkpoint writing/reading, atomicity, pruning, corruption drills
 * (bit flips, truncation, crashed writers) and CRC-32C vectors. Each test works in its
 * own temporary directory. SY_CKPT_BENCH_MB sets the throughput test's size (default
 * 16). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "crc32c.h"
#include "log.h"

/* each test gets a fresh scratch directory as *state */
#define SY_TMPDIR_NAME "checkpoint"
#include "tmpdir.h"

/* ------------------------------------------------------------------ helpers */

/* Declares char name[PATH_MAX] holding a formatted path (for paths used across calls). */
#define PATH(name, ...) \
    char name[PATH_MAX]; \
    snprintf(name, sizeof name, __VA_ARGS__)

/* A formatted path for immediate use (one of 8 rotating buffers). */
static const char *P(const char *fmt, ...) {
    static char bufs[8][PATH_MAX];
    static int k;
    char *b = bufs[k++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, PATH_MAX, fmt, ap);
    va_end(ap);
    return b;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Entries of dir whose names start with prefix. */
static int count_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return n;
}

static void flip_bit(const char *path, long off, int bit) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= (unsigned char)(1u << bit);
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void truncate_to(const char *path, off_t size) { assert_int_equal(truncate(path, size), 0); }

/* A small checkpoint: "a" f32 [2,3] = step*10 + i, "b" i32 [4] = -step - i. */
static void fill_a(float *a, int64_t step) {
    for (int i = 0; i < 6; i++)
        a[i] = (float)(step * 10 + i);
}

static void write_small(const char *root, int64_t step, int keep) {
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, step);
    assert_non_null(w);
    float a[6];
    int32_t b[4];
    fill_a(a, step);
    for (int i = 0; i < 4; i++)
        b[i] = (int32_t)(-step - i);
    int64_t sa[2] = {2, 3}, sb[1] = {4};
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, sizeof a), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "b", SY_DT_I32, 1, sb, b, sizeof b), 0);
    assert_int_equal(sy_ckpt_writer_set(w, SY_CKPT_KEY_RUN_ID, "run-x"), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, keep), 0);
    sy_ckpt_writer_destroy(&w);
    assert_null(w);
}

static void assert_small_ok(const char *dir, int64_t step) {
    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_step(ck), step);
    assert_int_equal(sy_ckpt_verify(ck), 0);
    float a[6], want[6];
    fill_a(want, step);
    assert_int_equal(sy_ckpt_read(ck, "a", a, sizeof a), 0);
    assert_memory_equal(a, want, sizeof a);
    sy_ckpt_close(&ck);
}

static void assert_err_has(const char *needle) {
    if (!strstr(sy_lasterr(), needle))
        fail_msg("error \"%s\" does not mention \"%s\"", sy_lasterr(), needle);
}

/* ------------------------------------------------------------------ crc32c */

static void test_crc32c_vectors(void **state) {
    (void)state;
    unsigned char zeros[32] = {0}, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        ones[i] = 0xff;
        inc[i] = (unsigned char)i;
        dec[i] = (unsigned char)(31 - i);
    }
    const char *fox = "The quick brown fox jumps over the lazy dog";
    uint32_t (*fns[2])(uint32_t, const void *, size_t) = {sy_crc32c, sy_crc32c_sw};
    for (int f = 0; f < 2; f++) {
        assert_int_equal(fns[f](0, "123456789", 9), 0xE3069283u);
        assert_int_equal(fns[f](0, "", 0), 0u);
        assert_int_equal(fns[f](0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
        assert_int_equal(fns[f](0, ones, 32), 0x62A8AB43u);
        assert_int_equal(fns[f](0, inc, 32), 0x46DD794Eu);
        assert_int_equal(fns[f](0, dec, 32), 0x113FDB5Cu);
        assert_int_equal(fns[f](0, fox, strlen(fox)), 0x22620404u);
        /* incremental at every split point and from every alignment */
        for (size_t cut = 0; cut <= 9; cut++)
            assert_int_equal(fns[f](fns[f](0, "123456789", cut), "123456789" + cut, 9 - cut),
                             0xE3069283u);
        char buf[64];
        for (int off = 0; off < 8; off++) {
            memcpy(buf + off, fox, strlen(fox));
            assert_int_equal(fns[f](0, buf + off, strlen(fox)), 0x22620404u);
        }
    }
    /* the two implementations agree on odd lengths and alignments */
    unsigned char *big = malloc(5000);
    for (int i = 0; i < 5000; i++)
        big[i] = (unsigned char)(i * 131 + (i >> 5));
    for (int off = 0; off < 9; off++)
        for (size_t n = 0; n < 4000; n += 37)
            assert_int_equal(sy_crc32c(7, big + off, n), sy_crc32c_sw(7, big + off, n));
    free(big);
    print_message("crc32c: hardware instruction %s\n", sy_crc32c_hw_available() ? "used" : "not available");
}

/* ------------------------------------------------------------------ round trip */

static void test_roundtrip(void **state) {
    const char *root = *state;
    sy_ckpt_writer *w = sy_ckpt_writer_new(P("%s/ck", root), 7); /* root created on demand */
    assert_non_null(w);
    float wte[3 * 4];
    for (int i = 0; i < 12; i++)
        wte[i] = 0.5f * (float)i - 2.0f;
    int32_t idx[5] = {1, -2, 3, INT32_MAX, INT32_MIN};
    uint8_t bytes[7] = {0, 1, 2, 250, 251, 255, 9};
    uint64_t scalar = 0x0123456789abcdefull;
    float m[12];
    for (int i = 0; i < 12; i++)
        m[i] = 1e-3f * (float)i;
    int64_t s34[2] = {3, 4}, s5[1] = {5}, s7[1] = {7}, s0[2] = {2, 0};
    assert_int_equal(sy_ckpt_writer_add(w, "wte", SY_DT_F32, 2, s34, wte, sizeof wte), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "layers.1.experts.3.w1", SY_DT_I32, 1, s5, idx, sizeof idx), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "bytes", SY_DT_U8, 1, s7, bytes, sizeof bytes), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "counter", SY_DT_U64, 0, NULL, &scalar, 8), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "adam.m/wte", SY_DT_F32, 2, s34, m, sizeof m), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "empty", SY_DT_F32, 2, s0, NULL, 0), 0);
    const char *cfg = "model:\n  d_model: 64 # comment\n  n_layers: 2\ntrain:\n  lr: 3e-4\n";
    assert_int_equal(sy_ckpt_writer_set_config(w, cfg, strlen(cfg)), 0);
    assert_int_equal(sy_ckpt_writer_set(w, SY_CKPT_KEY_RUN_ID, "run-2024"), 0);
    assert_int_equal(sy_ckpt_writer_set(w, SY_CKPT_KEY_DATA_POS, "12345"), 0);
    const char *rng = "seed=42 counter=7\nline two\t100% sure";
    assert_int_equal(sy_ckpt_writer_set(w, SY_CKPT_KEY_RNG, "old value"), 0);
    assert_int_equal(sy_ckpt_writer_set(w, SY_CKPT_KEY_RNG, rng), 0); /* replaces */
    assert_int_equal(sy_ckpt_writer_set(w, "blank", ""), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 3), 0);
    uint64_t wb;
    double ws;
    sy_ckpt_writer_stats(w, &wb, &ws);
    assert_true(wb > sizeof wte + sizeof idx + sizeof bytes + 8 + sizeof m + strlen(cfg));
    assert_true(ws > 0);
    assert_string_equal(sy_ckpt_writer_dir(w), P("%s/ck/step-00000007", root));
    sy_ckpt_writer_destroy(&w);

    PATH(dir, "%s/ck/step-00000007", root);
    assert_true(exists(P("%s/wte.f32", dir)));
    assert_true(exists(P("%s/layers.1.experts.3.w1.i32", dir)));
    assert_true(exists(P("%s/adam.m%%2Fwte.f32", dir)));
    assert_true(exists(P("%s/config.yaml", dir)));
    assert_int_equal(count_prefix(P("%s/ck", root), ".tmp-"), 0);
    size_t n;
    char *man = read_whole(P("%s/manifest", dir), &n);
    assert_int_equal(strncmp(man, "switchyard-checkpoint 1\nstep 7\n", 31), 0);
    free(man);

    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_step(ck), 7);
    assert_string_equal(sy_ckpt_get(ck, "run_id"), "run-2024");
    assert_string_equal(sy_ckpt_get(ck, "data_position"), "12345");
    assert_string_equal(sy_ckpt_get(ck, "rng_state"), rng);
    assert_string_equal(sy_ckpt_get(ck, "blank"), "");
    assert_null(sy_ckpt_get(ck, "missing"));
    assert_int_equal(sy_ckpt_meta_count(ck), 4);
    const char *k, *v;
    assert_int_equal(sy_ckpt_meta_at(ck, 0, &k, &v), 0);
    assert_string_equal(k, "run_id");
    assert_int_equal(sy_ckpt_meta_at(ck, 4, &k, &v), -1);
    size_t clen;
    const char *c = sy_ckpt_config(ck, &clen);
    assert_non_null(c);
    assert_int_equal(clen, strlen(cfg));
    assert_string_equal(c, cfg);

    assert_int_equal(sy_ckpt_count(ck), 6);
    assert_string_equal(sy_ckpt_tensor_at(ck, 0)->name, "wte"); /* order of adding */
    assert_string_equal(sy_ckpt_tensor_at(ck, 5)->name, "empty");
    assert_null(sy_ckpt_tensor_at(ck, 6));
    const sy_ckpt_tensor *t = sy_ckpt_find(ck, "wte");
    assert_non_null(t);
    assert_int_equal(t->dtype, SY_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 4);
    assert_int_equal(t->bytes, 48);
    assert_int_equal(t->crc, sy_crc32c(0, wte, sizeof wte));
    t = sy_ckpt_find(ck, "counter");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->dtype, SY_DT_U64);
    assert_null(sy_ckpt_find(ck, "nope"));
    assert_err_has("nope");

    float wte2[12], m2[12];
    int32_t idx2[5];
    uint8_t bytes2[7];
    uint64_t scalar2;
    assert_int_equal(sy_ckpt_read(ck, "wte", wte2, sizeof wte2), 0);
    assert_memory_equal(wte2, wte, sizeof wte);
    assert_int_equal(sy_ckpt_read(ck, "layers.1.experts.3.w1", idx2, sizeof idx2), 0);
    assert_memory_equal(idx2, idx, sizeof idx);
    assert_int_equal(sy_ckpt_read(ck, "bytes", bytes2, sizeof bytes2), 0);
    assert_memory_equal(bytes2, bytes, sizeof bytes);
    assert_int_equal(sy_ckpt_read(ck, "counter", &scalar2, 8), 0);
    assert_true(scalar2 == scalar);
    assert_int_equal(sy_ckpt_read(ck, "adam.m/wte", m2, sizeof m2), 0);
    assert_memory_equal(m2, m, sizeof m);
    t = sy_ckpt_find(ck, "empty");
    assert_int_equal(t->bytes, 0);
    assert_int_equal(t->crc, 0);
    assert_int_equal(sy_ckpt_read(ck, "empty", NULL, 0), 0);
    /* wrong buffer size is refused, naming the tensor */
    assert_int_equal(sy_ckpt_read(ck, "wte", wte2, 44), -1);
    assert_err_has("wte");
    assert_int_equal(sy_ckpt_verify(ck), 0);
    sy_ckpt_close(&ck);
    assert_null(ck);
    sy_ckpt_close(&ck); /* NULL is fine */

    int64_t step = -1;
    char out[PATH_MAX];
    assert_int_equal(sy_ckpt_latest(P("%s/ck", root), out, sizeof out, &step), 0);
    assert_int_equal(step, 7);
    assert_string_equal(out, dir);
}

/* The manifest format, byte for byte (expected text and CRCs computed independently
 * with a bitwise CRC-32C in Python). */
static void test_manifest_format(void **state) {
    const char *root = *state;
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 3);
    assert_non_null(w);
    uint8_t x[2] = {1, 2};
    float one = 1.0f;
    int64_t s2[1] = {2};
    const char *cfg = "model:\n  d_model: 8\n";
    assert_int_equal(sy_ckpt_writer_set(w, "run_id", "r1"), 0);
    assert_int_equal(sy_ckpt_writer_set(w, "note", "a b\nc%"), 0);
    assert_int_equal(sy_ckpt_writer_set(w, "empty", ""), 0);
    assert_int_equal(sy_ckpt_writer_set_config(w, cfg, strlen(cfg)), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "x", SY_DT_U8, 1, s2, x, 2), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "adam.m/wte", SY_DT_F32, 0, NULL, &one, 4), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    sy_ckpt_writer_destroy(&w);
    size_t n;
    char *man = read_whole(P("%s/step-00000003/manifest", root), &n);
    assert_string_equal(man, "switchyard-checkpoint 1\n"
                             "step 3\n"
                             "meta run_id r1\n"
                             "meta note a%20b%0Ac%25\n"
                             "meta empty\n"
                             "config 20 b94c7eb6 config.yaml\n"
                             "tensor x u8 [2] 2 03f89f52 x.u8\n"
                             "tensor adam.m/wte f32 [] 4 dd54c4ab adam.m%2Fwte.f32\n"
                             "crc32c 6e215304\n");
    free(man);
}

/* ------------------------------------------------------------------ atomicity */

static void test_abort_and_uncommitted(void **state) {
    const char *root = *state;
    write_small(root, 1, 0);
    float a[6] = {0};
    int64_t sa[2] = {2, 3};

    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 2);
    assert_non_null(w);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, sizeof a), 0);
    assert_int_equal(count_prefix(root, ".tmp-step-00000002-"), 1);
    assert_false(exists(P("%s/step-00000002", root)));
    sy_ckpt_writer_abort(w);
    assert_int_equal(count_prefix(root, ".tmp-"), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "b", SY_DT_F32, 2, sa, a, sizeof a), -1);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), -1);
    sy_ckpt_writer_destroy(&w);

    /* never committed: destroy throws it away */
    w = sy_ckpt_writer_new(root, 3);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, sizeof a), 0);
    sy_ckpt_writer_destroy(&w);
    sy_ckpt_writer_destroy(&w); /* NULL is fine */

    assert_false(exists(P("%s/step-00000002", root)));
    assert_false(exists(P("%s/step-00000003", root)));
    assert_int_equal(count_prefix(root, ".tmp-"), 0);
    int64_t *steps;
    size_t n;
    assert_int_equal(sy_ckpt_list(root, &steps, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(steps[0], 1);
    free(steps);
    assert_small_ok(P("%s/step-00000001", root), 1);
}

static void test_replace_same_step(void **state) {
    const char *root = *state;
    write_small(root, 5, 0);
    /* same step again, different content */
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 5);
    int32_t v[2] = {11, 22};
    int64_t s[1] = {2};
    assert_int_equal(sy_ckpt_writer_add(w, "only", SY_DT_I32, 1, s, v, sizeof v), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    sy_ckpt_writer_destroy(&w);
    assert_int_equal(count_prefix(root, ".tmp-"), 0);
    assert_int_equal(count_prefix(root, "step-"), 1);
    sy_ckpt *ck = sy_ckpt_open(P("%s/step-00000005", root));
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_count(ck), 1);
    assert_null(sy_ckpt_find(ck, "a"));
    int32_t got[2];
    assert_int_equal(sy_ckpt_read(ck, "only", got, sizeof got), 0);
    assert_int_equal(got[1], 22);
    sy_ckpt_close(&ck);
    assert_false(exists(P("%s/step-00000005/a.f32", root))); /* old files went with the old dir */
}

static void test_keep_prunes(void **state) {
    const char *root = *state;
    for (int s = 1; s <= 5; s++)
        write_small(root, s * 100, 2);
    int64_t *steps;
    size_t n;
    assert_int_equal(sy_ckpt_list(root, &steps, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(steps[0], 400);
    assert_int_equal(steps[1], 500);
    free(steps);
    assert_int_equal(count_prefix(root, ".tmp-"), 0);
    assert_small_ok(P("%s/step-00000400", root), 400);

    /* an incomplete newer-looking checkpoint is not counted as one of the kept */
    write_small(root, 600, 0);
    truncate_to(P("%s/step-00000600/b.i32", root), 3);
    write_small(root, 550, 2); /* newest complete: 550 (this one) and 500 */
    assert_int_equal(sy_ckpt_list(root, &steps, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(steps[0], 500);
    assert_int_equal(steps[1], 550);
    assert_int_equal(steps[2], 600);
    free(steps);

    /* keep 1: the checkpoint just committed always survives */
    write_small(root, 700, 1);
    assert_int_equal(sy_ckpt_list(root, &steps, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(steps[0], 700);
    free(steps);

    /* names that only look like checkpoints are left alone */
    assert_int_equal(mkdir(P("%s/step-7", root), 0755), 0);
    assert_int_equal(mkdir(P("%s/step-00000001x", root), 0755), 0);
    write_small(root, 800, 1);
    assert_true(exists(P("%s/step-7", root)));
    assert_true(exists(P("%s/step-00000001x", root)));
    assert_false(exists(P("%s/step-00000700", root)));
}

/* ------------------------------------------------------------------ corruption */

static void test_bit_flip_detected(void **state) {
    const char *root = *state;
    write_small(root, 1, 0);
    PATH(dir, "%s/step-00000001", root);
    flip_bit(P("%s/a.f32", dir), 13, 2);
    sy_ckpt *ck = sy_ckpt_open(dir); /* the manifest is fine */
    assert_non_null(ck);
    float a[6];
    assert_int_equal(sy_ckpt_read(ck, "a", a, sizeof a), -1);
    assert_err_has("tensor a:");
    assert_err_has("a.f32");
    assert_err_has("checksum mismatch");
    int32_t b[4];
    assert_int_equal(sy_ckpt_read(ck, "b", b, sizeof b), 0); /* the other tensor is fine */
    assert_int_equal(b[3], -4);
    assert_int_equal(sy_ckpt_verify(ck), 1);
    assert_err_has("tensor a:");
    assert_int_equal(sy_ckpt_verify_tensor(ck, 0), -1);
    assert_int_equal(sy_ckpt_verify_tensor(ck, 1), 0);
    sy_ckpt_close(&ck);

    /* a flipped bit in the config is caught at open */
    write_small(root, 2, 0);
    const char *cfg = "a: 1\n";
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 3);
    assert_int_equal(sy_ckpt_writer_set_config(w, cfg, strlen(cfg)), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    sy_ckpt_writer_destroy(&w);
    flip_bit(P("%s/step-00000003/config.yaml", root), 0, 0);
    assert_null(sy_ckpt_open(P("%s/step-00000003", root)));
    assert_err_has("config.yaml");
}

static void test_truncated_tensor(void **state) {
    const char *root = *state;
    write_small(root, 1, 0);
    PATH(dir, "%s/step-00000001", root);
    truncate_to(P("%s/b.i32", dir), 10);
    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    int32_t b[4];
    assert_int_equal(sy_ckpt_read(ck, "b", b, sizeof b), -1);
    assert_err_has("tensor b:");
    assert_err_has("10 bytes");
    assert_int_equal(sy_ckpt_verify(ck), 1);
    /* longer than it should be is wrong too */
    write_file(P("%s/b.i32", dir), "0123456789abcdefXYZ", 19);
    assert_int_equal(sy_ckpt_read(ck, "b", b, sizeof b), -1);
    assert_err_has("19 bytes");
    /* missing */
    assert_int_equal(unlink(P("%s/b.i32", dir)), 0);
    assert_int_equal(sy_ckpt_read(ck, "b", b, sizeof b), -1);
    assert_err_has("tensor b:");
    assert_int_equal(sy_ckpt_verify(ck), 1);
    sy_ckpt_close(&ck);
}

static void test_truncated_manifest(void **state) {
    const char *root = *state;
    write_small(root, 1, 0);
    PATH(dir, "%s/step-00000001", root);
    PATH(mpath, "%s/step-00000001/manifest", root);
    size_t n;
    char *orig = read_whole(mpath, &n);
    /* cut at every length short of complete: never accepted */
    for (size_t cut = 0; cut < n; cut++) {
        write_file(mpath, orig, cut);
        sy_ckpt *ck = sy_ckpt_open(dir);
        if (ck)
            fail_msg("manifest cut to %zu of %zu bytes was accepted", cut, n);
        assert_err_has("manifest");
    }
    /* a cut that ends on a line boundary in the tensor list (a plausible smaller
     * checkpoint): rejected by the checksum line */
    char *tl = strstr(orig, "tensor b ");
    assert_non_null(tl);
    write_file(mpath, orig, (size_t)(tl - orig));
    assert_null(sy_ckpt_open(dir));
    assert_err_has("truncated");
    /* one edited byte (a bigger size): checksum mismatch */
    char *ed = strdup(orig);
    char *sz = strstr(ed, " 24 ");
    assert_non_null(sz);
    sz[2] = '5';
    write_file(mpath, ed, n);
    assert_null(sy_ckpt_open(dir));
    assert_err_has("checksum mismatch");
    free(ed);
    /* bytes after the checksum line */
    char *more = malloc(n + 8);
    memcpy(more, orig, n);
    memcpy(more + n, "extra\n", 6);
    write_file(mpath, more, n + 6);
    assert_null(sy_ckpt_open(dir));
    free(more);
    /* missing */
    unlink(mpath);
    assert_null(sy_ckpt_open(dir));
    assert_err_has("manifest");
    /* intact again: fine */
    write_file(mpath, orig, n);
    assert_small_ok(dir, 1);
    free(orig);
}

/* Manifests that pass the checksum but lie: each must be refused, never crash. */
static void test_hostile_manifests(void **state) {
    const char *root = *state;
    PATH(dir, "%s/step-00000004", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    write_file(P("%s/x.u8", dir), "ab", 2);
    static const struct {
        const char *body, *err;
    } cases[] = {
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 00000000 ../x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 00000000 .hidden\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 00000000 manifest\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 3 00000000 x.u8\n", "does not match"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x f32 [4611686018427387904,8] 0 00000000 x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [-2] 2 00000000 x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [1,1,1,1,1,1,1,1,2] 2 00000000 x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 00000000 x.u8\ntensor x u8 [2] 2 00000000 y.u8\n", "twice"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 00000000 x.u8\ntensor y u8 [2] 2 00000000 x.u8\n", "two tensors"},
        {"switchyard-checkpoint 2\nstep 4\n", "version 2"},
        {"switchyard-checkpoint 1\nstep -4\n", ":2:"},
        {"switchyard-checkpoint 1\nstep 5\n", "step 5"},
        {"switchyard-checkpoint 1\nstep 4\nfrobnicate 1\n", "unknown"},
        {"switchyard-checkpoint 1\nstep 4\nmeta k  v\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\nmeta k a%00b\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\nmeta k a%zz\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\nmeta k 1\nmeta k 2\n", "repeated"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2] 2 0000000G x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u9 [2] 2 00000000 x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\ntensor x u8 [2 2 00000000 x.u8\n", ":3:"},
        {"switchyard-checkpoint 1\nstep 4\nconfig 5 00000000 other.yaml\n", ":3:"},
        {"yaml: 1\nstep 4\n", ":1:"},
        {"switchyard-checkpoint 1\n", "no step"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[512];
        size_t len = strlen(cases[i].body);
        memcpy(buf, cases[i].body, len);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "crc32c %08x\n",
                                sy_crc32c(0, cases[i].body, len));
        write_file(P("%s/manifest", dir), buf, len);
        sy_ckpt *ck = sy_ckpt_open(dir);
        if (ck)
            fail_msg("case %zu accepted: %s", i, cases[i].body);
        if (!strstr(sy_lasterr(), cases[i].err))
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, sy_lasterr(), cases[i].err);
    }
    /* NUL byte inside an otherwise well-sealed manifest */
    char nul[] = "switchyard-checkpoint 1\nstep 4\nmeta k a\0b\n";
    size_t len = sizeof nul - 1;
    char buf[256];
    memcpy(buf, nul, len);
    len += (size_t)snprintf(buf + len, sizeof buf - len, "crc32c %08x\n", sy_crc32c(0, nul, len));
    write_file(P("%s/manifest", dir), buf, len);
    assert_null(sy_ckpt_open(dir));
    /* sanity: the same directory with an honest manifest opens */
    char ok[256];
    const char *body = "switchyard-checkpoint 1\nstep 4\n";
    snprintf(ok, sizeof ok, "%stensor x u8 [2] 2 %08x x.u8\n", body, sy_crc32c(0, "ab", 2));
    len = strlen(ok);
    snprintf(ok + len, sizeof ok - len, "crc32c %08x\n", sy_crc32c(0, ok, len));
    write_file(P("%s/manifest", dir), ok, strlen(ok));
    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_verify(ck), 0);
    sy_ckpt_close(&ck);
}

static void test_latest_skips_corrupt(void **state) {
    const char *root = *state;
    char out[PATH_MAX];
    int64_t step = -1;
    assert_int_equal(sy_ckpt_latest(P("%s/nonexistent", root), out, sizeof out, &step), 1);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 1);
    write_small(root, 10, 0);
    write_small(root, 20, 0);
    write_small(root, 30, 0);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 0);
    assert_int_equal(step, 30);
    /* corrupt tensor in the newest: the previous one is chosen */
    flip_bit(P("%s/step-00000030/b.i32", root), 0, 7);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 0);
    assert_int_equal(step, 20);
    assert_string_equal(out, P("%s/step-00000020", root));
    /* truncated manifest in that one too: the one before */
    PATH(m20, "%s/step-00000020/manifest", root);
    struct stat st;
    assert_int_equal(stat(m20, &st), 0);
    truncate_to(m20, st.st_size - 5);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 0);
    assert_int_equal(step, 10);
    /* partial: a step directory without its manifest */
    assert_int_equal(unlink(P("%s/step-00000010/manifest", root)), 0);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 1);
    /* buffer too small is an error, not a truncated path */
    write_small(root, 40, 0);
    assert_int_equal(sy_ckpt_latest(root, out, 5, &step), -1);
    assert_int_equal(sy_ckpt_latest(root, NULL, 0, &step), 0);
    assert_int_equal(step, 40);
}

/* A writer killed before commit (child process _exit()s) leaves a .tmp dir that is not
 * a checkpoint and is removed by the next commit; a live writer's dir is kept. */
static void test_crashed_writer(void **state) {
    const char *root = *state;
    write_small(root, 1, 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sy_ckpt_writer *w = sy_ckpt_writer_new(root, 2);
        float a[1000];
        int64_t s[1] = {1000};
        for (int i = 0; i < 1000; i++)
            a[i] = (float)i;
        int ok = w && sy_ckpt_writer_add(w, "a", SY_DT_F32, 1, s, a, sizeof a) == 0 &&
                 sy_ckpt_writer_add(w, "b", SY_DT_F32, 1, s, a, sizeof a) == 0 &&
                 sy_ckpt_writer_set(w, "run_id", "doomed") == 0;
        _exit(ok ? 0 : 3); /* "crash": no commit, no cleanup */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(count_prefix(root, ".tmp-step-00000002-"), 1);
    assert_false(exists(P("%s/step-00000002", root)));
    char out[PATH_MAX];
    int64_t step;
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 0);
    assert_int_equal(step, 1);

    /* a writer that is alive in this process survives someone else's commit */
    sy_ckpt_writer *live = sy_ckpt_writer_new(root, 9);
    assert_non_null(live);
    float v = 1.0f;
    assert_int_equal(sy_ckpt_writer_add(live, "v", SY_DT_F32, 0, NULL, &v, 4), 0);
    usleep(20000); /* so the next writer starts in a later file-system clock tick */

    write_small(root, 3, 0);
    assert_int_equal(count_prefix(root, ".tmp-step-00000002-"), 0);
    assert_int_equal(count_prefix(root, ".tmp-step-00000009-"), 1);
    assert_int_equal(sy_ckpt_writer_commit(live, 0), 0);
    sy_ckpt_writer_destroy(&live);
    assert_int_equal(count_prefix(root, ".tmp-"), 0);
    assert_small_ok(P("%s/step-00000001", root), 1);
    assert_small_ok(P("%s/step-00000003", root), 3);
    assert_int_equal(sy_ckpt_latest(root, out, sizeof out, &step), 0);
    assert_int_equal(step, 9);
}

static void test_empty_tensor(void **state) {
    const char *root = *state;
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 0);
    int64_t s[1] = {0};
    assert_int_equal(sy_ckpt_writer_add(w, "nothing", SY_DT_BF16, 1, s, NULL, 0), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 1), 0);
    sy_ckpt_writer_destroy(&w);
    PATH(dir, "%s/step-00000000", root);
    struct stat st;
    assert_int_equal(stat(P("%s/nothing.bf16", dir), &st), 0);
    assert_int_equal(st.st_size, 0);
    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_verify(ck), 0);
    char dummy;
    assert_int_equal(sy_ckpt_read(ck, "nothing", &dummy, 0), 0);
    sy_ckpt_close(&ck);
    /* a checkpoint with no tensors at all is valid too */
    w = sy_ckpt_writer_new(root, 1);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    sy_ckpt_writer_destroy(&w);
    ck = sy_ckpt_open(P("%s/step-00000001", root));
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_count(ck), 0);
    sy_ckpt_close(&ck);
}

static void test_bad_writer_input(void **state) {
    const char *root = *state;
    assert_null(sy_ckpt_writer_new(root, -1));
    assert_null(sy_ckpt_writer_new("", 1));
    write_file(P("%s/afile", root), "x", 1);
    assert_null(sy_ckpt_writer_new(P("%s/afile", root), 1)); /* root is a file */
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 1);
    assert_non_null(w);
    float a[6] = {0};
    int64_t sa[2] = {2, 3}, neg[2] = {-2, -3}, huge[2] = {INT64_MAX, 4};
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, 20), -1);
    assert_err_has("24");
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, neg, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, huge, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 9, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "a", (sy_dtype)99, 2, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "has space", SY_DT_F32, 2, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "", SY_DT_F32, 2, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "new\nline", SY_DT_F32, 2, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, NULL, SY_DT_F32, 2, sa, a, 24), -1);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, NULL, 24), -1);
    char longname[SY_CKPT_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(sy_ckpt_writer_add(w, longname, SY_DT_F32, 2, sa, a, 24), -1);
    /* a name whose escaped file name would pass NAME_MAX is refused, not truncated */
    char slashes[SY_CKPT_MAX_NAME + 1];
    memset(slashes, '/', SY_CKPT_MAX_NAME);
    slashes[SY_CKPT_MAX_NAME] = 0;
    assert_int_equal(sy_ckpt_writer_add(w, slashes, SY_DT_F32, 2, sa, a, 24), -1);
    assert_err_has("too long");
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, 24), 0);
    assert_int_equal(sy_ckpt_writer_add(w, "a", SY_DT_F32, 2, sa, a, 24), -1);
    assert_err_has("twice");
    assert_int_equal(sy_ckpt_writer_set(w, "bad key", "v"), -1);
    assert_int_equal(sy_ckpt_writer_set(w, "", "v"), -1);
    assert_int_equal(sy_ckpt_writer_set(w, "k=v", "v"), -1);
    assert_int_equal(sy_ckpt_writer_set_config(w, "a", 1), 0);
    assert_int_equal(sy_ckpt_writer_set_config(w, "b", 1), -1);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), -1); /* only once */
    sy_ckpt_writer_destroy(&w);
    sy_ckpt *ck = sy_ckpt_open(P("%s/step-00000001", root));
    assert_non_null(ck);
    assert_int_equal(sy_ckpt_verify(ck), 0);
    sy_ckpt_close(&ck);
}

static void test_add_crc(void **state) {
    const char *root = *state;
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 1);
    uint8_t shard[9] = "123456789";
    int64_t s[1] = {9};
    assert_int_equal(sy_ckpt_writer_add_crc(w, "good", SY_DT_U8, 1, s, shard, 9, 0xE3069283u), 0);
    assert_int_equal(sy_ckpt_writer_add_crc(w, "bad", SY_DT_U8, 1, s, shard, 9, 0xE3069282u), -1);
    assert_err_has("bad");
    assert_int_equal(count_prefix(root, ".tmp-"), 1);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    sy_ckpt_writer_destroy(&w);
    assert_false(exists(P("%s/step-00000001/bad.u8", root)));
    sy_ckpt *ck = sy_ckpt_open(P("%s/step-00000001", root));
    assert_int_equal(sy_ckpt_count(ck), 1);
    assert_int_equal(sy_ckpt_find(ck, "good")->crc, 0xE3069283u);
    sy_ckpt_close(&ck);
}

/* ------------------------------------------------------------------ throughput */

static void test_throughput(void **state) {
    const char *root = *state;
    const char *env = getenv("SY_CKPT_BENCH_MB");
    int mb = env ? atoi(env) : 16;
    if (mb < 1)
        mb = 1;
    const int nt = 8;
    size_t per = (size_t)mb * 1000000 / nt / 4 * 4; /* bytes per tensor, f32 */
    float *data = malloc(per), *back = malloc(per);
    assert_non_null(data);
    assert_non_null(back);
    for (size_t i = 0; i < per / 4; i++)
        data[i] = (float)(i % 9973) * 0.25f;
    sy_ckpt_writer *w = sy_ckpt_writer_new(root, 1);
    int64_t s[1] = {(int64_t)(per / 4)};
    for (int t = 0; t < nt; t++) {
        data[0] = (float)t;
        assert_int_equal(sy_ckpt_writer_add(w, P("layers.%d.w", t), SY_DT_F32, 1, s, data, per), 0);
    }
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    uint64_t bytes;
    double secs;
    sy_ckpt_writer_stats(w, &bytes, &secs);
    sy_ckpt_writer_destroy(&w);
    assert_true(bytes >= (uint64_t)per * nt);

    sy_ckpt *ck = sy_ckpt_open(P("%s/step-00000001", root));
    assert_non_null(ck);
    double t0 = sy_now();
    for (int t = 0; t < nt; t++) {
        assert_int_equal(sy_ckpt_read(ck, P("layers.%d.w", t), back, per), 0);
        assert_true(back[0] == (float)t);
    }
    double warm = sy_now() - t0;
    /* drop these files from the page cache (clean after fsync) to time a cold read */
    for (int t = 0; t < nt; t++) {
        int fd = open(P("%s/step-00000001/layers.%d.w.f32", root, t), O_RDONLY);
        assert_true(fd >= 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    t0 = sy_now();
    for (int t = 0; t < nt; t++)
        assert_int_equal(sy_ckpt_read(ck, P("layers.%d.w", t), back, per), 0);
    double cold = sy_now() - t0;
    assert_memory_equal(back + 1, data + 1, per - 4);
    sy_ckpt_close(&ck);
    double total = (double)per * nt;
    print_message("checkpoint %.0f MB in %d tensors: write+fsync+commit %.0f MB/s (%.3f s), "
                  "read+crc warm %.0f MB/s, cold %.0f MB/s\n",
                  total / 1e6, nt, bytes / secs / 1e6, secs, total / warm / 1e6, total / cold / 1e6);
    free(data);
    free(back);
}

int main(void) {
    sy_log_set_level(SY_LOG_ERROR); /* expected warnings (skipped checkpoints) stay quiet */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_manifest_format, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_abort_and_uncommitted, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_replace_same_step, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_keep_prunes, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bit_flip_detected, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_truncated_tensor, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_truncated_manifest, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_hostile_manifests, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_latest_skips_corrupt, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_crashed_writer, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_empty_tensor, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bad_writer_input, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_add_crc, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_throughput, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
