#include "blas_setup.h"

#include <cblas.h>
#include <cpuid.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

#define REEXEC_GUARD "SWITCHYARD_BLAS_REEXEC"

/* exported by OpenBLAS but not declared in every cblas.h */
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

unsigned sy_cpu_features_mask(void) {
    unsigned f = 0, a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return 0;
    unsigned max = a;
    if (b == 0x68747541) /* "Auth"enticAMD */
        f |= SY_CPU_AMD;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1;
    if (osxsave && avx) {
        uint64_t xcr0 = xgetbv0();
        if ((xcr0 & 0x6) == 0x6)
            f |= SY_CPU_OS_AVX;
        if ((xcr0 & 0xe6) == 0xe6)
            f |= SY_CPU_OS_AVX512;
    }
    if (fma)
        f |= SY_CPU_FMA;
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if ((b >> 5) & 1)
            f |= SY_CPU_AVX2;
        if ((b >> 16) & 1)
            f |= SY_CPU_AVX512F;
        if ((b >> 17) & 1)
            f |= SY_CPU_AVX512DQ;
        if ((b >> 30) & 1)
            f |= SY_CPU_AVX512BW;
        if ((b >> 31) & 1)
            f |= SY_CPU_AVX512VL;
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 5) & 1)
            f |= SY_CPU_AVX512BF16;
    }
    return f;
}

static int has_avx512(unsigned f) {
    unsigned need = SY_CPU_AVX512F | SY_CPU_AVX512VL | SY_CPU_AVX512BW | SY_CPU_AVX512DQ | SY_CPU_OS_AVX512;
    return (f & need) == need;
}
static int has_avx2(unsigned f) {
    unsigned need = SY_CPU_AVX2 | SY_CPU_FMA | SY_CPU_OS_AVX;
    return (f & need) == need;
}

const char *sy_blas_pick_core(unsigned f) {
    if (has_avx512(f) && (f & SY_CPU_AVX512BF16))
        return "COOPERLAKE";
    if (has_avx512(f))
        return "SKYLAKEX";
    /* Measured on the project's AMD EPYC (AVX2, no AVX-512): Zen and Haswell kernels run
     * sgemm at the same speed within noise (they share the Haswell sgemm kernel), so
     * AMD keeps the name OpenBLAS itself gives its CPUs. */
    if (has_avx2(f))
        return (f & SY_CPU_AMD) ? "ZEN" : "HASWELL";
    return NULL;
}

int sy_blas_core_supported(const char *core, unsigned f) {
    if (!strcasecmp(core, "COOPERLAKE") || !strcasecmp(core, "SAPPHIRERAPIDS"))
        return has_avx512(f) && (f & SY_CPU_AVX512BF16);
    if (!strcasecmp(core, "SKYLAKEX"))
        return has_avx512(f);
    if (!strcasecmp(core, "HASWELL") || !strcasecmp(core, "ZEN"))
        return has_avx2(f);
    return 1; /* older cores (SANDYBRIDGE, NEHALEM, PRESCOTT, ...) run on any x86-64 here */
}

const char *sy_cpu_features(void) {
    static char buf[128];
    unsigned f = sy_cpu_features_mask();
    snprintf(buf, sizeof buf, "%s%s%s%s%s", (f & SY_CPU_AVX2) ? "avx2 " : "", (f & SY_CPU_FMA) ? "fma " : "",
             has_avx512(f) ? "avx512 " : "", (f & SY_CPU_AVX512BF16) ? "avx512bf16 " : "",
             (f & SY_CPU_AMD) ? "(amd)" : "");
    size_t n = strlen(buf);
    if (n && buf[n - 1] == ' ')
        buf[n - 1] = 0;
    return buf;
}

const char *sy_blas_kernel(void) {
    const char *k = openblas_get_corename();
    return k ? k : "?";
}

void sy_blas_set_threads(int n) {
    if (n > 0)
        openblas_set_num_threads(n);
}

int sy_blas_threads(void) { return openblas_get_num_threads(); }

static void reexec(char **argv, const char *core) {
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv(REEXEC_GUARD, core, 1);
    execv("/proc/self/exe", argv);
    sy_warn("openblas: could not re-execute with OPENBLAS_CORETYPE=%s (%s); running with kernel %s", core,
            strerror(errno), sy_blas_kernel());
}

int sy_blas_setup(int argc, char **argv, const char *component) {
    (void)argc;
    unsigned f = sy_cpu_features_mask();
    const char *how = "chosen automatically";
    const char *want = NULL;
    const char *mode = getenv("SWITCHYARD_BLAS_CORE");
    const char *guard = getenv(REEXEC_GUARD);
    const char *user = guard ? NULL : getenv("OPENBLAS_CORETYPE");
    if (mode && !strcasecmp(mode, "none")) {
        how = "OpenBLAS's own choice (SWITCHYARD_BLAS_CORE=none)";
    } else if (mode && strcasecmp(mode, "auto") && *mode) {
        want = mode;
        how = "set by SWITCHYARD_BLAS_CORE";
    } else if (user && *user) {
        want = user;
        how = "set by OPENBLAS_CORETYPE";
    } else {
        want = sy_blas_pick_core(f);
        if (!want)
            how = "OpenBLAS's own choice (no AVX2 on this CPU)";
    }
    if (want && !sy_blas_core_supported(want, f)) {
        sy_seterr("openblas: kernel %s needs instructions this CPU lacks (it has: %s); unset it or use "
                  "SWITCHYARD_BLAS_CORE=auto",
                  want, sy_cpu_features());
        return -1;
    }
    if (want && strcasecmp(sy_blas_kernel(), want)) {
        if (!guard) {
            reexec(argv, want); /* returns only on failure */
        } else {
            sy_warn("openblas: asked for kernel %s, the library runs %s (this OpenBLAS build may lack it)", want,
                    sy_blas_kernel());
        }
    }
    int threads = 0;
    const char *t = getenv("SWITCHYARD_THREADS");
    if (!t)
        t = getenv("OPENBLAS_NUM_THREADS");
    if (t)
        threads = atoi(t);
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    openblas_set_num_threads(threads);
    sy_log_set_component(component);
    sy_info("openblas: kernel %s (cpu: %s; %s), %d thread%s", sy_blas_kernel(), sy_cpu_features(), how,
            sy_blas_threads(), sy_blas_threads() == 1 ? "" : "s");
    return 0;
}

double sy_sgemm_probe(double seconds) {
    enum { N = 384 };
    float *a = malloc(sizeof(float) * N * N), *b = malloc(sizeof(float) * N * N), *c = malloc(sizeof(float) * N * N);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0.0;
    }
    for (int i = 0; i < N * N; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f;
        b[i] = (float)((i * 5) % 11) / 11.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
    double t0 = sy_now(), t;
    long iters = 0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        iters++;
        t = sy_now() - t0;
    } while (t < seconds);
    free(a);
    free(b);
    free(c);
    return 2.0 * N * N * N * iters / t / 1e9;
}
