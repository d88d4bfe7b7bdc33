/* bench --strategy: MoE forward+backward under each expert-parallel strategy over a sweep of configurations. The
 * run framework (moe/strategy.h) times every phase and counts its bytes; here, per iteration, each phase's time is
 * the maximum over ranks (the critical path) and its wait the wait of that rank; then statistics, the
 * single-device check, --dump, --train and the rows. The harness never names a strategy: the registry does. */
#include <math.h>
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
#define NROW (MOE_NPHASES + 1) /* the phases and the step */

typedef struct {
    moe_spec_t spec;
    moe_config_t cfg;
    long D0, F0, Fs0; /* the sizes before --scale-down */
} moe_case_t;

/* Every combination of the sweep, in a fixed order (strategy outermost). */
static int enumerate(const bench_opts_t *o, moe_case_t *cases, int max, epb_err_t *err)
{
    int n = 0;
    for (int s = 0; s < o->nstrategies; s++) {
        moe_spec_t spec;
        if (moe_spec_parse(o->strategies[s], &spec, err)) return -1;
        for (int e = 0; e < o->nexperts; e++)
            for (int k = 0; k < o->ntop_k; k++)
                for (int t = 0; t < o->ntokens; t++)
                    for (int d = 0; d < o->nhidden; d++)
                        for (int f = 0; f < o->nffn; f++)
                        for (int cf = 0; cf < o->ncapacity; cf++)
                        for (int rd = 0; rd < o->nredundant; rd++) {
                            if (n == max) {
                                epb_fail(err, EPB_EUSAGE, "the sweep has more than %d configurations", max);
                                return -1;
                            }
                            moe_config_t c = moe_config_default();
                            c.E = (int)o->experts[e];
                            c.k = (int)o->top_k[k];
                            c.T = o->tokens[t];
                            /* --scale-down divides the sizes, not the routing (E, k, groups stay) */
                            c.D = o->hidden[d] / o->scale_down;
                            c.F = o->ffn[f] / o->scale_down;
                            c.router = (moe_router_t)o->router;
                            c.route_norm = o->route_norm;
                            c.skew = o->skew;
                            c.bias_coeff = o->bias_coeff;
                            c.seed = o->seed;
                            c.dtype = o->dtype == EPB_DT_BF16 ? MOE_BF16 : MOE_F32;
                            c.route_scale = o->route_scale;
                            c.groups = o->groups;
                            c.topk_groups = o->topk_groups;
                            c.gate_before = o->gate_before;
                            c.dispatch_fp8 = o->dispatch_fp8;
                            c.capacity_factor = o->capacity[cf];
                            c.drop_policy = (moe_drop_t)o->drop_policy;
                            c.pad_to_capacity = o->pad_to_capacity && o->capacity[cf] > 0; /* the capped ones */
                            c.redundant = (int)o->redundant[rd];
                            c.shared = o->shared;
                            /* the shared experts' FFN: given (or the preset's), else the expert FFN's */
                            c.Fs = !o->shared ? 0 : o->shared_ffn ? o->shared_ffn / o->scale_down : c.F;
                            cases[n].D0 = o->hidden[d];
                            cases[n].F0 = o->ffn[f];
                            cases[n].Fs0 = o->shared_ffn ? o->shared_ffn : o->ffn[f];
                            cases[n].spec = spec;
                            cases[n++].cfg = c;
                        }
    }
    return n;
}

#define MAX_CASES 4096

/* After a memory refusal: the smallest --scale-down (a power of two times the one given) that fits, appended */
static void mem_hint(const bench_opts_t *o, const moe_case_t *mc, int P, int local, int El, epb_err_t *err)
{
    uint64_t avail = moe_mem_available();
    for (long s = 2L * o->scale_down; avail && s <= (1L << 20); s *= 2) {
        moe_config_t t = mc->cfg;
        t.D = mc->D0 / s, t.F = mc->F0 / s, t.Fs = t.shared ? mc->Fs0 / s : 0;
        if (t.D < 1 || t.F < 1 || (t.shared && t.Fs < 1)) return;
        if (moe_mem_need_job(&t, P, local, El) <= avail) {
            size_t u = strlen(err->msg);
            snprintf(err->msg + u, sizeof err->msg - u, "; --scale-down %ld fits", s);
            return;
        }
    }
}

