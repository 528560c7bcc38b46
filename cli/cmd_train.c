/* switchyard train [CONFIG]: single-process training with progress, validation, an
 * expert-load table and checkpoints (the last one is the saved model). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "append.h"
#include "blas_setup.h"
#include "checkpoint.h"
#include "commands.h"
#include "config.h"
#include "data.h"
#include "evaluate.h"
#include "log.h"
#include "model.h"
#include "model_io.h"
#include "optim.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static void usage(void) {
    fprintf(stderr,
            "usage: switchyard train [CONFIG] [--set section.key=value ...] [--steps N] [--resume] [--fresh]\n"
            "  CONFIG defaults to the embedded configs/default.yaml. Data comes from data.dir (made by\n"
            "  `switchyard prepare`); checkpoints and the log go to checkpoint.dir. With --resume (the default\n"
            "  when checkpoint.dir already holds a checkpoint) training continues from the newest one that\n"
            "  verifies; --fresh starts over.\n");
}


static int save_checkpoint(const sy_config *cfg, sy_model *m, const float *mom, const float *vel, int64_t step,
                           const char *run_id) {
    double t0 = sy_now();
    sy_ckpt_writer *w = sy_ckpt_writer_new(cfg->checkpoint.dir, step);
    if (!w)
        return -1;
    char buf[64];
    char *yaml = sy_config_to_yaml(cfg);
    snprintf(buf, sizeof buf, "%" PRId64, step);
    int rc = sy_model_io_save(w, sy_model_layout(m), sy_model_params(m), mom, vel) ||
             sy_ckpt_writer_set(w, SY_CKPT_KEY_RUN_ID, run_id) || sy_ckpt_writer_set(w, SY_CKPT_KEY_DATA_POS, buf) ||
             sy_ckpt_writer_set(w, "adam_t", buf) || sy_ckpt_writer_set(w, "workers", "1") ||
             (yaml && sy_ckpt_writer_set_config(w, yaml, strlen(yaml))) ||
             sy_ckpt_writer_commit(w, cfg->checkpoint.keep);
    free(yaml);
    if (!rc) {
        uint64_t bytes;
        double secs;
        sy_ckpt_writer_stats(w, &bytes, &secs);
        sy_info("checkpoint %s: %.1f MB in %.2fs (%.0f MB/s)", sy_ckpt_writer_dir(w), bytes / 1e6, sy_now() - t0,
                bytes / 1e6 / (secs > 0 ? secs : 1e-9));
    }
    sy_ckpt_writer_destroy(&w);
    return rc ? -1 : 0;
}

static void print_load_table(const sy_model_cfg *c, const int64_t *wanted, const int64_t *kept) {
    int E = c->n_experts;
    printf("\nexpert load (share of routed choices / drop rate), training run:\n");
    printf("%-8s", "layer");
    for (int e = 0; e < E && e < 16; e++)
        printf("  expert %-6d", e);
    printf("   drop\n");
    for (int l = 0; l < c->n_layers; l++) {
        if (!sy_is_switch_layer(c, l))
            continue;
        int64_t tw = 0, tk = 0;
        for (int e = 0; e < E; e++) {
            tw += wanted[(size_t)l * E + e];
            tk += kept[(size_t)l * E + e];
        }
        printf("%-8d", l);
        for (int e = 0; e < E && e < 16; e++) {
            int64_t w = wanted[(size_t)l * E + e], k = kept[(size_t)l * E + e];
            printf("  %5.1f%% / %4.1f%%", tw ? 100.0 * w / tw : 0.0, w ? 100.0 * (w - k) / w : 0.0);
        }
        printf("  %5.2f%%\n", tw ? 100.0 * (tw - tk) / tw : 0.0);
    }
}

int cmd_train(int argc, char **argv) {
    sy_config cfg;
    sy_config_defaults(&cfg);
    const char *path = NULL;
    int resume = -1; /* -1: automatic */
    int64_t steps_override = -1;
    char **sets = calloc((size_t)argc, sizeof(char *));
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc)
            sets[nsets++] = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps_override = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--resume"))
            resume = 1;
        else if (!strcmp(argv[i], "--fresh"))
            resume = 0;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            free(sets);
            return 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "train: unexpected argument '%s'\n", argv[i]);
            usage();
            free(sets);
            return 2;
        } else
            path = argv[i];
    }
    int code = 2;
    sy_tokens *train = NULL, *val = NULL;
    sy_model *m = NULL;
    float *mom = NULL, *vel = NULL;
    int32_t *batch = NULL;
    int64_t *wanted = NULL, *kept = NULL;
    FILE *log = NULL;
    if ((path ? sy_config_load(&cfg, path) : sy_config_load_default(&cfg)))
        goto fail;
    for (int i = 0; i < nsets; i++)
        if (sy_config_set(&cfg, sets[i]))
            goto fail;
    if (steps_override > 0) {
        char s[64];
        snprintf(s, sizeof s, "train.steps=%" PRId64, steps_override);
        if (sy_config_set(&cfg, s))
            goto fail;
    }
    if (sy_config_check(&cfg))
        goto fail;
    if (cfg.train.threads > 0)
        sy_blas_set_threads(cfg.train.threads);

    const sy_train_cfg *tc = &cfg.train;
    int B = tc->batch_size, T = tc->seq_len;
    char p[4096];
    snprintf(p, sizeof p, "%s/train.bin", cfg.data.dir);
    if (!(train = sy_tokens_load(p))) {
        sy_err_prefix("training data (run `switchyard prepare` first, or set data.dir)");
        goto fail;
    }
    snprintf(p, sizeof p, "%s/val.bin", cfg.data.dir);
    if (!(val = sy_tokens_load(p)))
        goto fail;
    if (!(m = sy_model_new(&cfg.model, B, T, NULL)))
        goto fail;
    const sy_layout *lay = sy_model_layout(m);
    mom = calloc(lay->total, sizeof(float));
    vel = calloc(lay->total, sizeof(float));
    batch = malloc((size_t)B * (T + 1) * sizeof(int32_t));
    wanted = calloc((size_t)cfg.model.n_layers * cfg.model.n_experts, sizeof(int64_t));
    kept = calloc((size_t)cfg.model.n_layers * cfg.model.n_experts, sizeof(int64_t));
    if (!mom || !vel || !batch || !wanted || !kept) {
        sy_seterr("train: out of memory");
        goto fail;
    }
    int64_t step = 0;
    char run_id[64];
    snprintf(run_id, sizeof run_id, "%08lx-%04x", (unsigned long)time(NULL), (unsigned)(getpid() & 0xffff));
    char latest[4096];
    int found = resume == 0 ? 1 : sy_ckpt_latest(cfg.checkpoint.dir, latest, sizeof latest, &step);
    if (found < 0)
        goto fail;
    if (found == 0) {
        sy_ckpt *ck = sy_ckpt_open(latest);
        int had = 0;
        if (!ck || sy_model_io_load(ck, lay, sy_model_params(m), mom, vel, &had)) {
            sy_ckpt_close(&ck);
            goto fail;
        }
        const char *rid = sy_ckpt_get(ck, SY_CKPT_KEY_RUN_ID);
        if (rid)
            snprintf(run_id, sizeof run_id, "%s", rid);
        sy_ckpt_close(&ck);
        sy_info("resuming run %s from %s (step %" PRId64 "%s)", run_id, latest, step,
                had ? "" : ", no optimizer state: moments start at zero");
        if (step >= tc->steps) {
            sy_info("the run already reached step %" PRId64 " of %" PRId64 "; nothing to do (--fresh starts over)",
                    step, tc->steps);
        }
    } else {
        if (resume == 1) {
            sy_seterr("train: --resume: no checkpoint under %s", cfg.checkpoint.dir);
            goto fail;
        }
        sy_model_init_weights(m, tc->seed);
        step = 0;
    }
    if (sy_ckpt_make_root(cfg.checkpoint.dir))
        goto fail;
    snprintf(p, sizeof p, "%s/train_log.jsonl", cfg.checkpoint.dir);
    log = fopen(p, "a");
    if (!log)
        sy_warn("%s: cannot open the run log: %s", p, strerror(errno));

    size_t n_dense = 0, n_expert = 0;
    for (int i = 0; i < lay->n_params; i++) {
        if (lay->params[i].expert >= 0)
            n_expert += lay->params[i].numel;
        else
            n_dense += lay->params[i].numel;
    }
    sy_info("run %s: model d_model %d, %d layers, %d heads, d_ff %d, %d experts every %d layers (top-%d): "
            "%.2fM parameters (%.2fM in experts)",
            run_id, cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads, cfg.model.d_ff, cfg.model.n_experts,
            cfg.model.switch_every, cfg.model.top_k, (n_dense + n_expert) / 1e6, n_expert / 1e6);
    sy_info("data: %s (%.1f MB train, %.2f MB validation); batch %d x %d tokens, %d group%s; %" PRId64
            " steps; %d threads, kernel %s",
            cfg.data.dir, train->n_bytes / 1e6, val->n_bytes / 1e6, B, T, tc->groups,
            tc->groups == 1 ? "" : "s", tc->steps, sy_blas_threads(), sy_blas_kernel());

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t_start = sy_now(), t_log = t_start, val_loss = NAN;
    int64_t first_step = step, tokens_since = 0;
    double loss_acc = 0, ce_acc = 0, aux_acc = 0, z_acc = 0;
    int acc_n = 0;
    while (step < tc->steps && !g_stop) {
        if (sy_batch_fill(train, tc->seed, step, 0, B, T, batch, NULL))
            goto fail;
        sy_pass ps = {.B = B, .T = T, .groups = tc->groups, .training = 1, .seed = tc->seed, .step = step};
        sy_losses l;
        sy_model_zero_grad(m);
        if (sy_model_forward(m, &ps, batch, &l) || sy_model_backward(m))
            goto fail;
        if (!isfinite(l.total)) {
            sy_seterr("train: the loss is %f at step %" PRId64 "; stopping (lower train.lr or raise grad_clip)",
                      l.total, step);
            goto fail;
        }
        for (int layer = 0; layer < cfg.model.n_layers; layer++) {
            if (!sy_is_switch_layer(&cfg.model, layer))
                continue;
            int w[1024], k[1024];
            if (cfg.model.n_experts > 1024)
                break;
            sy_model_expert_load(m, layer, w, k);
            for (int e = 0; e < cfg.model.n_experts; e++) {
                wanted[(size_t)layer * cfg.model.n_experts + e] += w[e];
                kept[(size_t)layer * cfg.model.n_experts + e] += k[e];
            }
        }
        double norm = sqrt(sy_sumsq(sy_model_grads(m), lay->total));
        float lr = sy_lr_at(tc, step);
        sy_adamw_step(lay, sy_model_params(m), sy_model_grads(m), mom, vel, step + 1, lr, tc,
                      sy_clip_scale(norm, tc->grad_clip));
        step++;
        tokens_since += (int64_t)B * T;
        loss_acc += l.total;
        ce_acc += l.ce;
        aux_acc += l.aux;
        z_acc += l.z;
        acc_n++;
        int last = step == tc->steps;
        if ((tc->eval_every > 0 && step % tc->eval_every == 0) || last)
            val_loss = sy_evaluate(m, val, &cfg, batch);
        if (step % tc->log_every == 0 || last || step == first_step + 1) {
            double now = sy_now(), tps = tokens_since / (now - t_log);
            char eta[32];
            sy_fmt_duration(eta, sizeof eta, (tc->steps - step) * (double)B * T / tps);
            char vbuf[32] = "";
            if (!isnan(val_loss))
                snprintf(vbuf, sizeof vbuf, " | val %.4f", val_loss);
            sy_info("step %6" PRId64 "/%" PRId64 " | loss %.4f (ce %.4f aux %.3f z %.3f)%s | lr %.2e | |g| %.2f | "
                    "%.0f tok/s | ETA %s",
                    step, tc->steps, loss_acc / acc_n, ce_acc / acc_n, aux_acc / acc_n, z_acc / acc_n, vbuf, lr,
                    norm, tps, eta);
            if (log) {
                char vj[32] = "null";
                if (!isnan(val_loss))
                    snprintf(vj, sizeof vj, "%.6f", val_loss);
                /* whole records or none: a full disk never cuts or merges them */
                char rec[1024];
                int rn = snprintf(rec, sizeof rec,
                        "{\"run_id\":\"%s\",\"step\":%" PRId64 ",\"loss\":%.6f,\"ce\":%.6f,\"aux\":%.6f,\"z\":%.6f,"
                        "\"val_ce\":%s,\"lr\":%.6g,\"grad_norm\":%.4f,\"tokens_per_s\":%.1f,\"workers\":1,"
                        "\"time\":%.3f}\n",
                        run_id, step, loss_acc / acc_n, ce_acc / acc_n, aux_acc / acc_n, z_acc / acc_n, vj, lr, norm, tps, now - t_start);
                if (rn > 0 && (size_t)rn < sizeof rec && sy_append_record(fileno(log), rec, (size_t)rn))
                    sy_error("%s/train_log.jsonl: %s (step %" PRId64 ")", cfg.checkpoint.dir, sy_lasterr(), step);
            }
            t_log = now;
            tokens_since = 0;
            loss_acc = ce_acc = aux_acc = z_acc = 0;
            acc_n = 0;
        }
        if (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0 && !last &&
            save_checkpoint(&cfg, m, mom, vel, step, run_id))
            goto fail;
    }
    if (g_stop)
        sy_warn("stopped by signal %d at step %" PRId64 ": saving a checkpoint", (int)g_stop, step);
    if (step > first_step || found != 0) {
        if (save_checkpoint(&cfg, m, mom, vel, step, run_id))
            goto fail;
    }
    double secs = sy_now() - t_start;
    if (step > first_step) {
        print_load_table(&cfg.model, wanted, kept);
        printf("\ntrained steps %" PRId64 "..%" PRId64 " in %.1fs (%.0f tokens/s); validation loss %.4f nats/byte\n",
               first_step, step, secs, (step - first_step) * (double)B * T / secs, val_loss);
        printf("model saved under %s\n", cfg.checkpoint.dir);
    }
    code = g_stop ? 130 : 0;
    goto out;
fail:
    fprintf(stderr, "train: %s\n", sy_lasterr());
out:
    if (log)
        fclose(log);
    free(sets);
    free(mom);
    free(vel);
    free(batch);
    free(wanted);
    free(kept);
    sy_model_destroy(&m);
    sy_tokens_destroy(&train);
    sy_tokens_destroy(&val);
    sy_config_free(&cfg);
    return code;
}
