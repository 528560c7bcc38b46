/* refcase.h: a PyTorch float64 reference case (tests/refcases/NAME/, made by
 * tests/oracle/refgen.py): manifest.yaml
 * (read with libcyaml) plus raw little-endian tensors. Used by `switchyard refcheck`. */
#ifndef SY_REFCASE_H
#define SY_REFCASE_H

#include <stddef.h>
#include <stdint.h>

#include "model_cfg.h"

typedef struct {
    char *name;        /* canonical parameter name, e.g. "layers.1.experts.3.w1" */
    int ndim;
    int shape[4];
    size_t numel;
    float *value;      /* the weights */
    float *grad;       /* d loss_total / d weights from PyTorch */
} sy_ref_param;

typedef struct {
    int layer;         /* switch layer index */
    int n;             /* tokens */
    int k;             /* choices given per token: 1 (the first choice only) or top_k */
    int dropped_is;    /* value used for a dropped choice (-1) */
    int32_t *expert;   /* [n, k]: expert of each choice per token in (row, position) order, or dropped_is */
} sy_ref_route;

typedef struct {
    char *dir;
    sy_model_cfg model;    /* shape from model:, routing coefficients from routing: (other fields default) */
    int groups;            /* routing groups */
    int batch;             /* B */
    int seq;               /* T: tokens per row is T+1 (inputs then the shifted target) */
    int32_t *tokens;       /* [B, T+1] */
    double loss_total, loss_ce, loss_aux, loss_z;
    int n_routes;
    sy_ref_route *routes;
    int n_params;
    sy_ref_param *params;
} sy_refcase;

/* Loads dir/manifest.yaml and every tensor it names. Returns 0, or -1 with sy_lasterr()
 * naming the file and key (missing file, wrong byte size, bad shape, unknown layer...). */
int sy_refcase_load(sy_refcase *rc, const char *dir);
void sy_refcase_free(sy_refcase *rc);
/* The parameter with this canonical name, or NULL. */
const sy_ref_param *sy_refcase_param(const sy_refcase *rc, const char *name);

#endif
