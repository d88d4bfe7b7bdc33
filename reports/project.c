/* The projection (DESIGN.md "The projection", docs/METHOD.md): a cost model per phase that predicts a strategy's
 * step on a described cluster, and `report --project`, which applies it to every configuration of the CSV files
 * (with the measured step next to it when the cluster file is this machine's calibration), to the --model presets
 * at their published sizes, and to a sweep of P and k: the recommendation table, marked "projected", with the
 * model's validated error.
 *
 * What moves comes from the strategy itself: its registry entry's traffic description (moe/traffic.h), evaluated
 * on an expected routing (expert shares from the skew, group-limited routing), per rank and link level; the same
 * description bench checks against the wire on every run. Every term is small enough to check by hand
 * (tests/projection/by_hand.py recomputes them): a collective costs its level's latency plus the busiest rank's
 * bytes over the level's bandwidth (both levels at once, the slower wins); a rank's GEMM phase its experts' FLOPs
 * over the peak times the efficiency at each expert's rows; a data-movement phase its rows copied over the copy
 * rate. The step is the critical path: the ranks' phases in order, every comm and sync phase starting when the
 * last rank arrives (the others wait), chunks pipelining max(comm, compute) per chunk plus the fill. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"
#include "strategy.h" /* the registry: each strategy's traffic description; moe_models, the presets */

const char *const *const rp_model_phases = moe_phase_names;
const int rp_model_nphases = MOE_NPHASES;

#define MAXP 4096 /* ranks the model takes */

/* ---- collectives ---- */

/* One call of B bytes (to other ranks, per rank) on one level. */
static double link_time(const rp_link_t *l, double B)
{
    if (B <= 0) return 0;
    if (l->npoints) {
        int n = l->npoints;
        if (B <= l->pt_bytes[0]) return l->pt_us[0];
        for (int i = 1; i < n; i++)
            if (B <= l->pt_bytes[i])
                return l->pt_us[i - 1] + (l->pt_us[i] - l->pt_us[i - 1]) * (B - l->pt_bytes[i - 1]) /
                                             (l->pt_bytes[i] - l->pt_bytes[i - 1]);
        return l->pt_us[n - 1] + (B - l->pt_bytes[n - 1]) / (l->bw_gbps * 1e3);
    }
    return l->lat_us + B / (l->bw_gbps * 1e3); /* GB/s = 1e3 bytes/us */
}

/* A call whose busiest rank moves bi bytes inside its node and bo to other nodes: both links at once. */
static double call_time(const rp_cluster_t *cl, int co, double bi, double bo)
{
    return fmax(link_time(&cl->intra[co], bi), link_time(&cl->inter[co], bo));
}

/* A ring collective (allgather, reduce_scatter, allreduce) whose ranks each send B bytes: inside one node the
 * node's links carry B; across nodes each of the G ranks' rings crosses the node boundary once, so a rank's NIC
 * carries B/G while its node links still carry B. */
static double ring_time(const rp_cluster_t *cl, int co, double B, int P, int G)
{
    if (P < 2 || B <= 0) return 0;
    if (P <= G) return call_time(cl, co, B, 0);
    return call_time(cl, co, G > 1 ? B : 0, B / G);
}

/* An even all-to-all of B bytes per rank to the others: (G-1)/(P-1) of it stays in the node. */
static double a2a_even_time(const rp_cluster_t *cl, double B, int P, int G)
{
    if (P < 2 || B <= 0) return 0;
    int g = G < P ? G : P;
    return call_time(cl, RP_CO_ALLTOALL, B * (g - 1) / (P - 1), B * (P - g) / (P - 1));
}

double rp_coll_time(const rp_cluster_t *cl, int co, double bytes, int P)
{
    int G = cl->gpus_per_node < P ? cl->gpus_per_node : P;
    double f = co == RP_CO_ALLREDUCE ? 2.0 * (P - 1) / P : (double)(P - 1) / P; /* bytes a rank sends */
    if (co == RP_CO_ALLTOALL) return a2a_even_time(cl, bytes * f, P, G);
    return ring_time(cl, co, bytes * f, P, G);
}

/* the busiest rank's max(sent, received) of a described call at level l */
static double busiest(const moe_tcall_t *c, int P, int l)
{
    double m = 0;
    for (int r = 0; r < P; r++) m = fmax(m, fmax(c->sent[l * P + r], c->recv[l * P + r]));
    return m;
}

/* A described call (moe/traffic.h): `calls` calls of its bytes split evenly. The collective kinds are listed in
 * one order in moe/traffic.h and here (RP_CO_*). */
static double described_time(const rp_cluster_t *cl, const moe_tcall_t *c, int P, int G)
{
    int n = c->calls, co = (int)c->co;
    if (c->co == MOE_CO_ALLTOALL) return n * call_time(cl, co, busiest(c, P, 0) / n, busiest(c, P, 1) / n);
    return n * ring_time(cl, co, busiest(c, P, 0) / n, P, G);
}

/* ---- compute ---- */

/* A curve's efficiency at m rows: linear in log(rows) between its points, the end values beyond them. */
static double curve_at(int n, const double *cm, const double *ce, double m)
{
    if (n == 0) return 1;
    if (m <= cm[0]) return ce[0];
    for (int i = 1; i < n; i++)
        if (m <= cm[i]) {
            double f = (log(m) - log(cm[i - 1])) / (log(cm[i]) - log(cm[i - 1]));
            return ce[i - 1] + f * (ce[i] - ce[i - 1]);
        }
    return ce[n - 1];
}

/* gflop at m rows per GEMM, us (no fixed cost) */
static double gemm_us(const rp_cluster_t *cl, double gflop, double m)
{
    if (gflop <= 0) return 0;
    return gflop * 1e3 / (cl->gemm_tflops * curve_at(cl->ncurve, cl->curve_m, cl->curve_eff, m > 1 ? m : 1));
}

/* An expert's forward (bwd 0) or backward of gflop at m rows: the cluster's experts curve where it has one (the
 * SwiGLU ops themselves: their transposed GEMMs and elementwise work), else the GEMM curve. */
static double expert_us(const rp_cluster_t *cl, double gflop, double m, int bwd)
{
    if (!cl->nxcurve) return gemm_us(cl, gflop, m);
    if (gflop <= 0) return 0;
    return gflop * 1e3 / (cl->gemm_tflops * curve_at(cl->nxcurve, cl->xcurve_m, cl->xcurve_eff[bwd], m > 1 ? m : 1));
}

/* a GEMM phase of gflop at m rows, with the phase's fixed cost */
static double gemm_time(const rp_cluster_t *cl, double gflop, double m)
{
    return gflop > 0 ? gemm_us(cl, gflop, m) + cl->overhead_us : 0;
}

