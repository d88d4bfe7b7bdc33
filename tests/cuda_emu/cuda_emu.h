/* tests/cuda_emu: a CPU emulator of the CUDA semantics moe/cuda/ops_cuda.cu relies on, so that CI (no GPU) runs
 * the real kernels and the real host code of the CUDA backend and the device communicators. TEST INFRASTRUCTURE
 * ONLY: `meson setup -Demulate_cuda=true` builds against it instead of nvcc, cudart and cuBLAS, and `bench --version`
 * says CUDA is EMULATED. It measures nothing about a GPU; it checks what the code asks of one.
 *
 * This header is included first when the host C++ compiler builds ops_cuda.cu (moe/cuda/ops_cuda_emu.cc). It takes
 * the real toolkit headers (types, cudart and cuBLAS declarations, cuda_bf16.h's host conversions) and supplies
 * what only nvcc has: the execution-space qualifiers, threadIdx/blockIdx/blockDim/gridDim, __syncthreads, warp
 * shuffles, atomicAdd, and the kernel launch (EPB_LAUNCH, EPB_DYN_SHARED: ops_cuda.cu's only two concessions).
 *
 * Execution model (engine.cc): a kernel runs when its stream is synchronized, as a GPU may run it any time before
 * that. Its blocks run one after the other; the threads of a block are fibers on one OS thread, each running until it
 * finishes or waits at __syncthreads or a warp shuffle, which complete when every thread (every lane in the mask)
 * is there. Waits that can never complete (a barrier in divergent code, a shuffle naming an exited lane) are
 * reported with the kernel, block and source line, and abort. EPB_CUDA_EMU_ORDER=forward|reverse|shuffle[:SEED]
 * sets the order of blocks and of threads between barriers, to expose a missing __syncthreads or an order
 * dependence between blocks. runtime.cc lists what the runtime checks (device/host pointer kinds, bounds, streams). */
#ifndef EPB_CUDA_EMU_H
#define EPB_CUDA_EMU_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <utility>

#define EPB_CUDA_EMU 1

/* Host compilers see the toolkit's qualifiers as empty annotations; shared memory must be one array per block, not
 * one per thread: blocks run one at a time on one OS thread, so a static array in a section of its own (poisoned at
 * every block start, as shared memory starts undefined) is that. */
#undef __shared__
#define __shared__ static __attribute__((section("epb_emu_shared")))

/* ---- the engine's interface (engine.cc) ---- */
namespace epb_emu {
extern const uint3 *thread_idx; /* the running thread's threadIdx */
extern uint3 block_idx;
extern dim3 block_dim, grid_dim;
void *dyn_shared();                                     /* the block's dynamic shared memory */
void syncthreads(const char *file, int line);
uint64_t shfl(int op, unsigned mask, uint64_t v, int arg, int width, const char *file, int line);
enum { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };
/* checks a kernel argument: a pointer must point into device memory or pinned host memory (a kernel that reads
 * pageable host memory faults on a GPU) */
void check_kernel_pointer(const char *kernel, int arg, const void *p);
/* queues `grid` on `stream` after checking the configuration as cudaLaunchKernel does (an error goes to
 * cudaGetLastError and nothing is queued); body runs the kernel for the current thread */
void launch(const char *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, std::function<void()> body);

template <typename T> inline void check_arg(const char *, int, const T &) {}
template <typename T> inline void check_arg(const char *kernel, int i, T *const &p) { check_kernel_pointer(kernel, i, p); }

/* The arguments are converted to the kernel's parameter types and copied at launch, as the CUDA runtime does. */
template <typename... P, typename... A>
inline void launch_kernel(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, A &&...args)
{
    auto params = std::make_shared<std::tuple<P...>>(std::forward<A>(args)...);
    std::apply([name](const auto &...p) {
        int i = 0;
        (check_arg(name, i++, p), ...);
    }, *params);
    launch(name, grid, block, smem, stream, [kernel, params]() { std::apply(kernel, *params); });
}

template <typename T> inline T shfl_t(int op, unsigned mask, T v, int arg, int width, const char *file, int line)
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "warp shuffles move 4- or 8-byte values");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = shfl(op, mask, bits, arg, width, file, line);
    memcpy(&v, &bits, sizeof v);
    return v;
}
} // namespace epb_emu

#define EPB_LAUNCH(kernel, grid, block, smem, stream, ...)                                                     \
    epb_emu::launch_kernel(#kernel, kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
#define EPB_DYN_SHARED(T, name) T *name = (T *)epb_emu::dyn_shared()

#define threadIdx (*epb_emu::thread_idx)
#define blockIdx (static_cast<const uint3 &>(epb_emu::block_idx))
#define blockDim (static_cast<const dim3 &>(epb_emu::block_dim))
#define gridDim (static_cast<const dim3 &>(epb_emu::grid_dim))

/* ---- device intrinsics ops_cuda.cu uses (the CUDA C++ Programming Guide's semantics) ---- */
static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    epb_emu::syncthreads(file, line);
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, const char *file = __builtin_FILE(),
                            int line = __builtin_LINE())
{
    return epb_emu::shfl_t(epb_emu::SHFL_IDX, mask, var, src_lane, width, file, line);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                               const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return epb_emu::shfl_t(epb_emu::SHFL_UP, mask, var, (int)delta, width, file, line);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                                 const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return epb_emu::shfl_t(epb_emu::SHFL_DOWN, mask, var, (int)delta, width, file, line);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                                const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    return epb_emu::shfl_t(epb_emu::SHFL_XOR, mask, var, lane_mask, width, file, line);
}
/* One OS thread runs every fiber and a fiber is never interrupted inside these: plain read-modify-writes are atomic.
 * The overloads are CUDA's, so that a type CUDA has no atomicAdd for fails to compile here too. */
static inline int atomicAdd(int *p, int v) { int old = *p; *p = old + v; return old; }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned old = *p; *p = old + v; return old; }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p;
    *p = old + v;
    return old;
}
static inline float atomicAdd(float *p, float v) { float old = *p; *p = old + v; return old; }
static inline double atomicAdd(double *p, double v) { double old = *p; *p = old + v; return old; }

#endif
