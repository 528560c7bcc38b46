/* Mesh planning (common/mesh.c): shapes, equal shares that match a single process's
 * groups, expert ranges, and speed-proportional shares when workers differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "mesh.h"

static void check_cover(const sy_mesh *m) {
    /* rows tile [0, B) in rank order; experts tile [0, E) in index order */
    int row = 0;
    for (int r = 0; r < m->world; r++) {
        assert_int_equal(m->row0[r], row);
        assert_true(m->nrows[r] >= 1);
        row += m->nrows[r];
    }
    assert_int_equal(row, m->global_batch);
    int e = 0;
    for (int p = 0; p < m->ep; p++) {
        assert_int_equal(m->e_begin[p], e);
        assert_true(m->e_end[p] > m->e_begin[p]);
        e = m->e_end[p];
    }
    assert_int_equal(e, m->n_experts);
    for (int d = 0; d < m->dp; d++)
        for (int x = 0; x < m->n_experts; x++) {
            int o = sy_mesh_owner(m, d, x);
            assert_int_equal(sy_mesh_d(m, o), d);
            int p = sy_mesh_p(m, o);
            assert_true(x >= m->e_begin[p] && x < m->e_end[p]);
        }
}

static void test_shapes(void **s) {
    struct { int W, E, P, D; } cases[] = {
        {1, 8, 1, 1}, {2, 8, 2, 1}, {3, 8, 3, 1}, {4, 4, 4, 1}, {8, 4, 4, 2}, {6, 4, 3, 2},
        {5, 4, 1, 5}, /* no divisor of 5 in 2..4: pure data parallel, every rank holds all experts */
        {12, 8, 6, 2}, {3, 1, 1, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sy_mesh m;
        assert_int_equal(sy_mesh_plan(&m, cases[i].W, cases[i].E, 24, NULL, 0), 0);
        if (m.ep != cases[i].P || m.dp != cases[i].D)
            fail_msg("W=%d E=%d: mesh %d x %d, want %d x %d", cases[i].W, cases[i].E, m.dp, m.ep, cases[i].D,
                     cases[i].P);
        assert_int_equal(m.balanced, 0);
        check_cover(&m);
        sy_mesh_free(&m);
    }
}

/* equal shares: rank r holds rows [r*B/W, (r+1)*B/W), as group r of one process */
static void test_equal_rows_match_groups(void **s) {
    sy_mesh m;
    assert_int_equal(sy_mesh_plan(&m, 3, 8, 6, NULL, 0), 0);
    for (int r = 0; r < 3; r++) {
        assert_int_equal(m.row0[r], r * 2);
        assert_int_equal(m.nrows[r], 2);
    }
    /* 8 experts over 3: 2, 3, 3 */
    assert_int_equal(m.e_end[0] - m.e_begin[0], 2);
    assert_int_equal(m.e_end[1] - m.e_begin[1], 3);
    assert_int_equal(m.e_end[2] - m.e_begin[2], 3);
    sy_mesh_free(&m);
}

static void test_speed_shares(void **s) {
    sy_mesh m;
    double slow_fast[2] = {20.0, 60.0};
    /* within the ratio: equal */
    double close[2] = {50.0, 60.0};
    assert_int_equal(sy_mesh_plan(&m, 2, 8, 16, close, 2.0), 0);
    assert_int_equal(m.balanced, 0);
    assert_int_equal(m.nrows[0], 8);
    sy_mesh_free(&m);
    /* 3x apart: rows and experts follow speed, 1:3 */
    assert_int_equal(sy_mesh_plan(&m, 2, 8, 16, slow_fast, 2.0), 0);
    assert_int_equal(m.balanced, 1);
    assert_int_equal(m.nrows[0], 4);
    assert_int_equal(m.nrows[1], 12);
    assert_int_equal(m.e_end[0] - m.e_begin[0], 2);
    assert_int_equal(m.e_end[1] - m.e_begin[1], 6);
    check_cover(&m);
    sy_mesh_free(&m);
    /* everyone keeps at least one row and one expert, however slow */
    double extreme[3] = {1.0, 1000.0, 1000.0};
    assert_int_equal(sy_mesh_plan(&m, 3, 3, 3, extreme, 2.0), 0);
    for (int r = 0; r < 3; r++)
        assert_int_equal(m.nrows[r], 1);
    check_cover(&m);
    sy_mesh_free(&m);
}

static void test_apportion(void **s) {
    int out[4];
    double w[4] = {1, 1, 1, 1};
    assert_int_equal(sy_apportion(10, 4, w, out), 0);
    int sum = 0;
    for (int i = 0; i < 4; i++)
        sum += out[i];
    assert_int_equal(sum, 10);
    assert_int_equal(out[0], 3); /* remainders go to lower ranks first */
    assert_int_equal(out[3], 2);
    assert_int_equal(sy_apportion(3, 4, w, out), -1); /* fewer than one each */
}

static void test_impossible(void **s) {
    sy_mesh m;
    assert_int_equal(sy_mesh_plan(&m, 4, 8, 3, NULL, 0), -1); /* 3 rows for 4 workers */
    assert_int_equal(sy_mesh_plan(&m, 0, 8, 3, NULL, 0), -1);
    assert_int_equal(sy_mesh_plan(&m, 2, 0, 3, NULL, 0), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),        cmocka_unit_test(test_equal_rows_match_groups),
        cmocka_unit_test(test_speed_shares),  cmocka_unit_test(test_apportion),
        cmocka_unit_test(test_impossible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
