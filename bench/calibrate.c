/* bench --calibrate: what the projection (report --project, docs/METHOD.md) needs of this machine, as mode=peak
 * rows: the copy bandwidth, the GEMM rate by rows M (K = D, N = F: --hidden, --ffn, 1024 each by default), the
 * experts' own ops by rows per expert at D and F, and each
 * collective's time by size per communicator level (intra: the ranks of one node; inter: one rank per node, every
 * node's such communicator at once, as a job's NICs are shared). Every rank measures at once, so with --ranks N a
 * ceiling is what each of N concurrent ranks gets. The compute runs through the moe library's backend: cpu
 * (OpenBLAS with the BLAS threads a moe run would use: params threads=T;rpn=R) or, with --device cuda, cuda
 * (cuBLAS, device memory, --dtype; the collectives on the run's device communicator, NCCL where it is built). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "epb_config.h"
#include "moe.h" /* epb_blas_threads */

#if EPB_HAVE_BLAS
#include <cblas.h>
#endif

typedef int (*kernel_fn)(void *arg);

/* Times `iters` runs of fn after `warmup`, max over ranks, into st. fn runs the work to its end (the backend's
 * sync included). A rank whose fn fails goes on through the barriers and fails after them with the others. */
static int time_kernel(bench_ctx_t *b, const char *phase, kernel_fn fn, void *arg, int iters, int warmup,
                       epb_stats_t *st)
{
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (!t) return EPB_ESYS;
    int32_t bad = 0;
    for (int i = 0; i < warmup; i++) bad |= fn(arg) != EPB_OK;
    int rc = EPB_OK;
    for (int i = 0; i < iters && !rc; i++) {
        rc = epb_barrier(b->ctl);
        double t0 = epb_now_us();
        bad |= fn(arg) != EPB_OK;
        bench_maybe_slow(b, phase, epb_now_us() - t0);
        t[i] = epb_now_us() - t0;
    }
    if (!rc) rc = epb_allreduce(b->ctl, &bad, &bad, 1, EPB_DT_I32, EPB_MAX);
    if (!rc && bad) rc = EPB_ESYS;
    if (!rc) rc = bench_reduce_times(b, t, iters, st);
    free(t);
    return rc;
}

static void fill_row(epb_row_t *row, const epb_row_t *base, const char *op, const char *dtype, const epb_stats_t *st,
                     int iters)
{
    *row = *base;
    row->params = "";
    row->mode = "peak";
    row->op = op;
    row->phase = "total";
    row->kind = "compute";
    row->dtype = dtype;
    row->iters = iters;
    row->t_min_us = st->min;
    row->t_med_us = st->med;
    row->t_mean_us = st->mean;
    row->t_p95_us = st->p95;
    row->t_max_us = st->max;
}

#if EPB_HAVE_BLAS
/* The compute ceilings go through the moe library's backend (moe/ops.h): cpu (OpenBLAS, host memory) or cuda
 * (cuBLAS, device memory, --device cuda), in the backend's activation dtype; every timed call ends with its sync. */
static const char *be_dtype(const moe_backend_t *be) { return moe_dtype_name(be->dtype); }

/* n values U(-scale/2, scale/2) of stream s into backend memory p */
static int fill_uniform(moe_backend_t *be, void *p, size_t n, uint64_t seed, uint64_t s, float scale)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return epb_fail(&be->err, EPB_ESYS, "out of memory");
    for (size_t i = 0; i < n; i++) h[i] = scale * (float)(epb_uniform(seed, s, i) - 0.5);
    int rc = moe_act_to_backend(be, p, h, n);
    free(h);
    return rc;
}

typedef struct {
    moe_backend_t *be;
    void *dst;
    const void *src;
    size_t bytes;
} copy_arg_t;

static int do_copy(void *p)
{
    copy_arg_t *a = p;
    int rc = a->be->ops->copy(a->be, a->dst, a->src, a->bytes);
    return rc ? rc : a->be->ops->sync(a->be);
}

