/* tp2ep: all-to-all expert parallelism on the TP mesh (torchtitan PR #1269, the seed; Megatron's alltoall
 * dispatcher). The input stays sharded along the sequence; each rank routes its own T tokens; per-expert counts
 * are exchanged with an all-to-all to derive the splits; the T*k routed rows go to the experts' owners with an
 * uneven all-to-all, are regrouped by expert, run, regrouped back and returned with the reverse all-to-all; the
 * gate weights are applied on the source rank. Backward: the same all-to-alls with the splits swapped. Receive
 * buffers are sized from the exchanged counts (grown when a step needs more), not for the worst case P*T*k.
 * Per-rank volume, fwd+bwd: about 4(P-1)/P*T*k*D*b bytes. */
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

typedef struct {
    /* source side: this rank's T*k pairs sorted by expert, so by destination rank */
    int32_t *pos_s;                   /* (T*k) row of pair i in xs */
    int64_t *offs_s;                  /* (E+1) host */
    void *xs, *out_s, *d_out_s, *d_s; /* (T*k,D) */
    /* expert side: rows received from every source in [src][local expert] order, regrouped by expert */
    int64_t *rcounts;                 /* (P*El) host: rows from src for local expert a */
    int32_t *assign_h;                /* (nrecv) host: global expert of each received row */
    size_t assign_h_cap;
    int32_t *assign_r, *pos_r;        /* (nrecv) */
    void *xr, *out_r, *d_out_r, *d_r; /* (nrecv,D) */
    size_t cap_idx, cap_rows[4];      /* bytes allocated for assign_r/pos_r (each) and the four row buffers */
    size_t *sc, *sd, *rc, *rd;        /* (P) alltoallv counts/displacements, elements */
    long nrecv;                       /* rows received */
} tp2ep_t;

static int setup(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = calloc(1, sizeof *a);
    if (!a) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    r->priv = a;
    const moe_config_t *c = &r->cfg;
    size_t P = (size_t)r->P, Tk = (size_t)(c->T * c->k), D = (size_t)c->D, ab = moe_dtype_size(c->dtype);
    a->offs_s = calloc((size_t)c->E + 1, sizeof *a->offs_s);
    a->rcounts = calloc(P * (size_t)r->El, sizeof *a->rcounts);
    a->sc = calloc(4 * P, sizeof *a->sc);
    if (!a->offs_s || !a->rcounts || !a->sc) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    a->sd = a->sc + P;
    a->rc = a->sd + P;
    a->rd = a->rc + P;
    if (!(a->pos_s = moe_alloc(r, Tk * 4, err)) || !(a->xs = moe_alloc(r, Tk * D * ab, err)) ||
        !(a->out_s = moe_alloc(r, Tk * D * ab, err)) || !(a->d_out_s = moe_alloc(r, Tk * D * ab, err)) ||
        !(a->d_s = moe_alloc(r, Tk * D * ab, err)))
        return EPB_ESYS;
    return EPB_OK;
}

static void teardown(moe_run_t *r)
{
    tp2ep_t *a = r->priv;
    if (!a) return;
    free(a->offs_s);
    free(a->rcounts);
    free(a->assign_h);
    free(a->sc);
    free(a);
    r->priv = NULL;
}

#define DO(call) do { if (call) return moe_fail(r, err); } while (0)
#define PHASE(ph) do { int rc_ = moe_phase(r, (ph), err); if (rc_) return rc_; } while (0)

/* From the local counts and the exchanged ones: rows to and from every rank, as element counts and
 * displacements, the global expert of every received row (in [src][local expert] order), and receive buffers
 * that hold them. */
static int derive_splits(moe_run_t *r, tp2ep_t *a, epb_err_t *err)
{
    int P = r->P, El = r->El;
    size_t D = (size_t)r->cfg.D, so = 0, ro = 0, ab = moe_dtype_size(r->cfg.dtype);
    long n = 0;
    for (int p = 0; p < P; p++)
        for (int e = 0; e < El; e++) n += (long)a->rcounts[p * El + e];
    if ((size_t)n > a->assign_h_cap) {
        int32_t *h = realloc(a->assign_h, (size_t)n * sizeof *h);
        if (!h) return epb_fail(err, EPB_ESYS, "rank %d: out of memory (%ld received rows)", r->rank, n);
        a->assign_h = h;
        a->assign_h_cap = (size_t)n;
    }
    n = 0;
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
    void **rows[4] = { &a->xr, &a->out_r, &a->d_out_r, &a->d_r };
    size_t cap = a->cap_idx;
    if (moe_grow(r, (void **)&a->assign_r, &cap, (size_t)n * 4, err)) return EPB_ESYS;
    cap = a->cap_idx;
    if (moe_grow(r, (void **)&a->pos_r, &cap, (size_t)n * 4, err)) return EPB_ESYS;
    a->cap_idx = cap;
    for (int i = 0; i < 4; i++)
        if (moe_grow(r, rows[i], &a->cap_rows[i], (size_t)n * D * ab, err)) return EPB_ESYS;
    if (moe_rows_reserve(r, n, err)) return EPB_ESYS;
    if (r->be->ops->to_backend(r->be, a->assign_r, a->assign_h, (size_t)n * 4)) return moe_fail(r, err);
    return EPB_OK;
}

