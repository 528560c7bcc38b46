/* test_distill: the soft-target loss of common/distill.c. Its value against a direct
 * evaluation of T^2 KL in long double written here, its gradient against central finite
 * differences of the loss, the zero at a perfect student, and the mixed backward of
 * model.c (hard CE weighted, soft term added) against finite differences of the whole
 * model's mixed loss with respect to a few weights. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "distill.h"
#include "model.h"

static uint64_t rng_state;
static double runif(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* T^2 KL(softmax(t/T) || softmax(s/T)) of one row, straight from the definition */
static long double kl_direct(const float *s, const float *t, int V, double T) {
    long double zs = 0, zt = 0;
    for (int v = 0; v < V; v++) {
        zs += expl((long double)s[v] / T);
        zt += expl((long double)t[v] / T);
    }
    long double kl = 0;
    for (int v = 0; v < V; v++) {
        long double p = expl((long double)t[v] / T) / zt, q = expl((long double)s[v] / T) / zs;
        kl += p * logl(p / q);
    }
    return (long double)T * T * kl;
}

static void test_value_and_gradient(void **state) {
    (void)state;
    const int N = 3, V = 37;
    const float temps[] = {1.0f, 2.0f, 0.5f};
    float s[3 * 37], t[3 * 37], d[3 * 37];
    rng_state = 5;
    for (int i = 0; i < N * V; i++) {
        s[i] = (float)(4 * runif() - 2);
        t[i] = (float)(6 * runif() - 3);
    }
    for (int ti = 0; ti < 3; ti++) {
        float T = temps[ti];
        double got = sy_distill_soft(d, s, t, N, V, T, 0.25f);
        long double want = 0;
        for (int i = 0; i < N; i++)
            want += kl_direct(s + i * V, t + i * V, V, T);
        printf("T %.1f: loss %.9f, direct %.9Lf\n", (double)T, got, want);
        assert_true(fabs(got - (double)want) < 1e-9 * (1 + fabs((double)want)));
        /* d/ds by central differences of the float32 inputs' loss, scale 0.25 */
        double worst = 0;
        for (int i = 0; i < N * V; i += 5) {
            float keep = s[i];
            const float h = 1e-2f;
            s[i] = keep + h;
            double up = sy_distill_soft(NULL, s, t, N, V, T, 1);
            s[i] = keep - h;
            double dn = sy_distill_soft(NULL, s, t, N, V, T, 1);
            s[i] = keep;
            double num = 0.25 * (up - dn) / (2.0 * h);
            double err = fabs(num - d[i]);
            worst = err > worst ? err : worst;
        }
        printf("T %.1f: worst |analytic - numeric| gradient %.2e\n", (double)T, worst);
        assert_true(worst < 1e-5);
    }
    /* a student equal to its teacher: zero loss and zero gradient */
    double z = sy_distill_soft(d, t, t, N, V, 2.0f, 1.0f);
    assert_true(fabs(z) < 1e-12);
    for (int i = 0; i < N * V; i++)
        assert_true(fabs(d[i]) < 1e-7);
}

/* the mixed backward of a dense student: L = (1 - a) CE + aux + z + a * soft(logits, teacher) / N */
static double mixed_loss(sy_model *m, const sy_pass *ps, const int32_t *tok, const float *teacher, float a, float T,
                         float *dextra) {
    sy_losses l;
    assert_int_equal(sy_model_forward(m, ps, tok, &l), 0);
    int N = ps->B * ps->T, V = 256;
    double soft = sy_distill_soft(dextra, sy_model_logits(m), teacher, N, V, T, a / (float)N);
    const sy_model_cfg *c = &sy_model_layout(m)->cfg;
    return (1 - a) * l.ce + c->aux_loss_coef * l.aux + c->z_loss_coef * l.z + a * soft / N;
}

