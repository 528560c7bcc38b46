#define _GNU_SOURCE /* pthread_setname_np */
#include "heartbeat.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "ctrl.h"
#include "curve.h"
#include "log.h"

struct sy_heartbeat {
    void *ctx;
    char coordinator[256];
    char id[300];
    pthread_t th;
    int started;
    volatile int stop;
    volatile int abort_flag;
    volatile int lost;
    volatile int silence_abort;  /* the abort flag was raised by the coordinator's silence */
    volatile int64_t heard_ms;   /* when the coordinator was last heard from, either socket */
    volatile int shutdown;
    volatile int interval_ms, timeout_ms;
    volatile uint64_t epoch, abort_epoch;
    volatile int64_t step;
    volatile int state, rank;
    /* orders the thread's "an Abort for this epoch: raise the flag" against the main
     * thread's "a new epoch: clear the flag" (sy_heartbeat_clear_abort): without it an
     * Abort of the old epoch checked just before the new Assignment was applied raised
     * the flag just after, and the new epoch's first step stopped for nothing */
    pthread_mutex_t mu;
    volatile int slow_abort;     /* drills (sy_heartbeat_drill_slow_abort): 0.4 s between check and flag */
};

static int64_t now_ms(void) { return (int64_t)(sy_now() * 1000.0); }

static void *run(void *arg) {
    sy_heartbeat *hb = arg;
    void *s = zmq_socket(hb->ctx, ZMQ_DEALER);
    if (!s)
        return NULL;
    sy_sock_defaults(s, 0);
    /* a heartbeat never blocks this thread: with no connection up (a refused handshake, a
     * coordinator gone) a DEALER's send would wait forever and the worker could not stop */
    int sndtimeo = 1000;
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, hb->id, strlen(hb->id));
    sy_sec_coordinator_client(s); /* CURVE with the worker's key, like the control socket */
    zmq_connect(s, hb->coordinator);
    double next_send = 0.0;
    while (!__atomic_load_n(&hb->stop, __ATOMIC_ACQUIRE)) {
        double now = sy_now();
        if (now >= next_send) {
            Switchyard__Heartbeat h = SWITCHYARD__HEARTBEAT__INIT;
            h.epoch = hb->epoch;
            h.step = hb->step;
            h.state = (uint32_t)hb->state;
            h.rank = (uint32_t)hb->rank;
            Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
            env.msg_case = SWITCHYARD__ENVELOPE__MSG_HEARTBEAT;
            env.heartbeat = &h;
            sy_ctrl_send(s, NULL, 0, &env, NULL, 0);
            next_send = now + hb->interval_ms / 1000.0;
        }
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) > 0) {
            sy_ctrl_msg m;
            while (sy_ctrl_recv(s, 0, &m, ZMQ_DONTWAIT) != -1) {
                if (!m.env)
                    continue;
                __atomic_store_n(&hb->heard_ms, now_ms(), __ATOMIC_RELEASE);
                if (hb->lost) {
                    sy_info("coordinator is back");
                    __atomic_store_n(&hb->lost, 0, __ATOMIC_RELEASE);
                }
                if (m.env->msg_case == SWITCHYARD__ENVELOPE__MSG_ABORT) {
                    pthread_mutex_lock(&hb->mu);
                    if (m.env->abort->epoch >= hb->epoch) {
                        sy_warn("abort from the coordinator (epoch %llu): %s",
                                (unsigned long long)m.env->abort->epoch, m.env->abort->reason);
                        if (hb->slow_abort)
                            nanosleep(&(struct timespec){0, 400000000}, NULL);
                        __atomic_store_n(&hb->abort_flag, 1, __ATOMIC_RELEASE);
                    }
                    pthread_mutex_unlock(&hb->mu);
                } else if (m.env->msg_case == SWITCHYARD__ENVELOPE__MSG_SHUTDOWN) {
                    __atomic_store_n(&hb->shutdown, 1, __ATOMIC_RELEASE);
                    __atomic_store_n(&hb->abort_flag, 1, __ATOMIC_RELEASE);
                }
                sy_ctrl_msg_free(&m);
            }
        }
        int64_t silent_ms = now_ms() - __atomic_load_n(&hb->heard_ms, __ATOMIC_ACQUIRE);
        if (!hb->lost && silent_ms > hb->timeout_ms) {
            sy_warn("no word from the coordinator for %.1f s: stopping the step in flight", silent_ms / 1000.0);
            __atomic_store_n(&hb->lost, 1, __ATOMIC_RELEASE);
            __atomic_store_n(&hb->silence_abort, 1, __ATOMIC_RELEASE);
            __atomic_store_n(&hb->abort_flag, 1, __ATOMIC_RELEASE);
        }
    }
    zmq_close(s);
    return NULL;
}

