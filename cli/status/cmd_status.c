/* cmd_status.c: `switchyard status ENDPOINT`: asks a coordinator's read-only status
 * socket what the run is doing and prints it as a table, JSON or Prometheus text, once
 * or every few seconds. One StatusRequest frame out, one StatusReply frame back, on a
 * fresh REQ socket per request so a lost reply can never wedge the next one. */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "commands.h"
#include "curve.h"
#include "log.h"
#include "status_format.h"
#include "switchyard.pb-c.h"

#define MAX_REPLY_BYTES (64 << 20)

enum { FMT_TABLE, FMT_JSON, FMT_PROM };

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: switchyard status ENDPOINT [--json | --prom] [--watch [SECONDS]] [--count N] [--timeout MS]\n"
            "       switchyard status ENDPOINT --prom --listen [HOST]:PORT\n"
            "       (either form: [--keys DIR | --cert FILE --coordinator-key KEY] when status needs a key)\n"
            "  ENDPOINT      the coordinator's status socket: tcp://HOST:PORT, HOST:PORT or ipc://PATH\n"
            "                (the coordinator's --status, cluster.status in the config)\n"
            "  --json        every field as one JSON object\n"
            "  --prom        Prometheus text exposition format (0.0.4)\n"
            "  --watch [S]   refresh every S seconds (default 2) until Ctrl-C\n"
            "  --count N     with --watch: stop after N refreshes\n"
            "  --timeout MS  wait this long for each reply (default 2000)\n"
            "  --keys DIR    CURVE: DIR/clients/operator.secret and DIR/coordinator.key (what `up` prints)\n"
            "  --cert FILE --coordinator-key KEY   CURVE with another client certificate\n"
            "                (without these, only a coordinator started with --status-open answers)\n"
            "  --listen [HOST]:PORT  serve the Prometheus text over HTTP (GET /metrics) until Ctrl-C or\n"
            "                SIGTERM: one fresh status query per scrape, 503 with the reason when the\n"
            "                coordinator does not answer (each query with the key given, as above)\n"
            "Exit status: 0 ok, 1 no or bad reply, 2 bad usage or endpoint.\n");
}

/* Host part syntax: a DNS name or IPv4 literal, or an IPv6 literal in brackets. */
static int host_ok(const char *h, size_t n) {
    if (n == 0)
        return 0;
    if (h[0] == '[') {
        if (n < 3 || h[n - 1] != ']')
            return 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (!strchr("0123456789abcdefABCDEF:.%", h[i]))
                return 0;
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= '0' && h[i] <= '9') ||
              h[i] == '.' || h[i] == '-' || h[i] == '_'))
            return 0;
    return 1;
}

/* ENDPOINT as a ZeroMQ address: tcp://HOST:PORT (HOST:PORT gets tcp:// added) or
 * ipc://PATH. Returns 0, or -1 with the reason in err. */
static int parse_endpoint(const char *in, char *out, size_t n, char *host, size_t hn, char *err, size_t en) {
    host[0] = 0;
    if (!strncmp(in, "ipc://", 6)) {
        if (!in[6] || strlen(in) >= n) {
            snprintf(err, en, "ipc:// needs a path");
            return -1;
        }
        snprintf(out, n, "%s", in);
        return 0;
    }
    const char *hp = in;
    if (strstr(in, "://")) {
        if (strncmp(in, "tcp://", 6)) {
            snprintf(err, en, "only tcp:// and ipc:// endpoints can be reached");
            return -1;
        }
        hp = in + 6;
    }
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp) {
        snprintf(err, en, "expected tcp://HOST:PORT or HOST:PORT");
        return -1;
    }
    size_t hlen = (size_t)(colon - hp);
    if (!host_ok(hp, hlen) || hlen >= hn) {
        snprintf(err, en, "'%.*s' is not a host name or address", (int)(hlen > 200 ? 200 : hlen), hp);
        return -1;
    }
    const char *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || port[0] == '-' || port[0] == '+' || errno || p < 1 || p > 65535) {
        snprintf(err, en, "port '%.20s' is not a number in 1..65535", port);
        return -1;
    }
    if ((size_t)snprintf(out, n, "tcp://%s", hp) >= n) {
        snprintf(err, en, "endpoint too long");
        return -1;
    }
    /* brackets are ZeroMQ syntax, not part of the address getaddrinfo wants */
    if (hp[0] == '[')
        snprintf(host, hn, "%.*s", (int)(hlen - 2), hp + 1);
    else
        snprintf(host, hn, "%.*s", (int)hlen, hp);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One request/reply. Returns 0 with *out (free with switchyard__status_reply__free_unpacked),
 * or 1 with a one-line reason in err; -1 when interrupted by a signal. */
