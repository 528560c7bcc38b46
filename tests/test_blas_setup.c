/* test_blas_setup.c: the CPU-feature -> OpenBLAS kernel mapping (pure, synthetic feature
 * sets), the feature detection against GCC's own, and sy_blas_setup in real processes: this
 * binary re-runs itself as a child (`--child MODE`) under a controlled environment and
 * reports its kernel, thread count and how many times main() started (2 = one
 * re-execution; never more). Expectations follow only from this CPU's features and from
 * the kernel the library picks when left alone (`--raw`). Also: sgemm gives the same
 * numbers under the chosen kernel and the generic Prescott one, and the sgemm probe. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blas_setup.h"
#include "log.h"

extern char **environ;

/* ------------------------------------------------------------------ the child side */

/* the fixed sgemm problems: C1[M,N] = A[M,K] B[K,N], C2[M,M] = A[M,K] A^T */
enum { SG_M = 96, SG_K = 200, SG_N = 80 };

static void sgemm_inputs(float *a, float *b) {
    /* positive values in [0.5, 1.5): sums do not cancel, so relative error is meaningful */
    for (int i = 0; i < SG_M * SG_K; i++)
        a[i] = 0.5f + (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < SG_K * SG_N; i++)
        b[i] = 0.5f + (float)((i * 53) % 97) / 97.0f;
}

static int child_main(int argc, char **argv) {
    /* counted by the parent: one line per start of main(), re-executions included */
    printf("start %d\n", (int)getpid());
    fflush(stdout);
    const char *mode = argc > 2 ? argv[2] : "";
    if (!strcmp(mode, "raw")) { /* the library's own choice, no setup at all */
        printf("kernel=%s\n", openblas_get_corename());
        return 0;
    }
    if (sy_blas_setup(argc, argv, "blas-child")) {
        fprintf(stderr, "SETUP FAILED: %s\n", sy_lasterr());
        return 3;
    }
    const char *mark = getenv("SWITCHYARD_BLAS_AUTO_CORETYPE");
    printf("kernel=%s\nthreads=%d\nguard=%s\nmarker=%s\n", openblas_get_corename(), sy_blas_threads(),
           getenv("SWITCHYARD_BLAS_REEXEC") ? "set" : "unset", mark ? mark : "");
    if (!strcmp(mode, "sgemm")) {
        float *a = malloc(sizeof(float) * SG_M * SG_K), *b = malloc(sizeof(float) * SG_K * SG_N);
        float *c1 = malloc(sizeof(float) * SG_M * SG_N), *c2 = malloc(sizeof(float) * SG_M * SG_M);
        if (!a || !b || !c1 || !c2)
            return 4;
        sgemm_inputs(a, b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, SG_M, SG_N, SG_K, 1.0f, a, SG_K, b, SG_N, 0.0f, c1,
                    SG_N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, SG_M, SG_M, SG_K, 1.0f, a, SG_K, a, SG_K, 0.0f, c2,
                    SG_M);
        for (int i = 0; i < SG_M * SG_N; i++)
            printf("c1 %a\n", c1[i]);
        for (int i = 0; i < SG_M * SG_M; i++)
            printf("c2 %a\n", c2[i]);
        free(a), free(b), free(c1), free(c2);
    }
    return 0;
}

/* ------------------------------------------------------------------ the parent side */

typedef struct {
    int exited, code, signaled, sig;
    char *out, *err;
    int starts;
    char kernel[64];
    int threads;
} child_result;

static char *slurp(int fd) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    return buf;
}

static int is_blas_env(const char *kv) {
    static const char *prefixes[] = {"OPENBLAS_", "GOTO_", "OMP_NUM_THREADS=", "SWITCHYARD_BLAS",
                                     "SWITCHYARD_THREADS="};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (!strncmp(kv, prefixes[i], strlen(prefixes[i])))
            return 1;
    return 0;
}

/* Runs this binary as `--child mode` with the current environment minus every OpenBLAS /
 * switchyard BLAS variable, plus `vars` ("K=V", NULL-terminated). Kills it after 20 s. */
