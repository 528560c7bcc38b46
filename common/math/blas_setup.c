#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include "blas_setup.h"

#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "log.h"

/* Exported by OpenBLAS; declared in its cblas.h too, repeated so other BLAS headers work. */
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

#define ENV_CORE "SWITCHYARD_BLAS_CORE"
#define ENV_REEXEC "SWITCHYARD_BLAS_REEXEC"
#define ENV_AUTO "SWITCHYARD_BLAS_AUTO_CORETYPE"
#define ENV_CORETYPE "OPENBLAS_CORETYPE"
#define MAX_THREADS 4096

/* ---- CPU features ---------------------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static unsigned g_features;
static char g_features_str[256];
static pthread_once_t g_features_once = PTHREAD_ONCE_INIT;
static void features_init(void);

unsigned sy_cpu_features_mask(void) {
    pthread_once(&g_features_once, features_init);
    return g_features;
}

static unsigned detect_features(void) {
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return 0;
    unsigned max_leaf = a;
    /* "AuthenticAMD" / "HygonGenuine": ebx holds the first four letters */
    int amd = (b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163) ||
              (b == 0x6f677948 && d == 0x6e65476e && c == 0x656e6975);
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    unsigned family = (a >> 8) & 0xf;
    if (family == 0xf)
        family += (a >> 20) & 0xff;
    if (amd && family >= 0x17)
        f |= SY_CPU_AMD_ZEN;
    if (c & (1u << 0))
        f |= SY_CPU_SSE3;
    if (c & (1u << 9))
        f |= SY_CPU_SSSE3;
    if (c & (1u << 12))
        f |= SY_CPU_FMA;
    if (c & (1u << 19))
        f |= SY_CPU_SSE41;
    if (c & (1u << 20))
        f |= SY_CPU_SSE42;
    if (c & (1u << 28))
        f |= SY_CPU_AVX;
    /* XGETBV exists only when the OS has turned on XSAVE (OSXSAVE); it tells which register
     * states the OS saves on a context switch. Without them AVX/AVX-512/AMX fault. */
    if (c & (1u << 27)) {
        uint64_t xcr0 = xgetbv0();
        if ((xcr0 & 0x6) == 0x6)
            f |= SY_CPU_OS_AVX;
        if ((xcr0 & 0xe6) == 0xe6)
            f |= SY_CPU_OS_AVX512;
        if ((xcr0 & 0x60000) == 0x60000)
            f |= SY_CPU_OS_AMX;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned max_sub = a;
        if (b & (1u << 5))
            f |= SY_CPU_AVX2;
        if (b & (1u << 16))
            f |= SY_CPU_AVX512F;
        if (b & (1u << 17))
            f |= SY_CPU_AVX512DQ;
        if (b & (1u << 28))
            f |= SY_CPU_AVX512CD;
        if (b & (1u << 30))
            f |= SY_CPU_AVX512BW;
        if (b & (1u << 31))
            f |= SY_CPU_AVX512VL;
        if (d & (1u << 22))
            f |= SY_CPU_AMX_BF16;
        if (d & (1u << 24))
            f |= SY_CPU_AMX_TILE;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            if (a & (1u << 5))
                f |= SY_CPU_AVX512BF16;
        }
    }
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000001) {
        __get_cpuid(0x80000001, &a, &b, &c, &d);
        if (c & (1u << 16))
            f |= SY_CPU_FMA4;
    }
#endif
    return f;
}

#define AVX_FAMILY (SY_CPU_AVX | SY_CPU_FMA | SY_CPU_AVX2 | SY_CPU_FMA4)
#define AVX512_FAMILY                                                                                        \
    (SY_CPU_AVX512F | SY_CPU_AVX512VL | SY_CPU_AVX512BW | SY_CPU_AVX512DQ | SY_CPU_AVX512CD | SY_CPU_AVX512BF16)
#define AMX_FAMILY (SY_CPU_AMX_TILE | SY_CPU_AMX_BF16)

