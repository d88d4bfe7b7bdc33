/* What every mode shares: run-wide CSV columns, the per-iteration max over ranks, the test-only slowdown
 * knob, and rank 0's CSV writes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"
#include "epb_git_rev.h"
#include "moe.h"

#if EPB_HAVE_BLAS
#include <cblas.h>
#endif

/* The hosts column: every rank's host name gathered, the distinct ones in rank order, ';'-joined. A job of more
 * hosts than fit EPB_HOSTS keeps the first ones and says how many more ("...;+12 more"). */
static int job_hosts(bench_ctx_t *b, epb_err_t *err)
{
    enum { HL = 64 }; /* a host name, moved as HL/8 int64 words */
    int P = b->ctl->size, rc;
    char mine[HL] = "";
    snprintf(mine, sizeof mine, "%s", b->topo.host);
    char *all = calloc((size_t)P, HL);
    if (!all) return epb_fail(err, EPB_ESYS, "out of memory gathering host names");
    if ((rc = epb_allgather(b->ctl, mine, all, HL / 8, EPB_DT_I64))) {
        free(all);
        return epb_fail(err, rc, "%s", b->ctl->err.msg);
    }
    size_t len = 0;
    int left_out = 0;
    b->hosts[0] = 0;
    for (int r = 0; r < P; r++) {
        const char *h = all + (size_t)r * HL;
        int seen = 0;
        for (int q = 0; q < r && !seen; q++) seen = !strncmp(h, all + (size_t)q * HL, HL);
        if (seen) continue;
        size_t hl = strnlen(h, HL - 1);
        if (len + hl + 1 + 24 > EPB_HOSTS) { left_out++; continue; } /* room for ";+N more" stays */
        len += (size_t)snprintf(b->hosts + len, sizeof b->hosts - len, "%s%.*s", len ? ";" : "", (int)hl, h);
    }
    if (left_out) snprintf(b->hosts + len, sizeof b->hosts - len, ";+%d more", left_out);
    free(all);
    return EPB_OK;
}

