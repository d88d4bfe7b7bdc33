/* The one-rank communicator: every collective is a local copy. Builds without MPI. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"

static int self_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    (void)c;
    if (s != r) memmove(r, s, n * epb_dtype_size(dt));
    return EPB_OK;
}

static int self_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                          const size_t *rc, const size_t *rd, epb_dtype_t dt)
{
    if (sc[0] != rc[0])
        return epb_fail(&c->err, EPB_ESYS, "rank 0: alltoallv: sends %zu elements to itself but expects %zu",
                        sc[0], rc[0]);
    size_t es = epb_dtype_size(dt);
    memmove((char *)r + rd[0] * es, (const char *)s + sd[0] * es, sc[0] * es);
    return EPB_OK;
}

static int self_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    (void)op;
    return self_allgather(c, s, r, n, dt);
}

static int self_bcast(epb_comm_t *c, void *buf, size_t bytes, int root)
{
    (void)c; (void)buf; (void)bytes; (void)root;
    return EPB_OK;
}

static int self_nop(epb_comm_t *c)
{
    (void)c;
    return EPB_OK;
}

static void self_destroy(epb_comm_t *c) { free(c); }

/* ---- device buffers: the same copies on the device, queued on the communicator's stream ---- */

static int selfd_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    return s == r ? EPB_OK : epb_cuda_copy(c, r, s, n * epb_dtype_size(dt), EPB_COPY_D2D);
}

static int selfd_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                           const size_t *rc, const size_t *rd, epb_dtype_t dt)
{
    if (sc[0] != rc[0])
        return epb_fail(&c->err, EPB_ESYS, "rank 0: alltoallv: sends %zu elements to itself but expects %zu",
                        sc[0], rc[0]);
    size_t es = epb_dtype_size(dt);
    return epb_cuda_copy(c, (char *)r + rd[0] * es, (const char *)s + sd[0] * es, sc[0] * es, EPB_COPY_D2D);
}

static int selfd_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    (void)op;
    return selfd_allgather(c, s, r, n, dt);
}

static void selfd_destroy(epb_comm_t *c)
{
    epb_cuda_detach(c);
    free(c);
}

static const epb_comm_ops_t self_dev_ops = {
    .name = "self",
    .allgather = selfd_allgather,
    .reduce_scatter = selfd_allgather,
    .alltoall = selfd_allgather,
    .alltoallv = selfd_alltoallv,
    .allreduce = selfd_allreduce,
    .bcast = self_bcast,
    .barrier = self_nop,
    .sync = epb_cuda_sync,
    .destroy = selfd_destroy,
    .mem_alloc = epb_cuda_mem_alloc,
    .mem_free = epb_cuda_mem_free,
    .mem_copy = epb_cuda_mem_copy,
};

static const epb_comm_ops_t self_ops = {
    .name = "self",
    .allgather = self_allgather,
    .reduce_scatter = self_allgather, /* one rank: the sum is the input */
    .alltoall = self_allgather,
    .alltoallv = self_alltoallv,
    .allreduce = self_allreduce,
    .bcast = self_bcast,
    .barrier = self_nop,
    .sync = self_nop,
    .destroy = self_destroy,
};

int epb_comm_self_create_mem(epb_mem_t mem, epb_comm_t **out, epb_err_t *err)
{
    epb_comm_t *c = calloc(1, sizeof *c);
    if (!c) return epb_fail(err, EPB_ESYS, "out of memory");
    c->ops = &self_ops;
    c->rank = 0;
    c->size = c->local_size = c->nodes = 1;
    c->mem = EPB_MEM_HOST;
    c->device = -1;
    if (mem == EPB_MEM_DEVICE) {
        int rc = epb_cuda_attach(c, err);
        if (rc) {
            free(c);
            return rc;
        }
        c->ops = &self_dev_ops;
    }
    *out = c;
    return EPB_OK;
}

int epb_comm_self_create(epb_comm_t **out, epb_err_t *err) { return epb_comm_self_create_mem(EPB_MEM_HOST, out, err); }