int bench_moe_plan(const bench_opts_t *o, int P, epb_err_t *err)
{
    moe_case_t *cases = malloc(sizeof *cases * MAX_CASES);
    if (!cases) return epb_fail(err, EPB_ESYS, "out of memory");
    int n = enumerate(o, cases, MAX_CASES, err), rc = n < 0 ? EPB_EUSAGE : EPB_OK;
    /* started by hand without a hostfile, every rank runs on this host; under a launcher only rank 0's check is
     * known to be here */
    int local = epb_under_launcher() || o->hostfile[0] ? 0 : P;
    for (int i = 0; i < n && !rc; i++) {
        const moe_config_t *c = &cases[i].cfg;
        const moe_case_t *mc = &cases[i];
        /* a rank's expert slots, and with redundant experts the summed gradients of up to R replicated ones */
        int El = cases[i].spec.st->replicated ? c->E : (c->E + c->redundant) / P + c->redundant;
        if (c->D < 1 || c->F < 1 || (c->shared && c->Fs < 1)) {
            rc = epb_fail(err, EPB_EUSAGE, "--scale-down %d leaves nothing of --hidden %ld, --ffn %ld%s: sizes must stay "
                          ">= 1", o->scale_down, mc->D0, mc->F0, c->shared ? " or --shared-ffn" : "");
            break;
        }
        if ((rc = moe_config_validate(c, err))) break;
        if (c->dtype != MOE_F32 && o->device != BENCH_DEV_CUDA)
            rc = epb_fail(err, EPB_EUSAGE, "--dtype bf16: the CPU backend runs f32 (bf16 needs the CUDA backend)");
        else if (c->dtype != MOE_F32 && o->train)
            rc = epb_fail(err, EPB_EUSAGE, "--train: the SGD update is implemented for --dtype f32 only");
        else if (c->E % P) rc = epb_fail(err, EPB_EUSAGE, "--experts %d cannot be divided over %d ranks (E %% ranks must be 0)", c->E, P);
        else if (c->redundant % P)
            rc = epb_fail(err, EPB_EUSAGE, "--redundant %d cannot be divided over %d ranks (R %% ranks must be 0)",
                          c->redundant, P);
        else if (c->redundant && cases[i].spec.st->replicated)
            rc = epb_fail(err, EPB_EUSAGE, "--redundant %d: %s holds every expert on every rank, nothing to replicate",
                          c->redundant, cases[i].spec.st->name);
        else if (c->pad_to_capacity && (!cases[i].spec.st->pads || moe_spec_get(&cases[i].spec, "chunks") > 1))
            rc = epb_fail(err, EPB_EUSAGE, "--pad-to-capacity: %s%s has no per-expert block to pad (%s); tp2ep in one "
                          "chunk pads", cases[i].spec.st->name, cases[i].spec.st->pads ? " in chunks" : "",
                          cases[i].spec.st->pads ? "a chunk's pairs per expert are not bounded by a share of the capacity"
                          : cases[i].spec.st->replicated ? "every rank computes its own tokens"
                          : "its rows serve several experts of a token, or every rank gathers every token");
        else if (cases[i].spec.st->validate && (rc = cases[i].spec.st->validate(&cases[i].spec, c, P, err))) break;
        else if ((rc = moe_mem_check_job(c, P, local, El, 0, err))) /* and rank 0's check holds the global batch */
            mem_hint(o, mc, P, local, El, err);
    }
    if (!rc && o->train && o->dump[0]) rc = epb_fail(err, EPB_EUSAGE, "--dump describes one benchmark step; not with --train");
    if (!rc && o->train && o->per_rank[0]) rc = epb_fail(err, EPB_EUSAGE, "--per-rank records benchmark steps; not with --train");
    free(cases);
    return rc;
}

/* The CSV's params column: the strategy's parameters, then --model and --scale-down, then the layer features that
 * are not default (moe_config_params), each key=val, ';'-joined */
static void case_params(const bench_opts_t *o, const moe_case_t *mc, char *buf, size_t n)
{
    moe_spec_params(&mc->spec, buf, n);
    size_t u = strlen(buf);
    if (o->model[0] && u < n) u += (size_t)snprintf(buf + u, n - u, "%smodel=%s", u ? ";" : "", o->model);
    if (o->scale_down > 1 && u < n) u += (size_t)snprintf(buf + u, n - u, "%sscale_down=%d", u ? ";" : "", o->scale_down);
    size_t sep = u ? 1 : 0; /* the features after a ';' when something came before */
    if (u + sep + 1 < n) {
        moe_config_params(&mc->cfg, buf + u + sep, n - u - sep);
        if (sep && buf[u + 1]) buf[u] = ';';
    }
}

