/* The report's content: every section as headings, tables and plots of the document model. */
#include "report.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAXS 16

static int has_plot(const char *const *plots, const char *name)
{
    for (int i = 0; plots && plots[i]; i++)
        if (!strcmp(plots[i], name)) return 1;
    return 0;
}

static void size_str(double bytes, char *buf, size_t n)
{
    epb_fmt_size((uint64_t)(bytes + 0.5), buf, n);
}

static void cfg_title(const epb_row_t *r, const char *hclass, char *buf, size_t n)
{
    snprintf(buf, n, "P=%d E=%d k=%d T=%ld D=%ld F=%ld %s %s skew=%g, %s %s on %s", r->ranks, r->experts, r->top_k,
             r->tokens, r->hidden, r->ffn, r->dtype, r->router, r->skew, r->backend, r->device, hclass);
}

static void regression_section(rp_doc_t *doc, const rp_regress_view_t *rv)
{
    size_t ns = 0, nf = 0, nsame = 0, nins = 0;
    for (size_t i = 0; i < rv->nmatches; i++) {
        rp_verdict_t v = rv->matches[i].cmp.verdict;
        ns += v == RP_SLOWER;
        nf += v == RP_FASTER;
        nins += v == RP_INSUFFICIENT;
        nsame += v == RP_SAME || v == RP_TOO_SMALL;
    }
    rp_doc_heading(doc, 2, "Regression check against %s", rv->base_name ? rv->base_name : "the baseline");
    rp_doc_para(doc,
                "%zu matching measurements: %zu slower, %zu faster, %zu same, %zu with insufficient samples. "
                "Rule: ratio of medians new/base with a %.0f%% bootstrap interval (%d resamples); slower only when "
                "the whole interval lies above 1 + threshold, faster only when below 1 - threshold, the threshold "
                "being the larger of %.2f and %g x the baseline's robust CV (see reports/REGRESSION.md).",
                rv->nmatches, ns, nf, nsame, nins, rv->rule->level * 100, rv->rule->resamples,
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
                snprintf(cfg, sizeof cfg, "P=%d %s, %s on %s", r->ranks, sz, r->backend, m->now->hclass);
            }
            rp_doc_cell(doc, "%s", rp_verdict_name(m->cmp.verdict));
            rp_doc_cell(doc, "%s", r->mode);
            rp_doc_cell(doc, "%s", r->op);
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

static void moe_config(rp_doc_t *doc, const rp_data_t *d, const rp_cell_t *step, int idx,
                       const char *const *plots)
{
    const char *cfg = step->cfg;
    const char *st[MAXS];
    int ns = rp_strategies(d, cfg, st, MAXS);
    char title[1024], b1[32];
    cfg_title(step->row, step->hclass, title, sizeof title);
    rp_doc_heading(doc, 3, "%s", title);

    static const char *const h1[] = { "strategy", "step median us", "step p95 us", "comm share", "comm bytes/rank",
                                      "speedup over agrs", "repetitions" };
    rp_doc_table(doc, 7, h1);
    for (int s = 0; s < ns; s++) {
        const rp_cell_t *c = rp_find(d, cfg, st[s], "step");
        double share = rp_comm_share(d, cfg, st[s]), sp = rp_speedup_over_agrs(d, cfg, st[s]);
        size_str(rp_comm_bytes(d, cfg, st[s]), b1, sizeof b1);
        if (share < 0) snprintf(b1, sizeof b1, "-");
        rp_doc_cell(doc, "%s", st[s]);
        rp_doc_cell(doc, "%.1f", c->med);
        rp_doc_cell(doc, "%.1f", c->p95);
        if (share >= 0) rp_doc_cell(doc, "%.1f%%", share * 100); else rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "%s", b1);
        if (sp > 0) rp_doc_cell(doc, "%.2fx", sp); else rp_doc_cell(doc, "-");
        rp_doc_cell(doc, "%zu", c->n);
    }

    if (!rp_has_phases(d, cfg)) return;
    /* phase breakdown: phases as rows so the table stays narrow whatever the number of strategies */
    const char *h2[MAXS + 1];
    h2[0] = "phase (median us)";
    for (int s = 0; s < ns; s++) h2[s + 1] = st[s];
    rp_doc_table(doc, ns + 1, h2);
    for (int p = 0; rp_moe_phases[p]; p++) {
        rp_doc_cell(doc, "%s%s", rp_moe_phases[p], rp_is_comm_phase(rp_moe_phases[p]) ? " (comm)" : "");
        for (int s = 0; s < ns; s++) {
            const rp_cell_t *c = rp_find(d, cfg, st[s], rp_moe_phases[p]);
            if (c) rp_doc_cell(doc, "%.1f", c->med); else rp_doc_cell(doc, "-");
        }
    }

    /* efficiency: comm phases against the collective benchmark, compute phases against the gemm ceiling */
    static const char *const h3[] = { "strategy", "phase", "bytes/rank", "measure", "reference", "efficiency" };
    int started = 0;
    for (int s = 0; s < ns; s++)
        for (int p = 0; rp_moe_phases[p]; p++) {
            const rp_cell_t *c = rp_find(d, cfg, st[s], rp_moe_phases[p]);
            if (!c) continue;
            double ref = 0, e = rp_busbw_eff(d, c, &ref), fe = rp_flops_eff(d, c);
            if (e < 0 && fe < 0) continue;
            if (!started) { rp_doc_table(doc, 6, h3); started = 1; }
            size_str(c->bytes, b1, sizeof b1);
            rp_doc_cell(doc, "%s", st[s]);
            rp_doc_cell(doc, "%s", rp_moe_phases[p]);
            rp_doc_cell(doc, "%s", c->bytes > 0 ? b1 : "-");
            if (e >= 0) {
                char b2[32];
                size_str(ref, b2, sizeof b2);
                double bw = c->busbw > 0 ? c->busbw : epb_gbps(c->bytes, c->med);
                rp_doc_cell(doc, "%.2f GB/s busbw", bw);
                rp_doc_cell(doc, "%s %s: %.2f GB/s", rp_phase_collective(st[s], rp_moe_phases[p]), b2, bw / e);
                rp_doc_cell(doc, "%.0f%%", e * 100);
            } else {
                rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
                rp_doc_cell(doc, "gemm peak %.3f TFLOP/s", rp_peak_tflops(d, c->hclass));
                rp_doc_cell(doc, "%.0f%%", fe * 100);
            }
        }
    if (!started)
        rp_doc_para(doc, "No efficiency columns: no mode=coll rows for the matching collectives at %d ranks and no "
                         "mode=peak gemm ceiling on this host class.", step->row->ranks);
    char name[64];
    snprintf(name, sizeof name, "phases_%d", idx);
    if (has_plot(plots, name)) rp_doc_image(doc, name, "Phase breakdown per strategy (median us, stacked)");
}

