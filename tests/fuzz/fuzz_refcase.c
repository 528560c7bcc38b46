/* Reference-case manifests (common/store/refcase.c reads DIR/manifest.yaml). */
#include <sys/stat.h>

#include "fuzz_util.h"
#include "refcase.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/rc", fuzz_dir());
    mkdir(dir, 0700);
    fuzz_file("rc/manifest.yaml", data, size);
    sy_refcase rc;
    memset(&rc, 0, sizeof rc);
    if (sy_refcase_load(&rc, dir) == 0)
        sy_refcase_free(&rc);
    return 0;
}
