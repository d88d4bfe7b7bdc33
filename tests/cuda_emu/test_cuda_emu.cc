/* The emulator's own test: without an argument, TAP checks that it computes what CUDA specifies (warp shuffles,
 * barriers, shared memory, atomics, stream order, events, launch errors, cuBLAS's column-major GEMMs); with the name
 * of a fault, it commits that fault, which the emulator must report and abort on (test_cuda_emu.sh checks the
 * message), so that every check the emulator claims is seen to fire. Kernels are written as for nvcc. */
#include "cuda_emu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

static int n_tests, n_failed;

static void ok(bool cond, const char *what)
{
    n_tests++;
    if (!cond) n_failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_tests, what);
}

#define CK(call)                                                                                               \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) {                                                                               \
            printf("Bail out! %s: %s\n", #call, cudaGetErrorString(e_));                                       \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

/* ---------------------------------------------------------------- kernels */

/* per warp: inclusive scan by __shfl_up_sync, the warp's total broadcast from lane 31, a butterfly sum by
 * __shfl_xor_sync, lane i's value from lane i+1 by __shfl_down_sync */
static __global__ void shfl_kernel(int *scan, int *total, int *xsum, int *down, const int *in)
{
    const unsigned full = 0xffffffffu;
    int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x & 31, v = in[i], incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(full, incl, o);
        if (lane >= o) incl += u;
    }
    scan[i] = incl;
    total[i] = __shfl_sync(full, incl, 31);
    int s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(full, s, o);
    xsum[i] = s;
    down[i] = __shfl_down_sync(full, v, 1);
}

#define RED_THREADS 256

