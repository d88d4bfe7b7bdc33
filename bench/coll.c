/* bench --coll: the collective microbenchmark harness. It never names a collective: the epb_colls table
 * does (nccl-tests style). */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

int bench_coll_plan(const bench_opts_t *o, int P, uint64_t *sizes, int max, int *n, epb_err_t *err)
{
    uint64_t lo = o->min_bytes;
    if (!o->min_given) lo = epb_coll_round_size(lo, P, o->dtype); /* default sizes split evenly whatever P */
    *n = 0;
    for (uint64_t s = lo; s <= o->max_bytes && *n < max; s *= (uint64_t)o->factor) {
        sizes[(*n)++] = s;
        if (s > UINT64_MAX / (uint64_t)o->factor) break;
    }
    for (int c = 0; c < epb_ncolls; c++) {
        if (strcmp(o->coll, "all") && strcmp(o->coll, epb_colls[c].name)) continue;
        epb_err_t e;
        for (int i = 0; i < *n; i++)
            if (epb_coll_check_size(&epb_colls[c], sizes[i], P, o->dtype, &e))
                return epb_fail(err, EPB_EUSAGE, "%s: %s", i ? "-b/-e/-f sweep" : "-b/--min-bytes", e.msg);
    }
    return EPB_OK;
}

static void print_header(const bench_ctx_t *b)
{
    const epb_row_t *r = &b->base;
    printf("# epbench coll | %d ranks on %d node%s (%s) | comm %s | %s | %s | iters %d warmup %d | check %s\n",
           r->ranks, r->nodes, r->nodes > 1 ? "s" : "", r->host, r->backend, r->device_name, r->dtype,
           b->o->iters, b->o->warmup, b->o->check ? "on" : "off");
    printf("# %-14s %10s %12s %9s %9s %9s %9s %9s %9s %9s %7s\n", "collective", "size", "count", "min_us",
           "med_us", "mean_us", "p95_us", "max_us", "algbw", "busbw", "wrong");
    fflush(stdout);
}

static int run_one(bench_ctx_t *b, const epb_coll_t *coll, uint64_t bytes, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    epb_coll_ctx_t x = { .comm = b->data, .dt = o->dtype, .seed = o->seed, .imbalance = o->imbalance,
                         .bytes = bytes };
    char sz[32];
    epb_fmt_size(bytes, sz, sizeof sz);
    bench_watchdog_mode(b->wd, "--coll %s %s", coll->name, sz);
    int rc = epb_coll_ctx_setup(coll, &x, err);
    double *t = malloc(sizeof(double) * 3 * (size_t)o->iters), *arr = t + o->iters, *wait = arr + o->iters;
    if (rc || !t) {
        free(t);
        epb_coll_ctx_free(&x);
        return rc ? rc : epb_fail(err, EPB_ESYS, "out of memory");
    }
    for (int i = 0; i < o->warmup && !rc; i++) rc = coll->run(&x);
    if (!rc) rc = epb_sync(b->data);
    for (int i = 0; i < o->iters && !rc; i++) {
        rc = epb_barrier(b->ctl);
        double t0 = epb_now_us();
        arr[i] = t0 + b->clock_offset_us;
        if (!rc) rc = coll->run(&x);
        if (!rc) rc = epb_sync(b->data);
        bench_maybe_slow(b, "total", epb_now_us() - t0);
        t[i] = epb_now_us() - t0;
    }
    if (rc) { /* the failing communicator says which rank and call */
        epb_fail(err, rc, "%s", b->data->err.msg[0] ? b->data->err.msg : b->ctl->err.msg);
        goto out;
    }
    if (o->check && (rc = epb_coll_ctx_fetch(&x, err))) goto out;
    long wrong = o->check ? coll->check(&x) : 0;
    int64_t wrong_all = wrong;
    epb_stats_t st, sw;
    if ((rc = epb_allreduce(b->ctl, &wrong_all, &wrong_all, 1, EPB_DT_I64, EPB_SUM))) {
        epb_fail(err, rc, "%s", b->ctl->err.msg);
        goto out;
    }
    if ((rc = bench_waits(b, arr, wait, (size_t)o->iters, err)) || (rc = bench_critical(b, t, wait, (size_t)o->iters, err)))
        goto out;
    epb_stats(t, (size_t)o->iters, &st);
    epb_stats(wait, (size_t)o->iters, &sw);
    epb_row_t row = b->base;
    char params[64] = "";
    if (coll->uneven) snprintf(params, sizeof params, "imbalance=%g", o->imbalance);
    row.mode = "coll";
    row.op = coll->name;
    row.phase = "total";
    row.kind = "comm";
    row.coll = coll->name;
    row.params = params;
    row.wait_us = sw.med;
    row.bytes = bytes;
    row.t_min_us = st.min;
    row.t_med_us = st.med;
    row.t_mean_us = st.mean;
    row.t_p95_us = st.p95;
    row.t_max_us = st.max;
    row.algbw_gbps = epb_gbps(x.moved_bytes, st.med);
    row.busbw_gbps = row.algbw_gbps * coll->busbw_factor(b->ctl->size);
    row.peak_mem_bytes = (uint64_t)((x.send_elems + x.recv_elems) * epb_dtype_size(o->dtype));
    if (o->check && wrong_all) {
        row.check = "fail";
        b->failed_checks++;
    }
    if (b->ctl->rank == 0) {
        printf("  %-14s %10s %12zu %9.2f %9.2f %9.2f %9.2f %9.2f %9.3f %9.3f %7s\n", coll->name, sz,
               bytes / epb_dtype_size(o->dtype), st.min, st.med, st.mean, st.p95, st.max, row.algbw_gbps,
               row.busbw_gbps, o->check ? (wrong_all ? "FAIL" : "0") : "-");
        if (wrong_all) printf("# %s %s: %lld wrong elements summed over ranks\n", coll->name, sz, (long long)wrong_all);
        fflush(stdout);
    }
    rc = bench_write_rows(b, &row, 1, err);
out:
    free(t);
    epb_coll_ctx_free(&x);
    return rc;
}

int bench_run_coll(bench_ctx_t *b, epb_err_t *err)
{
    uint64_t sizes[64];
    int n, rc = bench_coll_plan(b->o, b->ctl->size, sizes, 64, &n, err);
    if (rc) return rc;
    if (b->ctl->rank == 0) print_header(b);
    for (int c = 0; c < epb_ncolls; c++) {
        if (strcmp(b->o->coll, "all") && strcmp(b->o->coll, epb_colls[c].name)) continue;
        for (int i = 0; i < n; i++)
            if ((rc = run_one(b, &epb_colls[c], sizes[i], err))) return rc;
    }
    if (b->ctl->rank == 0) {
        printf("# results appended to %s\n", b->o->csv);
        if (b->failed_checks) printf("# %d size(s) FAILED the check\n", b->failed_checks);
    }
    return b->failed_checks ? EPB_ECHECK : EPB_OK;
}