static void run_child(child_result *r, const char *mode, const char *const *vars) {
    memset(r, 0, sizeof *r);
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(len > 0);
    self[len] = 0;

    size_t n_env = 0, n_vars = 0;
    while (environ[n_env])
        n_env++;
    while (vars && vars[n_vars])
        n_vars++;
    char **envp = calloc(n_env + n_vars + 1, sizeof *envp);
    assert_non_null(envp);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (!is_blas_env(environ[i]))
            envp[k++] = environ[i];
    for (size_t i = 0; i < n_vars; i++)
        envp[k++] = (char *)vars[i];
    envp[k] = NULL;

    char out_path[] = "/tmp/sy_test_blas_out.XXXXXX", err_path[] = "/tmp/sy_test_blas_err.XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    assert_true(out_fd >= 0 && err_fd >= 0);
    unlink(out_path);
    unlink(err_path);
    char *argv[] = {self, "--child", (char *)mode, NULL};

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execve(self, argv, envp);
        _exit(127);
    }
    int status = 0;
    double deadline = sy_now() + 20.0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        assert_true(w == 0);
        if (sy_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("child '%s' still running after 20 s (exec loop or hang)", mode);
        }
        usleep(5000);
    }
    free(envp);
    r->exited = WIFEXITED(status);
    r->code = r->exited ? WEXITSTATUS(status) : -1;
    r->signaled = WIFSIGNALED(status);
    r->sig = r->signaled ? WTERMSIG(status) : 0;
    r->out = slurp(out_fd);
    r->err = slurp(err_fd);
    close(out_fd);
    close(err_fd);
    r->threads = -1;
    for (char *line = r->out; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        if (!strncmp(line, "start ", 6))
            r->starts++;
        else if (!strncmp(line, "kernel=", 7))
            snprintf(r->kernel, sizeof r->kernel, "%s", line + 7);
        else if (!strncmp(line, "threads=", 8))
            r->threads = atoi(line + 8);
        if (nl)
            *nl = '\n';
        line = nl ? nl + 1 : NULL;
    }
    if (r->signaled)
        print_error("child '%s' killed by signal %d\nstderr:\n%s\n", mode, r->sig, r->err);
}

static void free_child(child_result *r) {
    free(r->out);
    free(r->err);
}

/* The child ran sy_blas_setup successfully. */
static void assert_child_ok(const child_result *r) {
    if (!r->exited || r->code != 0)
        print_error("child failed: exited=%d code=%d signal=%d\nstdout:\n%.2000s\nstderr:\n%s\n", r->exited, r->code,
                    r->sig, r->out, r->err);
    assert_true(r->exited);
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "guard=unset")); /* the re-exec guard is not inherited */
}

/* The child refused to run: setup returned -1, exit 3, no signal, message contains all `needles`. */
static void assert_child_refused(const child_result *r, const char *n1, const char *n2) {
    if (!r->exited || r->code != 3)
        print_error("expected a refusal: exited=%d code=%d signal=%d\nstderr:\n%s\n", r->exited, r->code, r->sig,
                    r->err);
    assert_false(r->signaled);
    assert_true(r->exited);
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "SETUP FAILED"));
    if (n1 && !strstr(r->err, n1))
        fail_msg("error message lacks '%s': %s", n1, r->err);
    if (n2 && !strstr(r->err, n2))
        fail_msg("error message lacks '%s': %s", n2, r->err);
    assert_int_equal(r->starts, 1);
}

/* The kernel the library chooses by itself on this machine (no OPENBLAS_CORETYPE). */
static const char *raw_kernel(void) {
    static char k[64];
    if (!k[0]) {
        const char *vars[] = {"OPENBLAS_NUM_THREADS=1", NULL};
        child_result r;
        run_child(&r, "raw", vars);
        assert_true(r.exited && r.code == 0);
        assert_true(r.kernel[0]);
        snprintf(k, sizeof k, "%s", r.kernel);
        free_child(&r);
    }
    return k;
}

/* HASWELL and ZEN are one kernel for sgemm (see sy_blas_pick_core) */
static int avx2_pair(const char *a, const char *b) {
    int a2 = !strcasecmp(a, "haswell") || !strcasecmp(a, "zen");
    int b2 = !strcasecmp(b, "haswell") || !strcasecmp(b, "zen");
    return a2 && b2;
}

static int has_usable(unsigned f, unsigned isa, unsigned os) { return (f & isa) == isa && (f & os) == os; }

/* ------------------------------------------------------------------ pure mapping */

#define F_AVX2_OS (SY_CPU_AVX | SY_CPU_AVX2 | SY_CPU_FMA | SY_CPU_OS_AVX)
#define F_SKX                                                                                                \
    (F_AVX2_OS | SY_CPU_AVX512F | SY_CPU_AVX512VL | SY_CPU_AVX512BW | SY_CPU_AVX512DQ | SY_CPU_AVX512CD |       \
     SY_CPU_OS_AVX512)
