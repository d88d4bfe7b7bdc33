/* The NCCL communicator: device buffers, one GPU per rank (node-local rank modulo the visible GPUs), every
 * collective enqueued on the communicator's stream; sync waits for it. ncclAllGather, ncclReduceScatter,
 * ncclAllReduce, ncclBroadcast; alltoall and the uneven alltoallv as grouped ncclSend/ncclRecv. The unique id
 * goes from rank 0 to the others over MPI (one process without a launcher needs none). */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"
#include "epb_config.h"

#if EPB_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

typedef struct {
    ncclComm_t nccl;
    epb_comm_t *boot; /* MPI (host) communicator of the same ranks: the unique id, barriers; NULL for one process */
} nccl_impl_t;

static int nccl_check(epb_comm_t *c, ncclResult_t r, const char *call)
{
    if (r == ncclSuccess) return EPB_OK;
    return epb_fail(&c->err, EPB_ESYS, "rank %d: %s failed (device %d): %s", c->rank, call, c->device,
                    ncclGetErrorString(r));
}
#define CHECK_NCCL(c, call) nccl_check((c), (call), #call)

static ncclDataType_t nccl_type(epb_dtype_t dt)
{
    switch (dt) {
    case EPB_DT_F32: return ncclFloat32;
    case EPB_DT_BF16: return ncclBfloat16;
    case EPB_DT_I32: return ncclInt32;
    case EPB_DT_I64: return ncclInt64;
    case EPB_DT_F64: return ncclFloat64;
    }
    return ncclFloat32;
}

static ncclRedOp_t nccl_op(epb_redop_t op) { return op == EPB_SUM ? ncclSum : op == EPB_MAX ? ncclMax : ncclMin; }

static ncclComm_t nc(epb_comm_t *c) { return ((nccl_impl_t *)c->impl)->nccl; }
static cudaStream_t st(epb_comm_t *c) { return (cudaStream_t)c->stream; }

static int n_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    return CHECK_NCCL(c, ncclAllGather(s, r, n, nccl_type(dt), nc(c), st(c)));
}

static int n_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    return CHECK_NCCL(c, ncclReduceScatter(s, r, n, nccl_type(dt), ncclSum, nc(c), st(c)));
}

static int n_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    return CHECK_NCCL(c, ncclAllReduce(s, r, n, nccl_type(dt), nccl_op(op), nc(c), st(c)));
}

static int n_bcast(epb_comm_t *c, void *buf, size_t bytes, int root)
{
    return CHECK_NCCL(c, ncclBroadcast(buf, buf, bytes, ncclUint8, root, nc(c), st(c)));
}

/* sendcounts/recvcounts and displacements in elements; blocks of zero elements are skipped on both sides (the
 * sender's count for p equals p's count from it) */
static int n_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                       const size_t *rd, epb_dtype_t dt)
{
    size_t es = epb_dtype_size(dt);
    ncclDataType_t t = nccl_type(dt);
    int rc0 = CHECK_NCCL(c, ncclGroupStart());
    for (int p = 0; p < c->size && !rc0; p++) {
        if (sc[p]) rc0 = CHECK_NCCL(c, ncclSend((const char *)s + sd[p] * es, sc[p], t, p, nc(c), st(c)));
        if (!rc0 && rc[p]) rc0 = CHECK_NCCL(c, ncclRecv((char *)r + rd[p] * es, rc[p], t, p, nc(c), st(c)));
    }
    int rc1 = CHECK_NCCL(c, ncclGroupEnd()); /* always closes the group */
    return rc0 ? rc0 : rc1;
}

static int n_alltoall(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    int P = c->size;
    size_t *v = malloc(sizeof(size_t) * 2 * (size_t)P);
    if (!v) return epb_fail(&c->err, EPB_ESYS, "rank %d: out of memory", c->rank);
    for (int p = 0; p < P; p++) v[p] = n, v[P + p] = (size_t)p * n;
    int rc = n_alltoallv(c, s, v, v + P, r, v, v + P, dt);
    free(v);
    return rc;
}

static int n_barrier(epb_comm_t *c)
{
    nccl_impl_t *m = c->impl;
    if (epb_cuda_sync(c)) return EPB_ESYS;
    if (m->boot && epb_barrier(m->boot)) return epb_fail(&c->err, EPB_ESYS, "%s", m->boot->err.msg);
    return EPB_OK;
}

