/* text.h: what the three renderings of a StatusReply share for untrusted strings:
 * UTF-8 decoding that flags malformed bytes, terminal widths of code points. Internal to
 * cli/status/. */
#ifndef SY_STATUS_TEXT_H
#define SY_STATUS_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "switchyard.pb-c.h"

#define S(x) ((x) ? (x) : "") /* NULL strings read as "" */
#define BAD_CP 0xFFFFFFFFu

/* Decodes the sequence at s (NUL-terminated); returns its length in bytes (>= 1) and the
 * code point in *cp, or BAD_CP for a byte that does not start a well-formed sequence
 * (overlong forms, surrogates and values past U+10FFFF are not well formed). */
size_t sy_utf8_next(const unsigned char *s, uint32_t *cp);

/* Terminal columns of a printable code point: 0 for combining marks and zero-width
 * characters, 2 for East Asian wide and emoji blocks, 1 otherwise. An approximation of
 * wcwidth() that does not depend on the locale. */
int sy_cp_width(uint32_t c);

/* The shortest %g form of v that reads back as the same double. */
void sy_fmt_double(char *b, size_t n, double v);

/* Name of language g of the reply, or "langG" when the reply has none; b: room for it. */
const char *sy_status_lang_name(const Switchyard__StatusReply *r, size_t g, char *b, size_t n);

#endif
