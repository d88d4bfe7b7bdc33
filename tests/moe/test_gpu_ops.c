/* Every op of the CUDA backend, and the whole layer forward+backward, against the CPU backend on fresh seeded
 * random inputs, in float32 and bf16. float32 must agree far below 1e-4 (relative to the reference's largest
 * magnitude; TF32 would show as ~1e-3). bf16 computes from the same bf16-rounded inputs as the float32 reference:
 * what it computes must differ, norm-wise (moe_rel_err_l2), by more than fp32 round-off (it really is bf16) and
 * less than 1e-2; copies must be exact. Integer outputs (top-k, counts, positions, offsets) must be equal. NaN never passes.
 * Exit 77 (skipped) when no CUDA device is visible, 1 instead when EPB_REQUIRE_GPU is set (ci/gpu). TAP output. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"
#include "strategy.h"
#include "tap.h"

#define F32_TOL 2e-5  /* fp32 with another summation order; far below 1e-4 */
#define BF16_MAX 1e-2 /* bf16 storage with fp32 accumulation */
#define BF16_MIN 1e-4 /* above fp32 round-off: the values really went through bf16 */
#define BF16_LAYER_MIN 1e-3 /* the whole layer rounds to bf16 at every step */

#define MAX_E 4096 /* experts a test may use (host arrays of counts and offsets) */

/* copies; fp32 results; act results of one op (fp32 or bf16 by dtype); act results of the whole layer */
typedef enum { EXACT, F32, ACT, LAYER } kind_t;


static int bf; /* the dtype under test is bf16 */

static void cmp(const char *what, const float *got, const float *ref, size_t n, kind_t kind)
{
    /* bf16 results norm-wise, as bench --check (moe.h says why); exact copies and fp32 results element-wise */
    double e = kind == EXACT || kind == F32 ? moe_rel_err(got, ref, n) : moe_rel_err_dt(bf ? MOE_BF16 : MOE_F32, got, ref, n);
    int ok;
    const char *rule;
    if (kind == EXACT) ok = e == 0, rule = "exact";
    else if (kind == F32 || !bf) ok = e <= F32_TOL, rule = "<= 2e-5";
    else if (kind == ACT) /* 0: nothing was computed (e.g. no rows here); fp32 round-off would show as ~1e-7 */
        ok = (e == 0 || e > BF16_MIN) && e <= BF16_MAX, rule = "0 or in (1e-4, 1e-2]";
    else ok = e > BF16_LAYER_MIN && e <= BF16_MAX, rule = "in (1e-3, 1e-2]";
    TAP_OK(ok, "%s %s: relative error %.3g (%s)", bf ? "bf16" : "f32", what, e, rule);
}

static void cmp_i32(const char *what, const int32_t *a, const int32_t *b, size_t n)
{
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += a[i] != b[i];
    TAP_OK(diff == 0, "%s %s: %zu of %zu differ", bf ? "bf16" : "f32", what, diff, n);
}

static void cmp_i64(const char *what, const int64_t *a, const int64_t *b, size_t n)
{
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += a[i] != b[i];
    TAP_OK(diff == 0, "%s %s: %zu of %zu differ", bf ? "bf16" : "f32", what, diff, n);
}

/* ---- host <-> GPU (allocations are freed with the backend) ---- */
static moe_backend_t *G;

static void *up(const void *h, size_t bytes)
{
    void *d = G->ops->alloc(G, bytes);
    if (!d || G->ops->to_backend(G, d, h, bytes)) { printf("Bail out! %s\n", G->err.msg); exit(1); }
    return d;
}
static void *up_act(const float *h, size_t n)
{
    void *d = G->ops->alloc(G, n * moe_dtype_size(G->dtype));
    if (!d || moe_act_to_backend(G, d, h, n)) { printf("Bail out! %s\n", G->err.msg); exit(1); }
    return d;
}
static void *scratch(size_t bytes)
{
    void *d = G->ops->alloc(G, bytes);
    if (!d || G->ops->zero(G, d, bytes)) { printf("Bail out! %s\n", G->err.msg); exit(1); }
    return d;
}
static float *down_act(const void *d, size_t n)
{
    float *h = malloc(n * 4 + 4);
    if (!h || moe_act_to_host(G, h, d, n)) { printf("Bail out! %s\n", G->err.msg); exit(1); }
    return h;
}
static void *down(const void *d, size_t bytes)
{
    void *h = malloc(bytes + 4);
    if (!h || G->ops->to_host(G, h, d, bytes)) { printf("Bail out! %s\n", G->err.msg); exit(1); }
    return h;
}
static void ok_call(int rc, const char *what)
{
    if (rc) { printf("Bail out! %s: %s\n", what, G->err.msg); exit(1); }
}

/* seeded values in [-scale, scale), rounded to bf16 when the dtype under test is (act inputs) */
static float *rnd(size_t n, uint64_t stream, double scale, int act)
{
    float *x = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * epb_uniform(77, stream, i));
    if (act && bf) moe_round_bf16(x, n);
    return x;
}

