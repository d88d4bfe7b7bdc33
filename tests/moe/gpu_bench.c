/* GPU ceilings of the MoE ops, for ci/gpu: prints one line per measurement, "name value unit target verdict".
 *   gemm:      experts_forward+backward with grouped GEMMs (E experts, T*k rows spread evenly; SwiGLU included)
 *              against ONE dense cuBLAS GEMM of the same FLOPs (18*R*D*F: M=R, K=D, N=9F), same handle and math
 *              mode                                                                          target >= 0.70
 *              (also shown: the same rows through one expert, the per-expert path with dense GEMMs per phase)
 *   permute:   permute_forward bandwidth (rows read + written) against a device-to-device copy of the same bytes
 *   combine:   combine_forward (unpermute+combine) likewise                                 targets >= 0.60
 * bf16. Sizes: T tokens (per rank), D, F, E, k from argv (defaults 8192 4096 2048 16 2). Exit 0 when every
 * target is met, 1 otherwise, 77 without a GPU. Timings with cudaEvents through the backend's event ops, the
 * median of 20 after 3 warm-ups. */
#include <stdlib.h>
#include <string.h>

#include "moe.h"

#define REPS 20

static moe_backend_t *G;

static void die(const char *what)
{
    fprintf(stderr, "gpu_bench: %s: %s\n", what, G->err.msg);
    exit(3);
}
static void *dalloc(size_t bytes)
{
    void *p = G->ops->alloc(G, bytes);
    if (!p || G->ops->zero(G, p, bytes)) die("alloc");
    return p;
}
static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef int (*work_fn)(void *arg);
static double time_us(work_fn f, void *arg)
{
    moe_event_t *a, *b;
    double t[REPS];
    if (G->ops->event_create(G, &a) || G->ops->event_create(G, &b)) die("events");
    for (int i = 0; i < 3; i++)
        if (f(arg)) die("warm-up");
    for (int i = 0; i < REPS; i++) {
        if (G->ops->event_record(G, a) || f(arg) || G->ops->event_record(G, b) ||
            G->ops->event_elapsed_us(G, a, b, &t[i]))
            die("timed run");
    }
    qsort(t, REPS, sizeof *t, cmpd);
    G->ops->event_destroy(G, a);
    G->ops->event_destroy(G, b);
    return (t[REPS / 2 - 1] + t[REPS / 2]) / 2;
}

typedef struct {
    moe_backend_t *be;
    long D, F;
    int El;
    int64_t *off;
    void *out, *a1, *a3, *s, *work, *xp, *w1, *w3, *w2, *dxp, *dw1, *dw3, *dw2, *dout;
} experts_t;

static int experts_step(void *p)
{
    experts_t *e = p;
    const moe_ops_t *o = e->be->ops;
    return o->experts_forward(e->be, e->out, e->a1, e->a3, e->s, e->work, e->xp, e->w1, e->w3, e->w2, e->off, e->El,
                              e->D, e->F) ||
           o->experts_backward(e->be, e->dxp, e->dw1, e->dw3, e->dw2, e->work, e->dout, e->a1, e->a3, e->s, e->xp,
                               e->w1, e->w3, e->w2, e->off, e->El, e->D, e->F);
}

typedef struct {
    long N, D;
    int k, E;
    void *x, *xp, *y;
    int32_t *assign, *pos;
    float *w;
    int64_t *off;
} perm_t;
static int permute_step(void *p)
{
    perm_t *q = p;
    return G->ops->permute_forward(G, q->xp, q->pos, q->off, q->x, q->assign, q->N, q->k, q->D, 0, q->E);
}
static int combine_step(void *p)
{
    perm_t *q = p;
    return G->ops->combine_forward(G, q->y, q->xp, q->pos, q->w, q->N, q->k, q->D);
}
typedef struct {
    void *C, *A, *B;
    long M, N, K;
} gemm1_t;
static int gemm1_step(void *p)
{
    gemm1_t *g = p;
    return moe_cuda_gemm(G, g->C, g->A, g->B, g->M, g->N, g->K);
}
typedef struct {
    void *dst;
    const void *src;
    size_t bytes;
} copy_t;
static int copy_step(void *p)
{
    copy_t *c = p;
    return G->ops->copy(G, c->dst, c->src, c->bytes);
}

static int verdict(const char *name, double ratio, double target, const char *detail)
{
    int ok = ratio >= target;
    printf("%-8s %.3f of baseline (target >= %.2f) %s  [%s]\n", name, ratio, target, ok ? "PASS" : "BELOW", detail);
    return ok;
}

