/* moe/cpu: the ops table with OpenBLAS (cblas_sgemm), float32, host memory. No allocation outside ops->alloc:
 * every scratch buffer is passed in by the caller, who allocates it once at set-up. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"
#include "route_row.h"

/* ---------------------------------------------------------------- memory, copies, timing */

typedef struct {
    size_t bytes;
    char pad[56]; /* keeps the payload 64-byte aligned */
} cpu_hdr_t;

struct moe_event {
    double us;
};

static void *cpu_alloc(moe_backend_t *be, size_t bytes)
{
    size_t total = sizeof(cpu_hdr_t) + ((bytes + 63) & ~(size_t)63);
    cpu_hdr_t *h = aligned_alloc(64, total);
    if (!h) {
        epb_fail(&be->err, EPB_ESYS, "cpu backend: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    h->bytes = bytes;
    be->cur_bytes += bytes;
    if (be->cur_bytes > be->peak_bytes) be->peak_bytes = be->cur_bytes;
    return h + 1;
}

static void cpu_free(moe_backend_t *be, void *p)
{
    if (!p) return;
    cpu_hdr_t *h = (cpu_hdr_t *)p - 1;
    be->cur_bytes -= h->bytes;
    free(h);
}

static int cpu_zero(moe_backend_t *be, void *p, size_t bytes) { (void)be; memset(p, 0, bytes); return EPB_OK; }
static int cpu_copy(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return EPB_OK;
}
static int cpu_sync(moe_backend_t *be) { (void)be; return EPB_OK; }

static int cpu_event_create(moe_backend_t *be, moe_event_t **ev)
{
    *ev = calloc(1, sizeof **ev);
    return *ev ? EPB_OK : epb_fail(&be->err, EPB_ESYS, "cpu backend: out of memory (event)");
}
static void cpu_event_destroy(moe_backend_t *be, moe_event_t *ev) { (void)be; free(ev); }
static int cpu_event_record(moe_backend_t *be, moe_event_t *ev) { (void)be; ev->us = epb_now_us(); return EPB_OK; }
static int cpu_event_elapsed_us(moe_backend_t *be, const moe_event_t *a, const moe_event_t *b, double *us)
{
    (void)be;
    *us = b->us - a->us;
    return EPB_OK;
}

static void cpu_destroy(moe_backend_t *be) { free(be); }

/* ---------------------------------------------------------------- router */

static int cpu_route_forward(moe_backend_t *be, float *scores, int32_t *topk_idx, float *topk_w, int64_t *counts,
                             const void *xv, const float *Wr, const float *bias, long N, long D, int E, int k,
                             moe_route_t rt)
{
    (void)be;
    const float *x = xv;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, E, (int)D, 1.0f, x, (int)D, Wr, E, 0.0f,
                scores, E);
    memset(counts, 0, (size_t)E * sizeof *counts);
    for (long t = 0; t < N; t++) {
        moe_route_row_forward(scores + t * E, topk_idx + t * k, topk_w + t * k, bias, E, k, rt);
        for (int j = 0; j < k; j++) counts[topk_idx[t * k + j]]++;
    }
    return EPB_OK;
}

static int cpu_route_backward(moe_backend_t *be, void *dxv, float *dWr, float *work, const float *d_gate,
                              const float *scores, const int32_t *topk_idx, const float *topk_w, const void *xv,
                              const float *Wr, long N, long D, int E, int k, moe_route_t rt)
{
    (void)be;
    float *dx = dxv;
    const float *x = xv;
    float *dlogits = work; // (N,E)
    for (long t = 0; t < N; t++)
        moe_route_row_backward(dlogits + t * E, d_gate + t * k, scores + t * E, topk_idx + t * k, topk_w + t * k, E, k,
                               rt);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)D, E, 1.0f, dlogits, E, Wr, E, 1.0f, dx,
                (int)D);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, E, (int)N, 1.0f, x, (int)D, dlogits, E, 1.0f,
                dWr, E);
    return EPB_OK;
}

/* ---------------------------------------------------------------- permutation */

