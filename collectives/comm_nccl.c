/* The NCCL communicator: device buffers, one GPU per rank (node-local rank modulo the visible GPUs), every
 * collective enqueued on the communicator's stream; sync waits for it. ncclAllGather, ncclReduceScatter,
 * ncclAllReduce, ncclBroadcast; alltoall and the uneven alltoallv as grouped ncclSend/ncclRecv. The unique id
 * goes from rank 0 to the others over MPI (one process without a launcher needs none). */
#include <sched.h>
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
    int broken;       /* an NCCL call or the stream failed: teardown aborts instead of finalizing with the peers */
    cudaStream_t cstream; /* the communication stream of the non-blocking calls (created on first use) */
    int sub;          /* a split: c->stream is the parent's */
} nccl_impl_t;

/* a started non-blocking call: its completion, recorded on the communication stream */
struct epb_req {
    cudaEvent_t done;
};

static int nccl_check(epb_comm_t *c, ncclResult_t r, const char *call)
{
    if (r == ncclSuccess) return EPB_OK;
    if (c->impl) ((nccl_impl_t *)c->impl)->broken = 1;
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

/* counts per rank, as NCCL takes them: allgather's sendcount, reduce_scatter's recvcount; on stream `on` */
static int allgather_on(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, cudaStream_t on)
{
    return CHECK_NCCL(c, ncclAllGather(s, r, n, nccl_type(dt), nc(c), on));
}

static int reduce_scatter_on(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, cudaStream_t on)
{
    return CHECK_NCCL(c, ncclReduceScatter(s, r, n, nccl_type(dt), ncclSum, nc(c), on));
}

static int n_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    return allgather_on(c, s, r, n, dt, st(c));
}

static int n_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    return reduce_scatter_on(c, s, r, n, dt, st(c));
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
static int alltoallv_on(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                        const size_t *rd, epb_dtype_t dt, cudaStream_t on)
{
    size_t es = epb_dtype_size(dt);
    ncclDataType_t t = nccl_type(dt);
    int rc0 = CHECK_NCCL(c, ncclGroupStart());
    if (rc0) return rc0;
    for (int p = 0; p < c->size && !rc0; p++) {
        if (sc[p]) rc0 = CHECK_NCCL(c, ncclSend((const char *)s + sd[p] * es, sc[p], t, p, nc(c), on));
        if (!rc0 && rc[p]) rc0 = CHECK_NCCL(c, ncclRecv((char *)r + rd[p] * es, rc[p], t, p, nc(c), on));
    }
    int rc1 = CHECK_NCCL(c, ncclGroupEnd()); /* always closes the group */
    return rc0 ? rc0 : rc1;
}

static int n_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                       const size_t *rd, epb_dtype_t dt)
{
    return alltoallv_on(c, s, sc, sd, r, rc, rd, dt, st(c));
}

/* ---- non-blocking: the collective goes on the communication stream, after an event that marks what c->stream
 * holds so far (the inputs' producers); its completion is an event the wait makes c->stream wait for ---- */

static int cuda_check(epb_comm_t *c, cudaError_t e, const char *call)
{
    if (e == cudaSuccess) return EPB_OK;
    ((nccl_impl_t *)c->impl)->broken = 1;
    return epb_fail(&c->err, EPB_ESYS, "rank %d: %s failed (device %d): %s", c->rank, call, c->device,
                    cudaGetErrorString(e));
}
#define CHECK_CU(c, call) do { int rc_ = cuda_check((c), (call), #call); if (rc_) return rc_; } while (0)

/* the communication stream, after c->stream's work so far; *q gets a request */
static int nb_begin(epb_comm_t *c, epb_req_t **q, cudaStream_t *on)
{
    nccl_impl_t *m = c->impl;
    if (!m->cstream) CHECK_CU(c, cudaStreamCreateWithFlags(&m->cstream, cudaStreamNonBlocking));
    cudaEvent_t ready;
    CHECK_CU(c, cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    int rc = cuda_check(c, cudaEventRecord(ready, st(c)), "cudaEventRecord");
    if (!rc) rc = cuda_check(c, cudaStreamWaitEvent(m->cstream, ready, 0), "cudaStreamWaitEvent");
    cudaEventDestroy(ready); /* released when complete */
    if (rc) return rc;
    if (!(*q = calloc(1, sizeof **q))) return epb_fail(&c->err, EPB_ESYS, "rank %d: out of memory", c->rank);
    *on = m->cstream;
    return EPB_OK;
}

static int nb_end(epb_comm_t *c, epb_req_t **q, int rc)
{
    nccl_impl_t *m = c->impl;
    if (!rc) rc = cuda_check(c, cudaEventCreateWithFlags(&(*q)->done, cudaEventDisableTiming), "cudaEventCreate");
    if (!rc) rc = cuda_check(c, cudaEventRecord((*q)->done, m->cstream), "cudaEventRecord");
    if (rc) { free(*q); *q = NULL; }
    return rc;
}

static int ni_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    cudaStream_t on;
    int rc = nb_begin(c, q, &on);
    return rc ? rc : nb_end(c, q, allgather_on(c, s, r, n, dt, on));
}

