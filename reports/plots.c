/* Plots: writes whitespace-separated data files under DIR/plots/ and runs the gnuplot scripts of plots/ on
 * them, once for SVG and once for PNG, in DIR/plots: gnuplot -e "datafile='x.dat'; outfile='x.svg'; ..." x.gp.
 *
 * Text from a CSV never reaches gnuplot's command line as code (DESIGN.md "The report"): series titles (strategy,
 * phase, collective, host names) go into the data files as double-quoted column headers, which gnuplot reads
 * as data (`title columnheader(2)`); the plot titles, the only CSV text in -e, are reduced to a safe character
 * set (gp_safe: no quotes, backquotes, backslashes, '@', '$', newlines) and then single-quoted; the file names
 * in -e are ours. */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATHLEN 4096
#define MAXSER 64        /* series in one plot */
#define MAXPHPLOTS 24    /* phase plots: the first configurations' */
#define TEXTLEN 160      /* longest label or title text in a plot */

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

/* CSV text as a plot may show it: letters, digits, blank and _ . , : = + - / ( ) % stay, ';' becomes ','
 * (host classes, params), anything else (quotes, backquote, backslash, '@', '$', '#', control characters,
 * newlines, bytes >= 0x80) becomes '_'. The result can sit inside gnuplot's single or double quotes, in -e or
 * a data file, and in an SVG, as plain text; empty text becomes "-". */
static void gp_safe(char *out, size_t n, const char *s)
{
    size_t k = 0;
    for (; s && *s && k + 1 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr(" _.,:=+-/()%", c))
            out[k++] = (char)c;
        else
            out[k++] = c == ';' ? ',' : '_';
    }
    if (k == 0 && n > 1) out[k++] = '-';
    out[k] = 0;
}


static void gv_put(rp_gpvars_t *v, const char *text)
{
    size_t l = strlen(text), sep = v->len ? 2 : 0;
    if (v->len + sep + l >= sizeof v->buf) { v->over = 1; return; }
    memcpy(v->buf + v->len, "; ", sep);
    memcpy(v->buf + v->len + sep, text, l + 1);
    v->len += sep + l;
}

void rp_gv_int(rp_gpvars_t *v, const char *name, long x)
{
    char t[96];
    snprintf(t, sizeof t, "%s=%ld", name, x);
    gv_put(v, t);
}

/* A string variable: text is reduced by gp_safe, so it holds no quote to escape. */
void rp_gv_str(rp_gpvars_t *v, const char *name, const char *text)
{
    char safe[TEXTLEN], t[TEXTLEN + 64];
    gp_safe(safe, sizeof safe, text);
    snprintf(t, sizeof t, "%s='%s'", name, safe);
    gv_put(v, t);
}

/* A variable of numbers we wrote ("1 2 4"): digits, '.', '-', 'e' and blanks only, else left out. */
static void gv_num_words(rp_gpvars_t *v, const char *name, const char *words)
{
    for (const char *c = words; *c; c++)
        if (!strchr("0123456789.-+e ", *c)) { v->over = 1; return; }
    char t[1024];
    snprintf(t, sizeof t, "%s='%s'", name, words);
    gv_put(v, t);
}

/* A data file's text field: double-quoted gp_safe text (gnuplot reads a quoted header or xtic with blanks). */
void rp_dat_text(FILE *f, const char *text)
{
    char safe[TEXTLEN];
    gp_safe(safe, sizeof safe, text);
    fprintf(f, "\"%s\"", safe);
}

/* Copies what gnuplot writes on the pipe rd into the file out, to the end of the pipe (gnuplot must never block
 * on it); the first write error's errno, or 0. */
static int copy_pipe(int rd, const char *out)
{
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), e = fd < 0 ? errno : 0;
    char buf[65536];
    for (;;) {
        ssize_t r = read(rd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t w = 0; !e && w < r;) {
            ssize_t k = write(fd, buf + w, (size_t)(r - w));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) e = k < 0 ? errno : ENOSPC;
            else w += k;
        }
    }
    if (fd >= 0 && close(fd) && !e) e = errno;
    return e;
}

/* Runs gnuplot on script in DIR/plots with name.dat, for SVG then PNG, with the variables of v. gnuplot writes
 * the image on its stdout, a pipe this process copies into the file: a write that fails (a full disk) is then
 * ours to see and to name, where gnuplot would exit 0 over a cut file. */
