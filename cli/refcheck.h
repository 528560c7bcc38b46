/* refcheck.h: the checks of `switchyard refcheck`, shared by the single-process and the
 * distributed run of a reference case. */
#ifndef SY_REFCHECK_H
#define SY_REFCHECK_H

#include "model.h"
#include "refcase.h"

typedef struct {
    sy_losses loss;
    int top_k;
    const int **routing;                 /* [L]: [N, k] expert per choice, NULL for dense layers */
    const float *(*grad_of)(void *ctx, const char *name);
    void *ctx;
} sy_refcheck_result;

/* Prints the comparison; returns the number of failures. */
int sy_refcheck_compare(const sy_refcase *rc, const sy_refcheck_result *res, int quiet);
/* Copies the case's weights into the model by canonical name. */
int sy_refcheck_load_params(sy_model *m, const sy_refcase *rc);
/* The case's model with training-only noise switched off. */
sy_model_cfg sy_refcheck_model_cfg(const sy_refcase *rc);
/* The case through a coordinator and `workers` worker processes; exit code. */
int sy_refcheck_distributed(const sy_refcase *rc, int workers, int quiet);

#endif
