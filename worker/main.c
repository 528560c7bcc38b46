/* switchyard-worker: registers with the coordinator, takes its place in the mesh, and
 * trains in lock-step with its peers: a plain poll loop over the control socket; the
 * heavy lifting is sy_step_run over the peer collectives. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "blas_setup.h"
#include "checkpoint.h"
#include "config.h"
#include "crc32c.h"
#include "ctrl.h"
#include "curve.h"
#include "data.h"
#include "exchange.h"
#include "fsutil.h"
#include "heartbeat.h"
#include "msgsize.h"
#include "log.h"
#include "trace.h"
#include "mesh.h"
#include "model.h"
#include "model_load.h"
#include "peer.h"
#include "reducer.h"
#include "model_io.h"
#include "refcase.h"
#include "handover.h"
#include "replica.h"
#include "run.h"
#include "step.h"

enum { ST_REGISTERING = 0, ST_SETUP = 1, ST_READY = 2, ST_STEP = 3, ST_SAVING = 4 };

static volatile sig_atomic_t g_signal;
static sy_heartbeat *volatile g_hb; /* set once the heartbeat thread runs */
/* A signal ends the step in flight at its next wait (a peer may never send again: it got
 * the same signal), then the main loop leaves. */
static void on_signal(int sig) {
    g_signal = sig;
    if (g_hb)
        sy_heartbeat_abort_from_signal(g_hb);
}

/* What a re-homing assignment keeps of the previous one: the model and moments of this
 * rank and the replicas it kept. */
typedef struct {
    sy_model *model;
    float *mom, *vel;
    sy_replica *replica;
} kept_state;

typedef struct worker worker;

/* One switch layer's replica gradients, on the overlap thread (rep_job_fn). */
typedef struct {
    worker *w;
    int layer;
    int64_t step;
    sy_peer *peer; /* the overlap thread's, while the job runs */
} rep_job;

struct worker {
    /* process */
    void *zctx, *ctrl;
    sy_heartbeat *hb;
    sy_peer *peer;
    sy_zap *zap;            /* CURVE authentication of the data sockets (NULL with --insecure) */
    sy_reducer *reducer;    /* the overlap thread's own peer sockets (wire.overlap) */
    char id[128], coordinator[256];
    char advertised[300];   /* the data endpoint peers connect to (may differ from the bound one) */
    char reducer_advertised[300]; /* the same for the overlap thread's data socket (and, after a
                                     newline, its local endpoint when there is one) */
    char local_dir[96];     /* private (0700) directory of the local (ipc) data sockets, or "" */
    double gflops;
    int threads;
    /* assignment */
    int assigned;
    uint64_t epoch;
    int rank;
    int job;
    sy_config cfg;
    int have_cfg;
    sy_mesh mesh;
    sy_model *model;
    sy_distill distill;     /* teacher of train.distill_from for this rank's rows, or none */
    sy_experts *experts;
    sy_exchange *exchange;
    float *mom, *vel;
    int32_t *batch;
    int16_t *lang;
    sy_stepper stepper;     /* the step over this worker's model, buffers and peer collectives */
    sy_expert_load load;    /* this step's routing, for the report */
    uint32_t *rep_wanted, *rep_kept, *rep_lang; /* the report's copies of it */
    sy_tokens *train;
    sy_refcase rc;
    int have_rc;
    int *group_all, *group_data, *group_replicas;
    int n_data, n_replicas;
    int64_t last_step;
    int reducer_ready;      /* the reducer is set up for this assignment's epoch */
    int data_deadline_ms;
    double last_step_time;
    double trace_reported;  /* --trace: when the last step's report went (sy_now()), or 0 */
    int64_t trace_step;     /* and its step and epoch */
    uint64_t trace_epoch;
    int state_pending;      /* the assignment's weights are still arriving as TensorShards */
    int data_failed;        /* this machine has no usable training data: leave the run */
    int state_tensors;
    /* buddy replicas and two-phase steps (replica.h, coordinator/rehome.c) */
    sy_replica *replica;    /* the experts this rank keeps for its wards; NULL: replicas off */
    int replica_every;
    int replica_synced;     /* a full copy went to the buddy in this epoch */
    int64_t state_step;     /* the step this rank's parameters and moments are at */
    int64_t pending_step;   /* a step prepared (gradients in place) but not committed; -1: none */
    sy_step_result pending; /* its lr and clip scale */
    double t_replica;
    double t_commit;        /* seconds of the last commit (the optimizer) */
    double t_replica_commit; /* seconds of the last commit's replica update (their AdamW) */
    /* a grown mesh (handover.h): the previous state, handed over at the first step */
    int handover_pending;
    kept_state kept;
    int prev_world;
    int *prev_begin, *prev_end;
    /* replica gradients on the overlap thread: one job per switch layer, queued by the
     * backward (stage_final_fn) */
    rep_job *rep_jobs;      /* [n_layers] */
    int rep_queued;         /* jobs queued in this step */
    double t_rep_thread;    /* seconds the overlap thread spent on them in this step */
    /* stand-ins (exchange.h): the expert runner's views of the model's experts and of the
     * wards' kept here, and the buddy table (ranks = group indices: one data group) */
    sy_weights sv, sg;
    float **view_ptrs;
    int *buddy;             /* [world], or NULL: no stand-ins in this assignment */
    uint64_t standin_rows;  /* rows of the wards' experts run here since the last log line */
};

static void kept_free(kept_state *k);

/* ---------------------------------------------------------------- fault drills
 * SWITCHYARD_FAULT="kill@STEP:WHERE" makes this worker SIGKILL itself at step STEP, at
 * WHERE = alltoall (inside the first all-to-all), allreduce (before the gradient
 * all-reduce), replica (on the overlap thread, before a layer's replica gradients go to
 * the buddy), save (halfway through sending its checkpoint shards) or start (before the
 * step). SWITCHYARD_FAULT="register-twice" makes it wait 1.2 s after its first Register
 * before it reads anything, so that it registers again (its 1 s back-off) while its
 * Assignment waits in its queue, as a worker on a loaded machine does. Used by the drills
 * in tests/; it does nothing unless set. SWITCHYARD_FAULT="slow-compute:MS" makes every
 * training step spin for MS milliseconds of compute before its forward: a slower machine
 * (tests/trace.sh; unlike SIGSTOP it leaves ZeroMQ's I/O thread running). */
static int64_t g_fault_step = -1;
static double g_fault_slow_s;
static char g_fault_where[32];
static int g_fault_register_twice;
static int g_fault_slow_monitor; /* drill: 0.5 s between connecting the control socket and watching it */
/* SWITCHYARD_FAULT="stale-abort": the heartbeat thread takes 0.4 s between seeing an Abort
 * of its epoch and raising the flag, and this thread applies a re-homing Assignment 0.2 s
 * late, so the old epoch's Abort lands after the new epoch began (tests/drill_stale_abort.sh) */
static int g_fault_stale_abort;

/* SWITCHYARD_OVERLAP_AB=1 (benchmarks only, bench/overlap.sh): the overlapped all-reduce
 * and the pipelined expert exchange on even steps only, the serial ones on odd steps, so
 * one run compares both under the same load (the bits are the same either way). */
static int g_overlap_ab;
/* SWITCHYARD_REPLICA_AB=1 (benchmarks only, bench/replica_ab.sh): the replica gradients
 * go on the overlap thread during the backward in even steps only; odd steps send them
 * after the all-reduce, as before (the same bits either way). */
static int g_replica_ab;
/* SWITCHYARD_FILL_AB=1 (benchmarks only, bench/overlap.sh AB=fill): the backward fills the
 * exchange's waits with put-off weight gradients (wire.fill_waits) on even steps only, and
 * computes them in place on odd steps (the same bits either way). */
static int g_fill_ab;

static void fault_init(void) {
    const char *ab = getenv("SWITCHYARD_OVERLAP_AB");
    g_overlap_ab = ab && !strcmp(ab, "1");
    ab = getenv("SWITCHYARD_REPLICA_AB");
    g_replica_ab = ab && !strcmp(ab, "1");
    ab = getenv("SWITCHYARD_FILL_AB");
    g_fill_ab = ab && !strcmp(ab, "1");
    const char *f = getenv("SWITCHYARD_FAULT");
    long long st;
    if (f && sscanf(f, "kill@%lld:%31s", &st, g_fault_where) == 2)
        g_fault_step = st;
    g_fault_register_twice = f && !strcmp(f, "register-twice");
    g_fault_stale_abort = f && !strcmp(f, "stale-abort");
    g_fault_slow_monitor = f && !strcmp(f, "slow-monitor");
    int ms;
    if (f && sscanf(f, "slow-compute:%d", &ms) == 1 && ms > 0)
        g_fault_slow_s = ms / 1000.0;
}

static void fault_point(int64_t step, const char *where) {
    if (g_fault_step >= 0 && step == g_fault_step && !strcmp(where, g_fault_where)) {
        sy_warn("fault drill: killing this worker at step %lld (%s)", (long long)step, where);
        raise(SIGKILL);
    }
}

/* ---------------------------------------------------------------- transport adaptors */

static int a2a_fn(void *comm, uint32_t tag, void *const *send, const size_t *send_bytes, const void **recv,
                  size_t *recv_bytes) {
    worker *w = comm;
    fault_point(w->last_step, "alltoall");
    return sy_peer_alltoall(w->peer, w->group_data, w->n_data, w->last_step, tag, send, send_bytes, recv,
                            recv_bytes);
}

static int peer_idle(void *model) {
    if (!sy_trace_on())
        return sy_model_backward_idle(model);
    double t0 = sy_now();
    int rc = sy_model_backward_idle(model);
    if (rc)
        sy_trace_span("fill", t0, sy_now(), NULL);
    return rc;
}

