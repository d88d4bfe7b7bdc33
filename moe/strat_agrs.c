/* agrs: all-gather / reduce-scatter expert parallelism (torchtitan PR #731, Megatron's "allgather" dispatcher).
 * Each rank routes its T tokens, all-gathers the tokens with their top-k indices and gate weights, runs its E/P
 * experts on the gathered rows routed to them, applies the gates there, and reduce-scatters the partial outputs
 * back to their shards. Backward mirrors it. Per-rank volume, fwd+bwd: about 4(P-1)*T*D*b bytes, whatever k.
 * With --gate-before the gates scale the gathered rows as they are placed and the partial outputs are summed
 * unweighted; the gate gradients come from the expert inputs. With --dispatch-dtype fp8 the tokens are gathered as
 * FP8 rows (quantized by their source, dequantized by every rank). */
#include <stdlib.h>

#include "strategy.h"

typedef struct {
    void *xg, *yg, *dyg, *dxg;  /* (P*T,D) gathered tokens, partial outputs, output grads, input grads */
    int32_t *idx_g, *pos_g;     /* (P*T*k) */
    float *w_g, *d_gate_g;      /* (P*T*k) */
    void *xq, *xgq;             /* --dispatch-dtype fp8: (T) and (P*T) packed rows */
} agrs_t;

static int setup(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = calloc(1, sizeof *a);
    if (!a) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = a;
    const moe_config_t *c = &r->cfg;
    size_t G = (size_t)r->P * (size_t)c->T, D = (size_t)c->D, Gk = G * (size_t)c->k, ab = moe_dtype_size(c->dtype);
    if (!(a->xg = moe_alloc(r, G * D * ab, err)) || !(a->yg = moe_alloc(r, G * D * ab, err)) ||
        !(a->dyg = moe_alloc(r, G * D * ab, err)) || !(a->dxg = moe_alloc(r, G * D * ab, err)) ||
        !(a->idx_g = moe_alloc(r, Gk * 4, err)) || !(a->pos_g = moe_alloc(r, Gk * 4, err)) ||
        !(a->w_g = moe_alloc(r, Gk * 4, err)) || !(a->d_gate_g = moe_alloc(r, Gk * 4, err)))
        return EPB_ESYS;
    size_t qb = moe_fp8_row_bytes(c->D);
    if (c->dispatch_fp8 &&
        (!(a->xq = moe_alloc(r, (size_t)c->T * qb, err)) || !(a->xgq = moe_alloc(r, G * qb, err))))
        return EPB_ESYS;
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    free(r->priv);
    r->priv = NULL;
}

static int dispatch(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    epb_comm_t *cm = r->comm;
    long G = (long)r->P * c->T;
    size_t qw = moe_fp8_row_bytes(c->D) / 4; /* a packed row in 4-byte words */
    if (c->dispatch_fp8) {
        MOE_PHASE(MOE_PH_PERMUTE);
        MOE_DO(r->be->ops->quant_fp8(r->be, a->xq, r->x, c->T, c->D));
    }
    MOE_PHASE(MOE_PH_DISPATCH);
    if (c->dispatch_fp8)
        MOE_DO(epb_allgather(cm, a->xq, a->xgq, (size_t)c->T * qw, EPB_DT_I32));
    else
        MOE_DO(epb_allgather(cm, r->x, a->xg, (size_t)(c->T * c->D), r->comm_dt));
    MOE_DO(epb_allgather(cm, r->assign, a->idx_g, (size_t)(c->T * c->k), EPB_DT_I32));
    MOE_DO(epb_allgather(cm, r->topk_w, a->w_g, (size_t)(c->T * c->k), EPB_DT_F32));
    MOE_DO(epb_sync(cm));
    MOE_PHASE(MOE_PH_PERMUTE);
    long rows = 0; /* the global counts of the owned experts: the gathered rows routed here (and kept) */
    for (int e = r->e0; e < r->e0 + r->El; e++) rows += (long)r->skept[e];
    if (moe_rows_reserve(r, rows, err)) return EPB_ESYS;
    if (c->dispatch_fp8) MOE_DO(r->be->ops->dequant_fp8(r->be, a->xg, a->xgq, G, c->D));
    MOE_DO(r->be->ops->permute_forward(r->be, r->xp, a->pos_g, r->offsets, a->xg, a->idx_g, G, c->k, c->D, r->e0, r->El));
    if (c->gate_before)
        MOE_DO(r->be->ops->scale_rows_forward(r->be, r->xp, a->xg, a->pos_g, a->w_g, G, c->k, c->D));
    return EPB_OK;
}

static int combine(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    long G = (long)r->P * c->T;
    /* the gates applied where the expert outputs are: each gathered token's partial sum over its local experts */
    MOE_PHASE(MOE_PH_GATE);
    MOE_DO(r->be->ops->combine_forward(r->be, a->yg, r->ep_out, a->pos_g, c->gate_before ? NULL : a->w_g, G, c->k, c->D));
    MOE_PHASE(MOE_PH_COMBINE);
    MOE_DO(epb_reduce_scatter(r->comm, a->yg, r->y, (size_t)(c->T * c->D), r->comm_dt));
    MOE_DO(epb_sync(r->comm));
    return EPB_OK;
}

