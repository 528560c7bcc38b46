/* coord.h: the coordinator's state, shared by its main loop (main.c) and its status
 * socket (status.c). */
#ifndef SY_COORD_H
#define SY_COORD_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "config.h"
#include "mesh.h"
#include "refcase.h"

#define MAX_WORKERS 256
#define SY_MAX_EVENTS 16
#define SY_BAL_WINDOW 20 /* steps of measured compute behind a re-balance */

typedef struct {
    double when;
    char what[200];
} sy_event;

enum phase { WAITING, ASSIGNING, TRAINING, SAVING, DONE };

typedef struct {
    char id[256];
    char hb_id[300];
    char host[128];
    char endpoint[256];
    char conn_addr[64];  /* the address its control connection comes from ("" unknown) */
    double gflops;
    unsigned cores, threads, pid;
    double last_seen;
    int rank;         /* -1 when not in the current mesh */
    int ready;
    int reported;
    int saved;
    int alive;
    double step_time;  /* its last step, seconds */
    double compute_s;  /* its own compute in the last step (waits for peers excluded) */
    double wait_s;     /* its time in all-to-all and all-reduce in the last step (transfer + waiting) */
    double tc[SY_BAL_WINDOW]; /* seconds of compute per step under the current plan, ring */
    int n_tc;
    int prev_rows;     /* rows under the plan before the last re-balance (0: none) */
    double prev_t;     /* and its median compute per step */
    double speed;      /* weight of its rows in the current shares (0: equal shares) */
} member;

typedef struct {
    sy_config cfg;
    char *yaml;
    void *zctx, *router;
    member m[MAX_WORKERS];
    int n;
    int min_workers;           /* go on with at least this many */
    int start_workers;         /* the first mesh waits for this many */
    int epochs_started;
    enum phase phase;
    uint64_t epoch;
    int64_t step, start_step;
    char run_id[64];
    sy_mesh mesh;
    int world;
    int rank_member[MAX_WORKERS];
    /* step aggregation */
    double loss, ce, aux, z, grad_norm, lr, t_compute, t_a2a, t_ar, t_opt, step_started, step_time;
    uint64_t tokens, bytes_sent;
    int64_t *load_wanted, *load_kept; /* [switch layers * E] over the run */
    double log_t0;
    int64_t log_tokens;
    double log_loss, log_ce, log_aux, log_z;
    int log_n;
    FILE *runlog;
    /* saving */
    sy_ckpt_writer *writer;
    int64_t save_step;
    int save_expect;
    int step_is_save_only;
    /* refcheck */
    const char *refcheck_dir, *out_dir;
    sy_refcase rc;
    int have_rc;
    int code;
    double t_start;
    int64_t epoch_step0;       /* the first step of the current epoch */
    int rebalancing;           /* the next epoch is a re-balance (measurements carry over) */
    int straggler_rank;        /* the rank the others waited for in the last step (-1: none) */
    double straggler_wait;     /* how long they waited for it, on average, seconds */
    uint64_t data_hash;        /* content hash of the training data (train.bin); 0 until known */
    char data_hash_from[4400]; /* where that hash came from */
    /* elasticity */
    char last_ckpt[4096];      /* newest complete checkpoint of this run ("" = none: start from the seed) */
    int64_t last_ckpt_step;
    int failures;              /* recoveries since the last step that completed */
    int64_t failed_at;
    int stop_requested;        /* a signal: save, then stop */
    double recover_started;    /* when the last recovery began (0 = none in progress) */
    /* monitoring */
    void *status;              /* the read-only status ROUTER, or NULL */
    double last_loss, last_ce, last_aux, last_z, last_tps, last_step_time, last_compute, last_a2a, last_ar;
    double val_loss;           /* NaN until measured */
    int64_t val_step;
    double ckpt_time;          /* when last_ckpt was committed */
    int n_langs;
    char langs[16][16];
    int64_t *load_lang;        /* [switch layers * E * n_langs] tokens by language per expert */
    sy_event events[SY_MAX_EVENTS];
    int n_events, next_event;
    /* validation runs in its own thread so steps never wait for it */
    pthread_t eval_thread;
    int eval_running;
    volatile int eval_done;
    char eval_dir[4096];
    int64_t eval_step;
    double eval_result;
} coord;

/* Balancing from measured compute (balance.c). sample: one step report of a member;
 * reset: a new epoch; due: at a checkpoint boundary, 1 when the mesh should be re-planned
 * (members' speeds set for start_epoch); straggler: who the others waited for. */
void sy_balance_sample(member *mb, double t_compute, int nrows, int first_of_epoch);
void sy_balance_reset(coord *c);
int sy_balance_due(coord *c);
void sy_balance_straggler(coord *c);

/* Appends to the recent-events ring (shown by `switchyard status`). */
void sy_coord_event(coord *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Binds the status socket; serves pending requests without ever blocking. */
int sy_status_bind(coord *c, const char *endpoint);
void sy_status_serve(coord *c);
void sy_status_close(coord *c);

#endif
