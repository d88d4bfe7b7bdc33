/* dedup: DeepEP's normal mode. A token goes once to each rank that owns any of its k experts, with its expert
 * indices and gate weights for that rank (int32 and float32, through the same all-to-all splits); the owner runs
 * its experts on the token's pairs, applies the gates and sums them; the source sums one partial per rank.
 * Backward mirrors it: dy once per (token, rank), the input gradient summed on the owner, the gate gradients back
 * in float32. Per-rank token volume, fwd+bwd, uniform routing: 4*T*D*b*(P-1)*(1 - C(E-E/P,k)/C(E,k)) (tp2ep's at
 * k=1). The exchange is xchg.c's stage A with every rank its own group. */
#include "xchg.h"

static const moe_param_t params[] = {
    { "chunks", "split the tokens into N chunks: chunk i+1's dispatch overlaps chunk i's experts, combine likewise",
      1, 1, MOE_MAXCHUNKS },
};

static int traffic(const moe_spec_t *spec, const moe_config_t *cfg, const moe_routing_t *rt, moe_traffic_t *t)
{
    return moe_traffic_xchg(cfg, rt, 1, (int)moe_spec_get(spec, "chunks"), t);
}

static int setup(moe_run_t *r, epb_err_t *err) { return xchg_setup(r, 1, err); }

const moe_strategy_t moe_strategy_dedup = {
    .name = "dedup",
    .what = "a token once to each rank owning any of its experts; gates applied and summed there",
    .anchor = "DeepEP normal mode",
    .params = params,
    .nparams = 1,
    .setup = setup,
    .traffic = traffic,
    XCHG_STRATEGY_OPS,
};