int main(int argc, char **argv)
{
    long T = argc > 1 ? atol(argv[1]) : 8192, D = argc > 2 ? atol(argv[2]) : 4096, F = argc > 3 ? atol(argv[3]) : 2048;
    int E = argc > 4 ? atoi(argv[4]) : 16, k = argc > 5 ? atoi(argv[5]) : 2;
    if (moe_cuda_device_count() == 0) {
        printf("gpu_bench: no CUDA device visible: skipped\n");
        return 77;
    }
    epb_err_t err;
    moe_backend_t *grouped, *dense;
    if (moe_cuda_backend_create(&grouped, MOE_BF16, 0, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 3; }
    setenv("EPB_CUDA_GROUPED", "0", 1);
    if (moe_cuda_backend_create(&dense, MOE_BF16, 0, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 3; }
    unsetenv("EPB_CUDA_GROUPED");
    long R = T * k;
    size_t es = 2;
    int all = 1;
    char detail[256];

    /* ---- grouped expert GEMMs vs one dense GEMM of the same FLOPs, and vs the same rows through one expert ---- */
    double us[2];
    for (int v = 0; v < 2; v++) {
        G = v ? dense : grouped;
        int El = v ? 1 : E;
        int64_t *off = calloc((size_t)El + 1, sizeof *off);
        for (int a = 0; a < El; a++) off[a + 1] = off[a] + R / El + (a < R % El);
        size_t wn = (size_t)El * D * F;
        /* the dense case holds one expert's weights of the same (D,F): E times fewer parameters, same FLOPs */
        experts_t e = { G, D, F, El, off, dalloc(R * D * es), dalloc(R * F * es), dalloc(R * F * es),
                        dalloc(R * F * es), dalloc(2 * R * F * es), dalloc(R * D * es), dalloc(wn * es),
                        dalloc(wn * es), dalloc(wn * es), dalloc(R * D * es), dalloc(wn * es), dalloc(wn * es),
                        dalloc(wn * es), dalloc(R * D * es) };
        us[v] = time_us(experts_step, &e);
        free(off);
    }
    moe_backend_destroy(dense);
    G = grouped;
    gemm1_t g1 = { dalloc(R * 9 * F * es), dalloc(R * D * es), dalloc(D * 9 * F * es), R, 9 * F, D };
    double us1 = time_us(gemm1_step, &g1);
    G->ops->free(G, g1.C);
    G->ops->free(G, g1.A);
    G->ops->free(G, g1.B);
    double flop = 18.0 * (double)R * D * F;
    snprintf(detail, sizeof detail,
             "E=%d grouped (%s) %.1f us = %.0f TFLOP/s; one GEMM %ldx%ldx%ld %.1f us = %.0f TFLOP/s; one expert "
             "(all rows) %.1f us = %.0f TFLOP/s", E, moe_cuda_gemm_path(grouped), us[0], flop / us[0] * 1e-6, R,
             9 * F, D, us1, flop / us1 * 1e-6, us[1], flop / us[1] * 1e-6);
    all &= verdict("gemm", us1 / us[0], 0.70, detail);

    /* ---- permute and unpermute+combine vs a device-to-device copy ---- */
    G = grouped;
    perm_t q = { T, D, k, E, dalloc(T * D * es), dalloc(R * D * es), dalloc(T * D * es), dalloc(R * 4),
                 dalloc(R * 4), dalloc(R * 4), calloc((size_t)E + 1, 8) };
    int32_t *assign = malloc(R * 4);
    float *w = malloc(R * 4);
    for (long i = 0; i < R; i++) { /* k distinct experts per token, spread evenly */
        assign[i] = (int32_t)((i / k * 7 + i % k) % E);
        w[i] = 1.0f / k;
    }
    if (G->ops->to_backend(G, q.assign, assign, R * 4) || G->ops->to_backend(G, q.w, w, R * 4)) die("upload");
    copy_t c = { dalloc(R * D * es), q.xp, R * D * es };
    double t_copy = time_us(copy_step, &c); /* reads and writes R*D*es */
    double t_perm = time_us(permute_step, &q);   /* reads R rows of x, writes R rows */
    double t_comb = time_us(combine_step, &q);   /* reads R rows, writes T rows */
    double bw_copy = 2.0 * R * D * es / t_copy * 1e-3, bw_perm = 2.0 * R * D * es / t_perm * 1e-3,
           bw_comb = (double)(R + T) * D * es / t_comb * 1e-3;
    snprintf(detail, sizeof detail, "%.0f GB/s vs copy %.0f GB/s (read+write)", bw_perm, bw_copy);
    all &= verdict("permute", bw_perm / bw_copy, 0.60, detail);
    snprintf(detail, sizeof detail, "%.0f GB/s vs copy %.0f GB/s (read+write)", bw_comb, bw_copy);
    all &= verdict("combine", bw_comb / bw_copy, 0.60, detail);
    free(assign);
    free(w);
    free(q.off);
    moe_backend_destroy(grouped);
    return all ? 0 : 1;
}
