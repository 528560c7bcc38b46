/* sanitize.h: what untrusted names may look like, how they appear in log lines, and log
 * lines about rejected input that cannot flood the log.
 *
 * Ids (worker ids, routing ids) are printable ASCII without spaces, 1..SY_ID_MAX bytes.
 * Anything a peer sends that reaches a log line goes through sy_esc first: control
 * bytes, quotes, backslashes and bytes >= 0x7f become \xNN, and long strings are cut
 * with "...", so a newline in a routing id can never forge a line of the log. */
#ifndef SY_SANITIZE_H
#define SY_SANITIZE_H

#include <stddef.h>
#include <stdint.h>

#define SY_ID_MAX 200

/* 1 when s[0..len) is a valid id: 1..SY_ID_MAX bytes, each 0x21..0x7e. */
int sy_id_valid(const char *s, size_t len);

/* Escapes s[0..len) into out (n bytes, n >= 8) and returns out. */
const char *sy_esc(char *out, size_t n, const char *s, size_t len);
/* sy_esc of a NUL-terminated string into a thread-local buffer (one per call site slot
 * 0..3, so up to four may appear in one log line). */
const char *sy_esc_str(int slot, const char *s);

/* Rate-limited logging of rejected input: at most `burst` lines per `window` seconds;
 * the first line after a quiet window says how many were suppressed. Counts every event
 * (total) whether printed or not. Not thread-safe: one per thread or per socket. */
typedef struct {
    double window_s;
    int burst;
    double window_start;
    int in_window;
    uint64_t suppressed;
    uint64_t total;
} sy_ratelog;

#define SY_RATELOG_INIT(window, burst_) {(window), (burst_), 0.0, 0, 0, 0}

/* Counts one rejected event and logs it at WARN unless the budget is spent. */
void sy_ratelog_warn(sy_ratelog *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