#define F_OLD (SY_CPU_SSE3 | SY_CPU_SSSE3 | SY_CPU_SSE41 | SY_CPU_SSE42)

static void test_pick_core(void **state) {
    (void)state;
    /* nothing better than the library's own choice */
    assert_null(sy_blas_pick_core(0));
    assert_null(sy_blas_pick_core(F_OLD));
    assert_null(sy_blas_pick_core(F_OLD | SY_CPU_AVX | SY_CPU_OS_AVX));                   /* Sandy Bridge */
    assert_null(sy_blas_pick_core(F_OLD | SY_CPU_AVX | SY_CPU_AVX2 | SY_CPU_OS_AVX));     /* AVX2, no FMA */
    assert_null(sy_blas_pick_core(F_OLD | SY_CPU_AVX | SY_CPU_FMA | SY_CPU_OS_AVX));      /* FMA, no AVX2 */
    assert_null(sy_blas_pick_core(F_OLD | (F_AVX2_OS & ~SY_CPU_OS_AVX)));                 /* OS hides YMM */
    assert_null(sy_blas_pick_core(F_OLD | (F_SKX & ~SY_CPU_OS_AVX) | SY_CPU_AVX512BF16)); /* OS hides all */
    /* AVX2 + FMA */
    assert_string_equal(sy_blas_pick_core(F_OLD | F_AVX2_OS), "HASWELL");
    assert_string_equal(sy_blas_pick_core(F_OLD | F_AVX2_OS | SY_CPU_AMD_ZEN), "ZEN");
    assert_null(sy_blas_pick_core(SY_CPU_AMD_ZEN)); /* vendor alone means nothing */
    /* AVX-512 */
    assert_string_equal(sy_blas_pick_core(F_OLD | F_SKX), "SKYLAKEX");
    assert_string_equal(sy_blas_pick_core(F_OLD | F_SKX | SY_CPU_AVX512BF16), "COOPERLAKE");
    /* Zen 4 */
    assert_string_equal(sy_blas_pick_core(F_OLD | F_SKX | SY_CPU_AVX512BF16 | SY_CPU_AMD_ZEN), "COOPERLAKE");
    assert_string_equal(sy_blas_pick_core(F_OLD | F_SKX | SY_CPU_AMD_ZEN), "SKYLAKEX");
    /* one AVX-512 subset missing -> the AVX2 kernel, whatever else is there */
    static const unsigned subsets[] = {SY_CPU_AVX512F, SY_CPU_AVX512VL, SY_CPU_AVX512BW, SY_CPU_AVX512DQ,
                                       SY_CPU_AVX512CD};
    for (size_t i = 0; i < sizeof subsets / sizeof subsets[0]; i++) {
        assert_string_equal(sy_blas_pick_core(F_OLD | (F_SKX & ~subsets[i]) | SY_CPU_AVX512BF16), "HASWELL");
        assert_string_equal(sy_blas_pick_core(F_OLD | (F_SKX & ~subsets[i]) | SY_CPU_AMD_ZEN), "ZEN");
    }
    /* CPUID reports AVX-512 (and BF16) but the OS does not save ZMM state (XCR0) */
    assert_string_equal(sy_blas_pick_core(F_OLD | (F_SKX & ~SY_CPU_OS_AVX512) | SY_CPU_AVX512BF16), "HASWELL");
    /* BF16 without the AVX-512 base is not Cooper Lake */
    assert_string_equal(sy_blas_pick_core(F_OLD | F_AVX2_OS | SY_CPU_AVX512BF16), "HASWELL");
}

