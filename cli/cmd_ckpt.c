/* cmd_ckpt.c: `switchyard ckpt inspect|verify DIR`: look into checkpoints without
 * training. DIR is one checkpoint (holds a manifest) or a root holding step-* dirs. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdlib.h>

#include <math.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "commands.h"
#include "log.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: switchyard ckpt inspect DIR   metadata and tensor table of a checkpoint,\n"
            "                                     or the checkpoints under a root directory\n"
            "       switchyard ckpt verify DIR    check every checksum; exit 1 if any is bad\n"
            "       switchyard ckpt diff A B [--tol X] [--prefix P]\n"
            "                                     relative difference |a-b|/|b| of every f32 tensor named in\n"
            "                                     both (optionally only names starting with P); exit 1 if a\n"
            "                                     tensor differs by more than X (default 1e-5) or is missing\n"
            "DIR is a checkpoint (ROOT/step-NNNNNNNN, holding a manifest) or a ROOT.\n");
}

/* A checkpoint holds a manifest; a directory with neither a manifest nor step-*
 * subdirectories is treated as a (broken) checkpoint so the error names its manifest. */
static int is_checkpoint_dir(const char *dir) {
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/manifest", dir);
    if (stat(p, &st) == 0)
        return 1;
    int64_t *steps;
    size_t n;
    if (sy_ckpt_list(dir, &steps, &n) < 0)
        return 1;
    free(steps);
    return n == 0;
}

static void fmt_shape(const sy_ckpt_tensor *t, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(out + o, n - o, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    if (o < n)
        snprintf(out + o, n - o, "]");
}

/* Prints a value on one line: control characters (a multi-line value) as escapes. */
static void print_value(const char *v) {
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p < ' ' || *p == 127)
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

static int inspect_one(const char *dir) {
    sy_ckpt *ck = sy_ckpt_open(dir);
    if (!ck) {
        fprintf(stderr, "switchyard ckpt: %s\n", sy_lasterr());
        return 1;
    }
    printf("checkpoint  %s\n", sy_ckpt_dir(ck));
    printf("step        %" PRId64 "\n", sy_ckpt_step(ck));
    for (int i = 0; i < sy_ckpt_meta_count(ck); i++) {
        const char *k, *v;
        sy_ckpt_meta_at(ck, i, &k, &v);
        printf("%-11s ", k);
        print_value(v);
        putchar('\n');
    }
    size_t clen;
    if (sy_ckpt_config(ck, &clen))
        printf("config      config.yaml (%zu bytes)\n", clen);
    else
        printf("config      (none)\n");

    int n = sy_ckpt_count(ck), wname = 4;
    for (int i = 0; i < n; i++) {
        int l = (int)strlen(sy_ckpt_tensor_at(ck, i)->name);
        if (l > wname)
            wname = l;
    }
    printf("\n%-*s  %-5s  %-20s  %12s  %s\n", wname, "name", "dtype", "shape", "bytes", "crc32c");
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const sy_ckpt_tensor *t = sy_ckpt_tensor_at(ck, i);
        char shape[256];
        fmt_shape(t, shape, sizeof shape);
        printf("%-*s  %-5s  %-20s  %12" PRIu64 "  %08x\n", wname, t->name,
               sy_dtype_name(t->dtype), shape, t->bytes, t->crc);
        total += t->bytes;
    }
    printf("\ntotal: %d tensor%s, %" PRIu64 " bytes (%.2f MiB)\n", n, n == 1 ? "" : "s", total,
           total / 1048576.0);
    sy_ckpt_close(&ck);
    return 0;
}

