/* status.c: the coordinator's read-only status endpoint. A ROUTER socket answers each
 * StatusRequest with a StatusReply built from the coordinator's state. It never blocks
 * the training loop: requests are read without waiting, replies are sent without waiting
 * (a client that does not read loses its replies, never stalls a step), and garbage,
 * oversize or multi-frame requests get an error reply or are dropped. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "coord.h"
#include "ctrl.h"
#include "curve.h"
#include "log.h"
#include "switchyard.pb-c.h"

#define MAX_REQUEST 4096

void sy_coord_event(coord *c, const char *fmt, ...) {
    sy_event *e = &c->events.ev[c->events.next];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof e->what, fmt, ap);
    va_end(ap);
    e->when = sy_now();
    c->events.next = (c->events.next + 1) % SY_MAX_EVENTS;
    if (c->events.n < SY_MAX_EVENTS)
        c->events.n++;
}

int sy_status_bind(coord *c, const char *endpoint) {
    c->status = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!c->status)
        return -1;
    int zero = 0, hwm = 64, maxmsg = MAX_REQUEST * 2;
    zmq_setsockopt(c->status, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->status, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->status, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* a peer sending a frame larger than this is disconnected by ZeroMQ itself */
    int64_t maxsize = maxmsg;
    zmq_setsockopt(c->status, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    if (c->sec.zap && !c->sec.status_open && sy_curve_server(c->status, sy_sec_cert(), "status")) {
        zmq_close(c->status);
        c->status = NULL;
        return -1;
    }
    if (zmq_bind(c->status, endpoint)) {
        sy_seterr("cannot bind the status socket at %s: %s", endpoint, zmq_strerror(errno));
        zmq_close(c->status);
        c->status = NULL;
        return -1;
    }
    return 0;
}

void sy_status_close(coord *c) {
    if (c->status)
        zmq_close(c->status);
    c->status = NULL;
}

static const char *state_name(const coord *c) {
    if (c->ckpt.recover_started && c->phase != DONE)
        return "recovering";
    switch (c->phase) {
    case WAITING:
        return "waiting for workers";
    case ASSIGNING:
        return "assigning";
    case TRAINING:
        return c->save.expect && !c->ref.on ? "checkpointing" : "training";
    case SAVING:
        return "checkpointing";
    case EVALUATING:
        return "evaluating";
    case DONE:
        return "done";
    }
    return "?";
}

static int switch_layer_count(const sy_model_cfg *mc) {
    int k = 0;
    for (int l = 0; l < mc->n_layers; l++)
        k += sy_is_switch_layer(mc, l);
    return k;
}

/* The client's routing id, and whether it is a REQ (which expects an empty delimiter). */
typedef struct {
    char id[256];
    size_t len;
    int delim;
} client;