/* rows of D elements copied once, us */
static double copy_time(const rp_cluster_t *cl, double rows, long D)
{
    if (rows <= 0) return 0;
    return rows * (double)D * cl->elem_bytes / (cl->copy_gbps * 1e3) + cl->overhead_us;
}

/* Rank r's experts (forward or backward) in N chunks: every expert's GEMMs at its own rows per chunk, the phase's
 * fixed cost once per chunk. */
static double experts_time(const rp_cluster_t *cl, const moe_traffic_t *t, int r, double D, double F, int bwd, int N,
                           double *gflop)
{
    double us = 0, fl = 0;
    for (int e = 0; e < t->E; e++) {
        double m = t->erows[(size_t)r * (size_t)t->E + (size_t)e];
        if (m <= 0) continue;
        double g = (bwd ? 12 : 6) * m * D * F / 1e9;
        fl += g;
        us += N * expert_us(cl, g / N, m / N, bwd);
    }
    *gflop = fl;
    return fl > 0 ? us + N * cl->overhead_us : 0;
}

/* The configuration as the strategies and their descriptions take it. */
static int model_config(const rp_mcfg_t *c, moe_spec_t *spec, moe_config_t *mc, epb_err_t *err)
{
    if (moe_spec_parse(c->spec, spec, err)) return EPB_EUSAGE;
    if (!spec->st->traffic) return epb_fail(err, EPB_EUSAGE, "strategy %s: it has no traffic description", spec->st->name);
    if (c->P < 1 || c->P > MAXP || c->E % c->P || c->k < 1 || c->k > c->E)
        return epb_fail(err, EPB_EUSAGE, "P=%d, E=%ld, k=%ld: not a configuration the model takes", c->P, c->E, c->k);
    *mc = moe_config_default();
    mc->T = c->T, mc->D = c->D, mc->F = c->F, mc->E = (int)c->E, mc->k = (int)c->k;
    mc->shared = (int)c->shared, mc->Fs = c->shared ? c->shared_ffn : 0;
    mc->groups = c->groups > 1 ? c->groups : 1, mc->topk_groups = c->groups > 1 ? c->topk_groups : 1;
    mc->dispatch_fp8 = c->dispatch_fp8 != 0;
    mc->capacity_factor = c->capacity_factor > 0 ? c->capacity_factor : 0;
    mc->pad_to_capacity = c->pad_to_capacity && mc->capacity_factor > 0;
    mc->redundant = c->redundant_per_rank > 0 ? c->redundant_per_rank * c->P : 0;
    return EPB_OK;
}

/* the phases a chunked pipeline overlaps: forward (dispatch, experts, combine) and backward */
static const int pipe_ph[2][3] = { { MOE_PH_DISPATCH, MOE_PH_EXPERTS_FWD, MOE_PH_COMBINE },
                                   { MOE_PH_COMBINE_BWD, MOE_PH_EXPERTS_BWD, MOE_PH_DISPATCH_BWD } };