sy_heartbeat *sy_heartbeat_start(void *zctx, const char *coordinator, const char *worker_id, int interval_ms,
                                 int timeout_ms) {
    sy_heartbeat *hb = calloc(1, sizeof *hb);
    if (!hb) {
        sy_seterr("heartbeat: out of memory");
        return NULL;
    }
    hb->ctx = zctx;
    snprintf(hb->coordinator, sizeof hb->coordinator, "%s", coordinator);
    snprintf(hb->id, sizeof hb->id, "%s/hb", worker_id);
    hb->interval_ms = interval_ms;
    hb->timeout_ms = timeout_ms;
    hb->rank = -1;
    hb->heard_ms = now_ms();
    pthread_mutex_init(&hb->mu, NULL);
    if (pthread_create(&hb->th, NULL, run, hb)) {
        pthread_mutex_destroy(&hb->mu);
        free(hb);
        sy_seterr("heartbeat: cannot start its thread");
        return NULL;
    }
    pthread_setname_np(hb->th, "sy-heartbeat");
    hb->started = 1;
    return hb;
}

void sy_heartbeat_stop(sy_heartbeat **phb) {
    sy_heartbeat *hb = phb ? *phb : NULL;
    if (!hb)
        return;
    __atomic_store_n(&hb->stop, 1, __ATOMIC_RELEASE);
    if (hb->started)
        pthread_join(hb->th, NULL);
    pthread_mutex_destroy(&hb->mu);
    free(hb);
    *phb = NULL;
}

void sy_heartbeat_set(sy_heartbeat *hb, uint64_t epoch, int64_t step, int state, int rank) {
    hb->epoch = epoch;
    hb->step = step;
    hb->state = state;
    hb->rank = rank;
}

const volatile int *sy_heartbeat_abort_flag(sy_heartbeat *hb) { return &hb->abort_flag; }

void sy_heartbeat_abort_from_signal(sy_heartbeat *hb) { __atomic_store_n(&hb->abort_flag, 1, __ATOMIC_RELEASE); }

void sy_heartbeat_clear_abort(sy_heartbeat *hb, uint64_t epoch) {
    pthread_mutex_lock(&hb->mu);
    hb->epoch = epoch;
    __atomic_store_n(&hb->silence_abort, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&hb->abort_flag, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&hb->mu);
}

void sy_heartbeat_heard(sy_heartbeat *hb) {
    __atomic_store_n(&hb->heard_ms, now_ms(), __ATOMIC_RELEASE);
    if (__atomic_load_n(&hb->lost, __ATOMIC_ACQUIRE)) {
        sy_info("coordinator is back");
        __atomic_store_n(&hb->lost, 0, __ATOMIC_RELEASE);
    }
}

void sy_heartbeat_drill_slow_abort(sy_heartbeat *hb) { hb->slow_abort = 1; }

int sy_heartbeat_aborted_by_silence(sy_heartbeat *hb) { return __atomic_load_n(&hb->silence_abort, __ATOMIC_ACQUIRE); }

int sy_heartbeat_coordinator_lost(sy_heartbeat *hb) { return __atomic_load_n(&hb->lost, __ATOMIC_ACQUIRE); }
int sy_heartbeat_shutdown(sy_heartbeat *hb) { return __atomic_load_n(&hb->shutdown, __ATOMIC_ACQUIRE); }

void sy_heartbeat_set_timing(sy_heartbeat *hb, int interval_ms, int timeout_ms) {
    hb->interval_ms = interval_ms;
    hb->timeout_ms = timeout_ms;
}
