/* The comparisons of the report: speedup over agrs, communication share, bytes, busbw efficiency against the
 * collective microbenchmark, TFLOP/s efficiency against the gemm ceiling, and weak scaling. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const rp_moe_phases[] = {
    "route", "sync_counts", "dispatch", "permute", "experts_fwd", "unpermute", "combine",
    "combine_bwd", "experts_bwd", "dispatch_bwd", "route_bwd", "grad_sync", "step", NULL,
};

static const char *const comm_phases[] = { "sync_counts", "dispatch", "combine", "combine_bwd",
                                           "dispatch_bwd", "grad_sync", NULL };

int rp_is_comm_phase(const char *phase)
{
    for (int i = 0; comm_phases[i]; i++)
        if (!strcmp(comm_phases[i], phase)) return 1;
    return 0;
}

const char *rp_phase_collective(const char *strategy, const char *phase)
{
    if (!strcmp(phase, "grad_sync")) return "allreduce";
    if (!strcmp(strategy, "agrs")) {
        /* forward: gather tokens, reduce-scatter outputs; backward mirrors it */
        if (!strcmp(phase, "dispatch") || !strcmp(phase, "combine_bwd")) return "allgather";
        if (!strcmp(phase, "combine") || !strcmp(phase, "dispatch_bwd")) return "reduce_scatter";
        return NULL;
    }
    if (!strncmp(strategy, "tp2ep", 5)) {
        if (!strcmp(phase, "dispatch") || !strcmp(phase, "combine") || !strcmp(phase, "combine_bwd") ||
            !strcmp(phase, "dispatch_bwd"))
            return "alltoallv";
        return NULL;
    }
    return NULL;
}

double rp_speedup_over_agrs(const rp_data_t *d, const char *cfg, const char *strategy)
{
    const rp_cell_t *a = rp_find(d, cfg, "agrs", "step"), *s = rp_find(d, cfg, strategy, "step");
    if (!a || !s || a->med <= 0 || s->med <= 0) return 0;
    return a->med / s->med;
}

double rp_comm_share(const rp_data_t *d, const char *cfg, const char *strategy)
{
    const rp_cell_t *s = rp_find(d, cfg, strategy, "step");
    if (!s || s->med <= 0) return -1;
    double sum = 0;
    int found = 0;
    for (int i = 0; comm_phases[i]; i++) {
        const rp_cell_t *c = rp_find(d, cfg, strategy, comm_phases[i]);
        if (c) { sum += c->med; found = 1; }
    }
    return found ? sum / s->med : -1; /* step-only rows: unknown, not zero */
}

double rp_comm_bytes(const rp_data_t *d, const char *cfg, const char *strategy)
{
    double sum = 0;
    for (int i = 0; comm_phases[i]; i++) {
        const rp_cell_t *c = rp_find(d, cfg, strategy, comm_phases[i]);
        if (c) sum += c->bytes;
    }
    return sum;
}

/* A moe phase's bus bandwidth: the CSV's busbw when the bench filled it, else bytes sent over time (the bytes
 * already exclude the rank's own share, which is what busbw's (P-1)/P factor removes). */
static double phase_busbw(const rp_cell_t *c)
{
    if (c->busbw > 0) return c->busbw;
    return epb_gbps(c->bytes, c->med);
}

double rp_busbw_eff(const rp_data_t *d, const rp_cell_t *ph, double *ref_bytes)
{
    const epb_row_t *r = ph->row;
    const char *coll = rp_phase_collective(r->op, r->phase);
    if (ref_bytes) *ref_bytes = 0;
    if (!coll || ph->bytes <= 0 || ph->med <= 0 || r->ranks < 2) return -1;
    /* nccl-tests counts the whole per-rank buffer, the moe rows count what leaves the rank */
    double equiv = ph->bytes * r->ranks / (r->ranks - 1);
    const rp_cell_t *best = NULL;
    double bestd = INFINITY;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        const epb_row_t *q = c->row;
        if (strcmp(q->mode, "coll") || strcmp(q->op, coll) || q->ranks != r->ranks || q->nodes != r->nodes ||
            strcmp(c->hclass, ph->hclass) || q->bytes == 0 || c->busbw <= 0)
            continue;
        double dist = fabs(log((double)q->bytes / equiv));
        if (dist < bestd) { bestd = dist; best = c; }
    }
    if (!best) return -1;
    if (ref_bytes) *ref_bytes = (double)best->row->bytes;
    return phase_busbw(ph) / best->busbw;
}

double rp_peak_tflops(const rp_data_t *d, const char *hclass)
{
    double best = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (!strcmp(c->row->mode, "peak") && !strcmp(c->row->op, "gemm") && !strcmp(c->hclass, hclass) &&
            c->tflops > best)
            best = c->tflops;
    }
    return best;
}

double rp_flops_eff(const rp_data_t *d, const rp_cell_t *ph)
{
    if (ph->tflops <= 0) return -1;
    double peak = rp_peak_tflops(d, ph->hclass);
    return peak > 0 ? ph->tflops / peak : -1;
}

int rp_has_phases(const rp_data_t *d, const char *cfg)
{
    for (size_t i = 0; i < d->ncells; i++)
        if (!strcmp(d->cells[i].cfg, cfg) && strcmp(d->cells[i].row->phase, "step")) return 1;
    return 0;
}

