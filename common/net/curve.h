/* curve.h: ZeroMQ CURVE security for every switchyard socket.
 *
 * Keys: a key pair is two Z85 strings of 40 characters. On disk it is the usual ZeroMQ
 * certificate format (as CZMQ's zcert writes it): NAME.key holds the public key,
 * NAME.secret both keys and is mode 0600 (a secret file that group or others can read
 * is refused, as ssh does).
 *
 * Authentication: one ZAP handler per ZeroMQ context (inproc://zeromq.zap.01, in its own
 * thread) answers for every CURVE server socket of the context. Each socket names a ZAP
 * domain ("control", "status", "data"); a domain has a set of allowed client keys, from
 * an allow-list path (a directory of *.key files or one file of keys, re-read when an
 * unknown key knocks, at most once a second) or set by the program (the data domain:
 * the mesh members of the current epoch). A domain may hold a request from an unknown
 * key for a while before refusing it (hold_ms), so a peer that connects a moment before
 * this process learns the new member list is not turned away. The authenticated key
 * reaches the program as the User-Id property of every message (sy_msg_key). */
#ifndef SY_CURVE_H
#define SY_CURVE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define SY_KEY_LEN 40 /* Z85 characters of a CURVE key */

typedef struct {
    char pub[SY_KEY_LEN + 1];
    char sec[SY_KEY_LEN + 1]; /* "" when only the public key is known */
} sy_cert;

/* 0 when this libzmq supports CURVE; -1 with a message naming the fix otherwise. */
int sy_curve_check(void);

/* 1 when s is 40 Z85 characters that decode to a 32-byte key. */
int sy_key_valid(const char *s);

/* A fresh key pair. */
int sy_cert_new(sy_cert *c);
/* Writes base.key (0644) and base.secret (0600), each to a temporary name, fsynced and
 * renamed. Refuses to overwrite an existing file. */
int sy_cert_save(const sy_cert *c, const char *base);
/* Reads a certificate file: public-key (and secret-key when want_secret; the file must
 * then not be readable by group or others). A file holding a bare 40-character key is
 * read as a public key. */
int sy_cert_load(const char *path, sy_cert *c, int want_secret);
/* Reads a public key: a certificate file, or the 40 characters themselves. */
int sy_pubkey_load(const char *path_or_key, char out[SY_KEY_LEN + 1]);

/* Socket roles. Call before bind/connect. */
int sy_curve_server(void *sock, const sy_cert *own, const char *zap_domain);
int sy_curve_client(void *sock, const sy_cert *own, const char *server_pub);

/* The authenticated CURVE key of the peer that sent msg ("" over an insecure socket). */
const char *sy_msg_key(zmq_msg_t *msg);

typedef struct sy_zap sy_zap;

/* Binds the handler in zctx and starts its thread. NULL on failure. */
sy_zap *sy_zap_new(void *zctx);
/* The ZAP domain of local (ipc://) listeners in a private directory (sy_peer_bind_local):
 * the handler admits NULL handshakes there, and only there. */
#define SY_ZAP_LOCAL "local"
void sy_zap_destroy(sy_zap **z);
/* The keys a domain accepts, from a directory of *.key certificates or a file of keys
 * (certificates or one 40-character key per line); re-read on an unknown key. Fails when
 * the path holds no valid key. */
int sy_zap_allow_path(sy_zap *z, const char *domain, const char *path);
/* Replaces a domain's keys (n keys of SY_KEY_LEN + 1 bytes). */
int sy_zap_set_keys(sy_zap *z, const char *domain, const char (*keys)[SY_KEY_LEN + 1], int n);
/* Accept any CURVE client (the connection is still encrypted). */
int sy_zap_allow_any(sy_zap *z, const char *domain);
/* Hold a request from an unknown key up to ms before refusing it. */
int sy_zap_set_hold(sy_zap *z, const char *domain, int ms);
/* Handshakes accepted and refused in a domain since the start. */
void sy_zap_counts(sy_zap *z, const char *domain, uint64_t *accepted, uint64_t *refused);

/* ---------------------------------------------------------------- process options
 * The flags every daemon and client shares:
 *   --keys DIR          the layout of `switchyard keygen --cluster DIR`
 *   --cert FILE         this process's own certificate (.secret)
 *   --allow PATH        coordinator: worker keys allowed (default DIR/workers)
 *   --status-allow PATH coordinator: status client keys allowed (default DIR/clients)
 *   --status-open       coordinator: status socket without CURVE (read-only anyway)
 *   --coordinator-key K worker / status client: the coordinator's public key (file or Z85)
 *   --insecure          no CURVE anywhere (debugging on a trusted network; says so loudly) */
typedef struct {
    int insecure, status_open;
    const char *keys_dir, *cert, *allow, *status_allow, *server_key;
} sy_sec_opts;

/* 1 when argv[*i] is one of the flags above (its value consumed: *i advances). */
int sy_sec_arg(sy_sec_opts *o, int argc, char **argv, int *i);
/* Help text for the flags (one block). */
const char *sy_sec_usage(void);
/* Sets up this process's identity towards the coordinator: its certificate (--cert, or
 * default_cert under --keys DIR) and the coordinator's key (--coordinator-key, or
 * DIR/coordinator.key). With --insecure, prints the warning and sets nothing. */
int sy_sec_client_init(const sy_sec_opts *o, const char *default_cert, const char *who);
/* The coordinator's own certificate (--cert, or DIR/coordinator.secret). */
int sy_sec_server_cert(const sy_sec_opts *o, sy_cert *out);
/* 1 when this process speaks CURVE (after sy_sec_client_init). */
int sy_sec_on(void);
const sy_cert *sy_sec_cert(void);
/* Makes sock a CURVE client of the coordinator (no-op when insecure). */
int sy_sec_coordinator_client(void *sock);
/* The coordinator's security: its certificate and a ZAP handler allowing the worker keys
 * (domain "control") and, unless --status-open, the status client keys ("status"). */
sy_zap *sy_sec_coordinator_start(void *zctx, const sy_sec_opts *o);
/* Watches sock's handshakes (a PAIR socket to poll; close it with zmq_close). */
void *sy_curve_monitor_new(void *zctx, void *sock, const char *name);
/* 1 with a reason naming peer when a handshake failed since the last call: libzmq does
 * not retry a refused CURVE handshake, so the caller should say so and stop. */
int sy_curve_monitor_failed(void *mon, const char *peer, char *why, size_t n);
/* The loud line --insecure prints. */
void sy_sec_warn_insecure(const char *who);

#endif
