#include "msgsize.h"

#include <zmq.h>

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

int64_t sy_limit_ctrl_bytes(const sy_model_cfg *mc, int batch, int T) {
    int64_t C = mc->d_model, V = mc->vocab, F = mc->d_ff, E = mc->n_experts;
    int64_t t = max64(V * C, (int64_t)mc->seq_len * C); /* wte, lm_head, wpe */
    t = max64(t, 3 * C * C);                             /* wqkv */
    t = max64(t, C * F);                                 /* w1, w2, each expert's */
    t = max64(t, C * E);                                 /* router */
    t *= 4;
    t = max64(t, (int64_t)batch * T * (mc->top_k > 0 ? mc->top_k : 1) * 4);
    return t + SY_LIMIT_SLACK;
}

int64_t sy_limit_data_bytes(const sy_model_cfg *mc, int batch, int T, int chunk_bytes) {
    int64_t rows = (int64_t)batch * T * (mc->top_k > 0 ? mc->top_k : 1);
    int64_t a2a = rows * (8 + 4 * (int64_t)mc->d_model) + 4 * (int64_t)mc->n_experts * 64;
    return max64(a2a, chunk_bytes) + SY_LIMIT_SLACK;
}

void sy_limit_set(void *sock, int64_t bytes) { zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &bytes, sizeof bytes); }
