#define _GNU_SOURCE /* pthread_setname_np */
#include "curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sanitize.h"

int sy_curve_check(void) {
    if (zmq_has("curve"))
        return 0;
    int a, b, c;
    zmq_version(&a, &b, &c);
    sy_seterr("this libzmq (%d.%d.%d) was built without CURVE security (zmq_has(\"curve\") is false): install "
              "Debian's libzmq5, which has it, or run with --insecure on a network you trust",
              a, b, c);
    return -1;
}

int sy_key_valid(const char *s) {
    if (!s || strlen(s) != SY_KEY_LEN)
        return 0;
    uint8_t raw[32];
    return zmq_z85_decode(raw, s) != NULL;
}

int sy_cert_new(sy_cert *c) {
    if (sy_curve_check())
        return -1;
    memset(c, 0, sizeof *c);
    if (zmq_curve_keypair(c->pub, c->sec)) {
        sy_seterr("cannot make a CURVE key pair: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const char *text, mode_t mode) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp) {
        sy_seterr("%s: path too long", path);
        return -1;
    }
    if (!access(path, F_OK)) {
        sy_seterr("%s: already exists (not overwritten)", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) {
        sy_seterr("%s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    int ok = fchmod(fd, mode) == 0 && write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path)) {
        sy_seterr("%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int sy_cert_save(const sy_cert *c, const char *base) {
    char path[4096], text[1024], when[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    snprintf(path, sizeof path, "%s.key", base);
    snprintf(text, sizeof text,
             "#   ****  Generated on %s by switchyard keygen  ****\n"
             "#   ZeroMQ CURVE Public Certificate\n"
             "#   Exchange securely, or use a secure mechanism to verify the contents\n"
             "#   of this file after exchange. Store public certificates in your home\n"
             "#   directory, in the .curve subdirectory.\n\n"
             "metadata\ncurve\n    public-key = \"%s\"\n",
             when, c->pub);
    if (write_file(path, text, 0644))
        return -1;
    snprintf(path, sizeof path, "%s.secret", base);
    snprintf(text, sizeof text,
             "#   ****  Generated on %s by switchyard keygen  ****\n"
             "#   ZeroMQ CURVE **Secret** Certificate\n"
             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
             "metadata\ncurve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
             when, c->pub, c->sec);
    return write_file(path, text, 0600);
}

/* value of `name = "..."` on a line, or NULL */
static int cert_field(const char *line, const char *name, char out[SY_KEY_LEN + 1]) {
    const char *p = strstr(line, name);
    if (!p)
        return 0;
    p += strlen(name);
    while (*p == ' ' || *p == '\t' || *p == '=')
        p++;
    if (*p != '"')
        return 0;
    p++;
    const char *q = strchr(p, '"');
    if (!q || q - p != SY_KEY_LEN)
        return -1;
    memcpy(out, p, SY_KEY_LEN);
    out[SY_KEY_LEN] = 0;
    return sy_key_valid(out) ? 1 : -1;
}

/* Reads up to 64 KiB of a file into a NUL-terminated buffer (caller frees). */
static char *slurp(const char *path, struct stat *st) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sy_seterr("%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), st)) {
        fclose(f);
        sy_seterr("%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap, f) : 0;
    int big = buf && n == cap && fgetc(f) != EOF;
    fclose(f);
    if (!buf || big) {
        free(buf);
        sy_seterr("%s: %s", path, buf ? "larger than 64 KiB: not a key file" : "out of memory");
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

int sy_cert_load(const char *path, sy_cert *c, int want_secret) {
    memset(c, 0, sizeof *c);
    struct stat st;
    char *text = slurp(path, &st);
    if (!text)
        return -1;
    int rc = -1, have_pub = 0, have_sec = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int r = cert_field(line, "secret-key", c->sec);
        if (r < 0) {
            sy_seterr("%s: secret-key is not a 40-character Z85 key", path);
            goto out;
        }
        if (r > 0) {
            have_sec = 1;
            continue;
        }
        r = cert_field(line, "public-key", c->pub);
        if (r < 0) {
            sy_seterr("%s: public-key is not a 40-character Z85 key", path);
            goto out;
        }
        if (r > 0) {
            have_pub = 1;
            continue;
        }
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, " \t\r");
        if (!have_pub && n == SY_KEY_LEN && s[0] != '#') {
            memcpy(c->pub, s, SY_KEY_LEN);
            c->pub[SY_KEY_LEN] = 0;
            have_pub = sy_key_valid(c->pub);
        }
    }
    if (!have_pub) {
        sy_seterr("%s: no public-key (not a ZeroMQ certificate; make one with `switchyard keygen`)", path);
        goto out;
    }
    if (want_secret) {
        if (!have_sec) {
            sy_seterr("%s: no secret-key (this is a public certificate; give the .secret file)", path);
            goto out;
        }
        if (st.st_mode & 077) {
            sy_seterr("%s: a secret key readable by group or others (mode %03o) is refused: chmod 600 %s", path,
                      (unsigned)(st.st_mode & 0777), path);
            goto out;
        }
        /* the public key must be the secret key's */
        char derived[SY_KEY_LEN + 1];
        if (zmq_curve_public(derived, c->sec) || strcmp(derived, c->pub)) {
            sy_seterr("%s: public-key does not belong to secret-key", path);
            goto out;
        }
    } else {
        c->sec[0] = 0;
    }
    rc = 0;
out:
    free(text);
    if (rc)
        memset(c, 0, sizeof *c);
    return rc;
}

int sy_pubkey_load(const char *path_or_key, char out[SY_KEY_LEN + 1]) {
    if (sy_key_valid(path_or_key) && access(path_or_key, F_OK)) {
        memcpy(out, path_or_key, SY_KEY_LEN + 1);
        return 0;
    }
    sy_cert c;
    if (sy_cert_load(path_or_key, &c, 0))
        return -1;
    memcpy(out, c.pub, SY_KEY_LEN + 1);
    return 0;
}

int sy_curve_server(void *sock, const sy_cert *own, const char *zap_domain) {
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, own->sec, SY_KEY_LEN) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, zap_domain, strlen(zap_domain))) {
        sy_seterr("CURVE server socket: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int sy_curve_client(void *sock, const sy_cert *own, const char *server_pub) {
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pub, SY_KEY_LEN) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, own->pub, SY_KEY_LEN) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, own->sec, SY_KEY_LEN)) {
        sy_seterr("CURVE client socket: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

const char *sy_msg_key(zmq_msg_t *msg) {
    const char *k = zmq_msg_gets(msg, "User-Id");
    return k ? k : "";
}

/* ---------------------------------------------------------------- ZAP handler */

#define ZAP_DOMAINS 4
#define ZAP_HELD 64

typedef struct {
    char name[32];
    char (*keys)[SY_KEY_LEN + 1];
    int n_keys;
    int any;
    char path[4096];
    double last_scan;
    int hold_ms;
    uint64_t accepted, refused;
    sy_ratelog log;
} zap_domain;

typedef struct {
    zmq_msg_t rid, reqid;
    int dom;
    char key[SY_KEY_LEN + 1];
    char addr[64];
    double deadline;
} zap_held;

struct sy_zap {
    void *sock;
    pthread_t th;
    int started;
    volatile int stop;
    pthread_mutex_t lock;
    zap_domain d[ZAP_DOMAINS];
    int n;
    zap_held held[ZAP_HELD];
    int n_held;
};

static zap_domain *domain_get(sy_zap *z, const char *name, int create) {
    for (int i = 0; i < z->n; i++)
        if (!strcmp(z->d[i].name, name))
            return &z->d[i];
    if (!create || z->n == ZAP_DOMAINS || strlen(name) >= sizeof z->d[0].name)
        return NULL;
    zap_domain *d = &z->d[z->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->log = (sy_ratelog)SY_RATELOG_INIT(10.0, 5);
    return d;
}

static int add_key(char (**keys)[SY_KEY_LEN + 1], int *n, int *cap, const char *k) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*keys)[i], k))
            return 0;
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        char(*nk)[SY_KEY_LEN + 1] = realloc(*keys, (size_t)nc * sizeof *nk);
        if (!nk)
            return -1;
        *keys = nk;
        *cap = nc;
    }
    memcpy((*keys)[(*n)++], k, SY_KEY_LEN + 1);
    return 0;
}

/* Reads the keys under path: 0 with the keys and their count, or -1 with a message. */
static int read_allow(const char *path, char (**out)[SY_KEY_LEN + 1], int *n) {
    char(*keys)[SY_KEY_LEN + 1] = NULL;
    int cnt = 0, cap = 0;
    struct stat st;
    if (stat(path, &st)) {
        sy_seterr("allow-list %s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (!dir) {
            sy_seterr("allow-list %s: %s", path, strerror(errno));
            return -1;
        }
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".key"))
                continue;
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            sy_cert c;
            if (sy_cert_load(p, &c, 0)) {
                sy_warn("allow-list: skipping %s", sy_lasterr());
                continue;
            }
            add_key(&keys, &cnt, &cap, c.pub);
        }
        closedir(dir);
    } else {
        char *text = slurp(path, &st);
        if (!text)
            return -1;
        char *save = NULL;
        int lineno = 0;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            lineno++;
            char k[SY_KEY_LEN + 1];
            int r = cert_field(line, "public-key", k);
            char *s = line;
            while (*s == ' ' || *s == '\t')
                s++;
            if (r == 0 && *s && *s != '#' && strncmp(s, "metadata", 8) && strncmp(s, "curve", 5) &&
                !strstr(s, "secret-key")) {
                size_t l = strcspn(s, " \t\r");
                if (l == SY_KEY_LEN) {
                    memcpy(k, s, SY_KEY_LEN);
                    k[SY_KEY_LEN] = 0;
                    r = sy_key_valid(k) ? 1 : -1;
                } else {
                    r = -1;
                }
            }
            if (r < 0) {
                sy_seterr("allow-list %s:%d: not a 40-character Z85 public key", path, lineno);
                free(text);
                free(keys);
                return -1;
            }
            if (r > 0)
                add_key(&keys, &cnt, &cap, k);
        }
        free(text);
    }
    if (!cnt) {
        free(keys);
        sy_seterr("allow-list %s: no public key in it", path);
        return -1;
    }
    *out = keys;
    *n = cnt;
    return 0;
}

