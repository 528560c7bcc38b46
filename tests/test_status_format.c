/* test_status_format.c: `switchyard status`: the table, JSON and Prometheus renderings of
 * a hand-built StatusReply checked field by field (JSON by a strict RFC 8259 parser and
 * Prometheus by a 0.0.4 grammar checker, both written here so the test needs nothing
 * else), and cmd_status against fake status servers in a thread: a good reply, garbage,
 * silence, another protocol version, an error reply, bad endpoints, --watch. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "commands.h"
#include "log.h"
#include "status_format.h"
#include "switchyard.pb-c.h"

/* ------------------------------------------------------------------------------------
 * A synthetic reply: 3 workers (one dead, one with a hostile host name), 2 switch
 * layers (model layers 1 and 3) x 4 experts, languages en/de/ru, 3 events. */

/* quotes, backslash, newline, Cyrillic, CJK (2 columns each), and long */
#define WEIRD_HOST "ev\"il\\ho\nst-\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82-\xe6\x9d\xb1\xe4\xba\xac-very-long-host-name.example.org"
/* the same, escaped as Prometheus wants it in a label value (written by hand) */
#define WEIRD_HOST_PROM "ev\\\"il\\\\ho\\nst-\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82-\xe6\x9d\xb1\xe4\xba\xac-very-long-host-name.example.org"
/* ... and as JSON (written by hand) */
#define WEIRD_HOST_JSON "\"ev\\\"il\\\\ho\\nst-\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82-\xe6\x9d\xb1\xe4\xba\xac-very-long-host-name.example.org\""

typedef struct {
    Switchyard__StatusReply r;
    Switchyard__WorkerStatus w[3], *wp[3];
    Switchyard__ExpertStatus x[8], *xp[8];
    double ls[8][3];
    char *langs[3];
    Switchyard__EventStatus ev[3], *evp[3];
} fixture;

static const double SHARE[8] = {0.31, 0.22, 0.27, 0.20, 0.25, 0.25, 0.40, 0.10};
static const double DROP[8] = {0.042, 0.0, 0.011, 0.5, 0.0, 0.1, 0.2, 0.0};
static const double LANG[8][3] = {{0.20, 0.39, 0.41}, {0.70, 0.20, 0.10}, {0.10, 0.85, 0.05}, {0, 0, 0},
                                  {0.34, 0.33, 0.33}, {0.05, 0.05, 0.90}, {0.5, 0.25, 0.25}, {0.3, 0.6, 0.1}};

static void build(fixture *f) {
    memset(f, 0, sizeof *f);
    Switchyard__StatusReply *r = &f->r;
    switchyard__status_reply__init(r);
    r->protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
    r->run_id = "run-20241129-a1b2";
    r->state = "training";
    r->epoch = 7;
    r->step = 1200;
    r->total_steps = 5000;
    r->loss = 3.4567;
    r->ce = 3.4;
    r->aux = 0.0123;
    r->z = 0.00045;
    r->val_loss = NAN;
    r->tokens_per_s = 2950.4;
    r->step_time_s = 1.389;
    r->compute_s = 1.103;
    r->alltoall_s = 0.201;
    r->allreduce_s = 0.085;
    r->lr = 3e-4;
    r->grad_norm = 0.823;
    r->straggler_rank = 1;
    r->straggler_wait_s = 0.2156;
    r->rehomes = 3;
    r->last_steps_lost = 0;
    r->last_recovery_s = 1.25;
    r->uptime_s = 3900;
    r->world = 3;
    r->min_workers = 2;
    r->checkpoint_step = 1000;
    r->checkpoint_path = "runs/demo/step-00001000";
    r->checkpoint_age_s = 125;
    r->error = NULL; /* NULL on purpose: formats as "" */

    static const char *ids[3] = {"w-aaa", "w-bbb", "w-ccc"};
    static const char *hosts[3] = {"node-a", WEIRD_HOST, "node-c"};
    static const int rank[3] = {0, 1, -1}, dr[3] = {0, 0, -1}, er[3] = {0, 1, -1};
    static const unsigned eb[3] = {0, 4, 0}, ee[3] = {4, 8, 0};
    static const double gf[3] = {120.5, 98.25, 50}, hb[3] = {0.4, 1.2, 15.0}, st[3] = {1.381, 1.402, 0};
    static const char *states[3] = {"training", "training", "dead"};
    for (int i = 0; i < 3; i++) {
        Switchyard__WorkerStatus *w = &f->w[i];
        switchyard__worker_status__init(w);
        w->id = (char *)ids[i];
        w->host = (char *)hosts[i];
        w->rank = rank[i];
        w->data_rank = dr[i];
        w->expert_rank = er[i];
        w->expert_begin = eb[i];
        w->expert_end = ee[i];
        w->row0 = 0;
        w->nrows = i < 2 ? 8 : 0;
        w->gflops = gf[i];
        w->heartbeat_age_s = hb[i];
        w->step_time_s = st[i];
        w->compute_s = i == 0 ? 0.262 : i == 1 ? 0.4776 : 0;
        w->wait_s = i == 0 ? 1.05 : i == 1 ? 0.85 : 0;
        w->state = (char *)states[i];
        w->endpoint = i == 2 ? NULL : "tcp://10.0.0.1:6000";
        w->cores = 2;
        w->threads = 2;
        f->wp[i] = w;
    }
    /* coordinator order: the dead one first, to check the table sorts by rank */
    f->wp[0] = &f->w[2];
    f->wp[2] = &f->w[0];
    r->n_workers = 3;
    r->workers = f->wp;

    f->langs[0] = "en";
    f->langs[1] = "de";
    f->langs[2] = "ru";
    r->n_languages = 3;
    r->languages = f->langs;
    for (int k = 0; k < 8; k++) {
        Switchyard__ExpertStatus *x = &f->x[k];
        switchyard__expert_status__init(x);
        x->layer = k < 4 ? 1 : 3;
        x->expert = (uint32_t)(k % 4);
        x->share = SHARE[k];
        x->drop_rate = DROP[k];
        memcpy(f->ls[k], LANG[k], sizeof f->ls[k]);
        x->n_lang_share = 3;
        x->lang_share = f->ls[k];
        f->xp[k] = x;
    }
    r->n_experts = 8;
    r->experts = f->xp;

    static const double age[3] = {12.0, 130.0, 3700.0};
    static const char *what[3] = {"rank 2 (w-ccc) died", "checkpoint step 1000 (12.3 MB)", "worker w-aaa joined (node-a)"};
    for (int i = 0; i < 3; i++) {
        switchyard__event_status__init(&f->ev[i]);
        f->ev[i].age_s = age[i];
        f->ev[i].what = (char *)what[i];
        f->evp[i] = &f->ev[i];
    }
    r->n_events = 3;
    r->events = f->evp;
}

typedef int (*render_fn)(FILE *, const Switchyard__StatusReply *);

/* The rendering as a malloc'ed string. */
static char *render(render_fn fn, const Switchyard__StatusReply *r) {
    FILE *m = tmpfile();
    assert_non_null(m);
    assert_int_equal(fn(m, r), 0);
    long n = ftell(m);
    assert_true(n > 0);
    char *buf = malloc((size_t)n + 1);
    rewind(m);
    assert_int_equal(fread(buf, 1, (size_t)n, m), (size_t)n);
    buf[n] = 0;
    fclose(m);
    return buf;
}

/* ------------------------------------------------------------------------------------
 * Table */

/* Terminal columns of a line, computed independently of the code under test: one per
 * code point, two for CJK ideographs and kana, and a control character fails. */
static int columns(const char *s, size_t n) {
    int cols = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80)
            cp = c, len = 1;
        else if ((c & 0xE0) == 0xC0)
            cp = c & 0x1F, len = 2;
        else if ((c & 0xF0) == 0xE0)
            cp = c & 0x0F, len = 3;
        else
            cp = c & 0x07, len = 4;
        for (size_t k = 1; k < len; k++)
            cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3F);
        if (cp < 0x20 || cp == 0x7F)
            fail_msg("control character 0x%02x in a table line", (unsigned)cp);
        cols += (cp >= 0x3000 && cp <= 0x9FFF) ? 2 : 1;
        i += len;
    }
    return cols;
}

/* Every line of t fits `width` columns; returns the number of lines. */
static int check_widths(const char *t, int width) {
    int lines = 0;
    const char *p = t;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        int c = columns(p, (size_t)(nl - p));
        if (c > width)
            fail_msg("line %d is %d columns wide: %.*s", lines + 1, c, (int)(nl - p), p);
        lines++;
        p = nl + 1;
    }
    return lines;
}

