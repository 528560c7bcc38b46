/* router.h: Switch routing for one group of n tokens: float32 router logits and softmax,
 * top-k choice, per-group expert capacity with token dropping, the load-balancing loss
 * and the router z-loss. The math only; model.c moves the token rows.
 *
 * Capacity: cap = ceil(capacity_factor * n / E). Tokens claim slots in their order
 * within the group (flattened batch row, position); with top-k, every token's first
 * choice claims before any second choice (GShard's priority). A token past capacity is
 * dropped for that choice: its output is zero and the residual carries it.
 * aux = E * sum_i f_i P_i   (f_i: share of tokens whose argmax is i, before dropping;
 *                           P_i: mean router probability of i)
 * z   = mean_t logsumexp(logits_t)^2
 * The gate of a kept choice is the router probability p[e] (not renormalised). */
#ifndef SY_ROUTER_H
#define SY_ROUTER_H

typedef struct {
    float *logits;   /* [n, E] router logits (saved; probs overwrite a copy) */
    float *probs;    /* [n, E] softmax */
    float *lse;      /* [n]    logsumexp of each row */
    int *choice;     /* [n, k] expert of the token's r-th choice, or -1 when dropped */
    float *gate;     /* [n, k] router probability of that choice (0 when dropped) */
    int *argmax;     /* [n]    top-1 expert before dropping */
    int *kept;       /* [E]    choices kept per expert */
    int *wanted;     /* [E]    choices made per expert, kept or not */
} sy_route;

/* Expert capacity of a group of n tokens. */
int sy_router_capacity(double capacity_factor, int n, int E);

/* Routes one group. x[n,C]: router input (already jittered); w[C,E]. Fills every field
 * of r (caller-owned buffers of the sizes above) and returns aux and z via pointers. */
void sy_router_forward(sy_route *r, const float *x, const float *w, int n, int C, int E, int k, int capacity,
                       double *aux, double *z);

/* dlogits[n,E] = d loss / d logits (SET, not accumulated), given dgate[n,k] = d loss / d gate,
 * and the weights of this group's aux and z terms in the loss (coef / number of groups). */
void sy_router_backward(float *dlogits, const sy_route *r, const float *dgate, int n, int E, int k, float aux_scale,
                        float z_scale);

/* capacity_factor arrives as float from YAML; the reference computes ceil() on the decimal
 * it was written as. This recovers that decimal (1.1f -> 1.1). */
double sy_capacity_factor_decimal(float cf);

#endif