/* The same all-to-all in chunks, for the exchange's pipeline (wire.overlap). */
static int a2a_send_chunk(void *comm, uint32_t tag, uint32_t chunk, int q, const void *data, size_t bytes) {
    worker *w = comm;
    fault_point(w->last_step, "alltoall");
    return sy_peer_send_chunk(w->peer, w->group_data[q], w->last_step, tag, chunk, data, bytes);
}

static int a2a_recv_chunk(void *comm, uint32_t tag, uint32_t chunk, int q, const void **data, size_t *bytes) {
    worker *w = comm;
    return sy_peer_recv_chunk(w->peer, w->group_data[q], w->last_step, tag, chunk, data, bytes);
}

static void a2a_release(void *comm) { sy_peer_release(((worker *)comm)->peer); }

static int allreduce_fn(void *comm, int group, float *data, size_t n, uint32_t tag) {
    worker *w = comm;
    fault_point(w->last_step, "allreduce");
    const int *members = group == 0 ? w->group_all : w->group_replicas;
    int cnt = group == 0 ? w->mesh.world : w->n_replicas;
    return sy_peer_allreduce(w->peer, members, cnt, w->last_step, 0x10000u | tag, data, n,
                             w->cfg.wire.dtype == SY_WIRE_BF16, (size_t)w->cfg.wire.chunk_bytes);
}

/* The replicas' all-to-all: over every rank, fp32 bytes as they are. */
static int replica_a2a(void *ctx, uint32_t tag, int64_t step, void *const *send, const size_t *send_bytes,
                       const void **recv, size_t *recv_bytes) {
    worker *w = ctx;
    return sy_peer_alltoall(w->peer, w->group_all, w->mesh.world, step, tag, send, send_bytes, recv, recv_bytes);
}

/* The overlapped all-reduce (common/net/reducer.h). The reducer's endpoints are not in
 * the peer table: the first step of an assignment swaps them over the main peer, at the
 * start of the step (the same point on every rank). */
static int part_begin_fn(void *comm) {
    worker *w = comm;
    if (w->reducer_ready)
        return 0;
    int n = w->mesh.world;
    void *send[256] = {0};
    size_t sb[256] = {0}, rb[256];
    const void *recv[256];
    char *eps[256], *local[256];
    char split[256][300];
    if (n > 256) {
        sy_seterr("overlap: more than 256 workers");
        return -1;
    }
    const char *mine = w->reducer_advertised;
    for (int i = 0; i < n; i++) {
        send[i] = (void *)mine;
        sb[i] = strlen(mine) + 1;
    }
    int rc = sy_peer_alltoall(w->peer, w->group_all, n, w->last_step, 0x40000000u, send, sb, recv, rb);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++)
        if (rb[i] < 2 || ((const char *)recv[i])[rb[i] - 1] != '\0') {
            sy_seterr("overlap: rank %d sent no reducer endpoint", w->group_all[i]);
            return -1;
        } else {
            /* "tcp://...", or "tcp://...\nipc://..." from a worker with a local socket */
            int g = w->group_all[i];
            snprintf(split[g], sizeof split[g], "%s", (const char *)recv[i]);
            char *nl = strchr(split[g], '\n');
            if (nl)
                *nl++ = '\0';
            eps[g] = split[g];
            local[g] = nl ? nl : "";
        }
    if ((rc = sy_reducer_setup(w->reducer, w->epoch, w->rank, n, eps, w->cfg.wire.local ? local : NULL,
                               w->data_deadline_ms, sy_heartbeat_abort_flag(w->hb))))
        return rc;
    w->reducer_ready = 1;
    return 0;
}

static int part_start_fn(void *comm, int group, float *data, size_t count, size_t off, size_t len, uint32_t tag) {
    worker *w = comm;
    fault_point(w->last_step, "allreduce");
    const int *members = group == 0 ? w->group_all : w->group_replicas;
    int cnt = group == 0 ? w->mesh.world : w->n_replicas;
    return sy_reducer_start(w->reducer, members, cnt, w->last_step, tag, data, count, off, len,
                            w->cfg.wire.dtype == SY_WIRE_BF16, (size_t)w->cfg.wire.chunk_bytes);
}

/* A switch layer's expert gradients are final: they go to the buddy (and the wards'
 * come in) on the overlap thread, while the backward of the layers below runs. The step
 * waits for them with the all-reduce's parts (part_wait), before it is reported. */
static int rep_a2a_thread(void *ctx, uint32_t tag, int64_t step, void *const *send, const size_t *send_bytes,
                          const void **recv, size_t *recv_bytes) {
    rep_job *j = ctx;
    return sy_peer_alltoall(j->peer, j->w->group_all, j->w->mesh.world, step, tag, send, send_bytes, recv, recv_bytes);
}

static int rep_job_fn(void *arg, sy_peer *peer) {
    rep_job *j = arg;
    double t0 = sy_now();
    j->peer = peer;
    fault_point(j->step, "replica");
    int rc = sy_replica_grads_layer(j->w->replica, j->step, j->layer, sy_model_grads(j->w->model),
                                    sy_exchange_runners(j->w->exchange, j->layer), rep_a2a_thread, j);
    j->w->t_rep_thread += sy_now() - t0; /* read by the main thread after part_wait */
    return rc;
}

static int stage_final_fn(void *comm, int stage) {
    worker *w = comm;
    int l = (stage - 1) / 2;
    if (!w->replica || w->replica_every != 1 || !w->rep_jobs || stage < 0 || !(stage & 1) ||
        !sy_is_switch_layer(&w->cfg.model, l) || (g_replica_ab && w->last_step % 2))
        return 0;
    w->rep_jobs[l] = (rep_job){.w = w, .layer = l, .step = w->last_step};
    if (sy_reducer_call(w->reducer, rep_job_fn, &w->rep_jobs[l]))
        return -1;
    w->rep_queued++;
    return 0;
}

static int comm_job_fn(void *arg, sy_peer *peer) {
    (void)peer;
    sy_comm_job *j = arg;
    return j->fn(j);
}

/* The norm's sums of squares ride on the item queued just before (their bucket, or the
 * layer's replica job): they take no place of the queue's, which the parts need. If there
 * is none left the main thread sums them (they stay NaN). */
static int part_call_fn(void *comm, sy_comm_job *job) {
    if (sy_reducer_then(((worker *)comm)->reducer, comm_job_fn, job))
        sy_debug("norm: %s; the main thread sums these gradients", sy_lasterr());
    return 0;
}

static int part_wait_fn(void *comm) { return sy_reducer_wait(((worker *)comm)->reducer); }

static void part_cancel_fn(void *comm) { sy_reducer_cancel(((worker *)comm)->reducer); }

static double a2a_seconds(void *ctx) {
    double s;
    sy_exchange_stats(ctx, &s, NULL, 0);
    return s;
}

/* ---------------------------------------------------------------- control helpers */

static int send_env(worker *w, Switchyard__Envelope *env, const void *payload, size_t n) {
    return sy_ctrl_send(w->ctrl, NULL, 0, env, payload, n);
}

/* Sends a message the worker may be stopping after: with no connection up (a refused
 * handshake, a coordinator gone) a blocking send would keep it from ever exiting. */
static void send_last(worker *w, Switchyard__Envelope *env) {
    int sndtimeo = 1000;
    zmq_setsockopt(w->ctrl, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    send_env(w, env, NULL, 0);
}

static void send_error(worker *w, const char *msg) {
    Switchyard__Error e = SWITCHYARD__ERROR__INIT;
    e.epoch = w->epoch;
    e.rank = (uint32_t)(w->rank < 0 ? 0 : w->rank);
    e.message = (char *)msg;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_ERROR;
    env.error = &e;
    send_last(w, &env);
}

/* Tells the coordinator this worker leaves the run (so it re-plans at once instead of
 * waiting out the heartbeat timeout), with the reason. */
static void send_leaving(worker *w, const char *why) {
    char msg[1200];
    if (!strcmp(why, "signal"))
        snprintf(msg, sizeof msg, "leaving on signal %d", (int)g_signal);
    else
        snprintf(msg, sizeof msg, "%s", why);
    Switchyard__Error e = SWITCHYARD__ERROR__INIT;
    e.epoch = w->epoch;
    e.rank = (uint32_t)(w->rank < 0 ? 0 : w->rank);
    e.message = msg;
    e.leaving = 1;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_ERROR;
    env.error = &e;
    send_last(w, &env);
}

static int send_tensor(worker *w, int64_t step, const char *name, const char *dtype, int ndim, const int64_t *shape,
                       const void *data, size_t bytes) {
    Switchyard__TensorShard t = SWITCHYARD__TENSOR_SHARD__INIT;
    t.epoch = w->epoch;
    t.step = step;
    t.name = (char *)name;
    t.dtype = (char *)dtype;
    t.n_shape = (size_t)ndim;
    t.shape = (int64_t *)shape;
    t.bytes = bytes;
    t.crc32c = sy_crc32c(0, data, bytes);
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_SHARD;
    env.shard = &t;
    return send_env(w, &env, bytes ? data : "", bytes);
}

/* The address this machine uses to reach the coordinator (no packet is sent): the right
 * one to advertise on multi-homed hosts, where the host name may resolve to 127.0.0.1. */
static int local_addr_towards(const char *endpoint, char *out, size_t n) {
    char host[256];
    int port = 0;
    if (sscanf(endpoint, "tcp://%255[^:]:%d", host, &port) != 2)
        return -1;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) || !res)
        return -1;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), rc = -1;
    if (fd >= 0 && !connect(fd, res->ai_addr, res->ai_addrlen)) {
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        if (!getsockname(fd, (struct sockaddr *)&a, &l) && inet_ntop(AF_INET, &a.sin_addr, out, (socklen_t)n))
            rc = 0;
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return rc;
}

