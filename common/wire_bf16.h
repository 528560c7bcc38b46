/* wire_bf16.h: bfloat16 <-> float32 for the wire. Rounding is to nearest, ties to even; NaN
 * stays NaN, infinities stay infinite. */
#ifndef SY_WIRE_BF16_H
#define SY_WIRE_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t sy_bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float sy_bf16_to_f32_one(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* branch-free so the loop vectorises: NaN keeps its sign and gets a quiet bit */
static inline void sy_f32_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n) {
    const uint32_t *u = (const uint32_t *)src;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = u[i];
        uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        uint32_t q = (x >> 16) | 0x40u;
        /* all-ones where x is NaN; a signed compare, which SSE2 has */
        uint32_t nan = (uint32_t) - (int32_t)((int32_t)(x & 0x7fffffffu) > 0x7f800000);
        dst[i] = (uint16_t)(r ^ ((r ^ q) & nan));
    }
}

/* src may be unaligned (a received frame) */
static inline void sy_bf16_to_f32(float *restrict dst, const void *src, size_t n) {
    if (((uintptr_t)src & 1) == 0) {
        const uint16_t *restrict h = src;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)h[i] << 16;
            memcpy(&dst[i], &u, 4);
        }
        return;
    }
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] = sy_bf16_to_f32_one(h);
    }
}

static inline void sy_bf16_add_to_f32(float *restrict dst, const void *src, size_t n) {
    if (((uintptr_t)src & 1) == 0) {
        const uint16_t *restrict h = src;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)h[i] << 16;
            float f;
            memcpy(&f, &u, 4);
            dst[i] += f;
        }
        return;
    }
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] += sy_bf16_to_f32_one(h);
    }
}

/* x = bf16(x), in place */
static inline void sy_bf16_round_f32(float *x, size_t n) {
    uint32_t *u = (uint32_t *)x;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = u[i];
        uint32_t r = ((v + 0x7fffu + ((v >> 16) & 1u)) >> 16) << 16;
        uint32_t q = ((v >> 16) | 0x40u) << 16;
        uint32_t nan = (uint32_t) - (int32_t)((int32_t)(v & 0x7fffffffu) > 0x7f800000);
        u[i] = r ^ ((r ^ q) & nan);
    }
}

#endif
