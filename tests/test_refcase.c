/* test_refcase: loading the PyTorch reference cases in tests/refcases: shapes,
 * tensor bytes checked against the files read directly, expected losses, routing; and
 * broken copies of a case (missing or short tensor, bad YAML, bad tokens) refused with
 * messages naming the file. */
#define _GNU_SOURCE /* nftw in tmpdir.h */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "refcase.h"

#define SY_TMPDIR_NAME "refcase"
#include "tmpdir.h"

#define CASE(name) SY_REFCASES_DIR "/" name

/* Reads n 4-byte values from the start of a file, independently of refcase.c. */
static void read_head(const char *path, void *out, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fread(out, 4, n, f), n);
    fclose(f);
}

static void test_tiny(void **state) {
    sy_refcase rc;
    if (sy_refcase_load(&rc, CASE("tiny")) < 0)
        fail_msg("%s", sy_lasterr());
    assert_int_equal(rc.model.d_model, 32);
    assert_int_equal(rc.model.n_layers, 2);
    assert_int_equal(rc.model.n_heads, 4);
    assert_int_equal(rc.model.d_ff, 64);
    assert_int_equal(rc.model.n_experts, 4);
    assert_int_equal(rc.model.switch_every, 2);
    assert_int_equal(rc.model.seq_len, 16);
    assert_int_equal(rc.model.vocab, 256);
    assert_int_equal(rc.model.top_k, 1);
    assert_true(rc.model.capacity_factor == 1.0f);
    assert_true(rc.model.aux_loss_coef == 0.01f);
    assert_true(rc.model.z_loss_coef == 0.001f);
    /* not in the manifest: the defaults */
    assert_true(rc.model.eval_capacity_factor == 2.0f);
    assert_true(rc.model.router_jitter == 0.0f);
    assert_int_equal(rc.groups, 2);
    assert_int_equal(rc.batch, 4);
    assert_int_equal(rc.seq, 16);
    assert_true(rc.loss_total == 6.06275977381);
    assert_true(rc.loss_ce == 6.04166586774);
    assert_true(rc.loss_aux == 1.34242424052);
    assert_true(rc.loss_z == 7.66966366365);

    int32_t tok[17];
    read_head(CASE("tiny") "/tokens.i32", tok, 17);
    assert_memory_equal(rc.tokens, tok, sizeof tok);

    assert_int_equal(rc.n_routes, 1);
    assert_int_equal(rc.routes[0].layer, 1);
    assert_int_equal(rc.routes[0].n, 64);
    assert_int_equal(rc.routes[0].dropped_is, -1);
    int32_t route[64];
    read_head(CASE("tiny") "/route.1.i32", route, 64);
    assert_memory_equal(rc.routes[0].expert, route, sizeof route);
    int dropped = 0;
    for (int i = 0; i < 64; i++)
        dropped += route[i] == -1;
    assert_true(dropped > 0); /* capacity factor 1.0 over 2 groups drops some tokens */

    assert_int_equal(rc.n_params, 23);
    const sy_ref_param *wte = sy_refcase_param(&rc, "wte");
    assert_non_null(wte);
    assert_int_equal(wte->ndim, 2);
    assert_int_equal(wte->shape[0], 256);
    assert_int_equal(wte->shape[1], 32);
    assert_int_equal(wte->numel, 256 * 32);
    float head[8];
    read_head(CASE("tiny") "/wte.f32", head, 8);
    assert_memory_equal(wte->value, head, sizeof head);
    read_head(CASE("tiny") "/wte.grad.f32", head, 8);
    assert_memory_equal(wte->grad, head, sizeof head);

    const sy_ref_param *router = sy_refcase_param(&rc, "layers.1.router");
    assert_non_null(router);
    assert_int_equal(router->shape[0], 32);
    assert_int_equal(router->shape[1], 4);
    read_head(CASE("tiny") "/layers.1.router.f32", head, 8);
    assert_memory_equal(router->value, head, sizeof head);
    const sy_ref_param *norm = sy_refcase_param(&rc, "layers.0.norm1");
    assert_non_null(norm);
    assert_int_equal(norm->ndim, 1);
    assert_int_equal(norm->numel, 32);
    assert_null(sy_refcase_param(&rc, "layers.0.router"));
    assert_null(sy_refcase_param(&rc, "layers.7.experts.0.w1"));

    sy_refcase_free(&rc);
    assert_null(rc.params);
    assert_int_equal(rc.n_params, 0);
    sy_refcase_free(&rc); /* twice is harmless */
    sy_refcase_free(NULL);
}

