/* The traffic descriptions' common parts (traffic.h): the two routings (a step's, exact; an expected one), the
 * description container, the framework's own collectives, and the routed exchange of tp2ep, dedup and hier
 * (moe/xchg.c's stages, written here again as bytes and rows; bench compares the two on every run). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"
#include "traffic.h"

const char *const moe_co_names[MOE_NCO] = { "alltoall", "allgather", "reduce_scatter", "allreduce" };

/* ---- expert shares and skew ---- */

void moe_expert_shares(int E, int k, double gamma, double *s)
{
    double lo = 0, hi = 1, cap = 1.0 / (double)k;
    for (int e = 0; e < E; e++) s[e] = pow((double)(e + 1), -gamma);
    for (int it = 0; it < 200; it++) { /* grow hi until it over-fills, then bisect */
        double sum = 0;
        for (int e = 0; e < E; e++) sum += fmin(hi * s[e], cap);
        if (sum >= 1) break;
        hi *= 2;
    }
    for (int it = 0; it < 100; it++) {
        double c = 0.5 * (lo + hi), sum = 0;
        for (int e = 0; e < E; e++) sum += fmin(c * s[e], cap);
        if (sum < 1) lo = c; else hi = c;
    }
    double sum = 0;
    for (int e = 0; e < E; e++) sum += (s[e] = fmin(hi * s[e], cap));
    for (int e = 0; e < E; e++) s[e] /= sum;
}

static double max_share(int E, int k, int P, double gamma)
{
    double *s = malloc(sizeof(double) * (size_t)E), m = 0;
    if (!s) return 1.0 / P;
    moe_expert_shares(E, k, gamma, s);
    int El = E / P;
    for (int r = 0; r < P; r++) {
        double S = 0;
        for (int e = r * El; e < (r + 1) * El; e++) S += s[e];
        m = fmax(m, S);
    }
    free(s);
    return m;
}

double moe_fit_gamma(int E, int k, int P, double smax)
{
    if (P < 2 || E % P || smax <= max_share(E, k, P, 0) + 1e-9) return 0;
    double lo = 0, hi = 30;
    if (smax >= max_share(E, k, P, hi)) return hi;
    for (int it = 0; it < 60; it++) {
        double g = 0.5 * (lo + hi);
        if (max_share(E, k, P, g) < smax) lo = g; else hi = g;
    }
    return 0.5 * (lo + hi);
}

double moe_routing_pairs(const moe_routing_t *rt, int s, int o)
{
    int El = rt->E / rt->P;
    double p = 0;
    for (int e = o * El; e < (o + 1) * El; e++) p += rt->pairs_e(rt, s, e);
    return p;
}

double moe_routing_expert_rows(const moe_routing_t *rt, int e)
{
    double p = 0;
    for (int s = 0; s < rt->P; s++) p += rt->pairs_e(rt, s, e);
    return p;
}

/* ---- the expected routing ---- */

typedef struct {
    double *s;      /* (E) expert shares (of the slots, with redundant experts; the kept pairs, with a capacity) */
    int n;          /* the experts a token's k distinct choices are among (the slots' experts) */
    int32_t *place; /* redundant experts: the expert of each slot (rt->place) */
    int32_t *rep_off, *rep_slot; /* and each expert's slots (moe_replica_index) */
    double *ls;     /* (n) the experts' own shares */
    int L;          /* the least common multiple of the replica counts (a token t's slots depend on t mod L) */
    int groups, M;  /* group-limited routing: E/groups experts a group, a token's experts in M of them */
    double *cache;  /* (P+1)^2 lazily: reach by (lo, hi), -1 unknown */
} expected_t;

static double exp_pairs_e(const moe_routing_t *rt, int s, int e)
{
    (void)s;
    const expected_t *x = rt->impl;
    return (double)rt->T * rt->k * x->s[e];
}

/* C(n - m, k) / C(n, k): the chance that k distinct picks among n miss a set of m */
static double miss_ratio(double n, double m, int k)
{
    double r = 1;
    for (int j = 0; j < k; j++) r *= n - m - j > 0 ? (n - m - j) / (n - j) : 0;
    return r;
}

