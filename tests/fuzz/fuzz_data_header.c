/* Data message headers (common/net/peer.c decodes one before every payload). */
#include "fuzz_util.h"
#include "switchyard.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Switchyard__DataHeader *h = switchyard__data_header__unpack(NULL, size, data);
    if (h) {
        volatile uint64_t x = h->epoch ^ (uint64_t)h->step ^ h->bytes ^ h->src ^ h->dst ^ h->tag;
        (void)x;
        switchyard__data_header__free_unpacked(h, NULL);
    }
    return 0;
}
