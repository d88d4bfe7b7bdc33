/* Plots: writes whitespace-separated data files under DIR/plots/ and runs the gnuplot scripts of plots/ on
 * them, once for SVG and once for PNG: gnuplot -e "datafile='..'; outfile='..'; fmt='svg'; ..." plots/x.gp */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXS 16
#define PATHLEN 4096

int rp_which(const char *prog, char *buf, size_t n)
{
    if (strchr(prog, '/')) {
        if (access(prog, X_OK)) return -1;
        snprintf(buf, n, "%s", prog);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path) return -1;
    while (*path) {
        const char *e = strchr(path, ':');
        size_t l = e ? (size_t)(e - path) : strlen(path);
        if (l > 0) {
            snprintf(buf, n, "%.*s/%s", (int)l, path, prog);
            struct stat st;
            if (!stat(buf, &st) && S_ISREG(st.st_mode) && !access(buf, X_OK)) return 0;
        }
        path += l + (e ? 1 : 0);
    }
    return -1;
}

/* gnuplot single-quoted string: a quote is doubled */
static void gq(char *out, size_t n, const char *s)
{
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (*s == '\'') out[k++] = '\'';
        out[k++] = *s;
    }
    out[k] = 0;
}

/* Runs gnuplot on script with the variables in vars (already "a='x'; b=3"), for SVG then PNG. */
static int run_gnuplot(const rp_plot_opts_t *o, const char *script, const char *dir, const char *name,
                       const char *vars, epb_err_t *err)
{
    static const char *const fmts[] = { "svg", "png" };
    for (int f = 0; f < 2; f++) {
        char data[PATHLEN], out[PATHLEN], qd[2 * PATHLEN], qo[2 * PATHLEN], sp[PATHLEN], *e = NULL;
        snprintf(data, sizeof data, "%s/plots/%s.dat", dir, name);
        snprintf(out, sizeof out, "%s/plots/%s.%s", dir, name, fmts[f]);
        snprintf(sp, sizeof sp, "%s/%s", o->plots_dir, script);
        gq(qd, sizeof qd, data);
        gq(qo, sizeof qo, out);
        if (asprintf(&e, "datafile='%s'; outfile='%s'; fmt='%s'; %s", qd, qo, fmts[f], vars) < 0)
            return epb_fail(err, EPB_ESYS, "out of memory");
        if (access(sp, R_OK)) {
            free(e);
            return epb_fail(err, EPB_EUSAGE, "plot script %s: %s (use --plots DIR)", sp, strerror(errno));
        }
        pid_t pid = fork();
        if (pid < 0) {
            free(e);
            return epb_fail(err, EPB_ESYS, "fork: %s", strerror(errno));
        }
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0) dup2(nul, STDOUT_FILENO); /* stdout is the report's; gnuplot's errors stay on stderr */
            execl(o->gnuplot, "gnuplot", "-e", e, sp, (char *)NULL);
            _exit(127);
        }
        free(e);
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR) return epb_fail(err, EPB_ESYS, "waitpid: %s", strerror(errno));
        struct stat st;
        if (!WIFEXITED(status) || WEXITSTATUS(status) || stat(out, &st) || st.st_size == 0)
            return epb_fail(err, EPB_ESYS, "gnuplot %s failed on %s (exit status %d)", o->gnuplot, script,
                            WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return EPB_OK;
}

static FILE *open_dat(const char *dir, const char *name, epb_err_t *err, int *rc)
{
    char p[PATHLEN];
    snprintf(p, sizeof p, "%s/plots/%s.dat", dir, name);
    FILE *f = fopen(p, "w");
    *rc = f ? EPB_OK : epb_fail(err, EPB_ESYS, "%s: %s", p, strerror(errno));
    return f;
}

static int close_dat(FILE *f, epb_err_t *err)
{
    int bad = ferror(f);
    if (fclose(f) || bad) return epb_fail(err, EPB_ESYS, "writing plot data: %s", strerror(errno));
    return EPB_OK;
}

