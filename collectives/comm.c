#include "collectives.h"

#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"
#include "epb_config.h"

size_t epb_dtype_size(epb_dtype_t dt)
{
    switch (dt) {
    case EPB_DT_F32: return 4;
    case EPB_DT_BF16: return 2;
    case EPB_DT_I32: return 4;
    case EPB_DT_I64: return 8;
    case EPB_DT_F64: return 8;
    }
    return 0;
}

const char *epb_dtype_name(epb_dtype_t dt)
{
    switch (dt) {
    case EPB_DT_F32: return "f32";
    case EPB_DT_BF16: return "bf16";
    case EPB_DT_I32: return "i32";
    case EPB_DT_I64: return "i64";
    case EPB_DT_F64: return "f64";
    }
    return "?";
}

int epb_dtype_parse(const char *s, epb_dtype_t *out)
{
    if (!strcmp(s, "f32") || !strcmp(s, "float32") || !strcmp(s, "float")) { *out = EPB_DT_F32; return 0; }
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) { *out = EPB_DT_BF16; return 0; }
    return -1;
}

int epb_under_launcher(void)
{
    static const char *vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_STEP_ID",
                                  "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int epb_have_mpi(void) { return EPB_HAVE_MPI; }

const char *epb_comm_backends(void)
{
    return EPB_HAVE_MPI ? (EPB_HAVE_NCCL ? "mpi, self, nccl" : "mpi, self") : (EPB_HAVE_NCCL ? "self, nccl" : "self");
}

int epb_comm_create(const char *backend, epb_comm_t **out, epb_err_t *err)
{
    return epb_comm_create_mem(backend, EPB_MEM_HOST, out, err);
}

/* auto with device buffers: nccl when built with it and every rank has a GPU of its own, told by UUID: several
 * ranks on one GPU (which NCCL refuses) go through mpi, while ranks that each see just their own GPU through
 * CUDA_VISIBLE_DEVICES (Slurm's --gpus-per-task) use nccl, whatever the node's rank count */
static const char *auto_device_backend(void)
{
    int mpi = EPB_HAVE_MPI && epb_runtime_mpi_active();
    if (EPB_HAVE_NCCL) {
        if (!mpi) return "nccl";
        epb_comm_t *probe = NULL;
        epb_err_t e;
        if (epb_comm_mpi_create(&probe, &e) == EPB_OK) {
            int gpu = epb_gpu_pick(probe->local_rank);
            epb_gpu_census_t g;
            /* every rank decides alike, from the same census */
            int own = epb_cuda_census(probe, gpu >= 0 ? EPB_OK : EPB_EUSAGE, gpu, &g) == EPB_OK && g.failed < 0 &&
                      g.shared_a < 0;
            epb_comm_destroy(probe);
            if (own) return "nccl";
        }
    }
    return mpi ? "mpi" : "self";
}

int epb_comm_create_mem(const char *backend, epb_mem_t mem, epb_comm_t **out, epb_err_t *err)
{
    *out = NULL;
    if (!strcmp(backend, "auto"))
        backend = mem == EPB_MEM_DEVICE ? auto_device_backend()
                                        : (EPB_HAVE_MPI && epb_runtime_mpi_active()) ? "mpi" : "self";
    if (!strcmp(backend, "self")) return epb_comm_self_create_mem(mem, out, err);
    if (!strcmp(backend, "mpi")) {
#if EPB_HAVE_MPI
        return epb_comm_mpi_create_mem(mem, out, err);
#else
        return epb_fail(err, EPB_EUSAGE, "--comm mpi: this build has no MPI (built in: %s)", epb_comm_backends());
#endif
    }
    if (!strcmp(backend, "nccl")) {
        if (mem != EPB_MEM_DEVICE)
            return epb_fail(err, EPB_EUSAGE, "--comm nccl takes device buffers: it needs --device cuda");
        return epb_comm_nccl_create(out, err);
    }
    return epb_fail(err, EPB_EUSAGE, "--comm %s: unknown communicator (built in: %s)", backend, epb_comm_backends());
}

void epb_comm_destroy(epb_comm_t *c)
{
    if (c) c->ops->destroy(c);
}

/* Host-memory reduction of n elements: inout[i] = op(inout[i], in[i]). bf16 adds in float32. */
void epb_reduce_host(void *inout, const void *in, size_t n, epb_dtype_t dt, epb_redop_t op)
{
#define RED(T)                                                                                                 \
    do {                                                                                                       \
        T *a = inout;                                                                                          \
        const T *b = in;                                                                                       \
        if (op == EPB_SUM) for (size_t i = 0; i < n; i++) a[i] += b[i];                                        \
        else if (op == EPB_MAX) for (size_t i = 0; i < n; i++) a[i] = a[i] > b[i] ? a[i] : b[i];               \
        else for (size_t i = 0; i < n; i++) a[i] = a[i] < b[i] ? a[i] : b[i];                                  \
    } while (0)
    switch (dt) {
    case EPB_DT_F32: RED(float); break;
    case EPB_DT_I32: RED(int32_t); break;
    case EPB_DT_I64: RED(int64_t); break;
    case EPB_DT_F64: RED(double); break;
    case EPB_DT_BF16: {
        epb_bf16 *a = inout;
        const epb_bf16 *b = in;
        for (size_t i = 0; i < n; i++) {
            float x = epb_bf16_to_f32(a[i]), y = epb_bf16_to_f32(b[i]);
            float r = op == EPB_SUM ? x + y : op == EPB_MAX ? (x > y ? x : y) : (x < y ? x : y);
            a[i] = epb_f32_to_bf16(r);
        }
        break;
    }
    }
#undef RED
}
