/* infer.h: the model's forward one token at a time, with a key/value cache, for
 * generation: appending a token costs one position (its own projections, attention over
 * the cached keys and values, its expert), not the whole prefix again. Numeric code only:
 * weights come from the caller (a model's sy_weights, every expert held), the cache is
 * one arena sized once for `ctx` positions, nothing is allocated per token.
 *
 * Routing when tokens come one at a time. The full forward (model.h) splits tokens into
 * groups and gives each expert ceil(cf * tokens_in_group / E) slots per group; tokens
 * claim slots in (row, position) order. Here the sequence being generated is ONE group
 * of `ctx` tokens (the context window): capacity = ceil(cf * ctx / E) per expert and
 * switch layer, cf = the evaluation capacity factor, and each token claims its slot when
 * it arrives. With top-1 routing that is exactly what the full eval forward of one row
 * of ctx positions in one group does: a token's fate depends only on the tokens before
 * it (their routing depends only on their own prefixes), so position t is routed and
 * dropped the same whether the window is computed at once or token by token, and the
 * logits agree to float rounding (tests/test_infer.c checks both). With top_k > 1 the
 * full forward lets every first choice claim before any second choice (GShard's
 * priority, which looks ahead in the group); here a token's choices claim in rank order
 * when it arrives, so the two differ only when a second choice meets a full expert.
 * (The alternative, every new token its own group of one, would never drop a token:
 * capacity ceil(cf / E) = 1. That is a different model from the one evaluated.)
 * Jitter and dropouts are training-only and absent here. */
#ifndef SY_INFER_H
#define SY_INFER_H

#include "model.h"

typedef struct sy_infer sy_infer;

/* A cache for up to ctx positions (1 <= ctx <= cfg->seq_len) of the model whose weights
 * are w (every expert held; the views must outlive the cache). capacity_factor: per
 * switch layer and expert, ceil(capacity_factor * ctx / E) tokens are kept. NULL on
 * failure (sy_lasterr). */
sy_infer *sy_infer_new(const sy_model_cfg *cfg, const sy_weights *w, int ctx, double capacity_factor);
void sy_infer_destroy(sy_infer **s);

/* Empties the cache and the experts' slots: the next token is position 0. */
void sy_infer_reset(sy_infer *s);
/* Positions in the cache (the next token's position). */
int sy_infer_len(const sy_infer *s);
int sy_infer_ctx(const sy_infer *s);

/* Appends token (0..V-1) at the next position and writes the logits [V] that predict the
 * one after it. -1 with a message when the window is full or the token is out of range. */
int sy_infer_step(sy_infer *s, int token, float *logits);

/* Routing of the last step in switch layer l: top_k experts (-1 where dropped), or NULL
 * for a dense layer. */
const int *sy_infer_routing(const sy_infer *s, int layer);

/* Picks the next token from logits [V] (overwritten): temperature <= 0 takes the argmax
 * (lowest index on ties); otherwise softmax(logits / temperature) restricted to the top_k
 * most likely tokens (top_k <= 0 or >= V: all; V <= 256, the byte vocabulary), sampled by inverse CDF at u in [0, 1). */
int sy_sample_token(float *logits, int V, float temperature, int top_k, double u);

#endif