static void send_reply(coord *c, const client *to, Switchyard__StatusReply *r) {
    size_t n = switchyard__status_reply__get_packed_size(r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return;
    switchyard__status_reply__pack(r, buf);
    /* never wait: a full or gone client simply misses its reply */
    if (zmq_send(c->status, to->id, to->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        (!to->delim || zmq_send(c->status, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0))
        zmq_send(c->status, buf, n, ZMQ_DONTWAIT);
    free(buf);
}

static void answer(coord *c, const client *to) {
    double now = sy_now();
    Switchyard__StatusReply r = SWITCHYARD__STATUS_REPLY__INIT;
    r.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    r.run_id = c->books.run_id;
    r.state = (char *)state_name(c);
    r.epoch = c->epoch;
    r.step = c->step;
    r.total_steps = c->cfg.train.steps;
    r.loss = c->last.loss.total;
    r.ce = c->last.loss.ce;
    r.aux = c->last.loss.aux;
    r.z = c->last.loss.z;
    r.val_loss = c->last.val_loss;
    r.tokens_per_s = c->last.tps;
    r.step_time_s = c->last.step_time;
    r.compute_s = c->last.compute;
    r.alltoall_s = c->last.a2a;
    r.allreduce_s = c->last.ar;
    r.lr = c->cur.lr;
    r.grad_norm = c->cur.grad_norm;
    r.straggler_rank = c->phase == WAITING ? -1 : c->bal.straggler_rank;
    r.straggler_wait_s = r.straggler_rank >= 0 ? c->bal.straggler_wait : 0;
    r.rehomes = c->rh.rehomes;
    r.rollbacks = c->rh.rollbacks;
    r.last_steps_lost = c->rh.last_lost;
    r.last_recovery_s = c->rh.last_recovery;
    r.last_detect_s = c->rh.last_detect;
    r.replica_every = (uint32_t)(c->cfg.cluster.replica_every > 0 ? c->cfg.cluster.replica_every : 0);
    r.replica_bytes = c->rh.replica_bytes;
    r.uptime_s = now - c->books.t_start;
    r.world = (uint32_t)(c->phase == WAITING ? 0 : c->plan.world);
    r.min_workers = (uint32_t)c->pool.min_workers;
    r.checkpoint_step = c->ckpt.last[0] ? c->ckpt.last_step : -1;
    r.checkpoint_path = c->ckpt.last;
    r.checkpoint_age_s = c->ckpt.last[0] && c->ckpt.time > 0 ? now - c->ckpt.time : 0;

    Switchyard__WorkerStatus ws[MAX_WORKERS], *wp[MAX_WORKERS];
    char states[MAX_WORKERS][16];
    size_t nw = 0;
    for (int i = 0; i < c->pool.n && nw < MAX_WORKERS; i++) {
        const member *mb = &c->pool.m[i];
        Switchyard__WorkerStatus *w = &ws[nw];
        switchyard__worker_status__init(w);
        w->id = (char *)mb->id;
        w->host = (char *)mb->host;
        w->endpoint = (char *)mb->endpoint;
        w->cores = mb->cores;
        w->threads = mb->threads;
        w->gflops = mb->gflops;
        w->heartbeat_age_s = now - mb->last_seen;
        w->step_time_s = mb->step_time;
        w->compute_s = mb->compute_s;
        w->wait_s = mb->wait_s;
        int in_mesh = mb->alive && mb->rank >= 0 && c->phase != WAITING && c->plan.mesh.ep > 0;
        w->rank = in_mesh ? mb->rank : -1;
        w->data_rank = in_mesh ? sy_mesh_d(&c->plan.mesh, mb->rank) : -1;
        w->expert_rank = in_mesh ? sy_mesh_p(&c->plan.mesh, mb->rank) : -1;
        if (in_mesh) {
            w->expert_begin = (uint32_t)c->plan.mesh.e_begin[w->expert_rank];
            w->expert_end = (uint32_t)c->plan.mesh.e_end[w->expert_rank];
            w->row0 = (uint32_t)c->plan.mesh.row0[mb->rank];
            w->nrows = (uint32_t)c->plan.mesh.nrows[mb->rank];
        }
        snprintf(states[nw], sizeof states[nw], "%s",
                 !mb->alive ? "dead" : !in_mesh ? (c->phase == WAITING ? "waiting" : "joining")
                                                 : c->phase == DONE ? "done" : "training");
        w->state = states[nw];
        wp[nw] = w;
        nw++;
    }
    r.n_workers = nw;
    r.workers = wp;

    /* experts: share of routed choices and drop rate over the run, by language */
    const sy_model_cfg *mc = c->ref.on ? &c->ref.rc.model : &c->cfg.model;
    int E = mc->n_experts, SL = switch_layer_count(mc), NL = c->books.load.n_langs;
    size_t ne = c->books.load.wanted ? (size_t)SL * E : 0;
    Switchyard__ExpertStatus *es = calloc(ne + 1, sizeof *es);
    Switchyard__ExpertStatus **ep = calloc(ne + 1, sizeof *ep);
    double *lang = calloc(ne * (NL > 0 ? NL : 1) + 1, sizeof(double));
    char *lnames[16];
    if (!es || !ep || !lang)
        ne = 0;
    int li = 0;
    for (int l = 0; l < mc->n_layers && ne; l++) {
        if (!sy_is_switch_layer(mc, l))
            continue;
        int64_t tw = 0;
        for (int e = 0; e < E; e++)
            tw += c->books.load.wanted[li * E + e];
        for (int e = 0; e < E; e++) {
            size_t k = (size_t)li * E + e;
            Switchyard__ExpertStatus *x = &es[k];
            switchyard__expert_status__init(x);
            x->layer = (uint32_t)l;
            x->expert = (uint32_t)e;
            int64_t w = c->books.load.wanted[k], kp = c->books.load.kept[k];
            x->share = tw ? (double)w / tw : 0.0;
            x->drop_rate = w ? (double)(w - kp) / w : 0.0;
            if (NL > 0 && c->books.load.lang) {
                int64_t tot = 0;
                for (int g = 0; g < NL; g++)
                    tot += c->books.load.lang[k * NL + g];
                for (int g = 0; g < NL; g++)
                    lang[k * NL + g] = tot ? (double)c->books.load.lang[k * NL + g] / tot : 0.0;
                x->n_lang_share = (size_t)NL;
                x->lang_share = &lang[k * NL];
            }
            ep[k] = x;
        }
        li++;
    }
    r.n_experts = ne;
    r.experts = ep;
    for (int g = 0; g < NL && g < 16; g++)
        lnames[g] = c->books.langs[g];
    r.n_languages = (size_t)(NL < 16 ? NL : 16);
    r.languages = lnames;

    Switchyard__EventStatus ev[SY_MAX_EVENTS], *evp[SY_MAX_EVENTS];
    for (int i = 0; i < c->events.n; i++) {
        int k = (c->events.next - 1 - i + 2 * SY_MAX_EVENTS) % SY_MAX_EVENTS; /* newest first */
        switchyard__event_status__init(&ev[i]);
        ev[i].age_s = now - c->events.ev[k].when;
        ev[i].what = c->events.ev[k].what;
        evp[i] = &ev[i];
    }
    r.n_events = (size_t)c->events.n;
    r.events = evp;
    send_reply(c, to, &r);
    free(es);
    free(ep);
    free(lang);
}

static void refuse(coord *c, const client *to, const char *why) {
    Switchyard__StatusReply r = SWITCHYARD__STATUS_REPLY__INIT;
    r.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    r.error = (char *)why;
    r.run_id = c->books.run_id;
    r.val_loss = NAN;
    r.checkpoint_step = -1;
    send_reply(c, to, &r);
}

void sy_status_serve(coord *c) {
    if (!c->status)
        return;
    for (int k = 0; k < 32; k++) { /* a bounded batch per loop turn */
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, c->status, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            return;
        }
        client to = {.len = zmq_msg_size(&f) < sizeof to.id ? zmq_msg_size(&f) : sizeof to.id};
        memcpy(to.id, zmq_msg_data(&f), to.len);
        zmq_msg_close(&f);
        /* the request: one frame (a REQ client puts an empty delimiter first) */
        int frames = 0, more = 1, bad = 0;
        size_t req_len = 0;
        uint8_t req[MAX_REQUEST];
        for (int first = 1; more; first = 0) {
            int m = 0;
            size_t ml = sizeof m;
            zmq_getsockopt(c->status, ZMQ_RCVMORE, &m, &ml);
            if (!m)
                break;
            zmq_msg_init(&f);
            if (zmq_msg_recv(&f, c->status, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&f);
                break;
            }
            size_t n = zmq_msg_size(&f);
            if (first && n == 0) {
                to.delim = 1;
            } else if (++frames == 1 && n <= sizeof req) {
                memcpy(req, zmq_msg_data(&f), n);
                req_len = n;
            } else {
                bad = 1;
            }
            zmq_msg_close(&f);
        }
        Switchyard__StatusRequest *q = NULL;
        if (!bad && frames == 1)
            q = switchyard__status_request__unpack(NULL, req_len, req);
        const char *why = NULL;
        char buf[160];
        if (bad || frames != 1)
            why = "bad request: expected one StatusRequest frame of at most 4096 bytes";
        else if (!q)
            why = "bad request: not a StatusRequest";
        else if (q->protocol_version != SWITCHYARD__VERSION__PROTOCOL_VERSION) {
            snprintf(buf, sizeof buf, "protocol version %u; this coordinator speaks %d", q->protocol_version,
                     SWITCHYARD__VERSION__PROTOCOL_VERSION);
            why = buf;
        }
        if (q)
            switchyard__status_request__free_unpacked(q, NULL);
        if (why)
            refuse(c, &to, why);
        else
            answer(c, &to);
    }
}
