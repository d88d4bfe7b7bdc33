/* The projection (DESIGN.md "The projection", docs/METHOD.md): a cost model per phase that predicts a strategy's
 * step on a described cluster from the layer's sizes, the strategy's traffic and the routing's imbalance, and
 * `report --project`, which applies it to every configuration of the CSV files (with the measured step next to
 * it when the cluster file is this machine's calibration), to the --model presets at their published sizes, and
 * to a sweep of P and k: the recommendation table, marked "projected", with the model's validated error.
 *
 * Every term is small enough to check by hand (tests/projection/by_hand.py recomputes one): a collective costs
 * its level's latency plus the busiest rank's bytes over the level's bandwidth (both levels at once, the slower
 * wins); a GEMM phase its FLOPs over the peak times the efficiency at its rows per expert; a data-movement phase
 * its rows copied over the copy rate; chunks pipeline max(comm, compute) per chunk plus the fill. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe.h" /* moe_models: the presets at their published sizes */
#include "report.h"

enum {
    PH_ROUTE, PH_LAYOUT, PH_PERMUTE, PH_DISPATCH, PH_EXPERTS_FWD, PH_UNPERMUTE, PH_COMBINE, PH_GATE, PH_SHARED_FWD,
    PH_GATE_BWD, PH_COMBINE_BWD, PH_UNPERMUTE_BWD, PH_EXPERTS_BWD, PH_PERMUTE_BWD, PH_DISPATCH_BWD, PH_SHARED_BWD,
    PH_ROUTE_BWD, PH_GRAD_SYNC, PH_N
};
const char *const rp_model_phases[] = { "route", "layout", "permute", "dispatch", "experts_fwd", "unpermute",
                                        "combine", "gate", "shared_fwd", "gate_bwd", "combine_bwd", "unpermute_bwd",
                                        "experts_bwd", "permute_bwd", "dispatch_bwd", "shared_bwd", "route_bwd",
                                        "grad_sync" };
const int rp_model_nphases = PH_N;

#define MAXP 4096 /* ranks the model takes */

/* ---- routing: expert and rank shares ---- */

/* Expert shares s[e] ~ (e+1)^-gamma of the pairs, none above 1/k (a token picks an expert at most once):
 * s = min(c w, 1/k) with c such that the shares add up to 1. */
static void expert_shares(long E, long k, double gamma, double *s)
{
    double lo = 0, hi = 1, cap = 1.0 / (double)k;
    for (long e = 0; e < E; e++) s[e] = pow((double)(e + 1), -gamma);
    for (int it = 0; it < 200; it++) { /* grow hi until it over-fills, then bisect */
        double sum = 0;
        for (long e = 0; e < E; e++) sum += fmin(hi * s[e], cap);
        if (sum >= 1) break;
        hi *= 2;
    }
    for (int it = 0; it < 100; it++) {
        double c = 0.5 * (lo + hi), sum = 0;
        for (long e = 0; e < E; e++) sum += fmin(c * s[e], cap);
        if (sum < 1) lo = c; else hi = c;
    }
    double sum = 0;
    for (long e = 0; e < E; e++) sum += (s[e] = fmin(hi * s[e], cap));
    for (long e = 0; e < E; e++) s[e] /= sum;
}

void rp_rank_shares(long E, long k, int P, double gamma, double *S)
{
    double *s = malloc(sizeof(double) * (size_t)E);
    long El = E / P;
    for (int r = 0; r < P; r++) S[r] = 1.0 / P;
    if (!s) return;
    expert_shares(E, k, gamma, s);
    for (int r = 0; r < P; r++) {
        S[r] = 0;
        for (long e = r * El; e < (r + 1) * El; e++) S[r] += s[e];
    }
    free(s);
}

static double max_share(long E, long k, int P, double gamma)
{
    double S[MAXP], m = 0;
    rp_rank_shares(E, k, P, gamma, S);
    for (int r = 0; r < P; r++) m = fmax(m, S[r]);
    return m;
}

double rp_fit_gamma(long E, long k, int P, double smax)
{
    if (P < 2 || P > MAXP || E % P || smax <= max_share(E, k, P, 0) + 1e-9) return 0;
    double lo = 0, hi = 30;
    if (smax >= max_share(E, k, P, hi)) return hi;
    for (int it = 0; it < 60; it++) {
        double g = 0.5 * (lo + hi);
        if (max_share(E, k, P, g) < smax) lo = g; else hi = g;
    }
    return 0.5 * (lo + hi);
}

