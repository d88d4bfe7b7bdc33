/* bench --strategy: MoE forward+backward under each expert-parallel strategy over a sweep of configurations;
 * timed phases (max over ranks per iteration), bytes from the real splits, the single-device check, --dump
 * and --train. The harness never names a strategy: the registry in moe/strategy.h does. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "moe.h"
#include "strategy.h"

#define CHECK_TOL 1e-5      /* float32 on the CPU: the strategies reorder sums only; far below 1e-4 */
#define CHECK_TOL_CUDA 2e-5 /* float32 on the GPU (no TF32): cuBLAS sums in another order than OpenBLAS */
#define CHECK_TOL_BF16 1e-2 /* bf16 storage, fp32 accumulation, against fp32 on the same rounded inputs, norm-wise
                             * (moe_rel_err_l2: the largest element's error has a tail past 1e-2) */

typedef struct {
    const moe_strategy_t *st;
    moe_config_t cfg;
} moe_case_t;

/* Every combination of the sweep, in a fixed order (strategy outermost). */
static int enumerate(const bench_opts_t *o, moe_case_t *cases, int max)
{
    int n = 0;
    for (int s = 0; s < o->nstrategies; s++)
        for (int e = 0; e < o->nexperts; e++)
            for (int k = 0; k < o->ntop_k; k++)
                for (int t = 0; t < o->ntokens; t++)
                    for (int d = 0; d < o->nhidden; d++)
                        for (int f = 0; f < o->nffn; f++) {
                            if (n == max) return -1;
                            moe_config_t c = moe_config_default();
                            c.E = (int)o->experts[e];
                            c.k = (int)o->top_k[k];
                            c.T = o->tokens[t];
                            c.D = o->hidden[d];
                            c.F = o->ffn[f];
                            c.router = (moe_router_t)o->router;
                            c.route_norm = o->route_norm;
                            c.skew = o->skew;
                            c.bias_coeff = o->bias_coeff;
                            c.seed = o->seed;
                            c.dtype = o->dtype == EPB_DT_BF16 ? MOE_BF16 : MOE_F32;
                            cases[n].st = moe_strategy_find(o->strategies[s]);
                            cases[n++].cfg = c;
                        }
    return n;
}

#define MAX_CASES 4096

int bench_moe_plan(const bench_opts_t *o, int P, epb_err_t *err)
{
    moe_case_t *cases = malloc(sizeof *cases * MAX_CASES);
    if (!cases) return epb_fail(err, EPB_ESYS, "out of memory");
    int n = enumerate(o, cases, MAX_CASES), rc = EPB_OK;
    if (n < 0) rc = epb_fail(err, EPB_EUSAGE, "the sweep has more than %d configurations", MAX_CASES);
    for (int i = 0; i < n && !rc; i++) {
        const moe_config_t *c = &cases[i].cfg;
        if ((rc = moe_config_validate(c, err))) break;
        if (c->dtype != MOE_F32 && o->device != BENCH_DEV_CUDA)
            rc = epb_fail(err, EPB_EUSAGE, "--dtype bf16: the CPU backend runs f32 (bf16 needs the CUDA backend)");
        else if (c->dtype != MOE_F32 && o->train)
            rc = epb_fail(err, EPB_EUSAGE, "--train: the SGD update is implemented for --dtype f32 only");
        else if (c->E % P) rc = epb_fail(err, EPB_EUSAGE, "--experts %d cannot be divided over %d ranks (E %% ranks must be 0)", c->E, P);
        else rc = moe_mem_check(c, P, 0, err); /* rank 0's reference check holds the whole global batch */
    }
    if (!rc && o->train && o->dump[0]) rc = epb_fail(err, EPB_EUSAGE, "--dump describes one benchmark step; not with --train");
    free(cases);
    return rc;
}

/* ---- the human table ---- */

static const int comm_phase[MOE_NPHASES] = { [MOE_PH_SYNC_COUNTS] = 1, [MOE_PH_DISPATCH] = 1, [MOE_PH_COMBINE] = 1,
                                              [MOE_PH_COMBINE_BWD] = 1, [MOE_PH_DISPATCH_BWD] = 1, [MOE_PH_GRAD_SYNC] = 1 };

static void print_case(const bench_ctx_t *b, const moe_case_t *mc, const epb_row_t *rows, const char *check_line)
{
    const moe_config_t *c = &mc->cfg;
    const epb_row_t *step = &rows[MOE_NPHASES];
    printf("\n# %s | %d ranks | E=%d k=%d T=%ld/rank D=%ld F=%ld | %s%s skew %g | %s\n", mc->st->name, b->ctl->size,
           c->E, c->k, c->T, c->D, c->F, moe_router_name(c->router), c->route_norm ? "+norm" : "", c->skew,
           b->base.device_name);
    printf("  %-13s %10s %10s %7s %12s %9s %9s\n", "phase", "med_us", "p95_us", "share", "bytes/rank", "GB/s", "GFLOP/s");
    for (int p = 0; p <= MOE_NPHASES; p++) {
        const epb_row_t *r = &rows[p];
        char bw[16] = "-", fl[16] = "-";
        if (p < MOE_NPHASES && comm_phase[p] && r->bytes) snprintf(bw, sizeof bw, "%.3f", r->busbw_gbps);
        if (r->gflop > 0) snprintf(fl, sizeof fl, "%.1f", r->tflops * 1e3);
        printf("  %-13s %10.1f %10.1f %6.1f%% %12llu %9s %9s\n", r->phase, r->t_med_us, r->t_p95_us,
               step->t_med_us > 0 ? 100.0 * r->t_med_us / step->t_med_us : 0.0, (unsigned long long)r->bytes, bw, fl);
    }
    if (check_line) printf("  check: %s\n", check_line);
    fflush(stdout);
}

static void progress(int i, int n, double t0)
{
    if (!isatty(2)) return;
    double el = (epb_now_us() - t0) * 1e-6, eta = i > 0 ? el / i * (n - i) : 0;
    fprintf(stderr, "\rbench: configuration %d of %d, %.0f s elapsed, ~%.0f s remaining   %s", i + 1, n, el, eta,
            i + 1 == n ? "\n" : "");
    fflush(stderr);
}

/* ---- one configuration ---- */

static void fill_rows(const bench_ctx_t *b, const moe_case_t *mc, epb_row_t *rows, double *times, int iters,
                      const double *bytes, const double *flop, uint64_t peak)
{
    const moe_config_t *c = &mc->cfg;
    for (int p = 0; p <= MOE_NPHASES; p++) {
        epb_row_t *r = &rows[p];
        *r = b->base;
        r->mode = "moe";
        r->op = mc->st->name;
        r->experts = c->E;
        r->top_k = c->k;
        r->tokens = c->T;
        r->hidden = c->D;
        r->ffn = c->F;
        r->router = c->route_norm ? (c->router == MOE_SOFTMAX ? "softmax+norm" : "sigmoid+norm") : moe_router_name(c->router);
        r->skew = c->skew;
        r->phase = p < MOE_NPHASES ? moe_phase_names[p] : "step";
        epb_stats_t st;
        epb_stats(times + (size_t)p * iters, (size_t)iters, &st);
        r->t_min_us = st.min;
        r->t_med_us = st.med;
        r->t_mean_us = st.mean;
        r->t_p95_us = st.p95;
        r->t_max_us = st.max;
        double by = 0, fl = 0;
        if (p < MOE_NPHASES) {
            by = bytes[p];
            fl = flop[p];
        } else
            for (int q = 0; q < MOE_NPHASES; q++) by += bytes[q], fl += flop[q];
        r->bytes = (uint64_t)(by + 0.5);
        r->algbw_gbps = r->busbw_gbps = epb_gbps(by, st.med); /* bytes a rank sends to others / phase time */
        r->gflop = fl / 1e9;
        r->tflops = st.med > 0 ? fl / (st.med * 1e-6) / 1e12 : 0;
        r->peak_mem_bytes = peak;
    }
}

static int check_and_dump(bench_ctx_t *b, moe_run_t *run, const moe_case_t *mc, char *line, size_t n, int *failed,
                          epb_err_t *err)
{
    moe_global_t g;
    int rc = moe_run_gather(run, &g, err);
    if (rc) return rc;
    int32_t verdict[2] = { 0, 0 }; /* failures, set-up error */
    if (b->ctl->rank == 0) {
        if (b->o->check) {
            double tol = mc->cfg.dtype == MOE_BF16 ? CHECK_TOL_BF16 : b->o->device == BENCH_DEV_CUDA ? CHECK_TOL_CUDA : CHECK_TOL;
            int bad = moe_check_global(&g, &mc->cfg, b->ctl->size, tol, line, n, err);
            verdict[0] = bad > 0;
            verdict[1] = bad < 0;
        }
        if (!verdict[1] && b->o->dump[0]) {
            moe_dump_t d = { mc->st->name, b->ctl->size, &mc->cfg, g.x, g.router_w, g.expert_bias, g.w1, g.w3, g.w2,
                             g.topk_idx, g.topk_w, g.y, g.dy, g.dx, g.d_router_w, g.dw1, g.dw3, g.dw2,
                             g.tokens_per_expert, g.expert_bias_after };
            if (moe_dump_write(b->o->dump, &d, err)) verdict[1] = 2;
            else printf("  dump: %s (%d ranks' global tensors, step with %s)\n", b->o->dump, b->ctl->size, mc->st->name);
        }
    }
    moe_global_free(&g);
    if ((rc = epb_bcast(b->ctl, verdict, sizeof verdict, 0))) return epb_fail(err, rc, "%s", b->ctl->err.msg);
    if (verdict[1]) /* rank 0's message is in its err; the others only know it failed */
        return b->ctl->rank == 0 ? (verdict[1] == 2 ? EPB_EUSAGE : EPB_ESYS)
                                 : epb_fail(err, verdict[1] == 2 ? EPB_EUSAGE : EPB_ESYS, "rank 0 failed the check set-up");
    *failed = verdict[0];
    return EPB_OK;
}

static int train_case(bench_ctx_t *b, moe_run_t *run, const moe_case_t *mc, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    size_t cap = 64 + (size_t)o->train * 96, len = 0;
    char *out = malloc(cap);
    if (!out) return epb_fail(err, EPB_ESYS, "out of memory");
    int rc = EPB_OK;
    if (b->ctl->rank == 0) printf("\n# train %s | %d ranks | E=%d k=%d T=%ld/rank D=%ld F=%ld | lr %g\n", mc->st->name,
                                  b->ctl->size, mc->cfg.E, mc->cfg.k, mc->cfg.T, mc->cfg.D, mc->cfg.F, o->lr);
    for (int step = 0; step < o->train && !rc; step++) {
        double loss = 0;
        /* forward, the loss and its gradient, backward (the step recomputes forward; dy must come from it) */
        rc = run->st->forward(run, err);
        if (!rc) rc = moe_run_mse_grad(run, &loss, err);
        if (!rc) rc = moe_run_step(run, err);
        if (!rc) rc = moe_run_sgd(run, o->lr, err);
        if (!rc) len += (size_t)snprintf(out + len, cap - len, "%s,%d,%d,%.9g\n", mc->st->name, b->ctl->size, step, loss);
        if (!rc && b->ctl->rank == 0 && (step < 5 || step == o->train - 1 || step % 10 == 0))
            printf("  step %4d  loss %.9g\n", step, loss);
    }
    if (!rc && b->ctl->rank == 0) {
        FILE *f = fopen(o->loss_csv, "a");
        if (!f) rc = epb_fail(err, EPB_EUSAGE, "--loss-csv %s: cannot open", o->loss_csv);
        else {
            if (ftell(f) == 0) fputs("strategy,ranks,step,loss\n", f);
            if (fwrite(out, 1, len, f) != len || fclose(f)) rc = epb_fail(err, EPB_ESYS, "--loss-csv %s: write failed", o->loss_csv);
        }
    }
    free(out);
    return rc;
}

static int run_case(bench_ctx_t *b, moe_backend_t *be, const moe_case_t *mc, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    int iters = o->iters, rc;
    moe_run_t run;
    be->peak_bytes = be->cur_bytes;
    if ((rc = moe_run_create(&run, mc->st, &mc->cfg, b->data, b->ctl, be, err))) return rc;
    if (o->train) {
        rc = train_case(b, &run, mc, err);
        moe_run_destroy(&run);
        return rc;
    }
    /* times[p][it] for the 12 phases and the step */
    double *times = calloc((size_t)(MOE_NPHASES + 1) * (size_t)iters, sizeof *times);
    double bytes[MOE_NPHASES], flop[MOE_NPHASES];
    if (!times) { moe_run_destroy(&run); return epb_fail(err, EPB_ESYS, "out of memory"); }
    for (int i = 0; i < o->warmup && !rc; i++) rc = moe_run_step(&run, err);
    for (int it = 0; it < iters && !rc; it++) {
        if ((rc = epb_barrier(b->ctl))) { epb_fail(err, rc, "%s", b->ctl->err.msg); break; }
        if ((rc = moe_run_step(&run, err))) break;
        double step = run.step_us;
        for (int p = 0; p < MOE_NPHASES; p++) {
            double extra = 0;
            if (b->o->slow_pct > 0 && !strcmp(b->o->slow_phase, moe_phase_names[p])) {
                double t0 = epb_now_us();
                bench_maybe_slow(b, moe_phase_names[p], run.phase_us[p]);
                extra = epb_now_us() - t0;
            }
            times[(size_t)p * iters + it] = run.phase_us[p] + extra;
            step += extra;
        }
        if (b->o->slow_pct > 0 && !strcmp(b->o->slow_phase, "step")) {
            double t0 = epb_now_us();
            bench_maybe_slow(b, "step", step);
            step += epb_now_us() - t0;
        }
        times[(size_t)MOE_NPHASES * iters + it] = step;
    }
    memcpy(bytes, run.phase_bytes, sizeof bytes);
    memcpy(flop, run.phase_flop, sizeof flop);
    uint64_t peak = (uint64_t)be->peak_bytes;
    int64_t peak_all = (int64_t)peak;
    /* the critical path: each iteration's phase time is the max over ranks; bytes and FLOPs too */
    if (!rc && ((rc = epb_allreduce(b->ctl, times, times, (size_t)(MOE_NPHASES + 1) * iters, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, bytes, bytes, MOE_NPHASES, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, flop, flop, MOE_NPHASES, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, &peak_all, &peak_all, 1, EPB_DT_I64, EPB_MAX))))
        epb_fail(err, rc, "%s", b->ctl->err.msg);
    char line[1024] = "";
    int failed = 0;
    if (!rc && (o->check || o->dump[0])) rc = check_and_dump(b, &run, mc, line, sizeof line, &failed, err);
    if (!rc) {
        epb_row_t rows[MOE_NPHASES + 1];
        fill_rows(b, mc, rows, times, iters, bytes, flop, (uint64_t)peak_all);
        for (int p = 0; p <= MOE_NPHASES; p++) rows[p].check = !o->check ? "skipped" : failed ? "fail" : "ok";
        b->failed_checks += failed;
        if (b->ctl->rank == 0) print_case(b, mc, rows, o->check ? line : NULL);
        rc = bench_write_rows(b, rows, MOE_NPHASES + 1, err);
    }
    free(times);
    moe_run_destroy(&run);
    return rc;
}

int bench_run_moe(bench_ctx_t *b, epb_err_t *err)
{
    moe_case_t *cases = malloc(sizeof *cases * MAX_CASES);
    if (!cases) return epb_fail(err, EPB_ESYS, "out of memory");
    int n = enumerate(b->o, cases, MAX_CASES), rc;
    moe_backend_t *be = NULL;
    if (b->o->device == BENCH_DEV_CUDA) /* on the communicator's GPU and stream: kernels and collectives in order */
        rc = moe_cuda_backend_create(&be, b->o->dtype == EPB_DT_BF16 ? MOE_BF16 : MOE_F32, b->data->device,
                                     b->data->stream, err);
    else
        rc = moe_cpu_backend_create(&be, err);
    if (rc) {
        epb_err_t why = *err;
        free(cases);
        return epb_fail(err, rc, "rank %d: %s", b->ctl->rank, why.msg);
    }
    if (b->ctl->rank == 0) {
        char blas[160];
        if (be->on_device) snprintf(blas, sizeof blas, "%s, %s expert GEMMs", b->base.device_name, moe_cuda_gemm_path(be));
        else epb_blas_info(blas, sizeof blas);
        printf("# epbench moe | %d ranks on %d node%s (%s) | comm %s | %s | %s | iters %d warmup %d | check %s\n",
               b->ctl->size, b->base.nodes, b->base.nodes > 1 ? "s" : "", b->base.host, b->base.backend, blas,
               b->base.dtype, b->o->iters, b->o->warmup, b->o->check ? "on" : "off");
    }
    double t0 = epb_now_us();
    for (int i = 0; i < n && !rc; i++) {
        if (b->ctl->rank == 0) progress(i, n, t0);
        rc = run_case(b, be, &cases[i], err);
    }
    moe_backend_destroy(be);
    free(cases);
    if (!rc && b->ctl->rank == 0) {
        printf("\n# %s appended to %s\n", b->o->train ? "loss curve" : "results", b->o->train ? b->o->loss_csv : b->o->csv);
        if (b->failed_checks) printf("# %d configuration(s) FAILED the check against one device\n", b->failed_checks);
    }
    if (rc) return rc;
    return b->failed_checks ? EPB_ECHECK : EPB_OK;
}