/* Lists ROOT's checkpoints; only the manifests are read (use verify for the data). */
static int inspect_root(const char *root) {
    int64_t *steps;
    size_t n;
    if (sy_ckpt_list(root, &steps, &n) < 0) {
        fprintf(stderr, "switchyard ckpt: %s\n", sy_lasterr());
        return 1;
    }
    printf("%-40s  %10s  %8s  %14s  %s\n", "checkpoint", "step", "tensors", "bytes", "manifest");
    for (size_t i = 0; i < n; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/step-%08" PRId64, root, steps[i]);
        sy_ckpt *ck = sy_ckpt_open(dir);
        if (!ck) {
            printf("%-40s  %10" PRId64 "  %8s  %14s  BAD: %s\n", dir, steps[i], "-", "-",
                   sy_lasterr());
            continue;
        }
        uint64_t total = 0;
        for (int t = 0; t < sy_ckpt_count(ck); t++)
            total += sy_ckpt_tensor_at(ck, t)->bytes;
        printf("%-40s  %10" PRId64 "  %8d  %14" PRIu64 "  ok\n", dir, steps[i], sy_ckpt_count(ck),
               total);
        sy_ckpt_close(&ck);
    }
    free(steps);
    return 0;
}

/* Verifies one checkpoint, printing each bad tensor; returns the number of problems. */
static int verify_one(const char *dir) {
    sy_ckpt *ck = sy_ckpt_open(dir);
    if (!ck) {
        printf("BAD  %s\n", sy_lasterr());
        return 1;
    }
    int bad = 0, n = sy_ckpt_count(ck);
    uint64_t total = 0;
    double t0 = sy_now();
    for (int i = 0; i < n; i++) {
        if (sy_ckpt_verify_tensor(ck, i) < 0) {
            printf("BAD  %s\n", sy_lasterr());
            bad++;
        } else {
            total += sy_ckpt_tensor_at(ck, i)->bytes;
        }
    }
    double dt = sy_now() - t0;
    if (!bad && total >= 1000000 && dt > 0)
        printf("OK   %s: %d tensors, %" PRIu64 " bytes verified (%.0f MB/s)\n", sy_ckpt_dir(ck), n,
               total, total / dt / 1e6);
    else if (!bad)
        printf("OK   %s: %d tensors, %" PRIu64 " bytes verified\n", sy_ckpt_dir(ck), n, total);
    else
        printf("%d bad tensor%s in %s\n", bad, bad == 1 ? "" : "s", sy_ckpt_dir(ck));
    sy_ckpt_close(&ck);
    return bad;
}

static int verify_root(const char *root) {
    int64_t *steps;
    size_t n;
    if (sy_ckpt_list(root, &steps, &n) < 0) {
        fprintf(stderr, "switchyard ckpt: %s\n", sy_lasterr());
        return 1;
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/step-%08" PRId64, root, steps[i]);
        bad += verify_one(dir) > 0;
    }
    free(steps);
    return bad ? 1 : 0;
}

