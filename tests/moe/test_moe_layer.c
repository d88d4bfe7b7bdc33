/* The MoE layer against an independent double-precision plain-loop reference (moe_ref.c):
 * - finite differences of loss = sum(y*dy) in double for every input and weight (x, Wr, w1, w3, w2, and the shared
 *   experts' sw1, sw3, sw2) check the reference's analytic gradients, and the BLAS layer's float gradients are
 *   checked against those, for both routers with and without renormalisation, and for each feature of published
 *   models alone and all together: gate before the experts, route scale, group-limited routing, shared experts;
 * - the BLAS layer against the reference on fresh random inputs of odd sizes (float32, relative error
 *   max|a-b|/max|b| < 1e-5; NaN fails), including T = 1, a skew that leaves experts empty, and the features;
 * - group-limited routing: no token chooses an expert outside its M best groups (recomputed here from the saved
 *   scores), and the limit really binds (some token's unlimited top-k would have left its groups). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"
#include "strategy.h"
#include "moe_ref.h"
#include "tap.h"

/* max|a-b| / max|b|; infinite when a holds a NaN or inf, so every "< tol" comparison fails */
static double relerr_fd(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num > 0 ? INFINITY : 0;
}
static double relerr_dd(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num > 0 ? INFINITY : 0;
}

