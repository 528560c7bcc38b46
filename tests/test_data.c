/* test_data.c: token files (round trip, validation of corrupt files), the fortune
 * splitter, the train/validation split, prepare (inputs, default corpus layout,
 * idempotence), and batch drawing (determinism, worker-split independence, windows are
 * substrings of the stream, language ids). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "log.h"

/* ------------------------------------------------------------------ helpers */

#define SY_TMPDIR_NAME "data"
#include "tmpdir.h"

static void write_str(const char *path, const char *s) { write_file(path, s, strlen(s)); }

static void mkdir_ok(const char *p) { assert_int_equal(mkdir(p, 0755), 0); }

/* Checks doc i of ds is exactly `text` in language `lang`. */
static void assert_doc(const sy_tokens *ds, int64_t i, const char *text, const char *lang) {
    assert_true(i < ds->n_docs);
    assert_int_equal(ds->docs[i].length, strlen(text));
    assert_memory_equal(ds->bytes + ds->docs[i].offset, text, strlen(text));
    assert_string_equal(sy_tokens_lang_name(ds, ds->docs[i].lang), lang);
}

static void assert_err_has(const char *a, const char *b) {
    const char *e = sy_lasterr();
    if (!strstr(e, a) || (b && !strstr(e, b)))
        fail_msg("error \"%s\" should mention \"%s\"%s%s", e, a, b ? " and " : "", b ? b : "");
}

/* xorshift for test data; independent of the code under test. */
static uint64_t g_x = 88172645463325252ull;
static uint64_t xrand(void) {
    g_x ^= g_x << 13;
    g_x ^= g_x >> 7;
    g_x ^= g_x << 17;
    return g_x;
}

/* ------------------------------------------------------------------ tests */

static void test_utf8_valid(void **state) {
    (void)state;
#define U(s) s, sizeof(s) - 1
    assert_true(sy_utf8_valid(U("plain ascii")));
    assert_true(sy_utf8_valid(U("Gr\xc3\xbc\xc3\x9f \xd0\x9f\xd1\x80\xd0\xb8 \xe2\x82\xac \xf0\x9f\x98\x80")));
    assert_true(sy_utf8_valid(U("\xf4\x8f\xbf\xbf"))); /* U+10FFFF */
    assert_false(sy_utf8_valid(U("Gr\xfc\xdf")));         /* latin-1 */
    assert_false(sy_utf8_valid(U("\xc0\xaf")));           /* overlong '/' */
    assert_false(sy_utf8_valid(U("\xe0\x80\xaf")));       /* overlong, 3 bytes */
    assert_false(sy_utf8_valid(U("\xed\xa0\x80")));       /* surrogate */
    assert_false(sy_utf8_valid(U("\xf4\x90\x80\x80")));   /* > U+10FFFF */
    assert_false(sy_utf8_valid(U("ok \xe2\x82")));        /* truncated at the end */
    assert_false(sy_utf8_valid(U("\xf0\xd2\xc9\xd7\xc5\xd4"))); /* KOI8-R "Привет" */
#undef U
}

static void test_fortune_splitter(void **state) {
    (void)state;
    sy_corpus *c = sy_corpus_new();
    int en = sy_corpus_lang(c, "en");
    assert_int_equal(en, 0);
    const char *text = "%\n"                      /* leading separator: no empty doc */
                       "first line\nsecond\n"
                       "%\n"
                       "%\n"                      /* empty fortune dropped */
                       "  \t\n\n"
                       "%\r\n"                    /* whitespace-only fortune dropped; CRLF separator */
                       "third\r\nline\r\n"        /* CRLF -> LF */
                       "%\n"
                       "50% off\n% not a separator\n%%\n"
                       "%\n"
                       "last without newline";    /* a newline is added */
    assert_int_equal(sy_corpus_add_fortunes(c, text, strlen(text), en), 4);
    assert_int_equal(sy_corpus_n_docs(c), 4);
    const char *want[] = {"first line\nsecond\n", "third\nline\n", "50% off\n% not a separator\n%%\n",
                          "last without newline\n"};
    for (int i = 0; i < 4; i++) {
        size_t len;
        int lang;
        const uint8_t *d = sy_corpus_doc(c, i, &len, &lang);
        assert_non_null(d);
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(d, want[i], len);
        assert_int_equal(lang, en);
    }
    assert_null(sy_corpus_doc(c, 4, NULL, NULL));
    /* A file with no separators is one fortune. */
    assert_int_equal(sy_corpus_add_fortunes(c, "only\n", 5, en), 1);
    /* A bad language id is refused. */
    assert_int_equal(sy_corpus_add_fortunes(c, "x\n", 2, 7), -1);
    assert_int_equal(sy_corpus_lang(c, "bad name"), -1);
    assert_int_equal(sy_corpus_lang(c, ""), -1);
    assert_int_equal(sy_corpus_lang(c, "en"), 0);
    assert_int_equal(sy_corpus_lang(c, "ru"), 1);
    sy_corpus_destroy(&c);
    assert_null(c);
    sy_corpus_destroy(&c); /* accepts NULL */
}

