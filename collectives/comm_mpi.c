/* The MPI communicator: MPI_Allgather, MPI_Reduce_scatter_block, MPI_Alltoall(v), MPI_Allreduce on host
 * buffers. Works under mpirun, mpiexec and srun, on one node or many. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"
#include "epb_config.h"

#if EPB_HAVE_MPI
#include <mpi.h>

static int mpi_started_here;

typedef struct {
    MPI_Comm comm;
    MPI_Op bf16_sum, bf16_max, bf16_min;
    int *ic; /* 5*size ints: alltoallv counts and displacements, reduce_scatter's equal counts */
    /* device buffers: pinned host staging (grown on demand) */
    void *hs, *hr;
    size_t hs_bytes, hr_bytes;
    int sub; /* a split of another communicator: its GPU stream is the parent's, not ours to destroy */
} mpi_impl_t;

/* A started non-blocking call: the MPI request and what must outlive the call (int counts; for device buffers
 * the pinned staging of this call and where its output goes up to). */
struct epb_req {
    MPI_Request mr;
    const char *name;
    int *ic;
    void *hs, *hr;         /* pinned staging (device communicators) */
    void *dst;             /* device output */
    size_t up_bytes;       /* bytes of hr that go up to dst after completion (contiguous case) */
    const size_t *rc, *rd; /* alltoallv: only the received blocks go up */
    size_t es;
    int blocks;
};

static int mpi_check(epb_comm_t *c, int rc, const char *call)
{
    if (rc == MPI_SUCCESS) return EPB_OK;
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    return epb_fail(&c->err, EPB_ESYS, "rank %d: %s failed: %s", c->rank, call, s);
}
#define CHECK_MPI(c, call) mpi_check((c), (call), #call)

static MPI_Datatype mpi_type(epb_dtype_t dt)
{
    switch (dt) {
    case EPB_DT_F32: return MPI_FLOAT;
    case EPB_DT_BF16: return MPI_UINT16_T;
    case EPB_DT_I32: return MPI_INT32_T;
    case EPB_DT_I64: return MPI_INT64_T;
    case EPB_DT_F64: return MPI_DOUBLE;
    }
    return MPI_DATATYPE_NULL;
}

/* bf16 reductions: MPI has no bfloat16, so the 2-byte words go as MPI_UINT16_T with user operations that add
 * in float32 (one rounding per pairwise add, as NCCL does). */
static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *t) { (void)t; epb_reduce_host(inout, in, (size_t)*len, EPB_DT_BF16, EPB_SUM); }
static void bf16_max_fn(void *in, void *inout, int *len, MPI_Datatype *t) { (void)t; epb_reduce_host(inout, in, (size_t)*len, EPB_DT_BF16, EPB_MAX); }
static void bf16_min_fn(void *in, void *inout, int *len, MPI_Datatype *t) { (void)t; epb_reduce_host(inout, in, (size_t)*len, EPB_DT_BF16, EPB_MIN); }

static MPI_Op mpi_op(mpi_impl_t *m, epb_dtype_t dt, epb_redop_t op)
{
    if (dt == EPB_DT_BF16) return op == EPB_SUM ? m->bf16_sum : op == EPB_MAX ? m->bf16_max : m->bf16_min;
    return op == EPB_SUM ? MPI_SUM : op == EPB_MAX ? MPI_MAX : MPI_MIN;
}

static int count_ok(epb_comm_t *c, size_t n, const char *what)
{
    if (n > INT_MAX)
        return epb_fail(&c->err, EPB_ESYS, "rank %d: %s: %zu elements exceed MPI's int count", c->rank, what, n);
    return EPB_OK;
}

static int m_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    if (count_ok(c, n, "MPI_Allgather")) return EPB_ESYS;
    const void *src = s == (char *)r + (size_t)c->rank * n * epb_dtype_size(dt) ? MPI_IN_PLACE : s;
    return CHECK_MPI(c, MPI_Allgather(src, (int)n, mpi_type(dt), r, (int)n, mpi_type(dt), m->comm));
}

