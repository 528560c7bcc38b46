#include "sanitize.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

int sy_id_valid(const char *s, size_t len) {
    if (!s || len == 0 || len > SY_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

const char *sy_esc(char *out, size_t n, const char *s, size_t len) {
    size_t o = 0;
    if (!s) {
        snprintf(out, n, "(null)");
        return out;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        int plain = ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"' && ch != '\'';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > n) { /* room for "..." and the NUL */
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain)
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", ch);
    }
    out[o] = 0;
    return out;
}

const char *sy_esc_str(int slot, const char *s) {
    static _Thread_local char bufs[4][SY_ID_MAX * 2 + 16];
    slot &= 3;
    return sy_esc(bufs[slot], sizeof bufs[slot], s, s ? strlen(s) : 0);
}

void sy_ratelog_warn(sy_ratelog *r, const char *fmt, ...) {
    double now = sy_now();
    r->total++;
    if (now - r->window_start > r->window_s) {
        if (r->suppressed)
            sy_warn("(%llu similar lines suppressed in the last %.0f s; %llu in all)", (unsigned long long)r->suppressed,
                    r->window_s, (unsigned long long)r->total - 1);
        r->window_start = now;
        r->in_window = 0;
        r->suppressed = 0;
    }
    if (r->in_window >= r->burst) {
        r->suppressed++;
        return;
    }
    r->in_window++;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->in_window == r->burst)
        sy_warn("%s (further lines like this are counted, not printed, for %.0f s)", line, r->window_s);
    else
        sy_warn("%s", line);
}