/* Group-limited routing, uniform: a token's M groups are any M of the G groups, its k experts any k of their M g
 * experts. The chance that it misses a set of experts holding x_i of group i's: over the M-subsets of groups
 * (a dynamic programme over the groups on the number chosen and the experts of the set among them), the miss
 * ratio of the set's m experts among the M g candidates. */
static double groups_miss(int E, int k, int G, int M, int e_lo, int e_hi)
{
    int g = E / G, n = M * g;
    double *f = calloc((size_t)(M + 1) * (size_t)(n + 1), sizeof *f), *h = malloc(sizeof *f * (size_t)(M + 1) * (size_t)(n + 1));
    if (!f || !h) { free(f); free(h); return 1; }
#define F(j, m) f[(size_t)(j) * (size_t)(n + 1) + (size_t)(m)]
    F(0, 0) = 1;
    for (int i = 0; i < G; i++) {
        int lo = i * g > e_lo ? i * g : e_lo, hi = (i + 1) * g < e_hi ? (i + 1) * g : e_hi, xi = hi > lo ? hi - lo : 0;
        memcpy(h, f, sizeof *f * (size_t)(M + 1) * (size_t)(n + 1));
        for (int j = 0; j < M; j++) /* group i chosen: from h (before it) */
            for (int m = 0; m + xi <= n; m++)
                if (h[(size_t)j * (size_t)(n + 1) + (size_t)m] > 0) F(j + 1, m + xi) += h[(size_t)j * (size_t)(n + 1) + (size_t)m];
    }
    double tot = 0, miss = 0;
    for (int m = 0; m <= n; m++) tot += F(M, m), miss += F(M, m) * miss_ratio(n, m, k);
#undef F
    free(f);
    free(h);
    return tot > 0 ? miss / tot : 1;
}

static double exp_reach(const moe_routing_t *rt, int s, int lo, int hi)
{
    (void)s;
    expected_t *x = rt->impl;
    if (lo >= hi) return 0;
    size_t key = (size_t)lo * (size_t)(rt->P + 1) + (size_t)hi;
    if (x->cache && x->cache[key] >= 0) return x->cache[key];
    int El = rt->E / rt->P;
    double miss;
    if (x->groups > 1)
        miss = groups_miss(rt->E, rt->k, x->groups, x->M, lo * El, hi * El);
    else if (x->L > 0) { /* redundant experts: a token t's expert e is served by its slot (t mod L) mod n_e
                           * (moe_replica_pick), the same residue for all its experts: per residue, the experts
                           * whose slot lies in the range, by their own shares */
        miss = 0;
        for (int rho = 0; rho < x->L; rho++) {
            double q = 0;
            for (int e = 0; e < x->n; e++) {
                int u = moe_replica_pick(x->rep_off, x->rep_slot, e, rho) / El;
                if (u >= lo && u < hi) q += x->ls[e];
            }
            double m = 1;
            for (int j = 0; j < rt->k; j++) m *= fmax(0, 1 - q * x->n / (double)(x->n - j));
            miss += m / x->L;
        }
    } else { /* k distinct experts, each by the shares: exact for uniform routing, the same product otherwise */
        double q = 0;
        for (int e = lo * El; e < hi * El; e++) q += x->s[e];
        miss = 1;
        for (int j = 0; j < rt->k; j++) miss *= fmax(0, 1 - q * x->n / (double)(x->n - j));
    }
    double v = (double)rt->T * (1 - miss);
    if (x->cache) x->cache[key] = v;
    return v;
}

