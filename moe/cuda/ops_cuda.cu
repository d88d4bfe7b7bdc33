/* moe/cuda: the ops table of moe/ops.h in CUDA with cuBLAS, float32 or bf16 activations (bf16 storage, fp32
 * accumulation; the router, scores, gate weights and their gradients always fp32). Every op mirrors its
 * counterpart in moe/cpu/ops_cpu.c line by line: the same tie-breaking, the same combine order j = 0..k-1,
 * pairs with pos -1 skipped, backward ops adding into their gradients. TF32 stays off: float32 GEMMs use
 * CUBLAS_COMPUTE_32F under CUBLAS_DEFAULT_MATH, so fp32 results match the CPU far below 1e-4.
 *
 * All work goes to one stream (the communicator's when one is given, so collectives and kernels are ordered
 * without extra synchronisation). Host-side results of the interface (route counts, permute offsets) are copied
 * back and waited for. Scratch the interface does not pass in (fp32 copies of bf16 tokens for the router, the
 * permutation's per-block counts, the grouped GEMM pointer arrays) lives in a workspace that grows on demand
 * and is counted in cur_bytes/peak_bytes like every other allocation, and so is cuBLAS's own workspace (32 MiB,
 * handed to it with cublasSetWorkspace).
 *
 * Layout: kernels first, then launchers, then the ops table. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Built as the module libepb_moe_cuda.so (moe/meson.build), its entry points have names of their own, which
 * moe/cuda/load.c looks up; on the CPU emulator this file is compiled into the library with moe.h's names. */
#ifdef MOE_CUDA_MODULE
#define moe_cuda_backend_create moe_cuda_module_backend_create
#define moe_cuda_gemm moe_cuda_module_gemm
#define moe_cuda_gemm_path moe_cuda_module_gemm_path
#define moe_cuda_device_count moe_cuda_module_device_count
#endif
extern "C" {
#include "moe.h"
#include "route_row.h"
}

/* ---------------------------------------------------------------- types and helpers */

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float ld(const float *p, long i) { return p[i]; }
static __device__ __forceinline__ float ld(const bf16 *p, long i) { return __bfloat162float(p[i]); }
static __device__ __forceinline__ void st(float *p, long i, float v) { p[i] = v; }
static __device__ __forceinline__ void st(bf16 *p, long i, float v) { p[i] = __float2bfloat16_rn(v); }

enum { WS_XF32, WS_TMP, WS_COUNTS, WS_BLK, WS_OFFS, WS_PTRS, WS_N };

typedef struct {
    void *p;
    size_t bytes;
} cu_alloc_t;

typedef struct {
    int device;
    cudaStream_t stream;
    int own_stream;
    cublasHandle_t blas;
    int grouped;                /* 1: cublasGemmGroupedBatchedEx; 0: one cublasGemmEx per expert GEMM */
    int last_grouped;           /* the path the last expert GEMM phase took (moe_cuda_gemm_path) */
    cu_alloc_t *allocs;         /* live ops->alloc allocations, for free's byte count */
    int nallocs, cap;
    void *ws[WS_N];             /* workspace slots (device) */
    size_t ws_bytes[WS_N];
    int64_t *h_counts;          /* pinned host copy targets of counts / offsets */
    size_t h_counts_n;
    void **h_ptrs;              /* pinned staging of the grouped GEMM pointer arrays */
    size_t h_ptrs_bytes;
    cudaEvent_t ptrs_copied;    /* recorded after the copy out of h_ptrs: it may be rewritten once this fired */
    int ptrs_pending;           /* ptrs_copied was recorded */
    void *blas_ws;              /* cuBLAS's workspace, ours so that it is counted (cublasSetWorkspace) */
    size_t blas_ws_bytes;
} cu_impl_t;

struct moe_event {
    cudaEvent_t e;
};

