/* fsutil.h: the file-system helpers every reader and writer shares: mkdir -p, a whole
 * file read into memory, a file written so that a crash never leaves it torn (a
 * temporary name beside it, fsync, rename, fsync of the directory), and the loops and
 * directory fsync under them. Functions return 0 (or a count) or -1 with sy_seterr
 * naming the path and the reason. */
#ifndef SY_FSUTIL_H
#define SY_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p path (mode 0755); an existing directory is fine, anything else is not. */
int sy_mkdirs(const char *path);

/* Reads the whole regular file into *out (malloc'd, one spare NUL byte after *len
 * bytes). max > 0: a file larger than max bytes is refused. A file that grows while it
 * is read is read to its end. */
int sy_read_file(const char *path, size_t max, char **out, size_t *len);

/* Replaces path with data[0..n): written to path.tmp.PID, fsynced, renamed over path,
 * the directory fsynced. A crash leaves the old file or the new one, never a torn one. */
int sy_write_atomic(const char *path, const void *data, size_t n);

/* Creates path with data[0..n), fsynced; never overwrites (O_EXCL): for files inside a
 * temporary directory that is itself renamed into place. */
int sy_write_new(const char *path, const void *data, size_t n);

/* 1 when path is a real directory (lstat: not a link to one) of this process's effective
 * user that no one else may enter or read (no group or other permission bits), else 0. */
int sy_dir_private(const char *path);

/* fsync of a directory, so entries created or renamed in it are durable (a file system
 * that cannot sync directories is not an error). */
int sy_fsync_dir(const char *path);

/* Appends one whole record (one line of a JSON-lines log) rec[0..n) at the end of fd, or
 * nothing: a failed or short write (a full disk) is undone with ftruncate, so a reader
 * never sees a record cut short or two records merged. 0, or -1 with a message (the
 * file is left as it was before the call). */
int sy_append_record(int fd, const void *rec, size_t n);

/* write() until done, through EINTR and short writes; -1 with errno set. */
int sy_write_all(int fd, const void *buf, size_t n);
/* read() until n bytes or end of file; bytes read, or -1 with errno set. */
ssize_t sy_read_all(int fd, void *buf, size_t n);

#endif