/* The line of t containing needle (as a malloc'ed string), or NULL. */
static char *line_with(const char *t, const char *needle) {
    const char *h = strstr(t, needle);
    if (!h)
        return NULL;
    const char *b = h;
    while (b > t && b[-1] != '\n')
        b--;
    const char *e = strchr(h, '\n');
    size_t n = e ? (size_t)(e - b) : strlen(b);
    char *s = malloc(n + 1);
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

/* Splits a line into whitespace-separated words; returns the count. */
static int words(char *s, char **w, int max) {
    int n = 0;
    for (char *tok = strtok(s, " "); tok && n < max; tok = strtok(NULL, " "))
        w[n++] = tok;
    return n;
}

#define assert_has(hay, needle)                                                                                    \
    do {                                                                                                           \
        if (!strstr((hay), (needle)))                                                                              \
            fail_msg("missing \"%s\" in:\n%s", (needle), (hay));                                                   \
    } while (0)

static void test_table_header(void **state) {
    fixture f;
    build(&f);
    char *t = render(sy_status_table, &f.r);
    check_widths(t, 100);
    assert_has(t, "run run-20241129-a1b2  state training  epoch 7  uptime 1h05m\n");
    assert_has(t, "step 1200/5000 (24.0%)  loss 3.4567 (ce 3.4000, aux 0.0123, z 0.00045)  val loss -\n");
    assert_has(t, "tokens/s 2950  step 1389 ms (compute 1103, all-to-all 201, all-reduce 85 ms)\n");
    assert_has(t, "workers 3 in mesh / min 2  (1 dead, 2 training)  lr 0.0003  grad norm 0.823\n");
    assert_has(t, "checkpoint step 1000, 2m05s ago: runs/demo/step-00001000\n");
    assert_has(t, "replicas off  failures: 3 re-homed, 0 rolled back\n"
                  "last failure: 0 steps lost beyond the step in flight, next step 1.25 s after it\n");
    assert_null(strstr(t, "error"));
    free(t);
    f.r.replica_every = 1;
    f.r.replica_bytes = 16800000;
    t = render(sy_status_table, &f.r);
    assert_has(t, "replicas every 1 step (16.8 MB/step)  failures: 3 re-homed, 0 rolled back\n");
    free(t);
    f.r.replica_every = 0;

    /* a measured validation loss, no checkpoint yet, no total, an error */
    f.r.val_loss = 3.50124;
    f.r.checkpoint_step = -1;
    f.r.total_steps = 0;
    f.r.error = "something odd";
    t = render(sy_status_table, &f.r);
    assert_has(t, "val loss 3.5012\n");
    assert_has(t, "checkpoint none yet\n");
    assert_has(t, "\nstep 1200  loss");
    assert_has(t, "error: something odd\n");
    free(t);
}

static void test_table_workers(void **state) {
    fixture f;
    build(&f);
    char *t = render(sy_status_table, &f.r);
    /* header, then rank 0, rank 1, then the worker outside the mesh */
    const char *h = strstr(t, "rank host");
    assert_non_null(h);
    const char *a = strstr(t, "node-a"), *b = strstr(t, "ev\"il"), *c = strstr(t, "node-c");
    assert_true(h < a && a < b && b < c);

    char *w[16];
    char *l = line_with(t, "node-a");
    assert_int_equal(words(l, w, 16), 9);
    const char *want_a[9] = {"0", "node-a", "0/0", "0-3", "0-7", "120.5", "0.4s", "262/1050", "training"};
    for (int i = 0; i < 9; i++)
        assert_string_equal(w[i], want_a[i]);
    free(l);

    l = line_with(t, "node-c");
    assert_int_equal(words(l, w, 16), 9);
    const char *want_c[9] = {"-", "node-c", "-", "-", "-", "50.0", "15s", "-", "dead"};
    for (int i = 0; i < 9; i++)
        assert_string_equal(w[i], want_c[i]);
    free(l);

    /* the hostile host: newline shown as '?', cut with "..." to its 26 columns (CJK
     * counts 2), the rest of the row in place */
    l = line_with(t, "ev\"il");
    assert_non_null(strstr(l, "ev\"il\\ho?st-\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82-\xe6\x9d\xb1\xe4\xba\xac..."));
    assert_null(strstr(l, "example.org"));
    char *tail = strstr(l, "...") + 3;
    assert_int_equal(words(tail, w, 16), 7);
    const char *want_b[7] = {"0/1", "4-7", "0-7", "98.2", "1.2s", "478/850", "training"};
    for (int i = 0; i < 7; i++)
        assert_string_equal(w[i], want_b[i]);
    /* the straggler is named: who the others waited for, and how long */
    assert_has(t, "straggler: rank 1 (");
    assert_has(t, "): computes 478 ms, the others wait 216 ms for it\n");
    /* columns line up: "0/1" starts where the header's "d/p" does */
    char *hl = line_with(t, "rank host");
    char *bl = line_with(t, "ev\"il");
    int hcol = columns(hl, (size_t)(strstr(hl, "d/p") - hl));
    int bcol = columns(bl, (size_t)(strstr(bl, "0/1") - bl));
    assert_int_equal(hcol, bcol);
    free(hl);
    free(bl);
    free(l);
    free(t);
}

static void test_table_experts_and_events(void **state) {
    fixture f;
    build(&f);
    char *t = render(sy_status_table, &f.r);
    /* dropped share of layer 1: .31*.042 + .27*.011 + .2*.5 = 11.6% */
    assert_has(t, "\nlayer 1: 4 experts, 11.6% of routed tokens dropped\n");
    /* layer 3: .25*.1 + .4*.2 = 10.5% */
    assert_has(t, "\nlayer 3: 4 experts, 10.5% of routed tokens dropped\n");
    const char *l1 = strstr(t, "layer 1:"), *l3 = strstr(t, "layer 3:");
    char *w[16];
    /* layer 1 rows: expert, share, drop, top language + its share, load bar */
    static const char *rows1[4][5] = {{"0", "31.0%", "4.2%", "ru", "41%"},
                                      {"1", "22.0%", "0.0%", "en", "70%"},
                                      {"2", "27.0%", "1.1%", "de", "85%"},
                                      {"3", "20.0%", "50.0%", "-", NULL}};
    static const int bar1[4] = {30, 21, 26, 19}; /* round(30 * share / max share) */
    const char *p = strchr(strchr(l1, '\n') + 1, '\n') + 1; /* past the heading and column names */
    for (int e = 0; e < 4; e++) {
        const char *nl = strchr(p, '\n');
        char *l = strndup(p, (size_t)(nl - p));
        int n = words(l, w, 16);
        assert_int_equal(n, rows1[e][4] ? 6 : 5);
        for (int k = 0; k < n - 1; k++)
            assert_string_equal(w[k], rows1[e][k]);
        assert_int_equal((int)strlen(w[n - 1]), bar1[e]);
        assert_int_equal((int)strspn(w[n - 1], "#"), bar1[e]);
        free(l);
        p = nl + 1;
    }
    char *l = line_with(l3, "90%");
    assert_int_equal(words(l, w, 16), 6);
    assert_string_equal(w[0], "1");
    assert_string_equal(w[3], "ru");
    free(l);

    assert_has(t, "events (newest first)\n");
    assert_has(t, "    12s ago  rank 2 (w-ccc) died\n");
    assert_has(t, "  2m10s ago  checkpoint step 1000 (12.3 MB)\n");
    assert_has(t, "  1h01m ago  worker w-aaa joined (node-a)\n");
    free(t);
}

/* Hostile sizes: everything long, many experts (packed layout), many events. */
static void test_table_widths(void **state) {
    fixture f;
    build(&f);
    char longs[4][700];
    memset(longs[0], 'R', 300), longs[0][300] = 0;
    memset(longs[1], 'S', 300), longs[1][300] = 0;
    for (int i = 0; i < 690; i += 3)
        memcpy(longs[2] + i, "\xe6\x9d\xb1", 3); /* 230 wide characters */
    longs[2][690] = 0;
    snprintf(longs[3], sizeof longs[3], "/very/%0600d/step-00001000", 0);
    f.r.run_id = longs[0];
    f.r.state = longs[1];
    f.r.epoch = UINT64_MAX;
    f.r.step = INT64_MAX;
    f.r.total_steps = INT64_MAX;
    f.r.tokens_per_s = 1e300;
    f.r.checkpoint_path = longs[3];
    f.w[0].host = longs[2];
    f.w[1].state = longs[0];
    f.w[1].gflops = 1e30;
    f.w[1].heartbeat_age_s = 1e30;
    f.w[1].expert_begin = 4000000000u;
    f.w[1].expert_end = 4000000100u;
    f.w[1].rank = INT32_MAX;
    f.w[1].data_rank = INT32_MIN;
    f.w[1].expert_rank = INT32_MIN;
    /* 20 experts in one layer */
    Switchyard__ExpertStatus xs[20], *xp[20];
    for (int k = 0; k < 20; k++) {
        switchyard__expert_status__init(&xs[k]);
        xs[k].layer = 5;
        xs[k].expert = (uint32_t)k;
        xs[k].share = 0.05;
        xs[k].drop_rate = k == 7 ? NAN : 0.01 * k;
        xs[k].n_lang_share = 3;
        xs[k].lang_share = f.ls[k % 8];
        xp[k] = &xs[k];
    }
    f.r.n_experts = 20;
    f.r.experts = xp;
    char *ln[3] = {longs[1], "de", "ru"};
    f.r.languages = ln;
    f.ls[5][2] = 1.0; /* expert 5 (and 13): top language is the 300-character name */
    Switchyard__EventStatus ev[10], *evp[10];
    for (int i = 0; i < 10; i++) {
        switchyard__event_status__init(&ev[i]);
        ev[i].age_s = i * 100.0;
        ev[i].what = i == 0 ? longs[2] : "x\ty\r\nz\x1b[31mred";
        evp[i] = &ev[i];
    }
    f.r.n_events = 10;
    f.r.events = evp;
    char *t = render(sy_status_table, &f.r);
    check_widths(t, 100);
    /* the path keeps its informative end */
    char *l = line_with(t, "checkpoint step");
    assert_non_null(l);
    size_t n = strlen(l);
    assert_true(n > 13 && !strcmp(l + n - 13, "step-00001000"));
    assert_non_null(strstr(l, "..."));
    free(l);
    /* packed experts: three per line, all 20 there */
    assert_has(t, "layer 5: 20 experts");
    for (int k = 0; k < 20; k++) {
        char needle[32];
        snprintf(needle, sizeof needle, " %d   5.0%%", k);
        assert_has(t, needle);
    }
    l = line_with(t, "   0   5.0%");
    char *w[32];
    /* experts 0, 1, 2: (expert share drop lang pct) each, but expert 1's top language is
     * the 300-character name, cut to one word */
    assert_int_equal(words(l, w, 32), 14);
    assert_string_equal(w[8], "SSSSS...");
    free(l);
    /* no escape character reaches the terminal, events beyond the first six summarised */
    assert_null(strchr(t, '\x1b'));
    assert_has(t, "x?y??z?[31mred");
    assert_has(t, "  ... 4 older\n");
    free(t);
}

/* A reply that went through the wire (strings "" instead of NULL) renders the same. */
static void test_roundtrip_same_output(void **state) {
    fixture f;
    build(&f);
    size_t n = switchyard__status_reply__get_packed_size(&f.r);
    uint8_t *buf = malloc(n);
    switchyard__status_reply__pack(&f.r, buf);
    Switchyard__StatusReply *u = switchyard__status_reply__unpack(NULL, n, buf);
    assert_non_null(u);
    render_fn fns[3] = {sy_status_table, sy_status_json, sy_status_prom};
    for (int i = 0; i < 3; i++) {
        char *a = render(fns[i], &f.r), *b = render(fns[i], u);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    switchyard__status_reply__free_unpacked(u, NULL);
    free(buf);
}

/* ------------------------------------------------------------------------------------
 * JSON: a strict RFC 8259 parser into a small tree */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jv {
    jtype t;
    double num;
    char *str; /* J_STR: decoded UTF-8; J_NUM: the literal text */
    struct jv **kids;
    char **keys; /* J_OBJ */
    size_t n;
} jv;

typedef struct {
    const char *p, *end;
    char err[200];
} jparser;

static void jv_free(jv *v) {
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        jv_free(v->kids[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->kids);
    free(v->keys);
    free(v->str);
    free(v);
}

static int jfail(jparser *j, const char *why) {
    if (!j->err[0])
        snprintf(j->err, sizeof j->err, "%s at offset %td", why, j->p - (j->end - strlen(j->p)));
    return -1;
}

static void jws(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

static void put_utf8(char **o, uint32_t cp) {
    unsigned char *u = (unsigned char *)*o;
    if (cp < 0x80)
        *u++ = (unsigned char)cp;
    else if (cp < 0x800)
        *u++ = (unsigned char)(0xC0 | cp >> 6), *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        *u++ = (unsigned char)(0xE0 | cp >> 12), *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)),
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    else
        *u++ = (unsigned char)(0xF0 | cp >> 18), *u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F)),
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    *o = (char *)u;
}

