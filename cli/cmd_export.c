/* switchyard export CHECKPOINT --format safetensors -o FILE: the weights of a trained
 * model in the safetensors format, for other tools (PyTorch, ...).
 *
 * safetensors: u64 little-endian header length N, N bytes of JSON, then the tensors'
 * bytes. The JSON maps every tensor's canonical name (wte, layers.1.experts.3.w1, ...:
 * DESIGN.md) to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (offsets
 * into the data part), plus "__metadata__" (string values only):
 *   format      "switchyard"
 *   step        the checkpoint's step
 *   config      the run's whole config as YAML (the one stored in the checkpoint)
 *   model       the model and routing fields as one JSON object (vocab, d_model, ...)
 *   layout      "x @ W": a matrix [in, out] multiplies activations from the right
 *               (transpose it for torch.nn.Linear's weight [out, in])
 * Tensors are row-major float32 in the checkpoint's layout order (dense parameters, then
 * the experts); the header is padded with spaces to a multiple of 8 bytes. The file is
 * written to a temporary name, fsynced and renamed, so a reader never sees half of it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "log.h"
#include "model.h"
#include "model_load.h"

static void usage(FILE *f) {
    fprintf(f, "usage: switchyard export CHECKPOINT --format safetensors -o FILE\n"
               "  CHECKPOINT: a step-NNNNNNNN directory, or a run directory (its newest checkpoint).\n"
               "  Writes every parameter under its canonical name, float32, with the run's config as\n"
               "  metadata. Matrices are [in, out] (x @ W).\n");
}

/* JSON string literal of s (n bytes) into f. */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static char *model_json(const sy_model_cfg *c) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    fprintf(f,
            "{\"vocab\": %d, \"d_model\": %d, \"n_layers\": %d, \"n_heads\": %d, \"d_ff\": %d, \"n_experts\": %d, "
            "\"switch_every\": %d, \"seq_len\": %d, \"top_k\": %d, \"capacity_factor\": %.9g, "
            "\"eval_capacity_factor\": %.9g, \"aux_loss_coef\": %.9g, \"z_loss_coef\": %.9g, \"rmsnorm_eps\": 1e-06}",
            c->vocab, c->d_model, c->n_layers, c->n_heads, c->d_ff, c->n_experts, c->switch_every, c->seq_len,
            c->top_k, (double)c->capacity_factor, (double)c->eval_capacity_factor, (double)c->aux_loss_coef,
            (double)c->z_loss_coef);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int write_all(int fd, const void *p, size_t n, const char *path) {
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            sy_seterr("%s: write failed: %s", path, w < 0 ? strerror(errno) : "no progress");
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *format = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--format") && i + 1 < argc)
            format = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc)
            out = argv[++i];
        else if (a[0] == '-' || ckpt) {
            fprintf(stderr, "export: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else
            ckpt = a;
    }
    if (!ckpt || !out) {
        fprintf(stderr, "export: %s\n", !ckpt ? "which checkpoint?" : "-o FILE is required");
        usage(stderr);
        return 2;
    }
    if (format && strcmp(format, "safetensors")) {
        fprintf(stderr, "export: --format: only safetensors is supported (got '%s')\n", format);
        return 2;
    }
    int code = 1, fd = -1;
    sy_config cfg;
    char dir[4096], tmp[4200] = "";
    char *header = NULL, *yaml_meta = NULL, *mj = NULL;
    size_t hlen = 0;
    sy_model *m = sy_model_load(ckpt, &cfg, 1, 1, dir, sizeof dir);
    if (!m)
        goto fail;
    const sy_layout *lay = sy_model_layout(m);
    const float *params = sy_model_params(m);
    char *yaml = yaml_meta = sy_config_to_yaml(&cfg);
    mj = model_json(&cfg.model);
    if (!yaml || !mj)
        goto oom;
    FILE *f = open_memstream(&header, &hlen);
    if (!f)
        goto oom;
    const char *dash = strrchr(dir, '-');
    fprintf(f, "{\"__metadata__\": {\"format\": \"switchyard\", \"layout\": \"x @ W\", \"step\": \"%lld\", \"config\": ",
            dash ? strtoll(dash + 1, NULL, 10) : -1LL);
    json_str(f, yaml, strlen(yaml));
    fputs(", \"model\": ", f);
    json_str(f, mj, strlen(mj));
    fputc('}', f);
    uint64_t off = 0;
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        fprintf(f, ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%d", p->name, p->shape[0]);
        if (p->ndim > 1)
            fprintf(f, ", %d", p->shape[1]);
        fprintf(f, "], \"data_offsets\": [%" PRIu64 ", %" PRIu64 "]}", off, off + p->numel * 4);
        off += p->numel * 4;
    }
    fputc('}', f);
    /* pad to 8 bytes so the data part is aligned */
    long pos = ftell(f);
    while (pos % 8) {
        fputc(' ', f);
        pos++;
    }
    if (fclose(f))
        goto oom;
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sy_seterr("%s: cannot create: %s", tmp, strerror(errno));
        tmp[0] = 0;
        goto fail;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    if (write_all(fd, len8, 8, tmp) || write_all(fd, header, hlen, tmp))
        goto fail;
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        if (write_all(fd, params + p->offset, p->numel * 4, tmp))
            goto fail;
    }
    if (fsync(fd) || close(fd)) {
        fd = -1;
        sy_seterr("%s: cannot flush to disk: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, out)) {
        sy_seterr("%s: cannot rename to %s: %s", tmp, out, strerror(errno));
        goto fail;
    }
    tmp[0] = 0;
    printf("exported %s: %d tensors, %.2fM parameters, %.1f MB -> %s\n", dir, lay->n_params, off / 4 / 1e6,
           (8 + hlen + off) / 1e6, out);
    code = 0;
    goto out;
oom:
    sy_seterr("export: out of memory");
fail:
    fprintf(stderr, "export: %s\n", sy_lasterr());
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    free(header);
    free(yaml_meta);
    free(mj);
    sy_model_destroy(&m);
    sy_config_free(&cfg);
    return code;
}
