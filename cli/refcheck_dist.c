/* switchyard refcheck DIR --workers N: the reference case through real worker processes. */
#include <stdio.h>

#include "refcheck.h"

int sy_refcheck_distributed(const sy_refcase *rc, int workers, int quiet) {
    (void)quiet;
    fprintf(stderr, "refcheck: %s: --workers %d: this build has no coordinator yet\n", rc->dir, workers);
    return 2;
}
