/* The collective microbenchmarks: one small struct per collective (sizes, init, run, check), nccl-tests style.
 * Inputs are seeded small integers, so every rank computes its expected output exactly, in float32 and
 * bfloat16 alike (sums stay integers below 2^8). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collectives.h"

/* Value range such that a sum over P ranks stays exact in bfloat16 (8 significant bits). */
static int value_range(int P)
{
    int r = 256 / (P > 0 ? P : 1);
    return r > 8 ? 8 : r < 1 ? 1 : r;
}

static double value(const epb_coll_ctx_t *x, int src, size_t i)
{
    return epb_small_int(x->seed, (uint64_t)src, i, value_range(x->comm->size));
}

static void store(void *buf, epb_dtype_t dt, size_t i, double v)
{
    if (dt == EPB_DT_BF16) ((epb_bf16 *)buf)[i] = epb_f32_to_bf16((float)v);
    else ((float *)buf)[i] = (float)v;
}

static double load(const void *buf, epb_dtype_t dt, size_t i)
{
    return dt == EPB_DT_BF16 ? epb_bf16_to_f32(((const epb_bf16 *)buf)[i]) : ((const float *)buf)[i];
}

/* ---- sizes: the nccl-tests byte conventions ---- */

int epb_coll_check_size(const epb_coll_t *coll, uint64_t bytes, int P, epb_dtype_t dt, epb_err_t *err)
{
    uint64_t es = epb_dtype_size(dt), unit = coll->splits ? (uint64_t)P * es : es;
    if (bytes == 0 || bytes % unit)
        return epb_fail(err, EPB_EUSAGE,
                        "size %llu bytes cannot be split over %d ranks for %s: it must be a positive multiple of "
                        "%llu bytes (%s%llu-byte %s elements)", (unsigned long long)bytes, P, coll->name,
                        (unsigned long long)unit, coll->splits ? "ranks x " : "", (unsigned long long)es,
                        epb_dtype_name(dt));
    return EPB_OK;
}

uint64_t epb_coll_round_size(uint64_t bytes, int P, epb_dtype_t dt)
{
    uint64_t unit = (uint64_t)P * epb_dtype_size(dt);
    return (bytes + unit - 1) / unit * unit;
}

static int allgather_sizes(epb_coll_ctx_t *x, epb_err_t *err)
{
    (void)err;
    x->recv_elems = x->bytes / epb_dtype_size(x->dt); /* size = the gathered buffer */
    x->send_elems = x->recv_elems / (size_t)x->comm->size;
    return EPB_OK;
}

static int reduce_scatter_sizes(epb_coll_ctx_t *x, epb_err_t *err)
{
    (void)err;
    x->send_elems = x->bytes / epb_dtype_size(x->dt); /* size = the full input buffer */
    x->recv_elems = x->send_elems / (size_t)x->comm->size;
    return EPB_OK;
}

static int alltoall_sizes(epb_coll_ctx_t *x, epb_err_t *err)
{
    (void)err;
    x->send_elems = x->recv_elems = x->bytes / epb_dtype_size(x->dt);
    return EPB_OK;
}

static int allreduce_sizes(epb_coll_ctx_t *x, epb_err_t *err)
{
    (void)err;
    x->send_elems = x->recv_elems = x->bytes / epb_dtype_size(x->dt);
    return EPB_OK;
}

void epb_zipf_counts(size_t elems, int P, double S, uint64_t seed, size_t *counts)
{
    int *pos = malloc(sizeof(int) * (size_t)P);
    double *w = malloc(sizeof(double) * (size_t)P), W = 0;
    if (!pos || !w) abort();
    for (int d = 0; d < P; d++) pos[d] = d;
    for (int d = P - 1; d > 0; d--) { /* seeded Fisher-Yates: which destination is hot */
        int j = (int)(epb_hash64(seed, 0x7a1fu, (uint64_t)d) % (uint64_t)(d + 1)), t = pos[d];
        pos[d] = pos[j];
        pos[j] = t;
    }
    for (int d = 0; d < P; d++) W += w[d] = pow(1.0 + pos[d], -S);
    for (int s = 0; s < P; s++) {
        size_t *row = counts + (size_t)s * (size_t)P, given = 0;
        for (int d = 0; d < P; d++) given += row[d] = (size_t)floor((double)elems * w[d] / W);
        /* largest remainders first, ties to the lower destination */
        while (given < elems) {
            int best = 0;
            double bestf = -1;
            for (int d = 0; d < P; d++) {
                double f = (double)elems * w[d] / W - (double)row[d];
                if (f > bestf) { bestf = f; best = d; }
            }
            row[best]++;
            given++;
        }
    }
    free(pos);
    free(w);
}

