/* The CUDA backend's entry points (moe.h) in a build with the toolkit: ops_cuda.cu is the module libepb_moe_cuda.so
 * (it links cuBLAS), loaded here on the first call that needs it. cuBLAS's libraries cost every process that links
 * them ~0.4 s of start-up (static initialisers and page faults: measured 0.50 s against 0.10 s for `bench
 * --version`), which a CPU run, and every rank of the test suites, would pay for nothing. Counting the GPUs needs
 * only the CUDA runtime, so it stays here.
 *
 * Where the module is looked for: $EPB_CUDA_MODULE when set; the build tree's module (the path meson gave it);
 * then, for an installed tree, ../<libdir>/epbench/ beside the program's own directory. */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe.h"

typedef struct {
    int (*create)(moe_backend_t **out, moe_dtype_t dtype, int device, void *stream, epb_err_t *err);
    int (*gemm)(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K);
    const char *(*gemm_path)(const moe_backend_t *be);
    char why[EPB_ERRLEN]; /* why it could not be loaded ("" when it was) */
} cuda_module_t;

/* Loaded once per process, like the shared libraries it stands for: a cache of what dlopen returned, never
 * changed after pthread_once. */
static cuda_module_t module;
static pthread_once_t module_once = PTHREAD_ONCE_INIT;

static void *try_open(const char *path, char *tried, size_t n)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        size_t u = strlen(tried);
        snprintf(tried + u, n - u, "%s%s", u ? "; " : "", dlerror());
    }
    return h;
}

static void module_load(void)
{
    char tried[EPB_ERRLEN] = "", path[PATH_MAX + 64];
    void *h = NULL;
    const char *env = getenv("EPB_CUDA_MODULE");
    if (env && *env)
        h = try_open(env, tried, sizeof tried);
    else {
        if (!access(MOE_CUDA_MODULE_BUILT, F_OK)) h = try_open(MOE_CUDA_MODULE_BUILT, tried, sizeof tried);
        ssize_t n;
        if (!h && (n = readlink("/proc/self/exe", path, PATH_MAX)) > 0) {
            path[n] = 0;
            char *slash = strrchr(path, '/');
            if (slash) {
                snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "../%s", MOE_CUDA_MODULE_INSTALLED);
                h = try_open(path, tried, sizeof tried);
            }
        }
    }
    if (h) {
        *(void **)&module.create = dlsym(h, "moe_cuda_module_backend_create");
        *(void **)&module.gemm = dlsym(h, "moe_cuda_module_gemm");
        *(void **)&module.gemm_path = dlsym(h, "moe_cuda_module_gemm_path");
        if (!module.create || !module.gemm || !module.gemm_path) {
            snprintf(tried, sizeof tried, "it lacks the backend's entry points (%s)", dlerror());
            module.create = NULL;
        }
    }
    if (!module.create)
        snprintf(module.why, sizeof module.why, "the CUDA backend module (libepb_moe_cuda.so) could not be loaded: %s",
                 tried[0] ? tried : "not found (set EPB_CUDA_MODULE to its path)");
}

int moe_cuda_device_count(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

int moe_cuda_backend_create(moe_backend_t **out, moe_dtype_t dtype, int device, void *stream, epb_err_t *err)
{
    *out = NULL;
    pthread_once(&module_once, module_load);
    if (!module.create) return epb_fail(err, EPB_ESYS, "--device cuda: %s", module.why);
    return module.create(out, dtype, device, stream, err);
}

/* The two below take a backend that moe_cuda_backend_create made, so the module is loaded. */
int moe_cuda_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    pthread_once(&module_once, module_load);
    if (!module.gemm) return epb_fail(&be->err, EPB_ESYS, "%s", module.why);
    return module.gemm(be, C, A, B, M, N, K);
}

const char *moe_cuda_gemm_path(const moe_backend_t *be)
{
    pthread_once(&module_once, module_load);
    return module.gemm_path ? module.gemm_path(be) : "none";
}
