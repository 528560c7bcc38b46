/* CURVE certificates and allow-lists (common/net/curve.c). */
#include <sys/stat.h>

#include "curve.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_file("cert", data, size);
    chmod(p, 0600);
    sy_cert c;
    sy_cert_load(p, &c, 1);
    sy_cert_load(p, &c, 0);
    char k[SY_KEY_LEN + 1];
    sy_pubkey_load(p, k);
    return 0;
}