/* ---- FP8 rows (--dispatch-dtype fp8): the CUDA kernels' bytes equal the CPU's, every code, tie and edge ---- */
static void test_fp8(moe_backend_t *cpu)
{
    enum { D = 301, N = 5 }; /* two full blocks of 128, one of 45 and 3 bytes of padding */
    size_t w = moe_fp8_row_bytes(D);
    float *x = calloc(N * D, 4);
    /* row 0: block 0 every code 0..127 (scale 1: 448 is among them; 0x7F as NaN), block 1 the codes 128..255 (all
     * negative), block 2: 448, then the midpoints of neighbouring codes (ties, subnormal ones first) */
    for (int c = 0; c < 128; c++) x[c] = moe_e4m3_to_f32((uint8_t)c), x[128 + c] = moe_e4m3_to_f32((uint8_t)(128 + c));
    x[256] = 448;
    for (int c = 0; c < 44; c++) x[257 + c] = (moe_e4m3_to_f32((uint8_t)c) + moe_e4m3_to_f32((uint8_t)(c + 1))) / 2;
    /* row 1: seeded over 2^-12..2^12 (subnormal codes within a block); row 2 zero; row 3 tiny; row 4 -0 and a big
     * block with an infinity (its scale is infinite: the block is NaN on both) */
    for (long i = 0; i < D; i++) {
        x[D + i] = (float)(epb_uniform(9, 1, (uint64_t)i) * ldexp(1, (int)(i % 25) - 12));
        x[3 * D + i] = (float)(1e-30 * epb_uniform(9, 2, (uint64_t)i));
        x[4 * D + i] = i < 128 ? -0.0f : (float)(3e4 * epb_uniform(9, 3, (uint64_t)i));
    }
    x[4 * D + 200] = INFINITY;
    if (bf) moe_round_bf16(x, N * D); /* the bf16 backend's tokens; every value above is a bf16 value already */
    uint8_t *q = malloc(N * w), *qg;
    float *y = malloc(N * D * 4), *yg;
    cpu->ops->quant_fp8(cpu, q, x, N, D);
    cpu->ops->dequant_fp8(cpu, y, q, N, D);
    if (bf) moe_round_bf16(y, N * D); /* the bf16 backend stores code * scale in bf16 */
    void *dx = up_act(x, N * D), *dq = scratch(N * w), *dy = scratch(N * D * moe_dtype_size(G->dtype));
    ok_call(G->ops->quant_fp8(G, dq, dx, N, D), "quant_fp8");
    ok_call(G->ops->dequant_fp8(G, dy, dq, N, D), "dequant_fp8");
    qg = down(dq, N * w);
    yg = down_act(dy, N * D);
    size_t qdiff = 0, ydiff = 0, nans = 0;
    for (size_t i = 0; i < N * w; i++) qdiff += q[i] != qg[i];
    for (size_t i = 0; i < N * D; i++) {
        nans += isnan(yg[i]);
        ydiff += isnan(y[i]) != isnan(yg[i]) || (!isnan(y[i]) && memcmp(&y[i], &yg[i], 4));
    }
    TAP_OK(qdiff == 0, "%s quant_fp8: %zu of %zu bytes differ from the CPU's (every e4m3 code, ties, subnormal codes, "
           "zero and -0 blocks, an infinity)", bf ? "bf16" : "f32", qdiff, N * w);
    TAP_OK(ydiff == 0 && nans >= 2, "%s dequant_fp8: %zu of %zu values differ from the CPU's (%zu NaN on both)",
           bf ? "bf16" : "f32", ydiff, (size_t)N * D, nans);
    int32_t pos[3] = { 4, 0, 2 };
    void *dp = up(pos, sizeof pos), *dg = scratch(3 * w);
    ok_call(G->ops->gather_bytes(G, dg, dq, dp, 3, w), "gather_bytes");
    uint8_t *gg = down(dg, 3 * w);
    TAP_OK(!memcmp(gg, qg + 4 * w, w) && !memcmp(gg + w, qg, w) && !memcmp(gg + 2 * w, qg + 2 * w, w),
           "%s gather_bytes: packed rows moved whole", bf ? "bf16" : "f32");
    free(x), free(q), free(y), free(qg), free(yg), free(gg);
}

/* ---- the ops one by one ---- */
static void test_perm_experts(moe_backend_t *cpu, moe_backend_t *g2, const float *x, void *dx_, const int32_t *idx,
                              int32_t *didx, const float *tw, float *dtw, long N, long D, long F, int E, int k);

static moe_route_t rt_of(moe_router_t router, int norm, double skew, double scale, int groups, int topk_groups)
{
    return (moe_route_t){ .router = router, .norm = norm, .skew = skew, .scale = scale, .groups = groups,
                          .topk_groups = topk_groups };
}

