/* local: no expert parallelism. Every rank holds all E experts and runs its own T tokens through the
 * single-device layer; tokens_per_expert and every weight gradient are all-reduced (data parallel). */
#include <stdlib.h>

#include "strategy.h"

static int setup(moe_run_t *r, epb_err_t *err)
{
    moe_layer_t *L = calloc(1, sizeof *L);
    if (!L) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = L;
    int rc = moe_layer_create(L, &r->cfg, r->cfg.T, r->be, err);
    if (!rc) rc = moe_layer_init(L, (long)r->rank * r->cfg.T, err);
    if (rc) return rc;
    r->x = L->x; r->Wr = L->Wr; r->bias = L->bias; r->w1 = L->w1; r->w3 = L->w3; r->w2 = L->w2;
    r->topk_idx = L->topk_idx; r->topk_w = L->topk_w; r->y = L->y; r->dy = L->dy; r->dx = L->dx;
    r->dWr = L->dWr; r->dw1 = L->dw1; r->dw3 = L->dw3; r->dw2 = L->dw2;
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    moe_layer_t *L = r->priv;
    if (L) moe_layer_destroy(L);
    free(L);
    r->priv = NULL;
}

static int forward(moe_run_t *r, epb_err_t *err)
{
    moe_layer_t *L = r->priv;
    const moe_config_t *c = &r->cfg;
    int rc = moe_layer_forward(L, r->phase_us, err);
    if (rc) return rc;
    for (int e = 0; e < c->E; e++) r->tpe[e] = r->counts[e] = L->counts[e];
    /* sync_counts: the global tokens_per_expert */
    MOE_PHASE(r, MOE_PH_SYNC_COUNTS, moe_allreduce_host(r, r->tpe, (size_t)c->E, EPB_DT_I64));
    r->phase_bytes[MOE_PH_SYNC_COUNTS] = moe_ring_bytes(r->P, c->E * 8.0);
    r->phase_flop[MOE_PH_EXPERTS_FWD] = moe_expert_flop(c, (double)c->T * c->k, 0);
    return EPB_OK;
}

static int backward(moe_run_t *r, epb_err_t *err)
{
    moe_layer_t *L = r->priv;
    const moe_config_t *c = &r->cfg;
    int rc = moe_layer_backward(L, r->phase_us, err);
    if (rc) return rc;
    /* grad_sync: the router and (replicated) expert weight gradients */
    size_t wn = (size_t)c->E * (size_t)c->D * (size_t)c->F, dr = (size_t)c->D * (size_t)c->E;
    MOE_PHASE(r, MOE_PH_GRAD_SYNC,
              epb_allreduce(r->comm, r->dWr, r->dWr, dr, EPB_DT_F32, EPB_SUM) ||
              epb_allreduce(r->comm, r->dw1, r->dw1, wn, r->comm_dt, EPB_SUM) ||
              epb_allreduce(r->comm, r->dw3, r->dw3, wn, r->comm_dt, EPB_SUM) ||
              epb_allreduce(r->comm, r->dw2, r->dw2, wn, r->comm_dt, EPB_SUM) || epb_sync(r->comm));
    r->phase_bytes[MOE_PH_GRAD_SYNC] = moe_ring_bytes(r->P, (double)dr * 4 + 3.0 * (double)wn * moe_dtype_size(c->dtype));
    r->phase_flop[MOE_PH_EXPERTS_BWD] = moe_expert_flop(c, (double)c->T * c->k, 1);
    return EPB_OK;
}

static int zero_grad(moe_run_t *r, epb_err_t *err) { return moe_layer_zero_grad(r->priv, err); }

const moe_strategy_t moe_strategy_local = {
    "local", "every rank holds all experts; weight gradients all-reduced (the single-device semantics)", 1,
    setup, forward, backward, zero_grad, teardown,
};