static int cpu_permute_forward(moe_backend_t *be, void *xpv, int32_t *pos, int64_t *offsets, const void *xv,
                               const int32_t *assign, long N, int k, long D, int e0, int El)
{
    (void)be;
    float *xp = xpv;
    const float *x = xv;
    long n = N * k;
    memset(offsets, 0, (size_t)(El + 1) * sizeof *offsets);
    for (long i = 0; i < n; i++) {
        unsigned a = (unsigned)(assign[i] - e0);
        if (a < (unsigned)El) offsets[a + 1]++;
    }
    for (int a = 0; a < El; a++) offsets[a + 1] += offsets[a];
    /* stable: a running cursor per expert, pairs in order; offsets[a] is the cursor until the pass ends */
    for (long i = 0; i < n; i++) {
        unsigned a = (unsigned)(assign[i] - e0);
        if (a < (unsigned)El) {
            int64_t r = offsets[a]++;
            pos[i] = (int32_t)r;
            memcpy(xp + r * D, x + (i / k) * D, (size_t)D * sizeof *xp);
        } else {
            pos[i] = -1;
        }
    }
    for (int a = El; a > 0; a--) offsets[a] = offsets[a - 1];
    offsets[0] = 0;
    return EPB_OK;
}

static int cpu_permute_backward(moe_backend_t *be, void *dxv, const void *d_xpv, const int32_t *pos, long N, int k,
                                long D)
{
    (void)be;
    float *dx = dxv;
    const float *d_xp = d_xpv;
    for (long t = 0; t < N; t++) {
        float *o = dx + t * D;
        for (int j = 0; j < k; j++) {
            int32_t r = pos[t * k + j];
            if (r < 0) continue;
            const float *g = d_xp + (long)r * D;
            for (long d = 0; d < D; d++) o[d] += g[d];
        }
    }
    return EPB_OK;
}

static int cpu_unpermute_forward(moe_backend_t *be, void *outv, const void *rowsv, const int32_t *pos, long n,
                                 long D)
{
    (void)be;
    float *out = outv;
    const float *rows = rowsv;
    for (long i = 0; i < n; i++) {
        if (pos[i] < 0) memset(out + i * D, 0, (size_t)D * sizeof *out);
        else memcpy(out + i * D, rows + (long)pos[i] * D, (size_t)D * sizeof *out);
    }
    return EPB_OK;
}

static int cpu_unpermute_backward(moe_backend_t *be, void *d_rowsv, const void *d_outv, const int32_t *pos, long n,
                                  long D)
{
    (void)be;
    float *d_rows = d_rowsv;
    const float *d_out = d_outv;
    for (long i = 0; i < n; i++) {
        if (pos[i] < 0) continue;
        float *o = d_rows + (long)pos[i] * D;
        const float *g = d_out + i * D;
        for (long d = 0; d < D; d++) o[d] += g[d];
    }
    return EPB_OK;
}

/* ---------------------------------------------------------------- experts */

/* sigmoid(a) = 1/(1+exp(-a)) with an exp the compiler vectorises (libm's expf is a call per element, about 5%
 * of experts_fwd): exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2/2, Cephes' degree-6 polynomial (relative
 * error ~1e-7); n is rounded with the 1.5*2^23 trick. NaN stays NaN. */
static inline float sigmoidf_vec(float a)
{
    float x = -a;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t u; float f; } scale = { .u = (uint32_t)((int32_t)n + 127) << 23 };
    return 1.0f / (1.0f + p * scale.f);
}

static int cpu_experts_forward(moe_backend_t *be, void *outv, void *a1v, void *a3v, void *sv, void *hv,
                               const void *xpv, const void *w1v, const void *w3v, const void *w2v,
                               const int64_t *offsets, int El, long D, long F)
{
    (void)be;
    float *out = outv, *a1 = a1v, *a3 = a3v, *s = sv, *h = hv;
    const float *xp = xpv, *w1 = w1v, *w3 = w3v, *w2 = w2v;
    for (int a = 0; a < El; a++) {
        long r0 = offsets[a], n = offsets[a + 1] - r0;
        if (n == 0) continue;
        const float *X = xp + r0 * D; // (n,D)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)F, (int)D, 1.0f, X, (int)D,
                    w1 + a * D * F, (int)F, 0.0f, a1 + r0 * F, (int)F);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)F, (int)D, 1.0f, X, (int)D,
                    w3 + a * D * F, (int)F, 0.0f, a3 + r0 * F, (int)F);
        float *A1 = a1 + r0 * F, *A3 = a3 + r0 * F, *S = s + r0 * F, *H = h + r0 * F;
        for (long i = 0; i < n * F; i++) {
            float sg = sigmoidf_vec(A1[i]);
            S[i] = sg;
            H[i] = A1[i] * sg * A3[i];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)D, (int)F, 1.0f, H, (int)F,
                    w2 + a * F * D, (int)D, 0.0f, out + r0 * D, (int)D);
    }
    return EPB_OK;
}