/* ---------------------------------------------------------------- assignment */

static void free_views(worker *w) {
    free(w->sv.layers);
    free(w->sg.layers);
    free(w->view_ptrs);
    free(w->buddy);
    memset(&w->sv, 0, sizeof w->sv);
    memset(&w->sg, 0, sizeof w->sg);
    w->view_ptrs = NULL;
    w->buddy = NULL;
}

/* The expert runner's views for stand-ins: the model's experts, and the wards' replicas
 * (their weights and gradients) where the model holds none. */
static int standin_views(worker *w, const int *buddy) {
    const sy_model_cfg *mc = &w->cfg.model;
    const sy_weights *mw = sy_model_weights(w->model), *mg = sy_model_grad_views(w->model);
    int L = mc->n_layers, E = mc->n_experts;
    w->sv = *mw;
    w->sg = *mg;
    w->sv.layers = calloc((size_t)L, sizeof(sy_layer_w));
    w->sg.layers = calloc((size_t)L, sizeof(sy_layer_w));
    w->view_ptrs = calloc((size_t)L * 4 * E + 1, sizeof(float *));
    w->buddy = malloc((size_t)w->mesh.world * sizeof(int));
    if (!w->sv.layers || !w->sg.layers || !w->view_ptrs || !w->buddy) {
        free_views(w);
        sy_seterr("stand-ins: out of memory");
        return -1;
    }
    memcpy(w->buddy, buddy, (size_t)w->mesh.world * sizeof(int));
    for (int l = 0; l < L; l++) {
        w->sv.layers[l] = mw->layers[l];
        w->sg.layers[l] = mg->layers[l];
        if (!sy_is_switch_layer(mc, l))
            continue;
        float **p = w->view_ptrs + (size_t)l * 4 * E;
        sy_layer_w *v = &w->sv.layers[l], *g = &w->sg.layers[l];
        memcpy(p, v->ew1, (size_t)E * sizeof(float *));
        memcpy(p + E, v->ew2, (size_t)E * sizeof(float *));
        memcpy(p + 2 * E, g->ew1, (size_t)E * sizeof(float *));
        memcpy(p + 3 * E, g->ew2, (size_t)E * sizeof(float *));
        v->ew1 = p, v->ew2 = p + E, g->ew1 = p + 2 * E, g->ew2 = p + 3 * E;
        for (int e = 0; e < E; e++)
            if (!v->ew1[e])
                sy_replica_expert(w->replica, l, e, &v->ew1[e], &v->ew2[e], &g->ew1[e], &g->ew2[e]);
    }
    sy_experts_set_views(w->experts, &w->sv, &w->sg);
    return 0;
}

static void drop_assignment(worker *w) {
    sy_replica_destroy(&w->replica);
    free(w->rep_jobs);
    w->rep_jobs = NULL;
    kept_free(&w->kept);
    w->handover_pending = 0;
    free(w->prev_begin);
    free(w->prev_end);
    w->prev_begin = w->prev_end = NULL;
    w->pending_step = -1;
    sy_exchange_destroy(&w->exchange);
    sy_experts_destroy(&w->experts);
    free_views(w);
    if (w->peer)
        sy_peer_set_idle(w->peer, NULL, NULL);
    sy_model_destroy(&w->model);
    sy_model_destroy(&w->distill.teacher);
    free(w->distill.dlogits);
    w->distill.dlogits = NULL;
    free(w->mom);
    free(w->vel);
    free(w->batch);
    free(w->lang);
    w->lang = NULL;
    free(w->group_all);
    free(w->group_data);
    free(w->group_replicas);
    sy_expert_load_free(&w->load);
    free(w->rep_wanted);
    free(w->rep_kept);
    free(w->rep_lang);
    w->rep_wanted = w->rep_kept = w->rep_lang = NULL;
    w->mom = w->vel = NULL;
    w->batch = NULL;
    w->group_all = w->group_data = w->group_replicas = NULL;
    sy_mesh_free(&w->mesh);
    if (w->have_rc)
        sy_refcase_free(&w->rc);
    w->have_rc = 0;
    w->assigned = 0;
}

/* Commits the prepared step if the mesh goes on at `next` = that step + 1 (every rank
 * finished it: the coordinator says so by moving on), else drops it. The buddy replicas
 * take the same update. */
static void commit_pending(worker *w, int64_t next) {
    if (w->pending_step < 0)
        return;
    if (w->pending_step == next - 1) {
        sy_step_commit(&w->stepper, w->pending_step, &w->pending);
        w->t_commit = w->pending.t.optimizer;
        if (w->replica) {
            double t0 = sy_now();
            sy_replica_commit(w->replica, w->pending_step, w->pending.lr, w->pending.clip_scale, &w->cfg.train);
            w->t_replica_commit = sy_now() - t0;
        }
        w->state_step = next;
    } else if (w->replica) {
        sy_replica_drop_pending(w->replica);
    }
    w->pending_step = -1;
}


static void kept_free(kept_state *k) {
    sy_model_destroy(&k->model);
    free(k->mom);
    free(k->vel);
    sy_replica_destroy(&k->replica);
    memset(k, 0, sizeof *k);
}

/* Takes this rank's state out of the old assignment for a re-homing one (start_step: the
 * step the new mesh does next). */
static int keep_state(worker *w, const Switchyard__Assignment *a, kept_state *k) {
    memset(k, 0, sizeof *k);
    if (!w->assigned || w->job != SWITCHYARD__JOB__JOB_TRAIN || !w->model) {
        sy_seterr("re-homing: this worker holds no training state (it was not in the mesh)");
        return -1;
    }
    commit_pending(w, a->start_step);
    if (w->state_step != a->start_step) {
        sy_seterr("re-homing: this rank's state is at step %lld, the mesh goes on from step %lld",
                  (long long)w->state_step, (long long)a->start_step);
        return -1;
    }
    sy_peer_set_idle(w->peer, NULL, NULL); /* the next model takes the waits */
    k->model = w->model;
    k->mom = w->mom;
    k->vel = w->vel;
    k->replica = w->replica;
    w->model = NULL;
    w->mom = w->vel = NULL;
    w->replica = NULL;
    return 0;
}

static int apply_assignment_state(worker *w, const Switchyard__Assignment *a, kept_state *kept);

static int apply_assignment(worker *w, const Switchyard__Assignment *a) {
    kept_state kept = {0};
    int joiner = a->grow && a->rank >= a->prev_world;
    if (a->rehome && !joiner && keep_state(w, a, &kept))
        return -1;
    if (!a->grow) {
        int rc = apply_assignment_state(w, a, a->rehome ? &kept : NULL);
        kept_free(&kept);
        return rc;
    }
    /* a grown mesh: the model starts empty; the first step hands the state over */
    if (a->prev_world < 1 || a->n_prev_expert_begin != a->prev_world || a->n_prev_expert_end != a->prev_world ||
        apply_assignment_state(w, a, NULL)) {
        if (!a->prev_world || a->n_prev_expert_begin != a->prev_world)
            sy_seterr("assignment: a grown mesh without the previous mesh's experts");
        kept_free(&kept);
        return -1;
    }
    w->kept = kept;
    w->prev_world = (int)a->prev_world;
    w->prev_begin = calloc(a->prev_world, sizeof(int));
    w->prev_end = calloc(a->prev_world, sizeof(int));
    if (!w->prev_begin || !w->prev_end) {
        sy_seterr("assignment: out of memory");
        return -1;
    }
    for (uint32_t o = 0; o < a->prev_world; o++) {
        w->prev_begin[o] = (int)a->prev_expert_begin[o];
        w->prev_end[o] = (int)a->prev_expert_end[o];
    }
    w->handover_pending = 1;
    w->state_step = -1; /* until the handover */
    return 0;
}