/* memcpy: a copy well beyond the last-level cache unless -e says otherwise (device to device with --device cuda) */
static int calibrate_copy(bench_ctx_t *b, moe_backend_t *be, epb_row_t *row, char *params, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    size_t bytes = o->max_given ? o->max_bytes : (size_t)256 << 20;
    copy_arg_t c = { be, be->ops->alloc(be, bytes), be->ops->alloc(be, bytes), bytes };
    int rc = c.dst && c.src ? EPB_OK : EPB_ESYS;
    if (rc) epb_fail(err, rc, "rank %d: out of memory for two %zu-byte copy buffers", b->ctl->rank, bytes);
    if (!rc) rc = be->ops->zero(be, c.dst, bytes) || be->ops->zero(be, (void *)c.src, bytes) ? EPB_ESYS : EPB_OK;
    int iters = o->iters < 5 ? o->iters : o->iters / 2; /* 256 MiB copies: fewer are enough */
    epb_stats_t st;
    if (!rc && (rc = time_kernel(b, "total", do_copy, &c, iters, o->warmup > 2 ? 2 : o->warmup, &st)))
        epb_fail(err, rc, "%s", be->err.msg[0] ? be->err.msg : b->ctl->err.msg);
    be->ops->free(be, c.dst);
    be->ops->free(be, (void *)c.src);
    if (rc) return rc;
    fill_row(row, &b->base, "memcpy", be_dtype(be), &st, iters);
    row->params = params;
    row->bytes = bytes;
    row->algbw_gbps = row->busbw_gbps = epb_gbps((double)bytes, st.med);
    row->peak_mem_bytes = 2 * bytes;
    row->check = "skipped";
    if (b->ctl->rank == 0)
        printf("  memcpy %zu MiB%s: median %.1f us, %.2f GB/s per rank\n", bytes >> 20,
               be->on_device ? " (device to device)" : "", st.med, row->algbw_gbps);
    return EPB_OK;
}

typedef struct {
    moe_backend_t *be;
    int M, K, N;
    void *A, *B, *C;
} gemm_arg_t;

static int do_gemm(void *p)
{
    gemm_arg_t *g = p;
    int rc = g->be->ops->gemm(g->be, g->C, g->A, g->B, g->M, g->N, g->K);
    return rc ? rc : g->be->ops->sync(g->be);
}

/* The GEMM curve: C (M,N) = A (M,K) B (K,N) at K = D, N = F (--hidden, --ffn; 1024 each by default) for M from 4
 * to 1024 rows (the rows an expert gets), each M timed about 0.2 s of FLOPs at 50 GFLOP/s, at least 2 and at most
 * -n iterations. */
static const int gemm_m[] = { 4, 16, 64, 256, 1024 };
#define CAL_SHAPE 1024
#define NGEMM ((int)(sizeof gemm_m / sizeof *gemm_m))
static long cal_D(const bench_opts_t *o) { return o->cal_hidden > 0 ? o->cal_hidden : CAL_SHAPE; }
static long cal_F(const bench_opts_t *o) { return o->cal_ffn > 0 ? o->cal_ffn : CAL_SHAPE; }

