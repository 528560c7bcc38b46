/* config.c: the run configuration in YAML.
 *
 * Why every leaf is loaded as a string: libcyaml 1.3.1 has no range validation in its
 * schema, and its typed scalars are lenient in ways that would hide mistakes ("1.5"
 * loads into an int as 1, "maybe" into a bool as true, 1e50 into a float as inf). So
 * libcyaml checks the document's shape (sections, known keys, scalars where scalars
 * belong, no key twice) and one table below (`g_keys`) parses and range-checks every
 * value. The same table serves `sy_config_set` overrides and `sy_config_to_yaml`, so a
 * key cannot be known to one and not the others. A leaf that is absent stays NULL, so
 * an explicit 0 or false is told apart from "not given".
 *
 * Loading merges a document over what *cfg already holds, which must be an initialised
 * config: sy_config_defaults() (so "over the defaults"), or an earlier load to layer
 * files. A refused document leaves *cfg unchanged. Loading also runs sy_config_check, so
 * a file is refused by name when its keys contradict each other.
 *
 * Error messages are "NAME: section.key: reason at line L, column C": libcyaml's own
 * messages go to capture_log (never to stderr) and are rewritten into that form; the
 * position of a key whose value we refuse is found with a short libyaml walk. */
#include <stddef.h> /* config.h uses size_t without including it (reported to the lead) */

#include "config.h"

#include <cyaml/cyaml.h>
#include <yaml.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"
#include "yaml_diag.h"

/* Generated at build time from configs/default.yaml (see common/CMakeLists.txt). */
extern const char sy_default_config_yaml[];
extern const unsigned long sy_default_config_yaml_len;

#define CONFIG_MAX_BYTES (16u << 20) /* a config file is small; refuse anything huge */
#define STRING_MAX 4096

/* ---- the key table ---------------------------------------------------------------- */

enum {
    SEC_MODEL, SEC_ROUTING, SEC_TRAIN, SEC_DATA, SEC_CHECKPOINT, SEC_CLUSTER, SEC_WIRE,
    N_SECTIONS
};
static const char *const g_section_names[N_SECTIONS] = {"model", "routing", "train", "data",
                                                        "checkpoint", "cluster", "wire"};

typedef enum { K_INT, K_I64, K_U64, K_FLOAT, K_BOOL, K_STR, K_ENUM } key_type;

typedef struct {
    int section;
    const char *name;            /* key inside its section */
    key_type type;
    size_t offset;               /* of the member in sy_config */
    double lo, hi;               /* numbers: allowed range */
    unsigned char lo_open;       /* 1: lo itself is excluded */
    unsigned char hi_open;       /* 1: hi itself is excluded */
    unsigned char endpoint;      /* strings: must look like a ZeroMQ endpoint */
    int multiple_of;             /* ints: value must be a multiple of this (0 = any) */
    const char *const *choices;  /* K_ENUM: names indexed by value, NULL-terminated */
    unsigned char may_be_empty;  /* strings: "" (stored as NULL) means "not set" */
} key_def;

static const char *const g_schedule_names[] = {"cosine", "linear", "constant", NULL};
static const char *const g_dtype_names[] = {"fp32", "bf16", NULL};

_Static_assert(sizeof(sy_schedule) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(sy_wire_dtype) == sizeof(int), "enums are stored as int");

#define OFF(member) offsetof(sy_config, member)
#define INF HUGE_VAL
/* Closed range [lo, hi]; see the *_OPEN variants for excluded ends. */
#define INT_KEY(sec, key, member, lo, hi) {sec, key, K_INT, OFF(member), lo, hi, 0, 0, 0, 0, NULL, 0}
#define I64_KEY(sec, key, member, lo) {sec, key, K_I64, OFF(member), lo, INF, 0, 0, 0, 0, NULL, 0}
#define FLT_KEY(sec, key, member, lo, lo_open) \
    {sec, key, K_FLOAT, OFF(member), lo, INF, lo_open, 0, 0, 0, NULL, 0}
#define RATE_KEY(sec, key, member) {sec, key, K_FLOAT, OFF(member), 0, 1, 0, 1, 0, 0, NULL, 0}
#define STR_KEY(sec, key, member, endpoint) \
    {sec, key, K_STR, OFF(member), 0, 0, 0, 0, endpoint, 0, NULL, 0}
#define OPT_STR_KEY(sec, key, member) {sec, key, K_STR, OFF(member), 0, 0, 0, 0, 0, 0, NULL, 1}
#define ENUM_KEY(sec, key, member, names) \
    {sec, key, K_ENUM, OFF(member), 0, 0, 0, 0, 0, 0, names, 0}

/* Order here is the order of sy_config_to_yaml's output. Upper bounds on sizes are far
 * beyond a CPU model; they exist so that products of sizes cannot overflow. */