int rp_strategies(const rp_data_t *d, const char *cfg, const char **out, int max)
{
    static const char *const known[] = { "local", "agrs", "tp2ep", NULL };
    int n = 0;
    for (int k = 0; known[k] && n < max; k++)
        if (rp_find(d, cfg, known[k], "step")) out[n++] = known[k];
    for (size_t i = 0; i < d->ncells && n < max; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->cfg, cfg) || strcmp(c->row->phase, "step")) continue;
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= !strcmp(out[j], c->row->op);
        if (!dup) out[n++] = c->row->op;
    }
    return n;
}

int rp_config_head(const rp_data_t *d, size_t i)
{
    const rp_cell_t *c = &d->cells[i];
    if (strcmp(c->row->mode, "moe") || strcmp(c->row->phase, "step")) return 0;
    for (size_t j = 0; j < i; j++)
        if (!strcmp(d->cells[j].cfg, c->cfg) && !strcmp(d->cells[j].row->phase, "step")) return 0;
    return 1;
}

/* ---- families: configurations differing in one dimension only ---- */

static double dim_value(const epb_row_t *r, const char *dim)
{
    if (!strcmp(dim, "top_k")) return r->top_k;
    if (!strcmp(dim, "experts")) return r->experts;
    if (!strcmp(dim, "ranks")) return r->ranks;
    if (!strcmp(dim, "tokens")) return (double)r->tokens;
    return 0;
}

/* The configuration key with the dimension blanked, so family members share it. */
static void family_key(const epb_row_t *r, const char *dim, char *buf, size_t n)
{
    epb_row_t t = *r;
    if (!strcmp(dim, "top_k")) t.top_k = 0;
    if (!strcmp(dim, "experts")) t.experts = 0;
    if (!strcmp(dim, "ranks")) t.ranks = 0;
    if (!strcmp(dim, "tokens")) t.tokens = 0;
    rp_config_key(&t, buf, n);
}

void rp_family_free(rp_family_t *f)
{
    free(f->cfg);
    free(f->x);
    f->cfg = NULL;
    f->x = NULL;
    f->n = 0;
}

/* The family of configurations whose family key is fk[key] (cells' keys in fk, "" for non-step cells), sorted
 * by the dimension's value; f->cfg and f->x hold nc entries. */
static void family_members(const rp_data_t *d, const char *dim, char (*fk)[RP_KEY], size_t key, rp_family_t *f)
{
    f->n = 0;
    for (size_t j = 0; j < d->ncells; j++) {
        if (strcmp(fk[j], fk[key])) continue;
        double v = dim_value(d->cells[j].row, dim);
        int dup = 0;
        for (size_t k = 0; k < f->n; k++) dup |= f->x[k] == v;
        if (dup) continue;
        /* insertion sort by value */
        size_t p = f->n++;
        while (p > 0 && f->x[p - 1] > v) {
            f->x[p] = f->x[p - 1];
            memcpy(f->cfg[p], f->cfg[p - 1], RP_KEY);
            p--;
        }
        f->x[p] = v;
        memcpy(f->cfg[p], d->cells[j].cfg, RP_KEY);
    }
}

int rp_families(const rp_data_t *d, const char *dim, rp_family_t *out, int max, int *n, epb_err_t *err)
{
    *n = 0;
    size_t nc = d->ncells;
    if (nc == 0 || max <= 0) return EPB_OK;
    char(*fk)[RP_KEY] = malloc(nc * sizeof *fk);
    if (!fk) return epb_fail(err, EPB_ESYS, "out of memory");
    /* step cells stand for their configuration */
    for (size_t i = 0; i < nc; i++) {
        const rp_cell_t *c = &d->cells[i];
        fk[i][0] = 0;
        if (!strcmp(c->row->mode, "moe") && !strcmp(c->row->phase, "step")) family_key(c->row, dim, fk[i], RP_KEY);
    }
    int rc = EPB_OK;
    for (size_t i = 0; i < nc && *n < max; i++) {
        int seen = !fk[i][0];
        for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(fk[j], fk[i]);
        if (seen) continue;
        rp_family_t *f = &out[*n];
        memset(f, 0, sizeof *f);
        f->dim = dim;
        f->cfg = malloc(nc * sizeof *f->cfg);
        f->x = malloc(nc * sizeof *f->x);
        if (!f->cfg || !f->x) { rp_family_free(f); rc = epb_fail(err, EPB_ESYS, "out of memory"); break; }
        family_members(d, dim, fk, i, f);
        if (f->n >= 2) (*n)++;
        else rp_family_free(f);
    }
    if (rc) {
        for (int k = 0; k < *n; k++) rp_family_free(&out[k]);
        *n = 0;
    }
    free(fk);
    return rc;
}

int rp_largest_family(const rp_data_t *d, const char *dim, rp_family_t *f, epb_err_t *err)
{
    enum { MAXF = 64 };
    rp_family_t all[MAXF];
    int n, best = -1;
    memset(f, 0, sizeof *f);
    f->dim = dim;
    int rc = rp_families(d, dim, all, MAXF, &n, err);
    if (rc) return rc;
    for (int k = 0; k < n; k++)
        if (best < 0 || all[k].n > all[best].n) best = k;
    for (int k = 0; k < n; k++)
        if (k == best) *f = all[k];
        else rp_family_free(&all[k]);
    return EPB_OK;
}

double rp_weak_eff(const rp_data_t *d, const rp_family_t *f, size_t i, const char *strategy)
{
    if (!f->n || i >= f->n) return -1;
    /* tokens are per rank, so a ranks family is weak scaling: ideal time stays flat */
    const rp_cell_t *b = rp_find(d, f->cfg[0], strategy, "step"), *c = rp_find(d, f->cfg[i], strategy, "step");
    if (!b || !c || c->med <= 0) return -1;
    return b->med / c->med;
}
