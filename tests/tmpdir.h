/* tmpdir.h: a scratch directory per test (cmocka setup/teardown) and small file helpers,
 * shared by the tests that write files. Include after <cmocka.h>; define
 * SY_TMPDIR_NAME (e.g. "data") first to name the directory /tmp/sy_test_NAME.XXXXXX. */
#ifndef SY_TESTS_TMPDIR_H
#define SY_TESTS_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char g_tmp[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup_tmp(void **state) {
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/sy_test_%s.XXXXXX", SY_TMPDIR_NAME);
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown_tmp(void **state) {
    (void)state;
    nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* g_tmp/rel (eight results can be live at once) */
static const char *tpath(const char *rel) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", g_tmp, rel);
    return b;
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

#endif