static const key_def g_keys[] = {
    INT_KEY(SEC_MODEL, "vocab", model.vocab, 256, 256),
    INT_KEY(SEC_MODEL, "d_model", model.d_model, 1, 65536),
    INT_KEY(SEC_MODEL, "n_layers", model.n_layers, 1, 4096),
    INT_KEY(SEC_MODEL, "n_heads", model.n_heads, 1, 4096),
    INT_KEY(SEC_MODEL, "d_ff", model.d_ff, 1, 1 << 20),
    INT_KEY(SEC_MODEL, "n_experts", model.n_experts, 1, SY_MAX_EXPERTS),
    INT_KEY(SEC_MODEL, "switch_every", model.switch_every, 0, 4096),
    INT_KEY(SEC_MODEL, "seq_len", model.seq_len, 1, 1 << 20),
    FLT_KEY(SEC_MODEL, "init_scale", model.init_scale, 0, 1),
    RATE_KEY(SEC_MODEL, "dropout", model.dropout),

    INT_KEY(SEC_ROUTING, "top_k", model.top_k, 1, 65536),
    FLT_KEY(SEC_ROUTING, "capacity_factor", model.capacity_factor, 0, 1),
    FLT_KEY(SEC_ROUTING, "eval_capacity_factor", model.eval_capacity_factor, 0, 1),
    FLT_KEY(SEC_ROUTING, "aux_loss_coef", model.aux_loss_coef, 0, 0),
    FLT_KEY(SEC_ROUTING, "z_loss_coef", model.z_loss_coef, 0, 0),
    RATE_KEY(SEC_ROUTING, "router_jitter", model.router_jitter),
    RATE_KEY(SEC_ROUTING, "expert_dropout", model.expert_dropout),
    INT_KEY(SEC_ROUTING, "groups", train.groups, 1, 65536),

    I64_KEY(SEC_TRAIN, "steps", train.steps, 1),
    INT_KEY(SEC_TRAIN, "batch_size", train.batch_size, 1, 1 << 24),
    INT_KEY(SEC_TRAIN, "seq_len", train.seq_len, 1, 1 << 20),
    {SEC_TRAIN, "seed", K_U64, OFF(train.seed), 0, 0, 0, 0, 0, 0, NULL, 0},
    FLT_KEY(SEC_TRAIN, "lr", train.lr, 0, 1),
    FLT_KEY(SEC_TRAIN, "min_lr", train.min_lr, 0, 0),
    I64_KEY(SEC_TRAIN, "warmup_steps", train.warmup_steps, 0),
    ENUM_KEY(SEC_TRAIN, "schedule", train.schedule, g_schedule_names),
    FLT_KEY(SEC_TRAIN, "weight_decay", train.weight_decay, 0, 0),
    RATE_KEY(SEC_TRAIN, "beta1", train.beta1),
    RATE_KEY(SEC_TRAIN, "beta2", train.beta2),
    FLT_KEY(SEC_TRAIN, "eps", train.eps, 0, 1),
    FLT_KEY(SEC_TRAIN, "grad_clip", train.grad_clip, 0, 0),
    I64_KEY(SEC_TRAIN, "eval_every", train.eval_every, 0),
    INT_KEY(SEC_TRAIN, "eval_batches", train.eval_batches, 1, INT_MAX),
    I64_KEY(SEC_TRAIN, "log_every", train.log_every, 1),
    INT_KEY(SEC_TRAIN, "threads", train.threads, 0, 4096),
    OPT_STR_KEY(SEC_TRAIN, "distill_from", train.distill_from),
    {SEC_TRAIN, "distill_alpha", K_FLOAT, OFF(train.distill_alpha), 0, 1, 0, 0, 0, 0, NULL, 0}, /* [0, 1] */
    FLT_KEY(SEC_TRAIN, "distill_temperature", train.distill_temperature, 0, 1),

    STR_KEY(SEC_DATA, "dir", data.dir, 0),
    RATE_KEY(SEC_DATA, "val_fraction", data.val_fraction),

    STR_KEY(SEC_CHECKPOINT, "dir", checkpoint.dir, 0),
    I64_KEY(SEC_CHECKPOINT, "every", checkpoint.every, 0),
    INT_KEY(SEC_CHECKPOINT, "keep", checkpoint.keep, 1, INT_MAX),

    STR_KEY(SEC_CLUSTER, "coordinator", cluster.coordinator, 1),
    STR_KEY(SEC_CLUSTER, "status", cluster.status, 1),
    INT_KEY(SEC_CLUSTER, "min_workers", cluster.min_workers, 1, 65536),
    INT_KEY(SEC_CLUSTER, "heartbeat_ms", cluster.heartbeat_ms, 1, INT_MAX),
    INT_KEY(SEC_CLUSTER, "timeout_ms", cluster.timeout_ms, 1, INT_MAX),
    {SEC_CLUSTER, "join_at_once", K_BOOL, OFF(cluster.join_at_once), 0, 0, 0, 0, 0, 0, NULL, 0},
    {SEC_CLUSTER, "balance_by_speed", K_BOOL, OFF(cluster.balance_by_speed), 0, 0, 0, 0, 0, 0, NULL, 0},
    INT_KEY(SEC_CLUSTER, "replica_every", cluster.replica_every, 0, 1000000),

    ENUM_KEY(SEC_WIRE, "dtype", wire.dtype, g_dtype_names),
    /* a segment holds whole fp32 (and so bf16) elements */
    {SEC_WIRE, "chunk_bytes", K_INT, OFF(wire.chunk_bytes), 64, INT_MAX, 0, 0, 0, 4, NULL, 0},
    {SEC_WIRE, "overlap", K_BOOL, OFF(wire.overlap), 0, 0, 0, 0, 0, 0, NULL, 0},
    {SEC_WIRE, "bucket_bytes", K_INT, OFF(wire.bucket_bytes), 4, INT_MAX, 0, 0, 0, 4, NULL, 0},
    {SEC_WIRE, "local", K_BOOL, OFF(wire.local), 0, 0, 0, 0, 0, 0, NULL, 0},
    {SEC_WIRE, "stand_in", K_BOOL, OFF(wire.stand_in), 0, 0, 0, 0, 0, 0, NULL, 0},
    {SEC_WIRE, "fill_waits", K_BOOL, OFF(wire.fill_waits), 0, 0, 0, 0, 0, 0, NULL, 0},
};
#define N_KEYS ((int)(sizeof g_keys / sizeof g_keys[0]))