/* prepare with explicit files, val fraction 0: train.bin holds every document in order. */
static void test_prepare_files_roundtrip(void **state) {
    (void)state;
    const char *fort = "Alpha one.\n%\nBeta\ntwo.\n%\nGamma three.\n";
    const uint8_t bin[] = {0x00, 0x01, 0xff, '%', '\n', '%', '\n', 0x00, 0x80}; /* NUL: whole-file doc */
    const char *plain = "A plain file.\nNo separators here.\n";
    const char *ital = "Uno\n%\nDue\n";
    write_str(tpath("f.txt"), fort);
    write_file(tpath("b.bin"), bin, sizeof bin);
    write_str(tpath("p.txt"), plain);
    write_str(tpath("it.txt"), ital);
    sy_prepare_input in[] = {
        {.path = tpath("f.txt"), .lang = "en"},
        {.path = tpath("b.bin"), .lang = "de"},
        {.path = tpath("p.txt")},                                      /* unknown */
        {.path = tpath("it.txt"), .lang = "it", .split = SY_SPLIT_FILE}, /* forced whole file */
    };
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    o.out_dir = tpath("out");
    o.inputs = in;
    o.n_inputs = 4;
    o.val_fraction = 0;
    sy_prepare_report rep;
    assert_int_equal(sy_prepare(&o, &rep), 0);
    assert_int_equal(rep.up_to_date, 0);
    assert_int_equal(rep.n_files, 4);
    assert_int_equal(rep.n_langs, 4);
    assert_string_equal(rep.lang_names[0], "en");
    assert_string_equal(rep.lang_names[1], "de");
    assert_string_equal(rep.lang_names[2], "unknown");
    assert_string_equal(rep.lang_names[3], "it");
    assert_int_equal(rep.docs[SY_PART_TRAIN][0], 3);
    assert_int_equal(rep.bytes[SY_PART_TRAIN][0], 11 + 10 + 13);
    assert_int_equal(rep.docs[SY_PART_TRAIN][1], 1);
    assert_int_equal(rep.bytes[SY_PART_TRAIN][1], sizeof bin);
    assert_int_equal(rep.docs[SY_PART_VAL][0] + rep.docs[SY_PART_VAL][1] + rep.docs[SY_PART_VAL][2], 0);

    sy_tokens *ds = sy_tokens_load(tpath("out/train.bin"));
    assert_non_null(ds);
    assert_int_equal(ds->part, SY_PART_TRAIN);
    assert_int_equal(ds->n_docs, 6);
    assert_doc(ds, 0, "Alpha one.\n", "en");
    assert_doc(ds, 1, "Beta\ntwo.\n", "en");
    assert_doc(ds, 2, "Gamma three.\n", "en");
    assert_int_equal(ds->docs[3].length, sizeof bin);
    assert_memory_equal(ds->bytes + ds->docs[3].offset, bin, sizeof bin);
    assert_string_equal(sy_tokens_lang_name(ds, ds->docs[3].lang), "de");
    assert_doc(ds, 4, plain, "unknown");
    assert_doc(ds, 5, ital, "it");
    /* The stream is the concatenation, documents contiguous. */
    size_t total = 11 + 10 + 13 + sizeof bin + strlen(plain) + strlen(ital);
    assert_int_equal(ds->n_bytes, total);
    assert_int_equal(ds->docs[0].offset, 0);
    assert_memory_equal(ds->bytes, "Alpha one.\nBeta\ntwo.\nGamma three.\n", 34);
    assert_int_equal(sy_tokens_doc_at(ds, 0), 0);
    assert_int_equal(sy_tokens_doc_at(ds, 10), 0);
    assert_int_equal(sy_tokens_doc_at(ds, 11), 1);
    assert_int_equal(sy_tokens_doc_at(ds, 34), 3);
    assert_int_equal(sy_tokens_doc_at(ds, (int64_t)total - 1), 5);
    assert_int_equal(sy_tokens_lang_id(ds, "unknown"), 2);
    assert_int_equal(sy_tokens_lang_id(ds, "fr"), -1);
    assert_string_equal(sy_tokens_lang_name(ds, 99), "?");
    int64_t docs[SY_MAX_LANGS], bytes[SY_MAX_LANGS];
    sy_tokens_lang_stats(ds, docs, bytes);
    assert_int_equal(docs[0], 3);
    assert_int_equal(docs[3], 1);
    assert_int_equal(bytes[2], strlen(plain));
    sy_tokens_destroy(&ds);
    assert_null(ds);

    /* val.bin exists, is valid and empty, and has the same language table. */
    sy_tokens *va = sy_tokens_load(tpath("out/val.bin"));
    assert_non_null(va);
    assert_int_equal(va->n_docs, 0);
    assert_int_equal(va->n_bytes, 0);
    assert_int_equal(va->n_langs, 4);
    assert_string_equal(va->lang_names[3], "it");
    int32_t row[3];
    assert_int_equal(sy_batch_eval(va, 0, 1, 2, row), -1);
    assert_err_has(tpath("out/val.bin"), NULL);
    sy_tokens_destroy(&va);
}

