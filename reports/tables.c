/* The report's content: every section as headings, tables and plots of the document model. Strategy, phase and
 * collective names are the CSV's; a phase's kind and collective come from its kind and coll columns. */
#include "report.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int has_plot(const char *const *plots, const char *name)
{
    for (int i = 0; plots && plots[i]; i++)
        if (!strcmp(plots[i], name)) return 1;
    return 0;
}

/* A byte count from the statistics (a median or a sum of uint64 bytes, as a double): a double at or past 2^64
 * (the CSV's largest bytes rounds up to it) has no uint64 value, so it is shown as the largest one. */
static void size_str(double bytes, char *buf, size_t n)
{
    uint64_t b = !(bytes > 0) ? 0 : bytes + 0.5 >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)(bytes + 0.5);
    epb_fmt_size(b, buf, n);
}

/* "a;b;c;d;e;f" -> "a, b, c, d and 2 more": a job's host list can be long. */
static void hosts_str(const char *hosts, char *buf, size_t n)
{
    size_t l = 0, shown = 0, total = 0;
    buf[0] = 0;
    for (const char *h = hosts; h && *h;) {
        const char *e = strchr(h, ';');
        size_t hl = e ? (size_t)(e - h) : strlen(h);
        if (hl) {
            total++;
            if (shown < 4 && l < n) {
                int k = snprintf(buf + l, n - l, "%s%.*s", shown ? ", " : "", (int)hl, h);
                if (k > 0) l += (size_t)k;
                shown++;
            }
        }
        h = e ? e + 1 : h + hl;
    }
    if (total > shown && l < n) snprintf(buf + l, n - l, " and %zu more", total - shown);
}

static void cfg_title(const epb_row_t *r, const char *hclass, char *buf, size_t n)
{
    char hosts[512];
    hosts_str(r->hosts, hosts, sizeof hosts);
    snprintf(buf, n, "P=%d E=%d k=%d T=%ld D=%ld F=%ld %s %s skew=%g, %s %s on %s, %d node%s%s%s", r->ranks,
             r->experts, r->top_k, r->tokens, r->hidden, r->ffn, r->dtype, r->router, r->skew, r->backend, r->device,
             hclass, r->nodes, r->nodes == 1 ? "" : "s", hosts[0] ? " (hosts " : "", hosts[0] ? hosts : "");
    if (hosts[0] && strlen(buf) + 1 < n) strcat(buf, ")");
    const char *lp = rp_layer_params(r->params);
    size_t l = strlen(buf);
    if (*lp && l + 1 < n) snprintf(buf + l, n - l, ", layer %s", lp);
}

static void regression_section(rp_doc_t *doc, const rp_regress_view_t *rv)
{
    size_t c[RP_NVERDICTS];
    rp_verdict_counts(rv->matches, rv->nmatches, c);
    rp_doc_heading(doc, 2, "Regression check against %s", rv->base_name ? rv->base_name : "the baseline");
    rp_doc_para(doc,
                "%zu matching measurements: %zu slower, %zu faster, %zu same, %zu below the timer floor, %zu with "
                "insufficient samples%s. Rule: ratio of medians new/base with a %.0f%% bootstrap interval (%d resamples); slower only when "
                "the whole interval lies above 1 + threshold, faster only when below 1 - threshold, the threshold "
                "being the larger of %.2f and %g x the baseline's robust CV (see reports/REGRESSION.md).",
                rv->nmatches, c[RP_SLOWER], c[RP_FASTER], c[RP_SAME], c[RP_TOO_SMALL], c[RP_INSUFFICIENT],
                rp_nothing_compared(c) ? ": NOTHING COMPARED" : "", rv->rule->level * 100, rv->rule->resamples,
                rv->rule->min_effect, rv->rule->noise_mult);
    static const char *const hdr[] = { "verdict", "mode", "op", "phase", "configuration", "n base/new",
                                       "median base us", "median new us", "ratio", "95% CI", "threshold" };
    rp_doc_table(doc, 11, hdr);
    /* slower first, then faster, then the rest: the lines a reader must see come on top */
    static const rp_verdict_t order[] = { RP_SLOWER, RP_FASTER, RP_SAME, RP_TOO_SMALL, RP_INSUFFICIENT };
    for (int o = 0; o < 5; o++)
        for (size_t i = 0; i < rv->nmatches; i++) {
            const rp_match_t *m = &rv->matches[i];
            if (m->cmp.verdict != order[o]) continue;
            const epb_row_t *r = m->now->row;
            char cfg[1024], sz[32];
            if (!strcmp(r->mode, "moe")) {
                cfg_title(r, m->now->hclass, cfg, sizeof cfg);
            } else {
                size_str((double)r->bytes, sz, sizeof sz);
                snprintf(cfg, sizeof cfg, "P=%d %s%s%s, %s on %s", r->ranks, sz, *r->params ? " " : "", r->params,
                         r->backend, m->now->hclass);
            }
            rp_doc_cell(doc, "%s", rp_verdict_name(m->cmp.verdict));
            rp_doc_cell(doc, "%s", r->mode);
            rp_doc_cell(doc, "%s", m->now->strategy);
            rp_doc_cell(doc, "%s", r->phase);
            rp_doc_cell(doc, "%s", cfg);
            rp_doc_cell(doc, "%zu/%zu", m->cmp.nb, m->cmp.nn);
            rp_doc_cell(doc, "%.2f", m->cmp.med_b);
            rp_doc_cell(doc, "%.2f", m->cmp.med_n);
            rp_doc_cell(doc, "%.3f", m->cmp.ratio);
            if (m->cmp.verdict == RP_INSUFFICIENT || m->cmp.verdict == RP_TOO_SMALL) {
                rp_doc_cell(doc, "-");
                rp_doc_cell(doc, "-");
            } else {
                rp_doc_cell(doc, "[%.3f, %.3f]", m->cmp.lo, m->cmp.hi);
                rp_doc_cell(doc, "%.3f", m->cmp.effect);
            }
        }
}