static void test_core_check(void **state) {
    (void)state;
    char miss[128];
    unsigned zen3 = F_OLD | F_AVX2_OS | SY_CPU_AMD_ZEN;
    assert_int_equal(sy_blas_core_check("HASWELL", zen3, miss, sizeof miss), 1);
    assert_string_equal(miss, "");
    assert_int_equal(sy_blas_core_check("zen", zen3, miss, sizeof miss), 1);      /* any case */
    assert_int_equal(sy_blas_core_check("Prescott", zen3, miss, sizeof miss), 1); /* as the library names it */
    assert_int_equal(sy_blas_core_check("SANDYBRIDGE", zen3, miss, sizeof miss), 1);
    assert_int_equal(sy_blas_core_check("COOPERLAKE", zen3, miss, sizeof miss), 0);
    assert_non_null(strstr(miss, "avx512bf16"));
    assert_non_null(strstr(miss, "avx512f"));
    assert_int_equal(sy_blas_core_check("SkylakeX", zen3, miss, sizeof miss), 0);
    assert_non_null(strstr(miss, "avx512f"));
    assert_null(strstr(miss, "avx512bf16"));
    assert_null(strstr(miss, "avx2")); /* only what is missing */
    assert_int_equal(sy_blas_core_check("BULLDOZER", zen3, miss, sizeof miss), 0);
    assert_string_equal(miss, "fma4");
    /* AVX-512 machine: SkylakeX yes, Cooperlake only with BF16 */
    assert_int_equal(sy_blas_core_check("SKYLAKEX", F_OLD | F_SKX, miss, sizeof miss), 1);
    assert_int_equal(sy_blas_core_check("COOPERLAKE", F_OLD | F_SKX, miss, sizeof miss), 0);
    assert_string_equal(miss, "avx512bf16");
    assert_int_equal(sy_blas_core_check("COOPERLAKE", F_OLD | F_SKX | SY_CPU_AVX512BF16, NULL, 0), 1);
    assert_int_equal(sy_blas_core_check("SAPPHIRERAPIDS", F_OLD | F_SKX | SY_CPU_AVX512BF16, NULL, 0), 0);
    /* the OS must save the registers, not just the CPU have them */
    assert_int_equal(sy_blas_core_check("SKYLAKEX", F_OLD | (F_SKX & ~SY_CPU_OS_AVX512), miss, sizeof miss), 0);
    assert_non_null(strstr(miss, "os-avx512-state"));
    assert_int_equal(sy_blas_core_check("HASWELL", F_OLD | (F_AVX2_OS & ~SY_CPU_OS_AVX), miss, sizeof miss), 0);
    assert_non_null(strstr(miss, "os-avx-state"));
    /* an old CPU */
    assert_int_equal(sy_blas_core_check("HASWELL", F_OLD, miss, sizeof miss), 0);
    assert_int_equal(sy_blas_core_check("NEHALEM", F_OLD, NULL, 0), 1);
    assert_int_equal(sy_blas_core_check("NEHALEM", SY_CPU_SSE3, miss, sizeof miss), 0);
    /* unknown names */
    assert_int_equal(sy_blas_core_check("bogus", zen3, miss, sizeof miss), -1);
    assert_int_equal(sy_blas_core_check("", zen3, NULL, 0), -1);
    assert_int_equal(sy_blas_core_check(NULL, zen3, NULL, 0), -1);
    assert_int_equal(sy_blas_core_check("HASWELLX", zen3, NULL, 0), -1);
    /* a tiny buffer truncates, never overflows */
    char tiny[5];
    assert_int_equal(sy_blas_core_check("COOPERLAKE", zen3, tiny, sizeof tiny), 0);
    assert_true(strlen(tiny) < sizeof tiny);
}

/* Our CPUID/XGETBV reading agrees with GCC's (libgcc also checks the OS register state). */
static void test_features_match_gcc(void **state) {
    (void)state;
    unsigned f = sy_cpu_features_mask();
    __builtin_cpu_init();
    assert_int_equal(has_usable(f, SY_CPU_AVX, SY_CPU_OS_AVX), !!__builtin_cpu_supports("avx"));
    assert_int_equal(has_usable(f, SY_CPU_AVX2, SY_CPU_OS_AVX), !!__builtin_cpu_supports("avx2"));
    assert_int_equal(has_usable(f, SY_CPU_FMA, SY_CPU_OS_AVX), !!__builtin_cpu_supports("fma"));
    assert_int_equal(!!(f & SY_CPU_SSE42), !!__builtin_cpu_supports("sse4.2"));
    assert_int_equal(has_usable(f, SY_CPU_AVX512F, SY_CPU_OS_AVX512), !!__builtin_cpu_supports("avx512f"));
    assert_int_equal(has_usable(f, SY_CPU_AVX512VL, SY_CPU_OS_AVX512), !!__builtin_cpu_supports("avx512vl"));
    assert_int_equal(has_usable(f, SY_CPU_AVX512BW, SY_CPU_OS_AVX512), !!__builtin_cpu_supports("avx512bw"));
    assert_int_equal(has_usable(f, SY_CPU_AVX512DQ, SY_CPU_OS_AVX512), !!__builtin_cpu_supports("avx512dq"));
    assert_int_equal(has_usable(f, SY_CPU_AVX512BF16, SY_CPU_OS_AVX512), !!__builtin_cpu_supports("avx512bf16"));
    const char *s = sy_cpu_features();
    assert_true(s && *s);
    assert_int_equal(strstr(s, "avx2") != NULL, !!__builtin_cpu_supports("avx2"));
    assert_int_equal(strstr(s, "avx512bf16") != NULL, !!__builtin_cpu_supports("avx512bf16"));
    print_message("cpu: %s; pick: %s; library's own kernel: %s\n", s,
                  sy_blas_pick_core(f) ? sy_blas_pick_core(f) : "(none)", raw_kernel());
}