static int ask(void *ctx, const char *ep, int timeout_ms, Switchyard__StatusReply **out, char *err, size_t en) {
    *out = NULL;
    int rc = 1;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    void *s = zmq_socket(ctx, ZMQ_REQ);
    if (!s) {
        snprintf(err, en, "cannot create a socket: %s", zmq_strerror(errno));
        goto done;
    }
    int zero = 0;
    int64_t maxsize = MAX_REPLY_BYTES;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    if (sy_sec_coordinator_client(s)) {
        snprintf(err, en, "%s", sy_lasterr());
        goto done;
    }
    if (zmq_connect(s, ep)) {
        snprintf(err, en, "cannot connect to %s: %s", ep, zmq_strerror(errno));
        goto done;
    }
    Switchyard__StatusRequest q = SWITCHYARD__STATUS_REQUEST__INIT;
    q.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    uint8_t qb[64];
    size_t qn = switchyard__status_request__pack(&q, qb);
    double deadline = now_s() + timeout_ms / 1e3;
    while (zmq_send(s, qb, qn, 0) < 0) {
        if (errno == EINTR && !g_stop)
            continue;
        if (errno == EINTR) {
            rc = -1;
            goto done;
        }
        snprintf(err, en, "no reply from %s within %d ms: is the coordinator running with --status %s%s?", ep,
                 timeout_ms, ep, sy_sec_on() ? ", and is this client's key allowed" : " (and --status-open, or give --keys)");
        goto done;
    }
    for (;;) {
        int left = (int)ceil((deadline - now_s()) * 1e3);
        if (left <= 0) {
            snprintf(err, en, "no reply from %s within %d ms: is the coordinator running with --status %s%s?", ep,
                     timeout_ms, ep, sy_sec_on() ? ", and is this client's key allowed" : " (and --status-open, or give --keys)");
            goto done;
        }
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, left);
        if (n < 0 && errno == EINTR) {
            if (g_stop) {
                rc = -1;
                goto done;
            }
            continue;
        }
        if (n < 0) {
            snprintf(err, en, "waiting for %s: %s", ep, zmq_strerror(errno));
            goto done;
        }
        if (n > 0)
            break;
    }
    if (zmq_msg_recv(&msg, s, ZMQ_DONTWAIT) < 0) {
        snprintf(err, en, "reading the reply from %s: %s", ep, zmq_strerror(errno));
        goto done;
    }
    if (zmq_msg_more(&msg)) {
        snprintf(err, en, "bad reply from %s: more than one frame (is this a switchyard status socket?)", ep);
        goto done;
    }
    size_t len = zmq_msg_size(&msg);
    Switchyard__StatusReply *r = switchyard__status_reply__unpack(NULL, len, zmq_msg_data(&msg));
    if (!r) {
        snprintf(err, en, "bad reply from %s: %zu bytes that are not a StatusReply (is this a switchyard status "
                          "socket?)", ep, len);
        goto done;
    }
    if (r->protocol_version != SWITCHYARD__VERSION__PROTOCOL_VERSION) {
        snprintf(err, en, "%s speaks status protocol version %u; this switchyard speaks version %d%s%.300s", ep,
                 r->protocol_version, SWITCHYARD__VERSION__PROTOCOL_VERSION, r->error && r->error[0] ? ": " : "",
                 r->error ? r->error : "");
        switchyard__status_reply__free_unpacked(r, NULL);
        goto done;
    }
    if (r->error && r->error[0]) {
        snprintf(err, en, "%s refused the request: %.400s", ep, r->error);
        switchyard__status_reply__free_unpacked(r, NULL);
        goto done;
    }
    *out = r;
    rc = 0;
done:
    zmq_msg_close(&msg);
    if (s)
        zmq_close(s);
    return rc;
}

/* The reply in the chosen format, written to stdout in one piece so a watching
 * terminal never shows half a frame. */
static int print_reply(const Switchyard__StatusReply *r, int fmt, const char *header, const char *clear) {
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    if (!m)
        return -1;
    fputs(clear, m);
    if (header)
        fprintf(m, "%s\n", header);
    int rc = fmt == FMT_JSON ? sy_status_json(m, r) : fmt == FMT_PROM ? sy_status_prom(m, r) : sy_status_table(m, r);
    if (fclose(m))
        rc = -1;
    if (rc == 0 && (fwrite(buf, 1, n, stdout) != n || fflush(stdout)))
        rc = -1;
    free(buf);
    return rc;
}

/* Sleeps until `until` (monotonic seconds) or a stop signal, in short naps so a signal
 * delivered to another thread still ends the wait promptly. */