/* A share (of the phase sum: a true share, rp_comm_share); one past 100% would be a bug, and is flagged, never
 * shown bare. */
static void share_cell(rp_doc_t *doc, double share)
{
    if (share < 0) rp_doc_cell(doc, "-");
    else if (share > 1) rp_doc_cell(doc, "%.0f%% (FLAG: above 100%%, the phase sums disagree)", share * 100);
    else rp_doc_cell(doc, "%.1f%%", share * 100);
}

/* An efficiency: past 100% it carries the flag that explains it (DESIGN.md: no percentage above 100% unexplained). */
static void eff_cell(rp_doc_t *doc, double e, const char *why_above)
{
    if (e > 1.005) rp_doc_cell(doc, "%.0f%% (FLAG: above 100%%: %s)", e * 100, why_above);
    else rp_doc_cell(doc, "%.0f%%", e * 100);
}

static void check_cell(rp_doc_t *doc, const rp_cell_t *c)
{
    if (!c) rp_doc_cell(doc, "-");
    else if (c->nfail) rp_doc_cell(doc, "FAILED (%zu of %zu)", c->nfail, c->n);
    else if (!strcmp(c->row->check, "skipped")) rp_doc_cell(doc, "skipped");
    else {
        /* what the layer's knobs cost, next to the check that it is right: FP8 dispatch's error (schema 5), the
         * expert capacity's dropped pairs (schema 4) of the batch's ranks x T x k */
        const epb_row_t *r = c->row;
        char fp8[96] = "", drop[96] = "", load[128] = "";
        double pairs = (double)r->ranks * (double)r->tokens * (double)r->top_k;
        if (r->quant_err > 0) snprintf(fp8, sizeof fp8, "; FP8 dispatch: y %.1e from the unquantized layer (norm-wise)",
                                       r->quant_err);
        if (r->dropped > 0 && pairs > 0)
            snprintf(drop, sizeof drop, "; capacity dropped %.0f of %.0f pairs (%.1f%%)", r->dropped, pairs,
                     100 * r->dropped / pairs);
        /* redundant experts (schema 4's loads): the busiest rank's rows against holding its E/P experts alone */
        if (r->load_max >= 0 && r->load_plain > 0 && r->load_max != r->load_plain)
            snprintf(load, sizeof load, "; busiest rank computes %.0f rows (%.0f holding its E/P experts alone: %.2fx)",
                     r->load_max, r->load_plain, r->load_plain / (r->load_max > 0 ? r->load_max : 1));
        rp_doc_cell(doc, "ok%s%s%s", fp8, drop, load);
    }
}