/* ------------------------------------------------------------------ real processes */

static void test_auto(void **state) {
    (void)state;
    const char *pick = sy_blas_pick_core(sy_cpu_features_mask());
    const char *raw = raw_kernel();
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    child_result r;
    run_child(&r, "auto", vars);
    assert_child_ok(&r);
    if (pick) {
        if (!avx2_pair(r.kernel, pick))
            assert_true(strcasecmp(r.kernel, pick) == 0);
        /* one re-execution exactly when the library's own choice was not it */
        int needed = !(avx2_pair(raw, pick) || !strcasecmp(raw, pick));
        assert_int_equal(r.starts, needed ? 2 : 1);
        assert_non_null(strstr(r.err, "chosen automatically"));
    } else {
        assert_string_equal(r.kernel, raw);
        assert_int_equal(r.starts, 1);
    }
    char line[160];
    snprintf(line, sizeof line, "openblas: kernel %s (cpu: %s; ", r.kernel, sy_cpu_features());
    if (!strstr(r.err, line))
        fail_msg("log line '%s...' not found in: %s", line, r.err);
    assert_non_null(strstr(r.err, "), 1 thread\n"));
    /* exactly one info line from setup */
    assert_null(strstr(strstr(r.err, "openblas: kernel") + 1, "openblas: kernel"));
    free_child(&r);
}

/* A user's OPENBLAS_CORETYPE that the CPU can run is respected, without re-execution. */
static void test_user_coretype_respected(void **state) {
    (void)state;
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=PRESCOTT", NULL};
    child_result r;
    run_child(&r, "user", vars);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, "Prescott");
    assert_int_equal(r.starts, 1);
    assert_non_null(strstr(r.err, "set by OPENBLAS_CORETYPE"));
    free_child(&r);

    /* it also wins over SWITCHYARD_BLAS_CORE, with a warning */
    const char *vars2[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=PRESCOTT", "SWITCHYARD_BLAS_CORE=NEHALEM",
                           NULL};
    run_child(&r, "user2", vars2);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, "Prescott");
    assert_int_equal(r.starts, 1);
    assert_non_null(strstr(r.err, "SWITCHYARD_BLAS_CORE=NEHALEM ignored"));
    free_child(&r);

    /* a marker left from an earlier automatic choice that no longer matches
     * OPENBLAS_CORETYPE: the value is the user's, and the stale marker is dropped so the
     * programs this one starts do not mistake it either */
    const char *vars3[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=PRESCOTT",
                           "SWITCHYARD_BLAS_AUTO_CORETYPE=HASWELL", NULL};
    run_child(&r, "user3", vars3);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, "Prescott");
    assert_int_equal(r.starts, 1);
    assert_non_null(strstr(r.err, "set by OPENBLAS_CORETYPE"));
    assert_non_null(strstr(r.out, "marker=\n"));
    free_child(&r);
}

/* COOPERLAKE on a CPU without AVX-512 BF16: a clear error, not SIGILL later. */
static void test_user_coretype_cooperlake_refused(void **state) {
    (void)state;
    unsigned f = sy_cpu_features_mask();
    if (sy_blas_core_check("COOPERLAKE", f, NULL, 0) == 1) {
        print_message("skipped: this CPU has AVX-512 BF16, so COOPERLAKE is a valid choice here\n");
        skip();
    }
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=COOPERLAKE", NULL};
    child_result r;
    run_child(&r, "cooperlake", vars);
    assert_child_refused(&r, "OPENBLAS_CORETYPE=COOPERLAKE", "avx512bf16");
    assert_non_null(strstr(r.err, "Unset OPENBLAS_CORETYPE"));
    free_child(&r);
}

