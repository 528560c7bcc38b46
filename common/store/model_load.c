#include "model_load.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "log.h"
#include "model_ckpt.h"

sy_model *sy_model_load(const char *path, sy_config *cfg, int max_B, int T, char *dir, size_t n) {
    sy_config_defaults(cfg);
    char found[4096], manifest[4200];
    struct stat st;
    snprintf(manifest, sizeof manifest, "%s/manifest", path);
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
        sy_seterr("%s: not a checkpoint or run directory", path);
        return NULL;
    }
    if (!stat(manifest, &st)) {
        snprintf(found, sizeof found, "%s", path);
    } else {
        int rc = sy_ckpt_latest(path, found, sizeof found, NULL);
        if (rc < 0)
            return NULL;
        if (rc > 0) {
            sy_seterr("%s: no checkpoint here (neither a manifest nor a step-* directory that verifies)", path);
            return NULL;
        }
    }
    sy_model *m = NULL;
    sy_ckpt *ck = sy_ckpt_open(found);
    if (!ck)
        return NULL;
    size_t len = 0;
    const char *yaml = sy_ckpt_config(ck, &len);
    if (!yaml) {
        sy_seterr("%s: the checkpoint stores no config.yaml, so the model's shape is unknown", found);
        goto out;
    }
    char name[4200];
    snprintf(name, sizeof name, "%s/config.yaml", found);
    if (sy_config_load_string(cfg, yaml, len, name))
        goto out;
    if (!(m = sy_model_new(&cfg->model, max_B > 0 ? max_B : cfg->train.batch_size, T > 0 ? T : cfg->train.seq_len,
                           NULL))) {
        sy_err_prefix("%s", found);
        goto out;
    }
    if (sy_model_io_load(ck, sy_model_layout(m), sy_model_params(m), NULL, NULL, NULL)) {
        sy_model_destroy(&m);
        goto out;
    }
    if (dir)
        snprintf(dir, n, "%s", found);
out:
    sy_ckpt_close(&ck);
    return m;
}