static int alltoallv_sizes(epb_coll_ctx_t *x, epb_err_t *err)
{
    int P = x->comm->size, me = x->comm->rank;
    size_t es = epb_dtype_size(x->dt), n = x->bytes / es;
    x->counts = malloc(sizeof(size_t) * (size_t)P * (size_t)P);
    x->sc = malloc(sizeof(size_t) * 4 * (size_t)P);
    if (!x->counts || !x->sc) return epb_fail(err, EPB_ESYS, "out of memory for alltoallv counts");
    x->sd = x->sc + P;
    x->rc = x->sd + P;
    x->rd = x->rc + P;
    epb_zipf_counts(n, P, x->imbalance, x->seed, x->counts);
    size_t so = 0, ro = 0, maxmoved = 0;
    for (int p = 0; p < P; p++) {
        x->sc[p] = x->counts[(size_t)me * P + p];
        x->rc[p] = x->counts[(size_t)p * P + me];
        x->sd[p] = so;
        x->rd[p] = ro;
        so += x->sc[p];
        ro += x->rc[p];
    }
    for (int r = 0; r < P; r++) { /* every rank knows the matrix: the busiest rank's traffic */
        size_t sent = 0, recvd = 0;
        for (int p = 0; p < P; p++) {
            sent += x->counts[(size_t)r * P + p];
            recvd += x->counts[(size_t)p * P + r];
        }
        size_t m = sent > recvd ? sent : recvd;
        if (m > maxmoved) maxmoved = m;
    }
    x->send_elems = so;
    x->recv_elems = ro;
    x->moved_bytes = (double)maxmoved * (double)es;
    return EPB_OK;
}

/* ---- init: send[i] = value(me, i) over the whole send buffer ---- */

static void init_linear(epb_coll_ctx_t *x)
{
    for (size_t i = 0; i < x->send_elems; i++) store(x->hsend, x->dt, i, value(x, x->comm->rank, i));
}

/* ---- run ---- */

static int run_allgather(epb_coll_ctx_t *x) { return epb_allgather(x->comm, x->send, x->recv, x->send_elems, x->dt); }
static int run_reduce_scatter(epb_coll_ctx_t *x) { return epb_reduce_scatter(x->comm, x->send, x->recv, x->recv_elems, x->dt); }
static int run_alltoall(epb_coll_ctx_t *x) { return epb_alltoall(x->comm, x->send, x->recv, x->send_elems / (size_t)x->comm->size, x->dt); }
static int run_allreduce(epb_coll_ctx_t *x) { return epb_allreduce(x->comm, x->send, x->recv, x->send_elems, x->dt, EPB_SUM); }
static int run_alltoallv(epb_coll_ctx_t *x) { return epb_alltoallv(x->comm, x->send, x->sc, x->sd, x->recv, x->rc, x->rd, x->dt); }

/* ---- check: count elements that differ from what this rank computes itself ---- */

static long check_allgather(const epb_coll_ctx_t *x)
{
    long bad = 0;
    size_t n = x->send_elems;
    for (int s = 0; s < x->comm->size; s++)
        for (size_t i = 0; i < n; i++) bad += load(x->hrecv, x->dt, (size_t)s * n + i) != value(x, s, i);
    return bad;
}

static long check_sum_of(const epb_coll_ctx_t *x, size_t offset)
{
    long bad = 0;
    for (size_t i = 0; i < x->recv_elems; i++) {
        double want = 0;
        for (int s = 0; s < x->comm->size; s++) want += value(x, s, offset + i);
        bad += load(x->hrecv, x->dt, i) != want;
    }
    return bad;
}

static long check_reduce_scatter(const epb_coll_ctx_t *x) { return check_sum_of(x, (size_t)x->comm->rank * x->recv_elems); }
static long check_allreduce(const epb_coll_ctx_t *x) { return check_sum_of(x, 0); }

static long check_alltoall(const epb_coll_ctx_t *x)
{
    long bad = 0;
    size_t n = x->send_elems / (size_t)x->comm->size, me = (size_t)x->comm->rank;
    for (int s = 0; s < x->comm->size; s++)
        for (size_t i = 0; i < n; i++) bad += load(x->hrecv, x->dt, (size_t)s * n + i) != value(x, s, me * n + i);
    return bad;
}

static long check_alltoallv(const epb_coll_ctx_t *x)
{
    long bad = 0;
    int P = x->comm->size, me = x->comm->rank;
    for (int s = 0; s < P; s++) {
        size_t sdisp = 0; /* where rank s's block for me starts in s's send buffer */
        for (int d = 0; d < me; d++) sdisp += x->counts[(size_t)s * P + d];
        for (size_t j = 0; j < x->rc[s]; j++) bad += load(x->hrecv, x->dt, x->rd[s] + j) != value(x, s, sdisp + j);
    }
    return bad;
}

/* ---- bus bandwidth factors (nccl-tests) ---- */