static int domain_allows(zap_domain *d, const char *key) {
    if (d->any)
        return 1;
    for (int i = 0; i < d->n_keys; i++)
        if (!strcmp(d->keys[i], key))
            return 1;
    return 0;
}

/* under the lock: re-reads a domain's allow-list at most once a second */
static void domain_rescan(zap_domain *d) {
    if (!d->path[0] || sy_now() - d->last_scan < 1.0)
        return;
    d->last_scan = sy_now();
    char(*keys)[SY_KEY_LEN + 1];
    int n;
    if (read_allow(d->path, &keys, &n))
        return;
    free(d->keys);
    d->keys = keys;
    d->n_keys = n;
}

static void zap_reply(sy_zap *z, zmq_msg_t *rid, zmq_msg_t *reqid, int ok, const char *key) {
    zmq_msg_send(rid, z->sock, ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_msg_send(reqid, z->sock, ZMQ_SNDMORE);
    zmq_send(z->sock, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    const char *text = ok ? "OK" : "key not allowed";
    zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->sock, ok ? key : "", ok ? strlen(key) : 0, ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, 0);
}

static void refuse_log(zap_domain *d, const char *key, const char *addr, const char *why) {
    d->refused++;
    sy_ratelog_warn(&d->log, "%s socket: refused a connection from %s (key %s): %s", d->name, sy_esc_str(0, addr),
                    sy_esc_str(1, key), why);
}

/* one request: frames rid, "", "1.0", request id, domain, address, identity, mechanism, credentials */
static void zap_handle(sy_zap *z) {
    zmq_msg_t f[9];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t x;
        zmq_msg_init(&x);
        if (zmq_msg_recv(&x, z->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&x);
            break;
        }
        more = zmq_msg_more(&x);
        if (n < 9)
            f[n++] = x;
        else
            zmq_msg_close(&x);
    }
    if (n < 8) { /* not a ZAP request: nothing to answer */
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        return;
    }
    char domain[64] = "", mech[16] = "", addr[64] = "", key[SY_KEY_LEN + 1] = "";
    size_t l = zmq_msg_size(&f[4]) < sizeof domain - 1 ? zmq_msg_size(&f[4]) : sizeof domain - 1;
    memcpy(domain, zmq_msg_data(&f[4]), l);
    l = zmq_msg_size(&f[5]) < sizeof addr - 1 ? zmq_msg_size(&f[5]) : sizeof addr - 1;
    memcpy(addr, zmq_msg_data(&f[5]), l);
    l = zmq_msg_size(&f[7]) < sizeof mech - 1 ? zmq_msg_size(&f[7]) : sizeof mech - 1;
    memcpy(mech, zmq_msg_data(&f[7]), l);
    int curve = !strcmp(mech, "CURVE") && n == 9 && zmq_msg_size(&f[8]) == 32;
    if (curve)
        zmq_z85_encode(key, zmq_msg_data(&f[8]), 32);
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 0);
    int ok = 0, hold = 0;
    if (!strcmp(domain, SY_ZAP_LOCAL)) {
        /* a NULL handshake on a local (ipc) listener, in its private directory */
        ok = !strcmp(mech, "NULL");
        if (!ok)
            sy_warn("ZAP: a %s handshake in domain '%s' refused", sy_esc_str(0, mech), SY_ZAP_LOCAL);
    } else if (!d) {
        sy_warn("ZAP: request for unknown domain '%s' refused", sy_esc_str(0, domain));
    } else if (!curve) {
        refuse_log(d, "none", addr, "not a CURVE handshake");
    } else {
        ok = domain_allows(d, key);
        if (!ok && d->path[0]) {
            domain_rescan(d);
            ok = domain_allows(d, key);
        }
        if (ok)
            d->accepted++;
        else if (d->hold_ms > 0) {
            hold = 1;
            if (z->n_held == ZAP_HELD) { /* full: the oldest held request is refused to make room */
                int o = 0;
                for (int i = 1; i < z->n_held; i++)
                    if (z->held[i].deadline < z->held[o].deadline)
                        o = i;
                zap_held *h = &z->held[o];
                refuse_log(&z->d[h->dom], h->key, h->addr, "held too long among too many");
                zap_reply(z, &h->rid, &h->reqid, 0, h->key);
                zmq_msg_close(&h->rid);
                zmq_msg_close(&h->reqid);
                z->held[o] = z->held[--z->n_held];
            }
            sy_ratelog_warn(&d->log, "%s socket: holding a connection from %s (key %s) up to %d s: not a member (yet)",
                            d->name, sy_esc_str(0, addr), sy_esc_str(1, key), d->hold_ms / 1000);
        } else
            refuse_log(d, key, addr, "key not in the allow-list");
    }
    if (hold) {
        zap_held *h = &z->held[z->n_held++];
        h->rid = f[0];
        h->reqid = f[3];
        h->dom = (int)(d - z->d);
        memcpy(h->key, key, sizeof key);
        snprintf(h->addr, sizeof h->addr, "%s", addr);
        h->deadline = sy_now() + d->hold_ms / 1000.0;
        for (int i = 0; i < n; i++)
            if (i != 0 && i != 3)
                zmq_msg_close(&f[i]);
        pthread_mutex_unlock(&z->lock);
        return;
    }
    pthread_mutex_unlock(&z->lock);
    zap_reply(z, &f[0], &f[3], ok, key);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static void zap_check_held(sy_zap *z) {
    pthread_mutex_lock(&z->lock);
    double now = sy_now();
    for (int i = z->n_held - 1; i >= 0; i--) {
        zap_held *h = &z->held[i];
        zap_domain *d = &z->d[h->dom];
        int ok = domain_allows(d, h->key);
        if (!ok && now < h->deadline)
            continue;
        if (ok)
            d->accepted++;
        else
            refuse_log(d, h->key, h->addr, "key not among this epoch's members");
        zap_reply(z, &h->rid, &h->reqid, ok, h->key);
        zmq_msg_close(&h->rid);
        zmq_msg_close(&h->reqid);
        z->held[i] = z->held[--z->n_held];
    }
    pthread_mutex_unlock(&z->lock);
}