static void test_model_mix(void **state) {
    (void)state;
    sy_model_cfg c = sy_model_cfg_default();
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 24;
    c.n_experts = 1;
    c.switch_every = 0; /* dense */
    c.seq_len = 8;
    c.eval_capacity_factor = 4.0f;
    c.init_scale = 1.0f;
    const int B = 2, T = 8, N = B * T, V = 256;
    sy_model *m = sy_model_new(&c, B, T, NULL);
    assert_non_null(m);
    sy_model_init_weights(m, 9);
    int32_t tok[2 * 9];
    float *teacher = malloc((size_t)N * V * sizeof(float)), *dextra = malloc((size_t)N * V * sizeof(float));
    assert_non_null(teacher);
    assert_non_null(dextra);
    rng_state = 17;
    for (int i = 0; i < B * (T + 1); i++)
        tok[i] = (int32_t)(runif() * 256);
    /* the teacher: a sparse model (two switch layers of 4 experts, capacity binding:
     * its routing drops tokens), the student above a dense one as in the Switch paper */
    sy_model_cfg tc = c;
    tc.n_layers = 4;
    tc.n_experts = 4;
    tc.switch_every = 2;
    tc.eval_capacity_factor = 0.5f;
    sy_model *tm = sy_model_new(&tc, B, T, NULL);
    assert_non_null(tm);
    sy_model_init_weights(tm, 21);
    sy_pass ps = {.B = B, .T = T, .groups = 1, .training = 0};
    sy_losses tl;
    assert_int_equal(sy_model_forward(tm, &ps, tok, &tl), 0);
    memcpy(teacher, sy_model_logits(tm), (size_t)N * V * sizeof(float));
    const float a = 0.7f, Tt = 2.0f;
    /* the gradient from sy_distill_forward_backward (teacher forward inside) */
    sy_distill d = {.teacher = tm, .dlogits = dextra, .alpha = a, .temperature = Tt};
    sy_losses l;
    double soft;
    sy_model_zero_grad(m);
    assert_int_equal(sy_distill_forward_backward(&d, m, &ps, tok, &l, &soft), 0);
    double want = mixed_loss(m, &ps, tok, teacher, a, Tt, NULL);
    const sy_model_cfg *mc = &c;
    double got = (1 - a) * l.ce + mc->aux_loss_coef * l.aux + mc->z_loss_coef * l.z + a * soft;
    printf("mixed loss: %.9f from the step, %.9f recomputed\n", got, want);
    assert_true(fabs(got - want) < 1e-6);
    sy_model_zero_grad(m);
    assert_int_equal(sy_distill_forward_backward(&d, m, &ps, tok, &l, &soft), 0);
    /* Along the gradient itself: dL/de for e = g / |g| must be |g|. A directional
     * derivative sums over every parameter, so ReLU kinks crossed by a few elements
     * barely move it (element-wise differences of a float32 model would be noise). The
     * lm_head elements are checked one by one too: nothing bends after them. */
    const sy_layout *lay = sy_model_layout(m);
    float *w = sy_model_params(m);
    size_t n = lay->total;
    float *g = malloc(n * sizeof(float)), *w0 = malloc(n * sizeof(float));
    assert_non_null(g);
    assert_non_null(w0);
    memcpy(g, sy_model_grads(m), n * sizeof(float));
    memcpy(w0, w, n * sizeof(float));
    double norm = 0;
    for (size_t i = 0; i < n; i++)
        norm += (double)g[i] * g[i];
    norm = sqrt(norm);
    const double h = 1e-4;
    for (size_t i = 0; i < n; i++)
        w[i] = w0[i] + (float)(h * g[i] / norm);
    double up = mixed_loss(m, &ps, tok, teacher, a, Tt, NULL);
    for (size_t i = 0; i < n; i++)
        w[i] = w0[i] - (float)(h * g[i] / norm);
    double dn = mixed_loss(m, &ps, tok, teacher, a, Tt, NULL);
    memcpy(w, w0, n * sizeof(float));
    double num = (up - dn) / (2 * h);
    printf("mixed backward: |g| %.6f, directional derivative %.6f (rel. error %.2e)\n", norm, num,
           fabs(num - norm) / norm);
    assert_true(fabs(num - norm) < 2e-3 * norm);
    const sy_param *p = &lay->params[sy_layout_find(lay, "lm_head")];
    double worst = 0;
    for (int j = 0; j < 20; j++) {
        size_t at = p->offset + (size_t)(runif() * p->numel);
        const float hh = 1e-2f;
        w[at] = w0[at] + hh;
        double u = mixed_loss(m, &ps, tok, teacher, a, Tt, NULL);
        w[at] = w0[at] - hh;
        double d = mixed_loss(m, &ps, tok, teacher, a, Tt, NULL);
        w[at] = w0[at];
        double err = fabs((u - d) / (2 * hh) - g[at]);
        worst = err > worst ? err : worst;
    }
    printf("lm_head elements: worst |analytic - numeric| %.2e\n", worst);
    assert_true(worst < 5e-5);
    free(g);
    free(w0);
    free(teacher);
    free(dextra);
    sy_model_destroy(&tm);
    sy_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_and_gradient),
        cmocka_unit_test(test_model_mix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