static void moe_config(rp_doc_t *doc, const rp_data_t *d, const rp_conf_t *f, int idx, const char *const *plots)
{
    const char *cfg = f->cfg;
    char title[1024], b1[32];
    cfg_title(f->head->row, f->head->hclass, title, sizeof title);
    if (f->nfail)
        rp_doc_heading(doc, 3, "%s: FAILED (%zu failed check%s; left out of every comparison)", title, f->nfail,
                       f->nfail == 1 ? "" : "s");
    else
        rp_doc_heading(doc, 3, "%s", title);
    if (f->nstrat > f->gs || f->nphase > f->gp)
        rp_doc_para(doc, "%zu strategies and %zu phases: the tables show the first %zu and %zu.", f->nstrat, f->nphase,
                    f->gs, f->gp);

    static const char *const h1[] = { "strategy", "step median us", "step p95 us", "comm share of phase sum",
                                      "comm bytes/rank",
                                      "step / fastest", "repetitions", "check" };
    rp_doc_table(doc, 8, h1);
    for (size_t s = 0; s < f->gs; s++) {
        const char *st = f->strat[s]->strategy;
        const rp_cell_t *c = f->step[s];
        double share = rp_comm_share(d, cfg, st), vf = rp_vs_fastest(d, cfg, st);
        rp_doc_cell(doc, "%s", st);
        if (c) {
            rp_doc_cell(doc, "%.1f", c->med);
            rp_doc_cell(doc, "%.1f", c->p95);
        } else {
            rp_doc_cell(doc, "-");
            rp_doc_cell(doc, "-");
        }
        share_cell(doc, share);
        size_str(f->comm_bytes[s], b1, sizeof b1);
        rp_doc_cell(doc, "%s", f->ncomm[s] ? b1 : "-");
        if (vf == 1) rp_doc_cell(doc, "1.00 (fastest)");
        else if (vf > 0) rp_doc_cell(doc, "%.2f", vf);
        else rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "%zu", c ? c->n : f->strat[s]->n);
        check_cell(doc, c ? c : f->strat[s]);
    }

    if (!f->nphase) return;
    /* phase breakdown: phases as rows so the table stays narrow whatever the number of strategies */
    const char *h2[RP_MAXS + 2];
    h2[0] = "phase (median us)";
    h2[1] = "kind";
    for (size_t s = 0; s < f->gs; s++) h2[s + 2] = f->strat[s]->strategy;
    rp_doc_table(doc, (int)f->gs + 2, h2);
    int waits = 0;
    for (size_t p = 0; p < f->gp; p++) {
        rp_kind_t kind = RP_COMPUTE;
        for (size_t s = 0; s < f->gs; s++)
            if (f->grid[s * f->gp + p]) { kind = f->grid[s * f->gp + p]->kind; break; }
        rp_doc_cell(doc, "%s", f->phase[p]);
        rp_doc_cell(doc, "%s", rp_kind_name(kind));
        for (size_t s = 0; s < f->gs; s++) {
            const rp_cell_t *c = f->grid[s * f->gp + p];
            if (!c) rp_doc_cell(doc, "-");
            else if (c->kind == RP_COMM && c->row->schema >= 2) {
                rp_doc_cell(doc, "%.1f (wait %.1f)", c->med, c->wait);
                waits = 1;
            } else rp_doc_cell(doc, "%.1f", c->med);
        }
    }
    rp_doc_para(doc, "Each phase's time is the median over repetitions of its per-iteration maximum over ranks, so "
                     "the phases need not add up to the step (their sum is usually larger); comm share is the comm "
                     "and sync phases over the sum of all phases, a true share.");

    /* wait vs transfer: a rank that reaches a collective early waits for the last one (imbalance, not network) */
    if (waits) {
        static const char *const hw[] = { "strategy", "phase", "collective", "time us", "wait us", "transfer us",
                                          "wait share", "hidden us" };
        rp_doc_heading(doc, 4, "Wait vs transfer per comm phase");
        rp_doc_para(doc, "time: the phase's exposed time (what the step waits for); wait: from the critical rank's "
                         "arrival to the last rank's (load imbalance, not network); transfer = time - wait; hidden: "
                         "time the collective was in flight behind compute (overlapped strategies), not in time.");
        rp_doc_table(doc, 8, hw);
        for (size_t s = 0; s < f->gs; s++)
            for (size_t p = 0; p < f->gp; p++) {
                const rp_cell_t *c = f->grid[s * f->gp + p];
                if (!c || c->kind != RP_COMM || c->row->schema < 2) continue;
                double tr = c->med - c->wait;
                rp_doc_cell(doc, "%s", f->strat[s]->strategy);
                rp_doc_cell(doc, "%s", f->phase[p]);
                rp_doc_cell(doc, "%s", *c->row->coll ? c->row->coll : "-");
                rp_doc_cell(doc, "%.1f", c->med);
                rp_doc_cell(doc, "%.1f", c->wait);
                rp_doc_cell(doc, "%.1f", tr > 0 ? tr : 0);
                if (c->med > 0) rp_doc_cell(doc, "%.0f%%", 100 * (c->wait < c->med ? c->wait : c->med) / c->med);
                else rp_doc_cell(doc, "-");
                rp_doc_cell(doc, "%.1f", c->hidden);
            }
    }

    /* efficiency: comm phases against the collective benchmark, compute phases against the gemm ceiling */
    static const char *const h3[] = { "strategy", "phase", "bytes/rank", "measure", "reference", "efficiency" };
    int started = 0;
    for (size_t s = 0; s < f->gs; s++)
        for (size_t p = 0; p < f->gp; p++) {
            const rp_cell_t *c = f->grid[s * f->gp + p];
            if (!c) continue;
            const rp_cell_t *rc = NULL;
            char why[320];
            double ref = 0, peak = 0, e = rp_busbw_ref(d, c, &ref, &rc),
                   fe = rp_flops_eff_why(d, c, &peak, why, sizeof why);
            if (e < 0 && fe < 0 && !why[0]) continue;
            if (!started) { rp_doc_table(doc, 6, h3); started = 1; }
            size_str(c->bytes, b1, sizeof b1);
            rp_doc_cell(doc, "%s", f->strat[s]->strategy);
            rp_doc_cell(doc, "%s", f->phase[p]);
            rp_doc_cell(doc, "%s", c->bytes > 0 ? b1 : "-");
            if (e >= 0) {
                char b2[32];
                size_str(ref, b2, sizeof b2);
                double bw = c->busbw > 0 ? c->busbw : epb_gbps(c->bytes, c->med);
                rp_doc_cell(doc, "%.2f GB/s busbw", bw);
                rp_doc_cell(doc, "%s %s%s%s: %.2f GB/s", c->row->coll, b2, *rc->row->params ? " " : "",
                            rc->row->params, bw / e);
                eff_cell(doc, e, "the phase beat the bare collective at the nearest size measured; sizes or "
                                 "run-to-run noise differ");
            } else if (fe >= 0) {
                rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
                rp_doc_cell(doc, "gemm peak %.3f TFLOP/s (same threads and ranks per node)", peak);
                eff_cell(doc, fe, "this phase's GEMM shapes ran faster than the ceiling's 2048^3 sgemm");
            } else {
                rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
                rp_doc_cell(doc, "%s", why);
                rp_doc_cell(doc, "-");
            }
        }
    if (!started)
        rp_doc_para(doc, "No efficiency columns: no comm phase names one collective with mode=coll rows at %d ranks "
                         "(schema-1 rows name none), and no mode=peak gemm ceiling on this host class.",
                    f->head->row->ranks);
    char name[64];
    snprintf(name, sizeof name, "phases_%d", idx);
    if (has_plot(plots, name)) rp_doc_image(doc, name, "Phases per strategy, stacked: each phase's median of its per-iteration maximum "
                                      "over ranks (so the stack is the sum of per-phase maxima, at least the step); "
                                      "comm phases in blue, their wait hatched apart from the transfer; the marker "
                                      "is the step");
}