int rp_run_gnuplot(const rp_plot_opts_t *o, const char *script, const char *dir, const char *name,
                       const rp_gpvars_t *v, epb_err_t *err)
{
    static const char *const fmts[] = { "svg", "png" };
    char sp[PATHLEN], sabs[PATH_MAX], pdir[PATHLEN];
    snprintf(sp, sizeof sp, "%s/%s", o->plots_dir, script);
    if (!realpath(sp, sabs) || access(sabs, R_OK))
        return epb_fail(err, EPB_EUSAGE, "plot script %s: %s (use --plots DIR)", sp, strerror(errno));
    if (v->over) return epb_fail(err, EPB_ESYS, "plot %s: variables too long", name);
    snprintf(pdir, sizeof pdir, "%s/plots", dir);
    for (int f = 0; f < 2; f++) {
        char *e = NULL, out[PATHLEN + 64];
        snprintf(out, sizeof out, "%s/%s.%s", pdir, name, fmts[f]);
        /* name is ours ([a-z0-9_]), so the file name needs no quoting */
        if (asprintf(&e, "datafile='%s.dat'; outfile='/dev/stdout'; fmt='%s'%s%s", name, fmts[f], v->len ? "; " : "",
                     v->buf) < 0)
            return epb_fail(err, EPB_ESYS, "out of memory");
        int pfd[2];
        if (pipe(pfd)) {
            free(e);
            return epb_fail(err, EPB_ESYS, "pipe: %s", strerror(errno));
        }
        pid_t pid = fork();
        if (pid < 0) {
            free(e);
            close(pfd[0]);
            close(pfd[1]);
            return epb_fail(err, EPB_ESYS, "fork: %s", strerror(errno));
        }
        if (pid == 0) {
            dup2(pfd[1], STDOUT_FILENO); /* the image; gnuplot's errors stay on stderr */
            close(pfd[0]);
            close(pfd[1]);
            if (chdir(pdir)) _exit(126);
            execl(o->gnuplot, "gnuplot", "-e", e, sabs, (char *)NULL);
            _exit(127);
        }
        free(e);
        close(pfd[1]);
        int werr = copy_pipe(pfd[0], out);
        close(pfd[0]);
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR) return epb_fail(err, EPB_ESYS, "waitpid: %s", strerror(errno));
        if (werr) return epb_fail(err, EPB_ESYS, "%s: write failed: %s", out, strerror(werr));
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

static int close_dat(FILE *f, const char *dir, const char *name, epb_err_t *err)
{
    char p[PATHLEN];
    snprintf(p, sizeof p, "%s/plots/%s.dat", dir, name);
    return rp_close_output(f, p, err);
}

static int add_name(char names[][64], int max, int *n, const char *name)
{
    if (*n + 1 >= max) return 0;
    snprintf(names[(*n)++], 64, "%s", name);
    names[*n][0] = 0;
    return 1;
}

/* Appends " word" to a variable's text (our numbers, never CSV text). */
static void words_add(char *buf, size_t n, const char *fmt, double x)
{
    size_t l = strlen(buf);
    if (l + 40 >= n) return;
    if (l) buf[l++] = ' ';
    snprintf(buf + l, n - l, fmt, x);
}

/* The phase plots' colours: compute phases warm, comm phases blue (their wait a light, hatched blue), sync purple,
 * so the eye separates communication from computation before reading the key. */
static const unsigned compute_rgb[] = { 0xf28e2b, 0xffbe7d, 0x9c755f, 0xedc948, 0xd37295, 0xb6992d,
                                        0xff9d9a, 0xe15759, 0x8c564b, 0xbcbd22, 0xc49c94, 0xfabfd2 };
static const unsigned comm_rgb[] = { 0x08519c, 0x2171b5, 0x08306b, 0x4292c6, 0x1f3b73, 0x3a5f8f };
static const unsigned sync_rgb[] = { 0x6a51a3, 0x9e9ac8 };
#define WAIT_RGB 0x9ecae1
#define PAT_SOLID 3 /* gnuplot's fill patterns: 3 solid, 4 hatched */
#define PAT_HATCH 4

/* Per configuration: a stacked bar per strategy of its phases' medians (each the median of a per-iteration maximum
 * over ranks), a comm phase split into transfer and wait, and the step as a marker. What the stack adds up is the
 * sum of per-phase maxima: at least any one rank's step, and more when ranks peak in different phases; the marker
 * is the step itself, so the gap shows. Columns: strategy, one per segment (phase, or phase transfer and phase
 * wait), the step. Stack order is the phase order, the key lists it top down as the bars stack (key invert). */
static int phases_plots(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                        int *nn, epb_err_t *err)
{
    int rc = EPB_OK, drawn = 0;
    for (size_t k = 0; k < d->nconfs && rc == EPB_OK && drawn < MAXPHPLOTS; k++) {
        const rp_conf_t *f = &d->confs[k];
        if (!f->gp || !f->gs) continue;
        char name[64];
        snprintf(name, sizeof name, "phases_%zu", k); /* numbered as report.md's configurations */
        FILE *fp = open_dat(dir, name, err, &rc);
        if (!fp) break;
        drawn++;
        /* each phase's kind, and whether its wait is measured (schema 2 comm rows) */
        rp_kind_t kind[RP_MAXP];
        int split[RP_MAXP];
        for (size_t p = 0; p < f->gp; p++) {
            kind[p] = RP_COMPUTE;
            split[p] = 0;
            for (size_t s = 0; s < f->gs; s++) {
                const rp_cell_t *c = f->grid[s * f->gp + p];
                if (!c) continue;
                kind[p] = c->kind;
                split[p] |= c->kind == RP_COMM && c->row->schema >= 2;
            }
        }
        char colors[RP_MAXP * 2 * 10] = "", pats[RP_MAXP * 2 * 3] = "";
        size_t ncomp = 0, ncomm = 0, nsync = 0;
        int nseg = 0;
        fprintf(fp, "strategy");
        for (size_t p = 0; p < f->gp; p++) {
            char t[TEXTLEN];
            if (kind[p] == RP_COMM && split[p]) {
                unsigned c = comm_rgb[ncomm++ % (sizeof comm_rgb / sizeof comm_rgb[0])];
                snprintf(t, sizeof t, "%s transfer", f->phase[p]);
                fputc(' ', fp);
                rp_dat_text(fp, t);
                snprintf(t, sizeof t, "%s wait", f->phase[p]);
                fputc(' ', fp);
                rp_dat_text(fp, t);
                words_add(colors, sizeof colors, "%.0f", c);
                words_add(colors, sizeof colors, "%.0f", WAIT_RGB);
                words_add(pats, sizeof pats, "%.0f", PAT_SOLID);
                words_add(pats, sizeof pats, "%.0f", PAT_HATCH);
                nseg += 2;
                continue;
            }
            unsigned c = kind[p] == RP_COMM ? comm_rgb[ncomm++ % (sizeof comm_rgb / sizeof comm_rgb[0])]
                         : kind[p] == RP_SYNC ? sync_rgb[nsync++ % (sizeof sync_rgb / sizeof sync_rgb[0])]
                                              : compute_rgb[ncomp++ % (sizeof compute_rgb / sizeof compute_rgb[0])];
            fputc(' ', fp);
            rp_dat_text(fp, f->phase[p]);
            words_add(colors, sizeof colors, "%.0f", c);
            words_add(pats, sizeof pats, "%.0f", PAT_SOLID);
            nseg++;
        }
        fprintf(fp, " \"step (marker: its own median, max over ranks)\"\n");
        for (size_t s = 0; s < f->gs; s++) {
            rp_dat_text(fp, f->strat[s]->strategy);
            for (size_t p = 0; p < f->gp; p++) {
                const rp_cell_t *c = f->grid[s * f->gp + p];
                double t = c ? c->med : 0.0, w = c && split[p] ? (c->wait < c->med ? c->wait : c->med) : 0.0;
                if (split[p]) fprintf(fp, " %.6g %.6g", t - w, w);
                else fprintf(fp, " %.6g", t);
            }
            fprintf(fp, " %.6g\n", f->step[s] ? f->step[s]->med : 0.0);
        }
        if ((rc = close_dat(fp, dir, name, err))) break;
        if (!o->gnuplot) continue;
        const epb_row_t *r = f->head->row;
        char title[TEXTLEN];
        snprintf(title, sizeof title, "phases: P=%d, %d node%s, E=%d k=%d T=%ld D=%ld F=%ld %s %s skew %g%s",
                 r->ranks, r->nodes, r->nodes == 1 ? "" : "s", r->experts, r->top_k, r->tokens, r->hidden, r->ffn,
                 r->dtype, r->router, r->skew, f->nfail ? " FAILED check" : "");
        rp_gpvars_t v = { .len = 0 };
        rp_gv_int(&v, "nseg", nseg);
        gv_num_words(&v, "colors", colors);
        gv_num_words(&v, "pats", pats);
        rp_gv_str(&v, "title_", title);
        if ((rc = rp_run_gnuplot(o, "phases.gp", dir, name, &v, err))) break;
        add_name(names, max, nn, name);
    }
    return rc;
}

/* A point a plot can draw: gnuplot fails on a column without one ("all points y value undefined"), and the log x
 * axes of the ranks and experts sweeps and of busbw take no x <= 0. 0 is a value (busbw on one rank). */
static int drawable(double x, double y)
{
    return x > 0 && y >= 0 && y < 1e300;
}

static int sweep_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, const char *dim,
                      const char *name, char names[][64], int max, int *nn, epb_err_t *err)
{
    rp_family_t f;
    int rc = rp_largest_family(d, dim, &f, err);
    if (rc || f.n < 2) { rp_family_free(&f); return rc; }
    const rp_conf_t *c0 = rp_conf(d, f.cfg[0]);
    /* the strategies of the first member that have a step somewhere in the family (a column of NaN fails) */
    const char *st[RP_MAXS];
    size_t ns = 0;
    for (size_t s = 0; s < c0->gs; s++) {
        int any = 0;
        for (size_t i = 0; i < f.n && !any; i++) {
            const rp_cell_t *c = rp_step(d, f.cfg[i], c0->strat[s]->strategy);
            any = c && !rp_cell_failed(d, c) && drawable(f.x[i], c->med);
        }
        if (any) st[ns++] = c0->strat[s]->strategy;
    }
    if (!ns) { rp_family_free(&f); return EPB_OK; }
    FILE *fp = open_dat(dir, name, err, &rc);
    if (!fp) { rp_family_free(&f); return rc; }
    rp_dat_text(fp, dim);
    for (size_t s = 0; s < ns; s++) {
        fputc(' ', fp);
        rp_dat_text(fp, st[s]);
    }
    fprintf(fp, "\n");
    for (size_t i = 0; i < f.n; i++) {
        if (f.x[i] <= 0) continue;
        fprintf(fp, "%g", f.x[i]);
        for (size_t s = 0; s < ns; s++) {
            const rp_cell_t *c = rp_step(d, f.cfg[i], st[s]);
            /* a failed check's time is no result: no point */
            if (c && !rp_cell_failed(d, c) && drawable(f.x[i], c->med)) fprintf(fp, " %.6g", c->med);
            else fprintf(fp, " NaN");
        }
        fprintf(fp, "\n");
    }
    rc = close_dat(fp, dir, name, err);
    if (rc == EPB_OK && o->gnuplot && ns) {
        /* the largest family is one of possibly several: the title names the configuration it holds fixed */
        const epb_row_t *r = c0->head->row;
        char p[16] = "", e[16] = "", k[16] = "", title[TEXTLEN];
        if (strcmp(dim, "ranks")) snprintf(p, sizeof p, "P=%d ", r->ranks);
        if (strcmp(dim, "experts")) snprintf(e, sizeof e, "E=%d ", r->experts);
        if (strcmp(dim, "top_k")) snprintf(k, sizeof k, "k=%d ", r->top_k);
        snprintf(title, sizeof title, "step time against %s (%s%s%sT=%ld D=%ld F=%ld %s skew %g)", dim, p, e, k,
                 r->tokens, r->hidden, r->ffn, r->dtype, r->skew);
        rp_gpvars_t v = { .len = 0 };
        rp_gv_int(&v, "ncols", (long)ns + 1);
        rp_gv_str(&v, "xlab", dim);
        rp_gv_str(&v, "title_", title);
        rc = rp_run_gnuplot(o, "sweep.gp", dir, name, &v, err);
        if (rc == EPB_OK) add_name(names, max, nn, name);
    }
    rp_family_free(&f);
    return rc;
}