static int dispatch(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    const moe_ops_t *o = r->be->ops;
    moe_backend_t *be = r->be;
    /* layout (open): experts are contiguous by owner, so counts[p*El ..] is what goes to rank p */
    DO(moe_alltoall_host(r, r->counts, a->rcounts, (size_t)r->El, EPB_DT_I64));
    /* permute: the splits, then this rank's pairs sorted by expert (= by destination) */
    PHASE(MOE_PH_PERMUTE);
    if (derive_splits(r, a, err)) return EPB_ESYS;
    DO(o->permute_forward(be, a->xs, a->pos_s, a->offs_s, r->x, r->topk_idx, c->T, c->k, c->D, 0, c->E));
    PHASE(MOE_PH_DISPATCH);
    DO(epb_alltoallv(r->comm, a->xs, a->sc, a->sd, a->xr, a->rc, a->rd, r->comm_dt));
    DO(epb_sync(r->comm));
    /* permute, on the receiving side: the rows from every source regrouped by local expert */
    PHASE(MOE_PH_PERMUTE);
    DO(o->permute_forward(be, r->xp, a->pos_r, r->offsets, a->xr, a->assign_r, a->nrecv, 1, c->D, r->e0, r->El));
    return EPB_OK;
}

static int combine(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    PHASE(MOE_PH_UNPERMUTE); /* back to [src][local expert] order */
    DO(r->be->ops->unpermute_forward(r->be, a->out_r, r->ep_out, a->pos_r, a->nrecv, c->D));
    PHASE(MOE_PH_COMBINE);
    DO(epb_alltoallv(r->comm, a->out_r, a->rc, a->rd, a->out_s, a->sc, a->sd, r->comm_dt));
    DO(epb_sync(r->comm));
    PHASE(MOE_PH_GATE); /* on the source: y[t] = sum_j w[t,j] out[pair t,j] */
    DO(r->be->ops->combine_forward(r->be, r->y, a->out_s, a->pos_s, r->topk_w, c->T, c->k, c->D));
    return EPB_OK;
}

static int combine_backward(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    size_t ab = moe_dtype_size(c->dtype);
    PHASE(MOE_PH_GATE_BWD);
    DO(be->ops->zero(be, a->d_out_s, (size_t)(c->T * c->k * c->D) * ab));
    DO(be->ops->zero(be, r->d_gate, (size_t)(c->T * c->k) * 4));
    DO(be->ops->combine_backward(be, a->d_out_s, r->d_gate, r->dy, a->out_s, a->pos_s, r->topk_w, c->T, c->k, c->D));
    PHASE(MOE_PH_COMBINE_BWD);
    DO(epb_alltoallv(r->comm, a->d_out_s, a->sc, a->sd, a->d_out_r, a->rc, a->rd, r->comm_dt));
    DO(epb_sync(r->comm));
    PHASE(MOE_PH_UNPERMUTE_BWD); /* the regroup's backward: received gradients to the expert rows */
    DO(be->ops->zero(be, r->d_ep_out, (size_t)r->rows * (size_t)c->D * ab));
    DO(be->ops->unpermute_backward(be, r->d_ep_out, a->d_out_r, a->pos_r, a->nrecv, c->D));
    return EPB_OK;
}

static int dispatch_backward(moe_run_t *r, epb_err_t *err)
{
    tp2ep_t *a = r->priv;
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    PHASE(MOE_PH_PERMUTE_BWD); /* expert rows back to [src][local expert] order */
    DO(be->ops->unpermute_forward(be, a->d_r, r->d_xp, a->pos_r, a->nrecv, c->D));
    PHASE(MOE_PH_DISPATCH_BWD);
    DO(epb_alltoallv(r->comm, a->d_r, a->rc, a->rd, a->d_s, a->sc, a->sd, r->comm_dt));
    DO(epb_sync(r->comm));
    PHASE(MOE_PH_PERMUTE_BWD); /* on the source: each pair's gradient into its token */
    DO(be->ops->permute_backward(be, r->dx, a->d_s, a->pos_s, c->T, c->k, c->D));
    return EPB_OK;
}

const moe_strategy_t moe_strategy_tp2ep = {
    .name = "tp2ep",
    .what = "all-to-all tokens to the experts' owners with splits from exchanged counts",
    .anchor = "torchtitan PR #1269, Megatron alltoall dispatcher",
    .setup = setup,
    .teardown = teardown,
    .dispatch = dispatch,
    .combine = combine,
    .combine_backward = combine_backward,
    .dispatch_backward = dispatch_backward,
};