static void family_section(rp_doc_t *doc, const rp_data_t *d, const char *dim, const char *plot,
                           const char *const *plots)
{
    rp_family_t f;
    if (rp_largest_family(d, dim, &f, NULL) || f.n < 2) { rp_family_free(&f); return; }
    const char *st[MAXS];
    int ns = rp_strategies(d, f.cfg[0], st, MAXS);
    int weak = !strcmp(dim, "ranks");
    rp_doc_heading(doc, 2, "Step time against %s%s", dim, weak ? " (weak scaling: tokens per rank fixed)" : "");
    const rp_cell_t *c0 = ns ? rp_find(d, f.cfg[0], st[0], "step") : NULL;
    if (c0) {
        char cfg[1024];
        cfg_title(c0->row, c0->hclass, cfg, sizeof cfg);
        rp_doc_para(doc, "The largest family over %s in the inputs; the other parameters as in its first member: %s.", dim, cfg);
    }
    const char *h[2 * MAXS + 2];
    int nh = 0;
    h[nh++] = dim;
    char labels[2 * MAXS][64];
    for (int s = 0; s < ns; s++) {
        snprintf(labels[s], 64, "%s step us", st[s]);
        h[nh++] = labels[s];
        if (weak) {
            snprintf(labels[MAXS + s], 64, "%s weak-scaling eff.", st[s]);
            h[nh++] = labels[MAXS + s];
        }
    }
    if (!weak) h[nh++] = "tp2ep/agrs";
    rp_doc_table(doc, nh, h);
    for (size_t i = 0; i < f.n; i++) {
        rp_doc_cell(doc, "%g", f.x[i]);
        for (int s = 0; s < ns; s++) {
            const rp_cell_t *c = rp_find(d, f.cfg[i], st[s], "step");
            if (c) rp_doc_cell(doc, "%.1f", c->med); else rp_doc_cell(doc, "-");
            if (weak) {
                double e = rp_weak_eff(d, &f, i, st[s]);
                if (e >= 0) rp_doc_cell(doc, "%.0f%%", e * 100); else rp_doc_cell(doc, "-");
            }
        }
        if (!weak) {
            const rp_cell_t *a = rp_find(d, f.cfg[i], "agrs", "step"), *t = rp_find(d, f.cfg[i], "tp2ep", "step");
            if (a && t && a->med > 0) rp_doc_cell(doc, "%.2f", t->med / a->med); else rp_doc_cell(doc, "-");
        }
    }
    if (!weak)
        rp_doc_para(doc, "tp2ep/agrs below 1: tp2ep is faster. The volume model predicts the ratio k/P; the measured "
                         "crossover is where the column passes 1.");
    if (has_plot(plots, plot)) rp_doc_image(doc, plot, weak ? "Step time against ranks" : "Step time per strategy");
    if (!strcmp(dim, "top_k") && has_plot(plots, "crossover"))
        rp_doc_image(doc, "crossover", "tp2ep/agrs step-time ratio against top_k, one line per family of configurations");
    rp_family_free(&f);
}

