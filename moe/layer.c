/* The single-device layer: all E experts over N tokens, forward and backward, through one backend's ops. It is
 * the reference every strategy is checked against and what strategy `local` runs per rank. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"

const char *const moe_phase_names[MOE_NPHASES] = {
    "route", "sync_counts", "dispatch", "permute", "experts_fwd", "unpermute",
    "combine", "combine_bwd", "experts_bwd", "dispatch_bwd", "route_bwd", "grad_sync",
};

/* every backend buffer of the layer, with its size in elements and element size (for alloc and zero_grad) */
#define LAYER_BUFS(L, X)                                                                                       \
    X(x, N * D, ab) X(Wr, D * E, 4) X(bias, E, 4) X(w1, E * D * F, ab) X(w3, E * D * F, ab)                   \
    X(w2, E * F * D, ab) X(scores, N * E, 4) X(topk_idx, N * k, 4) X(topk_w, N * k, 4) X(pos, N * k, 4)        \
    X(xp, R * D, ab) X(ep_out, R * D, ab) X(a1, R * F, ab) X(a3, R * F, ab) X(s, R * F, ab) X(y, N * D, ab)    \
    X(dy, N * D, ab) X(dx, N * D, ab) X(dWr, D * E, 4) X(dw1, E * D * F, ab) X(dw3, E * D * F, ab)             \
    X(dw2, E * F * D, ab) X(d_gate, N * k, 4) X(d_ep_out, R * D, ab) X(d_xp, R * D, ab)                        \
    X(work, (2 * R * F * ab > N * E * 4 ? 2 * R * F * ab : N * E * 4), 1)

int moe_layer_create(moe_layer_t *L, const moe_config_t *c, long N, moe_backend_t *be, epb_err_t *err)
{
    memset(L, 0, sizeof *L);
    int rc = moe_config_validate(c, err);
    if (rc) return rc;
    if (c->dtype != be->dtype)
        return epb_fail(err, EPB_EUSAGE, "--dtype %s: the %s backend runs %s", moe_dtype_name(c->dtype),
                        be->ops->name, moe_dtype_name(be->dtype));
    L->cfg = *c;
    L->N = N;
    L->be = be;
    size_t D = (size_t)c->D, F = (size_t)c->F, E = (size_t)c->E, k = (size_t)c->k, R = (size_t)N * k,
           ab = moe_dtype_size(c->dtype);
#define ALLOC(name, n, es)                                                                                     \
    if (!(L->name = be->ops->alloc(be, (size_t)(n) * (es)))) goto fail;
    LAYER_BUFS(L, ALLOC)
#undef ALLOC
    L->counts = calloc(E, sizeof *L->counts);
    L->offsets = calloc(E + 1, sizeof *L->offsets);
    if (!L->counts || !L->offsets) {
        epb_fail(&be->err, EPB_ESYS, "out of memory (counts)");
        goto fail;
    }
    for (int i = 0; i < 2; i++)
        if (be->ops->event_create(be, &L->ev[i])) goto fail;
    return EPB_OK;
fail:
    rc = epb_fail(err, EPB_ESYS, "moe layer set-up: %s", be->err.msg);
    moe_layer_destroy(L);
    return rc;
}

void moe_layer_destroy(moe_layer_t *L)
{
    moe_backend_t *be = L->be;
    if (!be) return;
#define FREE(name, n, es) be->ops->free(be, L->name);
    LAYER_BUFS(L, FREE)
#undef FREE
    for (int i = 0; i < 2; i++)
        if (L->ev[i]) be->ops->event_destroy(be, L->ev[i]);
    free(L->counts);
    free(L->offsets);
    memset(L, 0, sizeof *L);
}

void moe_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = epb_bf16_to_f32(epb_f32_to_bf16(x[i]));
}

int moe_act_to_backend(moe_backend_t *be, void *dst, const float *src, size_t n)
{
    if (be->dtype == MOE_F32) return be->ops->to_backend(be, dst, src, n * 4);
    epb_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return epb_fail(&be->err, EPB_ESYS, "out of memory converting %zu values to bf16", n);
    for (size_t i = 0; i < n; i++) h[i] = epb_f32_to_bf16(src[i]);
    int rc = be->ops->to_backend(be, dst, h, n * sizeof *h);
    free(h);
    return rc;
}