static void nap_until(double until) {
    while (!g_stop) {
        double left = until - now_s();
        if (left <= 0)
            return;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* --listen: a minimal HTTP/1.0 server for Prometheus scrapes. One client at a time (a
 * scrape takes milliseconds), a request is read for at most 2 s and 8 KiB, and every
 * GET /metrics (or /) makes one fresh status query. */
static int http_reply(int fd, const char *status, const char *body, size_t n) {
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, n);
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn)
        return -1;
    for (size_t off = 0; off < n;) {
        ssize_t k = send(fd, body + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        off += (size_t)k;
    }
    return 0;
}

static void http_serve_one(int fd, void *ctx, const char *ep, int timeout_ms) {
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[8192];
    size_t n = 0;
    req[0] = 0;
    while (n < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
        ssize_t k = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        req[n] = 0;
    }
    req[n] = 0;
    char method[8] = "", path[256] = "";
    if (sscanf(req, "%7s %255s", method, path) != 2) {
        const char *m = "bad request: expected GET /metrics\n";
        http_reply(fd, "400 Bad Request", m, strlen(m));
        return;
    }
    if (strcmp(method, "GET")) {
        const char *m = "only GET is served\n";
        http_reply(fd, "405 Method Not Allowed", m, strlen(m));
        return;
    }
    if (strcmp(path, "/metrics") && strcmp(path, "/")) {
        const char *m = "not found: metrics are at /metrics\n";
        http_reply(fd, "404 Not Found", m, strlen(m));
        return;
    }
    Switchyard__StatusReply *r = NULL;
    char err[1024];
    char *buf = NULL;
    size_t bn = 0;
    int a = ask(ctx, ep, timeout_ms, &r, err, sizeof err), ok = 0;
    if (a == 0) {
        FILE *m = open_memstream(&buf, &bn);
        if (m) {
            int frc = sy_status_prom(m, r);
            ok = fclose(m) == 0 && frc == 0;
        }
    }
    if (ok) {
        http_reply(fd, "200 OK", buf, bn);
    } else {
        char msg[1100];
        int mn = snprintf(msg, sizeof msg, "switchyard status: %s\n", a == 0 ? "cannot format the reply" : err);
        http_reply(fd, "503 Service Unavailable", msg, (size_t)mn < sizeof msg ? (size_t)mn : sizeof msg - 1);
    }
    free(buf);
    switchyard__status_reply__free_unpacked(r, NULL);
}

static int http_listen(void *ctx, const char *ep, int timeout_ms, const char *addr) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !colon[1] || *end || port < 1 || port > 65535 || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "switchyard status: --listen '%.300s': expected [HOST]:PORT with PORT in 1..65535\n", addr);
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int g = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (g) {
        fprintf(stderr, "switchyard status: --listen %s: cannot resolve '%s': %s\n", addr, host, gai_strerror(g));
        return 2;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 16)) {
        fprintf(stderr, "switchyard status: --listen %s: %s\n", addr, strerror(errno));
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    freeaddrinfo(ai);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "switchyard status: serving the metrics of %s on http://%s/metrics\n", ep, addr);
    while (!g_stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            continue;
        http_serve_one(c, ctx, ep, timeout_ms);
        close(c);
    }
    close(fd);
    return 0;
}

