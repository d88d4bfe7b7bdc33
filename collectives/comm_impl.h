/* Private to collectives/: backend constructors and shared helpers. */
#ifndef EPB_COMM_IMPL_H
#define EPB_COMM_IMPL_H
#include "collectives.h"

int epb_comm_self_create(epb_comm_t **out, epb_err_t *err);
int epb_comm_mpi_create(epb_comm_t **out, epb_err_t *err);
int epb_runtime_mpi_active(void);
void epb_reduce_host(void *inout, const void *in, size_t n, epb_dtype_t dt, epb_redop_t op);
/* mem: EPB_MEM_DEVICE stages the MPI collectives through pinned host memory */
int epb_comm_mpi_create_mem(epb_mem_t mem, epb_comm_t **out, epb_err_t *err);
int epb_comm_self_create_mem(epb_mem_t mem, epb_comm_t **out, epb_err_t *err);
int epb_comm_nccl_create(epb_comm_t **out, epb_err_t *err);
/* The backend communicator under any counting wrappers (c itself when it is none): for what needs the backend's
 * own handle, such as the clock offset's MPI point-to-point exchange. */
epb_comm_t *epb_comm_unwrap(epb_comm_t *c);

/* comm_cuda.c: device communicators. attach: picks the GPU (local_rank % visible), creates c->stream, sets
 * c->mem = EPB_MEM_DEVICE; detach undoes it. Copies H2D and D2H are complete on return; D2D is queued. */
enum { EPB_COPY_H2D, EPB_COPY_D2H, EPB_COPY_D2D };
int epb_cuda_attach(epb_comm_t *c, epb_err_t *err);
void epb_cuda_detach(epb_comm_t *c);
int epb_cuda_sync(epb_comm_t *c);
int epb_cuda_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int kind);
void *epb_cuda_mem_alloc(epb_comm_t *c, size_t bytes);
void epb_cuda_mem_free(epb_comm_t *c, void *p);
int epb_cuda_mem_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int to_device);
void *epb_cuda_host_alloc(epb_comm_t *c, size_t bytes); /* pinned */
void epb_cuda_host_free(void *p);

/* What the ranks found when they set up their GPUs, agreed over `host` (a host communicator of the same ranks;
 * NULL for one process), so that every rank takes the same decision and none is left waiting in a device
 * communicator's set-up for a rank that gave up. Each brings its status (EPB_OK, or the code of its own failure)
 * and its device (-1 for none). Collective. */
typedef struct {
    int failed, failed_rc;  /* the lowest failing rank (-1 if none) and its code */
    int shared_a, shared_b; /* two ranks on one GPU (by UUID, whatever CUDA_VISIBLE_DEVICES says), or -1 */
} epb_gpu_census_t;
int epb_cuda_census(epb_comm_t *host, int status, int device, epb_gpu_census_t *out);
/* epb_cuda_attach(c) on every rank, then the census over `host`: every rank fails alike when any has no usable GPU
 * (its own message on that rank, "WHO: rank R has no usable GPU" on the others). The census stays in *g for what a
 * caller decides besides (two ranks on one GPU). Collective. */
int epb_cuda_attach_agreed(epb_comm_t *c, epb_comm_t *host, const char *who, epb_gpu_census_t *g, epb_err_t *err);

#endif
