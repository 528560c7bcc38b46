#include "yaml_diag.h"

#include <stdio.h>
#include <string.h>

cyaml_config_t sy_yaml_config(sy_yaml_diag *diag, cyaml_cfg_flags_t flags) {
    memset(diag, 0, sizeof *diag);
    cyaml_config_t cc = {
        .log_fn = sy_yaml_diag_log,
        .log_ctx = diag,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = flags | CYAML_CFG_NO_ALIAS,
    };
    return cc;
}

void sy_yaml_diag_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args) {
    sy_yaml_diag *d = ctx;
    char msg[512], name[64];
    unsigned long line, col;
    unsigned idx;
    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(msg, sizeof msg, fmt, args);
    msg[strcspn(msg, "\n")] = 0;
    int is_frame = 0;
    if (sscanf(msg, "  in mapping field '%63[^']' (line: %lu, column: %lu)", name, &line, &col) == 3) {
        is_frame = 1;
    } else if (sscanf(msg, "  in sequence entry '%u' (line: %lu, column: %lu)", &idx, &line, &col) == 3) {
        snprintf(name, sizeof name, "[%u]", idx ? idx - 1 : 0); /* libcyaml counts from 1 */
        is_frame = 1;
    } else if (sscanf(msg, "  in mapping (line: %lu, column: %lu)", &line, &col) == 2) {
        name[0] = 0; /* an anonymous mapping: its position only */
        is_frame = 1;
    }
    if (is_frame) {
        if (d->n_frames < 16) {
            snprintf(d->frame[d->n_frames].name, sizeof d->frame[0].name, "%s", name);
            d->frame[d->n_frames].line = line;
            d->frame[d->n_frames].col = col;
            d->n_frames++;
        }
        return;
    }
    if (strstr(msg, "Backtrace:") || d->reason[0])
        return;
    snprintf(d->reason, sizeof d->reason, "%.255s", strncmp(msg, "Load: ", 6) ? msg : msg + 6);
}