static void test_ops(moe_backend_t *cpu, moe_backend_t *g2, long N, long D, long F, int E, int k, moe_route_t rt)
{
    const moe_ops_t *c = cpu->ops, *o = G->ops;
    size_t n = (size_t)N * k;
    printf("# N=%ld D=%ld F=%ld E=%d k=%d %s%s skew %g scale %g groups %d/%d\n", N, D, F, E, k,
           moe_router_name(rt.router), rt.norm ? "+norm" : "", rt.skew, rt.scale, rt.topk_groups, rt.groups);
    /* router */
    float *x = rnd((size_t)N * D, 1, 1, 1), *Wr = rnd((size_t)D * E, 2, 1 / sqrt((double)D), 0), *bias = rnd((size_t)E, 3, 0.05, 0);
    float *sc = malloc((size_t)N * E * 4), *tw = malloc(n * 4);
    int32_t *idx = malloc(n * 4);
    int64_t cnt[MAX_E], gcnt[MAX_E];
    c->route_forward(cpu, sc, idx, tw, cnt, x, Wr, bias, N, D, E, k, rt);
    void *dx_ = up_act(x, (size_t)N * D), *dWr_ = up(Wr, (size_t)D * E * 4), *dbias = up(bias, (size_t)E * 4);
    float *dsc = scratch((size_t)N * E * 4), *dtw = scratch(n * 4);
    int32_t *didx = scratch(n * 4);
    ok_call(o->route_forward(G, dsc, didx, dtw, gcnt, dx_, dWr_, dbias, N, D, E, k, rt), "route_forward");
    float *h;
    int32_t *hi;
    cmp("route_forward scores", h = down(dsc, (size_t)N * E * 4), sc, (size_t)N * E, F32); free(h);
    cmp_i32("route_forward topk_idx", hi = down(didx, n * 4), idx, n); free(hi);
    cmp("route_forward topk_w", h = down(dtw, n * 4), tw, n, F32); free(h);
    cmp_i64("route_forward counts", gcnt, cnt, (size_t)E);
    /* route backward, adding into non-zero gradients */
    float *dg = rnd(n, 4, 1, 0), *dxr = rnd((size_t)N * D, 5, 0.1, 1), *dWrr = rnd((size_t)D * E, 6, 0.1, 0);
    float *work = malloc((size_t)N * E * 4);
    void *ddx = up_act(dxr, (size_t)N * D);
    float *ddWr = up(dWrr, (size_t)D * E * 4), *ddg = up(dg, n * 4), *dwork = scratch((size_t)N * E * 4);
    c->route_backward(cpu, dxr, dWrr, work, dg, sc, idx, tw, x, Wr, N, D, E, k, rt);
    /* the GPU gets the CPU's scores/top-k so that both differentiate the same selection */
    ok_call(o->to_backend(G, dsc, sc, (size_t)N * E * 4) || o->to_backend(G, didx, idx, n * 4) ||
            o->to_backend(G, dtw, tw, n * 4), "upload");
    ok_call(o->route_backward(G, ddx, ddWr, dwork, ddg, dsc, didx, dtw, dx_, dWr_, N, D, E, k, rt),
            "route_backward");
    cmp("route_backward dx (added)", h = down_act(ddx, (size_t)N * D), dxr, (size_t)N * D, ACT); free(h);
    cmp("route_backward dWr (added)", h = down(ddWr, (size_t)D * E * 4), dWrr, (size_t)D * E, F32); free(h);

    /* the GPU holds the CPU's top-k (uploaded above) */
    test_perm_experts(cpu, g2, x, dx_, idx, didx, tw, dtw, N, D, F, E, k);
    free(x); free(Wr); free(bias); free(sc); free(tw); free(idx); free(dg); free(dxr); free(dWrr); free(work);
}

/* permutation, unpermute, combine and the experts, forward and backward, on the assignment idx (N,k) with gate
 * weights tw, both also in backend memory (didx, dtw); x (N,D) is host, dx_ its backend copy */
