/* tp2ep: all-to-all expert parallelism on the TP mesh (torchtitan PR #1269, the seed). The input stays
 * sharded along the sequence; each rank routes its own T tokens; per-expert counts are exchanged with an
 * all-to-all to derive the splits; the T*k routed rows go to the experts' owners with an uneven all-to-all,
 * are regrouped by expert, run, regrouped back and returned with the reverse all-to-all; the gate weights are
 * applied on the source rank in combine. Backward: the same all-to-alls with the splits swapped.
 * Per-rank volume, fwd+bwd: about 4(P-1)/P*T*k*D*b bytes. */
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

typedef struct {
    moe_bufs_t bufs;
    /* source side: this rank's T*k pairs sorted by expert, so by destination rank */
    int32_t *pos_s;                       /* (T*k) row of pair i in xs */
    int64_t *offs_s;                      /* (E+1) host */
    void *xs, *out_s, *d_out_s, *d_s;     /* (T*k,D) */
    /* expert side: rows received from every source, [src][local expert] order, regrouped by expert */
    int64_t *rcounts;                     /* (P*El) host: rows from src for local expert a */
    int32_t *assign_h, *assign_r;         /* (R) global expert of each received row (host, backend) */
    int32_t *pos_r, *pos_tmp;             /* (R) */
    int64_t *offs_r, *offs_tmp;           /* (El+1) host */
    void *xr, *xp, *ep_out, *out_r, *d_out_r, *d_ep_out, *d_xp, *d_r; /* (R,D) */
    void *a1, *a3, *s, *work;             /* (R,F) x3, (2,R,F) */
    size_t *sc, *sd, *rc, *rd;            /* (P) alltoallv counts/displacements, elements */
    long nrecv;                           /* rows received */
} tp2ep_t;

static int setup(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = calloc(1, sizeof *a);
    if (!a) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = a;
    int rc = moe_run_alloc_shard(r, &a->bufs, err);
    if (rc) return rc;
    const moe_config_t *c = &r->cfg;
    size_t P = (size_t)r->P, T = (size_t)c->T, D = (size_t)c->D, E = (size_t)c->E, F = (size_t)c->F,
           k = (size_t)c->k, ab = moe_dtype_size(c->dtype), El = (size_t)r->El,
           R = P * T * k; /* every source may send all its pairs here */
    moe_bufs_t *b = &a->bufs;
    a->offs_s = calloc(E + 1, sizeof *a->offs_s);
    a->rcounts = calloc(P * El, sizeof *a->rcounts);
    a->assign_h = calloc(R ? R : 1, sizeof *a->assign_h);
    a->offs_r = calloc(El + 1, sizeof *a->offs_r);
    a->offs_tmp = calloc(El + 1, sizeof *a->offs_tmp);
    a->sc = calloc(4 * P, sizeof *a->sc);
    if (!a->offs_s || !a->rcounts || !a->assign_h || !a->offs_r || !a->offs_tmp || !a->sc)
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    a->sd = a->sc + P;
    a->rc = a->sd + P;
    a->rd = a->rc + P;
    if (!(a->pos_s = moe_buf(r, b, T * k * 4)) ||
        !(a->xs = moe_buf(r, b, T * k * D * ab)) || !(a->out_s = moe_buf(r, b, T * k * D * ab)) ||
        !(a->d_out_s = moe_buf(r, b, T * k * D * ab)) || !(a->d_s = moe_buf(r, b, T * k * D * ab)) ||
        !(a->assign_r = moe_buf(r, b, R * 4)) || !(a->pos_r = moe_buf(r, b, R * 4)) ||
        !(a->pos_tmp = moe_buf(r, b, R * 4)) ||
        !(a->xr = moe_buf(r, b, R * D * ab)) || !(a->xp = moe_buf(r, b, R * D * ab)) ||
        !(a->ep_out = moe_buf(r, b, R * D * ab)) || !(a->out_r = moe_buf(r, b, R * D * ab)) ||
        !(a->d_out_r = moe_buf(r, b, R * D * ab)) || !(a->d_ep_out = moe_buf(r, b, R * D * ab)) ||
        !(a->d_xp = moe_buf(r, b, R * D * ab)) || !(a->d_r = moe_buf(r, b, R * D * ab)) ||
        !(a->a1 = moe_buf(r, b, R * F * ab)) || !(a->a3 = moe_buf(r, b, R * F * ab)) ||
        !(a->s = moe_buf(r, b, R * F * ab)) || !(a->work = moe_buf(r, b, 2 * R * F * ab)))
        return epb_fail(err, EPB_ESYS, "rank %d: tp2ep buffers: %s", r->rank, r->be->err.msg);
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    tp2ep_t *a = r->priv;
    if (!a) return;
    moe_bufs_free(r, &a->bufs);
    free(a->offs_s);
    free(a->rcounts);
    free(a->assign_h);
    free(a->offs_r);
    free(a->offs_tmp);
    free(a->sc);
    free(a);
    r->priv = NULL;
}

