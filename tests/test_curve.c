/* CURVE keys and the ZAP handler (common/net/curve.c) with real sockets: certificates round
 * trip and a secret readable by others is refused; a server accepts an allowed client
 * (whose key arrives as User-Id) and refuses any other; an unknown key held by the
 * handler is let in once the program allows it; allow-list directories are re-read. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#define SY_TMPDIR_NAME "curve"
#include "tmpdir.h"

#include "curve.h"
#include "log.h"
#include "sanitize.h"

static void test_cert_roundtrip(void **state) {
    (void)state;
    sy_cert a, b;
    assert_int_equal(sy_cert_new(&a), 0);
    assert_int_equal(sy_cert_save(&a, tpath("a")), 0);
    assert_int_not_equal(sy_cert_save(&a, tpath("a")), 0); /* never overwrites */
    struct stat st;
    assert_int_equal(stat(tpath("a.secret"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(sy_cert_load(tpath("a.secret"), &b, 1), 0);
    assert_string_equal(a.pub, b.pub);
    assert_string_equal(a.sec, b.sec);
    assert_int_equal(sy_cert_load(tpath("a.key"), &b, 0), 0);
    assert_string_equal(a.pub, b.pub);
    assert_string_equal(b.sec, "");
    assert_int_not_equal(sy_cert_load(tpath("a.key"), &b, 1), 0); /* no secret in it */
    chmod(tpath("a.secret"), 0644);
    assert_int_not_equal(sy_cert_load(tpath("a.secret"), &b, 1), 0);
    assert_non_null(strstr(sy_lasterr(), "chmod 600"));
    const char *bad = "metadata\ncurve\n    public-key = \"tooshort\"\n";
    write_file(tpath("bad.key"), bad, strlen(bad));
    assert_int_not_equal(sy_cert_load(tpath("bad.key"), &b, 0), 0);
    char k[SY_KEY_LEN + 1];
    assert_int_equal(sy_pubkey_load(a.pub, k), 0);
    assert_string_equal(k, a.pub);
}

/* one REQ/REP exchange from client to server; returns the User-Id the server saw or
 * NULL when nothing arrived within ms */
static const char *exchange(void *srv, void *cli, int ms, char *uid, size_t n) {
    zmq_send(cli, "hi", 2, ZMQ_DONTWAIT);
    zmq_pollitem_t it = {srv, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, srv, 0);
    snprintf(uid, n, "%s", sy_msg_key(&m));
    zmq_msg_close(&m);
    return uid;
}

static void test_zap(void **state) {
    (void)state;
    void *ctx = zmq_ctx_new();
    sy_zap *z = sy_zap_new(ctx);
    assert_non_null(z);
    sy_cert srv, good, bad;
    assert_int_equal(sy_cert_new(&srv) | sy_cert_new(&good) | sy_cert_new(&bad), 0);
    assert_int_equal(mkdir(tpath("allow"), 0700), 0);
    assert_int_equal(sy_cert_save(&good, tpath("allow/good")), 0);
    assert_int_equal(sy_zap_allow_path(z, "control", tpath("allow")), 0);
    void *s = zmq_socket(ctx, ZMQ_PULL);
    assert_int_equal(sy_curve_server(s, &srv, "control"), 0);
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t l = sizeof ep;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &l);
    int zero = 0;
    char uid[64];
    /* an allowed key gets in and is named by User-Id */
    void *c1 = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c1, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(sy_curve_client(c1, &good, srv.pub), 0);
    zmq_connect(c1, ep);
    assert_non_null(exchange(s, c1, 3000, uid, sizeof uid));
    assert_string_equal(uid, good.pub);
    /* another key does not */
    void *c2 = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c2, ZMQ_LINGER, &zero, sizeof zero);
    sy_curve_client(c2, &bad, srv.pub);
    zmq_connect(c2, ep);
    assert_null(exchange(s, c2, 500, uid, sizeof uid));
    uint64_t acc, ref;
    sy_zap_counts(z, "control", &acc, &ref);
    assert_int_equal(acc, 1);
    assert_true(ref >= 1);
    /* a plain (NULL mechanism) client does not either */
    void *c3 = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c3, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(c3, ep);
    assert_null(exchange(s, c3, 300, uid, sizeof uid));
    /* a key dropped into the allow-list directory is picked up on its next attempt */
    zmq_close(c2);
    sleep(1);
    assert_int_equal(sy_cert_save(&bad, tpath("allow/late")), 0);
    c2 = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c2, ZMQ_LINGER, &zero, sizeof zero);
    sy_curve_client(c2, &bad, srv.pub);
    zmq_connect(c2, ep);
    assert_non_null(exchange(s, c2, 3000, uid, sizeof uid));
    assert_string_equal(uid, bad.pub);
    zmq_close(c1);
    zmq_close(c2);
    zmq_close(c3);
    zmq_close(s);

    /* data domain: an unknown key is held, then let in when the program allows it */
    sy_cert peer;
    sy_cert_new(&peer);
    assert_int_equal(sy_zap_set_keys(z, "data", NULL, 0), 0);
    assert_int_equal(sy_zap_set_hold(z, "data", 3000), 0);
    s = zmq_socket(ctx, ZMQ_PULL);
    sy_curve_server(s, &srv, "data");
    zmq_bind(s, "tcp://127.0.0.1:*");
    l = sizeof ep;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &l);
    c1 = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c1, ZMQ_LINGER, &zero, sizeof zero);
    sy_curve_client(c1, &peer, srv.pub);
    zmq_connect(c1, ep);
    assert_null(exchange(s, c1, 300, uid, sizeof uid));
    const char(*keys)[SY_KEY_LEN + 1] = (const char(*)[SY_KEY_LEN + 1]) & peer.pub;
    sy_zap_set_keys(z, "data", keys, 1);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    assert_true(zmq_poll(&it, 1, 3000) > 0); /* the first message, sent while held */
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, s, 0);
    assert_string_equal(sy_msg_key(&m), peer.pub);
    zmq_msg_close(&m);
    zmq_close(c1);
    zmq_close(s);
    sy_zap_destroy(&z);
    assert_null(z);
    zmq_ctx_term(ctx);
}

static void test_sanitize(void **state) {
    (void)state;
    char out[64];
    assert_string_equal(sy_esc(out, sizeof out, "a\nb", 3), "a\\x0ab");
    assert_string_equal(sy_esc(out, sizeof out, "q\"\\", 3), "q\\x22\\x5c");
    char longs[200];
    memset(longs, 'x', sizeof longs);
    sy_esc(out, sizeof out, longs, sizeof longs);
    assert_true(strlen(out) < sizeof out);
    assert_non_null(strstr(out, "..."));
    assert_true(sy_id_valid("vm:123:abc", 10));
    assert_false(sy_id_valid("a b", 3));
    assert_false(sy_id_valid("a\nb", 3));
    assert_false(sy_id_valid("", 0));
    assert_false(sy_id_valid(longs, SY_ID_MAX + 1));
    sy_log_set_level(SY_LOG_ERROR); /* counted, not printed, in this test */
    sy_ratelog r = SY_RATELOG_INIT(60.0, 3);
    for (int i = 0; i < 1000; i++)
        sy_ratelog_warn(&r, "junk %d", i);
    assert_int_equal(r.total, 1000);
    assert_int_equal(r.in_window, 3);
    assert_int_equal(r.suppressed, 997);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cert_roundtrip, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_zap, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_sanitize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
