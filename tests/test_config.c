/* test_config: the run configuration: defaults, the shipped YAML files, every class of
 * refused input (with file, key and reason in the message), overrides, and the
 * to_yaml -> load round trip. */
#define _GNU_SOURCE /* nftw in tmpdir.h */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

#define SY_TMPDIR_NAME "config"
#include "tmpdir.h"

/* From the generated default_config_yaml.c (common/CMakeLists.txt). */
extern const char sy_default_config_yaml[];
extern const unsigned long sy_default_config_yaml_len;

/* Writes text to <tmp>/c.yaml and returns that path. */
static const char *write_config(const char *text) {
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", tpath("c.yaml"));
    write_file(path, text, strlen(text));
    return path;
}

/* Every field equal (source aside). */
static void assert_config_equal(const sy_config *a, const sy_config *b) {
    const sy_model_cfg *m = &a->model, *n = &b->model;
    assert_int_equal(m->vocab, n->vocab);
    assert_int_equal(m->d_model, n->d_model);
    assert_int_equal(m->n_layers, n->n_layers);
    assert_int_equal(m->n_heads, n->n_heads);
    assert_int_equal(m->d_ff, n->d_ff);
    assert_int_equal(m->n_experts, n->n_experts);
    assert_int_equal(m->switch_every, n->switch_every);
    assert_int_equal(m->seq_len, n->seq_len);
    assert_int_equal(m->top_k, n->top_k);
    assert_true(m->capacity_factor == n->capacity_factor);
    assert_true(m->eval_capacity_factor == n->eval_capacity_factor);
    assert_true(m->aux_loss_coef == n->aux_loss_coef);
    assert_true(m->z_loss_coef == n->z_loss_coef);
    assert_true(m->router_jitter == n->router_jitter);
    assert_true(m->expert_dropout == n->expert_dropout);
    assert_true(m->dropout == n->dropout);
    assert_true(m->init_scale == n->init_scale);
    const sy_train_cfg *t = &a->train, *u = &b->train;
    assert_true(t->steps == u->steps);
    assert_int_equal(t->batch_size, u->batch_size);
    assert_int_equal(t->seq_len, u->seq_len);
    assert_int_equal(t->groups, u->groups);
    assert_true(t->seed == u->seed);
    assert_true(t->lr == u->lr);
    assert_true(t->min_lr == u->min_lr);
    assert_true(t->warmup_steps == u->warmup_steps);
    assert_int_equal(t->schedule, u->schedule);
    assert_true(t->weight_decay == u->weight_decay);
    assert_true(t->beta1 == u->beta1);
    assert_true(t->beta2 == u->beta2);
    assert_true(t->eps == u->eps);
    assert_true(t->grad_clip == u->grad_clip);
    assert_true(t->eval_every == u->eval_every);
    assert_int_equal(t->eval_batches, u->eval_batches);
    assert_true(t->log_every == u->log_every);
    assert_int_equal(t->threads, u->threads);
    if (t->distill_from || u->distill_from) {
        assert_non_null(t->distill_from);
        assert_non_null(u->distill_from);
        assert_string_equal(t->distill_from, u->distill_from);
    }
    assert_true(t->distill_alpha == u->distill_alpha);
    assert_true(t->distill_temperature == u->distill_temperature);
    assert_string_equal(a->data.dir, b->data.dir);
    assert_true(a->data.val_fraction == b->data.val_fraction);
    assert_string_equal(a->checkpoint.dir, b->checkpoint.dir);
    assert_true(a->checkpoint.every == b->checkpoint.every);
    assert_int_equal(a->checkpoint.keep, b->checkpoint.keep);
    assert_string_equal(a->cluster.coordinator, b->cluster.coordinator);
    assert_string_equal(a->cluster.status, b->cluster.status);
    assert_int_equal(a->cluster.min_workers, b->cluster.min_workers);
    assert_int_equal(a->cluster.heartbeat_ms, b->cluster.heartbeat_ms);
    assert_int_equal(a->cluster.timeout_ms, b->cluster.timeout_ms);
    assert_int_equal(a->cluster.join_at_once, b->cluster.join_at_once);
    assert_int_equal(a->cluster.balance_by_speed, b->cluster.balance_by_speed);
    assert_int_equal(a->cluster.replica_every, b->cluster.replica_every);
    assert_int_equal(a->wire.dtype, b->wire.dtype);
    assert_int_equal(a->wire.chunk_bytes, b->wire.chunk_bytes);
    assert_int_equal(a->wire.overlap, b->wire.overlap);
    assert_int_equal(a->wire.bucket_bytes, b->wire.bucket_bytes);
    assert_int_equal(a->wire.local, b->wire.local);
    assert_int_equal(a->wire.stand_in, b->wire.stand_in);
    assert_int_equal(a->wire.fill_waits, b->wire.fill_waits);
}

