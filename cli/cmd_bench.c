/* switchyard bench: throughput and where the time goes.
 *   switchyard bench [CONFIG] [--steps N] [--warmup N] [--threads N] [--json]
 *       one process: tokens/s, time per step by phase, model FLOPs per token, achieved
 *       FLOP/s and model FLOPs utilisation against sgemm measured here, peak RSS against
 *       the bytes the model must hold.
 *   switchyard bench allreduce|alltoall --size BYTES --workers N [--wire bf16] [--iters N]
 *       the collectives between N local processes over ZeroMQ (tcp loopback): algorithm
 *       and bus bandwidth as NCCL-tests define them.
 * Local multi-worker training throughput is measured with `switchyard up` (bench/). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <jansson.h>

#include "blas_setup.h"
#include "commands.h"
#include "curve.h"
#include "config.h"
#include "data.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "peer.h"
#include "rng.h"
#include "step.h"

int sy_free_tcp_port(void);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : NAN;
}

static long peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

/* ---------------------------------------------------------------- model */

/* v rounded to `decimals` places: the precision the figures are measured to. */
static double rnd(double v, int decimals) {
    double k = pow(10, decimals);
    return round(v * k) / k;
}

/* Prints a result object (built with json_pack) as one line of JSON and frees it.
 * jansson escapes the strings: a config path may hold quotes or backslashes. */
static int print_json(json_t *o, json_error_t *err) {
    if (!o) {
        fprintf(stderr, "bench: cannot build the JSON result: %s\n", err->text);
        return -1;
    }
    int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    if (rc == 0)
        putchar('\n');
    return rc;
}

