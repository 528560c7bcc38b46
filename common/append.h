/* append.h: appends one whole record (one line of a JSON-lines log) to a file, or
 * nothing. A failed or short write (a full disk) is undone with ftruncate, so a reader
 * never sees a record cut short or two records merged; the caller learns of the failure
 * and can say so. */
#ifndef SY_APPEND_H
#define SY_APPEND_H

#include <stddef.h>

/* Appends rec[0..n) to fd (opened for writing; O_APPEND or not, the record goes at the
 * end). 0, or -1 with a message (the file is left as it was before the call). */
int sy_append_record(int fd, const void *rec, size_t n);

#endif
