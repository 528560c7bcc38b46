/* coord.h: the coordinator's state, in the parts its files share: the main loop and the
 * message handlers (main.c), the status socket (status.c), validation off the loop
 * (eval.c) and the reference-check mode (refcheck.c). */
#ifndef SY_COORD_H
#define SY_COORD_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "config.h"
#include "mesh.h"
#include "model.h"
#include "refcase.h"
#include "run.h"
#include "sanitize.h"
#include "switchyard.pb-c.h"

#define MAX_WORKERS 256
#define SY_MAX_EVENTS 16
#define SY_COORD_LANGS 16
#define SY_BAL_WINDOW 20 /* steps of measured compute behind a re-balance */

enum phase { WAITING, ASSIGNING, TRAINING, SAVING, DONE, EVALUATING };

/* One worker that registered. */
typedef struct {
    char id[256];
    char hb_id[300];
    char host[128];
    char endpoint[256];
    char local_ep[160];      /* its local (ipc://) data endpoint, "" for none (wire.local) */
    char key[41];      /* its authenticated CURVE key ("" when insecure) */
    double gflops;
    unsigned cores, threads, pid;
    double last_seen;
    int rank;         /* -1 when not in the current mesh */
    int ready;
    int reported;
    int saved;
    int alive;
    int banned;        /* removed for never finishing admission: its id may not register again */
    int reregs;        /* Registers while in the mesh since it was last Ready */
    double step_time;  /* its last step, seconds */
    double released;   /* when it was last told to drop a stale assignment (rehome.c) */
    char conn_addr[64];  /* the address its control connection comes from ("" unknown) */
    double compute_s;  /* its own compute in the last step (waits for peers excluded) */
    double wait_s;     /* its time in all-to-all and all-reduce in the last step (transfer + waiting) */
    double tc[SY_BAL_WINDOW]; /* seconds of compute per step under the current plan, ring */
    int n_tc;
    int prev_rows;     /* rows under the plan before the last re-balance (0: none) */
    double prev_t;     /* and its median compute per step */
    double speed;      /* weight of its rows in the current shares (0: equal shares) */
} member;

/* Who is there, and how many the run needs. */
typedef struct {
    member m[MAX_WORKERS];
    int n;
    int min_workers;           /* go on with at least this many */
    int start_workers;         /* the first mesh waits for this many */
} coord_pool;

/* The mesh of the current epoch. */
typedef struct {
    sy_mesh mesh;
    int world;
    int rank_member[MAX_WORKERS]; /* rank -> index into pool.m */
    int epochs_started;
    double assign_started;     /* when the current epoch's assignments went out */
} coord_plan;

/* Balancing from measured compute (balance.c), and who the others wait for. */
typedef struct {
    int64_t epoch_step0;       /* the first step of the current epoch */
    int rebalancing;           /* the next epoch is a re-balance (measurements carry over) */
    int straggler_rank;        /* the rank the others waited for in the last step (-1: none) */
    double straggler_wait;     /* how long they waited for it, on average, seconds */
} coord_balance;

/* The training data every worker must hold: the content hash of train.bin. */
typedef struct {
    uint64_t hash;             /* 0 until known */
    char from[4400];           /* where that hash came from */
} coord_data;

/* The step in flight: the sums of the ranks' reports. */
typedef struct {
    sy_losses loss;
    double grad_norm, lr;
    double t_compute, t_a2a, t_ar, t_opt;  /* summed over ranks */
    uint64_t tokens, bytes_sent;
    uint64_t replica_bytes, replica_memory; /* summed over ranks */
    double t_replica;                       /* summed over ranks */
    double t_busiest;                       /* the largest t_compute + t_optimizer of one rank */
    double started, time;
} coord_step;

/* The last completed step and validation, as `switchyard status` shows them. */
typedef struct {
    sy_losses loss;
    double tps, step_time, compute, a2a, ar; /* per-rank means */
    double val_loss;           /* NaN until measured */
    int64_t val_step;
} coord_last;

