/* refcase.c: loads a PyTorch reference case: manifest.yaml through a libcyaml schema,
 * then every raw tensor it names, each checked against its shape before use.
 * Cases come from another tool, so unknown manifest keys are ignored rather than
 * refused; everything this loader does read is checked. */
#include "refcase.h"

#include <cyaml/cyaml.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "yaml_diag.h"

/* ---- the manifest as libcyaml sees it --------------------------------------------- */

typedef struct {
    int d_model, n_layers, n_heads, d_ff, n_experts, switch_every, seq_len, vocab;
} mf_model;

typedef struct {
    double capacity_factor;
    int groups;
    double aux_loss_coef, z_loss_coef;
    int *top_k;                   /* optional: NULL when absent */
    double *eval_capacity_factor; /* optional */
} mf_routing;

typedef struct {
    char *file;
    int *shape;
    unsigned shape_count;
} mf_tensor;

typedef struct {
    int size;
    mf_tensor tokens;
} mf_batch;

typedef struct {
    int layer;
    char *file;
    int *shape;
    unsigned shape_count;
    int *dropped_is; /* optional, -1 when absent */
} mf_route;

typedef struct {
    double loss_total, loss_ce, loss_aux, loss_z;
    mf_route *routing;
    unsigned routing_count;
} mf_expected;

typedef struct {
    char *name;
    int *shape;
    unsigned shape_count;
    char *file;
    char *grad;
} mf_param;

typedef struct {
    mf_model model;
    mf_routing routing;
    mf_batch batch;
    mf_expected expected;
    mf_param *params;
    unsigned params_count;
} mf_manifest;

#define MAX_NDIM 4

static const cyaml_schema_value_t dim_schema = {CYAML_VALUE_INT(CYAML_FLAG_DEFAULT, int)};

static const cyaml_schema_field_t model_fields[] = {
    CYAML_FIELD_INT("d_model", CYAML_FLAG_DEFAULT, mf_model, d_model),
    CYAML_FIELD_INT("n_layers", CYAML_FLAG_DEFAULT, mf_model, n_layers),
    CYAML_FIELD_INT("n_heads", CYAML_FLAG_DEFAULT, mf_model, n_heads),
    CYAML_FIELD_INT("d_ff", CYAML_FLAG_DEFAULT, mf_model, d_ff),
    CYAML_FIELD_INT("n_experts", CYAML_FLAG_DEFAULT, mf_model, n_experts),
    CYAML_FIELD_INT("switch_every", CYAML_FLAG_DEFAULT, mf_model, switch_every),
    CYAML_FIELD_INT("seq_len", CYAML_FLAG_DEFAULT, mf_model, seq_len),
    CYAML_FIELD_INT("vocab", CYAML_FLAG_DEFAULT, mf_model, vocab),
    CYAML_FIELD_END};

static const cyaml_schema_field_t routing_fields[] = {
    CYAML_FIELD_FLOAT("capacity_factor", CYAML_FLAG_DEFAULT, mf_routing, capacity_factor),
    CYAML_FIELD_INT("groups", CYAML_FLAG_DEFAULT, mf_routing, groups),
    CYAML_FIELD_FLOAT("aux_loss_coef", CYAML_FLAG_DEFAULT, mf_routing, aux_loss_coef),
    CYAML_FIELD_FLOAT("z_loss_coef", CYAML_FLAG_DEFAULT, mf_routing, z_loss_coef),
    CYAML_FIELD_INT_PTR("top_k", CYAML_FLAG_OPTIONAL, mf_routing, top_k),
    CYAML_FIELD_FLOAT_PTR("eval_capacity_factor", CYAML_FLAG_OPTIONAL, mf_routing,
                          eval_capacity_factor),
    CYAML_FIELD_END};

