#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char g_component[64] = "switchyard";
static sy_log_level g_level = SY_LOG_INFO;
static int g_level_from_env = 0;
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char t_err[1024];

void sy_log_set_component(const char *component) {
    snprintf(g_component, sizeof g_component, "%s", component);
}

static void level_from_env(void) {
    if (g_level_from_env)
        return;
    g_level_from_env = 1;
    const char *e = getenv("SWITCHYARD_LOG");
    if (!e)
        return;
    if (!strcasecmp(e, "debug"))
        g_level = SY_LOG_DEBUG;
    else if (!strcasecmp(e, "info"))
        g_level = SY_LOG_INFO;
    else if (!strcasecmp(e, "warn"))
        g_level = SY_LOG_WARN;
    else if (!strcasecmp(e, "error"))
        g_level = SY_LOG_ERROR;
}

void sy_log_set_level(sy_log_level level) {
    g_level_from_env = 1;
    g_level = level;
}

sy_log_level sy_log_get_level(void) {
    level_from_env();
    return g_level;
}

void sy_log(sy_log_level level, const char *fmt, ...) {
    level_from_env();
    if (level < g_level)
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    pthread_mutex_lock(&g_log_lock);
    fprintf(stderr, "%02d:%02d:%02d.%03ld [%s] %s%s%s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, g_component, level == SY_LOG_INFO ? "" : names[level],
            level == SY_LOG_INFO ? "" : ": ", msg);
    fflush(stderr);
    pthread_mutex_unlock(&g_log_lock);
}

void sy_seterr(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_err, sizeof t_err, fmt, ap);
    va_end(ap);
}

const char *sy_lasterr(void) { return t_err[0] ? t_err : "unknown error"; }

void sy_err_prefix(const char *fmt, ...) {
    char buf[2 * sizeof t_err];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof t_err, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof t_err - 1)
        n = (int)sizeof t_err - 1;
    buf[n] = 0;
    strcat(buf, ": ");
    strcat(buf, t_err);
    memcpy(t_err, buf, sizeof t_err - 1);
    t_err[sizeof t_err - 1] = 0;
}

double sy_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sy_fmt_duration(char *out, size_t n, double s) {
    if (!(s >= 0) || s > 1e7)
        snprintf(out, n, "?");
    else if (s >= 3600)
        snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(out, n, "%.0fs", s);
}