/* MPI_Reduce_scatter with equal counts, not MPI_Reduce_scatter_block: Open MPI 4.1 runs the _block variant 3-6x
 * slower from 256 KiB up on one node (bench --coll reduce_scatter was 2.6x osu_reduce_scatter, which calls
 * MPI_Reduce_scatter; experiments/overhead has the side-by-side figures) */
static int m_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    if (count_ok(c, n, "MPI_Reduce_scatter")) return EPB_ESYS;
    int *counts = m->ic + 4 * c->size;
    for (int p = 0; p < c->size; p++) counts[p] = (int)n;
    return CHECK_MPI(c, MPI_Reduce_scatter(s, r, counts, mpi_type(dt), mpi_op(m, dt, EPB_SUM), m->comm));
}

static int m_alltoall(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    if (count_ok(c, n, "MPI_Alltoall")) return EPB_ESYS;
    return CHECK_MPI(c, MPI_Alltoall(s, (int)n, mpi_type(dt), r, (int)n, mpi_type(dt), m->comm));
}

/* the size_t counts and displacements as MPI's ints, into ic (4*size) */
static int int_counts(epb_comm_t *c, int *ic, const size_t *sc, const size_t *sd, const size_t *rc, const size_t *rd)
{
    int P = c->size;
    for (int i = 0; i < P; i++) {
        if (sc[i] > INT_MAX || sd[i] > INT_MAX || rc[i] > INT_MAX || rd[i] > INT_MAX)
            return epb_fail(&c->err, EPB_ESYS, "rank %d: MPI_Alltoallv: counts exceed MPI's int", c->rank);
        ic[i] = (int)sc[i], ic[P + i] = (int)sd[i], ic[2 * P + i] = (int)rc[i], ic[3 * P + i] = (int)rd[i];
    }
    return EPB_OK;
}

static int m_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                       const size_t *rc, const size_t *rd, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    int P = c->size, *ic = m->ic;
    if (int_counts(c, ic, sc, sd, rc, rd)) return EPB_ESYS;
    return CHECK_MPI(c, MPI_Alltoallv(s, ic, ic + P, mpi_type(dt), r, ic + 2 * P, ic + 3 * P, mpi_type(dt), m->comm));
}

/* ---- non-blocking calls on host buffers ---- */

static epb_req_t *req_new(epb_comm_t *c, const char *name, int nints)
{
    epb_req_t *q = calloc(1, sizeof *q);
    if (q && nints && !(q->ic = malloc(sizeof(int) * (size_t)nints))) { free(q); q = NULL; }
    if (!q) epb_fail(&c->err, EPB_ESYS, "rank %d: out of memory starting %s", c->rank, name);
    else q->name = name, q->mr = MPI_REQUEST_NULL;
    return q;
}

static void req_free(epb_req_t *q)
{
    if (!q) return;
    free(q->ic);
    epb_cuda_host_free(q->hs);
    epb_cuda_host_free(q->hr);
    free(q);
}

