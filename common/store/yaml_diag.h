/* yaml_diag.h: what libcyaml says about a failed load, captured through its log callback:
 * its first error line and the backtrace of fields it was inside. The configuration
 * (config.c) and the reference-case manifest (refcase.c) turn it into
 * "file: key: reason at line L, column C". */
#ifndef SY_YAML_DIAG_H
#define SY_YAML_DIAG_H

#include <stdarg.h>

#include <cyaml/cyaml.h>

typedef struct {
    char reason[256];         /* libcyaml's first error line, without "Load: " */
    int n_frames;
    struct {
        char name[64];        /* mapping field name, "[i]" for a sequence entry (0-based),
                               * empty for an anonymous mapping */
        unsigned long line, col;
    } frame[16];              /* innermost first */
} sy_yaml_diag;

/* A cyaml_config_t log_fn; log_ctx is a zeroed sy_yaml_diag. */
void sy_yaml_diag_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args);

/* The libcyaml settings of every load: errors captured into *diag (zeroed here),
 * libcyaml's allocator, no aliases (they could expand a small file into a huge
 * document; no file of ours needs one), and the caller's extra flags. */
cyaml_config_t sy_yaml_config(sy_yaml_diag *diag, cyaml_cfg_flags_t flags);

#endif
