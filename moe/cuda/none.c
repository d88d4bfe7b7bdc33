/* Built without the CUDA toolkit: the CUDA backend is absent, and says so (exit code 2, naming the option). */
#include "moe.h"

int moe_cuda_backend_create(moe_backend_t **out, moe_dtype_t dtype, int device, void *stream, epb_err_t *err)
{
    (void)dtype; (void)device; (void)stream;
    *out = NULL;
    return epb_fail(err, EPB_EUSAGE, "--device cuda: this build has no CUDA (configure with -Dcuda=enabled where the "
                                     "toolkit is installed)");
}

int moe_cuda_device_count(void) { return 0; }

const char *moe_cuda_gemm_path(const moe_backend_t *be) { (void)be; return "none"; }

int moe_cuda_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K)
{
    (void)C; (void)A; (void)B; (void)M; (void)N; (void)K;
    return epb_fail(&be->err, EPB_EUSAGE, "this build has no CUDA");
}