/* SKYLAKEX on a CPU without usable AVX-512 (with Debian's OpenBLAS 0.3.21 this one really
 * is loaded and dies of SIGILL at the first sgemm). */
static void test_user_coretype_skylakex_refused(void **state) {
    (void)state;
    if (sy_blas_core_check("SKYLAKEX", sy_cpu_features_mask(), NULL, 0) == 1) {
        print_message("skipped: this CPU runs AVX-512, so SKYLAKEX is a valid choice here\n");
        skip();
    }
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=skylakex", NULL};
    child_result r;
    run_child(&r, "skylakex", vars);
    assert_child_refused(&r, "OPENBLAS_CORETYPE=skylakex", "avx512f");
    free_child(&r);

    const char *vars2[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_CORE=SKYLAKEX", NULL};
    run_child(&r, "skylakex2", vars2);
    assert_child_refused(&r, "SWITCHYARD_BLAS_CORE=SKYLAKEX", "avx512f");
    free_child(&r);
}

/* none: the library's own choice, no re-execution. */
static void test_none(void **state) {
    (void)state;
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_CORE=none", NULL};
    child_result r;
    run_child(&r, "none", vars);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, raw_kernel());
    assert_int_equal(r.starts, 1);
    assert_non_null(strstr(r.err, "SWITCHYARD_BLAS_CORE=none"));
    free_child(&r);

    /* none also undoes a kernel switchyard chose for a parent process (inherited
     * OPENBLAS_CORETYPE carrying our marker): one re-execution without it */
    const char *vars2[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_CORE=none", "OPENBLAS_CORETYPE=PRESCOTT",
                           "SWITCHYARD_BLAS_AUTO_CORETYPE=PRESCOTT", NULL};
    run_child(&r, "none2", vars2);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, raw_kernel());
    assert_int_equal(r.starts, 2);
    free_child(&r);
}

/* A child of a switchyard program inherits the chosen kernel: no re-execution. */
static void test_inherited_choice(void **state) {
    (void)state;
    const char *pick = sy_blas_pick_core(sy_cpu_features_mask());
    if (!pick) {
        print_message("skipped: no AVX2 on this CPU, switchyard leaves OpenBLAS alone\n");
        skip();
    }
    char ct[64], mark[80];
    snprintf(ct, sizeof ct, "OPENBLAS_CORETYPE=%s", pick);
    snprintf(mark, sizeof mark, "SWITCHYARD_BLAS_AUTO_CORETYPE=%s", pick);
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", ct, mark, NULL};
    child_result r;
    run_child(&r, "inherit", vars);
    assert_child_ok(&r);
    assert_int_equal(r.starts, 1);
    assert_non_null(strstr(r.err, "chosen automatically")); /* not taken for a user's choice */
    char keep[80];
    snprintf(keep, sizeof keep, "marker=%s\n", pick);
    assert_non_null(strstr(r.out, keep)); /* and handed on to its own children */
    if (!avx2_pair(r.kernel, pick))
        assert_true(strcasecmp(r.kernel, pick) == 0);
    free_child(&r);
}