static double *to_double(const float *f, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* a float layer and the same parameters in double */
typedef struct {
    moe_run_t L; /* the single-device layer: strategy local on one rank */
    double *x, *Wr, *bias, *w1, *w3, *w2, *dy, *sw1, *sw3, *sw2;
    ref_in_t in;
} pair_t;

static int pair_make(pair_t *p, const moe_config_t *c, long N, moe_backend_t *be, double bias_scale)
{
    epb_err_t err;
    memset(p, 0, sizeof *p);
    moe_config_t cn = *c;
    cn.T = N;
    if (moe_run_create_single(&p->L, &cn, be, &err)) {
        printf("# set-up failed: %s\n", err.msg);
        return -1;
    }
    for (int e = 0; e < c->E; e++) p->L.bias[e] = (float)(bias_scale * epb_uniform(c->seed, 99, (uint64_t)e));
    size_t D = (size_t)c->D, F = (size_t)c->F, E = (size_t)c->E;
    p->x = to_double(p->L.x, (size_t)N * D);
    p->Wr = to_double(p->L.Wr, D * E);
    p->bias = to_double(p->L.bias, E);
    p->w1 = to_double(p->L.w1, E * D * F);
    p->w3 = to_double(p->L.w3, E * D * F);
    p->w2 = to_double(p->L.w2, E * F * D);
    p->dy = to_double(p->L.dy, (size_t)N * D);
    size_t sn = D * (size_t)c->shared * (size_t)c->Fs;
    if (sn) {
        p->sw1 = to_double(p->L.sw1, sn);
        p->sw3 = to_double(p->L.sw3, sn);
        p->sw2 = to_double(p->L.sw2, sn);
    }
    p->in = (ref_in_t){ c, N, p->x, p->Wr, p->bias, p->w1, p->w3, p->w2, p->sw1, p->sw3, p->sw2 };
    return 0;
}

static void pair_free(pair_t *p)
{
    moe_run_destroy(&p->L);
    free(p->x), free(p->Wr), free(p->bias), free(p->w1), free(p->w3), free(p->w2), free(p->dy);
    free(p->sw1), free(p->sw3), free(p->sw2);
}

static int run_layer(moe_run_t *L)
{
    epb_err_t err;
    int rc = moe_run_step(L, &err);
    if (rc) printf("# layer failed: %s\n", err.msg);
    return rc;
}

static double ref_loss(pair_t *p, double *y, int32_t *idx, double *gate, int64_t *cnt)
{
    double margin, loss = 0;
    ref_forward(y, idx, gate, cnt, &margin, &p->in);
    for (long i = 0; i < p->in.N * p->in.c->D; i++) loss += y[i] * p->dy[i];
    return loss;
}

/* FD of the double reference vs its analytic gradients, and the float layer's gradients vs both, on a tiny layer
 * (T=5, D=4, F=5, E=4, k=2 unless c says otherwise) with c's router and features */
static void check_gradients(moe_backend_t *be, const char *tag, moe_config_t c)
{
    long N = c.T;
    pair_t p;
    double margin = 0;
    /* a seed whose selection is far from a tie, so small perturbations never change it */
    for (c.seed = 1; c.seed < 200; c.seed++) {
        if (pair_make(&p, &c, N, be, 0.05)) return;
        double *y = malloc(sizeof(double) * (size_t)(N * c.D)), g[64];
        int32_t idx[64];
        int64_t cnt[16];
        ref_forward(y, idx, g, cnt, &margin, &p.in);
        free(y);
        if (margin > 2e-3) break;
        pair_free(&p);
    }
    TAP_OK(margin > 2e-3, "%s: found inputs with a top-k margin of %.3g (seed %llu)", tag, margin,
           (unsigned long long)c.seed);
    size_t D = (size_t)c.D, F = (size_t)c.F, E = (size_t)c.E, nx = (size_t)N * D, sn = D * c.shared * c.Fs;
    double *dx = malloc(nx * sizeof *dx), *dWr = malloc(D * E * sizeof *dWr), *dw1 = malloc(E * D * F * sizeof *dw1),
           *dw3 = malloc(E * D * F * sizeof *dw3), *dw2 = malloc(E * F * D * sizeof *dw2),
           *dsw1 = malloc((sn + 1) * sizeof *dsw1), *dsw3 = malloc((sn + 1) * sizeof *dsw3),
           *dsw2 = malloc((sn + 1) * sizeof *dsw2);
    ref_backward(dx, dWr, dw1, dw3, dw2, dsw1, dsw3, dsw2, p.dy, &p.in);
    TAP_OK(run_layer(&p.L) == 0, "%s: BLAS layer forward+backward runs", tag);
    struct { const char *name; double *param, *ref_grad; const float *grad; size_t n; } t[] = {
        { "x", p.x, dx, p.L.dx, nx },           { "Wr", p.Wr, dWr, p.L.dWr, D * E },
        { "w1", p.w1, dw1, p.L.dw1, E * D * F }, { "w3", p.w3, dw3, p.L.dw3, E * D * F },
        { "w2", p.w2, dw2, p.L.dw2, E * F * D }, { "shared_w1", p.sw1, dsw1, p.L.dsw1, sn },
        { "shared_w3", p.sw3, dsw3, p.L.dsw3, sn }, { "shared_w2", p.sw2, dsw2, p.L.dsw2, sn },
    };
    double *y = malloc(nx * sizeof *y), gate[64];
    int32_t idx[64], idx0[64];
    int64_t cnt[16];
    ref_loss(&p, y, idx0, gate, cnt);
    for (size_t i = 0; i < sizeof t / sizeof *t - (sn ? 0 : 3); i++) {
        double *fd = malloc(t[i].n * sizeof *fd), h = 1e-5;
        int same_sel = 1;
        for (size_t j = 0; j < t[i].n; j++) {
            double v = t[i].param[j];
            t[i].param[j] = v + h;
            double lp = ref_loss(&p, y, idx, gate, cnt);
            same_sel &= !memcmp(idx, idx0, sizeof(int32_t) * (size_t)(N * c.k));
            t[i].param[j] = v - h;
            double lm = ref_loss(&p, y, idx, gate, cnt);
            same_sel &= !memcmp(idx, idx0, sizeof(int32_t) * (size_t)(N * c.k));
            t[i].param[j] = v;
            fd[j] = (lp - lm) / (2 * h);
        }
        double e_ref = relerr_dd(t[i].ref_grad, fd, t[i].n), e_blas = relerr_fd(t[i].grad, fd, t[i].n);
        TAP_OK(same_sel && e_ref < 1e-7, "%s: d%s reference vs finite differences (double): rel err %.2e", tag,
               t[i].name, e_ref);
        TAP_OK(e_blas < 1e-5, "%s: d%s BLAS layer (float) vs finite differences: rel err %.2e", tag, t[i].name,
               e_blas);
        free(fd);
    }
    free(y), free(dx), free(dWr), free(dw1), free(dw3), free(dw2), free(dsw1), free(dsw3), free(dsw2);
    pair_free(&p);
}

/* the BLAS layer against the reference: every output and gradient, routing and counts */
static void check_against_ref(moe_backend_t *be, const char *tag, moe_config_t c, long N, double bias_scale)
{
    pair_t p;
    if (pair_make(&p, &c, N, be, bias_scale)) {
        TAP_OK(0, "%s: set-up", tag);
        return;
    }
    size_t D = (size_t)c.D, F = (size_t)c.F, E = (size_t)c.E, k = (size_t)c.k, nx = (size_t)N * D,
           sn = D * c.shared * c.Fs;
    double *y = malloc(nx * sizeof *y), *gate = malloc((size_t)N * k * sizeof *gate), margin;
    int32_t *idx = malloc((size_t)N * k * sizeof *idx);
    int64_t *cnt = malloc(E * sizeof *cnt);
    ref_forward(y, idx, gate, cnt, &margin, &p.in);
    double *dx = malloc(nx * sizeof *dx), *dWr = malloc(D * E * sizeof *dWr), *dw1 = malloc(E * D * F * sizeof *dw1),
           *dw3 = malloc(E * D * F * sizeof *dw3), *dw2 = malloc(E * F * D * sizeof *dw2),
           *dsw1 = malloc((sn + 1) * sizeof *dsw1), *dsw3 = malloc((sn + 1) * sizeof *dsw3),
           *dsw2 = malloc((sn + 1) * sizeof *dsw2);
    ref_backward(dx, dWr, dw1, dw3, dw2, dsw1, dsw3, dsw2, p.dy, &p.in);
    TAP_OK(run_layer(&p.L) == 0, "%s: layer runs", tag);
    int same_idx = !memcmp(idx, p.L.topk_idx, (size_t)N * k * sizeof *idx);
    int same_cnt = !memcmp(cnt, p.L.counts, E * sizeof *cnt);
    int64_t total = 0;
    for (size_t e = 0; e < E; e++) total += p.L.counts[e];
    TAP_OK(same_idx, "%s: topk_idx matches the reference (margin %.2g)", tag, margin);
    TAP_OK(same_cnt && total == N * c.k, "%s: counts match and sum to T*k = %ld", tag, N * c.k);
    struct { const char *name; const float *a; const double *b; size_t n; } t[] = {
        { "y", p.L.y, y, nx }, { "topk_w", p.L.topk_w, gate, (size_t)N * k }, { "dx", p.L.dx, dx, nx },
        { "dWr", p.L.dWr, dWr, D * E }, { "dw1", p.L.dw1, dw1, E * D * F }, { "dw3", p.L.dw3, dw3, E * D * F },
        { "dw2", p.L.dw2, dw2, E * F * D }, { "d_shared_w1", p.L.dsw1, dsw1, sn },
        { "d_shared_w3", p.L.dsw3, dsw3, sn }, { "d_shared_w2", p.L.dsw2, dsw2, sn },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t - (sn ? 0 : 3); i++) {
        double r = relerr_fd(t[i].a, t[i].b, t[i].n);
        TAP_OK(r < 1e-5, "%s: %s vs reference: rel err %.2e", tag, t[i].name, r);
    }
    free(y), free(gate), free(idx), free(cnt), free(dx), free(dWr), free(dw1), free(dw3), free(dw2), free(dsw1),
        free(dsw3), free(dsw2);
    pair_free(&p);
}

/* Group-limited routing on a DeepSeek-V3-shaped router (E=32 in 8 groups, 3 kept, k=4, sigmoid, a skew that makes
 * the low groups hot): from the scores the layer saved, every token's M best groups (a group's score: the sum of its
 * two best biased scores) hold all of its choices; and for some tokens the unlimited top-k would have reached
 * another group, so the limit is really applied. */
static void check_groups(moe_backend_t *be)
{
    moe_config_t c = moe_config_default();
    c.T = 200, c.D = 16, c.F = 8, c.E = 32, c.k = 4, c.router = MOE_SIGMOID, c.route_norm = true, c.skew = 0.3;
    c.groups = 8, c.topk_groups = 3, c.seed = 31;
    pair_t p;
    if (pair_make(&p, &c, c.T, be, 0.05) || run_layer(&p.L)) {
        TAP_OK(0, "groups: set-up");
        return;
    }
    int E = c.E, gsz = E / c.groups, outside = 0, binds = 0;
    for (long t = 0; t < c.T; t++) {
        const float *sc = p.L.scores + t * E;
        double gs[8], v[32];
        for (int e = 0; e < E; e++) v[e] = (double)sc[e] + p.L.bias[e];
        for (int g = 0; g < c.groups; g++) {
            double b1 = -INFINITY, b2 = -INFINITY;
            for (int e = g * gsz; e < (g + 1) * gsz; e++)
                if (v[e] > b1) b2 = b1, b1 = v[e];
                else if (v[e] > b2) b2 = v[e];
            gs[g] = b1 + b2;
        }
        int keep[8] = { 0 };
        for (int m = 0; m < c.topk_groups; m++) {
            int best = -1;
            for (int g = 0; g < c.groups; g++)
                if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
            keep[best] = 1;
        }
        for (int j = 0; j < c.k; j++) outside += !keep[p.L.topk_idx[t * c.k + j] / gsz];
        /* the unlimited top-k: any of its experts outside the kept groups? */
        int taken[32] = { 0 };
        for (int j = 0; j < c.k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || v[e] > v[best])) best = e;
            taken[best] = 1;
            if (!keep[best / gsz]) { binds++; break; }
        }
    }
    TAP_OK(outside == 0, "groups 3 of 8: no token chooses outside its 3 best groups (%d choices outside)", outside);
    TAP_OK(binds > 0, "groups 3 of 8: the limit binds: %d of %ld tokens' unlimited top-4 leave their groups", binds, c.T);
    pair_free(&p);
}