static const key_def *find_key(const char *section, size_t section_len, const char *name) {
    for (int i = 0; i < N_KEYS; i++) {
        const char *s = g_section_names[g_keys[i].section];
        if (strlen(s) == section_len && !strncmp(s, section, section_len) &&
            !strcmp(g_keys[i].name, name))
            return &g_keys[i];
    }
    return NULL;
}

/* ---- values: parse, range-check, store, print ------------------------------------- */

static void *field(sy_config *cfg, const key_def *k) { return (char *)cfg + k->offset; }
static const void *cfield(const sy_config *cfg, const key_def *k) {
    return (const char *)cfg + k->offset;
}

static int is_integer_type(key_type t) { return t == K_INT || t == K_I64 || t == K_U64; }

/* Prints a number of key k's type the way a user would write it. */
static void format_number(const key_def *k, double v, char *out, size_t n) {
    if (is_integer_type(k->type) && fabs(v) < 9e15)
        snprintf(out, n, "%" PRId64, (int64_t)v);
    else
        snprintf(out, n, "%g", v);
}

/* Range check of one numeric value; on failure writes the reason into why. */
static int check_number(const key_def *k, double v, char *why, size_t n) {
    char got[48], lo[48], hi[48];
    format_number(k, v, got, sizeof got);
    format_number(k, k->lo, lo, sizeof lo);
    format_number(k, k->hi, hi, sizeof hi);
    int below = k->lo_open ? !(v > k->lo) : !(v >= k->lo);
    int above = k->hi_open ? !(v < k->hi) : !(v <= k->hi);
    if (!below && !above) {
        if (k->multiple_of > 0 && fmod(v, k->multiple_of) != 0) {
            snprintf(why, n, "must be a multiple of %d (got %s)", k->multiple_of, got);
            return -1;
        }
        return 0;
    }
    if (k->lo == k->hi)
        snprintf(why, n, "must be %s (got %s)", lo, got);
    else if (isinf(k->hi))
        snprintf(why, n, "must be %s %s (got %s)", k->lo_open ? ">" : ">=", lo, got);
    else
        snprintf(why, n, "must be in %c%s, %s%c (got %s)", k->lo_open ? '(' : '[', lo, hi,
                 k->hi_open ? ')' : ']', got);
    return -1;
}

static int check_string(const key_def *k, const char *s, char *why, size_t n) {
    if ((!s || !*s) && k->may_be_empty)
        return 0;
    if (!s || !*s) {
        snprintf(why, n, "must not be empty");
        return -1;
    }
    if (strlen(s) > STRING_MAX) {
        snprintf(why, n, "is longer than %d bytes", STRING_MAX);
        return -1;
    }
    if (k->endpoint) {
        const char *sep = strstr(s, "://");
        if (!sep || sep == s || !sep[3]) {
            snprintf(why, n, "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555 (got '%.80s')",
                     s);
            return -1;
        }
    }
    return 0;
}

static void list_choices(const char *const *choices, char *out, size_t n) {
    out[0] = 0;
    for (int i = 0; choices[i]; i++) {
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s%s", i ? ", " : "", choices[i]);
    }
}