static void *zap_main(void *arg) {
    sy_zap *z = arg;
    while (!__atomic_load_n(&z->stop, __ATOMIC_ACQUIRE)) {
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, z->n_held ? 10 : 50);
        if (rc > 0)
            zap_handle(z);
        if (z->n_held)
            zap_check_held(z);
    }
    return NULL;
}

sy_zap *sy_zap_new(void *zctx) {
    if (sy_curve_check())
        return NULL;
    sy_zap *z = calloc(1, sizeof *z);
    if (!z) {
        sy_seterr("ZAP: out of memory");
        return NULL;
    }
    pthread_mutex_init(&z->lock, NULL);
    z->sock = zmq_socket(zctx, ZMQ_ROUTER);
    int zero = 0;
    if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(z->sock, "inproc://zeromq.zap.01")) {
        sy_seterr("ZAP: cannot bind inproc://zeromq.zap.01: %s", zmq_strerror(errno));
        sy_zap_destroy(&z);
        return NULL;
    }
    if (pthread_create(&z->th, NULL, zap_main, z)) {
        sy_seterr("ZAP: cannot start its thread");
        sy_zap_destroy(&z);
        return NULL;
    }
    pthread_setname_np(z->th, "sy-zap");
    z->started = 1;
    return z;
}

void sy_zap_destroy(sy_zap **pz) {
    sy_zap *z = pz ? *pz : NULL;
    if (!z)
        return;
    __atomic_store_n(&z->stop, 1, __ATOMIC_RELEASE);
    if (z->started)
        pthread_join(z->th, NULL);
    for (int i = 0; i < z->n_held; i++) {
        zmq_msg_close(&z->held[i].rid);
        zmq_msg_close(&z->held[i].reqid);
    }
    if (z->sock)
        zmq_close(z->sock);
    for (int i = 0; i < z->n; i++)
        free(z->d[i].keys);
    pthread_mutex_destroy(&z->lock);
    free(z);
    *pz = NULL;
}