int main(void)
{
    moe_backend_t *be;
    epb_err_t err;
    if (moe_cpu_backend_create(&be, &err)) {
        TAP_OK(0, "cpu backend: %s", err.msg);
        return tap_done();
    }
    moe_config_t g = moe_config_default();
    g.T = 5, g.D = 4, g.F = 5, g.E = 4, g.k = 2, g.skew = 0.3;
    for (int r = 0; r < 2; r++)
        for (int n = 0; n < 2; n++) {
            moe_config_t gc = g;
            gc.router = r ? MOE_SIGMOID : MOE_SOFTMAX, gc.route_norm = n;
            check_gradients(be, r ? (n ? "sigmoid+norm" : "sigmoid") : (n ? "softmax+norm" : "softmax"), gc);
        }
    /* the features of published models, alone and together */
    moe_config_t f = g;
    f.gate_before = true;
    check_gradients(be, "gate-before softmax", f);
    f.router = MOE_SIGMOID, f.route_norm = true;
    check_gradients(be, "gate-before sigmoid+norm", f);
    f = g, f.router = MOE_SIGMOID, f.route_norm = true, f.route_scale = 2.5;
    check_gradients(be, "route-scale 2.5 sigmoid+norm", f);
    f = g, f.route_scale = 0.6;
    check_gradients(be, "route-scale 0.6 softmax", f);
    f = g, f.groups = 2, f.topk_groups = 1;
    check_gradients(be, "groups 1 of 2 softmax", f);
    f = g, f.shared = 2, f.Fs = 3;
    check_gradients(be, "2 shared experts of FFN 3", f);
    f = g, f.E = 8, f.router = MOE_SIGMOID, f.route_norm = true, f.route_scale = 2.5, f.groups = 4, f.topk_groups = 2,
    f.gate_before = true, f.shared = 2, f.Fs = 3;
    check_gradients(be, "all: sigmoid+norm, scale 2.5, groups 2 of 4, gate-before, 2 shared", f);

    moe_config_t c = moe_config_default();
    c.T = 37, c.D = 24, c.F = 40, c.E = 6, c.k = 3, c.seed = 12345;
    check_against_ref(be, "softmax E=6 k=3 T=37", c, c.T, 0.01);
    c.router = MOE_SIGMOID, c.route_norm = true, c.seed = 777;
    check_against_ref(be, "sigmoid+norm E=6 k=3 T=37", c, c.T, 0.01);
    c.k = 1, c.seed = 3, c.route_norm = false; /* with renormalisation k=1 has gate 1 and dWr exactly 0 */
    check_against_ref(be, "k=1", c, c.T, 0);
    c.k = c.E, c.router = MOE_SOFTMAX, c.seed = 4;
    check_against_ref(be, "k=E", c, c.T, 0);
    c.k = 2, c.T = 1, c.seed = 5;
    check_against_ref(be, "T=1", c, 1, 0);
    c.T = 29, c.skew = 20, c.seed = 6; /* experts 2.. get nothing: their rows are empty */
    check_against_ref(be, "skew=20 (empty experts)", c, c.T, 0);
    pair_t p;
    if (!pair_make(&p, &c, c.T, be, 0) && !run_layer(&p.L)) {
        int64_t rest = 0;
        for (int e = 2; e < c.E; e++) rest += p.L.counts[e];
        TAP_OK(p.L.counts[0] == c.T && p.L.counts[1] == c.T && rest == 0, "skew=20 leaves experts 2..5 empty "
               "(counts %lld %lld, rest %lld)", (long long)p.L.counts[0], (long long)p.L.counts[1], (long long)rest);
        pair_free(&p);
    }
    /* the features against the reference on odd sizes */
    c = moe_config_default();
    c.T = 37, c.D = 24, c.F = 40, c.E = 8, c.k = 3, c.seed = 21;
    c.gate_before = true;
    check_against_ref(be, "gate-before softmax E=8 k=3", c, c.T, 0.01);
    c.gate_before = false, c.router = MOE_SIGMOID, c.route_norm = true, c.route_scale = 2.5, c.seed = 22;
    check_against_ref(be, "route-scale 2.5 sigmoid+norm", c, c.T, 0.01);
    c.route_scale = 1, c.route_norm = false, c.groups = 4, c.topk_groups = 2, c.seed = 23;
    check_against_ref(be, "groups 2 of 4, sigmoid k=3", c, c.T, 0.01);
    c.groups = c.topk_groups = 1, c.router = MOE_SOFTMAX, c.shared = 3, c.Fs = 16, c.seed = 24;
    check_against_ref(be, "3 shared experts of FFN 16", c, c.T, 0.01);
    c.router = MOE_SIGMOID, c.route_norm = true, c.route_scale = 2.5, c.groups = 4, c.topk_groups = 2,
    c.gate_before = true, c.shared = 1, c.Fs = 20, c.skew = 0.5, c.seed = 25;
    check_against_ref(be, "all features (DeepSeek-V3-like router, gate-before, shared)", c, c.T, 0.01);
    check_groups(be);
    TAP_OK(be->cur_bytes == 0 && be->peak_bytes > 0, "every backend allocation freed (peak %zu bytes)",
           be->peak_bytes);
    moe_backend_destroy(be);
    return tap_done();
}
