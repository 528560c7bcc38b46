/* switchyard up CONFIG --workers N: a local cluster in one command. Starts a coordinator
 * and N workers on loopback (free ports picked here), streams their progress, and shuts
 * everything down cleanly when training ends, when one of them fails, or on Ctrl-C. */
#define _GNU_SOURCE /* nftw */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "curve.h"
#include "log.h"

#define MAX_LOCAL_WORKERS 64

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

static void usage(void) {
    fprintf(stderr,
            "usage: switchyard up [CONFIG] [--workers N] [--threads T] [--set section.key=value ...]\n"
            "                     [--resume | --fresh] [--wire fp32|bf16] [--keys DIR] [--status-open] [--insecure]\n"
            "                     [--trace DIR]\n"
            "  Starts switchyard-coordinator and N switchyard-worker processes on 127.0.0.1 (default 2 workers,\n"
            "  1 compute thread each) and trains CONFIG (default: the embedded configs/default.yaml).\n"
            "  Ctrl-C stops the run cleanly (the coordinator saves a checkpoint first).\n"
            "  Every socket uses CURVE with keys made for this run in a private temporary directory (removed at\n"
            "  the end); --keys DIR keeps them in DIR (made by `switchyard keygen --cluster DIR` or here), so\n"
            "  `switchyard status EP --keys DIR` can read the run and more workers can join. --status-open lets\n"
            "  anyone read the status; --insecure turns CURVE off everywhere (debugging only). --trace DIR has\n"
            "  every worker write a timeline of its steps to DIR (switchyard-worker --trace).\n");
}

/* A TCP port on 127.0.0.1 that is free right now. */
int sy_free_tcp_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t len = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* 1 when something listens on 127.0.0.1:port. The connect is bounded (200 ms): a
 * listener with a full backlog (a program that took the port and never accepts) leaves
 * a blocking one retrying its SYN for two minutes. */
static int listening(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (!ok && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        ok = poll(&p, 1, 200) == 1 && !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) && err == 0;
    }
    close(fd);
    return ok;
}

