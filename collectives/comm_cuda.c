/* What the device communicators share: the GPU of a rank (node-local rank modulo the visible GPUs), a stream on
 * it, memory hooks for the collective microbenchmarks, and synchronous copies for staging. C against the CUDA
 * runtime API; without CUDA every entry says the build has none. */
#include <stdint.h>
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

int epb_gpu_pick(int local_rank)
{
    int n = epb_gpu_count();
    return n > 0 ? local_rank % n : -1;
}

/* the device's UUID: the same GPU seen by two processes, whatever CUDA_VISIBLE_DEVICES each has */
static int gpu_uuid(int device, unsigned char uuid[16])
{
    struct cudaDeviceProp p;
    if (device < 0 || cudaGetDeviceProperties(&p, device) != cudaSuccess) return -1;
    memcpy(uuid, p.uuid.bytes, 16);
    return 0;
}

int epb_cuda_attach(epb_comm_t *c, epb_err_t *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return epb_fail(err, EPB_EUSAGE, "--device cuda: rank %d sees no CUDA device (%s)", c->rank,
                        e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    c->device = c->local_rank % n; /* as epb_gpu_pick: the rank binds itself near this GPU before */
    cudaStream_t s = NULL;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) != cudaSuccess)
        return epb_fail(err, EPB_ESYS, "rank %d: CUDA set-up on device %d failed: %s", c->rank, c->device,
                        cudaGetErrorString(e));
    c->stream = s;
    c->mem = EPB_MEM_DEVICE;
    return EPB_OK;
}

int epb_cuda_census(epb_comm_t *host, int status, int device, epb_gpu_census_t *out)
{
    out->failed = out->shared_a = out->shared_b = -1;
    out->failed_rc = EPB_OK;
    int P = host ? host->size : 1;
    enum { W = 6 }; /* int32 words per rank: status, has a UUID, the 16-byte UUID */
    int32_t mine[W] = { status, 0, 0, 0, 0, 0 };
    unsigned char uuid[16];
    if (status == EPB_OK && gpu_uuid(device, uuid) == 0) {
        mine[1] = 1;
        memcpy(mine + 2, uuid, sizeof uuid);
    }
    int32_t *all = malloc(sizeof mine * (size_t)P);
    if (!all) return host ? epb_fail(&host->err, EPB_ESYS, "rank %d: out of memory", host->rank) : EPB_ESYS;
    int rc = EPB_OK;
    if (host) rc = epb_allgather(host, mine, all, W, EPB_DT_I32);
    else memcpy(all, mine, sizeof mine);
    for (int r = 0; r < P && !rc; r++) {
        const int32_t *a = all + (size_t)W * r;
        if (a[0] != EPB_OK) {
            if (out->failed < 0) out->failed = r, out->failed_rc = a[0];
            continue;
        }
        for (int q = 0; q < r && out->shared_a < 0; q++) {
            const int32_t *b = all + (size_t)W * q;
            if (a[1] && b[0] == EPB_OK && b[1] && !memcmp(a + 2, b + 2, 16)) out->shared_a = q, out->shared_b = r;
        }
    }
    free(all);
    return rc;
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
int epb_gpu_pick(int local_rank) { (void)local_rank; return -1; }
int epb_cuda_census(epb_comm_t *host, int status, int device, epb_gpu_census_t *out)
{
    (void)host; (void)device;
    out->failed = status ? 0 : -1; /* no GPU anywhere: nobody has one of its own */
    out->failed_rc = status ? status : EPB_OK;
    out->shared_a = out->shared_b = -1;
    return EPB_OK;
}
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

int epb_cuda_attach_agreed(epb_comm_t *c, epb_comm_t *host, const char *who, epb_gpu_census_t *g, epb_err_t *err)
{
    epb_err_t mine = { { 0 } };
    int status = epb_cuda_attach(c, &mine);
    int rc = epb_cuda_census(host, status, c->device, g);
    if (rc) return epb_fail(err, rc, "%s", host ? host->err.msg : "out of memory");
    if (status) return epb_fail(err, status, "%s", mine.msg);
    if (g->failed >= 0)
        return epb_fail(err, g->failed_rc, "%s: rank %d has no usable GPU (see its message)", who, g->failed);
    return EPB_OK;
}
