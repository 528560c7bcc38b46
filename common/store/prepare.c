/* prepare.c: `switchyard prepare`: finds the inputs (the files and folders given, or
 * the fortunes packages' files by language), reads them into a corpus, and writes
 * train.bin and val.bin unless the same inputs already made them (fingerprint). */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "rng.h"
#include "tokfile.h"

typedef struct {
    char *path;
    int lang;               /* corpus language id */
    sy_split_mode split;
    const char *encoding;   /* convert from this (NULL: none) */
    const char *fallback;   /* default corpus: convert from this only if not valid UTF-8 */
    struct stat st;
} source;

typedef struct {
    source *v;
    int64_t n, cap;
} source_list;

static void sources_free(source_list *s) {
    for (int64_t i = 0; i < s->n; i++)
        free(s->v[i].path);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int sources_add(source_list *s, const char *path, const struct stat *st, int lang, sy_split_mode split,
                       const char *encoding, const char *fallback) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        source *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            sy_seterr("prepare: out of memory");
            return -1;
        }
        s->v = nv;
        s->cap = cap;
    }
    source *e = &s->v[s->n];
    e->path = strdup(path);
    if (!e->path) {
        sy_seterr("prepare: out of memory");
        return -1;
    }
    e->lang = lang;
    e->split = split;
    e->encoding = encoding;
    e->fallback = fallback;
    e->st = *st;
    s->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Sorted entry names of a directory (without "." and ".."), or NULL with a message. */