static int add_name(char names[][64], int max, int *n, const char *name)
{
    if (*n + 1 >= max) return 0;
    snprintf(names[(*n)++], 64, "%s", name);
    names[*n][0] = 0;
    return 1;
}

static int phases_plots(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                        int *nn, epb_err_t *err)
{
    int idx = 0, rc = EPB_OK;
    for (size_t i = 0; i < d->ncells && rc == EPB_OK; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (!rp_config_head(d, i)) continue;
        if (!rp_has_phases(d, c->cfg)) { idx++; continue; }
        char name[64];
        snprintf(name, sizeof name, "phases_%d", idx++); /* numbered as report.md's sections (rp_config_head) */
        const char *st[MAXS];
        int ns = rp_strategies(d, c->cfg, st, MAXS);
        FILE *f = open_dat(dir, name, err, &rc);
        if (!f) break;
        int ncols = 1;
        fprintf(f, "strategy");
        for (int p = 0; rp_moe_phases[p]; p++)
            if (strcmp(rp_moe_phases[p], "step")) { fprintf(f, " %s", rp_moe_phases[p]); ncols++; }
        fprintf(f, "\n");
        for (int s = 0; s < ns; s++) {
            fprintf(f, "%s", st[s]);
            for (int p = 0; rp_moe_phases[p]; p++) {
                if (!strcmp(rp_moe_phases[p], "step")) continue;
                const rp_cell_t *pc = rp_find(d, c->cfg, st[s], rp_moe_phases[p]);
                fprintf(f, " %.6g", pc ? pc->med : 0.0);
            }
            fprintf(f, "\n");
        }
        if ((rc = close_dat(f, err))) break;
        if (!o->gnuplot) continue;
        const epb_row_t *r = c->row;
        char vars[512];
        snprintf(vars, sizeof vars, "ncols=%d; title_='phases: P=%d E=%d k=%d T=%ld D=%ld F=%ld %s %s skew %g'", ncols,
                 r->ranks, r->experts, r->top_k, r->tokens, r->hidden, r->ffn, r->dtype, r->router, r->skew);
        if ((rc = run_gnuplot(o, "phases.gp", dir, name, vars, err))) break;
        add_name(names, max, nn, name);
    }
    return rc;
}

static int sweep_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, const char *dim,
                      const char *name, char names[][64], int max, int *nn, epb_err_t *err)
{
    rp_family_t f;
    int rc = rp_largest_family(d, dim, &f, err);
    if (rc || f.n < 2) { rp_family_free(&f); return rc; }
    const char *st[MAXS];
    int ns = rp_strategies(d, f.cfg[0], st, MAXS);
    FILE *fp = open_dat(dir, name, err, &rc);
    if (!fp) { rp_family_free(&f); return rc; }
    fprintf(fp, "%s", dim);
    for (int s = 0; s < ns; s++) fprintf(fp, " %s", st[s]);
    fprintf(fp, "\n");
    for (size_t i = 0; i < f.n; i++) {
        fprintf(fp, "%g", f.x[i]);
        for (int s = 0; s < ns; s++) {
            const rp_cell_t *c = rp_find(d, f.cfg[i], st[s], "step");
            if (c) fprintf(fp, " %.6g", c->med); else fprintf(fp, " NaN");
        }
        fprintf(fp, "\n");
    }
    rc = close_dat(fp, err);
    if (rc == EPB_OK && o->gnuplot) {
        /* the largest family is one of possibly several: the title names the configuration it holds fixed */
        const rp_cell_t *c0 = ns ? rp_find(d, f.cfg[0], st[0], "step") : NULL;
        char fixed[256] = "";
        if (c0) {
            const epb_row_t *r = c0->row;
            char p[16] = "", e[16] = "", k[16] = "";
            if (strcmp(dim, "ranks")) snprintf(p, sizeof p, "P=%d ", r->ranks);
            if (strcmp(dim, "experts")) snprintf(e, sizeof e, "E=%d ", r->experts);
            if (strcmp(dim, "top_k")) snprintf(k, sizeof k, "k=%d ", r->top_k);
            snprintf(fixed, sizeof fixed, " (%s%s%sT=%ld D=%ld F=%ld %s skew %g)", p, e, k, r->tokens, r->hidden,
                     r->ffn, r->dtype, r->skew);
        }
        char vars[512];
        snprintf(vars, sizeof vars, "ncols=%d; xlab='%s'; title_='step time against %s%s'", ns + 1, dim, dim, fixed);
        rc = run_gnuplot(o, "sweep.gp", dir, name, vars, err);
        if (rc == EPB_OK) add_name(names, max, nn, name);
    }
    rp_family_free(&f);
    return rc;
}

