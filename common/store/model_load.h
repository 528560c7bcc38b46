/* model_load.h: a trained model back from a checkpoint, for the commands that use one
 * (sample, eval, export, and a distillation teacher). The checkpoint carries its run's
 * config; the model's shape comes from there, the weights from its tensors. */
#ifndef SY_MODEL_LOAD_H
#define SY_MODEL_LOAD_H

#include <stddef.h>

#include "config.h"
#include "model.h"

/* path: a checkpoint directory (step-NNNNNNNN, holding a manifest) or a run directory
 * (its newest checkpoint that verifies is taken). Reads the stored config over the
 * defaults into *cfg (initialised here; the caller frees it with sy_config_free), builds a
 * model for max_B rows of T positions (0: the config's train.batch_size, train.seq_len) with every
 * expert, and loads every parameter (checksums checked). dir (size n, may be NULL)
 * receives the checkpoint directory used. NULL with a message naming the path on failure. */
sy_model *sy_model_load(const char *path, sy_config *cfg, int max_B, int T, char *dir, size_t n);

#endif
