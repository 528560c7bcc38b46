/* rng.h: counter-based random numbers. Every random draw in training is a pure function
 * of (seed, step, what, where), so a run resumed from a checkpoint, or split across a
 * different number of workers, draws exactly the same numbers. */
#ifndef SY_RNG_H
#define SY_RNG_H

#include <stdint.h>

static inline uint64_t sy_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A 64-bit hash of up to four counters under a seed. */
static inline uint64_t sy_hash4(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    return sy_mix64(sy_mix64(sy_mix64(sy_mix64(seed) ^ a) ^ b) ^ c);
}

/* Uniform in [0, 1) with 24 random bits (exact in float). */
static inline float sy_u01(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

/* Sequential generator for initialisation (splitmix64 stream). */
typedef struct {
    uint64_t s;
} sy_rng;

static inline uint64_t sy_rng_next(sy_rng *r) {
    r->s += 0x9E3779B97F4A7C15ull;
    uint64_t z = r->s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so log() is safe. */
static inline double sy_rng_uniform(sy_rng *r) { return ((sy_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

#endif
