/* bf16 on the wire (common/bf16.h): round to nearest even, NaN and infinities kept,
 * and the vectorised bulk loops equal to the scalar form at any alignment. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bf16.h"

/* ---------------------------------------------------------------- bf16 */

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16_vectors(void **state) {
    (void)state;
    struct {
        uint32_t in;
        uint16_t out;
        const char *what;
    } v[] = {
        {0x3f800000, 0x3f80, "1.0 exact"},
        {0xbf800000, 0xbf80, "-1.0 exact"},
        {0x00000000, 0x0000, "+0"},
        {0x80000000, 0x8000, "-0"},
        {0x3f808000, 0x3f80, "1 + 2^-8: halfway, ties to even (down)"},
        {0x3f818000, 0x3f82, "1 + 3*2^-8: halfway, ties to even (up)"},
        {0x3f808001, 0x3f81, "just above halfway rounds up"},
        {0x3f807fff, 0x3f80, "just below halfway rounds down"},
        {0xbf818000, 0xbf82, "negative halfway, ties to even"},
        {0x7f800000, 0x7f80, "+inf"},
        {0xff800000, 0xff80, "-inf"},
        {0x7f7f0000, 0x7f7f, "largest bf16 exact"},
        {0x7f7fffff, 0x7f80, "FLT_MAX rounds to inf"},
        {0x00010000, 0x0001, "subnormal exact"},
        {0x00008000, 0x0000, "half the smallest subnormal: to even (0)"},
        {0x40490fdb, 0x4049, "pi"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint16_t got = sy_bf16_pack(f_of(v[i].in));
        if (got != v[i].out)
            fail_msg("%s: 0x%08x -> 0x%04x, want 0x%04x", v[i].what, v[i].in, got, v[i].out);
    }
    /* NaNs stay NaN, including those whose payload is only in the low half. */
    uint32_t nans[] = {0x7fc00000, 0xffc00000, 0x7f800001, 0x7f80ffff, 0xff800001, 0x7fffffff};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = sy_bf16_pack(f_of(nans[i]));
        assert_true(isnan(sy_bf16_unpack(h)));
        assert_int_equal(h >> 15, nans[i] >> 31); /* sign kept */
    }
    assert_true(isinf(sy_bf16_unpack(0x7f80)) && sy_bf16_unpack(0x7f80) > 0);
    assert_true(sy_bf16_unpack(0x3f80) == 1.0f);
    assert_true(sy_bf16_round(1.00390625f) == 1.0f); /* 1 + 2^-8 */

    /* Bulk loops (vectorised blocks + tail) agree with the scalar form, at odd offsets. */
    enum { N = 1000 + 13 };
    static unsigned char src[4 * N + 3], dst[2 * N + 1], back[4 * N + 2];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof src; i++) {
        x = x * 1664525u + 1013904223u;
        src[i] = (unsigned char)(x >> 24);
    }
    sy_bf16_pack_n(dst + 1, src + 3, N);
    sy_bf16_unpack_n(back + 2, dst + 1, N);
    for (size_t i = 0; i < N; i++) {
        float f;
        uint16_t h;
        memcpy(&f, src + 3 + 4 * i, 4);
        memcpy(&h, dst + 1 + 2 * i, 2);
        uint16_t want = sy_bf16_pack(f);
        if (h != want)
            fail_msg("element %zu: bulk 0x%04x, scalar 0x%04x", i, h, want);
        uint32_t u;
        memcpy(&u, back + 2 + 4 * i, 4);
        assert_int_equal(u, (uint32_t)h << 16);
    }
    float acc[37];
    uint16_t hs[37];
    for (int i = 0; i < 37; i++) {
        acc[i] = (float)i;
        hs[i] = sy_bf16_pack(0.5f * (float)i);
    }
    sy_bf16_accumulate_n(acc, hs, 37);
    for (int i = 0; i < 37; i++)
        assert_true(acc[i] == 1.5f * (float)i);
    /* Round trip error bound: |bf16(x) - x| <= 2^-8 |x| for normal x. */
    for (int i = 0; i < 10000; i++) {
        x = x * 1664525u + 1013904223u;
        float f = ((float)(x >> 8) / 16777216.0f - 0.5f) * 1000.0f;
        float r = sy_bf16_round(f);
        assert_true(fabsf(r - f) <= ldexpf(fabsf(f), -8));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
