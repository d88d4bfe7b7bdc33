/* The report's content: every section as headings, tables and plots of the document model. Strategy, phase and
 * collective names are the CSV's; a phase's kind and collective come from its kind and coll columns. */
#include "report.h"

#include <inttypes.h>
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

/* A share of the step: never above 100% (phase times are each the max over ranks and may overlap, so their sum
 * can pass the step; the text says so). */
static void share_cell(rp_doc_t *doc, double share)
{
    if (share < 0) rp_doc_cell(doc, "-");
    else if (share > 1) rp_doc_cell(doc, "100%% (sum %.2fx step)", share);
    else rp_doc_cell(doc, "%.1f%%", share * 100);
}

static void check_cell(rp_doc_t *doc, const rp_cell_t *c)
{
    if (!c) rp_doc_cell(doc, "-");
    else if (c->nfail) rp_doc_cell(doc, "FAILED (%zu of %zu)", c->nfail, c->n);
    else if (!strcmp(c->row->check, "skipped")) rp_doc_cell(doc, "skipped");
    else rp_doc_cell(doc, "ok");
}

static void moe_config(rp_doc_t *doc, const rp_data_t *d, const rp_conf_t *f, int idx, const char *const *plots)
{
    const char *cfg = f->cfg;
    char title[1024], b1[32];
    cfg_title(f->head->row, f->head->hclass, title, sizeof title);
    rp_doc_heading(doc, 3, "%s", title);
    if (f->nstrat > f->gs || f->nphase > f->gp)
        rp_doc_para(doc, "%zu strategies and %zu phases: the tables show the first %zu and %zu.", f->nstrat, f->nphase,
                    f->gs, f->gp);

    static const char *const h1[] = { "strategy", "step median us", "step p95 us", "comm share", "comm bytes/rank",
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
                     "the phases need not add up to the step; comm share adds up the comm and sync phases and is "
                     "shown at most 100%%.");

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
            double ref = 0, e = rp_busbw_ref(d, c, &ref, &rc), fe = rp_flops_eff(d, c);
            if (e < 0 && fe < 0) continue;
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
                rp_doc_cell(doc, "%.0f%%", e * 100);
            } else {
                rp_doc_cell(doc, "%.3f TFLOP/s", c->tflops);
                rp_doc_cell(doc, "gemm peak %.3f TFLOP/s", rp_peak_tflops(d, c->hclass));
                rp_doc_cell(doc, "%.0f%%", fe * 100);
            }
        }
    if (!started)
        rp_doc_para(doc, "No efficiency columns: no comm phase names one collective with mode=coll rows at %d ranks "
                         "(schema-1 rows name none), and no mode=peak gemm ceiling on this host class.",
                    f->head->row->ranks);
    char name[64];
    snprintf(name, sizeof name, "phases_%d", idx);
    if (has_plot(plots, name)) rp_doc_image(doc, name, "Phase breakdown per strategy (median us, stacked)");
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
            if (c) rp_doc_cell(doc, "%.1f", c->med); else rp_doc_cell(doc, "-");
            if (weak) {
                double e = rp_weak_eff(d, &f, i, st);
                if (e >= 0) rp_doc_cell(doc, "%.0f%%", e * 100); else rp_doc_cell(doc, "-");
            }
        }
        const rp_cell_t *b = rp_fastest(d, f.cfg[i]);
        rp_doc_cell(doc, "%s", b ? b->strategy : "-");
    }
    if (has_plot(plots, plot)) rp_doc_image(doc, plot, weak ? "Step time against ranks" : "Step time per strategy");
    if (!strcmp(dim, "top_k") && has_plot(plots, "crossover"))
        rp_doc_image(doc, "crossover", "Each strategy's step time over the fastest one's against top_k, one line per "
                                       "strategy and family of configurations: where the lines cross, the winner "
                                       "changes");
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
    rp_doc_heading(doc, 1, "epbench report");
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
        rp_doc_para(doc, "comm share: the phases of kind comm and sync over the step. step / fastest: the strategy's "
                         "step time over the fastest strategy's in the configuration. Efficiency: a comm phase's "
                         "busbw over the busbw the collective it ran (its coll column) reached in mode=coll at the "
                         "nearest size (same ranks, nodes and host class); a compute phase's TFLOP/s over the "
                         "mode=peak gemm ceiling.");
        for (size_t k = 0; k < d->nconfs; k++) moe_config(doc, d, &d->confs[k], (int)k, plots);
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