/* A string token; raw bytes must be well-formed UTF-8 (checked with the decoder from
 * the code under test would prove nothing, so this one is separate and plain). */
static char *jstring(jparser *j) {
    if (*j->p != '"')
        return jfail(j, "expected a string"), NULL;
    j->p++;
    char *out = malloc((size_t)(j->end - j->p) + 1), *o = out;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            free(out);
            return jfail(j, "raw control character in a string"), NULL;
        }
        if (c == '\\') {
            char e = j->p[1];
            const char *simple = "\"\\/bfnrt", *val = "\"\\/\b\f\n\r\t";
            const char *s = e ? strchr(simple, e) : NULL;
            if (s) {
                *o++ = val[s - simple];
                j->p += 2;
                continue;
            }
            uint32_t cp, lo;
            if (e != 'u' || j->end - j->p < 6 || hex4(j->p + 2, &cp)) {
                free(out);
                return jfail(j, "bad escape"), NULL;
            }
            j->p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF) {
                    free(out);
                    return jfail(j, "lone surrogate"), NULL;
                }
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(out);
                return jfail(j, "lone surrogate"), NULL;
            }
            put_utf8(&o, cp);
            continue;
        }
        /* raw UTF-8 */
        int len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!len || j->end - j->p < len) {
            free(out);
            return jfail(j, "invalid UTF-8"), NULL;
        }
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (int k = 1; k < len; k++) {
            unsigned char cc = (unsigned char)j->p[k];
            if ((cc & 0xC0) != 0x80) {
                free(out);
                return jfail(j, "invalid UTF-8"), NULL;
            }
            cp = (cp << 6) | (cc & 0x3F);
        }
        static const uint32_t minv[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < minv[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
            free(out);
            return jfail(j, "invalid UTF-8"), NULL;
        }
        memcpy(o, j->p, (size_t)len);
        o += len;
        j->p += len;
    }
    if (j->p >= j->end) {
        free(out);
        return jfail(j, "unterminated string"), NULL;
    }
    j->p++;
    *o = 0;
    return out;
}

static jv *jvalue(jparser *j, int depth);

static jv *jnew(jtype t) {
    jv *v = calloc(1, sizeof *v);
    v->t = t;
    return v;
}

static void jpush(jv *v, char *key, jv *kid) {
    v->kids = realloc(v->kids, (v->n + 1) * sizeof *v->kids);
    if (key)
        v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys), v->keys[v->n] = key;
    v->kids[v->n++] = kid;
}

static jv *jvalue(jparser *j, int depth) {
    if (depth > 64)
        return jfail(j, "too deep"), NULL;
    jws(j);
    if (j->p >= j->end)
        return jfail(j, "unexpected end"), NULL;
    char c = *j->p;
    if (c == '{' || c == '[') {
        int obj = c == '{';
        jv *v = jnew(obj ? J_OBJ : J_ARR);
        j->p++;
        jws(j);
        if (*j->p == (obj ? '}' : ']')) {
            j->p++;
            return v;
        }
        for (;;) {
            char *key = NULL;
            if (obj) {
                jws(j);
                if (!(key = jstring(j)))
                    return jv_free(v), NULL;
                for (size_t i = 0; i < v->n; i++)
                    if (!strcmp(v->keys[i], key)) {
                        free(key);
                        jv_free(v);
                        return jfail(j, "duplicate key"), NULL;
                    }
                jws(j);
                if (*j->p != ':') {
                    free(key);
                    jv_free(v);
                    return jfail(j, "expected ':'"), NULL;
                }
                j->p++;
            }
            jv *kid = jvalue(j, depth + 1);
            if (!kid) {
                free(key);
                return jv_free(v), NULL;
            }
            jpush(v, key, kid);
            jws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == (obj ? '}' : ']')) {
                j->p++;
                return v;
            }
            jv_free(v);
            return jfail(j, "expected ',' or a closing bracket"), NULL;
        }
    }
    if (c == '"') {
        char *s = jstring(j);
        if (!s)
            return NULL;
        jv *v = jnew(J_STR);
        v->str = s;
        return v;
    }
    static const char *lits[3] = {"null", "true", "false"};
    for (int i = 0; i < 3; i++)
        if (!strncmp(j->p, lits[i], strlen(lits[i]))) {
            j->p += strlen(lits[i]);
            jv *v = jnew(i ? J_BOOL : J_NULL);
            v->num = i == 1;
            return v;
        }
    /* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    const char *s = j->p;
    if (*j->p == '-')
        j->p++;
    if (*j->p == '0')
        j->p++;
    else if (*j->p >= '1' && *j->p <= '9')
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    else
        return jfail(j, "unexpected character"), NULL;
    if (*j->p == '.') {
        j->p++;
        if (!(*j->p >= '0' && *j->p <= '9'))
            return jfail(j, "digit expected after '.'"), NULL;
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (*j->p == 'e' || *j->p == 'E') {
        j->p++;
        if (*j->p == '+' || *j->p == '-')
            j->p++;
        if (!(*j->p >= '0' && *j->p <= '9'))
            return jfail(j, "digit expected in exponent"), NULL;
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    jv *v = jnew(J_NUM);
    v->str = strndup(s, (size_t)(j->p - s));
    v->num = strtod(v->str, NULL);
    return v;
}

/* Parses a whole document; NULL with err set when it is not valid JSON. */
static jv *jparse(const char *text, char *err, size_t en) {
    jparser j = {.p = text, .end = text + strlen(text)};
    jv *v = jvalue(&j, 0);
    if (v) {
        jws(&j);
        if (j.p != j.end) {
            jv_free(v);
            v = NULL;
            jfail(&j, "trailing characters");
        }
    }
    snprintf(err, en, "%s", j.err);
    return v;
}