/* The crossover plot: tp2ep/agrs step-time ratio against top_k, one line per top_k family (the configuration
 * held fixed differs between lines: ranks, skew, sizes...), with the line of equality. Labels name only the
 * fields that differ between the families. */
static int crossover_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                          int *nn, epb_err_t *err)
{
    enum { MAXF = 12 };
    rp_family_t fam[MAXF];
    int nf, rc = rp_families(d, "top_k", fam, MAXF, &nf, err);
    if (rc) return rc;
    const epb_row_t *r0[MAXF];
    int keep = 0;
    for (int i = 0; i < nf; i++) { /* families where both strategies ran */
        const rp_cell_t *a = rp_find(d, fam[i].cfg[0], "agrs", "step"), *t = rp_find(d, fam[i].cfg[0], "tp2ep", "step");
        if (a && t) { r0[keep] = a->row; fam[keep++] = fam[i]; }
        else rp_family_free(&fam[i]);
    }
    FILE *fp = keep ? open_dat(dir, "crossover", err, &rc) : NULL;
    char labels[MAXF * 96] = "";
    for (int i = 0; i < keep && fp; i++) {
        const epb_row_t *r = r0[i];
        int dP = 0, dE = 0, dT = 0, dD = 0, dF = 0, dS = 0, dR = 0, dX = 0;
        for (int j = 0; j < keep; j++) {
            const epb_row_t *q = r0[j];
            dP |= q->ranks != r->ranks, dE |= q->experts != r->experts, dT |= q->tokens != r->tokens;
            dD |= q->hidden != r->hidden, dF |= q->ffn != r->ffn, dS |= q->skew != r->skew;
            dR |= strcmp(q->router, r->router) != 0, dX |= strcmp(q->dtype, r->dtype) != 0;
        }
        char lab[96] = "", *w = lab;
        size_t left = sizeof lab;
#define LAB(cond, ...) if (cond) { int k_ = snprintf(w, left, "%s", w == lab ? "" : ","); w += k_; left -= (size_t)k_; \
                                   k_ = snprintf(w, left, __VA_ARGS__); if (k_ > 0 && (size_t)k_ < left) { w += k_; left -= (size_t)k_; } }
        LAB(dP, "P=%d", r->ranks)
        LAB(dE, "E=%d", r->experts)
        LAB(dT, "T=%ld", r->tokens)
        LAB(dD, "D=%ld", r->hidden)
        LAB(dF, "F=%ld", r->ffn)
        LAB(dS, "skew=%g", r->skew)
        LAB(dR, "%s", r->router)
        LAB(dX, "%s", r->dtype)
#undef LAB
        if (!lab[0]) snprintf(lab, sizeof lab, "P=%d,E=%d,T=%ld", r->ranks, r->experts, r->tokens);
        size_t l = strlen(labels);
        snprintf(labels + l, sizeof labels - l, "%s%s", l ? " " : "", lab);
        fprintf(fp, "%s# %s\n", i ? "\n\n" : "", lab);
        for (size_t m = 0; m < fam[i].n; m++) {
            const rp_cell_t *a = rp_find(d, fam[i].cfg[m], "agrs", "step"), *t = rp_find(d, fam[i].cfg[m], "tp2ep", "step");
            if (a && t && a->med > 0) fprintf(fp, "%g %.6g\n", fam[i].x[m], t->med / a->med);
        }
    }
    if (fp) rc = close_dat(fp, err);
    for (int i = 0; i < keep; i++) rp_family_free(&fam[i]);
    if (rc || !keep || !o->gnuplot) return rc;
    char vars[MAXF * 96 + 64];
    snprintf(vars, sizeof vars, "nblocks=%d; labels='%s'", keep, labels);
    rc = run_gnuplot(o, "crossover.gp", dir, "crossover", vars, err);
    if (rc == EPB_OK) add_name(names, max, nn, "crossover");
    return rc;
}

