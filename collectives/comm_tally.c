/* The counting wrapper: every call is forwarded to the wrapped communicator after the hooks have been told its
 * collective and the bytes this rank sends to other ranks in it, from the call's own counts. The MoE run
 * framework attributes them to the open phase, so no strategy types a byte count. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"

typedef struct {
    epb_comm_t *inner;
    int own;
    epb_tally_t t;
    int sync_calls; /* epb_comm_tally_sync_calls */
    /* this wrapper's table: tally_ops with the backend's name (so c->ops->name stays "mpi", "nccl", "self") and
     * the memory hooks exactly when the backend has them */
    epb_comm_ops_t ops;
} tally_t;

static epb_comm_t *in(epb_comm_t *c) { return ((tally_t *)c->impl)->inner; }

/* tells the hooks; a refusal keeps its message in c->err */
static int enter(epb_comm_t *c, const char *coll, double bytes)
{
    tally_t *t = c->impl;
    return t->t.enter ? t->t.enter(t->t.ctx, c, coll, bytes) : EPB_OK;
}

/* the wrapped call's result; its failure message is copied up, and leave is told */
static int done(epb_comm_t *c, const char *coll, int rc)
{
    tally_t *t = c->impl;
    if (rc) c->err = t->inner->err;
    if (t->t.leave) t->t.leave(t->t.ctx, c, coll);
    return rc;
}

static double others(const epb_comm_t *c) { return (double)(c->size - 1); }

static int t_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    if (enter(c, "allgather", others(c) * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "allgather", epb_allgather(in(c), s, r, n, dt));
}

static int t_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    if (enter(c, "reduce_scatter", others(c) * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "reduce_scatter", epb_reduce_scatter(in(c), s, r, n, dt));
}