static char **list_dir(const char *dir, int *count) {
    DIR *d = opendir(dir);
    *count = 0;
    if (!d) {
        sy_seterr("%s: cannot open directory: %s", dir, strerror(errno));
        return NULL;
    }
    int n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e = NULL;
    while (names && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n == cap) {
            char **nn = realloc(names, 2 * cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
            cap *= 2;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (!names || e) { /* stopped early: out of memory */
        for (int i = 0; names && i < n; i++)
            free(names[i]);
        free(names);
        sy_seterr("%s: out of memory listing the directory", dir);
        return NULL;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    *count = n;
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* A user directory: its regular files, recursively, in name order. */
static int add_user_dir(source_list *s, const char *dir, const sy_prepare_input *in, int lang, int depth) {
    if (depth > 32) {
        sy_seterr("%s: directories nested too deep", dir);
        return -1;
    }
    int n;
    char **names = list_dir(dir, &n);
    if (!names)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (names[i][0] == '.' || ends_with(names[i], ".dat"))
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) {
            sy_seterr("%s/%s: path too long", dir, names[i]);
            rc = -1;
            break;
        }
        struct stat st;
        if (lstat(p, &st) != 0) {
            sy_seterr("%s: cannot stat: %s", p, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            rc = add_user_dir(s, p, in, lang, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            rc = sources_add(s, p, &st, lang, in->split, in->encoding, NULL);
        }
    }
    free_names(names, n);
    return rc;
}

typedef struct {
    const char *lang, *package, *subdir, *legacy;
    int need_dat; /* top-level English files: only those with a NAME.dat beside them */
} fortune_source;

static const fortune_source k_fortunes[] = {
    {"en", "fortunes", "fortunes", "ISO-8859-1", 1},
    {"de", "fortunes-de", "fortunes/de", "ISO-8859-1", 0},
    {"es", "fortunes-es", "fortunes/es", "ISO-8859-1", 0},
    {"it", "fortunes-it", "fortunes/it", "ISO-8859-1", 0},
    {"ru", "fortunes-ru", "fortunes/ru", "KOI8-R", 0},
};
#define N_FORTUNE_SOURCES ((int)(sizeof k_fortunes / sizeof k_fortunes[0]))

/* The fortune files of one package; 0 files found is not an error here. */
static int add_fortune_dir(source_list *s, const char *root, const fortune_source *f, int lang) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, f->subdir);
    struct stat dst;
    if (stat(dir, &dst) != 0 || !S_ISDIR(dst.st_mode))
        return 0;
    int n;
    char **names = list_dir(dir, &n);
    if (!names)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *nm = names[i];
        if (nm[0] == '.' || ends_with(nm, ".dat") || ends_with(nm, ".u8"))
            continue;
        char p[PATH_MAX], pd[PATH_MAX + 8];
        if (snprintf(p, sizeof p, "%s/%s", dir, nm) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue; /* symlinks (duplicates, other packages' links) and subdirectories */
        if (f->need_dat) {
            snprintf(pd, sizeof pd, "%s.dat", p);
            struct stat sd;
            if (lstat(pd, &sd) != 0 || !S_ISREG(sd.st_mode))
                continue;
        }
        rc = sources_add(s, p, &st, lang, SY_SPLIT_FORTUNE, NULL, f->legacy);
    }
    free_names(names, n);
    return rc;
}

static int collect_default(source_list *s, sy_corpus *c, const char *root) {
    char missing[512] = "", where[2048] = "";
    for (int k = 0; k < N_FORTUNE_SOURCES; k++) {
        int lang = sy_corpus_lang(c, k_fortunes[k].lang);
        int64_t before = s->n;
        if (lang < 0 || add_fortune_dir(s, root, &k_fortunes[k], lang) != 0)
            return -1;
        if (s->n == before) {
            size_t m = strlen(missing), w = strlen(where);
            snprintf(missing + m, sizeof missing - m, " %s", k_fortunes[k].package);
            snprintf(where + w, sizeof where - w, "%s%s/%s", w ? ", " : "", root, k_fortunes[k].subdir);
        }
    }
    if (missing[0]) {
        sy_seterr("default corpus: Debian package(s)%s missing (no fortune files in %s); install with: sudo apt-get "
                  "install%s",
                  missing, where, missing);
        return -1;
    }
    return 0;
}

static int collect_inputs(source_list *s, sy_corpus *c, const sy_prepare_opts *o) {
    for (int i = 0; i < o->n_inputs; i++) {
        const sy_prepare_input *in = &o->inputs[i];
        int lang = sy_corpus_lang(c, in->lang ? in->lang : "unknown");
        if (lang < 0) {
            sy_err_prefix("%s", in->path);
            return -1;
        }
        struct stat st;
        if (stat(in->path, &st) != 0) {
            sy_seterr("%s: %s", in->path, strerror(errno));
            return -1;
        }
        int rc;
        if (S_ISDIR(st.st_mode)) {
            int64_t before = s->n;
            rc = add_user_dir(s, in->path, in, lang, 0);
            if (rc == 0 && s->n == before)
                sy_warn("%s: directory holds no files", in->path);
        } else if (S_ISREG(st.st_mode)) {
            rc = sources_add(s, in->path, &st, lang, in->split, in->encoding, NULL);
        } else {
            sy_seterr("%s: not a regular file or directory", in->path);
            rc = -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Fingerprint of everything the output depends on: format, split rule, val fraction,
 * language table, and every input's path, options, size and mtime. */
static uint64_t fingerprint(const source_list *s, const sy_corpus *c, double frac, int is_default) {
    uint64_t h = sy_mix64(SY_TOKFILE_VERSION ^ ((uint64_t)is_default << 32));
    uint64_t fb;
    memcpy(&fb, &frac, 8);
    h = sy_mix64(h ^ fb) ^ SY_SPLIT_SEED;
    for (int l = 0; l < sy_corpus_n_langs(c); l++)
        h = sy_data_hash(sy_corpus_lang_name(c, l), strlen(sy_corpus_lang_name(c, l)), h);
    for (int64_t i = 0; i < s->n; i++) {
        const source *e = &s->v[i];
        h = sy_data_hash(e->path, strlen(e->path) + 1, h);
        if (e->encoding)
            h = sy_data_hash(e->encoding, strlen(e->encoding) + 1, h);
        uint64_t f[6] = {(uint64_t)e->lang,
                         (uint64_t)e->split,
                         (uint64_t)e->st.st_size,
                         (uint64_t)e->st.st_mtim.tv_sec,
                         (uint64_t)e->st.st_mtim.tv_nsec,
                         (uint64_t)e->st.st_ino};
        h = sy_data_hash(f, sizeof f, h);
    }
    return h ? h : 1; /* 0 means "no fingerprint" in the file */
}

static int read_source(sy_corpus *c, const source *e) {
    if (!e->fallback)
        return sy_corpus_add_file(c, e->path, e->lang, e->split, e->encoding) < 0 ? -1 : 0;
    /* Default corpus: UTF-8 as is, anything else from the package's legacy encoding. */
    uint8_t *buf;
    size_t n;
    if (read_whole(e->path, &buf, &n) != 0)
        return -1;
    if (!sy_utf8_valid(buf, n)) {
        sy_info("%s: not UTF-8, converting from %s", e->path, e->fallback);
        if (sy_corpus_to_utf8(e->path, e->fallback, &buf, &n) != 0) {
            free(buf);
            return -1;
        }
    }
    int64_t r = sy_corpus_add_fortunes(c, buf, n, e->lang);
    free(buf);
    if (r < 0) {
        sy_err_prefix("%s", e->path);
        return -1;
    }
    return 0;
}

/* Fills the report from the two files (as written or found). */
static void fill_report(sy_prepare_report *rep, const sy_tokens *tr, const sy_tokens *va) {
    rep->n_langs = tr->n_langs;
    memcpy(rep->lang_names, tr->lang_names, sizeof rep->lang_names);
    sy_tokens_lang_stats(tr, rep->docs[SY_PART_TRAIN], rep->bytes[SY_PART_TRAIN]);
    sy_tokens_lang_stats(va, rep->docs[SY_PART_VAL], rep->bytes[SY_PART_VAL]);
    rep->train_entropy = sy_tokens_entropy(tr);
}

static int same_langs(const sy_tokens *a, const sy_tokens *b) {
    return a->n_langs == b->n_langs && !memcmp(a->lang_names, b->lang_names, sizeof a->lang_names);
}

void sy_prepare_opts_default(sy_prepare_opts *o) {
    memset(o, 0, sizeof *o);
    o->out_dir = "data";
    o->fortunes_root = "/usr/share/games";
    o->val_fraction = 0.05;
}

int sy_prepare(const sy_prepare_opts *o, sy_prepare_report *rep) {
    double t0 = sy_now();
    memset(rep, 0, sizeof *rep);
    const char *dir = o->out_dir ? o->out_dir : "data";
    const char *root = o->fortunes_root ? o->fortunes_root : "/usr/share/games";
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) {
        sy_seterr("prepare: val fraction %g out of range [0, 1)", o->val_fraction);
        return -1;
    }
    if (snprintf(rep->train_path, sizeof rep->train_path, "%s/train.bin", dir) >= (int)sizeof rep->train_path ||
        snprintf(rep->val_path, sizeof rep->val_path, "%s/val.bin", dir) >= (int)sizeof rep->val_path) {
        sy_seterr("%s: path too long", dir);
        return -1;
    }
    source_list src = {0};
    sy_corpus *c = sy_corpus_new();
    sy_tokens *tr = NULL, *va = NULL;
    int rc = -1;
    if (!c)
        goto done;
    if ((o->n_inputs == 0 ? collect_default(&src, c, root) : collect_inputs(&src, c, o)) != 0)
        goto done;
    if (src.n == 0) {
        sy_seterr("prepare: no input files");
        goto done;
    }
    rep->n_files = src.n;
    uint64_t fp = fingerprint(&src, c, o->val_fraction, o->n_inputs == 0);

    if (!o->force && access(rep->train_path, F_OK) == 0) {
        tr = sy_tokens_load(rep->train_path);
        va = tr ? sy_tokens_load(rep->val_path) : NULL;
        if (!tr || !va) {
            sy_warn("rebuilding: %s", sy_lasterr());
        } else if (tr->fingerprint == fp && va->fingerprint == fp && same_langs(tr, va)) {
            fill_report(rep, tr, va);
            rep->up_to_date = 1;
            rc = 0;
            goto done;
        } else {
            sy_info("%s: inputs changed, rebuilding", dir);
        }
        sy_tokens_destroy(&tr);
        sy_tokens_destroy(&va);
    }

    for (int64_t i = 0; i < src.n; i++) {
        if (read_source(c, &src.v[i]) != 0)
            goto done;
        if (o->progress)
            o->progress(o->progress_ctx, "reading", i + 1, src.n);
    }
    if (sy_corpus_n_docs(c) == 0) {
        sy_seterr("prepare: the inputs hold no documents (all files empty?)");
        goto done;
    }
    if (sy_mkdirs(dir) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 0, 2);
    if (sy_corpus_write(c, rep->train_path, SY_PART_TRAIN, o->val_fraction, fp) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 1, 2);
    if (sy_corpus_write(c, rep->val_path, SY_PART_VAL, o->val_fraction, fp) != 0)
        goto done;
    if (o->progress)
        o->progress(o->progress_ctx, "writing", 2, 2);
    /* Read back what was written: the report then describes the files, and a bad write
     * shows up here rather than in training. */
    if (!(tr = sy_tokens_load(rep->train_path)) || !(va = sy_tokens_load(rep->val_path)))
        goto done;
    if (tr->n_bytes == 0)
        sy_warn("%s is empty: every document went to validation", rep->train_path);
    if (va->n_bytes == 0 && o->val_fraction > 0)
        sy_warn("%s is empty: only one document (use more files or fortune-style files)", rep->val_path);
    fill_report(rep, tr, va);
    rc = 0;
done:
    rep->seconds = sy_now() - t0;
    sy_tokens_destroy(&tr);
    sy_tokens_destroy(&va);
    sy_corpus_destroy(&c);
    sources_free(&src);
    return rc;
}