static int calibrate_gemm(bench_ctx_t *b, moe_backend_t *be, epb_row_t *rows, int *nrows, char *params, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    int rc = EPB_OK, Mmax = gemm_m[NGEMM - 1];
    gemm_arg_t g = { be, 0, (int)cal_D(o), (int)cal_F(o), NULL, NULL, NULL };
    size_t na = (size_t)Mmax * (size_t)(g.K > g.N ? g.K : g.N), nb = (size_t)g.K * (size_t)g.N, es = moe_dtype_size(be->dtype);
    g.A = be->ops->alloc(be, na * es);
    g.B = be->ops->alloc(be, nb * es);
    g.C = be->ops->alloc(be, na * es);
    if (!g.A || !g.B || !g.C) rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory for the GEMM", b->ctl->rank);
    if (!rc && (fill_uniform(be, g.A, na, o->seed, 1, 2.0f) || fill_uniform(be, g.B, nb, o->seed, 2, 2.0f)))
        rc = epb_fail(err, EPB_ESYS, "rank %d: %s", b->ctl->rank, be->err.msg);
    if (!rc && b->ctl->rank == 0) {
        if (be->on_device)
            printf("  GEMM M x %d x %d (%s, %s):\n", g.K, g.N, b->base.device_name, be_dtype(be));
        else
            printf("  sgemm M x %d x %d (OpenBLAS %d thread%s per rank, %d rank%s per node, core %s):\n", g.K,
                   g.N, openblas_get_num_threads(), openblas_get_num_threads() > 1 ? "s" : "",
                   b->ctl->local_size, b->ctl->local_size > 1 ? "s" : "", openblas_get_corename());
    }
    for (int i = 0; !rc && i < NGEMM; i++) {
        epb_stats_t st;
        g.M = gemm_m[i];
        double gflop = 2.0 * g.M * g.K * (double)g.N / 1e9;
        int giters = (int)(10.0 / gflop); /* ~0.2 s at 50 GFLOP/s */
        giters = giters < 2 ? 2 : giters > o->iters ? o->iters : giters;
        if ((rc = time_kernel(b, "total", do_gemm, &g, giters, 1, &st))) {
            epb_fail(err, rc, "%s", be->err.msg[0] ? be->err.msg : b->ctl->err.msg);
            break;
        }
        epb_row_t *r = &rows[(*nrows)++];
        fill_row(r, &b->base, "gemm", be_dtype(be), &st, giters);
        r->params = params;
        r->tokens = g.M; /* M, K, N */
        r->hidden = g.K;
        r->ffn = g.N;
        r->gflop = gflop;
        r->tflops = gflop / (st.med * 1e-6) / 1e3;
        r->peak_mem_bytes = (na * 2 + nb) * es;
        r->check = "skipped";
        if (b->ctl->rank == 0) printf("    M=%-5d median %10.1f us, %9.1f GFLOP/s per rank\n", g.M, st.med, r->tflops * 1e3);
    }
    be->ops->free(be, g.A);
    be->ops->free(be, g.B);
    be->ops->free(be, g.C);
    return rc;
}

/* The experts' own ops (moe/ops.h experts_forward, experts_backward: SwiGLU's three GEMMs forward and six backward,
 * the transposed ones included, and their elementwise work; on cuda the grouped GEMMs a moe step runs) at M rows per
 * expert, D and F as the GEMM's K and N, over XCAL_E experts (at most XCAL_ROWS rows in all: 2 experts at M = 1024) whose weights
 * are each its own (read from memory as a moe step reads them, not a hot cache's), every rank at once. The
 * projection takes their FLOP rate at M over the GEMM ceiling as the experts' efficiency (docs/METHOD.md). */
#define XCAL_E 4
#define XCAL_ROWS 2048
typedef struct {
    moe_backend_t *be;
    void *out, *a1, *a3, *s, *h, *xp, *w1, *w3, *w2, *dxp, *dw1, *dw3, *dw2, *work, *dout;
    int64_t off[XCAL_E + 1];
    int El;
    long D, F;
} xcal_t;

static int do_experts_fwd(void *p)
{
    xcal_t *x = p;
    int rc = x->be->ops->experts_forward(x->be, x->out, x->a1, x->a3, x->s, x->h, x->xp, x->w1, x->w3, x->w2, x->off,
                                         x->El, x->D, x->F);
    return rc ? rc : x->be->ops->sync(x->be);
}

static int do_experts_bwd(void *p)
{
    xcal_t *x = p;
    int rc = x->be->ops->experts_backward(x->be, x->dxp, x->dw1, x->dw3, x->dw2, x->work, x->dout, x->a1, x->a3, x->s,
                                          x->xp, x->w1, x->w3, x->w2, x->off, x->El, x->D, x->F);
    return rc ? rc : x->be->ops->sync(x->be);
}

