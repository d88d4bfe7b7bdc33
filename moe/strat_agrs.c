/* agrs: all-gather / reduce-scatter expert parallelism (torchtitan PR #731, Megatron's "allgather"
 * dispatcher). Each rank routes its T tokens, all-gathers tokens with their top-k indices and gate weights,
 * runs its E/P experts on the gathered rows routed to them, and reduce-scatters the partial outputs back to its
 * shard. Backward mirrors it. Per-rank volume, fwd+bwd: about 4(P-1)*T*D*b bytes, independent of k. */
#include <stdlib.h>

#include "strategy.h"

typedef struct {
    moe_bufs_t bufs;
    void *xg, *yg, *dyg, *dxg;         /* (P*T,D) gathered tokens, partial outputs, output grads, input grads */
    int32_t *idx_g, *pos_g;            /* (P*T*k) */
    float *w_g, *d_gate_g;             /* (P*T*k) */
    int64_t *offsets;                  /* (El+1) host */
    void *xp, *ep_out, *d_ep_out, *d_xp; /* (R,D), R = P*T*k rows at most */
    void *a1, *a3, *s, *work;          /* (R,F) x3, (2,R,F) */
} agrs_t;

static int setup(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = calloc(1, sizeof *a);
    if (!a) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = a;
    int rc = moe_run_alloc_shard(r, &a->bufs, err);
    if (rc) return rc;
    const moe_config_t *c = &r->cfg;
    size_t P = (size_t)r->P, T = (size_t)c->T, D = (size_t)c->D, F = (size_t)c->F,
           k = (size_t)c->k, ab = moe_dtype_size(c->dtype), R = P * T * k, G = P * T;
    moe_bufs_t *b = &a->bufs;
    a->offsets = calloc((size_t)r->El + 1, sizeof *a->offsets);
    if (!a->offsets || !(a->xg = moe_buf(r, b, G * D * ab)) ||
        !(a->yg = moe_buf(r, b, G * D * ab)) || !(a->dyg = moe_buf(r, b, G * D * ab)) ||
        !(a->dxg = moe_buf(r, b, G * D * ab)) || !(a->idx_g = moe_buf(r, b, R * 4)) ||
        !(a->pos_g = moe_buf(r, b, R * 4)) || !(a->w_g = moe_buf(r, b, R * 4)) ||
        !(a->d_gate_g = moe_buf(r, b, R * 4)) || !(a->xp = moe_buf(r, b, R * D * ab)) ||
        !(a->ep_out = moe_buf(r, b, R * D * ab)) || !(a->d_ep_out = moe_buf(r, b, R * D * ab)) ||
        !(a->d_xp = moe_buf(r, b, R * D * ab)) || !(a->a1 = moe_buf(r, b, R * F * ab)) ||
        !(a->a3 = moe_buf(r, b, R * F * ab)) || !(a->s = moe_buf(r, b, R * F * ab)) ||
        !(a->work = moe_buf(r, b, 2 * R * F * ab)))
        return epb_fail(err, EPB_ESYS, "rank %d: agrs buffers: %s", r->rank, r->be->err.msg);
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    agrs_t *a = r->priv;
    if (!a) return;
    moe_bufs_free(r, &a->bufs);
    free(a->offsets);
    free(a);
    r->priv = NULL;
}

