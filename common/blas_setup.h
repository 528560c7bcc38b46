/* blas_setup.h: make OpenBLAS run a kernel that matches this CPU. Debian's OpenBLAS
 * 0.3.21 picks its kernel from CPUID when the library loads and, on CPUs it does not
 * know, falls back to slow generic kernels (about 8x slower for sgemm). The choice has
 * to follow the CPU's real features: forcing an AVX-512 kernel on a CPU without it dies
 * of SIGILL. */
#ifndef SY_BLAS_SETUP_H
#define SY_BLAS_SETUP_H

/* Feature bits for sy_blas_pick_core. */
enum {
    SY_CPU_AVX2 = 1u << 0,
    SY_CPU_FMA = 1u << 1,
    SY_CPU_AVX512F = 1u << 2,
    SY_CPU_AVX512VL = 1u << 3,
    SY_CPU_AVX512BW = 1u << 4,
    SY_CPU_AVX512DQ = 1u << 5,
    SY_CPU_AVX512BF16 = 1u << 6,
    SY_CPU_OS_AVX = 1u << 7,    /* the OS saves AVX state (XGETBV) */
    SY_CPU_OS_AVX512 = 1u << 8, /* the OS saves AVX-512 state */
    SY_CPU_AMD = 1u << 9,
};

/* The OpenBLAS core name for a feature set ("COOPERLAKE", "SKYLAKEX", "HASWELL", "ZEN"),
 * or NULL to leave OpenBLAS's own choice. Pure function. */
const char *sy_blas_pick_core(unsigned features);
/* This CPU's feature bits. */
unsigned sy_cpu_features_mask(void);
/* 1 when a core name's instructions are available with these features. */
int sy_blas_core_supported(const char *core, unsigned features);

/* Call first in main(): picks the kernel (re-executing the program once with
 * OPENBLAS_CORETYPE set when the loaded library chose another), honours
 * SWITCHYARD_BLAS_CORE=auto|none|NAME and a user's OPENBLAS_CORETYPE (refusing one the
 * CPU cannot run), sets the thread count (SWITCHYARD_THREADS, else OPENBLAS_NUM_THREADS,
 * else all cores) and logs one line. Returns 0, or -1 with a message. */
int sy_blas_setup(int argc, char **argv, const char *component);

void sy_blas_set_threads(int n);
int sy_blas_threads(void);
/* The kernel OpenBLAS runs ("Haswell", "Zen", "SkylakeX", "Cooperlake", "Prescott"). */
const char *sy_blas_kernel(void);
/* A short feature string ("avx2 fma"). */
const char *sy_cpu_features(void);

/* sgemm GFLOP/s with the current thread count, measured for about `seconds`. */
double sy_sgemm_probe(double seconds);

#endif