static int calibrate_experts(bench_ctx_t *b, moe_backend_t *be, epb_row_t *rows, int *nrows, char *params,
                             epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    const long D = cal_D(o), F = cal_F(o), R = XCAL_ROWS;
    const size_t es = moe_dtype_size(be->dtype);
    xcal_t x = { .be = be, .D = D, .F = F };
    int rc = EPB_OK;
    void **act[] = { &x.out, &x.xp, &x.dxp, &x.dout }, **hid[] = { &x.a1, &x.a3, &x.s, &x.h },
         **wts[] = { &x.w1, &x.w3, &x.w2, &x.dw1, &x.dw3, &x.dw2 };
    for (size_t i = 0; !rc && i < sizeof act / sizeof *act; i++)
        if (!(*act[i] = be->ops->alloc(be, (size_t)(R * D) * es))) rc = EPB_ESYS;
    for (size_t i = 0; !rc && i < sizeof hid / sizeof *hid; i++)
        if (!(*hid[i] = be->ops->alloc(be, (size_t)(R * F) * es))) rc = EPB_ESYS;
    for (size_t i = 0; !rc && i < sizeof wts / sizeof *wts; i++)
        if (!(*wts[i] = be->ops->alloc(be, (size_t)(XCAL_E * D * F) * es)) || be->ops->zero(be, *wts[i], (size_t)(XCAL_E * D * F) * es))
            rc = EPB_ESYS;
    if (!rc && !(x.work = be->ops->alloc(be, (size_t)(2 * R * F) * es))) rc = EPB_ESYS;
    /* inputs small enough that repeated accumulation into dw stays far from overflow */
    for (int t = 0; !rc && t < 3; t++) rc = fill_uniform(be, *wts[t], (size_t)(XCAL_E * D * F), o->seed, 10 + (uint64_t)t, 0.03f);
    if (!rc) rc = fill_uniform(be, x.xp, (size_t)(R * D), o->seed, 20, 1.0f);
    if (!rc) rc = fill_uniform(be, x.dout, (size_t)(R * D), o->seed, 21, 1e-3f);
    if (rc) epb_fail(err, EPB_ESYS, "rank %d: the experts' calibration: %s", b->ctl->rank,
                     be->err.msg[0] ? be->err.msg : "out of memory");
    for (int i = 0; !rc && i < NGEMM; i++) {
        int M = gemm_m[i];
        x.El = M * XCAL_E > XCAL_ROWS ? XCAL_ROWS / M : XCAL_E;
        for (int a = 0; a <= x.El; a++) x.off[a] = (int64_t)a * M;
        for (int bwd = 0; !rc && bwd < 2; bwd++) {
            epb_stats_t st;
            double gflop = (bwd ? 12.0 : 6.0) * M * (double)D * F * x.El / 1e9;
            int it = (int)(10.0 / gflop);
            it = it < 2 ? 2 : it > o->iters ? o->iters : it;
            /* the forward runs before the timed backward (it writes what the backward reads) */
            if (bwd && (rc = do_experts_fwd(&x))) break;
            if ((rc = time_kernel(b, "total", bwd ? do_experts_bwd : do_experts_fwd, &x, it, 1, &st))) break;
            epb_row_t *r = &rows[(*nrows)++];
            fill_row(r, &b->base, bwd ? "experts_bwd" : "experts_fwd", be_dtype(be), &st, it);
            r->params = params;
            r->tokens = M; /* rows per expert; experts, D, F */
            r->experts = x.El;
            r->hidden = D;
            r->ffn = F;
            r->gflop = gflop;
            r->tflops = gflop / (st.med * 1e-6) / 1e3;
            r->peak_mem_bytes = be->peak_bytes;
            r->check = "skipped";
            if (b->ctl->rank == 0)
                printf("    %s M=%-5d median %10.1f us, %9.1f GFLOP/s per rank\n", bwd ? "backward" : "forward ", M,
                       st.med, r->tflops * 1e3);
        }
        if (rc) epb_fail(err, rc, "%s", be->err.msg[0] ? be->err.msg : b->ctl->err.msg);
    }
    for (size_t i = 0; i < sizeof act / sizeof *act; i++) be->ops->free(be, *act[i]);
    for (size_t i = 0; i < sizeof hid / sizeof *hid; i++) be->ops->free(be, *hid[i]);
    for (size_t i = 0; i < sizeof wts / sizeof *wts; i++) be->ops->free(be, *wts[i]);
    be->ops->free(be, x.work);
    return rc;
}
#endif

/* ---- collectives per communicator level ---- */

