#include "ctrl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "sanitize.h"

void sy_sock_defaults(void *sock, int router) {
    int zero = 0, one = 1;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (router) {
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    }
}

static int ctrl_send(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env, const void *payload,
                     size_t payload_len, int flags);

int sy_ctrl_send(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env, const void *payload,
                 size_t payload_len) {
    return ctrl_send(sock, id, id_len, env, payload, payload_len, id ? ZMQ_DONTWAIT : 0);
}

int sy_ctrl_send_blocking(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env,
                          const void *payload, size_t payload_len) {
    return ctrl_send(sock, id, id_len, env, payload, payload_len, 0);
}

static int ctrl_send(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env, const void *payload,
                     size_t payload_len, int flags) {
    size_t n = switchyard__envelope__get_packed_size(env);
    uint8_t stackbuf[512];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf) {
        sy_seterr("control: out of memory");
        return -1;
    }
    switchyard__envelope__pack(env, buf);
    int rc = 0;
    if (id && zmq_send(sock, id, id_len, ZMQ_SNDMORE | flags) < 0)
        rc = -1;
    if (!rc && zmq_send(sock, buf, n, (payload ? ZMQ_SNDMORE : 0) | flags) < 0)
        rc = -1;
    if (!rc && payload && zmq_send(sock, payload, payload_len, flags) < 0)
        rc = -1;
    if (rc)
        sy_seterr("control: send failed: %s", zmq_strerror(errno));
    if (buf != stackbuf)
        free(buf);
    return rc;
}

static int more(void *sock) {
    int m = 0;
    size_t l = sizeof m;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &m, &l);
    return m;
}

static void drain(void *sock) {
    while (more(sock)) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

int sy_ctrl_recv(void *sock, int router, sy_ctrl_msg *out, int flags) {
    memset(out, 0, sizeof *out);
    zmq_msg_t f;
    if (router) {
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, flags) < 0) {
            zmq_msg_close(&f);
            return -1;
        }
        out->id_len = zmq_msg_size(&f) < sizeof out->id ? zmq_msg_size(&f) : sizeof out->id - 1;
        memcpy(out->id, zmq_msg_data(&f), out->id_len);
        out->id[out->id_len] = 0;
        zmq_msg_close(&f);
        if (!more(sock)) {
            sy_seterr("control: a message from '%s' has no envelope", sy_esc_str(0, out->id));
            return -2;
        }
        flags = 0;
    }
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, sock, flags) < 0) {
        zmq_msg_close(&f);
        return -1;
    }
    if (router) {
        const char *pa = zmq_msg_gets(&f, "Peer-Address");
        if (pa)
            snprintf(out->peer_addr, sizeof out->peer_addr, "%s", pa);
    }
    size_t n = zmq_msg_size(&f);
    if (n > SY_MAX_CTRL_BYTES) {
        zmq_msg_close(&f);
        drain(sock);
        sy_seterr("control: a %zu-byte envelope from '%s' is over the limit", n, sy_esc_str(0, out->id));
        return -2;
    }
    const char *uid = zmq_msg_gets(&f, "User-Id");
    if (uid)
        snprintf(out->key, sizeof out->key, "%s", uid);
    out->env = switchyard__envelope__unpack(NULL, n, zmq_msg_data(&f));
    zmq_msg_close(&f);
    if (!out->env) {
        drain(sock);
        sy_seterr("control: an undecodable %zu-byte envelope from '%s'", n,
                  out->id[0] ? sy_esc_str(0, out->id) : "the coordinator");
        return -2;
    }
    if (more(sock)) {
        zmq_msg_t *pm = malloc(sizeof *pm);
        if (!pm) {
            drain(sock);
            sy_ctrl_msg_free(out);
            sy_seterr("control: out of memory");
            return -2;
        }
        zmq_msg_init(pm);
        zmq_msg_recv(pm, sock, 0);
        out->_payload_msg = pm;
        out->payload = zmq_msg_data(pm);
        out->payload_len = zmq_msg_size(pm);
        if (more(sock)) {
            drain(sock);
            sy_seterr("control: a message with more than two frames from '%s'", sy_esc_str(0, out->id));
            sy_ctrl_msg_free(out);
            return -2;
        }
    }
    return 0;
}

void sy_ctrl_msg_free(sy_ctrl_msg *m) {
    if (m->env)
        switchyard__envelope__free_unpacked(m->env, NULL);
    if (m->_payload_msg) {
        zmq_msg_close(m->_payload_msg);
        free(m->_payload_msg);
    }
    memset(m, 0, sizeof *m);
}
