/* evaluate.h: validation loss of a model on held-out token data, in eval mode (the
 * evaluation capacity factor, no dropout or jitter). Shared by `switchyard train` and the
 * coordinator. */
#ifndef SY_EVALUATE_H
#define SY_EVALUATE_H

#include <stdint.h>

#include "config.h"
#include "data.h"
#include "model.h"

/* Mean cross-entropy (nats/token) over cfg->train.eval_batches validation batches of
 * batch_size x seq_len, spread over the whole set (sy_batch_eval). buf: [B, T+1] scratch.
 * NaN when no batch could be drawn or a forward pass failed. */
double sy_evaluate(sy_model *m, const sy_tokens *val, const sy_config *cfg, int32_t *buf);
/* sy_evaluate that gives up (NaN) between two batches once *cancel is non-zero (a
 * coordinator stopping does not wait for a whole validation pass). */
double sy_evaluate_cancellable(sy_model *m, const sy_tokens *val, const sy_config *cfg, int32_t *buf,
                               const volatile int *cancel);

#endif
