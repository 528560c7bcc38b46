/* switchyard keygen: CURVE key pairs in the ZeroMQ certificate format.
 *   switchyard keygen NAME                  NAME.key (public) and NAME.secret (0600)
 *   switchyard keygen --cluster DIR [--workers N]
 *       the layout the daemons' --keys DIR reads: DIR/coordinator.{key,secret},
 *       DIR/workers/worker-K.{key,secret} (the coordinator's allow-list is DIR/workers),
 *       DIR/clients/operator.{key,secret} (status clients allowed to read the run). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "curve.h"
#include "log.h"

static int make_dir(const char *path) {
    if (mkdir(path, 0700) && errno != EEXIST) {
        sy_seterr("%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int one_pair(const char *base) {
    sy_cert c;
    return sy_cert_new(&c) || sy_cert_save(&c, base) ? -1 : 0;
}

int sy_keygen_cluster(const char *dir, int workers) {
    char p[4200];
    if (make_dir(dir))
        return -1;
    snprintf(p, sizeof p, "%s/workers", dir);
    if (make_dir(p))
        return -1;
    snprintf(p, sizeof p, "%s/clients", dir);
    if (make_dir(p))
        return -1;
    snprintf(p, sizeof p, "%s/coordinator", dir);
    if (one_pair(p))
        return -1;
    snprintf(p, sizeof p, "%s/clients/operator", dir);
    if (one_pair(p))
        return -1;
    for (int k = 0; k < workers; k++) {
        snprintf(p, sizeof p, "%s/workers/worker-%d", dir, k);
        if (one_pair(p))
            return -1;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: switchyard keygen NAME                          writes NAME.key and NAME.secret (0600)\n"
                    "       switchyard keygen --cluster DIR [--workers N]   coordinator, N worker and an operator key "
                    "pair\n"
                    "  in the layout `switchyard-coordinator --keys DIR` reads (allow-list: DIR/workers/*.key)\n");
}

int cmd_keygen(int argc, char **argv) {
    const char *cluster = NULL, *name = NULL;
    int workers = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cluster") && i + 1 < argc) {
            cluster = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            char *end;
            long w = strtol(argv[++i], &end, 10);
            if (*end || w < 0 || w > 4096) {
                fprintf(stderr, "keygen: --workers: expected 0..4096, got '%s'\n", argv[i]);
                return 2;
            }
            workers = (int)w;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' || name) {
            fprintf(stderr, "keygen: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        } else {
            name = argv[i];
        }
    }
    if (!!cluster == !!name) {
        usage();
        return 2;
    }
    umask(077);
    if (cluster ? sy_keygen_cluster(cluster, workers) : one_pair(name)) {
        fprintf(stderr, "keygen: %s\n", sy_lasterr());
        return 1;
    }
    if (cluster)
        printf("%s: coordinator.key/.secret, workers/worker-0..%d, clients/operator\n", cluster, workers - 1);
    else
        printf("%s.key (public), %s.secret (secret, mode 0600)\n", name, name);
    return 0;
}