/* Checks the value key k currently has in cfg (range, non-empty, known enum value). */
static int check_stored(const sy_config *cfg, const key_def *k, char *why, size_t n) {
    const void *p = cfield(cfg, k);
    switch (k->type) {
    case K_INT: return check_number(k, *(const int *)p, why, n);
    case K_I64: return check_number(k, (double)*(const int64_t *)p, why, n);
    case K_FLOAT: {
        float v = *(const float *)p;
        if (!isfinite(v)) {
            snprintf(why, n, "must be a finite number (got %g)", (double)v);
            return -1;
        }
        return check_number(k, v, why, n);
    }
    case K_U64: return 0;
    case K_BOOL:
        if (*(const int *)p != 0 && *(const int *)p != 1) {
            snprintf(why, n, "must be true or false (got %d)", *(const int *)p);
            return -1;
        }
        return 0;
    case K_STR: return check_string(k, *(char *const *)p, why, n);
    case K_ENUM: {
        int v = *(const int *)p, count = 0;
        while (k->choices[count])
            count++;
        if (v < 0 || v >= count) {
            char names[128];
            list_choices(k->choices, names, sizeof names);
            snprintf(why, n, "must be one of %s (got %d)", names, v);
            return -1;
        }
        return 0;
    }
    }
    return 0;
}

/* Strict decimal integer: optional sign, digits, nothing else. */
static int parse_i64(const char *s, int64_t *out) {
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return -1;
    *out = v;
    return 0;
}

/* Parses text s as key k's type, checks its range, and stores it into cfg. On failure
 * cfg is unchanged and why holds the reason. */
static int set_value(sy_config *cfg, const key_def *k, const char *s, char *why, size_t n) {
    void *p = field(cfg, k);
    if (!*s && k->type != K_STR) {
        snprintf(why, n, "has no value");
        return -1;
    }
    switch (k->type) {
    case K_INT:
    case K_I64: {
        int64_t v;
        if (parse_i64(s, &v) < 0) {
            snprintf(why, n, "must be an integer (got '%s')", s);
            return -1;
        }
        if (k->type == K_INT && (v < INT_MIN || v > INT_MAX)) {
            snprintf(why, n, "is out of range for a 32-bit integer (got '%s')", s);
            return -1;
        }
        if (check_number(k, (double)v, why, n) < 0)
            return -1;
        if (k->type == K_INT)
            *(int *)p = (int)v;
        else
            *(int64_t *)p = v;
        return 0;
    }
    case K_U64: {
        errno = 0;
        char *end;
        unsigned long long v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
        if (*s < '0' || *s > '9' || *end || errno) {
            snprintf(why, n, "must be an unsigned integer below 2^64 (got '%s')", s);
            return -1;
        }
        *(uint64_t *)p = v;
        return 0;
    }
    case K_FLOAT: {
        errno = 0;
        char *end;
        double v = strtod(s, &end);
        if (*end || end == s) {
            snprintf(why, n, "must be a number (got '%s')", s);
            return -1;
        }
        if (!isfinite(v) || fabs(v) > FLT_MAX) {
            snprintf(why, n, "must be a finite number within float range (got '%s')", s);
            return -1;
        }
        if (check_number(k, (float)v, why, n) < 0)
            return -1;
        *(float *)p = (float)v;
        return 0;
    }
    case K_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(s, yes[i])) {
                *(int *)p = 1;
                return 0;
            }
            if (!strcasecmp(s, no[i])) {
                *(int *)p = 0;
                return 0;
            }
        }
        snprintf(why, n, "must be true or false (got '%s')", s);
        return -1;
    }
    case K_STR: {
        if (check_string(k, s, why, n) < 0)
            return -1;
        if (!*s) { /* an optional string left empty: not set */
            free(*(char **)p);
            *(char **)p = NULL;
            return 0;
        }
        char *copy = strdup(s);
        if (!copy) {
            snprintf(why, n, "out of memory");
            return -1;
        }
        free(*(char **)p);
        *(char **)p = copy;
        return 0;
    }
    case K_ENUM:
        for (int i = 0; k->choices[i]; i++) {
            if (!strcmp(s, k->choices[i])) {
                *(int *)p = i;
                return 0;
            }
        }
        char names[128];
        list_choices(k->choices, names, sizeof names);
        snprintf(why, n, "must be one of %s (got '%s')", names, s);
        return -1;
    }
    return -1;
}

/* Writes s as a double-quoted YAML scalar, which reads back byte for byte. */
static void write_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void write_value(FILE *f, const sy_config *cfg, const key_def *k) {
    const void *p = cfield(cfg, k);
    switch (k->type) {
    case K_INT: fprintf(f, "%d", *(const int *)p); break;
    case K_I64: fprintf(f, "%" PRId64, *(const int64_t *)p); break;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)p); break;
    case K_FLOAT: {
        /* The shortest text that reads back as the same float (9 digits always do):
         * 0.1, not 0.100000001. */
        float v = *(const float *)p;
        char text[32];
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, (double)v);
            if ((float)strtod(text, NULL) == v) /* as set_value reads it */
                break;
        }
        fputs(text, f);
        break;
    }
    case K_BOOL: fputs(*(const int *)p ? "true" : "false", f); break;
    case K_STR: write_quoted(f, *(char *const *)p ? *(char *const *)p : ""); break;
    case K_ENUM: {
        int v = *(const int *)p, count = 0;
        while (k->choices[count])
            count++;
        if (v >= 0 && v < count)
            fputs(k->choices[v], f);
        else
            fprintf(f, "%d", v); /* refused on reading back, as it should be */
        break;
    }
    }
}

