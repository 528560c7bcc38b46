/* sy-fuzz-seeds OUT_DIR [STATUS_ENDPOINT]: writes real messages as seeds for the fuzz
 * corpora (OUT_DIR/envelope, data_header, status), packed by the same protobuf-c code
 * the daemons use; with STATUS_ENDPOINT, also a live coordinator's StatusReply (open
 * status). The file-based corpora (configs, manifests, token files, certificates) are
 * copies of real files: see tests/fuzz/README.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "config.h"
#include "switchyard.pb-c.h"

static const char *g_out;

static void put(const char *sub, const char *name, const uint8_t *b, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_out, sub);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", g_out, sub, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(b, 1, n, f) != n) {
        fprintf(stderr, "%s: %s\n", p, strerror(errno));
        exit(1);
    }
    fclose(f);
}

static void env(const char *name, Switchyard__Envelope *e) {
    size_t n = switchyard__envelope__get_packed_size(e);
    uint8_t *b = malloc(n + 1);
    switchyard__envelope__pack(e, b);
    put("envelope", name, b, n);
    free(b);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sy-fuzz-seeds OUT_DIR [STATUS_ENDPOINT]\n");
        return 2;
    }
    g_out = argv[1];
    mkdir(g_out, 0755);
    Switchyard__Envelope e = SWITCHYARD__ENVELOPE__INIT;
    Switchyard__Register r = SWITCHYARD__REGISTER__INIT;
    r.protocol_version = 1;
    r.worker_id = "vm:1234:5c1e37a7";
    r.host = "vm";
    r.peer_endpoint = "tcp://127.0.0.1:40001";
    r.cores = 2;
    r.memory_bytes = 8ull << 30;
    r.gflops = 60.5;
    r.byte_order = 1;
    r.pid = 1234;
    r.threads = 1;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_REGISTER;
    e.register_ = &r;
    env("register", &e);

    sy_config cfg;
    sy_config_defaults(&cfg);
    sy_config_load_default(&cfg);
    char *yaml = sy_config_to_yaml(&cfg);
    Switchyard__Assignment a = SWITCHYARD__ASSIGNMENT__INIT;
    uint32_t eb[2] = {0, 2}, ee[2] = {2, 4}, r0[2] = {0, 8}, nr[2] = {8, 8};
    char *peers[2] = {"tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002"};
    char *keys[2] = {"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"};
    a.run_id = "6b0b9f94-053b";
    a.epoch = 117697666088961ull;
    a.world = 2;
    a.ep = 2;
    a.dp = 1;
    a.n_expert_begin = a.n_expert_end = 2;
    a.expert_begin = eb;
    a.expert_end = ee;
    a.n_row0 = a.n_nrows = a.n_peers = a.n_peer_keys = 2;
    a.row0 = r0;
    a.nrows = nr;
    a.peers = peers;
    a.peer_keys = keys;
    a.config_yaml = yaml;
    a.start_step = 100;
    a.global_batch = 16;
    a.state_follows = 1;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_ASSIGNMENT;
    e.assignment = &a;
    env("assignment", &e);

    Switchyard__StepCmd sc = SWITCHYARD__STEP_CMD__INIT;
    sc.epoch = a.epoch;
    sc.step = 184;
    sc.save_after = 1;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_STEP;
    e.step = &sc;
    env("step", &e);

    Switchyard__StepReport rep = SWITCHYARD__STEP_REPORT__INIT;
    uint32_t wanted[8] = {10, 20, 30, 40, 11, 21, 31, 41}, kept[8] = {9, 19, 29, 39, 10, 20, 30, 40};
    uint32_t lang[40] = {1, 2, 3};
    rep.epoch = a.epoch;
    rep.step = 184;
    rep.rank = 1;
    rep.loss = 2.34;
    rep.ce = 2.32;
    rep.aux = 2.01;
    rep.z = 0.10;
    rep.tokens = 2048;
    rep.n_expert_wanted = rep.n_expert_kept = 8;
    rep.expert_wanted = wanted;
    rep.expert_kept = kept;
    rep.n_expert_lang = 40;
    rep.expert_lang = lang;
    rep.languages = 5;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_REPORT;
    e.report = &rep;
    env("report", &e);

    Switchyard__TensorShard ts = SWITCHYARD__TENSOR_SHARD__INIT;
    int64_t shape[2] = {256, 64};
    ts.epoch = a.epoch;
    ts.step = 100;
    ts.name = "layers.1.experts.3.w1";
    ts.dtype = "f32";
    ts.n_shape = 2;
    ts.shape = shape;
    ts.bytes = 256 * 64 * 4;
    ts.crc32c = 0x12345678;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_SHARD;
    e.shard = &ts;
    env("shard", &e);

    Switchyard__SaveDone sd = SWITCHYARD__SAVE_DONE__INIT;
    sd.epoch = a.epoch;
    sd.step = 100;
    sd.tensors = 69;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_SAVE_DONE;
    e.save_done = &sd;
    env("save_done", &e);

    Switchyard__Heartbeat hb = SWITCHYARD__HEARTBEAT__INIT;
    hb.epoch = a.epoch;
    hb.step = 184;
    hb.state = 3;
    hb.rank = 1;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_HEARTBEAT;
    e.heartbeat = &hb;
    env("heartbeat", &e);

    Switchyard__Error er = SWITCHYARD__ERROR__INIT;
    er.epoch = a.epoch;
    er.rank = 1;
    er.message = "step 184: peer: no data from rank 0 within 60.0 s";
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_ERROR;
    e.error = &er;
    env("error", &e);

    Switchyard__Abort ab = SWITCHYARD__ABORT__INIT;
    ab.epoch = a.epoch;
    ab.reason = "rank 1 (vm:1234:5c1e37a7) died";
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_ABORT;
    e.abort = &ab;
    env("abort", &e);

    Switchyard__Refuse rf = SWITCHYARD__REFUSE__INIT;
    rf.reason = "protocol version 2, this coordinator speaks 1";
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_REFUSE;
    e.refuse = &rf;
    env("refuse", &e);

    Switchyard__Ready rd = SWITCHYARD__READY__INIT;
    rd.epoch = a.epoch;
    rd.rank = 1;
    e.msg_case = SWITCHYARD__ENVELOPE__MSG_READY;
    e.ready = &rd;
    env("ready", &e);

    /* data headers as common/net/peer.c sends them */
    struct {
        const char *name;
        uint32_t op, tag, chunk, dtype;
        uint64_t bytes;
    } dh[] = {{"alltoall", 1, 5, 0, 0, 70000},
              {"allreduce_f32", 2, ((0x10000u | (184u << 2)) << 8) | 1, 3, 1, 1 << 20},
              {"allreduce_bf16", 2, ((0x10000u | (184u << 2) | 1) << 8) | 0x80, 0, 2, 1 << 19},
              {"barrier", 1, 0x80000007u, 0, 0, 0}};
    for (size_t i = 0; i < sizeof dh / sizeof dh[0]; i++) {
        Switchyard__DataHeader h = SWITCHYARD__DATA_HEADER__INIT;
        h.epoch = a.epoch;
        h.step = 184;
        h.op = dh[i].op;
        h.tag = dh[i].tag;
        h.chunk = dh[i].chunk;
        h.src = 0;
        h.dst = 1;
        h.dtype = dh[i].dtype;
        h.bytes = dh[i].bytes;
        uint8_t b[128];
        size_t n = switchyard__data_header__pack(&h, b);
        put("data_header", dh[i].name, b, n);
    }

    Switchyard__StatusRequest q = SWITCHYARD__STATUS_REQUEST__INIT;
    q.protocol_version = 1;
    uint8_t qb[16];
    size_t qn = switchyard__status_request__pack(&q, qb);
    put("status", "request", qb, qn);
    if (argc > 2) { /* a live reply */
        void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_REQ);
        int t = 3000, zero = 0;
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof t);
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_connect(s, argv[2]);
        zmq_send(s, qb, qn, 0);
        static uint8_t reply[1 << 20];
        int n = zmq_recv(s, reply, sizeof reply, 0);
        if (n > 0 && n < (int)sizeof reply)
            put("status", "reply_live", reply, (size_t)n);
        else
            fprintf(stderr, "no status reply from %s\n", argv[2]);
        zmq_close(s);
        zmq_ctx_term(ctx);
    }
    free(yaml);
    sy_config_free(&cfg);
    return 0;
}
