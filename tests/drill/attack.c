/* sy-attack: the attacker of tests/security_drill.sh. Sends forged messages to a live
 * run over real ZeroMQ sockets, as the attacks of issue 11 did:
 *   forge-grad  --data EP --epoch E --step S [--count N]   PUSH all-gather chunks posing as
 *               rank 0's gradient-norm chunk (value 1e30) for steps S..S+N-1 to rank 1
 *   junk-a2a    --data EP --epoch E --step S [--count N]   16-byte all-to-all frames, tags 0..63
 *   fake-worker --coord EP [--seconds T]                   Register, then heartbeat for T s
 *   reuse-id    --coord EP --id ID                         Register with a live worker's id
 *   spoof-error --coord EP --id ID --epoch E               an Error envelope under a live id
 *   flood       --coord EP [--count 260] [--seconds T]     that many registrations, heartbeating
 *   old-worker  --coord EP                                 Register as a build before the data protocol
 *               version (data_version 0); prints the coordinator's Refuse reason, rc 0 if refused
 * Security: --server-key K (the server's public key) makes the sockets CURVE clients with a
 * fresh key pair, or with --cert FILE (an insider's key); without it they speak plain
 * ZeroMQ. Prints one line: what was sent and what came back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "log.h"
#include "switchyard.pb-c.h"

static sy_cert g_cert;
static char g_server[SY_KEY_LEN + 1];
static int g_curve;

static void *sock(void *ctx, int type, const char *id) {
    void *s = zmq_socket(ctx, type);
    int zero = 0, tmo = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    if (id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    if (g_curve)
        sy_curve_client(s, &g_cert, g_server);
    return s;
}

static int send_env(void *s, Switchyard__Envelope *env) {
    uint8_t buf[4096];
    size_t n = switchyard__envelope__get_packed_size(env);
    if (n > sizeof buf)
        return -1;
    switchyard__envelope__pack(env, buf);
    return zmq_send(s, buf, n, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

static int send_register_as(void *s, const char *id, uint32_t data_version) {
    Switchyard__Register r = SWITCHYARD__REGISTER__INIT;
    r.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    r.data_version = data_version;
    r.worker_id = (char *)id;
    r.host = "attacker";
    r.peer_endpoint = "tcp://127.0.0.1:9";
    r.cores = 64;
    r.gflops = 1000;
    r.byte_order = 1;
    r.threads = 1;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_REGISTER;
    env.register_ = &r;
    return send_env(s, &env);
}

static int send_register(void *s, const char *id) { return send_register_as(s, id, SWITCHYARD__VERSION__DATA_VERSION); }

static void sleep_ms(int ms);

/* A worker of an older build: registers and prints what the coordinator answers. */
static int old_worker(void *ctx, const char *ep) {
    char id[64];
    snprintf(id, sizeof id, "old-worker-%d", (int)getpid());
    void *s = sock(ctx, ZMQ_DEALER, id);
    zmq_connect(s, ep);
    int rc = 1;
    double t0 = sy_now();
    while (sy_now() - t0 < 5 && rc) {
        if (send_register_as(s, id, 0)) {
            sleep_ms(100);
            continue;
        }
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 1000) <= 0)
            continue;
        uint8_t buf[8192];
        int n = zmq_recv(s, buf, sizeof buf, 0);
        Switchyard__Envelope *env = n > 0 ? switchyard__envelope__unpack(NULL, (size_t)n, buf) : NULL;
        if (env && env->msg_case == SWITCHYARD__ENVELOPE__MSG_REFUSE && env->refuse) {
            printf("old-worker: refused: %s\n", env->refuse->reason);
            rc = 0;
        } else {
            printf("old-worker: got %s\n", env ? "another message" : "an unreadable reply");
        }
        if (env)
            switchyard__envelope__free_unpacked(env, NULL);
        if (rc)
            break;
    }
    if (rc)
        printf("old-worker: not refused\n");
    zmq_close(s);
    return rc;
}

