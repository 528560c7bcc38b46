/* ctrl.h: control messages on the coordinator's ROUTER and the workers' DEALERs: a
 * protobuf Envelope frame, optionally followed by one raw payload frame (tensor bytes).
 * On a ROUTER the peer's routing id comes first. The only code that frames control
 * messages. */
#ifndef SY_CTRL_H
#define SY_CTRL_H

#include <stddef.h>

#include "switchyard.pb-c.h"

#define SY_MAX_CTRL_BYTES (64u << 20) /* an envelope larger than this is refused */

typedef struct {
    Switchyard__Envelope *env;  /* decoded envelope (free with sy_ctrl_msg_free) */
    char id[256];               /* routing id of the sender (ROUTER only) */
    char peer_addr[64];         /* ROUTER: the sender's IP address as this socket sees it ("" unknown) */
    size_t id_len;
    char key[41];               /* the sender's authenticated CURVE key ("" when insecure) */
    void *payload;              /* the payload frame's bytes, or NULL */
    size_t payload_len;
    void *_payload_msg;         /* zmq_msg_t holding payload */
} sy_ctrl_msg;

/* Sends env (and payload when not NULL) on a DEALER (id NULL) or to routing id on a
 * ROUTER. Non-blocking for ROUTER (ROUTER_MANDATORY reports unknown peers).
 * Returns 0 or -1 with a message. */
int sy_ctrl_send(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env, const void *payload,
                 size_t payload_len);
/* As sy_ctrl_send, but on a ROUTER waits while the peer's queue is full instead of
 * failing: for streams that must arrive whole (a checkpoint's tensors). */
int sy_ctrl_send_blocking(void *sock, const char *id, size_t id_len, const Switchyard__Envelope *env,
                          const void *payload, size_t payload_len);

/* Receives one message (the socket must be readable or flags ZMQ_DONTWAIT gives -1 with
 * errno EAGAIN). router: 1 when the socket is a ROUTER. Malformed messages (bad frame
 * count, undecodable or oversize envelope) return -2 with a message; the socket stays
 * usable. */
int sy_ctrl_recv(void *sock, int router, sy_ctrl_msg *out, int flags);
void sy_ctrl_msg_free(sy_ctrl_msg *m);

/* Sets the socket options every switchyard socket gets: LINGER 0 and, for ROUTERs,
 * ROUTER_MANDATORY and ROUTER_HANDOVER. */
void sy_sock_defaults(void *sock, int router);

#endif
