/* crc32c.h: CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected), the checksum on
 * every checkpoint tensor and manifest. Uses the SSE4.2 crc32 instruction when the CPU
 * has it (checked once at run time), a slice-by-8 table otherwise; both give identical
 * results. */
#ifndef SY_CRC32C_H
#define SY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of data[0..n), continuing from `crc` (0 to start). Incremental:
 * sy_crc32c(sy_crc32c(0, a, n), b, m) == CRC of a followed by b.
 * sy_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t sy_crc32c(uint32_t crc, const void *data, size_t n);

/* The table-driven (slice-by-8) version, whatever the CPU; exposed for tests. */
uint32_t sy_crc32c_sw(uint32_t crc, const void *data, size_t n);

/* 1 when sy_crc32c() uses the hardware instruction. */
int sy_crc32c_hw_available(void);

#endif
