/* The comparisons of the report: step time against the fastest strategy, communication share, bytes, busbw
 * efficiency against the collective microbenchmark, TFLOP/s efficiency against the gemm ceiling, and weak
 * scaling. Phases are told apart by their kind and the collective they ran (the CSV's kind and coll columns),
 * strategies by the names the CSV gives: nothing here lists a strategy or a phase. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int rp_is_comm_kind(rp_kind_t k)
{
    return k == RP_COMM || k == RP_SYNC;
}

int rp_cell_failed(const rp_data_t *d, const rp_cell_t *c)
{
    if (c->nfail) return 1;
    return c->conf != RP_NONE && c->conf < d->nconfs && d->confs[c->conf].nfail > 0;
}

const rp_cell_t *rp_fastest(const rp_data_t *d, const char *cfg)
{
    const rp_conf_t *f = rp_conf(d, cfg);
    const rp_cell_t *best = NULL;
    if (f && f->nfail) return NULL; /* a failed check: no winner, no ratio */
    for (size_t s = 0; f && s < f->nstrat; s++)
        if (f->step[s] && f->step[s]->med > 0 && (!best || f->step[s]->med < best->med)) best = f->step[s];
    return best;
}

double rp_vs_fastest(const rp_data_t *d, const char *cfg, const char *strategy)
{
    const rp_cell_t *b = rp_fastest(d, cfg), *s = rp_step(d, cfg, strategy);
    if (!b || !s || s->med <= 0) return 0;
    return s->med / b->med;
}

/* The comm and sync sums of a strategy (build_confs adds them up over every phase of its configuration). */
static int comm_sums(const rp_data_t *d, const char *cfg, const char *strategy, double *t, double *bytes)
{
    const rp_conf_t *f = rp_conf(d, cfg);
    *t = *bytes = 0;
    for (size_t s = 0; f && s < f->nstrat; s++) {
        if (strcmp(f->strat[s]->strategy, strategy)) continue;
        *t = f->comm_us[s];
        *bytes = f->comm_bytes[s];
        return f->ncomm[s] > 0;
    }
    return 0;
}

double rp_comm_share(const rp_data_t *d, const char *cfg, const char *strategy)
{
    const rp_conf_t *f = rp_conf(d, cfg);
    double t, b;
    /* step-only rows: unknown, not zero */
    if (!f || !comm_sums(d, cfg, strategy, &t, &b)) return -1;
    for (size_t s = 0; s < f->nstrat; s++)
        if (!strcmp(f->strat[s]->strategy, strategy)) return f->phase_us[s] > 0 ? t / f->phase_us[s] : -1;
    return -1;
}

double rp_comm_bytes(const rp_data_t *d, const char *cfg, const char *strategy)
{
    double t, b;
    comm_sums(d, cfg, strategy, &t, &b);
    return b;
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
    return rp_busbw_ref(d, ph, ref_bytes, NULL);
}

double rp_busbw_ref(const rp_data_t *d, const rp_cell_t *ph, double *ref_bytes, const rp_cell_t **ref)
{
    const epb_row_t *r = ph->row;
    if (ref_bytes) *ref_bytes = 0;
    if (ref) *ref = NULL;
    /* one named collective: a phase that ran several (or none, schema 1) has no single ceiling */
    const char *coll = r->coll;
    if (ph->kind != RP_COMM || !coll || !*coll || strchr(coll, '+') || ph->bytes <= 0 || ph->med <= 0 ||
        r->ranks < 2)
        return -1;
    /* nccl-tests counts the whole per-rank buffer, the moe rows count what leaves the rank */
    double equiv = ph->bytes * r->ranks / (r->ranks - 1);
    const rp_cell_t *best = NULL;
    double bestd = INFINITY;
    size_t n;
    const size_t *g = rp_coll_cells(d, coll, ph->hclass, r->ranks, r->nodes, &n);
    for (size_t i = 0; i < n; i++) {
        const rp_cell_t *c = &d->cells[g[i]];
        const epb_row_t *q = c->row;
        double dist = fabs(log((double)q->bytes / equiv));
        /* at the nearest size, the best row (an even and an --imbalance run of one size): the ceiling */
        if (dist < bestd - 1e-12 || (dist < bestd + 1e-12 && c->busbw > best->busbw)) {
            bestd = dist;
            best = c;
        }
    }
    if (!best) return -1;
    if (ref_bytes) *ref_bytes = (double)best->row->bytes;
    if (ref) *ref = best;
    return phase_busbw(ph) / best->busbw;
}