/* ---- libcyaml schema: every leaf a string, every key optional ----------------------- */

#define MAX_SECTION_KEYS 24
typedef struct {
    char *v[MAX_SECTION_KEYS]; /* slot g_slot[i] holds key i's text, NULL when absent */
} raw_section;
typedef struct {
    raw_section *sec[N_SECTIONS]; /* NULL when the section is absent or empty */
} raw_doc;

static cyaml_schema_field_t g_section_fields[N_SECTIONS][MAX_SECTION_KEYS + 1];
static cyaml_schema_field_t g_top_fields[N_SECTIONS + 1];
static cyaml_schema_value_t g_top_schema;
static int g_slot[N_KEYS];
static pthread_once_t g_schema_once = PTHREAD_ONCE_INIT;

static void build_schema(void) {
    int count[N_SECTIONS] = {0};
    for (int i = 0; i < N_KEYS; i++) {
        int s = g_keys[i].section, j = count[s]++;
        if (j >= MAX_SECTION_KEYS)
            abort(); /* programmer error: raise MAX_SECTION_KEYS */
        g_slot[i] = j;
        g_section_fields[s][j] = (cyaml_schema_field_t){
            .key = g_keys[i].name,
            .data_offset = (uint32_t)(j * sizeof(char *)),
            .value = {CYAML_VALUE_STRING(CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, char *, 0,
                                         CYAML_UNLIMITED)},
        };
    }
    for (int s = 0; s < N_SECTIONS; s++) {
        g_section_fields[s][count[s]] = (cyaml_schema_field_t)CYAML_FIELD_END;
        /* POINTER_NULL_STR: a section written with every key commented out ("model:")
         * is empty, not an error. */
        g_top_fields[s] = (cyaml_schema_field_t){
            .key = g_section_names[s],
            .data_offset = (uint32_t)(s * sizeof(raw_section *)),
            .value = {CYAML_VALUE_MAPPING(CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL_STR,
                                          raw_section, g_section_fields[s])},
        };
    }
    g_top_fields[N_SECTIONS] = (cyaml_schema_field_t)CYAML_FIELD_END;
    g_top_schema = (cyaml_schema_value_t){
        CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, raw_doc, g_top_fields)};
}

/* ---- error messages with key paths and positions ------------------------------------ */

/* Sets "name: key: reason at line L, column C", leaving out empty parts. */
static void seterr_at(const char *name, const char *key, unsigned long line, unsigned long col,
                      const char *reason) {
    char where[64] = "";
    if (line)
        snprintf(where, sizeof where, " at line %lu, column %lu", line, col);
    if (key && *key)
        sy_seterr("%s: %s: %s%s", name, key, reason, where);
    else
        sy_seterr("%s: %s%s", name, reason, where);
}

/* Pulls events from a libyaml parser; 0 at a syntax error. */
static int next_event(yaml_parser_t *p, yaml_event_t *ev) { return yaml_parser_parse(p, ev); }

/* Consumes the rest of the node that ev starts (ev itself is deleted by the caller). */
static int skip_node(yaml_parser_t *p, const yaml_event_t *ev) {
    if (ev->type != YAML_MAPPING_START_EVENT && ev->type != YAML_SEQUENCE_START_EVENT)
        return 1;
    int depth = 1;
    while (depth > 0) {
        yaml_event_t e;
        if (!next_event(p, &e))
            return 0;
        if (e.type == YAML_MAPPING_START_EVENT || e.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        else if (e.type == YAML_STREAM_END_EVENT)
            depth = 0;
        yaml_event_delete(&e);
    }
    return 1;
}

/* After a MAPPING_START: finds path[0..n) below it. 1 found, 0 not, -1 syntax error. */
static int find_in_mapping(yaml_parser_t *p, const char *const *path, int n, int want_key,
                           yaml_mark_t *out) {
    for (;;) {
        yaml_event_t k, v;
        if (!next_event(p, &k))
            return -1;
        if (k.type != YAML_SCALAR_EVENT) {
            int end = k.type == YAML_MAPPING_END_EVENT || k.type == YAML_STREAM_END_EVENT;
            int ok = end || skip_node(p, &k);
            yaml_event_delete(&k);
            if (end)
                return 0;
            if (!ok)
                return -1;
            if (!next_event(p, &v))
                return -1;
            ok = skip_node(p, &v);
            yaml_event_delete(&v);
            if (!ok)
                return -1;
            continue;
        }
        int match = !strcmp((const char *)k.data.scalar.value, path[0]);
        yaml_mark_t key_mark = k.start_mark;
        yaml_event_delete(&k);
        if (!next_event(p, &v))
            return -1;
        if (match && n == 1) {
            *out = want_key ? key_mark : v.start_mark;
            yaml_event_delete(&v);
            return 1;
        }
        if (match) {
            int is_map = v.type == YAML_MAPPING_START_EVENT;
            yaml_event_delete(&v);
            return is_map ? find_in_mapping(p, path + 1, n - 1, want_key, out) : 0;
        }
        int ok = skip_node(p, &v);
        yaml_event_delete(&v);
        if (!ok)
            return -1;
    }
}

/* Where section.key (n = 2) or section (n = 1) is written: the key's position when
 * want_key, else its value's. 1-based; 0 when not found. */
static void locate(const char *text, size_t len, const char *const *path, int n, int want_key,
                   unsigned long *line, unsigned long *col) {
    *line = *col = 0;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        yaml_event_t e;
        if (!next_event(&p, &e))
            break;
        yaml_event_type_t t = e.type;
        yaml_event_delete(&e);
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT)
            continue;
        yaml_mark_t m;
        if (t == YAML_MAPPING_START_EVENT && find_in_mapping(&p, path, n, want_key, &m) == 1) {
            *line = m.line + 1;
            *col = m.column + 1;
        }
        break;
    }
    yaml_parser_delete(&p);
}