/* The colours of the measured series (and of their model lines): twelve distinguishable ones, as integers for
 * gnuplot's `lc rgb int(...)`. */
static const unsigned series_rgb[] = { 0x4e79a7, 0xe15759, 0x59a14f, 0xf28e2b, 0xb07aa1, 0x76b7b2,
                                       0x9c755f, 0xedc948, 0x1f3b73, 0x8c564b, 0x17becf, 0x7f7f7f };
#define NRGB (sizeof series_rgb / sizeof series_rgb[0])

/* The crossover plot: for every top_k family (one per P, nodes, skew and the other fixed fields) and every strategy
 * measured at two or more of its k, the strategy's step time over the fastest strategy's at each k (1 = the
 * winner) with the 95% bootstrap interval over repetitions (rp_rank_conf) as error bars; dashed, in the same
 * colour, the token-volume model's ratio to the family's smallest model volume (where the strategy has a model).
 * A configuration with a failed check has no ratio (rp_fastest) and so no point. The x axis is log2 with ticks at
 * the k present only. Labels name the strategy and only the fields that differ between the families. */

/* strategy st's volume model in configuration cm, -1 when it has none */
static double conf_model(const rp_conf_t *cm, const char *st)
{
    for (size_t s = 0; s < cm->nstrat; s++)
        if (!strcmp(cm->strat[s]->strategy, st)) return rp_volume_model(cm, s);
    return -1;
}

