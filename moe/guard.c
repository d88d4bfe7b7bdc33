/* The guard in front of a backend's ops: what a phase may not do fails loudly instead of being timed in the wrong
 * phase. A comm phase holds communicator calls and their completion only; a sync phase the metadata exchanges
 * (and the copies that stage them); so compute ops there are refused, and in comm phases data-moving memory ops
 * too. Allocation, events and sync are allowed everywhere (the framework times with them). */
#include "moe.h"

static int refused(moe_backend_t *be, const char *op)
{
    return epb_fail(&be->err, EPB_ESYS, "%s called in %s: a %s", op, be->forbid_why ? be->forbid_why : "this phase",
                    be->forbid & MOE_FORBID_MEMOPS ? "comm phase holds communicator calls only"
                                                   : "sync phase holds metadata exchanges only");
}
#define GUARD(be, bit, op) do { if ((be)->forbid & (bit)) return refused((be), op); } while (0)

static void *g_alloc(moe_backend_t *be, size_t bytes) { return be->real->alloc(be, bytes); }
static void g_free(moe_backend_t *be, void *p) { be->real->free(be, p); }
static int g_zero(moe_backend_t *be, void *p, size_t bytes)
{
    GUARD(be, MOE_FORBID_MEMOPS, "zero");
    return be->real->zero(be, p, bytes);
}
static int g_to_backend(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    GUARD(be, MOE_FORBID_MEMOPS, "to_backend");
    return be->real->to_backend(be, dst, src, bytes);
}
static int g_to_host(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    GUARD(be, MOE_FORBID_MEMOPS, "to_host");
    return be->real->to_host(be, dst, src, bytes);
}
static int g_copy(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    GUARD(be, MOE_FORBID_MEMOPS, "copy");
    return be->real->copy(be, dst, src, bytes);
}
static int g_sync(moe_backend_t *be) { return be->real->sync(be); }
static int g_event_create(moe_backend_t *be, moe_event_t **ev) { return be->real->event_create(be, ev); }
static void g_event_destroy(moe_backend_t *be, moe_event_t *ev) { be->real->event_destroy(be, ev); }
static int g_event_record(moe_backend_t *be, moe_event_t *ev) { return be->real->event_record(be, ev); }
static int g_event_elapsed_us(moe_backend_t *be, const moe_event_t *a, const moe_event_t *b, double *us)
{
    return be->real->event_elapsed_us(be, a, b, us);
}
static void g_destroy(moe_backend_t *be) { be->real->destroy(be); }