/* The chance that a token's k distinct experts include one of a set holding share q of the pairs: exact for
 * uniform routing (1 - C(E - E q, k) / C(E, k) when q = m/E), the same product otherwise. */
static double hit(double q, long E, long k)
{
    double miss = 1;
    for (long j = 0; j < k; j++) miss *= fmax(0, 1 - q * (double)E / (double)(E - j));
    return 1 - miss;
}

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

/* ---- the routed exchange (tp2ep, dedup, hier): expected rows per rank and level ---- */

typedef struct {
    double a[2], b[2]; /* stage A rows, stage B pairs: the busiest rank's max(sent, received), [0] intra [1] inter */
    double srcA;       /* stage A rows a source sends (its own group's included): what it gathers */
    double sent[4];    /* dispatch, combine, combine_bwd, dispatch_bwd: the most bytes one rank sends (the CSV's
                        * bytes column; the times use the busiest rank's sent or received, a[] and b[]) */
    int ng, gs;
} xplan_t;

/* row: bytes of a token row; k4: bytes of a row's k int32 or float32 (indices, gates, gate gradients) */
static int xplan(const rp_mcfg_t *c, int G, int ns, const double *S, double row, double k4, xplan_t *x)
{
    int P = c->P;
    memset(x, 0, sizeof *x);
    x->gs = ns;
    x->ng = P / ns;
    /* per level l and rank r: stage A rows and stage B pairs sent and received, then each group's share */
    double *mem = calloc((size_t)9 * (size_t)P, sizeof *mem);
    if (!mem) return -1;
    double *sA[2] = { mem, mem + P }, *rA[2] = { mem + 2 * P, mem + 3 * P }, *sB[2] = { mem + 4 * P, mem + 5 * P },
           *rB[2] = { mem + 6 * P, mem + 7 * P }, *Sg = mem + 8 * P;
    for (int g = 0; g < x->ng; g++)
        for (int q = g * ns; q < (g + 1) * ns; q++) Sg[g] += S[q];
    for (int r = 0; r < P; r++) {
        for (int g = 0; g < x->ng; g++) {
            double rows = (double)c->T * hit(Sg[g], c->E, c->k);
            if (r == 0) x->srcA += rows;
            if (g == r / ns) continue;
            int relay = g * ns + r % ns, l = relay / G != r / G;
            sA[l][r] += rows;
            rA[l][relay] += rows;
        }
        if (ns < 2) continue;
        for (int o = (r / ns) * ns; o < (r / ns + 1) * ns; o++) { /* the relay's pairs to its group's owners */
            if (o == r) continue;
            double pairs = x->ng * (double)c->T * (double)c->k * S[o];
            int l = o / G != r / G;
            sB[l][r] += pairs;
            rB[l][o] += pairs;
        }
    }
    for (int l = 0; l < 2; l++)
        for (int r = 0; r < P; r++) {
            x->a[l] = fmax(x->a[l], fmax(sA[l][r], rA[l][r]));
            x->b[l] = fmax(x->b[l], fmax(sB[l][r], rB[l][r]));
        }
    for (int r = 0; r < P; r++) { /* what rank r sends in each phase: dispatch's direction, or the reverse */
        double sa = sA[0][r] + sA[1][r], ra = rA[0][r] + rA[1][r], sb = sB[0][r] + sB[1][r], rb = rB[0][r] + rB[1][r];
        x->sent[0] = fmax(x->sent[0], sa * (row + 2 * k4) + sb * row);
        x->sent[1] = fmax(x->sent[1], (ra + rb) * row);
        x->sent[2] = fmax(x->sent[2], (sa + sb) * row);
        x->sent[3] = fmax(x->sent[3], rb * row + ra * (row + k4));
    }
    free(mem);
    return 0;
}

/* stage A's calls (rows of `row` bytes), N chunks each */
static double stageA(const rp_cluster_t *cl, const xplan_t *x, double row, int N)
{
    if (x->ng < 2) return 0;
    return N * call_time(cl, RP_CO_ALLTOALL, x->a[0] * row / N, x->a[1] * row / N);
}