/* The instruction-set bits the program may actually use: an instruction set counts only
 * when the OS saves its registers (a hypervisor or kernel may hide AVX-512 state from a
 * CPU whose CPUID still reports it; OpenBLAS 0.3.21 itself checks XCR0 the same way). */
static unsigned usable(unsigned f) {
    if (!(f & SY_CPU_OS_AVX))
        f &= ~(AVX_FAMILY | AVX512_FAMILY | AMX_FAMILY);
    if (!(f & SY_CPU_OS_AVX512))
        f &= ~AVX512_FAMILY;
    if (!(f & SY_CPU_OS_AMX))
        f &= ~AMX_FAMILY;
    return f;
}

static const struct {
    unsigned bit;
    const char *name;
} feature_names[] = {
    {SY_CPU_AMX_TILE, "amx-tile"},   {SY_CPU_AMX_BF16, "amx-bf16"},   {SY_CPU_AVX512BF16, "avx512bf16"},
    {SY_CPU_AVX512F, "avx512f"},     {SY_CPU_AVX512VL, "avx512vl"},   {SY_CPU_AVX512BW, "avx512bw"},
    {SY_CPU_AVX512DQ, "avx512dq"},   {SY_CPU_AVX512CD, "avx512cd"},   {SY_CPU_AVX2, "avx2"},
    {SY_CPU_FMA, "fma"},             {SY_CPU_FMA4, "fma4"},           {SY_CPU_AVX, "avx"},
    {SY_CPU_SSE42, "sse4.2"},        {SY_CPU_SSE41, "sse4.1"},        {SY_CPU_SSSE3, "ssse3"},
    {SY_CPU_SSE3, "sse3"},           {SY_CPU_OS_AVX, "os-avx-state"}, {SY_CPU_OS_AVX512, "os-avx512-state"},
    {SY_CPU_OS_AMX, "os-amx-state"},
};

/* Appends the names of the bits in `bits` to buf (space separated). */
static void append_names(char *buf, size_t n, unsigned bits) {
    for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++) {
        if (!(bits & feature_names[i].bit))
            continue;
        size_t len = strlen(buf);
        snprintf(buf + len, n > len ? n - len : 0, "%s%s", len ? " " : "", feature_names[i].name);
    }
}

const char *sy_cpu_features(void) {
    pthread_once(&g_features_once, features_init);
    return g_features_str;
}

static void features_init(void) {
    g_features = detect_features();
    char *buf = g_features_str;
    unsigned raw = g_features, f = usable(raw);
    buf[0] = 0;
    /* what decides the kernel: the AVX-512 and AVX2 levels; older levels only when the
     * CPU has nothing newer */
    unsigned top = SY_CPU_AVX512BF16 | SY_CPU_AVX512F | SY_CPU_AVX512VL | SY_CPU_AVX512BW | SY_CPU_AVX512DQ |
                   SY_CPU_AVX2 | SY_CPU_FMA;
    if (f & top) {
        append_names(buf, sizeof g_features_str, f & top);
    } else {
        static const unsigned levels[] = {SY_CPU_AVX, SY_CPU_SSE42, SY_CPU_SSE41, SY_CPU_SSSE3, SY_CPU_SSE3};
        for (size_t i = 0; i < sizeof levels / sizeof levels[0] && !buf[0]; i++)
            if (f & levels[i])
                append_names(buf, sizeof g_features_str, levels[i]);
        if (!buf[0])
            snprintf(buf, sizeof g_features_str, "baseline x86-64");
    }
    if ((raw & SY_CPU_AVX512F) && !(f & SY_CPU_AVX512F)) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof g_features_str - len, ", avx512 not enabled by the OS");
    }
}

/* ---- kernel choice --------------------------------------------------------------------- */

/* Instruction sets of the AVX2 (Haswell, Zen) and AVX-512 (SkylakeX) kernels; CD is part of
 * every AVX-512 CPU and of -march=skylake-avx512, which OpenBLAS compiles those with. */