static void test_entropy(void **state) {
    (void)state;
    /* "aabb" twice: two symbols equally likely -> ln 2; "abcd" -> ln 4. */
    sy_corpus *c = sy_corpus_new();
    int l = sy_corpus_lang(c, "x");
    assert_int_equal(sy_corpus_add_doc(c, "aabbabab", 8, l), 1);
    assert_int_equal(sy_corpus_add_doc(c, "", 0, l), 0);
    assert_int_equal(sy_corpus_write(c, tpath("e.bin"), SY_PART_ALL, 0, 0), 0);
    sy_tokens *ds = sy_tokens_load(tpath("e.bin"));
    assert_non_null(ds);
    assert_int_equal(ds->part, SY_PART_ALL);
    assert_int_equal(ds->n_docs, 1);
    assert_float_equal(sy_tokens_entropy(ds), 0.6931471805599453, 1e-12);
    sy_tokens_destroy(&ds);
    sy_corpus_destroy(&c);
    c = sy_corpus_new();
    l = sy_corpus_lang(c, "x");
    sy_corpus_add_doc(c, "abcdabcd", 8, l);
    assert_int_equal(sy_corpus_write(c, tpath("e.bin"), SY_PART_ALL, 0, 0), 0);
    ds = sy_tokens_load(tpath("e.bin"));
    assert_non_null(ds);
    assert_float_equal(sy_tokens_entropy(ds), 1.3862943611198906, 1e-12);
    sy_tokens_destroy(&ds);
    sy_corpus_destroy(&c);
}

/* Makes n random distinct documents "doc <k> <random letters>\n". */
static char **make_docs(int n, int base) {
    char **d = malloc((size_t)n * sizeof *d);
    for (int i = 0; i < n; i++) {
        d[i] = malloc(64);
        int len = snprintf(d[i], 64, "doc %d ", base + i);
        int extra = 5 + (int)(xrand() % 40);
        for (int k = 0; k < extra; k++)
            d[i][len++] = (char)('a' + xrand() % 26);
        d[i][len++] = '\n';
        d[i][len] = 0;
    }
    return d;
}

static void free_docs(char **d, int n) {
    for (int i = 0; i < n; i++)
        free(d[i]);
    free(d);
}

/* Which part holds each document (by content), read back from the written files. */
static void parts_of(const char *train, const char *val, char **docs, int n, int *part) {
    sy_tokens *tr = sy_tokens_load(train), *va = sy_tokens_load(val);
    assert_non_null(tr);
    assert_non_null(va);
    assert_int_equal(tr->n_docs + va->n_docs, n); /* a partition: nothing lost or doubled */
    for (int i = 0; i < n; i++) {
        part[i] = -1;
        for (int p = 0; p < 2; p++) {
            const sy_tokens *ds = p ? va : tr;
            for (int64_t k = 0; k < ds->n_docs; k++)
                if (ds->docs[k].length == strlen(docs[i]) &&
                    !memcmp(ds->bytes + ds->docs[k].offset, docs[i], strlen(docs[i]))) {
                    assert_int_equal(part[i], -1);
                    part[i] = p;
                }
        }
        assert_int_not_equal(part[i], -1);
    }
    sy_tokens_destroy(&tr);
    sy_tokens_destroy(&va);
}

static void test_split_by_content(void **state) {
    (void)state;
    const int NA = 400, NB = 400;
    char **a = make_docs(NA, 0), **b = make_docs(NB, NA);
    sy_corpus *c = sy_corpus_new();
    int l = sy_corpus_lang(c, "en");
    for (int i = 0; i < NA; i++)
        sy_corpus_add_doc(c, a[i], strlen(a[i]), l);
    assert_int_equal(sy_corpus_write(c, tpath("a_train.bin"), SY_PART_TRAIN, 0.1, 7), 0);
    assert_int_equal(sy_corpus_write(c, tpath("a_val.bin"), SY_PART_VAL, 0.1, 7), 0);
    int *pa = malloc(NA * sizeof *pa), *pab = malloc((NA + NB) * sizeof *pab);
    parts_of(tpath("a_train.bin"), tpath("a_val.bin"), a, NA, pa);
    int nval = 0;
    for (int i = 0; i < NA; i++) {
        nval += pa[i];
        assert_int_equal(pa[i], sy_doc_is_val(a[i], strlen(a[i]), 0.1));
    }
    /* 10% of 400 = 40; binomial sd ~6. */
    assert_in_range(nval, 20, 60);

    /* Adding documents (before and after) does not move the old ones. */
    sy_corpus *c2 = sy_corpus_new();
    l = sy_corpus_lang(c2, "en");
    char **ab = malloc((NA + NB) * sizeof *ab);
    for (int i = 0; i < NB; i++)
        sy_corpus_add_doc(c2, b[i], strlen(b[i]), l), ab[i] = b[i];
    for (int i = 0; i < NA; i++)
        sy_corpus_add_doc(c2, a[i], strlen(a[i]), l), ab[NB + i] = a[i];
    assert_int_equal(sy_corpus_write(c2, tpath("ab_train.bin"), SY_PART_TRAIN, 0.1, 7), 0);
    assert_int_equal(sy_corpus_write(c2, tpath("ab_val.bin"), SY_PART_VAL, 0.1, 7), 0);
    parts_of(tpath("ab_train.bin"), tpath("ab_val.bin"), ab, NA + NB, pab);
    for (int i = 0; i < NA; i++)
        assert_int_equal(pab[NB + i], pa[i]);
    /* The fingerprint is stored as given. */
    sy_tokens *t = sy_tokens_load(tpath("ab_val.bin"));
    assert_non_null(t);
    assert_int_equal(t->fingerprint, 7);
    assert_int_equal(t->part, SY_PART_VAL);
    sy_tokens_destroy(&t);

    /* Degenerate: two documents at fraction 0.01 still give a non-empty val. */
    sy_corpus *c3 = sy_corpus_new();
    l = sy_corpus_lang(c3, "en");
    sy_corpus_add_doc(c3, "one\n", 4, l);
    sy_corpus_add_doc(c3, "two\n", 4, l);
    assert_int_equal(sy_corpus_write(c3, tpath("d_train.bin"), SY_PART_TRAIN, 0.01, 0), 0);
    assert_int_equal(sy_corpus_write(c3, tpath("d_val.bin"), SY_PART_VAL, 0.01, 0), 0);
    sy_tokens *dt = sy_tokens_load(tpath("d_train.bin")), *dv = sy_tokens_load(tpath("d_val.bin"));
    assert_non_null(dt);
    assert_non_null(dv);
    assert_int_equal(dt->n_docs, 1);
    assert_int_equal(dv->n_docs, 1);
    sy_tokens_destroy(&dt);
    sy_tokens_destroy(&dv);

    sy_corpus_destroy(&c);
    sy_corpus_destroy(&c2);
    sy_corpus_destroy(&c3);
    free(pa);
    free(pab);
    free(ab);
    free_docs(a, NA);
    free_docs(b, NB);
}