static void test_all_switch(void **state) {
    sy_refcase rc;
    if (sy_refcase_load(&rc, CASE("all-switch")) < 0)
        fail_msg("%s", sy_lasterr());
    assert_int_equal(rc.model.n_experts, 8);
    assert_int_equal(rc.model.switch_every, 1);
    assert_int_equal(rc.model.seq_len, 24);
    assert_true(rc.model.capacity_factor == 1.25f);
    assert_int_equal(rc.groups, 1);
    assert_int_equal(rc.batch, 2);
    assert_int_equal(rc.seq, 24);
    assert_true(rc.loss_total == 5.75383793782);
    assert_true(rc.loss_z == 23.1256376157);
    assert_int_equal(rc.n_routes, 2);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(rc.routes[r].layer, r);
        assert_int_equal(rc.routes[r].n, 48);
    }
    int32_t route[48];
    read_head(CASE("all-switch") "/route.0.i32", route, 48);
    assert_memory_equal(rc.routes[0].expert, route, sizeof route);
    const sy_ref_param *w1 = sy_refcase_param(&rc, "layers.0.experts.7.w1");
    assert_non_null(w1);
    assert_int_equal(w1->shape[0], 32);
    assert_int_equal(w1->shape[1], 64);
    float head[4];
    read_head(CASE("all-switch") "/layers.0.experts.7.w1.grad.f32", head, 4);
    assert_memory_equal(w1->grad, head, sizeof head);
    assert_int_equal(rc.n_params, 2 + 2 * (4 + 1 + 16) + 2);
    sy_refcase_free(&rc);
}

static void test_no_drop(void **state) {
    sy_refcase rc;
    if (sy_refcase_load(&rc, CASE("no-drop")) < 0)
        fail_msg("%s", sy_lasterr());
    assert_true(rc.model.capacity_factor == 4.0f);
    assert_int_equal(rc.groups, 4);
    assert_true(rc.loss_total == 6.05765290294);
    assert_true(rc.loss_aux == 1.30775748735);
    assert_int_equal(rc.n_routes, 1);
    /* capacity factor 4 with 4 experts: every token fits */
    for (int i = 0; i < rc.routes[0].n; i++) {
        assert_true(rc.routes[0].expert[i] >= 0);
        assert_true(rc.routes[0].expert[i] < 4);
    }
    sy_refcase_free(&rc);
}

static void test_wide(void **state) {
    sy_refcase rc;
    if (sy_refcase_load(&rc, CASE("wide")) < 0)
        fail_msg("%s", sy_lasterr());
    assert_int_equal(rc.model.d_model, 64);
    assert_int_equal(rc.model.n_layers, 4);
    assert_int_equal(rc.model.n_heads, 2);
    assert_int_equal(rc.model.d_ff, 128);
    assert_int_equal(rc.model.n_experts, 2);
    assert_int_equal(rc.batch, 2);
    assert_int_equal(rc.seq, 32);
    assert_true(rc.loss_total == 5.91108124196);
    assert_true(rc.loss_ce == 5.87486832783);
    assert_int_equal(rc.n_routes, 2);
    assert_int_equal(rc.routes[0].layer, 1);
    assert_int_equal(rc.routes[1].layer, 3);
    assert_int_equal(rc.routes[1].n, 64);
    const sy_ref_param *lm = sy_refcase_param(&rc, "lm_head");
    assert_non_null(lm);
    assert_int_equal(lm->shape[0], 64);
    assert_int_equal(lm->shape[1], 256);
    float tail[4];
    FILE *f = fopen(CASE("wide") "/lm_head.f32", "rb");
    assert_non_null(f);
    fseek(f, -16, SEEK_END);
    assert_int_equal(fread(tail, 4, 4, f), 4);
    fclose(f);
    assert_memory_equal(lm->value + lm->numel - 4, tail, sizeof tail);
    sy_refcase_free(&rc);
}

