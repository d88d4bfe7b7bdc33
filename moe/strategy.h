/* moe/strategy.h: the expert-parallel strategy interface (DESIGN.md "The two strategies", "Phases"). Each
 * strategy is written once against ops.h and the communicator; a registry table selects by name. */
#ifndef EPB_MOE_STRATEGY_H
#define EPB_MOE_STRATEGY_H

#include "collectives.h"
#include "moe.h"

typedef struct moe_run moe_run_t;

typedef struct {
    const char *name;
    const char *what; /* one line for --help */
    int replicated;   /* every rank holds all E experts (expert gradients are all-reduced) */
    int (*setup)(moe_run_t *r, epb_err_t *err);
    int (*forward)(moe_run_t *r, epb_err_t *err);  /* y from x; counts, tpe; adds phase times and bytes */
    int (*backward)(moe_run_t *r, epb_err_t *err); /* dx, dWr (all-reduced), dw* of the owned experts */
    /* untimed, before each step: zero what backward adds into beyond the run's dx, dWr, dw* (NULL: nothing) */
    int (*zero_grad)(moe_run_t *r, epb_err_t *err);
    void (*teardown)(moe_run_t *r);
} moe_strategy_t;

extern const moe_strategy_t *const moe_strategies[];
extern const int moe_nstrategies;
const moe_strategy_t *moe_strategy_find(const char *name);
const char *moe_strategy_names(void); /* "local, agrs, tp2ep" */

/* One rank's state of one strategy on one configuration. Tensors are backend memory unless marked host. */
struct moe_run {
    const moe_strategy_t *st;
    moe_config_t cfg;
    epb_comm_t *comm;            /* the data communicator (buffers in comm->mem: backend memory) */
    epb_comm_t *hcomm;           /* a host-memory communicator of the same group (gathers for the check) */
    moe_backend_t *be;
    int P, rank;
    int e0, El;                  /* owned experts [e0, e0+El) */
    /* parameters */
    void *x;                     /* (T,D) this rank's tokens: global tokens rank*T .. */
    float *Wr;                   /* (D,E) replicated */
    float *bias;                 /* (E) replicated expert_bias this step routes with */
    void *w1, *w3, *w2;          /* (El,D,F) (El,D,F) (El,F,D) */
    /* outputs of a step */
    int32_t *topk_idx;           /* (T,k) */
    float *topk_w;               /* (T,k) */
    void *y, *dy, *dx;           /* (T,D) */
    float *dWr;                  /* (D,E) */
    void *dw1, *dw3, *dw2;       /* like w1, w3, w2 */
    int64_t *counts;             /* (E) host: this rank's selections */
    int64_t *tpe;                /* (E) host: tokens_per_expert, all-reduced over the group */
    float *bias_after;           /* (E) host: bias after this step's update */
    /* router state of the sharded strategies (moe_run_alloc_shard; NULL for local) */
    float *scores, *rwork;       /* (T,E) saved scores, route_backward scratch */
    float *d_gate;               /* (T,k) gradient of this rank's gate weights, written by the strategy */
    /* measurement of the last step: this rank's time, bytes sent to other ranks, and FLOPs per phase */
    double phase_us[MOE_NPHASES];
    double phase_bytes[MOE_NPHASES];
    double phase_flop[MOE_NPHASES];
    double step_us;              /* the whole forward+backward of the last step, on this rank */
    moe_event_t *ev[2];
    epb_dtype_t comm_dt;         /* the activation dtype as the communicator names it */
    void *stage;                 /* backend buffer: small host arrays through a device communicator */
    void *priv;                  /* the strategy's own buffers */
};

/* Sets up a strategy over cfg (T tokens per rank) on comm with backend be, parameters seeded by global index.
 * hcomm: a host-memory communicator of the same group, or NULL when comm itself takes host memory. */
int moe_run_create(moe_run_t *r, const moe_strategy_t *st, const moe_config_t *cfg, epb_comm_t *comm,
                   epb_comm_t *hcomm, moe_backend_t *be, epb_err_t *err);
void moe_run_destroy(moe_run_t *r);
/* One forward+backward: zeroes the gradients (untimed), runs, updates bias_after from the global counts.
 * Phase times, bytes and FLOPs of this step land in r->phase_*. */