static void test_prepare_idempotent(void **state) {
    (void)state;
    char **d = make_docs(200, 1000);
    FILE *f = fopen(tpath("corpus.txt"), "w");
    for (int i = 0; i < 200; i++)
        fprintf(f, "%s%%\n", d[i]);
    fclose(f);
    sy_prepare_input in[] = {{.path = tpath("corpus.txt"), .lang = "en"}};
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    o.out_dir = tpath("deep/er/out"); /* created with parents */
    o.inputs = in;
    o.n_inputs = 1;
    sy_prepare_report r1, r2;
    assert_int_equal(sy_prepare(&o, &r1), 0);
    assert_int_equal(r1.up_to_date, 0);
    assert_int_equal(r1.docs[0][0] + r1.docs[1][0], 200);
    assert_true(r1.docs[1][0] > 0);
    struct stat st1, st2;
    assert_int_equal(stat(tpath("deep/er/out/train.bin"), &st1), 0);
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 1);
    assert_int_equal(stat(tpath("deep/er/out/train.bin"), &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino); /* not rewritten */
    assert_memory_equal(r1.docs, r2.docs, sizeof r1.docs);
    assert_memory_equal(r1.bytes, r2.bytes, sizeof r1.bytes);
    assert_float_equal(r1.train_entropy, r2.train_entropy, 0);
    /* --force rebuilds. */
    o.force = 1;
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 0);
    o.force = 0;
    /* Another val fraction is another output. */
    o.val_fraction = 0.2;
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 0);
    assert_true(r2.docs[1][0] > r1.docs[1][0]);
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 1);
    /* A changed input (size and mtime) is noticed. */
    f = fopen(tpath("corpus.txt"), "a");
    fprintf(f, "one more fortune\n");
    fclose(f);
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 0);
    assert_int_equal(r2.docs[0][0] + r2.docs[1][0], 201);
    /* A damaged output is rebuilt rather than trusted. */
    FILE *g = fopen(tpath("deep/er/out/val.bin"), "r+b");
    fseek(g, -1, SEEK_END);
    fputc('#', g);
    fclose(g);
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 0);
    sy_tokens *va = sy_tokens_load(tpath("deep/er/out/val.bin"));
    assert_non_null(va);
    sy_tokens_destroy(&va);
    free_docs(d, 200);
}

static void test_prepare_errors(void **state) {
    (void)state;
    sy_prepare_input in[] = {{.path = tpath("does-not-exist.txt")}};
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    o.out_dir = tpath("out_err");
    o.inputs = in;
    o.n_inputs = 1;
    sy_prepare_report r;
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("does-not-exist.txt", NULL);
    write_str(tpath("empty.txt"), "");
    in[0].path = tpath("empty.txt");
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("no documents", NULL);
    in[0].path = tpath("x.txt");
    write_str(in[0].path, "x\n");
    in[0].lang = "no spaces please";
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("x.txt", "no spaces please");
    in[0].lang = NULL;
    in[0].encoding = "NO-SUCH-ENCODING-42";
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("x.txt", "NO-SUCH-ENCODING-42");
    in[0].encoding = NULL;
    o.val_fraction = 1.0;
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("fraction", NULL);
    /* Invalid UTF-8 input when asked to convert from UTF-8. */
    write_str(tpath("bad.txt"), "ok \xff\xfe bad\n");
    in[0].path = tpath("bad.txt");
    in[0].encoding = "UTF-8";
    o.val_fraction = 0;
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("bad.txt", "byte 3");
}