static int bench_model(int argc, char **argv) {
    const char *path = NULL;
    int steps = 10, warmup = 2, json = 0, threads = 0;
    enum { OPT_STEPS = 256, OPT_WARMUP, OPT_THREADS, OPT_JSON };
    static const struct option longopts[] = {
        {"steps", required_argument, NULL, OPT_STEPS},     {"warmup", required_argument, NULL, OPT_WARMUP},
        {"threads", required_argument, NULL, OPT_THREADS}, {"json", no_argument, NULL, OPT_JSON},
        {0, 0, 0, 0}};
    optind = 0; /* a fresh scan */
    opterr = 0; /* our own messages */
    int opt;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_STEPS: steps = atoi(optarg); break;
        case OPT_WARMUP: warmup = atoi(optarg); break;
        case OPT_THREADS: threads = atoi(optarg); break;
        case OPT_JSON: json = 1; break;
        default: /* an unknown option, or one without its value */
            fprintf(stderr, "bench: unexpected argument '%s'\n", argv[optind - 1]);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (path) {
            fprintf(stderr, "bench: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
        path = argv[i];
    }
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "bench: --steps must be >= 1 and --warmup >= 0\n");
        return 2;
    }
    sy_config cfg;
    sy_config_defaults(&cfg);
    char def[4096];
    snprintf(def, sizeof def, "%s/configs/bench.yaml", SY_SOURCE_DIR);
    if (sy_config_load(&cfg, path ? path : def)) {
        fprintf(stderr, "bench: %s\n", sy_lasterr());
        return 2;
    }
    if (threads > 0)
        sy_blas_set_threads(threads);
    const sy_train_cfg *tc = &cfg.train;
    int B = tc->batch_size, T = tc->seq_len;
    sy_model *m = sy_model_new(&cfg.model, B, T, NULL);
    if (!m) {
        fprintf(stderr, "bench: %s\n", sy_lasterr());
        return 2;
    }
    sy_model_init_weights(m, tc->seed);
    const sy_layout *lay = sy_model_layout(m);
    float *mom = calloc(lay->total, sizeof(float)), *vel = calloc(lay->total, sizeof(float));
    int32_t *batch = malloc((size_t)B * (T + 1) * sizeof(int32_t));
    /* real data when prepared, else deterministic random bytes (the speed is the same) */
    char dp[4096];
    snprintf(dp, sizeof dp, "%s/train.bin", cfg.data.dir);
    sy_tokens *train = access(dp, R_OK) == 0 ? sy_tokens_load(dp) : NULL;
    /* the peak is the best of a few probes: a busy moment only ever lowers a probe */
    double peak = 0.0;
    for (int i = 0; i < 3; i++) {
        double g = sy_sgemm_probe(0.3);
        peak = g > peak ? g : peak;
    }
    double *times = calloc((size_t)steps, sizeof(double));
    /* the training step itself, over a mesh of one rank and the local communicator */
    sy_mesh mesh;
    sy_stepper st;
    if (sy_stepper_local(&st, &mesh, m, &cfg, mom, vel, batch)) {
        fprintf(stderr, "bench: %s\n", sy_lasterr());
        return 2;
    }
    sy_model_times acc = {0};
    double t_opt = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (!train) { /* sy_step_run draws real batches itself */
            sy_rng r = {sy_hash4(tc->seed, (uint64_t)s, 0, 0)};
            for (int i = 0; i < B * (T + 1); i++)
                batch[i] = (int32_t)(sy_rng_next(&r) & 255);
        }
        sy_model_timers(m, NULL, 1);
        sy_step_result r;
        if (sy_step_run(&st, train, s, &r)) {
            fprintf(stderr, "bench: %s\n", sy_lasterr());
            return 1;
        }
        if (s >= warmup) {
            sy_model_times mt;
            sy_model_timers(m, &mt, 0);
            acc.forward += mt.forward;
            acc.backward += mt.backward;
            acc.router += mt.router;
            acc.experts += mt.experts;
            t_opt += r.t.optimizer;
            times[s - warmup] = r.t.compute + r.t.alltoall + r.t.allreduce + r.t.optimizer;
        }
    }
    double total = 0;
    for (int i = 0; i < steps; i++)
        total += times[i];
    double med = median(times, steps);
    double tokens = (double)B * T, tps = tokens / med;
    double fpt = sy_model_flops_per_token(&cfg.model, T), flops = fpt * tps;
    size_t wbytes = lay->total * 4, acts = sy_model_activation_bytes(m);
    size_t need = wbytes * 4 /* weights, grads, two moments */ + acts;
    long rss = peak_rss_bytes();
    double n = steps;
    int rc = 0;
    size_t nparams = 0; /* trainable numbers, without the arena's alignment padding */
    for (int i = 0; i < lay->n_params; i++)
        nparams += lay->params[i].numel;
    if (json) {
        json_error_t jerr;
        json_t *o = json_pack_ex(
            &jerr, 0,
            "{s:s, s:s, s:i, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:i, s:f, s:I, s:f, s:f, s:f,"
            " s:I, s:I, s:f, s:i}",
            "mode", "single", "config", path ? path : def, "threads", sy_blas_threads(), "kernel", sy_blas_kernel(),
            "batch", B, "seq", T, "steps", steps, "tokens_per_s", rnd(tps, 1), "step_ms", rnd(med * 1e3, 2),
            "forward_ms", rnd(acc.forward / n * 1e3, 2), "backward_ms", rnd(acc.backward / n * 1e3, 2), "router_ms",
            rnd(acc.router / n * 1e3, 2), "experts_ms", rnd(acc.experts / n * 1e3, 2), "alltoall_ms", 0,
            "allreduce_ms", 0, "optimizer_ms", rnd(t_opt / n * 1e3, 2), "flops_per_token", (json_int_t)llround(fpt),
            "achieved_gflops", rnd(flops / 1e9, 2), "sgemm_peak_gflops", rnd(peak, 2), "mfu",
            rnd(flops / 1e9 / peak, 4), "peak_rss_bytes", (json_int_t)rss, "model_bytes", (json_int_t)need,
            "rss_ratio", rnd((double)rss / need, 3), "bytes_sent_per_step", 0);
        /* the model and its training settings: the PyTorch peer (bench/torch_model.py --like)
         * builds the same model from this line */
        const sy_model_cfg *mc = &cfg.model;
        json_t *model = json_pack_ex(
            &jerr, 0,
            "{s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I}",
            "params", (json_int_t)nparams, "vocab", mc->vocab, "d_model", mc->d_model, "n_layers", mc->n_layers,
            "n_heads", mc->n_heads, "d_ff", mc->d_ff, "n_experts", mc->n_experts, "switch_every", mc->switch_every,
            "model_seq_len", mc->seq_len, "top_k", mc->top_k, "capacity_factor", (double)mc->capacity_factor,
            "aux_loss_coef", (double)mc->aux_loss_coef, "z_loss_coef", (double)mc->z_loss_coef, "init_scale",
            (double)mc->init_scale, "lr", (double)tc->lr, "weight_decay", (double)tc->weight_decay, "beta1",
            (double)tc->beta1, "beta2", (double)tc->beta2, "eps", (double)tc->eps, "grad_clip", (double)tc->grad_clip,
            "seed", (json_int_t)tc->seed);
        if (o && model)
            json_object_update(o, model);
        if (!model) {
            json_decref(o);
            o = NULL;
        }
        json_decref(model);
        if (print_json(o, &jerr))
            rc = 1;
    } else {
        printf("bench %s: batch %d x %d, %d threads, OpenBLAS kernel %s, %d measured steps (+%d warm-up)\n",
               path ? path : def, B, T, sy_blas_threads(), sy_blas_kernel(), steps, warmup);
        printf("  tokens/s            %10.0f   (median step %.1f ms)\n", tps, med * 1e3);
        printf("  forward             %10.1f ms  (router %.1f ms, experts %.1f ms, both passes)\n",
               acc.forward / n * 1e3, acc.router / n * 1e3, acc.experts / n * 1e3);
        printf("  backward            %10.1f ms\n", acc.backward / n * 1e3);
        printf("  optimizer           %10.1f ms\n", t_opt / n * 1e3);
        printf("  all-to-all, all-reduce       0 ms  (one process)\n");
        printf("  parameters          %10.2f M (%zu)\n", nparams / 1e6, nparams);
        printf("  model FLOPs/token   %10.2f M\n", fpt / 1e6);
        printf("  achieved            %10.1f GFLOP/s; sgemm here %.1f GFLOP/s; MFU %.0f%%\n", flops / 1e9, peak,
               100 * flops / 1e9 / peak);
        printf("  peak RSS            %10.1f MB vs %.1f MB of weights+grads+AdamW+activations (%.2fx)\n", rss / 1e6,
               need / 1e6, (double)rss / need);
    }
    free(times);
    sy_mesh_free(&mesh);
    free(mom);
    free(vel);
    free(batch);
    sy_tokens_destroy(&train);
    sy_model_destroy(&m);
    sy_config_free(&cfg);
    return rc;
}

