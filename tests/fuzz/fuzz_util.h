/* fuzz_util.h: shared by the fuzz targets. Each target defines LLVMFuzzerTestOneInput;
 * built with clang -fsanitize=fuzzer it is a libFuzzer binary (tests/fuzz/fuzz.sh), built
 * with replay_main.c it replays a corpus under any compiler (the fuzz_replay test). The
 * disk decoders read files: fuzz_file() writes the input to a scratch file first. */
#ifndef SY_FUZZ_UTIL_H
#define SY_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A private scratch directory for this process (made once, removed at exit). */
static char g_fuzz_dir[256];
static inline void fuzz_rmdir(void) {
    char cmd[300];
    if (g_fuzz_dir[0] && strncmp(g_fuzz_dir, "/tmp/sy_fuzz.", 13) == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_fuzz_dir);
        if (system(cmd)) {
        }
    }
}
static inline const char *fuzz_dir(void) {
    if (!g_fuzz_dir[0]) {
        snprintf(g_fuzz_dir, sizeof g_fuzz_dir, "/tmp/sy_fuzz.XXXXXX");
        if (!mkdtemp(g_fuzz_dir))
            abort();
        atexit(fuzz_rmdir);
        sy_log_set_level(SY_LOG_ERROR + 1); /* decoders complain on every input: silence */
    }
    return g_fuzz_dir;
}
/* Writes data to fuzz_dir()/name; returns the path (static buffer). */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    return path;
}

#endif
