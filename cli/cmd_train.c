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

#include "fsutil.h"
#include "blas_setup.h"
#include "checkpoint.h"
#include "commands.h"
#include "config.h"
#include "data.h"
#include "distill.h"
#include "evaluate.h"
#include "log.h"
#include "model.h"
#include "model_ckpt.h"
#include "model_load.h"
#include "optim.h"
#include "run.h"
#include "step.h"

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
                           const char *run_id, const char *yaml) {
    double t0 = sy_now();
    sy_ckpt_writer *w = sy_ckpt_writer_new(cfg->checkpoint.dir, step);
    if (!w)
        return -1;
    int rc = sy_model_io_save(w, sy_model_layout(m), sy_model_params(m), mom, vel) ||
             sy_run_ckpt_meta(w, run_id, step, 1, yaml) || sy_ckpt_writer_commit(w, cfg->checkpoint.keep);
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

/* Distillation (train.distill_from): a teacher loaded from a checkpoint runs an eval
 * forward on the same batch inside each step (common/distill.h). */
static int teacher_open(sy_distill *t, const sy_config *cfg) {
    const sy_train_cfg *tc = &cfg->train;
    int B = tc->batch_size, T = tc->seq_len;
    sy_config tcfg;
    char dir[4096];
    t->teacher = sy_model_load(tc->distill_from, &tcfg, B, T, dir, sizeof dir);
    if (t->teacher && tcfg.model.vocab != cfg->model.vocab) {
        sy_seterr("vocabulary %d, the student's is %d", tcfg.model.vocab, cfg->model.vocab);
        sy_model_destroy(&t->teacher);
    }
    if (!t->teacher) {
        sy_config_free(&tcfg);
        sy_err_prefix("train.distill_from"); /* the message names the path */
        return -1;
    }
    t->alpha = tc->distill_alpha;
    t->temperature = tc->distill_temperature;
    t->dlogits = malloc((size_t)B * T * cfg->model.vocab * sizeof(float));
    if (!t->dlogits) {
        sy_config_free(&tcfg);
        sy_seterr("train: out of memory");
        return -1;
    }
    sy_info("distilling from %s (d_model %d, %d layers, %d experts every %d layers): alpha %g, temperature %g",
            dir, tcfg.model.d_model, tcfg.model.n_layers, tcfg.model.n_experts, tcfg.model.switch_every,
            (double)t->alpha, (double)t->temperature);
    sy_config_free(&tcfg);
    return 0;
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
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            char *end;
            steps_override = strtoll(argv[++i], &end, 10);
            if (*end || steps_override < 1) {
                fprintf(stderr, "train: --steps '%s': expected a whole number >= 1\n", argv[i]);
                free(sets);
                return 2;
            }
        }
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
    sy_expert_load load = {0};
    sy_runlog *log = NULL;
    char *yaml = NULL;
    sy_mesh mesh = {0};
    sy_distill teach = {0};
    if ((path ? sy_config_load(&cfg, path) : sy_config_load_default(&cfg)))
        goto fail;
    for (int i = 0; i < nsets; i++)
        if (sy_config_set(&cfg, sets[i]))
            goto fail;
    if (steps_override > 0)
        cfg.train.steps = steps_override;
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
    if (tc->distill_from && teacher_open(&teach, &cfg))
        goto fail;
    const sy_layout *lay = sy_model_layout(m);
    mom = calloc(lay->total, sizeof(float));
    vel = calloc(lay->total, sizeof(float));
    batch = malloc((size_t)B * (T + 1) * sizeof(int32_t));
    yaml = sy_config_to_yaml(&cfg);
    if (!mom || !vel || !batch || !yaml) {
        sy_seterr("train: out of memory");
        goto fail;
    }
    int64_t step = 0;
    char run_id[64];
    sy_run_id_new(run_id, sizeof run_id);
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
        sy_run_id_from_ckpt(ck, run_id, sizeof run_id);
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
    if (!(log = sy_runlog_open(cfg.checkpoint.dir, "train_log.jsonl")))
        sy_warn("%s", sy_lasterr());
    if (sy_expert_load_init(&load, &cfg.model, 0))
        goto fail;

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

    /* the step of a distributed run, over a mesh of one rank and the local communicator */
    sy_stepper st;
    if (sy_stepper_local(&st, &mesh, m, &cfg, mom, vel, batch))
        goto fail;
    st.distill = &teach;
    double soft_acc = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t_start = sy_now(), val_loss = NAN;
    int64_t first_step = step, tokens_per_step = (int64_t)B * T;
    sy_progress prog;
    sy_progress_start(&prog);
    while (step < tc->steps && !g_stop) {
        sy_step_result r;
        if (sy_step_run(&st, train, step, &r))
            goto fail;
        sy_expert_load_add_model(&load, m, NULL, 0);
        sy_progress_add(&prog, &r.loss, r.tokens);
        soft_acc += r.soft;
        step++;
        int last = step == tc->steps;
        if ((tc->eval_every > 0 && step % tc->eval_every == 0) || last) {
            val_loss = sy_evaluate(m, val, &cfg, batch);
            sy_info("validation loss %.4f nats/byte at step %" PRId64, val_loss, step);
            sy_runlog_write_val(log, run_id, step, val_loss, 1, sy_now() - t_start);
        }
        if (sy_progress_due(step, tc->steps, first_step + 1, tc->log_every)) {
            sy_run_times t = {.step = r.t.compute + r.t.alltoall + r.t.allreduce + r.t.optimizer,
                              .compute = r.t.compute,
                              .alltoall = r.t.alltoall,
                              .allreduce = r.t.allreduce,
                              .optimizer = r.t.optimizer};
            double tps = prog.tokens / (sy_now() - prog.t0);
            sy_runlog_write_step(log, &(sy_runlog_step){.run_id = run_id,
                                                        .step = step,
                                                        .loss = {prog.sum.total / prog.n, prog.sum.ce / prog.n,
                                                                 prog.sum.aux / prog.n, prog.sum.z / prog.n},
                                                        .lr = r.lr,
                                                        .grad_norm = r.grad_norm,
                                                        .tokens_per_s = tps,
                                                        .times = &t,
                                                        .workers = 1,
                                                        .time = sy_now() - t_start});
            if (teach.teacher)
                sy_info("distillation | soft %.4f (mean of the soft term since the last progress line)", soft_acc / prog.n);
            soft_acc = 0;
            sy_progress_log(&prog, step, tc->steps, tokens_per_step, r.lr, r.grad_norm, &t);
        }
        if (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0 && !last &&
            save_checkpoint(&cfg, m, mom, vel, step, run_id, yaml))
            goto fail;
    }
    if (g_stop)
        sy_warn("stopped by signal %d at step %" PRId64 ": saving a checkpoint", (int)g_stop, step);
    if (step > first_step || found != 0) {
        if (save_checkpoint(&cfg, m, mom, vel, step, run_id, yaml))
            goto fail;
    }
    double secs = sy_now() - t_start;
    if (step > first_step) {
        sy_expert_load_print(&load, &cfg.model, stdout);
        printf("\ntrained steps %" PRId64 "..%" PRId64 " in %.1fs (%.0f tokens/s); validation loss %.4f nats/byte\n",
               first_step, step, secs, (step - first_step) * (double)B * T / secs, val_loss);
        printf("model saved under %s\n", cfg.checkpoint.dir);
    }
    code = g_stop ? 130 : 0;
    goto out;
fail:
    fprintf(stderr, "train: %s\n", sy_lasterr());
out:
    sy_runlog_close(&log);
    sy_expert_load_free(&load);
    free(yaml);
    free(sets);
    free(mom);
    free(vel);
    free(batch);
    sy_mesh_free(&mesh);
    sy_model_destroy(&m);
    sy_model_destroy(&teach.teacher);
    free(teach.dlogits);
    sy_tokens_destroy(&train);
    sy_tokens_destroy(&val);
    sy_config_free(&cfg);
    return code;
}