/* block sum through shared memory with a barrier per level; a second, dynamic array counts with atomics */
static __global__ void reduce_kernel(float *out, int *count, const float *in)
{
    __shared__ float part[RED_THREADS];
    EPB_DYN_SHARED(int, hits);
    if (threadIdx.x == 0) hits[0] = 0;
    part[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    atomicAdd(&hits[0], 1);
    for (int s = RED_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = part[0];
        count[blockIdx.x] = hits[0];
    }
}

/* a missing barrier: each thread reads its neighbour's slot without waiting for it to be written; right only when
 * the threads happen to run in order */
static __global__ void racy_kernel(int *out)
{
    __shared__ int slot[64];
    slot[threadIdx.x] = (int)threadIdx.x;
    out[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

static __global__ void fill_kernel(float *p, float v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}

/* faults */
static __global__ void divergent_barrier_kernel(float *p)
{
    if (threadIdx.x >= 16) return;
    __syncthreads();
    p[threadIdx.x] = 1;
}
static __global__ void exited_lane_kernel(int *p)
{
    if (threadIdx.x == 5) return;
    p[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
}
static __global__ void divergent_shfl_kernel(int *p)
{
    if (threadIdx.x & 1) p[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
    else p[threadIdx.x] = __shfl_sync(0xffffffffu, 2, 0);
}
static __global__ void oob_kernel(float *p, int n)
{
    p[n + 64 + threadIdx.x] = 0; /* past the 256-byte granule */
}
static __global__ void read_kernel(float *out, const float *in) { out[threadIdx.x] = in[threadIdx.x]; }

/* ---------------------------------------------------------------- checks */

static void *dmalloc(size_t bytes)
{
    void *p;
    CK(cudaMalloc(&p, bytes));
    return p;
}

static void check_kernels(cudaStream_t s)
{
    enum { W = 4, N = 32 * W };
    int h_in[N], h_scan[N], h_total[N], h_xsum[N], h_down[N];
    for (int i = 0; i < N; i++) h_in[i] = i * 7 % 13 - 5;
    int *in = (int *)dmalloc(sizeof h_in), *scan = (int *)dmalloc(sizeof h_in), *total = (int *)dmalloc(sizeof h_in),
        *xsum = (int *)dmalloc(sizeof h_in), *down = (int *)dmalloc(sizeof h_in);
    CK(cudaMemcpyAsync(in, h_in, sizeof h_in, cudaMemcpyHostToDevice, s));
    EPB_LAUNCH(shfl_kernel, 2, N / 2, 0, s, scan, total, xsum, down, in);
    CK(cudaGetLastError());
    CK(cudaMemcpyAsync(h_scan, scan, sizeof h_in, cudaMemcpyDeviceToHost, s));
    CK(cudaMemcpyAsync(h_total, total, sizeof h_in, cudaMemcpyDeviceToHost, s));
    CK(cudaMemcpyAsync(h_xsum, xsum, sizeof h_in, cudaMemcpyDeviceToHost, s));
    CK(cudaMemcpyAsync(h_down, down, sizeof h_in, cudaMemcpyDeviceToHost, s));
    bool scan_ok = true, total_ok = true, xsum_ok = true, down_ok = true;
    for (int w = 0; w < W; w++) {
        int acc = 0;
        for (int l = 0; l < 32; l++) scan_ok &= h_scan[w * 32 + l] == (acc += h_in[w * 32 + l]);
        for (int l = 0; l < 32; l++) {
            total_ok &= h_total[w * 32 + l] == acc;
            xsum_ok &= h_xsum[w * 32 + l] == acc;
            down_ok &= h_down[w * 32 + l] == h_in[w * 32 + (l < 31 ? l + 1 : l)];
        }
    }
    ok(scan_ok, "__shfl_up_sync: inclusive warp scan");
    ok(total_ok, "__shfl_sync: lane 31 broadcast");
    ok(xsum_ok, "__shfl_xor_sync: butterfly sum in every lane");
    ok(down_ok, "__shfl_down_sync: the next lane's value, lane 31 its own");

    enum { B = 3 };
    float h_x[B * RED_THREADS], h_out[B];
    int h_count[B];
    for (int i = 0; i < B * RED_THREADS; i++) h_x[i] = (float)(i % 17);
    float *x = (float *)dmalloc(sizeof h_x), *out = (float *)dmalloc(sizeof h_out);
    int *count = (int *)dmalloc(sizeof h_count);
    CK(cudaMemcpyAsync(x, h_x, sizeof h_x, cudaMemcpyHostToDevice, s));
    EPB_LAUNCH(reduce_kernel, B, RED_THREADS, sizeof(int), s, out, count, x);
    CK(cudaGetLastError());
    CK(cudaMemcpyAsync(h_out, out, sizeof h_out, cudaMemcpyDeviceToHost, s));
    CK(cudaMemcpyAsync(h_count, count, sizeof h_count, cudaMemcpyDeviceToHost, s));
    bool red_ok = true, cnt_ok = true;
    for (int b = 0; b < B; b++) {
        float ref = 0;
        for (int i = 0; i < RED_THREADS; i++) ref += h_x[b * RED_THREADS + i];
        red_ok &= h_out[b] == ref;
        cnt_ok &= h_count[b] == RED_THREADS;
    }
    ok(red_ok, "__syncthreads + static shared memory: block sums");
    ok(cnt_ok, "dynamic shared memory + atomicAdd: every thread counted once per block");

    int *racy = (int *)dmalloc(64 * sizeof(int)), h_racy[64];
    EPB_LAUNCH(racy_kernel, 1, 64, 0, s, racy);
    CK(cudaMemcpyAsync(h_racy, racy, sizeof h_racy, cudaMemcpyDeviceToHost, s));
    int right = 0;
    for (int i = 0; i < 64; i++) right += h_racy[i] == (i + 1) % 64;
    /* the script compares the orders: forward reads all but one slot after it was written, reverse none */
    printf("# racy kernel: %d of 64 threads read a written slot\n", right);

    EPB_LAUNCH(fill_kernel, 0, 32, 0, s, x, 1.0f, 1);
    ok(cudaGetLastError() == cudaErrorInvalidConfiguration && cudaGetLastError() == cudaSuccess,
       "a 0-block grid: cudaErrorInvalidConfiguration from cudaGetLastError, once");
    EPB_LAUNCH(fill_kernel, 1, 1025, 0, s, x, 1.0f, 1);
    ok(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block: cudaErrorInvalidConfiguration");
    EPB_LAUNCH(fill_kernel, 1, 32, 64 << 10, s, x, 1.0f, 1);
    ok(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB of dynamic shared memory: cudaErrorInvalidValue");
    CK(cudaStreamSynchronize(s));
    for (void *p : { (void *)in, (void *)scan, (void *)total, (void *)xsum, (void *)down, (void *)x, (void *)out,
                     (void *)count, (void *)racy })
        CK(cudaFree(p));
}

static void check_streams(cudaStream_t s)
{
    float *d = (float *)dmalloc(64 * sizeof(float)), *h;
    CK(cudaMallocHost((void **)&h, 64 * sizeof(float)));
    EPB_LAUNCH(fill_kernel, 1, 64, 0, s, d, 3.0f, 64);
    CK(cudaMemcpyAsync(h, d, 64 * sizeof(float), cudaMemcpyDeviceToHost, s));
    ok(isnan(h[0]), "a copy into pinned memory is undefined (poison) until the stream is synchronized");
    CK(cudaStreamSynchronize(s));
    ok(h[0] == 3.0f && h[63] == 3.0f, "... and done after cudaStreamSynchronize");
    float *m = (float *)dmalloc(64 * sizeof(float)), first;
    CK(cudaMemcpyAsync(&first, m, sizeof first, cudaMemcpyDeviceToHost, s));
    ok(isnan(first), "new device memory is poison (NaN as floats), not zeros");

    cudaStream_t t;
    CK(cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking));
    EPB_LAUNCH(fill_kernel, 1, 64, 0, s, d, 5.0f, 64); /* queued on s, nobody waits for it */
    float got;
    CK(cudaMemcpyAsync(&got, d, sizeof got, cudaMemcpyDeviceToHost, t));
    ok(got == 3.0f, "work on another stream without synchronisation is not seen (runs when its stream is waited for)");
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpyAsync(&got, d, sizeof got, cudaMemcpyDeviceToHost, t));
    ok(got == 5.0f, "... and is seen after it");

    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaEventRecord(a, s));
    EPB_LAUNCH(fill_kernel, 64, 64, 0, s, d, 1.0f, 64);
    CK(cudaEventRecord(b, s));
    float ms = -1;
    ok(cudaEventElapsedTime(&ms, a, b) == cudaErrorNotReady, "cudaEventElapsedTime before the events ran: not ready");
    (void)cudaGetLastError();
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms, a, b));
    ok(ms >= 0, "cudaEventElapsedTime after cudaEventSynchronize: >= 0");
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    CK(cudaStreamDestroy(t));
    CK(cudaFree(d));
    CK(cudaFree(m));
    CK(cudaFreeHost(h));
}

/* column-major reference: C = alpha op(A) op(B) + beta C in double */
static void ref_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                     int ldb, float beta, float *C, int ldc)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int p = 0; p < k; p++)
                acc += (double)(ta ? A[p + i * lda] : A[i + p * lda]) * (tb ? B[j + p * ldb] : B[p + j * ldb]);
            C[i + j * ldc] = (float)(alpha * acc + (beta != 0 ? beta * C[i + j * ldc] : 0));
        }
}


