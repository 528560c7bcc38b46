/* tmpdir.h: a scratch directory per test (cmocka setup/teardown) and small file helpers,
 * shared by every test that writes files. Include after <cmocka.h>; define
 * SY_TMPDIR_NAME (e.g. "data") first to name the directory $TMPDIR/sy_test_NAME.XXXXXX
 * ($TMPDIR defaults to /tmp).
 *
 * setup_tmp / teardown_tmp work as a group fixture (one directory for all tests) or as a
 * per-test fixture (a fresh directory each); setup_tmp also hands the directory to the
 * test as *state. Teardown removes the directory and everything in it, never following
 * symbolic links out of it. */
#ifndef SY_TESTS_TMPDIR_H
#define SY_TESTS_TMPDIR_H

#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#error "tmpdir.h uses nftw(): #define _GNU_SOURCE before the first #include"
#endif

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define SY_TMP_UNUSED __attribute__((unused))

static char g_tmp[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static SY_TMP_UNUSED int setup_tmp(void **state) {
    const char *base = getenv("TMPDIR");
    if (!base || !base[0])
        base = "/tmp";
    snprintf(g_tmp, sizeof g_tmp, "%s/sy_test_%s.XXXXXX", base, SY_TMPDIR_NAME);
    if (!mkdtemp(g_tmp)) {
        print_error("cannot make a scratch directory %s\n", g_tmp);
        g_tmp[0] = 0;
        return -1;
    }
    if (state)
        *state = g_tmp;
    return 0;
}

static SY_TMP_UNUSED int teardown_tmp(void **state) {
    (void)state;
    if (g_tmp[0])
        nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    g_tmp[0] = 0;
    return 0;
}

/* g_tmp/rel (eight results can be live at once) */
static SY_TMP_UNUSED const char *tpath(const char *rel) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", g_tmp, rel);
    return b;
}

static SY_TMP_UNUSED void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* the whole of path, NUL-terminated (the caller frees it); its length in *n */
static SY_TMP_UNUSED char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    b[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

#endif
