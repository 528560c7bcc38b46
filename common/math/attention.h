/* attention.h: causal multi-head self-attention core (the projections around it are
 * plain matmuls in model.c). qkv rows hold [q | k | v], head h uses columns
 * h*hd..(h+1)*hd of each, hd = C / H. */
#ifndef SY_ATTENTION_H
#define SY_ATTENTION_H

/* qkv[B*T, 3C] -> out[B*T, C]; att[B, H, T, T]: saved softmax probabilities. Only the causal
 * part is written (row i up to the end of its query block, zeros right of the diagonal);
 * the rest of att is neither written nor read. */
void sy_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int H);
/* dqkv[B*T, 3C] += d/dqkv given dout[B*T, C]; scratch [T, T] */
void sy_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att, int B,
                           int T, int C, int H);

#endif