/* Starts the MPI call `start` built from the arguments; on failure frees q. */
#define START(c, q, call)                                                                                      \
    do {                                                                                                       \
        int rc_ = mpi_check((c), (call), #call);                                                               \
        if (rc_) { req_free(q); return rc_; }                                                                  \
    } while (0)

static int mi_allgather_on(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t *q)
{
    mpi_impl_t *m = c->impl;
    START(c, q, MPI_Iallgather(s, (int)n, mpi_type(dt), r, (int)n, mpi_type(dt), m->comm, &q->mr));
    return EPB_OK;
}

static int mi_reduce_scatter_on(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t *q)
{
    mpi_impl_t *m = c->impl;
    for (int p = 0; p < c->size; p++) q->ic[p] = (int)n;
    START(c, q, MPI_Ireduce_scatter(s, r, q->ic, mpi_type(dt), mpi_op(m, dt, EPB_SUM), m->comm, &q->mr));
    return EPB_OK;
}

static int mi_alltoallv_on(epb_comm_t *c, const void *s, void *r, epb_dtype_t dt, epb_req_t *q)
{
    mpi_impl_t *m = c->impl;
    int P = c->size;
    START(c, q, MPI_Ialltoallv(s, q->ic, q->ic + P, mpi_type(dt), r, q->ic + 2 * P, q->ic + 3 * P, mpi_type(dt),
                               m->comm, &q->mr));
    return EPB_OK;
}

static int mi_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **out)
{
    epb_req_t *q;
    if (count_ok(c, n * (size_t)c->size, "MPI_Iallgather") || !(q = req_new(c, "MPI_Iallgather", 0))) return EPB_ESYS;
    int rc = mi_allgather_on(c, s, r, n, dt, q);
    *out = rc ? NULL : q;
    return rc;
}

static int mi_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **out)
{
    epb_req_t *q;
    if (count_ok(c, n, "MPI_Ireduce_scatter") || !(q = req_new(c, "MPI_Ireduce_scatter", c->size))) return EPB_ESYS;
    int rc = mi_reduce_scatter_on(c, s, r, n, dt, q);
    *out = rc ? NULL : q;
    return rc;
}

static int mi_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                        const size_t *rd, epb_dtype_t dt, epb_req_t **out)
{
    epb_req_t *q = req_new(c, "MPI_Ialltoallv", 4 * c->size);
    if (!q) return EPB_ESYS;
    if (int_counts(c, q->ic, sc, sd, rc, rd)) { req_free(q); return EPB_ESYS; }
    int e = mi_alltoallv_on(c, s, r, dt, q);
    *out = e ? NULL : q;
    return e;
}

static int m_test(epb_comm_t *c, epb_req_t *q, int *done)
{
    /* MPI_Test completes a finished request; keep it for the wait, which then finds MPI_REQUEST_NULL */
    int flag = 0, rc = mpi_check(c, MPI_Test(&q->mr, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    *done = flag;
    return rc;
}

static int m_wait(epb_comm_t *c, epb_req_t *q)
{
    int rc = mpi_check(c, MPI_Wait(&q->mr, MPI_STATUS_IGNORE), "MPI_Wait");
    req_free(q);
    return rc;
}

static int m_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    mpi_impl_t *m = c->impl;
    if (count_ok(c, n, "MPI_Allreduce")) return EPB_ESYS;
    return CHECK_MPI(c, MPI_Allreduce(s == r ? MPI_IN_PLACE : s, r, (int)n, mpi_type(dt), mpi_op(m, dt, op), m->comm));
}

static int m_bcast(epb_comm_t *c, void *buf, size_t bytes, int root)
{
    mpi_impl_t *m = c->impl;
    if (count_ok(c, bytes, "MPI_Bcast")) return EPB_ESYS;
    return CHECK_MPI(c, MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, m->comm));
}

static int m_barrier(epb_comm_t *c)
{
    mpi_impl_t *m = c->impl;
    return CHECK_MPI(c, MPI_Barrier(m->comm));
}

static int m_sync(epb_comm_t *c)
{
    (void)c; /* host MPI collectives are complete when they return */
    return EPB_OK;
}

static void m_destroy(epb_comm_t *c)
{
    mpi_impl_t *m = c->impl;
    if (c->mem == EPB_MEM_DEVICE) {
        if (m) {
            epb_cuda_host_free(m->hs);
            epb_cuda_host_free(m->hr);
        }
        if (!m || !m->sub) epb_cuda_detach(c);
    }
    if (m) {
        MPI_Op_free(&m->bf16_sum);
        MPI_Op_free(&m->bf16_max);
        MPI_Op_free(&m->bf16_min);
        MPI_Comm_free(&m->comm);
        free(m->ic);
        free(m);
    }
    free(c);
}

