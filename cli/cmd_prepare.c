/* cmd_prepare.c: `switchyard prepare` turns text files (or, with none, the Debian
 * fortunes in five languages) into DIR/train.bin and DIR/val.bin. The work is
 * sy_prepare() in common/store/prepare.c; this file parses flags and prints the summary. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "data.h"
#include "log.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: switchyard prepare [--out DIR] [--val-fraction F] [--force] [--fortunes-root DIR]\n"
            "                          [[--lang NAME] [--split auto|fortune|file] [--encoding ENC] FILE|DIR]...\n"
            "\n"
            "Writes DIR/train.bin and DIR/val.bin (DIR default \"data\") for byte-level training.\n"
            "With no FILE: the default multilingual corpus from the Debian fortunes packages\n"
            "(fortunes, fortunes-de, -es, -it, -ru under /usr/share/games), one document per fortune,\n"
            "tagged en/de/es/it/ru.\n"
            "\n"
            "  --out DIR           output directory (created if needed)\n"
            "  --val-fraction F    share of documents held out for validation, by content hash (0.05)\n"
            "  --force             rebuild even when the files are up to date with the inputs\n"
            "  --fortunes-root DIR where the default corpus is looked for (/usr/share/games)\n"
            "  --lang NAME         language tag for the FILEs after it (default \"unknown\")\n"
            "  --split MODE        how FILEs after it become documents: fortune (one per \"%%\"-line\n"
            "                      separated entry), file (whole file), auto (fortune if the file has a\n"
            "                      \"%%\" line and no NUL byte; the default)\n"
            "  --encoding ENC      convert the FILEs after it from ENC (iconv name) to UTF-8;\n"
            "                      default: bytes unchanged\n"
            "A DIR argument stands for its regular files, recursively (no dotfiles, symlinks, *.dat).\n");
}

typedef struct {
    int tty;
    int64_t last_pct;
} progress_state;

static void show_progress(void *ctx, const char *phase, int64_t done, int64_t total) {
    progress_state *p = ctx;
    if (strcmp(phase, "reading") != 0)
        return;
    if (p->tty) {
        fprintf(stderr, "\rreading %lld/%lld files", (long long)done, (long long)total);
        if (done == total)
            fputc('\n', stderr);
        fflush(stderr);
        return;
    }
    if (total < 50)
        return; /* quick: not worth the lines */
    int64_t pct = done * 100 / total;
    if (pct / 25 != p->last_pct / 25 || done == total) {
        sy_info("reading files: %lld/%lld", (long long)done, (long long)total);
        p->last_pct = pct;
    }
}

static void print_summary(const sy_prepare_report *r, const char *dir, double val_fraction) {
    printf("%s: %s in %.2f s from %lld input files (val fraction %g)\n", dir,
           r->up_to_date ? "up to date" : "built", r->seconds, (long long)r->n_files, val_fraction);
    printf("%-10s %10s %12s %10s %12s\n", "lang", "train docs", "train bytes", "val docs", "val bytes");
    int64_t td = 0, tb = 0, vd = 0, vb = 0;
    for (int l = 0; l < r->n_langs; l++) {
        printf("%-10s %10lld %12lld %10lld %12lld\n", r->lang_names[l], (long long)r->docs[SY_PART_TRAIN][l],
               (long long)r->bytes[SY_PART_TRAIN][l], (long long)r->docs[SY_PART_VAL][l],
               (long long)r->bytes[SY_PART_VAL][l]);
        td += r->docs[SY_PART_TRAIN][l], tb += r->bytes[SY_PART_TRAIN][l];
        vd += r->docs[SY_PART_VAL][l], vb += r->bytes[SY_PART_VAL][l];
    }
    printf("%-10s %10lld %12lld %10lld %12lld\n", "total", (long long)td, (long long)tb, (long long)vd,
           (long long)vb);
    printf("train unigram entropy: %.4f nats/byte (%.4f bits/byte)\n", r->train_entropy,
           r->train_entropy / 0.6931471805599453);
    printf("files: %s %s\n", r->train_path, r->val_path);
    uint64_t ht = 0, hv = 0;
    if (!sy_tokens_peek_hash(r->train_path, &ht) && !sy_tokens_peek_hash(r->val_path, &hv))
        printf("content hash: train.bin %016llx, val.bin %016llx (workers must hold the same train.bin)\n",
               (unsigned long long)ht, (unsigned long long)hv);
}