/* ---- the human table ---- */

static void print_case(const bench_ctx_t *b, const moe_case_t *mc, const epb_row_t *rows, const char *note,
                       const char *check_line)
{
    const moe_config_t *c = &mc->cfg;
    const epb_row_t *step = &rows[MOE_NPHASES];
    char spec[96], feat[EPB_PARAMS], model[64] = "";
    moe_spec_format(&mc->spec, spec, sizeof spec);
    moe_config_params(c, feat, sizeof feat);
    if (b->o->model[0]) snprintf(model, sizeof model, " | %s/%d", b->o->model, b->o->scale_down);
    printf("\n# %s | %d ranks | E=%d k=%d T=%ld/rank D=%ld F=%ld | %s skew %g%s%s%s | %s\n", spec, b->ctl->size, c->E,
           c->k, c->T, c->D, c->F, moe_router_label(c->router, c->route_norm), c->skew, feat[0] ? " " : "", feat, model,
           b->base.device_name);
    printf("  %-13s %-7s %10s %10s %10s %10s %6s %12s %9s %9s  %s\n", "phase", "kind", "med_us", "wait_us", "hidden_us",
           "p95_us", "share", "bytes/rank", "GB/s", "GFLOP/s", "collectives");
    for (int p = 0; p < NROW; p++) {
        const epb_row_t *r = &rows[p];
        char bw[16] = "-", fl[16] = "-", wt[16] = "-", hd[16] = "-";
        if (r->bytes && r->t_med_us > 0) snprintf(bw, sizeof bw, "%.3f", r->busbw_gbps);
        if (r->gflop > 0) snprintf(fl, sizeof fl, "%.1f", r->tflops * 1e3);
        if (p == MOE_NPHASES || moe_phase_kinds[p] != MOE_COMPUTE) snprintf(wt, sizeof wt, "%.1f", r->wait_us);
        if (p == MOE_NPHASES || moe_phase_kinds[p] == MOE_COMM) snprintf(hd, sizeof hd, "%.1f", r->hidden_us);
        printf("  %-13s %-7s %10.1f %10s %10s %10.1f %5.1f%% %12llu %9s %9s  %s\n", r->phase, r->kind, r->t_med_us, wt, hd,
               r->t_p95_us, step->t_med_us > 0 ? 100.0 * r->t_med_us / step->t_med_us : 0.0,
               (unsigned long long)r->bytes, bw, fl, r->coll);
    }
    printf("  (times: max over ranks per iteration, median over iterations; a phase's share is of the step, and the "
           "shares need not add up; wait: the critical rank's wait for the last rank to arrive, the rest of a comm "
           "phase is transfer; hidden: a comm phase's collectives in flight while the rank computed, not in med_us)\n");
    if (note[0]) printf("  note: %s\n", note);
    if (check_line) printf("  check: %s\n", check_line);
    fflush(stdout);
}

/* ---- one configuration ---- */

/* this rank's test-only hooks (bench.h) as the run framework takes them */
static moe_hooks_t moe_hooks_of(const bench_hooks_t *h)
{
    moe_hooks_t m = MOE_HOOKS_NONE;
    if (h->delay_phase[0]) {
        m.delay_phase = moe_phase_find(h->delay_phase);
        m.delay_us = h->delay_ms * 1e3;
        m.delay_rank = h->delay_rank;
    }
    if (h->slow_phase[0] && h->slow_pct > 0) {
        m.slow_phase = strcmp(h->slow_phase, "step") ? moe_phase_find(h->slow_phase) : MOE_NPHASES;
        m.slow_pct = h->slow_pct;
    }
    return m;
}



typedef struct {
    double *t, *w;          /* [NROW][iters]: critical time and wait per phase (and the step) and iteration */
    double *h;              /* [NROW][iters]: the critical rank's time in flight behind compute (comm phases) */
    double bytes[MOE_NPHASES], flop[MOE_NPHASES];
    char coll[MOE_NPHASES][EPB_STR];
    char params[EPB_PARAMS];
    uint64_t peak;
} samples_t;