static int send_heartbeat(void *s) {
    Switchyard__Heartbeat h = SWITCHYARD__HEARTBEAT__INIT;
    Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
    env.msg_case = SWITCHYARD__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &h;
    return send_env(s, &env);
}

/* reads whatever arrived on socks without waiting */
static void drain(void **socks, int n, long *msgs, long *bytes) {
    for (int i = 0; i < n; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, socks[i], ZMQ_DONTWAIT) >= 0) {
            (*msgs)++;
            *bytes += (long)zmq_msg_size(&m);
        }
        zmq_msg_close(&m);
    }
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* keep n DEALER pairs (control + heartbeat) registered and heartbeating for secs */
static int fake_workers(void *ctx, const char *ep, int n, double secs, const char *prefix) {
    void **c = calloc((size_t)n * 2, sizeof(void *));
    long sent = 0, msgs = 0, bytes = 0;
    for (int i = 0; i < n; i++) {
        char id[64], hb[80];
        snprintf(id, sizeof id, "%s-%d-%d", prefix, (int)getpid(), i);
        snprintf(hb, sizeof hb, "%s/hb", id);
        c[2 * i] = sock(ctx, ZMQ_DEALER, id);
        c[2 * i + 1] = sock(ctx, ZMQ_DEALER, hb);
        zmq_connect(c[2 * i], ep);
        zmq_connect(c[2 * i + 1], ep);
    }
    double t0 = sy_now(), next_reg = 0;
    while (sy_now() - t0 < secs) {
        for (int i = 0; i < n; i++) {
            if (sy_now() >= next_reg && !send_register(c[2 * i], "x"))
                sent++;
            if (!send_heartbeat(c[2 * i + 1]))
                sent++;
        }
        if (sy_now() >= next_reg)
            next_reg = sy_now() + 1.0;
        drain(c, 2 * n, &msgs, &bytes);
        sleep_ms(200);
    }
    drain(c, 2 * n, &msgs, &bytes);
    printf("%s: %d fake workers sent %ld messages over %.0f s; received %ld messages (%ld bytes)\n", prefix, n, sent,
           secs, msgs, bytes);
    for (int i = 0; i < 2 * n; i++)
        zmq_close(c[i]);
    free(c);
    return 0;
}

