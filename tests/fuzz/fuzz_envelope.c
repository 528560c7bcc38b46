/* Control envelopes (common/net/ctrl.c decodes them off the coordinator's ROUTER and the
 * workers' DEALERs): unpack, then walk what the handlers read. */
#include "fuzz_util.h"
#include "switchyard.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Switchyard__Envelope *e = switchyard__envelope__unpack(NULL, size, data);
    if (!e)
        return 0;
    size_t n = 0;
    switch (e->msg_case) {
    case SWITCHYARD__ENVELOPE__MSG_REGISTER:
        n += strlen(e->register_->host) + strlen(e->register_->peer_endpoint) + strlen(e->register_->worker_id);
        break;
    case SWITCHYARD__ENVELOPE__MSG_ASSIGNMENT:
        for (size_t i = 0; i < e->assignment->n_peers; i++)
            n += strlen(e->assignment->peers[i]);
        for (size_t i = 0; i < e->assignment->n_peer_keys; i++)
            n += strlen(e->assignment->peer_keys[i]);
        n += strlen(e->assignment->config_yaml);
        break;
    case SWITCHYARD__ENVELOPE__MSG_SHARD:
        for (size_t i = 0; i < e->shard->n_shape; i++)
            n += (size_t)e->shard->shape[i];
        n += strlen(e->shard->name) + strlen(e->shard->dtype);
        break;
    case SWITCHYARD__ENVELOPE__MSG_REPORT:
        for (size_t i = 0; i < e->report->n_expert_wanted; i++)
            n += e->report->expert_wanted[i];
        break;
    case SWITCHYARD__ENVELOPE__MSG_ERROR:
        n += strlen(e->error->message);
        break;
    default:
        break;
    }
    (void)n;
    switchyard__envelope__free_unpacked(e, NULL);
    return 0;
}
