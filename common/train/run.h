/* run.h: the bookkeeping of a training run, one implementation for `switchyard train`
 * and the coordinator: the run id, the metadata every checkpoint carries, the progress
 * line, the JSON-lines run log (jansson) and the per-expert load table. */
#ifndef SY_RUN_H
#define SY_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "model.h"

/* ---------------------------------------------------------------- run id */

/* A new run id: seconds since the epoch and the process id, "%08lx-%04x". */
void sy_run_id_new(char *out, size_t n);
/* Copies the run id a checkpoint was saved under into out (unchanged when it has none). */
void sy_run_id_from_ckpt(const sy_ckpt *ck, char *out, size_t n);

/* ---------------------------------------------------------------- checkpoint metadata */

/* What a training checkpoint says besides its tensors: the run id, the data position
 * and the AdamW update count (both `step`), the worker count and the config (YAML, or
 * NULL). */
int sy_run_ckpt_meta(sy_ckpt_writer *w, const char *run_id, int64_t step, int workers, const char *config_yaml);

/* ---------------------------------------------------------------- progress line */

/* Time of one step by phase, seconds (per rank means in a distributed run). optimizer:
 * AdamW (in a distributed run the commit of the previous step, the buddy replicas' AdamW
 * included); replica: the main thread's time sending and receiving buddy replicas (what
 * the overlap thread sends during the backward is not in it); busiest: the largest
 * compute + optimizer of any one rank (so step - busiest is the step's time that no rank's
 * own work explains: communication on the critical path; busiest - the means is time
 * the others waited for the busiest, load imbalance); 0 leaves any of the last three out
 * of the run log. */
typedef struct {
    double step, compute, alltoall, allreduce, optimizer, replica, busiest;
} sy_run_times;

/* Loss terms and tokens since the last progress line. */
typedef struct {
    double t0;
    int64_t tokens;
    sy_losses sum;
    int n;
} sy_progress;

void sy_progress_start(sy_progress *p);
void sy_progress_add(sy_progress *p, const sy_losses *l, int64_t tokens);
/* Whether step `done` (1-based) gets a line: every log_every, the last, the first of this process. */
int sy_progress_due(int64_t done, int64_t steps, int64_t first_done, int log_every);
/* Logs "step N/M | loss ... | lr | |g| | tok/s [| step ms (...)] | ETA" with the means
 * since the last line and starts the next interval. tokens_per_step: for the ETA. */
void sy_progress_log(sy_progress *p, int64_t done, int64_t steps, int64_t tokens_per_step, double lr,
                     double grad_norm, const sy_run_times *t);

/* ---------------------------------------------------------------- run log */

/* One JSON object per line, appended and flushed line by line (`switchyard plot` reads it). */
typedef struct sy_runlog sy_runlog;

/* Opens (appends to) DIR/NAME; NULL with sy_lasterr when it cannot. */
sy_runlog *sy_runlog_open(const char *dir, const char *name);
void sy_runlog_close(sy_runlog **log);

typedef struct {
    const char *run_id;
    uint64_t epoch;        /* 0: not written (one process) */
    int64_t step;          /* steps done */
    sy_losses loss;
    double lr, grad_norm, tokens_per_s;
    const sy_run_times *times; /* NULL: not written */
    uint64_t bytes_sent;   /* bytes the ranks sent in the step (all-to-all + all-reduce); 0: not written */
    int workers;
    double time;           /* seconds since the run started here */
} sy_runlog_step;

/* {"run_id","epoch"?,"step","loss","ce","aux","z","lr","grad_norm","tokens_per_s",
 *  "step_ms"?,"compute_ms"?,"alltoall_ms"?,"allreduce_ms"?,"bytes_sent"?,"workers","time"} */
void sy_runlog_write_step(sy_runlog *log, const sy_runlog_step *s);
/* {"run_id","step","val_ce","workers","time"} */
void sy_runlog_write_val(sy_runlog *log, const char *run_id, int64_t step, double val_ce, int workers, double time);

/* ---------------------------------------------------------------- expert load */

/* Routed choices and kept tokens per expert of every switch layer, and the kept tokens
 * by the language of the document they come from. Index k = switch-layer index * E + e. */
typedef struct {
    int n_switch, E, n_langs;
    int64_t *wanted, *kept;   /* [n_switch * E] */
    int64_t *lang;            /* [n_switch * E * n_langs], NULL when n_langs == 0 */
    int *scratch;             /* [2 * E] */
} sy_expert_load;

int sy_expert_load_init(sy_expert_load *x, const sy_model_cfg *mc, int n_langs);
void sy_expert_load_free(sy_expert_load *x);
void sy_expert_load_clear(sy_expert_load *x);
size_t sy_expert_load_count(const sy_expert_load *x);      /* n_switch * E */
size_t sy_expert_load_lang_count(const sy_expert_load *x); /* n_switch * E * n_langs */
/* Adds the routing of m's last forward. lang: [N] language of each of its N tokens (kept
 * tokens are counted by it when n_langs > 0), or NULL. */
void sy_expert_load_add_model(sy_expert_load *x, const sy_model *m, const int16_t *lang, int64_t N);
/* Adds counts laid out as above (a worker's report); lang may be NULL. */
void sy_expert_load_add_counts(sy_expert_load *x, const uint32_t *wanted, const uint32_t *kept, const uint32_t *lang);
/* The table printed at the end of a run: share of routed choices and drop rate. */
void sy_expert_load_print(const sy_expert_load *x, const sy_model_cfg *mc, FILE *out);

#endif