static void check_cublas(cudaStream_t s)
{
    cublasHandle_t h;
    if (cublasCreate(&h) || cublasSetStream(h, s)) {
        printf("Bail out! cuBLAS set-up\n");
        exit(1);
    }
    const int m = 5, n = 4, k = 7, lda = 9, ldb = 8, ldc = 6;
    std::vector<float> A(lda * 7), B(ldb * 7), C(ldc * n), R(ldc * n);
    for (size_t i = 0; i < A.size(); i++) A[i] = (float)((int)(i * 37 % 23) - 11) / 8;
    for (size_t i = 0; i < B.size(); i++) B[i] = (float)((int)(i * 29 % 19) - 9) / 8;
    float *dA = (float *)dmalloc(A.size() * 4), *dB = (float *)dmalloc(B.size() * 4), *dC = (float *)dmalloc(C.size() * 4);
    CK(cudaMemcpyAsync(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice, s));
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        float alpha = 1.5f, beta = t == 3 ? 0.5f : 0.0f;
        for (size_t i = 0; i < C.size(); i++) C[i] = R[i] = t == 3 ? (float)i : NAN; /* beta 0: C is not read */
        CK(cudaMemcpyAsync(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice, s));
        cublasStatus_t st = cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                         &alpha, dA, CUDA_R_32F, lda, dB, CUDA_R_32F, ldb, &beta, dC, CUDA_R_32F, ldc,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CK(cudaMemcpyAsync(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost, s));
        ref_gemm(ta, tb, m, n, k, alpha, A.data(), lda, B.data(), ldb, beta, R.data(), ldc);
        /* rows m..ldc-1 of C are outside the product and stay as they were */
        char what[96];
        snprintf(what, sizeof what, "cublasGemmEx %s%s column-major, beta %g", ta ? "T" : "N", tb ? "T" : "N", beta);
        bool same = st == CUBLAS_STATUS_SUCCESS;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < ldc; i++)
                same = same && (i < m ? fabsf(C[i + j * ldc] - R[i + j * ldc]) < 1e-5f
                                      : t == 3 ? C[i + j * ldc] == R[i + j * ldc] : (bool)isnan(C[i + j * ldc]));
        ok(same, what);
    }
    float one = 1, zero = 0;
    ok(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA, CUDA_R_32F, m - 1, dB, CUDA_R_32F, ldb, &zero, dC,
                    CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
       "cublasGemmEx with lda < m: CUBLAS_STATUS_INVALID_VALUE");
    /* TF32 allowed by the math mode: fp32 inputs lose 13 mantissa bits */
    std::vector<float> x(64 * 64, 1.0f + 1.0f / 4096), y(64, 1.0f), r(64);
    float *dx = (float *)dmalloc(x.size() * 4), *dy = (float *)dmalloc(64 * 4), *dr = (float *)dmalloc(64 * 4);
    CK(cudaMemcpyAsync(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(dy, y.data(), 64 * 4, cudaMemcpyHostToDevice, s));
    float exact[2];
    for (int mode = 0; mode < 2; mode++) {
        cublasSetMathMode(h, mode ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 64, 1, 64, &one, dx, CUDA_R_32F, 64, dy, CUDA_R_32F, 64, &zero, dr,
                     CUDA_R_32F, 64, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CK(cudaMemcpyAsync(r.data(), dr, 64 * 4, cudaMemcpyDeviceToHost, s));
        exact[mode] = r[0];
    }
    ok(exact[0] == 64 * (1.0f + 1.0f / 4096) && exact[1] == 64.0f,
       "fp32 GEMM: exact under CUBLAS_DEFAULT_MATH, TF32-rounded inputs under CUBLAS_TF32_TENSOR_OP_MATH");
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);

    /* bf16 grouped: two problems, one group each, against bf16 per-problem GemmEx */
    const int M = 8, N = 16, K = 8;
    std::vector<__nv_bfloat16> hb(3 * 2 * M * K);
    for (size_t i = 0; i < hb.size(); i++) hb[i] = __float2bfloat16_rn((float)((int)(i * 13 % 29) - 14) / 7);
    __nv_bfloat16 *da = (__nv_bfloat16 *)dmalloc(hb.size() * 2), *dc = (__nv_bfloat16 *)dmalloc(4 * M * N * 2);
    CK(cudaMemcpyAsync(da, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice, s));
    void *hp[6] = { da, da + M * K, da + 2 * M * K, da + 3 * M * K, dc, dc + M * N };
    void **dp = (void **)dmalloc(sizeof hp);
    CK(cudaMemcpyAsync(dp, hp, sizeof hp, cudaMemcpyHostToDevice, s));
    cublasOperation_t op[2] = { CUBLAS_OP_T, CUBLAS_OP_N }, opb[2] = { CUBLAS_OP_N, CUBLAS_OP_N };
    int mm[2] = { M, M }, nn[2] = { N / 2, N / 2 }, kk[2] = { K, K }, la[2] = { K, M }, lb[2] = { K, K },
        lc[2] = { M, M }, gs[2] = { 1, 1 };
    float al[2] = { 1, 2 }, be[2] = { 0, 0 };
    cublasStatus_t st = cublasGemmGroupedBatchedEx(h, op, opb, mm, nn, kk, al, (const void *const *)dp, CUDA_R_16BF,
                                                   la, (const void *const *)(dp + 2), CUDA_R_16BF, lb, be,
                                                   (void *const *)(dp + 4), CUDA_R_16BF, lc, 2, gs, CUBLAS_COMPUTE_32F);
    for (int p = 0; p < 2; p++)
        cublasGemmEx(h, op[p], CUBLAS_OP_N, M, N / 2, K, &al[p], hp[p], CUDA_R_16BF, la[p], hp[2 + p], CUDA_R_16BF, K,
                     &zero, dc + (2 + p) * M * N, CUDA_R_16BF, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    std::vector<__nv_bfloat16> hc(4 * M * N);
    CK(cudaMemcpyAsync(hc.data(), dc, hc.size() * 2, cudaMemcpyDeviceToHost, s));
    bool same = st == CUBLAS_STATUS_SUCCESS;
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < M * N / 2; i++)
            same = same && !memcmp(&hc[p * M * N + i], &hc[(2 + p) * M * N + i], 2);
    ok(same, "cublasGemmGroupedBatchedEx (bf16, two groups) equals cublasGemmEx per problem");
    cublasDestroy(h);
    for (void *p : { (void *)dA, (void *)dB, (void *)dC, (void *)dx, (void *)dy, (void *)dr, (void *)da, (void *)dc,
                     (void *)dp })
        CK(cudaFree(p));
}