int cmd_status(int argc, char **argv) {
    const char *endpoint = NULL, *listen_addr = NULL;
    int fmt = FMT_TABLE, watch = 0, timeout_ms = 2000;
    long count = 0;
    double every = 2.0;
    sy_sec_opts sec = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (!strcmp(a, "--keys") || !strcmp(a, "--cert") || !strcmp(a, "--coordinator-key")) {
            if (!sy_sec_arg(&sec, argc, argv, &i)) {
                fprintf(stderr, "switchyard status: %s needs a value\n", a);
                return 2;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json") || !strcmp(a, "--prom")) {
            int f = a[2] == 'j' ? FMT_JSON : FMT_PROM;
            if (fmt != FMT_TABLE && fmt != f) {
                fprintf(stderr, "switchyard status: --json and --prom exclude each other\n");
                return 2;
            }
            fmt = f;
        } else if (!strcmp(a, "--watch")) {
            watch = 1;
            /* an optional number of seconds */
            if (i + 1 < argc) {
                errno = 0;
                double v = strtod(argv[i + 1], &end);
                if (end != argv[i + 1] && !*end) {
                    if (errno || !(v >= 0.1 && v <= 86400)) {
                        fprintf(stderr, "switchyard status: --watch %s: seconds must be in 0.1..86400\n", argv[i + 1]);
                        return 2;
                    }
                    every = v;
                    i++;
                }
            }
        } else if (!strcmp(a, "--timeout") || !strcmp(a, "--count")) {
            errno = 0;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            long hi = a[2] == 't' ? 3600000 : 1000000000;
            if (i + 1 >= argc || end == argv[i + 1] || *end || errno || v < 1 || v > hi) {
                fprintf(stderr, "switchyard status: %s needs a whole number in 1..%ld%s\n", a, hi,
                        a[2] == 't' ? " (milliseconds)" : "");
                return 2;
            }
            i++;
            if (a[2] == 't')
                timeout_ms = (int)v;
            else
                count = v, watch = 1;
        } else if (!strcmp(a, "--listen")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "switchyard status: --listen needs [HOST]:PORT\n");
                return 2;
            }
            listen_addr = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "switchyard status: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (endpoint) {
            fprintf(stderr, "switchyard status: one ENDPOINT only ('%s' and '%s')\n", endpoint, a);
            return 2;
        } else {
            endpoint = a;
        }
    }
    if (!endpoint) {
        usage(stderr);
        return 2;
    }
    if (listen_addr && (fmt != FMT_PROM || watch)) {
        fprintf(stderr, "switchyard status: --listen serves Prometheus text: use it with --prom, without --watch\n");
        return 2;
    }
    char ep[512], host[256], err[1024];
    if (parse_endpoint(endpoint, ep, sizeof ep, host, sizeof host, err, sizeof err)) {
        fprintf(stderr, "switchyard status: bad endpoint '%.300s': %s\n", endpoint, err);
        return 2;
    }
    /* ZeroMQ resolves names quietly in the background: a misspelt host would look like
     * a coordinator that does not answer, so resolve it here and say so */
    if (host[0]) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int g = getaddrinfo(host, NULL, &hints, &ai);
        if (g) {
            fprintf(stderr, "switchyard status: cannot resolve host '%s' of %s: %s\n", host, ep, gai_strerror(g));
            return 1;
        }
        freeaddrinfo(ai);
    }

    if ((sec.keys_dir || sec.cert || sec.server_key) && sy_sec_client_init(&sec, "clients/operator.secret", "status")) {
        fprintf(stderr, "switchyard status: %s\n", sy_lasterr());
        return 2;
    }
    void *ctx = zmq_ctx_new();
    if (!ctx) {
        fprintf(stderr, "switchyard status: cannot start ZeroMQ: %s\n", zmq_strerror(errno));
        return 1;
    }
    if (listen_addr) {
        int lrc = http_listen(ctx, ep, timeout_ms, listen_addr);
        zmq_ctx_term(ctx);
        return lrc;
    }
    int rc = 1;
    Switchyard__StatusReply *r = NULL;
    if (!watch) {
        rc = ask(ctx, ep, timeout_ms, &r, err, sizeof err);
        if (rc == 0) {
            if (print_reply(r, fmt, NULL, "")) {
                fprintf(stderr, "switchyard status: cannot write the output: %s\n", strerror(errno));
                rc = 1;
            }
        } else {
            fprintf(stderr, "switchyard status: %s\n", err);
            rc = 1;
        }
        switchyard__status_reply__free_unpacked(r, NULL);
        zmq_ctx_term(ctx);
        return rc;
    }

    /* --watch: Ctrl-C (or SIGTERM) ends the loop cleanly; every failure is shown and the
     * next refresh tries again */
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int tty = isatty(STDOUT_FILENO);
    for (long k = 0; !g_stop && (count == 0 || k < count); k++) {
        double t0 = now_s();
        int a = ask(ctx, ep, timeout_ms, &r, err, sizeof err);
        if (a < 0 || g_stop) {
            switchyard__status_reply__free_unpacked(r, NULL);
            r = NULL;
            break;
        }
        char header[700] = "";
        if (fmt == FMT_TABLE) {
            time_t wall = time(NULL);
            struct tm tm;
            localtime_r(&wall, &tm);
            snprintf(header, sizeof header, "switchyard status %.60s  every %gs  %02d:%02d:%02d", ep, every,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
        }
        const char *clear = tty ? "\033[H\033[2J" : k ? "\n" : "";
        if (a == 0) {
            rc = print_reply(r, fmt, header[0] ? header : NULL, clear) ? 1 : 0;
            if (rc) { /* stdout is gone (a closed pipe): nobody is watching any more */
                fprintf(stderr, "switchyard status: cannot write the output: %s\n", strerror(errno));
                switchyard__status_reply__free_unpacked(r, NULL);
                r = NULL;
                break;
            }
        } else {
            if (tty) {
                fputs(clear, stdout);
                if (header[0])
                    printf("%s\n", header);
                fflush(stdout);
            }
            fprintf(stderr, "switchyard status: %s\n", err);
            rc = 1;
        }
        switchyard__status_reply__free_unpacked(r, NULL);
        r = NULL;
        if (count == 0 || k + 1 < count)
            nap_until(t0 + every);
    }
    if (g_stop)
        rc = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    zmq_ctx_term(ctx);
    return rc;
}