static void coll_section(rp_doc_t *doc, const rp_data_t *d, const char *const *plots)
{
    int any = 0;
    for (size_t i = 0; i < d->ncells && !any; i++) any = !strcmp(d->cells[i].row->mode, "coll");
    if (!any) return;
    rp_doc_heading(doc, 2, "Collectives (busbw per size)");
    static const char *const h[] = { "collective", "ranks", "host class", "bytes", "median us", "p95 us",
                                     "algbw GB/s", "busbw GB/s", "repetitions" };
    rp_doc_table(doc, 9, h);
    /* cells keep the bench's order (collective by collective, sizes ascending) */
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->row->mode, "coll")) continue;
        char sz[32];
        size_str((double)c->row->bytes, sz, sizeof sz);
        double alg = epb_gbps((double)c->row->bytes, c->med);
        rp_doc_cell(doc, "%s", c->row->op);
        rp_doc_cell(doc, "%d", c->row->ranks);
        rp_doc_cell(doc, "%s", c->hclass);
        rp_doc_cell(doc, "%s", sz);
        rp_doc_cell(doc, "%.2f", c->med);
        rp_doc_cell(doc, "%.2f", c->p95);
        rp_doc_cell(doc, "%.3f", alg);
        rp_doc_cell(doc, "%.3f", c->busbw);
        rp_doc_cell(doc, "%zu", c->n);
    }
    if (has_plot(plots, "busbw")) rp_doc_image(doc, "busbw", "Bus bandwidth against message size per collective");
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
        if (!strcmp(c->row->op, "gemm"))
            rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
        else
            rp_doc_cell(doc, "%.2f GB/s", c->row->algbw_gbps);
    }
}

void rp_tables(rp_doc_t *doc, const rp_data_t *d, const rp_regress_view_t *rv, const char *const *plots)
{
    size_t nmoe = 0;
    for (size_t i = 0; i < d->ncells; i++)
        nmoe += !strcmp(d->cells[i].row->mode, "moe") && !strcmp(d->cells[i].row->phase, "step");
    rp_doc_heading(doc, 1, "epbench report");
    char utc0[EPB_STR] = "", utc1[EPB_STR] = "";
    for (size_t i = 0; i < d->nrows; i++) {
        const char *u = d->rows[i].utc;
        if (!utc0[0] || strcmp(u, utc0) < 0) snprintf(utc0, sizeof utc0, "%s", u);
        if (strcmp(u, utc1) > 0) snprintf(utc1, sizeof utc1, "%s", u);
    }
    rp_doc_para(doc, "%zu rows, %zu measurements (configuration x op x phase), runs from %s to %s. Times are the "
                     "median over repetitions of each row's per-iteration median (t_med_us); p95 is the median of "
                     "the rows' t_p95_us.",
                d->nrows, d->ncells, utc0[0] ? utc0 : "?", utc1[0] ? utc1 : "?");
    if (rv && rv->matches) regression_section(doc, rv);
    if (nmoe) {
        rp_doc_heading(doc, 2, "MoE strategies per configuration");
        rp_doc_para(doc, "comm share: communication phases (sync_counts, dispatch, combine, combine_bwd, "
                         "dispatch_bwd, grad_sync) over the step. Speedup over agrs: agrs step time over the "
                         "strategy's. Efficiency: a communication phase's busbw over the busbw the matching "
                         "collective reached in mode=coll at the nearest size (same ranks, same host class); a "
                         "compute phase's TFLOP/s over the mode=peak gemm ceiling.");
        int idx = 0;
        for (size_t i = 0; i < d->ncells; i++) {
            /* one section per configuration: the first step cell of it */
            if (rp_config_head(d, i)) moe_config(doc, d, &d->cells[i], idx++, plots);
        }
        family_section(doc, d, "top_k", "topk", plots);
        family_section(doc, d, "experts", "experts", plots);
        family_section(doc, d, "ranks", "ranks", plots);
    }
    coll_section(doc, d, plots);
    peak_section(doc, d);
    if (has_plot(plots, "history")) {
        rp_doc_heading(doc, 2, "History");
        rp_doc_image(doc, "history", "Metric over the runs in the inputs (by UTC time)");
    }
}