/* Runs libyaml over the whole text to report a syntax error precisely. */
static void syntax_error(const char *name, const char *text, size_t len) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        sy_seterr("%s: out of memory", name);
        return;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        yaml_event_t e;
        if (!next_event(&p, &e)) {
            char reason[320];
            snprintf(reason, sizeof reason, "invalid YAML: %s%s%s",
                     p.problem ? p.problem : "syntax error", p.context ? ", " : "",
                     p.context ? p.context : "");
            seterr_at(name, NULL, p.problem_mark.line + 1, p.problem_mark.column + 1, reason);
            break;
        }
        int end = e.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&e);
        if (end) {
            sy_seterr("%s: invalid YAML", name);
            break;
        }
    }
    yaml_parser_delete(&p);
}

static const char *describe_event(const char *ev) {
    if (!strncmp(ev, "SCALAR", 6) || !strncmp(ev, "STRING", 6))
        return "a single value";
    if (!strncmp(ev, "MAPPING", 7))
        return "a mapping of keys";
    if (!strncmp(ev, "SEQUENCE", 8))
        return "a list";
    if (!strncmp(ev, "ALIAS", 5))
        return "an alias";
    return ev;
}

/* Turns a captured libcyaml failure into "name: key: reason at line L, column C". */
static void cyaml_error(const char *name, const char *text, size_t len, cyaml_err_t err,
                        const sy_yaml_diag *d) {
    if (err == CYAML_ERR_LIBYAML_PARSER) {
        syntax_error(name, text, len);
        return;
    }
    /* The key path runs from the outermost frame to the innermost. */
    const char *path[18];
    int n = 0;
    for (int i = d->n_frames - 1; i >= 0 && n < 16; i--)
        if (d->frame[i].name[0])
            path[n++] = d->frame[i].name;
    unsigned long line = d->n_frames ? d->frame[0].line : 0;
    unsigned long col = d->n_frames ? d->frame[0].col : 0;

    char reason[320], got[64], want[64], unknown[64] = "";
    if (sscanf(d->reason, "Unexpected key: %63[^\n]", unknown) == 1) {
        path[n++] = unknown;
        snprintf(reason, sizeof reason, "unknown key%s",
                 n == 1 ? " (sections are model, routing, train, data, checkpoint, cluster, wire)"
                        : "");
        unsigned long l, c;
        locate(text, len, path, n, 1, &l, &c);
        if (l) {
            line = l;
            col = c;
        }
    } else if (sscanf(d->reason, "Expecting %63s got event: %63s", want, got) == 2) {
        want[strcspn(want, ",")] = 0;
        snprintf(reason, sizeof reason, "expected %s%s, got %s", describe_event(want),
                 n == 0 ? " at the top level" : "", describe_event(got));
    } else if (!strncmp(d->reason, "Mapping field already seen", 26)) {
        snprintf(reason, sizeof reason, "key given twice");
    } else if (err == CYAML_ERR_ALIAS) {
        snprintf(reason, sizeof reason, "YAML aliases are not allowed in a config");
    } else if (d->reason[0]) {
        snprintf(reason, sizeof reason, "%s", d->reason);
    } else {
        snprintf(reason, sizeof reason, "%s", cyaml_strerror(err));
    }
    char key[256] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(key);
        snprintf(key + l, sizeof key - l, "%s%s", i ? "." : "", path[i]);
    }
    seterr_at(name, key, line, col, reason);
}

/* ---- public API --------------------------------------------------------------------- */