int sy_zap_allow_path(sy_zap *z, const char *domain, const char *path) {
    char(*keys)[SY_KEY_LEN + 1];
    int n;
    if (read_allow(path, &keys, &n))
        return -1;
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 1);
    if (d) {
        free(d->keys);
        d->keys = keys;
        d->n_keys = n;
        snprintf(d->path, sizeof d->path, "%s", path);
        d->last_scan = sy_now();
    }
    pthread_mutex_unlock(&z->lock);
    if (!d) {
        free(keys);
        sy_seterr("ZAP: too many domains");
        return -1;
    }
    return 0;
}

int sy_zap_set_keys(sy_zap *z, const char *domain, const char (*keys)[SY_KEY_LEN + 1], int n) {
    char(*copy)[SY_KEY_LEN + 1] = n > 0 ? malloc((size_t)n * sizeof *copy) : NULL;
    if (n > 0 && !copy) {
        sy_seterr("ZAP: out of memory");
        return -1;
    }
    if (n > 0)
        memcpy(copy, keys, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 1);
    if (d) {
        free(d->keys);
        d->keys = copy;
        d->n_keys = n;
    }
    pthread_mutex_unlock(&z->lock);
    if (!d) {
        free(copy);
        sy_seterr("ZAP: too many domains");
        return -1;
    }
    return 0;
}

