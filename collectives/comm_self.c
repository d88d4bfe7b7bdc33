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

int epb_comm_self_create(epb_comm_t **out, epb_err_t *err)
{
    epb_comm_t *c = calloc(1, sizeof *c);
    if (!c) return epb_fail(err, EPB_ESYS, "out of memory");
    c->ops = &self_ops;
    c->rank = 0;
    c->size = c->local_size = c->nodes = 1;
    c->mem = EPB_MEM_HOST;
    *out = c;
    return EPB_OK;
}
