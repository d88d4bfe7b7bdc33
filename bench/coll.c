/* bench --coll: the collective microbenchmark harness. It never names a collective: the epb_colls table
 * does (nccl-tests style). Rank 0 prints nccl-tests' summary lines and, with -J, writes nccl-tests' JSON
 * (version 2 keys) through jansson. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* What the summary and the JSON need of a sweep (rank 0). */
typedef struct {
    double busbw_sum;
    int nsizes;
    long long wrong;  /* wrong elements summed over ranks and sizes: nccl-tests' out-of-bounds values */
    json_t *results;  /* -J: the results list, NULL without */
} coll_sum_t;

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

static void print_header(const bench_ctx_t *b, const bench_rank_desc_t *ranks)
{
    const epb_row_t *r = &b->base;
    printf("# epbench coll | %d ranks on %d node%s (%s) | comm %s | %s | %s | iters %d warmup %d | check %s\n",
           r->ranks, r->nodes, r->nodes > 1 ? "s" : "", r->hosts, r->backend, r->device_name, r->dtype,
           b->o->iters, b->o->warmup, b->o->check ? "on" : "off");
    printf("# Using devices\n");
    bench_print_ranks(ranks, b->ctl->size);
    printf("# times: max over ranks, per iteration; then min/median/mean/p95/max over the iterations (us)\n"
           "# size: nccl-tests' (the gathered, sent or reduced buffer); size/P: one rank's block (alltoall: what it\n"
           "# sends each peer, OSU's message size)\n");
    printf("# %-14s %10s %10s %12s %9s %9s %9s %9s %9s %9s %9s %7s\n", "collective", "size", "size/P", "count",
           "min_us", "med_us", "mean_us", "p95_us", "max_us", "algbw", "busbw", "wrong");
    fflush(stdout);
}

/* nccl-tests' JSON type names */
static const char *nccl_type_name(epb_dtype_t dt)
{
    return dt == EPB_DT_BF16 ? "bfloat16" : dt == EPB_DT_F32 ? "float" : epb_dtype_name(dt);
}

static int run_one(bench_ctx_t *b, const epb_coll_t *coll, uint64_t bytes, coll_sum_t *sum, epb_err_t *err)
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
        if (b->ctl->rank == 0) bench_progress_iter(&b->progress, i + 1, o->iters);
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
        char pp[32] = "-";
        int P = b->ctl->size;
        if (coll->splits || coll->uneven) epb_fmt_size(bytes / (uint64_t)P, pp, sizeof pp);
        bench_progress_end(&b->progress); /* the table line after the progress line, not inside it */
        printf("  %-14s %10s %10s %12zu %9.2f %9.2f %9.2f %9.2f %9.2f %9.3f %9.3f %7s\n", coll->name, sz, pp,
               bytes / epb_dtype_size(o->dtype), st.min, st.med, st.mean, st.p95, st.max, row.algbw_gbps,
               row.busbw_gbps, o->check ? (wrong_all ? "FAIL" : "0") : "-");
        if (wrong_all) printf("# %s %s: %lld wrong elements summed over ranks\n", coll->name, sz, (long long)wrong_all);
        fflush(stdout);
        sum->busbw_sum += row.busbw_gbps;
        sum->nsizes++;
        sum->wrong += wrong_all;
        if (sum->results) {
            /* nccl-tests' record; time is its average, here the median over iterations of the max over ranks
             * (the epbench object says so and gives the rest) */
            json_t *res = json_pack("{s:I, s:I, s:s, s:s, s:s}", "size", (json_int_t)bytes, "count",
                                    (json_int_t)(bytes / epb_dtype_size(o->dtype)), "type", nccl_type_name(o->dtype),
                                    "redop", coll->redop ? coll->redop : "none", "root", "-1");
            json_t *oop = json_pack("{s:f, s:f, s:f}", "time", st.med, "alg_bw", row.algbw_gbps, "bus_bw",
                                    row.busbw_gbps);
            json_t *ep = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:s}", "collective", coll->name, "params",
                                   params, "t_min_us", st.min, "t_mean_us", st.mean, "t_p95_us", st.p95, "t_max_us",
                                   st.max, "wait_us", sw.med, "times",
                                   "max over ranks per iteration; time: the median over iterations");
            if (res && oop && ep) {
                json_object_set_new(oop, "nwrong", o->check ? json_integer(wrong_all) : json_null());
                if (coll->splits || coll->uneven)
                    json_object_set_new(ep, "per_pair_bytes", json_integer((json_int_t)(bytes / (uint64_t)P)));
                json_object_set_new(res, "out_of_place", oop);
                json_object_set_new(res, "in_place", json_null());
                json_object_set_new(res, "actual_iterations", json_integer(o->iters));
                json_object_set_new(res, "experiment_name", json_string(coll->name));
                json_object_set_new(res, "epbench", ep);
                json_array_append_new(sum->results, res);
            } else {
                json_decref(res), json_decref(oop), json_decref(ep);
                rc = epb_fail(err, EPB_ESYS, "out of memory building the JSON");
            }
        }
    }
    if (rc) goto out;
    rc = bench_write_rows(b, &row, 1, err);