static const cyaml_schema_field_t tensor_fields[] = {
    CYAML_FIELD_STRING_PTR("file", CYAML_FLAG_DEFAULT, mf_tensor, file, 1, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("shape", CYAML_FLAG_POINTER, mf_tensor, shape, &dim_schema, 1, MAX_NDIM),
    CYAML_FIELD_END};

static const cyaml_schema_field_t batch_fields[] = {
    CYAML_FIELD_INT("size", CYAML_FLAG_DEFAULT, mf_batch, size),
    CYAML_FIELD_MAPPING("tokens", CYAML_FLAG_DEFAULT, mf_batch, tokens, tensor_fields),
    CYAML_FIELD_END};

static const cyaml_schema_field_t route_fields[] = {
    CYAML_FIELD_INT("layer", CYAML_FLAG_DEFAULT, mf_route, layer),
    CYAML_FIELD_STRING_PTR("file", CYAML_FLAG_DEFAULT, mf_route, file, 1, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("shape", CYAML_FLAG_POINTER, mf_route, shape, &dim_schema, 1, 2),
    CYAML_FIELD_INT_PTR("dropped_is", CYAML_FLAG_OPTIONAL, mf_route, dropped_is),
    CYAML_FIELD_END};
static const cyaml_schema_value_t route_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, mf_route, route_fields)};

static const cyaml_schema_field_t expected_fields[] = {
    CYAML_FIELD_FLOAT("loss_total", CYAML_FLAG_DEFAULT, mf_expected, loss_total),
    CYAML_FIELD_FLOAT("loss_ce", CYAML_FLAG_DEFAULT, mf_expected, loss_ce),
    CYAML_FIELD_FLOAT("loss_aux", CYAML_FLAG_DEFAULT, mf_expected, loss_aux),
    CYAML_FIELD_FLOAT("loss_z", CYAML_FLAG_DEFAULT, mf_expected, loss_z),
    CYAML_FIELD_SEQUENCE("routing", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, mf_expected,
                         routing, &route_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END};

static const cyaml_schema_field_t param_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_DEFAULT, mf_param, name, 1, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("shape", CYAML_FLAG_POINTER, mf_param, shape, &dim_schema, 1, MAX_NDIM),
    CYAML_FIELD_STRING_PTR("file", CYAML_FLAG_DEFAULT, mf_param, file, 1, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("grad", CYAML_FLAG_DEFAULT, mf_param, grad, 1, CYAML_UNLIMITED),
    CYAML_FIELD_END};
static const cyaml_schema_value_t param_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, mf_param, param_fields)};

static const cyaml_schema_field_t manifest_fields[] = {
    CYAML_FIELD_MAPPING("model", CYAML_FLAG_DEFAULT, mf_manifest, model, model_fields),
    CYAML_FIELD_MAPPING("routing", CYAML_FLAG_DEFAULT, mf_manifest, routing, routing_fields),
    CYAML_FIELD_MAPPING("batch", CYAML_FLAG_DEFAULT, mf_manifest, batch, batch_fields),
    CYAML_FIELD_MAPPING("expected", CYAML_FLAG_DEFAULT, mf_manifest, expected, expected_fields),
    CYAML_FIELD_SEQUENCE("params", CYAML_FLAG_POINTER, mf_manifest, params, &param_schema, 1,
                         CYAML_UNLIMITED),
    CYAML_FIELD_END};
static const cyaml_schema_value_t manifest_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, mf_manifest, manifest_fields)};

/* ---- libcyaml diagnostics -> "file: key: reason at line L, column C" ---------------- */

static void manifest_error(const char *path, cyaml_err_t err, sy_yaml_diag *d) {
    char key[256] = "", missing[64] = "";
    /* For a missing key, libcyaml's innermost frame is whichever field of the same
     * mapping it saw last (or the missing one itself): not part of the path. */
    int innermost = 0;
    if (sscanf(d->reason, "Missing required mapping field: %63s", missing) == 1 && d->n_frames)
        innermost = 1;
    for (int i = d->n_frames - 1; i >= innermost; i--) {
        const char *n = d->frame[i].name;
        if (!n[0])
            continue;
        size_t l = strlen(key);
        snprintf(key + l, sizeof key - l, "%s%s", (l && n[0] != '[') ? "." : "", n);
    }
    const char *reason = d->reason[0] ? d->reason : cyaml_strerror(err);
    if (missing[0]) {
        size_t l = strlen(key);
        snprintf(key + l, sizeof key - l, "%s%s", l ? "." : "", missing);
        reason = "missing";
    }
    char where[64] = "";
    if (innermost < d->n_frames)
        snprintf(where, sizeof where, " at line %lu, column %lu", d->frame[innermost].line,
                 d->frame[innermost].col);
    if (key[0])
        sy_seterr("%s: %s: %s%s", path, key, reason, where);
    else
        sy_seterr("%s: %s%s", path, reason, where);
}

/* ---- raw tensors -------------------------------------------------------------------- */