static int ni_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    cudaStream_t on;
    int rc = nb_begin(c, q, &on);
    return rc ? rc : nb_end(c, q, reduce_scatter_on(c, s, r, n, dt, on));
}

static int ni_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                        const size_t *rd, epb_dtype_t dt, epb_req_t **q)
{
    cudaStream_t on;
    int e = nb_begin(c, q, &on);
    return e ? e : nb_end(c, q, alltoallv_on(c, s, sc, sd, r, rc, rd, dt, on));
}

static int n_test(epb_comm_t *c, epb_req_t *q, int *done)
{
    cudaError_t e = cudaEventQuery(q->done);
    *done = e == cudaSuccess;
    return e == cudaErrorNotReady ? EPB_OK : cuda_check(c, e, "cudaEventQuery");
}

static int n_wait_req(epb_comm_t *c, epb_req_t *q)
{
    int rc = cuda_check(c, cudaStreamWaitEvent(st(c), q->done, 0), "cudaStreamWaitEvent");
    cudaEventDestroy(q->done);
    free(q);
    return rc;
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

/* Waits for the stream the way NCCL's guide does (cudaStreamQuery and ncclCommGetAsyncError in turn): when a peer
 * is gone or the network failed, the NCCL kernel never finishes and a plain cudaStreamSynchronize never returns;
 * here the error comes back, and main ends every rank. */
static int n_wait(epb_comm_t *c)
{
    nccl_impl_t *m = c->impl;
    ncclResult_t async = ncclSuccess;
    for (;;) {
        cudaError_t q = cudaStreamQuery(st(c));
        if (q != cudaSuccess && q != cudaErrorNotReady) {
            m->broken = 1;
            return epb_fail(&c->err, EPB_ESYS, "rank %d: cudaStreamQuery (device %d) failed: %s", c->rank, c->device,
                            cudaGetErrorString(q));
        }
        if (CHECK_NCCL(c, ncclCommGetAsyncError(m->nccl, &async))) return EPB_ESYS;
        if (async != ncclSuccess) return nccl_check(c, async, "an NCCL operation (asynchronous error)");
        if (q == cudaSuccess) return EPB_OK;
        sched_yield(); /* ranks may share cores */
    }
}

static int n_barrier(epb_comm_t *c)
{
    nccl_impl_t *m = c->impl;
    if (n_wait(c)) return EPB_ESYS;
    if (m->boot && epb_barrier(m->boot)) return epb_fail(&c->err, EPB_ESYS, "%s", m->boot->err.msg);
    return EPB_OK;
}

static int n_sync(epb_comm_t *c) { return n_wait(c); }

static void n_destroy(epb_comm_t *c)
{
    nccl_impl_t *m = c->impl;
    int sub = m && m->sub;
    if (m) {
        if (m->cstream) {
            cudaStreamSynchronize(m->cstream);
            cudaStreamDestroy(m->cstream);
        }
        /* before MPI_Finalize (main destroys the communicators first). A healthy communicator is finalized, which
         * flushes what was issued together with the peers (they all come here too), then freed; a failed one is
         * aborted: finalizing it would wait for peers that may be gone. */
        if (m->nccl) {
            if (!m->broken && n_wait(c) == EPB_OK && ncclCommFinalize(m->nccl) == ncclSuccess)
                ncclCommDestroy(m->nccl);
            else
                ncclCommAbort(m->nccl);
        }
        if (m->boot) epb_comm_destroy(m->boot);
        free(m);
    }
    if (!sub) epb_cuda_detach(c);
    free(c);
}

static int n_split(epb_comm_t *c, int color, int key, epb_comm_t **out);

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
    .iallgather = ni_allgather,
    .ireduce_scatter = ni_reduce_scatter,
    .ialltoallv = ni_alltoallv,
    .test = n_test,
    .wait = n_wait_req,
    .split = n_split,
};

