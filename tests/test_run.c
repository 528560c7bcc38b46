/* common/run.c, the run bookkeeping shared by `switchyard train` and the coordinator:
 * run-log lines read back with jansson (keys, the precision kept, escaping, NaN as null,
 * optional fields), the progress schedule, the expert-load counts from a report and the
 * table, the checkpoint metadata read back from a committed checkpoint. */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "checkpoint.h"
#include "log.h"
#include "model_cfg.h"
#include "run.h"

#define SY_TMPDIR_NAME "run"
#include "tmpdir.h"

/* line k (0-based) of g_tmp/name as a JSON object */
static json_t *line_of(const char *name, int k) {
    FILE *f = fopen(tpath(name), "r");
    assert_non_null(f);
    char buf[4096];
    json_t *o = NULL;
    for (int i = 0; i <= k; i++)
        assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    json_error_t err;
    o = json_loads(buf, 0, &err);
    if (!o)
        fail_msg("line %d of %s is not JSON (%s): %s", k + 1, name, err.text, buf);
    return o;
}

static void test_runlog_lines(void **s) {
    (void)s;
    sy_runlog *log = sy_runlog_open(g_tmp, "log.jsonl");
    assert_non_null(log);
    sy_run_times t = {.step = 0.5, .compute = 0.25, .alltoall = 0.125, .allreduce = 0.0625};
    sy_runlog_write_step(log, &(sy_runlog_step){.run_id = "a\"b\\c",
                                                .epoch = 42,
                                                .step = 7,
                                                .loss = {2.1234567, 2.0, 1.5, 0.25},
                                                .lr = 0.00123456789,
                                                .grad_norm = 0.123456,
                                                .tokens_per_s = 1234.56,
                                                .times = &t,
                                                .workers = 2,
                                                .time = 3.14159});
    sy_runlog_write_step(log, &(sy_runlog_step){.run_id = "r", .step = 8, .loss = {NAN, 1, 1, 1}, .workers = 1});
    sy_runlog_write_val(log, "r", 8, 2.5, 1, 9.0);
    sy_runlog_write_val(log, "r", 9, NAN, 1, 9.5);
    sy_runlog_close(&log);
    assert_null(log);

    json_t *o = line_of("log.jsonl", 0);
    assert_string_equal(json_string_value(json_object_get(o, "run_id")), "a\"b\\c");
    assert_int_equal(json_integer_value(json_object_get(o, "epoch")), 42);
    assert_int_equal(json_integer_value(json_object_get(o, "step")), 7);
    assert_true(json_real_value(json_object_get(o, "loss")) == 2.123457); /* %.6f kept */
    assert_true(json_real_value(json_object_get(o, "lr")) == 0.00123457);  /* %.6g */
    assert_true(json_real_value(json_object_get(o, "grad_norm")) == 0.1235);
    assert_true(json_real_value(json_object_get(o, "tokens_per_s")) == 1234.6);
    assert_true(json_real_value(json_object_get(o, "step_ms")) == 500.0);
    assert_true(json_real_value(json_object_get(o, "allreduce_ms")) == 62.5);
    assert_int_equal(json_integer_value(json_object_get(o, "workers")), 2);
    assert_true(json_real_value(json_object_get(o, "time")) == 3.142);
    json_decref(o);

    o = line_of("log.jsonl", 1); /* one process: no epoch, no times; a NaN is null */
    assert_null(json_object_get(o, "epoch"));
    assert_null(json_object_get(o, "step_ms"));
    assert_true(json_is_null(json_object_get(o, "loss")));
    assert_true(json_real_value(json_object_get(o, "ce")) == 1.0);
    json_decref(o);

    o = line_of("log.jsonl", 2);
    assert_true(json_real_value(json_object_get(o, "val_ce")) == 2.5);
    assert_int_equal(json_integer_value(json_object_get(o, "step")), 8);
    json_decref(o);
    o = line_of("log.jsonl", 3);
    assert_true(json_is_null(json_object_get(o, "val_ce")));
    json_decref(o);
}

static void test_runlog_unwritable_dir(void **s) {
    (void)s;
    assert_null(sy_runlog_open(tpath("no/such/dir"), "log.jsonl"));
    assert_non_null(strstr(sy_lasterr(), "no/such/dir/log.jsonl"));
    sy_runlog_write_step(NULL, &(sy_runlog_step){.run_id = "r"}); /* no log: nothing happens */
}

