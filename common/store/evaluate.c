#include "evaluate.h"

#include <math.h>

double sy_evaluate(sy_model *m, const sy_tokens *val, const sy_config *cfg, int32_t *buf) {
    return sy_evaluate_cancellable(m, val, cfg, buf, NULL);
}

double sy_evaluate_cancellable(sy_model *m, const sy_tokens *val, const sy_config *cfg, int32_t *buf,
                               const volatile int *cancel) {
    int B = cfg->train.batch_size, T = cfg->train.seq_len;
    double sum = 0.0;
    int done = 0;
    for (int i = 0; i < cfg->train.eval_batches; i++) {
        if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE))
            return NAN;
        if (sy_batch_eval(val, i, B, T, buf))
            break;
        sy_pass ps = {.B = B, .T = T, .groups = cfg->train.groups, .training = 0, .seed = cfg->train.seed};
        sy_losses l;
        if (sy_model_forward(m, &ps, buf, &l))
            return NAN;
        sum += l.ce;
        done++;
    }
    return done ? sum / done : NAN;
}
