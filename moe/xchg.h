/* moe/xchg.h (private to moe/): the routed exchange that tp2ep, dedup and hier are written on. The ranks form
 * groups (nodes) of gs consecutive-by-index ranks; tokens reach the experts' owners in at most two stages:
 *   A (between groups, over the ranks with the same index in every group): a token goes once to each group that
 *     owns any of its experts, to the rank of its source's index there (the relay), with its k expert indices
 *     (-1 for experts elsewhere) and gate weights as int32 / float32 rows through the same splits;
 *   B (inside a group): the relay's (token, expert) pairs go to the experts' owners, as tp2ep's all-to-all.
 * The relay applies the gates and sums its pairs of a token; the source sums one partial per group. Backward
 * mirrors it (the gate gradients return in float32). A is skipped with one group (tp2ep: the relay is the source),
 * B with one rank per group (dedup: the relay is the owner). Every stage runs per chunk (the `chunks` parameter)
 * under the framework's pipeline. The strategy files choose the grouping; the rest is here, written once. */
#ifndef EPB_MOE_XCHG_H
#define EPB_MOE_XCHG_H

#include "strategy.h"

/* group_size: 1 every rank its own group (dedup); 0 the job's nodes (all of one size); N >= 1 dividing P: N
 * consecutive ranks. A group size >= P is one group (tp2ep). EPB_EUSAGE when the grouping cannot be made. */
int xchg_setup(moe_run_t *r, int group_size, epb_err_t *err);
void xchg_teardown(moe_run_t *r);
/* groups and ranks per group of the run's exchange (after xchg_setup) */
void xchg_shape(const moe_run_t *r, int *groups, int *group_size);
int xchg_dispatch(moe_run_t *r, epb_err_t *err);
int xchg_combine(moe_run_t *r, epb_err_t *err);
int xchg_combine_backward(moe_run_t *r, epb_err_t *err);
int xchg_dispatch_backward(moe_run_t *r, epb_err_t *err);
extern const moe_pipe_t xchg_pipe_fwd, xchg_pipe_bwd;

/* The members every exchange strategy shares, in its moe_strategy_t after its name, params and setup. */
#define XCHG_STRATEGY_OPS                                                                                              \
    .teardown = xchg_teardown, .dispatch = xchg_dispatch, .combine = xchg_combine,                                     \
    .combine_backward = xchg_combine_backward, .dispatch_backward = xchg_dispatch_backward,                            \
    .pipe_fwd = &xchg_pipe_fwd, .pipe_bwd = &xchg_pipe_bwd

#endif
