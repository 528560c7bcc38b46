/* test_fsutil.c: the shared file helpers (common/base/fsutil.c) on a real file system:
 * mkdir -p over existing and missing levels and a file in the way; whole-file reads
 * with and without a size limit, of empty files and of things that are not regular
 * files; atomic replacement that leaves no temporary behind; create-only writes; which
 * directories count as private. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

#define SY_TMPDIR_NAME "fsutil"
#include "tmpdir.h"

static void assert_err_has(const char *needle) {
    if (!strstr(sy_lasterr(), needle))
        fail_msg("error \"%s\" does not mention \"%s\"", sy_lasterr(), needle);
}

static void test_mkdirs(void **state) {
    (void)state;
    struct stat st;
    assert_int_equal(sy_mkdirs(tpath("a/b/c")), 0);
    assert_int_equal(stat(tpath("a/b/c"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(sy_mkdirs(tpath("a/b/c")), 0); /* already there */
    assert_int_equal(sy_mkdirs(tpath("a/b/")), 0);  /* trailing slash */
    write_file(tpath("a/file"), "x", 1);
    assert_int_equal(sy_mkdirs(tpath("a/file")), -1); /* a file where the directory goes */
    assert_err_has("a/file");
    assert_err_has("not a directory");
    assert_int_equal(sy_mkdirs(tpath("a/file/sub")), -1); /* a file on the way */
    assert_err_has("a/file");
}

static void test_dir_private(void **state) {
    (void)state;
    assert_int_equal(mkdir(tpath("p"), 0700), 0);
    assert_int_equal(chmod(tpath("p"), 0700), 0); /* whatever the umask */
    assert_int_equal(sy_dir_private(tpath("p")), 1);
    assert_int_equal(chmod(tpath("p"), 0750), 0);
    assert_int_equal(sy_dir_private(tpath("p")), 0); /* the group may enter */
    assert_int_equal(chmod(tpath("p"), 0701), 0);
    assert_int_equal(sy_dir_private(tpath("p")), 0); /* others may pass through */
    assert_int_equal(chmod(tpath("p"), 0700), 0);
    assert_int_equal(symlink(tpath("p"), tpath("link")), 0);
    assert_int_equal(sy_dir_private(tpath("link")), 0); /* a link to one is not one */
    write_file(tpath("pf"), "x", 1);
    assert_int_equal(chmod(tpath("pf"), 0600), 0);
    assert_int_equal(sy_dir_private(tpath("pf")), 0); /* not a directory */
    assert_int_equal(sy_dir_private(tpath("missing")), 0);
}

static void test_read_file(void **state) {
    (void)state;
    char *buf;
    size_t n;
    write_file(tpath("r.txt"), "hello\0world", 11);
    assert_int_equal(sy_read_file(tpath("r.txt"), 0, &buf, &n), 0);
    assert_int_equal(n, 11);
    assert_memory_equal(buf, "hello\0world", 11);
    assert_int_equal(buf[11], 0); /* the spare NUL */
    free(buf);
    assert_int_equal(sy_read_file(tpath("r.txt"), 11, &buf, &n), 0); /* at the limit */
    free(buf);
    assert_int_equal(sy_read_file(tpath("r.txt"), 10, &buf, &n), -1); /* over it */
    assert_null(buf);
    assert_err_has("r.txt");
    assert_err_has("limit of 10");
    assert_int_equal(sy_write_atomic(tpath("empty"), "", 0), 0);
    assert_int_equal(sy_read_file(tpath("empty"), 0, &buf, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(buf[0], 0);
    free(buf);
    assert_int_equal(sy_read_file(tpath("missing"), 0, &buf, &n), -1);
    assert_err_has("missing");
    assert_err_has("cannot open");
    assert_int_equal(sy_read_file(g_tmp, 0, &buf, &n), -1);
    assert_err_has("not a regular file");
}

static void test_write_atomic(void **state) {
    (void)state;
    char *buf;
    size_t n;
    assert_int_equal(sy_write_atomic(tpath("w.bin"), "first version", 13), 0);
    assert_int_equal(sy_write_atomic(tpath("w.bin"), "second", 6), 0); /* replaced, not appended */
    assert_int_equal(sy_read_file(tpath("w.bin"), 0, &buf, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "second", 6);
    free(buf);
    char tmp[600];
    struct stat st;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", tpath("w.bin"), (long)getpid());
    assert_int_not_equal(stat(tmp, &st), 0); /* no temporary left */
    assert_int_equal(sy_write_atomic(tpath("no/such/dir/w.bin"), "x", 1), -1);
    assert_err_has("no/such/dir/w.bin");
    assert_int_equal(sy_write_atomic("w-in-cwd-is-not-written-by-this-test/x", "x", 1), -1);
}

static void test_write_new(void **state) {
    (void)state;
    char *buf;
    size_t n;
    assert_int_equal(sy_write_new(tpath("n.bin"), "abc", 3), 0);
    assert_int_equal(sy_write_new(tpath("n.bin"), "xyz", 3), -1); /* never overwrites */
    assert_err_has("n.bin");
    assert_int_equal(sy_read_file(tpath("n.bin"), 0, &buf, &n), 0);
    assert_memory_equal(buf, "abc", 3);
    free(buf);
    assert_int_equal(sy_fsync_dir(g_tmp), 0);
    assert_int_equal(sy_fsync_dir(tpath("n.bin")), -1); /* not a directory */
    assert_err_has("n.bin");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mkdirs),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_write_atomic),
        cmocka_unit_test(test_write_new),
        cmocka_unit_test(test_dir_private),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