/* Compares the f32 tensors of two checkpoints by name. */
static int diff_checkpoints(const char *a_dir, const char *b_dir, double tol, const char *prefix) {
    sy_ckpt *a = sy_ckpt_open(a_dir), *b = a ? sy_ckpt_open(b_dir) : NULL;
    if (!a || !b) {
        fprintf(stderr, "switchyard ckpt diff: %s\n", sy_lasterr());
        sy_ckpt_close(&a);
        return 2;
    }
    int bad = 0, compared = 0;
    double worst = 0.0;
    const char *worst_name = "";
    float *x = NULL, *y = NULL;
    for (int i = 0; i < sy_ckpt_count(b); i++) {
        const sy_ckpt_tensor *tb = sy_ckpt_tensor_at(b, i);
        if (tb->dtype != SY_DT_F32 || (prefix && strncmp(tb->name, prefix, strlen(prefix))))
            continue;
        const sy_ckpt_tensor *ta = sy_ckpt_find(a, tb->name);
        if (!ta || ta->bytes != tb->bytes) {
            printf("%-40s %s\n", tb->name, ta ? "sizes differ" : "missing in the first checkpoint");
            bad++;
            continue;
        }
        float *nx = realloc(x, tb->bytes ? tb->bytes : 4), *ny = realloc(y, tb->bytes ? tb->bytes : 4);
        if (!nx || !ny) {
            free(nx ? nx : x);
            free(ny ? ny : y);
            sy_ckpt_close(&a);
            sy_ckpt_close(&b);
            return 2;
        }
        x = nx;
        y = ny;
        if (sy_ckpt_read(a, tb->name, x, tb->bytes) || sy_ckpt_read(b, tb->name, y, tb->bytes)) {
            printf("%-40s unreadable: %s\n", tb->name, sy_lasterr());
            bad++;
            continue;
        }
        double dn = 0, rn = 0;
        for (size_t j = 0; j < tb->bytes / 4; j++) {
            dn += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
            rn += (double)y[j] * y[j];
        }
        double e = rn > 0 ? sqrt(dn / rn) : sqrt(dn);
        compared++;
        if (e > worst || !worst_name[0]) {
            worst = e;
            worst_name = tb->name;
        }
        if (!(e <= tol)) {
            printf("%-40s rel.diff %.3e  over %.1e\n", tb->name, e, tol);
            bad++;
        }
    }
    free(x);
    free(y);
    printf("compared %d tensors: worst %s %.3e; %d over tolerance %.1e\n", compared, worst_name, worst, bad, tol);
    sy_ckpt_close(&a);
    sy_ckpt_close(&b);
    return bad || !compared ? 1 : 0;
}

int cmd_ckpt(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "diff")) {
        double tol = 1e-5;
        const char *prefix = NULL, *dirs[2];
        int ndirs = 0;
        enum { OPT_TOL = 256, OPT_PREFIX };
        static const struct option longopts[] = {{"tol", required_argument, NULL, OPT_TOL},
                                                 {"prefix", required_argument, NULL, OPT_PREFIX},
                                                 {0, 0, 0, 0}};
        optind = 0; /* a fresh scan */
        opterr = 0; /* our own messages */
        int opt;
        char *end;
        while ((opt = getopt_long(argc - 1, argv + 1, ":", longopts, NULL)) != -1) {
            switch (opt) {
            case OPT_TOL:
                tol = strtod(optarg, &end);
                if (end == optarg || *end || !(tol >= 0)) {
                    fprintf(stderr, "switchyard ckpt diff: --tol: \"%s\" is not a number >= 0\n", optarg);
                    return 2;
                }
                break;
            case OPT_PREFIX: prefix = optarg; break;
            default: /* an unknown option, or one without its value */
                fprintf(stderr, "switchyard ckpt diff: unexpected argument '%s'\n", argv[optind]);
                return 2;
            }
        }
        for (int i = optind + 1; i < argc; i++) {
            if (ndirs == 2) {
                fprintf(stderr, "switchyard ckpt diff: unexpected argument '%s'\n", argv[i]);
                return 2;
            }
            dirs[ndirs++] = argv[i];
        }
        if (ndirs != 2) {
            fprintf(stderr, "switchyard ckpt diff: expected two checkpoint directories\n");
            usage(stderr);
            return 2;
        }
        return diff_checkpoints(dirs[0], dirs[1], tol, prefix);
    }
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
                      !strcmp(argv[1], "help"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "switchyard ckpt: expected a command and a directory\n");
        usage(stderr);
        return 2;
    }
    const char *dir = argv[2];
    struct stat st;
    if (strcmp(argv[1], "inspect") && strcmp(argv[1], "verify")) {
        fprintf(stderr, "switchyard ckpt: unknown command \"%s\"\n", argv[1]);
        usage(stderr);
        return 2;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "switchyard ckpt: %s: not a directory\n", dir);
        return 1;
    }
    int single = is_checkpoint_dir(dir);
    if (!strcmp(argv[1], "inspect"))
        return single ? inspect_one(dir) : inspect_root(dir);
    return single ? (verify_one(dir) ? 1 : 0) : verify_root(dir);
}
