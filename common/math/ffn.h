/* ffn.h: the ReLU feed-forward block, relu(X W1) W2, used by dense layers and by every
 * expert. n rows, C channels, F hidden. */
#ifndef SY_FFN_H
#define SY_FFN_H

/* Y[n,C] = (relu(X[n,C] @ w1[C,F]) * mask) @ w2[F,C]; H[n,F] saved (after relu and mask).
 * mask: NULL, or [n,F] multipliers (0 or 1/(1-p)) for dropout on the hidden units. */
void sy_ffn_forward(float *Y, float *H, const float *X, const float *w1, const float *w2, const float *mask, int n,
                    int C, int F);
/* dX[n,C] += (skipped when NULL), dw1 += , dw2 += ; dH[n,F] is scratch */
void sy_ffn_backward(float *dX, float *dw1, float *dw2, float *dH, const float *dY, const float *X, const float *H,
                     const float *w1, const float *w2, const float *mask, int n, int C, int F);
/* sy_ffn_backward in two halves, for a caller that sends dX on before it computes the
 * weight gradients: the input half leaves dH (after mask and relu) for the weight half,
 * which must get it untouched. Every output is computed by the same calls on the same
 * inputs as in sy_ffn_backward, so the bits are the same. */
void sy_ffn_backward_input(float *dX, float *dH, const float *dY, const float *H, const float *w1, const float *w2,
                           const float *mask, int n, int C, int F);
void sy_ffn_backward_weights(float *dw1, float *dw2, const float *dH, const float *dY, const float *X, const float *H,
                             int n, int C, int F);

#endif
