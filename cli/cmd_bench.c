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

#include "blas_setup.h"
#include "commands.h"
#include "config.h"
#include "data.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "peer.h"
#include "rng.h"

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

static int bench_model(int argc, char **argv) {
    const char *path = NULL;
    int steps = 10, warmup = 2, json = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "bench: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else
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
    double *st = calloc((size_t)steps, sizeof(double));
    sy_model_times acc = {0};
    double t_opt = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (train) {
            sy_batch_fill(train, tc->seed, s, 0, B, T, batch, NULL);
        } else {
            sy_rng r = {sy_hash4(tc->seed, (uint64_t)s, 0, 0)};
            for (int i = 0; i < B * (T + 1); i++)
                batch[i] = (int32_t)(sy_rng_next(&r) & 255);
        }
        double t0 = sy_now();
        sy_pass ps = {.B = B, .T = T, .groups = tc->groups, .training = 1, .seed = tc->seed, .step = s};
        sy_losses l;
        sy_model_zero_grad(m);
        sy_model_timers(m, NULL, 1);
        if (sy_model_forward(m, &ps, batch, &l) || sy_model_backward(m)) {
            fprintf(stderr, "bench: %s\n", sy_lasterr());
            return 1;
        }
        double t1 = sy_now();
        double norm = sqrt(sy_sumsq(sy_model_grads(m), lay->total));
        sy_adamw_step(lay, sy_model_params(m), sy_model_grads(m), mom, vel, s + 1, sy_lr_at(tc, s), tc,
                      sy_clip_scale(norm, tc->grad_clip));
        double t2 = sy_now();
        if (s >= warmup) {
            sy_model_times mt;
            sy_model_timers(m, &mt, 0);
            acc.forward += mt.forward;
            acc.backward += mt.backward;
            acc.router += mt.router;
            acc.experts += mt.experts;
            t_opt += t2 - t1;
            st[s - warmup] = t2 - t0;
        }
    }
    double total = 0;
    for (int i = 0; i < steps; i++)
        total += st[i];
    double med = median(st, steps);
    double tokens = (double)B * T, tps = tokens / med;
    double fpt = sy_model_flops_per_token(&cfg.model, T), flops = fpt * tps;
    size_t wbytes = lay->total * 4, acts = sy_model_activation_bytes(m);
    size_t need = wbytes * 4 /* weights, grads, two moments */ + acts;
    long rss = peak_rss_bytes();
    double n = steps;
    const sy_model_cfg *mc = &cfg.model;
    size_t nparams = 0; /* trainable numbers, without the arena's alignment padding */
    for (int i = 0; i < lay->n_params; i++)
        nparams += lay->params[i].numel;
    if (json) {
        printf("{\"mode\":\"single\",\"config\":\"%s\",\"threads\":%d,\"kernel\":\"%s\",\"batch\":%d,\"seq\":%d,"
               "\"steps\":%d,\"tokens_per_s\":%.1f,\"step_ms\":%.2f,\"forward_ms\":%.2f,\"backward_ms\":%.2f,"
               "\"router_ms\":%.2f,\"experts_ms\":%.2f,\"alltoall_ms\":0,\"allreduce_ms\":0,\"optimizer_ms\":%.2f,"
               "\"flops_per_token\":%.0f,\"achieved_gflops\":%.2f,\"sgemm_peak_gflops\":%.2f,\"mfu\":%.4f,"
               "\"peak_rss_bytes\":%ld,\"model_bytes\":%zu,\"rss_ratio\":%.3f,\"bytes_sent_per_step\":0,"
               "\"params\":%zu,\"vocab\":%d,\"d_model\":%d,\"n_layers\":%d,\"n_heads\":%d,\"d_ff\":%d,"
               "\"n_experts\":%d,\"switch_every\":%d,\"model_seq_len\":%d,\"top_k\":%d,"
               "\"capacity_factor\":%.7g,\"aux_loss_coef\":%.7g,\"z_loss_coef\":%.7g,\"init_scale\":%.7g,"
               "\"lr\":%.7g,\"weight_decay\":%.7g,\"beta1\":%.7g,\"beta2\":%.7g,\"eps\":%.7g,"
               "\"grad_clip\":%.7g,\"seed\":%" PRIu64 "}\n",
               path ? path : def, sy_blas_threads(), sy_blas_kernel(), B, T, steps, tps, med * 1e3,
               acc.forward / n * 1e3, acc.backward / n * 1e3, acc.router / n * 1e3, acc.experts / n * 1e3,
               t_opt / n * 1e3, fpt, flops / 1e9, peak, flops / 1e9 / peak, rss, need, (double)rss / need, nparams,
               mc->vocab, mc->d_model, mc->n_layers, mc->n_heads, mc->d_ff, mc->n_experts, mc->switch_every,
               mc->seq_len, mc->top_k, (double)mc->capacity_factor, (double)mc->aux_loss_coef,
               (double)mc->z_loss_coef, (double)mc->init_scale, (double)tc->lr, (double)tc->weight_decay,
               (double)tc->beta1, (double)tc->beta2, (double)tc->eps, (double)tc->grad_clip, tc->seed);
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
    free(st);
    free(mom);
    free(vel);
    free(batch);
    sy_tokens_destroy(&train);
    sy_model_destroy(&m);
    sy_config_free(&cfg);
    return 0;
}