/* top-k cases give every choice of every token: [N, k], -1 where a choice was dropped */
static void test_top_k(void **state) {
    static const struct {
        const char *name;
        int k, layer, n;
    } cases[] = {{"top2", 2, 0, 64}, {"top3", 3, 1, 72}};
    for (int c = 0; c < 2; c++) {
        sy_refcase rc;
        char dir[512], route[600];
        snprintf(dir, sizeof dir, "%s/%s", SY_REFCASES_DIR, cases[c].name);
        if (sy_refcase_load(&rc, dir) < 0)
            fail_msg("%s", sy_lasterr());
        assert_int_equal(rc.model.top_k, cases[c].k);
        assert_int_equal(rc.routes[0].layer, cases[c].layer);
        assert_int_equal(rc.routes[0].n, cases[c].n);
        assert_int_equal(rc.routes[0].k, cases[c].k);
        int n = cases[c].n * cases[c].k, kept_later = 0, dropped = 0;
        int32_t *want = malloc((size_t)n * 4);
        assert_non_null(want);
        snprintf(route, sizeof route, "%s/route.%d.i32", dir, cases[c].layer);
        read_head(route, want, (size_t)n);
        assert_memory_equal(rc.routes[0].expert, want, (size_t)n * 4);
        for (int i = 0; i < n; i++) {
            kept_later += i % cases[c].k > 0 && want[i] >= 0;
            dropped += want[i] < 0;
        }
        assert_true(kept_later > 0); /* second and later choices are exercised */
        assert_true(dropped > 0);    /* and some of them dropped */
        free(want);
        sy_refcase_free(&rc);
    }
}

/* ---- broken copies of the tiny case in a temp dir ---------------------------------- */

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int ok = in && out;
    char buf[8192];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out))
        ok = 0;
    if (!ok)
        print_error("cannot copy %s to %s: %s\n", from, to, strerror(errno));
    return ok ? 0 : -1;
}

/* A fresh scratch directory holding a writable copy of the tiny case (removed again
 * when the copy fails, since cmocka skips the teardown of a failed setup). */
static int fresh_copy(void **state) {
    if (setup_tmp(state))
        return -1;
    DIR *d = opendir(CASE("tiny"));
    if (!d) {
        print_error("%s: %s\n", CASE("tiny"), strerror(errno));
        teardown_tmp(state);
        return -1;
    }
    struct dirent *e;
    char from[512];
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(from, sizeof from, "%s/%s", CASE("tiny"), e->d_name);
        rc = copy_file(from, tpath(e->d_name));
    }
    closedir(d);
    if (rc)
        teardown_tmp(state);
    return rc;
}

/* Replaces the first `from` in the copy's manifest with `to`. */
static void edit_manifest(const char *from, const char *to) {
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.yaml", g_tmp);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, from);
    assert_non_null(at);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(to, f);
    fputs(at + strlen(from), f);
    fclose(f);
}

/* Loading the copy fails with a message holding every fragment (NULL-terminated). */
static void expect_refused(const char *first, ...) {
    sy_refcase rc;
    assert_int_equal(sy_refcase_load(&rc, g_tmp), -1);
    assert_null(rc.params);
    assert_null(rc.tokens);
    const char *err = sy_lasterr();
    va_list ap;
    va_start(ap, first);
    for (const char *frag = first; frag; frag = va_arg(ap, const char *))
        if (!strstr(err, frag))
            fail_msg("message lacks '%s': %s", frag, err);
    va_end(ap);
}

static void test_copy_loads(void **state) {
    sy_refcase rc;
    if (sy_refcase_load(&rc, g_tmp) < 0)
        fail_msg("%s", sy_lasterr());
    assert_string_equal(rc.dir, g_tmp);
    sy_refcase_free(&rc);
}

static void test_missing_tensor(void **state) {
    char path[600];
    snprintf(path, sizeof path, "%s/layers.1.experts.2.w1.grad.f32", g_tmp);
    assert_int_equal(unlink(path), 0);
    expect_refused(path, "cannot open", "No such file", "layers.1.experts.2.w1", NULL);
}