static double stageB(const rp_cluster_t *cl, const xplan_t *x, double row, int N)
{
    if (x->gs < 2) return 0;
    return N * call_time(cl, RP_CO_ALLTOALL, x->b[0] * row / N, x->b[1] * row / N);
}

/* ---- compute ---- */

static double gemm_eff(const rp_cluster_t *cl, double m)
{
    int n = cl->ncurve;
    if (n == 0) return 1;
    if (m <= cl->curve_m[0]) return cl->curve_eff[0];
    for (int i = 1; i < n; i++)
        if (m <= cl->curve_m[i]) { /* linear in log(rows) */
            double f = (log(m) - log(cl->curve_m[i - 1])) / (log(cl->curve_m[i]) - log(cl->curve_m[i - 1]));
            return cl->curve_eff[i - 1] + f * (cl->curve_eff[i] - cl->curve_eff[i - 1]);
        }
    return cl->curve_eff[n - 1];
}

/* gflop at m rows per GEMM, us */
static double gemm_time(const rp_cluster_t *cl, double gflop, double m)
{
    if (gflop <= 0) return 0;
    return gflop * 1e3 / (cl->gemm_tflops * gemm_eff(cl, m > 1 ? m : 1)) + cl->overhead_us;
}

/* rows of D elements copied once, us */
static double copy_time(const rp_cluster_t *cl, double rows, long D)
{
    if (rows <= 0) return 0;
    return rows * (double)D * cl->elem_bytes / (cl->copy_gbps * 1e3) + cl->overhead_us;
}

static int strat_id(const char *s)
{
    static const char *const names[] = { "local", "agrs", "tp2ep", "dedup", "hier" };
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}
enum { S_LOCAL, S_AGRS, S_TP2EP, S_DEDUP, S_HIER };

