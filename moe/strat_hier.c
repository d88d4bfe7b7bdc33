/* hier: two-level all-to-all (Tutel 2DH, DeepEP internode). A token crosses to each other node that owns any of
 * its experts once, to the rank of its source's index there, with its indices and gates for that node; that rank
 * spreads the token's pairs to their owners inside the node, applies the gates to what comes back, sums, and
 * returns one partial per (token, node); backward mirrors it. The nodes are the job's hosts (node_size=0) or every
 * node_size consecutive ranks (testable on one machine). With one node this is tp2ep's traffic, with one rank per
 * node dedup's. The exchange is xchg.c's stages A (between nodes) and B (inside). */
#include <stdio.h>

#include "xchg.h"

static const moe_param_t params[] = {
    { "node_size", "ranks per node: 0 = the job's hosts, N = every N consecutive ranks", 0, 0, 1 << 20 },
    { "chunks", "split the tokens into N chunks: chunk i+1's dispatch overlaps chunk i's experts, combine likewise",
      1, 1, MOE_MAXCHUNKS },
};

static int validate(const moe_spec_t *spec, const moe_config_t *cfg, int P, epb_err_t *err)
{
    (void)cfg;
    long ns = moe_spec_get(spec, "node_size");
    if (ns > 0 && P % ns)
        return epb_fail(err, EPB_EUSAGE, "--strategy hier:node_size=%ld does not divide %d ranks", ns, P);
    return EPB_OK;
}

/* nodes of node_size ranks, or of the job's (the routing's ranks per node) */
static int traffic(const moe_spec_t *spec, const moe_config_t *cfg, const moe_routing_t *rt, moe_traffic_t *t)
{
    long ns = moe_spec_get(spec, "node_size");
    return moe_traffic_xchg(cfg, rt, ns > 0 ? (int)ns : rt->G, (int)moe_spec_get(spec, "chunks"), t);
}

static int setup(moe_run_t *r, epb_err_t *err)
{
    int rc = xchg_setup(r, (int)moe_spec_get(&r->spec, "node_size"), err), ng, gs;
    if (rc) return rc;
    xchg_shape(r, &ng, &gs);
    if (ng == 1 || gs == 1)
        snprintf(r->note, sizeof r->note, "hier: %d node%s of %d rank%s: the traffic of %s", ng, ng > 1 ? "s" : "", gs,
                 gs > 1 ? "s" : "", ng == 1 ? "tp2ep (nothing crosses nodes)" : "dedup (one rank per node)");
    else
        snprintf(r->note, sizeof r->note, "hier: %d nodes of %d ranks", ng, gs);
    return EPB_OK;
}

const moe_strategy_t moe_strategy_hier = {
    .name = "hier",
    .what = "two-level all-to-all: a token crosses to each node once, then spreads inside it",
    .anchor = "Tutel 2DH, DeepEP internode",
    .params = params,
    .nparams = 2,
    .validate = validate,
    .setup = setup,
    .traffic = traffic,
    XCHG_STRATEGY_OPS,
};