static void format_shape(const int *shape, int ndim, char *out, size_t n) {
    size_t l = 0;
    out[0] = 0;
    l += (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && l < n; i++)
        l += (size_t)snprintf(out + l, n - l, "%s%d", i ? ", " : "", shape[i]);
    if (l < n)
        snprintf(out + l, n - l, "]");
}

/* Elements in a shape; 0 (with an error naming `what`) when a dimension is not positive
 * or the product is absurd. */
static size_t shape_numel(const char *manifest, const char *what, const int *shape, int ndim) {
    size_t numel = 1;
    char s[96];
    format_shape(shape, ndim, s, sizeof s);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1) {
            sy_seterr("%s: %s.shape: dimensions must be >= 1 (got %s)", manifest, what, s);
            return 0;
        }
        if (numel > ((size_t)1 << 31) / (size_t)shape[i]) {
            sy_seterr("%s: %s.shape: %s is too large for a reference case", manifest, what, s);
            return 0;
        }
        numel *= (size_t)shape[i];
    }
    return numel;
}

static int host_is_big_endian(void) {
    const uint32_t one = 1;
    return *(const unsigned char *)&one == 0;
}

/* Reads dir/file, which must hold exactly numel little-endian 4-byte values, into a new
 * buffer. `what` names the manifest entry in messages. */
static void *read_tensor(const char *dir, const char *file, const char *what, const int *shape,
                         int ndim, size_t numel) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) {
        sy_seterr("%s/%s: path too long", dir, file);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        sy_seterr("%s: cannot open (%s): %s", path, what, strerror(errno));
        return NULL;
    }
    uint32_t *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        sy_seterr("%s: not a regular file (%s)", path, what);
        goto fail;
    }
    size_t want = numel * 4;
    if ((unsigned long long)st.st_size != (unsigned long long)want) {
        char s[96];
        format_shape(shape, ndim, s, sizeof s);
        sy_seterr("%s: %s has shape %s, so %zu bytes, but the file has %lld", path, what, s, want,
                  (long long)st.st_size);
        goto fail;
    }
    buf = malloc(want ? want : 1);
    if (!buf) {
        sy_seterr("%s: out of memory for %zu bytes (%s)", path, want, what);
        goto fail;
    }
    if (fread(buf, 1, want, f) != want) {
        sy_seterr("%s: short read (%s)", path, what);
        goto fail;
    }
    fclose(f);
    if (host_is_big_endian())
        for (size_t i = 0; i < numel; i++)
            buf[i] = __builtin_bswap32(buf[i]);
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* ---- the case ----------------------------------------------------------------------- */

void sy_refcase_free(sy_refcase *rc) {
    if (!rc)
        return;
    free(rc->dir);
    free(rc->tokens);
    for (int i = 0; i < rc->n_routes; i++)
        free(rc->routes[i].expert);
    free(rc->routes);
    for (int i = 0; i < rc->n_params; i++) {
        free(rc->params[i].name);
        free(rc->params[i].value);
        free(rc->params[i].grad);
    }
    free(rc->params);
    memset(rc, 0, sizeof *rc);
}

const sy_ref_param *sy_refcase_param(const sy_refcase *rc, const char *name) {
    for (int i = 0; i < rc->n_params; i++)
        if (!strcmp(rc->params[i].name, name))
            return &rc->params[i];
    return NULL;
}

/* Model shape and routing coefficients: defaults, then the manifest. */
static int take_model(sy_refcase *rc, const mf_manifest *m, const char *manifest) {
    rc->model = sy_model_cfg_default();
    rc->model.d_model = m->model.d_model;
    rc->model.n_layers = m->model.n_layers;
    rc->model.n_heads = m->model.n_heads;
    rc->model.d_ff = m->model.d_ff;
    rc->model.n_experts = m->model.n_experts;
    rc->model.switch_every = m->model.switch_every;
    rc->model.seq_len = m->model.seq_len;
    rc->model.vocab = m->model.vocab;
    rc->model.capacity_factor = (float)m->routing.capacity_factor;
    rc->model.aux_loss_coef = (float)m->routing.aux_loss_coef;
    rc->model.z_loss_coef = (float)m->routing.z_loss_coef;
    rc->model.top_k = m->routing.top_k ? *m->routing.top_k : 1;
    if (m->routing.eval_capacity_factor)
        rc->model.eval_capacity_factor = (float)*m->routing.eval_capacity_factor;
    if (sy_model_cfg_check(&rc->model) < 0) {
        sy_err_prefix("%s", manifest);
        return -1;
    }
    rc->groups = m->routing.groups;
    if (rc->groups < 1) {
        sy_seterr("%s: routing.groups: must be >= 1 (got %d)", manifest, rc->groups);
        return -1;
    }
    return 0;
}

