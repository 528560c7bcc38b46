/* config.h: the run configuration (one YAML file, libcyaml schema). Every field has a
 * default; unknown keys, wrong types and out-of-range values are refused with the
 * file, the key and the reason. Only config.c knows YAML. */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "model_cfg.h"
#include "train_cfg.h"

typedef enum { SY_WIRE_FP32 = 0, SY_WIRE_BF16 = 1 } sy_wire_dtype;

typedef struct {
    char *dir;               /* where prepare writes and train reads: train.bin, val.bin, ... */
    float val_fraction;      /* share of documents held out for validation */
} sy_data_cfg;

typedef struct {
    char *dir;               /* run directory: checkpoints, run log, final model */
    int64_t every;           /* steps between checkpoints; 0 = only at the end */
    int keep;                /* newest checkpoints kept */
} sy_checkpoint_cfg;

typedef struct {
    char *coordinator;       /* control endpoint, e.g. tcp://127.0.0.1:5555 */
    char *status;            /* status endpoint, e.g. tcp://127.0.0.1:5556 */
    int min_workers;
    int heartbeat_ms;
    int timeout_ms;          /* silence after which a peer is dead */
    int join_at_once;        /* 1: admit a joining worker at once; 0: at the next checkpoint */
    int balance_by_speed;    /* 1: batch rows and experts follow measured GFLOP/s when workers differ by > 2x */
    int replica_every;       /* buddy replicas of every expert's state: 1 = kept current every step (a death
                              * loses no step), k > 1 = a full copy every k steps, 0 = off */
} sy_cluster_cfg;

typedef struct {
    sy_wire_dtype dtype;     /* precision of token buffers and gradient chunks on the wire */
    int chunk_bytes;         /* all-reduce segment size */
    int overlap;             /* 1: a layer's gradients are all-reduced on a thread while the backward goes on */
    int bucket_bytes;        /* overlap: gradients go in buckets of whole layers of at least this many bytes */
    int local;               /* 1: workers on one machine reach each other over ipc sockets in a private directory */
    int stand_in;            /* 1: a buddy that keeps an owner's experts current runs some of them when that
                              * evens out a layer's rows (needs overlap and cluster.replica_every 1) */
    int fill_waits;          /* 1: the overlapped backward puts off dense weight gradients and computes them
                              * while the expert exchange waits for a slower peer (same bits) */
} sy_wire_cfg;

typedef struct {
    sy_model_cfg model;
    sy_train_cfg train;
    sy_data_cfg data;
    sy_checkpoint_cfg checkpoint;
    sy_cluster_cfg cluster;
    sy_wire_cfg wire;
    char *source;            /* the file it was read from, or "<default>" */
} sy_config;

/* Fills *cfg with every default. Strings are heap copies; free with sy_config_free. */
void sy_config_defaults(sy_config *cfg);
/* Reads a YAML file over the defaults. Returns 0, or -1 with sy_lasterr() naming
 * file, key and reason. */
int sy_config_load(sy_config *cfg, const char *path);
/* Same, from a string in memory; `name` is used in messages. */
int sy_config_load_string(sy_config *cfg, const char *yaml, size_t len, const char *name);
/* Loads the embedded default job (configs/default.yaml, compiled in). */
int sy_config_load_default(sy_config *cfg);
/* Applies one "section.key=value" override (command-line flags). -1 with a message on error. */
int sy_config_set(sy_config *cfg, const char *assignment);
/* Cross-field checks (d_model % n_heads, seq_len <= model.seq_len, ...). */
int sy_config_check(const sy_config *cfg);
/* Writes the whole config as YAML (for checkpoints and logs). Returns malloc'd text. */
char *sy_config_to_yaml(const sy_config *cfg);
void sy_config_free(sy_config *cfg);

#endif
