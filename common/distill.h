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

/* student, teacher: logits [N, V]. Returns the SUM over the N tokens of T^2 KL(p || q)
 * (double). When dlogits is not NULL it is SET to scale * T * (q - p). */
double sy_distill_soft(float *dlogits, const float *student, const float *teacher, int N, int V, float T,
                       float scale);

#endif