/* ncclCommSplit (NCCL >= 2.18) over the same color as the boot communicator's split, so both sub-communicators
 * hold the same ranks; a node split takes its color from MPI's shared-memory split (the node's first rank) */
static int n_split(epb_comm_t *c, int color, int key, epb_comm_t **out)
{
    nccl_impl_t *m = c->impl;
    *out = NULL;
    epb_comm_t *boot = NULL;
    if (m->boot) {
        if (color == EPB_SPLIT_NODE) { /* the node's lowest rank is its color */
            int lowest = c->rank;
            epb_comm_t *node = NULL;
            if (epb_comm_split_node(m->boot, &node)) return epb_fail(&c->err, EPB_ESYS, "%s", m->boot->err.msg);
            int rc = epb_allreduce(node, &lowest, &lowest, 1, EPB_DT_I32, EPB_MIN);
            epb_comm_destroy(node);
            if (rc) return epb_fail(&c->err, EPB_ESYS, "rank %d: split: node color", c->rank);
            color = lowest;
        }
        if (epb_comm_split(m->boot, color, key, &boot)) return epb_fail(&c->err, EPB_ESYS, "%s", m->boot->err.msg);
    } else if (color == EPB_SPLIT_NODE)
        color = 0;
    ncclComm_t part = NULL;
    int rc = CHECK_NCCL(c, ncclCommSplit(m->nccl, color >= 0 ? color : NCCL_SPLIT_NOCOLOR, key, &part, NULL));
    if (rc || color < 0) {
        if (boot) epb_comm_destroy(boot);
        return rc;
    }
    epb_comm_t *s = calloc(1, sizeof *s);
    nccl_impl_t *sm = calloc(1, sizeof *sm);
    if (!s || !sm) {
        free(s), free(sm);
        ncclCommDestroy(part);
        if (boot) epb_comm_destroy(boot);
        return epb_fail(&c->err, EPB_ESYS, "rank %d: out of memory splitting", c->rank);
    }
    *s = *c;
    s->impl = sm;
    memset(&s->err, 0, sizeof s->err);
    sm->nccl = part;
    sm->boot = boot;
    sm->sub = 1;
    int nr, ns;
    ncclCommUserRank(part, &nr);
    ncclCommCount(part, &ns);
    s->rank = nr, s->size = ns;
    if (boot) s->local_rank = boot->local_rank, s->local_size = boot->local_size, s->nodes = boot->nodes;
    else s->local_rank = 0, s->local_size = s->nodes = 1;
    *out = s;
    return EPB_OK;
}

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
    /* rank 0's unique id (or why it got none) reaches every rank before anything else can fail */
    struct { int res; ncclUniqueId id; } boot_id;
    memset(&boot_id, 0, sizeof boot_id);
    if (c->rank == 0) boot_id.res = (int)ncclGetUniqueId(&boot_id.id);
    if (m->boot && (rc = epb_bcast(m->boot, &boot_id, sizeof boot_id, 0))) {
        epb_fail(err, rc, "%s", m->boot->err.msg);
        goto fail;
    }
    if (boot_id.res != ncclSuccess) {
        rc = epb_fail(err, EPB_ESYS, "rank %d: ncclGetUniqueId failed on rank 0: %s", c->rank,
                      ncclGetErrorString((ncclResult_t)boot_id.res));
        goto fail;
    }
    /* Every rank sets its GPU current (ncclCommInitRank binds the communicator to the current device), then all
     * agree before ncclCommInitRank, which waits for every rank: a rank without a GPU, or two ranks on one GPU
     * (which NCCL refuses, "Duplicate GPU detected"), make every rank fail here, none wait. */
    epb_gpu_census_t g;
    if ((rc = epb_cuda_attach_agreed(c, m->boot, "--comm nccl", &g, err))) goto fail;
    if (g.shared_a >= 0) {
        rc = epb_fail(err, EPB_EUSAGE, "--comm nccl: ranks %d and %d would share one GPU (%d rank(s) on this node, %d "
                      "GPU(s) visible), and NCCL needs a GPU per rank; use --comm mpi (staged through host memory) or "
                      "fewer ranks", g.shared_a, g.shared_b, c->local_size, epb_gpu_count());
        goto fail;
    }
    if ((rc = CHECK_NCCL(c, ncclCommInitRank(&m->nccl, c->size, boot_id.id, c->rank)))) {
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
