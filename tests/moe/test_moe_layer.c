/* The MoE layer against an independent double-precision plain-loop reference (moe_ref.c):
 * - finite differences of loss = sum(y*dy) in double for every input and weight (x, Wr, w1, w3, w2) check the
 *   reference's analytic gradients, and the BLAS layer's float gradients are checked against those, for both
 *   routers with and without renormalisation;
 * - the BLAS layer against the reference on fresh random inputs of odd sizes (float32, relative error
 *   max|a-b|/max|b| < 1e-5; NaN fails), including T = 1 and a skew that leaves experts empty. */
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
    double *x, *Wr, *bias, *w1, *w3, *w2, *dy;
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
    p->in = (ref_in_t){ c, N, p->x, p->Wr, p->bias, p->w1, p->w3, p->w2 };
    return 0;
}

static void pair_free(pair_t *p)
{
    moe_run_destroy(&p->L);
    free(p->x), free(p->Wr), free(p->bias), free(p->w1), free(p->w3), free(p->w2), free(p->dy);
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

/* FD of the double reference vs its analytic gradients, and the float layer's gradients vs both */
static void check_gradients(moe_backend_t *be, moe_router_t router, bool norm)
{
    const char *tag = router == MOE_SOFTMAX ? (norm ? "softmax+norm" : "softmax") : (norm ? "sigmoid+norm" : "sigmoid");
    moe_config_t c = { .T = 5, .D = 4, .F = 5, .E = 4, .k = 2, .router = router, .route_norm = norm,
                       .skew = 0.3, .bias_coeff = 1e-3, .dtype = MOE_F32 };
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
    size_t D = (size_t)c.D, F = (size_t)c.F, E = (size_t)c.E, nx = (size_t)N * D;
    double *dx = malloc(nx * sizeof *dx), *dWr = malloc(D * E * sizeof *dWr), *dw1 = malloc(E * D * F * sizeof *dw1),
           *dw3 = malloc(E * D * F * sizeof *dw3), *dw2 = malloc(E * F * D * sizeof *dw2);
    ref_backward(dx, dWr, dw1, dw3, dw2, p.dy, &p.in);
    TAP_OK(run_layer(&p.L) == 0, "%s: BLAS layer forward+backward runs", tag);
    struct { const char *name; double *param, *ref_grad; const float *grad; size_t n; } t[] = {
        { "x", p.x, dx, p.L.dx, nx },           { "Wr", p.Wr, dWr, p.L.dWr, D * E },
        { "w1", p.w1, dw1, p.L.dw1, E * D * F }, { "w3", p.w3, dw3, p.L.dw3, E * D * F },
        { "w2", p.w2, dw2, p.L.dw2, E * F * D },
    };
    double *y = malloc(nx * sizeof *y), gate[64];
    int32_t idx[64], idx0[64];
    int64_t cnt[16];
    ref_loss(&p, y, idx0, gate, cnt);
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
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
    free(y), free(dx), free(dWr), free(dw1), free(dw3), free(dw2);
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
    size_t D = (size_t)c.D, F = (size_t)c.F, E = (size_t)c.E, k = (size_t)c.k, nx = (size_t)N * D;
    double *y = malloc(nx * sizeof *y), *gate = malloc((size_t)N * k * sizeof *gate), margin;
    int32_t *idx = malloc((size_t)N * k * sizeof *idx);
    int64_t *cnt = malloc(E * sizeof *cnt);
    ref_forward(y, idx, gate, cnt, &margin, &p.in);
    double *dx = malloc(nx * sizeof *dx), *dWr = malloc(D * E * sizeof *dWr), *dw1 = malloc(E * D * F * sizeof *dw1),
           *dw3 = malloc(E * D * F * sizeof *dw3), *dw2 = malloc(E * F * D * sizeof *dw2);
    ref_backward(dx, dWr, dw1, dw3, dw2, p.dy, &p.in);
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
        { "dw2", p.L.dw2, dw2, E * F * D },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        double r = relerr_fd(t[i].a, t[i].b, t[i].n);
        TAP_OK(r < 1e-5, "%s: %s vs reference: rel err %.2e", tag, t[i].name, r);
    }
    free(y), free(gate), free(idx), free(cnt), free(dx), free(dWr), free(dw1), free(dw3), free(dw2);
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
    for (int r = 0; r < 2; r++)
        for (int n = 0; n < 2; n++) check_gradients(be, r ? MOE_SIGMOID : MOE_SOFTMAX, n);

    moe_config_t c = { .T = 37, .D = 24, .F = 40, .E = 6, .k = 3, .router = MOE_SOFTMAX, .skew = 0,
                       .bias_coeff = 1e-3, .seed = 12345, .dtype = MOE_F32 };
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
    TAP_OK(be->cur_bytes == 0 && be->peak_bytes > 0, "every backend allocation freed (peak %zu bytes)",
           be->peak_bytes);
    moe_backend_destroy(be);
    return tap_done();
}