static int t_alltoall(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{
    if (enter(c, "alltoall", others(c) * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "alltoall", epb_alltoall(in(c), s, r, n, dt));
}

/* what leaves this rank: the send blocks to every other rank */
static double sent_v(const epb_comm_t *c, const size_t *sc, epb_dtype_t dt)
{
    double n = 0;
    for (int p = 0; p < c->size; p++)
        if (p != c->rank) n += (double)sc[p];
    return n * (double)epb_dtype_size(dt);
}

static int t_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                       const size_t *rd, epb_dtype_t dt)
{
    if (enter(c, "alltoallv", sent_v(c, sc, dt))) return EPB_ESYS;
    return done(c, "alltoallv", epb_alltoallv(in(c), s, sc, sd, r, rc, rd, dt));
}

static int t_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{
    double ring = c->size > 1 ? 2.0 * others(c) / c->size : 0.0;
    if (enter(c, "allreduce", ring * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "allreduce", epb_allreduce(in(c), s, r, n, dt, op));
}

static int t_bcast(epb_comm_t *c, void *buf, size_t bytes, int root)
{
    if (enter(c, "bcast", c->rank == root ? others(c) * (double)bytes : 0)) return EPB_ESYS;
    return done(c, "bcast", epb_bcast(in(c), buf, bytes, root));
}

static int t_barrier(epb_comm_t *c)
{
    if (enter(c, "barrier", 0)) return EPB_ESYS;
    return done(c, "barrier", epb_barrier(in(c)));
}

/* completion of queued device work: part of the open phase, not a collective of its own; a call of its own only
 * for hooks that ask (a device communicator's collectives return at once and complete here) */
static int t_sync(epb_comm_t *c)
{
    tally_t *t = c->impl;
    if (!t->sync_calls) {
        int rc = epb_sync(in(c));
        if (rc) c->err = in(c)->err;
        return rc;
    }
    if (enter(c, "sync", 0)) return EPB_ESYS;
    return done(c, "sync", epb_sync(in(c)));
}

/* a started call returns at once: leave is told then, so the hooks never take the time until its wait as time
 * inside the communicator */
static int t_iallgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    if (enter(c, "allgather", others(c) * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "allgather", epb_iallgather(in(c), s, r, n, dt, q));
}

static int t_ireduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{
    if (enter(c, "reduce_scatter", others(c) * (double)(n * epb_dtype_size(dt)))) return EPB_ESYS;
    return done(c, "reduce_scatter", epb_ireduce_scatter(in(c), s, r, n, dt, q));
}

static int t_ialltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r, const size_t *rc,
                        const size_t *rd, epb_dtype_t dt, epb_req_t **q)
{
    if (enter(c, "alltoallv", sent_v(c, sc, dt))) return EPB_ESYS;
    return done(c, "alltoallv", epb_ialltoallv(in(c), s, sc, sd, r, rc, rd, dt, q));
}

static int t_test(epb_comm_t *c, epb_req_t *q, int *is_done)
{
    int rc = epb_test(in(c), q, is_done);
    if (rc) c->err = in(c)->err;
    return rc;
}

/* a wait completes a started collective: the hooks see it as a (zero-byte) call, so a wait in a compute phase is
 * refused like any collective */
static int t_wait(epb_comm_t *c, epb_req_t *q)
{
    if (enter(c, "wait", 0)) return EPB_ESYS;
    return done(c, "wait", epb_wait(in(c), q));
}

static void t_destroy(epb_comm_t *c)
{
    tally_t *t = c->impl;
    if (t && t->own) epb_comm_destroy(t->inner);
    free(t);
    free(c);
}

static void *t_mem_alloc(epb_comm_t *c, size_t bytes)
{
    void *p = in(c)->ops->mem_alloc(in(c), bytes);
    if (!p) c->err = in(c)->err;
    return p;
}

static void t_mem_free(epb_comm_t *c, void *p) { in(c)->ops->mem_free(in(c), p); }

static int t_mem_copy(epb_comm_t *c, void *dst, const void *src, size_t bytes, int to_device)
{
    int rc = in(c)->ops->mem_copy(in(c), dst, src, bytes, to_device);
    if (rc) c->err = in(c)->err;
    return rc;
}

static int t_split(epb_comm_t *c, int color, int key, epb_comm_t **out);

static const epb_comm_ops_t tally_ops = {
    .name = NULL, /* the wrapped backend's name (set per communicator below) */
    .allgather = t_allgather,
    .reduce_scatter = t_reduce_scatter,
    .alltoall = t_alltoall,
    .alltoallv = t_alltoallv,
    .allreduce = t_allreduce,
    .bcast = t_bcast,
    .barrier = t_barrier,
    .sync = t_sync,
    .destroy = t_destroy,
    .iallgather = t_iallgather,
    .ireduce_scatter = t_ireduce_scatter,
    .ialltoallv = t_ialltoallv,
    .test = t_test,
    .wait = t_wait,
    .split = t_split,
};

int epb_comm_tally_create(epb_comm_t *inner, int own_inner, const epb_tally_t *hooks, epb_comm_t **out, epb_err_t *err)
{
    *out = NULL;
    epb_comm_t *c = calloc(1, sizeof *c);
    tally_t *t = calloc(1, sizeof *t);
    if (!c || !t) {
        free(c);
        free(t);
        return epb_fail(err, EPB_ESYS, "out of memory wrapping the %s communicator", inner->ops->name);
    }
    *c = *inner;
    memset(&c->err, 0, sizeof c->err);
    t->ops = tally_ops;
    t->ops.name = inner->ops->name;
    if (inner->ops->mem_alloc) {
        t->ops.mem_alloc = t_mem_alloc;
        t->ops.mem_free = t_mem_free;
        t->ops.mem_copy = t_mem_copy;
    }
    c->ops = &t->ops;
    c->impl = t;
    t->inner = inner;
    t->own = own_inner;
    t->t = *hooks;
    *out = c;
    return EPB_OK;
}

epb_comm_t *epb_comm_unwrap(epb_comm_t *c)
{
    while (c && c->ops->destroy == t_destroy) c = in(c);
    return c;
}

static int t_split(epb_comm_t *c, int color, int key, epb_comm_t **out)
{
    tally_t *t = c->impl;
    epb_comm_t *part = NULL;
    *out = NULL;
    /* a split is a collective of the parent's ranks (it waits for every one of them): the hooks are told, so a
     * watchdog sees a rank stuck in it like in any other call */
    if (enter(c, "split", 0)) return EPB_ESYS;
    if (done(c, "split", epb_comm_split(t->inner, color, key, &part))) return EPB_ESYS;
    if (!part) return EPB_OK;
    epb_err_t e;
    if (epb_comm_tally_create(part, 1, &t->t, out, &e)) {
        epb_comm_destroy(part);
        return epb_fail(&c->err, EPB_ESYS, "rank %d: %s", c->rank, e.msg);
    }
    ((tally_t *)(*out)->impl)->sync_calls = t->sync_calls;
    return EPB_OK;
}

int epb_comm_tally_sync_calls(epb_comm_t *c)
{
    if (c->ops->destroy != t_destroy) return epb_fail(&c->err, EPB_EUSAGE, "not a counting wrapper");
    ((tally_t *)c->impl)->sync_calls = 1;
    return EPB_OK;
}