static void test_perm_experts(moe_backend_t *cpu, moe_backend_t *g2, const float *x, void *dx_, const int32_t *idx,
                              int32_t *didx, const float *tw, float *dtw, long N, long D, long F, int E, int k)
{
    const moe_ops_t *c = cpu->ops, *o = G->ops;
    size_t n = (size_t)N * k, es = moe_dtype_size(G->dtype);
    float *h;
    int32_t *hi;
    /* permutation: all experts, then a rank's share [e0, e0+El) */
    for (int pass = 0; pass < 2; pass++) {
        int e0 = pass ? E / 4 : 0, El = pass ? E / 2 : E;
        float *xp = calloc(n * D + 1, 4);
        int32_t *pos = malloc(n * 4);
        int64_t off[MAX_E + 1], goff[MAX_E + 1];
        c->permute_forward(cpu, xp, pos, off, x, idx, N, k, D, e0, El);
        void *dxp = scratch(n * D * es);
        int32_t *dpos = scratch(n * 4);
        ok_call(o->permute_forward(G, dxp, dpos, goff, dx_, didx, N, k, D, e0, El), "permute_forward");
        char what[96];
        long rows = off[El];
        snprintf(what, sizeof what, "permute_forward (experts %d..%d) pos", e0, e0 + El - 1);
        cmp_i32(what, hi = down(dpos, n * 4), pos, n); free(hi);
        snprintf(what, sizeof what, "permute_forward (experts %d..%d) offsets", e0, e0 + El - 1);
        cmp_i64(what, goff, off, (size_t)El + 1);
        snprintf(what, sizeof what, "permute_forward (experts %d..%d) rows", e0, e0 + El - 1);
        cmp(what, h = down_act(dxp, (size_t)rows * D), xp, (size_t)rows * D, EXACT); free(h);
        /* copy (backend to backend), then zero the copy */
        void *dcp = scratch(n * D * es + es);
        float *zeros = calloc((size_t)rows * D + 1, 4);
        ok_call(o->copy(G, dcp, dxp, (size_t)rows * D * es), "copy");
        cmp("copy", h = down_act(dcp, (size_t)rows * D), xp, (size_t)rows * D, EXACT); free(h);
        ok_call(o->zero(G, dcp, (size_t)rows * D * es), "zero");
        cmp("zero", h = down_act(dcp, (size_t)rows * D), zeros, (size_t)rows * D, EXACT); free(h);
        free(zeros);
        /* permute backward into a non-zero dx */
        float *dxb = rnd((size_t)N * D, 7, 0.5, 1), *dxpg = rnd(n * D, 8, 1, 1);
        void *ddxb = up_act(dxb, (size_t)N * D), *ddxpg = up_act(dxpg, n * D);
        c->permute_backward(cpu, dxb, dxpg, pos, N, k, D);
        ok_call(o->permute_backward(G, ddxb, ddxpg, dpos, N, k, D), "permute_backward");
        cmp("permute_backward dx (added)", h = down_act(ddxb, (size_t)N * D), dxb, (size_t)N * D, ACT); free(h);
        /* unpermute forward (a gather with zeros) and backward (a scatter-add) */
        float *un = malloc(n * D * 4), *drow = rnd(n * D, 9, 0.5, 1);
        void *dun = scratch(n * D * es), *ddrow = up_act(drow, n * D);
        c->unpermute_forward(cpu, un, xp, pos, (long)n, D);
        ok_call(o->unpermute_forward(G, dun, dxp, dpos, (long)n, D), "unpermute_forward");
        cmp("unpermute_forward", h = down_act(dun, n * D), un, n * D, EXACT); free(h);
        c->unpermute_backward(cpu, drow, un, pos, (long)n, D);
        ok_call(o->unpermute_backward(G, ddrow, dun, dpos, (long)n, D), "unpermute_backward");
        cmp("unpermute_backward (added)", h = down_act(ddrow, n * D), drow, n * D, ACT); free(h);
        /* combine through pos and per pair, and its backward into non-zero gradients. Forward combines rows of
         * their own: xp's k rows of a token all hold x[t], so with route-norm weights (summing to 1) the result
         * would be x[t] again, exact in bf16, and could not show that the sum was rounded to bf16 */
        float *y = malloc((size_t)N * D * 4), *y2 = malloc((size_t)N * D * 4), *ep = rnd(n * D, 25, 1, 1);
        void *dy_ = scratch((size_t)N * D * es), *dep_ = up_act(ep, n * D);
        c->combine_forward(cpu, y, ep, pos, tw, N, k, D);
        ok_call(o->combine_forward(G, dy_, dep_, dpos, dtw, N, k, D), "combine_forward");
        cmp("combine_forward (pos)", h = down_act(dy_, (size_t)N * D), y, (size_t)N * D, ACT); free(h);
        c->combine_forward(cpu, y2, ep, NULL, tw, N, k, D);
        ok_call(o->combine_forward(G, dy_, dep_, NULL, dtw, N, k, D), "combine_forward");
        cmp("combine_forward (per pair)", h = down_act(dy_, (size_t)N * D), y2, (size_t)N * D, ACT); free(h);
        float *gy = rnd((size_t)N * D, 10, 1, 1), *dep = rnd(n * D, 11, 0.5, 1), *dgate = rnd(n, 12, 0.5, 0);
        void *dgy = up_act(gy, (size_t)N * D), *ddep = up_act(dep, n * D);
        float *ddgate = up(dgate, n * 4);
        c->combine_backward(cpu, dep, dgate, gy, xp, pos, tw, N, k, D);
        ok_call(o->combine_backward(G, ddep, ddgate, dgy, dxp, dpos, dtw, N, k, D), "combine_backward");
        cmp("combine_backward d_ep_out (added)", h = down_act(ddep, (size_t)rows * D), dep, (size_t)rows * D, ACT); free(h);
        cmp("combine_backward d_gate (added)", h = down(ddgate, n * 4), dgate, n, F32); free(h);
        /* combine with the gates applied before the experts: unweighted, and its backward without d_gate */
        c->combine_forward(cpu, y, ep, pos, NULL, N, k, D);
        ok_call(o->combine_forward(G, dy_, dep_, dpos, NULL, N, k, D), "combine_forward (no weights)");
        cmp("combine_forward (no weights)", h = down_act(dy_, (size_t)N * D), y, (size_t)N * D, ACT); free(h);
        c->combine_backward(cpu, dep, NULL, gy, xp, pos, NULL, N, k, D);
        ok_call(o->combine_backward(G, ddep, NULL, dgy, dxp, dpos, NULL, N, k, D), "combine_backward (no weights)");
        cmp("combine_backward (no weights, no d_gate) d_ep_out (added)", h = down_act(ddep, (size_t)rows * D), dep,
            (size_t)rows * D, ACT); free(h);
        /* --gate-before's ops: rows placed as gate * x, and their backward into non-zero gradients */
        float *sr = calloc(n * D + 1, 4), *sd_in = rnd((size_t)N * D, 26, 0.5, 1), *sd_w = rnd(n, 27, 0.5, 0),
              *sd_out = rnd(n * D, 28, 1, 1);
        void *dsr = scratch(n * D * es + es), *dsd_in = up_act(sd_in, (size_t)N * D), *dsd_out = up_act(sd_out, n * D);
        float *dsd_w = up(sd_w, n * 4);
        c->scale_rows_forward(cpu, sr, x, pos, tw, N, k, D);
        ok_call(o->scale_rows_forward(G, dsr, dx_, dpos, dtw, N, k, D), "scale_rows_forward");
        cmp("scale_rows_forward (gate * x)", h = down_act(dsr, (size_t)rows * D), sr, (size_t)rows * D, ACT); free(h);
        c->scale_rows_forward(cpu, sr, x, pos, NULL, N, k, D);
        ok_call(o->scale_rows_forward(G, dsr, dx_, dpos, NULL, N, k, D), "scale_rows_forward (no weights)");
        cmp("scale_rows_forward (no weights) = a copy", h = down_act(dsr, (size_t)rows * D), xp, (size_t)rows * D, EXACT);
        free(h);
        c->scale_rows_backward(cpu, sd_in, sd_w, sd_out, x, pos, tw, N, k, D);
        ok_call(o->scale_rows_backward(G, dsd_in, dsd_w, dsd_out, dx_, dpos, dtw, N, k, D), "scale_rows_backward");
        cmp("scale_rows_backward d_in (added)", h = down_act(dsd_in, (size_t)N * D), sd_in, (size_t)N * D, ACT); free(h);
        cmp("scale_rows_backward d_w (added)", h = down(dsd_w, n * 4), sd_w, n, F32); free(h);
        c->scale_rows_backward(cpu, sd_in, NULL, sd_out, x, pos, tw, N, k, D);
        ok_call(o->scale_rows_backward(G, dsd_in, NULL, dsd_out, dx_, dpos, dtw, N, k, D), "scale_rows_backward");
        cmp("scale_rows_backward (no d_w) d_in (added)", h = down_act(dsd_in, (size_t)N * D), sd_in, (size_t)N * D, ACT);
        free(h);
        /* add: y += a */
        c->add(cpu, sd_out, ep, n * D);
        ok_call(o->add(G, dsd_out, dep_, n * D), "add");
        cmp("add (y += a)", h = down_act(dsd_out, n * D), sd_out, n * D, ACT); free(h);
        free(sr); free(sd_in); free(sd_w); free(sd_out);

        /* experts over the permuted rows, grouped and per-expert GEMMs */
        size_t wn = (size_t)El * D * F;
        float *w1 = rnd(wn, 13, 1 / sqrt((double)D), 1), *w3 = rnd(wn, 14, 1 / sqrt((double)D), 1),
              *w2 = rnd(wn, 15, 1 / sqrt((double)F), 1);
        float *out = malloc(n * D * 4 + 4), *a1 = malloc(n * F * 4 + 4), *a3 = malloc(n * F * 4 + 4),
              *s = malloc(n * F * 4 + 4), *hh = malloc(2 * n * F * 4 + 4);
        c->experts_forward(cpu, out, a1, a3, s, hh, xp, w1, w3, w2, off, El, D, F);
        float *gout = rnd(n * D, 16, 1, 1), *dxpr = rnd(n * D, 17, 0.1, 1), *dw1 = rnd(wn, 18, 0.1, 1),
              *dw3 = rnd(wn, 19, 0.1, 1), *dw2 = rnd(wn, 20, 0.1, 1);
        float *dxpr0 = malloc(n * D * 4 + 4), *dw10 = malloc(wn * 4), *dw30 = malloc(wn * 4), *dw20 = malloc(wn * 4);
        memcpy(dxpr0, dxpr, n * D * 4); memcpy(dw10, dw1, wn * 4); memcpy(dw30, dw3, wn * 4); memcpy(dw20, dw2, wn * 4);
        c->experts_backward(cpu, dxpr, dw1, dw3, dw2, hh, gout, a1, a3, s, xp, w1, w3, w2, off, El, D, F);
        moe_backend_t *gs[2] = { G, g2 };
        for (int v = 0; v < 2; v++) {
            moe_backend_t *keep = G;
            G = gs[v];
            const moe_ops_t *og = G->ops;
            void *gxp = up_act(xp, (size_t)rows * D + 1), *gw1 = up_act(w1, wn), *gw3 = up_act(w3, wn), *gw2 = up_act(w2, wn);
            void *gouts = scratch(n * D * es), *ga1 = scratch(n * F * es), *ga3 = scratch(n * F * es),
                 *gsg = scratch(n * F * es), *gwork = scratch(2 * n * F * es + 64);
            ok_call(og->experts_forward(G, gouts, ga1, ga3, gsg, gwork, gxp, gw1, gw3, gw2, off, El, D, F), "experts_forward");
            char w[96];
            snprintf(w, sizeof w, "experts_forward (%s GEMMs) out", moe_cuda_gemm_path(G));
            cmp(w, h = down_act(gouts, (size_t)rows * D), out, (size_t)rows * D, ACT); free(h);
            cmp("experts_forward a1", h = down_act(ga1, (size_t)rows * F), a1, (size_t)rows * F, ACT); free(h);
            cmp("experts_forward s", h = down_act(gsg, (size_t)rows * F), s, (size_t)rows * F, ACT); free(h);
            void *ggout = up_act(gout, n * D), *gdxp = up_act(dxpr0, n * D), *gdw1 = up_act(dw10, wn),
                 *gdw3 = up_act(dw30, wn), *gdw2 = up_act(dw20, wn);
            ok_call(og->experts_backward(G, gdxp, gdw1, gdw3, gdw2, gwork, ggout, ga1, ga3, gsg, gxp, gw1, gw3, gw2, off,
                                         El, D, F), "experts_backward");
            snprintf(w, sizeof w, "experts_backward (%s GEMMs) d_xp (added)", moe_cuda_gemm_path(G));
            cmp(w, h = down_act(gdxp, (size_t)rows * D), dxpr, (size_t)rows * D, ACT); free(h);
            cmp("experts_backward dw1 (added)", h = down_act(gdw1, wn), dw1, wn, ACT); free(h);
            cmp("experts_backward dw3 (added)", h = down_act(gdw3, wn), dw3, wn, ACT); free(h);
            cmp("experts_backward dw2 (added)", h = down_act(gdw2, wn), dw2, wn, ACT); free(h);
            G = keep;
        }
        free(w1); free(w3); free(w2); free(out); free(a1); free(a3); free(s); free(hh); free(gout); free(dxpr);
        free(dw1); free(dw3); free(dw2); free(dxpr0); free(dw10); free(dw30); free(dw20);
        free(xp); free(pos); free(dxb); free(dxpg); free(un); free(drow); free(y); free(y2); free(ep); free(gy); free(dep);
        free(dgate);
    }
}