#define ISA_AVX2 (SY_CPU_AVX | SY_CPU_AVX2 | SY_CPU_FMA)
#define ISA_SKX (ISA_AVX2 | SY_CPU_AVX512F | SY_CPU_AVX512VL | SY_CPU_AVX512BW | SY_CPU_AVX512DQ | SY_CPU_AVX512CD)
#define NEED_AVX (SY_CPU_AVX | SY_CPU_OS_AVX)
#define NEED_AVX2 (ISA_AVX2 | SY_CPU_OS_AVX)
#define NEED_SKX (ISA_SKX | SY_CPU_OS_AVX | SY_CPU_OS_AVX512)

/* What each OpenBLAS x86-64 core's kernels execute. The AVX-era rows are what the kernels
 * are compiled for (-mavx2 -mfma, -mavx512*, FMA4 for the Bulldozer line). The pre-AVX rows
 * are the SSE levels of the CPUs they are named after; every x86-64 CPU that can run
 * switchyard has them, so they only guard against typos being taken as safe. */
static const struct {
    const char *name;
    unsigned need;
} core_needs[] = {
    {"PRESCOTT", SY_CPU_SSE3},
    {"KATMAI", 0},
    {"COPPERMINE", 0},
    {"NORTHWOOD", 0},
    {"BANIAS", 0},
    {"ATHLON", 0},
    {"OPTERON", 0},
    {"OPTERON_SSE3", SY_CPU_SSE3},
    {"BARCELONA", SY_CPU_SSE3},
    {"BOBCAT", SY_CPU_SSSE3},
    {"ATOM", SY_CPU_SSSE3},
    {"NANO", SY_CPU_SSSE3},
    {"CORE2", SY_CPU_SSSE3},
    {"PENRYN", SY_CPU_SSSE3 | SY_CPU_SSE41},
    {"DUNNINGTON", SY_CPU_SSSE3 | SY_CPU_SSE41},
    {"NEHALEM", SY_CPU_SSSE3 | SY_CPU_SSE41 | SY_CPU_SSE42},
    {"SANDYBRIDGE", NEED_AVX},
    {"BULLDOZER", NEED_AVX | SY_CPU_FMA4},
    {"PILEDRIVER", NEED_AVX | SY_CPU_FMA | SY_CPU_FMA4},
    {"STEAMROLLER", NEED_AVX | SY_CPU_FMA | SY_CPU_FMA4},
    {"EXCAVATOR", NEED_AVX | SY_CPU_FMA | SY_CPU_FMA4 | SY_CPU_AVX2},
    {"HASWELL", NEED_AVX2},
    {"ZEN", NEED_AVX2},
    {"SKYLAKEX", NEED_SKX},
    {"COOPERLAKE", NEED_SKX | SY_CPU_AVX512BF16},
    {"SAPPHIRERAPIDS", NEED_SKX | SY_CPU_AVX512BF16 | SY_CPU_AMX_TILE | SY_CPU_AMX_BF16 | SY_CPU_OS_AMX},
};

int sy_blas_core_check(const char *name, unsigned features, char *missing, size_t missing_len) {
    if (missing && missing_len)
        missing[0] = 0;
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof core_needs / sizeof core_needs[0]; i++) {
        if (strcasecmp(name, core_needs[i].name))
            continue;
        /* compare against usable bits, but report a missing OS state bit by its own name */
        unsigned have = usable(features) | (features & (SY_CPU_OS_AVX | SY_CPU_OS_AVX512 | SY_CPU_OS_AMX));
        unsigned lack = core_needs[i].need & ~have;
        if (!lack)
            return 1;
        if (missing && missing_len)
            append_names(missing, missing_len, lack);
        return 0;
    }
    return -1;
}