/* From the local counts and the exchanged ones: rows to and from every rank, as element counts and
 * displacements, and the global expert of every received row (in [src][local expert] order). */
static int derive_splits(moe_run_t *r, tp2ep_t *a)
{
    int P = r->P, El = r->El;
    size_t D = (size_t)r->cfg.D, so = 0, ro = 0;
    long n = 0;
    for (int p = 0; p < P; p++) {
        size_t send = 0, recv = 0;
        for (int e = 0; e < El; e++) {
            send += (size_t)r->counts[p * El + e];
            recv += (size_t)a->rcounts[p * El + e];
            for (int64_t i = 0; i < a->rcounts[p * El + e]; i++) a->assign_h[n++] = r->e0 + e;
        }
        a->sc[p] = send * D;
        a->rc[p] = recv * D;
        a->sd[p] = so;
        a->rd[p] = ro;
        so += a->sc[p];
        ro += a->rc[p];
    }
    a->nrecv = n;
    return r->be->ops->to_backend(r->be, a->assign_r, a->assign_h, (size_t)n * 4);
}

/* elements this rank sends to other ranks with counts sc (itself excluded) */
static double sent_elems(const moe_run_t *r, const size_t *sc)
{
    double s = 0;
    for (int p = 0; p < r->P; p++)
        if (p != r->rank) s += (double)sc[p];
    return s;
}

static int forward(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    const moe_ops_t *o = r->be->ops;
    moe_backend_t *be = r->be;
    epb_comm_t *cm = r->comm;
    long T = c->T, D = c->D, F = c->F;
    int E = c->E, k = c->k, P = r->P, El = r->El;
    double ab = (double)moe_dtype_size(c->dtype);
    int rc = moe_shard_route(r, err);
    if (rc) return rc;
    /* experts are contiguous by owner, so counts[p*El ..] is what goes to rank p */
    MOE_PHASE(r, MOE_PH_SYNC_COUNTS,
              moe_alltoall_host(r, r->counts, a->rcounts, (size_t)El, EPB_DT_I64) ||
              moe_allreduce_host(r, r->tpe, (size_t)E, EPB_DT_I64) || derive_splits(r, a));
    r->phase_bytes[MOE_PH_SYNC_COUNTS] = (P - 1) * El * 8.0 + moe_ring_bytes(P, E * 8.0);
    /* permute: sort the pairs by expert (= by destination), then, after the exchange, regroup by local expert */
    MOE_PHASE(r, MOE_PH_PERMUTE, o->permute_forward(be, a->xs, a->pos_s, a->offs_s, r->x, r->topk_idx, T, k, D, 0, E));
    MOE_PHASE(r, MOE_PH_DISPATCH, epb_alltoallv(cm, a->xs, a->sc, a->sd, a->xr, a->rc, a->rd, r->comm_dt) || epb_sync(cm));
    r->phase_bytes[MOE_PH_DISPATCH] = sent_elems(r, a->sc) * ab;
    MOE_PHASE(r, MOE_PH_PERMUTE, o->permute_forward(be, a->xp, a->pos_r, a->offs_r, a->xr, a->assign_r, a->nrecv, 1, D,
                                                    r->e0, El));
    MOE_PHASE(r, MOE_PH_EXPERTS_FWD, o->experts_forward(be, a->ep_out, a->a1, a->a3, a->s, a->work, a->xp, r->w1, r->w3,
                                                        r->w2, a->offs_r, El, D, F));
    r->phase_flop[MOE_PH_EXPERTS_FWD] = moe_expert_flop(c, (double)a->nrecv, 0);
    MOE_PHASE(r, MOE_PH_UNPERMUTE, o->unpermute_forward(be, a->out_r, a->ep_out, a->pos_r, a->nrecv, D));
    MOE_PHASE(r, MOE_PH_COMBINE,
              epb_alltoallv(cm, a->out_r, a->rc, a->rd, a->out_s, a->sc, a->sd, r->comm_dt) || epb_sync(cm) ||
              o->combine_forward(be, r->y, a->out_s, a->pos_s, r->topk_w, T, k, D));
    r->phase_bytes[MOE_PH_COMBINE] = sent_elems(r, a->rc) * ab;
    return EPB_OK;
}