static void test_encoding_conversion(void **state) {
    (void)state;
    write_str(tpath("latin1.txt"), "Gr\xfc\xdf Gott\n%\nSch\xf6n\n");
    sy_corpus *c = sy_corpus_new();
    int de = sy_corpus_lang(c, "de");
    assert_int_equal(sy_corpus_add_file(c, tpath("latin1.txt"), de, SY_SPLIT_AUTO, "ISO-8859-1"), 2);
    size_t len;
    const uint8_t *d = sy_corpus_doc(c, 0, &len, NULL);
    assert_int_equal(len, 12);
    assert_memory_equal(d, "Gr\xc3\xbc\xc3\x9f Gott\n", 12);
    d = sy_corpus_doc(c, 1, &len, NULL);
    assert_int_equal(len, 7);
    assert_memory_equal(d, "Sch\xc3\xb6n\n", 7);
    /* Without an encoding the bytes are kept as they are. */
    assert_int_equal(sy_corpus_add_file(c, tpath("latin1.txt"), de, SY_SPLIT_FILE, NULL), 1);
    d = sy_corpus_doc(c, 2, &len, NULL);
    assert_int_equal(len, 18);
    assert_memory_equal(d, "Gr\xfc\xdf Gott\n%\nSch\xf6n\n", 18);
    assert_int_equal(sy_corpus_add_file(c, tpath("missing"), de, SY_SPLIT_AUTO, NULL), -1);
    assert_err_has(tpath("missing"), NULL);
    sy_corpus_destroy(&c);
}

/* A small fake /usr/share/games laid out like Debian 12's fortunes packages. */
static void make_fake_fortunes(void) {
    mkdir_ok(tpath("games"));
    mkdir_ok(tpath("games/fortunes"));
    mkdir_ok(tpath("games/fortunes/off"));
    mkdir_ok(tpath("games/fortunes/de"));
    mkdir_ok(tpath("games/fortunes-de"));
    mkdir_ok(tpath("games/fortunes/es"));
    mkdir_ok(tpath("games/fortunes/es/off"));
    mkdir_ok(tpath("games/fortunes/it"));
    mkdir_ok(tpath("games/fortunes/ru"));
    /* English: files with .dat; .u8 symlinks; fortunes-it's symlinks; off/; a stray file */
    write_str(tpath("games/fortunes/zen"), "Be here now.\n%\nNo mind.\n");
    write_str(tpath("games/fortunes/zen.dat"), "DATDATDAT");
    assert_int_equal(symlink("zen", tpath("games/fortunes/zen.u8")), 0);
    write_str(tpath("games/fortunes/art"), "ASCII art\n");
    write_str(tpath("games/fortunes/art.dat"), "DAT");
    write_str(tpath("games/fortunes/README"), "not a fortune file: no .dat\n");
    write_str(tpath("games/fortunes/off/rude"), "rude\n");
    write_str(tpath("games/fortunes/off/rude.dat"), "DAT");
    assert_int_equal(symlink("it/motti", tpath("games/fortunes/motti")), 0);
    assert_int_equal(symlink("it/motti.dat", tpath("games/fortunes/motti.dat")), 0);
    /* German: no .dat beside the files; .dat symlinks into fortunes-de/ */
    write_str(tpath("games/fortunes/de/witze"), "Ein Witz.\n%\nNoch einer \xc3\xbc.\n");
    write_str(tpath("games/fortunes-de/witze.dat"), "DAT");
    assert_int_equal(symlink(tpath("games/fortunes-de/witze.dat"), tpath("games/fortunes/de/witze.dat")), 0);
    assert_int_equal(symlink("witze", tpath("games/fortunes/de/witze.u8")), 0);
    /* Spanish, with an off/ subfolder */
    write_str(tpath("games/fortunes/es/vida.fortunes"), "La vida.\n");
    write_str(tpath("games/fortunes/es/vida.fortunes.dat"), "DAT");
    write_str(tpath("games/fortunes/es/off/malo.fortunes"), "malo\n");
    /* Italian */
    write_str(tpath("games/fortunes/it/motti"), "Chi va piano.\n%\nVa sano.\n%\nE va lontano.\n");
    write_str(tpath("games/fortunes/it/motti.dat"), "DAT");
    /* Russian in KOI8-R: "Привет\n" */
    write_str(tpath("games/fortunes/ru/koi"), "\xf0\xd2\xc9\xd7\xc5\xd4\n%\n\xe4\xc1\n");
    write_str(tpath("games/fortunes/ru/koi.dat"), "DAT");
}

