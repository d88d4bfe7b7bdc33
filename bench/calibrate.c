/* bench --calibrate: this machine's ceilings, as mode=peak rows: memcpy bandwidth and BLAS sgemm FLOP/s.
 * Every rank measures at once, so with --ranks N the ceiling is what each of N concurrent ranks gets. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "epb_config.h"

#if EPB_HAVE_BLAS
#include <cblas.h>
#endif

typedef int (*kernel_fn)(void *arg);

typedef struct {
    void *dst;
    const void *src;
    size_t bytes;
} copy_arg_t;

static int do_copy(void *p)
{
    copy_arg_t *a = p;
    memcpy(a->dst, a->src, a->bytes);
    return 0;
}

/* Times `iters` runs of fn after `warmup`, max over ranks, into st. */
static int time_kernel(bench_ctx_t *b, const char *phase, kernel_fn fn, void *arg, int iters, int warmup,
                       epb_stats_t *st)
{
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (!t) return EPB_ESYS;
    for (int i = 0; i < warmup; i++) fn(arg);
    int rc = EPB_OK;
    for (int i = 0; i < iters && !rc; i++) {
        rc = epb_barrier(b->ctl);
        double t0 = epb_now_us();
        fn(arg);
        bench_maybe_slow(b, phase, epb_now_us() - t0);
        t[i] = epb_now_us() - t0;
    }
    if (!rc) rc = bench_reduce_times(b, t, iters, st);
    free(t);
    return rc;
}

static void fill_row(epb_row_t *row, const epb_row_t *base, const char *op, const epb_stats_t *st, int iters)
{
    *row = *base;
    row->mode = "peak";
    row->op = op;
    row->phase = "total";
    row->kind = "compute";
    row->dtype = "f32";
    row->iters = iters;
    row->t_min_us = st->min;
    row->t_med_us = st->med;
    row->t_mean_us = st->mean;
    row->t_p95_us = st->p95;
    row->t_max_us = st->max;
}

#if EPB_HAVE_BLAS
typedef struct {
    int N;
    float *A, *B, *C;
} gemm_arg_t;

static int do_gemm(void *p)
{
    gemm_arg_t *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->N, g->N, g->N, 1.0f, g->A, g->N, g->B, g->N, 0.0f,
                g->C, g->N);
    return 0;
}
#endif

int bench_run_calibrate(bench_ctx_t *b, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    epb_row_t rows[2];
    int nrows = 0, rc;
    epb_stats_t st;
    bench_watchdog_mode(b->wd, "--calibrate");
    /* memcpy: well beyond the last-level cache unless -e says otherwise */
    size_t bytes = o->max_given ? o->max_bytes : (size_t)256 << 20;
    copy_arg_t c = { malloc(bytes), malloc(bytes), bytes };
    if (!c.dst || !c.src) {
        free(c.dst);
        free((void *)c.src);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory for two %zu-byte memcpy buffers", b->ctl->rank, bytes);
    }
    memset(c.dst, 0, bytes);
    memset((void *)c.src, 1, bytes);
    int iters = o->iters < 5 ? o->iters : o->iters / 2; /* 256 MiB copies: fewer are enough */
    rc = time_kernel(b, "total", do_copy, &c, iters, o->warmup > 2 ? 2 : o->warmup, &st);
    free(c.dst);
    free((void *)c.src);
    if (rc) return epb_fail(err, rc, "%s", b->ctl->err.msg);
    fill_row(&rows[nrows], &b->base, "memcpy", &st, iters);
    rows[nrows].bytes = bytes;
    rows[nrows].algbw_gbps = rows[nrows].busbw_gbps = epb_gbps((double)bytes, st.med);
    rows[nrows].peak_mem_bytes = 2 * bytes;
    rows[nrows].check = "skipped";
    nrows++;
    if (b->ctl->rank == 0) {
        printf("# epbench calibrate | %d rank%s on %s | %s\n", b->ctl->size, b->ctl->size > 1 ? "s" : "",
               b->base.host, b->base.device_name);
        printf("  memcpy %zu MiB: median %.1f us, %.2f GB/s per rank\n", bytes >> 20, st.med, rows[0].algbw_gbps);
    }
#if EPB_HAVE_BLAS
    gemm_arg_t g = { 2048, NULL, NULL, NULL };
    size_t n2 = (size_t)g.N * (size_t)g.N;
    g.A = malloc(n2 * sizeof(float));
    g.B = malloc(n2 * sizeof(float));
    g.C = malloc(n2 * sizeof(float));
    if (!g.A || !g.B || !g.C) rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory for sgemm", b->ctl->rank);
    for (size_t i = 0; !rc && i < n2; i++) {
        g.A[i] = (float)epb_uniform(o->seed, 1, i);
        g.B[i] = (float)epb_uniform(o->seed, 2, i);
    }
    int giters = o->iters < 10 ? o->iters : 10;
    if (!rc && (rc = time_kernel(b, "total", do_gemm, &g, giters, 1, &st))) epb_fail(err, rc, "%s", b->ctl->err.msg);
    free(g.A);
    free(g.B);
    free(g.C);
    if (rc) return rc;
    double gflop = 2.0 * g.N * g.N * (double)g.N / 1e9;
    fill_row(&rows[nrows], &b->base, "gemm", &st, giters);
    rows[nrows].tokens = rows[nrows].hidden = rows[nrows].ffn = g.N; /* M, K, N */
    rows[nrows].gflop = gflop;
    rows[nrows].tflops = gflop / (st.med * 1e-6) / 1e3;
    rows[nrows].peak_mem_bytes = 3 * n2 * sizeof(float);
    rows[nrows].check = "skipped";
    if (b->ctl->rank == 0)
        printf("  sgemm %dx%dx%d: median %.1f us, %.1f GFLOP/s per rank (OpenBLAS %d thread%s, core %s)\n", g.N, g.N,
               g.N, st.med, rows[nrows].tflops * 1e3, openblas_get_num_threads(),
               openblas_get_num_threads() > 1 ? "s" : "", openblas_get_corename());
    nrows++;
#else
    if (b->ctl->rank == 0) fprintf(stderr, "bench: built without BLAS: the sgemm ceiling is not measured\n");
#endif
    if ((rc = bench_write_rows(b, rows, (size_t)nrows, err))) return rc;
    if (b->ctl->rank == 0) printf("# results appended to %s\n", o->csv);
    return EPB_OK;
}