static double busbw_all_but_own(int P) { return P > 1 ? (double)(P - 1) / P : 0.0; }
static double busbw_ring_allreduce(int P) { return P > 1 ? 2.0 * (P - 1) / P : 0.0; }

const epb_coll_t epb_colls[] = {
    { "allgather", 1, 0, busbw_all_but_own, allgather_sizes, init_linear, run_allgather, check_allgather, NULL },
    { "reduce_scatter", 1, 0, busbw_all_but_own, reduce_scatter_sizes, init_linear, run_reduce_scatter,
      check_reduce_scatter, "sum" },
    { "alltoall", 1, 0, busbw_all_but_own, alltoall_sizes, init_linear, run_alltoall, check_alltoall, NULL },
    { "alltoallv", 0, 1, busbw_all_but_own, alltoallv_sizes, init_linear, run_alltoallv, check_alltoallv, NULL },
    { "allreduce", 0, 0, busbw_ring_allreduce, allreduce_sizes, init_linear, run_allreduce, check_allreduce, "sum" },
};
const int epb_ncolls = sizeof epb_colls / sizeof *epb_colls;

const epb_coll_t *epb_coll_find(const char *name)
{
    for (int i = 0; i < epb_ncolls; i++)
        if (!strcmp(epb_colls[i].name, name)) return &epb_colls[i];
    return NULL;
}

const char *epb_coll_names(char *buf, size_t n)
{
    size_t l = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < epb_ncolls && l < n; i++)
        l += (size_t)snprintf(buf + l, n - l, "%s%s", i ? ", " : "", epb_colls[i].name);
    return buf;
}

int epb_coll_ctx_setup(const epb_coll_t *coll, epb_coll_ctx_t *x, epb_err_t *err)
{
    x->send = x->recv = x->hsend = x->hrecv = NULL;
    x->counts = x->sc = NULL;
    x->moved_bytes = (double)x->bytes;
    int dev = x->comm->mem != EPB_MEM_HOST;
    if (dev && (!x->comm->ops->mem_alloc || !x->comm->ops->mem_copy))
        return epb_fail(err, EPB_EUSAGE, "communicator %s takes device buffers but has no allocator", x->comm->ops->name);
    int rc = epb_coll_check_size(coll, x->bytes, x->comm->size, x->dt, err);
    if (rc == EPB_OK) rc = coll->sizes(x, err);
    if (rc) { epb_coll_ctx_free(x); return rc; }
    size_t es = epb_dtype_size(x->dt);
    /* 64-byte aligned, at least one element, touched once so first-touch page faults stay out of the timing */
    size_t sbytes = ((x->send_elems * es + 63) / 64 + 1) * 64, rbytes = ((x->recv_elems * es + 63) / 64 + 1) * 64;
    x->hsend = aligned_alloc(64, sbytes);
    x->hrecv = aligned_alloc(64, rbytes);
    if (!x->hsend || !x->hrecv) {
        epb_coll_ctx_free(x);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory for %zu-byte %s buffers", x->comm->rank, x->bytes,
                        coll->name);
    }
    memset(x->hrecv, 0xff, x->recv_elems * es); /* NaN / garbage: a collective that writes nothing fails the check */
    coll->init(x);
    if (!dev) {
        x->send = x->hsend;
        x->recv = x->hrecv;
        return EPB_OK;
    }
    epb_comm_t *c = x->comm;
    x->send = c->ops->mem_alloc(c, sbytes);
    x->recv = c->ops->mem_alloc(c, rbytes);
    if (!x->send || !x->recv || c->ops->mem_copy(c, x->send, x->hsend, sbytes, 1) ||
        c->ops->mem_copy(c, x->recv, x->hrecv, rbytes, 1)) {
        epb_coll_ctx_free(x);
        return epb_fail(err, EPB_ESYS, "%s", c->err.msg);
    }
    return EPB_OK;
}

int epb_coll_ctx_fetch(epb_coll_ctx_t *x, epb_err_t *err)
{
    if (x->recv == x->hrecv) return EPB_OK;
    size_t es = epb_dtype_size(x->dt);
    if (x->comm->ops->mem_copy(x->comm, x->hrecv, x->recv, x->recv_elems * es, 0))
        return epb_fail(err, EPB_ESYS, "%s", x->comm->err.msg);
    return EPB_OK;
}

void epb_coll_ctx_free(epb_coll_ctx_t *x)
{
    if (x->send != x->hsend && x->send) x->comm->ops->mem_free(x->comm, x->send);
    if (x->recv != x->hrecv && x->recv) x->comm->ops->mem_free(x->comm, x->recv);
    free(x->hsend);
    free(x->hrecv);
    free(x->counts);
    free(x->sc);
    x->send = x->recv = x->hsend = x->hrecv = NULL;
    x->counts = x->sc = NULL;
}