/* ---------------------------------------------------------------- collectives */

static size_t g_chunk = 1 << 20;

/* certs: every rank's key pair (CURVE on the data sockets, as workers have it), or NULL */
static int coll_child(int rank, int world, char **eps, int op, size_t bytes, int bf16, int iters, int wfd,
                      const sy_cert *certs) {
    void *ctx = zmq_ctx_new();
    sy_zap *zap = certs ? sy_zap_new(ctx) : NULL;
    sy_peer *p = certs && !zap ? NULL : sy_peer_new_secure(ctx, eps[rank], certs ? &certs[rank] : NULL, zap);
    if (!p) {
        fprintf(stderr, "bench: rank %d: %s\n", rank, sy_lasterr());
        return 1;
    }
    char *keys[64];
    for (int r = 0; certs && r < world; r++)
        keys[r] = (char *)certs[r].pub;
    volatile int abort_flag = 0;
    if ((certs && sy_peer_set_keys(p, keys, (size_t)world)) || sy_peer_setup(p, 1, rank, world, eps, 30000, &abort_flag)) {
        fprintf(stderr, "bench: rank %d: %s\n", rank, sy_lasterr());
        return 1;
    }
    int members[64];
    for (int i = 0; i < world; i++)
        members[i] = i;
    size_t n = bytes / 4;
    float *data = malloc(n * 4 + 4);
    void **send = calloc((size_t)world, sizeof(void *));
    size_t *sb = calloc((size_t)world, sizeof(size_t)), *rb = calloc((size_t)world, sizeof(size_t));
    const void **recv = calloc((size_t)world, sizeof(void *));
    for (size_t i = 0; i < n; i++)
        data[i] = (float)((i * 7 + (size_t)rank) % 13);
    for (int q = 0; q < world; q++) {
        send[q] = (char *)data + (size_t)q * (bytes / world);
        sb[q] = bytes / world;
    }
    double *t = calloc((size_t)iters, sizeof(double));
    int rc = 0;
    for (int it = -2; it < iters && !rc; it++) { /* two warm-up rounds */
        sy_peer_barrier(p, members, world, it + 10, 7);
        double t0 = sy_now();
        if (op == 0)
            rc = sy_peer_allreduce(p, members, world, it + 10, 1, data, n, bf16, g_chunk);
        else
            rc = sy_peer_alltoall(p, members, world, it + 10, 2, send, sb, recv, rb);
        if (it >= 0)
            t[it] = sy_now() - t0;
    }
    uint64_t sent = sy_peer_bytes_sent(p, 0);
    if (rc)
        fprintf(stderr, "bench: rank %d: %s\n", rank, sy_lasterr());
    if (rank == 0 && !rc) {
        double med = median(t, iters);
        if (write(wfd, &med, sizeof med) != sizeof med || write(wfd, &sent, sizeof sent) != sizeof sent)
            rc = 1;
    }
    sy_peer_destroy(&p);
    sy_zap_destroy(&zap);
    zmq_ctx_term(ctx);
    free(data);
    free(t);
    return rc ? 1 : 0;
}