static int cpu_experts_backward(moe_backend_t *be, void *d_xpv, void *dw1v, void *dw3v, void *dw2v, void *workv,
                                const void *d_outv, const void *a1v, const void *a3v, const void *sv,
                                const void *xpv, const void *w1v, const void *w3v, const void *w2v,
                                const int64_t *offsets, int El, long D, long F)
{
    (void)be;
    float *d_xp = d_xpv, *dw1 = dw1v, *dw3 = dw3v, *dw2 = dw2v, *work = workv;
    const float *d_out = d_outv, *a1 = a1v, *a3 = a3v, *s = sv, *xp = xpv, *w1 = w1v, *w3 = w3v, *w2 = w2v;
    long rows = offsets[El];
    for (int a = 0; a < El; a++) {
        long r0 = offsets[a], n = offsets[a + 1] - r0;
        if (n == 0) continue;
        const float *A1 = a1 + r0 * F, *A3 = a3 + r0 * F, *S = s + r0 * F;
        const float *X = xp + r0 * D, *G = d_out + r0 * D; // (n,D)
        float *P = work + r0 * F, *Q = work + (rows + r0) * F; // (n,F) each: h then da1; dh then da3
        for (long i = 0; i < n * F; i++) P[i] = A1[i] * S[i] * A3[i];
        /* dw2 += h^T dout; dh = dout w2^T */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)F, (int)D, (int)n, 1.0f, P, (int)F, G, (int)D,
                    1.0f, dw2 + a * F * D, (int)D);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)F, (int)D, 1.0f, G, (int)D,
                    w2 + a * F * D, (int)D, 0.0f, Q, (int)F);
        /* h = a1*s*a3: da1 = dh*a3*s*(1 + a1*(1-s)), da3 = dh*a1*s */
        for (long i = 0; i < n * F; i++) {
            float dh = Q[i], sg = S[i], x1 = A1[i];
            P[i] = dh * A3[i] * sg * (1.0f + x1 * (1.0f - sg));
            Q[i] = dh * x1 * sg;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, (int)F, (int)n, 1.0f, X, (int)D, P, (int)F,
                    1.0f, dw1 + a * D * F, (int)F);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, (int)F, (int)n, 1.0f, X, (int)D, Q, (int)F,
                    1.0f, dw3 + a * D * F, (int)F);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)D, (int)F, 1.0f, P, (int)F,
                    w1 + a * D * F, (int)F, 1.0f, d_xp + r0 * D, (int)D);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)D, (int)F, 1.0f, Q, (int)F,
                    w3 + a * D * F, (int)F, 1.0f, d_xp + r0 * D, (int)D);
    }
    return EPB_OK;
}

static int cpu_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    (void)be;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K, B, (int)N, 0.0f, C,
                (int)N);
    return EPB_OK;
}

/* ---------------------------------------------------------------- gate weights on rows placed by pair */

static int cpu_scale_rows_forward(moe_backend_t *be, void *outv, const void *inv, const int32_t *pos, const float *w,
                                  long N, int k, long D)
{
    (void)be;
    float *out = outv;
    const float *in = inv;
    for (long i = 0; i < N * k; i++) {
        long r = pos ? pos[i] : i;
        if (r < 0) continue;
        const float *x = in + (i / k) * D;
        float *o = out + r * D, g = w ? w[i] : 1.0f;
        for (long d = 0; d < D; d++) o[d] = g * x[d];
    }
    return EPB_OK;
}

static int cpu_scale_rows_backward(moe_backend_t *be, void *d_inv, float *d_w, const void *d_outv, const void *inv,
                                   const int32_t *pos, const float *w, long N, int k, long D)
{
    (void)be;
    float *d_in = d_inv;
    const float *d_out = d_outv, *in = inv;
    for (long t = 0; t < N; t++) {
        float *o = d_in + t * D;
        const float *x = in + t * D;
        for (int j = 0; j < k; j++) {
            long i = t * k + j, r = pos ? pos[i] : i;
            if (r < 0) continue;
            const float *g = d_out + r * D, c = w ? w[i] : 1.0f;
            float dot = 0;
            for (long d = 0; d < D; d++) {
                o[d] += c * g[d];
                dot += g[d] * x[d];
            }
            if (d_w) d_w[i] += dot;
        }
    }
    return EPB_OK;
}

/* ---------------------------------------------------------------- FP8 rows */

