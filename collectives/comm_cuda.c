/* What the device communicators share: the GPU of a rank (node-local rank modulo the visible GPUs), a stream on
 * it, memory hooks for the collective microbenchmarks, and synchronous copies for staging. C against the CUDA
 * runtime API; without CUDA every entry says the build has none. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"
#include "epb_config.h"

#if EPB_HAVE_CUDA
#include <cuda_runtime_api.h>

static int cuda_fail(epb_comm_t *c, cudaError_t e, const char *call)
{
    return epb_fail(&c->err, EPB_ESYS, "rank %d: %s (device %d) failed: %s", c->rank, call, c->device,
                    cudaGetErrorString(e));
}
#define CHECK_CUDA(c, call)                                                                                    \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) return cuda_fail((c), e_, #call);                                               \
    } while (0)

int epb_gpu_count(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

void epb_gpu_name(int device, char *buf, size_t n)
{
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) == cudaSuccess) snprintf(buf, n, "%s", p.name);
    else snprintf(buf, n, "cuda device %d", device);
}

int epb_cuda_attach(epb_comm_t *c, epb_err_t *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return epb_fail(err, EPB_EUSAGE, "--device cuda: rank %d sees no CUDA device (%s)", c->rank,
                        e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    c->device = c->local_rank % n;
    cudaStream_t s = NULL;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) != cudaSuccess)
        return epb_fail(err, EPB_ESYS, "rank %d: CUDA set-up on device %d failed: %s", c->rank, c->device,
                        cudaGetErrorString(e));
    c->stream = s;
    c->mem = EPB_MEM_DEVICE;
    return EPB_OK;
}

void epb_cuda_detach(epb_comm_t *c)
{
    if (c->stream) {
        cudaStreamSynchronize((cudaStream_t)c->stream);
        cudaStreamDestroy((cudaStream_t)c->stream);
    }
    c->stream = NULL;
}

int epb_cuda_sync(epb_comm_t *c)
{
    CHECK_CUDA(c, cudaStreamSynchronize((cudaStream_t)c->stream));
    return EPB_OK;
}

int epb_cuda_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int kind)
{
    if (!bytes) return EPB_OK;
    enum cudaMemcpyKind k = kind == EPB_COPY_H2D ? cudaMemcpyHostToDevice
                          : kind == EPB_COPY_D2H ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    CHECK_CUDA(c, cudaMemcpyAsync(dst, src, bytes, k, (cudaStream_t)c->stream));
    if (kind != EPB_COPY_D2D) CHECK_CUDA(c, cudaStreamSynchronize((cudaStream_t)c->stream));
    return EPB_OK;
}

void *epb_cuda_mem_alloc(epb_comm_t *c, size_t bytes)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64);
    if (e != cudaSuccess) {
        cuda_fail(c, e, "cudaMalloc");
        return NULL;
    }
    return p;
}

void epb_cuda_mem_free(epb_comm_t *c, void *p)
{
    (void)c;
    if (p) cudaFree(p);
}

int epb_cuda_mem_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int to_device)
{
    return epb_cuda_copy(c, dst, src, bytes, to_device ? EPB_COPY_H2D : EPB_COPY_D2H);
}

void *epb_cuda_host_alloc(epb_comm_t *c, size_t bytes)
{
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 64);
    if (e != cudaSuccess) {
        cuda_fail(c, e, "cudaMallocHost");
        return NULL;
    }
    return p;
}

void epb_cuda_host_free(void *p)
{
    if (p) cudaFreeHost(p);
}

#else /* built without CUDA */

int epb_gpu_count(void) { return 0; }
void epb_gpu_name(int device, char *buf, size_t n) { (void)device; snprintf(buf, n, "none"); }
int epb_cuda_attach(epb_comm_t *c, epb_err_t *err)
{
    (void)c;
    return epb_fail(err, EPB_EUSAGE, "--device cuda: this build has no CUDA");
}
void epb_cuda_detach(epb_comm_t *c) { (void)c; }
int epb_cuda_sync(epb_comm_t *c) { (void)c; return EPB_OK; }
int epb_cuda_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int kind)
{
    (void)dst; (void)src; (void)bytes; (void)kind;
    return epb_fail(&c->err, EPB_ESYS, "this build has no CUDA");
}
void *epb_cuda_mem_alloc(epb_comm_t *c, size_t bytes) { (void)bytes; epb_fail(&c->err, EPB_ESYS, "no CUDA"); return NULL; }
void epb_cuda_mem_free(epb_comm_t *c, void *p) { (void)c; (void)p; }
int epb_cuda_mem_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int to_device)
{
    return epb_cuda_copy(c, dst, src, bytes, to_device);
}
void *epb_cuda_host_alloc(epb_comm_t *c, size_t bytes) { (void)bytes; epb_fail(&c->err, EPB_ESYS, "no CUDA"); return NULL; }
void epb_cuda_host_free(void *p) { (void)p; }

#endif