static int busbw_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                      int *nn, epb_err_t *err)
{
    /* one block per (collective, ranks, host class), sizes in the bench's (ascending) order */
    char series[64][512], words[8192] = "";
    int nser = 0;
    for (size_t i = 0; i < d->ncells && nser < 64; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->row->mode, "coll")) continue;
        char s[512];
        snprintf(s, sizeof s, "%s|%d|%s", c->row->op, c->row->ranks, c->hclass);
        int dup = 0;
        for (int k = 0; k < nser && !dup; k++) dup = !strcmp(series[k], s);
        if (!dup) snprintf(series[nser++], sizeof series[0], "%s", s);
    }
    if (nser == 0) return EPB_OK;
    int rc;
    FILE *f = open_dat(dir, "busbw", err, &rc);
    if (!f) return rc;
    int multi_host = 0;
    for (size_t i = 0; i < d->ncells; i++)
        if (!strcmp(d->cells[i].row->mode, "coll") && strcmp(d->cells[i].hclass, d->cells[0].hclass)) multi_host = 1;
    for (int k = 0; k < nser; k++) {
        if (k) fprintf(f, "\n\n");
        fprintf(f, "# %s\n", series[k]);
        for (size_t i = 0; i < d->ncells; i++) {
            const rp_cell_t *c = &d->cells[i];
            if (strcmp(c->row->mode, "coll")) continue;
            char s[512];
            snprintf(s, sizeof s, "%s|%d|%s", c->row->op, c->row->ranks, c->hclass);
            if (!strcmp(s, series[k])) fprintf(f, "%llu %.6g\n", (unsigned long long)c->row->bytes, c->busbw);
        }
        /* a gnuplot word: no spaces */
        char w[600];
        const char *bar = strchr(series[k], '|');
        snprintf(w, sizeof w, "%.*s/P%d", (int)(bar - series[k]), series[k], atoi(bar + 1));
        if (multi_host) {
            const char *h = strchr(bar + 1, '|') + 1;
            size_t l = strlen(w);
            snprintf(w + l, sizeof w - l, "@%s", h);
        }
        for (char *p = w; *p; p++)
            if (*p == ' ' || *p == '\'' || *p == '"') *p = '_';
        size_t l = strlen(words);
        snprintf(words + l, sizeof words - l, "%s%s", k ? " " : "", w);
    }
    if ((rc = close_dat(f, err))) return rc;
    if (!o->gnuplot) return EPB_OK;
    char vars[8300];
    snprintf(vars, sizeof vars, "names='%s'", words);
    rc = run_gnuplot(o, "busbw.gp", dir, "busbw", vars, err);
    if (rc == EPB_OK) add_name(names, max, nn, "busbw");
    return rc;
}

/* History: step time of each strategy of the configuration with most rows, or, without moe rows, busbw of each
 * collective at its largest size; one point per row, at its utc. */
