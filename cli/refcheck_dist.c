/* switchyard refcheck DIR --workers N: the reference case through a real coordinator and
 * N worker processes on loopback. Each worker runs its rows (one group per worker), the
 * expert all-to-all and the gradient all-reduce go over ZeroMQ, and the coordinator
 * writes the gathered loss terms, gradients and routing to a scratch checkpoint that is
 * compared here with the same checks as the single-process run. */
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"

#include "checkpoint.h"
#include "log.h"
#include "refcheck.h"

int sy_free_tcp_port(void);

typedef struct {
    const sy_ckpt *ck;
    float *buf;
    size_t cap;
} dist_ctx;

static const float *dist_grad(void *ctx, const char *name) {
    dist_ctx *d = ctx;
    char full[SY_CKPT_MAX_NAME];
    snprintf(full, sizeof full, "grad/%s", name);
    const sy_ckpt_tensor *t = sy_ckpt_find(d->ck, full);
    if (!t)
        return NULL;
    if (t->bytes > d->cap) {
        free(d->buf);
        d->buf = malloc(t->bytes);
        d->cap = d->buf ? t->bytes : 0;
    }
    if (!d->buf || sy_ckpt_read(d->ck, full, d->buf, t->bytes))
        return NULL;
    return d->buf;
}

static int rm_rf(const char *dir) {
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int sy_refcheck_distributed(const sy_refcase *rc, int workers, int quiet) {
    if (rc->batch % workers) {
        fprintf(stderr, "refcheck: %s has %d rows, which do not split into %d workers\n", rc->dir, rc->batch, workers);
        return 2;
    }
    if (workers != rc->groups)
        sy_warn("refcheck: %d workers but the case has %d groups: capacity is per worker, so routing and losses "
                "will differ from the reference",
                workers, rc->groups);
    char self[PATH_MAX], dir[PATH_MAX], coord_bin[PATH_MAX + 32], worker_bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 2;
    self[n] = 0;
    snprintf(dir, sizeof dir, "%s", self);
    snprintf(coord_bin, sizeof coord_bin, "%s/switchyard-coordinator", dirname(dir));
    snprintf(dir, sizeof dir, "%s", self);
    snprintf(worker_bin, sizeof worker_bin, "%s/switchyard-worker", dirname(dir));
    char out[] = "/tmp/switchyard-refcheck-XXXXXX";
    if (!mkdtemp(out)) {
        fprintf(stderr, "refcheck: cannot make a scratch directory: %s\n", strerror(errno));
        return 2;
    }
    /* CURVE as everywhere: ephemeral keys in the scratch directory (removed with it) */
    char keys[PATH_MAX + 16], ckey[PATH_MAX + 64];
    snprintf(keys, sizeof keys, "%s/keys", out);
    snprintf(ckey, sizeof ckey, "%s/coordinator.key", keys);
    if (sy_keygen_cluster(keys, workers)) {
        fprintf(stderr, "refcheck: keys: %s\n", sy_lasterr());
        rm_rf(out);
        return 2;
    }
    int port = sy_free_tcp_port();
    char ep[64], nw[16];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(nw, sizeof nw, "%d", workers);
    pid_t pids[65];
    int np = 0;
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {coord_bin, "--refcheck", (char *)rc->dir, "--out", out, "--bind", ep, "--min-workers", nw,
                        "--set", "cluster.timeout_ms=20000", "--keys", keys, NULL};
        execv(coord_bin, argv);
        _exit(127);
    }
    pids[np++] = pid;
    for (int w = 0; w < workers && w < 64; w++) {
        pid = fork();
        if (pid == 0) {
            char cert[PATH_MAX + 64];
            snprintf(cert, sizeof cert, "%s/workers/worker-%d.secret", keys, w);
            char *argv[] = {worker_bin, "--coordinator", ep, "--threads", "1", "--cert", cert, "--coordinator-key", ckey,
                            NULL};
            execv(worker_bin, argv);
            _exit(127);
        }
        pids[np++] = pid;
    }
    int st = 0, code = 2;
    waitpid(pids[0], &st, 0); /* the coordinator ends the run and shuts the workers down */
    for (int i = 1; i < np; i++) {
        int ws;
        for (int t = 0; t < 100 && waitpid(pids[i], &ws, WNOHANG) == 0; t++)
            usleep(50000);
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &ws, 0);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
        fprintf(stderr, "refcheck: the distributed run failed (coordinator status %d)\n", st);
        rm_rf(out);
        return 2;
    }
    char ckdir[PATH_MAX + 32];
    snprintf(ckdir, sizeof ckdir, "%s/step-00000000", out);
    sy_ckpt *ck = sy_ckpt_open(ckdir);
    if (!ck) {
        fprintf(stderr, "refcheck: %s\n", sy_lasterr());
        rm_rf(out);
        return 2;
    }
    sy_refcheck_result res = {.top_k = rc->model.top_k, .grad_of = dist_grad};
    const char *v;
    res.loss.total = (v = sy_ckpt_get(ck, "loss_total")) ? strtod(v, NULL) : NAN;
    res.loss.ce = (v = sy_ckpt_get(ck, "loss_ce")) ? strtod(v, NULL) : NAN;
    res.loss.aux = (v = sy_ckpt_get(ck, "loss_aux")) ? strtod(v, NULL) : NAN;
    res.loss.z = (v = sy_ckpt_get(ck, "loss_z")) ? strtod(v, NULL) : NAN;
    /* routing: each worker's rows, concatenated in rank order */
    int L = rc->model.n_layers, k = rc->model.top_k, N = rc->batch * rc->seq;
    int **routes = calloc((size_t)L, sizeof(int *));
    res.routing = (const int **)routes;
    for (int l = 0; l < L && routes; l++) {
        char name[64];
        snprintf(name, sizeof name, "route.%d/0", l);
        if (!sy_ckpt_find(ck, name))
            continue;
        routes[l] = malloc((size_t)N * k * sizeof(int));
        size_t at = 0;
        for (int w = 0; w < workers && routes[l]; w++) {
            snprintf(name, sizeof name, "route.%d/%d", l, w);
            const sy_ckpt_tensor *t = sy_ckpt_find(ck, name);
            if (!t || at + t->bytes / 4 > (size_t)N * k || sy_ckpt_read(ck, name, routes[l] + at, t->bytes)) {
                fprintf(stderr, "refcheck: routing of layer %d from worker %d is missing or wrong\n", l, w);
                free(routes[l]);
                routes[l] = NULL;
                break;
            }
            at += t->bytes / 4;
        }
    }
    dist_ctx dc = {.ck = ck};
    res.ctx = &dc;
    printf("distributed: %d worker processes over ZeroMQ (one group each)\n", workers);
    code = sy_refcheck_compare(rc, &res, quiet) ? 1 : 0;
    for (int l = 0; l < L && routes; l++)
        free(routes[l]);
    free(routes);
    free(dc.buf);
    sy_ckpt_close(&ck);
    rm_rf(out);
    return code;
}
