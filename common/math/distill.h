/* distill.h: the soft-target term of knowledge distillation (Hinton, Vinyals and Dean
 * 2015, as the Switch Transformer paper uses it to distil a sparse model into a dense
 * one). With p = softmax(teacher / T) and q = softmax(student / T) for each token:
 *
 *   soft = T^2 * KL(p || q) = T^2 * sum_v p_v (log p_v - log q_v)
 *   d soft / d student_v = T * (q_v - p_v)
 *
 * (the T^2 keeps the gradient's size independent of T). The student's loss is
 *   (1 - alpha) * mean hard cross-entropy + alpha * mean soft + its aux and z terms;
 * model.h's sy_model_backward_mix takes the two parts. Pure numerics over caller buffers. */
#ifndef SY_DISTILL_H
#define SY_DISTILL_H

#include <stdint.h>

#include "model.h"

/* student, teacher: logits [N, V]. Returns the SUM over the N tokens of T^2 KL(p || q)
 * (double). When dlogits is not NULL it is SET to scale * T * (q - p). */
double sy_distill_soft(float *dlogits, const float *student, const float *teacher, int N, int V, float T,
                       float scale);

/* A teacher for one student: its model (every expert; same vocab, T and rows as the
 * student's passes), a [max_B*T, V] buffer for the soft term's gradient, the mix. */
typedef struct {
    sy_model *teacher;
    float *dlogits;
    float alpha, temperature;
} sy_distill;

/* One pass of distillation training: the teacher's eval forward (evaluation capacity, no
 * dropout or jitter, the same routing groups) and the student's forward on the same
 * tokens, then the student's backward of (1 - alpha) CE + alpha soft + aux + z, the soft
 * term normalised like CE (by ps->ce_denom, or the tokens here), so that in a
 * distributed step the ranks' shares add up to the global batch's. *l: the student's
 * own terms; *soft: this pass's share of the mean soft term. 0 or -1 (sy_lasterr). */
int sy_distill_forward_backward(sy_distill *d, sy_model *student, const sy_pass *ps, const int32_t *tokens,
                                sy_losses *l, double *soft);

#endif
