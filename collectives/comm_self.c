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

/* ---- non-blocking: one rank's collectives are copies, done when started; a request is only a token ---- */
struct epb_req { int done; };
static epb_req_t self_token;

static int self_iallgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    *q = &self_token;
    return c->ops->allgather(c, s, r, n, dt);
}

static int self_ireduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    *q = &self_token;
    return c->ops->reduce_scatter(c, s, r, n, dt);
}

static int self_ialltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                           const size_t *rd, epb_dtype_t dt, epb_req_t **q)
{
    *q = &self_token;
    return c->ops->alltoallv(c, s, sc, sd, r, rc, rd, dt);
}

static int self_test(epb_comm_t *c, epb_req_t *q, int *done)
{
    (void)c; (void)q;
    *done = 1;
    return EPB_OK;
}

static int self_wait(epb_comm_t *c, epb_req_t *q)
{
    (void)c; (void)q;
    return EPB_OK;
}

static int self_split(epb_comm_t *c, int color, int key, epb_comm_t **out);

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
    if (!c->impl) epb_cuda_detach(c); /* a split (impl marks it) shares its parent's stream */
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
    .iallgather = self_iallgather,
    .ireduce_scatter = self_ireduce_scatter,
    .ialltoallv = self_ialltoallv,
    .test = self_test,
    .wait = self_wait,
    .split = self_split,
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
    .iallgather = self_iallgather,
    .ireduce_scatter = self_ireduce_scatter,
    .ialltoallv = self_ialltoallv,
    .test = self_test,
    .wait = self_wait,
    .split = self_split,
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

static int self_split(epb_comm_t *c, int color, int key, epb_comm_t **out)
{
    (void)key;
    *out = NULL;
    if (color == EPB_SPLIT_NONE) return EPB_OK;
    epb_comm_t *s = malloc(sizeof *s);
    if (!s) return epb_fail(&c->err, EPB_ESYS, "rank 0: out of memory splitting");
    *s = *c;
    s->impl = s; /* a split: selfd_destroy leaves the stream to the parent */
    memset(&s->err, 0, sizeof s->err);
    *out = s;
    return EPB_OK;
}