void sy_config_defaults(sy_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->model = sy_model_cfg_default();
    cfg->train = (sy_train_cfg){
        .steps = 400,
        .batch_size = 32,
        .seq_len = 128,
        .groups = 1,
        .seed = 1234,
        .lr = 3e-3f,
        .min_lr = 3e-4f,
        .warmup_steps = 50,
        .schedule = SY_SCHED_COSINE,
        .weight_decay = 0.1f,
        .beta1 = 0.9f,
        .beta2 = 0.95f,
        .eps = 1e-8f,
        .grad_clip = 1.0f,
        .eval_every = 100,
        .eval_batches = 16,
        .log_every = 10,
        .threads = 0,
        .distill_from = NULL,
        .distill_alpha = 0.5f,
        .distill_temperature = 2.0f,
    };
    cfg->data.val_fraction = 0.05f;
    cfg->checkpoint.every = 100;
    cfg->checkpoint.keep = 3;
    cfg->cluster.min_workers = 1;
    cfg->cluster.heartbeat_ms = 1000;
    cfg->cluster.timeout_ms = 5000;
    cfg->cluster.join_at_once = 0;
    cfg->cluster.balance_by_speed = 1;
    cfg->cluster.replica_every = 1;
    cfg->wire.dtype = SY_WIRE_FP32;
    cfg->wire.chunk_bytes = 1 << 20;
    cfg->wire.overlap = 1;
    cfg->wire.bucket_bytes = 1 << 20;
    cfg->wire.local = 1;
    cfg->wire.stand_in = 1;
    cfg->wire.fill_waits = 0;
    cfg->data.dir = strdup("data");
    cfg->checkpoint.dir = strdup("runs/default");
    cfg->cluster.coordinator = strdup("tcp://127.0.0.1:5555");
    cfg->cluster.status = strdup("tcp://127.0.0.1:5556");
    cfg->source = strdup("<default>");
    /* Out of memory this early leaves NULLs, which sy_config_check refuses by name. */
}

void sy_config_free(sy_config *cfg) {
    if (!cfg)
        return;
    free(cfg->data.dir);
    free(cfg->train.distill_from);
    free(cfg->checkpoint.dir);
    free(cfg->cluster.coordinator);
    free(cfg->cluster.status);
    free(cfg->source);
    memset(cfg, 0, sizeof *cfg);
}

/* A deep copy: the strings are the copy's own. */
static int config_copy(sy_config *dst, const sy_config *src) {
    *dst = *src;
    char **strings[] = {&dst->data.dir, &dst->checkpoint.dir, &dst->cluster.coordinator,
                        &dst->cluster.status, &dst->source, &dst->train.distill_from};
    int ok = 1;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (*strings[i] && !(*strings[i] = strdup(*strings[i])))
            ok = 0;
    if (!ok) {
        sy_config_free(dst);
        sy_seterr("config: out of memory");
        return -1;
    }
    return 0;
}

/* Works on a copy of *cfg so that a refused document leaves *cfg as it was. */
int sy_config_load_string(sy_config *cfg, const char *yaml, size_t len, const char *name) {
    pthread_once(&g_schema_once, build_schema);
    if (!name)
        name = "<string>";
    sy_config tmp;
    if (config_copy(&tmp, cfg) < 0)
        return -1;
    free(tmp.source);
    tmp.source = strdup(name);

    sy_yaml_diag diag;
    const cyaml_config_t cc = sy_yaml_config(&diag, 0);
    raw_doc *raw = NULL;
    cyaml_err_t err = len ? cyaml_load_data((const uint8_t *)yaml, len, &cc, &g_top_schema,
                                            (cyaml_data_t **)&raw, NULL)
                          : CYAML_OK;
    if (err != CYAML_OK) {
        cyaml_error(name, yaml, len, err, &diag);
        goto fail;
    }
    /* raw is NULL for a document with no keys at all: every default stands. */
    for (int i = 0; raw && i < N_KEYS; i++) {
        const key_def *k = &g_keys[i];
        const raw_section *sec = raw->sec[k->section];
        const char *text = sec ? sec->v[g_slot[i]] : NULL;
        if (!text)
            continue;
        char why[256];
        if (set_value(&tmp, k, text, why, sizeof why) < 0) {
            const char *path[2] = {g_section_names[k->section], k->name};
            char key[128];
            unsigned long line, col;
            locate(yaml, len, path, 2, 0, &line, &col);
            snprintf(key, sizeof key, "%s.%s", path[0], path[1]);
            seterr_at(name, key, line, col, why);
            goto fail;
        }
    }
    if (raw)
        cyaml_free(&cc, &g_top_schema, raw, 0);
    raw = NULL;
    if (sy_config_check(&tmp) < 0)
        goto fail;
    sy_config_free(cfg);
    *cfg = tmp;
    return 0;
fail:
    if (raw)
        cyaml_free(&cc, &g_top_schema, raw, 0);
    sy_config_free(&tmp);
    return -1;
}