/* A checkpoint being collected from the workers. */
typedef struct {
    sy_ckpt_writer *writer;
    int64_t step;
    int expect;                /* the ranks send their state after this step */
    int only;                  /* no step: the state as it is, then stop */
    int after;                 /* the step in flight ends at a checkpoint */
    int collecting;            /* the ranks are sending the state of a committed step */
} coord_save;

/* The newest complete checkpoint, and recovery from failures. */
typedef struct {
    char last[4096];           /* newest complete checkpoint of this run ("" = none: start from the seed) */
    int64_t last_step;
    double time;               /* when it was committed */
    int failures;              /* recoveries since the last step that completed */
    int64_t failed_at;
    double recover_started;    /* when the last recovery began (0 = none in progress) */
    int stop_requested;        /* a signal: save, then stop */
} coord_ckpt;

/* The run's bookkeeping (common/run.h). */
typedef struct {
    char run_id[64];
    double t_start, t_trained; /* when the run started here, when its last step was done */
    sy_runlog *log;
    sy_progress progress;
    sy_expert_load load;       /* over the run, by language too */
    char langs[SY_COORD_LANGS][16];
} coord_books;

/* Who may talk to the coordinator, and how much rejected input is logged. */
typedef struct {
    struct sy_zap *zap;        /* CURVE authentication (NULL with --insecure) */
    int status_open;           /* the status socket takes anyone (--status-open) */
    sy_ratelog reject_log;     /* rejected control input: rate-limited lines, counted */
    int max_pending;           /* at most this many registered workers wait outside the mesh */
} coord_security;

/* Re-homing from buddy replicas (rehome.c): who keeps whose experts, planned shrinks,
 * and the figures of the failures recovered (status, membership.jsonl). */
#define SY_MAX_PLANNED 64
typedef struct {
    int buddy[MAX_WORKERS];    /* rank -> the rank keeping a replica of its experts, -1: none */
    int redo_save;             /* a rank died while a checkpoint was collected: collect it again */
    int64_t leave_step[SY_MAX_PLANNED];
    int leave_rank[SY_MAX_PLANNED];
    int n_leave;               /* --leave STEP:RANK: shrink by plan before step STEP */
    int64_t join_step[SY_MAX_PLANNED];
    int n_join;                /* --join-at STEP: admit standbys only at these checkpoint boundaries */
    unsigned rehomes, rollbacks;
    int64_t last_lost;         /* steps redone beyond the step in flight by the last failure; -1: none */
    double last_recovery, last_detect;
    double died_at, detected_at; /* of the failure being recovered; 0: none */
    int64_t failed_step;       /* the step in flight when it happened */
    int failed_rank, planned;
    uint64_t replica_bytes, replica_memory; /* the last step's, summed over ranks */
    FILE *log;                 /* membership.jsonl in the run directory */
    double t_replica_sum;      /* the ranks' mean seconds in replica transfers, summed over steps */
    int64_t replica_steps;
    int grow;                  /* the assignments being sent grow the mesh (handover) */
    int prev_world;
    uint32_t prev_begin[MAX_WORKERS], prev_end[MAX_WORKERS];
} coord_rehome;

/* Recent events for `switchyard status`. */
typedef struct {
    double when;
    char what[200];
} sy_event;
typedef struct {
    sy_event ev[SY_MAX_EVENTS];
    int n, next;
} coord_events;

/* Validation of committed checkpoints in a thread of its own (eval.c): the loop never
 * waits for it, so heartbeats and steps go on. */
typedef struct {
    pthread_t thread;
    int running;
    volatile int done;
    volatile int cancel; /* set by coord_eval_join: the pass ends at its next batch */
    const sy_config *cfg;
    char dir[4096];
    int64_t step;
    double result;
} coord_eval;

/* Reference-check mode (refcheck.c): one step of a PyTorch case through the workers. */
typedef struct {
    int on;
    const char *dir, *out_dir;
    sy_refcase rc;
} coord_refcheck;

