/* Checkpoint manifests (common/store/checkpoint.c reads DIR/manifest when it opens one). */
#include <sys/stat.h>

#include "checkpoint.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/ck", fuzz_dir());
    mkdir(dir, 0700);
    fuzz_file("ck/manifest", data, size);
    sy_ckpt *ck = sy_ckpt_open(dir);
    if (ck) {
        for (int i = 0; i < sy_ckpt_count(ck); i++)
            (void)sy_ckpt_tensor_at(ck, i)->name;
        size_t len;
        (void)sy_ckpt_config(ck, &len);
        sy_ckpt_verify(ck);
        sy_ckpt_close(&ck);
    }
    return 0;
}