static jv *jget(const jv *o, const char *key) {
    if (!o || o->t != J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key))
            return o->kids[i];
    return NULL;
}

static jv *jat(const jv *a, size_t i) { return a && a->t == J_ARR && i < a->n ? a->kids[i] : NULL; }

static double jnumber(const jv *o, const char *key) {
    jv *v = jget(o, key);
    if (!v || v->t != J_NUM)
        fail_msg("\"%s\" is not a number", key);
    return v->num;
}

static const char *jtext(const jv *o, const char *key) {
    jv *v = jget(o, key);
    if (!v || v->t != J_STR)
        fail_msg("\"%s\" is not a string", key);
    return v->str;
}

static void test_json_parser_rejects(void **state) {
    /* the validator itself must be able to fail */
    static const char *bad[] = {"{\"a\": 1,}", "{\"a\": NaN}", "{\"a\": \"x\ty\"}", "{\"a\": \"\\x41\"}",
                                "{\"a\": 01}", "{\"a\": 1} x", "{\"a\": \"\xff\"}", "{\"a\": \"\xc0\xaf\"}",
                                "{\"a\": \"\\ud800\"}", "{\"a\": 1, \"a\": 2}", "[1 2]", "{\"a\": .5}",
                                "{\"a\": \"\xed\xa0\x80\"}", "{'a': 1}", "{\"a\": -}", "{\"a\": 1e}"};
    char err[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jv *v = jparse(bad[i], err, sizeof err);
        if (v)
            fail_msg("accepted invalid JSON: %s", bad[i]);
    }
    jv *v = jparse("{\"a\": [1, -2.5e3, \"\\u00e9\\ud83d\\ude00\", null, true]}", err, sizeof err);
    assert_non_null(v);
    assert_string_equal(jat(jget(v, "a"), 2)->str, "\xc3\xa9\xf0\x9f\x98\x80");
    assert_true(jat(jget(v, "a"), 1)->num == -2500);
    jv_free(v);
}

static void test_json(void **state) {
    fixture f;
    build(&f);
    f.r.epoch = UINT64_MAX;
    char *t = render(sy_status_json, &f.r);
    char err[200];
    jv *v = jparse(t, err, sizeof err);
    if (!v)
        fail_msg("invalid JSON (%s):\n%s", err, t);
    assert_int_equal(v->t, J_OBJ);
    /* every field of StatusReply, in .proto order */
    static const char *keys[] = {"protocol_version", "run_id", "state", "epoch", "step", "total_steps", "loss", "ce",
                                 "aux", "z", "val_loss", "tokens_per_s", "step_time_s", "compute_s", "alltoall_s",
                                 "allreduce_s", "workers", "experts", "languages", "checkpoint_step",
                                 "checkpoint_path", "checkpoint_age_s", "events", "uptime_s", "world", "min_workers",
                                 "error", "lr", "grad_norm", "straggler_rank", "straggler_wait_s", "rehomes",
                                 "rollbacks", "last_steps_lost", "last_recovery_s", "last_detect_s", "replica_every",
                                 "replica_bytes"};
    assert_int_equal(v->n, sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < v->n; i++)
        assert_string_equal(v->keys[i], keys[i]);
    assert_true(jnumber(v, "protocol_version") == 1);
    assert_string_equal(jtext(v, "run_id"), "run-20241129-a1b2");
    assert_string_equal(jtext(v, "state"), "training");
    assert_string_equal(jget(v, "epoch")->str, "18446744073709551615"); /* exact, not rounded */
    assert_true(jnumber(v, "step") == 1200);
    assert_true(jnumber(v, "total_steps") == 5000);
    assert_true(jnumber(v, "loss") == 3.4567);
    assert_true(jnumber(v, "ce") == 3.4);
    assert_true(jnumber(v, "aux") == 0.0123);
    assert_true(jnumber(v, "z") == 0.00045);
    assert_int_equal(jget(v, "val_loss")->t, J_NULL);
    assert_true(jnumber(v, "tokens_per_s") == 2950.4);
    assert_true(jnumber(v, "step_time_s") == 1.389);
    assert_true(jnumber(v, "compute_s") == 1.103);
    assert_true(jnumber(v, "alltoall_s") == 0.201);
    assert_true(jnumber(v, "allreduce_s") == 0.085);
    assert_true(jnumber(v, "checkpoint_step") == 1000);
    assert_string_equal(jtext(v, "checkpoint_path"), "runs/demo/step-00001000");
    assert_true(jnumber(v, "checkpoint_age_s") == 125);
    assert_true(jnumber(v, "uptime_s") == 3900);
    assert_true(jnumber(v, "world") == 3);
    assert_true(jnumber(v, "min_workers") == 2);
    assert_string_equal(jtext(v, "error"), "");
    assert_true(jnumber(v, "lr") == 3e-4);
    assert_true(jnumber(v, "grad_norm") == 0.823);
    assert_true(jnumber(v, "rehomes") == 3);
    assert_true(jnumber(v, "last_steps_lost") == 0);
    assert_true(jnumber(v, "last_recovery_s") == 1.25);
    /* short numbers where they are short */
    assert_has(t, "\"loss\": 3.4567,");
    assert_has(t, "\"lr\": 0.0003,");

    jv *ws = jget(v, "workers");
    assert_int_equal(ws->t, J_ARR);
    assert_int_equal(ws->n, 3);
    static const char *wkeys[] = {"id", "host", "rank", "data_rank", "expert_rank", "expert_begin", "expert_end",
                                  "row0", "nrows", "gflops", "heartbeat_age_s", "step_time_s", "state", "endpoint",
                                  "cores", "threads", "compute_s", "wait_s"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ws->kids[i]->n, 18);
        for (size_t k = 0; k < 18; k++)
            assert_string_equal(ws->kids[i]->keys[k], wkeys[k]);
    }
    /* reply order is kept (the dead worker first) */
    assert_string_equal(jtext(ws->kids[0], "id"), "w-ccc");
    assert_true(jnumber(ws->kids[0], "rank") == -1);
    assert_true(jnumber(ws->kids[0], "data_rank") == -1);
    assert_string_equal(jtext(ws->kids[0], "state"), "dead");
    assert_string_equal(jtext(ws->kids[0], "endpoint"), "");
    assert_string_equal(jtext(ws->kids[1], "host"), WEIRD_HOST); /* byte for byte */
    assert_has(t, WEIRD_HOST_JSON);
    assert_true(jnumber(ws->kids[1], "gflops") == 98.25);
    assert_true(jnumber(ws->kids[1], "expert_begin") == 4);
    assert_true(jnumber(ws->kids[1], "expert_end") == 8);
    assert_true(jnumber(ws->kids[1], "heartbeat_age_s") == 1.2);
    assert_true(jnumber(ws->kids[2], "nrows") == 8);
    assert_true(jnumber(ws->kids[2], "step_time_s") == 1.381);
    assert_true(jnumber(ws->kids[2], "cores") == 2);

    jv *xs = jget(v, "experts");
    assert_int_equal(xs->n, 8);
    for (size_t k = 0; k < 8; k++) {
        jv *x = xs->kids[k];
        assert_int_equal(x->n, 5);
        assert_true(jnumber(x, "layer") == (k < 4 ? 1 : 3));
        assert_true(jnumber(x, "expert") == k % 4);
        assert_true(jnumber(x, "share") == SHARE[k]);
        assert_true(jnumber(x, "drop_rate") == DROP[k]);
        jv *ls = jget(x, "lang_share");
        assert_int_equal(ls->n, 3);
        for (size_t g = 0; g < 3; g++)
            assert_true(ls->kids[g]->num == LANG[k][g]);
    }
    jv *lg = jget(v, "languages");
    assert_int_equal(lg->n, 3);
    assert_string_equal(lg->kids[0]->str, "en");
    assert_string_equal(lg->kids[2]->str, "ru");
    jv *ev = jget(v, "events");
    assert_int_equal(ev->n, 3);
    assert_true(jnumber(ev->kids[1], "age_s") == 130);
    assert_string_equal(jtext(ev->kids[0], "what"), "rank 2 (w-ccc) died");
    jv_free(v);
    free(t);

    /* python's parser agrees, when there is one */
    if (system("python3 -c 'import json' >/dev/null 2>&1") == 0) {
        char path[] = "/tmp/sy_status_json_XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        t = render(sy_status_json, &f.r);
        assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd,
                 "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                 "assert d[\"workers\"][1][\"gflops\"]==98.25 and d[\"val_loss\"] is None' %s",
                 path);
        assert_int_equal(system(cmd), 0);
        unlink(path);
        free(t);
    }
}