int rp_model(const rp_cluster_t *cl, const rp_mcfg_t *c, rp_pred_t *o, epb_err_t *err)
{
    memset(o, 0, sizeof *o);
    moe_spec_t spec;
    moe_config_t mc;
    int rc = model_config(c, &spec, &mc, err);
    if (!rc && spec.st->validate) rc = spec.st->validate(&spec, &mc, c->P, err); /* e.g. a node size that does not divide P */
    if (rc) return rc;
    int P = c->P, G = cl->gpus_per_node < P ? cl->gpus_per_node : P, N = 1;
    for (int i = 0; i < spec.st->nparams; i++)
        if (!strcmp(spec.st->params[i].key, "chunks")) N = (int)spec.param[i];
    moe_routing_t rt;
    moe_traffic_t t;
    if ((rc = moe_routing_expected(&rt, &mc, P, G, c->gamma, err))) return rc;
    rt.act_bytes = cl->elem_bytes;
    if (mc.pad_to_capacity && P > 1) rt.pad = (double)moe_capacity(&mc); /* one rank: nothing exchanged, nothing padded */
    if ((rc = moe_traffic_init(&t, P, G, rt.E, err)) || (rc = moe_traffic_describe(&spec, &mc, &rt, &t, err))) {
        moe_traffic_free(&t);
        moe_routing_free(&rt);
        return rc;
    }
    double *mem = calloc((size_t)P * (2 * MOE_NPHASES + 2), sizeof *mem);
    if (!mem) {
        moe_traffic_free(&t);
        moe_routing_free(&rt);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    /* per rank: each phase's own time (compute: the rank's; comm and sync: the same for all), then the timeline */
    double *own = mem, *tr = mem + (size_t)P * MOE_NPHASES, *clock = tr + (size_t)P * MOE_NPHASES, *w = clock + P;
#define OWN(r, ph) own[(size_t)(r) * MOE_NPHASES + (size_t)(ph)]
#define TR(r, ph) tr[(size_t)(r) * MOE_NPHASES + (size_t)(ph)]
    double comm[MOE_NPHASES] = { 0 }, D = (double)c->D, T = (double)c->T, E = (double)c->E;
    for (int i = 0; i < t.ncalls; i++) {
        const moe_tcall_t *q = &t.call[i];
        comm[q->phase] += described_time(cl, q, P, G);
        o->bytes_intra[q->phase] += busiest(q, P, 0);
        o->bytes_inter[q->phase] += busiest(q, P, 1);
    }
    double sf = (double)c->shared * (double)c->shared_ffn;
    for (int r = 0; r < P; r++) {
        double gf;
        OWN(r, MOE_PH_ROUTE) = gemm_time(cl, 2 * T * D * E / 1e9, T);
        OWN(r, MOE_PH_ROUTE_BWD) = gemm_time(cl, 4 * T * D * E / 1e9, T);
        OWN(r, MOE_PH_SHARED_FWD) = gemm_time(cl, 6 * T * D * sf / 1e9, T);
        OWN(r, MOE_PH_SHARED_BWD) = gemm_time(cl, 12 * T * D * sf / 1e9, T);
        OWN(r, MOE_PH_EXPERTS_FWD) = experts_time(cl, &t, r, D, (double)c->F, 0, N, &gf);
        o->gflop[MOE_PH_EXPERTS_FWD] = fmax(o->gflop[MOE_PH_EXPERTS_FWD], gf);
        OWN(r, MOE_PH_EXPERTS_BWD) = experts_time(cl, &t, r, D, (double)c->F, 1, N, &gf);
        o->gflop[MOE_PH_EXPERTS_BWD] = fmax(o->gflop[MOE_PH_EXPERTS_BWD], gf);
        for (int ph = 0; ph < MOE_NPHASES; ph++) {
            double rows = t.copy[(size_t)ph * (size_t)P + (size_t)r];
            if (rows > 0) OWN(r, ph) += copy_time(cl, rows, c->D);
            if (moe_phase_kinds[ph] != MOE_COMPUTE) OWN(r, ph) = comm[ph];
        }
    }
    o->gflop[MOE_PH_ROUTE] = 2 * T * D * E / 1e9;
    o->gflop[MOE_PH_ROUTE_BWD] = 4 * T * D * E / 1e9;
    o->gflop[MOE_PH_SHARED_FWD] = 6 * T * D * sf / 1e9;
    o->gflop[MOE_PH_SHARED_BWD] = 12 * T * D * sf / 1e9;
    for (int ph = 0; ph < MOE_NPHASES; ph++) o->bytes[ph] = moe_traffic_sent(&t, ph);
    /* the critical path: phases in the order they run; a comm or sync phase begins when the last rank arrives */
    for (int ph = 0; ph < MOE_NPHASES; ph++) {
        int pp = N > 1 && ph == pipe_ph[0][0] ? 0 : N > 1 && ph == pipe_ph[1][0] ? 1 : -1;
        double start = 0;
        for (int r = 0; r < P; r++) start = fmax(start, clock[r]);
        if (pp >= 0) { /* chunk i+1's input collective under chunk i's experts, chunk i's output under i+1's */
            int pin = pipe_ph[pp][0], px = pipe_ph[pp][1], pout = pipe_ph[pp][2];
            double d = comm[pin] / N, co = comm[pout] / N, wi = d + co > 0 ? d / (d + co) : 0.5, end = 0;
            for (int r = 0; r < P; r++) {
                double x = OWN(r, px) / N, over = fmax(0, d + co - x);
                w[r] = start - clock[r];
                TR(r, pin) = w[r] + d + (N - 1) * over * wi;
                TR(r, px) = OWN(r, px);
                TR(r, pout) = co + (N - 1) * over * (1 - wi);
                clock[r] = start + TR(r, pin) - w[r] + TR(r, px) + TR(r, pout);
                end = fmax(end, clock[r]);
                o->wait_us[pin] = fmax(o->wait_us[pin], w[r]);
            }
            for (int r = 0; r < P; r++) { /* the output's last collective completes when every rank is there */
                o->wait_us[pout] = fmax(o->wait_us[pout], end - clock[r]);
                TR(r, pout) += end - clock[r];
                clock[r] = end;
            }
            ph = pout; /* the block's phases are done: experts and combine follow dispatch in the phase order */
            continue;
        }
        for (int r = 0; r < P; r++) {
            if (moe_phase_kinds[ph] == MOE_COMPUTE) {
                TR(r, ph) = OWN(r, ph);
                clock[r] += OWN(r, ph);
                continue;
            }
            w[r] = start - clock[r];
            TR(r, ph) = w[r] + OWN(r, ph);
            clock[r] = start + OWN(r, ph);
            o->wait_us[ph] = fmax(o->wait_us[ph], w[r]);
        }
    }
    /* a phase's projected time is, as in the CSV, the most any rank spends in it (a comm phase: its wait too) */
    for (int ph = 0; ph < MOE_NPHASES; ph++)
        for (int r = 0; r < P; r++) o->t_us[ph] = fmax(o->t_us[ph], TR(r, ph));
    for (int r = 0; r < P; r++) o->step_us = fmax(o->step_us, clock[r]);
#undef OWN
#undef TR
    free(mem);
    moe_traffic_free(&t);
    moe_routing_free(&rt);
    return EPB_OK;
}

/* ---- calibration -> cluster file ---- */

static const char *param_of(const char *params, const char *key, char *buf, size_t n)
{
    size_t kl = strlen(key);
    for (const char *p = params ? params : ""; *p;) {
        const char *e = strchr(p, ';');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l > kl && !strncmp(p, key, kl) && p[kl] == '=') {
            snprintf(buf, n, "%.*s", (int)(l - kl - 1), p + kl + 1);
            return buf;
        }
        p += l + (e ? 1 : 0);
    }
    return NULL;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The index of M among a curve's n rows, appended when new; -1 when the curve is full. */
static int curve_slot(double *m, int *n, double M)
{
    int j;
    for (j = 0; j < *n && m[j] != M; j++) {}
    if (j < *n) return j;
    if (*n == RP_MAXPTS) return -1;
    m[(*n)++] = M;
    return j;
}

int rp_calibration_cluster(const rp_data_t *d, rp_cluster_t *c, char *hclass, size_t n, epb_err_t *err)
{
    memset(c, 0, sizeof *c);
    const char *hc = NULL;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *x = &d->cells[i];
        if (strcmp(x->row->mode, "peak")) continue;
        if (hc && strcmp(hc, x->hclass))
            return epb_fail(err, EPB_EUSAGE, "mode=peak rows of two host classes (%s and %s): give one host's CSV",
                            hc, x->hclass);
        hc = x->hclass;
    }
    if (!hc) return epb_fail(err, EPB_EUSAGE, "no mode=peak rows (run bench --calibrate first)");
    snprintf(hclass, n, "%s", hc);
    snprintf(c->name, sizeof c->name, "%s (bench --calibrate)", hc);
    snprintf(c->host_class, sizeof c->host_class, "%s", hc);
    c->elem_bytes = 4;
    c->gpus_per_node = 1;
    char buf[64];
    /* memcpy: the best median; gemm: by M, the best median of each M; the experts' ops alike */
    double mrate[RP_MAXPTS] = { 0 }, xrate[2][RP_MAXPTS] = { { 0 } };
    int have[2][RP_NCO] = { { 0 } };
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *x = &d->cells[i];
        const epb_row_t *r = x->row;
        if (strcmp(r->mode, "peak")) continue;
        if (param_of(r->params, "rpn", buf, sizeof buf) && atoi(buf) > c->gpus_per_node) c->gpus_per_node = atoi(buf);
        if (!strcmp(r->op, "memcpy")) {
            c->copy_gbps = fmax(c->copy_gbps, r->bytes / (x->med * 1e3));
        } else if (!strcmp(r->op, "gemm")) {
            double M = (double)r->tokens;
            if (r->dtype && !strcmp(r->dtype, "bf16")) c->elem_bytes = 2; /* a --device cuda --dtype bf16 calibration */
            c->cal_kn[0] = r->hidden, c->cal_kn[1] = r->ffn;
            int j = curve_slot(c->curve_m, &c->ncurve, M);
            if (j >= 0) mrate[j] = fmax(mrate[j], x->tflops);
        } else if (!strcmp(r->op, "experts_fwd") || !strcmp(r->op, "experts_bwd")) {
            double M = (double)r->tokens;
            int j = curve_slot(c->xcurve_m, &c->nxcurve, M), bwd = !strcmp(r->op, "experts_bwd");
            if (j >= 0) xrate[bwd][j] = fmax(xrate[bwd][j], x->tflops);
        }
    }
    if (c->copy_gbps <= 0) return epb_fail(err, EPB_EUSAGE, "no mode=peak memcpy row with a time");
    if (!c->ncurve) return epb_fail(err, EPB_EUSAGE, "no mode=peak gemm row (bench built without BLAS?)");
    /* sort the curve by M */
    for (int a = 0; a < c->ncurve; a++)
        for (int b = a + 1; b < c->ncurve; b++)
            if (c->curve_m[b] < c->curve_m[a]) {
                double t = c->curve_m[a]; c->curve_m[a] = c->curve_m[b]; c->curve_m[b] = t;
                t = mrate[a]; mrate[a] = mrate[b]; mrate[b] = t;
            }
    /* the ceiling: the best rate of the GEMMs and the experts' ops (on a GPU the grouped GEMMs of the experts can
     * beat one product of K = N = 1024), so that every efficiency is a share of it */
    for (int j = 0; j < c->ncurve; j++) c->gemm_tflops = fmax(c->gemm_tflops, mrate[j]);
    for (int j = 0; j < c->nxcurve; j++) c->gemm_tflops = fmax(c->gemm_tflops, fmax(xrate[0][j], xrate[1][j]));
    if (c->gemm_tflops <= 0) return epb_fail(err, EPB_EUSAGE, "the mode=peak gemm rows have no TFLOP/s");
    for (int j = 0; j < c->ncurve; j++) c->curve_eff[j] = fmax(mrate[j] / c->gemm_tflops, 1e-6);
    for (int a = 0; a < c->nxcurve; a++) /* the experts' curve by M, and each point's share of the GEMM ceiling */
        for (int b = a + 1; b < c->nxcurve; b++)
            if (c->xcurve_m[b] < c->xcurve_m[a]) {
                double t = c->xcurve_m[a]; c->xcurve_m[a] = c->xcurve_m[b]; c->xcurve_m[b] = t;
                for (int d = 0; d < 2; d++) t = xrate[d][a], xrate[d][a] = xrate[d][b], xrate[d][b] = t;
            }
    for (int j = 0; j < c->nxcurve; j++)
        for (int d = 0; d < 2; d++) {
            if (xrate[d][j] <= 0) /* a forward without its backward (or the reverse): no curve rather than half */
                return epb_fail(err, EPB_EUSAGE, "mode=peak %s rows at M=%g without their %s", d ? "experts_fwd" : "experts_bwd",
                                c->xcurve_m[j], d ? "experts_bwd" : "experts_fwd");
            c->xcurve_eff[d][j] = xrate[d][j] / c->gemm_tflops;
        }
    /* collectives: per level, the points (bytes a rank sends to others, median us), sorted by bytes */
    for (int l = 0; l < 2; l++)
        for (int co = 0; co < RP_NCO; co++) {
            rp_link_t *k = l ? &c->inter[co] : &c->intra[co];
            double pts[RP_MAXPTS][2];
            int np = 0;
            for (size_t i = 0; i < d->ncells && np < RP_MAXPTS; i++) {
                const rp_cell_t *x = &d->cells[i];
                const epb_row_t *r = x->row;
                if (strcmp(r->mode, "peak") || strcmp(r->op, rp_co_names[co]) || r->ranks < 2) continue;
                if (!param_of(r->params, "level", buf, sizeof buf) || strcmp(buf, l ? "inter" : "intra")) continue;
                double P = r->ranks, f = co == RP_CO_ALLREDUCE ? 2 * (P - 1) / P : (P - 1) / P;
                pts[np][0] = (double)r->bytes * f;
                pts[np][1] = x->med;
                np++;
            }
            if (!np) continue;
            qsort(pts, (size_t)np, sizeof pts[0], cmp_dbl);
            for (int i = 0; i < np; i++) {
                if (k->npoints && pts[i][0] <= k->pt_bytes[k->npoints - 1]) continue; /* one point per size */
                k->pt_bytes[k->npoints] = pts[i][0];
                k->pt_us[k->npoints++] = pts[i][1];
            }
            /* the summary numbers: the smallest size's time, the largest size's rate */
            k->lat_us = k->pt_us[0];
            k->bw_gbps = k->pt_bytes[k->npoints - 1] / (k->pt_us[k->npoints - 1] * 1e3);
            have[l][co] = 1;
        }
    for (int co = 0; co < RP_NCO; co++) {
        if (!have[0][co] && !have[1][co])
            return epb_fail(err, EPB_EUSAGE, "no mode=peak %s rows with 2 ranks or more (bench --calibrate --ranks 2)",
                            rp_co_names[co]);
        /* one node: no inter-node level measured; two hosts of one rank each: no intra-node one. The missing
         * level takes the measured one's numbers, and its source says so */
        if (!have[1][co]) c->inter[co] = c->intra[co];
        if (!have[0][co]) c->intra[co] = c->inter[co];
    }
    int hi = 0, hx = 0;
    for (int co = 0; co < RP_NCO; co++) hi |= have[0][co], hx |= have[1][co];
    snprintf(c->link_src[0], sizeof c->link_src[0], "%s",
             hi ? "mode=peak level=intra rows: (bytes sent to other ranks, median us) per size"
                : "not measured (one rank per node): the inter-node level's numbers");
    snprintf(c->link_src[1], sizeof c->link_src[1], "%s",
             hx ? "mode=peak level=inter rows (one rank per node, every node at once): (bytes sent to other ranks, "
                  "median us) per size"
                : "not measured (one node): the intra-node level's numbers");
    return EPB_OK;
}

