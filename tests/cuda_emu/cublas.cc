/* tests/cuda_emu: the cuBLAS calls epbench makes, from cuBLAS's documented semantics (column-major: C = alpha
 * op(A) op(B) + beta C, lda/ldb/ldc column strides; C is not read when beta is 0), queued on the handle's stream
 * like any kernel. Numerics: fp32 accumulation in k order; bf16 inputs widened exactly, bf16 outputs rounded to
 * nearest even; fp32 inputs rounded to TF32 where the math mode or compute type allows it (as tensor cores would),
 * so that TF32 left on shows as a ~1e-3 error. Not cuBLAS's summation order, blocking or speed.
 *
 * Checked as the documentation states: dimensions and leading dimensions (CUBLAS_STATUS_INVALID_VALUE), type
 * combinations (CUBLAS_STATUS_NOT_SUPPORTED), every matrix inside one device allocation; for the grouped call,
 * the per-group arrays (transa ... group_size, alpha, beta) in host memory, Aarray/Barray/Carray device arrays
 * whose pointers point into device memory, the 16-bit types' pointer alignment rule, outputs that do not overlap.
 * A matrix outside device memory aborts with a message (on a GPU: an illegal address). */
#include "emu.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <set>
#include <vector>

struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
};

namespace epb_emu {
namespace {

std::set<cublasContext *> handles;

/* one product, everything resolved */
struct gemm {
    cublasOperation_t ta, tb;
    int m, n, k;
    float alpha, beta;
    cudaDataType_t at, ct; /* A and B share a type */
    const void *A, *B;
    void *C;
    int lda, ldb, ldc;
    bool tf32;
};

float load(const void *p, cudaDataType_t t, size_t i)
{
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

void store(void *p, cudaDataType_t t, size_t i, float v)
{
    if (t == CUDA_R_16BF) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else ((float *)p)[i] = v;
}

/* fp32 -> TF32 (10 mantissa bits), round to nearest even */
float to_tf32(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

size_t type_size(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

/* the bytes a column-major rows x cols matrix with leading dimension ld spans */
size_t extent(int rows, int cols, int ld, cudaDataType_t t)
{
    return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * type_size(t);
}

void run(const gemm &g)
{
    if (g.m == 0 || g.n == 0) return;
    size_t m = (size_t)g.m, n = (size_t)g.n, k = (size_t)g.k;
    /* op(A) row by row and op(B) column by column, as contiguous fp32 */
    std::vector<float> a(m * k), b(n * k);
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++)
            a[i * k + p] = load(g.A, g.at, g.ta == CUBLAS_OP_N ? p * (size_t)g.lda + i : i * (size_t)g.lda + p);
    for (size_t j = 0; j < n; j++)
        for (size_t p = 0; p < k; p++)
            b[j * k + p] = load(g.B, g.at, g.tb == CUBLAS_OP_N ? j * (size_t)g.ldb + p : p * (size_t)g.ldb + j);
    if (g.tf32) {
        for (float &v : a) v = to_tf32(v);
        for (float &v : b) v = to_tf32(v);
    }
    for (size_t j = 0; j < n; j++)
        for (size_t i = 0; i < m; i++) {
            float acc = 0;
            for (size_t p = 0; p < k; p++) acc += a[i * k + p] * b[j * k + p];
            size_t c = j * (size_t)g.ldc + i;
            float v = g.alpha * acc;
            if (g.beta != 0) v += g.beta * load(g.C, g.ct, c);
            store(g.C, g.ct, c, v);
        }
}

bool valid_op(cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; }

cublasStatus_t check_dims(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc)
{
    if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k) || ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) ||
        ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

/* the combinations of cublasGemmEx's table this emulator computes; tf32: inputs may be rounded to TF32 */
cublasStatus_t check_types(const cublasContext *h, cudaDataType_t at, cudaDataType_t bt, cudaDataType_t ct,
                           cublasComputeType_t ct_, bool *tf32)
{
    bool f32 = at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F;
    bool bf = at == CUDA_R_16BF && bt == CUDA_R_16BF && (ct == CUDA_R_16BF || ct == CUDA_R_32F);
    if (ct_ != CUBLAS_COMPUTE_32F && ct_ != CUBLAS_COMPUTE_32F_PEDANTIC && ct_ != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!f32 && !bf) return CUBLAS_STATUS_NOT_SUPPORTED;
    *tf32 = f32 && (ct_ == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                    (ct_ == CUBLAS_COMPUTE_32F && (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH));
    return CUBLAS_STATUS_SUCCESS;
}

void check_handle(cublasHandle_t h, const char *call)
{
    if (!handles.count(h)) fatal("%s: handle %p is not a live cuBLAS handle", call, (void *)h);
}

/* a matrix the product reads or writes must lie inside one device allocation */
void need_matrix(const char *call, const char *name, int index, const void *p, int rows, int cols, int ld,
                 cudaDataType_t t)
{
    size_t bytes = extent(rows, cols, ld, t);
    alloc_info a = find_alloc(p, bytes);
    if (a.kind == MEM_DEVICE) return;
    alloc_info at = find_alloc(p, 0);
    char idx[32] = "";
    if (index >= 0) snprintf(idx, sizeof idx, "[%d]", index);
    fatal("%s: %s%s = %p (%d x %d, leading dimension %d: %zu bytes) is %s", call, name, idx, p, rows, cols, ld, bytes,
          at.kind == MEM_DEVICE ? "not inside its device allocation (it runs past the end)"
          : at.kind == MEM_PINNED ? "pinned host memory, not device memory"
                                  : "not device memory");
}

void need_operands(const char *call, const gemm &g, int index)
{
    if (g.m == 0 || g.n == 0) return;
    if (g.k > 0) {
        need_matrix(call, index >= 0 ? "Aarray" : "A", index, g.A, g.ta == CUBLAS_OP_N ? g.m : g.k,
                    g.ta == CUBLAS_OP_N ? g.k : g.m, g.lda, g.at);
        need_matrix(call, index >= 0 ? "Barray" : "B", index, g.B, g.tb == CUBLAS_OP_N ? g.k : g.n,
                    g.tb == CUBLAS_OP_N ? g.n : g.k, g.ldb, g.at);
    }
    need_matrix(call, index >= 0 ? "Carray" : "C", index, g.C, g.m, g.n, g.ldc, g.ct);
}

void need_host_array(const char *name, const void *p)
{
    if (find_alloc(p, 0).kind == MEM_DEVICE)
        fatal("cublasGemmGroupedBatchedEx: %s (%p) is device memory; the documentation makes it a host array", name, p);
}

} // namespace
} // namespace epb_emu

using namespace epb_emu;

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    if (!visible_devices()) return CUBLAS_STATUS_NOT_INITIALIZED;
    *h = new cublasContext{ nullptr, CUBLAS_DEFAULT_MATH };
    handles.insert(*h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, "cublasDestroy");
    handles.erase(h);
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, "cublasSetStream");
    check_stream(s, "cublasSetStream");
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, "cublasSetMathMode");
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