/* Strings that are not text: every control character, invalid UTF-8, a NaN inside an
 * array, infinities. */
static void test_json_hostile_strings(void **state) {
    fixture f;
    build(&f);
    char ctl[40];
    for (int i = 1; i < 32; i++)
        ctl[i - 1] = (char)i;
    ctl[31] = 0x7f;
    ctl[32] = 0;
    f.r.run_id = ctl;
    f.r.state = "bad \xff utf8 \xc0\xaf overlong \xed\xa0\x80 surrogate \xe6\x9d end-cut";
    f.r.error = "\"quoted\" \\ slash /";
    f.ls[0][1] = NAN;
    f.r.loss = INFINITY;
    f.r.ce = -INFINITY;
    char *t = render(sy_status_json, &f.r);
    char err[200];
    jv *v = jparse(t, err, sizeof err);
    if (!v)
        fail_msg("invalid JSON (%s):\n%s", err, t);
    assert_string_equal(jtext(v, "run_id"), ctl);
    assert_has(t, "\"\\u0001\\u0002");
    assert_has(t, "\\b\\t\\n\\u000b\\f\\r");
    /* each bad byte becomes U+FFFD; the valid text around it stays */
    assert_string_equal(jtext(v, "state"), "bad \xef\xbf\xbd utf8 \xef\xbf\xbd\xef\xbf\xbd overlong "
                                           "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd surrogate "
                                           "\xef\xbf\xbd\xef\xbf\xbd end-cut");
    assert_string_equal(jtext(v, "error"), "\"quoted\" \\ slash /");
    assert_int_equal(jget(v, "loss")->t, J_NULL);
    assert_int_equal(jget(v, "ce")->t, J_NULL);
    assert_int_equal(jat(jget(jat(jget(v, "experts"), 0), "lang_share"), 1)->t, J_NULL);
    jv_free(v);
    free(t);

    /* and an empty reply is still a complete object */
    Switchyard__StatusReply e = SWITCHYARD__STATUS_REPLY__INIT;
    t = render(sy_status_json, &e);
    v = jparse(t, err, sizeof err);
    if (!v)
        fail_msg("invalid JSON (%s):\n%s", err, t);
    assert_int_equal(v->n, 38);
    assert_int_equal(jget(v, "workers")->n, 0);
    jv_free(v);
    free(t);
}

/* ------------------------------------------------------------------------------------
 * Prometheus text format 0.0.4: a grammar checker that also collects the samples */

typedef struct {
    char name[128];
    int nl;
    char lk[8][32];
    char lv[8][512];
    double v;
} psample;

typedef struct {
    psample s[512];
    int n;
    char fam[128][128];
    char type[128][16];
    int help[128], has_samples[128], closed[128];
    int nfam;
} pdoc;

static int name_ok(const char *s, size_t n, int metric) {
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int fam_index(pdoc *d, const char *name, int create) {
    for (int i = 0; i < d->nfam; i++)
        if (!strcmp(d->fam[i], name))
            return i;
    if (!create || d->nfam == 128)
        return -1;
    if (strlen(name) >= sizeof d->fam[0])
        return -1;
    memcpy(d->fam[d->nfam], name, strlen(name) + 1);
    d->type[d->nfam][0] = 0;
    d->help[d->nfam] = d->has_samples[d->nfam] = d->closed[d->nfam] = 0;
    return d->nfam++;
}

static int value_ok(const char *s, double *v) {
    if (!strcmp(s, "NaN")) {
        *v = NAN;
        return 1;
    }
    if (!strcmp(s, "+Inf") || !strcmp(s, "-Inf")) {
        *v = s[0] == '+' ? INFINITY : -INFINITY;
        return 1;
    }
    /* a decimal float: no hex, no "inf"/"nan" spellings */
    if (strpbrk(s, "xXiInN") || !*s)
        return 0;
    char *end;
    *v = strtod(s, &end);
    return *end == 0;
}

/* Checks text line by line; returns 0, or -1 with the reason in err. */
static int prom_check(const char *text, pdoc *d, char *err, size_t en) {
    memset(d, 0, sizeof *d);
    int cur = -1, lineno = 0;
    const char *p = text;
    if (!*p)
        return 0;
    if (text[strlen(text) - 1] != '\n')
        return snprintf(err, en, "no final newline"), -1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        char line[2048];
        lineno++;
        if (n >= sizeof line)
            return snprintf(err, en, "line %d too long", lineno), -1;
        memcpy(line, p, n);
        line[n] = 0;
        p = nl + 1;
        if (n == 0)
            return snprintf(err, en, "line %d empty", lineno), -1;
        if (line[0] == '#') {
            int help = !strncmp(line, "# HELP ", 7), type = !strncmp(line, "# TYPE ", 7);
            if (!help && !type)
                continue; /* a plain comment */
            char *name = line + 7, *sp = strchr(name, ' ');
            if (!sp)
                return snprintf(err, en, "line %d: %s without text", lineno, help ? "HELP" : "TYPE"), -1;
            *sp = 0;
            if (!name_ok(name, strlen(name), 1))
                return snprintf(err, en, "line %d: bad metric name '%.100s'", lineno, name), -1;
            int f = fam_index(d, name, 1);
            if (f < 0)
                return snprintf(err, en, "line %d: too many families or name too long", lineno), -1;
            if (d->has_samples[f])
                return snprintf(err, en, "line %d: %s for %.100s after its samples", lineno,
                                help ? "HELP" : "TYPE", name),
                       -1;
            if (help) {
                if (d->help[f]++)
                    return snprintf(err, en, "line %d: second HELP for %.100s", lineno, name), -1;
                for (char *q = sp + 1; *q; q++)
                    if (*q == '\\' && q[1] != '\\' && q[1] != 'n')
                        return snprintf(err, en, "line %d: bad escape in HELP", lineno), -1;
                    else if (*q == '\\')
                        q++;
            } else {
                const char *t = sp + 1;
                if (d->type[f][0])
                    return snprintf(err, en, "line %d: second TYPE for %.100s", lineno, name), -1;
                if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "untyped") && strcmp(t, "summary") &&
                    strcmp(t, "histogram"))
                    return snprintf(err, en, "line %d: unknown type '%s'", lineno, t), -1;
                snprintf(d->type[f], sizeof d->type[f], "%s", t);
            }
            continue;
        }
        /* a sample: name[{labels}] value */
        if (d->n == 512)
            return snprintf(err, en, "too many samples"), -1;
        psample *s = &d->s[d->n];
        memset(s, 0, sizeof *s);
        size_t k = 0;
        while (line[k] && line[k] != '{' && line[k] != ' ')
            k++;
        if (!name_ok(line, k, 1) || k >= sizeof s->name)
            return snprintf(err, en, "line %d: bad metric name", lineno), -1;
        memcpy(s->name, line, k);
        char *q = line + k;
        if (*q == '{') {
            q++;
            while (*q != '}') {
                char *eq = strchr(q, '=');
                if (!eq || !name_ok(q, (size_t)(eq - q), 0) || (eq - q >= 2 && q[0] == '_' && q[1] == '_') ||
                    eq - q >= 32 || s->nl == 8)
                    return snprintf(err, en, "line %d: bad label name", lineno), -1;
                memcpy(s->lk[s->nl], q, (size_t)(eq - q));
                for (int i = 0; i < s->nl; i++)
                    if (!strcmp(s->lk[i], s->lk[s->nl]))
                        return snprintf(err, en, "line %d: label %s twice", lineno, s->lk[i]), -1;
                q = eq + 1;
                if (*q != '"')
                    return snprintf(err, en, "line %d: label value not quoted", lineno), -1;
                q++;
                char *o = s->lv[s->nl];
                while (*q != '"') {
                    if (!*q)
                        return snprintf(err, en, "line %d: unterminated label value", lineno), -1;
                    if (*q == '\\') {
                        if (q[1] == '\\' || q[1] == '"')
                            *o++ = q[1];
                        else if (q[1] == 'n')
                            *o++ = '\n';
                        else
                            return snprintf(err, en, "line %d: bad escape \\%c", lineno, q[1]), -1;
                        q += 2;
                    } else {
                        *o++ = *q++;
                    }
                    if (o - s->lv[s->nl] >= 500)
                        return snprintf(err, en, "line %d: label value too long", lineno), -1;
                }
                q++;
                s->nl++;
                if (*q == ',')
                    q++;
                else if (*q != '}')
                    return snprintf(err, en, "line %d: expected ',' or '}'", lineno), -1;
            }
            q++;
        }
        if (*q != ' ')
            return snprintf(err, en, "line %d: expected a space before the value", lineno), -1;
        q++;
        char *sp = strchr(q, ' ');
        if (sp) { /* an optional integer timestamp */
            *sp = 0;
            char *end;
            strtoll(sp + 1, &end, 10);
            if (*end || end == sp + 1)
                return snprintf(err, en, "line %d: bad timestamp", lineno), -1;
        }
        if (!value_ok(q, &s->v))
            return snprintf(err, en, "line %d: bad value '%s'", lineno, q), -1;
        int f = fam_index(d, s->name, 0);
        if (f < 0 || !d->type[f][0])
            return snprintf(err, en, "line %d: sample of %s before its TYPE", lineno, s->name), -1;
        if (f != cur) {
            if (d->closed[f])
                return snprintf(err, en, "line %d: family %s split", lineno, s->name), -1;
            if (cur >= 0)
                d->closed[cur] = 1;
            cur = f;
        }
        d->has_samples[f] = 1;
        /* the same series twice */
        for (int i = 0; i < d->n; i++) {
            const psample *o = &d->s[i];
            if (strcmp(o->name, s->name) || o->nl != s->nl)
                continue;
            int same = 1;
            for (int a = 0; a < s->nl && same; a++) {
                int found = 0;
                for (int b = 0; b < o->nl; b++)
                    found |= !strcmp(s->lk[a], o->lk[b]) && !strcmp(s->lv[a], o->lv[b]);
                same = found;
            }
            if (same)
                return snprintf(err, en, "line %d: series of %s repeated", lineno, s->name), -1;
        }
        d->n++;
    }
    return 0;
}

