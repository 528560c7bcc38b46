/* switchyard refcheck DIR: runs a PyTorch reference case through the model and checks
 * every loss term, the routing and every gradient. A test, not a demo: exit 0 only when
 * everything is within tolerance. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "log.h"
#include "model.h"
#include "refcase.h"
#include "refcheck.h"

/* What the README promises: float32 arithmetic against float64 PyTorch gives about 1e-8
 * on the loss terms and 1e-6 on gradient norms; a tenfold loss of accuracy fails. */
#define LOSS_TOL 1e-6
#define GRAD_TOL 1e-5

static void usage(void) {
    fprintf(stderr, "usage: switchyard refcheck DIR [--workers N] [--quiet]\n"
                    "  Checks loss terms (rel. tol %.0e), routing (exact) and gradients (rel. tol %.0e)\n"
                    "  against a PyTorch reference case (manifest.yaml + raw tensors).\n",
            LOSS_TOL, GRAD_TOL);
}

static double rel_err(double ours, double ref) {
    double d = fabs(ours - ref), s = fabs(ref);
    return s > 0 ? d / s : d;
}

int sy_refcheck_compare(const sy_refcase *rc, const sy_refcheck_result *res, int quiet) {
    int fails = 0;
    const char *names[4] = {"loss_total", "loss_ce", "loss_aux", "loss_z"};
    double ours[4] = {res->loss.total, res->loss.ce, res->loss.aux, res->loss.z};
    double ref[4] = {rc->loss_total, rc->loss_ce, rc->loss_aux, rc->loss_z};
    printf("%-34s %14s %14s %10s\n", "loss term", "ours", "reference", "rel.err");
    for (int i = 0; i < 4; i++) {
        double e = rel_err(ours[i], ref[i]);
        int bad = !(e <= LOSS_TOL);
        fails += bad;
        printf("%-34s %14.9f %14.9f %10.2e%s\n", names[i], ours[i], ref[i], e, bad ? "  FAIL" : "");
    }
    for (int r = 0; r < rc->n_routes; r++) {
        const sy_ref_route *rt = &rc->routes[r];
        const int *ours_r = res->routing[rt->layer];
        int k = res->top_k, mismatch = 0, first = -1, dropped = 0;
        if (!ours_r) {
            printf("routing layer %d: not a switch layer in this model  FAIL\n", rt->layer);
            fails++;
            continue;
        }
        if (rt->k > k) {
            printf("routing layer %d: the case gives %d choices per token, the model makes %d  FAIL\n", rt->layer,
                   rt->k, k);
            fails++;
            continue;
        }
        /* the case gives every choice ([N, k]) or the first one only ([N]) */
        for (int i = 0; i < rt->n * rt->k; i++) {
            int t = i / rt->k, j = i % rt->k;
            int o = ours_r[(size_t)t * k + j];
            int want = rt->expert[i] == rt->dropped_is ? -1 : rt->expert[i];
            dropped += want < 0;
            if (o != want) {
                if (first < 0)
                    first = i;
                mismatch++;
            }
        }
        if (mismatch) {
            fails++;
            int t = first / rt->k, j = first % rt->k;
            printf("routing layer %d: %d of %d choices differ (first: token %d choice %d, ours %d, reference %d)  "
                   "FAIL\n",
                   rt->layer, mismatch, rt->n * rt->k, t, j, ours_r[(size_t)t * k + j], rt->expert[first]);
        } else {
            printf("routing layer %d: %d tokens x %d choice%s match exactly (%d dropped)\n", rt->layer, rt->n, rt->k,
                   rt->k == 1 ? "" : "s", dropped);
        }
    }
    double worst = 0.0;
    const char *worst_name = "";
    if (!quiet)
        printf("%-34s %-12s %12s %12s %10s\n", "gradient", "shape", "|ref|", "|ours-ref|", "rel.err");
    for (int i = 0; i < rc->n_params; i++) {
        const sy_ref_param *p = &rc->params[i];
        const float *g = res->grad_of(res->ctx, p->name);
        if (!g) {
            printf("%-34s missing in the model  FAIL\n", p->name);
            fails++;
            continue;
        }
        double dn = 0.0, rn = 0.0, on = 0.0;
        for (size_t j = 0; j < p->numel; j++) {
            double d = (double)g[j] - p->grad[j];
            dn += d * d;
            rn += (double)p->grad[j] * p->grad[j];
            on += (double)g[j] * g[j];
        }
        dn = sqrt(dn);
        rn = sqrt(rn);
        on = sqrt(on);
        double e = rn > 0 ? dn / rn : on;
        int bad = rn > 0 ? !(e <= GRAD_TOL) : on != 0.0;
        fails += bad;
        if (e > worst || worst_name[0] == 0) {
            worst = e;
            worst_name = p->name;
        }
        char shape[32];
        if (p->ndim == 1)
            snprintf(shape, sizeof shape, "[%d]", p->shape[0]);
        else
            snprintf(shape, sizeof shape, "[%d,%d]", p->shape[0], p->shape[1]);
        if (!quiet || bad)
            printf("%-34s %-12s %12.4e %12.4e %10.2e%s%s\n", p->name, shape, rn, dn, e, rn == 0 ? " (zero ref)" : "",
                   bad ? "  FAIL" : "");
    }
    printf("worst gradient: %s rel.err %.2e\n", worst_name, worst);
    printf("refcheck %s: %s (%d failure%s)\n", rc->dir, fails ? "FAIL" : "PASS", fails, fails == 1 ? "" : "s");
    return fails;
}

typedef struct {
    sy_model *m;
} local_ctx;