static void fill_rows(const bench_ctx_t *b, const moe_case_t *mc, const samples_t *sm, int iters, epb_row_t *rows)
{
    const moe_config_t *c = &mc->cfg;
    for (int p = 0; p < NROW; p++) {
        epb_row_t *r = &rows[p];
        *r = b->base;
        r->mode = "moe";
        r->op = mc->spec.st->name;
        r->params = sm->params;
        r->experts = c->E;
        r->top_k = c->k;
        r->tokens = c->T;
        r->hidden = c->D;
        r->ffn = c->F;
        r->router = moe_router_label(c->router, c->route_norm);
        r->skew = c->skew;
        r->iters = iters;
        r->phase = p < MOE_NPHASES ? moe_phase_names[p] : "step";
        r->kind = p < MOE_NPHASES ? moe_kind_name(moe_phase_kinds[p]) : "total";
        r->coll = p < MOE_NPHASES ? sm->coll[p] : "";
        epb_stats_t st, sw, sh;
        epb_stats(sm->t + (size_t)p * iters, (size_t)iters, &st);
        epb_stats(sm->w + (size_t)p * iters, (size_t)iters, &sw);
        epb_stats(sm->h + (size_t)p * iters, (size_t)iters, &sh);
        r->t_min_us = st.min;
        r->t_med_us = st.med;
        r->t_mean_us = st.mean;
        r->t_p95_us = st.p95;
        r->t_max_us = st.max;
        r->wait_us = sw.med;
        r->hidden_us = sh.med;
        double by = 0, fl = 0;
        if (p < MOE_NPHASES) {
            by = sm->bytes[p];
            fl = sm->flop[p];
        } else
            for (int q = 0; q < MOE_NPHASES; q++) by += sm->bytes[q], fl += sm->flop[q];
        r->bytes = (uint64_t)(by + 0.5);
        r->algbw_gbps = r->busbw_gbps = epb_gbps(by, st.med); /* bytes a rank sends to others / phase time */
        r->gflop = fl / 1e9;
        r->tflops = st.med > 0 ? fl / (st.med * 1e-6) / 1e12 : 0;
        r->peak_mem_bytes = sm->peak;
    }
}