/* the products here need no workspace; what is checked is that the one given would do for cuBLAS: device memory,
 * 256-byte aligned (else CUBLAS_STATUS_INVALID_VALUE, as documented) */
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t bytes)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, "cublasSetWorkspace");
    if (!bytes) return CUBLAS_STATUS_SUCCESS;
    if ((uintptr_t)ws % 256) return CUBLAS_STATUS_INVALID_VALUE;
    if (find_alloc(ws, bytes).kind != MEM_DEVICE)
        fatal("cublasSetWorkspace: [%p, +%zu) is not inside one device allocation", ws, bytes);
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN (cuda_emu)";
    }
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo)
{
    (void)algo; /* any algorithm computes the same product */
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, "cublasGemmEx");
    cublasStatus_t s = check_dims(ta, tb, m, n, k, lda, ldb, ldc);
    bool tf32 = false;
    if (s == CUBLAS_STATUS_SUCCESS) s = check_types(h, at, bt, ct, compute, &tf32);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    /* host pointer mode (the default, never changed here): the scalars are read now */
    gemm g = { ta, tb, m, n, k, *(const float *)alpha, *(const float *)beta, at, ct, A, B, C, lda, ldb, ldc, tf32 };
    need_operands("cublasGemmEx", g, -1);
    enqueue(h->stream, [g]() { run(g); });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t h, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void *alpha_array,
                                          const void *const Aarray[], cudaDataType_t at, const int lda_array[],
                                          const void *const Barray[], cudaDataType_t bt, const int ldb_array[],
                                          const void *beta_array, void *const Carray[], cudaDataType_t ct,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t compute)
{
    static const char call[] = "cublasGemmGroupedBatchedEx";
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    check_handle(h, call);
    if (group_count < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (group_count == 0) return CUBLAS_STATUS_SUCCESS;
    const void *host_arrays[] = { transa_array, transb_array, m_array, n_array, k_array, alpha_array, lda_array,
                                  ldb_array, beta_array, ldc_array, group_size };
    const char *names[] = { "transa_array", "transb_array", "m_array", "n_array", "k_array", "alpha_array",
                            "lda_array", "ldb_array", "beta_array", "ldc_array", "group_size" };
    for (size_t i = 0; i < sizeof host_arrays / sizeof *host_arrays; i++) {
        if (!host_arrays[i]) return CUBLAS_STATUS_INVALID_VALUE;
        need_host_array(names[i], host_arrays[i]);
    }
    bool tf32 = false;
    cublasStatus_t s = check_types(h, at, bt, ct, compute, &tf32);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    std::vector<gemm> problems;
    for (int i = 0; i < group_count; i++) {
        s = check_dims(transa_array[i], transb_array[i], m_array[i], n_array[i], k_array[i], lda_array[i],
                       ldb_array[i], ldc_array[i]);
        if (s != CUBLAS_STATUS_SUCCESS || group_size[i] < 0) return CUBLAS_STATUS_INVALID_VALUE;
        gemm g = { transa_array[i], transb_array[i], m_array[i], n_array[i], k_array[i],
                   ((const float *)alpha_array)[i], ((const float *)beta_array)[i], at, ct, nullptr, nullptr, nullptr,
                   lda_array[i], ldb_array[i], ldc_array[i], tf32 };
        problems.insert(problems.end(), (size_t)group_size[i], g);
    }
    if (problems.empty()) return CUBLAS_STATUS_SUCCESS;
    size_t pbytes = problems.size() * sizeof(void *);
    const void *ptr_arrays[] = { Aarray, Barray, Carray };
    for (int i = 0; i < 3; i++)
        if (find_alloc(ptr_arrays[i], pbytes).kind != MEM_DEVICE)
            fatal("%s: %carray (%p, %zu pointers) is not a device array (%s)", call, "ABC"[i], ptr_arrays[i],
                  problems.size(), find_alloc(ptr_arrays[i], 0).kind == MEM_DEVICE ? "it runs past its allocation"
                                                                                   : "not device memory");
    /* the pointers are device data: read when the call runs on the stream */
    enqueue(h->stream, [problems, Aarray, Barray, Carray]() mutable {
        std::vector<std::pair<uintptr_t, size_t>> outs; /* C extents, and which problem */
        for (size_t p = 0; p < problems.size(); p++) {
            gemm &g = problems[p];
            g.A = Aarray[p];
            g.B = Barray[p];
            g.C = Carray[p];
            need_operands(call, g, (int)p);
            /* cublasGemmBatchedEx's rule for 16-bit types, which the grouped call refers to: with k % 8 == 0 the
             * matrix pointers must be 16-byte aligned, with k % 2 == 0 4-byte aligned */
            if (g.at == CUDA_R_16BF && g.m > 0 && g.n > 0) {
                uintptr_t need = g.k % 8 == 0 ? 16 : g.k % 2 == 0 ? 4 : 1;
                const void *ptrs[] = { g.A, g.B, g.C };
                for (int i = 0; i < 3; i++)
                    if ((uintptr_t)ptrs[i] % need)
                        fatal("%s: misaligned address: %carray[%zu] = %p with k = %d must be %zu-byte aligned for "
                              "16-bit types (a GPU faults or computes garbage)", call, "ABC"[i], p, ptrs[i], g.k,
                              (size_t)need);
            }
            if (g.m > 0 && g.n > 0) outs.push_back({ (uintptr_t)g.C, p });
        }
        std::sort(outs.begin(), outs.end());
        for (size_t i = 1; i < outs.size(); i++) {
            const gemm &prev = problems[outs[i - 1].second];
            if (outs[i - 1].first + extent(prev.m, prev.n, prev.ldc, prev.ct) > outs[i].first)
                fatal("%s: the outputs Carray[%zu] and Carray[%zu] overlap; the problems of one call run concurrently",
                      call, outs[i - 1].second, outs[i].second);
        }
        for (const gemm &g : problems) run(g);
    });
    return CUBLAS_STATUS_SUCCESS;
}