static int cpu_quant_fp8(moe_backend_t *be, void *qv, const void *xv, long n, long D)
{
    (void)be;
    size_t w = moe_fp8_row_bytes(D);
    const float *x = xv;
    for (long i = 0; i < n; i++) moe_fp8_quant_row((uint8_t *)qv + (size_t)i * w, x + i * D, D);
    return EPB_OK;
}

static int cpu_dequant_fp8(moe_backend_t *be, void *xv, const void *qv, long n, long D)
{
    (void)be;
    size_t w = moe_fp8_row_bytes(D);
    float *x = xv;
    for (long i = 0; i < n; i++) moe_fp8_dequant_row(x + i * D, (const uint8_t *)qv + (size_t)i * w, D);
    return EPB_OK;
}

static int cpu_gather_bytes(moe_backend_t *be, void *outv, const void *rowsv, const int32_t *pos, long n,
                            size_t row_bytes)
{
    (void)be;
    for (long i = 0; i < n; i++)
        memcpy((char *)outv + (size_t)i * row_bytes, (const char *)rowsv + (size_t)pos[i] * row_bytes, row_bytes);
    return EPB_OK;
}

static int cpu_add(moe_backend_t *be, void *yv, const void *av, size_t n)
{
    (void)be;
    float *y = yv;
    const float *a = av;
    for (size_t i = 0; i < n; i++) y[i] += a[i];
    return EPB_OK;
}

/* ---------------------------------------------------------------- unpermute + combine */

static int cpu_combine_forward(moe_backend_t *be, void *yv, const void *ep_outv, const int32_t *pos,
                               const float *topk_w, long N, int k, long D)
{
    (void)be;
    float *y = yv;
    const float *ep_out = ep_outv;
    for (long t = 0; t < N; t++) {
        float *o = y + t * D;
        memset(o, 0, (size_t)D * sizeof *o);
        for (int j = 0; j < k; j++) {
            long i = t * k + j, r = pos ? pos[i] : i;
            if (r < 0) continue;
            const float *e = ep_out + r * D, w = topk_w ? topk_w[i] : 1.0f;
            for (long d = 0; d < D; d++) o[d] += w * e[d];
        }
    }
    return EPB_OK;
}

static int cpu_combine_backward(moe_backend_t *be, void *d_ep_outv, float *d_gate, const void *dyv,
                                const void *ep_outv, const int32_t *pos, const float *topk_w, long N, int k, long D)
{
    (void)be;
    float *d_ep_out = d_ep_outv;
    const float *dy = dyv, *ep_out = ep_outv;
    for (long t = 0; t < N; t++) {
        const float *g = dy + t * D;
        for (int j = 0; j < k; j++) {
            long i = t * k + j, r = pos ? pos[i] : i;
            if (r < 0) continue;
            const float *e = ep_out + r * D, w = topk_w ? topk_w[i] : 1.0f;
            float *de = d_ep_out + r * D, dot = 0;
            if (!d_gate) {
                for (long d = 0; d < D; d++) de[d] += w * g[d];
                continue;
            }
            for (long d = 0; d < D; d++) {
                de[d] += w * g[d];
                dot += g[d] * e[d];
            }
            d_gate[i] += dot;
        }
    }
    return EPB_OK;
}

static const moe_ops_t cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .to_backend = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_elapsed_us = cpu_event_elapsed_us,
    .destroy = cpu_destroy,
    .route_forward = cpu_route_forward,
    .route_backward = cpu_route_backward,
    .permute_forward = cpu_permute_forward,
    .permute_backward = cpu_permute_backward,
    .unpermute_forward = cpu_unpermute_forward,
    .unpermute_backward = cpu_unpermute_backward,
    .experts_forward = cpu_experts_forward,
    .experts_backward = cpu_experts_backward,
    .gemm = cpu_gemm,
    .scale_rows_forward = cpu_scale_rows_forward,
    .scale_rows_backward = cpu_scale_rows_backward,
    .quant_fp8 = cpu_quant_fp8,
    .dequant_fp8 = cpu_dequant_fp8,
    .gather_bytes = cpu_gather_bytes,
    .add = cpu_add,
    .combine_forward = cpu_combine_forward,
    .combine_backward = cpu_combine_backward,
};

int moe_cpu_backend_create(moe_backend_t **out, epb_err_t *err)
{
    moe_backend_t *be = calloc(1, sizeof *be);
    if (!be) return epb_fail(err, EPB_ESYS, "cpu backend: out of memory");
    be->ops = &cpu_ops;
    be->dtype = MOE_F32;
    be->on_device = 0;
    *out = be;
    return EPB_OK;
}
