/* Token files (common/store/tokens.c: train.bin / val.bin made by switchyard prepare). */
#include "data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_file("tokens.bin", data, size);
    sy_tokens *t = sy_tokens_load(p);
    if (t) {
        int64_t docs[64], bytes[64];
        if (t->n_langs <= 64)
            sy_tokens_lang_stats(t, docs, bytes);
        (void)sy_tokens_entropy(t);
        sy_tokens_destroy(&t);
    }
    return 0;
}