static int take_tokens(sy_refcase *rc, const mf_manifest *m, const char *manifest) {
    const mf_tensor *t = &m->batch.tokens;
    if (t->shape_count != 2) {
        sy_seterr("%s: batch.tokens.shape: must be [B, T+1] (got %u dimensions)", manifest,
                  t->shape_count);
        return -1;
    }
    size_t numel = shape_numel(manifest, "batch.tokens", t->shape, 2);
    if (!numel)
        return -1;
    rc->batch = t->shape[0];
    rc->seq = t->shape[1] - 1;
    if (m->batch.size != rc->batch) {
        sy_seterr("%s: batch.size: %d differs from batch.tokens.shape[0] = %d", manifest,
                  m->batch.size, rc->batch);
        return -1;
    }
    if (rc->seq < 1 || rc->seq > rc->model.seq_len) {
        sy_seterr("%s: batch.tokens.shape: T+1 = %d must have T in [1, model.seq_len = %d]",
                  manifest, t->shape[1], rc->model.seq_len);
        return -1;
    }
    if (rc->batch % rc->groups != 0) {
        sy_seterr("%s: batch.size: must be divisible by routing.groups (%d %% %d = %d)", manifest,
                  rc->batch, rc->groups, rc->batch % rc->groups);
        return -1;
    }
    rc->tokens = read_tensor(rc->dir, t->file, "batch.tokens", t->shape, 2, numel);
    if (!rc->tokens)
        return -1;
    for (size_t i = 0; i < numel; i++) {
        if (rc->tokens[i] < 0 || rc->tokens[i] >= rc->model.vocab) {
            sy_seterr("%s/%s: token %zu (row %zu, position %zu) is %d, outside [0, %d)", rc->dir,
                      t->file, i, i / (size_t)t->shape[1], i % (size_t)t->shape[1],
                      (int)rc->tokens[i], rc->model.vocab);
            return -1;
        }
    }
    return 0;
}

static int take_routes(sy_refcase *rc, const mf_manifest *m, const char *manifest) {
    unsigned n = m->expected.routing_count;
    if (!n)
        return 0;
    rc->routes = calloc(n, sizeof *rc->routes);
    if (!rc->routes) {
        sy_seterr("%s: out of memory", manifest);
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        const mf_route *r = &m->expected.routing[i];
        sy_ref_route *out = &rc->routes[rc->n_routes++];
        char what[64];
        snprintf(what, sizeof what, "expected.routing[%u]", i);
        if (r->layer < 0 || r->layer >= rc->model.n_layers ||
            !sy_is_switch_layer(&rc->model, r->layer)) {
            sy_seterr("%s: %s.layer: %d is not a switch layer of this model", manifest, what,
                      r->layer);
            return -1;
        }
        for (unsigned j = 0; j < i; j++) {
            if (m->expected.routing[j].layer == r->layer) {
                sy_seterr("%s: %s.layer: layer %d is listed twice", manifest, what, r->layer);
                return -1;
            }
        }
        out->layer = r->layer;
        out->n = r->shape[0];
        out->k = r->shape_count == 2 ? r->shape[1] : 1;
        out->dropped_is = r->dropped_is ? *r->dropped_is : -1;
        if (out->dropped_is >= 0 && out->dropped_is < rc->model.n_experts) {
            sy_seterr("%s: %s.dropped_is: %d is also an expert index", manifest, what,
                      out->dropped_is);
            return -1;
        }
        if (out->n != rc->batch * rc->seq) {
            sy_seterr("%s: %s.shape: must be [B*T] = [%d] or [B*T, top_k] = [%d, %d] (got %d "
                      "tokens)", manifest, what, rc->batch * rc->seq, rc->batch * rc->seq,
                      rc->model.top_k, out->n);
            return -1;
        }
        if (out->k < 1 || out->k > rc->model.top_k || (r->shape_count == 2 && out->k != rc->model.top_k)) {
            sy_seterr("%s: %s.shape: the second dimension must be routing.top_k = %d (got %d)",
                      manifest, what, rc->model.top_k, out->k);
            return -1;
        }
        out->expert = read_tensor(rc->dir, r->file, what, r->shape, (int)r->shape_count,
                                  (size_t)out->n * (size_t)out->k);
        if (!out->expert)
            return -1;
        for (int i = 0; i < out->n * out->k; i++) {
            int32_t e = out->expert[i];
            if (e != out->dropped_is && (e < 0 || e >= rc->model.n_experts)) {
                sy_seterr("%s/%s: token %d choice %d routed to %d, which is neither an expert in "
                          "[0, %d) nor dropped (%d)",
                          rc->dir, r->file, i / out->k, i % out->k, (int)e, rc->model.n_experts,
                          out->dropped_is);
                return -1;
            }
        }
    }
    return 0;
}

