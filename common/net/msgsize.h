/* msgsize.h: the largest legal message of a run, for ZMQ_MAXMSGSIZE. ZeroMQ checks the
 * limit per frame and drops the connection of a peer that sends a larger one, so a
 * stranger (or a broken peer) cannot make a daemon allocate more than this per frame. */
#ifndef SY_MSGSIZE_H
#define SY_MSGSIZE_H

#include <stddef.h>
#include <stdint.h>

#include "model_cfg.h"

#define SY_LIMIT_SLACK (1u << 20) /* envelopes, config text, headers */

/* Largest frame on the control socket: a checkpoint tensor (parameter or AdamW moment),
 * a refcheck routing tensor [batch*T, top_k] int32, or an envelope with the config. */
int64_t sy_limit_ctrl_bytes(const sy_model_cfg *mc, int batch, int T);
/* Largest frame on a data socket: an all-to-all buffer (every token of the global batch,
 * top_k copies, a row of C floats and an 8-byte index each) or an all-reduce chunk. */
int64_t sy_limit_data_bytes(const sy_model_cfg *mc, int batch, int T, int chunk_bytes);
/* Sets ZMQ_MAXMSGSIZE on sock (connections made after the call). */
void sy_limit_set(void *sock, int64_t bytes);

#endif
