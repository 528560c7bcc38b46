/* mesh.h: the coordinator's plan of a run over W workers: a 2-D mesh of D data-parallel
 * expert groups x P expert-parallel ranks (W = D * P). Every rank is a data-parallel
 * replica of the dense weights and holds a contiguous slice of the global batch rows;
 * within a data group the P ranks split the E experts into contiguous ranges, and rank
 * (d, p) holds the same experts as (d', p) for every d' (replicas whose expert gradients
 * are all-reduced together). Rank r = d * P + p.
 *
 * P is the largest divisor of W that is <= E (W <= E: P = W, every expert has one owner).
 * Shares follow measured speed when the workers differ by more than `balance_ratio`
 * (fastest / slowest GFLOP/s): batch rows in proportion to each rank's speed, and
 * experts in proportion to the slowest speed among the ranks that share an index p.
 * Otherwise shares are equal, and rank r holds rows [r*B/W, (r+1)*B/W) exactly as group
 * r of a single process with W groups. Pure function, no sockets. */
#ifndef SY_MESH_H
#define SY_MESH_H

typedef struct {
    int world, ep, dp, n_experts, global_batch;
    int *e_begin, *e_end;   /* [P] experts [e_begin[p], e_end[p]) held at index p */
    int *row0, *nrows;      /* [W] batch rows of each rank */
    int balanced;           /* 1 when shares follow speed */
} sy_mesh;

/* gflops: [W] measured speeds, or NULL (all equal). Returns 0, or -1 with a message when
 * the plan is impossible (fewer rows than workers...). */
int sy_mesh_plan(sy_mesh *m, int world, int n_experts, int global_batch, const double *gflops, double balance_ratio);
void sy_mesh_free(sy_mesh *m);
/* Gives every expert index p an equal share of the experts again (rows unchanged): for
 * shares measured from compute time per batch row, which moving experts would upset. */
void sy_mesh_equal_experts(sy_mesh *m);

static inline int sy_mesh_p(const sy_mesh *m, int rank) { return rank % m->ep; }
static inline int sy_mesh_d(const sy_mesh *m, int rank) { return rank / m->ep; }
/* The rank in data group d that holds expert e. */
int sy_mesh_owner(const sy_mesh *m, int d, int e);
/* Splits total into n shares proportional to w[] (NULL: equal), each >= 1; remainders by
 * largest fraction, ties to lower ranks. -1 when total < n. */
int sy_apportion(int total, int n, const double *w, int *out);

#endif