static int apply_assignment_state(worker *w, const Switchyard__Assignment *a, kept_state *kept) {
    drop_assignment(w);
    w->epoch = a->epoch;
    w->rank = (int)a->rank;
    w->job = a->job;
    char comp[32];
    snprintf(comp, sizeof comp, "worker %u", a->rank);
    sy_log_set_component(comp);
    if (w->have_cfg)
        sy_config_free(&w->cfg);
    sy_config_defaults(&w->cfg);
    w->have_cfg = 1;
    if (sy_config_load_string(&w->cfg, a->config_yaml, strlen(a->config_yaml), "assignment config"))
        return -1;
    /* the mesh, exactly as the coordinator planned it */
    sy_mesh *m = &w->mesh;
    memset(m, 0, sizeof *m);
    m->world = (int)a->world;
    m->ep = (int)a->ep;
    m->dp = (int)a->dp;
    m->n_experts = w->cfg.model.n_experts;
    m->global_batch = (int)a->global_batch;
    if (m->world < 1 || m->ep < 1 || m->dp < 1 || m->ep * m->dp != m->world || a->n_expert_begin != a->ep ||
        a->n_expert_end != a->ep || a->n_row0 != a->world || a->n_nrows != a->world || a->n_peers != a->world ||
        w->rank >= m->world) {
        sy_seterr("assignment: inconsistent mesh (world %u, ep %u, dp %u, rank %u)", a->world, a->ep, a->dp, a->rank);
        return -1;
    }
    m->e_begin = calloc(a->ep, sizeof(int));
    m->e_end = calloc(a->ep, sizeof(int));
    m->row0 = calloc(a->world, sizeof(int));
    m->nrows = calloc(a->world, sizeof(int));
    w->group_all = calloc(a->world, sizeof(int));
    w->group_data = calloc(a->world, sizeof(int));
    w->group_replicas = calloc(a->world, sizeof(int));
    if (!m->e_begin || !m->e_end || !m->row0 || !m->nrows || !w->group_all || !w->group_data || !w->group_replicas) {
        sy_seterr("assignment: out of memory");
        return -1;
    }
    for (int p = 0; p < m->ep; p++) {
        m->e_begin[p] = (int)a->expert_begin[p];
        m->e_end[p] = (int)a->expert_end[p];
    }
    for (int r = 0; r < m->world; r++) {
        m->row0[r] = (int)a->row0[r];
        m->nrows[r] = (int)a->nrows[r];
        w->group_all[r] = r;
    }
    int d = sy_mesh_d(m, w->rank), p = sy_mesh_p(m, w->rank);
    w->n_data = m->ep;
    for (int q = 0; q < m->ep; q++)
        w->group_data[q] = d * m->ep + q;
    w->n_replicas = m->dp;
    for (int dd = 0; dd < m->dp; dd++)
        w->group_replicas[dd] = dd * m->ep + p;

    const sy_model_cfg *mc = &w->cfg.model;
    int T = w->cfg.train.seq_len;
    const int32_t *tokens = NULL;
    if (w->job == SWITCHYARD__JOB__JOB_REFCHECK) {
        if (sy_refcase_load(&w->rc, a->refcase_dir))
            return -1;
        w->have_rc = 1;
        mc = &w->rc.model;
        w->cfg.model = w->rc.model;
        w->cfg.model.router_jitter = w->cfg.model.expert_dropout = w->cfg.model.dropout = 0.0f;
        mc = &w->cfg.model;
        T = w->rc.seq;
        w->cfg.train.seq_len = T;
        tokens = w->rc.tokens;
    }
    if (mc->n_experts > SY_MAX_EXPERTS) {
        sy_seterr("assignment: more than %d experts", SY_MAX_EXPERTS);
        return -1;
    }
    unsigned char *held = calloc((size_t)mc->n_experts, 1);
    if (!held) {
        sy_seterr("assignment: out of memory");
        return -1;
    }
    for (int e = m->e_begin[p]; e < m->e_end[p]; e++)
        held[e] = 1;
    int rows = m->nrows[w->rank];
    w->model = sy_model_new(mc, rows, T, held);
    free(held);
    if (!w->model)
        return -1;
    /* the exchange's waits compute the backward's put-off weight gradients */
    sy_peer_set_idle(w->peer, peer_idle, w->model);
    if (w->cfg.train.distill_from && w->job != SWITCHYARD__JOB__JOB_REFCHECK) {
        /* the teacher's checkpoint must be readable here at the same path */
        sy_config tcfg;
        w->distill.teacher = sy_model_load(w->cfg.train.distill_from, &tcfg, rows, T, NULL, 0);
        sy_config_free(&tcfg);
        if (!w->distill.teacher) {
            sy_err_prefix("train.distill_from"); /* the message names the path */
            return -1;
        }
        w->distill.alpha = w->cfg.train.distill_alpha;
        w->distill.temperature = w->cfg.train.distill_temperature;
        if (!(w->distill.dlogits = malloc((size_t)rows * T * mc->vocab * sizeof(float)))) {
            sy_seterr("assignment: out of memory");
            return -1;
        }
    }
    int group_rows = 0;
    for (int q = 0; q < m->ep; q++)
        group_rows += m->nrows[d * m->ep + q];
    int max_in = group_rows * T * mc->top_k;
    if (!(w->experts = sy_experts_new(mc, sy_model_weights(w->model), sy_model_grad_views(w->model), max_in)))
        return -1;
    if (!(w->exchange = sy_exchange_new(mc, m, w->rank, w->experts, a2a_fn, w, w->cfg.wire.dtype == SY_WIRE_BF16,
                                        max_in, rows * T * mc->top_k)))
        return -1;
    sy_exchange_set_chunks(w->exchange,
                           &(sy_a2a_chunks){.send = a2a_send_chunk, .recv = a2a_recv_chunk, .release = a2a_release});
    sy_expert_exchange iface = sy_exchange_interface(w->exchange);
    sy_model_set_exchange(w->model, &iface);
    const sy_layout *lay = sy_model_layout(w->model);
    w->mom = calloc(lay->total, sizeof(float));
    w->vel = calloc(lay->total, sizeof(float));
    w->batch = malloc((size_t)rows * (T + 1) * sizeof(int32_t));
    w->lang = malloc((size_t)rows * T * sizeof(int16_t));
    /* the report's expert load, by language for training (a refcheck case has none) */
    int n_langs = 0;
    if (!tokens) {
        if (!w->train) {
            char path[4096];
            snprintf(path, sizeof path, "%s/train.bin", w->cfg.data.dir);
            if (!(w->train = sy_tokens_load(path))) {
                sy_err_prefix("training data on this worker (run `switchyard prepare` here or copy the "
                              "coordinator's data/)");
                w->data_failed = 1;
                return -1;
            }
        }
        n_langs = w->train->n_langs;
    }
    if (sy_expert_load_init(&w->load, mc, n_langs))
        return -1;
    w->rep_wanted = calloc(sy_expert_load_count(&w->load) + 1, sizeof(uint32_t));
    w->rep_kept = calloc(sy_expert_load_count(&w->load) + 1, sizeof(uint32_t));
    w->rep_lang = calloc(sy_expert_load_lang_count(&w->load) + 1, sizeof(uint32_t));
    if (!w->mom || !w->vel || !w->batch || !w->lang || !w->rep_wanted || !w->rep_kept || !w->rep_lang) {
        sy_seterr("assignment: out of memory");
        return -1;
    }
    w->stepper = (sy_stepper){.model = w->model,
                              .cfg = &w->cfg,
                              .mesh = &w->mesh,
                              .rank = w->rank,
                              .groups = 1,
                              .mom = w->mom,
                              .vel = w->vel,
                              .batch = w->batch,
                              .lang = w->lang,
                              .comm = {.allreduce = allreduce_fn,
                                       .ctx = w,
                                       .a2a_seconds = a2a_seconds,
                                       .a2a_ctx = w->exchange,
                                       .part_begin = part_begin_fn,
                                       .part_start = part_start_fn,
                                       .part_wait = part_wait_fn,
                                       .part_cancel = part_cancel_fn,
                                       .stage_final = stage_final_fn,
                                       .part_call = part_call_fn,
                                       .fill_waits = w->cfg.wire.fill_waits},
                              .distill = &w->distill};
    if (tokens) {
        memcpy(w->batch, tokens + (size_t)m->row0[w->rank] * (T + 1), (size_t)rows * (T + 1) * sizeof(int32_t));
        for (int i = 0; i < lay->n_params; i++) {
            const sy_ref_param *r = sy_refcase_param(&w->rc, lay->params[i].name);
            if (!r || r->numel != lay->params[i].numel) {
                sy_seterr("%s: no parameter %s of the model's shape", a->refcase_dir, lay->params[i].name);
                return -1;
            }
            memcpy(sy_model_params(w->model) + lay->params[i].offset, r->value, r->numel * sizeof(float));
        }
    } else if (kept) {
        /* re-homed: this rank's own tensors and the replicas it kept, no checkpoint */
        if (sy_replica_rehome(lay, sy_model_params(w->model), w->mom, w->vel, sy_model_layout(kept->model),
                              sy_model_params(kept->model), kept->mom, kept->vel, kept->replica, a->start_step))
            return -1;
        w->state_pending = 0;
    } else {
        /* weights from the seed (identical on every worker), unless a checkpoint's
         * tensors follow the assignment */
        sy_model_init_weights(w->model, w->cfg.train.seed);
        w->state_pending = a->state_follows;
        w->state_tensors = 0;
    }
    w->state_step = a->start_step;
    w->pending_step = -1;
    w->replica_synced = 0;
    w->replica_every = w->cfg.cluster.replica_every;
    if (!tokens && w->replica_every > 0 && m->dp == 1 && m->world > 1 && a->n_buddy == (size_t)m->world) {
        int buddy[m->world];
        for (int r = 0; r < m->world; r++)
            buddy[r] = a->buddy[r] >= 0 && a->buddy[r] < m->world ? a->buddy[r] : -1;
        if (!(w->replica = sy_replica_new(mc, m, w->rank, buddy, lay, replica_a2a, w)))
            return -1;
        if (!(w->rep_jobs = calloc((size_t)mc->n_layers, sizeof(rep_job)))) {
            sy_seterr("replicas: out of memory");
            return -1;
        }
        if (w->replica_every == 1 && w->cfg.wire.stand_in && standin_views(w, buddy))
            return -1;
        sy_info("replicas: rank %d keeps its experts, %d rank%s keep%s theirs here (%.1f MB); %.1f MB of expert "
                "%s go to the buddy %s",
                buddy[w->rank], sy_replica_wards(w->replica), sy_replica_wards(w->replica) == 1 ? "" : "s",
                sy_replica_wards(w->replica) == 1 ? "s" : "", sy_replica_memory(w->replica) / 1e6,
                (lay->total - lay->dense_total) * sizeof(float) / 1e6,
                w->replica_every == 1 ? "gradients" : "state (x3)",
                w->replica_every == 1 ? "every step" : "every replica_every steps");
    }
    sy_heartbeat_set_timing(w->hb, w->cfg.cluster.heartbeat_ms, w->cfg.cluster.timeout_ms);
    sy_heartbeat_clear_abort(w->hb, w->epoch);
    char **eps = a->peers;
    /* A peer's death reaches this worker as an abort from the coordinator (heartbeats);
     * the data deadline is only a safety net, so it must outlast a slow peer's compute
     * between two exchanges: 20 peer timeouts, at least a minute. */
    int data_deadline = w->cfg.cluster.timeout_ms * 20 > 60000 ? w->cfg.cluster.timeout_ms * 20 : 60000;
    /* data frames larger than this run's largest legal one drop the sender's connection */
    int64_t limit = sy_limit_data_bytes(mc, m->global_batch, T, w->cfg.wire.chunk_bytes);
    sy_peer_set_limit(w->peer, limit);
    /* peers on this machine: over their local (ipc) sockets when wire.local is on */
    int use_local = w->cfg.wire.local && a->n_local_peers == (size_t)m->world;
    /* the overlap thread's socket admits the same keys (the same ZAP domain, "data") */
    if (sy_peer_set_local(w->peer, use_local ? a->local_peers : NULL, use_local ? m->world : 0) ||
        sy_peer_set_keys(w->peer, a->peer_keys, a->n_peer_keys) ||
        sy_reducer_set_keys(w->reducer, a->peer_keys, a->n_peer_keys, limit) ||
        sy_peer_setup(w->peer, w->epoch, w->rank, m->world, eps, data_deadline, sy_heartbeat_abort_flag(w->hb)))
        return -1;
    w->data_deadline_ms = data_deadline;
    if (use_local) {
        char ranks[512] = "";
        size_t o = 0;
        int nl = 0;
        for (int r = 0; r < m->world && o < sizeof ranks - 16; r++)
            if (sy_peer_is_local(w->peer, r)) {
                o += (size_t)snprintf(ranks + o, sizeof ranks - o, "%s%d", o ? ", " : "", r);
                nl++;
            }
        if (nl)
            sy_info("rank%s %s %s on this machine: data to %s goes over local sockets, without CURVE",
                    nl == 1 ? "" : "s", ranks, nl == 1 ? "is" : "are", nl == 1 ? "it" : "them");
    }
    w->reducer_ready = 0;
    w->assigned = 1;
    w->last_step = a->start_step - 1;
    sy_info("rank %d of %d (data group %d, expert index %d: experts %d..%d), rows %d..%d, epoch %" PRIu64, w->rank,
            m->world, d, p, m->e_begin[p], m->e_end[p] - 1, m->row0[w->rank], m->row0[w->rank] + rows - 1, w->epoch);
    return 0;
}