static int crossover_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                          int *nn, epb_err_t *err)
{
    enum { MAXF = 12 };
    rp_family_t fam[MAXF];
    int nf, rc = rp_families(d, "top_k", fam, MAXF, &nf, err);
    if (rc) return rc;
    rp_rule_t rule = rp_rule_default();
    FILE *fp = NULL;
    int nblocks = 0, nmodel = 0;
    char colors[MAXSER * 12] = "", mcolors[MAXSER * 12] = "", kticks[256] = "";
    double kseen[64];
    int nk = 0;
    /* model blocks are written after the measured ones: kept here until then */
    char *models = NULL;
    size_t mlen = 0;
    FILE *mf = open_memstream(&models, &mlen);
    if (!mf) rc = epb_fail(err, EPB_ESYS, "out of memory");
    for (int i = 0; i < nf && !rc && nblocks < MAXSER; i++) {
        const rp_conf_t *c0 = rp_conf(d, fam[i].cfg[0]);
        const epb_row_t *r = c0->head->row;
        int dP = 0, dN = 0, dE = 0, dT = 0, dD = 0, dF = 0, dS = 0, dR = 0, dX = 0, dL = 0;
        for (int j = 0; j < nf; j++) {
            const epb_row_t *q = rp_conf(d, fam[j].cfg[0])->head->row;
            dP |= q->ranks != r->ranks, dN |= q->nodes != r->nodes, dE |= q->experts != r->experts;
            dT |= q->tokens != r->tokens, dD |= q->hidden != r->hidden, dF |= q->ffn != r->ffn;
            dS |= q->skew != r->skew, dR |= strcmp(q->router, r->router) != 0, dX |= strcmp(q->dtype, r->dtype) != 0;
            dL |= strcmp(rp_layer_params(q->params), rp_layer_params(r->params)) != 0;
        }
        char lab[TEXTLEN] = "";
        size_t l = 0;
#define LAB(cond, ...)                                                                                             \
    if ((cond) && l < sizeof lab) {                                                                                \
        int k_ = snprintf(lab + l, sizeof lab - l, __VA_ARGS__);                                                   \
        if (k_ > 0) l += (size_t)k_;                                                                               \
    }
        LAB(dP, " P=%d", r->ranks)
        LAB(dN, " nodes=%d", r->nodes)
        LAB(dS, " skew=%g", r->skew)
        LAB(dE, " E=%d", r->experts)
        LAB(dT, " T=%ld", r->tokens)
        LAB(dD, " D=%ld", r->hidden)
        LAB(dF, " F=%ld", r->ffn)
        LAB(dR, " %s", r->router)
        LAB(dX, " %s", r->dtype)
        LAB(dL, " %s", *rp_layer_params(r->params) ? rp_layer_params(r->params) : "no layer features")
#undef LAB
        /* every member's ranking once: the ratios and their intervals */
        size_t stride = 1;
        for (size_t m = 0; m < fam[i].n; m++)
            if (rp_conf(d, fam[i].cfg[m])->nstrat > stride) stride = rp_conf(d, fam[i].cfg[m])->nstrat;
        rp_rank_t *rk = calloc(fam[i].n * stride, sizeof *rk);
        size_t *nr = calloc(fam[i].n, sizeof *nr);
        if (!rk || !nr) { free(rk); free(nr); rc = epb_fail(err, EPB_ESYS, "out of memory"); break; }
        double minmodel[64];
        for (size_t m = 0; m < fam[i].n; m++) {
            const rp_conf_t *cm = rp_conf(d, fam[i].cfg[m]);
            if (!cm->nfail && rp_rank_conf(d, cm, &rule, rk + m * stride, &nr[m]))
                rc = epb_fail(err, EPB_ESYS, "out of memory");
            minmodel[m < 64 ? m : 63] = 0;
            for (size_t s = 0; s < cm->nstrat && m < 64; s++) {
                double v = cm->step[s] ? rp_volume_model(cm, s) : -1;
                if (v > 0 && (minmodel[m] == 0 || v < minmodel[m])) minmodel[m] = v;
            }
        }
        for (size_t s = 0; s < c0->gs && nblocks < MAXSER && !rc; s++) {
            const char *st = c0->strat[s]->strategy;
            size_t pts = 0;
            for (size_t m = 0; m < fam[i].n; m++) pts += rp_vs_fastest(d, fam[i].cfg[m], st) > 0;
            if (pts < 2) continue;
            if (!fp && !(fp = open_dat(dir, "crossover", err, &rc))) break;
            char t[2 * TEXTLEN];
            snprintf(t, sizeof t, "%s%s", st, lab);
            fprintf(fp, "%s\"top_k\" ", nblocks ? "\n\n" : "");
            rp_dat_text(fp, t);
            fprintf(fp, " \"lo\" \"hi\"\n");
            int has_model = 1;
            for (size_t m = 0; m < fam[i].n; m++) {
                const rp_conf_t *cm = rp_conf(d, fam[i].cfg[m]);
                double v = rp_vs_fastest(d, fam[i].cfg[m], st);
                if (v <= 0) continue;
                double lo = v, hi = v;
                for (size_t q = 0; q < nr[m]; q++) {
                    const rp_rank_t *x = &rk[m * stride + q];
                    if (strcmp(cm->strat[x->s]->strategy, st) || x->lo <= 0) continue;
                    lo = x->lo < v ? x->lo : v;
                    hi = x->hi > v ? x->hi : v;
                }
                fprintf(fp, "%g %.6g %.6g %.6g\n", fam[i].x[m], v, lo, hi);
                int seen = 0;
                for (int q = 0; q < nk; q++) seen |= kseen[q] == fam[i].x[m];
                if (!seen && nk < 64) kseen[nk++] = fam[i].x[m];
                has_model &= conf_model(cm, st) >= 0 && m < 64 && minmodel[m] > 0;
            }
            words_add(colors, sizeof colors, "%.0f", series_rgb[nblocks % NRGB]);
            if (has_model) {
                snprintf(t, sizeof t, "model %s%s: its traffic description", st, lab);
                fprintf(mf, "\n\n\"top_k\" ");
                rp_dat_text(mf, t);
                fprintf(mf, "\n");
                for (size_t m = 0; m < fam[i].n; m++) {
                    const rp_cell_t *sc = rp_step(d, fam[i].cfg[m], st);
                    if (!sc || rp_cell_failed(d, sc)) continue;
                    fprintf(mf, "%g %.6g\n", fam[i].x[m], conf_model(rp_conf(d, fam[i].cfg[m]), st) / minmodel[m]);
                }
                words_add(mcolors, sizeof mcolors, "%.0f", series_rgb[nblocks % NRGB]);
                nmodel++;
            }
            nblocks++;
        }
        free(rk);
        free(nr);
    }
    if (mf && fclose(mf)) rc = rc ? rc : epb_fail(err, EPB_ESYS, "out of memory");
    if (fp) {
        if (!rc && models) fputs(models, fp);
        int rc2 = close_dat(fp, dir, "crossover", err);
        if (!rc) rc = rc2;
    }
    free(models);
    for (int i = 0; i < nf; i++) rp_family_free(&fam[i]);
    if (rc || !nblocks || !o->gnuplot) return rc;
    double kmin = 0, kmax = 0;
    for (int q = 0; q < nk; q++) {
        words_add(kticks, sizeof kticks, "%g", kseen[q]);
        if (!q || kseen[q] < kmin) kmin = kseen[q];
        if (!q || kseen[q] > kmax) kmax = kseen[q];
    }
    rp_gpvars_t v = { .len = 0 };
    char t[64];
    rp_gv_int(&v, "nblocks", nblocks);
    rp_gv_int(&v, "nmodel", nmodel);
    /* our numbers, not CSV text: no gp_safe needed, and these are digits and blanks */
    gv_num_words(&v, "colors", colors);
    gv_num_words(&v, "mcolors", mcolors);
    gv_num_words(&v, "kticks", kticks);
    snprintf(t, sizeof t, "kmin=%.6g; kmax=%.6g", kmin, kmax);
    gv_put(&v, t);
    rc = rp_run_gnuplot(o, "crossover.gp", dir, "crossover", &v, err);
    if (rc == EPB_OK) add_name(names, max, nn, "crossover");
    return rc;
}