/* ---------------------------------------------------------------- collectives */

static size_t g_chunk = 1 << 20;

static int coll_child(int rank, int world, char **eps, int op, size_t bytes, int bf16, int iters, int wfd) {
    void *ctx = zmq_ctx_new();
    sy_peer *p = sy_peer_new(ctx, eps[rank]);
    if (!p) {
        fprintf(stderr, "bench: rank %d: %s\n", rank, sy_lasterr());
        return 1;
    }
    volatile int abort_flag = 0;
    if (sy_peer_setup(p, 1, rank, world, eps, 30000, &abort_flag))
        return 1;
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
    zmq_ctx_term(ctx);
    free(data);
    free(t);
    return rc ? 1 : 0;
}

static int bench_collective(int argc, char **argv) {
    int op = !strcmp(argv[0], "alltoall");
    size_t bytes = 16u << 20;
    int workers = 2, bf16 = 0, iters = 10, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            char *end;
            double v = strtod(argv[++i], &end);
            if (*end == 'K' || *end == 'k')
                v *= 1024;
            else if (*end == 'M' || *end == 'm')
                v *= 1024 * 1024;
            else if (*end == 'G' || *end == 'g')
                v *= 1024.0 * 1024 * 1024;
            bytes = (size_t)v;
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            g_chunk = (size_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--wire") && i + 1 < argc) {
            const char *w = argv[++i];
            if (strcmp(w, "bf16") && strcmp(w, "fp32")) {
                fprintf(stderr, "bench: --wire is fp32 or bf16, not '%s'\n", w);
                return 2;
            }
            bf16 = !strcmp(w, "bf16");
        } else if (!strcmp(argv[i], "--json"))
            json = 1;
        else {
            fprintf(stderr, "bench %s: unexpected argument '%s'\n", argv[0], argv[i]);
            return 2;
        }
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
    int pfd[2];
    if (pipe(pfd))
        return 2;
    pid_t pids[64];
    for (int r = 0; r < workers; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(pfd[0]);
            _exit(coll_child(r, workers, eps, op, bytes, bf16, iters, pfd[1]));
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
    if (json)
        printf("{\"op\":\"%s\",\"bytes\":%zu,\"workers\":%d,\"wire\":\"%s\",\"median_ms\":%.3f,\"algbw_gbs\":%.3f,"
               "\"busbw_gbs\":%.3f,\"bytes_sent_per_rank\":%.0f}\n",
               op ? "alltoall" : "allreduce", bytes, workers, bf16 ? "bf16" : "fp32", med * 1e3, algbw, busbw,
               per_iter_sent);
    else
        printf("%s of %.1f MiB over %d processes (tcp loopback, %s wire): median %.2f ms, algorithm bandwidth "
               "%.2f GB/s, bus bandwidth %.2f GB/s, %.1f MiB sent per rank\n",
               op ? "all-to-all" : "all-reduce", bytes / 1048576.0, workers, bf16 ? "bf16" : "fp32", med * 1e3, algbw,
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
                        "[--wire fp32|bf16] [--iters N] [--json]\n");
        return 0;
    }
    return bench_model(argc, argv);
}
