/* crc32c.c: CRC-32C, hardware (SSE4.2) or slice-by-8 software. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reversed */

/* tables[k][b]: CRC of byte b followed by k zero bytes; slice-by-8 folds 8 input bytes
 * per step with 8 independent look-ups. */
static uint32_t tables[8][256];
static int hw_ok;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1)));
        tables[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int k = 1; k < 8; k++)
            tables[k][b] = (tables[k - 1][b] >> 8) ^ tables[0][tables[k - 1][b] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2") != 0;
#endif
}

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ tables[0][(c ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        /* little-endian host: the first byte is the low one */
        uint32_t lo = c ^ (uint32_t)w, hi = (uint32_t)(w >> 32);
        c = tables[7][lo & 0xff] ^ tables[6][(lo >> 8) & 0xff] ^ tables[5][(lo >> 16) & 0xff] ^
            tables[4][lo >> 24] ^ tables[3][hi & 0xff] ^ tables[2][(hi >> 8) & 0xff] ^
            tables[1][(hi >> 16) & 0xff] ^ tables[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ tables[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "crc32c.c: slice-by-8 assumes a little-endian host (as does the checkpoint format)"
#endif

uint32_t sy_crc32c_sw(uint32_t crc, const void *data, size_t n) {
    pthread_once(&init_once, crc_init);
    return ~crc_sw(~crc, data, n);
}

uint32_t sy_crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&init_once, crc_init);
#if defined(__x86_64__)
    if (hw_ok)
        return ~crc_hw(~crc, data, n);
#endif
    return ~crc_sw(~crc, data, n);
}

int sy_crc32c_hw_available(void) {
    pthread_once(&init_once, crc_init);
    return hw_ok;
}