int rp_model(const rp_cluster_t *cl, const rp_mcfg_t *c, rp_pred_t *o, epb_err_t *err)
{
    memset(o, 0, sizeof *o);
    int s = strat_id(c->strategy), P = c->P, N = c->chunks > 0 ? c->chunks : 1;
    if (s < 0) return epb_fail(err, EPB_EUSAGE, "strategy %s: the model has no formula for it", c->strategy);
    if (P < 1 || P > MAXP || c->E % P || c->k < 1 || c->k > c->E)
        return epb_fail(err, EPB_EUSAGE, "P=%d, E=%ld, k=%ld: not a configuration the model takes", P, c->E, c->k);
    int G = cl->gpus_per_node < P ? cl->gpus_per_node : P;
    double b = cl->elem_bytes, T = (double)c->T, D = (double)c->D, F = (double)c->F, E = (double)c->E,
           k = (double)c->k, El = E / P, row = D * b, S[MAXP], smax = 0;
    rp_rank_shares(c->E, c->k, P, c->gamma, S);
    for (int r = 0; r < P; r++) smax = fmax(smax, S[r]);
    double *t = o->t_us, *by = o->bytes, *gf = o->gflop;
    /* rows the busiest owner runs; rows per expert there */
    double R = s == S_LOCAL ? T * k : P * T * k * smax, m = s == S_LOCAL ? T * k / E : R / El;
    gf[PH_ROUTE] = 2 * T * D * E / 1e9;
    gf[PH_ROUTE_BWD] = 4 * T * D * E / 1e9;
    gf[PH_EXPERTS_FWD] = 6 * R * D * F / 1e9;
    gf[PH_EXPERTS_BWD] = 12 * R * D * F / 1e9;
    double sf = (double)c->shared * (double)c->shared_ffn;
    gf[PH_SHARED_FWD] = 6 * T * D * sf / 1e9;
    gf[PH_SHARED_BWD] = 12 * T * D * sf / 1e9;
    t[PH_ROUTE] = gemm_time(cl, gf[PH_ROUTE], T);
    t[PH_ROUTE_BWD] = gemm_time(cl, gf[PH_ROUTE_BWD], T);
    t[PH_SHARED_FWD] = gemm_time(cl, gf[PH_SHARED_FWD], T);
    t[PH_SHARED_BWD] = gemm_time(cl, gf[PH_SHARED_BWD], T);
    t[PH_EXPERTS_FWD] = N * gemm_time(cl, gf[PH_EXPERTS_FWD] / N, m / N);
    t[PH_EXPERTS_BWD] = N * gemm_time(cl, gf[PH_EXPERTS_BWD] / N, m / N);
    /* grad_sync: the router's gradient (f32), the shared experts' three, local's every expert's three */
    double ring = P > 1 ? 2.0 * (P - 1) / P : 0, Bw = ring * D * sf * b;
    by[PH_GRAD_SYNC] = ring * D * E * 4 + (sf > 0 ? 3 * Bw : 0);
    t[PH_GRAD_SYNC] = ring_time(cl, RP_CO_ALLREDUCE, ring * D * E * 4, P, G) +
                      (sf > 0 ? 3 * ring_time(cl, RP_CO_ALLREDUCE, Bw, P, G) : 0);
    /* layout: the all-reduce of tokens_per_expert (int64) and the strategy's count all-to-alls */
    by[PH_LAYOUT] = ring * E * 8;
    t[PH_LAYOUT] = ring_time(cl, RP_CO_ALLREDUCE, ring * E * 8, P, G);
    double U, gate, permb; /* rows copied: unpermute (the owner's), gate (the sums), permute (gathers) */
    if (s == S_LOCAL) {
        double Bx = ring * E * D * F * b;
        by[PH_GRAD_SYNC] += 3 * Bx;
        t[PH_GRAD_SYNC] += 3 * ring_time(cl, RP_CO_ALLREDUCE, Bx, P, G);
        U = 0, gate = T * k + T, permb = T * k;
    } else if (s == S_AGRS) {
        double Bt = (P - 1) * T * row, Bm = (P - 1) * T * k * 4;
        by[PH_DISPATCH] = Bt + 2 * Bm;
        t[PH_DISPATCH] = ring_time(cl, RP_CO_ALLGATHER, Bt, P, G) + 2 * ring_time(cl, RP_CO_ALLGATHER, Bm, P, G);
        by[PH_COMBINE] = by[PH_COMBINE_BWD] = Bt;
        t[PH_COMBINE] = ring_time(cl, RP_CO_REDUCE_SCATTER, Bt, P, G);
        t[PH_COMBINE_BWD] = ring_time(cl, RP_CO_ALLGATHER, Bt, P, G);
        by[PH_DISPATCH_BWD] = Bt + Bm;
        t[PH_DISPATCH_BWD] = ring_time(cl, RP_CO_REDUCE_SCATTER, Bt, P, G) + ring_time(cl, RP_CO_REDUCE_SCATTER, Bm, P, G);
        U = 0, gate = R + P * T, permb = R + P * T;
    } else {
        int ns = s == S_TP2EP ? P : s == S_DEDUP ? 1 : c->node_size > 0 ? c->node_size : G;
        if (ns > P || P % ns) ns = P;
        xplan_t x;
        if (xplan(c, G, ns, S, row, 4 * k, &x)) return epb_fail(err, EPB_ESYS, "out of memory");
        double meta = 8 * k; /* int32 indices and float32 gates per stage-A row */
        by[PH_DISPATCH] = x.sent[0];
        by[PH_COMBINE] = x.sent[1];
        by[PH_COMBINE_BWD] = x.sent[2];
        by[PH_DISPATCH_BWD] = x.sent[3];
        o->bytes_inter[PH_DISPATCH] = x.a[1] * (row + meta) + x.b[1] * row;
        o->bytes_inter[PH_COMBINE] = o->bytes_inter[PH_COMBINE_BWD] = (x.a[1] + x.b[1]) * row;
        o->bytes_inter[PH_DISPATCH_BWD] = x.a[1] * (row + 4 * k) + x.b[1] * row;
        t[PH_DISPATCH] = stageA(cl, &x, row, N) + 2 * stageA(cl, &x, 4 * k, N) + stageB(cl, &x, row, N);
        t[PH_COMBINE] = stageB(cl, &x, row, N) + stageA(cl, &x, row, N);
        t[PH_COMBINE_BWD] = stageA(cl, &x, row, N) + stageB(cl, &x, row, N);
        t[PH_DISPATCH_BWD] = stageB(cl, &x, row, N) + stageA(cl, &x, row, N) + stageA(cl, &x, 4 * k, N);
        /* the count all-to-alls: per other group N (1 + ns El) int64, per other rank of the group N El */
        double cA = x.ng > 1 ? (x.ng - 1) * N * (1 + ns * El) * 8 : 0, cB = ns > 1 ? (ns - 1) * N * El * 8 : 0;
        by[PH_LAYOUT] += cA + cB;
        /* stage A's counts go to other groups (other nodes when a group fills whole nodes), stage B's stay in the
         * group (inside a node when the group fits in one); else they spread as an even all-to-all */
        if (x.ng > 1)
            t[PH_LAYOUT] += ns >= G && ns % G == 0 ? call_time(cl, RP_CO_ALLTOALL, 0, cA)
                                                   : a2a_even_time(cl, cA * (P - 1) / (x.ng - 1), P, G);
        if (ns > 1)
            t[PH_LAYOUT] += ns <= G && G % ns == 0 ? call_time(cl, RP_CO_ALLTOALL, cB, 0)
                                                   : a2a_even_time(cl, cB * (P - 1) / (ns - 1), P, G);
        double src = x.ng > 1 ? x.srcA : T * k; /* the source's gather: stage-A rows, or tp2ep's pairs */
        U = R, gate = R + T, permb = src + R;
    }
    t[PH_PERMUTE] = copy_time(cl, permb, c->D);
    t[PH_UNPERMUTE] = copy_time(cl, U, c->D);
    t[PH_GATE] = copy_time(cl, gate, c->D);
    t[PH_GATE_BWD] = t[PH_GATE];
    t[PH_UNPERMUTE_BWD] = t[PH_UNPERMUTE];
    t[PH_PERMUTE_BWD] = t[PH_PERMUTE];
    /* chunks: chunk i+1's dispatch under chunk i's experts, chunk i's combine under chunk i+1's; the phases keep
     * their exposed part: fill (first dispatch, last combine) plus what each later chunk's comm exceeds its
     * experts by */
    static const int pipe[2][3] = { { PH_DISPATCH, PH_EXPERTS_FWD, PH_COMBINE },
                                    { PH_COMBINE_BWD, PH_EXPERTS_BWD, PH_DISPATCH_BWD } };
    for (int p = 0; N > 1 && s >= S_TP2EP && p < 2; p++) {
        double ci = t[pipe[p][0]] / N, x = t[pipe[p][1]] / N, co = t[pipe[p][2]] / N, over = fmax(0, ci + co - x);
        double wi = ci + co > 0 ? ci / (ci + co) : 0.5;
        t[pipe[p][0]] = ci + (N - 1) * over * wi;
        t[pipe[p][2]] = co + (N - 1) * over * (1 - wi);
    }
    for (int p = 0; p < PH_N; p++) o->step_us += t[p];
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
    /* memcpy: the best median; gemm: by M, the best median of each M */
    double mrate[RP_MAXPTS] = { 0 };
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
            int j;
            for (j = 0; j < c->ncurve && c->curve_m[j] != M; j++) {}
            if (j == c->ncurve) {
                if (c->ncurve == RP_MAXPTS) continue;
                c->curve_m[c->ncurve++] = M;
            }
            mrate[j] = fmax(mrate[j], x->tflops);
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
    for (int j = 0; j < c->ncurve; j++) c->gemm_tflops = fmax(c->gemm_tflops, mrate[j]);
    if (c->gemm_tflops <= 0) return epb_fail(err, EPB_EUSAGE, "the mode=peak gemm rows have no TFLOP/s");
    for (int j = 0; j < c->ncurve; j++) c->curve_eff[j] = fmax(mrate[j] / c->gemm_tflops, 1e-6);
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

/* the model's configuration of a CSV strategy cell */
static int mcfg_of(const rp_cell_t *st, double gamma, rp_mcfg_t *m)
{
    const epb_row_t *r = st->row;
    char buf[64];
    memset(m, 0, sizeof *m);
    snprintf(m->strategy, sizeof m->strategy, "%s", r->op);
    m->chunks = param_of(r->params, "chunks", buf, sizeof buf) ? atoi(buf) : 1;
    m->node_size = param_of(r->params, "node_size", buf, sizeof buf) ? atoi(buf) : 0;
    m->T = r->tokens, m->D = r->hidden, m->F = r->ffn, m->E = r->experts, m->k = r->top_k, m->P = r->ranks;
    m->shared = param_of(r->params, "shared", buf, sizeof buf) ? atoi(buf) : 0;
    m->shared_ffn = param_of(r->params, "shared_ffn", buf, sizeof buf) ? atol(buf) : 0;
    m->gamma = gamma;
    return strat_id(m->strategy) >= 0;
}

/* The configuration's routing skew, from the busiest rank's expert FLOPs of its first expert-parallel strategy. */
static double conf_gamma(const rp_data_t *d, const rp_conf_t *cf)
{
    for (size_t s = 0; s < cf->nstrat; s++) {
        const rp_cell_t *st = cf->strat[s];
        if (!strcmp(st->row->op, "local") || strat_id(st->row->op) < 0) continue;
        const rp_cell_t *x = rp_find(d, cf->cfg, st->strategy, "experts_fwd");
        const epb_row_t *r = st->row;
        if (!x || x->row->gflop <= 0 || r->ranks < 2) continue;
        double smax = x->row->gflop * 1e9 / (6.0 * r->hidden * r->ffn * (double)r->tokens * r->top_k * r->ranks);
        return rp_fit_gamma(r->experts, r->top_k, r->ranks, smax);
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

/* plot: projected step of each strategy over agrs's against P, one block per strategy, for each family's own k */
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
        int ia = -1;
        for (int s = 0; s < fm->nstrat; s++)
            if (!strcmp(fm->scfg[s].strategy, "agrs") && fm->scfg[s].chunks <= 1) ia = s;
        if (ia < 0) continue;
        for (int s = 0; s < fm->nstrat; s++) {
            if (s == ia || !strcmp(fm->scfg[s].strategy, "local")) continue;
            double x[NSP], y[NSP];
            int np = 0;
            for (int i = 0; i < NSP; i++) {
                rp_mcfg_t a = fm->scfg[ia], m = fm->scfg[s];
                a.P = m.P = sweep_P[i];
                a.k = m.k = fm->k0;
                if (m.node_size > m.P || (m.node_size && m.P % m.node_size)) m.node_size = 0;
                rp_pred_t pa, pm;
                epb_err_t e2;
                if (a.E % a.P || rp_model(cl, &a, &pa, &e2) || rp_model(cl, &m, &pm, &e2)) continue;
                x[np] = sweep_P[i];
                y[np++] = pm.step_us / pa.step_us;
            }
            if (!np || nblocks >= MAXBLOCKS) continue; /* no P of the sweep divides E; or the key is full */
            char title[300];
            snprintf(title, sizeof title, "%.60s / agrs, %.160s k=%ld", fm->strat[s], fm->label, fm->k0);
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
    for (int ph = 0; ph <= PH_N; ph++) {
        rp_doc_cell(doc, "%s", ph < PH_N ? rp_model_phases[ph] : "step");
        for (int i = 0; i < n; i++) rp_doc_cell(doc, "%.1f", ph < PH_N ? preds[i].t_us[ph] : preds[i].step_us);
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
            for (int ph = 0; ph < PH_N; ph++) {
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
            for (int ph = 0; ph < PH_N; ph++)
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
        rp_mcfg_t m = { .T = 4096, .D = mm->D, .F = mm->F, .E = mm->E, .k = mm->k, .P = 8, .chunks = 1,
                        .shared = mm->shared, .shared_ffn = mm->Fs };
        fm->base = m;
        fm->k0 = mm->k;
        snprintf(fm->label, sizeof fm->label, "%s (T=4096)", mm->name);
        static const char *const strats[] = { "agrs", "tp2ep", "dedup", "hier" };
        rp_pred_t preds[4];
        const char *names[4];
        int np = 0;
        m.P = mm->E < 64 ? mm->E : 64; /* the per-phase terms at 64 ranks (8 nodes of 8 on a GPU cluster) or E */
        for (int s = 0; s < 4; s++) {
            snprintf(m.strategy, sizeof m.strategy, "%s", strats[s]);
            add_strategy(fm, strats[s], &m);
            epb_err_t e2;
            if (!rp_model(&cl, &m, &preds[np], &e2)) names[np++] = strats[s];
        }
        if (!i) {
            rp_doc_heading(doc, 2, "The --model presets at their published sizes (projected)");
            rp_doc_para(doc, "T=4096 tokens per rank, uniform routing (skew 0; group-limited routing not modelled), "
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
                     "rank); group-limited routing is not modelled.", cl.name, vtext);
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
                    if (m.node_size > P || (m.node_size && P % m.node_size)) m.node_size = 0;
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
