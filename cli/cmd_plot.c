/* cmd_plot.c: `switchyard plot LOG [-o FILE.png|FILE.svg]`: draws a run log's training
 * curves (loss, validation, tokens/s, membership changes) for a person to look at. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "log.h"
#include "plot.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: switchyard plot LOG [-o FILE.png|FILE.svg] [--size WxH] [--stored]\n"
            "  LOG          a run log (CHECKPOINT_DIR/run_log.jsonl from `up`, train_log.jsonl from\n"
            "               `train`), or a checkpoint directory holding one\n"
            "  -o FILE      output; PNG or SVG by the extension (default: LOG's directory/loss.png)\n"
            "  --size WxH   image size in pixels (default 1000x760)\n"
            "  --stored     PNG without compression (larger file; for debugging the encoder)\n"
            "Draws training ce, total loss and validation ce over steps, tokens/s below, and a dashed\n"
            "line where the run, its epoch or its worker count changed.\n");
}

/* A directory stands for the log inside it: the coordinator's, else the trainer's. */
static int resolve_log(const char *arg, char *out, size_t n) {
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        static const char *names[] = {"run_log.jsonl", "train_log.jsonl"};
        for (int i = 0; i < 2; i++) {
            snprintf(out, n, "%s/%s", arg, names[i]);
            if (stat(out, &st) == 0)
                return 0;
        }
        fprintf(stderr, "switchyard plot: %s: a directory without run_log.jsonl or train_log.jsonl\n", arg);
        return -1;
    }
    if ((size_t)snprintf(out, n, "%s", arg) >= n) {
        fprintf(stderr, "switchyard plot: %s: path too long\n", arg);
        return -1;
    }
    return 0;
}

int cmd_plot(int argc, char **argv) {
    const char *log_arg = NULL, *out_arg = NULL;
    sy_plot_opts opts = {0};
    enum { OPT_SIZE = 256, OPT_STORED };
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"output", required_argument, NULL, 'o'},
                                             {"size", required_argument, NULL, OPT_SIZE},
                                             {"stored", no_argument, NULL, OPT_STORED},
                                             {0, 0, 0, 0}};
    optind = 0; /* a fresh scan: commands may run more than once in a process */
    opterr = 0; /* the messages below name the command */
    int c;
    while ((c = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
        char tail;
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'o':
            out_arg = optarg;
            break;
        case OPT_SIZE:
            if (sscanf(optarg, "%dx%d%c", &opts.width, &opts.height, &tail) != 2) {
                fprintf(stderr, "switchyard plot: --size wants WIDTHxHEIGHT, e.g. 1200x800\n");
                return 2;
            }
            break;
        case OPT_STORED:
            opts.png_stored = 1;
            break;
        case ':':
            if (optopt == OPT_SIZE) {
                fprintf(stderr, "switchyard plot: --size wants WIDTHxHEIGHT, e.g. 1200x800\n");
                return 2;
            }
            fprintf(stderr, "switchyard plot: %s needs a file name\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "switchyard plot: unknown option '%s'\n\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!log_arg) {
            log_arg = argv[i];
        } else {
            fprintf(stderr, "switchyard plot: more than one LOG given ('%s', '%s')\n\n", log_arg, argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!log_arg) {
        usage(stderr);
        return 2;
    }

    char log_path[PATH_MAX], out_path[PATH_MAX];
    if (resolve_log(log_arg, log_path, sizeof log_path))
        return 1;
    if (out_arg) {
        snprintf(out_path, sizeof out_path, "%s", out_arg);
    } else {
        const char *slash = strrchr(log_path, '/');
        if (slash)
            snprintf(out_path, sizeof out_path, "%.*s/loss.png", (int)(slash - log_path), log_path);
        else
            snprintf(out_path, sizeof out_path, "loss.png");
    }
    if (sy_plot_format_from_path(out_path) < 0) {
        fprintf(stderr, "switchyard plot: %s: the output must end in .png or .svg\n", out_path);
        return 2;
    }

    sy_runlog *log = sy_runlog_read(log_path);
    if (!log) {
        fprintf(stderr, "switchyard plot: %s\n", sy_lasterr());
        return 1;
    }
    int rc = 1;
    if (!log->lines) {
        fprintf(stderr, "switchyard plot: %s: empty log (no lines yet)\n", log_path);
        goto done;
    }
    if (!log->n) {
        fprintf(stderr,
                "switchyard plot: %s: no usable lines: %zu lines, %zu malformed, %zu without a numeric \"step\"\n",
                log_path, log->lines, log->malformed, log->no_step);
        goto done;
    }
    sy_plot_layout lay;
    if (sy_plot_write(log, out_path, &opts, &lay)) {
        fprintf(stderr, "switchyard plot: %s\n", sy_lasterr());
        goto done;
    }
    printf("wrote %s (%s %dx%d): %zu points, %zu marker%s", out_path,
           sy_plot_format_from_path(out_path) == SY_PLOT_SVG ? "SVG" : "PNG", lay.width, lay.height, lay.points,
           lay.markers, lay.markers == 1 ? "" : "s");
    if (log->malformed + log->no_step)
        printf(", %zu of %zu lines skipped", log->malformed + log->no_step, log->lines);
    printf("\n");
    rc = 0;
done:
    sy_runlog_destroy(&log);
    return rc;
}