int bench_ctx_init(bench_ctx_t *b, const bench_opts_t *o, epb_comm_t *ctl, epb_comm_t *data, const bench_topo_t *topo,
                   bench_watchdog_t *wd, epb_err_t *err)
{
    memset(b, 0, sizeof *b);
    b->o = o;
    b->wd = wd;
    int hrc = bench_hooks_read(&b->hooks, o->mode, err);
    if (hrc) return hrc;
    b->ctl = ctl;
    b->data = data;
    b->topo = *topo;
    int rc;
#if EPB_HAVE_BLAS
    /* several ranks on a node each get one BLAS thread, unless told otherwise: threads of four ranks
     * fighting over two cores measured 5x slower expert GEMMs here */
    if (ctl->local_size > 1 && !getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
#endif
    epb_row_t *r = &b->base;
    r->schema = EPB_SCHEMA;
    r->model_bytes = r->dropped = r->load_max = r->load_plain = r->quant_err = -1; /* MoE rows set them */
    /* rank 0 names the run; everyone uses its name, clock and host */
    struct { char run_id[EPB_STR], utc[EPB_STR], host[64]; } id;
    memset(&id, 0, sizeof id);
    if (ctl->rank == 0) {
        char stamp[32];
        epb_utc_iso(id.utc, sizeof id.utc);
        snprintf(stamp, sizeof stamp, "%.31s", id.utc);
        char *w = stamp;
        for (char *c = stamp; *c; c++) if (*c != '-' && *c != ':') *w++ = *c;
        *w = 0;
        snprintf(id.host, sizeof id.host, "%s", b->topo.host);
        snprintf(id.run_id, sizeof id.run_id, "%s-%.40s-%ld", stamp, id.host, (long)getpid());
    }
    if ((rc = epb_bcast(ctl, &id, sizeof id, 0))) return epb_fail(err, rc, "%s", ctl->err.msg);
    memcpy(b->run_id, id.run_id, sizeof b->run_id);
    memcpy(b->utc, id.utc, sizeof b->utc);
    memcpy(b->host, id.host, sizeof b->host);
    if ((rc = job_hosts(b, err))) return rc;
    /* the clock offset's ping-pongs and splits are MPI calls of their own, outside the counting wrapper: watched
     * as one call of the control communicator (every rank makes it) */
    bench_watchdog_call(b->wd, BENCH_WD_CTL, "set-up", 1);
    rc = epb_clock_offset(ctl, &b->clock_offset_us, err);
    bench_watchdog_call(b->wd, BENCH_WD_CTL, "set-up", 0);
    if (rc) return rc;
    r->run_id = b->run_id;
    r->utc = b->utc;
    r->host = b->host;
    r->hosts = b->hosts;
    r->git_rev = EPB_GIT_REV;
    r->nodes = ctl->nodes;
    r->backend = data->ops->name;
    r->device = data->mem == EPB_MEM_DEVICE ? "cuda" : "cpu";
    if ((rc = bench_topo_summary(&b->topo, ctl, b->device_name, sizeof b->device_name, err))) return rc;
    if (data->mem == EPB_MEM_DEVICE) epb_gpu_name(data->device, b->device_name, sizeof b->device_name);
    r->device_name = b->device_name;
    r->ranks = ctl->size;
    r->dtype = epb_dtype_name(o->dtype);
    r->seed = o->seed;
    r->iters = o->iters;
    r->check = o->check ? "ok" : "skipped";
    return EPB_OK;
}

int bench_reduce_times(bench_ctx_t *b, double *t_us, int n, epb_stats_t *st)
{
    int rc = epb_allreduce(b->ctl, t_us, t_us, (size_t)n, EPB_DT_F64, EPB_MAX);
    if (rc) return rc;
    return epb_stats(t_us, (size_t)n, st) ? EPB_ESYS : EPB_OK;
}

int bench_waits(bench_ctx_t *b, const double *arr, double *wait, size_t n, epb_err_t *err)
{
    size_t P = (size_t)b->ctl->size;
    double *all = malloc(n * P * sizeof *all);
    if (!all) return epb_fail(err, EPB_ESYS, "out of memory (%zu samples x %zu ranks)", n, P);
    int rc = epb_allgather(b->ctl, arr, all, n, EPB_DT_F64);
    if (rc) epb_fail(err, rc, "%s", b->ctl->err.msg);
    for (size_t i = 0; !rc && i < n; i++) {
        double last = arr[i];
        for (size_t r = 0; r < P; r++)
            if (all[r * n + i] > last) last = all[r * n + i];
        wait[i] = last - arr[i];
    }
    free(all);
    return rc;
}

int bench_critical(bench_ctx_t *b, double *t, double *wait, size_t n, epb_err_t *err)
{
    size_t P = (size_t)b->ctl->size;
    double *mine = malloc(2 * n * sizeof *mine), *all = malloc(2 * n * P * sizeof *all);
    int rc = mine && all ? EPB_OK : epb_fail(err, EPB_ESYS, "out of memory (%zu samples x %zu ranks)", n, P);
    if (!rc) {
        memcpy(mine, t, n * sizeof *t);
        memcpy(mine + n, wait, n * sizeof *wait);
        if ((rc = epb_allgather(b->ctl, mine, all, 2 * n, EPB_DT_F64))) epb_fail(err, rc, "%s", b->ctl->err.msg);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        size_t crit = 0;
        for (size_t r = 1; r < P; r++)
            if (all[r * 2 * n + i] > all[crit * 2 * n + i]) crit = r;
        t[i] = all[crit * 2 * n + i];
        wait[i] = all[crit * 2 * n + n + i];
    }
    free(mine);
    free(all);
    return rc;
}

/* "PHASE:NUMBER[:RANK]" into phase, number and rank (-1 when absent) */
static int hook_spec(const char *var, const char *s, char *phase, size_t np, double *num, int *rank, int with_rank,
                     double hi, epb_err_t *err)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    char *c1 = strchr(buf, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    long r = -1;
    if (c1) *c1 = 0;
    if (c2) *c2 = 0;
    if (!c1 || !buf[0] || strlen(buf) >= np || epb_parse_double(c1 + 1, 0, hi, num) || (c2 && !with_rank) ||
        (c2 && epb_parse_int(c2 + 1, 0, 1 << 20, &r)))
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected PHASE:%s%s", var, s, with_rank ? "MS" : "PERCENT",
                        with_rank ? "[:RANK]" : " (e.g. total:15)");
    snprintf(phase, np, "%s", buf);
    *rank = (int)r;
    return EPB_OK;
}