/* ---- report --project ---- */

typedef struct {
    double step_med, step_p90; /* this machine's validation: median and 90th percentile |error| of the step */
    double pub_med;            /* published figures: median |error| */
    int nconf, npub;
    char source[256];
    int have;
} valid_t;

static void load_validation(const char *path, valid_t *v)
{
    memset(v, 0, sizeof *v);
    if (!path) return;
    json_error_t je;
    epb_err_t e;
    int fd;
    if (epb_open_regular(path, &fd, &e)) return; /* missing: not recorded; main refused one that is not a file */
    json_t *r = json_loadfd(fd, 0, &je);
    close(fd);
    if (!r) return;
    json_t *a = json_object_get(r, "step_median_abs_error"), *b = json_object_get(r, "step_p90_abs_error"),
           *c = json_object_get(r, "published_median_abs_error"), *n = json_object_get(r, "configurations"),
           *p = json_object_get(r, "published_figures");
    if (json_is_number(a) && json_is_number(c)) {
        v->have = 1;
        v->step_med = json_number_value(a);
        v->step_p90 = json_is_number(b) ? json_number_value(b) : 0;
        v->pub_med = json_number_value(c);
        v->nconf = json_is_integer(n) ? (int)json_integer_value(n) : 0;
        v->npub = json_is_integer(p) ? (int)json_integer_value(p) : 0;
        snprintf(v->source, sizeof v->source, "%s", path);
    }
    json_decref(r);
}