static void family_section(rp_doc_t *doc, const rp_data_t *d, const char *dim, const char *plot,
                           const char *const *plots)
{
    rp_family_t f;
    if (rp_largest_family(d, dim, &f, NULL) || f.n < 2) { rp_family_free(&f); return; }
    const rp_conf_t *c0 = rp_conf(d, f.cfg[0]);
    /* the strategies of the family's first member, in its order */
    size_t ns = c0->gs;
    int weak = !strcmp(dim, "ranks");
    rp_doc_heading(doc, 2, "Step time against %s%s", dim, weak ? " (weak scaling: tokens per rank fixed)" : "");
    char cfg[1024];
    cfg_title(c0->head->row, c0->head->hclass, cfg, sizeof cfg);
    rp_doc_para(doc, "The largest family over %s in the inputs; the other parameters as in its first member: %s.", dim,
                cfg);
    const char *h[2 * RP_MAXS + 2];
    int nh = 0;
    h[nh++] = dim;
    char labels[2 * RP_MAXS][EPB_STR + EPB_PARAMS + 32];
    for (size_t s = 0; s < ns; s++) {
        const char *st = c0->strat[s]->strategy;
        snprintf(labels[s], sizeof labels[s], "%s step us", st);
        h[nh++] = labels[s];
        if (weak) {
            snprintf(labels[RP_MAXS + s], sizeof labels[0], "%s weak-scaling eff.", st);
            h[nh++] = labels[RP_MAXS + s];
        }
    }
    h[nh++] = "fastest";
    rp_doc_table(doc, nh, h);
    for (size_t i = 0; i < f.n; i++) {
        rp_doc_cell(doc, "%g", f.x[i]);
        for (size_t s = 0; s < ns; s++) {
            const char *st = c0->strat[s]->strategy;
            const rp_cell_t *c = rp_step(d, f.cfg[i], st);
            if (c && rp_cell_failed(d, c)) rp_doc_cell(doc, "FAILED check (%.1f)", c->med);
            else if (c) rp_doc_cell(doc, "%.1f", c->med);
            else rp_doc_cell(doc, "-");
            if (weak) {
                double e = rp_weak_eff(d, &f, i, st);
                if (e >= 0) eff_cell(doc, e, "the larger job ran faster than the smallest (cache effects, or less "
                                             "contention per rank)");
                else rp_doc_cell(doc, "-");
            }
        }
        const rp_cell_t *b = rp_fastest(d, f.cfg[i]);
        rp_doc_cell(doc, "%s", b ? b->strategy : "-");
    }
    if (has_plot(plots, plot)) rp_doc_image(doc, plot, weak ? "Step time against ranks" : "Step time per strategy");
    rp_family_free(&f);
}

