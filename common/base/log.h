/* log.h: leveled logging to stderr with a component prefix ("[worker 2]"), and the
 * per-thread error message that failing functions leave for their caller. */
#ifndef SY_LOG_H
#define SY_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { SY_LOG_DEBUG = 0, SY_LOG_INFO = 1, SY_LOG_WARN = 2, SY_LOG_ERROR = 3 } sy_log_level;

/* Sets the prefix printed before every line, e.g. "coordinator" or "worker 2". */
void sy_log_set_component(const char *component);
/* Lines below this level are not printed. Default INFO; SWITCHYARD_LOG=debug lowers it. */
void sy_log_set_level(sy_log_level level);
sy_log_level sy_log_get_level(void);

void sy_log(sy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define sy_debug(...) sy_log(SY_LOG_DEBUG, __VA_ARGS__)
#define sy_info(...) sy_log(SY_LOG_INFO, __VA_ARGS__)
#define sy_warn(...) sy_log(SY_LOG_WARN, __VA_ARGS__)
#define sy_error(...) sy_log(SY_LOG_ERROR, __VA_ARGS__)

/* Error convention: a function that fails returns a negative value (or NULL) and calls
 * sy_seterr() with a message naming what was wrong ("file:key: reason"). The caller
 * prints sy_lasterr(). The message is per thread. */
void sy_seterr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *sy_lasterr(void);
/* Prepends "prefix: " to the current error message (adds context on the way up). */
void sy_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "2h05m", "3m12s", "45s" ("?" for a negative or absurd value): for ETAs. */
void sy_fmt_duration(char *out, size_t n, double seconds);

/* Monotonic clock in seconds. */
double sy_now(void);

#endif