static void valid_text(const valid_t *v, char *buf, size_t n)
{
    if (v->have)
        snprintf(buf, n, "±%.0f%% (median |error| of the step on %d held-out runs here; %.0f%% on %d published GPU "
                 "figures)", 100 * v->step_med, v->nconf, 100 * v->pub_med, v->npub);
    else
        snprintf(buf, n, "not recorded (run experiments/projection)");
}

/* the model's configuration of a CSV strategy cell: its strategy's entry and the parameters it declares, taken from
 * the params column (which also holds the layer's features) */
static int mcfg_of(const rp_cell_t *st, double gamma, rp_mcfg_t *m)
{
    const epb_row_t *r = st->row;
    char buf[64];
    memset(m, 0, sizeof *m);
    const moe_strategy_t *e = moe_strategy_find(r->op);
    if (!e || !e->traffic) return 0;
    size_t u = (size_t)snprintf(m->spec, sizeof m->spec, "%s", r->op);
    for (int i = 0; i < e->nparams && u < sizeof m->spec; i++)
        if (param_of(r->params, e->params[i].key, buf, sizeof buf))
            u += (size_t)snprintf(m->spec + u, sizeof m->spec - u, "%s%s=%s", i ? "," : ":", e->params[i].key, buf);
    m->T = r->tokens, m->D = r->hidden, m->F = r->ffn, m->E = r->experts, m->k = r->top_k, m->P = r->ranks;
    m->shared = param_of(r->params, "shared", buf, sizeof buf) ? atoi(buf) : 0;
    m->shared_ffn = param_of(r->params, "shared_ffn", buf, sizeof buf) ? atol(buf) : 0;
    m->groups = param_of(r->params, "groups", buf, sizeof buf) ? atoi(buf) : 1;
    m->topk_groups = param_of(r->params, "topk_groups", buf, sizeof buf) ? atoi(buf) : 1;
    m->dispatch_fp8 = param_of(r->params, "dispatch_dtype", buf, sizeof buf) && !strcmp(buf, "fp8");
    m->capacity_factor = param_of(r->params, "capacity_factor", buf, sizeof buf) ? atof(buf) : 0;
    m->pad_to_capacity = param_of(r->params, "pad_to_capacity", buf, sizeof buf) && atoi(buf) == 1;
    m->redundant_per_rank = param_of(r->params, "redundant", buf, sizeof buf) && r->ranks > 0 ? atoi(buf) / r->ranks : 0;
    m->gamma = gamma;
    moe_spec_t sp;
    epb_err_t e2;
    return moe_spec_parse(m->spec, &sp, &e2) == EPB_OK;
}

/* The configuration's routing skew, from the busiest rank's share of the pairs under its first expert-parallel
 * strategy (one whose experts are spread over the ranks): the CSV's load_plain (schema 4: the rows it computes
 * holding its E/P experts alone, replicas or not), else its expert FLOPs. */
static double conf_gamma(const rp_data_t *d, const rp_conf_t *cf)
{
    for (size_t s = 0; s < cf->nstrat; s++) {
        const rp_cell_t *st = cf->strat[s];
        const moe_strategy_t *e = moe_strategy_find(st->row->op);
        if (!e || e->replicated) continue;
        const rp_cell_t *x = rp_find(d, cf->cfg, st->strategy, "experts_fwd");
        const epb_row_t *r = st->row;
        if (!x || x->row->gflop <= 0 || r->ranks < 2) continue;
        double pairs = (double)r->tokens * r->top_k * r->ranks;
        double smax = r->load_plain > 0 ? r->load_plain / pairs : x->row->gflop * 1e9 / (6.0 * r->hidden * r->ffn * pairs);
        return moe_fit_gamma(r->experts, r->top_k, r->ranks, smax);
    }
    return 0;
}