static void coll_section(rp_doc_t *doc, const rp_data_t *d, const char *const *plots)
{
    int any = 0, wait = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        any |= !strcmp(d->cells[i].row->mode, "coll");
        wait |= !strcmp(d->cells[i].row->mode, "coll") && d->cells[i].row->schema >= 2;
    }
    if (!any) return;
    rp_doc_heading(doc, 2, "Collectives (busbw per size)");
    static const char *const h[] = { "collective", "params", "ranks", "host class", "bytes", "median us", "p95 us",
                                     "wait us", "algbw GB/s", "busbw GB/s", "repetitions" };
    rp_doc_table(doc, 11, h);
    /* cells keep the bench's order (collective by collective, sizes ascending) */
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->row->mode, "coll")) continue;
        char sz[32];
        size_str((double)c->row->bytes, sz, sizeof sz);
        double alg = epb_gbps((double)c->row->bytes, c->med);
        rp_doc_cell(doc, "%s", c->row->op);
        rp_doc_cell(doc, "%s", *c->row->params ? c->row->params : "-");
        rp_doc_cell(doc, "%d", c->row->ranks);
        rp_doc_cell(doc, "%s", c->hclass);
        rp_doc_cell(doc, "%s", sz);
        rp_doc_cell(doc, "%.2f", c->med);
        rp_doc_cell(doc, "%.2f", c->p95);
        if (c->row->schema >= 2) rp_doc_cell(doc, "%.2f", c->wait); else rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "%.3f", alg);
        rp_doc_cell(doc, "%.3f", c->busbw);
        rp_doc_cell(doc, "%zu", c->n);
    }
    if (wait)
        rp_doc_para(doc, "wait: the median time from a rank's arrival at the collective to the last rank's arrival "
                         "(imbalance, not transfer).");
    if (has_plot(plots, "busbw")) rp_doc_image(doc, "busbw", "Bus bandwidth against message size per collective; dashed: the memcpy "
                                                   "ceiling of bench --calibrate, when the inputs have it");
}

static void peak_section(rp_doc_t *doc, const rp_data_t *d)
{
    int any = 0;
    for (size_t i = 0; i < d->ncells && !any; i++) any = !strcmp(d->cells[i].row->mode, "peak");
    if (!any) return;
    rp_doc_heading(doc, 2, "Machine ceilings (mode=peak)");
    static const char *const h[] = { "op", "host class", "bytes", "median us", "ceiling" };
    rp_doc_table(doc, 5, h);
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->row->mode, "peak")) continue;
        char sz[32];
        size_str((double)c->row->bytes, sz, sizeof sz);
        rp_doc_cell(doc, "%s", c->row->op);
        rp_doc_cell(doc, "%s", c->hclass);
        rp_doc_cell(doc, "%s", sz);
        rp_doc_cell(doc, "%.2f", c->med);
        if (!strcmp(c->row->op, "gemm") || !strcmp(c->row->op, "experts_fwd") || !strcmp(c->row->op, "experts_bwd"))
            rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
        else
            rp_doc_cell(doc, "%.2f GB/s", c->row->algbw_gbps);
    }
}

/* ---- the verdict: the answer first (DESIGN.md "The report") ---- */