static int cu_check(moe_backend_t *be, cudaError_t e, const char *call, const char *file, int line)
{
    if (e == cudaSuccess) return EPB_OK;
    return epb_fail(&be->err, EPB_ESYS, "cuda backend: %s failed (%s:%d): %s", call, file, line, cudaGetErrorString(e));
}
static int blas_check(moe_backend_t *be, cublasStatus_t s, const char *call, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) return EPB_OK;
    return epb_fail(&be->err, EPB_ESYS, "cuda backend: %s failed (%s:%d): %s", call, file, line,
                    cublasGetStatusString(s));
}
#define CK(call)                                                                                               \
    do {                                                                                                       \
        if (cu_check(be, (call), #call, __FILE__, __LINE__)) return EPB_ESYS;                                  \
    } while (0)
#define CKB(call)                                                                                              \
    do {                                                                                                       \
        if (blas_check(be, (call), #call, __FILE__, __LINE__)) return EPB_ESYS;                                \
    } while (0)
/* every launch is followed by this */
#define CK_LAUNCH(name) CK(cudaGetLastError())
/* Kernel launches and dynamic shared memory go through these two, so that tests/cuda_emu (which defines them when
 * it compiles this file with the host compiler, for CI without a GPU) runs the same kernels on the CPU. */
#ifndef EPB_CUDA_EMU
#define EPB_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define EPB_DYN_SHARED(T, name) extern __shared__ T name[]
#endif

static cu_impl_t *impl(moe_backend_t *be) { return (cu_impl_t *)be->impl; }

static unsigned blocks_for(long n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---------------------------------------------------------------- kernels: router */

/* scores (N,E) hold x @ Wr on entry. One thread per token runs the same per-token rule as the CPU
 * (moe/route_row.h); counts are atomic (zeroed before). */
static __global__ void route_topk_kernel(float *scores, int32_t *topk_idx, float *topk_w,
                                         unsigned long long *counts, const float *bias, long N, int E, int k,
                                         moe_route_t rt)
{
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N) return;
    moe_route_row_forward(scores + t * E, topk_idx + t * k, topk_w + t * k, bias, E, k, rt);
    for (int j = 0; j < k; j++) atomicAdd(&counts[topk_idx[t * k + j]], 1ull);
}

/* dlogits (N,E) from d_gate, one thread per token, by moe/route_row.h as the CPU. */
static __global__ void route_bwd_kernel(float *dlogits, const float *d_gate, const float *scores,
                                        const int32_t *topk_idx, const float *topk_w, long N, int E, int k,
                                        moe_route_t rt)
{
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N) return;
    moe_route_row_backward(dlogits + t * E, d_gate + t * k, scores + t * E, topk_idx + t * k, topk_w + t * k, E, k,
                           rt);
}

template <typename T> static __global__ void to_f32_kernel(float *out, const T *in, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = ld(in, i);
}

/* out (act) += add (fp32), rounding once */
template <typename T> static __global__ void add_f32_kernel(T *out, const float *add, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) st(out, i, ld(out, i) + add[i]);
}

/* ---------------------------------------------------------------- kernels: permutation */

#define PERM_BLOCK 256

/* block b's count of pairs per local expert: blk[b*El + a] */
static __global__ void perm_count_kernel(int32_t *blk, const int32_t *assign, long n, int e0, int El)
{
    EPB_DYN_SHARED(int32_t, cnt); /* (El) */
    for (int a = threadIdx.x; a < El; a += blockDim.x) cnt[a] = 0;
    __syncthreads();
    long i = (long)blockIdx.x * PERM_BLOCK + threadIdx.x;
    if (i < n) {
        unsigned a = (unsigned)(assign[i] - e0);
        if (a < (unsigned)El) atomicAdd(&cnt[a], 1);
    }
    __syncthreads();
    for (int a = threadIdx.x; a < El; a += blockDim.x) blk[(long)blockIdx.x * El + a] = cnt[a];
}

#define PERM_SCAN_THREADS 1024

/* One block: (1) per expert a, the exclusive scan of the block counts blk[., a] over blocks, one warp per expert,
 * 32 blocks at a time with shuffles (a thread walking all blocks alone takes a dependent global access per block:
 * milliseconds for the gathered batch of agrs); offsets[a+1] = the expert's total. (2) offsets = the exclusive scan
 * of the totals (warp 0, 32 experts at a time). (3) every block's base row per expert += offsets[a].
 * Expert-major, then pair order: the CPU's stable counting sort. Counts fit int32 as pos does. */
static __global__ void perm_scan_kernel(int32_t *blk, int64_t *offsets, long nb, int El)
{
    const unsigned full = 0xffffffffu;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int a = warp; a < El; a += nwarps) { /* warp-uniform loops: every lane reaches every shuffle */
        int32_t carry = 0;
        for (long b0 = 0; b0 < nb; b0 += 32) {
            long b = b0 + lane;
            int32_t c = b < nb ? blk[b * El + a] : 0, incl = c;
            for (int o = 1; o < 32; o <<= 1) {
                int32_t v = __shfl_up_sync(full, incl, o);
                if (lane >= o) incl += v;
            }
            if (b < nb) blk[b * El + a] = carry + incl - c;
            carry += __shfl_sync(full, incl, 31);
        }
        if (lane == 0) offsets[a + 1] = carry;
    }
    __syncthreads();
    if (warp == 0) {
        int64_t carry = 0;
        for (int a0 = 0; a0 < El; a0 += 32) {
            int a = a0 + lane;
            int64_t incl = a < El ? offsets[a + 1] : 0;
            for (int o = 1; o < 32; o <<= 1) {
                int64_t v = __shfl_up_sync(full, incl, o);
                if (lane >= o) incl += v;
            }
            if (a < El) offsets[a + 1] = carry + incl;
            carry += __shfl_sync(full, incl, 31);
        }
        if (lane == 0) offsets[0] = 0;
    }
    __syncthreads();
    for (long i = threadIdx.x; i < nb * El; i += blockDim.x) blk[i] += (int32_t)offsets[i % El];
}

/* pos of every pair: its block's base row for its expert + the number of earlier pairs of that expert in the
 * block (a plain loop over the block's pairs in shared memory: obviously stable) */
static __global__ void perm_pos_kernel(int32_t *pos, const int32_t *blk, const int32_t *assign, long n, int e0, int El)
{
    __shared__ int32_t sa[PERM_BLOCK];
    long base = (long)blockIdx.x * PERM_BLOCK, i = base + threadIdx.x;
    sa[threadIdx.x] = i < n ? assign[i] : INT32_MIN;
    __syncthreads();
    if (i >= n) return;
    int32_t me = sa[threadIdx.x];
    unsigned a = (unsigned)(me - e0);
    if (a >= (unsigned)El) {
        pos[i] = -1;
        return;
    }
    int rank = 0;
    for (int j = 0; j < (int)threadIdx.x; j++) rank += sa[j] == me;
    pos[i] = blk[(long)blockIdx.x * El + a] + rank;
}

/* Row copies. vec: the row is copied as 16-byte words (row bytes a multiple of 16, buffers 16-byte aligned). */

/* xp[pos[i]] = x[i / k]: one block per pair */
template <typename T> static __global__ void gather_rows_kernel(T *xp, const int32_t *pos, const T *x, long n, int k, long D, int vec)
{
    long i = blockIdx.x;
    if (i >= n) return;
    int32_t r = pos[i];
    if (r < 0) return;
    const T *src = x + (i / k) * D;
    T *dst = xp + (long)r * D;
    if (vec) {
        long nv = D * (long)sizeof(T) / 16;
        const uint4 *s = (const uint4 *)src;
        uint4 *d = (uint4 *)dst;
        for (long v = threadIdx.x; v < nv; v += blockDim.x) d[v] = s[v];
    } else {
        for (long d = threadIdx.x; d < D; d += blockDim.x) dst[d] = src[d];
    }
}

/* out[i] = rows[pos[i]], zeros where pos[i] < 0: one block per output row */
template <typename T> static __global__ void unpermute_kernel(T *out, const T *rows, const int32_t *pos, long n, long D, int vec)
{
    long i = blockIdx.x;
    if (i >= n) return;
    int32_t r = pos[i];
    T *dst = out + i * D;
    if (vec) {
        long nv = D * (long)sizeof(T) / 16;
        uint4 *d = (uint4 *)dst;
        if (r < 0) {
            for (long v = threadIdx.x; v < nv; v += blockDim.x) d[v] = make_uint4(0, 0, 0, 0);
        } else {
            const uint4 *s = (const uint4 *)(rows + (long)r * D);
            for (long v = threadIdx.x; v < nv; v += blockDim.x) d[v] = s[v];
        }
    } else {
        for (long d = threadIdx.x; d < D; d += blockDim.x) st(dst, d, r < 0 ? 0.0f : ld(rows + (long)r * D, d));
    }
}

/* d_rows[pos[i]] += d_out[i]. pos is injective (each row belongs to one pair, as permute_forward makes it), so
 * no two blocks touch the same row. */
template <typename T> static __global__ void unpermute_bwd_kernel(T *d_rows, const T *d_out, const int32_t *pos, long n, long D)
{
    long i = blockIdx.x;
    if (i >= n) return;
    int32_t r = pos[i];
    if (r < 0) return;
    T *o = d_rows + (long)r * D;
    const T *g = d_out + i * D;
    for (long d = threadIdx.x; d < D; d += blockDim.x) st(o, d, ld(o, d) + ld(g, d));
}

/* dx[t] += sum_j d_xp[pos[t*k+j]], j in order, accumulated in fp32 from dx's value: one block per token */
template <typename T> static __global__ void permute_bwd_kernel(T *dx, const T *d_xp, const int32_t *pos, long N, int k, long D)
{
    long t = blockIdx.x;
    if (t >= N) return;
    T *o = dx + t * D;
    for (long d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = ld(o, d);
        for (int j = 0; j < k; j++) {
            int32_t r = pos[t * k + j];
            if (r < 0) continue;
            acc += ld(d_xp + (long)r * D, d);
        }
        st(o, d, acc);
    }
}

/* ---------------------------------------------------------------- kernels: SwiGLU */

static __device__ __forceinline__ float sigmoid_f(float a) { return 1.0f / (1.0f + expf(-a)); }

/* s = sigmoid(a1), h = a1*s*a3 over n elements */
template <typename T> static __global__ void swiglu_fwd_kernel(T *s, T *h, const T *a1, const T *a3, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x1 = ld(a1, i), sg = sigmoid_f(x1);
    st(s, i, sg);
    st(h, i, x1 * sg * ld(a3, i));
}

/* h recomputed from the saved a1, s, a3 (as the CPU does before the dw2 GEMM) */
template <typename T> static __global__ void swiglu_h_kernel(T *h, const T *a1, const T *s, const T *a3, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    st(h, i, ld(a1, i) * ld(s, i) * ld(a3, i));
}

/* in: Q = dh; out: P = da1 = dh*a3*s*(1 + a1*(1-s)), Q = da3 = dh*a1*s */
template <typename T> static __global__ void swiglu_bwd_kernel(T *P, T *Q, const T *a1, const T *s, const T *a3, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float dh = ld(Q, i), sg = ld(s, i), x1 = ld(a1, i);
    st(P, i, dh * ld(a3, i) * sg * (1.0f + x1 * (1.0f - sg)));
    st(Q, i, dh * x1 * sg);
}

/* ---------------------------------------------------------------- kernels: combine */

/* y[t] = sum_j topk_w[t,j] * ep_out[r(t,j)], j in order, fp32 accumulation: one block per token */
template <typename T> static __global__ void combine_fwd_kernel(T *y, const T *ep_out, const int32_t *pos, const float *topk_w,
                                                                long N, int k, long D)
{
    long t = blockIdx.x;
    if (t >= N) return;
    for (long d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < k; j++) {
            long i = t * k + j, r = pos ? pos[i] : i;
            if (r < 0) continue;
            acc += (topk_w ? topk_w[i] : 1.0f) * ld(ep_out + r * D, d);
        }
        st(y + t * D, d, acc);
    }
}

#define COMBINE_BWD_THREADS 256

/* The sum of every thread's v over a block of COMBINE_BWD_THREADS threads (a shared-memory tree reduction in
 * part[]); every thread of the block must call it, and every thread gets the sum. */
static __device__ float block_sum(float *part, float v)
{
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = COMBINE_BWD_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    return part[0];
}

/* d_ep_out[r] += w * dy[t]; d_gate[i] += dot(dy[t], ep_out[r]): one block per pair (rows are distinct per pair,
 * as pos is injective) with a shared-memory tree reduction for the dot */