static int take_params(sy_refcase *rc, const mf_manifest *m, const char *manifest) {
    rc->params = calloc(m->params_count, sizeof *rc->params);
    if (!rc->params) {
        sy_seterr("%s: out of memory", manifest);
        return -1;
    }
    for (unsigned i = 0; i < m->params_count; i++) {
        const mf_param *p = &m->params[i];
        sy_ref_param *out = &rc->params[rc->n_params++];
        char what[128];
        snprintf(what, sizeof what, "params[%u] (%.80s)", i, p->name);
        for (unsigned j = 0; j < i; j++) {
            if (!strcmp(m->params[j].name, p->name)) {
                sy_seterr("%s: %s.name: also given as params[%u]", manifest, what, j);
                return -1;
            }
        }
        out->name = strdup(p->name);
        if (!out->name) {
            sy_seterr("%s: out of memory", manifest);
            return -1;
        }
        out->ndim = (int)p->shape_count;
        memcpy(out->shape, p->shape, p->shape_count * sizeof(int));
        out->numel = shape_numel(manifest, what, p->shape, out->ndim);
        if (!out->numel)
            return -1;
        out->value = read_tensor(rc->dir, p->file, what, p->shape, out->ndim, out->numel);
        if (!out->value)
            return -1;
        char gwhat[160];
        snprintf(gwhat, sizeof gwhat, "gradient of %s", what);
        out->grad = read_tensor(rc->dir, p->grad, gwhat, p->shape, out->ndim, out->numel);
        if (!out->grad)
            return -1;
    }
    return 0;
}

int sy_refcase_load(sy_refcase *rc, const char *dir) {
    memset(rc, 0, sizeof *rc);
    char manifest[4096];
    if (snprintf(manifest, sizeof manifest, "%s/manifest.yaml", dir) >= (int)sizeof manifest) {
        sy_seterr("%s: path too long", dir);
        return -1;
    }
    /* Open it ourselves: the message then carries the system's reason. */
    FILE *f = fopen(manifest, "rb");
    if (!f) {
        sy_seterr("%s: cannot open: %s", manifest, strerror(errno));
        return -1;
    }
    fclose(f);

    /* cases are written by another tool, which may add keys this reader needs not */
    sy_yaml_diag diag;
    const cyaml_config_t cc = sy_yaml_config(&diag, CYAML_CFG_IGNORE_UNKNOWN_KEYS);
    mf_manifest *m = NULL;
    cyaml_err_t err = cyaml_load_file(manifest, &cc, &manifest_schema, (cyaml_data_t **)&m, NULL);
    if (err != CYAML_OK) {
        manifest_error(manifest, err, &diag);
        return -1;
    }
    if (!m) {
        sy_seterr("%s: empty manifest", manifest);
        return -1;
    }
    rc->dir = strdup(dir);
    rc->loss_total = m->expected.loss_total;
    rc->loss_ce = m->expected.loss_ce;
    rc->loss_aux = m->expected.loss_aux;
    rc->loss_z = m->expected.loss_z;
    if (!rc->dir) {
        sy_seterr("%s: out of memory", manifest);
        goto fail;
    }
    if (take_model(rc, m, manifest) < 0 || take_tokens(rc, m, manifest) < 0 ||
        take_routes(rc, m, manifest) < 0 || take_params(rc, m, manifest) < 0)
        goto fail;
    cyaml_free(&cc, &manifest_schema, m, 0);
    return 0;
fail:
    cyaml_free(&cc, &manifest_schema, m, 0);
    sy_refcase_free(rc);
    return -1;
}