/* The key=val items of a configuration's params that every strategy shares: the layer's (model=, shared=, ...),
 * not a strategy's own parameters. */
static void common_params(const rp_conf_t *f, char *buf, size_t n)
{
    size_t l = 0;
    buf[0] = 0;
    const char *p = f->strat[0]->row->params;
    while (p && *p) {
        const char *e = strchr(p, ';');
        size_t il = e ? (size_t)(e - p) : strlen(p);
        int all = il > 0;
        for (size_t s = 1; s < f->nstrat && all; s++) {
            all = 0;
            for (const char *h = f->strat[s]->row->params; h && *h && !all;) {
                const char *he = strchr(h, ';');
                size_t hl = he ? (size_t)(he - h) : strlen(h);
                all = hl == il && !strncmp(h, p, il);
                h = he ? he + 1 : h + hl;
            }
        }
        if (all && l < n) {
            int k = snprintf(buf + l, n - l, "%s%.*s", l ? ", " : "", (int)il, p);
            if (k > 0) l += (size_t)k;
        }
        p = e ? e + 1 : p + il;
    }
}

typedef struct {
    const rp_conf_t *f;
    size_t i;
} vrow_t;

/* Rows grouped as a reader looks for them: P, nodes, skew, then the layer's sizes, then k. */
static int cmp_vrow(const void *a, const void *b)
{
    const epb_row_t *p = ((const vrow_t *)a)->f->head->row, *q = ((const vrow_t *)b)->f->head->row;
#define CMP(x) if (p->x != q->x) return p->x < q->x ? -1 : 1;
    CMP(ranks) CMP(nodes) CMP(skew) CMP(experts) CMP(tokens) CMP(hidden) CMP(ffn) CMP(top_k)
#undef CMP
    size_t i = ((const vrow_t *)a)->i, j = ((const vrow_t *)b)->i;
    return (i > j) - (i < j);
}