template <typename T> static __global__ void combine_bwd_kernel(T *d_ep_out, float *d_gate, const T *dy, const T *ep_out,
                                                                const int32_t *pos, const float *topk_w, long N, int k, long D)
{
    __shared__ float part[COMBINE_BWD_THREADS];
    long i = blockIdx.x;
    if (i >= N * k) return;
    long t = i / k, r = pos ? pos[i] : i;
    if (r < 0) return; /* uniform over the block: no thread reaches the barrier */
    const T *g = dy + t * D, *e = ep_out + r * D;
    T *de = d_ep_out + r * D;
    float w = topk_w ? topk_w[i] : 1.0f, dot = 0;
    if (!d_gate) { /* uniform over the block: no thread reaches the barrier */
        for (long d = threadIdx.x; d < D; d += blockDim.x) st(de, d, ld(de, d) + w * ld(g, d));
        return;
    }
    for (long d = threadIdx.x; d < D; d += blockDim.x) {
        float gd = ld(g, d);
        st(de, d, ld(de, d) + w * gd);
        dot += gd * ld(e, d);
    }
    float sum = block_sum(part, dot);
    if (threadIdx.x == 0) d_gate[i] += sum;
}

/* ---------------------------------------------------------------- kernels: gate weights on rows placed by pair */

/* out[pos[i]] = w[i] * in[i / k] (w NULL: 1; pos NULL: row i): one block per pair */
template <typename T> static __global__ void scale_rows_fwd_kernel(T *out, const T *in, const int32_t *pos, const float *w,
                                                                   long n, int k, long D)
{
    long i = blockIdx.x;
    if (i >= n) return;
    long r = pos ? pos[i] : i;
    if (r < 0) return;
    float g = w ? w[i] : 1.0f;
    const T *src = in + (i / k) * D;
    T *dst = out + r * D;
    for (long d = threadIdx.x; d < D; d += blockDim.x) st(dst, d, g * ld(src, d));
}

/* d_in[t] += sum_j w[t*k+j] * d_out[r(t,j)], j in order, fp32 accumulation from d_in's value: one block per token */
template <typename T> static __global__ void scale_rows_bwd_in_kernel(T *d_in, const T *d_out, const int32_t *pos,
                                                                      const float *w, long N, int k, long D)
{
    long t = blockIdx.x;
    if (t >= N) return;
    T *o = d_in + t * D;
    for (long d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = ld(o, d);
        for (int j = 0; j < k; j++) {
            long i = t * k + j, r = pos ? pos[i] : i;
            if (r < 0) continue;
            acc += (w ? w[i] : 1.0f) * ld(d_out + r * D, d);
        }
        st(o, d, acc);
    }
}

/* d_w[i] += dot(d_out[r(i)], in[i / k]): one block per pair, shared-memory tree reduction */
template <typename T> static __global__ void scale_rows_bwd_w_kernel(float *d_w, const T *d_out, const T *in,
                                                                     const int32_t *pos, long N, int k, long D)
{
    __shared__ float part[COMBINE_BWD_THREADS];
    long i = blockIdx.x;
    if (i >= N * k) return;
    long t = i / k, r = pos ? pos[i] : i;
    if (r < 0) return; /* uniform over the block */
    const T *g = d_out + r * D, *x = in + t * D;
    float dot = 0;
    for (long d = threadIdx.x; d < D; d += blockDim.x) dot += ld(g, d) * ld(x, d);
    float sum = block_sum(part, dot);
    if (threadIdx.x == 0) d_w[i] += sum;
}

/* y += a, elementwise, one rounding */
template <typename T> static __global__ void add_kernel(T *y, const T *a, long n)
{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) st(y, i, ld(y, i) + ld(a, i));
}

/* ---------------------------------------------------------------- FP8 rows (moe.h: the format and the rounding)
 * One block of MOE_FP8_BLOCK threads per (row, scale block): grid (rows, blocks per row). The conversions are the
 * toolkit's (__nv_cvt_float_to_fp8 with __NV_SATFINITE: round to nearest even, saturated, NaN kept), which
 * moe_e4m3_from_f32 on the CPU matches (tests/cuda_emu compares them). */
template <typename T> static __global__ void quant_fp8_kernel(uint8_t *q, const T *x, long D, size_t w)
{
    __shared__ float part[MOE_FP8_BLOCK];
    long i = blockIdx.x, nb = gridDim.y, d = (long)blockIdx.y * MOE_FP8_BLOCK + threadIdx.x;
    float v = d < D ? ld(x + i * D, d) : 0.0f;
    part[threadIdx.x] = fabsf(v);
    __syncthreads();
    for (int h = MOE_FP8_BLOCK / 2; h > 0; h >>= 1) { /* the block's largest magnitude (NaN ignored, as fmaxf does) */
        if ((int)threadIdx.x < h) part[threadIdx.x] = fmaxf(part[threadIdx.x], part[threadIdx.x + h]);
        __syncthreads();
    }
    float amax = part[0], sc = amax > 0 ? fmaxf(amax / 448.0f, FLT_MIN) : 1.0f; /* a normal scale (moe.h) */
    uint8_t *row = q + (size_t)i * w;
    if (threadIdx.x == 0) ((float *)row)[blockIdx.y] = sc;
    if (d < D) row[4 * nb + d] = __nv_cvt_float_to_fp8(v / sc, __NV_SATFINITE, __NV_E4M3);
    else if ((size_t)(4 * nb + d) < w) row[4 * nb + d] = 0; /* the padding to 4 bytes */
}

template <typename T> static __global__ void dequant_fp8_kernel(T *x, const uint8_t *q, long D, size_t w)
{
    long i = blockIdx.x, nb = gridDim.y, d = (long)blockIdx.y * MOE_FP8_BLOCK + threadIdx.x;
    if (d >= D) return;
    const uint8_t *row = q + (size_t)i * w;
    __half_raw h = __nv_cvt_fp8_to_halfraw(row[4 * nb + d], __NV_E4M3); /* every e4m3 value is a half exactly */
    st(x + i * D, d, __half2float(__half(h)) * ((const float *)row)[blockIdx.y]);
}

/* out row i = rows row pos[i], in 4-byte words (w4 per row) */
static __global__ void gather_words_kernel(uint32_t *out, const uint32_t *rows, const int32_t *pos, long w4)
{
    long i = blockIdx.x;
    const uint32_t *src = rows + (long)pos[i] * w4;
    for (long j = threadIdx.x; j < w4; j += blockDim.x) out[i * w4 + j] = src[j];
}

/* ---------------------------------------------------------------- memory, copies, timing */

static void *cu_alloc(moe_backend_t *be, size_t bytes)
{
    cu_impl_t *m = impl(be);
    if (m->nallocs == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        cu_alloc_t *a = (cu_alloc_t *)realloc(m->allocs, sizeof *a * (size_t)cap);
        if (!a) {
            epb_fail(&be->err, EPB_ESYS, "cuda backend: out of host memory (allocation table)");
            return NULL;
        }
        m->allocs = a;
        m->cap = cap;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64); /* 256-byte aligned */
    if (e != cudaSuccess) {
        epb_fail(&be->err, EPB_ESYS, "cuda backend: cudaMalloc of %zu bytes failed: %s (%.2f GiB in use)", bytes,
                 cudaGetErrorString(e), (double)be->cur_bytes / 1073741824.0);
        return NULL;
    }
    m->allocs[m->nallocs].p = p;
    m->allocs[m->nallocs++].bytes = bytes;
    be->cur_bytes += bytes;
    if (be->cur_bytes > be->peak_bytes) be->peak_bytes = be->cur_bytes;
    return p;
}

static void cu_free(moe_backend_t *be, void *p)
{
    if (!p) return;
    cu_impl_t *m = impl(be);
    for (int i = 0; i < m->nallocs; i++)
        if (m->allocs[i].p == p) {
            be->cur_bytes -= m->allocs[i].bytes;
            m->allocs[i] = m->allocs[--m->nallocs];
            break;
        }
    /* cudaFree "may perform implicit synchronization" (CUDA 13 runtime API), which is no promise: queued work that
     * still reads or writes p must finish before it goes back */
    cudaStreamSynchronize(m->stream);
    cudaFree(p);
}

/* workspace slot of at least `bytes`, grown (contents lost) when too small */
static void *ws_get(moe_backend_t *be, int slot, size_t bytes)
{
    cu_impl_t *m = impl(be);
    if (m->ws[slot] && m->ws_bytes[slot] >= bytes) return m->ws[slot];
    if (m->ws[slot]) {
        /* queued kernels may still use the old slot, and cudaFree need not wait for them (see cu_free); this only
         * happens while the workspace still grows (warm-up) */
        cudaError_t se = cudaStreamSynchronize(m->stream);
        if (se != cudaSuccess) {
            cu_check(be, se, "cudaStreamSynchronize (workspace growth)", __FILE__, __LINE__);
            return NULL;
        }
        cudaFree(m->ws[slot]);
        be->cur_bytes -= m->ws_bytes[slot];
        m->ws[slot] = NULL;
        m->ws_bytes[slot] = 0;
    }
    size_t want = bytes + bytes / 4 + 256;
    cudaError_t e = cudaMalloc(&m->ws[slot], want);
    if (e != cudaSuccess) {
        m->ws[slot] = NULL;
        epb_fail(&be->err, EPB_ESYS, "cuda backend: cudaMalloc of %zu workspace bytes failed: %s", want,
                 cudaGetErrorString(e));
        return NULL;
    }
    m->ws_bytes[slot] = want;
    be->cur_bytes += want;
    if (be->cur_bytes > be->peak_bytes) be->peak_bytes = be->cur_bytes;
    return m->ws[slot];
}