/* 1 when another socket holds 127.0.0.1:port (a bind to it fails with EADDRINUSE). */
static int port_taken(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int taken = bind(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* DIR holds a coordinator and `workers` worker key pairs (made where missing). */
static int ensure_keys(const char *dir, int workers) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/coordinator.secret", dir);
    if (access(p, F_OK) && sy_keygen_cluster(dir, 0))
        return -1;
    for (int k = 0; k < workers; k++) {
        snprintf(p, sizeof p, "%s/workers/worker-%d.secret", dir, k);
        if (!access(p, F_OK))
            continue;
        snprintf(p, sizeof p, "%s/workers/worker-%d", dir, k);
        sy_cert c;
        if (sy_cert_new(&c) || sy_cert_save(&c, p))
            return -1;
    }
    return 0;
}

static pid_t spawn(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the whole foreground group: let `up` decide */
        execv(argv[0], argv);
        fprintf(stderr, "up: cannot start %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to ms for every pid in the list to exit (reaped entries become 0). */
static int wait_all(pid_t *pids, int *status, int n, int ms) {
    int alive = 0;
    for (int waited = 0;; waited += 20) {
        alive = 0;
        for (int i = 0; i < n; i++) {
            if (pids[i] <= 0)
                continue;
            int st;
            pid_t r = waitpid(pids[i], &st, WNOHANG);
            if (r == pids[i]) {
                status[i] = st;
                pids[i] = 0;
            } else {
                alive++;
            }
        }
        if (!alive || waited >= ms)
            return alive;
        sleep_ms(20);
    }
}

int cmd_up(int argc, char **argv) {
    const char *config = NULL, *threads = "1", *wire = NULL, *trace = NULL;
    int workers = 2, resume = 0, fresh = 0, insecure = 0, status_open = 0;
    const char *keys_arg = NULL;
    char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int nsets = 0;
    enum { OPT_WORKERS = 256, OPT_THREADS, OPT_WIRE, OPT_SET, OPT_RESUME, OPT_FRESH, OPT_INSECURE, OPT_STATUS_OPEN,
           OPT_KEYS, OPT_TRACE };
    static const struct option longopts[] = {
        {"workers", required_argument, NULL, OPT_WORKERS}, {"threads", required_argument, NULL, OPT_THREADS},
        {"wire", required_argument, NULL, OPT_WIRE},       {"set", required_argument, NULL, OPT_SET},
        {"resume", no_argument, NULL, OPT_RESUME},         {"fresh", no_argument, NULL, OPT_FRESH},
        {"insecure", no_argument, NULL, OPT_INSECURE},     {"status-open", no_argument, NULL, OPT_STATUS_OPEN},
        {"keys", required_argument, NULL, OPT_KEYS},       {"help", no_argument, NULL, 'h'},
        {"trace", required_argument, NULL, OPT_TRACE},
        {0, 0, 0, 0}};
    optind = 0; /* a fresh scan */
    opterr = 0; /* our own messages */
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        char *end;
        long w;
        switch (opt) {
        case OPT_WORKERS:
            w = strtol(optarg, &end, 10);
            if (*end || w < 1 || w > MAX_LOCAL_WORKERS) {
                fprintf(stderr, "up: --workers: expected 1..%d, got '%s'\n", MAX_LOCAL_WORKERS, optarg);
                free(sets);
                return 2;
            }
            workers = (int)w;
            break;
        case OPT_THREADS: threads = optarg; break;
        case OPT_WIRE: wire = optarg; break;
        case OPT_SET: sets[nsets++] = optarg; break;
        case OPT_RESUME: resume = 1; break;
        case OPT_FRESH: fresh = 1; break;
        case OPT_INSECURE: insecure = 1; break;
        case OPT_STATUS_OPEN: status_open = 1; break;
        case OPT_KEYS: keys_arg = optarg; break;
        case OPT_TRACE: trace = optarg; break;
        case 'h':
            usage();
            free(sets);
            return 0;
        default: /* an unknown option, or one without its value */
            fprintf(stderr, "up: unexpected argument '%s'\n", argv[optind - 1]);
            usage();
            free(sets);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (config) {
            fprintf(stderr, "up: unexpected argument '%s'\n", argv[i]);
            usage();
            free(sets);
            return 2;
        }
        config = argv[i];
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "up: cannot find my own binary: %s\n", strerror(errno));
        free(sets);
        return 2;
    }
    self[n] = 0;
    char dir[PATH_MAX], coord_bin[PATH_MAX + 32], worker_bin[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s", self);
    snprintf(coord_bin, sizeof coord_bin, "%s/switchyard-coordinator", dirname(dir));
    snprintf(dir, sizeof dir, "%s", self);
    snprintf(worker_bin, sizeof worker_bin, "%s/switchyard-worker", dirname(dir));
    if (access(coord_bin, X_OK) || access(worker_bin, X_OK)) {
        fprintf(stderr, "up: %s and %s must sit next to switchyard\n", coord_bin, worker_bin);
        free(sets);
        return 2;
    }
    int cport = sy_free_tcp_port(), sport = sy_free_tcp_port();
    /* drill (tests/drill_up_ports.sh): SWITCHYARD_FAULT=up-port@N picks N for the control
     * port, as if it had been free and was taken before the coordinator bound it */
    const char *fault = getenv("SWITCHYARD_FAULT");
    int fault_port;
    if (fault && sscanf(fault, "up-port@%d", &fault_port) == 1 && fault_port > 0 && fault_port < 65536)
        cport = fault_port;
    while (sport == cport && sport > 0)
        sport = sy_free_tcp_port();
    if (cport <= 0 || sport <= 0) {
        fprintf(stderr, "up: no free TCP port on 127.0.0.1\n");
        free(sets);
        return 2;
    }
    /* keys: ephemeral (a private temporary directory, removed at the end) unless --keys */
    char keys[PATH_MAX] = "", tmpkeys[PATH_MAX] = "";
    if (!insecure) {
        umask(077);
        if (keys_arg) {
            snprintf(keys, sizeof keys, "%s", keys_arg);
        } else {
            const char *t = getenv("TMPDIR");
            snprintf(tmpkeys, sizeof tmpkeys, "%s/switchyard-keys.XXXXXX", t && *t ? t : "/tmp");
            if (!mkdtemp(tmpkeys)) {
                fprintf(stderr, "up: cannot make a key directory %s: %s\n", tmpkeys, strerror(errno));
                free(sets);
                return 2;
            }
            snprintf(keys, sizeof keys, "%s", tmpkeys);
        }
        if (ensure_keys(keys, workers)) {
            fprintf(stderr, "up: keys in %s: %s\n", keys, sy_lasterr());
            if (tmpkeys[0])
                nftw(tmpkeys, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            free(sets);
            return 2;
        }
    }
    char ctrl[64], status[64], nworkers[16];
    snprintf(ctrl, sizeof ctrl, "tcp://127.0.0.1:%d", cport);
    snprintf(status, sizeof status, "tcp://127.0.0.1:%d", sport);
    snprintf(nworkers, sizeof nworkers, "%d", workers);

    char *cargv[64 + 2 * MAX_LOCAL_WORKERS];
    int c = 0;
    cargv[c++] = coord_bin;
    if (config)
        cargv[c++] = (char *)config;
    cargv[c++] = "--bind";
    cargv[c++] = ctrl;
    cargv[c++] = "--status";
    cargv[c++] = status;
    cargv[c++] = "--start-workers";
    cargv[c++] = nworkers;
    if (resume)
        cargv[c++] = "--resume";
    if (fresh)
        cargv[c++] = "--fresh";
    if (wire) {
        cargv[c++] = "--wire";
        cargv[c++] = (char *)wire;
    }
    if (insecure) {
        cargv[c++] = "--insecure";
    } else {
        cargv[c++] = "--keys";
        cargv[c++] = keys;
    }
    if (status_open)
        cargv[c++] = "--status-open";
    /* workers sharing this machine measure each other's load, not their speed: equal
     * shares unless the user asks otherwise (a later --set wins) */
    cargv[c++] = "--set";
    cargv[c++] = "cluster.balance_by_speed=false";
    for (int i = 0; i < nsets && c < 60; i++) {
        cargv[c++] = "--set";
        cargv[c++] = sets[i];
    }
    cargv[c] = NULL;

    pid_t pids[1 + MAX_LOCAL_WORKERS] = {0};
    int st[1 + MAX_LOCAL_WORKERS] = {0};
    /* no SA_RESTART: the signal must interrupt the blocking waitpid below */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sy_info("up: coordinator on %s (status %s), %d worker%s with %s thread%s each", ctrl, status, workers,
            workers == 1 ? "" : "s", threads, strcmp(threads, "1") ? "s" : "");
    if (insecure)
        sy_sec_warn_insecure("up");
    else
        sy_info("up: CURVE on every socket, keys in %s%s; status: switchyard status %s%s%s", keys,
                tmpkeys[0] ? " (removed at the end)" : "", status, status_open ? "" : " --keys ",
                status_open ? "" : keys);
    if (trace)
        sy_info("up: each worker writes its step timeline to %s/worker-PID.json (open them in ui.perfetto.dev; "
                "bench/trace_split.py %s splits the waits)",
                trace, trace);
    /* The ports were free when picked, but the coordinator binds them later (seconds on a
     * loaded machine), and any bind to port 0 in between may be given one of them: the
     * workers' own data sockets, were they started at once, or any other program. So the
     * workers start once the coordinator listens on both, and a coordinator that could not
     * bind a port someone else took is started again on two others. */
    for (int attempt = 1;; attempt++) {
        pids[0] = spawn(cargv);
        int stc = 0, up_now = 0;
        for (int waited = 0; waited < 120000 && !g_signal; waited += 20) {
            if (waitpid(pids[0], &stc, WNOHANG) == pids[0]) {
                pids[0] = 0;
                st[0] = stc; /* it ended before listening: reported as its exit below */
                break;
            }
            if ((up_now = listening(cport) && listening(sport)))
                break;
            sleep_ms(20);
        }
        if (pids[0] || attempt == 3 || !WIFEXITED(stc) || WEXITSTATUS(stc) != 2 ||
            !(port_taken(cport) || port_taken(sport))) {
            if (pids[0] && !up_now && !g_signal)
                sy_warn("up: the coordinator is not listening on %s after 120 s; starting the workers anyway", ctrl);
            break;
        }
        int oc = cport, os = sport;
        do
            cport = sy_free_tcp_port(), sport = sy_free_tcp_port();
        while (cport > 0 && (sport == cport || cport == oc || cport == os || sport == oc || sport == os));
        if (cport <= 0 || sport <= 0)
            break;
        snprintf(ctrl, sizeof ctrl, "tcp://127.0.0.1:%d", cport);
        snprintf(status, sizeof status, "tcp://127.0.0.1:%d", sport);
        sy_warn("up: port %d or %d was taken before the coordinator could bind it: coordinator now on %s (status %s)",
                oc, os, ctrl, status);
    }
    for (int w = 0; w < workers && pids[0] > 0 && !g_signal; w++) {
        char cert[PATH_MAX + 64], ckey[PATH_MAX + 64];
        snprintf(cert, sizeof cert, "%s/workers/worker-%d.secret", keys, w);
        snprintf(ckey, sizeof ckey, "%s/coordinator.key", keys);
        char *wargv[12] = {worker_bin, "--coordinator", ctrl, "--threads", (char *)threads, "--cert",
                           cert, "--coordinator-key", ckey, NULL};
        int k = 9;
        if (insecure) {
            wargv[5] = "--insecure";
            k = 6;
        }
        if (trace) {
            wargv[k++] = "--trace";
            wargv[k++] = (char *)trace;
        }
        wargv[k] = NULL;
        pids[1 + w] = spawn(wargv);
    }
    int total = 1 + workers, code = 0;
    /* run until the coordinator ends, a signal arrives, or every worker is gone */
    for (;;) {
        if (g_signal)
            break;
        int stc;
        pid_t r = waitpid(-1, &stc, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < total; i++)
            if (pids[i] == r) {
                st[i] = stc;
                pids[i] = 0;
            }
        if (pids[0] == 0)
            break;
    }
    if (g_signal) {
        sy_warn("up: signal %d: stopping the coordinator (it checkpoints and tells the workers to stop)", (int)g_signal);
        code = 130;
        if (pids[0] > 0)
            kill(pids[0], SIGTERM);
        wait_all(pids, st, 1, 30000);
    } else if (WIFEXITED(st[0])) {
        code = WEXITSTATUS(st[0]);
    } else {
        code = 1;
        sy_error("up: the coordinator died of signal %d", WTERMSIG(st[0]));
    }
    /* the coordinator is gone: workers were told to shut down; give them a moment */
    if (wait_all(pids + 1, st + 1, workers, 1500) > 0) {
        for (int i = 1; i < total; i++)
            if (pids[i] > 0)
                kill(pids[i], SIGTERM);
        if (wait_all(pids + 1, st + 1, workers, 3000) > 0)
            for (int i = 1; i < total; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGKILL);
        wait_all(pids + 1, st + 1, workers, 3000);
    }
    if (tmpkeys[0])
        nftw(tmpkeys, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(sets);
    return code;
}
