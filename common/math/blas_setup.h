/* blas_setup.h: make OpenBLAS run the fastest kernel this CPU can safely execute, set its
 * thread count, and measure sgemm speed.
 *
 * Why: Debian 12's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernel from CPUID in a library
 * constructor, before main(). On CPUs it does not know it runs generic Prescott kernels
 * (~15 GFLOP/s/core instead of 110-140 with the AVX-512 kernels). OPENBLAS_CORETYPE is read
 * by that constructor only, so changing the kernel means setting it and re-executing the
 * program. The choice must follow the CPU's real features (CPUID and what the OS enables,
 * XGETBV): a kernel with instructions the CPU lacks dies of SIGILL at the first sgemm.
 *
 * Environment (all optional):
 *   SWITCHYARD_BLAS_CORE=auto|none|NAME  auto (default): pick from CPU features; none: keep
 *                                        OpenBLAS's own choice; NAME: that kernel (refused
 *                                        when the CPU lacks its instructions)
 *   OPENBLAS_CORETYPE=NAME               a user's own choice; respected (it wins over
 *                                        SWITCHYARD_BLAS_CORE) unless the CPU cannot run it
 *   SWITCHYARD_THREADS=N, OPENBLAS_NUM_THREADS=N   compute threads: the first one set to
 *                                        N > 0 wins; otherwise all cores this process may use
 * Internal: SWITCHYARD_BLAS_REEXEC (set for the one re-execution, never loops) and
 * SWITCHYARD_BLAS_AUTO_CORETYPE (marks an OPENBLAS_CORETYPE switchyard set itself, so child
 * processes inherit the kernel without re-executing and without mistaking it for a user's). */
#ifndef SY_BLAS_SETUP_H
#define SY_BLAS_SETUP_H

#include <stddef.h>

/* CPU feature bits. Instruction-set bits come from CPUID; the SY_CPU_OS_* bits say the OS
 * saves the matching register state (XCR0), without which those instructions fault. */
enum {
    SY_CPU_SSE3 = 1u << 0,
    SY_CPU_SSSE3 = 1u << 1,
    SY_CPU_SSE41 = 1u << 2,
    SY_CPU_SSE42 = 1u << 3,
    SY_CPU_AVX = 1u << 4,
    SY_CPU_FMA = 1u << 5,
    SY_CPU_AVX2 = 1u << 6,
    SY_CPU_FMA4 = 1u << 7,
    SY_CPU_AVX512F = 1u << 8,
    SY_CPU_AVX512VL = 1u << 9,
    SY_CPU_AVX512BW = 1u << 10,
    SY_CPU_AVX512DQ = 1u << 11,
    SY_CPU_AVX512CD = 1u << 12,
    SY_CPU_AVX512BF16 = 1u << 13,
    SY_CPU_AMX_TILE = 1u << 14,
    SY_CPU_AMX_BF16 = 1u << 15,
    SY_CPU_OS_AVX = 1u << 16,    /* XCR0: XMM + YMM state */
    SY_CPU_OS_AVX512 = 1u << 17, /* XCR0: opmask + ZMM state */
    SY_CPU_OS_AMX = 1u << 18,    /* XCR0: tile config + tile data */
    SY_CPU_AMD_ZEN = 1u << 19,   /* AMD or Hygon, family 17h and later (Zen cores) */
};

/* This CPU's feature bits (CPUID + XGETBV); 0 on non-x86 machines. */
unsigned sy_cpu_features_mask(void);
/* A short, human-readable list of the features that matter for the kernel choice, e.g.
 * "avx2 fma" or "avx512bf16 avx512f avx512vl avx512bw avx512dq avx2 fma". */
const char *sy_cpu_features(void);

/* The OpenBLAS kernel for a feature set: "COOPERLAKE", "SKYLAKEX", "ZEN" or "HASWELL", or
 * NULL when nothing better than OpenBLAS's own choice is known (no usable AVX2+FMA).
 * Pure function of its argument. */
const char *sy_blas_pick_core(unsigned features);
/* Can kernel `name` (OpenBLAS core name, any case) run with `features`? 1 yes; 0 no, and
 * the missing features are written to `missing` (space separated; may be NULL); -1 the
 * name is not an OpenBLAS x86-64 core name. Pure function. */
int sy_blas_core_check(const char *name, unsigned features, char *missing, size_t missing_len);

/* Call first thing in main(), before any BLAS call, with main's argc/argv. Sets the log
 * component (when not NULL), chooses the kernel as described above, re-executing the
 * program (/proc/self/exe, same argv) at most once when the loaded library runs another
 * kernel, sets the thread count and logs one line:
 *   "openblas: kernel Zen (cpu: avx2 fma; chosen automatically), 2 threads"
 * Returns 0; or -1 with sy_lasterr() set when the environment asks for a kernel this CPU
 * cannot run, or names an unknown kernel or a bad thread count. If the re-execution itself
 * fails it warns and carries on with the loaded kernel. */
int sy_blas_setup(int argc, char **argv, const char *component);

/* Sets OpenBLAS's thread count; n <= 0 means all cores this process may use. */
void sy_blas_set_threads(int n);
/* OpenBLAS's current thread count. */
int sy_blas_threads(void);
/* The kernel OpenBLAS runs, as the library names it ("Haswell", "Zen", "SkylakeX",
 * "Cooperlake", "Prescott", ...). */
const char *sy_blas_kernel(void);

/* sgemm speed in GFLOP/s with the current kernel and thread count: 512x512x512 products,
 * one warm-up call, then calls for about `seconds` (<= 0: 0.2 s; at most 1024 calls),
 * rated by the median call so a preempted call does not skew it. Workers report it; bench
 * uses it for model-FLOPs utilisation. Returns -1 (sy_lasterr set) if memory runs out. */
double sy_sgemm_probe(double seconds);

#endif
