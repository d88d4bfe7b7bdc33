/* local: no expert parallelism (data parallel). Every rank holds all E experts and runs its own T tokens through
 * them; the framework all-reduces tokens_per_expert and every weight gradient. The single-device semantics: the
 * reference every strategy is checked against is this strategy on one rank over the whole batch. With
 * --gate-before the gate weights scale the expert rows as they are placed, and the combine sums unweighted. With
 * --dispatch-dtype fp8 the expert rows are quantized and dequantized in place: what an owner receives elsewhere. */
#include <stdlib.h>

#include "strategy.h"

typedef struct {
    int32_t *pos; /* (T*k) row of pair i in xp */
    void *q;      /* (T*k) packed FP8 rows with --dispatch-dtype fp8 */
} local_t;

static int setup(moe_run_t *r, epb_err_t *err)
{
    local_t *a = calloc(1, sizeof *a);
    if (!a) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = a;
    size_t Tk = (size_t)(r->cfg.T * r->cfg.k);
    if (!(a->pos = moe_alloc(r, Tk * 4, err))) return EPB_ESYS;
    if (r->cfg.dispatch_fp8 && !(a->q = moe_alloc(r, Tk * moe_fp8_row_bytes(r->cfg.D), err))) return EPB_ESYS;
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    free(r->priv);
    r->priv = NULL;
}

static int dispatch(moe_run_t *r, epb_err_t *err)
{
    local_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    MOE_PHASE(MOE_PH_PERMUTE);
    if (moe_rows_reserve(r, c->T * c->k, err)) return EPB_ESYS;
    MOE_DO(r->be->ops->permute_forward(r->be, r->xp, a->pos, r->offsets, r->x, r->assign, c->T, c->k, c->D, 0, c->E));
    if (c->gate_before) /* the expert's input is gate * x */
        MOE_DO(r->be->ops->scale_rows_forward(r->be, r->xp, r->x, a->pos, r->topk_w, c->T, c->k, c->D));
    if (c->dispatch_fp8) { /* the expert's input is its token as FP8 rows carry it */
        MOE_DO(r->be->ops->quant_fp8(r->be, a->q, r->xp, (long)r->offsets[c->E], c->D));
        MOE_DO(r->be->ops->dequant_fp8(r->be, r->xp, a->q, (long)r->offsets[c->E], c->D));
    }
    return EPB_OK;
}

static int combine(moe_run_t *r, epb_err_t *err)
{
    local_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    MOE_PHASE(MOE_PH_GATE);
    MOE_DO(r->be->ops->combine_forward(r->be, r->y, r->ep_out, a->pos, c->gate_before ? NULL : r->topk_w, c->T, c->k, c->D));
    return EPB_OK;
}

static int combine_backward(moe_run_t *r, epb_err_t *err)
{
    local_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    MOE_PHASE(MOE_PH_GATE_BWD);
    MOE_DO(be->ops->zero(be, r->d_ep_out, (size_t)r->rows * (size_t)c->D * moe_dtype_size(c->dtype)));
    MOE_DO(be->ops->zero(be, r->d_gate, (size_t)(c->T * c->k) * 4));
    if (c->gate_before) /* the gates' gradient comes from the expert inputs (dispatch_backward) */
        MOE_DO(be->ops->combine_backward(be, r->d_ep_out, NULL, r->dy, r->ep_out, a->pos, NULL, c->T, c->k, c->D));
    else
        MOE_DO(be->ops->combine_backward(be, r->d_ep_out, r->d_gate, r->dy, r->ep_out, a->pos, r->topk_w, c->T, c->k, c->D));
    return EPB_OK;
}

static int dispatch_backward(moe_run_t *r, epb_err_t *err)
{
    local_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    MOE_PHASE(MOE_PH_PERMUTE_BWD);
    if (c->gate_before) /* dx += gate * d(input), d_gate += <d(input), x> */
        MOE_DO(r->be->ops->scale_rows_backward(r->be, r->dx, r->d_gate, r->d_xp, r->x, a->pos, r->topk_w, c->T, c->k, c->D));
    else
        MOE_DO(r->be->ops->permute_backward(r->be, r->dx, r->d_xp, a->pos, c->T, c->k, c->D));
    return EPB_OK;
}

/* nothing crosses ranks but what the framework sums; rows: the T k pairs placed, and the gates over them into T */
static int traffic(const moe_spec_t *spec, const moe_config_t *c, const moe_routing_t *rt, moe_traffic_t *t)
{
    (void)spec;
    for (int r = 0; r < rt->P; r++) {
        double pairs = 0;
        for (int o = 0; o < rt->P; o++) pairs += moe_routing_pairs(rt, r, o);
        moe_traffic_copy(t, MOE_PH_PERMUTE, r, pairs);
        moe_traffic_copy(t, MOE_PH_GATE, r, pairs + (double)c->T);
    }
    return 0;
}

const moe_strategy_t moe_strategy_local = {
    .name = "local",
    .what = "every rank holds all experts; weight gradients all-reduced (the single-device semantics)",
    .anchor = "data parallel; the reference",
    .replicated = 1,
    .setup = setup,
    .teardown = teardown,
    .dispatch = dispatch,
    .combine = combine,
    .combine_backward = combine_backward,
    .dispatch_backward = dispatch_backward,
    .traffic = traffic,
};