int moe_routing_expected(moe_routing_t *rt, const moe_config_t *c, int P, int G, double gamma, epb_err_t *err)
{
    memset(rt, 0, sizeof *rt);
    if (P < 1 || c->E % P || c->k < 1 || c->k > c->E)
        return epb_fail(err, EPB_EUSAGE, "P=%d, E=%d, k=%d: not a routing the model takes", P, c->E, c->k);
    expected_t *x = calloc(1, sizeof *x);
    if (!x) return epb_fail(err, EPB_ESYS, "out of memory");
    x->s = malloc(sizeof(double) * (size_t)c->E);
    size_t nc = (size_t)(P + 1) * (size_t)(P + 1);
    x->cache = nc <= ((size_t)1 << 22) ? malloc(sizeof(double) * nc) : NULL; /* 32 MiB at most; else uncached */
    if (!x->s) {
        free(x->cache);
        free(x);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    for (size_t i = 0; x->cache && i < nc; i++) x->cache[i] = -1;
    /* group-limited routing is modelled for uniform routing (skew 0): its groups hold equal shares (without
     * redundant experts, whose slots do not keep the groups' order) */
    x->groups = c->groups > 1 && gamma == 0 && c->redundant == 0 ? c->groups : 1;
    x->M = c->topk_groups;
    x->n = c->E;
    moe_expert_shares(c->E, c->k, gamma, x->s);
    /* an expert capacity keeps at most cap of a rank's T k pairs per expert: the expected share min(s, cap/(T k)) */
    long cap = moe_capacity(c);
    for (int e = 0; cap > 0 && e < c->E; e++) x->s[e] = fmin(x->s[e], (double)cap / ((double)c->T * c->k));
    int Ep = c->E;
    if (c->redundant > 0) { /* the slots: EPLB's placement of the expected loads, each replica an equal share */
        Ep = c->E + c->redundant;
        int64_t *load = malloc(sizeof *load * (size_t)c->E);
        int32_t *off = malloc(sizeof *off * ((size_t)c->E + 1)), *rs = malloc(sizeof *rs * (size_t)Ep);
        double *ss = malloc(sizeof *ss * (size_t)Ep);
        x->place = malloc(sizeof *x->place * (size_t)Ep);
        int bad = !load || !off || !rs || !ss || !x->place || c->redundant % P;
        for (int e = 0; !bad && e < c->E; e++) load[e] = (int64_t)llround(x->s[e] * 1e15);
        if (!bad) bad = moe_redundant_place(load, c->E, c->redundant, P, x->place);
        if (!bad) moe_replica_index(x->place, c->E, c->redundant, off, rs);
        for (int u = 0; !bad && u < Ep; u++) {
            int e = x->place[u];
            ss[u] = x->s[e] / (off[e + 1] - off[e]);
        }
        free(load);
        x->rep_off = off, x->rep_slot = rs;
        x->L = 1; /* the lcm of the replica counts, up to 64 (beyond: the slots taken as independent experts) */
        for (int e = 0; !bad && e < c->E && x->L > 0; e++) {
            long n = off[e + 1] - off[e], a = x->L, b = n;
            while (b) { long t = a % b; a = b, b = t; }
            long l = x->L / a * n;
            x->L = l <= 64 ? (int)l : 0;
        }
        if (bad) {
            free(ss);
            moe_routing_free(&(moe_routing_t){ .impl = x });
            if (c->redundant % P)
                return epb_fail(err, EPB_EUSAGE, "P=%d, %d redundant experts: not a multiple of the ranks", P, c->redundant);
            return epb_fail(err, EPB_ESYS, "out of memory");
        }
        x->ls = x->s; /* the experts' own shares, for the residues of exp_reach */
        x->s = ss;
    }
    *rt = (moe_routing_t){ .P = P, .G = G < 1 ? 1 : G, .T = c->T, .E = Ep, .k = c->k, .exact = 0,
                           .act_bytes = (double)moe_dtype_size(c->dtype), .place = x->place,
                           .pairs_e = exp_pairs_e, .reach = exp_reach, .impl = x };
    return EPB_OK;
}

/* ---- a step's routing ---- */

typedef struct {
    const int32_t *idx; /* (P T k) */
    double *pe;         /* (P E) pairs per source rank and expert */
    int nw, w[4];       /* reach tables kept, for aligned ranges of w[i] ranks */
    double *rw[4];      /* (P * P/w) tokens of s reaching range i */
    int El;
} exact_t;

static double ex_pairs_e(const moe_routing_t *rt, int s, int e)
{
    const exact_t *x = rt->impl;
    return x->pe[(size_t)s * (size_t)rt->E + (size_t)e];
}

/* tokens of s with a pair whose owner lies in [lo, hi), by scanning its tokens */
static double ex_reach_scan(const moe_routing_t *rt, const exact_t *x, int s, int lo, int hi)
{
    long n = 0, k = rt->k;
    for (long t = (long)s * rt->T; t < ((long)s + 1) * rt->T; t++) {
        int hit = 0;
        for (long j = 0; j < k && !hit; j++) {
            int32_t e = x->idx[t * k + j];
            hit = e >= 0 && e / x->El >= lo && e / x->El < hi;
        }
        n += hit;
    }
    return (double)n;
}

static double ex_reach(const moe_routing_t *rt, int s, int lo, int hi)
{
    exact_t *x = rt->impl;
    int P = rt->P, w = hi - lo;
    if (w <= 0) return 0;
    if (P % w || lo % w) return ex_reach_scan(rt, x, s, lo, hi);
    for (int i = 0; i < x->nw; i++)
        if (x->w[i] == w) return x->rw[i][(size_t)s * (size_t)(P / w) + (size_t)(lo / w)];
    if (x->nw == 4) return ex_reach_scan(rt, x, s, lo, hi);
    /* the table for ranges of w ranks: each token counted once per range it reaches */
    double *tab = calloc((size_t)P * (size_t)(P / w), sizeof *tab);
    int *seen = malloc(sizeof(int) * (size_t)(rt->k > 0 ? rt->k : 1));
    if (!tab || !seen) {
        free(tab);
        free(seen);
        return ex_reach_scan(rt, x, s, lo, hi);
    }
    long k = rt->k;
    for (long t = 0; t < (long)P * rt->T; t++) {
        int ns = 0;
        long src = t / rt->T;
        for (long j = 0; j < k; j++) {
            int32_t e = x->idx[t * k + j];
            if (e < 0) continue;
            int g = e / x->El / w, dup = 0;
            for (int q = 0; q < ns; q++) dup |= seen[q] == g;
            if (!dup) seen[ns++] = g, tab[(size_t)src * (size_t)(P / w) + (size_t)g] += 1;
        }
    }
    free(seen);
    x->w[x->nw] = w;
    x->rw[x->nw++] = tab;
    return tab[(size_t)s * (size_t)(P / w) + (size_t)(lo / w)];
}

int moe_routing_exact(moe_routing_t *rt, const moe_config_t *c, int P, int G, const int32_t *topk_idx, epb_err_t *err)
{
    memset(rt, 0, sizeof *rt);
    if (P < 1 || c->E % P) return epb_fail(err, EPB_EUSAGE, "P=%d, E=%d: not a routing", P, c->E);
    if (P > MOE_TRAFFIC_MAXP_EXACT)
        return epb_fail(err, EPB_EUSAGE, "%d ranks: the exact traffic is kept for %d ranks at most", P,
                        MOE_TRAFFIC_MAXP_EXACT);
    exact_t *x = calloc(1, sizeof *x);
    if (!x) return epb_fail(err, EPB_ESYS, "out of memory");
    x->idx = topk_idx;
    x->El = c->E / P;
    x->pe = calloc((size_t)P * (size_t)c->E, sizeof *x->pe);
    if (!x->pe) {
        free(x);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    for (long t = 0; t < (long)P * c->T; t++)
        for (int j = 0; j < c->k; j++) {
            int32_t e = topk_idx[t * c->k + j];
            if (e >= 0 && e < c->E) x->pe[(size_t)(t / c->T) * (size_t)c->E + (size_t)e] += 1;
        }
    *rt = (moe_routing_t){ .P = P, .G = G < 1 ? 1 : G, .T = c->T, .E = c->E, .k = c->k, .exact = 1,
                           .act_bytes = (double)moe_dtype_size(c->dtype),
                           .pairs_e = ex_pairs_e, .reach = ex_reach, .impl = x };
    return EPB_OK;
}

void moe_routing_free(moe_routing_t *rt)
{
    if (!rt->impl) return;
    if (rt->exact) {
        exact_t *x = rt->impl;
        for (int i = 0; i < x->nw; i++) free(x->rw[i]);
        free(x->pe);
    } else {
        expected_t *x = rt->impl;
        free(x->s);
        free(x->cache);
        free(x->place);
        free(x->ls);
        free(x->rep_off);
        free(x->rep_slot);
    }
    free(rt->impl);
    rt->impl = NULL;
}

/* ---- the description ---- */

int moe_traffic_init(moe_traffic_t *t, int P, int G, int E, epb_err_t *err)
{
    memset(t, 0, sizeof *t);
    t->P = P, t->G = G < 1 ? 1 : G, t->E = E;
    t->copy = calloc((size_t)MOE_NPHASES * (size_t)P, sizeof *t->copy);
    t->erows = calloc((size_t)P * (size_t)E, sizeof *t->erows);
    if (!t->copy || !t->erows) {
        moe_traffic_free(t);
        return epb_fail(err, EPB_ESYS, "out of memory (traffic of %d ranks)", P);
    }
    return EPB_OK;
}

void moe_traffic_free(moe_traffic_t *t)
{
    for (int i = 0; i < t->ncalls; i++) free(t->call[i].sent);
    free(t->call);
    free(t->copy);
    free(t->erows);
    memset(t, 0, sizeof *t);
}

int moe_traffic_call(moe_traffic_t *t, int ph, moe_co_t co, int calls)
{
    if (t->ncalls == t->cap) {
        int nc = t->cap ? 2 * t->cap : 16;
        moe_tcall_t *n = realloc(t->call, sizeof *n * (size_t)nc);
        if (!n) return -1;
        t->call = n;
        t->cap = nc;
    }
    double *m = calloc((size_t)4 * (size_t)t->P, sizeof *m);
    if (!m) return -1;
    t->call[t->ncalls] = (moe_tcall_t){ ph, co, calls < 1 ? 1 : calls, m, m + 2 * t->P };
    return t->ncalls++;
}

void moe_traffic_p2p(moe_traffic_t *t, int call, int src, int dst, double bytes)
{
    if (src == dst || bytes <= 0) return;
    moe_tcall_t *c = &t->call[call];
    int l = src / t->G != dst / t->G;
    c->sent[l * t->P + src] += bytes;
    c->recv[l * t->P + dst] += bytes;
}

void moe_traffic_ring(moe_traffic_t *t, int call, int r, double bytes)
{
    t->call[call].sent[r] += bytes;
    t->call[call].recv[r] += bytes;
}

int moe_traffic_allreduce(moe_traffic_t *t, int ph, double n, double es)
{
    if (t->P < 2 || n <= 0) return 0;
    int c = moe_traffic_call(t, ph, MOE_CO_ALLREDUCE, 1);
    if (c < 0) return -1;
    for (int r = 0; r < t->P; r++) moe_traffic_ring(t, c, r, 2.0 * (t->P - 1) / t->P * n * es);
    return 0;
}

double moe_traffic_sent(const moe_traffic_t *t, int ph)
{
    double m = 0;
    for (int r = 0; r < t->P; r++) {
        double s = 0;
        for (int i = 0; i < t->ncalls; i++)
            if (t->call[i].phase == ph) s += t->call[i].sent[r] + t->call[i].sent[t->P + r];
        m = fmax(m, s);
    }
    return m;
}

int moe_traffic_describe(const moe_spec_t *spec, const moe_config_t *c, const moe_routing_t *rt, moe_traffic_t *t,
                         epb_err_t *err)
{
    const moe_strategy_t *st = spec->st;
    if (!st->traffic) return epb_fail(err, EPB_EUSAGE, "strategy %s has no traffic description", st->name);
    moe_config_t pc = *c; /* the experts as the strategy sees them: the slots, with redundant experts */
    pc.E = c->E + c->redundant;
    if (rt->E != pc.E || t->E != pc.E)
        return epb_fail(err, EPB_EUSAGE, "traffic of %d experts and %d redundant: a routing over %d slots needed", c->E,
                        c->redundant, pc.E);
    int P = rt->P, El = pc.E / P, nrep = 0;
    double ab = rt->act_bytes;
    /* the experts' rows: each owner its experts' pairs; a replicated strategy every rank its own tokens' */
    for (int e = 0; e < pc.E; e++)
        for (int s = 0; s < P; s++) {
            int o = st->replicated ? s : e / El;
            t->erows[(size_t)o * (size_t)pc.E + (size_t)e] += rt->pad > 0 && !st->replicated ? rt->pad : rt->pairs_e(rt, s, e);
        }
    for (int e = 0; rt->place && e < c->E; e++) { /* experts of more than one slot */
        int n = 0;
        for (int u = 0; u < pc.E; u++) n += rt->place[u] == e;
        nrep += n > 1;
    }
    /* the framework's own: tokens_per_expert (with a capacity the kept pairs per expert, with redundant experts
     * per slot) summed over the group (layout); the router's gradient, the replicated experts' (their slots' sum),
     * the shared experts' and a replicated strategy's expert gradients (grad_sync) */
    double sn = (double)c->D * c->shared * (double)c->Fs, wn = (double)c->E * (double)c->D * (double)c->F;
    double nl = (double)c->E * (c->capacity_factor > 0 ? 2 : 1) + (c->redundant > 0 ? pc.E : 0);
    if (moe_traffic_allreduce(t, MOE_PH_LAYOUT, nl, 8) || moe_traffic_allreduce(t, MOE_PH_GRAD_SYNC, (double)c->D * c->E, 4) ||
        (nrep && moe_traffic_allreduce(t, MOE_PH_GRAD_SYNC, 3.0 * nrep * (double)c->D * (double)c->F, ab)))
        return epb_fail(err, EPB_ESYS, "out of memory");
    for (int i = 0; st->replicated && i < 3; i++)
        if (moe_traffic_allreduce(t, MOE_PH_GRAD_SYNC, wn, ab)) return epb_fail(err, EPB_ESYS, "out of memory");
    for (int i = 0; sn > 0 && i < 3; i++)
        if (moe_traffic_allreduce(t, MOE_PH_GRAD_SYNC, sn, ab)) return epb_fail(err, EPB_ESYS, "out of memory");
    if (st->traffic(spec, &pc, rt, t)) return epb_fail(err, EPB_ESYS, "out of memory");
    /* the backward's data movement mirrors the forward's */
    static const int mirror[][2] = { { MOE_PH_PERMUTE, MOE_PH_PERMUTE_BWD }, { MOE_PH_UNPERMUTE, MOE_PH_UNPERMUTE_BWD },
                                     { MOE_PH_GATE, MOE_PH_GATE_BWD } };
    for (int i = 0; i < 3; i++)
        memcpy(t->copy + (size_t)mirror[i][1] * (size_t)P, t->copy + (size_t)mirror[i][0] * (size_t)P, sizeof(double) * (size_t)P);
    return EPB_OK;
}

/* ---- the routed exchange (moe/xchg.c) ---- */

int moe_traffic_xchg(const moe_config_t *c, const moe_routing_t *rt, int ns, int N, moe_traffic_t *t)
{
    int P = rt->P, k = c->k, El = c->E / P;
    if (ns < 1 || ns > P || P % ns) ns = P; /* as xchg_setup: a group size that does not divide P is one group */
    int ng = P / ns, A = ng > 1, B = ns > 1;
    double row = (double)c->D * rt->act_bytes, k4 = 4.0 * k, T = (double)rt->T,
           drow = moe_dispatch_row_bytes(c, rt->act_bytes); /* a dispatched row (FP8 with --dispatch-dtype fp8) */
    /* the count exchanges: stage A's per other group and chunk (rows, then pairs per (index, local expert)),
     * stage B's per other rank of the group and chunk (pairs per local expert) */
    if (A) {
        int q = moe_traffic_call(t, MOE_PH_LAYOUT, MOE_CO_ALLTOALL, 1);
        if (q < 0) return -1;
        for (int r = 0; r < P; r++)
            for (int g = 0; g < ng; g++) moe_traffic_p2p(t, q, r, g * ns + r % ns, (double)N * (1 + ns * El) * 8);
    }
    if (B) {
        int q = moe_traffic_call(t, MOE_PH_LAYOUT, MOE_CO_ALLTOALL, 1);
        if (q < 0) return -1;
        for (int r = 0; r < P; r++)
            for (int o = (r / ns) * ns; o < (r / ns + 1) * ns; o++) moe_traffic_p2p(t, q, r, o, (double)N * El * 8);
    }
    /* the calls, in the order xchg.c makes them */
    int dA = -1, dAi = -1, dAg = -1, dB = -1, cB = -1, cA = -1, bA = -1, bB = -1, xB = -1, xA = -1, xAg = -1;
    if (A && ((dA = moe_traffic_call(t, MOE_PH_DISPATCH, MOE_CO_ALLTOALL, N)) < 0 ||
              (dAi = moe_traffic_call(t, MOE_PH_DISPATCH, MOE_CO_ALLTOALL, N)) < 0 ||
              (dAg = moe_traffic_call(t, MOE_PH_DISPATCH, MOE_CO_ALLTOALL, N)) < 0))
        return -1;
    if (B && (dB = moe_traffic_call(t, MOE_PH_DISPATCH, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (B && (cB = moe_traffic_call(t, MOE_PH_COMBINE, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (A && (cA = moe_traffic_call(t, MOE_PH_COMBINE, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (A && (bA = moe_traffic_call(t, MOE_PH_COMBINE_BWD, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (B && (bB = moe_traffic_call(t, MOE_PH_COMBINE_BWD, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (B && (xB = moe_traffic_call(t, MOE_PH_DISPATCH_BWD, MOE_CO_ALLTOALL, N)) < 0) return -1;
    if (A && ((xA = moe_traffic_call(t, MOE_PH_DISPATCH_BWD, MOE_CO_ALLTOALL, N)) < 0 ||
              (xAg = moe_traffic_call(t, MOE_PH_DISPATCH_BWD, MOE_CO_ALLTOALL, N)) < 0))
        return -1;
    for (int r = 0; r < P; r++) {
        int g0 = r / ns, li = r % ns;
        double nsA = 0, relay_pairs = 0, relay_rows = 0, R = 0, own_pairs = 0;
        for (int e = r * El; e < (r + 1) * El; e++) R += rt->pad > 0 ? P * rt->pad : moe_routing_expert_rows(rt, e);
        if (A) /* stage A, r as a source: a token once to each group it needs, to the relay of r's index there */
            for (int g = 0; g < ng; g++) {
                double rows = rt->reach(rt, r, g * ns, (g + 1) * ns);
                int relay = g * ns + li;
                nsA += rows;
                moe_traffic_p2p(t, dA, r, relay, rows * drow);
                moe_traffic_p2p(t, dAi, r, relay, rows * k4);
                moe_traffic_p2p(t, dAg, r, relay, rows * k4);
                moe_traffic_p2p(t, cA, relay, r, rows * row);
                moe_traffic_p2p(t, bA, r, relay, rows * row);
                moe_traffic_p2p(t, xA, relay, r, rows * row);
                moe_traffic_p2p(t, xAg, relay, r, rows * k4);
            }
        /* r as a relay: the rows of every source of its index (its own tokens among them) that reach its group */
        for (int s = li; s < P; s += ns) relay_rows += A ? rt->reach(rt, s, g0 * ns, (g0 + 1) * ns) : (s == r ? T : 0);
        /* stage B, r as a relay: those sources' pairs to each owner of its group */
        for (int o = g0 * ns; o < (g0 + 1) * ns; o++) {
            double pb = 0;
            for (int s = li; s < P; s += ns) /* padded: El blocks of the capacity */
                pb += A || s == r ? (rt->pad > 0 ? El * rt->pad : moe_routing_pairs(rt, s, o)) : 0;
            relay_pairs += pb;
            if (!B) continue;
            moe_traffic_p2p(t, dB, r, o, pb * drow);
            moe_traffic_p2p(t, cB, o, r, pb * row);
            moe_traffic_p2p(t, bB, r, o, pb * row);
            moe_traffic_p2p(t, xB, o, r, pb * row);
        }
        for (int o = 0; o < P; o++) own_pairs += moe_routing_pairs(rt, r, o);
        /* rows copied (a row of D elements read and written once): the source's gather of what it sends, the
         * relay's gather of its pairs, the owner's gather into expert order; the owner's regrouping back; the gates
         * and sums where they are applied (tp2ep: the source over its pairs; else the relay, and the source's
         * sum of one partial per group) */
        moe_traffic_copy(t, MOE_PH_PERMUTE, r, (A ? nsA : 0) + (B ? relay_pairs : 0) + R);
        moe_traffic_copy(t, MOE_PH_UNPERMUTE, r, B ? R : 0);
        moe_traffic_copy(t, MOE_PH_GATE, r, A ? (B ? relay_pairs : R) + relay_rows + nsA + T : own_pairs + T);
    }
    return 0;
}