int moe_act_to_host(moe_backend_t *be, float *dst, const void *src, size_t n)
{
    if (be->dtype == MOE_F32) return be->ops->to_host(be, dst, src, n * 4);
    epb_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return epb_fail(&be->err, EPB_ESYS, "out of memory converting %zu values from bf16", n);
    int rc = be->ops->to_host(be, h, src, n * sizeof *h);
    for (size_t i = 0; !rc && i < n; i++) dst[i] = epb_bf16_to_f32(h[i]);
    free(h);
    return rc;
}

int moe_layer_init(moe_layer_t *L, long t0, epb_err_t *err)
{
    const moe_config_t *c = &L->cfg;
    moe_backend_t *be = L->be;
    if (c->dtype != MOE_F32 && !be->on_device)
        return epb_fail(err, EPB_EUSAGE, "--dtype %s: the %s backend runs f32", moe_dtype_name(c->dtype), be->ops->name);
    size_t D = (size_t)c->D, E = (size_t)c->E, F = (size_t)c->F, N = (size_t)L->N;
    size_t big = E * D * F > N * D ? E * D * F : N * D;
    float *h = malloc((big > D * E ? big : D * E) * sizeof *h), *h2 = NULL, *h3 = NULL;
    if (be->on_device) h2 = malloc(E * D * F * sizeof *h2), h3 = malloc(E * D * F * sizeof *h3);
    int rc = EPB_OK;
    if (!h || (be->on_device && (!h2 || !h3))) {
        rc = epb_fail(err, EPB_ESYS, "out of memory initialising the layer");
        goto out;
    }
    /* on cpu the weights are written in place; a device backend goes through host copies */
    float *w1 = be->on_device ? h : L->w1, *w3 = be->on_device ? h2 : L->w3, *w2 = be->on_device ? h3 : L->w2;
    moe_init_weights(NULL, w1, w3, w2, c, 0, c->E);
    if (be->on_device && (moe_act_to_backend(be, L->w1, w1, E * D * F) || moe_act_to_backend(be, L->w3, w3, E * D * F) ||
                          moe_act_to_backend(be, L->w2, w2, E * D * F)))
        goto syserr;
    moe_init_weights(h, NULL, NULL, NULL, c, 0, c->E);
    if (be->ops->to_backend(be, L->Wr, h, D * E * 4) || be->ops->zero(be, L->bias, E * 4)) goto syserr;
    moe_init_tokens(h, c, MOE_STREAM_X, t0, (long)N);
    if (moe_act_to_backend(be, L->x, h, N * D)) goto syserr;
    moe_init_tokens(h, c, MOE_STREAM_DY, t0, (long)N);
    if (moe_act_to_backend(be, L->dy, h, N * D)) goto syserr;
    goto out;
syserr:
    rc = epb_fail(err, EPB_ESYS, "moe layer init: %s", be->err.msg);
out:
    free(h);
    free(h2);
    free(h3);
    return rc;
}

/* phase timing: record an event before and after; add the elapsed time to phase_us[ph] */
static int phase_begin(moe_layer_t *L, double *phase_us)
{
    return phase_us ? L->be->ops->event_record(L->be, L->ev[0]) : EPB_OK;
}
static int phase_end(moe_layer_t *L, double *phase_us, moe_phase_t ph)
{
    if (!phase_us) return EPB_OK;
    double us = 0;
    int rc = L->be->ops->event_record(L->be, L->ev[1]);
    if (!rc) rc = L->be->ops->event_elapsed_us(L->be, L->ev[0], L->ev[1], &us);
    phase_us[ph] += us;
    return rc;
}

#define STEP(ph, call)                                                                                         \
    do {                                                                                                       \
        if (phase_begin(L, phase_us) || (call) || phase_end(L, phase_us, ph))                                 \
            return epb_fail(err, EPB_ESYS, "moe layer phase %s: %s", moe_phase_names[ph], be->err.msg);        \
    } while (0)