static int bench_collective(int argc, char **argv) {
    int op = !strcmp(argv[0], "alltoall");
    size_t bytes = 16u << 20;
    int workers = 2, bf16 = 0, iters = 10, json = 0, curve = 0;
    enum { OPT_SIZE = 256, OPT_WORKERS, OPT_ITERS, OPT_CHUNK, OPT_WIRE, OPT_JSON, OPT_CURVE };
    static const struct option longopts[] = {
        {"size", required_argument, NULL, OPT_SIZE},   {"workers", required_argument, NULL, OPT_WORKERS},
        {"iters", required_argument, NULL, OPT_ITERS}, {"chunk", required_argument, NULL, OPT_CHUNK},
        {"wire", required_argument, NULL, OPT_WIRE},   {"json", no_argument, NULL, OPT_JSON},
        {"curve", no_argument, NULL, OPT_CURVE},       {0, 0, 0, 0}};
    optind = 0; /* a fresh scan */
    opterr = 0; /* our own messages */
    int opt;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        char *end;
        double v;
        switch (opt) {
        case OPT_SIZE:
            v = strtod(optarg, &end);
            if (*end == 'K' || *end == 'k')
                v *= 1024;
            else if (*end == 'M' || *end == 'm')
                v *= 1024 * 1024;
            else if (*end == 'G' || *end == 'g')
                v *= 1024.0 * 1024 * 1024;
            bytes = (size_t)v;
            break;
        case OPT_WORKERS: workers = atoi(optarg); break;
        case OPT_ITERS: iters = atoi(optarg); break;
        case OPT_CHUNK: g_chunk = (size_t)strtoul(optarg, NULL, 10); break;
        case OPT_WIRE:
            if (strcmp(optarg, "bf16") && strcmp(optarg, "fp32")) {
                fprintf(stderr, "bench: --wire is fp32 or bf16, not '%s'\n", optarg);
                return 2;
            }
            bf16 = !strcmp(optarg, "bf16");
            break;
        case OPT_JSON: json = 1; break;
        case OPT_CURVE: curve = 1; break;
        default: /* an unknown option, or one without its value */
            fprintf(stderr, "bench %s: unexpected argument '%s'\n", argv[0], argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return 2;
    }
    if (workers < 2 || workers > 64 || iters < 1 || bytes < 4) {
        fprintf(stderr, "bench: need --workers 2..64, --iters >= 1, --size >= 4\n");
        return 2;
    }
    char *eps[64];
    for (int r = 0; r < workers; r++) {
        eps[r] = malloc(64);
        snprintf(eps[r], 64, "tcp://127.0.0.1:%d", sy_free_tcp_port());
    }
    sy_cert certs[64];
    for (int r = 0; curve && r < workers; r++)
        if (sy_cert_new(&certs[r])) {
            fprintf(stderr, "bench: %s\n", sy_lasterr());
            return 2;
        }
    int pfd[2];
    if (pipe(pfd))
        return 2;
    pid_t pids[64];
    for (int r = 0; r < workers; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(pfd[0]);
            _exit(coll_child(r, workers, eps, op, bytes, bf16, iters, pfd[1], curve ? certs : NULL));
        }
    }
    close(pfd[1]);
    double med = NAN;
    uint64_t sent = 0;
    int ok = read(pfd[0], &med, sizeof med) == sizeof med && read(pfd[0], &sent, sizeof sent) == sizeof sent;
    close(pfd[0]);
    int fails = 0;
    for (int r = 0; r < workers; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        fails += !WIFEXITED(st) || WEXITSTATUS(st);
    }
    if (!ok || fails) {
        fprintf(stderr, "bench: %d of %d ranks failed\n", fails, workers);
        return 1;
    }
    double algbw = bytes / med / 1e9;
    double busbw = op == 0 ? algbw * 2.0 * (workers - 1) / workers : algbw * (double)(workers - 1) / workers;
    double per_iter_sent = (double)sent / (iters + 2);
    json_error_t jerr;
    if (json) {
        if (print_json(json_pack_ex(&jerr, 0, "{s:s, s:I, s:i, s:s, s:b, s:f, s:f, s:f, s:I}", "op",
                                    op ? "alltoall" : "allreduce", "bytes", (json_int_t)bytes, "workers", workers,
                                    "wire", bf16 ? "bf16" : "fp32", "curve", curve, "median_ms", rnd(med * 1e3, 3),
                                    "algbw_gbs", rnd(algbw, 3), "busbw_gbs", rnd(busbw, 3), "bytes_sent_per_rank",
                                    (json_int_t)llround(per_iter_sent)),
                       &jerr))
            return 1;
    } else
        printf("%s of %.1f MiB over %d processes (tcp loopback, %s wire%s): median %.2f ms, algorithm bandwidth "
               "%.2f GB/s, bus bandwidth %.2f GB/s, %.1f MiB sent per rank\n",
               op ? "all-to-all" : "all-reduce", bytes / 1048576.0, workers, bf16 ? "bf16" : "fp32",
               curve ? ", CURVE" : "", med * 1e3, algbw,
               busbw, per_iter_sent / 1048576.0);
    for (int r = 0; r < workers; r++)
        free(eps[r]);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "allreduce") || !strcmp(argv[1], "alltoall")))
        return bench_collective(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fprintf(stdout, "usage: switchyard bench [CONFIG] [--steps N] [--warmup N] [--threads N] [--json]\n"
                        "       switchyard bench allreduce|alltoall [--size BYTES[K|M|G]] [--workers N] "
                        "[--wire fp32|bf16] [--iters N] [--curve] [--json]\n");
        return 0;
    }
    return bench_model(argc, argv);
}