/* pinned host buffer of n int64 (counts and offsets come back through it) */
static int64_t *host_i64(moe_backend_t *be, size_t n)
{
    cu_impl_t *m = impl(be);
    if (m->h_counts_n >= n) return m->h_counts;
    if (m->h_counts) cudaFreeHost(m->h_counts);
    m->h_counts = NULL;
    m->h_counts_n = 0;
    cudaError_t e = cudaMallocHost((void **)&m->h_counts, n * sizeof(int64_t));
    if (e != cudaSuccess) {
        m->h_counts = NULL;
        epb_fail(&be->err, EPB_ESYS, "cuda backend: cudaMallocHost failed: %s", cudaGetErrorString(e));
        return NULL;
    }
    m->h_counts_n = n;
    return m->h_counts;
}

/* pinned staging of at least `bytes` for the grouped GEMM pointer arrays, once the previous copy out of it has
 * finished. A cudaMemcpyAsync from pageable memory "might be synchronous" (CUDA 13 runtime API, "API
 * synchronization behavior"), so a pageable source could still be read after the call returns; a pinned one is
 * read by the copy in stream order, hence the event. */
static void **ptr_staging(moe_backend_t *be, size_t bytes)
{
    cu_impl_t *m = impl(be);
    cudaError_t e = m->ptrs_pending ? cudaEventSynchronize(m->ptrs_copied) : cudaSuccess;
    if (e == cudaSuccess) m->ptrs_pending = 0;
    if (e == cudaSuccess && m->h_ptrs_bytes < bytes) {
        if (m->h_ptrs) cudaFreeHost(m->h_ptrs);
        m->h_ptrs = NULL;
        m->h_ptrs_bytes = 0;
        e = cudaMallocHost((void **)&m->h_ptrs, bytes);
        if (e == cudaSuccess) m->h_ptrs_bytes = bytes;
        else m->h_ptrs = NULL;
    }
    if (e != cudaSuccess) {
        cu_check(be, e, "grouped GEMM pointer staging", __FILE__, __LINE__);
        return NULL;
    }
    return m->h_ptrs;
}

static int cu_zero(moe_backend_t *be, void *p, size_t bytes)
{
    if (bytes) CK(cudaMemsetAsync(p, 0, bytes, impl(be)->stream));
    return EPB_OK;
}

/* host -> device: the host buffer may be reused as soon as this returns */
static int cu_to_backend(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return EPB_OK;
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl(be)->stream));
    CK(cudaStreamSynchronize(impl(be)->stream));
    return EPB_OK;
}

/* device -> host, after the queued work that writes src */
static int cu_to_host(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return EPB_OK;
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl(be)->stream));
    CK(cudaStreamSynchronize(impl(be)->stream));
    return EPB_OK;
}

static int cu_copy(moe_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (bytes) CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl(be)->stream));
    return EPB_OK;
}

static int cu_sync(moe_backend_t *be)
{
    CK(cudaStreamSynchronize(impl(be)->stream));
    return EPB_OK;
}

static int cu_event_create(moe_backend_t *be, moe_event_t **ev)
{
    moe_event_t *e = (moe_event_t *)calloc(1, sizeof *e);
    if (!e) return epb_fail(&be->err, EPB_ESYS, "cuda backend: out of memory (event)");
    cudaError_t r = cudaEventCreate(&e->e);
    if (r != cudaSuccess) {
        free(e);
        return cu_check(be, r, "cudaEventCreate", __FILE__, __LINE__);
    }
    *ev = e;
    return EPB_OK;
}

static void cu_event_destroy(moe_backend_t *be, moe_event_t *ev)
{
    (void)be;
    if (!ev) return;
    cudaEventDestroy(ev->e);
    free(ev);
}

static int cu_event_record(moe_backend_t *be, moe_event_t *ev)
{
    CK(cudaEventRecord(ev->e, impl(be)->stream));
    return EPB_OK;
}

static int cu_event_elapsed_us(moe_backend_t *be, const moe_event_t *a, const moe_event_t *b, double *us)
{
    float ms = 0;
    CK(cudaEventSynchronize(b->e));
    CK(cudaEventElapsedTime(&ms, a->e, b->e));
    *us = (double)ms * 1e3;
    return EPB_OK;
}

static void cu_destroy(moe_backend_t *be)
{
    cu_impl_t *m = impl(be);
    if (m) {
        cudaStreamSynchronize(m->stream);
        for (int i = 0; i < m->nallocs; i++) cudaFree(m->allocs[i].p);
        for (int s = 0; s < WS_N; s++)
            if (m->ws[s]) cudaFree(m->ws[s]);
        if (m->h_counts) cudaFreeHost(m->h_counts);
        if (m->h_ptrs) cudaFreeHost(m->h_ptrs);
        if (m->ptrs_copied) cudaEventDestroy(m->ptrs_copied);
        if (m->blas) cublasDestroy(m->blas);
        if (m->blas_ws) cudaFree(m->blas_ws);
        if (m->own_stream) cudaStreamDestroy(m->stream);
        free(m->allocs);
        free(m);
    }
    free(be);
}

/* ---------------------------------------------------------------- GEMMs (row-major on column-major cuBLAS) */

/* One row-major product C(M,N) = op(A) op(B) (+ beta C): A is (M,K) or, transposed, stored (K,M); lda, ldb, ldc
 * are row-major leading dimensions. cuBLAS sees the column-major transposes: C^T = op(B)^T op(A)^T. */
typedef struct {
    int ta, tb;
    int M, N, K;
    const void *A;
    int lda;
    const void *B;
    int ldb;
    void *C;
    int ldc;
    float beta;
} gemm_t;

static cudaDataType_t cuda_type(moe_dtype_t dt) { return dt == MOE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static int gemm_one(moe_backend_t *be, const gemm_t *g, cudaDataType_t t)
{
    float alpha = 1.0f;
    CKB(cublasGemmEx(impl(be)->blas, g->tb ? CUBLAS_OP_T : CUBLAS_OP_N, g->ta ? CUBLAS_OP_T : CUBLAS_OP_N, g->N, g->M,
                     g->K, &alpha, g->B, t, g->ldb, g->A, t, g->lda, &g->beta, g->C, t, g->ldc, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT));
    return EPB_OK;
}

static int cu_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    gemm_t g = { 0, 0, (int)M, (int)N, (int)K, A, (int)K, B, (int)N, C, (int)N, 0.0f };
    return M > 0 && N > 0 && K > 0 ? gemm_one(be, &g, cuda_type(be->dtype)) : EPB_OK;
}

/* n independent products (their outputs must not overlap) in one cublasGemmGroupedBatchedEx call, one group
 * per product; or one cublasGemmEx each when grouped GEMMs are unavailable or switched off
 * (EPB_CUDA_GROUPED=0), and for a bf16 call with a matrix pointer off a 16-byte boundary. Products with an empty
 * dimension are skipped (every K = 0 product here has beta 1: nothing to add).
 *
 * cublasGemmGroupedBatchedEx (cublas_api.h, CUDA 13): transa/transb/m/n/k/lda/ldb/ldc/group_size are host arrays
 * of group_count entries, alpha/beta host arrays of the scale type (float for CUBLAS_COMPUTE_32F, the pointer mode
 * being host), Aarray/Barray/Carray device arrays of problem_count device pointers. CUBLAS_COMPUTE_32F with fp32
 * or bf16 A/B/C is a supported combination (fp32 compute, no TF32 under the math mode set at creation). */
