/* switchyard: one command, thin subcommands over common/. */
#include <stdio.h>
#include <string.h>

#include "blas_setup.h"
#include "commands.h"
#include "log.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} subcommand;

static const subcommand commands[] = {
    {"prepare", cmd_prepare, "turn text files (default: the fortunes corpus) into train/val token files"},
    {"train", cmd_train, "train a model in one process: switchyard train [CONFIG] [--set key=value ...]"},
    {"up", cmd_up, "a local cluster: coordinator + N workers on loopback: switchyard up [CONFIG] --workers N"},
    {"status", cmd_status, "what a running coordinator is doing: switchyard status ENDPOINT [--json|--prom] [--watch]"},
    {"plot", cmd_plot, "loss and tokens/s curves of a run log: switchyard plot LOG [-o FILE.png|FILE.svg]"},
    {"refcheck", cmd_refcheck, "check the maths against a PyTorch reference case: switchyard refcheck DIR"},
    {"bench", cmd_bench, "throughput and time by phase: switchyard bench [CONFIG]; bench allreduce|alltoall"},
    {"sample", cmd_sample, "generate text from a checkpoint: switchyard sample CHECKPOINT [--prompt TEXT] [--tokens N]"},
    {"eval", cmd_eval, "validation loss and expert share per language: switchyard eval CHECKPOINT [--data DIR]"},
    {"export", cmd_export, "weights for other tools: switchyard export CHECKPOINT --format safetensors -o FILE"},
    {"keygen", cmd_keygen, "CURVE key pairs: switchyard keygen NAME | --cluster DIR [--workers N]"},
    {"ckpt", cmd_ckpt, "inspect or verify a checkpoint: switchyard ckpt inspect|verify DIR"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: switchyard COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nEnvironment: SWITCHYARD_THREADS (compute threads), SWITCHYARD_BLAS_CORE (auto|none|NAME: the "
               "OpenBLAS kernel), SWITCHYARD_LOG (debug|info|warn|error).\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        /* the numeric commands want OpenBLAS on the right kernel before any math runs */
        if (strcmp(argv[1], "ckpt") && strcmp(argv[1], "prepare") && strcmp(argv[1], "up") &&
            strcmp(argv[1], "status") && strcmp(argv[1], "plot") && strcmp(argv[1], "export") &&
            strcmp(argv[1], "keygen")) {
            if (sy_blas_setup(argc, argv, "switchyard")) {
                fprintf(stderr, "switchyard: %s\n", sy_lasterr());
                return 2;
            }
        }
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "switchyard: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
