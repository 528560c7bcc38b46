/* heartbeat.h: the worker's heartbeat thread. It owns its own DEALER to the coordinator
 * (routing id "<worker id>/hb"), sends a heartbeat every interval, and watches the
 * coordinator: an Abort for the current epoch, a Shutdown, or silence past the timeout
 * raise the abort flag that every blocking wait of the training loop watches. The main
 * thread never touches this socket (ZeroMQ sockets are not thread-safe). */
#ifndef SY_HEARTBEAT_H
#define SY_HEARTBEAT_H

#include <stdint.h>

typedef struct sy_heartbeat sy_heartbeat;

sy_heartbeat *sy_heartbeat_start(void *zctx, const char *coordinator, const char *worker_id, int interval_ms,
                                 int timeout_ms);
void sy_heartbeat_stop(sy_heartbeat **hb);

/* What the heartbeats carry. */
void sy_heartbeat_set(sy_heartbeat *hb, uint64_t epoch, int64_t step, int state, int rank);
/* The flag collectives watch: non-zero once the epoch in flight must be dropped. */
const volatile int *sy_heartbeat_abort_flag(sy_heartbeat *hb);
/* Raises the abort flag from a signal handler (a lock-free atomic store, so
 * async-signal-safe): every wait of the step in flight returns at once. */
void sy_heartbeat_abort_from_signal(sy_heartbeat *hb);
/* Clears the abort flag for a new epoch. */
void sy_heartbeat_clear_abort(sy_heartbeat *hb, uint64_t epoch);
/* 1 when the coordinator has been silent past the timeout (it then clears on contact). */
int sy_heartbeat_coordinator_lost(sy_heartbeat *hb);
/* The coordinator was heard from on the control socket (a message there proves it alive
 * as much as a heartbeat does): its silence is counted from now. */
void sy_heartbeat_heard(sy_heartbeat *hb);
/* Fault drills only (SWITCHYARD_FAULT=stale-abort): 0.4 s between seeing an Abort of the
 * current epoch and raising the abort flag. */
void sy_heartbeat_drill_slow_abort(sy_heartbeat *hb);
/* 1 when the abort flag of the epoch in flight was raised by the coordinator's silence
 * (not by an Abort, a Shutdown or a signal): the coordinator may not know of it. */
int sy_heartbeat_aborted_by_silence(sy_heartbeat *hb);
/* 1 when the coordinator asked this worker to shut down. */
int sy_heartbeat_shutdown(sy_heartbeat *hb);
/* Timeouts after contact is re-established. */
void sy_heartbeat_set_timing(sy_heartbeat *hb, int interval_ms, int timeout_ms);

#endif