static int forward(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    const moe_ops_t *o = r->be->ops;
    moe_backend_t *be = r->be;
    epb_comm_t *cm = r->comm;
    long T = c->T, D = c->D, F = c->F, G = (long)r->P * T;
    int E = c->E, k = c->k, P = r->P;
    double ab = (double)moe_dtype_size(c->dtype);
    int rc = moe_shard_route(r, err);
    if (rc) return rc;
    MOE_PHASE(r, MOE_PH_SYNC_COUNTS, moe_allreduce_host(r, r->tpe, (size_t)E, EPB_DT_I64));
    r->phase_bytes[MOE_PH_SYNC_COUNTS] = moe_ring_bytes(P, E * 8.0);
    MOE_PHASE(r, MOE_PH_DISPATCH,
              epb_allgather(cm, r->x, a->xg, (size_t)(T * D), r->comm_dt) ||
              epb_allgather(cm, r->topk_idx, a->idx_g, (size_t)T * k, EPB_DT_I32) ||
              epb_allgather(cm, r->topk_w, a->w_g, (size_t)T * k, EPB_DT_F32) || epb_sync(cm));
    r->phase_bytes[MOE_PH_DISPATCH] = (P - 1) * ((double)T * D * ab + 8.0 * T * k); /* tokens + idx + gates */
    MOE_PHASE(r, MOE_PH_PERMUTE, o->permute_forward(be, a->xp, a->pos_g, a->offsets, a->xg, a->idx_g, G, k, D, r->e0, r->El));
    MOE_PHASE(r, MOE_PH_EXPERTS_FWD, o->experts_forward(be, a->ep_out, a->a1, a->a3, a->s, a->work, a->xp, r->w1, r->w3,
                                                        r->w2, a->offsets, r->El, D, F));
    r->phase_flop[MOE_PH_EXPERTS_FWD] = moe_expert_flop(c, (double)a->offsets[r->El], 0);
    MOE_PHASE(r, MOE_PH_UNPERMUTE, o->combine_forward(be, a->yg, a->ep_out, a->pos_g, a->w_g, G, k, D));
    MOE_PHASE(r, MOE_PH_COMBINE, epb_reduce_scatter(cm, a->yg, r->y, (size_t)(T * D), r->comm_dt) || epb_sync(cm));
    r->phase_bytes[MOE_PH_COMBINE] = (P - 1) * (double)T * D * ab;
    return EPB_OK;
}

static int backward(moe_run_t *r, epb_err_t *err)
{
    agrs_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    const moe_ops_t *o = r->be->ops;
    moe_backend_t *be = r->be;
    epb_comm_t *cm = r->comm;
    long T = c->T, D = c->D, F = c->F, G = (long)r->P * T;
    int k = c->k, P = r->P;
    size_t ab = moe_dtype_size(c->dtype), rows = (size_t)a->offsets[r->El];
    MOE_PHASE(r, MOE_PH_COMBINE_BWD,
              epb_allgather(cm, r->dy, a->dyg, (size_t)(T * D), r->comm_dt) || epb_sync(cm) ||
              o->zero(be, a->d_ep_out, rows * (size_t)D * ab) || o->zero(be, a->d_gate_g, (size_t)G * k * 4) ||
              o->combine_backward(be, a->d_ep_out, a->d_gate_g, a->dyg, a->ep_out, a->pos_g, a->w_g, G, k, D));
    r->phase_bytes[MOE_PH_COMBINE_BWD] = (P - 1) * (double)T * D * ab;
    MOE_PHASE(r, MOE_PH_EXPERTS_BWD,
              o->zero(be, a->d_xp, rows * (size_t)D * ab) ||
              o->experts_backward(be, a->d_xp, r->dw1, r->dw3, r->dw2, a->work, a->d_ep_out, a->a1, a->a3, a->s, a->xp,
                                  r->w1, r->w3, r->w2, a->offsets, r->El, D, F));
    r->phase_flop[MOE_PH_EXPERTS_BWD] = moe_expert_flop(c, (double)rows, 1);
    MOE_PHASE(r, MOE_PH_DISPATCH_BWD,
              o->zero(be, a->dxg, (size_t)G * D * ab) || o->permute_backward(be, a->dxg, a->d_xp, a->pos_g, G, k, D) ||
              epb_reduce_scatter(cm, a->dxg, r->dx, (size_t)(T * D), r->comm_dt) ||
              epb_reduce_scatter(cm, a->d_gate_g, r->d_gate, (size_t)T * k, EPB_DT_F32) || epb_sync(cm));
    r->phase_bytes[MOE_PH_DISPATCH_BWD] = (P - 1) * ((double)T * D * ab + 4.0 * T * k);
    return moe_shard_route_backward(r, err);
}

const moe_strategy_t moe_strategy_agrs = {
    "agrs", "all-gather tokens to every rank, run the local experts, reduce-scatter the outputs", 0,
    setup, forward, backward, NULL, teardown,
};