static int gemm_group(moe_backend_t *be, const gemm_t *g, int n, moe_dtype_t dt)
{
    cu_impl_t *m = impl(be);
    cudaDataType_t t = cuda_type(dt);
    int live = 0, aligned = 1;
    for (int i = 0; i < n; i++) {
        if (!(g[i].M > 0 && g[i].N > 0 && g[i].K > 0)) continue;
        live++;
        aligned &= (uintptr_t)g[i].A % 16 == 0 && (uintptr_t)g[i].B % 16 == 0 && (uintptr_t)g[i].C % 16 == 0;
    }
    if (!live) return EPB_OK;
    /* The matrix pointers of a pointer-array call are in device memory, out of cuBLAS's sight; for 16-bit types its
     * documentation asks for them 16-byte aligned, or risk misaligned accesses (a sticky error that ends the
     * context). Rows of D or F not a multiple of 8 bf16 values put an expert's first row off that boundary: such
     * calls take the per-expert path, where cublasGemmEx sees every pointer. */
    if (m->grouped && (dt != MOE_BF16 || aligned)) {
        size_t pbytes = 3 * sizeof(void *) * (size_t)live;
        size_t hbytes = (size_t)live * (7 * sizeof(int) + 2 * sizeof(cublasOperation_t) + 2 * sizeof(float));
        char *h = (char *)malloc(hbytes);
        if (!h) return epb_fail(&be->err, EPB_ESYS, "cuda backend: out of host memory (grouped GEMM)");
        int *mm = (int *)h, *nn = mm + live, *kk = nn + live, *la = kk + live, *lb = la + live, *lc = lb + live;
        int *gs = lc + live;
        cublasOperation_t *oa = (cublasOperation_t *)(gs + live), *ob = oa + live;
        float *alpha = (float *)(ob + live), *beta = alpha + live;
        void **dptr = (void **)ws_get(be, WS_PTRS, pbytes);
        void **hp = dptr ? ptr_staging(be, pbytes) : NULL;
        if (!hp) {
            free(h);
            return EPB_ESYS;
        }
        const void **pa = (const void **)hp, **pb = pa + live; /* the A, B, C pointer arrays, back to back */
        void **pc = (void **)(pb + live);
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (!(g[i].M > 0 && g[i].N > 0 && g[i].K > 0)) continue;
            /* cuBLAS's A is our B and vice versa (the transposed view) */
            oa[j] = g[i].tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            ob[j] = g[i].ta ? CUBLAS_OP_T : CUBLAS_OP_N;
            mm[j] = g[i].N;
            nn[j] = g[i].M;
            kk[j] = g[i].K;
            pa[j] = g[i].B;
            la[j] = g[i].ldb;
            pb[j] = g[i].A;
            lb[j] = g[i].lda;
            pc[j] = g[i].C;
            lc[j] = g[i].ldc;
            alpha[j] = 1.0f;
            beta[j] = g[i].beta;
            gs[j] = 1;
            j++;
        }
        /* dptr is rewritten in stream order, after the previous grouped call that read it */
        cudaError_t ce = cudaMemcpyAsync(dptr, hp, pbytes, cudaMemcpyHostToDevice, m->stream);
        if (ce == cudaSuccess) ce = cudaEventRecord(m->ptrs_copied, m->stream);
        if (ce != cudaSuccess) {
            free(h);
            return cu_check(be, ce, "cudaMemcpyAsync (grouped GEMM pointers)", __FILE__, __LINE__);
        }
        m->ptrs_pending = 1;
        cublasStatus_t s = cublasGemmGroupedBatchedEx(
            m->blas, oa, ob, mm, nn, kk, alpha, (const void *const *)dptr, t, la,
            (const void *const *)(dptr + live), t, lb, beta, (void *const *)(dptr + 2 * live), t, lc, live, gs,
            CUBLAS_COMPUTE_32F);
        free(h); /* host arrays: read by the call itself */
        if (s == CUBLAS_STATUS_SUCCESS) {
            m->last_grouped = 1;
            return EPB_OK;
        }
        /* this cuBLAS cannot (or refuses these problems): per-expert GEMMs from now on; moe_cuda_gemm_path says
         * so. A parameter error of ours would fail again, visibly, in cublasGemmEx below. */
        if (s != CUBLAS_STATUS_NOT_SUPPORTED && s != CUBLAS_STATUS_ARCH_MISMATCH && s != CUBLAS_STATUS_INVALID_VALUE)
            return blas_check(be, s, "cublasGemmGroupedBatchedEx", __FILE__, __LINE__);
        m->grouped = 0;
    }
    m->last_grouped = 0;
    for (int i = 0; i < n; i++)
        if (g[i].M > 0 && g[i].N > 0 && g[i].K > 0 && gemm_one(be, &g[i], t)) return EPB_ESYS;
    return EPB_OK;
}

/* ---------------------------------------------------------------- router */

static int cu_route_forward(moe_backend_t *be, float *scores, int32_t *topk_idx, float *topk_w, int64_t *counts,
                            const void *x, const float *Wr, const float *bias, long N, long D, int E, int k,
                            moe_route_t rt)
{
    cu_impl_t *m = impl(be);
    const float *xf = (const float *)x;
    if (be->dtype == MOE_BF16 && N > 0) { /* the router runs in fp32 on the bf16 tokens (a 0-block grid is an error) */
        float *tmp = (float *)ws_get(be, WS_XF32, (size_t)N * D * 4);
        if (!tmp) return EPB_ESYS;
        EPB_LAUNCH(to_f32_kernel<bf16>, blocks_for(N * D, 256), 256, 0, m->stream, tmp, (const bf16 *)x, N * D);
        CK_LAUNCH(to_f32);
        xf = tmp;
    }
    gemm_t g = { 0, 0, (int)N, E, (int)D, xf, (int)D, Wr, E, scores, E, 0.0f };
    if (N > 0 && gemm_one(be, &g, CUDA_R_32F)) return EPB_ESYS;
    unsigned long long *dc = (unsigned long long *)ws_get(be, WS_COUNTS, (size_t)E * 8);
    int64_t *hc = host_i64(be, (size_t)E + 1);
    if (!dc || !hc) return EPB_ESYS;
    CK(cudaMemsetAsync(dc, 0, (size_t)E * 8, m->stream));
    if (N > 0) {
        EPB_LAUNCH(route_topk_kernel, blocks_for(N, 128), 128, 0, m->stream, scores, topk_idx, topk_w, dc, bias, N,
                   E, k, rt);
        CK_LAUNCH(route_topk);
    }
    CK(cudaMemcpyAsync(hc, dc, (size_t)E * 8, cudaMemcpyDeviceToHost, m->stream));
    CK(cudaStreamSynchronize(m->stream));
    memcpy(counts, hc, (size_t)E * sizeof *counts);
    return EPB_OK;
}

static int cu_route_backward(moe_backend_t *be, void *dx, float *dWr, float *work, const float *d_gate,
                             const float *scores, const int32_t *topk_idx, const float *topk_w, const void *x,
                             const float *Wr, long N, long D, int E, int k, moe_route_t rt)
{
    cu_impl_t *m = impl(be);
    if (N == 0) return EPB_OK;
    float *dlogits = work; // (N,E)
    EPB_LAUNCH(route_bwd_kernel, blocks_for(N, 128), 128, 0, m->stream, dlogits, d_gate, scores, topk_idx, topk_w, N,
               E, k, rt);
    CK_LAUNCH(route_bwd);
    if (be->dtype == MOE_F32) {
        gemm_t gx = { 0, 1, (int)N, (int)D, E, dlogits, E, Wr, E, dx, (int)D, 1.0f };   /* dx += dl Wr^T */
        gemm_t gw = { 1, 0, (int)D, E, (int)N, x, (int)D, dlogits, E, dWr, E, 1.0f };   /* dWr += x^T dl */
        if (gemm_one(be, &gx, CUDA_R_32F) || gemm_one(be, &gw, CUDA_R_32F)) return EPB_ESYS;
        return EPB_OK;
    }
    /* bf16 tokens: dWr from an fp32 copy of x, then dx (bf16) += an fp32 product, rounding once */
    float *tmp = (float *)ws_get(be, WS_XF32, (size_t)N * D * 4);
    if (!tmp) return EPB_ESYS;
    EPB_LAUNCH(to_f32_kernel<bf16>, blocks_for(N * D, 256), 256, 0, m->stream, tmp, (const bf16 *)x, N * D);
    CK_LAUNCH(to_f32);
    gemm_t gw = { 1, 0, (int)D, E, (int)N, tmp, (int)D, dlogits, E, dWr, E, 1.0f };
    if (gemm_one(be, &gw, CUDA_R_32F)) return EPB_ESYS;
    gemm_t gx = { 0, 1, (int)N, (int)D, E, dlogits, E, Wr, E, tmp, (int)D, 0.0f };     /* after gw in the stream */
    if (gemm_one(be, &gx, CUDA_R_32F)) return EPB_ESYS;
    EPB_LAUNCH(add_f32_kernel<bf16>, blocks_for(N * D, 256), 256, 0, m->stream, (bf16 *)dx, tmp, N * D);
    CK_LAUNCH(add_f32);
    return EPB_OK;
}