int cmd_prepare(int argc, char **argv) {
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    sy_prepare_input *inputs = calloc((size_t)(argc > 0 ? argc : 1), sizeof *inputs);
    if (!inputs) {
        sy_error("prepare: out of memory");
        return 1;
    }
    const char *lang = NULL, *encoding = NULL;
    sy_split_mode split = SY_SPLIT_AUTO;
    int n = 0, rc = 2;
    enum { OPT_FORCE = 256, OPT_OUT, OPT_ROOT, OPT_VAL, OPT_LANG, OPT_ENCODING, OPT_SPLIT };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},           {"force", no_argument, NULL, OPT_FORCE},
        {"out", required_argument, NULL, OPT_OUT},  {"fortunes-root", required_argument, NULL, OPT_ROOT},
        {"val-fraction", required_argument, NULL, OPT_VAL}, {"lang", required_argument, NULL, OPT_LANG},
        {"encoding", required_argument, NULL, OPT_ENCODING}, {"split", required_argument, NULL, OPT_SPLIT},
        {0, 0, 0, 0}};
    optind = 0; /* a fresh scan */
    opterr = 0; /* our own messages */
    /* "-": files come back in order (code 1), so --lang/--split/--encoding apply to the
     * files after them; after "--" everything is a file */
    int opt;
    while ((opt = getopt_long(argc, argv, "-:h", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 1:
            inputs[n++] = (sy_prepare_input){.path = optarg, .lang = lang, .split = split, .encoding = encoding};
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto done;
        case OPT_FORCE: o.force = 1; break;
        case OPT_OUT: o.out_dir = optarg; break;
        case OPT_ROOT: o.fortunes_root = optarg; break;
        case OPT_VAL:
            o.val_fraction = strtod(optarg, &end);
            if (end == optarg || *end || !(o.val_fraction >= 0 && o.val_fraction < 1)) {
                fprintf(stderr, "prepare: --val-fraction: \"%s\" is not a number in [0, 1)\n", optarg);
                goto done;
            }
            break;
        case OPT_LANG: lang = optarg; break;
        case OPT_ENCODING: encoding = optarg; break;
        case OPT_SPLIT:
            if (!strcmp(optarg, "auto"))
                split = SY_SPLIT_AUTO;
            else if (!strcmp(optarg, "fortune"))
                split = SY_SPLIT_FORTUNE;
            else if (!strcmp(optarg, "file"))
                split = SY_SPLIT_FILE;
            else {
                fprintf(stderr, "prepare: --split: \"%s\" is not auto, fortune or file\n", optarg);
                goto done;
            }
            break;
        case ':':
            fprintf(stderr, "prepare: %s: needs a value\n", argv[optind - 1]);
            goto done;
        default:
            fprintf(stderr, "prepare: %s: unknown option\n", argv[optind - 1]);
            usage(stderr);
            goto done;
        }
    }
    for (int i = optind; i < argc; i++) /* after "--" */
        inputs[n++] = (sy_prepare_input){.path = argv[i], .lang = lang, .split = split, .encoding = encoding};
    if (n == 0 && (lang || encoding || split != SY_SPLIT_AUTO)) {
        fprintf(stderr, "prepare: --lang/--split/--encoding apply to the FILEs after them; none given\n");
        goto done;
    }
    o.inputs = inputs;
    o.n_inputs = n;
    progress_state ps = {.tty = isatty(STDERR_FILENO), .last_pct = -100};
    o.progress = show_progress;
    o.progress_ctx = &ps;
    if (n == 0)
        sy_info("building the default corpus from the fortunes under %s", o.fortunes_root);
    sy_prepare_report rep;
    if (sy_prepare(&o, &rep) != 0) {
        sy_error("prepare: %s", sy_lasterr());
        rc = 1;
        goto done;
    }
    print_summary(&rep, o.out_dir, o.val_fraction);
    rc = 0;
done:
    free(inputs);
    return rc;
}