double rp_peak_tflops(const rp_data_t *d, const char *hclass)
{
    double best = 0;
    size_t n;
    const size_t *g = rp_peak_cells(d, hclass, &n);
    for (size_t i = 0; i < n; i++)
        if (d->cells[g[i]].tflops > best) best = d->cells[g[i]].tflops;
    return best;
}

int rp_threads_of(const char *device_name)
{
    const char *t = device_name ? strstr(device_name, "; threads=") : NULL;
    if (!t) return 0;
    long v = strtol(t + strlen("; threads="), NULL, 10);
    return v > 0 && v < 1 << 20 ? (int)v : 0;
}

/* ranks per node of a row's run, x1000 so that uneven shapes (3 ranks on 2 nodes) compare exactly */
static long ranks_per_node(const epb_row_t *r)
{
    return r->nodes > 0 ? (long)r->ranks * 1000 / r->nodes : (long)r->ranks * 1000;
}

double rp_flops_eff_why(const rp_data_t *d, const rp_cell_t *ph, double *peak_out, char *why, size_t n)
{
    if (why && n) why[0] = 0;
    if (peak_out) *peak_out = 0;
    if (ph->tflops <= 0 || ph->kind != RP_COMPUTE) return -1;
    size_t np;
    const size_t *g = rp_peak_cells(d, ph->hclass, &np);
    if (!np) return -1;
    /* a ceiling measured with more BLAS threads, or fewer ranks sharing the cores, is not this run's ceiling:
     * compared with it, efficiencies pass 100% (issue 15: 151-173% "of gemm peak") */
    int th = rp_threads_of(ph->row->device_name);
    long rpn = ranks_per_node(ph->row);
    double best = 0;
    int pth = 0;
    long prpn = 0;
    for (size_t i = 0; i < np; i++) {
        const rp_cell_t *c = &d->cells[g[i]];
        pth = rp_threads_of(c->row->device_name);
        prpn = ranks_per_node(c->row);
        if (th && pth == th && prpn == rpn && c->tflops > best) best = c->tflops;
    }
    if (best <= 0) {
        const epb_row_t *p = d->cells[g[np - 1]].row;
        if (why && n) {
            if (!th)
                snprintf(why, n, "not compared: the run's device_name gives no BLAS threads per rank");
            else
                snprintf(why, n, "not compared: no gemm ceiling at %d BLAS thread%s per rank and %d rank%s on %d "
                         "node%s (e.g. the ceiling's: %d thread%s, %d rank%s on %d node%s): rerun bench --calibrate "
                         "with the run's --ranks and threads", th, th == 1 ? "" : "s", ph->row->ranks,
                         ph->row->ranks == 1 ? "" : "s", ph->row->nodes, ph->row->nodes == 1 ? "" : "s", pth,
                         pth == 1 ? "" : "s", p->ranks, p->ranks == 1 ? "" : "s", p->nodes, p->nodes == 1 ? "" : "s");
        }
        return -1;
    }
    if (peak_out) *peak_out = best;
    return ph->tflops / best;
}

double rp_flops_eff(const rp_data_t *d, const rp_cell_t *ph)
{
    return rp_flops_eff_why(d, ph, NULL, NULL, 0);
}

/* ---- the token volume model: each strategy's traffic description, as bench wrote it ---- */

double rp_volume_model(const rp_conf_t *f, size_t s)
{
    return s < f->nstrat && f->comm_only_model ? f->comm_only_model[s] : -1;
}

/* ---- the verdict: strategies ranked, ratios to the fastest with their bootstrap interval ---- */

static uint64_t text_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int cmp_rank(const void *a, const void *b)
{
    const rp_rank_t *p = a, *q = b;
    if (p->step->med != q->step->med) return p->step->med < q->step->med ? -1 : 1;
    return (p->s > q->s) - (p->s < q->s);
}