static int m_split(epb_comm_t *c, int color, int key, epb_comm_t **out);

static const epb_comm_ops_t mpi_ops = {
    .name = "mpi",
    .allgather = m_allgather,
    .reduce_scatter = m_reduce_scatter,
    .alltoall = m_alltoall,
    .alltoallv = m_alltoallv,
    .allreduce = m_allreduce,
    .bcast = m_bcast,
    .barrier = m_barrier,
    .sync = m_sync,
    .destroy = m_destroy,
    .iallgather = mi_allgather,
    .ireduce_scatter = mi_reduce_scatter,
    .ialltoallv = mi_alltoallv,
    .test = m_test,
    .wait = m_wait,
    .split = m_split,
};

/* ---- device buffers, staged through pinned host memory (Debian's Open MPI is not CUDA-aware): copy the
 * input down, run the host collective, copy the output up. Every copy completes before the next step, so the
 * staging buffers are free again when a call returns. ---- */

static int stage(epb_comm_t *c, size_t sbytes, size_t rbytes)
{
    mpi_impl_t *m = c->impl;
    /* allocated even for 0 bytes (then 64): MPI never gets a NULL buffer, e.g. a rank that receives nothing */
    if (m->hs_bytes < sbytes || !m->hs) {
        epb_cuda_host_free(m->hs);
        m->hs_bytes = 0;
        if (!(m->hs = epb_cuda_host_alloc(c, sbytes))) return EPB_ESYS;
        m->hs_bytes = sbytes;
    }
    if (m->hr_bytes < rbytes || !m->hr) {
        epb_cuda_host_free(m->hr);
        m->hr_bytes = 0;
        if (!(m->hr = epb_cuda_host_alloc(c, rbytes))) return EPB_ESYS;
        m->hr_bytes = rbytes;
    }
    return EPB_OK;
}

static int md_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    size_t b = n * epb_dtype_size(dt), P = (size_t)c->size;
    if (stage(c, b, b * P) || epb_cuda_copy(c, m->hs, s, b, EPB_COPY_D2H) || m_allgather(c, m->hs, m->hr, n, dt) ||
        epb_cuda_copy(c, r, m->hr, b * P, EPB_COPY_H2D))
        return EPB_ESYS;
    return EPB_OK;
}

static int md_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    size_t b = n * epb_dtype_size(dt), P = (size_t)c->size;
    if (stage(c, b * P, b) || epb_cuda_copy(c, m->hs, s, b * P, EPB_COPY_D2H) ||
        m_reduce_scatter(c, m->hs, m->hr, n, dt) || epb_cuda_copy(c, r, m->hr, b, EPB_COPY_H2D))
        return EPB_ESYS;
    return EPB_OK;
}

static int md_alltoall(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    size_t b = n * epb_dtype_size(dt) * (size_t)c->size;
    if (stage(c, b, b) || epb_cuda_copy(c, m->hs, s, b, EPB_COPY_D2H) || m_alltoall(c, m->hs, m->hr, n, dt) ||
        epb_cuda_copy(c, r, m->hr, b, EPB_COPY_H2D))
        return EPB_ESYS;
    return EPB_OK;
}

static int md_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                        const size_t *rc, const size_t *rd, epb_dtype_t dt)
{
    mpi_impl_t *m = c->impl;
    size_t es = epb_dtype_size(dt), send_end = 0, recv_end = 0, recv_sum = 0; /* elements spanned by the blocks */
    for (int p = 0; p < c->size; p++) {
        if (sc[p] && sd[p] + sc[p] > send_end) send_end = sd[p] + sc[p];
        if (rc[p] && rd[p] + rc[p] > recv_end) recv_end = rd[p] + rc[p];
        recv_sum += rc[p];
    }
    if (stage(c, send_end * es, recv_end * es) || epb_cuda_copy(c, m->hs, s, send_end * es, EPB_COPY_D2H) ||
        m_alltoallv(c, m->hs, sc, sd, m->hr, rc, rd, dt))
        return EPB_ESYS;
    /* only the received blocks go up: recv outside them is not the collective's to write (the staging buffer
     * holds stale bytes there). Disjoint blocks that fill [0, recv_end) go up in one copy. */
    if (recv_sum == recv_end) return epb_cuda_copy(c, r, m->hr, recv_end * es, EPB_COPY_H2D);
    for (int p = 0; p < c->size; p++)
        if (rc[p] && epb_cuda_copy(c, (char *)r + rd[p] * es, (char *)m->hr + rd[p] * es, rc[p] * es, EPB_COPY_H2D))
            return EPB_ESYS;
    return EPB_OK;
}