typedef struct {
    sy_config cfg;
    char *yaml;
    void *zctx, *router;
    void *status;              /* the read-only status ROUTER, or NULL */
    enum phase phase;
    uint64_t epoch;
    int64_t step, start_step;
    int code;                  /* exit code */
    double next_heartbeat;
    coord_pool pool;
    coord_security sec;
    coord_plan plan;
    coord_balance bal;
    coord_data data;
    coord_step cur;
    coord_last last;
    coord_save save;
    coord_ckpt ckpt;
    coord_books books;
    coord_events events;
    coord_eval eval;
    coord_refcheck ref;
    coord_rehome rh;
    char rh_why[400];          /* why the last failure could not be re-homed */
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

/* eval.c: starts validating checkpoint `dir` (step) unless a validation is running;
 * returns 1 when started. */
int coord_eval_start(coord_eval *e, const sy_config *cfg, const char *dir, int64_t step);
/* 1 with the result when a validation finished since the last call, else 0. */
int coord_eval_poll(coord_eval *e, double *val, int64_t *step);
/* Ends a running validation at its next batch and waits for it (at exit). */
void coord_eval_join(coord_eval *e);

/* main.c: commits the checkpoint being collected (keeping `keep`, 0 = all) and logs its
 * size and speed; -1 with an error logged. */
int coord_commit_save(coord *c, int keep);

/* main.c: sends every rank of the current mesh its assignment (rehome: keep the state in
 * memory, else the last checkpoint's state follows when there is one). */
int coord_send_assignments(coord *c, int rehome);
int coord_send_to(coord *c, const member *mb, Switchyard__Envelope *env);
void coord_broadcast_abort(coord *c, const char *reason);
/* Asks the ranks for the state of the committed step (a checkpoint at c->step). */
void coord_send_save(coord *c);

/* rehome.c: buddies for the current mesh (a neighbour in rank order, on another host
 * where there is one), into c->rh.buddy. */
void coord_rehome_buddies(coord *c);
/* Rank `dead` is gone (last heard at died_at): re-plans the mesh so its experts and rows
 * go to its buddy and the step in flight is redone, no checkpoint read. 0: re-homing
 * started; -1: not possible (logged: which state would be lost), the caller rolls back. */
int coord_rehome_try(coord *c, int dead, double died_at, const char *reason);
/* At a step boundary: a planned shrink (--leave) due at c->step is started; returns 1. */
int coord_rehome_leave_due(coord *c);
/* At a step boundary: admits the standbys into a grown mesh whose experts come from the
 * live workers over the network (no checkpoint read, no rollback). 0: started; -1: not
 * possible here (several data groups...): they join at a checkpoint boundary. */
int coord_rehome_grow(coord *c);
/* A worker declared dead is heard again (a heartbeat of its epoch `epoch`): it still holds
 * an assignment nobody uses (a stall longer than the timeout, say), so it is told to drop
 * it and register again, as a standby (at most once a second). */
void coord_rehome_release_stale(coord *c, member *mb, uint64_t epoch);
/* Whether standbys may join at this boundary (--join-at restricts it). */
int coord_rehome_join_allowed(const coord *c);
/* A step completed: closes the figures of a recovery in progress. */
void coord_rehome_step_done(coord *c);
/* Standbys join at this checkpoint boundary (logged: a planned run replays it). */
void coord_rehome_note_join(coord *c, int n);
/* The end of the run: what the replicas cost (logged). */
void coord_rehome_summary(coord *c);
/* A failure goes back to the last checkpoint (counted, logged). */
void coord_rehome_note_rollback(coord *c, const char *reason);
/* Parses --leave STEP:RANK / --join-at STEP; -1 with a message. */
int coord_rehome_parse_leave(coord_rehome *rh, const char *v);
int coord_rehome_parse_join(coord_rehome *rh, const char *v);
/* Opens membership.jsonl in the run directory. */
void coord_rehome_open_log(coord *c);
void coord_rehome_close(coord *c);

/* refcheck.c: loads the case of --refcheck (needs --out). */
int coord_refcheck_load(coord *c);
/* The model and global batch a mesh is planned for: the case's, or the config's. */
const sy_model_cfg *coord_model(const coord *c);
int coord_global_batch(const coord *c);
/* -1 when the case's rows do not split evenly over `world` workers. */
int coord_refcheck_split(const coord *c, int world);
/* Commits the gathered gradients, routing and loss terms under --out, then DONE. */
void coord_refcheck_finish(coord *c);

#endif
