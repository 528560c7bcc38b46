#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define IO_CHUNK (1u << 30) /* largest single read()/write() */

int sy_write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n > IO_CHUNK ? IO_CHUNK : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t sy_read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got > IO_CHUNK ? IO_CHUNK : n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int sy_mkdirs(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        sy_seterr("%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                sy_seterr("%s: cannot create directory: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == 0)
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        sy_seterr("%s: not a directory", path);
        return -1;
    }
    return 0;
}

int sy_read_file(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sy_seterr("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        sy_seterr("%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        sy_seterr("%s: not a regular file", path);
        goto fail;
    }
    if (max && (uint64_t)st.st_size > max) {
        sy_seterr("%s: %lld bytes, more than the limit of %zu", path, (long long)st.st_size, max);
        goto fail;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (!(buf = malloc(cap))) {
        sy_seterr("%s: out of memory (%zu bytes)", path, cap);
        goto fail;
    }
    for (;;) {
        if (n + 1 == cap) {
            /* Full at the size fstat gave: probe for EOF, grow only if the file grew. */
            char probe[4096];
            ssize_t r = read(fd, probe, sizeof probe);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                sy_seterr("%s: read error: %s", path, strerror(errno));
                goto fail;
            }
            if (r == 0)
                break;
            if (max && n + (size_t)r > max) {
                sy_seterr("%s: grew past the limit of %zu bytes while being read", path, max);
                goto fail;
            }
            char *nb = realloc(buf, cap * 2 + (size_t)r);
            if (!nb) {
                sy_seterr("%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap = cap * 2 + (size_t)r;
            memcpy(buf + n, probe, (size_t)r);
            n += (size_t)r;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            sy_seterr("%s: read error: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    close(fd);
    return -1;
}

int sy_dir_private(const char *path) {
    struct stat st;
    return !lstat(path, &st) && S_ISDIR(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 077);
}

int sy_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        sy_seterr("%s: cannot open directory: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (fsync(fd) < 0 && errno != EINVAL) { /* EINVAL: fs cannot sync directories */
        sy_seterr("%s: fsync failed: %s", path, strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

/* Writes data to an open fd, fsyncs and closes it; on failure unlinks path. */
static int finish_file(int fd, const char *path, const void *data, size_t n) {
    if (sy_write_all(fd, data, n) < 0 || fsync(fd) < 0) {
        sy_seterr("%s: write failed: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd) < 0) {
        sy_seterr("%s: close failed: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

int sy_write_new(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        sy_seterr("%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    return finish_file(fd, path, data, n);
}

int sy_write_atomic(const char *path, const void *data, size_t n) {
    char tmp[PATH_MAX + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        sy_seterr("%s: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sy_seterr("%s: cannot create %s: %s", path, tmp, strerror(errno));
        return -1;
    }
    if (finish_file(fd, tmp, data, n) < 0)
        return -1;
    if (rename(tmp, path) != 0) {
        sy_seterr("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    /* Make the rename itself durable: fsync the directory that holds path. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    return sy_fsync_dir(dir);
}

int sy_append_record(int fd, const void *rec, size_t n) {
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) {
        sy_seterr("cannot find the end of the file: %s", strerror(errno));
        return -1;
    }
    const char *p = rec;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            /* take back the part that went in: the file ends with a whole record again */
            if (left < n && ftruncate(fd, end) < 0)
                sy_seterr("%s after %zu of %zu bytes, and cannot cut the partial record: %s", strerror(e), n - left,
                          n, strerror(errno));
            else
                sy_seterr("%s (record of %zu bytes not written)", strerror(e), n);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}