/* ---------------------------------------------------------------- permutation */

static int aligned16(const void *a, const void *b) { return ((uintptr_t)a % 16 == 0) && ((uintptr_t)b % 16 == 0); }

static int row_threads(long D, size_t es, int vec)
{
    long units = vec ? D * (long)es / 16 : D;
    return units >= 256 ? 256 : units >= 128 ? 128 : units >= 64 ? 64 : 32;
}

template <typename T>
static int permute_fwd_t(moe_backend_t *be, T *xp, int32_t *pos, int64_t *offsets, const T *x, const int32_t *assign,
                         long N, int k, long D, int e0, int El)
{
    cu_impl_t *m = impl(be);
    long n = N * k, nb = (n + PERM_BLOCK - 1) / PERM_BLOCK;
    int64_t *doff = (int64_t *)ws_get(be, WS_OFFS, (size_t)(El + 1) * 8);
    int64_t *hoff = host_i64(be, (size_t)El + 1);
    int32_t *blk = (int32_t *)ws_get(be, WS_BLK, (size_t)(nb > 0 ? nb : 1) * (size_t)El * 4);
    if (!doff || !hoff || !blk) return EPB_ESYS;
    if ((size_t)El * 4 > 48 * 1024)
        return epb_fail(&be->err, EPB_ESYS, "cuda backend: permute: %d local experts exceed the shared-memory count", El);
    if (n > 0) {
        EPB_LAUNCH(perm_count_kernel, (unsigned)nb, PERM_BLOCK, (size_t)El * 4, m->stream, blk, assign, n, e0, El);
        CK_LAUNCH(perm_count);
    }
    EPB_LAUNCH(perm_scan_kernel, 1, PERM_SCAN_THREADS, 0, m->stream, blk, doff, nb, El);
    CK_LAUNCH(perm_scan);
    if (n > 0) {
        EPB_LAUNCH(perm_pos_kernel, (unsigned)nb, PERM_BLOCK, 0, m->stream, pos, blk, assign, n, e0, El);
        CK_LAUNCH(perm_pos);
        int vec = (D * (long)sizeof(T)) % 16 == 0 && aligned16(xp, x);
        EPB_LAUNCH(gather_rows_kernel<T>, (unsigned)n, row_threads(D, sizeof(T), vec), 0, m->stream, xp, pos, x, n, k,
                   D, vec);
        CK_LAUNCH(gather_rows);
    }
    CK(cudaMemcpyAsync(hoff, doff, (size_t)(El + 1) * 8, cudaMemcpyDeviceToHost, m->stream));
    CK(cudaStreamSynchronize(m->stream));
    memcpy(offsets, hoff, (size_t)(El + 1) * sizeof *offsets);
    return EPB_OK;
}

static int cu_permute_forward(moe_backend_t *be, void *xp, int32_t *pos, int64_t *offsets, const void *x,
                              const int32_t *assign, long N, int k, long D, int e0, int El)
{
    if (be->dtype == MOE_BF16)
        return permute_fwd_t<bf16>(be, (bf16 *)xp, pos, offsets, (const bf16 *)x, assign, N, k, D, e0, El);
    return permute_fwd_t<float>(be, (float *)xp, pos, offsets, (const float *)x, assign, N, k, D, e0, El);
}