static const char *const cal_colls[] = { "alltoall", "allgather", "reduce_scatter", "allreduce" };
#define NCCOLL 4
/* to 128 MiB: a collective's rate can fall off a cliff above the sizes a small run uses (Open MPI 4.1's allreduce
 * and reduce_scatter on 2 shared-memory ranks of the CI VM: 7 GB/s at 8 MiB, 0.4 GB/s from 32 MiB), and the
 * projection extrapolates beyond the last point. -e caps it (the smallest size is always measured). */
static const uint64_t cal_sizes[] = { 8 << 10, 128 << 10, 1 << 20, 8 << 20, 32 << 20, 128 << 20 };
#define NCSIZE 6
#define CAL_BIG (32 << 20) /* from this size on, at most CAL_BIG_ITERS timed calls */
#define CAL_BIG_ITERS 5
#define NCAL_ROWS (1 + 3 * NGEMM_MAX + 2 * NCCOLL * NCSIZE)
#define NGEMM_MAX 8

/* Times every collective of cal_colls at every size on communicator c (NULL on a rank outside the level's
 * communicators: it still joins the barriers and the reductions over all ranks). level names it in params. */
static int calibrate_level(bench_ctx_t *b, epb_comm_t *c, int csize, const char *level, int lnodes, epb_row_t *rows,
                           int *nrows, char params[][48], epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    int rc = EPB_OK;
    int iters = o->iters;
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (!t) return epb_fail(err, EPB_ESYS, "out of memory");
    for (int ci = 0; !rc && ci < NCCOLL; ci++) {
        const epb_coll_t *coll = epb_coll_find(cal_colls[ci]);
        for (int si = 0; !rc && si < NCSIZE; si++) {
            if (si > 0 && o->max_given && cal_sizes[si] > o->max_bytes) break;
            int it = cal_sizes[si] >= CAL_BIG && iters > CAL_BIG_ITERS ? CAL_BIG_ITERS : iters;
            uint64_t bytes = epb_coll_round_size(cal_sizes[si], csize, EPB_DT_F32);
            epb_coll_ctx_t x = { .comm = c, .dt = EPB_DT_F32, .seed = o->seed, .bytes = bytes };
            bench_watchdog_mode(b->wd, "--calibrate %s %s %llu", level, coll->name, (unsigned long long)bytes);
            if (c && (rc = epb_coll_ctx_setup(coll, &x, err))) break;
            for (int i = 0; c && !rc && i < (o->warmup < 2 ? o->warmup : 2); i++) rc = coll->run(&x);
            for (int i = 0; i < it && !rc; i++) {
                rc = epb_barrier(b->ctl);
                double t0 = epb_now_us();
                if (c && !rc) rc = coll->run(&x);
                if (c && !rc) rc = epb_sync(c);
                t[i] = epb_now_us() - t0;
            }
            if (rc) epb_fail(err, rc, "%s", c && c->err.msg[0] ? c->err.msg : b->ctl->err.msg);
            epb_stats_t st;
            if (!rc && (rc = bench_reduce_times(b, t, it, &st))) epb_fail(err, rc, "%s", b->ctl->err.msg);
            epb_coll_ctx_free(&x);
            if (rc) break;
            epb_row_t *r = &rows[(*nrows)++];
            fill_row(r, &b->base, coll->name, "f32", &st, it);
            snprintf(params[*nrows - 1], 48, "level=%s;rpn=%d", level, b->ctl->local_size);
            r->params = params[*nrows - 1];
            r->kind = "comm";
            r->coll = coll->name;
            r->ranks = csize;
            r->nodes = lnodes;
            r->bytes = bytes;
            r->algbw_gbps = epb_gbps((double)bytes, st.med);
            r->busbw_gbps = r->algbw_gbps * coll->busbw_factor(csize);
            r->peak_mem_bytes = 0;
            r->check = "skipped";
            if (b->ctl->rank == 0)
                printf("    %-5s %-14s %2d ranks %8llu bytes: median %9.1f us, busbw %7.3f GB/s\n", level, coll->name,
                       csize, (unsigned long long)bytes, st.med, r->busbw_gbps);
        }
    }
    free(t);
    return rc;
}

/* intra: the node's ranks (the whole job on one node); inter (nodes > 1): the ranks of one local index across
 * the nodes, all such communicators at once. A level with one rank is not measured. */