static int history_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                        int *nn, epb_err_t *err)
{
    const rp_cell_t *best = NULL;
    int moe = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (!strcmp(c->row->mode, "moe") && !strcmp(c->row->phase, "step") && (!best || c->n > best->n)) best = c;
    }
    moe = best != NULL;
    /* distinct utc values decide whether there is a history at all */
    const char *u0 = NULL;
    int distinct = 0;
    for (size_t i = 0; i < d->nrows && !distinct; i++) {
        if (!u0) u0 = d->rows[i].utc;
        else if (strcmp(u0, d->rows[i].utc)) distinct = 1;
    }
    if (!distinct) return EPB_OK;
    int rc;
    FILE *f = open_dat(dir, "history", err, &rc);
    if (!f) return rc;
    char words[4096] = "";
    int nser = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        int take;
        if (moe) {
            take = !strcmp(c->cfg, best->cfg) && !strcmp(c->row->phase, "step");
        } else {
            take = !strcmp(c->row->mode, "coll");
            for (size_t j = 0; j < d->ncells && take; j++) { /* the largest size of this collective */
                const rp_cell_t *q = &d->cells[j];
                if (!strcmp(q->row->mode, "coll") && !strcmp(q->row->op, c->row->op) && q->row->ranks == c->row->ranks &&
                    !strcmp(q->hclass, c->hclass) && q->row->bytes > c->row->bytes)
                    take = 0;
            }
        }
        if (!take || nser >= 32) continue;
        if (nser) fprintf(f, "\n\n");
        nser++;
        /* rows of this cell in utc order */
        size_t cnt = 0;
        for (size_t j = 0; j < d->nrows; j++) {
            char k[RP_KEY];
            rp_cell_key(&d->rows[j], k, sizeof k);
            if (strcmp(k, c->key)) continue;
            fprintf(f, "%s %.6g\n", d->rows[j].utc, moe ? d->rows[j].t_med_us : d->rows[j].busbw_gbps);
            cnt++;
        }
        char w[128];
        if (moe) snprintf(w, sizeof w, "%s", c->row->op);
        else snprintf(w, sizeof w, "%s/P%d/%llu", c->row->op, c->row->ranks, (unsigned long long)c->row->bytes);
        size_t l = strlen(words);
        snprintf(words + l, sizeof words - l, "%s%s", l ? " " : "", w);
    }
    if ((rc = close_dat(f, err))) return rc;
    if (!o->gnuplot || !nser) return EPB_OK;
    char vars[4300];
    snprintf(vars, sizeof vars, "names='%s'; ylab='%s'", words, moe ? "step time (us, median)" : "busbw (GB/s)");
    rc = run_gnuplot(o, "history.gp", dir, "history", vars, err);
    if (rc == EPB_OK) add_name(names, max, nn, "history");
    return rc;
}

int rp_plots(const rp_data_t *d, const rp_data_t *hist, const char *dir, const rp_plot_opts_t *o, char names[][64], int max, int *nnames,
             epb_err_t *err)
{
    char p[PATHLEN];
    *nnames = 0;
    if (max > 0) names[0][0] = 0;
    snprintf(p, sizeof p, "%s/plots", dir);
    if (mkdir(p, 0755) && errno != EEXIST) return epb_fail(err, EPB_ESYS, "mkdir %s: %s", p, strerror(errno));
    int rc = phases_plots(d, dir, o, names, max, nnames, err);
    if (!rc) rc = sweep_plot(d, dir, o, "top_k", "topk", names, max, nnames, err);
    if (!rc) rc = crossover_plot(d, dir, o, names, max, nnames, err);
    if (!rc) rc = sweep_plot(d, dir, o, "experts", "experts", names, max, nnames, err);
    if (!rc) rc = sweep_plot(d, dir, o, "ranks", "ranks", names, max, nnames, err);
    if (!rc) rc = busbw_plot(d, dir, o, names, max, nnames, err);
    if (!rc) rc = history_plot(hist && hist->nrows ? hist : d, dir, o, names, max, nnames, err);
    return rc;
}