/* A synthetic assignment: many experts, low ids hot so that most get no rows (empty groups of the grouped GEMM),
 * every 11th token with its last choice routed nowhere (-1), and N*k pairs over more than 32 permutation blocks
 * (the scan goes 32 blocks at a time) and El over 256 experts. */
static void test_many_experts(moe_backend_t *cpu, moe_backend_t *g2, long N, long D, long F, int E, int k)
{
    size_t n = (size_t)N * k;
    printf("# synthetic assignment: N=%ld D=%ld F=%ld E=%d k=%d\n", N, D, F, E, k);
    float *x = rnd((size_t)N * D, 21, 1, 1), *tw = rnd(n, 22, 1, 0);
    int32_t *idx = malloc(n * 4);
    for (long t = 0; t < N; t++) {
        double u = 0.5 * (epb_uniform(77, 23, (uint64_t)t) + 1.0); /* [0,1) */
        int first = (int)(u * u * u * E);
        for (int j = 0; j < k; j++) idx[t * k + j] = (t % 11 == 0 && j == k - 1) ? -1 : (first + j) % E;
    }
    void *dx_ = up_act(x, (size_t)N * D);
    int32_t *didx = up(idx, n * 4);
    float *dtw = up(tw, n * 4);
    test_perm_experts(cpu, g2, x, dx_, idx, didx, tw, dtw, N, D, F, E, k);
    free(x); free(tw); free(idx);
}