static int data_attack(void *ctx, const char *ep, uint64_t epoch, int64_t step, int count, int junk) {
    void *s = sock(ctx, ZMQ_PUSH, NULL);
    int hwm = 100000;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_connect(s, ep);
    long sent = 0;
    for (int k = 0; k < count; k++) {
        int64_t st = step + k;
        for (int t = 0; t < (junk ? 64 : 1); t++) {
            Switchyard__DataHeader h = SWITCHYARD__DATA_HEADER__INIT;
            h.epoch = epoch;
            h.step = st;
            h.src = 0;
            h.dst = 1;
            float big = 1e30f;
            uint8_t junkb[16];
            const void *pl;
            size_t pn;
            if (junk) {
                h.op = 1; /* all-to-all */
                h.tag = (uint32_t)t;
                h.dtype = 0;
                memset(junkb, 0xA5, sizeof junkb);
                pl = junkb;
                pn = sizeof junkb;
            } else {
                /* the all-gather chunk of the 1-float gradient-norm all-reduce (worker/step.c:
                 * tag (step << 2) | 2, group 0 → 0x10000 | tag; ring all-gather stage 0x80) */
                uint32_t tag = 0x10000u | ((uint32_t)(st << 2) | 2u);
                h.op = 2;
                h.tag = (tag << 8) | 0x80u;
                h.dtype = 1; /* f32 */
                pl = &big;
                pn = 4;
            }
            h.bytes = pn;
            uint8_t hb[128];
            size_t hn = switchyard__data_header__pack(&h, hb);
            if (zmq_send(s, hb, hn, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 && zmq_send(s, pl, pn, ZMQ_DONTWAIT) >= 0)
                sent++;
        }
    }
    sleep_ms(1500); /* let them leave (or fail to) */
    printf("%s: queued %ld forged data messages for epoch %llu steps %lld..%lld to %s\n", junk ? "junk-a2a" : "forge-grad",
           sent, (unsigned long long)epoch, (long long)step, (long long)(step + count - 1), ep);
    zmq_close(s);
    return 0;
}

static int control_attack(void *ctx, const char *ep, const char *id, int error, uint64_t epoch) {
    void *s = sock(ctx, ZMQ_DEALER, id);
    zmq_connect(s, ep);
    long sent = 0, msgs = 0, bytes = 0;
    for (int k = 0; k < 10; k++) {
        if (error) {
            Switchyard__Error e = SWITCHYARD__ERROR__INIT;
            e.epoch = epoch;
            e.message = "forged failure\nFAKE LOG LINE [coordinator] all is well";
            Switchyard__Envelope env = SWITCHYARD__ENVELOPE__INIT;
            env.msg_case = SWITCHYARD__ENVELOPE__MSG_ERROR;
            env.error = &e;
            sent += !send_env(s, &env);
        } else {
            sent += !send_register(s, id);
        }
        sleep_ms(200);
        drain(&s, 1, &msgs, &bytes);
    }
    sleep_ms(500);
    drain(&s, 1, &msgs, &bytes);
    printf("%s: sent %ld messages as '%s'; received %ld messages (%ld bytes)\n", error ? "spoof-error" : "reuse-id",
           sent, id, msgs, bytes);
    zmq_close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sy-attack MODE [options] (see the comment at the top of tests/drill/attack.c)\n");
        return 2;
    }
    const char *mode = argv[1], *data = NULL, *coord = NULL, *id = NULL, *server = NULL, *cert = NULL;
    unsigned long long epoch = 0;
    long long step = 0;
    int count = -1;
    double secs = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--coord"))
            coord = v;
        else if (!strcmp(a, "--id"))
            id = v;
        else if (!strcmp(a, "--epoch"))
            epoch = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--step"))
            step = atoll(v);
        else if (!strcmp(a, "--count"))
            count = atoi(v);
        else if (!strcmp(a, "--seconds"))
            secs = atof(v);
        else if (!strcmp(a, "--server-key"))
            server = v;
        else if (!strcmp(a, "--cert"))
            cert = v;
        else {
            fprintf(stderr, "sy-attack: unknown option %s\n", a);
            return 2;
        }
    }
    if (server) {
        if (sy_pubkey_load(server, g_server) || (cert ? sy_cert_load(cert, &g_cert, 1) : sy_cert_new(&g_cert))) {
            fprintf(stderr, "sy-attack: %s\n", sy_lasterr());
            return 2;
        }
        g_curve = 1;
    }
    void *ctx = zmq_ctx_new();
    int rc = 2;
    if (!strcmp(mode, "forge-grad") && data)
        rc = data_attack(ctx, data, epoch, step, count > 0 ? count : 40, 0);
    else if (!strcmp(mode, "junk-a2a") && data)
        rc = data_attack(ctx, data, epoch, step, count > 0 ? count : 10, 1);
    else if (!strcmp(mode, "fake-worker") && coord)
        rc = fake_workers(ctx, coord, 1, secs, "fake-worker");
    else if (!strcmp(mode, "old-worker") && coord)
        rc = old_worker(ctx, coord);
    else if (!strcmp(mode, "flood") && coord)
        rc = fake_workers(ctx, coord, count > 0 ? count : 260, secs, "flood");
    else if (!strcmp(mode, "reuse-id") && coord && id)
        rc = control_attack(ctx, coord, id, 0, 0);
    else if (!strcmp(mode, "spoof-error") && coord && id)
        rc = control_attack(ctx, coord, id, 1, epoch);
    else
        fprintf(stderr, "sy-attack: bad mode or missing options for '%s'\n", mode);
    zmq_ctx_term(ctx);
    return rc;
}