int bench_hooks_read(bench_hooks_t *h, bench_mode_t mode, epb_err_t *err)
{
    memset(h, 0, sizeof *h);
    h->delay_rank = -1;
    const char *s = getenv("EPB_TEST_SLOWDOWN"), *d = getenv("EPB_TEST_DELAY");
    int ignored;
    if (s && *s && hook_spec("EPB_TEST_SLOWDOWN", s, h->slow_phase, sizeof h->slow_phase, &h->slow_pct, &ignored, 0,
                             1000, err))
        return EPB_EUSAGE;
    if (d && *d && hook_spec("EPB_TEST_DELAY", d, h->delay_phase, sizeof h->delay_phase, &h->delay_ms, &h->delay_rank, 1,
                             1e6, err))
        return EPB_EUSAGE;
    int moe = mode == MODE_MOE;
    if (h->slow_phase[0] && (moe ? strcmp(h->slow_phase, "step") && moe_phase_find(h->slow_phase) < 0
                                 : strcmp(h->slow_phase, "total")))
        return epb_fail(err, EPB_EUSAGE, "EPB_TEST_SLOWDOWN '%s': no phase '%s' here (%s)", s, h->slow_phase,
                        moe ? "a MoE phase or step" : "total");
    if (h->delay_phase[0] && (!moe || moe_phase_find(h->delay_phase) < 0))
        return epb_fail(err, EPB_EUSAGE, "EPB_TEST_DELAY '%s': no MoE phase '%s'%s", d, h->delay_phase,
                        moe ? "" : " (the delay is for --strategy runs)");
    return EPB_OK;
}

void bench_maybe_slow(const bench_ctx_t *b, const char *phase, double elapsed_us)
{
    if (b->hooks.slow_pct <= 0 || strcmp(b->hooks.slow_phase, phase)) return;
    double until = epb_now_us() + elapsed_us * b->hooks.slow_pct / 100.0;
    while (epb_now_us() < until) {}
}

int bench_write_rows(bench_ctx_t *b, const epb_row_t *rows, size_t n, epb_err_t *err)
{
    if (b->ctl->rank != 0) return EPB_OK;
    return epb_csv_append(b->o->csv, rows, n, err);
}

int bench_rank_descs(bench_ctx_t *b, bench_rank_desc_t **out, epb_err_t *err)
{
    _Static_assert(sizeof(bench_rank_desc_t) % 8 == 0, "moved as int64 words");
    int P = b->ctl->size, rc;
    bench_rank_desc_t mine;
    memset(&mine, 0, sizeof mine);
    mine.rank = b->ctl->rank;
    mine.pid = (int32_t)getpid();
    snprintf(mine.host, sizeof mine.host, "%s", b->topo.host);
    const bench_topo_t *t = &b->topo;
    if (b->data->mem == EPB_MEM_DEVICE) {
        char name[96] = "";
        epb_gpu_name(b->data->device, name, sizeof name);
        snprintf(mine.device, sizeof mine.device, "cuda %d %s", b->data->device, name);
    } else if (t->bound == BOUND_CORE)
        snprintf(mine.device, sizeof mine.device, "cpu core %d (cpus %s)", t->bound_index, t->cpuset);
    else if (t->bound == BOUND_NUMA)
        snprintf(mine.device, sizeof mine.device, "cpu numa %d (cpus %s)", t->bound_index, t->cpuset);
    else if (t->bound == BOUND_OTHER)
        snprintf(mine.device, sizeof mine.device, "cpu cpus %s", t->cpuset);
    else
        snprintf(mine.device, sizeof mine.device, "cpu unbound");
    bench_rank_desc_t *all = calloc((size_t)P, sizeof *all);
    if (!all) return epb_fail(err, EPB_ESYS, "out of memory gathering the ranks' devices");
    if ((rc = epb_allgather(b->ctl, &mine, all, sizeof mine / 8, EPB_DT_I64))) {
        free(all);
        return epb_fail(err, rc, "%s", b->ctl->err.msg);
    }
    for (int r = 0; r < P; r++) { /* text from another rank ends inside its field */
        all[r].host[sizeof all[r].host - 1] = 0;
        all[r].device[sizeof all[r].device - 1] = 0;
    }
    if (b->ctl->rank == 0) *out = all;
    else free(all), *out = NULL;
    return EPB_OK;
}

void bench_print_ranks(const bench_rank_desc_t *d, int P)
{
    for (int r = 0; r < P && d; r++)
        printf("#  Rank %2d Pid %6d on %10s device %s\n", d[r].rank, d[r].pid, d[r].host, d[r].device);
}
