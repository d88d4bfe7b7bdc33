/* The CUDA backend's module (moe/cuda/load.c): a CUDA build's programs do not link cuBLAS, and the first
 * moe_cuda_backend_create loads libepb_moe_cuda.so. Checked here without a GPU too: the module loads and answers
 * itself (without a device, with its own "no CUDA device is visible" and EPB_EUSAGE; with one, a backend), a module
 * path that does not exist is EPB_ESYS naming the module, and the program's own libraries hold no cuBLAS. Run as
 * `test_cuda_module` (the real module) or `test_cuda_module missing` (EPB_CUDA_MODULE set to no file). TAP. */
#include <stdio.h>
#include <string.h>

#include "moe.h"
#include "tap.h"

int main(int argc, char **argv)
{
    int missing = argc > 1 && !strcmp(argv[1], "missing");
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int cublas = 0;
    while (maps && fgets(line, sizeof line, maps)) cublas |= strstr(line, "libcublas") != NULL;
    if (maps) fclose(maps);
    TAP_OK(maps && !cublas, "before the first CUDA backend, no cuBLAS library is mapped");
    moe_backend_t *be = NULL;
    epb_err_t err = { 0 };
    int ngpu = moe_cuda_device_count();
    int rc = moe_cuda_backend_create(&be, MOE_F32, 0, NULL, &err);
    if (missing)
        TAP_OK(rc == EPB_ESYS && strstr(err.msg, "module (libepb_moe_cuda.so) could not be loaded: /nonexistent") && !be,
               "a module that is not there: EPB_ESYS naming it (rc %d: %s)", rc, err.msg);
    else if (ngpu == 0)
        TAP_OK(rc == EPB_EUSAGE && strstr(err.msg, "no CUDA device is visible (") && !be,
               "no GPU: the module loaded and answers (rc %d: %s)", rc, err.msg);
    else
        TAP_OK(rc == EPB_OK && be && strcmp(moe_cuda_gemm_path(be), "none"), "%d GPU(s): a backend from the module (%s)",
               ngpu, rc ? err.msg : moe_cuda_gemm_path(be));
    moe_backend_destroy(be);
    return tap_done();
}
