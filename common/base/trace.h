/* trace.h: a per-process timeline of where a worker's time goes, in the Chrome
 * trace-event format (open the files in ui.perfetto.dev or chrome://tracing; the
 * bench/trace_split.py analyzer splits the waits in them).
 *
 * Off unless sy_trace_open was called; then every call appends one event to the file,
 * one per line, under a mutex (the compute thread and the communication thread both
 * write). Times ("ts") are sy_now() values placed on the wall clock once at open, in
 * microseconds since 2024-01-01 00:00 UTC, so the files of processes on one machine share
 * one time axis; the process's first record names its host, so an analyzer can tell
 * which files need their clocks aligned (bench/trace_split.py does, from the messages).
 * The file is a JSON array written as it goes and flushed at every step (sy_trace_flush):
 * a process that dies leaves all but its last step, and an array without its closing
 * bracket, which the trace viewers accept. A file that reaches 256 MB (some 15,000 steps
 * of the bench model) or cannot be written is closed and tracing stops, with a warning:
 * the run goes on. */
#ifndef SY_TRACE_H
#define SY_TRACE_H

/* Starts tracing into DIR/WHO-PID.json (DIR is made if missing). -1 with sy_seterr if
 * the file cannot be made. */
int sy_trace_open(const char *dir, const char *who);
/* Closes the array and the file; nothing after it is traced. Safe when not open. */
void sy_trace_close(void);
/* Whether events are being written (a cheap check before gathering an event's fields). */
int sy_trace_on(void);
/* The file sy_trace_open made ("" before). */
const char *sy_trace_path(void);
/* Names the calling thread in the timeline ("compute", "overlap"). */
void sy_trace_thread(const char *name);
/* A span [t0, t1] (sy_now() times) named NAME on the calling thread; ARGS, if not NULL,
 * is the inside of a JSON object ("\"step\":3,\"src\":1"), formatted printf-style. */
void sy_trace_span(const char *name, double t0, double t1, const char *args, ...)
    __attribute__((format(printf, 4, 5)));
/* An instant at t. */
void sy_trace_mark(const char *name, double t, const char *args, ...) __attribute__((format(printf, 3, 4)));
/* Pushes what was written to the file (the worker calls it once a step). */
void sy_trace_flush(void);

#endif