/* a CSV text field, quoted (RFC 4180): labels hold commas ("hier:node_size=0,chunks=1") */
static void csv_text(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const int sweep_P[] = { 8, 16, 64, 256 };
static const int sweep_k[] = { 1, 2, 4, 8 };
#define NSP 4
#define NSK 4
#define MAXFAM 64
#define MAXBLOCKS 24 /* lines in the ratio plot (its key holds no more) */

typedef struct {
    char label[160];        /* "csv: E=16 T=1024 D=1024 F=1024 skew 1.5" or "deepseek-v3 (T=4096)" */
    rp_mcfg_t base;         /* sizes and gamma; strategy and k vary */
    char strat[RP_MAXS][64]; /* labels: op or op:params */
    rp_mcfg_t scfg[RP_MAXS];
    int nstrat;
    long k0;                /* the family's own k */
} family_t;

static void add_strategy(family_t *f, const char *label, const rp_mcfg_t *m)
{
    for (int i = 0; i < f->nstrat; i++)
        if (!strcmp(f->strat[i], label)) return;
    if (f->nstrat >= RP_MAXS) return;
    snprintf(f->strat[f->nstrat], sizeof f->strat[0], "%s", label);
    f->scfg[f->nstrat++] = *m;
}

/* plot: each strategy's projected step over the fastest's at each P, one block per strategy, for each family's own
 * k */
static int write_plot(const rp_project_opts_t *o, const char *dir, const rp_cluster_t *cl, family_t *fam, int nfam,
                      epb_err_t *err)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/plots", dir);
    if (mkdir(p, 0777) && errno != EEXIST) return epb_fail(err, EPB_ESYS, "%s: %s", p, strerror(errno));
    snprintf(p, sizeof p, "%s/plots/projection.dat", dir);
    FILE *f = fopen(p, "w");
    if (!f) return epb_fail(err, EPB_ESYS, "%s: %s", p, strerror(errno));
    int nblocks = 0;
    for (int fi = 0; fi < nfam; fi++) {
        family_t *fm = &fam[fi];
        double step[RP_MAXS][NSP], best[NSP];
        for (int i = 0; i < NSP; i++) {
            best[i] = 0;
            for (int s = 0; s < fm->nstrat; s++) {
                rp_mcfg_t m = fm->scfg[s];
                m.P = sweep_P[i];
                m.k = fm->k0;
                rp_pred_t pm;
                epb_err_t e2;
                step[s][i] = m.E % m.P || rp_model(cl, &m, &pm, &e2) ? -1 : pm.step_us;
                if (step[s][i] > 0 && (best[i] == 0 || step[s][i] < best[i])) best[i] = step[s][i];
            }
        }
        for (int s = 0; s < fm->nstrat && fm->nstrat > 1; s++) {
            double x[NSP], y[NSP];
            int np = 0;
            for (int i = 0; i < NSP; i++)
                if (step[s][i] > 0 && best[i] > 0) x[np] = sweep_P[i], y[np++] = step[s][i] / best[i];
            if (!np || nblocks >= MAXBLOCKS) continue; /* no P of the sweep divides E; or the key is full */
            char title[300];
            snprintf(title, sizeof title, "%.60s, %.160s k=%ld", fm->strat[s], fm->label, fm->k0);
            if (nblocks) fprintf(f, "\n\n");
            fprintf(f, "\"P\" ");
            rp_dat_text(f, title);
            fprintf(f, "\n");
            for (int i = 0; i < np; i++) fprintf(f, "%g %.6g\n", x[i], y[i]);
            nblocks++;
        }
    }
    int bad = ferror(f);
    if (fclose(f) || bad) return epb_fail(err, EPB_ESYS, "writing %s", p);
    if (!o->gnuplot || !nblocks) return EPB_OK;
    rp_gpvars_t v = { .len = 0 };
    rp_gv_int(&v, "nblocks", nblocks);
    rp_gv_str(&v, "cluster", cl->name);
    rp_plot_opts_t po = { .gnuplot = o->gnuplot, .plots_dir = o->plots_dir };
    return rp_run_gnuplot(&po, "projection.gp", dir, "projection", &v, err);
}

/* every phase's projected time, strategy by strategy: the terms that add up to the step */
static void phase_table(rp_doc_t *doc, const char *const *names, const rp_pred_t *preds, int n)
{
    if (!n) return;
    const char *hdr[RP_MAXS + 1];
    hdr[0] = "phase (projected us)";
    for (int i = 0; i < n; i++) hdr[i + 1] = names[i];
    rp_doc_table(doc, n + 1, hdr);
    for (int ph = 0; ph <= MOE_NPHASES; ph++) {
        rp_doc_cell(doc, "%s", ph < MOE_NPHASES ? rp_model_phases[ph] : "step");
        for (int i = 0; i < n; i++) rp_doc_cell(doc, "%.1f", ph < MOE_NPHASES ? preds[i].t_us[ph] : preds[i].step_us);
    }
}

static void fmt_us(double us, char *b, size_t n)
{
    if (us >= 1e6) snprintf(b, n, "%.3g s", us / 1e6);
    else if (us >= 1e3) snprintf(b, n, "%.3g ms", us / 1e3);
    else snprintf(b, n, "%.3g us", us);
}