/* A coll series: one collective with one params on a number of ranks of one host class; the key for rp_map. */
static void series_key(const rp_cell_t *c, char *buf, size_t n)
{
    snprintf(buf, n, "%zu:%s|%zu:%s|%zu:%s|%d", strlen(c->row->op), c->row->op, strlen(c->row->params),
             c->row->params, strlen(c->hclass), c->hclass, c->row->ranks);
}

/* The coll series of d in data order (at most MAXSER; ser[c] = series of cell c or RP_NONE), first cells in
 * first[]. Keys are interned in pool. */
static int coll_series(const rp_data_t *d, size_t *ser, const rp_cell_t **first, size_t *nser, epb_rows_t *pool,
                       rp_map_t **map)
{
    char key[RP_KEY];
    *nser = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        ser[i] = RP_NONE;
        if (strcmp(c->row->mode, "coll")) continue;
        series_key(c, key, sizeof key);
        size_t s = rp_map_get(*map, key);
        if (s == RP_NONE) {
            if (*nser >= MAXSER) continue;
            const char *k = epb_strpool_add(&pool->pool, key, strlen(key));
            if (!k || rp_map_put(map, k, *nser)) return -1;
            first[*nser] = c;
            s = (*nser)++;
        }
        ser[i] = s;
    }
    return 0;
}