static int check_and_dump(bench_ctx_t *b, moe_run_t *run, const moe_case_t *mc, char *line, size_t n, int *failed,
                          double *fp8_err, epb_err_t *err)
{
    moe_global_t g;
    int rc = moe_run_gather(run, &g, err);
    if (rc) return rc;
    int32_t verdict[2] = { 0, 0 }; /* failures, set-up error */
    if (b->ctl->rank == 0) {
        if (b->o->check) {
            double tol = mc->cfg.dtype == MOE_BF16 ? CHECK_TOL_BF16 : b->o->device == BENCH_DEV_CUDA ? CHECK_TOL_CUDA : CHECK_TOL;
            int bad = moe_check_global(&g, &mc->cfg, b->ctl->size, tol, line, n, fp8_err, err);
            verdict[0] = bad > 0;
            verdict[1] = bad < 0;
        }
        if (!verdict[1] && b->o->dump[0]) {
            moe_dump_t d = { mc->spec.st->name, b->ctl->size, &mc->cfg, g.x, g.router_w, g.expert_bias, g.w1, g.w3,
                             g.w2, g.topk_idx, g.topk_w, g.y, g.dy, g.dx, g.d_router_w, g.dw1, g.dw3, g.dw2,
                             g.tokens_per_expert, g.expert_bias_after, g.shared_w1, g.shared_w3, g.shared_w2,
                             g.d_shared_w1, g.d_shared_w3, g.d_shared_w2 };
            int drc = moe_dump_write(b->o->dump, &d, err);
            if (drc) verdict[1] = drc == EPB_EUSAGE ? 2 : 3;
            else printf("  dump: %s (%d ranks' global tensors, step with %s)\n", b->o->dump, b->ctl->size, mc->spec.st->name);
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

#define LOSS_HEADER "strategy,params,ranks,step,loss\n"

static int train_case(bench_ctx_t *b, moe_run_t *run, const moe_case_t *mc, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    size_t cap = 64 + (size_t)o->train * 160, len = 0;
    char *out = malloc(cap), params[EPB_PARAMS];
    if (!out) return epb_fail(err, EPB_ESYS, "out of memory");
    case_params(o, mc, params, sizeof params);
    int rc = EPB_OK;
    if (b->ctl->rank == 0) printf("\n# train %s | %d ranks | E=%d k=%d T=%ld/rank D=%ld F=%ld | lr %g\n", mc->spec.st->name,
                                  b->ctl->size, mc->cfg.E, mc->cfg.k, mc->cfg.T, mc->cfg.D, mc->cfg.F, o->lr);
    for (int step = 0; step < o->train && !rc; step++) {
        double loss = 0;
        /* forward once, the loss and its gradient (dy), backward, the update */
        rc = moe_run_zero_grad(run, err);
        if (!rc) rc = moe_run_forward(run, err);
        if (!rc) rc = moe_run_mse_grad(run, &loss, err);
        if (!rc) rc = moe_run_backward(run, err);
        if (!rc) rc = moe_run_sgd(run, o->lr, err);
        if (!rc) len += (size_t)snprintf(out + len, cap - len, "%s,%s,%d,%d,%.9g\n", mc->spec.st->name, params,
                                         b->ctl->size, step, loss);
        if (!rc && b->ctl->rank == 0 && (step < 5 || step == o->train - 1 || step % 10 == 0))
            printf("  step %4d  loss %.9g\n", step, loss);
    }
    if (!rc && b->ctl->rank == 0) rc = epb_lines_append("--loss-csv", o->loss_csv, LOSS_HEADER, out, len, err);
    free(out);
    return rc;
}

/* --per-rank: every rank's own records (rank, iteration, phase, kind, us, wait, bytes, entries), gathered to rank 0
 * and appended in one write */
#define PER_RANK_HEADER "run_id,strategy,params,experts,top_k,tokens,rank,iter,phase,kind,us,wait_us,bytes,entries,hidden_us\n"
enum { PR_FIELDS = 5 }; /* us, wait, bytes, entries, hidden per (iteration, phase) */

static int write_per_rank(bench_ctx_t *b, const moe_case_t *mc, const samples_t *sm, const double *mine, int iters,
                          epb_err_t *err)
{
    size_t n = (size_t)iters * NROW * PR_FIELDS, P = (size_t)b->ctl->size;
    double *all = malloc(n * P * sizeof *all);
    if (!all) return epb_fail(err, EPB_ESYS, "out of memory (--per-rank)");
    int rc = epb_allgather(b->ctl, mine, all, n, EPB_DT_F64);
    if (rc) epb_fail(err, rc, "%s", b->ctl->err.msg);
    char *body = NULL;
    size_t cap = P * (size_t)iters * NROW * 256 + 1, len = 0;
    if (!rc && b->ctl->rank == 0 && !(body = malloc(cap))) rc = epb_fail(err, EPB_ESYS, "out of memory (--per-rank)");
    for (size_t r = 0; !rc && body && r < P; r++)
        for (int it = 0; it < iters; it++)
            for (int p = 0; p < NROW; p++) {
                const double *q = all + r * n + ((size_t)it * NROW + p) * PR_FIELDS;
                len += (size_t)snprintf(body + len, cap - len, "%s,%s,%s,%d,%d,%ld,%zu,%d,%s,%s,%.3f,%.3f,%.0f,%.0f,%.3f\n",
                                        b->run_id, mc->spec.st->name, sm->params, mc->cfg.E, mc->cfg.k, mc->cfg.T, r, it,
                                        p < MOE_NPHASES ? moe_phase_names[p] : "step",
                                        p < MOE_NPHASES ? moe_kind_name(moe_phase_kinds[p]) : "total", q[0], q[1], q[2],
                                        q[3], q[4]);
            }
    if (!rc && body) rc = epb_lines_append("--per-rank", b->o->per_rank, PER_RANK_HEADER, body, len, err);
    free(body);
    free(all);
    return rc;
}

static int run_case(bench_ctx_t *b, moe_backend_t *be, const moe_case_t *mc, epb_err_t *err)
{
    const bench_opts_t *o = b->o;
    int warmup, iters = bench_moe_iters(o, mc->cfg.T, &warmup), rc;
    moe_run_t run;
    be->peak_bytes = be->cur_bytes;
    char spec[96];
    moe_spec_format(&mc->spec, spec, sizeof spec);
    bench_watchdog_mode(b->wd, "--strategy %s E=%d k=%d T=%ld D=%ld F=%ld", spec, mc->cfg.E, mc->cfg.k, mc->cfg.T,
                        mc->cfg.D, mc->cfg.F);
    if ((rc = moe_run_create(&run, &mc->spec, &mc->cfg, b->data, b->ctl, be, err))) return rc;
    run.clock_offset_us = b->clock_offset_us;
    run.hooks = moe_hooks_of(&b->hooks);
    /* test-only, per rank: no tests of the collectives in flight between expert GEMMs (what progress buys) */
    const char *np = getenv("EPB_TEST_NO_PROGRESS");
    run.hooks.no_progress = np && *np && strcmp(np, "0");
    bench_watchdog_phase(b->wd, &run.m.open); /* the watchdog names the phase a call is stuck in */
    if (o->train) {
        rc = train_case(b, &run, mc, err);
        bench_watchdog_phase(b->wd, NULL);
        moe_run_destroy(&run);
        return rc;
    }
    samples_t sm;
    memset(&sm, 0, sizeof sm);
    sm.t = calloc((size_t)NROW * (size_t)iters, sizeof *sm.t);
    sm.w = calloc((size_t)NROW * (size_t)iters, sizeof *sm.w);
    sm.h = calloc((size_t)NROW * (size_t)iters, sizeof *sm.h);
    double *tc = calloc((size_t)NROW * (size_t)iters, sizeof *tc);
    double *pr = o->per_rank[0] ? calloc((size_t)NROW * (size_t)iters * PR_FIELDS, sizeof *pr) : NULL;
    if (!sm.t || !sm.w || !sm.h || !tc || (o->per_rank[0] && !pr)) {
        free(sm.t), free(sm.w), free(sm.h), free(tc), free(pr);
        moe_run_destroy(&run);
        return epb_fail(err, EPB_ESYS, "out of memory");
    }
    for (int i = 0; i < warmup && !rc; i++) rc = moe_run_step(&run, err);
    for (int it = 0; it < iters && !rc; it++) {
        double wait[MOE_NPHASES], step_wait = 0, step_hidden = 0;
        if ((rc = epb_barrier(b->ctl))) { epb_fail(err, rc, "%s", b->ctl->err.msg); break; }
        if ((rc = moe_run_step(&run, err)) || (rc = moe_run_waits(&run, wait, err))) break;
        for (int p = 0; p < MOE_NPHASES; p++) {
            sm.t[(size_t)p * iters + it] = run.m.us[p];
            sm.w[(size_t)p * iters + it] = wait[p];
            sm.h[(size_t)p * iters + it] = run.m.hidden[p];
            step_wait += wait[p];
            step_hidden += run.m.hidden[p];
            if (pr) {
                double *q = pr + ((size_t)it * NROW + p) * PR_FIELDS;
                q[0] = run.m.us[p], q[1] = wait[p], q[2] = run.m.bytes[p], q[3] = run.m.entries[p], q[4] = run.m.hidden[p];
            }
        }
        sm.t[(size_t)MOE_NPHASES * iters + it] = run.step_us;
        sm.w[(size_t)MOE_NPHASES * iters + it] = step_wait;
        sm.h[(size_t)MOE_NPHASES * iters + it] = step_hidden;
        if (b->ctl->rank == 0) bench_progress_iter(&b->progress, it + 1, iters); /* after the step's timing */
        if (pr) {
            double *q = pr + ((size_t)it * NROW + MOE_NPHASES) * PR_FIELDS;
            q[0] = run.step_us, q[1] = step_wait, q[2] = 0, q[3] = 1, q[4] = step_hidden;
            for (int p = 0; p < MOE_NPHASES; p++) q[2] += run.m.bytes[p];
        }
    }
    if (!rc) {
        memcpy(sm.bytes, run.m.bytes, sizeof sm.bytes);
        memcpy(sm.flop, run.m.flop, sizeof sm.flop);
        memcpy(sm.coll, run.m.coll, sizeof sm.coll); /* every rank makes the same calls */
        case_params(o, mc, sm.params, sizeof sm.params);
    }
    int64_t peak = (int64_t)be->peak_bytes;
    /* the critical path: each iteration's phase time is the max over ranks, with that rank's wait; bytes and
     * FLOPs the busiest rank's; memory the largest rank's */
    if (!rc) { /* the hidden time of the same critical rank (selected on a copy of the times) */
        memcpy(tc, sm.t, (size_t)NROW * (size_t)iters * sizeof *tc);
        rc = bench_critical(b, tc, sm.h, (size_t)NROW * iters, err);
    }
    if (!rc) rc = bench_critical(b, sm.t, sm.w, (size_t)NROW * iters, err);
    if (!rc && ((rc = epb_allreduce(b->ctl, sm.bytes, sm.bytes, MOE_NPHASES, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, sm.flop, sm.flop, MOE_NPHASES, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, &peak, &peak, 1, EPB_DT_I64, EPB_MAX))))
        epb_fail(err, rc, "%s", b->ctl->err.msg);
    sm.peak = (uint64_t)peak;
    /* the last step's load: rows the busiest rank's experts computed, what the busiest rank would compute holding
     * its E/P experts alone (replicated strategies: its own rows), and the pairs the capacity dropped */
    double load[2] = { (double)run.rows, (double)run.rows }, dropped = (double)run.dropped;
    if (!run.st->replicated) { /* its experts' kept pairs (padded: P blocks of the capacity; nothing to pad at 1 rank) */
        const moe_config_t *c = &mc->cfg;
        int P = b->ctl->size, lo = (int)((long)c->E * b->ctl->rank / P), hi = (int)((long)c->E * (b->ctl->rank + 1) / P);
        load[1] = 0;
        for (int e = lo; e < hi; e++) load[1] += c->pad_to_capacity && P > 1 ? (double)P * moe_capacity(c) : (double)run.kept[e];
    }
    if (!rc && ((rc = epb_allreduce(b->ctl, load, load, 2, EPB_DT_F64, EPB_MAX)) ||
                (rc = epb_allreduce(b->ctl, &dropped, &dropped, 1, EPB_DT_F64, EPB_SUM))))
        epb_fail(err, rc, "%s", b->ctl->err.msg);
    if (!rc && pr) rc = write_per_rank(b, mc, &sm, pr, iters, err);
    /* what the strategy's traffic description expects of each phase on this step's routing (next to what the
     * wire carried; the exact tables are kept up to MOE_TRAFFIC_MAXP_EXACT ranks) */
    double model[MOE_NPHASES];
    int have_model = 0;
    if (!rc && b->ctl->size <= MOE_TRAFFIC_MAXP_EXACT) {
        moe_traffic_t tr;
        if (!(rc = moe_run_traffic(&run, b->ctl->local_size, &tr, err))) {
            for (int p = 0; p < MOE_NPHASES; p++) model[p] = moe_traffic_sent(&tr, p);
            moe_traffic_free(&tr);
            have_model = 1;
        }
    }
    char line[1024] = "";
    int failed = 0;
    double fp8_err = -1; /* rank 0's, which writes the rows */
    if (!rc && (o->check || o->dump[0])) {
        /* the other ranks wait for rank 0's single-device check (and --dump): as long as it takes, not a hang */
        bench_watchdog_hold(b->wd, 1);
        rc = check_and_dump(b, &run, mc, line, sizeof line, &failed, &fp8_err, err);
        bench_watchdog_hold(b->wd, 0);
    }
    if (!rc) {
        epb_row_t rows[NROW];
        fill_rows(b, mc, &sm, iters, rows);
        for (int p = 0; p < NROW; p++) {
            rows[p].check = !o->check ? "skipped" : failed ? "fail" : "ok";
            rows[p].dropped = dropped, rows[p].load_max = load[0], rows[p].load_plain = load[1];
            rows[p].quant_err = o->check ? fp8_err : -1;
        }
        char differ[512] = "";
        for (int p = 0, u = 0; have_model && p < MOE_NPHASES; p++) {
            rows[p].model_bytes = model[p];
            rows[MOE_NPHASES].model_bytes += model[p] + (p == 0); /* from -1 */
            if (fabs(model[p] - sm.bytes[p]) > 0.5 + 1e-9 * model[p] && u < (int)sizeof differ)
                u += snprintf(differ + u, sizeof differ - (size_t)u, "%s%s %.0f counted, %.0f described",
                              u ? "; " : "", moe_phase_names[p], sm.bytes[p], model[p]);
        }
        if (differ[0] && b->ctl->rank == 0) /* the strategy and its description disagree: say so, loudly */
            fprintf(stderr, "bench: %s: the bytes on the wire differ from its traffic description: %s\n", mc->spec.st->name,
                    differ);
        b->failed_checks += failed;
        if (b->ctl->rank == 0) {
            bench_progress_end(&b->progress); /* its line stays, the table comes after it */
            print_case(b, mc, rows, run.note, o->check ? line : NULL);
        }
        rc = bench_write_rows(b, rows, NROW, err);
    }
    free(sm.t);
    free(sm.w);
    free(sm.h);
    free(tc);
    free(pr);
    bench_watchdog_phase(b->wd, NULL);
    moe_run_destroy(&run);
    return rc;
}

int bench_backend_create(bench_ctx_t *b, moe_backend_t **be, epb_err_t *err)
{
    if (b->o->device == BENCH_DEV_CUDA) /* on the communicator's GPU and stream: kernels and collectives in order */
        return moe_cuda_backend_create(be, b->o->dtype == EPB_DT_BF16 ? MOE_BF16 : MOE_F32, b->data->device,
                                       b->data->stream, err);
    return moe_cpu_backend_create(be, err);
}

int bench_run_moe(bench_ctx_t *b, epb_err_t *err)
{
    moe_case_t *cases = malloc(sizeof *cases * MAX_CASES);
    if (!cases) return epb_fail(err, EPB_ESYS, "out of memory");
    int n = enumerate(b->o, cases, MAX_CASES, err), rc = n < 0 ? EPB_EUSAGE : EPB_OK;
    moe_backend_t *be = NULL;
    if (!rc) rc = bench_backend_create(b, &be, err);
    if (rc) {
        free(cases);
        return rc;
    }
    if (b->ctl->rank == 0) {
        char blas[160];
        if (be->on_device) snprintf(blas, sizeof blas, "%s, %s expert GEMMs", b->base.device_name, moe_cuda_gemm_path(be));
        else epb_blas_info(blas, sizeof blas);
        /* the iterations of the sweep's configurations: those of the large ones, then the small ones' if they differ */
        char its[96];
        int w0, w1, i0 = bench_moe_iters(b->o, BENCH_DECODE_T, &w0), i1 = bench_moe_iters(b->o, 1, &w1), small = 0, large = 0;
        for (int i = 0; i < n; i++) {
            if (cases[i].cfg.T < BENCH_DECODE_T) small = 1;
            else large = 1;
        }
        int len = snprintf(its, sizeof its, "iters %d warmup %d", large ? i0 : i1, large ? w0 : w1);
        if (small && large && (i0 != i1 || w0 != w1))
            snprintf(its + len, sizeof its - (size_t)len, " (%d and %d below %d tokens)", i1, w1, BENCH_DECODE_T);
        printf("# epbench moe | %d ranks on %d node%s (%s) | comm %s | %s | %s | %s | check %s\n",
               b->ctl->size, b->base.nodes, b->base.nodes > 1 ? "s" : "", b->base.hosts, b->base.backend, blas,
               b->base.dtype, its, b->o->check ? "on" : "off");
    }
    bench_progress_begin(&b->progress, b->ctl->rank == 0 && !b->o->quiet, n);
    for (int i = 0; i < n && !rc; i++) {
        if (b->ctl->rank == 0) {
            /* the strategy and the dimensions the sweep varies: "tp2ep k=2" */
            const moe_case_t *c = &cases[i];
            const bench_opts_t *o = b->o;
            char spec[96], dims[128] = "";
            size_t l = 0;
            moe_spec_format(&c->spec, spec, sizeof spec);
#define DIM(cond, ...) if (cond && l < sizeof dims) l += (size_t)snprintf(dims + l, sizeof dims - l, __VA_ARGS__);
            DIM(o->nexperts > 1, " E=%d", c->cfg.E)
            DIM(o->ntop_k > 1, " k=%d", c->cfg.k)
            DIM(o->ntokens > 1, " T=%ld", c->cfg.T)
            DIM(o->nhidden > 1, " D=%ld", c->cfg.D)
            DIM(o->nffn > 1, " F=%ld", c->cfg.F)
#undef DIM
            bench_progress_config(&b->progress, i, "%s%s", spec, dims);
        }
        rc = run_case(b, be, &cases[i], err);
    }
    if (b->ctl->rank == 0) bench_progress_end(&b->progress);
    moe_backend_destroy(be);
    free(cases);
    if (!rc && b->ctl->rank == 0) {
        char shown[4 * PATH_MAX];
        printf("\n# %s appended to %s\n", b->o->train ? "loss curve" : "results",
               epb_printable(b->o->train ? b->o->loss_csv : b->o->csv, shown, sizeof shown));
        if (b->failed_checks) printf("# %d configuration(s) FAILED the check against one device\n", b->failed_checks);
    }
    if (rc) return rc;
    return b->failed_checks ? EPB_ECHECK : EPB_OK;
}