/* The value of the series name{labels...} (NULL-terminated name/value list, all labels
 * of the series given); fails the test when there is no such series. */
static double pget(const pdoc *d, const char *name, ...) {
    const char *k[8], *v[8];
    int n = 0;
    va_list ap;
    va_start(ap, name);
    while (n < 8 && (k[n] = va_arg(ap, const char *)) != NULL) {
        v[n] = va_arg(ap, const char *);
        n++;
    }
    va_end(ap);
    for (int i = 0; i < d->n; i++) {
        const psample *s = &d->s[i];
        if (strcmp(s->name, name) || s->nl != n)
            continue;
        int ok = 1;
        for (int a = 0; a < n && ok; a++) {
            int found = 0;
            for (int b = 0; b < s->nl; b++)
                found |= !strcmp(s->lk[b], k[a]) && !strcmp(s->lv[b], v[a]);
            ok = found;
        }
        if (ok)
            return s->v;
    }
    fail_msg("no series %s with those %d labels", name, n);
    return NAN;
}

static const char *ptype(const pdoc *d, const char *name) {
    for (int i = 0; i < d->nfam; i++)
        if (!strcmp(d->fam[i], name))
            return d->type[i];
    return "";
}

static void test_prom_checker_rejects(void **state) {
    static const char *bad[] = {
        "a 1\n",                                                          /* no TYPE */
        "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n", /* split */
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",                                /* bad escape */
        "# TYPE 1a gauge\n1a 1\n",                                        /* bad name */
        "# TYPE a gauge\na one\n",                                        /* bad value */
        "# TYPE a gauge\na nan\n",                                        /* NaN spelt wrong */
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                          /* label twice */
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",                    /* series repeated */
        "# TYPE a gauge\na 1\n# HELP a late\n",                           /* HELP after samples */
        "# TYPE a gauge\na{x=1} 1\n",                                     /* unquoted */
        "# TYPE a gauge\na{__x=\"1\"} 1\n",                               /* reserved label */
        "# TYPE a gauge\n# TYPE a counter\na 1\n",                        /* TYPE twice */
        "# TYPE a gauge\na 1",                                            /* no final newline */
        "# TYPE a meter\na 1\n",                                          /* unknown type */
        "# TYPE a gauge\na{x=\"a\"b\"} 1\n",                               /* unescaped quote */
    };
    pdoc *d = malloc(sizeof *d);
    char err[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (prom_check(bad[i], d, err, sizeof err) == 0)
            fail_msg("accepted invalid exposition:\n%s", bad[i]);
    assert_int_equal(prom_check("# HELP a x \\\\ y\n# TYPE a gauge\na{x=\"q\\\"\\n\\\\\"} -Inf\n", d, err, sizeof err),
                     0);
    assert_string_equal(d->s[0].lv[0], "q\"\n\\");
    free(d);
}

static void test_prom(void **state) {
    fixture f;
    build(&f);
    char *t = render(sy_status_prom, &f.r);
    pdoc *d = malloc(sizeof *d);
    char err[200];
    if (prom_check(t, d, err, sizeof err))
        fail_msg("%s in:\n%s", err, t);
    /* every family documented and typed, all names switchyard_* */
    for (int i = 0; i < d->nfam; i++) {
        if (!d->help[i] || !d->type[i][0] || !d->has_samples[i])
            fail_msg("family %s: help %d type '%s' samples %d", d->fam[i], d->help[i], d->type[i], d->has_samples[i]);
        assert_int_equal(strncmp(d->fam[i], "switchyard_", 11), 0);
    }
    assert_string_equal(ptype(d, "switchyard_uptime_seconds_total"), "counter");
    assert_string_equal(ptype(d, "switchyard_step"), "gauge");
    assert_string_equal(ptype(d, "switchyard_worker_gflops"), "gauge");

    assert_true(pget(d, "switchyard_info", "run_id", "run-20241129-a1b2", "state", "training", "protocol_version", "1",
                     NULL) == 1);
    assert_true(pget(d, "switchyard_step", NULL) == 1200);
    assert_true(pget(d, "switchyard_epoch", NULL) == 7);
    assert_true(pget(d, "switchyard_total_steps", NULL) == 5000);
    assert_true(pget(d, "switchyard_progress_ratio", NULL) == 0.24);
    assert_true(pget(d, "switchyard_loss_nats", "term", "total", NULL) == 3.4567);
    assert_true(pget(d, "switchyard_loss_nats", "term", "ce", NULL) == 3.4);
    assert_true(pget(d, "switchyard_loss_nats", "term", "aux", NULL) == 0.0123);
    assert_true(pget(d, "switchyard_loss_nats", "term", "z", NULL) == 0.00045);
    assert_true(isnan(pget(d, "switchyard_val_loss_nats", NULL)));
    assert_has(t, "\nswitchyard_val_loss_nats NaN\n");
    assert_true(pget(d, "switchyard_tokens_per_second", NULL) == 2950.4);
    assert_true(pget(d, "switchyard_step_time_seconds", NULL) == 1.389);
    assert_true(pget(d, "switchyard_step_seconds", "phase", "compute", NULL) == 1.103);
    assert_true(pget(d, "switchyard_step_seconds", "phase", "alltoall", NULL) == 0.201);
    assert_true(pget(d, "switchyard_step_seconds", "phase", "allreduce", NULL) == 0.085);
    assert_true(pget(d, "switchyard_learning_rate", NULL) == 3e-4);
    assert_true(pget(d, "switchyard_grad_norm", NULL) == 0.823);
    assert_true(pget(d, "switchyard_uptime_seconds_total", NULL) == 3900);
    assert_true(pget(d, "switchyard_world_size", NULL) == 3);
    assert_true(pget(d, "switchyard_min_workers", NULL) == 2);
    assert_true(pget(d, "switchyard_workers", "state", "training", NULL) == 2);
    assert_true(pget(d, "switchyard_workers", "state", "dead", NULL) == 1);
    assert_true(pget(d, "switchyard_workers", "state", "waiting", NULL) == 0);
    assert_true(pget(d, "switchyard_workers", "state", "joining", NULL) == 0);

    assert_true(pget(d, "switchyard_worker_gflops", "worker", "w-aaa", "rank", "0", "host", "node-a", NULL) == 120.5);
    assert_true(pget(d, "switchyard_worker_gflops", "worker", "w-bbb", "rank", "1", "host", WEIRD_HOST, NULL) == 98.25);
    assert_has(t, "switchyard_worker_gflops{worker=\"w-bbb\",rank=\"1\",host=\"" WEIRD_HOST_PROM "\"} 98.25\n");
    assert_true(pget(d, "switchyard_worker_heartbeat_age_seconds", "worker", "w-ccc", "rank", "-1", "host", "node-c",
                     NULL) == 15);
    assert_true(pget(d, "switchyard_worker_step_seconds", "worker", "w-aaa", "rank", "0", "host", "node-a", NULL) ==
                1.381);
    assert_true(pget(d, "switchyard_worker_experts", "worker", "w-bbb", "rank", "1", "host", WEIRD_HOST, NULL) == 4);
    assert_true(pget(d, "switchyard_worker_experts", "worker", "w-ccc", "rank", "-1", "host", "node-c", NULL) == 0);
    assert_true(pget(d, "switchyard_worker_rows", "worker", "w-aaa", "rank", "0", "host", "node-a", NULL) == 8);
    assert_true(pget(d, "switchyard_worker_threads", "worker", "w-aaa", "rank", "0", "host", "node-a", NULL) == 2);
    assert_true(pget(d, "switchyard_worker_info", "worker", "w-ccc", "rank", "-1", "host", "node-c", "data_rank", "-1",
                     "expert_rank", "-1", "state", "dead", "endpoint", "", NULL) == 1);

    char ly[8], ex[8];
    static const char *lang[3] = {"en", "de", "ru"};
    for (int k = 0; k < 8; k++) {
        snprintf(ly, sizeof ly, "%d", k < 4 ? 1 : 3);
        snprintf(ex, sizeof ex, "%d", k % 4);
        assert_true(pget(d, "switchyard_expert_token_share", "layer", ly, "expert", ex, NULL) == SHARE[k]);
        assert_true(pget(d, "switchyard_expert_drop_ratio", "layer", ly, "expert", ex, NULL) == DROP[k]);
        for (int g = 0; g < 3; g++)
            assert_true(pget(d, "switchyard_expert_language_share", "layer", ly, "expert", ex, "language", lang[g],
                             NULL) == LANG[k][g]);
    }
    assert_true(pget(d, "switchyard_checkpoint_step", NULL) == 1000);
    assert_true(pget(d, "switchyard_checkpoint_age_seconds", NULL) == 125);
    assert_true(pget(d, "switchyard_checkpoint_info", "path", "runs/demo/step-00001000", NULL) == 1);
    assert_true(pget(d, "switchyard_events", NULL) == 3);
    free(t);

    /* no checkpoint, hostile strings everywhere, infinities: still parses */
    f.r.checkpoint_step = -1;
    f.r.run_id = "a\"b\\c\nd\re \xff";
    f.r.state = "\\n";
    f.w[0].id = "\"";
    f.r.loss = INFINITY;
    f.r.ce = -INFINITY;
    t = render(sy_status_prom, &f.r);
    if (prom_check(t, d, err, sizeof err))
        fail_msg("%s in:\n%s", err, t);
    assert_true(pget(d, "switchyard_checkpoint_step", NULL) == -1);
    assert_true(isnan(pget(d, "switchyard_checkpoint_age_seconds", NULL)));
    assert_null(strstr(t, "switchyard_checkpoint_info"));
    assert_true(pget(d, "switchyard_info", "run_id", "a\"b\\c\nd\re \xef\xbf\xbd", "state", "\\n", "protocol_version",
                     "1", NULL) == 1);
    assert_true(pget(d, "switchyard_loss_nats", "term", "total", NULL) == INFINITY);
    assert_has(t, "switchyard_loss_nats{term=\"ce\"} -Inf\n");
    free(t);

    /* an empty reply (a coordinator that just started) */
    Switchyard__StatusReply e = SWITCHYARD__STATUS_REPLY__INIT;
    e.checkpoint_step = -1;
    t = render(sy_status_prom, &e);
    if (prom_check(t, d, err, sizeof err))
        fail_msg("%s in:\n%s", err, t);
    assert_null(strstr(t, "switchyard_worker_gflops"));
    assert_true(pget(d, "switchyard_workers", "state", "training", NULL) == 0);
    free(t);
    free(d);
}

/* ------------------------------------------------------------------------------------
 * cmd_status against fake status servers */

typedef enum { SRV_OK, SRV_GARBAGE, SRV_SILENT, SRV_BADVER, SRV_ERROR, SRV_MULTI, SRV_SKIP_FIRST } srv_mode;

typedef struct {
    srv_mode mode;
    void *ctx, *sock;
    char ep[128];
    pthread_t th;
    volatile int stop;
    int requests, bad_requests;
} server;

static const uint8_t GARBAGE[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 'g', 'a', 'r', 'b', 'a', 'g', 'e'};

static void *serve(void *arg) {
    server *s = arg;
    fixture f;
    build(&f);
    while (!s->stop) {
        zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        /* [routing id][empty delimiter from REQ][request] */
        zmq_msg_t fr[4];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s->sock, 0);
            more = zmq_msg_more(&m);
            if (n < 4)
                fr[n++] = m;
            else
                zmq_msg_close(&m);
        }
        int ok = n == 3 && zmq_msg_size(&fr[1]) == 0;
        Switchyard__StatusRequest *q =
            ok ? switchyard__status_request__unpack(NULL, zmq_msg_size(&fr[2]), zmq_msg_data(&fr[2])) : NULL;
        if (!q || q->protocol_version != SWITCHYARD__VERSION__PROTOCOL_VERSION)
            s->bad_requests++;
        switchyard__status_request__free_unpacked(q, NULL);
        int k = s->requests++;
        if (s->mode == SRV_SILENT || (s->mode == SRV_SKIP_FIRST && k == 0) || !ok) {
            for (int i = 0; i < n; i++)
                zmq_msg_close(&fr[i]);
            continue;
        }
        zmq_send(s->sock, zmq_msg_data(&fr[0]), zmq_msg_size(&fr[0]), ZMQ_SNDMORE);
        zmq_send(s->sock, "", 0, ZMQ_SNDMORE);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&fr[i]);
        if (s->mode == SRV_GARBAGE) {
            zmq_send(s->sock, GARBAGE, sizeof GARBAGE, 0);
            continue;
        }
        Switchyard__StatusReply r = f.r;
        if (s->mode == SRV_BADVER)
            r.protocol_version = 7;
        if (s->mode == SRV_ERROR) {
            Switchyard__StatusReply e = SWITCHYARD__STATUS_REPLY__INIT;
            e.protocol_version = SWITCHYARD__VERSION__PROTOCOL_VERSION;
            e.error = "bad request: not a StatusRequest";
            r = e;
        }
        size_t len = switchyard__status_reply__get_packed_size(&r);
        uint8_t *buf = malloc(len + 1);
        switchyard__status_reply__pack(&r, buf);
        if (s->mode == SRV_MULTI)
            zmq_send(s->sock, "x", 1, ZMQ_SNDMORE);
        zmq_send(s->sock, buf, len, 0);
        free(buf);
    }
    return NULL;
}