out:
    free(t);
    epb_coll_ctx_free(&x);
    return rc;
}

/* "YYYY-MM-DD HH:MM:SS" now (UTC), as nccl-tests' start_time and end_time */
static void now_str(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* This process's command line (the user's, under the self-launch) as a JSON list. */
static json_t *args_json(void)
{
    json_t *a = json_array();
    FILE *f = fopen("/proc/self/cmdline", "rb");
    char buf[8192];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    for (size_t i = 0; a && i < n; i += strlen(buf + i) + 1) json_array_append_new(a, json_string(buf + i));
    return a;
}

/* The top-level object, nccl-tests' version 2 keys, with the results list to fill (sum->results). */
static json_t *json_begin(const bench_ctx_t *b, const bench_rank_desc_t *ranks, const uint64_t *sizes, int n,
                          coll_sum_t *sum)
{
    const bench_opts_t *o = b->o;
    char t[64];
    now_str(t, sizeof t);
    json_t *devs = json_array(), *root = NULL;
    for (int r = 0; devs && r < b->ctl->size; r++)
        json_array_append_new(devs, json_pack("{s:i, s:i, s:i, s:s, s:i, s:s, s:s}", "rank", ranks[r].rank, "group", 0,
                                              "pid", ranks[r].pid, "hostname", ranks[r].host, "device",
                                              b->data->mem == EPB_MEM_DEVICE ? b->data->device : -1, "device_hex", "",
                                              "device_info", ranks[r].device));
    json_t *cfg = json_pack("{s:i, s:i, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:s, s:o}", "nthreads", 1,
                            "ngpus", b->data->mem == EPB_MEM_DEVICE ? 1 : 0, "minimum_bytes",
                            (json_int_t)(n ? sizes[0] : 0), "maximum_bytes", (json_int_t)(n ? sizes[n - 1] : 0),
                            "step_factor", o->factor, "warmup_iters", o->warmup, "iterations", o->iters,
                            "aggregated_iterations", 1, "validation", o->check, "graph", 0, "blocking_collectives",
                            "true", "per_iter_timing", "false", "parallel_init", "false", "devices", devs);
    json_t *ep = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:s}", "program", "epbench bench --coll", "backend",
                           b->base.backend, "device_name", b->base.device_name, "ranks", b->ctl->size, "nodes",
                           b->base.nodes, "hosts", b->base.hosts, "times",
                           "each iteration's time is the maximum over ranks; a result's time is the median over "
                           "iterations (nccl-tests: the average)");
    sum->results = json_array(); /* borrowed from root once packed */
    if (cfg && ep && sum->results)
        root = json_pack("{s:i, s:s, s:o, s:i, s:o, s:o, s:o}", "version", 2, "start_time", t, "args", args_json(),
                         "nccl_version", 0, "config", cfg, "epbench", ep, "results", sum->results);
    else
        json_decref(cfg), json_decref(ep), json_decref(sum->results);
    if (!root) sum->results = NULL; /* json_pack's 'o' took it, and freed it on failure */
    return root;
}