/* Exact ties: Wr = 0 makes every logit 0, so every score is the same (1/E, or 0.5 for sigmoid) on both devices,
 * and the bias takes three values: the choice among equals must go to the lower expert index, as on the CPU. */
static void test_route_ties(moe_backend_t *cpu, long N, long D, int E, int k, moe_route_t rt)
{
    const moe_ops_t *c = cpu->ops, *o = G->ops;
    size_t n = (size_t)N * k;
    float *x = rnd((size_t)N * D, 24, 1, 1), *Wr = calloc((size_t)D * E, 4), *bias = malloc((size_t)E * 4);
    for (int e = 0; e < E; e++) bias[e] = 0.01f * (float)((e * 7) % 3);
    float *sc = malloc((size_t)N * E * 4), *tw = malloc(n * 4), *h;
    int32_t *idx = malloc(n * 4), *hi;
    int64_t cnt[MAX_E], gcnt[MAX_E];
    c->route_forward(cpu, sc, idx, tw, cnt, x, Wr, bias, N, D, E, k, rt);
    void *dx_ = up_act(x, (size_t)N * D), *dWr_ = up(Wr, (size_t)D * E * 4), *dbias = up(bias, (size_t)E * 4);
    float *dsc = scratch((size_t)N * E * 4), *dtw = scratch(n * 4);
    int32_t *didx = scratch(n * 4);
    ok_call(o->route_forward(G, dsc, didx, dtw, gcnt, dx_, dWr_, dbias, N, D, E, k, rt),
            "route_forward (ties)");
    /* bias 0.02 goes to e = 2, 5, 8, ...: the CPU's first choice is expert 2 */
    TAP_OK(idx[0] == 2, "%s route_forward ties: the CPU picks the lowest index among equals (%d)", bf ? "bf16" : "f32",
           idx[0]);
    cmp_i32("route_forward ties topk_idx", hi = down(didx, n * 4), idx, n); free(hi);
    cmp("route_forward ties topk_w", h = down(dtw, n * 4), tw, n, F32); free(h);
    cmp_i64("route_forward ties counts", gcnt, cnt, (size_t)E);
    free(x); free(Wr); free(bias); free(sc); free(tw); free(idx);
}