int rp_rank_conf(const rp_data_t *d, const rp_conf_t *f, const rp_rule_t *rule, rp_rank_t *rank, size_t *n)
{
    (void)d;
    *n = 0;
    for (size_t s = 0; s < f->nstrat; s++)
        if (f->step[s] && f->step[s]->med > 0) rank[(*n)++] = (rp_rank_t){ .s = s, .step = f->step[s] };
    qsort(rank, *n, sizeof *rank, cmp_rank);
    for (size_t i = 0; i < *n; i++) {
        rp_rank_t *r = &rank[i];
        const rp_cell_t *b = rank[0].step;
        r->ratio = r->step->med / b->med;
        r->same = i == 0;
        if (i == 0 || b->n < 2 || r->step->n < 2) continue;
        /* the stream is the pair's cell keys, so an interval does not depend on the other cells in the files */
        if (rp_ratio_ci(b->t_med, b->n, r->step->t_med, r->step->n, rule, text_hash(b->key) ^ text_hash(r->step->key),
                        &r->lo, &r->hi))
            return EPB_ESYS;
        r->same = r->lo <= 1 && r->hi >= 1;
    }
    return EPB_OK;
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

typedef struct {
    double x;
    size_t conf;
} member_t;

static int cmp_member(const void *a, const void *b)
{
    const member_t *p = a, *q = b;
    if (p->x != q->x) return p->x < q->x ? -1 : 1;
    return (p->conf > q->conf) - (p->conf < q->conf);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* Sorting the configurations by family key gathers every family in one pass (n log n, not n^2). */
typedef struct {
    const char *key;
    size_t conf;
} fk_t;

static int cmp_fk(const void *a, const void *b)
{
    const fk_t *p = a, *q = b;
    int c = strcmp(p->key, q->key);
    return c ? c : (p->conf > q->conf) - (p->conf < q->conf);
}

int rp_families(const rp_data_t *d, const char *dim, rp_family_t *out, int max, int *n, epb_err_t *err)
{
    *n = 0;
    size_t nc = d->nconfs;
    if (nc < 2 || max <= 0) return EPB_OK;
    fk_t *fk = malloc(nc * sizeof *fk);
    member_t *mem = malloc(nc * sizeof *mem);
    size_t *first = malloc(nc * sizeof *first), *start = malloc(nc * sizeof *start), *len = malloc(nc * sizeof *len);
    epb_rows_t pool = { 0 };
    int rc = EPB_OK;
    if (!fk || !mem || !first || !start || !len) { rc = epb_fail(err, EPB_ESYS, "out of memory"); goto out; }
    char buf[RP_KEY];
    for (size_t k = 0; k < nc; k++) {
        family_key(d->confs[k].head->row, dim, buf, sizeof buf);
        if (!(fk[k].key = epb_strpool_add(&pool.pool, buf, strlen(buf)))) {
            rc = epb_fail(err, EPB_ESYS, "out of memory");
            goto out;
        }
        fk[k].conf = k;
    }
    qsort(fk, nc, sizeof *fk, cmp_fk);
    /* groups of equal keys; a group's first member (in data order) orders the families */
    size_t ng = 0;
    for (size_t i = 0; i < nc;) {
        size_t j = i;
        while (j < nc && fk[j].key == fk[i].key) j++; /* interned: equal keys share a pointer */
        if (j - i >= 2) {
            start[ng] = i;
            len[ng] = j - i;
            first[ng] = fk[i].conf; /* sorted by conf within the key */
            ng++;
        }
        i = j;
    }
    /* order the groups by their first configuration: sort (first << 32 | group) would limit sizes; use pairs */
    size_t *order = malloc((ng ? ng : 1) * 2 * sizeof *order);
    if (!order) { rc = epb_fail(err, EPB_ESYS, "out of memory"); goto out; }
    for (size_t g = 0; g < ng; g++) order[2 * g] = first[g], order[2 * g + 1] = g;
    qsort(order, ng, 2 * sizeof *order, cmp_size);
    for (size_t o = 0; o < ng && *n < max && !rc; o++) {
        size_t g = order[2 * o + 1];
        rp_family_t *f = &out[*n];
        memset(f, 0, sizeof *f);
        f->dim = dim;
        f->cfg = malloc(len[g] * sizeof *f->cfg);
        f->x = malloc(len[g] * sizeof *f->x);
        if (!f->cfg || !f->x) { rp_family_free(f); rc = epb_fail(err, EPB_ESYS, "out of memory"); break; }
        for (size_t m = 0; m < len[g]; m++) {
            size_t k = fk[start[g] + m].conf;
            mem[m].x = dim_value(d->confs[k].head->row, dim);
            mem[m].conf = k;
        }
        qsort(mem, len[g], sizeof *mem, cmp_member);
        for (size_t m = 0; m < len[g]; m++) {
            f->x[m] = mem[m].x;
            f->cfg[m] = d->confs[mem[m].conf].cfg;
        }
        f->n = len[g];
        (*n)++;
    }
    free(order);
    if (rc) {
        for (int k = 0; k < *n; k++) rp_family_free(&out[k]);
        *n = 0;
    }
out:
    free(fk);
    free(mem);
    free(first);
    free(start);
    free(len);
    epb_rows_free(&pool);
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
    const rp_cell_t *b = rp_step(d, f->cfg[0], strategy), *c = rp_step(d, f->cfg[i], strategy);
    if (!b || !c || c->med <= 0 || rp_cell_failed(d, b) || rp_cell_failed(d, c)) return -1;
    return b->med / c->med;
}
