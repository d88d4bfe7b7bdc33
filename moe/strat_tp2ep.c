/* tp2ep: all-to-all expert parallelism on the TP mesh (torchtitan PR #1269, the seed; Megatron's alltoall
 * dispatcher). The input stays sharded along the sequence; each rank routes its own T tokens; per-expert counts
 * are exchanged with an all-to-all to derive the splits; the T*k routed rows go to the experts' owners with an
 * uneven all-to-all, are regrouped by expert, run, regrouped back and returned with the reverse all-to-all; the
 * gate weights are applied on the source rank. Backward: the same all-to-alls with the splits swapped. Receive
 * buffers are sized from the exchanged counts (grown when a step needs more), not for the worst case P*T*k.
 * chunks=N splits the tokens into N chunks whose all-to-alls overlap the previous chunk's experts.
 * Per-rank volume, fwd+bwd: about 4(P-1)/P*T*k*D*b bytes. The exchange is xchg.c's stage B over one group. */
#include "xchg.h"

static const moe_param_t params[] = {
    { "chunks", "split the tokens into N chunks: chunk i+1's dispatch overlaps chunk i's experts, combine likewise",
      1, 1, MOE_MAXCHUNKS },
};

static int traffic(const moe_spec_t *spec, const moe_config_t *cfg, const moe_routing_t *rt, moe_traffic_t *t)
{
    return moe_traffic_xchg(cfg, rt, rt->P, (int)moe_spec_get(spec, "chunks"), t);
}

static int setup(moe_run_t *r, epb_err_t *err) { return xchg_setup(r, r->P, err); }

const moe_strategy_t moe_strategy_tp2ep = {
    .name = "tp2ep",
    .what = "all-to-all tokens to the experts' owners with splits from exchanged counts",
    .anchor = "torchtitan PR #1269, Megatron alltoall dispatcher",
    .params = params,
    .nparams = 1,
    .is_default = 1, /* the seed's strategy */
    .pads = 1,       /* --pad-to-capacity: stage B's (owner, expert) blocks padded (xchg.c) */
    .setup = setup,
    .traffic = traffic,
    XCHG_STRATEGY_OPS,
};