/* The documented defaults, spelled out independently of config.c. */
static void assert_documented_defaults(const sy_config *c) {
    assert_int_equal(c->model.vocab, 256);
    assert_int_equal(c->model.d_model, 128);
    assert_int_equal(c->model.n_layers, 4);
    assert_int_equal(c->model.n_heads, 4);
    assert_int_equal(c->model.d_ff, 512);
    assert_int_equal(c->model.n_experts, 4);
    assert_int_equal(c->model.switch_every, 2);
    assert_int_equal(c->model.seq_len, 128);
    assert_true(c->model.init_scale == 0.1f);
    assert_true(c->model.dropout == 0.0f);
    assert_int_equal(c->model.top_k, 1);
    assert_true(c->model.capacity_factor == 1.25f);
    assert_true(c->model.eval_capacity_factor == 2.0f);
    assert_true(c->model.aux_loss_coef == 0.01f);
    assert_true(c->model.z_loss_coef == 0.001f);
    assert_true(c->model.router_jitter == 0.0f);
    assert_true(c->model.expert_dropout == 0.0f);
    assert_int_equal(c->train.groups, 1);
    assert_true(c->train.steps == 400);
    assert_int_equal(c->train.batch_size, 32);
    assert_int_equal(c->train.seq_len, 128);
    assert_true(c->train.seed == 1234);
    assert_true(c->train.lr == 3e-3f);
    assert_true(c->train.min_lr == 3e-4f);
    assert_true(c->train.warmup_steps == 50);
    assert_int_equal(c->train.schedule, SY_SCHED_COSINE);
    assert_true(c->train.weight_decay == 0.1f);
    assert_true(c->train.beta1 == 0.9f);
    assert_true(c->train.beta2 == 0.95f);
    assert_true(c->train.eps == 1e-8f);
    assert_true(c->train.grad_clip == 1.0f);
    assert_true(c->train.eval_every == 100);
    assert_int_equal(c->train.eval_batches, 16);
    assert_true(c->train.log_every == 10);
    assert_int_equal(c->train.threads, 0);
    assert_null(c->train.distill_from);
    assert_true(c->train.distill_alpha == 0.5f);
    assert_true(c->train.distill_temperature == 2.0f);
    assert_string_equal(c->data.dir, "data");
    assert_true(c->data.val_fraction == 0.05f);
    assert_string_equal(c->checkpoint.dir, "runs/default");
    assert_true(c->checkpoint.every == 100);
    assert_int_equal(c->checkpoint.keep, 3);
    assert_string_equal(c->cluster.coordinator, "tcp://127.0.0.1:5555");
    assert_string_equal(c->cluster.status, "tcp://127.0.0.1:5556");
    assert_int_equal(c->cluster.min_workers, 1);
    assert_int_equal(c->cluster.heartbeat_ms, 1000);
    assert_int_equal(c->cluster.timeout_ms, 5000);
    assert_int_equal(c->cluster.join_at_once, 0);
    assert_int_equal(c->cluster.balance_by_speed, 1);
    assert_int_equal(c->cluster.replica_every, 1);
    assert_int_equal(c->wire.dtype, SY_WIRE_FP32);
    assert_int_equal(c->wire.chunk_bytes, 1048576);
    assert_int_equal(c->wire.overlap, 1);
    assert_int_equal(c->wire.bucket_bytes, 1048576);
    assert_int_equal(c->wire.local, 1);
    assert_int_equal(c->wire.stand_in, 1);
    assert_int_equal(c->wire.fill_waits, 0);
}

