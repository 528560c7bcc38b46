#include "trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

static pthread_mutex_t tr_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *tr_file;
static int tr_on; /* read without the lock (__atomic), written under it */
/* ts = (sy_now() + tr_offset) * 1e6: microseconds since 2024-01-01 00:00 UTC on the wall
 * clock, a base small enough that a double keeps them to a hundredth of a microsecond
 * (from 1970 it would be a quarter), and one that processes on one machine share */
static double tr_offset;
#define TRACE_EPOCH 1704067200 /* 2024-01-01 00:00:00 UTC, in Unix seconds */
static int tr_pid;
static size_t tr_bytes;
static char tr_path[4096];
/* a timeline is for looking at steps, not for keeping every one of a long run: past this
 * the file is closed and tracing stops, so a forgotten --trace cannot fill the disk */
#define TRACE_MAX_BYTES ((size_t)256 << 20)

/* under tr_mu: closes the array and the file; why (if not NULL) goes to the log */
static void stop_locked(const char *why) {
    if (tr_file) {
        fputs("\n]\n", tr_file);
        if (fclose(tr_file) && !why)
            why = "cannot write it";
    }
    tr_file = NULL;
    __atomic_store_n(&tr_on, 0, __ATOMIC_RELAXED);
    if (why)
        sy_warn("trace: %s: %s; tracing stopped", tr_path, why);
}

int sy_trace_on(void) { return __atomic_load_n(&tr_on, __ATOMIC_RELAXED); }

const char *sy_trace_path(void) { return tr_path; }

/* wall - monotonic, read back to back (the tightest of a few tries, so a preemption
 * between the two reads does not shift the whole file) */
static double clock_offset(void) {
    double best_gap = 1e9, off = 0.0;
    for (int i = 0; i < 5; i++) {
        struct timespec w;
        double m0 = sy_now();
        clock_gettime(CLOCK_REALTIME, &w);
        double m1 = sy_now();
        if (m1 - m0 < best_gap) {
            best_gap = m1 - m0;
            off = (double)(w.tv_sec - TRACE_EPOCH) + w.tv_nsec * 1e-9 - (m0 + m1) / 2;
        }
    }
    return off;
}

int sy_trace_open(const char *dir, const char *who) {
    if (sy_mkdirs(dir)) {
        sy_err_prefix("trace");
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%d.json", dir, who, (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) {
        sy_seterr("trace: cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    double off = clock_offset();
    pthread_mutex_lock(&tr_mu);
    tr_pid = (int)getpid();
    snprintf(tr_path, sizeof tr_path, "%s", path);
    tr_bytes = 0;
    tr_offset = off;
    tr_file = f;
    /* the host tells an analyzer which files share a clock (a quote, backslash or control
     * character in it would break the JSON: replaced) */
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    for (char *h = host; *h; h++)
        if (*h == '"' || *h == '\\' || (unsigned char)*h < 0x20)
            *h = '_';
    fprintf(f,
            "[{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"%s %d on %s\",\"host\":\"%s\"}}",
            tr_pid, who, tr_pid, host, host);
    fflush(f); /* a process killed before its first step still leaves a valid file */
    __atomic_store_n(&tr_on, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&tr_mu);
    return 0;
}

void sy_trace_close(void) {
    pthread_mutex_lock(&tr_mu);
    stop_locked(NULL);
    pthread_mutex_unlock(&tr_mu);
}

/* under tr_mu */
static void write_locked(const char *ev, size_t n) {
    if (!tr_file)
        return;
    if (tr_bytes + n > TRACE_MAX_BYTES) {
        stop_locked("reached 256 MB");
        return;
    }
    fwrite(ev, 1, n, tr_file);
    tr_bytes += n;
}

/* the calling thread's id, asked of the kernel once per thread, not once per event */
static long tid(void) {
    static __thread long id;
    if (!id)
        id = (long)syscall(SYS_gettid);
    return id;
}

/* one event; args formatted by the caller into a */
static void emit(const char *name, const char *ph, double t0, double t1, const char *a) {
    char ev[768];
    int n = snprintf(ev, sizeof ev, ",\n{\"name\":\"%s\",\"ph\":\"%s\",\"pid\":%d,\"tid\":%ld,\"ts\":%.3f", name, ph,
                     tr_pid, tid(), (t0 + tr_offset) * 1e6);
    if (n > 0 && (size_t)n < sizeof ev && *ph == 'X')
        n += snprintf(ev + n, sizeof ev - (size_t)n, ",\"dur\":%.3f", (t1 - t0) * 1e6);
    else if (n > 0 && (size_t)n < sizeof ev)
        n += snprintf(ev + n, sizeof ev - (size_t)n, ",\"s\":\"t\"");
    if (n > 0 && (size_t)n < sizeof ev)
        n += snprintf(ev + n, sizeof ev - (size_t)n, ",\"args\":{%s}}", a ? a : "");
    if (n <= 0 || (size_t)n >= sizeof ev)
        return; /* cannot happen with the names and args the callers give */
    pthread_mutex_lock(&tr_mu);
    write_locked(ev, (size_t)n);
    pthread_mutex_unlock(&tr_mu);
}

void sy_trace_thread(const char *name) {
    if (!sy_trace_on())
        return;
    char ev[256];
    int n = snprintf(ev, sizeof ev, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%ld,\"args\":{\"name\":\"%s\"}}",
                     tr_pid, tid(), name);
    if (n <= 0 || (size_t)n >= sizeof ev)
        return;
    pthread_mutex_lock(&tr_mu);
    write_locked(ev, (size_t)n);
    pthread_mutex_unlock(&tr_mu);
}

/* the args formatted, then the event; cut args would not be JSON, so they are left out */
static void emit_v(const char *name, const char *ph, double t0, double t1, const char *args, va_list ap) {
    char a[512] = "";
    if (args) {
        int n = vsnprintf(a, sizeof a, args, ap);
        if (n < 0 || (size_t)n >= sizeof a)
            a[0] = 0;
    }
    emit(name, ph, t0, t1, a);
}

void sy_trace_span(const char *name, double t0, double t1, const char *args, ...) {
    if (!sy_trace_on())
        return;
    va_list ap;
    va_start(ap, args);
    emit_v(name, "X", t0, t1, args, ap);
    va_end(ap);
}

void sy_trace_mark(const char *name, double t, const char *args, ...) {
    if (!sy_trace_on())
        return;
    va_list ap;
    va_start(ap, args);
    emit_v(name, "i", t, t, args, ap);
    va_end(ap);
}

void sy_trace_flush(void) {
    if (!sy_trace_on())
        return;
    pthread_mutex_lock(&tr_mu);
    if (tr_file && (fflush(tr_file) || ferror(tr_file)))
        stop_locked(strerror(errno)); /* a full disk stops the timeline, never the training */
    pthread_mutex_unlock(&tr_mu);
}