static const float *local_grad(void *ctx, const char *name) {
    local_ctx *c = ctx;
    const sy_layout *lay = sy_model_layout(c->m);
    int i = sy_layout_find(lay, name);
    return i < 0 ? NULL : sy_model_grads(c->m) + lay->params[i].offset;
}

int sy_refcheck_load_params(sy_model *m, const sy_refcase *rc) {
    const sy_layout *lay = sy_model_layout(m);
    for (int i = 0; i < lay->n_params; i++) {
        const sy_param *p = &lay->params[i];
        const sy_ref_param *r = sy_refcase_param(rc, p->name);
        if (!r) {
            sy_seterr("%s: the reference case has no parameter %s", rc->dir, p->name);
            return -1;
        }
        if (r->numel != p->numel || r->shape[0] != p->shape[0] || (p->ndim > 1 && r->shape[1] != p->shape[1])) {
            sy_seterr("%s: parameter %s has shape [%d,%d] in the case, the model expects [%d,%d]", rc->dir, p->name,
                      r->shape[0], r->ndim > 1 ? r->shape[1] : 1, p->shape[0], p->shape[1]);
            return -1;
        }
        memcpy(sy_model_params(m) + p->offset, r->value, p->numel * sizeof(float));
    }
    for (int i = 0; i < rc->n_params; i++)
        if (sy_layout_find(lay, rc->params[i].name) < 0) {
            sy_seterr("%s: parameter %s of the case is not in the model", rc->dir, rc->params[i].name);
            return -1;
        }
    return 0;
}

sy_model_cfg sy_refcheck_model_cfg(const sy_refcase *rc) {
    sy_model_cfg c = rc->model;
    c.router_jitter = 0.0f;
    c.expert_dropout = 0.0f;
    c.dropout = 0.0f;
    return c;
}

static int run_local(const sy_refcase *rc, int quiet) {
    sy_model_cfg cfg = sy_refcheck_model_cfg(rc);
    sy_model *m = sy_model_new(&cfg, rc->batch, rc->seq, NULL);
    if (!m) {
        fprintf(stderr, "refcheck: %s\n", sy_lasterr());
        return 2;
    }
    int rcode = 2;
    if (sy_refcheck_load_params(m, rc))
        goto out;
    sy_pass ps = {.B = rc->batch, .T = rc->seq, .groups = rc->groups, .training = 1};
    sy_losses loss;
    sy_model_zero_grad(m);
    if (sy_model_forward(m, &ps, rc->tokens, &loss) || sy_model_backward(m))
        goto out;
    sy_refcheck_result res = {.loss = loss, .top_k = cfg.top_k, .grad_of = local_grad};
    local_ctx lc = {m};
    res.ctx = &lc;
    res.routing = calloc((size_t)cfg.n_layers, sizeof(int *));
    if (!res.routing)
        goto out;
    for (int l = 0; l < cfg.n_layers; l++)
        res.routing[l] = sy_model_routing(m, l, NULL);
    rcode = sy_refcheck_compare(rc, &res, quiet) ? 1 : 0;
    free(res.routing);
out:
    if (rcode == 2)
        fprintf(stderr, "refcheck: %s\n", sy_lasterr());
    sy_model_destroy(&m);
    return rcode;
}

int cmd_refcheck(int argc, char **argv) {
    const char *dir = NULL;
    int workers = 0, quiet = 0;
    enum { OPT_WORKERS = 256 };
    static const struct option longopts[] = {{"workers", required_argument, NULL, OPT_WORKERS},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    optind = 0; /* a fresh scan */
    opterr = 0; /* our own messages */
    int c;
    while ((c = getopt_long(argc, argv, ":qh", longopts, NULL)) != -1) {
        char *end;
        long w;
        switch (c) {
        case OPT_WORKERS:
            w = strtol(optarg, &end, 10);
            if (*end || w < 1 || w > 64) {
                fprintf(stderr, "refcheck: --workers: expected a number of workers 1..64, got '%s'\n", optarg);
                return 2;
            }
            workers = (int)w;
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(); return 0;
        default: /* an unknown option, or one without its value */
            fprintf(stderr, "refcheck: unexpected argument '%s'\n", argv[optind - 1]);
            usage();
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (dir) {
            fprintf(stderr, "refcheck: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        }
        dir = argv[i];
    }
    if (!dir) {
        usage();
        return 2;
    }
    struct stat st;
    const char *why = stat(dir, &st) < 0 ? strerror(errno) : !S_ISDIR(st.st_mode) ? "not a directory" : NULL;
    if (why) {
        fprintf(stderr,
                "refcheck: %s: %s (a reference case is a directory holding manifest.yaml and its tensors; "
                "the project's cases are in tests/refcases/, made by tests/oracle/refgen.py)\n",
                dir, why);
        return 2;
    }
    sy_refcase rc;
    if (sy_refcase_load(&rc, dir)) {
        fprintf(stderr, "refcheck: %s\n", sy_lasterr());
        return 2;
    }
    printf("reference case %s: d_model %d, layers %d, heads %d, d_ff %d, experts %d (switch every %d, top-%d), "
           "batch %d x %d, %d group%s, capacity factor %g\n",
           dir, rc.model.d_model, rc.model.n_layers, rc.model.n_heads, rc.model.d_ff, rc.model.n_experts,
           rc.model.switch_every, rc.model.top_k, rc.batch, rc.seq, rc.groups, rc.groups == 1 ? "" : "s",
           rc.model.capacity_factor);
    int code = workers > 0 ? sy_refcheck_distributed(&rc, workers, quiet) : run_local(&rc, quiet);
    sy_refcase_free(&rc);
    return code;
}
