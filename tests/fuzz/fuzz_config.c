/* Config YAML (common/store/config.c: files, the Assignment's config text, --set overrides). */
#include "config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)fuzz_dir(); /* silences the decoder's messages */
    sy_config cfg;
    sy_config_defaults(&cfg);
    if (sy_config_load_string(&cfg, (const char *)data, size, "fuzz") == 0) {
        sy_config_check(&cfg);
        char *y = sy_config_to_yaml(&cfg);
        free(y);
    }
    sy_config_free(&cfg);
    /* a --set override from the first line */
    char line[256];
    size_t n = size < sizeof line - 1 ? size : sizeof line - 1;
    memcpy(line, data, n);
    line[n] = 0;
    line[strcspn(line, "\n")] = 0;
    sy_config_defaults(&cfg);
    sy_config_set(&cfg, line);
    sy_config_free(&cfg);
    return 0;
}