/* ---------------------------------------------------------------- steps */

/* Whether this rank sends parameter p's tensors to the coordinator: replicated tensors
 * once (rank 0), each expert by its holder in data group 0. */
static int sends_param(const worker *w, const sy_param *p) {
    return p->expert < 0 ? w->rank == 0 : sy_mesh_d(&w->mesh, w->rank) == 0;
}

/* Marks the end of a stream of tensors (a checkpoint's or refcheck's) for `step`. */
static int send_save_done(worker *w, int64_t step, int tensors) {
    Switchyard__SaveDone sd = SWITCHYARD__SAVE_DONE__INIT;
    sd.epoch = w->epoch;
    sd.step = step;
    sd.rank = (uint32_t)w->rank;
    sd.tensors = (uint32_t)tensors;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_SAVE_DONE;
    env.save_done = &sd;
    return send_env(w, &env, NULL, 0);
}

static int save_state(worker *w, int64_t step) {
    const sy_layout *lay = sy_model_layout(w->model);
    int n = 0, total = 0;
    char name[SY_CKPT_MAX_NAME];
    for (int i = 0; i < lay->n_params; i++)
        total += sends_param(w, &lay->params[i]) ? 3 : 0;
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (!sends_param(w, p))
            continue;
        int64_t shape[2] = {p->shape[0], p->shape[1]};
        const float *arenas[3] = {[SY_ARENA_PARAMS] = sy_model_params(w->model), [SY_ARENA_M] = w->mom,
                                  [SY_ARENA_V] = w->vel};
        for (int k = SY_ARENA_PARAMS; k <= SY_ARENA_V; k++) {
            sy_model_io_name(name, sizeof name, (sy_arena)k, p->name);
            if (send_tensor(w, step, name, "f32", p->ndim, shape, arenas[k] + p->offset, p->numel * sizeof(float)))
                return -1;
            if (++n == (total + 1) / 2)
                fault_point(step - 1, "save");
        }
    }
    return send_save_done(w, step, n);
}

/* Refcheck: the step's forward, backward and gradient all-reduce on this rank's rows of
 * the case (no optimizer); gradients and routing go to the coordinator. */
static int refcheck_step(worker *w, sy_step_result *res) {
    const sy_mesh *m = &w->mesh;
    int rows = m->nrows[w->rank], T = w->rc.seq;
    w->last_step = 0;
    sy_pass ps = {.B = rows,
                  .T = T,
                  .groups = 1,
                  .ce_denom = (double)m->global_batch * T,
                  .group_denom = m->world,
                  .training = 1,
                  .token0 = (int64_t)m->row0[w->rank] * T};
    memset(res, 0, sizeof *res);
    return sy_step_grads(&w->stepper, &ps, 0, res);
}

static int send_refcheck_grads(worker *w) {
    const sy_layout *lay = sy_model_layout(w->model);
    int n = 0;
    char name[SY_CKPT_MAX_NAME];
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (!sends_param(w, p))
            continue;
        int64_t shape[2] = {p->shape[0], p->shape[1]};
        snprintf(name, sizeof name, "grad/%s", p->name);
        if (send_tensor(w, 0, name, "f32", p->ndim, shape, sy_model_grads(w->model) + p->offset,
                        p->numel * sizeof(float)))
            return -1;
        n++;
    }
    for (int l = 0; l < w->cfg.model.n_layers; l++) {
        int k;
        const int *r = sy_model_routing(w->model, l, &k);
        if (!r)
            continue;
        int64_t shape[2] = {(int64_t)w->mesh.nrows[w->rank] * w->rc.seq, k};
        snprintf(name, sizeof name, "route.%d/%d", l, w->rank);
        if (send_tensor(w, 0, name, "i32", 2, shape, r, (size_t)shape[0] * k * sizeof(int32_t)))
            return -1;
        n++;
    }
    return send_save_done(w, 0, n);
}

/* A tensor of the state this assignment starts from: copy it into the arena it names. */
static int on_state_shard(worker *w, const Switchyard__TensorShard *t, const void *payload, size_t len) {
    if (!w->assigned || !w->state_pending || t->epoch != w->epoch) {
        sy_warn("ignoring tensor %s (no state expected for epoch %" PRIu64 ")", t->name, (uint64_t)t->epoch);
        return 0;
    }
    const sy_layout *lay = sy_model_layout(w->model);
    sy_arena which;
    const char *name = sy_model_io_split_name(t->name, &which);
    float *arena = which == SY_ARENA_M ? w->mom : which == SY_ARENA_V ? w->vel : sy_model_params(w->model);
    int i = sy_layout_find(lay, name);
    if (i < 0)
        return 0; /* not held here */
    const sy_param *p = &lay->params[i];
    if (strcmp(t->dtype, "f32") || len != p->numel * sizeof(float) || len != t->bytes ||
        sy_crc32c(0, payload, len) != t->crc32c) {
        sy_seterr("state tensor %s: %zu bytes of %s with crc %08x, expected f32 [%zu] and a matching crc", t->name, len,
                  t->dtype, t->crc32c, p->numel);
        return -1;
    }
    memcpy(arena + p->offset, payload, len);
    w->state_tensors++;
    return 0;
}

/* This step's routing into the report: choices and kept tokens per expert, and (training)
 * the kept tokens by the language of the document they come from. */
static void report_load(worker *w, Switchyard__StepReport *r) {
    sy_expert_load *ld = &w->load;
    int training = w->job != SWITCHYARD__JOB__JOB_REFCHECK;
    sy_expert_load_clear(ld);
    sy_expert_load_add_model(ld, w->model, training ? w->lang : NULL,
                             (int64_t)w->mesh.nrows[w->rank] * w->cfg.train.seq_len);
    size_t n = sy_expert_load_count(ld), nl = sy_expert_load_lang_count(ld);
    for (size_t i = 0; i < n; i++) {
        w->rep_wanted[i] = (uint32_t)ld->wanted[i];
        w->rep_kept[i] = (uint32_t)ld->kept[i];
    }
    r->n_expert_wanted = r->n_expert_kept = n;
    r->expert_wanted = w->rep_wanted;
    r->expert_kept = w->rep_kept;
    if (training && nl > 0) {
        for (size_t i = 0; i < nl; i++)
            w->rep_lang[i] = (uint32_t)ld->lang[i];
        r->n_expert_lang = nl;
        r->expert_lang = w->rep_lang;
        r->languages = (uint32_t)ld->n_langs;
    }
}

/* One training step, prepared but not committed: the update waits for the coordinator's
 * next command, so that a step some rank never finished changes no state anywhere.
 * Replicas: a full copy at the epoch's first step (and every replica_every steps when
 * that is > 1), the expert gradients every step when it is 1. */