static int md_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    mpi_impl_t *m = c->impl;
    size_t b = n * epb_dtype_size(dt);
    if (stage(c, b, b) || epb_cuda_copy(c, m->hs, s, b, EPB_COPY_D2H) || m_allreduce(c, m->hs, m->hr, n, dt, op) ||
        epb_cuda_copy(c, r, m->hr, b, EPB_COPY_H2D))
        return EPB_ESYS;
    return EPB_OK;
}

static int md_bcast(epb_comm_t *c, void *buf, size_t bytes, int root)
{
    mpi_impl_t *m = c->impl;
    if (stage(c, bytes, 0) || epb_cuda_copy(c, m->hs, buf, bytes, EPB_COPY_D2H) || m_bcast(c, m->hs, bytes, root) ||
        epb_cuda_copy(c, buf, m->hs, bytes, EPB_COPY_H2D))
        return EPB_ESYS;
    return EPB_OK;
}

/* non-blocking on device buffers: the input goes down into this call's own pinned buffers (so several calls
 * can be in flight), MPI runs on them while the host goes on; the wait brings the output up */
static int stage_req(epb_comm_t *c, epb_req_t *q, const void *s, size_t sbytes, size_t rbytes)
{
    if (!(q->hs = epb_cuda_host_alloc(c, sbytes)) || !(q->hr = epb_cuda_host_alloc(c, rbytes)) ||
        epb_cuda_copy(c, q->hs, s, sbytes, EPB_COPY_D2H)) {
        req_free(q);
        return EPB_ESYS;
    }
    return EPB_OK;
}

static int mdi_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **out)
{
    size_t b = n * epb_dtype_size(dt), P = (size_t)c->size;
    epb_req_t *q;
    if (count_ok(c, n * P, "MPI_Iallgather") || !(q = req_new(c, "MPI_Iallgather", 0)) || stage_req(c, q, s, b, b * P))
        return EPB_ESYS;
    q->dst = r, q->up_bytes = b * P;
    int rc = mi_allgather_on(c, q->hs, q->hr, n, dt, q);
    *out = rc ? NULL : q;
    return rc;
}

static int mdi_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **out)
{
    size_t b = n * epb_dtype_size(dt), P = (size_t)c->size;
    epb_req_t *q;
    if (count_ok(c, n, "MPI_Ireduce_scatter") || !(q = req_new(c, "MPI_Ireduce_scatter", c->size)) ||
        stage_req(c, q, s, b * P, b))
        return EPB_ESYS;
    q->dst = r, q->up_bytes = b;
    int rc = mi_reduce_scatter_on(c, q->hs, q->hr, n, dt, q);
    *out = rc ? NULL : q;
    return rc;
}

static int mdi_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                         const size_t *rd, epb_dtype_t dt, epb_req_t **out)
{
    size_t es = epb_dtype_size(dt), send_end = 0, recv_end = 0;
    for (int p = 0; p < c->size; p++) {
        if (sc[p] && sd[p] + sc[p] > send_end) send_end = sd[p] + sc[p];
        if (rc[p] && rd[p] + rc[p] > recv_end) recv_end = rd[p] + rc[p];
    }
    epb_req_t *q = req_new(c, "MPI_Ialltoallv", 4 * c->size);
    if (!q) return EPB_ESYS;
    if (int_counts(c, q->ic, sc, sd, rc, rd)) { req_free(q); return EPB_ESYS; }
    if (stage_req(c, q, s, send_end * es, recv_end * es)) return EPB_ESYS;
    q->dst = r, q->rc = rc, q->rd = rd, q->es = es, q->blocks = 1;
    int e = mi_alltoallv_on(c, q->hs, q->hr, dt, q);
    *out = e ? NULL : q;
    return e;
}