static void test_default_corpus_layout(void **state) {
    (void)state;
    make_fake_fortunes();
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    o.out_dir = tpath("fake_out");
    o.fortunes_root = tpath("games");
    o.val_fraction = 0;
    sy_prepare_report r;
    if (sy_prepare(&o, &r) != 0)
        fail_msg("prepare: %s", sy_lasterr());
    assert_int_equal(r.n_files, 6);
    assert_int_equal(r.n_langs, 5);
    const char *names[] = {"en", "de", "es", "it", "ru"};
    const int want_docs[] = {3, 2, 1, 3, 2};
    for (int l = 0; l < 5; l++) {
        assert_string_equal(r.lang_names[l], names[l]);
        assert_int_equal(r.docs[SY_PART_TRAIN][l], want_docs[l]);
    }
    sy_tokens *ds = sy_tokens_load(tpath("fake_out/train.bin"));
    assert_non_null(ds);
    assert_int_equal(ds->n_docs, 11);
    /* files in name order within a language: art before zen */
    assert_doc(ds, 0, "ASCII art\n", "en");
    assert_doc(ds, 1, "Be here now.\n", "en");
    assert_doc(ds, 2, "No mind.\n", "en");
    assert_doc(ds, 3, "Ein Witz.\n", "de");
    assert_doc(ds, 4, "Noch einer \xc3\xbc.\n", "de");
    assert_doc(ds, 5, "La vida.\n", "es");
    assert_doc(ds, 6, "Chi va piano.\n", "it");
    assert_doc(ds, 9, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\n", "ru"); /* KOI8-R -> UTF-8 */
    assert_doc(ds, 10, "\xd0\x94\xd0\xb0\n", "ru");
    assert_true(sy_utf8_valid(ds->bytes, (size_t)ds->n_bytes));
    sy_tokens_destroy(&ds);

    /* A missing package is named, with the command that installs it. */
    nftw(tpath("games/fortunes/ru"), rm_one, 16, FTW_DEPTH | FTW_PHYS);
    nftw(tpath("games/fortunes/it"), rm_one, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("fortunes-ru", "apt-get install");
    assert_err_has("fortunes-it", "fortunes/ru");
    o.fortunes_root = tpath("nowhere");
    assert_int_equal(sy_prepare(&o, &r), -1);
    assert_err_has("apt-get install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru", NULL);
}

/* A corpus file whose stream is random lowercase letters (so windows of 24+ bytes occur
 * once), in documents of known lengths and languages. */
#define BN 6000
static uint8_t g_stream[BN];
static int g_doc_len[] = {1000, 1, 1999, 500, 2500}; /* sums to BN */
static int g_doc_lang[] = {0, 1, 2, 1, 0};

static sy_tokens *make_batch_file(const char *name) {
    sy_corpus *c = sy_corpus_new();
    assert_int_equal(sy_corpus_lang(c, "en"), 0);
    assert_int_equal(sy_corpus_lang(c, "de"), 1);
    assert_int_equal(sy_corpus_lang(c, "ru"), 2);
    for (int i = 0; i < BN; i++)
        g_stream[i] = (uint8_t)('a' + xrand() % 26);
    int off = 0;
    for (int d = 0; d < 5; d++) {
        assert_int_equal(sy_corpus_add_doc(c, g_stream + off, (size_t)g_doc_len[d], g_doc_lang[d]), 1);
        off += g_doc_len[d];
    }
    assert_int_equal(off, BN);
    assert_int_equal(sy_corpus_write(c, tpath(name), SY_PART_ALL, 0, 0), 0);
    sy_corpus_destroy(&c);
    sy_tokens *ds = sy_tokens_load(tpath(name));
    assert_non_null(ds);
    assert_int_equal(ds->n_bytes, BN);
    assert_memory_equal(ds->bytes, g_stream, BN);
    return ds;
}

static int lang_of_pos(int p) {
    int off = 0;
    for (int d = 0; d < 5; d++) {
        if (p < off + g_doc_len[d])
            return g_doc_lang[d];
        off += g_doc_len[d];
    }
    return -1;
}

/* Position of row in the stream, found by search; -1 if not a substring. */
static int find_row(const int32_t *row, int T) {
    int found = -1;
    for (int p = 0; p + T < BN; p++) {
        int t = 0;
        while (t <= T && row[t] == g_stream[p + t])
            t++;
        if (t > T) {
            assert_int_equal(found, -1); /* unique in a random stream */
            found = p;
        }
    }
    return found;
}

static void test_batches(void **state) {
    (void)state;
    sy_tokens *ds = make_batch_file("batch.bin");
    enum { R = 8, T = 32 };
    int32_t all[R * (T + 1)], again[R * (T + 1)], part[R * (T + 1)], other[R * (T + 1)];
    int16_t lang[R * T], lang2[R * T];
    assert_int_equal(sy_batch_fill(ds, 1234, 5, 0, R, T, all, lang), 0);
    /* deterministic */
    assert_int_equal(sy_batch_fill(ds, 1234, 5, 0, R, T, again, lang2), 0);
    assert_memory_equal(all, again, sizeof all);
    assert_memory_equal(lang, lang2, sizeof lang);
    /* independent of how rows are split across workers */
    assert_int_equal(sy_batch_fill(ds, 1234, 5, 0, 4, T, part, lang2), 0);
    assert_int_equal(sy_batch_fill(ds, 1234, 5, 4, 4, T, part + 4 * (T + 1), lang2 + 4 * T), 0);
    assert_memory_equal(all, part, sizeof all);
    assert_memory_equal(lang, lang2, sizeof lang);
    assert_int_equal(sy_batch_fill(ds, 1234, 5, 3, 1, T, part, NULL), 0);
    assert_memory_equal(part, all + 3 * (T + 1), (T + 1) * sizeof(int32_t));
    /* other steps and seeds give other rows */
    assert_int_equal(sy_batch_fill(ds, 1234, 6, 0, R, T, other, NULL), 0);
    assert_memory_not_equal(all, other, sizeof all);
    assert_int_equal(sy_batch_fill(ds, 1235, 5, 0, R, T, other, NULL), 0);
    assert_memory_not_equal(all, other, sizeof all);
    /* rows within a batch differ */
    assert_memory_not_equal(all, all + (T + 1), (T + 1) * sizeof(int32_t));
    /* every row is a real window of the stream, its languages those of its bytes' documents */
    for (int i = 0; i < R; i++) {
        int p = find_row(all + i * (T + 1), T);
        assert_true(p >= 0);
        assert_int_equal(p, sy_batch_pos(ds, 1234, 5, i, T));
        for (int t = 0; t < T; t++)
            assert_int_equal(lang[i * T + t], lang_of_pos(p + t));
    }
    /* Positions cover the whole stream, ends included: over many rows some start in the
     * first and last 5% and every row fits. */
    int lo = 0, hi = 0, spans = 0;
    for (int r = 0; r < 2000; r++) {
        int64_t p = sy_batch_pos(ds, 99, 0, r, T);
        assert_true(p >= 0 && p + T + 1 <= BN);
        lo += p < BN / 20;
        hi += p > BN - BN / 20 - T;
        /* a window over the 1-byte document spans three documents */
        spans += (p <= 1000 && p + T > 1000);
    }
    assert_true(lo > 30 && hi > 30 && spans > 0);
    int16_t l1[T];
    int64_t p1000 = -1;
    for (int r = 0; r < 2000 && p1000 < 0; r++) {
        int64_t p = sy_batch_pos(ds, 99, 0, r, T);
        if (p < 1000 && p + T > 1001)
            p1000 = r;
    }
    assert_true(p1000 >= 0);
    int32_t row[T + 1];
    assert_int_equal(sy_batch_fill(ds, 99, 0, (int)p1000, 1, T, row, l1), 0);
    int64_t p = sy_batch_pos(ds, 99, 0, p1000, T);
    for (int t = 0; t < T; t++)
        assert_int_equal(l1[t], p + t < 1000 ? 0 : p + t == 1000 ? 1 : 2);
    /* too long a window is refused with the file named */
    int32_t *big = malloc((BN + 1) * sizeof *big);
    assert_int_equal(sy_batch_fill(ds, 1, 1, 0, 1, BN, big, NULL), -1);
    assert_err_has("batch.bin", NULL);
    assert_int_equal(sy_batch_fill(ds, 1, 1, 0, 1, BN - 1, big, NULL), 0);
    for (int t = 0; t < BN; t++)
        assert_int_equal(big[t], g_stream[t]);
    free(big);
    sy_tokens_destroy(&ds);
}

static void test_eval_batches(void **state) {
    (void)state;
    sy_tokens *ds = make_batch_file("eval.bin");
    enum { R = 7, T = 64 };
    /* W = (6000 - 1) / 64 = 93 windows; ceil(93 / 7) = 14 batches */
    assert_int_equal(sy_eval_windows(ds, T), 93);
    assert_int_equal(sy_eval_batches(ds, R, T), 14);
    int32_t out[R * (T + 1)], out2[R * (T + 1)];
    int16_t lang[R * T];
    /* the order is j -> j * stride mod 93 with stride odd, coprime with 93, near 93/phi = 57.5 */
    assert_int_equal(sy_eval_stride(93), 59);
    int seen[93] = {0};
    for (int b = 0; b < 15; b++) {
        assert_int_equal(sy_batch_eval(ds, b, R, T, out), 0);
        assert_int_equal(sy_batch_eval_lang(ds, b, R, T, lang), 0);
        for (int i = 0; i < R; i++) {
            int w = ((b * R + i) % 93) * 59 % 93; /* the last batch wraps to the start */
            if (b < 14 && b * R + i < 93)
                seen[w]++;
            for (int t = 0; t <= T; t++)
                assert_int_equal(out[i * (T + 1) + t], g_stream[w * T + t]);
            for (int t = 0; t < T; t++)
                assert_int_equal(lang[i * T + t], lang_of_pos(w * T + t));
        }
        assert_int_equal(sy_batch_eval(ds, b, R, T, out2), 0);
        assert_memory_equal(out, out2, sizeof out);
    }
    for (int w = 0; w < 93; w++)
        assert_int_equal(seen[w], 1); /* one pass visits every window once */
    assert_int_equal(sy_batch_eval(ds, -1, R, T, out), -1);
    assert_int_equal(sy_eval_windows(ds, 6000), 0);
    sy_tokens_destroy(&ds);
}

/* Writes a damaged copy of good (bytes [0, n) with an edit) and checks it is refused. */
static void check_refused(const uint8_t *img, size_t n, const char *name, const char *why) {
    write_file(tpath(name), img, n);
    sy_tokens *ds = sy_tokens_load(tpath(name));
    if (ds)
        fail_msg("%s was accepted, expected refusal for %s", name, why);
    assert_err_has(tpath(name), why);
}

static void test_corrupt_files_refused(void **state) {
    (void)state;
    sy_tokens *good = make_batch_file("good.bin");
    sy_tokens_destroy(&good);
    size_t n;
    uint8_t *img = (uint8_t *)read_whole(tpath("good.bin"), &n);
    assert_int_equal(n, 64 + 16 * 3 + 16 * 5 + BN);
    /* header fields at the documented offsets */
    assert_memory_equal(img, "SYTOK1", 6);
    assert_int_equal(img[6] | img[7] << 8, 1);
    assert_int_equal(img[12], 3);  /* n_langs */
    assert_int_equal(img[16], 5);  /* n_docs */
    assert_int_equal(img[24] | img[25] << 8, BN);
    assert_string_equal((char *)img + 64, "en");
    assert_string_equal((char *)img + 64 + 32, "ru");
    /* doc 2 (offset 1001, length 1999, lang 2) in the index */
    const uint8_t *e = img + 64 + 48 + 32;
    assert_int_equal(e[0] | e[1] << 8, 1001);
    assert_int_equal(e[8] | e[9] << 8, 1999);
    assert_int_equal(e[12], 2);

    check_refused(img, 0, "empty.bin", "truncated");
    check_refused(img, 40, "short_header.bin", "truncated");
    check_refused(img, n - 1, "short_data.bin", "truncated");
    check_refused(img, 64 + 48 + 30, "short_index.bin", "truncated");
    uint8_t *m = malloc(n + 5);
    memcpy(m, img, n);
    memcpy(m + n, "extra", 5);
    check_refused(m, n + 5, "trailing.bin", "unexpected bytes");
    memcpy(m, img, n);
    m[0] = 'X';
    check_refused(m, n, "magic.bin", "magic");
    memcpy(m, img, n);
    m[6] = 2;
    check_refused(m, n, "version.bin", "version 2");
    memcpy(m, img, n);
    m[n - 100] ^= 0x20;
    check_refused(m, n, "flip_data.bin", "checksum");
    memcpy(m, img, n);
    m[64 + 48 + 12] = 1; /* the language id of doc 0 in the index (was 0) */
    check_refused(m, n, "flip_index.bin", "checksum");
    memcpy(m, img, n);
    m[16] = 200; /* n_docs: the file can no longer hold the index */
    check_refused(m, n, "count.bin", "truncated");
    memcpy(m, img, n);
    m[31] = 0xff; /* absurd n_bytes */
    check_refused(m, n, "absurd.bin", "corrupt header");
    check_refused((const uint8_t *)"hello world, this is not a token file at all, not even close...!", 64,
                  "text.bin", "magic");
    assert_null(sy_tokens_load(tpath("no-such-file.bin")));
    assert_err_has("no-such-file.bin", "cannot open");
    assert_null(sy_tokens_load(g_tmp));
    assert_err_has(g_tmp, "not a regular file");
    free(m);
    free(img);
}

/* The real default corpus, when the Debian packages are installed. */
static void test_real_default_corpus(void **state) {
    (void)state;
    const char *dirs[] = {"/usr/share/games/fortunes", "/usr/share/games/fortunes/de", "/usr/share/games/fortunes/es",
                          "/usr/share/games/fortunes/it", "/usr/share/games/fortunes/ru"};
    for (int i = 0; i < 5; i++) {
        struct stat st;
        if (stat(dirs[i], &st) != 0) {
            print_message("skipping: %s missing (apt-get install fortunes fortunes-de fortunes-es "
                          "fortunes-it fortunes-ru)\n",
                          dirs[i]);
            skip();
        }
    }
    sy_prepare_opts o;
    sy_prepare_opts_default(&o);
    o.out_dir = tpath("real");
    sy_prepare_report r;
    double t0 = sy_now();
    if (sy_prepare(&o, &r) != 0)
        fail_msg("prepare: %s", sy_lasterr());
    double dt = sy_now() - t0;
    assert_true(dt < 20.0);
    assert_int_equal(r.n_langs, 5);
    const char *names[] = {"en", "de", "es", "it", "ru"};
    int64_t td = 0, vd = 0;
    for (int l = 0; l < 5; l++) {
        assert_string_equal(r.lang_names[l], names[l]);
        assert_true(r.docs[SY_PART_TRAIN][l] > 1000);
        assert_true(r.docs[SY_PART_VAL][l] > 20);
        assert_true(r.bytes[SY_PART_TRAIN][l] > 100000);
        td += r.docs[SY_PART_TRAIN][l];
        vd += r.docs[SY_PART_VAL][l];
    }
    /* val share near 5% */
    double share = (double)vd / (double)(td + vd);
    assert_true(share > 0.04 && share < 0.06);
    /* byte text: entropy between 2 and 5.5 nats (8 bits = 5.55 nats is the maximum) */
    assert_true(r.train_entropy > 2.0 && r.train_entropy < 5.0);
    sy_tokens *ds = sy_tokens_load(r.train_path);
    assert_non_null(ds);
    assert_true(sy_utf8_valid(ds->bytes, (size_t)ds->n_bytes));
    /* Russian documents really are Cyrillic UTF-8: the first byte of a Russian letter
     * (0xD0/0xD1) is common in them. */
    int ru = sy_tokens_lang_id(ds, "ru");
    int64_t cyr = 0, tot = 0;
    for (int64_t i = 0; i < ds->n_docs; i++)
        if (ds->docs[i].lang == ru)
            for (uint32_t k = 0; k < ds->docs[i].length; k++, tot++)
                cyr += (ds->bytes[ds->docs[i].offset + k] & 0xFE) == 0xD0;
    assert_true(cyr > tot / 5);
    sy_tokens_destroy(&ds);
    /* The second run finds it up to date, quickly. */
    sy_prepare_report r2;
    assert_int_equal(sy_prepare(&o, &r2), 0);
    assert_int_equal(r2.up_to_date, 1);
    assert_memory_equal(r.docs, r2.docs, sizeof r.docs);
    print_message("default corpus: %.2f s to build, %.3f s when up to date\n", dt, r2.seconds);
}

int main(void) {
    sy_log_set_level(SY_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_fortune_splitter),
        cmocka_unit_test_setup_teardown(test_prepare_files_roundtrip, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_entropy, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_split_by_content, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_prepare_idempotent, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_prepare_errors, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_encoding_conversion, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_default_corpus_layout, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_batches, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_eval_batches, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_corrupt_files_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_real_default_corpus, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