static int train_step(worker *w, int64_t step, sy_step_result *res) {
    int rc;
    w->t_replica = 0;
    if (w->handover_pending) {
        double t0 = sy_now();
        sy_handover_prev prev = {.prev_world = w->prev_world, .prev_begin = w->prev_begin, .prev_end = w->prev_end};
        const kept_state *k = &w->kept;
        if ((rc = sy_handover(&w->cfg.model, &w->mesh, w->rank, &prev, k->model ? sy_model_layout(k->model) : NULL,
                              k->model ? sy_model_params(k->model) : NULL, k->mom, k->vel, sy_model_layout(w->model),
                              sy_model_params(w->model), w->mom, w->vel, replica_a2a, w, step)))
            return rc;
        kept_free(&w->kept);
        w->handover_pending = 0;
        w->state_step = step;
        sy_info("state handed over for step %" PRId64 " in %.3f s (no checkpoint read)", step, sy_now() - t0);
    }
    if (w->replica && (!w->replica_synced || (w->replica_every > 1 && step % w->replica_every == 0))) {
        double t0 = sy_now();
        if ((rc = sy_replica_sync(w->replica, step, sy_model_params(w->model), w->mom, w->vel)))
            return rc;
        w->replica_synced = 1;
        w->t_replica += sy_now() - t0;
    }
    w->rep_queued = 0;
    w->t_rep_thread = 0;
    /* stand-ins: the same on every rank (the configuration, the mesh and the step's mode),
     * but for whether this rank's replicas are at this step, which it tells the others */
    int standin = w->buddy && w->rep_jobs && w->stepper.comm.part_start && w->cfg.wire.overlap &&
                  !(g_replica_ab && step % 2);
    sy_exchange_standins(w->exchange, standin ? w->buddy : NULL, standin && sy_replica_current(w->replica, step));
    if (g_fault_slow_s > 0) /* drill: a slower machine */
        for (double t = sy_now(), u = t; u - t < g_fault_slow_s; u = sy_now())
            ;
    if ((rc = sy_step_prepare(&w->stepper, w->train, step, res)))
        return rc;
    /* the step is reported only once the buddy has this rank's gradients and this rank
     * its wards': then a step the coordinator commits (every rank reported) is in every
     * replica too. Overlapped, the backward queued them (stage_final_fn) and
     * sy_step_prepare waited for them; else they go now. */
    if (w->replica && w->replica_every == 1 && w->rep_queued > 0) {
        if ((rc = sy_replica_grads_done(w->replica, step)))
            return rc;
    } else if (w->replica && w->replica_every == 1) {
        double t0 = sy_now();
        if ((rc = sy_replica_send_grads(w->replica, step, sy_model_grads(w->model))))
            return rc;
        w->t_replica += sy_now() - t0;
    }
    w->pending_step = step;
    w->pending = *res;
    return 0;
}

static int on_step(worker *w, const Switchyard__StepCmd *c) {
    double t_cmd = sy_now();
    /* the round trip through the coordinator, the others' reports included; a command of
     * another epoch ends the timeline's wait without one (a re-plan is not a round trip) */
    if (w->trace_reported > 0 && c->epoch == w->trace_epoch)
        sy_trace_span("wait: coordinator", w->trace_reported, t_cmd, "\"epoch\":%llu,\"step\":%lld",
                      (unsigned long long)w->trace_epoch, (long long)w->trace_step);
    w->trace_reported = 0;
    if (w->assigned && c->epoch == w->epoch && w->job == SWITCHYARD__JOB__JOB_TRAIN)
        commit_pending(w, c->step); /* the coordinator moved on: every rank finished the step */
    if (w->assigned && c->epoch == w->epoch && c->save_only) {
        int rc = save_state(w, c->step);
        if (sy_trace_on()) { /* then the wait for the next command goes on */
            double t = sy_now();
            sy_trace_span("checkpoint", t_cmd, t, "\"epoch\":%llu,\"step\":%lld", (unsigned long long)w->epoch,
                          (long long)c->step);
            w->trace_reported = t;
        }
        return rc;
    }
    if (!w->assigned || c->epoch != w->epoch) {
        sy_warn("ignoring a step command for epoch %" PRIu64 " (this worker is at epoch %" PRIu64 ")",
                (uint64_t)c->epoch, w->epoch);
        return 0;
    }
    sy_heartbeat_set(w->hb, w->epoch, c->step, ST_STEP, w->rank);
    fault_point(c->step, "start");
    sy_step_result res;
    int rc;
    double t0 = sy_now();
    sy_peer_bytes_sent(w->peer, 1);
    sy_reducer_bytes_sent(w->reducer, 1);
    int overlap = !(g_overlap_ab && c->step % 2); /* the A/B bench: serial on odd steps */
    if (w->exchange)
        sy_exchange_pipeline(w->exchange, overlap && w->cfg.wire.overlap);
    if (w->job == SWITCHYARD__JOB__JOB_REFCHECK) {
        rc = refcheck_step(w, &res);
    } else {
        w->last_step = c->step;
        w->stepper.comm.part_start = overlap ? part_start_fn : NULL;
        w->stepper.comm.fill_waits = w->cfg.wire.fill_waits && !(g_fill_ab && c->step % 2);
        rc = train_step(w, c->step, &res);
    }
    if (rc) {
        if (rc == SY_PEER_ABORTED || *sy_heartbeat_abort_flag(w->hb)) {
            sy_warn("step %" PRId64 " aborted: %s", c->step, sy_lasterr());
            if (sy_heartbeat_aborted_by_silence(w->hb)) {
                /* this worker stopped on its own (the coordinator was silent past the
                 * timeout): a coordinator that was only slow still waits for the step's
                 * report and would wait forever, so it is told; a gone one never reads it */
                char msg[1200];
                snprintf(msg, sizeof msg, "step %" PRId64 " aborted: no word from the coordinator past the timeout",
                         c->step);
                send_error(w, msg);
            }
            return 0; /* the coordinator re-assigns */
        }
        char msg[1200];
        snprintf(msg, sizeof msg, "step %" PRId64 ": %s", c->step, sy_lasterr());
        sy_error("%s", msg);
        send_error(w, msg);
        return 0;
    }
    w->last_step_time = sy_now() - t0;
    if (w->exchange)
        w->standin_rows += sy_exchange_standin_rows(w->exchange, 1);
    /* less often than the coordinator's summary, which `up` prints on the same terminal */
    int64_t every = 5 * (w->cfg.train.log_every > 0 ? w->cfg.train.log_every : 10);
    if (w->job != SWITCHYARD__JOB__JOB_REFCHECK && (c->step + 1) % every == 0) {
        char rep[160] = "";
        size_t o = 0;
        if (w->rep_queued > 0) /* hidden unless the all-reduce time grew by it */
            o += (size_t)snprintf(rep, sizeof rep, "; replica gradients %.0f ms on the overlap thread",
                                  w->t_rep_thread * 1e3);
        if (w->rep_jobs && o < sizeof rep) /* every-step replicas: stand-ins may run (0 rows when off) */
            snprintf(rep + o, sizeof rep - o, "; ran %" PRIu64 " rows of its wards' experts (stand-in) since the last line",
                     w->standin_rows);
        w->standin_rows = 0;
        sy_info("step %" PRId64 ": loss share %.4f, %.0f ms (compute %.0f, all-to-all %.0f, all-reduce %.0f), "
                "%" PRId64 " tokens%s",
                c->step + 1, res.loss.total, w->last_step_time * 1e3, res.t.compute * 1e3, res.t.alltoall * 1e3,
                res.t.allreduce * 1e3, res.tokens, rep);
    }
    Switchyard__StepReport r = SWITCHYARD__STEP_REPORT__INIT;
    r.epoch = w->epoch;
    r.step = c->step;
    r.rank = (uint32_t)w->rank;
    r.loss = res.loss.total;
    r.ce = res.loss.ce;
    r.aux = res.loss.aux;
    r.z = res.loss.z;
    r.tokens = (uint64_t)res.tokens;
    r.grad_norm = res.grad_norm;
    r.lr = res.lr;
    r.t_compute = res.t.compute;
    r.t_alltoall = res.t.alltoall;
    r.t_allreduce = res.t.allreduce;
    /* the last commit's AdamW, the wards' replicas' included */
    r.t_optimizer = w->job == SWITCHYARD__JOB__JOB_TRAIN ? w->t_commit + w->t_replica_commit : res.t.optimizer;
    r.bytes_sent = sy_peer_bytes_sent(w->peer, 0) + sy_reducer_bytes_sent(w->reducer, 0);
    r.replica_bytes = sy_replica_bytes_sent(w->replica, 1);
    r.replica_memory = sy_replica_memory(w->replica);
    r.t_replica = w->t_replica;
    w->t_replica_commit = 0;
    report_load(w, &r);
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_REPORT;
    env.report = &r;
    if (send_env(w, &env, NULL, 0))
        return -1;
    if (sy_trace_on()) {
        w->trace_reported = sy_now();
        w->trace_step = c->step;
        w->trace_epoch = w->epoch;
        sy_trace_span("step", t_cmd, w->trace_reported, "\"step\":%lld,\"rank\":%d,\"epoch\":%llu",
                      (long long)c->step, w->rank, (unsigned long long)w->epoch);
        sy_trace_flush();
    }
    if (c->grads)
        return send_refcheck_grads(w);
    if (c->save_after) { /* an older coordinator: commit at once */
        commit_pending(w, c->step + 1);
        return save_state(w, c->step + 1);
    }
    return 0;
}

/* ---------------------------------------------------------------- main loop */

static void usage(void) {
    fprintf(stderr,
            "usage: switchyard-worker --coordinator tcp://HOST:PORT [--advertise ADDR] [--bind-data ADDR] [--port N]\n"
            "                         [--threads N] [--trace DIR]\n"
            "  Registers with the coordinator and trains. Peers reach its data socket at tcp://ADVERTISE:PORT:\n"
            "  --advertise defaults to the address this machine uses to reach the coordinator, and may be a host\n"
            "  name or an address behind NAT; --bind-data is the local address the socket binds (default: the\n"
            "  advertised address when --advertise is not given, all interfaces (0.0.0.0) when it is);\n"
            "  --port fixes PORT (0 = any free port). The gradient all-reduce thread (wire.overlap) binds PORT+1\n"
            "  (any free port when PORT is 0) at the same address and is advertised the same way.\n"
            "  --trace DIR writes a timeline of every step (compute, waits, messages) to DIR/worker-PID.json in the\n"
            "  Chrome trace-event format (ui.perfetto.dev; bench/trace_split.py splits its waits).\n%s",
            sy_sec_usage());
}