int sy_zap_allow_any(sy_zap *z, const char *domain) {
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 1);
    if (d)
        d->any = 1;
    pthread_mutex_unlock(&z->lock);
    return d ? 0 : -1;
}

int sy_zap_set_hold(sy_zap *z, const char *domain, int ms) {
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 1);
    if (d)
        d->hold_ms = ms;
    pthread_mutex_unlock(&z->lock);
    return d ? 0 : -1;
}

void sy_zap_counts(sy_zap *z, const char *domain, uint64_t *accepted, uint64_t *refused) {
    pthread_mutex_lock(&z->lock);
    zap_domain *d = domain_get(z, domain, 0);
    if (accepted)
        *accepted = d ? d->accepted : 0;
    if (refused)
        *refused = d ? d->refused : 0;
    pthread_mutex_unlock(&z->lock);
}

/* ---------------------------------------------------------------- process options */

static sy_cert g_own;
static char g_server_pub[SY_KEY_LEN + 1];
static int g_on;

int sy_sec_arg(sy_sec_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char **val = NULL;
    if (!strcmp(a, "--insecure")) {
        o->insecure = 1;
        return 1;
    }
    if (!strcmp(a, "--status-open")) {
        o->status_open = 1;
        return 1;
    }
    if (!strcmp(a, "--keys"))
        val = &o->keys_dir;
    else if (!strcmp(a, "--cert"))
        val = &o->cert;
    else if (!strcmp(a, "--allow"))
        val = &o->allow;
    else if (!strcmp(a, "--status-allow"))
        val = &o->status_allow;
    else if (!strcmp(a, "--coordinator-key") || !strcmp(a, "--server-key"))
        val = &o->server_key;
    if (!val || *i + 1 >= argc)
        return 0;
    *val = argv[++*i];
    return 1;
}