/* ---- the whole layer, forward and backward ---- */
/* feat: the layer features (route_scale, groups, gate_before, shared experts) to run with */
static void test_layer(moe_backend_t *cpu, long N, long D, long F, int E, int k, moe_router_t router, int route_norm,
                       double skew, const moe_config_t *feat)
{
    epb_err_t err;
    moe_config_t c = *feat;
    c.T = N, c.D = D, c.F = F, c.E = E, c.k = k, c.router = router, c.route_norm = route_norm, c.skew = skew;
    c.seed = 11;
    moe_config_t cr = c; /* the reference runs fp32 on the bf16-rounded inputs */
    c.dtype = bf ? MOE_BF16 : MOE_F32;
    moe_run_t R, L; /* the single-device layer on each backend */
    memset(&R, 0, sizeof R);
    memset(&L, 0, sizeof L);
    if (moe_run_create_single(&R, &cr, cpu, &err) || moe_run_create_single(&L, &c, G, &err)) {
        TAP_OK(0, "layer set-up: %s", err.msg);
        moe_run_destroy(&R);
        return;
    }
    size_t nD = (size_t)N * D, wn = (size_t)E * D * F, sn = (size_t)D * c.shared * c.Fs;
    if (bf) {
        moe_round_bf16(R.x, nD);
        moe_round_bf16(R.dy, nD);
        moe_round_bf16(R.w1, wn);
        moe_round_bf16(R.w3, wn);
        moe_round_bf16(R.w2, wn);
        if (sn) {
            moe_round_bf16(R.sw1, sn);
            moe_round_bf16(R.sw3, sn);
            moe_round_bf16(R.sw2, sn);
        }
    }
    int rc = moe_run_step(&R, &err);
    double ph[MOE_NPHASES] = { 0 };
    rc = rc || moe_run_step(&L, &err);
    memcpy(ph, L.m.us, sizeof ph);
    char feats[128];
    moe_config_params(&c, feats, sizeof feats);
    TAP_OK(!rc, "%s layer N=%ld D=%ld F=%ld E=%d k=%d %s%s skew %g %s: forward+backward ran%s%s", bf ? "bf16" : "f32", N,
           D, F, E, k, moe_router_name(router), route_norm ? "+norm" : "", skew, feats, rc ? ": " : "", rc ? err.msg : "");
    if (!rc) {
        float *h;
        int32_t *hi;
        cmp_i32("layer topk_idx", hi = down(L.topk_idx, (size_t)N * k * 4), R.topk_idx, (size_t)N * k); free(hi);
        cmp_i64("layer counts", L.counts, R.counts, (size_t)E);
        cmp_i64("layer offsets", L.offsets, R.offsets, (size_t)E + 1);
        cmp("layer topk_w", h = down(L.topk_w, (size_t)N * k * 4), R.topk_w, (size_t)N * k, F32); free(h);
        cmp("layer y", h = down_act(L.y, nD), R.y, nD, LAYER); free(h);
        cmp("layer dx", h = down_act(L.dx, nD), R.dx, nD, LAYER); free(h);
        /* dWr comes from bf16 activations through d_gate: it carries their error, though computed in fp32 */
        cmp("layer d_router_w", h = down(L.dWr, (size_t)D * E * 4), R.dWr, (size_t)D * E, bf ? ACT : F32); free(h);
        cmp("layer dw1", h = down_act(L.dw1, wn), R.dw1, wn, LAYER); free(h);
        cmp("layer dw3", h = down_act(L.dw3, wn), R.dw3, wn, LAYER); free(h);
        cmp("layer dw2", h = down_act(L.dw2, wn), R.dw2, wn, LAYER); free(h);
        if (sn) {
            cmp("layer d_shared_w1", h = down_act(L.dsw1, sn), R.dsw1, sn, LAYER); free(h);
            cmp("layer d_shared_w3", h = down_act(L.dsw3, sn), R.dsw3, sn, LAYER); free(h);
            cmp("layer d_shared_w2", h = down_act(L.dsw2, sn), R.dsw2, sn, LAYER); free(h);
            TAP_OK(L.m.us[MOE_PH_SHARED_FWD] > 0 && L.m.us[MOE_PH_SHARED_BWD] > 0, "%s shared_fwd and shared_bwd timed",
                   bf ? "bf16" : "f32");
        }
        double tot = 0;
        for (int p = 0; p < MOE_NPHASES; p++) tot += ph[p];
        TAP_OK(tot > 0 && ph[MOE_PH_EXPERTS_FWD] > 0, "cudaEvent phase times are positive (total %.1f us)", tot);
    }
    moe_run_destroy(&L);
    moe_run_destroy(&R);
}