static void send_ready(worker *w) {
    Switchyard__Ready r = SWITCHYARD__READY__INIT;
    r.epoch = w->epoch;
    r.rank = (uint32_t)w->rank;
    r.data_hash = w->train && w->job != SWITCHYARD__JOB__JOB_REFCHECK ? w->train->checksum : 0;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_READY;
    env.ready = &r;
    send_env(w, &env, NULL, 0);
    sy_heartbeat_set(w->hb, w->epoch, w->last_step, ST_READY, w->rank);
}

/* A private directory for the local data sockets, BASE/switchyard-UID/XXXXXX: BASE is
 * $XDG_RUNTIME_DIR when it is set and writable, else /tmp; switchyard-UID is made 0700
 * once and never removed, and must be a real directory of this user's that no one else
 * may enter (in a /tmp anyone can write, a directory of an exited worker could otherwise
 * be made again by someone else while a peer still reconnects to its path); XXXXXX is
 * mkdtemp's (0700). The path must also be one the coordinator relays
 * (sy_peer_local_endpoint_ok). */
static int make_local_dir(char *dir, size_t n) {
    const char *bases[2] = {getenv("XDG_RUNTIME_DIR"), "/tmp"};
    char why[300] = "";
    for (int b = 0; b < 2; b++) {
        const char *base = bases[b];
        if (!base || base[0] != '/' || access(base, W_OK | X_OK))
            continue;
        char parent[128], ep[160];
        if (snprintf(parent, sizeof parent, "%s/switchyard-%u", base, (unsigned)geteuid()) >= (int)sizeof parent ||
            snprintf(dir, n, "%s/XXXXXX", parent) >= (int)n ||
            snprintf(ep, sizeof ep, "ipc://%s/overlap", dir) >= (int)sizeof ep || !sy_peer_local_endpoint_ok(ep, 160)) {
            snprintf(why, sizeof why, "%s: not a short path of plain characters", base);
            continue;
        }
        if (mkdir(parent, 0700) && errno != EEXIST) {
            snprintf(why, sizeof why, "cannot make %s: %s", parent, strerror(errno));
            continue;
        }
        if (!sy_dir_private(parent)) {
            snprintf(why, sizeof why, "%s is not a directory of this user's closed to others", parent);
            continue;
        }
        if (!mkdtemp(dir)) {
            snprintf(why, sizeof why, "cannot make a directory in %s: %s", parent, strerror(errno));
            continue;
        }
        return 0;
    }
    dir[0] = '\0';
    sy_seterr("%s", why[0] ? why : "no writable $XDG_RUNTIME_DIR or /tmp");
    return -1;
}

/* After the sockets are closed (ZeroMQ removes the socket files it made); the per-user
 * parent stays (see make_local_dir). */