/* ---------------------------------------------------------------- faults */

static int fault(const char *name, cudaStream_t s)
{
    float *d = (float *)dmalloc(256 * sizeof(float)), h[256] = { 0 };
    if (!strcmp(name, "divergent-barrier")) EPB_LAUNCH(divergent_barrier_kernel, 1, 32, 0, s, d);
    else if (!strcmp(name, "exited-lane")) EPB_LAUNCH(exited_lane_kernel, 1, 32, 0, s, (int *)d);
    else if (!strcmp(name, "divergent-shuffle")) EPB_LAUNCH(divergent_shfl_kernel, 1, 32, 0, s, (int *)d);
    else if (!strcmp(name, "kernel-out-of-bounds")) EPB_LAUNCH(oob_kernel, 1, 32, 0, s, d, 256);
    else if (!strcmp(name, "kernel-reads-pageable")) EPB_LAUNCH(read_kernel, 1, 32, 0, s, d, h);
    else if (!strcmp(name, "host-reads-device")) printf("%g\n", d[3]);
    else if (!strcmp(name, "memcpy-wrong-kind")) cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyDeviceToHost, s);
    else if (!strcmp(name, "memcpy-past-end")) cudaMemcpyAsync(d + 8, h, sizeof h, cudaMemcpyHostToDevice, s);
    else if (!strcmp(name, "memset-host")) cudaMemsetAsync(h, 0, sizeof h, s);
    else if (!strcmp(name, "free-host-pointer")) cudaFree(h);
    else if (!strcmp(name, "free-inside")) cudaFree(d + 1);
    else if (!strcmp(name, "use-after-free")) {
        cudaFree(d);
        EPB_LAUNCH(fill_kernel, 1, 32, 0, s, d, 1.0f, 32);
    } else if (!strcmp(name, "gemm-host-matrix") || !strcmp(name, "grouped-host-pointers")) {
        cublasHandle_t hd;
        cublasCreate(&hd);
        cublasSetStream(hd, s);
        float one = 1;
        if (name[0] == 'g' && name[1] == 'e')
            cublasGemmEx(hd, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, d, CUDA_R_32F, 8, h, CUDA_R_32F, 8, &one, d,
                         CUDA_R_32F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        else {
            const void *ptrs[3] = { d, d, d };
            cublasOperation_t o = CUBLAS_OP_N;
            int e = 8, g = 1;
            cublasGemmGroupedBatchedEx(hd, &o, &o, &e, &e, &e, &one, ptrs, CUDA_R_32F, &e, ptrs, CUDA_R_32F, &e, &one,
                                       (void *const *)ptrs, CUDA_R_32F, &e, 1, &g, CUBLAS_COMPUTE_32F);
        }
    } else {
        printf("unknown fault '%s'\n", name);
        return 2;
    }
    cudaStreamSynchronize(s);
    printf("fault '%s' went unnoticed\n", name);
    return 1;
}

int main(int argc, char **argv)
{
    int n = 0;
    cudaGetDeviceCount(&n);
    if (argc > 1 && !strcmp(argv[1], "count")) {
        printf("%d\n", n);
        return 0;
    }
    cudaStream_t s;
    CK(cudaSetDevice(0));
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (argc > 1) return fault(argv[1], s);
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    ok(n == 1 && strstr(p.name, "emulator") != nullptr, "one device, named as the emulator");
    check_kernels(s);
    check_streams(s);
    check_cublas(s);
    CK(cudaStreamDestroy(s));
    printf("1..%d\n", n_tests);
    return n_failed ? 1 : 0;
}