const char *sy_sec_usage(void) {
    return "  security (CURVE on every socket; default on):\n"
           "    --keys DIR            keys made by `switchyard keygen --cluster DIR`\n"
           "    --cert FILE           this process's certificate (NAME.secret)\n"
           "    --coordinator-key K   the coordinator's public key (NAME.key or the 40 Z85 characters)\n"
           "    --allow PATH          coordinator: allowed worker keys (directory of *.key, or a file)\n"
           "    --status-allow PATH   coordinator: allowed status client keys\n"
           "    --status-open         coordinator: status readable by anyone (no CURVE on that socket)\n"
           "    --insecure            no authentication or encryption at all (debugging only)\n";
}

void sy_sec_warn_insecure(const char *who) {
    sy_warn("**************************************************************************");
    sy_warn("** %s: --insecure: NO CURVE. Anyone who can reach these ports can join, **", who);
    sy_warn("** send gradients, read the run and stop it. Debugging on a trusted host only. **");
    sy_warn("**************************************************************************");
}

int sy_sec_client_init(const sy_sec_opts *o, const char *default_cert, const char *who) {
    g_on = 0;
    if (o->insecure) {
        sy_sec_warn_insecure(who);
        return 0;
    }
    if (sy_curve_check())
        return -1;
    char p[4200];
    const char *cert = o->cert;
    if (!cert && o->keys_dir && default_cert) {
        snprintf(p, sizeof p, "%s/%s", o->keys_dir, default_cert);
        cert = p;
    }
    if (!cert) {
        sy_seterr("no CURVE certificate: give --cert NAME.secret (make one with `switchyard keygen NAME`) and "
                  "--coordinator-key, --keys DIR, or --insecure");
        return -1;
    }
    if (sy_cert_load(cert, &g_own, 1))
        return -1;
    const char *sk = o->server_key;
    char q[4200];
    if (!sk && o->keys_dir) {
        snprintf(q, sizeof q, "%s/coordinator.key", o->keys_dir);
        sk = q;
    }
    if (!sk) {
        sy_seterr("no coordinator key: give --coordinator-key FILE (the coordinator's .key) or --keys DIR");
        return -1;
    }
    if (sy_pubkey_load(sk, g_server_pub))
        return -1;
    g_on = 1;
    return 0;
}