static int md_wait(epb_comm_t *c, epb_req_t *q)
{
    int rc = mpi_check(c, MPI_Wait(&q->mr, MPI_STATUS_IGNORE), "MPI_Wait");
    if (!rc && q->blocks) { /* only the received blocks go up (see md_alltoallv) */
        for (int p = 0; p < c->size && !rc; p++)
            if (q->rc[p])
                rc = epb_cuda_copy(c, (char *)q->dst + q->rd[p] * q->es, (char *)q->hr + q->rd[p] * q->es,
                                   q->rc[p] * q->es, EPB_COPY_H2D);
    } else if (!rc)
        rc = epb_cuda_copy(c, q->dst, q->hr, q->up_bytes, EPB_COPY_H2D);
    req_free(q);
    return rc;
}

static const epb_comm_ops_t mpi_dev_ops = {
    .name = "mpi",
    .allgather = md_allgather,
    .reduce_scatter = md_reduce_scatter,
    .alltoall = md_alltoall,
    .alltoallv = md_alltoallv,
    .allreduce = md_allreduce,
    .bcast = md_bcast,
    .barrier = m_barrier,
    .sync = epb_cuda_sync,
    .destroy = m_destroy,
    .mem_alloc = epb_cuda_mem_alloc,
    .mem_free = epb_cuda_mem_free,
    .mem_copy = epb_cuda_mem_copy,
    .iallgather = mdi_allgather,
    .ireduce_scatter = mdi_reduce_scatter,
    .ialltoallv = mdi_alltoallv,
    .test = m_test,
    .wait = md_wait,
    .split = m_split,
};

int epb_comm_mpi_create_mem(epb_mem_t mem, epb_comm_t **out, epb_err_t *err)
{
    int rc = epb_comm_mpi_create(out, err);
    if (rc || mem == EPB_MEM_HOST) return rc;
    epb_comm_t *c = *out;
    /* every rank learns whether all found a GPU, so that all fail alike (ranks may share one here) */
    epb_gpu_census_t g;
    if ((rc = epb_cuda_attach_agreed(c, c, "--device cuda", &g, err))) {
        c->mem = EPB_MEM_DEVICE; /* m_destroy releases the stream if attach made one */
        epb_comm_destroy(c);
        *out = NULL;
        return rc;
    }
    c->ops = &mpi_dev_ops;
    return EPB_OK;
}

/* A communicator over a duplicate of `from` (which the caller keeps): ranks, node-local ranks and nodes, bf16
 * operations. Collective over from. */