int rp_project(const rp_data_t *d, const rp_project_opts_t *o, epb_err_t *err)
{
    rp_cluster_t cl;
    int rc = rp_cluster_load(o->cluster_path, &cl, err);
    if (rc) return rc;
    valid_t v;
    load_validation(o->validation, &v);
    char vtext[400];
    valid_text(&v, vtext, sizeof vtext);
    family_t *fam = calloc(MAXFAM, sizeof *fam);
    int nfam = 0;
    rp_doc_t *doc = rp_doc_new();
    if (!doc || !fam) {
        free(fam);
        rp_doc_free(doc);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    char tmp[4200] = "", p[4300];
    FILE *pc = NULL;
    if (o->out) {
        if ((rc = rp_outdir_begin(o->out, tmp, sizeof tmp, err))) goto done;
        snprintf(p, sizeof p, "%s/projection.csv", tmp);
        if (!(pc = fopen(p, "w"))) {
            rc = epb_fail(err, EPB_ESYS, "%s: %s", p, strerror(errno));
            goto done;
        }
        fprintf(pc, "source,config,strategy,ranks,top_k,phase,projected_us,measured_us,projected_bytes,measured_bytes\n");
    }
    rp_doc_heading(doc, 1, "Projection onto %s", cl.name);
    rp_doc_para(doc, "Every time on this page is **projected** by the cost model of docs/METHOD.md from the cluster file "
                     "%s (%d GPUs per node, %d-byte elements), not measured. The model's validated error: %s.",
                o->cluster_path, cl.gpus_per_node, cl.elem_bytes, vtext);
    /* what reaches the terminal: the cluster's name and file, the CSV's strategy labels, control bytes shown */
    char tname[4 * sizeof cl.name], tpath[4 * 4096], ts1[4 * RP_KEY + 1], ts2[4 * RP_KEY + 1];
    epb_printable(cl.name, tname, sizeof tname);
    printf("projection onto %s (%s): projected, validated error %s\n", tname,
           epb_printable(o->cluster_path, tpath, sizeof tpath), vtext);
    /* 1. the CSV's configurations */
    int nconf = 0;
    for (size_t ci = 0; ci < d->nconfs && !rc; ci++) {
        const rp_conf_t *cf = &d->confs[ci];
        const epb_row_t *h = cf->head->row;
        double gamma = conf_gamma(d, cf);
        if (!nconf++) rp_doc_heading(doc, 2, "The measured configurations, projected");
        rp_doc_heading(doc, 3, "P=%d nodes=%d E=%d k=%d T=%ld D=%ld F=%ld skew %g (%s)", h->ranks, h->nodes, h->experts,
                       h->top_k, h->tokens, h->hidden, h->ffn, h->skew, cf->head->hclass);
        printf("\nP=%d nodes=%d E=%d k=%d T=%ld D=%ld F=%ld skew %g (routing skew exponent %.3g)\n", h->ranks, h->nodes,
               h->experts, h->top_k, h->tokens, h->hidden, h->ffn, h->skew, gamma);
        printf("  %-24s %14s %14s %9s %12s\n", "strategy", "projected", "measured here", "error", "bytes model/meas");
        static const char *const hd[] = { "strategy", "projected step", "measured step (this CSV)", "error",
                                          "comm bytes: model / measured", "largest projected phases" };
        rp_doc_table(doc, 6, hd);
        double best = 0, second = 0;
        const char *wname = NULL;
        rp_pred_t preds[RP_MAXS];     /* for the per-phase table */
        const char *pnames[RP_MAXS];
        int npred = 0;
        /* the family this configuration belongs to (all but k) */
        family_t *fm = NULL;
        for (int i = 0; i < nfam; i++)
            if (fam[i].base.T == h->tokens && fam[i].base.D == h->hidden && fam[i].base.F == h->ffn &&
                fam[i].base.E == h->experts && fabs(fam[i].base.gamma - gamma) < 0.5 && fam[i].k0 == h->top_k)
                fm = &fam[i];
        for (size_t s = 0; s < cf->nstrat && !rc; s++) {
            const rp_cell_t *st = cf->strat[s];
            rp_mcfg_t m;
            if (!mcfg_of(st, gamma, &m)) {
                printf("  %-24s %14s\n", epb_printable(st->strategy, ts1, sizeof ts1), "not modelled");
                continue;
            }
            rp_pred_t pr, pb_;
            rp_cluster_t clb = cl; /* the bytes at the CSV's element size, to compare with what bench counted */
            clb.elem_bytes = strcmp(h->dtype, "bf16") ? 4 : 2;
            if ((rc = rp_model(&cl, &m, &pr, err)) || (rc = rp_model(&clb, &m, &pb_, err))) break;
            const rp_cell_t *step = cf->step[s];
            int here = !strcmp(cl.host_class, cf->head->hclass); /* the cluster is this CSV's machine */
            char ctext[160];
            snprintf(ctext, sizeof ctext, "P%d-n%d-E%d-k%d-T%ld-D%ld-F%ld-skew%g", h->ranks, h->nodes, h->experts,
                     h->top_k, h->tokens, h->hidden, h->ffn, h->skew);
            double meas = step ? step->med : 0, mb = 0, pb = 0;
            for (int ph = 0; ph < MOE_NPHASES; ph++) {
                const rp_cell_t *x = rp_find(d, cf->cfg, st->strategy, rp_model_phases[ph]);
                if (x && (x->kind == RP_COMM || x->kind == RP_SYNC)) mb += x->bytes, pb += pb_.bytes[ph];
                if (pc) {
                    fprintf(pc, "csv,%s,", ctext);
                    csv_text(pc, st->strategy);
                    fprintf(pc, ",%d,%ld,%s,%.6g,%.6g,%.6g,%.6g\n", m.P, m.k,
                            rp_model_phases[ph], pr.t_us[ph], x && here ? x->med : -1, pb_.bytes[ph], x ? x->bytes : -1);
                }
            }
            if (pc) {
                fprintf(pc, "csv,%s,", ctext);
                csv_text(pc, st->strategy);
                fprintf(pc, ",%d,%ld,step,%.6g,%.6g,%.6g,%.6g\n", m.P, m.k, pr.step_us, step && here ? meas : -1, pb, mb);
            }
            /* the three largest projected phases */
            int top[3] = { -1, -1, -1 };
            for (int ph = 0; ph < MOE_NPHASES; ph++)
                for (int j = 0; j < 3; j++)
                    if (top[j] < 0 || pr.t_us[ph] > pr.t_us[top[j]]) {
                        for (int q = 2; q > j; q--) top[q] = top[q - 1];
                        top[j] = ph;
                        break;
                    }
            char a[32], b[32], tp[200] = "";
            fmt_us(pr.step_us, a, sizeof a);
            fmt_us(meas, b, sizeof b);
            for (int j = 0, u = 0; j < 3; j++) {
                char z[32];
                fmt_us(pr.t_us[top[j]], z, sizeof z);
                u += snprintf(tp + u, sizeof tp - (size_t)u, "%s%s %s", j ? ", " : "", rp_model_phases[top[j]], z);
            }
            rp_doc_cell(doc, "%s", st->strategy);
            rp_doc_cell(doc, "%s (projected)", a);
            if (step) rp_doc_cell(doc, "%s", b); else rp_doc_cell(doc, "-");
            if (step && meas > 0 && here) rp_doc_cell(doc, "%+.0f%%", 100 * (pr.step_us / meas - 1));
            else rp_doc_cell(doc, "- (another machine)");
            if (mb > 0) rp_doc_cell(doc, "%.3f", pb / mb); else rp_doc_cell(doc, "-");
            rp_doc_cell(doc, "%s", tp);
            printf("  %-24s %14s %14s", epb_printable(st->strategy, ts1, sizeof ts1), a, step ? b : "-");
            if (step && meas > 0 && here) printf(" %+8.0f%%", 100 * (pr.step_us / meas - 1)); else printf(" %9s", "-");
            if (mb > 0) printf(" %12.3f\n", pb / mb); else printf(" %12s\n", "-");
            if (!wname || pr.step_us < best) {
                second = wname ? best : second;
                best = pr.step_us;
                wname = st->strategy;
            } else if (second == 0 || pr.step_us < second)
                second = pr.step_us;
            if (npred < RP_MAXS) {
                preds[npred] = pr;
                pnames[npred++] = st->strategy;
            }
            if (!fm && nfam < MAXFAM) {
                fm = &fam[nfam++];
                memset(fm, 0, sizeof *fm);
                fm->base = m;
                fm->k0 = m.k;
                snprintf(fm->label, sizeof fm->label, "E=%ld T=%ld D=%ld F=%ld skew %g", m.E, m.T, m.D, m.F, h->skew);
            }
            if (fm) add_strategy(fm, st->strategy, &m);
        }
        phase_table(doc, pnames, preds, npred);
        if (wname && second > 0) {
            rp_doc_para(doc, "Projected winner on %s: **%s**, %.0f%% faster than the next strategy (projected).",
                        cl.name, wname, 100 * (1 - best / second));
            printf("  projected winner: %s, %.0f%% faster than the next\n", epb_printable(wname, ts1, sizeof ts1),
                   100 * (1 - best / second));
        }
    }
    /* 2. the presets at their published sizes, T = 4096 tokens per rank (DeepEP's and DeepSeek-V3's setting) */
    for (int i = 0; i < moe_nmodels && nfam < MAXFAM && !rc; i++) {
        const moe_model_t *mm = &moe_models[i];
        family_t *fm = &fam[nfam++];
        memset(fm, 0, sizeof *fm);
        rp_mcfg_t m = { .T = 4096, .D = mm->D, .F = mm->F, .E = mm->E, .k = mm->k, .P = 8, .shared = mm->shared,
                        .shared_ffn = mm->Fs, .groups = mm->groups, .topk_groups = mm->topk_groups };
        fm->base = m;
        fm->k0 = mm->k;
        snprintf(fm->label, sizeof fm->label, "%s (T=4096)", mm->name);
        /* every registered strategy that spreads the experts (one holding every expert on every GPU is not a
         * choice at these sizes), with its default parameters */
        rp_pred_t preds[RP_MAXS];
        const char *names[RP_MAXS];
        int np = 0;
        m.P = mm->E < 64 ? mm->E : 64; /* the per-phase terms at 64 ranks (8 nodes of 8 on a GPU cluster) or E */
        for (int s = 0; s < moe_nstrategies && np < RP_MAXS; s++) {
            const moe_strategy_t *e = moe_strategies[s];
            if (e->replicated || !e->traffic) continue;
            snprintf(m.spec, sizeof m.spec, "%s", e->name);
            add_strategy(fm, e->name, &m);
            epb_err_t e2;
            if (!rp_model(&cl, &m, &preds[np], &e2)) names[np++] = e->name;
        }
        if (!i) {
            rp_doc_heading(doc, 2, "The --model presets at their published sizes (projected)");
            rp_doc_para(doc, "T=4096 tokens per rank, uniform routing (skew 0), the presets' group-limited routing, "
                             "every phase's projected time at P = min(64, E) on %s.", cl.name);
        }
        rp_doc_heading(doc, 3, "%s: D=%ld F=%ld E=%d k=%d, %d shared of FFN %ld, P=%d (projected)", mm->name, mm->D,
                       mm->F, mm->E, mm->k, mm->shared, mm->Fs, m.P);
        phase_table(doc, names, preds, np);
    }
    /* 3. the recommendation table: every family at P 8, 16, 64, 256 and k 1, 2, 4, 8 and its own */
    rp_doc_heading(doc, 2, "Recommendation (projected)");
    rp_doc_para(doc, "For each configuration family (the CSV's configurations, the --model presets at their published "
                     "sizes with T=4096 tokens per rank), the projected winner at each P and k on %s, its projected "
                     "step and margin over the runner-up. Validated error of the model: %s. P where E is not a "
                     "multiple of P is left out. Routing skew is the family's own (fitted from its measured busiest "
                     "rank); group-limited routing is modelled for uniform routing.", cl.name, vtext);
    static const char *const rh[] = { "configuration", "P", "k", "projected winner", "projected step", "margin",
                                      "runner-up", "validated error" };
    rp_doc_table(doc, 8, rh);
    printf("\nrecommendation (projected on %s; validated error %s):\n", tname, vtext);
    printf("  %-40s %4s %2s  %-18s %12s %8s  %s\n", "configuration", "P", "k", "winner", "step", "margin", "runner-up");
    for (int fi = 0; fi < nfam && !rc; fi++) {
        family_t *fm = &fam[fi];
        int ks[NSK + 1], nk = 0;
        for (int j = 0; j < NSK; j++) ks[nk++] = sweep_k[j];
        int own = 0;
        for (int j = 0; j < nk; j++) own |= ks[j] == fm->k0;
        if (!own) ks[nk++] = (int)fm->k0;
        for (int pi = 0; pi < NSP; pi++)
            for (int ki = 0; ki < nk; ki++) {
                int P = sweep_P[pi], k = ks[ki];
                if (fm->base.E % P || k > fm->base.E) continue;
                double best = 0, second = 0;
                int wi = -1, si = -1;
                for (int s = 0; s < fm->nstrat; s++) {
                    rp_mcfg_t m = fm->scfg[s];
                    m.P = P;
                    m.k = k;
                    rp_pred_t pr;
                    epb_err_t e2;
                    if (rp_model(&cl, &m, &pr, &e2)) continue;
                    if (pc) {
                        fprintf(pc, "sweep,");
                        csv_text(pc, fm->label);
                        fputc(',', pc);
                        csv_text(pc, fm->strat[s]);
                        fprintf(pc, ",%d,%d,step,%.6g,-1,-1,-1\n", P, k, pr.step_us);
                    }
                    if (wi < 0 || pr.step_us < best) {
                        if (wi >= 0) second = best, si = wi;
                        best = pr.step_us, wi = s;
                    } else if (si < 0 || pr.step_us < second)
                        second = pr.step_us, si = s;
                }
                if (wi < 0) continue;
                char a[32];
                fmt_us(best, a, sizeof a);
                rp_doc_cell(doc, "%s", fm->label);
                rp_doc_cell(doc, "%d", P);
                rp_doc_cell(doc, "%d%s", k, k == fm->k0 ? " (own)" : "");
                rp_doc_cell(doc, "%s", fm->strat[wi]);
                rp_doc_cell(doc, "%s (projected)", a);
                if (si >= 0) rp_doc_cell(doc, "%.0f%%", 100 * (1 - best / second)); else rp_doc_cell(doc, "-");
                rp_doc_cell(doc, "%s", si >= 0 ? fm->strat[si] : "-");
                if (v.have)
                    rp_doc_cell(doc, "±%.0f%% here, %.0f%% published", 100 * v.step_med, 100 * v.pub_med);
                else
                    rp_doc_cell(doc, "not recorded");
                printf("  %-40.40s %4d %2d  %-18.18s %12s %7.0f%%  %s\n", fm->label, P, k,
                       epb_printable(fm->strat[wi], ts1, sizeof ts1), a, si >= 0 ? 100 * (1 - best / second) : 0.0,
                       epb_printable(si >= 0 ? fm->strat[si] : "-", ts2, sizeof ts2));
            }
    }
    if (!rc && o->out) {
        rp_doc_heading(doc, 2, "Ratios against P (projected)");
        rp_doc_para(doc, "Each strategy's projected step over agrs's, against P, at the family's own k.");
        rc = write_plot(o, tmp, &cl, fam, nfam, err);
        if (!rc && o->gnuplot) rp_doc_image(doc, "projection", "projected step time over agrs's against P");
    }
    if (pc) {
        int bad = ferror(pc);
        if ((fclose(pc) || bad) && !rc) rc = epb_fail(err, EPB_ESYS, "writing projection.csv");
        pc = NULL;
    }
    if (!rc && o->out) {
        snprintf(p, sizeof p, "%s/report.md", tmp);
        rc = rp_doc_write_md(doc, p, err);
        snprintf(p, sizeof p, "%s/report.html", tmp);
        if (!rc) rc = rp_doc_write_html(doc, tmp, p, err);
        if (!rc) rc = rp_outdir_commit(tmp, o->out, err);
        else rp_outdir_abort(tmp);
        tmp[0] = 0;
    }
done:
    if (pc) fclose(pc);
    if (rc && tmp[0]) rp_outdir_abort(tmp);
    rp_doc_free(doc);
    free(fam);
    return rc;
}