int sy_sec_server_cert(const sy_sec_opts *o, sy_cert *out) {
    if (sy_curve_check())
        return -1;
    char p[4200];
    const char *cert = o->cert;
    if (!cert && o->keys_dir) {
        snprintf(p, sizeof p, "%s/coordinator.secret", o->keys_dir);
        cert = p;
    }
    if (!cert) {
        sy_seterr("no CURVE keys: give --keys DIR (`switchyard keygen --cluster DIR`), --cert and --allow, or "
                  "--insecure");
        return -1;
    }
    if (sy_cert_load(cert, out, 1))
        return -1;
    g_own = *out;
    g_on = 1;
    return 0;
}

int sy_sec_on(void) { return g_on; }
const sy_cert *sy_sec_cert(void) { return g_on ? &g_own : NULL; }

int sy_sec_coordinator_client(void *sock) { return g_on ? sy_curve_client(sock, &g_own, g_server_pub) : 0; }

sy_zap *sy_sec_coordinator_start(void *zctx, const sy_sec_opts *o) {
    sy_cert own;
    if (sy_sec_server_cert(o, &own))
        return NULL;
    char p[4200];
    const char *allow = o->allow, *sallow = o->status_allow;
    if (!allow && o->keys_dir) {
        snprintf(p, sizeof p, "%s/workers", o->keys_dir);
        allow = p;
    }
    if (!allow) {
        sy_seterr("no allow-list of worker keys: give --allow PATH or --keys DIR");
        return NULL;
    }
    sy_zap *z = sy_zap_new(zctx);
    if (!z)
        return NULL;
    if (sy_zap_allow_path(z, "control", allow))
        goto fail;
    if (!o->status_open) {
        char q[4200];
        if (!sallow && o->keys_dir) {
            snprintf(q, sizeof q, "%s/clients", o->keys_dir);
            sallow = q;
        }
        if (!sallow) {
            sy_seterr("status clients need keys: give --status-allow PATH (their .key files), or --status-open "
                      "for a status anyone may read");
            goto fail;
        }
        if (sy_zap_allow_path(z, "status", sallow))
            goto fail;
    }
    return z;
fail:
    sy_zap_destroy(&z);
    return NULL;
}

/* ---------------------------------------------------------------- handshake monitor */

void *sy_curve_monitor_new(void *zctx, void *sock, const char *name) {
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://sy-monitor-%s-%p", name, sock);
    if (zmq_socket_monitor(sock, ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED))
        return NULL;
    void *m = zmq_socket(zctx, ZMQ_PAIR);
    int zero = 0;
    if (m)
        zmq_setsockopt(m, ZMQ_LINGER, &zero, sizeof zero);
    if (m && zmq_connect(m, ep)) {
        zmq_close(m);
        return NULL;
    }
    return m;
}

int sy_curve_monitor_failed(void *mon, const char *peer, char *why, size_t n) {
    int failed = 0;
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            break;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        zmq_msg_close(&ev);
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, mon, 0); /* the endpoint frame */
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            snprintf(why, n, "%s refused this process's CURVE key (status %u): is its public key in the allow-list?",
                     peer, (unsigned)value);
            failed = 1;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            snprintf(why, n,
                     "the CURVE handshake with %s failed: a wrong --coordinator-key, or only one side runs "
                     "--insecure",
                     peer);
            failed = 1;
        }
    }
    return failed;
}
