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
    epb_row_set(r->run_id, id.run_id);
    epb_row_set(r->utc, id.utc);
    epb_row_set(r->host, id.host);
    epb_row_set(r->git_rev, EPB_GIT_REV);
    r->nodes = ctl->nodes;
    epb_row_set(r->backend, data->ops->name);
    epb_row_set(r->device, data->mem == EPB_MEM_DEVICE ? "cuda" : "cpu");
    char dn[EPB_STR];
    if ((rc = bench_topo_summary(&b->topo, ctl, dn, sizeof dn, err))) return rc;
    if (data->mem == EPB_MEM_DEVICE) epb_gpu_name(data->device, dn, sizeof dn);
    epb_row_set(r->device_name, dn);
    r->ranks = ctl->size;
    epb_row_set(r->dtype, epb_dtype_name(o->dtype));
    r->seed = o->seed;
    r->iters = o->iters;
    epb_row_set(r->check, o->check ? "ok" : "skipped");
    return EPB_OK;
}

int bench_reduce_times(bench_ctx_t *b, double *t_us, int n, epb_stats_t *st)
{
    int rc = epb_allreduce(b->ctl, t_us, t_us, (size_t)n, EPB_DT_F64, EPB_MAX);
    if (rc) return rc;
    return epb_stats(t_us, (size_t)n, st) ? EPB_ESYS : EPB_OK;
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