int moe_layer_forward(moe_layer_t *L, double *phase_us, epb_err_t *err)
{
    const moe_config_t *c = &L->cfg;
    moe_backend_t *be = L->be;
    const moe_ops_t *o = be->ops;
    long N = L->N, D = c->D, F = c->F;
    int E = c->E, k = c->k;
    STEP(MOE_PH_ROUTE, o->route_forward(be, L->scores, L->topk_idx, L->topk_w, L->counts, L->x, L->Wr, L->bias,
                                        N, D, E, k, c->router, c->route_norm, c->skew));
    STEP(MOE_PH_PERMUTE, o->permute_forward(be, L->xp, L->pos, L->offsets, L->x, L->topk_idx, N, k, D, 0, E));
    STEP(MOE_PH_EXPERTS_FWD, o->experts_forward(be, L->ep_out, L->a1, L->a3, L->s, L->work, L->xp, L->w1, L->w3,
                                                L->w2, L->offsets, E, D, F));
    STEP(MOE_PH_UNPERMUTE, o->combine_forward(be, L->y, L->ep_out, L->pos, L->topk_w, N, k, D));
    return EPB_OK;
}

int moe_layer_zero_grad(moe_layer_t *L, epb_err_t *err)
{
    const moe_config_t *c = &L->cfg;
    moe_backend_t *be = L->be;
    size_t D = (size_t)c->D, F = (size_t)c->F, E = (size_t)c->E, N = (size_t)L->N, R = N * (size_t)c->k,
           ab = moe_dtype_size(c->dtype);
    if (be->ops->zero(be, L->dx, N * D * ab) || be->ops->zero(be, L->dWr, D * E * 4) ||
        be->ops->zero(be, L->dw1, E * D * F * ab) || be->ops->zero(be, L->dw3, E * D * F * ab) ||
        be->ops->zero(be, L->dw2, E * F * D * ab) || be->ops->zero(be, L->d_gate, N * c->k * 4) ||
        be->ops->zero(be, L->d_ep_out, R * D * ab) || be->ops->zero(be, L->d_xp, R * D * ab))
        return epb_fail(err, EPB_ESYS, "moe layer zero_grad: %s", be->err.msg);
    return EPB_OK;
}

int moe_layer_backward(moe_layer_t *L, double *phase_us, epb_err_t *err)
{
    const moe_config_t *c = &L->cfg;
    moe_backend_t *be = L->be;
    const moe_ops_t *o = be->ops;
    long N = L->N, D = c->D, F = c->F;
    int E = c->E, k = c->k;
    STEP(MOE_PH_COMBINE_BWD, o->combine_backward(be, L->d_ep_out, L->d_gate, L->dy, L->ep_out, L->pos, L->topk_w,
                                                 N, k, D));
    STEP(MOE_PH_EXPERTS_BWD, o->experts_backward(be, L->d_xp, L->dw1, L->dw3, L->dw2, L->work, L->d_ep_out, L->a1,
                                                 L->a3, L->s, L->xp, L->w1, L->w3, L->w2, L->offsets, E, D, F));
    STEP(MOE_PH_DISPATCH_BWD, o->permute_backward(be, L->dx, L->d_xp, L->pos, N, k, D));
    STEP(MOE_PH_ROUTE_BWD, o->route_backward(be, L->dx, L->dWr, L->work, L->d_gate, L->scores, L->topk_idx,
                                             L->topk_w, L->x, L->Wr, N, D, E, k, c->router, c->route_norm));
    return EPB_OK;
}

double moe_rel_err_l2(const float *a, const float *ref, size_t n)
{
    double dd = 0, rr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        dd += d * d; /* NaN sticks */
        rr += (double)ref[i] * ref[i];
    }
    if (isnan(dd)) return NAN;
    return rr > 0 ? sqrt(dd / rr) : sqrt(dd);
}

double moe_rel_err_dt(moe_dtype_t dtype, const float *a, const float *ref, size_t n)
{
    return dtype == MOE_BF16 ? moe_rel_err_l2(a, ref, n) : moe_rel_err(a, ref, n);
}

double moe_rel_err(const float *a, const float *ref, size_t n)
{
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN sticks */
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    if (isnan(maxdiff)) return NAN;
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}