static int mpi_from(MPI_Comm from, epb_comm_t **out, epb_err_t *err)
{
    epb_comm_t *c = calloc(1, sizeof *c);
    mpi_impl_t *m = calloc(1, sizeof *m);
    if (!c || !m) { free(c); free(m); return epb_fail(err, EPB_ESYS, "out of memory"); }
    c->ops = &mpi_ops;
    c->impl = m;
    c->mem = EPB_MEM_HOST;
    c->device = -1;
    m->comm = MPI_COMM_NULL;
    m->bf16_sum = m->bf16_max = m->bf16_min = MPI_OP_NULL;
    int rc = MPI_Comm_dup(from, &m->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(m->comm, &c->rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(m->comm, &c->size);
    MPI_Comm local;
    if (rc == MPI_SUCCESS) rc = MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    if (rc == MPI_SUCCESS) {
        MPI_Comm_rank(local, &c->local_rank);
        MPI_Comm_size(local, &c->local_size);
        MPI_Comm_free(&local);
        int leader = c->local_rank == 0;
        rc = MPI_Allreduce(&leader, &c->nodes, 1, MPI_INT, MPI_SUM, m->comm);
    }
    if (rc == MPI_SUCCESS) rc = MPI_Op_create(bf16_sum_fn, 1, &m->bf16_sum);
    if (rc == MPI_SUCCESS) rc = MPI_Op_create(bf16_max_fn, 1, &m->bf16_max);
    if (rc == MPI_SUCCESS) rc = MPI_Op_create(bf16_min_fn, 1, &m->bf16_min);
    m->ic = malloc(5 * sizeof(int) * (size_t)(c->size > 0 ? c->size : 1));
    if (rc != MPI_SUCCESS || !m->ic) {
        MPI_Op *ops[] = { &m->bf16_sum, &m->bf16_max, &m->bf16_min };
        for (int i = 0; i < 3; i++)
            if (*ops[i] != MPI_OP_NULL) MPI_Op_free(ops[i]);
        if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
        free(m->ic);
        free(m);
        free(c);
        return epb_fail(err, EPB_ESYS, "MPI communicator set-up failed (MPI error %d)", rc);
    }
    *out = c;
    return EPB_OK;
}

int epb_comm_mpi_create(epb_comm_t **out, epb_err_t *err)
{
    if (!epb_runtime_mpi_active())
        return epb_fail(err, EPB_EUSAGE, "--comm mpi: not started under mpirun/srun (run through mpirun, or let "
                                         "bench launch itself with --ranks N)");
    return mpi_from(MPI_COMM_WORLD, out, err);
}

static int m_split(epb_comm_t *c, int color, int key, epb_comm_t **out)
{
    mpi_impl_t *m = c->impl;
    *out = NULL;
    MPI_Comm part = MPI_COMM_NULL;
    int rc = color == EPB_SPLIT_NODE
                 ? MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, key, MPI_INFO_NULL, &part)
                 : MPI_Comm_split(m->comm, color >= 0 ? color : MPI_UNDEFINED, key, &part);
    if (rc != MPI_SUCCESS) return mpi_check(c, rc, color == EPB_SPLIT_NODE ? "MPI_Comm_split_type" : "MPI_Comm_split");
    if (part == MPI_COMM_NULL) return EPB_OK;
    epb_err_t e;
    rc = mpi_from(part, out, &e);
    MPI_Comm_free(&part);
    if (rc) return epb_fail(&c->err, rc, "rank %d: split: %s", c->rank, e.msg);
    epb_comm_t *s = *out;
    /* the same memory, GPU and stream as the parent */
    s->mem = c->mem;
    s->device = c->device;
    s->stream = c->stream;
    s->ops = c->ops;
    ((mpi_impl_t *)s->impl)->sub = 1;
    return EPB_OK;
}

int epb_clock_offset(epb_comm_t *c, double *offset_us, epb_err_t *err)
{
    *offset_us = 0;
    c = epb_comm_unwrap(c); /* a counting wrapper (bench's watchdog wraps its control communicator) */
    if (c->nodes <= 1 || c->ops != &mpi_ops) return EPB_OK;
    mpi_impl_t *m = c->impl;
    MPI_Comm local = MPI_COMM_NULL, leaders = MPI_COMM_NULL;
    int rc = MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    int lrank = 0;
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(local, &lrank);
    /* rank 0 and every node's first rank; rank 0 is local rank 0 of its node */
    if (rc == MPI_SUCCESS) rc = MPI_Comm_split(m->comm, lrank == 0 ? 0 : MPI_UNDEFINED, c->rank, &leaders);
    if (rc == MPI_SUCCESS && leaders != MPI_COMM_NULL) {
        int lr, ln;
        MPI_Comm_rank(leaders, &lr);
        MPI_Comm_size(leaders, &ln);
        enum { ROUNDS = 32 };
        for (int peer = 1; peer < ln && rc == MPI_SUCCESS; peer++) {
            if (lr != 0 && lr != peer) continue;
            double best_rtt = 1e300, best_off = 0;
            for (int i = 0; i < ROUNDS && rc == MPI_SUCCESS; i++) {
                if (lr == 0) { /* answer with rank 0's clock */
                    double t;
                    rc = MPI_Recv(&t, 1, MPI_DOUBLE, peer, 7, leaders, MPI_STATUS_IGNORE);
                    t = epb_now_us();
                    if (rc == MPI_SUCCESS) rc = MPI_Send(&t, 1, MPI_DOUBLE, peer, 8, leaders);
                } else {
                    double t0 = epb_now_us(), t0r;
                    rc = MPI_Send(&t0, 1, MPI_DOUBLE, 0, 7, leaders);
                    if (rc == MPI_SUCCESS) rc = MPI_Recv(&t0r, 1, MPI_DOUBLE, 0, 8, leaders, MPI_STATUS_IGNORE);
                    double t1 = epb_now_us();
                    if (t1 - t0 < best_rtt) { best_rtt = t1 - t0; best_off = t0r - (t0 + t1) / 2; }
                }
            }
            if (lr == peer) *offset_us = best_off;
        }
        MPI_Comm_free(&leaders);
    }
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(offset_us, 1, MPI_DOUBLE, 0, local);
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    if (rc != MPI_SUCCESS) return epb_fail(err, EPB_ESYS, "rank %d: measuring the clock offset to rank 0 failed "
                                           "(MPI error %d)", c->rank, rc);
    return EPB_OK;
}

const char *epb_mpi_library(void)
{
#if defined(OMPI_MAJOR_VERSION)
#define EPB_STR2(x) #x
#define EPB_STR1(x) EPB_STR2(x)
    return "Open MPI " EPB_STR1(OMPI_MAJOR_VERSION) "." EPB_STR1(OMPI_MINOR_VERSION) "." EPB_STR1(OMPI_RELEASE_VERSION);
#elif defined(MPICH_VERSION)
    return "MPICH " MPICH_VERSION;
#else
    return "MPI";
#endif
}

int epb_mpi_is_openmpi(void)
{
#if defined(OMPI_MAJOR_VERSION)
    return 1;
#else
    return 0;
#endif
}

int epb_runtime_init(int *argc, char ***argv, epb_err_t *err)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited || !epb_under_launcher()) return EPB_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return epb_fail(err, EPB_ESYS, "MPI_Init_thread failed");
    mpi_started_here = 1;
    return EPB_OK;
}