static int calibrate_colls(bench_ctx_t *b, epb_row_t *rows, int *nrows, char params[][48], epb_err_t *err)
{
    epb_comm_t *d = b->data, *node = NULL, *cross = NULL;
    int rc = EPB_OK, nodes = b->base.nodes;
    if (d->size < 2) return EPB_OK;
    if (b->ctl->rank == 0) printf("  collectives (f32, every rank of a level at once):\n");
    if (nodes <= 1) return calibrate_level(b, d, d->size, "intra", 1, rows, nrows, params, err);
    if ((rc = epb_comm_split_node(d, &node)) || (rc = epb_comm_split(d, b->ctl->local_rank, d->rank, &cross)))
        rc = epb_fail(err, rc, "%s", d->err.msg);
    /* every rank runs both levels' loops (the barriers are the job's); a level is measured where it has 2 ranks */
    int lsize = node ? node->size : 1, xsize = cross ? cross->size : 1, lmax = lsize, xmin = xsize;
    if (!rc && (rc = epb_allreduce(b->ctl, &lmax, &lmax, 1, EPB_DT_I32, EPB_MAX))) epb_fail(err, rc, "%s", b->ctl->err.msg);
    if (!rc && (rc = epb_allreduce(b->ctl, &xmin, &xmin, 1, EPB_DT_I32, EPB_MIN))) epb_fail(err, rc, "%s", b->ctl->err.msg);
    if (!rc && lmax > 1 && lmax == lsize)
        rc = calibrate_level(b, node, lsize, "intra", 1, rows, nrows, params, err);
    else if (!rc && lmax > 1) /* nodes of unequal size: measure none rather than mix */
        rc = epb_fail(err, EPB_EUSAGE, "--calibrate: nodes with different rank counts (%d and %d)", lsize, lmax);
    if (!rc && xmin > 1) rc = calibrate_level(b, cross, xsize, "inter", nodes, rows, nrows, params, err);
    if (cross) epb_comm_destroy(cross);
    if (node) epb_comm_destroy(node);
    return rc;
}

int bench_run_calibrate(bench_ctx_t *b, epb_err_t *err)
{
    epb_row_t rows[NCAL_ROWS];
    char params[NCAL_ROWS][48];
    char gparams[48];
    int nrows = 0, rc = EPB_OK;
    bench_watchdog_mode(b->wd, "--calibrate");
    snprintf(gparams, sizeof gparams, "threads=%d;rpn=%d", epb_blas_threads(), b->ctl->local_size);
    if (b->ctl->rank == 0)
        printf("# epbench calibrate | %d rank%s on %s | %s\n", b->ctl->size, b->ctl->size > 1 ? "s" : "",
               b->base.host, b->base.device_name);
#if EPB_HAVE_BLAS
    moe_backend_t *be = NULL;
    if ((rc = bench_backend_create(b, &be, err))) return rc;
    if (!(rc = calibrate_copy(b, be, &rows[nrows], gparams, err))) nrows++;
    if (!rc) rc = calibrate_gemm(b, be, rows, &nrows, gparams, err);
    if (!rc && b->ctl->rank == 0)
        printf("  the experts' SwiGLU ops, %d experts x M rows each (at most %d rows), D = %ld, F = %ld (moe/ops.h, "
               "every rank at once):\n", XCAL_E, XCAL_ROWS, cal_D(b->o), cal_F(b->o));
    if (!rc) rc = calibrate_experts(b, be, rows, &nrows, gparams, err);
    moe_backend_destroy(be);
    if (rc) return rc;
#else
    if (b->ctl->rank == 0) fprintf(stderr, "bench: built without BLAS: no moe library, no compute ceilings measured\n");
#endif
    if ((rc = calibrate_colls(b, rows, &nrows, params, err))) return rc;
    if ((rc = bench_write_rows(b, rows, (size_t)nrows, err))) return rc;
    char shown[4 * PATH_MAX];
    if (b->ctl->rank == 0) printf("# results appended to %s\n", epb_printable(b->o->csv, shown, sizeof shown));
    return EPB_OK;
}