const char *sy_blas_pick_core(unsigned features) {
    unsigned f = usable(features); /* drops instruction sets whose registers the OS does not save */
    if ((f & ISA_SKX) == ISA_SKX) {
        /* AVX-512 with BF16 (Cooper Lake, Sapphire Rapids and later, Zen 4/5): what later
         * OpenBLAS releases pick for those CPUs themselves. OpenBLAS 0.3.21's
         * OPENBLAS_CORETYPE parser stops one entry short of "Cooperlake": it reports the name
         * unknown and then chooses by CPU features, which on such a CPU is Cooperlake again. */
        return (f & SY_CPU_AVX512BF16) ? "COOPERLAKE" : "SKYLAKEX";
    }
    if ((f & ISA_AVX2) == ISA_AVX2) {
        /* ZEN and HASWELL run the same sgemm: in OpenBLAS 0.3.21 the sgemm kernel and three of
         * its four packing routines are the same code (they differ only in jump addresses),
         * with the same blocking (P=Q=320, R=104512, 8x4 unroll). Measured on the project's
         * AMD EPYC (Zen 3, 2 cores, 1 thread, median of 8 alternating runs): 512^3 65.8 vs
         * 66.2, [4096x256]x[256x768] 64.8 vs 63.8, [4096x256]x[256x1024] 67.1 vs 64.3,
         * [4096x1024]x[1024x256] 66.8 vs 66.4 GFLOP/s (Haswell vs Zen) with a run-to-run
         * spread of +-15%: no difference. So AMD keeps ZEN, the name OpenBLAS gives its Zen
         * CPUs itself (no re-execution there), and sy_blas_setup treats the two as one. */
        return (f & SY_CPU_AMD_ZEN) ? "ZEN" : "HASWELL";
    }
    return NULL;
}

/* Same kernel for our purposes (see sy_blas_pick_core). */
static int same_kernel(const char *a, const char *b, int lenient) {
    if (!strcasecmp(a, b))
        return 1;
    if (!lenient)
        return 0;
    int a_avx2 = !strcasecmp(a, "HASWELL") || !strcasecmp(a, "ZEN");
    int b_avx2 = !strcasecmp(b, "HASWELL") || !strcasecmp(b, "ZEN");
    return a_avx2 && b_avx2;
}

/* ---- threads --------------------------------------------------------------------------- */

/* Cores this process may run on: online cores, fewer when an affinity mask (taskset,
 * cgroup cpuset) restricts it. */
static int default_threads(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int n = online > 0 ? (int)(online < MAX_THREADS ? online : MAX_THREADS) : 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int allowed = CPU_COUNT(&set);
        if (allowed > 0 && allowed < n)
            n = allowed;
    }
    return n;
}

/* Parses a thread count from environment variable `var`: 0 (or unset) means default. */
static int env_threads(const char *var, int *out) {
    const char *s = getenv(var);
    *out = 0;
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (errno || end == s || *end || v < 0 || v > MAX_THREADS) {
        sy_seterr("%s=%s: expected a thread count from 1 to %d (0: all cores)", var, s, MAX_THREADS);
        return -1;
    }
    *out = (int)v;
    return 0;
}

void sy_blas_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : default_threads()); }

int sy_blas_threads(void) { return openblas_get_num_threads(); }

const char *sy_blas_kernel(void) {
    const char *k = openblas_get_corename();
    return k ? k : "unknown";
}

/* ---- setup ----------------------------------------------------------------------------- */

static void upper(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++)
        dst[i] = (char)toupper((unsigned char)src[i]);
    dst[i] = 0;
}

/* Re-executes the program so that OpenBLAS's constructor sees OPENBLAS_CORETYPE=core (or
 * no OPENBLAS_CORETYPE when core is NULL). Returns only when exec fails. */