/* SWITCHYARD_BLAS_CORE=NAME: that kernel, any case; unknown names refused. */
static void test_named_core(void **state) {
    (void)state;
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_CORE=prescott", NULL};
    child_result r;
    run_child(&r, "named", vars);
    assert_child_ok(&r);
    assert_string_equal(r.kernel, "Prescott");
    assert_int_equal(r.starts, strcasecmp(raw_kernel(), "Prescott") ? 2 : 1);
    assert_non_null(strstr(r.err, "set by SWITCHYARD_BLAS_CORE"));
    free_child(&r);

    const char *vars2[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_CORE=bogus", NULL};
    run_child(&r, "bogus", vars2);
    assert_child_refused(&r, "SWITCHYARD_BLAS_CORE=bogus", "not an OpenBLAS kernel name");
    free_child(&r);
}

/* A process that is already the re-execution never executes again, even when the kernel
 * still differs: it warns and goes on. */
static void test_no_exec_loop(void **state) {
    (void)state;
    const char *other = strcasecmp(raw_kernel(), "Prescott") ? "PRESCOTT" : "NEHALEM";
    char want[64];
    snprintf(want, sizeof want, "SWITCHYARD_BLAS_CORE=%s", other);
    const char *vars[] = {"OPENBLAS_NUM_THREADS=1", "SWITCHYARD_BLAS_REEXEC=1", want, NULL};
    child_result r;
    run_child(&r, "guard", vars);
    assert_child_ok(&r);
    assert_int_equal(r.starts, 1);
    assert_string_equal(r.kernel, raw_kernel());
    assert_non_null(strstr(r.err, "after re-executing"));
    free_child(&r);
}

static void test_threads(void **state) {
    (void)state;
    child_result r;
    const char *v1[] = {"SWITCHYARD_THREADS=1", "OPENBLAS_NUM_THREADS=2", NULL};
    run_child(&r, "t1", v1);
    assert_child_ok(&r);
    assert_int_equal(r.threads, 1);
    free_child(&r);

    const char *v2[] = {"OPENBLAS_NUM_THREADS=2", NULL};
    run_child(&r, "t2", v2);
    assert_child_ok(&r);
    assert_int_equal(r.threads, 2);
    assert_non_null(strstr(r.err, ", 2 threads\n"));
    free_child(&r);

    const char *v3[] = {"SWITCHYARD_THREADS=0", "OPENBLAS_NUM_THREADS=1", NULL};
    run_child(&r, "t3", v3);
    assert_child_ok(&r);
    assert_int_equal(r.threads, 1);
    free_child(&r);

    /* neither: every core this process may use */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int cores = CPU_COUNT(&set) < online ? CPU_COUNT(&set) : (int)online;
    const char *v4[] = {NULL};
    run_child(&r, "t4", v4);
    assert_child_ok(&r);
    if (cores <= 64) /* Debian's OpenBLAS is built with MAX_THREADS=64 */
        assert_int_equal(r.threads, cores);
    free_child(&r);

    const char *bad[][2] = {{"SWITCHYARD_THREADS=abc", "SWITCHYARD_THREADS=abc"},
                            {"SWITCHYARD_THREADS=-2", "SWITCHYARD_THREADS=-2"},
                            {"SWITCHYARD_THREADS=3x", "SWITCHYARD_THREADS=3x"},
                            {"OPENBLAS_NUM_THREADS=99999999999", "OPENBLAS_NUM_THREADS=99999999999"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *v[] = {bad[i][0], NULL};
        run_child(&r, "tbad", v);
        assert_child_refused(&r, bad[i][1], "thread count");
        free_child(&r);
    }

    /* in process */
    sy_blas_set_threads(1);
    assert_int_equal(sy_blas_threads(), 1);
    sy_blas_set_threads(2);
    assert_int_equal(sy_blas_threads(), 2);
    sy_blas_set_threads(0);
    if (cores <= 64)
        assert_int_equal(sy_blas_threads(), cores);
    sy_blas_set_threads(1);
}

static double *parse_values(const char *out, const char *tag, int n) {
    double *v = calloc((size_t)n, sizeof *v);
    assert_non_null(v);
    int k = 0;
    size_t tl = strlen(tag);
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, tag, tl) && p[tl] == ' ') {
            assert_true(k < n);
            v[k++] = strtod(p + tl + 1, NULL);
        }
    }
    assert_int_equal(k, n);
    return v;
}