/* Appends text to a cell under construction. */
static void cat(char *buf, size_t n, size_t *l, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void cat(char *buf, size_t n, size_t *l, const char *fmt, ...)
{
    if (*l >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *l, n - *l, fmt, ap);
    va_end(ap);
    if (k > 0) *l += (size_t)k < n - *l ? (size_t)k : n - *l - 1;
}

static void verdict_row(rp_doc_t *doc, const rp_data_t *d, const rp_conf_t *f, const rp_rule_t *rule, int show_hc)
{
    const epb_row_t *r = f->head->row;
    char cfg[1024], cp[EPB_PARAMS + 64], c1[2048], c2[2048], c3[512], c4[2048], c5[1024];
    size_t l = 0;
    common_params(f, cp, sizeof cp);
    cat(cfg, sizeof cfg, &l, "P=%d, %d node%s, skew=%g, k=%d, E=%d, T=%ld D=%ld F=%ld %s %s", r->ranks, r->nodes,
        r->nodes == 1 ? "" : "s", r->skew, r->top_k, r->experts, r->tokens, r->hidden, r->ffn, r->dtype, r->router);
    if (cp[0]) cat(cfg, sizeof cfg, &l, ", %s", cp);
    if (show_hc) cat(cfg, sizeof cfg, &l, ", on %s", f->head->hclass);
    rp_doc_cell(doc, "%s", cfg);

    rp_rank_t *rank = calloc(f->nstrat ? f->nstrat : 1, sizeof *rank);
    size_t nr = 0;
    if (rank && !f->nfail) rp_rank_conf(d, f, rule, rank, &nr);
    size_t nmin = SIZE_MAX, nmax = 0;
    for (size_t i = 0; i < f->nstrat; i++) {
        const rp_cell_t *c = f->step[i] ? f->step[i] : f->strat[i];
        if (c->n < nmin) nmin = c->n;
        if (c->n > nmax) nmax = c->n;
    }
    if (f->nfail) {
        size_t k = 0;
        c1[0] = 0;
        for (size_t s = 0; s < f->nstrat; s++)
            if (f->sfail[s]) cat(c1, sizeof c1, &k, "%s%s", k ? ", " : "", f->strat[s]->strategy);
        rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "FAILED: a check failed (%s); not compared", c1);
        rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "-");
    } else {
        size_t k1 = 0, k2 = 0, k4 = 0, k5 = 0;
        c1[0] = c2[0] = c4[0] = c5[0] = 0;
        const rp_cell_t *best = nr ? rank[0].step : NULL;
        size_t bs = nr ? rank[0].s : 0;
        double bmodel = best ? rp_volume_model(f, bs) : -1, bbytes = best ? f->comm_only_bytes[bs] : 0;
        int nsame = 0, noint = 0;
        for (size_t i = 0; i < nr; i++) {
            const rp_rank_t *q = &rank[i];
            const char *st = f->strat[q->s]->strategy;
            cat(c1, sizeof c1, &k1, "%s%s %.1f", i ? " < " : "", st, q->step->med);
            if (i > 0) {
                if (q->lo == 0 && q->hi == 0) {
                    noint = 1;
                    cat(c2, sizeof c2, &k2, "%s%s %.2f (1 repetition: no interval)", k2 ? "; " : "", st, q->ratio);
                } else {
                    cat(c2, sizeof c2, &k2, "%s%s %.2f [%.2f, %.2f]%s", k2 ? "; " : "", st, q->ratio, q->lo, q->hi,
                        q->same ? " no significant difference" : "");
                }
                nsame += q->same;
                /* the measured volume next to the model's, both over the fastest strategy's */
                double m = rp_volume_model(f, q->s);
                if (bbytes > 0 && f->ncomm[q->s]) {
                    cat(c4, sizeof c4, &k4, "%s%s %.2f", k4 ? "; " : "", st, f->comm_only_bytes[q->s] / bbytes);
                    if (m >= 0 && bmodel > 0) cat(c4, sizeof c4, &k4, " (model %.2f)", m / bmodel);
                    else cat(c4, sizeof c4, &k4, " (model -)");
                }
            }
            if (f->ncomm[q->s] && f->comm_only_us[q->s] > 0 && q->step->row->schema >= 2)
                cat(c5, sizeof c5, &k5, "%s%s %.0f%%", k5 ? "; " : "", st,
                    100 * f->comm_wait[q->s] / f->comm_only_us[q->s]);
        }
        rp_doc_cell(doc, "%s", nr ? c1 : "-");
        rp_doc_cell(doc, "%s", c2[0] ? c2 : "-");
        if (nr < 2)
            rp_doc_cell(doc, "%s", nr ? "one strategy: nothing compared" : "no step measured");
        else if (noint && !nsame)
            rp_doc_cell(doc, "%s fastest (no interval: 1 repetition; not significant)", best->strategy);
        else if (rank[1].same) {
            size_t k = 0;
            char who[1024];
            who[0] = 0;
            for (size_t i = 0; i < nr; i++)
                if (rank[i].same) cat(who, sizeof who, &k, "%s%s", k ? ", " : "", f->strat[rank[i].s]->strategy);
            rp_doc_cell(doc, "no significant difference: %s", who);
        } else
            rp_doc_cell(doc, "%s fastest, by %.2fx [%.2f, %.2f]", best->strategy, rank[1].ratio, rank[1].lo,
                        rank[1].hi);
        rp_doc_cell(doc, "%s", c4[0] ? c4 : "-");
        rp_doc_cell(doc, "%s", c5[0] ? c5 : "-");
    }
    if (nmin == nmax) rp_doc_cell(doc, "%zu", nmin); else rp_doc_cell(doc, "%zu-%zu", nmin, nmax);
    int checked = 0;
    for (size_t s = 0; s < f->nstrat; s++) {
        const rp_cell_t *c = f->step[s] ? f->step[s] : f->strat[s];
        checked |= strcmp(c->row->check, "skipped") != 0;
    }
    snprintf(c3, sizeof c3, "%zu failed", f->nfail);
    rp_doc_cell(doc, "checks: %s", f->nfail ? c3 : checked ? "all ok" : "skipped (-c 0)");
    free(rank);
}

