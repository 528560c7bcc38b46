#include "append.h"

#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"

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