/* worst |x - ref| / |ref| (all values are well away from zero) */
static double worst_rel(const double *x, const double *ref, int n) {
    double w = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs(x[i] - ref[i]) / fabs(ref[i]);
        if (!(e <= w)) /* catches NaN too */
            w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* The same sgemm gives the same numbers (to float tolerance) under the chosen kernel and
 * under the generic one, and both match a double-precision triple loop. */
static void test_sgemm_same_under_prescott(void **state) {
    (void)state;
    const char *va[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    const char *vp[] = {"OPENBLAS_NUM_THREADS=1", "OPENBLAS_CORETYPE=PRESCOTT", NULL};
    child_result ra, rp;
    run_child(&ra, "sgemm", va);
    run_child(&rp, "sgemm", vp);
    assert_child_ok(&ra);
    assert_child_ok(&rp);
    assert_string_equal(rp.kernel, "Prescott");
    print_message("comparing sgemm under %s and %s\n", ra.kernel, rp.kernel);

    float *a = malloc(sizeof(float) * SG_M * SG_K), *b = malloc(sizeof(float) * SG_K * SG_N);
    double *ref1 = malloc(sizeof(double) * SG_M * SG_N), *ref2 = malloc(sizeof(double) * SG_M * SG_M);
    assert_true(a && b && ref1 && ref2);
    sgemm_inputs(a, b);
    for (int i = 0; i < SG_M; i++) {
        for (int j = 0; j < SG_N; j++) {
            double s = 0;
            for (int k = 0; k < SG_K; k++)
                s += (double)a[i * SG_K + k] * b[k * SG_N + j];
            ref1[i * SG_N + j] = s;
        }
        for (int j = 0; j < SG_M; j++) {
            double s = 0;
            for (int k = 0; k < SG_K; k++)
                s += (double)a[i * SG_K + k] * a[j * SG_K + k];
            ref2[i * SG_M + j] = s;
        }
    }
    double *a1 = parse_values(ra.out, "c1", SG_M * SG_N), *p1 = parse_values(rp.out, "c1", SG_M * SG_N);
    double *a2 = parse_values(ra.out, "c2", SG_M * SG_M), *p2 = parse_values(rp.out, "c2", SG_M * SG_M);
    double e[6] = {worst_rel(a1, ref1, SG_M * SG_N), worst_rel(p1, ref1, SG_M * SG_N),
                   worst_rel(a1, p1, SG_M * SG_N),   worst_rel(a2, ref2, SG_M * SG_M),
                   worst_rel(p2, ref2, SG_M * SG_M), worst_rel(a2, p2, SG_M * SG_M)};
    print_message("worst rel. error: NN %s %.2e, Prescott %.2e, between %.2e; NT %.2e %.2e %.2e\n", ra.kernel, e[0],
                  e[1], e[2], e[3], e[4], e[5]);
    for (int i = 0; i < 6; i++)
        assert_true(e[i] < 1e-5);
    free(a1), free(p1), free(a2), free(p2), free(a), free(b), free(ref1), free(ref2);
    free_child(&ra);
    free_child(&rp);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void test_sgemm_probe(void **state) {
    (void)state;
    sy_blas_set_threads(1);
    double t0 = sy_now();
    double g = sy_sgemm_probe(0.05);
    double dt = sy_now() - t0;
    assert_true(dt >= 0.05 && dt < 10.0);
    assert_true(g > 0.5 && g < 10000.0); /* a few GFLOP/s at worst, no core does 10 TFLOP/s */

    /* an independent measurement of the same product: median of 9 timed calls */
    enum { N = 512 };
    float *a = calloc(N * N, sizeof(float)), *b = calloc(N * N, sizeof(float)), *c = calloc(N * N, sizeof(float));
    assert_true(a && b && c);
    for (int i = 0; i < N * N; i++)
        a[i] = b[i] = 1.0f + (float)(i % 7) / 7.0f;
    /* Both are timings on a machine that may be shared with other jobs: a burst of load
     * during one of them can move it by more than 4x, so the pair is measured again (up
     * to 5 times) and must agree once. A probe that is simply wrong disagrees every time. */
    double mine = 0;
    int agree = 0;
    for (int attempt = 0; attempt < 5 && !agree; attempt++) {
        if (attempt)
            g = sy_sgemm_probe(0.05);
        double t[9];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        for (int i = 0; i < 9; i++) {
            double s = sy_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
            t[i] = sy_now() - s;
        }
        qsort(t, 9, sizeof t[0], cmp_double);
        mine = 2.0 * N * N * N / t[4] * 1e-9;
        print_message("sgemm probe (%s, 1 thread): %.1f GFLOP/s; independent timing %.1f GFLOP/s\n", sy_blas_kernel(),
                      g, mine);
        agree = g > mine / 4 && g < mine * 4;
    }
    assert_true(agree);
    free(a), free(b), free(c);

    /* the default is about 0.2 s */
    t0 = sy_now();
    g = sy_sgemm_probe(0);
    dt = sy_now() - t0;
    assert_true(g > 0.5);
    assert_true(dt >= 0.19 && dt < 10.0);
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--child"))
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_core),
        cmocka_unit_test(test_core_check),
        cmocka_unit_test(test_features_match_gcc),
        cmocka_unit_test(test_auto),
        cmocka_unit_test(test_user_coretype_respected),
        cmocka_unit_test(test_user_coretype_cooperlake_refused),
        cmocka_unit_test(test_user_coretype_skylakex_refused),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_inherited_choice),
        cmocka_unit_test(test_named_core),
        cmocka_unit_test(test_no_exec_loop),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_sgemm_same_under_prescott),
        cmocka_unit_test(test_sgemm_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