static int cu_permute_backward(moe_backend_t *be, void *dx, const void *d_xp, const int32_t *pos, long N, int k, long D)
{
    if (N == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    int th = row_threads(D, 4, 0);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(permute_bwd_kernel<bf16>, (unsigned)N, th, 0, s, (bf16 *)dx, (const bf16 *)d_xp, pos, N, k, D);
    else
        EPB_LAUNCH(permute_bwd_kernel<float>, (unsigned)N, th, 0, s, (float *)dx, (const float *)d_xp, pos, N, k, D);
    CK_LAUNCH(permute_bwd);
    return EPB_OK;
}

static int cu_unpermute_forward(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, long D)
{
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    size_t es = moe_dtype_size(be->dtype);
    int vec = (D * (long)es) % 16 == 0 && aligned16(out, rows), th = row_threads(D, es, vec);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(unpermute_kernel<bf16>, (unsigned)n, th, 0, s, (bf16 *)out, (const bf16 *)rows, pos, n, D, vec);
    else
        EPB_LAUNCH(unpermute_kernel<float>, (unsigned)n, th, 0, s, (float *)out, (const float *)rows, pos, n, D, vec);
    CK_LAUNCH(unpermute);
    return EPB_OK;
}

static int cu_unpermute_backward(moe_backend_t *be, void *d_rows, const void *d_out, const int32_t *pos, long n, long D)
{
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    int th = row_threads(D, 4, 0);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(unpermute_bwd_kernel<bf16>, (unsigned)n, th, 0, s, (bf16 *)d_rows, (const bf16 *)d_out, pos, n, D);
    else
        EPB_LAUNCH(unpermute_bwd_kernel<float>, (unsigned)n, th, 0, s, (float *)d_rows, (const float *)d_out, pos, n, D);
    CK_LAUNCH(unpermute_bwd);
    return EPB_OK;
}

/* ---------------------------------------------------------------- experts */

template <typename T>
static int experts_fwd_t(moe_backend_t *be, T *out, T *a1, T *a3, T *s, T *h, const T *xp, const T *w1, const T *w3,
                         const T *w2, const int64_t *offsets, int El, long D, long F)
{
    cu_impl_t *m = impl(be);
    long rows = offsets[El];
    if (rows == 0) return EPB_OK;
    gemm_t *g = (gemm_t *)calloc((size_t)El * 2, sizeof *g);
    if (!g) return epb_fail(&be->err, EPB_ESYS, "cuda backend: out of host memory");
    int n = 0, rc;
    for (int a = 0; a < El; a++) { /* a1 = X w1[a], a3 = X w3[a] */
        long r0 = offsets[a], na = offsets[a + 1] - r0;
        if (na == 0) continue;
        g[n++] = (gemm_t){ 0, 0, (int)na, (int)F, (int)D, xp + r0 * D, (int)D, w1 + a * D * F, (int)F, a1 + r0 * F, (int)F, 0.0f };
        g[n++] = (gemm_t){ 0, 0, (int)na, (int)F, (int)D, xp + r0 * D, (int)D, w3 + a * D * F, (int)F, a3 + r0 * F, (int)F, 0.0f };
    }
    rc = gemm_group(be, g, n, be->dtype);
    if (!rc) {
        EPB_LAUNCH(swiglu_fwd_kernel<T>, blocks_for(rows * F, 256), 256, 0, m->stream, s, h, a1, a3, rows * F);
        rc = cu_check(be, cudaGetLastError(), "swiglu_fwd_kernel", __FILE__, __LINE__);
    }
    n = 0;
    for (int a = 0; a < El; a++) { /* out = h w2[a] */
        long r0 = offsets[a], na = offsets[a + 1] - r0;
        if (na == 0) continue;
        g[n++] = (gemm_t){ 0, 0, (int)na, (int)D, (int)F, h + r0 * F, (int)F, w2 + a * F * D, (int)D, out + r0 * D, (int)D, 0.0f };
    }
    if (!rc) rc = gemm_group(be, g, n, be->dtype);
    free(g);
    return rc;
}

static int cu_experts_forward(moe_backend_t *be, void *out, void *a1, void *a3, void *s, void *h, const void *xp,
                              const void *w1, const void *w3, const void *w2, const int64_t *offsets, int El, long D,
                              long F)
{
    if (be->dtype == MOE_BF16)
        return experts_fwd_t<bf16>(be, (bf16 *)out, (bf16 *)a1, (bf16 *)a3, (bf16 *)s, (bf16 *)h, (const bf16 *)xp,
                                   (const bf16 *)w1, (const bf16 *)w3, (const bf16 *)w2, offsets, El, D, F);
    return experts_fwd_t<float>(be, (float *)out, (float *)a1, (float *)a3, (float *)s, (float *)h, (const float *)xp,
                                (const float *)w1, (const float *)w3, (const float *)w2, offsets, El, D, F);
}

template <typename T>
static int experts_bwd_t(moe_backend_t *be, T *d_xp, T *dw1, T *dw3, T *dw2, T *work, const T *d_out, const T *a1,
                         const T *a3, const T *s, const T *xp, const T *w1, const T *w3, const T *w2,
                         const int64_t *offsets, int El, long D, long F)
{
    cu_impl_t *m = impl(be);
    long rows = offsets[El];
    if (rows == 0) return EPB_OK;
    T *P = work, *Q = work + rows * F; /* (rows,F) each: h then da1; dh then da3 */
    gemm_t *g = (gemm_t *)calloc((size_t)El * 3, sizeof *g);
    if (!g) return epb_fail(&be->err, EPB_ESYS, "cuda backend: out of host memory");
    int n = 0, rc;
    EPB_LAUNCH(swiglu_h_kernel<T>, blocks_for(rows * F, 256), 256, 0, m->stream, P, a1, s, a3, rows * F);
    rc = cu_check(be, cudaGetLastError(), "swiglu_h_kernel", __FILE__, __LINE__);
    for (int a = 0; a < El; a++) { /* dw2 += h^T dout; dh = dout w2^T */
        long r0 = offsets[a], na = offsets[a + 1] - r0;
        if (na == 0) continue;
        g[n++] = (gemm_t){ 1, 0, (int)F, (int)D, (int)na, P + r0 * F, (int)F, d_out + r0 * D, (int)D, dw2 + a * F * D, (int)D, 1.0f };
        g[n++] = (gemm_t){ 0, 1, (int)na, (int)F, (int)D, d_out + r0 * D, (int)D, w2 + a * F * D, (int)D, Q + r0 * F, (int)F, 0.0f };
    }
    if (!rc) rc = gemm_group(be, g, n, be->dtype);
    if (!rc) {
        EPB_LAUNCH(swiglu_bwd_kernel<T>, blocks_for(rows * F, 256), 256, 0, m->stream, P, Q, a1, s, a3, rows * F);
        rc = cu_check(be, cudaGetLastError(), "swiglu_bwd_kernel", __FILE__, __LINE__);
    }
    n = 0;
    for (int a = 0; a < El; a++) { /* dw1 += X^T da1, dw3 += X^T da3, d_xp += da1 w1^T */
        long r0 = offsets[a], na = offsets[a + 1] - r0;
        if (na == 0) continue;
        g[n++] = (gemm_t){ 1, 0, (int)D, (int)F, (int)na, xp + r0 * D, (int)D, P + r0 * F, (int)F, dw1 + a * D * F, (int)F, 1.0f };
        g[n++] = (gemm_t){ 1, 0, (int)D, (int)F, (int)na, xp + r0 * D, (int)D, Q + r0 * F, (int)F, dw3 + a * D * F, (int)F, 1.0f };
        g[n++] = (gemm_t){ 0, 1, (int)na, (int)D, (int)F, P + r0 * F, (int)F, w1 + a * D * F, (int)F, d_xp + r0 * D, (int)D, 1.0f };
    }
    if (!rc) rc = gemm_group(be, g, n, be->dtype);
    n = 0;
    for (int a = 0; a < El; a++) { /* d_xp += da3 w3^T: its own call, as it adds into the same rows as da1 w1^T */
        long r0 = offsets[a], na = offsets[a + 1] - r0;
        if (na == 0) continue;
        g[n++] = (gemm_t){ 0, 1, (int)na, (int)D, (int)F, Q + r0 * F, (int)F, w3 + a * D * F, (int)F, d_xp + r0 * D, (int)D, 1.0f };
    }
    if (!rc) rc = gemm_group(be, g, n, be->dtype);
    free(g);
    return rc;
}

static int cu_experts_backward(moe_backend_t *be, void *d_xp, void *dw1, void *dw3, void *dw2, void *work,
                               const void *d_out, const void *a1, const void *a3, const void *s, const void *xp,
                               const void *w1, const void *w3, const void *w2, const int64_t *offsets, int El, long D,
                               long F)
{
    if (be->dtype == MOE_BF16)
        return experts_bwd_t<bf16>(be, (bf16 *)d_xp, (bf16 *)dw1, (bf16 *)dw3, (bf16 *)dw2, (bf16 *)work,
                                   (const bf16 *)d_out, (const bf16 *)a1, (const bf16 *)a3, (const bf16 *)s,
                                   (const bf16 *)xp, (const bf16 *)w1, (const bf16 *)w3, (const bf16 *)w2, offsets, El,
                                   D, F);
    return experts_bwd_t<float>(be, (float *)d_xp, (float *)dw1, (float *)dw3, (float *)dw2, (float *)work,
                                (const float *)d_out, (const float *)a1, (const float *)a3, (const float *)s,
                                (const float *)xp, (const float *)w1, (const float *)w3, (const float *)w2, offsets, El,
                                D, F);
}

/* ---------------------------------------------------------------- unpermute + combine */

static int cu_combine_forward(moe_backend_t *be, void *y, const void *ep_out, const int32_t *pos, const float *topk_w,
                              long N, int k, long D)
{
    if (N == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    int th = row_threads(D, 4, 0);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(combine_fwd_kernel<bf16>, (unsigned)N, th, 0, s, (bf16 *)y, (const bf16 *)ep_out, pos, topk_w, N, k,
                   D);
    else
        EPB_LAUNCH(combine_fwd_kernel<float>, (unsigned)N, th, 0, s, (float *)y, (const float *)ep_out, pos, topk_w, N,
                   k, D);
    CK_LAUNCH(combine_fwd);
    return EPB_OK;
}

static int cu_combine_backward(moe_backend_t *be, void *d_ep_out, float *d_gate, const void *dy, const void *ep_out,
                               const int32_t *pos, const float *topk_w, long N, int k, long D)
{
    if (N == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    unsigned nb = (unsigned)(N * k);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(combine_bwd_kernel<bf16>, nb, COMBINE_BWD_THREADS, 0, s, (bf16 *)d_ep_out, d_gate,
                   (const bf16 *)dy, (const bf16 *)ep_out, pos, topk_w, N, k, D);
    else
        EPB_LAUNCH(combine_bwd_kernel<float>, nb, COMBINE_BWD_THREADS, 0, s, (float *)d_ep_out, d_gate,
                   (const float *)dy, (const float *)ep_out, pos, topk_w, N, k, D);
    CK_LAUNCH(combine_bwd);
    return EPB_OK;
}

/* ---------------------------------------------------------------- gate weights on rows placed by pair */

static int cu_scale_rows_forward(moe_backend_t *be, void *out, const void *in, const int32_t *pos, const float *w,
                                 long N, int k, long D)
{
    long n = N * k;
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    int th = row_threads(D, 4, 0);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(scale_rows_fwd_kernel<bf16>, (unsigned)n, th, 0, s, (bf16 *)out, (const bf16 *)in, pos, w, n, k, D);
    else
        EPB_LAUNCH(scale_rows_fwd_kernel<float>, (unsigned)n, th, 0, s, (float *)out, (const float *)in, pos, w, n, k, D);
    CK_LAUNCH(scale_rows_fwd);
    return EPB_OK;
}

static int cu_scale_rows_backward(moe_backend_t *be, void *d_in, float *d_w, const void *d_out, const void *in,
                                  const int32_t *pos, const float *w, long N, int k, long D)
{
    if (N == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    int th = row_threads(D, 4, 0);
    unsigned nb = (unsigned)(N * k);
    if (be->dtype == MOE_BF16) {
        EPB_LAUNCH(scale_rows_bwd_in_kernel<bf16>, (unsigned)N, th, 0, s, (bf16 *)d_in, (const bf16 *)d_out, pos, w, N,
                   k, D);
        CK_LAUNCH(scale_rows_bwd_in);
        if (d_w)
            EPB_LAUNCH(scale_rows_bwd_w_kernel<bf16>, nb, COMBINE_BWD_THREADS, 0, s, d_w, (const bf16 *)d_out,
                       (const bf16 *)in, pos, N, k, D);
    } else {
        EPB_LAUNCH(scale_rows_bwd_in_kernel<float>, (unsigned)N, th, 0, s, (float *)d_in, (const float *)d_out, pos, w,
                   N, k, D);
        CK_LAUNCH(scale_rows_bwd_in);
        if (d_w)
            EPB_LAUNCH(scale_rows_bwd_w_kernel<float>, nb, COMBINE_BWD_THREADS, 0, s, d_w, (const float *)d_out,
                       (const float *)in, pos, N, k, D);
    }
    CK_LAUNCH(scale_rows_bwd_w);
    return EPB_OK;
}

static int cu_add(moe_backend_t *be, void *y, const void *a, size_t n)
{
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(add_kernel<bf16>, blocks_for((long)n, 256), 256, 0, s, (bf16 *)y, (const bf16 *)a, (long)n);
    else
        EPB_LAUNCH(add_kernel<float>, blocks_for((long)n, 256), 256, 0, s, (float *)y, (const float *)a, (long)n);
    CK_LAUNCH(add);
    return EPB_OK;
}

static int cu_quant_fp8(moe_backend_t *be, void *q, const void *x, long n, long D)
{
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    dim3 grid((unsigned)n, (unsigned)((D + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK));
    size_t w = moe_fp8_row_bytes(D);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(quant_fp8_kernel<bf16>, grid, MOE_FP8_BLOCK, 0, s, (uint8_t *)q, (const bf16 *)x, D, w);
    else
        EPB_LAUNCH(quant_fp8_kernel<float>, grid, MOE_FP8_BLOCK, 0, s, (uint8_t *)q, (const float *)x, D, w);
    CK_LAUNCH(quant_fp8);
    return EPB_OK;
}

static int cu_dequant_fp8(moe_backend_t *be, void *x, const void *q, long n, long D)
{
    if (n == 0) return EPB_OK;
    cudaStream_t s = impl(be)->stream;
    dim3 grid((unsigned)n, (unsigned)((D + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK));
    size_t w = moe_fp8_row_bytes(D);
    if (be->dtype == MOE_BF16)
        EPB_LAUNCH(dequant_fp8_kernel<bf16>, grid, MOE_FP8_BLOCK, 0, s, (bf16 *)x, (const uint8_t *)q, D, w);
    else
        EPB_LAUNCH(dequant_fp8_kernel<float>, grid, MOE_FP8_BLOCK, 0, s, (float *)x, (const uint8_t *)q, D, w);
    CK_LAUNCH(dequant_fp8);
    return EPB_OK;
}

static int cu_gather_bytes(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, size_t row_bytes)
{
    if (n == 0) return EPB_OK;
    long w4 = (long)(row_bytes / 4);
    EPB_LAUNCH(gather_words_kernel, (unsigned)n, w4 >= 256 ? 256 : 64, 0, impl(be)->stream, (uint32_t *)out,
               (const uint32_t *)rows, pos, w4);
    CK_LAUNCH(gather_words);
    return EPB_OK;
}

/* ---------------------------------------------------------------- the table */

static moe_ops_t make_ops(void)
{
    moe_ops_t o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.alloc = cu_alloc;
    o.free = cu_free;
    o.zero = cu_zero;
    o.to_backend = cu_to_backend;
    o.to_host = cu_to_host;
    o.copy = cu_copy;
    o.sync = cu_sync;
    o.event_create = cu_event_create;
    o.event_destroy = cu_event_destroy;
    o.event_record = cu_event_record;
    o.event_elapsed_us = cu_event_elapsed_us;
    o.destroy = cu_destroy;
    o.route_forward = cu_route_forward;
    o.route_backward = cu_route_backward;
    o.permute_forward = cu_permute_forward;
    o.permute_backward = cu_permute_backward;
    o.unpermute_forward = cu_unpermute_forward;
    o.unpermute_backward = cu_unpermute_backward;
    o.experts_forward = cu_experts_forward;
    o.experts_backward = cu_experts_backward;
    o.gemm = cu_gemm;
    o.scale_rows_forward = cu_scale_rows_forward;
    o.scale_rows_backward = cu_scale_rows_backward;
    o.quant_fp8 = cu_quant_fp8;
    o.dequant_fp8 = cu_dequant_fp8;
    o.gather_bytes = cu_gather_bytes;
    o.add = cu_add;
    o.combine_forward = cu_combine_forward;
    o.combine_backward = cu_combine_backward;
    return o;
}
static const moe_ops_t cuda_ops = make_ops();

extern "C" int moe_cuda_device_count(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" int moe_cuda_backend_create(moe_backend_t **out, moe_dtype_t dtype, int device, void *stream, epb_err_t *err)
{
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return epb_fail(err, EPB_EUSAGE, "--device cuda: no CUDA device is visible (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0");
    if (device < 0 || device >= n)
        return epb_fail(err, EPB_EUSAGE, "--device cuda: device %d does not exist (%d visible)", device, n);
    moe_backend_t *be = (moe_backend_t *)calloc(1, sizeof *be);
    cu_impl_t *m = (cu_impl_t *)calloc(1, sizeof *m);
    if (!be || !m) {
        free(be);
        free(m);
        return epb_fail(err, EPB_ESYS, "cuda backend: out of memory");
    }
    be->ops = &cuda_ops;
    be->dtype = dtype;
    be->on_device = 1;
    be->impl = m;
    m->device = device;
    const char *g = getenv("EPB_CUDA_GROUPED");
    m->grouped = !(g && !strcmp(g, "0"));
    m->last_grouped = m->grouped;
    const char *what = "cudaSetDevice";
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    e = cudaSetDevice(device);
    if (e == cudaSuccess) {
        if (stream) {
            m->stream = (cudaStream_t)stream;
        } else {
            what = "cudaStreamCreateWithFlags";
            e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking);
            m->own_stream = e == cudaSuccess;
        }
    }
    if (e == cudaSuccess) {
        what = "cudaEventCreateWithFlags";
        e = cudaEventCreateWithFlags(&m->ptrs_copied, cudaEventDisableTiming);
        if (e != cudaSuccess) m->ptrs_copied = NULL;
    }
    if (e == cudaSuccess) {
        bs = cublasCreate(&m->blas);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(m->blas, m->stream);
        /* No TF32: CUBLAS_COMPUTE_32F under CUBLAS_DEFAULT_MATH keeps fp32 GEMMs in fp32 (cublas_api.h: only
         * CUBLAS_TF32_TENSOR_OP_MATH "allow[s] accelerating single precision routines using TF32 tensor cores").
         * CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION: a split-K bf16 GEMM must reduce its partial sums in
         * the fp32 accumulator type, not in bf16 (the output type), as the layer promises fp32 accumulation. */
        if (bs == CUBLAS_STATUS_SUCCESS)
            bs = cublasSetMathMode(m->blas,
                                   (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
        /* cuBLAS's workspace is device memory the layer uses: give it one of ours, counted in cur/peak bytes,
         * instead of the pool cuBLAS would take unseen. 32 MiB is the size the cuBLAS guide recommends for Hopper
         * (4 MiB elsewhere); the larger one for every architecture keeps the accounting one number. */
        if (bs == CUBLAS_STATUS_SUCCESS) {
            m->blas_ws_bytes = (size_t)32 << 20;
            e = cudaMalloc(&m->blas_ws, m->blas_ws_bytes);
            if (e == cudaSuccess) {
                be->cur_bytes += m->blas_ws_bytes;
                if (be->cur_bytes > be->peak_bytes) be->peak_bytes = be->cur_bytes;
                bs = cublasSetWorkspace(m->blas, m->blas_ws, m->blas_ws_bytes);
            } else {
                what = "cudaMalloc (cuBLAS workspace)";
                m->blas_ws = NULL;
            }
        }
    }
    if (e != cudaSuccess || bs != CUBLAS_STATUS_SUCCESS) {
        if (e != cudaSuccess)
            epb_fail(err, EPB_ESYS, "cuda backend: %s (device %d) failed: %s", what, device, cudaGetErrorString(e));
        else
            epb_fail(err, EPB_ESYS, "cuda backend: cuBLAS set-up on device %d failed: %s", device,
                     cublasGetStatusString(bs));
        cu_destroy(be);
        return EPB_ESYS;
    }
    *out = be;
    return EPB_OK;
}

extern "C" int moe_cuda_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    if (M <= 0 || N <= 0 || K <= 0 || M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return epb_fail(&be->err, EPB_EUSAGE, "moe_cuda_gemm: sizes %ld x %ld x %ld out of range", M, N, K);
    gemm_t g = { 0, 0, (int)M, (int)N, (int)K, A, (int)K, B, (int)N, C, (int)N, 0.0f };
    return gemm_one(be, &g, cuda_type(be->dtype));
}

extern "C" const char *moe_cuda_gemm_path(const moe_backend_t *be)
{
    /* the path the last expert GEMM phase really took (bf16 rows off a 16-byte boundary go per expert) */
    return be && be->impl && ((const cu_impl_t *)be->impl)->last_grouped ? "grouped" : "per-expert";
}