static int busbw_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                      int *nn, epb_err_t *err)
{
    /* one block per series, sizes in the bench's (ascending) order */
    size_t *ser = malloc((d->ncells ? d->ncells : 1) * sizeof *ser), nser = 0;
    const rp_cell_t *first[MAXSER];
    epb_rows_t pool = { 0 };
    rp_map_t *map = NULL;
    int rc = EPB_OK;
    if (!ser || coll_series(d, ser, first, &nser, &pool, &map)) rc = epb_fail(err, EPB_ESYS, "out of memory");
    int multi_host = 0, multi_params = 0;
    for (size_t s = 1; s < nser; s++) {
        multi_host |= strcmp(first[s]->hclass, first[0]->hclass) != 0;
        multi_params |= strcmp(first[s]->row->params, first[0]->row->params) != 0;
    }
    FILE *f = NULL;
    size_t drawn = 0;
    if (!rc && nser) f = open_dat(dir, "busbw", err, &rc);
    /* blocks one after another: the cells of series s, in data order (one pass per series; MAXSER bounds it) */
    for (size_t s = 0; f && s < nser; s++) {
        const epb_row_t *r = first[s]->row;
        char t[4 * TEXTLEN];
        int k = snprintf(t, sizeof t, "%s/P%d", r->op, r->ranks);
        if (multi_params && *r->params && k > 0 && (size_t)k < sizeof t)
            k += snprintf(t + k, sizeof t - (size_t)k, " %s", r->params);
        if (multi_host && k > 0 && (size_t)k < sizeof t)
            snprintf(t + k, sizeof t - (size_t)k, " on %s", first[s]->hclass);
        size_t pts = 0;
        for (size_t i = 0; i < d->ncells; i++)
            pts += ser[i] == s && drawable((double)d->cells[i].row->bytes, d->cells[i].busbw);
        if (!pts) continue;
        fprintf(f, "%s\"bytes\" ", drawn ? "\n\n" : "");
        rp_dat_text(f, t);
        fprintf(f, "\n");
        for (size_t i = 0; i < d->ncells; i++)
            if (ser[i] == s && drawable((double)d->cells[i].row->bytes, d->cells[i].busbw))
                fprintf(f, "%llu %.6g\n", (unsigned long long)d->cells[i].row->bytes, d->cells[i].busbw);
        drawn++;
    }
    if (f) rc = close_dat(f, dir, "busbw", err);
    free(ser);
    rp_map_free(map);
    epb_rows_free(&pool);
    if (rc || !drawn || !o->gnuplot) return rc;
    rp_gpvars_t v = { .len = 0 };
    rp_gv_int(&v, "nblocks", (long)drawn);
    /* the memcpy ceiling of bench --calibrate (mode=peak op=memcpy) on the first series' host class: a collective
     * between ranks of one host moves its bytes through memory, so this is the roof its busbw lies under */
    double roof = 0;
    int roof_ranks = 0;
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (strcmp(c->row->mode, "peak") || strcmp(c->row->op, "memcpy") || c->hclass != first[0]->hclass) continue;
        if (c->busbw > roof) roof = c->busbw, roof_ranks = c->row->ranks;
    }
    char t[96], rt[TEXTLEN];
    snprintf(t, sizeof t, "roof=%.6g", roof);
    gv_put(&v, t);
    snprintf(rt, sizeof rt, "memcpy ceiling %.2f GB/s per rank (bench --calibrate, %d rank%s)", roof, roof_ranks,
             roof_ranks == 1 ? "" : "s");
    rp_gv_str(&v, "rooftitle", rt);
    rc = rp_run_gnuplot(o, "busbw.gp", dir, "busbw", &v, err);
    if (rc == EPB_OK) add_name(names, max, nn, "busbw");
    return rc;
}