int moe_run_step(moe_run_t *r, epb_err_t *err);
/* Training: W -= lr*dW for the router and the owned experts, expert_bias = bias_after. */
int moe_run_sgd(moe_run_t *r, double lr, epb_err_t *err);
/* Seeded upstream gradient dy (benchmark), or dy = 2(y - teacher)/(P*T*D) for the global MSE loss, whose
 * value (the same on every rank) goes to *loss. */
int moe_run_mse_grad(moe_run_t *r, double *loss, epb_err_t *err);

/* The global tensors of the last step, on every rank (host float32/int). Gathered from their owners. */
typedef struct {
    float *x, *router_w, *expert_bias, *w1, *w3, *w2, *y, *dy, *dx, *d_router_w, *dw1, *dw3, *dw2, *topk_w,
        *expert_bias_after;
    int32_t *topk_idx;
    int64_t *tokens_per_expert;
} moe_global_t;
int moe_run_gather(moe_run_t *r, moe_global_t *g, epb_err_t *err);
void moe_global_free(moe_global_t *g);

/* Computes the same global batch (P*T tokens, bias as given) on one device with the single-device layer and
 * compares every output and gradient, tokens_per_expert and the updated bias. Writes one line per tensor
 * into report (may be NULL) and returns the number of tensors that differ beyond tol (relative to the
 * reference's largest magnitude; NaN always differs), or -1 on a set-up failure (reason in err). */
int moe_check_global(const moe_global_t *g, const moe_config_t *cfg, int P, double tol, char *report,
                     size_t report_len, epb_err_t *err);

/* Helpers the strategy files share (moe/strategy.c). */
typedef struct {
    void *p[64];
    int n;
} moe_bufs_t;
/* Backend allocation recorded in b (freed together by moe_bufs_free); NULL with the reason in r->be->err. */
void *moe_buf(moe_run_t *r, moe_bufs_t *b, size_t bytes);
void moe_bufs_free(moe_run_t *r, moe_bufs_t *b);
/* For sharded strategies: allocates the run's parameters, outputs and router state for the owned experts (into
 * b) and seeds them by global index: x and dy of tokens rank*T.., Wr, expert_bias = 0, experts e0..e0+El. */
int moe_run_alloc_shard(moe_run_t *r, moe_bufs_t *b, epb_err_t *err);
int moe_ph_begin(moe_run_t *r);
int moe_ph_end(moe_run_t *r, moe_phase_t ph);
/* Runs `work` (an expression that is non-zero on failure, e.g. calls joined with ||) as phase ph of a strategy
 * function with `err` in scope: times it and returns the error, naming rank and phase, on failure. */
#define MOE_PHASE(r, ph, work)                                                                                 \
    do {                                                                                                       \
        if (moe_ph_begin(r) || (work) || moe_ph_end(r, ph))                                                    \
            return epb_fail(err, EPB_ESYS, "rank %d: phase %s: %s", (r)->rank, moe_phase_names[ph],            \
                            (r)->comm->err.msg[0] ? (r)->comm->err.msg : (r)->be->err.msg);                    \
    } while (0)

/* The router phases every sharded strategy runs alike: route (local counts copied to r->tpe for the caller's
 * all-reduce), and route_bwd from r->d_gate + grad_sync (dWr all-reduced over the group). */
int moe_shard_route(moe_run_t *r, epb_err_t *err);
int moe_shard_route_backward(moe_run_t *r, epb_err_t *err);

/* Collectives on small host arrays (counts, a loss) over the data communicator: directly when it takes host
 * memory, else staged through r->stage, so that a device communicator (NCCL) carries them as it would in a
 * training stack. n elements of at most 8 bytes, n <= 2*E. */
int moe_allreduce_host(moe_run_t *r, void *buf, size_t n, epb_dtype_t dt);
int moe_alltoall_host(moe_run_t *r, const void *send, void *recv, size_t n_per_rank, epb_dtype_t dt);

/* Bytes a ring all-reduce of n bytes sends per rank: 2(P-1)/P n. */
static inline double moe_ring_bytes(int P, double n) { return P > 1 ? 2.0 * (P - 1) / P * n : 0.0; }

/* FLOPs of the SwiGLU experts over `rows` rows: 6*rows*D*F forward, 12*rows*D*F backward */
double moe_expert_flop(const moe_config_t *c, double rows, int backward);

#endif