int main(void)
{
    int ndev = moe_cuda_device_count();
    if (ndev == 0) {
        const char *req = getenv("EPB_REQUIRE_GPU"); /* ci/gpu: a skip there would hide that nothing ran */
        if (req && *req && strcmp(req, "0")) {
            printf("Bail out! EPB_REQUIRE_GPU is set but no CUDA device is visible (or CUDA is not built)\n");
            return 1;
        }
        printf("1..0 # SKIP no CUDA device visible\n");
        return 77;
    }
    epb_err_t err;
    moe_backend_t *cpu;
    if (moe_cpu_backend_create(&cpu, &err)) {
        printf("Bail out! %s\n", err.msg);
        return 1;
    }
    /* the comparison itself must be able to fail */
    float a[3] = { 1, 2, 3 }, b[3] = { 1, 2, NAN }, c3[3] = { 1, 2, 3.001f };
    TAP_OK(isnan(moe_rel_err(b, a, 3)) && !(moe_rel_err(b, a, 3) <= F32_TOL) && moe_rel_err(c3, a, 3) > F32_TOL,
           "the comparison fails on NaN and on a 3e-4 error");
    for (bf = 0; bf < 2; bf++) {
        moe_backend_t *g2;
        moe_dtype_t dt = bf ? MOE_BF16 : MOE_F32;
        if (moe_cuda_backend_create(&G, dt, 0, NULL, &err)) { printf("Bail out! %s\n", err.msg); return 1; }
        setenv("EPB_CUDA_GROUPED", "0", 1);
        int rc = moe_cuda_backend_create(&g2, dt, 0, NULL, &err);
        unsetenv("EPB_CUDA_GROUPED");
        if (rc) { printf("Bail out! %s\n", err.msg); return 1; }
        /* 600 pairs: three permutation blocks; D=96 rows copy as 16-byte words, D=50 element by element */
        test_ops(cpu, g2, 300, 96, 80, 8, 2, rt_of(MOE_SOFTMAX, 0, 0, 1, 1, 1));
        test_ops(cpu, g2, 130, 50, 36, 16, 4, rt_of(MOE_SIGMOID, 1, 1.0, 1, 1, 1));
        test_ops(cpu, g2, 77, 64, 40, 4, 1, rt_of(MOE_SOFTMAX, 1, 4.0, 1, 1, 1)); /* skew 4: some experts get no rows */
        /* D > 2 x 256: every thread of combine_backward's 256-thread reduction holds a partial dot, and the
         * row kernels' loops over D go round more than once */
        test_ops(cpu, g2, 40, 600, 72, 4, 2, rt_of(MOE_SOFTMAX, 0, 0, 1, 1, 1));
        /* DeepSeek-V3's router: sigmoid, renormalised, scaled by 2.5, 4 of 8 groups; and softmax in groups of 2 */
        test_ops(cpu, g2, 130, 50, 36, 32, 4, rt_of(MOE_SIGMOID, 1, 0.5, 2.5, 8, 4));
        test_ops(cpu, g2, 96, 40, 24, 16, 3, rt_of(MOE_SOFTMAX, 0, 0, 0.7, 8, 2));
        test_fp8(cpu);
        test_many_experts(cpu, g2, 2100, 24, 16, 300, 4);          /* 8400 pairs: 33 blocks; 300 experts */
        test_route_ties(cpu, 64, 32, 16, 4, rt_of(MOE_SOFTMAX, 1, 0, 1, 1, 1));
        test_route_ties(cpu, 64, 32, 16, 4, rt_of(MOE_SIGMOID, 0, 0, 1, 1, 1));
        test_route_ties(cpu, 64, 32, 16, 4, rt_of(MOE_SIGMOID, 1, 0, 2.5, 4, 2)); /* tied group scores too */
        moe_config_t lc = moe_config_default();
        test_layer(cpu, 256, 96, 80, 8, 2, MOE_SOFTMAX, 0, 0, &lc);
        test_layer(cpu, 200, 64, 48, 16, 4, MOE_SIGMOID, 1, 0.5, &lc);
        /* every feature of issue 14 at once: gate before the experts, route scale, groups, two shared experts */
        lc.gate_before = true, lc.route_scale = 2.5, lc.groups = 4, lc.topk_groups = 2, lc.shared = 2, lc.Fs = 40;
        test_layer(cpu, 200, 64, 48, 16, 4, MOE_SIGMOID, 1, 0.5, &lc);
        moe_backend_destroy(g2);
        moe_backend_destroy(G);
    }
    moe_backend_destroy(cpu);
    return tap_done();
}