static void reexec(char **argv, const char *core) {
    if (core) {
        setenv(ENV_CORETYPE, core, 1);
        setenv(ENV_AUTO, core, 1);
    } else {
        unsetenv(ENV_CORETYPE);
        unsetenv(ENV_AUTO);
    }
    setenv(ENV_REEXEC, "1", 1);
    sy_debug("openblas: library runs %s, re-executing with %s%s", sy_blas_kernel(),
             core ? ENV_CORETYPE "=" : "OpenBLAS's own choice", core ? core : "");
    fflush(NULL);
    execv("/proc/self/exe", argv);
    int err = errno;
    unsetenv(ENV_REEXEC);
    /* the OPENBLAS_CORETYPE set above stays: programs this one starts load that kernel */
    sy_warn("openblas: could not re-execute /proc/self/exe to switch the kernel to %s (%s); continuing with %s",
            core ? core : "OpenBLAS's own choice", strerror(err), sy_blas_kernel());
}

int sy_blas_setup(int argc, char **argv, const char *component) {
    if (component)
        sy_log_set_component(component);
    unsigned f = sy_cpu_features_mask();
    const char *loaded = sy_blas_kernel();
    char missing[128];

    /* a re-executed process clears the guard at once, so programs it starts get their own
     * single chance to fix their kernel */
    int reexeced = getenv(ENV_REEXEC) != NULL;
    unsetenv(ENV_REEXEC);

    char env_ct[64] = "";
    const char *e = getenv(ENV_CORETYPE);
    if (e && *e)
        snprintf(env_ct, sizeof env_ct, "%s", e);
    const char *marker = getenv(ENV_AUTO);
    int by_us = env_ct[0] && marker && !strcasecmp(env_ct, marker);
    if (marker && !by_us)
        unsetenv(ENV_AUTO); /* stale: someone changed OPENBLAS_CORETYPE after we set it */

    /* Thread counts are checked before any re-execution: a bad value is refused once, by
     * the process the user started, whichever kernel the library loaded. */
    int threads;
    if (env_threads("SWITCHYARD_THREADS", &threads))
        return -1;
    if (!threads && env_threads("OPENBLAS_NUM_THREADS", &threads))
        return -1;

    enum { MODE_AUTO, MODE_NONE, MODE_NAME } mode = MODE_AUTO;
    char name[64] = "";
    const char *m = getenv(ENV_CORE);
    if (m && *m && strcasecmp(m, "auto")) {
        if (!strcasecmp(m, "none")) {
            mode = MODE_NONE;
        } else {
            mode = MODE_NAME;
            upper(name, sizeof name, m);
            if (sy_blas_core_check(name, f, NULL, 0) < 0) {
                sy_seterr("%s=%s: not an OpenBLAS kernel name (use auto, none, or e.g. HASWELL, ZEN, SKYLAKEX, "
                          "COOPERLAKE, PRESCOTT)",
                          ENV_CORE, m);
                return -1;
            }
        }
    }

    const char *how;
    if (env_ct[0] && !by_us) {
        /* The user's OPENBLAS_CORETYPE: the library already loaded with it, so there is
         * nothing to re-execute; only make sure it cannot die of SIGILL. */
        int ok = sy_blas_core_check(env_ct, f, missing, sizeof missing);
        if (ok == 0) {
            sy_seterr("%s=%s: this kernel needs %s, which this CPU (%s) lacks; it would crash with an illegal "
                      "instruction. Unset %s to let switchyard choose",
                      ENV_CORETYPE, env_ct, missing, sy_cpu_features(), ENV_CORETYPE);
            return -1;
        }
        if (ok < 0)
            sy_warn("openblas: %s=%s is not a kernel name switchyard knows; OpenBLAS chose %s", ENV_CORETYPE,
                    env_ct, loaded);
        if (mode == MODE_NAME && strcasecmp(name, env_ct))
            sy_warn("openblas: %s=%s ignored: %s=%s, set outside switchyard, wins", ENV_CORE, name, ENV_CORETYPE,
                    env_ct);
        how = "set by " ENV_CORETYPE;
    } else {
        const char *want = NULL;
        int lenient = 0;
        if (mode == MODE_NONE) {
            how = "OpenBLAS's own choice, " ENV_CORE "=none";
        } else if (mode == MODE_NAME) {
            if (sy_blas_core_check(name, f, missing, sizeof missing) == 0) {
                sy_seterr("%s=%s: this kernel needs %s, which this CPU (%s) lacks; it would crash with an illegal "
                          "instruction",
                          ENV_CORE, name, missing, sy_cpu_features());
                return -1;
            }
            want = name;
            how = "set by " ENV_CORE;
        } else {
            want = sy_blas_pick_core(f);
            lenient = 1;
            how = want ? "chosen automatically" : "OpenBLAS's own choice, no AVX2+FMA on this CPU";
        }
        /* Re-execute only when the library runs another kernel AND the environment it
         * loaded with differs from the one we would give it: with the same environment a
         * re-execution cannot change anything (e.g. a name this OpenBLAS maps elsewhere),
         * so this alone already rules out loops; the REEXEC guard makes sure of it. */
        int lib_ok = want ? same_kernel(loaded, want, lenient) : !by_us;
        int env_same = want ? (env_ct[0] && !strcasecmp(env_ct, want)) : !env_ct[0];
        if (!lib_ok && !env_same && !reexeced && argc > 0 && argv && argv[0]) {
            reexec(argv, want); /* returns only if exec failed */
        } else if (!lib_ok && want) {
            sy_warn("openblas: asked for kernel %s but the library runs %s%s", want, loaded,
                    reexeced ? " after re-executing; continuing with it" : "; continuing with it");
        }
    }

    /* Whatever the path, never go on with a kernel the CPU cannot execute. */
    if (sy_blas_core_check(sy_blas_kernel(), f, missing, sizeof missing) == 0) {
        sy_seterr("openblas: the library runs kernel %s, which needs %s that this CPU (%s) lacks; set %s=auto and "
                  "unset %s",
                  sy_blas_kernel(), missing, sy_cpu_features(), ENV_CORE, ENV_CORETYPE);
        return -1;
    }

    sy_blas_set_threads(threads);

    int n = sy_blas_threads();
    sy_info("openblas: kernel %s (cpu: %s; %s), %d thread%s", sy_blas_kernel(), sy_cpu_features(), how, n,
            n == 1 ? "" : "s");
    return 0;
}

