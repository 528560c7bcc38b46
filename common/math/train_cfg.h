/* train_cfg.h: the training hyper-parameters (schedule, optimizer, batch). Plain data:
 * no YAML here (config.c fills it), the optimizer (optim.c) and the trainers read it. */
#ifndef SY_TRAIN_CFG_H
#define SY_TRAIN_CFG_H

#include <stdint.h>

typedef enum { SY_SCHED_COSINE = 0, SY_SCHED_LINEAR = 1, SY_SCHED_CONSTANT = 2 } sy_schedule;

typedef struct {
    int64_t steps;           /* optimizer steps in the run */
    int batch_size;          /* B: global sequences per step */
    int seq_len;             /* T: tokens per sequence (<= model.seq_len) */
    int groups;              /* routing groups in a single process (distributed: one per worker) */
    uint64_t seed;
    float lr;                /* peak learning rate */
    float min_lr;            /* floor of the decay */
    int64_t warmup_steps;
    sy_schedule schedule;
    float weight_decay;      /* AdamW decoupled weight decay (not applied to norms) */
    float beta1, beta2, eps;
    float grad_clip;         /* global-norm clipping; 0 = off */
    int64_t eval_every;      /* steps between validation passes; 0 = only at the end */
    int eval_batches;        /* batches per validation pass */
    int64_t log_every;       /* steps between progress lines */
    int threads;             /* compute threads; 0 = all cores */
    char *distill_from;      /* teacher checkpoint (or run directory) to distil from; NULL = none */
    float distill_alpha;     /* weight of the teacher's soft targets; 1 - alpha on the hard targets */
    float distill_temperature; /* softmax temperature of the soft targets (> 0) */
} sy_train_cfg;

#endif