int sy_config_load(sy_config *cfg, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sy_seterr("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        sy_seterr("%s: cannot read: not a regular file", path);
        fclose(f);
        return -1;
    }
    if ((unsigned long long)st.st_size > CONFIG_MAX_BYTES) {
        sy_seterr("%s: cannot read: %lld bytes is too large for a config file", path,
                  (long long)st.st_size);
        fclose(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    size_t got = text ? fread(text, 1, size, f) : 0;
    int read_error = !text || got != size || ferror(f);
    fclose(f);
    if (read_error) {
        sy_seterr("%s: cannot read: %s", path, text ? "short read" : "out of memory");
        free(text);
        return -1;
    }
    text[size] = 0;
    int rc = sy_config_load_string(cfg, text, size, path);
    free(text);
    return rc;
}

int sy_config_load_default(sy_config *cfg) {
    return sy_config_load_string(cfg, sy_default_config_yaml,
                                 (size_t)sy_default_config_yaml_len,
                                 "configs/default.yaml (embedded)");
}

int sy_config_set(sy_config *cfg, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq) {
        sy_seterr("override '%s': expected section.key=value, e.g. train.lr=0.001", assignment);
        return -1;
    }
    /* Trim blanks around the key and the value ("train.lr = 0.1" from a script). */
    const char *k0 = assignment, *k1 = eq;
    while (*k0 == ' ' || *k0 == '\t')
        k0++;
    while (k1 > k0 && (k1[-1] == ' ' || k1[-1] == '\t'))
        k1--;
    const char *v0 = eq + 1;
    while (*v0 == ' ' || *v0 == '\t')
        v0++;
    size_t vlen = strlen(v0);
    while (vlen && (v0[vlen - 1] == ' ' || v0[vlen - 1] == '\t'))
        vlen--;
    char key[128], value[STRING_MAX + 2];
    if ((size_t)(k1 - k0) >= sizeof key || vlen >= sizeof value) {
        sy_seterr("override '%.60s...': too long", assignment);
        return -1;
    }
    memcpy(key, k0, (size_t)(k1 - k0));
    key[k1 - k0] = 0;
    memcpy(value, v0, vlen);
    value[vlen] = 0;

    const char *dot = strchr(key, '.');
    const key_def *k = dot ? find_key(key, (size_t)(dot - key), dot + 1) : NULL;
    if (!k) {
        sy_seterr("override: %s: unknown key (expected section.key with section one of model, "
                  "routing, train, data, checkpoint, cluster, wire)",
                  key);
        return -1;
    }
    char why[256];
    if (set_value(cfg, k, value, why, sizeof why) < 0) {
        sy_seterr("override: %s: %s", key, why);
        return -1;
    }
    return 0;
}

int sy_config_check(const sy_config *cfg) {
    const char *name = cfg->source ? cfg->source : "config";
    char why[256];
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &g_keys[i];
        if (check_stored(cfg, k, why, sizeof why) < 0) {
            sy_seterr("%s: %s.%s: %s", name, g_section_names[k->section], k->name, why);
            return -1;
        }
    }
    if (sy_model_cfg_check(&cfg->model) < 0) {
        sy_err_prefix("%s", name);
        return -1;
    }
    const sy_train_cfg *t = &cfg->train;
    if (t->seq_len > cfg->model.seq_len) {
        sy_seterr("%s: train.seq_len: must be <= model.seq_len = %d (got %d)", name,
                  cfg->model.seq_len, t->seq_len);
        return -1;
    }
    if (t->batch_size % t->groups != 0) {
        sy_seterr("%s: train.batch_size: must be divisible by routing.groups (%d %% %d = %d)",
                  name, t->batch_size, t->groups, t->batch_size % t->groups);
        return -1;
    }
    if (t->min_lr > t->lr) {
        sy_seterr("%s: train.min_lr: must be <= train.lr = %g (got %g)", name, (double)t->lr,
                  (double)t->min_lr);
        return -1;
    }
    if (cfg->cluster.timeout_ms <= cfg->cluster.heartbeat_ms) {
        sy_seterr("%s: cluster.timeout_ms: must be > cluster.heartbeat_ms = %d (got %d)", name,
                  cfg->cluster.heartbeat_ms, cfg->cluster.timeout_ms);
        return -1;
    }
    return 0;
}

char *sy_config_to_yaml(const sy_config *cfg) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) {
        sy_seterr("config to yaml: out of memory");
        return NULL;
    }
    fprintf(f, "# switchyard run configuration");
    if (cfg->source) {
        /* the source name is free text: keep it on its comment line */
        fputs(" (from ", f);
        for (const char *p = cfg->source; *p; p++)
            fputc(*p == '\n' || *p == '\r' ? ' ' : *p, f);
        fputc(')', f);
    }
    fputc('\n', f);
    int section = -1;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &g_keys[i];
        if (k->section != section) {
            section = k->section;
            fprintf(f, "%s:\n", g_section_names[section]);
        }
        fprintf(f, "  %s: ", k->name);
        write_value(f, cfg, k);
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        free(buf);
        sy_seterr("config to yaml: out of memory");
        return NULL;
    }
    return buf;
}
