/* moe_bench: the CPU layer's speed (a benchmark, not a test). One step of the single-device layer at
 * T=2048 D=1024 F=2048 E=16 k=2 (override: moe_bench T D F E k iters), every phase timed, the experts' FLOP rate
 * against one sgemm of the same FLOPs, and the share of the step outside the experts' GEMMs.
 * Run with OPENBLAS_NUM_THREADS=1 for the per-core figures; OPENBLAS_CORETYPE picks OpenBLAS's kernels. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "moe.h"
#include "strategy.h"

static double gemm_rate(long M, long N, long K, int reps)
{
    float *a = malloc(sizeof(float) * (size_t)(M * K)), *b = malloc(sizeof(float) * (size_t)(K * N)),
          *c = malloc(sizeof(float) * (size_t)(M * N));
    for (long i = 0; i < M * K; i++) a[i] = (float)epb_uniform(1, 1, (uint64_t)i);
    for (long i = 0; i < K * N; i++) b[i] = (float)epb_uniform(1, 2, (uint64_t)i);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = epb_now_us();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, a, (int)K, b, (int)N,
                    0.0f, c, (int)N);
        double t = epb_now_us() - t0;
        best = t < best ? t : best;
    }
    free(a), free(b), free(c);
    return 2.0 * M * N * K / best / 1e3; /* GFLOP/s */
}

int main(int argc, char **argv)
{
    moe_config_t c = moe_config_default();
    int iters = 5;
    if (argc > 5) c.T = atol(argv[1]), c.D = atol(argv[2]), c.F = atol(argv[3]), c.E = atoi(argv[4]), c.k = atoi(argv[5]);
    if (argc > 6) iters = atoi(argv[6]);
    epb_err_t err;
    char info[512];
    epb_blas_info(info, sizeof info);
    const char *better = epb_blas_better_coretype();
    printf("blas: %s; threads %d; better core type: %s\n", info, openblas_get_num_threads(), better ? better : "none");
    printf("layer: T=%ld D=%ld F=%ld E=%d k=%d, %d iterations (min per phase)\n", c.T, c.D, c.F, c.E, c.k, iters);
    moe_backend_t *be;
    moe_run_t L; /* the single-device layer */
    int rc = moe_config_validate(&c, &err);
    if (!rc) rc = moe_mem_check(&c, 1, 0, &err);
    if (!rc) rc = moe_cpu_backend_create(&be, &err);
    if (!rc) rc = moe_run_create_single(&L, &c, be, &err);
    if (rc) {
        fprintf(stderr, "moe_bench: %s\n", err.msg);
        return rc;
    }
    /* the sgemm reference before and after the layer's steps, best of both: a neighbour's load on a shared
     * machine then penalises both sides alike */
    double R = (double)c.T * c.k, gf1 = 2.0 * R * c.D * c.F / 1e9; /* one expert GEMM over all rows */
    double ref = gemm_rate((long)(3 * R), c.F, c.D, 2);
    double best[MOE_NPHASES], step = 1e30, zg = 1e30;
    for (int p = 0; p < MOE_NPHASES; p++) best[p] = 1e30;
    for (int it = -1; it < iters; it++) { /* iteration -1 warms up */
        double t0 = epb_now_us();
        rc = moe_run_zero_grad(&L, &err);
        double t1 = epb_now_us();
        if (!rc) rc = moe_run_forward(&L, &err);
        if (!rc) rc = moe_run_backward(&L, &err);
        double t2 = epb_now_us(), *ph = L.m.us;
        if (rc) {
            fprintf(stderr, "moe_bench: %s\n", err.msg);
            return rc;
        }
        if (it < 0) continue;
        for (int p = 0; p < MOE_NPHASES; p++) best[p] = ph[p] < best[p] ? ph[p] : best[p];
        step = t2 - t1 < step ? t2 - t1 : step;
        zg = t1 - t0 < zg ? t1 - t0 : zg;
    }
    double fwd = 3 * gf1 / (best[MOE_PH_EXPERTS_FWD] / 1e6), bwd = 6 * gf1 / (best[MOE_PH_EXPERTS_BWD] / 1e6);
    double ref2 = gemm_rate((long)(3 * R), c.F, c.D, 2);
    ref = ref2 > ref ? ref2 : ref;
    printf("%-14s %10s %7s\n", "phase", "ms", "%step");
    double other = 0;
    for (int p = 0; p < MOE_NPHASES; p++) {
        if (best[p] == 0) continue;
        printf("%-14s %10.2f %6.1f%%\n", moe_phase_names[p], best[p] / 1e3, 100 * best[p] / step);
        if (p != MOE_PH_EXPERTS_FWD && p != MOE_PH_EXPERTS_BWD) other += best[p];
    }
    printf("%-14s %10.2f\n", "step", step / 1e3);
    printf("%-14s %10.2f   (untimed in the step: dW buffers are %.0f MB)\n", "zero_grad", zg / 1e3,
           3.0 * c.E * c.D * c.F * 4 / 1e6);
    printf("experts_fwd %.1f GFLOP/s, experts_bwd %.1f GFLOP/s; sgemm %ldx%ldx%ld (same FLOPs as experts_fwd) "
           "%.1f GFLOP/s\n", fwd, bwd, (long)(3 * R), c.F, c.D, ref);
    printf("ratio: experts_fwd %.1f%%, experts_bwd %.1f%% of sgemm; phases outside the experts %.1f%% of the step; "
           "peak layer memory %zu bytes\n", 100 * fwd / ref, 100 * bwd / ref, 100 * other / step, be->peak_bytes);
    moe_run_destroy(&L);
    moe_backend_destroy(be);
    return 0;
}