static int g_route_forward(moe_backend_t *be, float *scores, int32_t *idx, float *w, int64_t *counts, const void *x,
                           const float *Wr, const float *bias, long N, long D, int E, int k, moe_route_t rt)
{
    GUARD(be, MOE_FORBID_COMPUTE, "route_forward");
    return be->real->route_forward(be, scores, idx, w, counts, x, Wr, bias, N, D, E, k, rt);
}
static int g_route_backward(moe_backend_t *be, void *dx, float *dWr, float *work, const float *d_gate,
                            const float *scores, const int32_t *idx, const float *w, const void *x, const float *Wr,
                            long N, long D, int E, int k, moe_route_t rt)
{
    GUARD(be, MOE_FORBID_COMPUTE, "route_backward");
    return be->real->route_backward(be, dx, dWr, work, d_gate, scores, idx, w, x, Wr, N, D, E, k, rt);
}
static int g_permute_forward(moe_backend_t *be, void *xp, int32_t *pos, int64_t *offsets, const void *x,
                             const int32_t *assign, long N, int k, long D, int e0, int El)
{
    GUARD(be, MOE_FORBID_COMPUTE, "permute_forward");
    return be->real->permute_forward(be, xp, pos, offsets, x, assign, N, k, D, e0, El);
}
static int g_permute_backward(moe_backend_t *be, void *dx, const void *d_xp, const int32_t *pos, long N, int k, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "permute_backward");
    return be->real->permute_backward(be, dx, d_xp, pos, N, k, D);
}
static int g_unpermute_forward(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "unpermute_forward");
    return be->real->unpermute_forward(be, out, rows, pos, n, D);
}
static int g_unpermute_backward(moe_backend_t *be, void *d_rows, const void *d_out, const int32_t *pos, long n, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "unpermute_backward");
    return be->real->unpermute_backward(be, d_rows, d_out, pos, n, D);
}
static int g_experts_forward(moe_backend_t *be, void *out, void *a1, void *a3, void *s, void *h, const void *xp,
                             const void *w1, const void *w3, const void *w2, const int64_t *offsets, int El, long D,
                             long F)
{
    GUARD(be, MOE_FORBID_COMPUTE, "experts_forward");
    return be->real->experts_forward(be, out, a1, a3, s, h, xp, w1, w3, w2, offsets, El, D, F);
}
static int g_experts_backward(moe_backend_t *be, void *d_xp, void *dw1, void *dw3, void *dw2, void *work,
                              const void *d_out, const void *a1, const void *a3, const void *s, const void *xp,
                              const void *w1, const void *w3, const void *w2, const int64_t *offsets, int El, long D,
                              long F)
{
    GUARD(be, MOE_FORBID_COMPUTE, "experts_backward");
    return be->real->experts_backward(be, d_xp, dw1, dw3, dw2, work, d_out, a1, a3, s, xp, w1, w3, w2, offsets, El, D,
                                      F);
}
static int g_scale_rows_forward(moe_backend_t *be, void *out, const void *in, const int32_t *pos, const float *w,
                                long N, int k, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "scale_rows_forward");
    return be->real->scale_rows_forward(be, out, in, pos, w, N, k, D);
}
static int g_scale_rows_backward(moe_backend_t *be, void *d_in, float *d_w, const void *d_out, const void *in,
                                 const int32_t *pos, const float *w, long N, int k, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "scale_rows_backward");
    return be->real->scale_rows_backward(be, d_in, d_w, d_out, in, pos, w, N, k, D);
}
static int g_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    GUARD(be, MOE_FORBID_COMPUTE, "gemm");
    return be->real->gemm(be, C, A, B, M, N, K);
}
static int g_quant_fp8(moe_backend_t *be, void *q, const void *x, long n, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "quant_fp8");
    return be->real->quant_fp8(be, q, x, n, D);
}
static int g_dequant_fp8(moe_backend_t *be, void *x, const void *q, long n, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "dequant_fp8");
    return be->real->dequant_fp8(be, x, q, n, D);
}
static int g_gather_bytes(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, size_t row_bytes)
{
    GUARD(be, MOE_FORBID_COMPUTE, "gather_bytes");
    return be->real->gather_bytes(be, out, rows, pos, n, row_bytes);
}
static int g_add(moe_backend_t *be, void *y, const void *a, size_t n)
{
    GUARD(be, MOE_FORBID_COMPUTE, "add");
    return be->real->add(be, y, a, n);
}
static int g_combine_forward(moe_backend_t *be, void *y, const void *ep_out, const int32_t *pos, const float *w, long N,
                             int k, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "combine_forward");
    return be->real->combine_forward(be, y, ep_out, pos, w, N, k, D);
}
static int g_combine_backward(moe_backend_t *be, void *d_ep_out, float *d_gate, const void *dy, const void *ep_out,
                              const int32_t *pos, const float *w, long N, int k, long D)
{
    GUARD(be, MOE_FORBID_COMPUTE, "combine_backward");
    return be->real->combine_backward(be, d_ep_out, d_gate, dy, ep_out, pos, w, N, k, D);
}

static const moe_ops_t guard_ops = {
    .name = "guard",
    .alloc = g_alloc,
    .free = g_free,
    .zero = g_zero,
    .to_backend = g_to_backend,
    .to_host = g_to_host,
    .copy = g_copy,
    .sync = g_sync,
    .event_create = g_event_create,
    .event_destroy = g_event_destroy,
    .event_record = g_event_record,
    .event_elapsed_us = g_event_elapsed_us,
    .destroy = g_destroy,
    .route_forward = g_route_forward,
    .route_backward = g_route_backward,
    .permute_forward = g_permute_forward,
    .permute_backward = g_permute_backward,
    .unpermute_forward = g_unpermute_forward,
    .unpermute_backward = g_unpermute_backward,
    .experts_forward = g_experts_forward,
    .experts_backward = g_experts_backward,
    .gemm = g_gemm,
    .scale_rows_forward = g_scale_rows_forward,
    .scale_rows_backward = g_scale_rows_backward,
    .quant_fp8 = g_quant_fp8,
    .dequant_fp8 = g_dequant_fp8,
    .gather_bytes = g_gather_bytes,
    .add = g_add,
    .combine_forward = g_combine_forward,
    .combine_backward = g_combine_backward,
};

void moe_backend_guard(moe_backend_t *be)
{
    if (be->ops == &guard_ops) return;
    be->real = be->ops;
    be->ops = &guard_ops;
    be->forbid = 0;
}