static void verdict_section(rp_doc_t *doc, const rp_data_t *d, const rp_rule_t *rule, const char *const *plots)
{
    vrow_t *v = malloc(d->nconfs * sizeof *v);
    if (!v) return;
    int show_hc = 0, nfailed = 0;
    for (size_t k = 0; k < d->nconfs; k++) {
        v[k] = (vrow_t){ &d->confs[k], k };
        show_hc |= strcmp(d->confs[k].head->hclass, d->confs[0].head->hclass) != 0;
        nfailed += d->confs[k].nfail > 0;
    }
    qsort(v, d->nconfs, sizeof *v, cmp_vrow);
    rp_doc_heading(doc, 2, "Verdict");
    if (nfailed)
        rp_doc_para(doc, "%d configuration%s FAILED a correctness check: %s marked below and left out of every "
                         "comparison (ranking, crossover, regression).", nfailed, nfailed == 1 ? "" : "s",
                    nfailed == 1 ? "it is" : "they are");
    static const char *const h[] = { "configuration", "ranking (step median us)", "step / fastest [95% CI]",
                                     "verdict", "comm bytes / fastest's: measured (model)", "wait share of comm",
                                     "repetitions", "checks" };
    rp_doc_table(doc, 8, h);
    for (size_t k = 0; k < d->nconfs; k++) verdict_row(doc, d, v[k].f, rule, show_hc);
    free(v);
    rp_doc_para(doc, "step / fastest: the ratio of median step times, with a %.0f%% percentile-bootstrap interval "
                     "over repetitions (%d resamples of each side, seeded; the regression rule's bootstrap); \"no "
                     "significant difference\" when the interval holds 1. comm bytes: the comm phases' bytes per rank "
                     "(max over ranks) over the fastest strategy's; the model is DESIGN.md's token volume with "
                     "uniform routing (b bytes per element): local 0, agrs 4(P-1)TDb, tp2ep 4(P-1)/P TkDb (so "
                     "tp2ep/agrs = k/P), dedup 4(P-1)TDb(1-C(E-E/P,k)/C(E,k)), hier none (it depends on the hosts). "
                     "The measured bytes also hold agrs's top-k indices and gates (12(P-1)Tk) and grad_sync's "
                     "all-reduce, and skew changes tp2ep's. wait share: the comm phases' wait (a rank waiting for "
                     "the last one: imbalance) over their time.", rule->level * 100, rule->resamples);
    if (has_plot(plots, "crossover"))
        rp_doc_image(doc, "crossover", "Step time over the fastest strategy's against top_k with the 95% interval, "
                                       "one line per strategy and (P, nodes, skew); dashed: the volume model's "
                                       "ratio. Where a line crosses 1, the winner changes");
}

void rp_tables(rp_doc_t *doc, const rp_data_t *d, const rp_regress_view_t *rv, const char *const *plots)
{
    rp_doc_heading(doc, 1, "epbench report");
    rp_rule_t rule = rv && rv->rule ? *rv->rule : rp_rule_default();
    if (d->nconfs) verdict_section(doc, d, &rule, plots);
    const char *utc0 = NULL, *utc1 = NULL;
    for (size_t i = 0; i < d->nrows; i++) {
        const char *u = d->rows[i].utc;
        if (!utc0 || strcmp(u, utc0) < 0) utc0 = u;
        if (!utc1 || strcmp(u, utc1) > 0) utc1 = u;
    }
    rp_doc_para(doc, "%zu rows, %zu measurements (configuration x op x params x phase), runs from %s to %s. Times "
                     "are the median over repetitions of each row's per-iteration median (t_med_us); p95 is the "
                     "median of the rows' t_p95_us.",
                d->nrows, d->ncells, utc0 && *utc0 ? utc0 : "?", utc1 && *utc1 ? utc1 : "?");
    if (d->nderived)
        rp_doc_para(doc, "%zu rows have no kind column (schema 1): their phases' kinds come from the schema-1 phase "
                         "names, and their comm phases name no collective (no busbw comparison, no wait).",
                    d->nderived);
    if (rv && rv->matches) regression_section(doc, rv);
    if (d->nconfs) {
        rp_doc_heading(doc, 2, "MoE strategies per configuration");
        rp_doc_para(doc, "comm share: the phases of kind comm and sync over the sum of all phases (not over the step: "
                         "each phase is a maximum over ranks, so their sum is not the step). step / fastest: the strategy's "
                         "step time over the fastest strategy's in the configuration. Efficiency: a comm phase's "
                         "busbw over the busbw the collective it ran (its coll column) reached in mode=coll at the "
                         "nearest size (same ranks, nodes and host class); a compute phase's TFLOP/s over the "
                         "mode=peak gemm ceiling measured with the same BLAS threads per rank and ranks per node (else "
                         "not compared, and the table says why). A percentage above 100%% carries a FLAG that "
                         "explains it.");
        for (size_t k = 0; k < d->nconfs; k++) moe_config(doc, d, &d->confs[k], (int)k, plots);
        family_section(doc, d, "top_k", "topk", plots);
        family_section(doc, d, "experts", "experts", plots);
        family_section(doc, d, "ranks", "ranks", plots);
    }
    coll_section(doc, d, plots);
    peak_section(doc, d);
    if (has_plot(plots, "history")) {
        rp_doc_heading(doc, 2, "History");
        rp_doc_image(doc, "history", "The step time of the configuration with the most repetitions (or busbw "
                                       "of each collective at its largest size) over the runs, by UTC time");
    }
}