static void server_start(server *s, srv_mode mode) {
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->ctx = zmq_ctx_new();
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(s->sock, "tcp://127.0.0.1:*"), 0);
    size_t n = sizeof s->ep;
    assert_int_equal(zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->ep, &n), 0);
    assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void server_stop(server *s) {
    s->stop = 1;
    pthread_join(s->th, NULL);
    zmq_close(s->sock);
    zmq_ctx_term(s->ctx);
}

typedef struct {
    int rc;
    char *out, *err;
    double secs;
} run;

static char *slurp(int fd) {
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(pread(fd, s, (size_t)n, 0), (ssize_t)n);
    s[n] = 0;
    return s;
}

/* Runs cmd_status with stdout and stderr redirected to temporary files. */
static run run_status(const char *first, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "status";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char po[] = "/tmp/sy_status_out_XXXXXX", pe[] = "/tmp/sy_status_err_XXXXXX";
    int fo = mkstemp(po), fe = mkstemp(pe);
    assert_true(fo >= 0 && fe >= 0);
    unlink(po);
    unlink(pe);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fo, 1);
    dup2(fe, 2);
    double t0 = sy_now();
    run r;
    r.rc = cmd_status(argc, argv);
    r.secs = sy_now() - t0;
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    r.out = slurp(fo);
    r.err = slurp(fe);
    close(fo);
    close(fe);
    return r;
}

static void run_free(run *r) {
    free(r->out);
    free(r->err);
}

static void test_cmd_ok(void **state) {
    server s;
    server_start(&s, SRV_OK);
    run r = run_status(s.ep, NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.err, "");
    assert_has(r.out, "step 1200/5000 (24.0%)");
    assert_has(r.out, "layer 3: 4 experts");
    check_widths(r.out, 100);
    run_free(&r);

    /* HOST:PORT gets tcp:// added */
    r = run_status(s.ep + 6, "--json", NULL);
    assert_int_equal(r.rc, 0);
    char err[200];
    jv *v = jparse(r.out, err, sizeof err);
    if (!v)
        fail_msg("invalid JSON (%s):\n%s", err, r.out);
    assert_true(jnumber(v, "step") == 1200);
    assert_string_equal(jtext(jat(jget(v, "workers"), 1), "host"), WEIRD_HOST);
    jv_free(v);
    run_free(&r);

    r = run_status("--prom", "--timeout", "1500", s.ep, NULL);
    assert_int_equal(r.rc, 0);
    pdoc *d = malloc(sizeof *d);
    if (prom_check(r.out, d, err, sizeof err))
        fail_msg("%s in:\n%s", err, r.out);
    assert_true(pget(d, "switchyard_step", NULL) == 1200);
    free(d);
    run_free(&r);
    server_stop(&s);
    /* three requests, each a StatusRequest of our protocol version */
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.bad_requests, 0);
}

