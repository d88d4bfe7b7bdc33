/* What every mode shares: run-wide CSV columns, the per-iteration max over ranks, the test-only slowdown
 * knob, and rank 0's CSV writes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"
#include "epb_git_rev.h"

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
                   epb_err_t *err)
{
    memset(b, 0, sizeof *b);
    b->o = o;
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
    if ((rc = job_hosts(b, err)) || (rc = epb_clock_offset(ctl, &b->clock_offset_us, err))) return rc;
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

int bench_critical(bench_ctx_t *b, double *t, const double *arr, double *wait, size_t n, epb_err_t *err)
{
    size_t P = (size_t)b->ctl->size;
    double *mine = malloc(2 * n * sizeof *mine), *all = malloc(2 * n * P * sizeof *all);
    int rc = mine && all ? EPB_OK : epb_fail(err, EPB_ESYS, "out of memory (%zu samples x %zu ranks)", n, P);
    if (!rc) {
        memcpy(mine, t, n * sizeof *t);
        memcpy(mine + n, arr, n * sizeof *arr);
        if ((rc = epb_allgather(b->ctl, mine, all, 2 * n, EPB_DT_F64))) epb_fail(err, rc, "%s", b->ctl->err.msg);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        size_t crit = 0;
        double last = -1e300;
        for (size_t r = 0; r < P; r++) {
            const double *q = all + r * 2 * n;
            if (q[i] > all[crit * 2 * n + i]) crit = r;
            if (q[n + i] > last) last = q[n + i];
        }
        t[i] = all[crit * 2 * n + i];
        if (wait) {
            double w = last - all[crit * 2 * n + n + i];
            wait[i] = w < 0 ? 0 : w > t[i] ? t[i] : w;
        }
    }
    free(mine);
    free(all);
    return rc;
}

void bench_maybe_slow(const bench_ctx_t *b, const char *phase, double elapsed_us)
{
    if (b->o->slow_pct <= 0 || strcmp(b->o->slow_phase, phase)) return;
    double until = epb_now_us() + elapsed_us * b->o->slow_pct / 100.0;
    while (epb_now_us() < until) {}
}

int bench_write_rows(bench_ctx_t *b, const epb_row_t *rows, size_t n, epb_err_t *err)
{
    if (b->ctl->rank != 0) return EPB_OK;
    return epb_csv_append(b->o->csv, rows, n, err);
}
