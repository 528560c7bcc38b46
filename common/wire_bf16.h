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

static inline void sy_f32_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = sy_bf16_from_f32(src[i]);
}

/* src may be unaligned (a received frame) */
static inline void sy_bf16_to_f32(float *dst, const void *src, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] = sy_bf16_to_f32_one(h);
    }
}

static inline void sy_bf16_add_to_f32(float *dst, const void *src, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] += sy_bf16_to_f32_one(h);
    }
}

/* x = bf16(x), in place */
static inline void sy_bf16_round_f32(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = sy_bf16_to_f32_one(sy_bf16_from_f32(x[i]));
}

#endif
