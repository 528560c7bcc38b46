/* switchyard eval CHECKPOINT [--data DIR] [--batches N]: the validation loss of a trained
 * model per language, and which experts each language's bytes go to.
 *
 * The validation set (DIR/val.bin, default the config's data.dir) is read in the order
 * training's validation uses (sy_batch_eval: windows of train.seq_len spread over the
 * whole file) in batches of train.batch_size rows, in eval mode (evaluation capacity
 * factor, train's routing groups, no dropout), covering every window once (or the first
 * N batches). A token belongs to the language of the document its input byte comes
 * from. Loss: mean cross-entropy in nats per byte (and bits). Routing: for every switch
 * layer, the share of a language's tokens whose first choice went to each expert, and
 * the share dropped (over capacity: no expert ran for them). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "data.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "model_load.h"

static void usage(FILE *f) {
    fprintf(f, "usage: switchyard eval CHECKPOINT [--data DIR] [--batches N] [--json]\n"
               "  CHECKPOINT: a step-NNNNNNNN directory, or a run directory (its newest checkpoint).\n"
               "  Validation loss per language and the share of each language's tokens per expert, on\n"
               "  DIR/val.bin (default: the checkpoint config's data.dir), the whole set or N batches.\n"
               "  --json: one JSON object instead of tables (with the mean loss terms per batch).\n");
}

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *data_dir = NULL;
    int64_t max_batches = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--data") && i + 1 < argc)
            data_dir = argv[++i];
        else if (!strcmp(a, "--batches") && i + 1 < argc) {
            char *end;
            errno = 0;
            max_batches = strtoll(argv[++i], &end, 10);
            if (*end || errno || max_batches < 1) {
                fprintf(stderr, "eval: --batches: expected a positive integer (got '%s')\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' || ckpt) {
            fprintf(stderr, "eval: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else
            ckpt = a;
    }
    if (!ckpt) {
        usage(stderr);
        return 2;
    }
    int code = 1;
    sy_config cfg;
    sy_tokens *val = NULL;
    int32_t *batch = NULL;
    int16_t *lang = NULL;
    double *loss = NULL;
    int64_t *count = NULL, *route = NULL;
    char dir[4096], path[4200];
    sy_model *m = NULL;
    if (!(m = sy_model_load(ckpt, &cfg, 0, 0, dir, sizeof dir)))
        goto fail;
    int B = cfg.train.batch_size, T = cfg.train.seq_len;
    const sy_model_cfg *mc = &cfg.model;
    int L = mc->n_layers, E = mc->n_experts, V = mc->vocab, k = mc->top_k;
    snprintf(path, sizeof path, "%s/val.bin", data_dir ? data_dir : cfg.data.dir);
    if (!(val = sy_tokens_load(path)))
        goto fail;
    int64_t W = sy_eval_windows(val, T), nb = sy_eval_batches(val, B, T);
    if (W < 1) {
        sy_seterr("%s: %" PRId64 " bytes, fewer than one window of %d + 1", path, val->n_bytes, T);
        goto fail;
    }
    if (max_batches > 0 && max_batches < nb)
        nb = max_batches;
    int NL = val->n_langs;
    batch = malloc((size_t)B * (T + 1) * sizeof *batch);
    lang = malloc((size_t)B * T * sizeof *lang);
    loss = calloc((size_t)NL, sizeof *loss);
    count = calloc((size_t)NL, sizeof *count);
    route = calloc((size_t)L * NL * (E + 1), sizeof *route); /* [layer][lang][expert, dropped] */
    if (!batch || !lang || !loss || !count || !route) {
        sy_seterr("eval: out of memory");
        goto fail;
    }
    sy_info("evaluating %s on %s: %" PRId64 " batches of %d x %d (%" PRId64 " windows), eval capacity factor %g, "
            "%d group%s",
            dir, path, nb, B, T, W, (double)mc->eval_capacity_factor, cfg.train.groups,
            cfg.train.groups == 1 ? "" : "s");
    double t0 = sy_now();
    sy_losses sum = {0, 0, 0, 0};
    for (int64_t bi = 0; bi < nb; bi++) {
        if (sy_batch_eval(val, (int)bi, B, T, batch) || sy_batch_eval_lang(val, (int)bi, B, T, lang))
            goto fail;
        sy_pass ps = {.B = B, .T = T, .groups = cfg.train.groups, .training = 0, .seed = cfg.train.seed};
        sy_losses l;
        if (sy_model_forward(m, &ps, batch, &l))
            goto fail;
        sum.total += l.total;
        sum.ce += l.ce;
        sum.aux += l.aux;
        sum.z += l.z;
        const float *logits = sy_model_logits(m);
        for (int r = 0; r < B; r++) {
            if (bi * B + r >= W)
                break; /* the last batch wraps round to windows already counted */
            for (int t = 0; t < T; t++) {
                size_t i = (size_t)r * T + t;
                int g = lang[i], target = batch[(size_t)r * (T + 1) + t + 1];
                if (g < 0 || g >= NL)
                    continue;
                loss[g] += sy_crossentropy(NULL, logits + i * V, &target, 1, V, 0.0f);
                count[g]++;
                for (int layer = 0; layer < L; layer++) {
                    const int *ch = sy_model_routing(m, layer, NULL);
                    if (!ch)
                        continue;
                    int e = ch[i * k];
                    route[((size_t)layer * NL + g) * (E + 1) + (e < 0 ? E : e)]++;
                }
            }
        }
        if (nb >= 20 && (bi + 1) % (nb / 10) == 0)
            sy_info("batch %" PRId64 "/%" PRId64, bi + 1, nb);
    }
    double secs = sy_now() - t0;
    int64_t total_n = 0;
    double total_loss = 0.0;
    for (int g = 0; g < NL; g++) {
        total_n += count[g];
        total_loss += loss[g];
    }
    const char *dash = strrchr(dir, '-');
    if (json) {
        printf("{\"checkpoint\": \"%s\", \"data\": \"%s\", \"batches\": %" PRId64 ", \"batch_size\": %d, "
               "\"seq_len\": %d, \"tokens\": %" PRId64 ", \"loss\": %.9g,\n \"batch_mean\": {\"total\": %.9g, "
               "\"ce\": %.9g, \"aux\": %.9g, \"z\": %.9g},\n \"langs\": {",
               dir, path, nb, B, T, total_n, total_n ? total_loss / total_n : NAN, sum.total / nb, sum.ce / nb,
               sum.aux / nb, sum.z / nb);
        int first = 1;
        for (int g = 0; g < NL; g++) {
            if (!count[g])
                continue;
            printf("%s\n  \"%s\": {\"tokens\": %" PRId64 ", \"loss\": %.9g, \"experts\": {", first ? "" : ",",
                   sy_tokens_lang_name(val, g), count[g], loss[g] / count[g]);
            first = 0;
            int lfirst = 1;
            for (int layer = 0; layer < L; layer++) {
                if (!sy_is_switch_layer(mc, layer))
                    continue;
                const int64_t *rg = route + ((size_t)layer * NL + g) * (E + 1);
                printf("%s\"%d\": [", lfirst ? "" : ", ", layer);
                lfirst = 0;
                for (int e = 0; e < E; e++)
                    printf("%s%.6f", e ? ", " : "", (double)rg[e] / count[g]);
                printf("]");
            }
            printf("}}");
        }
        printf("\n }}\n");
        code = 0;
        goto out;
    }
    printf("checkpoint %s (step %lld)\nvalidation %s: %" PRId64 " tokens in %.1fs\n\n", dir,
           dash ? strtoll(dash + 1, NULL, 10) : -1LL, path, total_n, secs);
    printf("%-8s %10s %10s %10s\n", "lang", "tokens", "nats/byte", "bits/byte");
    for (int g = 0; g < NL; g++)
        if (count[g])
            printf("%-8s %10" PRId64 " %10.4f %10.4f\n", sy_tokens_lang_name(val, g), count[g], loss[g] / count[g],
                   loss[g] / count[g] / log(2.0));
    printf("%-8s %10" PRId64 " %10.4f %10.4f\n", "all", total_n, total_n ? total_loss / total_n : NAN,
           total_n ? total_loss / total_n / log(2.0) : NAN);
    for (int layer = 0; layer < L; layer++) {
        if (!sy_is_switch_layer(mc, layer))
            continue;
        printf("\nlayer %d: share of each language's tokens per expert (first choice; dropped = over capacity)\n",
               layer);
        printf("%-8s", "lang");
        for (int e = 0; e < E; e++) {
            char h[16];
            snprintf(h, sizeof h, "e%d", e);
            printf(" %6s", h);
        }
        printf(" %8s\n", "dropped");
        for (int g = 0; g < NL; g++) {
            if (!count[g])
                continue;
            printf("%-8s", sy_tokens_lang_name(val, g));
            const int64_t *rg = route + ((size_t)layer * NL + g) * (E + 1);
            for (int e = 0; e <= E; e++)
                printf(e < E ? " %5.1f%%" : " %7.1f%%", 100.0 * rg[e] / count[g]);
            printf("\n");
        }
    }
    code = 0;
    goto out;
fail:
    fprintf(stderr, "eval: %s\n", sy_lasterr());
out:
    free(batch);
    free(lang);
    free(loss);
    free(count);
    free(route);
    sy_tokens_destroy(&val);
    sy_model_destroy(&m);
    sy_config_free(&cfg);
    return code;
}
