/* text.c: what the status renderings share: UTF-8 decoding, terminal widths, number
 * and language-name formats. */
#include "text.h"

#include <stdio.h>
#include <stdlib.h>

size_t sy_utf8_next(const unsigned char *s, uint32_t *cp) {
    unsigned b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (b >= 0xC2 && b <= 0xDF) {
        n = 1;
        v = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 2;
        v = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 3;
        v = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F;
    } else {
        *cp = BAD_CP;
        return 1;
    }
    for (int i = 1; i <= n; i++) {
        unsigned c = s[i];
        if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xBF)) {
            *cp = BAD_CP;
            return 1;
        }
        v = (v << 6) | (c & 0x3F);
    }
    *cp = v;
    return (size_t)n + 1;
}

int sy_cp_width(uint32_t c) {
    if ((c >= 0x0300 && c <= 0x036F) || (c >= 0x200B && c <= 0x200F) || (c >= 0xFE00 && c <= 0xFE0F))
        return 0;
    if ((c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0x303E) || (c >= 0x3041 && c <= 0x33FF) ||
        (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xA000 && c <= 0xA4CF) ||
        (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE30 && c <= 0xFE4F) ||
        (c >= 0xFF00 && c <= 0xFF60) || (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x1F300 && c <= 0x1F64F) ||
        (c >= 0x1F900 && c <= 0x1F9FF) || (c >= 0x20000 && c <= 0x3FFFD))
        return 2;
    return 1;
}

/* The shortest %g form that reads back as the same double. */
void sy_fmt_double(char *b, size_t n, double v) {
    if (!b || !n)
        return;
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, n, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            return;
    }
}

const char *sy_status_lang_name(const Switchyard__StatusReply *r, size_t g, char *b, size_t n) {
    if (g < r->n_languages && r->languages[g] && r->languages[g][0])
        return r->languages[g];
    snprintf(b, n, "lang%zu", g);
    return b;
}