static void test_truncated_tensor(void **state) {
    char path[600];
    snprintf(path, sizeof path, "%s/layers.0.attn.wo.f32", g_tmp);
    assert_int_equal(truncate(path, 4096 - 4), 0);
    expect_refused(path, "layers.0.attn.wo", "[32, 32]", "4096", "4092", NULL);
}

static void test_shape_disagrees_with_file(void **state) {
    edit_manifest("{name: wpe, shape: [16, 32]", "{name: wpe, shape: [16, 33]");
    expect_refused("wpe.f32", "wpe", "[16, 33]", NULL);
}

static void test_bad_yaml(void **state) {
    edit_manifest("model:\n  d_model: 32\n", "model:\n  d_model: 32\n bad indent: [\n");
    expect_refused("manifest.yaml", "line", NULL);
}

static void test_wrong_type_in_manifest(void **state) {
    edit_manifest("n_heads: 4", "n_heads: four");
    expect_refused("manifest.yaml", "model.n_heads", "four", "line 6", NULL);
}

static void test_error_names_entry_index(void **state) {
    edit_manifest("{name: wpe,", "{name: [wpe],");
    expect_refused("manifest.yaml", "params[1].name", "line 29", NULL);
}

static void test_missing_key(void **state) {
    edit_manifest("  loss_ce: 6.04166586774\n", "");
    expect_refused("manifest.yaml", "expected.loss_ce", "missing", NULL);
}

static void test_missing_manifest(void **state) {
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.yaml", g_tmp);
    assert_int_equal(unlink(path), 0);
    expect_refused(path, "cannot open", NULL);
}

static void test_unknown_keys_ignored(void **state) {
    edit_manifest("routing:\n", "producer: {tool: torch, version: 1.13}\nrouting:\n  top_k: 2\n"
                                "  eval_capacity_factor: 3.0\n  notes: extra\n");
    sy_refcase rc;
    if (sy_refcase_load(&rc, g_tmp) < 0)
        fail_msg("%s", sy_lasterr());
    assert_int_equal(rc.model.top_k, 2);
    assert_true(rc.model.eval_capacity_factor == 3.0f);
    sy_refcase_free(&rc);
}

static void test_token_out_of_range(void **state) {
    char path[600];
    snprintf(path, sizeof path, "%s/tokens.i32", g_tmp);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    int32_t bad = 300;
    fseek(f, 4 * 20, SEEK_SET); /* row 1, position 3 */
    fwrite(&bad, 4, 1, f);
    fclose(f);
    expect_refused(path, "300", "row 1, position 3", NULL);
}

static void test_route_layer_not_switch(void **state) {
    edit_manifest("{layer: 1, file: route.1.i32", "{layer: 0, file: route.1.i32");
    expect_refused("manifest.yaml", "expected.routing[0].layer", NULL);
}

static void test_route_choices_not_top_k(void **state) {
    edit_manifest("shape: [64], dropped_is", "shape: [64, 2], dropped_is");
    expect_refused("manifest.yaml", "expected.routing[0].shape", "top_k = 1", NULL);
}

static void test_bad_model_in_manifest(void **state) {
    edit_manifest("n_heads: 4", "n_heads: 5");
    expect_refused("manifest.yaml", "model.d_model", "model.n_heads", NULL);
}

int main(void) {
    struct stat st;
    if (stat(SY_REFCASES_DIR, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "test_refcase: the reference cases are missing: %s (they are committed in tests/refcases; "
                        "remake them with /usr/bin/python3 tests/oracle/refgen.py write tests/refcases)\n",
                SY_REFCASES_DIR);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_all_switch),
        cmocka_unit_test(test_no_drop),
        cmocka_unit_test(test_wide),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test_setup_teardown(test_copy_loads, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_missing_tensor, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_truncated_tensor, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_shape_disagrees_with_file, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bad_yaml, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_wrong_type_in_manifest, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_error_names_entry_index, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_missing_key, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_missing_manifest, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_unknown_keys_ignored, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_token_out_of_range, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_route_layer_not_switch, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_route_choices_not_top_k, fresh_copy, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bad_model_in_manifest, fresh_copy, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