int epb_runtime_mpi_active(void)
{
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    return inited && !finalized;
}

void epb_runtime_finalize(void)
{
    if (mpi_started_here && epb_runtime_mpi_active()) MPI_Finalize();
}

void epb_runtime_abort(int code)
{
    if (epb_runtime_mpi_active()) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

#else /* no MPI: a single process */

int epb_comm_mpi_create(epb_comm_t **out, epb_err_t *err)
{
    *out = NULL;
    return epb_fail(err, EPB_EUSAGE, "this build has no MPI");
}
int epb_comm_mpi_create_mem(epb_mem_t mem, epb_comm_t **out, epb_err_t *err)
{
    (void)mem;
    return epb_comm_mpi_create(out, err);
}
int epb_clock_offset(epb_comm_t *c, double *offset_us, epb_err_t *err)
{
    (void)c; (void)err;
    *offset_us = 0;
    return EPB_OK;
}
const char *epb_mpi_library(void) { return "none"; }
int epb_mpi_is_openmpi(void) { return 0; }
int epb_runtime_init(int *argc, char ***argv, epb_err_t *err) { (void)argc; (void)argv; (void)err; return EPB_OK; }
int epb_runtime_mpi_active(void) { return 0; }
void epb_runtime_finalize(void) {}
void epb_runtime_abort(int code) { exit(code); }

#endif