static void test_cmd_bad_replies(void **state) {
    /* the garbage really is not a StatusReply */
    assert_null(switchyard__status_reply__unpack(NULL, sizeof GARBAGE, GARBAGE));
    struct {
        srv_mode mode;
        const char *msg;
    } cases[] = {
        {SRV_GARBAGE, "bytes that are not a StatusReply"},
        {SRV_BADVER, "speaks status protocol version 7; this switchyard speaks version 1"},
        {SRV_ERROR, "refused the request: bad request: not a StatusRequest"},
        {SRV_MULTI, "more than one frame"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        server s;
        server_start(&s, cases[i].mode);
        run r = run_status(s.ep, NULL);
        assert_int_equal(r.rc, 1);
        assert_string_equal(r.out, "");
        char want[300];
        snprintf(want, sizeof want, "switchyard status: %s", s.ep);
        if (cases[i].mode == SRV_GARBAGE || cases[i].mode == SRV_MULTI)
            snprintf(want, sizeof want, "switchyard status: bad reply from %s: ", s.ep);
        assert_int_equal(strncmp(r.err, want, strlen(want)), 0);
        assert_has(r.err, cases[i].msg);
        /* one line */
        assert_ptr_equal(strchr(r.err, '\n'), r.err + strlen(r.err) - 1);
        run_free(&r);
        server_stop(&s);
    }
}

static void test_cmd_timeout(void **state) {
    server s;
    server_start(&s, SRV_SILENT);
    run r = run_status(s.ep, "--timeout", "300", NULL);
    assert_int_equal(r.rc, 1);
    char want[400];
    snprintf(want, sizeof want,
             "switchyard status: no reply from %s within 300 ms: is the coordinator running with --status %s "
             "(and --status-open, or give --keys)?\n",
             s.ep,
             s.ep);
    assert_string_equal(r.err, want);
    assert_string_equal(r.out, "");
    assert_true(r.secs >= 0.29 && r.secs < 1.5);
    run_free(&r);
    server_stop(&s);
    assert_int_equal(s.requests, 1);

    /* nobody listening at all: the same, also bounded */
    r = run_status(s.ep, "--timeout", "200", NULL);
    assert_int_equal(r.rc, 1);
    assert_has(r.err, "no reply from");
    assert_true(r.secs < 1.5);
    run_free(&r);
}

static void test_cmd_usage(void **state) {
    static const char *bad_ep[] = {"foo", "tcp://host", "tcp://:5556", "udp://x:1", "tcp://127.0.0.1:0",
                                   "tcp://127.0.0.1:99999", "127.0.0.1:abc", "tcp://a b:5", "inproc://x",
                                   "tcp://127.0.0.1:-5", "[::1:5556", "ipc://"};
    for (size_t i = 0; i < sizeof bad_ep / sizeof bad_ep[0]; i++) {
        run r = run_status(bad_ep[i], NULL);
        if (r.rc != 2)
            fail_msg("endpoint '%s': exit %d (%s)", bad_ep[i], r.rc, r.err);
        char want[200];
        snprintf(want, sizeof want, "switchyard status: bad endpoint '%s': ", bad_ep[i]);
        assert_int_equal(strncmp(r.err, want, strlen(want)), 0);
        assert_ptr_equal(strchr(r.err, '\n'), r.err + strlen(r.err) - 1);
        run_free(&r);
    }
    struct {
        const char *a[4];
    } bad_args[] = {{{NULL}},
                    {{"127.0.0.1:5556", "--json", "--prom", NULL}},
                    {{"127.0.0.1:5556", "--timeout", "0", NULL}},
                    {{"127.0.0.1:5556", "--timeout", "x", NULL}},
                    {{"127.0.0.1:5556", "--timeout", NULL}},
                    {{"127.0.0.1:5556", "--bogus", NULL}},
                    {{"127.0.0.1:5556", "--watch", "0", NULL}},
                    {{"127.0.0.1:5556", "127.0.0.1:5557", NULL}}};
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        const char **a = bad_args[i].a;
        run r = run_status(a[0], a[0] ? a[1] : NULL, a[0] && a[1] ? a[2] : NULL, NULL);
        if (r.rc != 2)
            fail_msg("case %zu: exit %d (%s)", i, r.rc, r.err);
        assert_true(strlen(r.err) > 0);
        run_free(&r);
    }
    run r = run_status("--help", NULL);
    assert_int_equal(r.rc, 0);
    assert_has(r.out, "usage: switchyard status ENDPOINT");
    run_free(&r);

    /* a host name that does not resolve is named as such, not reported as a silent
     * coordinator */
    r = run_status("no-such-host.invalid:5556", NULL);
    assert_int_equal(r.rc, 1);
    assert_has(r.err, "switchyard status: cannot resolve host 'no-such-host.invalid' of tcp://no-such-host.invalid:5556");
    run_free(&r);
}

static void test_cmd_watch(void **state) {
    server s;
    server_start(&s, SRV_OK);
    run r = run_status(s.ep, "--watch", "0.2", "--count", "2", NULL);
    assert_int_equal(r.rc, 0);
    assert_true(r.secs >= 0.19);
    /* stdout is not a terminal: no escape codes, frames separated by a blank line */
    assert_null(strchr(r.out, '\x1b'));
    char hdr[200];
    snprintf(hdr, sizeof hdr, "switchyard status %s  every 0.2s  ", s.ep);
    assert_int_equal(strncmp(r.out, hdr, strlen(hdr)), 0);
    const char *second = strstr(r.out + 1, hdr);
    assert_non_null(second);
    assert_true(second[-1] == '\n' && second[-2] == '\n' && second[-3] != '\n');
    assert_null(strstr(second + 1, hdr));
    check_widths(r.out, 100);
    run_free(&r);
    server_stop(&s);
    assert_int_equal(s.requests, 2);

    /* the first request goes unanswered: an error line, then the next refresh works */
    server_start(&s, SRV_SKIP_FIRST);
    r = run_status("--json", "--watch", "0.1", "--count", "2", "--timeout", "300", s.ep, NULL);
    assert_int_equal(r.rc, 0);
    char want[300];
    snprintf(want, sizeof want, "switchyard status: no reply from %s within 300 ms", s.ep);
    assert_int_equal(strncmp(r.err, want, strlen(want)), 0);
    assert_ptr_equal(strchr(r.err, '\n'), r.err + strlen(r.err) - 1);
    char err[200];
    jv *v = jparse(r.out, err, sizeof err); /* exactly one JSON frame */
    if (!v)
        fail_msg("invalid JSON (%s):\n%s", err, r.out);
    jv_free(v);
    run_free(&r);
    server_stop(&s);
    assert_int_equal(s.requests, 2);
}

/* Ctrl-C ends --watch promptly and cleanly, even in the middle of waiting for a reply. */
static void test_cmd_watch_sigint(void **state) {
    server s;
    server_start(&s, SRV_SILENT);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        char *argv[] = {"status", s.ep, "--watch", "1", "--timeout", "10000", NULL};
        _exit(cmd_status(6, argv));
    }
    struct timespec ts = {0, 400 * 1000 * 1000};
    nanosleep(&ts, NULL);
    double t0 = sy_now();
    kill(pid, SIGINT);
    int st = 0;
    for (;;) { /* bounded wait so a hang fails instead of blocking the suite */
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (sy_now() - t0 > 5) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("status --watch did not stop on SIGINT");
        }
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    assert_true(sy_now() - t0 < 1.0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    server_stop(&s);
    assert_true(s.requests >= 1);
}

int main(void) {
    /* the unresolvable-host case must not wait out a slow resolver */
    setenv("RES_OPTIONS", "timeout:1 attempts:1", 1);
    /* "never hangs" is part of the contract: a hang fails here rather than at ctest's
     * much longer timeout (the whole run takes a few seconds) */
    alarm(90);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_header),
        cmocka_unit_test(test_table_workers),
        cmocka_unit_test(test_table_experts_and_events),
        cmocka_unit_test(test_table_widths),
        cmocka_unit_test(test_roundtrip_same_output),
        cmocka_unit_test(test_json_parser_rejects),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_hostile_strings),
        cmocka_unit_test(test_prom_checker_rejects),
        cmocka_unit_test(test_prom),
        cmocka_unit_test(test_cmd_ok),
        cmocka_unit_test(test_cmd_bad_replies),
        cmocka_unit_test(test_cmd_timeout),
        cmocka_unit_test(test_cmd_usage),
        cmocka_unit_test(test_cmd_watch),
        cmocka_unit_test(test_cmd_watch_sigint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