static int backward(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    const moe_ops_t *o = r->be->ops;
    moe_backend_t *be = r->be;
    epb_comm_t *cm = r->comm;
    long T = c->T, D = c->D, F = c->F;
    int k = c->k, El = r->El;
    size_t ab = moe_dtype_size(c->dtype);
    MOE_PHASE(r, MOE_PH_COMBINE_BWD,
              o->zero(be, a->d_out_s, (size_t)(T * k * D) * ab) || o->zero(be, r->d_gate, (size_t)T * k * 4) ||
              o->combine_backward(be, a->d_out_s, r->d_gate, r->dy, a->out_s, a->pos_s, r->topk_w, T, k, D) ||
              epb_alltoallv(cm, a->d_out_s, a->sc, a->sd, a->d_out_r, a->rc, a->rd, r->comm_dt) || epb_sync(cm) ||
              o->permute_forward(be, a->d_ep_out, a->pos_tmp, a->offs_tmp, a->d_out_r, a->assign_r, a->nrecv, 1, D,
                                 r->e0, El));
    r->phase_bytes[MOE_PH_COMBINE_BWD] = sent_elems(r, a->sc) * (double)ab;
    MOE_PHASE(r, MOE_PH_EXPERTS_BWD,
              o->zero(be, a->d_xp, (size_t)a->nrecv * (size_t)D * ab) ||
              o->experts_backward(be, a->d_xp, r->dw1, r->dw3, r->dw2, a->work, a->d_ep_out, a->a1, a->a3, a->s, a->xp,
                                  r->w1, r->w3, r->w2, a->offs_r, El, D, F));
    r->phase_flop[MOE_PH_EXPERTS_BWD] = moe_expert_flop(c, (double)a->nrecv, 1);
    MOE_PHASE(r, MOE_PH_DISPATCH_BWD,
              o->unpermute_forward(be, a->d_r, a->d_xp, a->pos_r, a->nrecv, D) ||
              epb_alltoallv(cm, a->d_r, a->rc, a->rd, a->d_s, a->sc, a->sd, r->comm_dt) || epb_sync(cm) ||
              o->permute_backward(be, r->dx, a->d_s, a->pos_s, T, k, D));
    r->phase_bytes[MOE_PH_DISPATCH_BWD] = sent_elems(r, a->rc) * (double)ab;
    return moe_shard_route_backward(r, err);
}

const moe_strategy_t moe_strategy_tp2ep = {
    "tp2ep", "all-to-all tokens to the experts' owners with splits from exchanged counts (torchtitan PR #1269)", 0,
    setup, forward, backward, NULL, teardown,
};