/* Closes the object (summary, errors, end_time) and writes it whole: a temporary beside the file, renamed. */
static int json_finish(const bench_opts_t *o, json_t *root, const coll_sum_t *sum, double avg, epb_err_t *err)
{
    char t[64], tmp[PATH_MAX + 32];
    now_str(t, sizeof t);
    json_object_set_new(root, "out_of_bounds", json_pack("{s:I, s:b}", "count", (json_int_t)sum->wrong, "okay",
                                                         sum->wrong == 0));
    json_object_set_new(root, "average_bus_bandwidth", json_pack("{s:f, s:s}", "bandwidth", avg, "okay", "unchecked"));
    json_object_set_new(root, "errors", json_array());
    json_object_set_new(root, "end_time", json_string(t));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", o->json, (long)getpid());
    if (json_dump_file(root, tmp, JSON_INDENT(1) | JSON_ENSURE_ASCII)) {
        int e = errno;
        unlink(tmp);
        return epb_fail(err, EPB_ESYS, "-J/--json %s: cannot write: %s", o->json, strerror(e));
    }
    if (rename(tmp, o->json)) {
        int e = errno;
        unlink(tmp);
        return epb_fail(err, EPB_ESYS, "-J/--json %s: cannot write: %s", o->json, strerror(e));
    }
    return EPB_OK;
}

int bench_run_coll(bench_ctx_t *b, epb_err_t *err)
{
    uint64_t sizes[64];
    int n, rc = bench_coll_plan(b->o, b->ctl->size, sizes, 64, &n, err);
    if (rc) return rc;
    bench_rank_desc_t *ranks = NULL;
    if ((rc = bench_rank_descs(b, &ranks, err))) return rc;
    coll_sum_t sum = { 0 };
    json_t *root = NULL;
    int total = 0;
    for (int c = 0; c < epb_ncolls; c++) total += !strcmp(b->o->coll, "all") || !strcmp(b->o->coll, epb_colls[c].name);
    total *= n;
    if (b->ctl->rank == 0) {
        print_header(b, ranks);
        if (b->o->json[0] && !(root = json_begin(b, ranks, sizes, n, &sum)))
            rc = epb_fail(err, EPB_ESYS, "out of memory building the JSON");
    }
    /* every rank learns whether rank 0 could start: none may run collectives the others skip */
    int64_t ok = rc == EPB_OK;
    int rc2 = epb_allreduce(b->ctl, &ok, &ok, 1, EPB_DT_I64, EPB_MIN);
    if (!rc && (rc2 || !ok)) rc = epb_fail(err, rc2 ? rc2 : EPB_ESYS, "rank 0 could not start the JSON");
    bench_progress_begin(&b->progress, b->ctl->rank == 0 && !b->o->quiet, total);
    int k = 0;
    for (int c = 0; c < epb_ncolls && !rc; c++) {
        if (strcmp(b->o->coll, "all") && strcmp(b->o->coll, epb_colls[c].name)) continue;
        for (int i = 0; i < n && !rc; i++) {
            char sz[32];
            epb_fmt_size(sizes[i], sz, sizeof sz);
            if (b->ctl->rank == 0) bench_progress_config(&b->progress, k, "%s %s", epb_colls[c].name, sz);
            k++;
            rc = run_one(b, &epb_colls[c], sizes[i], &sum, err);
        }
    }
    if (b->ctl->rank == 0) bench_progress_end(&b->progress);
    if (!rc && b->ctl->rank == 0) {
        double avg = sum.nsizes ? sum.busbw_sum / sum.nsizes : 0;
        printf("# %-20s : %lld %s\n", "Out of bounds values", sum.wrong, sum.wrong ? "FAILED" : "OK");
        printf("# %-20s : %g\n", "Avg bus bandwidth", avg);
        char shown[4 * PATH_MAX]; /* the file names on one line each, whatever they hold */
        printf("#\n# results appended to %s\n", epb_printable(b->o->csv, shown, sizeof shown));
        if (b->failed_checks) printf("# %d size(s) FAILED the check\n", b->failed_checks);
        if (root && !(rc = json_finish(b->o, root, &sum, avg, err)))
            printf("# JSON written to %s\n", epb_printable(b->o->json, shown, sizeof shown));
        fflush(stdout);
    }
    json_decref(root);
    free(ranks);
    if (rc) return rc;
    return b->failed_checks ? EPB_ECHECK : EPB_OK;
}