/* "YYYY-MM-DDTHH:MM:SSZ": the only utc text the history plot reads (other rows are left out of it). */
static int iso_utc(const char *u)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:ddZ";
    for (int i = 0; pat[i]; i++) {
        if (!u[i]) return 0;
        if (pat[i] == 'd' ? !(u[i] >= '0' && u[i] <= '9') : u[i] != pat[i]) return 0;
    }
    return u[sizeof pat - 1] == 0;
}

typedef struct {
    const char *utc;
    double v;
} hpoint_t;

static int cmp_hpoint(const void *a, const void *b)
{
    return strcmp(((const hpoint_t *)a)->utc, ((const hpoint_t *)b)->utc);
}

/* History: step time of each strategy of the configuration with most repetitions, or, without moe rows, busbw of
 * each coll series at its largest size; one point per row, by utc. Linear in the rows: every row is looked at
 * once, through its cell. */
static int history_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                        int *nn, epb_err_t *err)
{
    /* distinct utc values decide whether there is a history at all */
    int distinct = 0;
    for (size_t i = 1; i < d->nrows && !distinct; i++) distinct = strcmp(d->rows[0].utc, d->rows[i].utc) != 0;
    if (!distinct || !d->ncells) return EPB_OK;
    size_t *ser = malloc(d->ncells * sizeof *ser), nser = 0, *cnt = NULL, *off = NULL;
    const rp_cell_t *sc[MAXSER]; /* the cell each series follows */
    hpoint_t *pts = NULL;
    epb_rows_t pool = { 0 };
    rp_map_t *map = NULL;
    int rc = EPB_OK, moe = 0;
    if (!ser) return epb_fail(err, EPB_ESYS, "out of memory");
    const rp_cell_t *best = NULL;
    for (size_t k = 0; k < d->nconfs; k++)
        for (size_t s = 0; s < d->confs[k].gs; s++) {
            const rp_cell_t *c = d->confs[k].step[s];
            if (c && (!best || c->n > best->n)) best = c;
        }
    for (size_t i = 0; i < d->ncells; i++) ser[i] = RP_NONE;
    if (best) {
        moe = 1;
        const rp_conf_t *f = &d->confs[best->conf];
        for (size_t s = 0; s < f->gs && nser < MAXSER; s++)
            if (f->step[s]) {
                ser[f->step[s] - d->cells] = nser;
                sc[nser++] = f->step[s];
            }
    } else {
        /* every coll series, followed at its largest size */
        const rp_cell_t *first[MAXSER];
        size_t *cs = malloc(d->ncells * sizeof *cs), ns = 0;
        if (!cs || coll_series(d, cs, first, &ns, &pool, &map)) rc = epb_fail(err, EPB_ESYS, "out of memory");
        for (size_t s = 0; s < ns; s++) sc[s] = NULL;
        for (size_t i = 0; !rc && i < d->ncells; i++)
            if (cs[i] != RP_NONE && (!sc[cs[i]] || d->cells[i].row->bytes > sc[cs[i]]->row->bytes))
                sc[cs[i]] = &d->cells[i];
        for (size_t s = 0; !rc && s < ns; s++) ser[sc[s] - d->cells] = s;
        nser = rc ? 0 : ns;
        free(cs);
    }
    /* the points of each series: a counting pass, a filling pass, then a sort by utc per series */
    if (!rc) {
        cnt = calloc(nser + 1, sizeof *cnt);
        off = calloc(nser + 1, sizeof *off);
        if (!cnt || !off) rc = epb_fail(err, EPB_ESYS, "out of memory");
    }
    for (size_t i = 0; !rc && i < d->nrows; i++) {
        size_t s = ser[d->row_cell[i]];
        if (s != RP_NONE && iso_utc(d->rows[i].utc)) off[s + 1]++;
    }
    for (size_t s = 0; !rc && s < nser; s++) off[s + 1] += off[s];
    if (!rc && !(pts = malloc((off[nser] ? off[nser] : 1) * sizeof *pts)))
        rc = epb_fail(err, EPB_ESYS, "out of memory");
    for (size_t i = 0; !rc && i < d->nrows; i++) {
        size_t s = ser[d->row_cell[i]];
        if (s == RP_NONE || !iso_utc(d->rows[i].utc)) continue;
        hpoint_t *p = &pts[off[s] + cnt[s]++];
        p->utc = d->rows[i].utc;
        p->v = moe ? d->rows[i].t_med_us : d->rows[i].busbw_gbps;
    }
    /* a history needs two moments in the series drawn (other rows may have other times) */
    const char *u0 = NULL;
    int spread = 0;
    for (size_t j = 0; !rc && j < off[nser] && !spread; j++) {
        if (!u0) u0 = pts[j].utc;
        else spread = strcmp(u0, pts[j].utc) != 0;
    }
    FILE *f = NULL;
    size_t drawn = 0;
    char umin_s[32] = "", umax_s[32] = ""; /* the span drawn (iso_utc text) */
    for (size_t s = 0; !rc && spread && s < nser; s++) {
        if (!cnt[s]) continue;
        if (!f && !(f = open_dat(dir, "history", err, &rc))) break;
        qsort(pts + off[s], cnt[s], sizeof *pts, cmp_hpoint);
        const epb_row_t *r = sc[s]->row;
        char t[4 * TEXTLEN];
        if (moe) snprintf(t, sizeof t, "%s", sc[s]->strategy);
        else snprintf(t, sizeof t, "%s/P%d/%llu%s%s", r->op, r->ranks, (unsigned long long)r->bytes,
                      *r->params ? " " : "", r->params);
        fprintf(f, "%s\"utc\" ", drawn ? "\n\n" : "");
        rp_dat_text(f, t);
        fprintf(f, "\n");
        for (size_t j = 0; j < cnt[s]; j++) {
            const char *u = pts[off[s] + j].utc;
            fprintf(f, "%s %.6g\n", u, pts[off[s] + j].v);
            if (!umin_s[0] || strcmp(u, umin_s) < 0) snprintf(umin_s, sizeof umin_s, "%s", u);
            if (!umax_s[0] || strcmp(u, umax_s) > 0) snprintf(umax_s, sizeof umax_s, "%s", u);
        }
        drawn++;
    }
    if (f) {
        int rc2 = close_dat(f, dir, "history", err);
        if (!rc) rc = rc2;
    }
    free(ser);
    free(cnt);
    free(off);
    free(pts);
    rp_map_free(map);
    epb_rows_free(&pool);
    if (rc || !drawn || !o->gnuplot) return rc;
    rp_gpvars_t v = { .len = 0 };
    rp_gv_int(&v, "nblocks", (long)drawn);
    rp_gv_str(&v, "ylab", moe ? "step time (us, median)" : "busbw (GB/s)");
    /* the title names what is followed; the time axis fits the span: hours within one day (a night's runs),
     * day and hour within a few days, dates beyond */
    char title[TEXTLEN], xl[64];
    const epb_row_t *r0 = sc[0]->row;
    if (moe)
        snprintf(title, sizeof title, "history: step time, P=%d, %d node%s, E=%d k=%d T=%ld D=%ld F=%ld %s skew %g",
                 r0->ranks, r0->nodes, r0->nodes == 1 ? "" : "s", r0->experts, r0->top_k, r0->tokens, r0->hidden,
                 r0->ffn, r0->dtype, r0->skew);
    else
        snprintf(title, sizeof title, "history: busbw per collective at its largest size, P=%d", r0->ranks);
    rp_gv_str(&v, "title_", title);
    const char *umin = umin_s, *umax = umax_s;
    if (umin[0] && umax[0] && !strncmp(umin, umax, 10)) {
        snprintf(xl, sizeof xl, "run (UTC time on %.10s)", umin);
        rp_gv_str(&v, "xfmt", "%H:%M");
    } else if (umin[0] && umax[0] && !strncmp(umin, umax, 7) && atoi(umax + 8) - atoi(umin + 8) <= 3) {
        snprintf(xl, sizeof xl, "run (UTC, %.7s: day-of-month hour)", umin);
        rp_gv_str(&v, "xfmt", "%d %H:%M");
    } else {
        snprintf(xl, sizeof xl, "run (UTC date)");
        rp_gv_str(&v, "xfmt", "%Y-%m-%d");
    }
    rp_gv_str(&v, "xlab", xl);
    rc = rp_run_gnuplot(o, "history.gp", dir, "history", &v, err);
    if (rc == EPB_OK) add_name(names, max, nn, "history");
    return rc;
}

int rp_plots(const rp_data_t *d, const rp_data_t *hist, const char *dir, const rp_plot_opts_t *o, char names[][64],
             int max, int *nnames, epb_err_t *err)
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