static void test_defaults_are_valid(void **state) {
    sy_config c;
    sy_config_defaults(&c);
    assert_documented_defaults(&c);
    assert_string_equal(c.source, "<default>");
    assert_int_equal(sy_config_check(&c), 0);
    sy_config_free(&c);
    assert_null(c.data.dir);
    sy_config_free(NULL);
}

/* Sets every key to a value other than its default. */
static void scramble(sy_config *c) {
    const char *sets[] = {
        "model.d_model=96",          "model.n_heads=3",
        "model.n_layers=5",          "model.d_ff=200",
        "model.n_experts=7",         "model.switch_every=3",
        "model.seq_len=333",         "model.init_scale=0.123456789",
        "model.dropout=0.1",         "routing.top_k=2",
        "routing.capacity_factor=1.1", "routing.eval_capacity_factor=3.3",
        "routing.aux_loss_coef=0",   "routing.z_loss_coef=1e-7",
        "routing.router_jitter=0.01", "routing.expert_dropout=0.4",
        "routing.groups=3",          "train.steps=99999999999",
        "train.batch_size=33",       "train.seq_len=300",
        "train.seed=18446744073709551615", "train.lr=0.000123",
        "train.min_lr=0",            "train.warmup_steps=0",
        "train.schedule=constant",   "train.weight_decay=0.01",
        "train.beta1=0.8",           "train.beta2=0.999",
        "train.eps=1e-6",            "train.grad_clip=0",
        "train.eval_every=0",        "train.eval_batches=2",
        "train.log_every=1",         "train.threads=2",
        "train.distill_from=runs/teacher x", "train.distill_alpha=1",
        "train.distill_temperature=0.5",
        "data.dir=my \"data\": #1\\x", "data.val_fraction=0",
        "checkpoint.dir=runs/x y",   "checkpoint.every=50",
        "checkpoint.keep=1",         "cluster.coordinator=tcp://10.0.0.1:7000",
        "cluster.status=ipc:///tmp/sy.status", "cluster.min_workers=3",
        "cluster.heartbeat_ms=250",  "cluster.timeout_ms=251",
        "cluster.join_at_once=yes",  "wire.dtype=bf16",
        "wire.chunk_bytes=65536",    "wire.overlap=false",
        "wire.bucket_bytes=4096",    "wire.local=false",          "wire.stand_in=false",
        "wire.fill_waits=true",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (sy_config_set(c, sets[i]) < 0)
            fail_msg("%s: %s", sets[i], sy_lasterr());
    assert_int_equal(sy_config_check(c), 0);
}

static void test_default_yaml_is_the_defaults(void **state) {
    sy_config file, builtin;
    /* Loaded over a config where every key differs: default.yaml must spell out all. */
    sy_config_defaults(&file);
    scramble(&file);
    assert_int_equal(sy_config_load(&file, SY_CONFIGS_DIR "/default.yaml"), 0);
    assert_documented_defaults(&file);
    assert_string_equal(file.source, SY_CONFIGS_DIR "/default.yaml");
    sy_config_defaults(&builtin);
    assert_config_equal(&file, &builtin);
    sy_config_free(&file);
    sy_config_free(&builtin);
}

static void test_embedded_default_matches_file(void **state) {
    size_t len;
    char *text = read_whole(SY_CONFIGS_DIR "/default.yaml", &len);
    assert_int_equal(sy_default_config_yaml_len, len);
    assert_memory_equal(sy_default_config_yaml, text, len);
    assert_int_equal(sy_default_config_yaml[len], 0);
    free(text);

    sy_config emb, file;
    sy_config_defaults(&emb);
    sy_config_defaults(&file);
    assert_int_equal(sy_config_load_default(&emb), 0);
    assert_int_equal(sy_config_load(&file, SY_CONFIGS_DIR "/default.yaml"), 0);
    assert_config_equal(&emb, &file);
    assert_non_null(strstr(emb.source, "default.yaml"));
    sy_config_free(&emb);
    sy_config_free(&file);
}

static void test_bench_yaml(void **state) {
    sy_config c;
    sy_config_defaults(&c);
    assert_int_equal(sy_config_load(&c, SY_CONFIGS_DIR "/bench.yaml"), 0);
    assert_int_equal(c.model.d_model, 256);
    assert_int_equal(c.model.n_layers, 4);
    assert_int_equal(c.model.n_heads, 4);
    assert_int_equal(c.model.d_ff, 1024);
    assert_int_equal(c.model.n_experts, 8);
    assert_int_equal(c.model.switch_every, 2);
    assert_int_equal(c.model.seq_len, 256);
    assert_true(c.model.capacity_factor == 1.25f);
    assert_int_equal(c.model.top_k, 1);
    assert_int_equal(c.train.batch_size, 16);
    assert_int_equal(c.train.seq_len, 256);
    assert_true(c.train.steps == 50);
    assert_string_equal(c.checkpoint.dir, "runs/bench");
    /* keys the file leaves out keep their defaults */
    assert_true(c.train.lr == 3e-3f);
    assert_string_equal(c.cluster.coordinator, "tcp://127.0.0.1:5555");
    sy_config_free(&c);
}

/* Loads `text` from a file and expects a refusal whose message holds the file name and
 * each of the given fragments (NULL-terminated). */
static void expect_refused(const char *text, ...) {
    const char *path = write_config(text);
    sy_config c, d;
    sy_config_defaults(&c);
    sy_config_defaults(&d);
    assert_int_equal(sy_config_load(&c, path), -1);
    const char *err = sy_lasterr();
    if (!strstr(err, path))
        fail_msg("message does not name the file: %s", err);
    va_list ap;
    va_start(ap, text);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        if (!strstr(err, frag))
            fail_msg("message lacks '%s': %s", frag, err);
    va_end(ap);
    /* a refused file changes nothing */
    assert_config_equal(&c, &d);
    assert_string_equal(c.source, "<default>");
    sy_config_free(&c);
    sy_config_free(&d);
}

static void test_unknown_keys(void **state) {
    expect_refused("bogus: 1\n", "bogus", "unknown key", NULL);
    expect_refused("model:\n  d_model: 64\n  n_heads: 4\n\nroutin:\n  top_k: 1\n", "routin",
                   "unknown key", "line 5", NULL);
    expect_refused("routing:\n  top_k: 1\n  capacity_factr: 1.5\n", "routing.capacity_factr",
                   "unknown key", "line 3, column 3", NULL);
    /* keys are case-sensitive */
    expect_refused("train:\n  LR: 0.1\n", "train.LR", "unknown key", NULL);
}

static void test_wrong_types(void **state) {
    expect_refused("model:\n  d_model: abc\n", "model.d_model", "must be an integer (got 'abc')",
                   "line 2, column 12", NULL);
    /* libcyaml alone would truncate 1.5 into an int */
    expect_refused("train:\n  steps: 1.5\n", "train.steps", "integer", NULL);
    expect_refused("train:\n  lr: fast\n", "train.lr", "must be a number", NULL);
    expect_refused("cluster:\n  join_at_once: maybe\n", "cluster.join_at_once", "true or false",
                   NULL);
    expect_refused("train:\n  schedule: cos\n", "train.schedule", "cosine, linear, constant",
                   NULL);
    expect_refused("wire:\n  dtype: fp16\n", "wire.dtype", "fp32, bf16", NULL);
    expect_refused("model: 5\n", "model", "expected a mapping", NULL);
    expect_refused("model:\n  d_model: [1, 2]\n", "model.d_model", "expected a single value",
                   NULL);
    expect_refused("- model\n", "top level", NULL);
    expect_refused("model:\n  d_model:\n", "model.d_model", "has no value", NULL);
    expect_refused("train:\n  lr: nan\n", "train.lr", "finite", NULL);
    expect_refused("train:\n  lr: 1e50\n", "train.lr", "finite", NULL);
    expect_refused("model:\n  d_model: 99999999999\n", "model.d_model", "out of range", NULL);
    expect_refused("train:\n  seed: -1\n", "train.seed", "unsigned", NULL);
    expect_refused("model:\n  d_model: 64\n  d_model: 128\n", "model.d_model", "twice", NULL);
}

static void test_out_of_range(void **state) {
    const char *path = write_config("routing:\n  capacity_factor: -1\n");
    sy_config c;
    sy_config_defaults(&c);
    assert_int_equal(sy_config_load(&c, path), -1);
    sy_config_free(&c);
    char want[256];
    snprintf(want, sizeof want,
             "%s: routing.capacity_factor: must be > 0 (got -1) at line 2, column 20", path);
    assert_string_equal(sy_lasterr(), want);

    expect_refused("routing:\n  capacity_factor: 0\n", "routing.capacity_factor", "> 0", NULL);
    expect_refused("routing:\n  eval_capacity_factor: 0\n", "routing.eval_capacity_factor",
                   NULL);
    expect_refused("model:\n  n_experts: 0\n", "model.n_experts", "got 0", NULL);
    expect_refused("model:\n  vocab: 512\n", "model.vocab", "must be 256", NULL);
    expect_refused("model:\n  dropout: 1.0\n", "model.dropout", "[0, 1)", NULL);
    expect_refused("routing:\n  expert_dropout: -0.1\n", "routing.expert_dropout", NULL);
    expect_refused("train:\n  beta2: 1\n", "train.beta2", NULL);
    expect_refused("train:\n  lr: 0\n", "train.lr", "> 0", NULL);
    expect_refused("train:\n  batch_size: 0\n", "train.batch_size", NULL);
    expect_refused("checkpoint:\n  keep: 0\n", "checkpoint.keep", NULL);
    expect_refused("model:\n  switch_every: -1\n", "model.switch_every", NULL);
    expect_refused("data:\n  dir: ''\n", "data.dir", "empty", NULL);
    expect_refused("cluster:\n  coordinator: localhost\n", "cluster.coordinator", "endpoint",
                   NULL);
    expect_refused("wire:\n  chunk_bytes: 1001\n", "wire.chunk_bytes", "multiple of 4", NULL);
    expect_refused("wire:\n  bucket_bytes: 1001\n", "wire.bucket_bytes", "multiple of 4", NULL);
    expect_refused("wire:\n  bucket_bytes: 0\n", "wire.bucket_bytes", NULL);
    expect_refused("wire:\n  overlap: sometimes\n", "wire.overlap", NULL);
    expect_refused("wire:\n  local: maybe\n", "wire.local", NULL);
    expect_refused("train:\n  distill_alpha: 1.5\n", "train.distill_alpha", "[0, 1]", NULL);
    expect_refused("train:\n  distill_alpha: -0.1\n", "train.distill_alpha", NULL);
    expect_refused("train:\n  distill_temperature: 0\n", "train.distill_temperature", "> 0", NULL);
    expect_refused("train:\n  distill_from: [a, b]\n", "train.distill_from", NULL);
}

/* train.distill_from is optional: "" (or absent) means no teacher, and clears one */
static void test_optional_string(void **state) {
    (void)state;
    sy_config c;
    sy_config_defaults(&c);
    assert_null(c.train.distill_from);
    assert_int_equal(sy_config_set(&c, "train.distill_from=runs/t"), 0);
    assert_string_equal(c.train.distill_from, "runs/t");
    assert_int_equal(sy_config_check(&c), 0);
    char *yaml = sy_config_to_yaml(&c);
    assert_non_null(strstr(yaml, "  distill_from: \"runs/t\"\n"));
    free(yaml);
    assert_int_equal(sy_config_set(&c, "train.distill_from="), 0);
    assert_null(c.train.distill_from);
    yaml = sy_config_to_yaml(&c);
    assert_non_null(strstr(yaml, "  distill_from: \"\"\n"));
    assert_int_equal(sy_config_load_string(&c, yaml, strlen(yaml), "empty"), 0);
    assert_null(c.train.distill_from);
    free(yaml);
    sy_config_free(&c);
}

static void test_cross_field(void **state) {
    expect_refused("model:\n  d_model: 130\n  n_heads: 4\n", "model.d_model", "model.n_heads",
                   NULL);
    expect_refused("model:\n  n_experts: 2\nrouting:\n  top_k: 3\n", "routing.top_k", NULL);
    expect_refused("train:\n  seq_len: 256\n", "train.seq_len", "model.seq_len", NULL);
    expect_refused("train:\n  batch_size: 30\nrouting:\n  groups: 4\n", "train.batch_size",
                   "routing.groups", NULL);
    expect_refused("train:\n  lr: 0.001\n  min_lr: 0.01\n", "train.min_lr", NULL);
    expect_refused("cluster:\n  heartbeat_ms: 500\n  timeout_ms: 500\n", "cluster.timeout_ms",
                   NULL);
    expect_refused("cluster:\n  replica_every: -1\n", "cluster.replica_every", NULL);
    expect_refused("cluster:\n  replica_every: often\n", "cluster.replica_every", NULL);
}

static void test_missing_file_and_bad_yaml(void **state) {
    char path[128];
    snprintf(path, sizeof path, "%s", tpath("none.yaml"));
    sy_config c;
    sy_config_defaults(&c);
    assert_int_equal(sy_config_load(&c, path), -1);
    assert_int_equal(c.model.d_model, 128);
    sy_config_free(&c);
    char want[192];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(sy_lasterr(), want);

    expect_refused("model:\n  vocab: 256\n d_model: 3\n", "invalid YAML", "line 3", NULL);
    expect_refused("model: {d_model: 64\n", "invalid YAML", NULL);
    expect_refused("train:\n\tlr: 0.1\n", "invalid YAML", NULL);
    expect_refused("model: &m {d_model: 64}\ntrain: *m\n", "alias", NULL);
}

static void test_empty_and_partial_files(void **state) {
    sy_config c, d;
    sy_config_defaults(&c);
    sy_config_defaults(&d);
    const char *path = write_config("# nothing but a comment\n");
    assert_int_equal(sy_config_load(&c, path), 0);
    assert_config_equal(&c, &d);
    assert_string_equal(c.source, path);
    sy_config_free(&c);
    /* a section with every key commented out is empty, not an error */
    sy_config_defaults(&c);
    path = write_config("model:\n  # d_model: 64\ntrain:\n  steps: 7\n");
    assert_int_equal(sy_config_load(&c, path), 0);
    assert_true(c.train.steps == 7);
    assert_int_equal(c.model.d_model, 128);
    sy_config_free(&c);
    sy_config_free(&d);
}

static void test_explicit_zero_and_false_kept(void **state) {
    const char *text = "model:\n  switch_every: 0\n"
                       "routing:\n  aux_loss_coef: 0\n  z_loss_coef: 0.0\n"
                       "train:\n  seed: 0\n  warmup_steps: 0\n  weight_decay: 0\n"
                       "  grad_clip: 0\n  eval_every: 0\n  min_lr: 0\n"
                       "cluster:\n  join_at_once: false\n";
    sy_config c;
    sy_config_defaults(&c);
    assert_int_equal(sy_config_load_string(&c, text, strlen(text), "zeros.yaml"), 0);
    assert_int_equal(c.model.switch_every, 0);
    assert_true(c.model.aux_loss_coef == 0.0f);
    assert_true(c.model.z_loss_coef == 0.0f);
    assert_true(c.train.seed == 0);
    assert_true(c.train.warmup_steps == 0);
    assert_true(c.train.weight_decay == 0.0f);
    assert_true(c.train.grad_clip == 0.0f);
    assert_true(c.train.eval_every == 0);
    assert_true(c.train.min_lr == 0.0f);
    assert_int_equal(c.cluster.join_at_once, 0);
    assert_string_equal(c.source, "zeros.yaml");
    sy_config_free(&c);

    const char *yes = "cluster:\n  join_at_once: true\n";
    sy_config_defaults(&c);
    assert_int_equal(sy_config_load_string(&c, yes, strlen(yes), "yes.yaml"), 0);
    assert_int_equal(c.cluster.join_at_once, 1);
    sy_config_free(&c);
}

static void test_files_layer(void **state) {
    sy_config c;
    sy_config_defaults(&c);
    const char *a = "train:\n  steps: 7\n  lr: 0.01\n";
    const char *b = "train:\n  lr: 0.02\nmodel:\n  n_experts: 8\n";
    assert_int_equal(sy_config_load_string(&c, a, strlen(a), "a.yaml"), 0);
    assert_int_equal(sy_config_load_string(&c, b, strlen(b), "b.yaml"), 0);
    assert_true(c.train.steps == 7);     /* from a */
    assert_true(c.train.lr == 0.02f);    /* b over a */
    assert_int_equal(c.model.n_experts, 8);
    assert_int_equal(c.model.d_model, 128); /* default */
    assert_string_equal(c.source, "b.yaml");
    sy_config_free(&c);
}

static void test_overrides(void **state) {
    sy_config c;
    sy_config_defaults(&c);
    assert_int_equal(sy_config_set(&c, "train.lr=0.001"), 0);
    assert_true(c.train.lr == 0.001f);
    assert_int_equal(sy_config_set(&c, " routing.groups = 4 "), 0);
    assert_int_equal(c.train.groups, 4);
    assert_int_equal(sy_config_set(&c, "routing.capacity_factor=2.5"), 0);
    assert_true(c.model.capacity_factor == 2.5f);
    assert_int_equal(sy_config_set(&c, "train.schedule=linear"), 0);
    assert_int_equal(c.train.schedule, SY_SCHED_LINEAR);
    assert_int_equal(sy_config_set(&c, "wire.dtype=bf16"), 0);
    assert_int_equal(c.wire.dtype, SY_WIRE_BF16);
    assert_int_equal(sy_config_set(&c, "cluster.join_at_once=true"), 0);
    assert_int_equal(c.cluster.join_at_once, 1);
    assert_int_equal(sy_config_set(&c, "cluster.join_at_once=false"), 0);
    assert_int_equal(c.cluster.join_at_once, 0);
    assert_int_equal(sy_config_set(&c, "checkpoint.dir=/tmp/run 1"), 0);
    assert_string_equal(c.checkpoint.dir, "/tmp/run 1");
    assert_int_equal(sy_config_set(&c, "train.steps=123456789012"), 0);
    assert_true(c.train.steps == 123456789012LL);
    assert_int_equal(sy_config_check(&c), 0);

    assert_int_equal(sy_config_set(&c, "train.lr=-1"), -1);
    assert_string_equal(sy_lasterr(), "override: train.lr: must be > 0 (got -1)");
    assert_true(c.train.lr == 0.001f); /* a refused override changes nothing */
    assert_int_equal(sy_config_set(&c, "train.lrr=1"), -1);
    assert_non_null(strstr(sy_lasterr(), "train.lrr: unknown key"));
    assert_int_equal(sy_config_set(&c, "lr=1"), -1);
    assert_non_null(strstr(sy_lasterr(), "lr: unknown key"));
    assert_int_equal(sy_config_set(&c, "train.lr"), -1);
    assert_non_null(strstr(sy_lasterr(), "section.key=value"));
    assert_int_equal(sy_config_set(&c, "model.d_model=abc"), -1);
    assert_non_null(strstr(sy_lasterr(), "model.d_model: must be an integer"));
    assert_int_equal(sy_config_set(&c, "data.dir="), -1);
    assert_non_null(strstr(sy_lasterr(), "data.dir: must not be empty"));
    assert_string_equal(c.data.dir, "data");

    /* per-key checks pass, the cross-field check then names both keys */
    assert_int_equal(sy_config_set(&c, "model.n_heads=3"), 0);
    assert_int_equal(sy_config_check(&c), -1);
    assert_non_null(strstr(sy_lasterr(), "model.d_model: must be divisible by model.n_heads"));
    assert_non_null(strstr(sy_lasterr(), "<default>"));
    sy_config_free(&c);
}

static void test_round_trip(void **state) {
    sy_config a, b;
    sy_config_defaults(&a);
    scramble(&a);
    sy_config_defaults(&b);
    char *yaml = sy_config_to_yaml(&a);
    assert_non_null(yaml);
    if (sy_config_load_string(&b, yaml, strlen(yaml), "round-trip") < 0)
        fail_msg("%s\n%s", sy_lasterr(), yaml);
    assert_config_equal(&a, &b);
    assert_string_equal(b.data.dir, "my \"data\": #1\\x");
    assert_true(b.train.seed == UINT64_MAX);
    assert_true(b.model.init_scale == 0.123456789f);
    /* the writer is stable: writing what was read gives the same text */
    char *again = sy_config_to_yaml(&b);
    const char *body_a = strchr(yaml, '\n'), *body_b = strchr(again, '\n');
    assert_string_equal(body_a, body_b);
    free(yaml);
    free(again);
    sy_config_free(&a);
    sy_config_free(&b);

    /* the defaults too, and a value no set can produce is refused on reading back */
    sy_config_defaults(&a);
    sy_config_defaults(&b);
    scramble(&b);
    yaml = sy_config_to_yaml(&a);
    assert_int_equal(sy_config_load_string(&b, yaml, strlen(yaml), "defaults"), 0);
    assert_config_equal(&a, &b);
    assert_non_null(strstr(yaml, "  capacity_factor: 1.25\n"));
    assert_non_null(strstr(yaml, "  coordinator: \"tcp://127.0.0.1:5555\"\n"));
    free(yaml);
    sy_config_free(&b);
    a.train.schedule = (sy_schedule)7;
    assert_int_equal(sy_config_check(&a), -1);
    assert_non_null(strstr(sy_lasterr(), "train.schedule"));
    sy_config_free(&a);
}

static void test_model_cfg_check(void **state) {
    sy_model_cfg m = sy_model_cfg_default();
    assert_int_equal(sy_model_cfg_check(&m), 0);
    m.n_heads = 5;
    assert_int_equal(sy_model_cfg_check(&m), -1);
    assert_string_equal(sy_lasterr(),
                        "model.d_model: must be divisible by model.n_heads (128 % 5 = 3)");
    m = sy_model_cfg_default();
    m.top_k = 5;
    assert_int_equal(sy_model_cfg_check(&m), -1);
    assert_non_null(strstr(sy_lasterr(), "routing.top_k"));
    m = sy_model_cfg_default();
    m.n_experts = 0;
    assert_int_equal(sy_model_cfg_check(&m), -1);
    assert_non_null(strstr(sy_lasterr(), "model.n_experts"));
    m = sy_model_cfg_default();
    m.capacity_factor = 0.0f / 0.0f;
    assert_int_equal(sy_model_cfg_check(&m), -1);
    assert_non_null(strstr(sy_lasterr(), "routing.capacity_factor"));
    m = sy_model_cfg_default();
    assert_true(sy_is_switch_layer(&m, 1) && sy_is_switch_layer(&m, 3));
    assert_false(sy_is_switch_layer(&m, 0) || sy_is_switch_layer(&m, 2));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_default_yaml_is_the_defaults),
        cmocka_unit_test(test_optional_string),
        cmocka_unit_test(test_embedded_default_matches_file),
        cmocka_unit_test(test_bench_yaml),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_cross_field),
        cmocka_unit_test(test_missing_file_and_bad_yaml),
        cmocka_unit_test(test_empty_and_partial_files),
        cmocka_unit_test(test_explicit_zero_and_false_kept),
        cmocka_unit_test(test_files_layer),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_model_cfg_check),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
