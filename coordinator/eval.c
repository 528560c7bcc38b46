/* eval.c: validation loss of committed checkpoints, computed in a thread of its own so
 * the coordinator's loop goes on answering heartbeats, reports and status requests (a
 * validation pass takes seconds; workers declare the coordinator lost after
 * cluster.timeout_ms of silence). */
#include <math.h>
#include <stdlib.h>

#include "coord.h"
#include "data.h"
#include "evaluate.h"
#include "model_ckpt.h"

/* Validation loss of a saved checkpoint, in this process (eval mode, one group). */
static double evaluate_checkpoint(const sy_config *cfg, const char *dir, const volatile int *cancel) {
    char path[4096];
    snprintf(path, sizeof path, "%s/val.bin", cfg->data.dir);
    sy_tokens *val = sy_tokens_load(path);
    if (!val)
        return NAN;
    int B = cfg->train.batch_size, T = cfg->train.seq_len;
    sy_model *m = sy_model_new(&cfg->model, B, T, NULL);
    sy_ckpt *ck = sy_ckpt_open(dir);
    int32_t *buf = malloc((size_t)B * (T + 1) * sizeof(int32_t));
    double v = NAN;
    if (m && ck && buf && !sy_model_io_load(ck, sy_model_layout(m), sy_model_params(m), NULL, NULL, NULL))
        v = sy_evaluate_cancellable(m, val, cfg, buf, cancel);
    free(buf);
    sy_ckpt_close(&ck);
    sy_model_destroy(&m);
    sy_tokens_destroy(&val);
    return v;
}

static void *eval_main(void *arg) {
    coord_eval *e = arg;
    e->result = evaluate_checkpoint(e->cfg, e->dir, &e->cancel);
    __atomic_store_n(&e->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int coord_eval_start(coord_eval *e, const sy_config *cfg, const char *dir, int64_t step) {
    if (e->running)
        return 0;
    e->cfg = cfg;
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    e->step = step;
    e->done = 0;
    e->cancel = 0;
    if (pthread_create(&e->thread, NULL, eval_main, e))
        return 0;
    e->running = 1;
    return 1;
}

int coord_eval_poll(coord_eval *e, double *val, int64_t *step) {
    if (!e->running || !__atomic_load_n(&e->done, __ATOMIC_ACQUIRE))
        return 0;
    pthread_join(e->thread, NULL);
    e->running = 0;
    *val = e->result;
    *step = e->step;
    return 1;
}

void coord_eval_join(coord_eval *e) {
    /* the coordinator is closing: a pass still running has no one to report to */
    __atomic_store_n(&e->cancel, 1, __ATOMIC_RELEASE);
    if (e->running)
        pthread_join(e->thread, NULL);
    e->running = 0;
}