/* ---- sgemm probe ----------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sy_sgemm_probe(double seconds) {
    enum { N = 512, MAX_CALLS = 1024 };
    if (!(seconds > 0))
        seconds = 0.2;
    float *a = NULL, *b = NULL, *c = NULL;
    double *t = malloc(sizeof(double) * MAX_CALLS);
    size_t bytes = sizeof(float) * N * N;
    if (posix_memalign((void **)&a, 64, bytes) || posix_memalign((void **)&b, 64, bytes) ||
        posix_memalign((void **)&c, 64, bytes) || !t) {
        free(a);
        free(b);
        free(c);
        free(t);
        sy_seterr("sgemm probe: out of memory");
        return -1;
    }
    /* values in [0.5, 1.5): no denormals, nothing for the kernel to shortcut */
    for (int i = 0; i < N * N; i++) {
        a[i] = 0.5f + (float)((i * 7) % 13) / 13.0f;
        b[i] = 0.5f + (float)((i * 5) % 11) / 11.0f;
    }
    /* warm-up: wakes OpenBLAS's threads and faults in its buffers */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
    int calls = 0;
    double start = sy_now();
    do {
        double t0 = sy_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        t[calls++] = sy_now() - t0;
    } while (calls < MAX_CALLS && sy_now() - start < seconds);
    qsort(t, (size_t)calls, sizeof t[0], cmp_double);
    double median = t[calls / 2];
    free(a);
    free(b);
    free(c);
    free(t);
    return median > 0 ? 2.0 * N * N * N / median * 1e-9 : -1;
}