static void remove_local_dir(const char *dir) {
    if (!dir[0])
        return;
    char path[256];
    snprintf(path, sizeof path, "%s/data", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/overlap", dir);
    unlink(path);
    if (rmdir(dir))
        sy_warn("cannot remove %s: %s", dir, strerror(errno));
}

static int send_register(worker *w) {
    Switchyard__Register r = SWITCHYARD__REGISTER__INIT;
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    struct sysinfo si;
    sysinfo(&si);
    r.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    r.data_version = SWITCHYARD__VERSION__DATA_VERSION;
    r.worker_id = w->id;
    r.host = host;
    r.peer_endpoint = w->advertised;
    r.local_endpoint = (char *)sy_peer_local_endpoint(w->peer);
    r.cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    r.memory_bytes = (uint64_t)si.totalram * si.mem_unit;
    r.gflops = w->gflops;
    uint16_t one = 1;
    r.byte_order = *(uint8_t *)&one == 1 ? 1 : 2;
    r.pid = (uint32_t)getpid();
    r.threads = (uint32_t)w->threads;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_REGISTER;
    env.register_ = &r;
    /* never waiting: with no connection up (refused, or the coordinator not there yet) the
     * DEALER has nowhere to queue it and a blocking send would wait for ever, past the
     * refusal the loop is about to read from the monitor; the loop registers again later */
    int nowait = 0, wait = -1;
    zmq_setsockopt(w->ctrl, ZMQ_SNDTIMEO, &nowait, sizeof nowait);
    int rc = send_env(w, &env, NULL, 0);
    zmq_setsockopt(w->ctrl, ZMQ_SNDTIMEO, &wait, sizeof wait);
    return rc;
}

int main(int argc, char **argv) {
    const char *coordinator = NULL, *advertise = NULL, *threads = NULL, *bind_data = NULL, *trace = NULL;
    int port = 0;
    sy_sec_opts sec = {0};
    for (int i = 1; i < argc; i++) {
        if (sy_sec_arg(&sec, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--coordinator") && i + 1 < argc)
            coordinator = argv[++i];
        else if (!strcmp(argv[i], "--advertise") && i + 1 < argc)
            advertise = argv[++i];
        else if (!strcmp(argv[i], "--bind-data") && i + 1 < argc)
            bind_data = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = argv[++i];
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc)
            trace = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "switchyard-worker: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        }
    }
    if (!coordinator) {
        usage();
        return 2;
    }
    if (threads && !getenv("SWITCHYARD_BLAS_REEXEC"))
        setenv("SWITCHYARD_THREADS", threads, 1);
    if (sy_blas_setup(argc, argv, "worker")) {
        fprintf(stderr, "switchyard-worker: %s\n", sy_lasterr());
        return 2;
    }
    if (trace && sy_trace_open(trace, "worker")) {
        fprintf(stderr, "switchyard-worker: --trace %s\n", sy_lasterr());
        return 2;
    }
    if (trace)
        sy_info("step timeline: %s", sy_trace_path());
    sy_trace_thread("compute");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    worker w = {.rank = -1, .threads = sy_blas_threads(), .pending_step = -1};
    snprintf(w.coordinator, sizeof w.coordinator, "%s", coordinator);
    char host[128] = "worker";
    gethostname(host, sizeof host - 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(w.id, sizeof w.id, "%s:%d:%lx", host, (int)getpid(), (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
    w.gflops = sy_sgemm_probe(0.2);
    fault_init();
    char addr[64];
    /* what peers connect to and what the socket binds are separate: a host name or a NAT
     * address can be advertised but not bound */
    const char *bind_addr = bind_data ? bind_data : advertise ? "0.0.0.0" : NULL;
    if (!advertise) {
        if (local_addr_towards(coordinator, addr, sizeof addr)) {
            fprintf(stderr, "switchyard-worker: cannot tell which address reaches %s; give --advertise ADDR\n",
                    coordinator);
            return 2;
        }
        advertise = addr;
    }
    if (!bind_addr)
        bind_addr = advertise;
    int code = 1;
    void *mon = NULL; /* handshake events of the control socket */
    if (sy_sec_client_init(&sec, NULL, "worker")) {
        fprintf(stderr, "switchyard-worker: %s\n", sy_lasterr());
        return 2;
    }
    w.zctx = zmq_ctx_new();
    if (sy_sec_on() && !(w.zap = sy_zap_new(w.zctx))) {
        fprintf(stderr, "switchyard-worker: %s\n", sy_lasterr());
        goto out;
    }
    char bind_ep[300];
    if (port > 0)
        snprintf(bind_ep, sizeof bind_ep, "tcp://%s:%d", bind_addr, port);
    else
        snprintf(bind_ep, sizeof bind_ep, "tcp://%s:*", bind_addr);
    if (!(w.peer = sy_peer_new_secure(w.zctx, bind_ep, sy_sec_cert(), w.zap))) {
        fprintf(stderr, "switchyard-worker: %s (--bind-data %s%s)\n", sy_lasterr(), bind_addr,
                bind_data ? "" : ", the default");
        code = 2;
        goto out;
    }
    {
        const char *bound = sy_peer_endpoint(w.peer), *colon = strrchr(bound, ':');
        snprintf(w.advertised, sizeof w.advertised, "tcp://%s:%s", advertise, colon ? colon + 1 : "0");
        if (strcmp(w.advertised, bound))
            sy_info("data socket bound at %s, advertised to peers as %s", bound, w.advertised);
    }
    if (!strncmp(w.advertised, "tcp://127.", 10) || !strncmp(w.advertised, "tcp://localhost:", 16))
        sy_info("data endpoint %s is a loopback address: only workers on this machine can reach it (for a run "
                "across machines give --advertise ADDR, or reach the coordinator by its network address)",
                w.advertised);
    /* the overlap thread's own data socket: the next port after a pinned one (so a
     * firewall opens PORT and PORT+1), else any; bound and advertised like the main one */
    if (port > 0)
        snprintf(bind_ep, sizeof bind_ep, "tcp://%s:%d", bind_addr, port + 1);
    else
        snprintf(bind_ep, sizeof bind_ep, "tcp://%s:*", bind_addr);
    if (!(w.reducer = sy_reducer_new_secure(w.zctx, bind_ep, sy_sec_cert(), w.zap))) {
        fprintf(stderr, "switchyard-worker: the overlap thread's data socket (--port + 1): %s\n", sy_lasterr());
        code = 2;
        goto out;
    }
    {
        const char *bound = sy_reducer_endpoint(w.reducer), *colon = strrchr(bound, ':');
        snprintf(w.reducer_advertised, sizeof w.reducer_advertised, "tcp://%s:%s", advertise, colon ? colon + 1 : "0");
    }
    /* both data sockets also listen in a private directory, for workers on this machine */
    if (make_local_dir(w.local_dir, sizeof w.local_dir)) {
        sy_warn("no local data sockets (%s): workers on this machine will talk over TCP", sy_lasterr());
    } else {
        char path[256];
        snprintf(path, sizeof path, "%s/data", w.local_dir);
        if (sy_peer_bind_local(w.peer, path)) {
            sy_warn("%s: workers on this machine will talk over TCP", sy_lasterr());
        } else if (snprintf(path, sizeof path, "%s/overlap", w.local_dir), sy_reducer_bind_local(w.reducer, path)) {
            sy_warn("%s: the overlap thread's links to workers on this machine stay on TCP", sy_lasterr());
        } else {
            size_t o = strlen(w.reducer_advertised);
            snprintf(w.reducer_advertised + o, sizeof w.reducer_advertised - o, "\n%s",
                     sy_reducer_local_endpoint(w.reducer));
        }
    }
    w.ctrl = zmq_socket(w.zctx, ZMQ_DEALER);
    sy_sock_defaults(w.ctrl, 0);
    zmq_setsockopt(w.ctrl, ZMQ_ROUTING_ID, w.id, strlen(w.id));
    sy_limit_set(w.ctrl, (int64_t)1 << 30); /* the coordinator is authenticated; 1 GiB per tensor frame */
    if (sy_sec_coordinator_client(w.ctrl)) {
        fprintf(stderr, "switchyard-worker: %s\n", sy_lasterr());
        goto out;
    }
    /* a refused CURVE handshake is never retried by libzmq: say so instead of waiting. The
     * watch begins before the connection, or a refusal that comes first goes unseen. */
    mon = sy_curve_monitor_new(w.zctx, w.ctrl, "ctrl");
    if (zmq_connect(w.ctrl, coordinator)) {
        fprintf(stderr, "switchyard-worker: cannot connect to %s: %s\n", coordinator, zmq_strerror(errno));
        goto out;
    }
    if (g_fault_slow_monitor) { /* as a loaded machine may: the handshake is over before the watch begins */
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
        /* and the socket has taken in the end of the refused connection (its pipe) before
         * the first message: ZMQ_EVENTS makes it process its pending commands */
        int events;
        size_t len = sizeof events;
        zmq_getsockopt(w.ctrl, ZMQ_EVENTS, &events, &len);
    }
    if (!(w.hb = sy_heartbeat_start(w.zctx, coordinator, w.id, 1000, 5000)))
        goto out;
    g_hb = w.hb;
    if (g_fault_stale_abort)
        sy_heartbeat_drill_slow_abort(w.hb);
    sy_info("worker %s: data endpoint %s, %.1f GFLOP/s sgemm (%d threads); registering with %s", w.id,
            w.advertised, w.gflops, w.threads, coordinator);
    double next_register = 0.0, backoff = 1.0, ctrl_heard = 0.0;
    int registered = 0;
    while (!g_signal) {
        if (sy_heartbeat_shutdown(w.hb)) {
            sy_info("shutdown requested by the coordinator");
            code = 0;
            break;
        }
        /* a refused handshake first: libzmq never retries it */
        char why[400];
        if (mon && sy_curve_monitor_failed(mon, coordinator, why, sizeof why)) {
            sy_error("%s", why);
            code = 3;
            break;
        }
        /* until assigned, (re-)register with back-off: the coordinator may be starting
         * or restarting; registering twice is harmless */
        if (!w.assigned && sy_now() >= next_register) {
            send_register(&w);
            next_register = sy_now() + backoff;
            backoff = backoff * 2 > 8 ? 8 : backoff * 2;
            if (g_fault_register_twice) {
                g_fault_register_twice = 0;
                sy_warn("fault drill: registering again before reading the coordinator's reply");
                nanosleep(&(struct timespec){1, 200000000}, NULL);
                continue;
            }
        }
        /* lost = silent on both connections: after a network outage the heartbeat
         * connection may come back seconds after the control one (each TCP connection
         * retransmits on its own timer); an Assignment that just arrived proves the
         * coordinator is there, and dropping it would make the coordinator re-plan again
         * and again until it gives the run up */
        double ctrl_limit = (w.have_cfg ? w.cfg.cluster.timeout_ms : 5000) / 1000.0;
        if (sy_heartbeat_coordinator_lost(w.hb) && (w.assigned || registered) &&
            sy_now() - ctrl_heard > ctrl_limit) {
            sy_warn("lost the coordinator: dropping the assignment, registering again");
            drop_assignment(&w);
            registered = 0;
            backoff = 1.0;
            next_register = 0.0;
        }
        zmq_pollitem_t it = {w.ctrl, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        sy_ctrl_msg m;
        int rc = sy_ctrl_recv(w.ctrl, 0, &m, ZMQ_DONTWAIT);
        if (rc == -1)
            continue;
        if (rc == -2) {
            sy_warn("%s", sy_lasterr());
            continue;
        }
        ctrl_heard = sy_now();
        sy_heartbeat_heard(w.hb);
        Switchyard__Envelope *e = m.env;
        switch (e->msg_case) {
        case SWITCHYARD__ENVELOPE__MSG_REFUSE:
            sy_error("the coordinator refused this worker: %s", e->refuse->reason);
            sy_ctrl_msg_free(&m);
            code = 3;
            goto out;
        case SWITCHYARD__ENVELOPE__MSG_ASSIGNMENT: {
            registered = 1;
            if (g_fault_stale_abort && w.assigned) { /* the drill's window: see fault_init */
                sy_warn("fault drill: applying the new assignment 0.2 s late");
                nanosleep(&(struct timespec){0, 200000000}, NULL);
            }
            sy_heartbeat_set(w.hb, e->assignment->epoch, e->assignment->start_step, ST_SETUP,
                             (int)e->assignment->rank);
            if (apply_assignment(&w, e->assignment)) {
                char msg[1200];
                snprintf(msg, sizeof msg, "assignment for epoch %" PRIu64 ": %s", (uint64_t)e->assignment->epoch,
                         sy_lasterr());
                sy_error("%s", msg);
                w.epoch = e->assignment->epoch;
                if (w.data_failed) {
                    /* no data here: this worker cannot take part; the run goes on without it */
                    send_leaving(&w, msg);
                    sy_ctrl_msg_free(&m);
                    code = 3;
                    goto out;
                }
                send_error(&w, msg);
                drop_assignment(&w);
                break;
            }
            if (!w.state_pending)
                send_ready(&w);
            break;
        }
        case SWITCHYARD__ENVELOPE__MSG_SHARD:
            if (on_state_shard(&w, e->shard, m.payload, m.payload_len)) {
                char msg[1200];
                snprintf(msg, sizeof msg, "loading state: %s", sy_lasterr());
                sy_error("%s", msg);
                send_error(&w, msg);
                drop_assignment(&w);
            }
            break;
        case SWITCHYARD__ENVELOPE__MSG_SAVE_DONE: /* the end of the state after an assignment */
            if (w.assigned && w.state_pending && e->save_done->epoch == w.epoch) {
                w.state_pending = 0;
                sy_info("state of step %" PRId64 " loaded (%d tensors)", (int64_t)e->save_done->step,
                        w.state_tensors);
                send_ready(&w);
            }
            break;
        case SWITCHYARD__ENVELOPE__MSG_STEP:
            on_step(&w, e->step);
            sy_heartbeat_set(w.hb, w.epoch, e->step->step + 1, ST_READY, w.rank);
            break;
        case SWITCHYARD__ENVELOPE__MSG_SHUTDOWN:
            sy_info("shutdown: %s", e->shutdown->reason);
            code = 0;
            sy_ctrl_msg_free(&m);
            goto out;
        case SWITCHYARD__ENVELOPE__MSG_RELEASE:
            if (w.assigned && e->release->epoch == w.epoch) {
                sy_info("released from the mesh (%s): waiting as a standby", e->release->reason);
                drop_assignment(&w);
                sy_heartbeat_set(w.hb, w.epoch, w.last_step, ST_REGISTERING, -1);
                next_register = 0.0;
                backoff = 1.0;
            }
            break;
        case SWITCHYARD__ENVELOPE__MSG_ABORT:
            sy_warn("abort (epoch %" PRIu64 "): %s", (uint64_t)e->abort->epoch, e->abort->reason);
            break;
        default:
            sy_warn("ignoring an unexpected control message (%d)", (int)e->msg_case);
        }
        sy_ctrl_msg_free(&m);
    }
    if (g_signal) {
        sy_info("signal %d: leaving", (int)g_signal);
        send_leaving(&w, "signal");
        code = 0;
    }
out:;
    if (mon)
        zmq_close(mon);
    struct rusage ru;
    if (!getrusage(RUSAGE_SELF, &ru))
        sy_info("peak RSS %.1f MB", ru.ru_maxrss / 1024.0);
    drop_assignment(&w);
    sy_reducer_destroy(&w.reducer); /* its peer watches the heartbeat's abort flag */
    g_hb = NULL;
    sy_heartbeat_stop(&w.hb);
    sy_peer_destroy(&w.peer);
    if (w.ctrl)
        zmq_close(w.ctrl);
    if (w.have_cfg)
        sy_config_free(&w.cfg);
    sy_tokens_destroy(&w.train);
    sy_zap_destroy(&w.zap);
    zmq_ctx_term(w.zctx);
    remove_local_dir(w.local_dir);
    sy_trace_close();
    return code;
}