static int combine_backward(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    long G = (long)r->P * c->T;
    MOE_PHASE(MOE_PH_COMBINE_BWD);
    MOE_DO(epb_allgather(r->comm, r->dy, a->dyg, (size_t)(c->T * c->D), r->comm_dt));
    MOE_DO(epb_sync(r->comm));
    MOE_PHASE(MOE_PH_GATE_BWD);
    MOE_DO(be->ops->zero(be, r->d_ep_out, (size_t)r->rows * (size_t)c->D * moe_dtype_size(c->dtype)));
    MOE_DO(be->ops->zero(be, a->d_gate_g, (size_t)(G * c->k) * 4));
    if (c->gate_before)
        MOE_DO(be->ops->combine_backward(be, r->d_ep_out, NULL, a->dyg, r->ep_out, a->pos_g, NULL, G, c->k, c->D));
    else
        MOE_DO(be->ops->combine_backward(be, r->d_ep_out, a->d_gate_g, a->dyg, r->ep_out, a->pos_g, a->w_g, G, c->k, c->D));
    return EPB_OK;
}

static int dispatch_backward(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    long G = (long)r->P * c->T;
    MOE_PHASE(MOE_PH_PERMUTE_BWD);
    MOE_DO(be->ops->zero(be, a->dxg, (size_t)(G * c->D) * moe_dtype_size(c->dtype)));
    if (c->gate_before)
        MOE_DO(be->ops->scale_rows_backward(be, a->dxg, a->d_gate_g, r->d_xp, a->xg, a->pos_g, a->w_g, G, c->k, c->D));
    else
        MOE_DO(be->ops->permute_backward(be, a->dxg, r->d_xp, a->pos_g, G, c->k, c->D));
    /* dx is the sum of every rank's partial input gradient of this rank's tokens (the router adds to it later) */
    MOE_PHASE(MOE_PH_DISPATCH_BWD);
    MOE_DO(epb_reduce_scatter(r->comm, a->dxg, r->dx, (size_t)(c->T * c->D), r->comm_dt));
    MOE_DO(epb_reduce_scatter(r->comm, a->d_gate_g, r->d_gate, (size_t)(c->T * c->k), EPB_DT_F32));
    MOE_DO(epb_sync(r->comm));
    return EPB_OK;
}

/* the all-gathers of tokens, indices and gates, the reduce-scatter of the partial outputs; backward mirrored. Rows:
 * the owner places its R rows out of the P T gathered ones, and applies the gates over them into P T partials */
static int traffic(const moe_spec_t *spec, const moe_config_t *c, const moe_routing_t *rt, moe_traffic_t *t)
{
    (void)spec;
    int P = rt->P, El = c->E / P;
    double rowb = (double)c->T * (double)c->D * rt->act_bytes, meta = (double)c->T * c->k * 4.0,
           xrowb = (double)c->T * moe_dispatch_row_bytes(c, rt->act_bytes); /* the tokens' all-gather */
    static const struct { int ph; moe_co_t co; int meta; } calls[] = {
        { MOE_PH_DISPATCH, MOE_CO_ALLGATHER, 0 }, { MOE_PH_DISPATCH, MOE_CO_ALLGATHER, 1 },
        { MOE_PH_DISPATCH, MOE_CO_ALLGATHER, 1 }, { MOE_PH_COMBINE, MOE_CO_REDUCE_SCATTER, 0 },
        { MOE_PH_COMBINE_BWD, MOE_CO_ALLGATHER, 0 }, { MOE_PH_DISPATCH_BWD, MOE_CO_REDUCE_SCATTER, 0 },
        { MOE_PH_DISPATCH_BWD, MOE_CO_REDUCE_SCATTER, 1 },
    };
    for (size_t i = 0; P > 1 && i < sizeof calls / sizeof *calls; i++) {
        int q = moe_traffic_call(t, calls[i].ph, calls[i].co, 1);
        if (q < 0) return -1;
        for (int r = 0; r < P; r++) moe_traffic_ring(t, q, r, (P - 1) * (calls[i].meta ? meta : i == 0 ? xrowb : rowb));
    }
    for (int r = 0; r < P; r++) {
        double R = 0;
        for (int e = r * El; e < (r + 1) * El; e++) R += moe_routing_expert_rows(rt, e);
        moe_traffic_copy(t, MOE_PH_PERMUTE, r, R + (double)P * c->T);
        moe_traffic_copy(t, MOE_PH_GATE, r, R + (double)P * c->T);
    }
    return 0;
}

const moe_strategy_t moe_strategy_agrs = {
    .name = "agrs",
    .what = "all-gather tokens to every rank, run the local experts, reduce-scatter the outputs",
    .anchor = "torchtitan PR #731, Megatron allgather dispatcher",
    .setup = setup,
    .teardown = teardown,
    .dispatch = dispatch,
    .combine = combine,
    .combine_backward = combine_backward,
    .dispatch_backward = dispatch_backward,
    .traffic = traffic,
};
