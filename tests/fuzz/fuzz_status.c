/* Status requests (the coordinator's status socket decodes them) and replies (the
 * `switchyard status` client decodes and prints them as a table, JSON and Prometheus). */
#include "fuzz_util.h"
#include "status_format.h"
#include "switchyard.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Switchyard__StatusRequest *q = switchyard__status_request__unpack(NULL, size, data);
    if (q)
        switchyard__status_request__free_unpacked(q, NULL);
    Switchyard__StatusReply *r = switchyard__status_reply__unpack(NULL, size, data);
    if (r) {
        static FILE *null;
        if (!null)
            null = fopen("/dev/null", "w");
        sy_status_table(null, r);
        sy_status_json(null, r);
        sy_status_prom(null, r);
        switchyard__status_reply__free_unpacked(r, NULL);
    }
    return 0;
}