/* waits for the stream, and reports an asynchronous NCCL failure (a peer gone, a network error) */
static int n_sync(epb_comm_t *c)
{
    ncclResult_t async = ncclSuccess;
    if (epb_cuda_sync(c)) return EPB_ESYS;
    if (CHECK_NCCL(c, ncclCommGetAsyncError(nc(c), &async))) return EPB_ESYS;
    return CHECK_NCCL(c, async);
}

static void n_destroy(epb_comm_t *c)
{
    nccl_impl_t *m = c->impl;
    if (m) {
        if (m->nccl) {
            cudaStreamSynchronize(st(c));
            ncclCommDestroy(m->nccl);
        }
        if (m->boot) epb_comm_destroy(m->boot);
        free(m);
    }
    epb_cuda_detach(c);
    free(c);
}

static const epb_comm_ops_t nccl_ops = {
    .name = "nccl",
    .allgather = n_allgather,
    .reduce_scatter = n_reduce_scatter,
    .alltoall = n_alltoall,
    .alltoallv = n_alltoallv,
    .allreduce = n_allreduce,
    .bcast = n_bcast,
    .barrier = n_barrier,
    .sync = n_sync,
    .destroy = n_destroy,
    .mem_alloc = epb_cuda_mem_alloc,
    .mem_free = epb_cuda_mem_free,
    .mem_copy = epb_cuda_mem_copy,
};

int epb_comm_nccl_create(epb_comm_t **out, epb_err_t *err)
{
    *out = NULL;
    epb_comm_t *c = calloc(1, sizeof *c);
    nccl_impl_t *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    c->ops = &nccl_ops;
    c->impl = m;
    c->device = -1;
    c->size = c->local_size = c->nodes = 1;
    int rc = EPB_OK;
    if (epb_runtime_mpi_active()) { /* ranks, nodes and node-local ranks from MPI */
        if ((rc = epb_comm_mpi_create(&m->boot, err))) goto fail;
        c->rank = m->boot->rank;
        c->size = m->boot->size;
        c->local_rank = m->boot->local_rank;
        c->local_size = m->boot->local_size;
        c->nodes = m->boot->nodes;
    }
    /* rank 0's unique id (and whether it got one) reaches every rank before anything else can fail */
    struct { int ok; ncclUniqueId id; } boot_id;
    memset(&boot_id, 0, sizeof boot_id);
    if (c->rank == 0) boot_id.ok = ncclGetUniqueId(&boot_id.id) == ncclSuccess;
    if (m->boot && (rc = epb_bcast(m->boot, &boot_id, sizeof boot_id, 0))) {
        epb_fail(err, rc, "%s", m->boot->err.msg);
        goto fail;
    }
    if (!boot_id.ok) {
        rc = epb_fail(err, EPB_ESYS, "rank %d: ncclGetUniqueId failed on rank 0", c->rank);
        goto fail;
    }
    ncclUniqueId id = boot_id.id;
    if ((rc = epb_cuda_attach(c, err))) goto fail;
    int ndev = epb_gpu_count();
    if (c->local_size > ndev) {
        rc = epb_fail(err, EPB_EUSAGE, "--comm nccl: %d ranks on a node share %d GPU(s), and NCCL needs a GPU per "
                      "rank; use --comm mpi (staged through host memory) or fewer ranks", c->local_size, ndev);
        goto fail;
    }
    if ((rc = CHECK_NCCL(c, ncclCommInitRank(&m->nccl, c->size, id, c->rank)))) {
        m->nccl = NULL;
        epb_fail(err, rc, "%s", c->err.msg);
        goto fail;
    }
    *out = c;
    return EPB_OK;
fail:
    n_destroy(c);
    return rc;
}

#else /* built without NCCL */

int epb_comm_nccl_create(epb_comm_t **out, epb_err_t *err)
{
    *out = NULL;
    return epb_fail(err, EPB_EUSAGE, "--comm nccl: this build has no NCCL (configure with -Dcuda=enabled where the "
                                     "toolkit and NCCL are installed, or -Dnccl_home=DIR)");
}

#endif