static void test_progress_schedule(void **s) {
    (void)s;
    assert_true(sy_progress_due(10, 400, 1, 10));
    assert_false(sy_progress_due(11, 400, 1, 10));
    assert_true(sy_progress_due(1, 400, 1, 10));     /* the first step of this process */
    assert_true(sy_progress_due(101, 400, 101, 10)); /* ... after a resume */
    assert_true(sy_progress_due(400, 400, 1, 7));    /* the last */
    sy_progress p;
    sy_progress_start(&p);
    sy_progress_add(&p, &(sy_losses){2, 1, 0.5, 0.25}, 100);
    sy_progress_add(&p, &(sy_losses){4, 3, 1.5, 0.75}, 100);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.tokens, 200);
    assert_true(p.sum.total == 6 && p.sum.ce == 4);
    sy_progress_log(&p, 2, 10, 100, 1e-3, 0.5, NULL);
    assert_int_equal(p.n, 0); /* the next interval starts */
    assert_int_equal(p.tokens, 0);
}

static void test_expert_load_counts_and_table(void **s) {
    (void)s;
    sy_model_cfg mc = {.n_layers = 4, .n_experts = 2, .switch_every = 2};
    sy_expert_load x;
    assert_int_equal(sy_expert_load_init(&x, &mc, 3), 0);
    assert_int_equal(x.n_switch, 2);
    assert_int_equal(sy_expert_load_count(&x), 4);
    assert_int_equal(sy_expert_load_lang_count(&x), 12);
    uint32_t w[4] = {30, 10, 25, 25}, k[4] = {27, 10, 20, 25}, lang[12] = {0};
    lang[0] = 5;
    lang[11] = 7;
    sy_expert_load_add_counts(&x, w, k, lang);
    sy_expert_load_add_counts(&x, w, k, NULL); /* a report without languages */
    assert_int_equal(x.wanted[0], 60);
    assert_int_equal(x.kept[2], 40);
    assert_int_equal(x.lang[0], 5);
    assert_int_equal(x.lang[11], 7);
    FILE *f = fopen(tpath("table.txt"), "w+");
    sy_expert_load_print(&x, &mc, f);
    rewind(f);
    char buf[2048] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    /* layer 1: shares 75% / 25%, expert 0 drops 10%, the layer 7.5%; layer 3: 50/50, 10% */
    assert_non_null(strstr(buf, "layer 1    e0 75.0%/10.0%  e1 25.0%/ 0.0%  drop 7.50%"));
    assert_non_null(strstr(buf, "layer 3    e0 50.0%/20.0%  e1 50.0%/ 0.0%  drop 10.00%"));
    sy_expert_load_clear(&x);
    assert_int_equal(x.wanted[0], 0);
    assert_int_equal(x.lang[11], 0);
    sy_expert_load_free(&x);
    assert_null(x.wanted);
}

static void test_checkpoint_metadata(void **s) {
    (void)s;
    sy_ckpt_writer *w = sy_ckpt_writer_new(g_tmp, 12);
    assert_non_null(w);
    float v[2] = {1, 2};
    int64_t shape[2] = {2, 1};
    assert_int_equal(sy_ckpt_writer_add(w, "x", SY_DT_F32, 1, shape, v, sizeof v), 0);
    assert_int_equal(sy_run_ckpt_meta(w, "run-1", 12, 3, "a: 1\n"), 0);
    assert_int_equal(sy_ckpt_writer_commit(w, 0), 0);
    char dir[600];
    snprintf(dir, sizeof dir, "%s", sy_ckpt_writer_dir(w));
    sy_ckpt_writer_destroy(&w);
    sy_ckpt *ck = sy_ckpt_open(dir);
    assert_non_null(ck);
    assert_string_equal(sy_ckpt_get(ck, SY_CKPT_KEY_RUN_ID), "run-1");
    assert_string_equal(sy_ckpt_get(ck, SY_CKPT_KEY_DATA_POS), "12");
    assert_string_equal(sy_ckpt_get(ck, "adam_t"), "12");
    assert_string_equal(sy_ckpt_get(ck, "workers"), "3");
    char id[64] = "unchanged";
    sy_run_id_from_ckpt(ck, id, sizeof id);
    assert_string_equal(id, "run-1");
    sy_ckpt_close(&ck);
    sy_run_id_from_ckpt(NULL, id, sizeof id); /* no checkpoint: the id stays */
    assert_string_equal(id, "run-1");
    sy_run_id_new(id, sizeof id);
    assert_int_equal(strlen(id), 13); /* %08lx-%04x */
    assert_int_equal(id[8], '-');
}

int main(void) {
    (void)write_file; /* tmpdir.h's, not needed here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runlog_lines, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_runlog_unwritable_dir, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_progress_schedule),
        cmocka_unit_test_setup_teardown(test_expert_load_counts_and_table, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_checkpoint_metadata, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
