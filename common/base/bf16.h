/* bf16.h: float32 <-> bfloat16 for gradient chunks and token rows on the wire. bf16 is
 * the upper half of a binary32: same exponent range, 8 significant bits.
 * float -> bf16 rounds to nearest, ties to even; NaN stays NaN (sign kept, quiet bit
 * forced: a NaN whose payload sits only in the low half would otherwise become inf);
 * inf stays inf; finite values that round past the largest bf16 become inf, as IEEE
 * rounding says. bf16 -> float is exact.
 *
 * Byte pointers may be unaligned (a received ZeroMQ frame sits at any offset): loads and
 * stores are unaligned ones (memcpy in the scalar code). */
#ifndef SY_BF16_H
#define SY_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Raw binary32 bits -> bf16 bits, branch-free (vectorisable). */
static inline uint32_t sy_bf16_pack_bits(uint32_t u) {
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* nearest, ties to even */
    uint32_t quiet = (u >> 16) | 0x0040u;
    return nan ? quiet : rounded;
}

static inline uint16_t sy_bf16_pack(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)sy_bf16_pack_bits(u);
}

static inline float sy_bf16_unpack(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f rounded to the nearest bf16, as a float. */
static inline float sy_bf16_round(float f) { return sy_bf16_unpack(sy_bf16_pack(f)); }

/* The bulk loops: SSE2 (every x86-64 has it) eight elements at a time, plain C for the
 * tail and for other machines. GCC's auto-vectoriser does not manage the rounding's
 * select and the 32 -> 16 bit narrowing at -O2, hence the intrinsics. */
#if defined(__SSE2__)
#include <emmintrin.h>

/* Four binary32 (as integer lanes) -> four bf16 in the low halves of the lanes. */
static inline __m128i sy_bf16_pack4_sse2(__m128i u) {
    const __m128i one = _mm_set1_epi32(1), bias = _mm_set1_epi32(0x7fff);
    const __m128i absmask = _mm_set1_epi32(0x7fffffff), inf = _mm_set1_epi32(0x7f800000);
    const __m128i quiet = _mm_set1_epi32(0x0040);
    __m128i hi = _mm_srli_epi32(u, 16);
    __m128i r = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, bias), _mm_and_si128(hi, one)), 16);
    __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(u, absmask), inf); /* both sides < 2^31: signed is fine */
    return _mm_or_si128(_mm_and_si128(nan, _mm_or_si128(hi, quiet)), _mm_andnot_si128(nan, r));
}

/* Two vectors of four bf16-in-low-half lanes -> eight packed bf16. (SSE2 has only the
 * signed-saturating pack: sign-extend the halves first so nothing saturates.) */
static inline __m128i sy_bf16_narrow8_sse2(__m128i a, __m128i b) {
    a = _mm_srai_epi32(_mm_slli_epi32(a, 16), 16);
    b = _mm_srai_epi32(_mm_slli_epi32(b, 16), 16);
    return _mm_packs_epi32(a, b);
}
#endif

/* dst (n*2 bytes) = bf16(src (n floats)); both may be unaligned. */
static inline void sy_bf16_pack_n(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 8 <= n; i += 8) {
        __m128i a = sy_bf16_pack4_sse2(_mm_loadu_si128((const __m128i *)(s + 4 * i)));
        __m128i b = sy_bf16_pack4_sse2(_mm_loadu_si128((const __m128i *)(s + 4 * i + 16)));
        _mm_storeu_si128((__m128i *)(d + 2 * i), sy_bf16_narrow8_sse2(a, b));
    }
#endif
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, s + 4 * i, 4);
        uint16_t h = (uint16_t)sy_bf16_pack_bits(u);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* dst (n floats) = src (n bf16); exact. */
static inline void sy_bf16_unpack_n(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm_storeu_si128((__m128i *)(d + 4 * i), _mm_unpacklo_epi16(zero, h)); /* h << 16 per lane */
        _mm_storeu_si128((__m128i *)(d + 4 * i + 16), _mm_unpackhi_epi16(zero, h));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(d + 4 * i, &u, 4);
    }
}

/* acc[i] += float(src[i]): accumulate a received bf16 chunk in fp32. */
static inline void sy_bf16_accumulate_n(float *acc, const void *src, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m128 lo = _mm_castsi128_ps(_mm_unpacklo_epi16(zero, h));
        __m128 hi = _mm_castsi128_ps(_mm_unpackhi_epi16(zero, h));
        _mm_storeu_ps(acc + i, _mm_add_ps(_mm_loadu_ps(acc + i), lo));
        _mm_storeu_ps(acc + i + 4, _mm_add_ps(_mm_loadu_ps(acc + i + 4), hi));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        acc[i] += sy_bf16_unpack(h);
    }
}

/* out[i] = bf16(acc[i] + float(src[i])), the sum done in fp32; with keep, acc[i] also
 * takes the rounded value (as a float). out and src may alias; any alignment. */
static inline void sy_bf16_sum_pack_n(void *out, float *acc, const void *src, size_t n, int keep) {
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *o = (unsigned char *)out;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m128 lo = _mm_add_ps(_mm_loadu_ps(acc + i), _mm_castsi128_ps(_mm_unpacklo_epi16(zero, h)));
        __m128 hi = _mm_add_ps(_mm_loadu_ps(acc + i + 4), _mm_castsi128_ps(_mm_unpackhi_epi16(zero, h)));
        __m128i r = sy_bf16_narrow8_sse2(sy_bf16_pack4_sse2(_mm_castps_si128(lo)),
                                         sy_bf16_pack4_sse2(_mm_castps_si128(hi)));
        _mm_storeu_si128((__m128i *)(o + 2 * i), r);
        if (keep) {
            _mm_storeu_si128((__m128i *)(acc + i), _mm_unpacklo_epi16(zero, r));
            _mm_storeu_si128((__m128i *)(acc + i + 4), _mm_unpackhi_epi16(zero, r));
        }
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        h = sy_bf16_pack(acc[i] + sy_bf16_unpack(h));
        memcpy(o + 2 * i, &h, 2);
        if (keep)
            acc[i] = sy_bf16_unpack(h);
    }
}

#endif
