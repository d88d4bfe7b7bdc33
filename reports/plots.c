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

/* The -e program: typed assignments only. */
typedef struct {
    char buf[2048];
    size_t len;
    int over;
} gp_vars_t;

static void gv_put(gp_vars_t *v, const char *text)
{
    size_t l = strlen(text), sep = v->len ? 2 : 0;
    if (v->len + sep + l >= sizeof v->buf) { v->over = 1; return; }
    memcpy(v->buf + v->len, "; ", sep);
    memcpy(v->buf + v->len + sep, text, l + 1);
    v->len += sep + l;
}

static void gv_int(gp_vars_t *v, const char *name, long x)
{
    char t[96];
    snprintf(t, sizeof t, "%s=%ld", name, x);
    gv_put(v, t);
}

/* A string variable: text is reduced by gp_safe, so it holds no quote to escape. */
static void gv_str(gp_vars_t *v, const char *name, const char *text)
{
    char safe[TEXTLEN], t[TEXTLEN + 64];
    gp_safe(safe, sizeof safe, text);
    snprintf(t, sizeof t, "%s='%s'", name, safe);
    gv_put(v, t);
}

/* A data file's text field: double-quoted gp_safe text (gnuplot reads a quoted header or xtic with blanks). */
static void dat_text(FILE *f, const char *text)
{
    char safe[TEXTLEN];
    gp_safe(safe, sizeof safe, text);
    fprintf(f, "\"%s\"", safe);
}

/* Runs gnuplot on script in DIR/plots with name.dat, for SVG then PNG, with the variables of v. */
static int run_gnuplot(const rp_plot_opts_t *o, const char *script, const char *dir, const char *name,
                       const gp_vars_t *v, epb_err_t *err)
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
        /* name is ours ([a-z0-9_]), so the file names need no quoting */
        if (asprintf(&e, "datafile='%s.dat'; outfile='%s.%s'; fmt='%s'%s%s", name, name, fmts[f], fmts[f],
                     v->len ? "; " : "", v->buf) < 0)
            return epb_fail(err, EPB_ESYS, "out of memory");
        pid_t pid = fork();
        if (pid < 0) {
            free(e);
            return epb_fail(err, EPB_ESYS, "fork: %s", strerror(errno));
        }
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0) dup2(nul, STDOUT_FILENO); /* stdout is the report's; gnuplot's errors stay on stderr */
            if (chdir(pdir)) _exit(126);
            execl(o->gnuplot, "gnuplot", "-e", e, sabs, (char *)NULL);
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
    int rc = EPB_OK, drawn = 0;
    for (size_t k = 0; k < d->nconfs && rc == EPB_OK && drawn < MAXPHPLOTS; k++) {
        const rp_conf_t *f = &d->confs[k];
        if (!f->gp || !f->gs) continue;
        char name[64];
        snprintf(name, sizeof name, "phases_%zu", k); /* numbered as report.md's configurations */
        FILE *fp = open_dat(dir, name, err, &rc);
        if (!fp) break;
        drawn++;
        fprintf(fp, "strategy");
        for (size_t p = 0; p < f->gp; p++) {
            fputc(' ', fp);
            dat_text(fp, f->phase[p]);
        }
        fprintf(fp, "\n");
        for (size_t s = 0; s < f->gs; s++) {
            dat_text(fp, f->strat[s]->strategy);
            for (size_t p = 0; p < f->gp; p++) {
                const rp_cell_t *c = f->grid[s * f->gp + p];
                fprintf(fp, " %.6g", c ? c->med : 0.0);
            }
            fprintf(fp, "\n");
        }
        if ((rc = close_dat(fp, err))) break;
        if (!o->gnuplot) continue;
        const epb_row_t *r = f->head->row;
        char title[TEXTLEN];
        snprintf(title, sizeof title, "phases: P=%d E=%d k=%d T=%ld D=%ld F=%ld %s %s skew %g", r->ranks, r->experts,
                 r->top_k, r->tokens, r->hidden, r->ffn, r->dtype, r->router, r->skew);
        gp_vars_t v = { .len = 0 };
        gv_int(&v, "ncols", (long)f->gp + 1);
        gv_str(&v, "title_", title);
        if ((rc = run_gnuplot(o, "phases.gp", dir, name, &v, err))) break;
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
            any = c && drawable(f.x[i], c->med);
        }
        if (any) st[ns++] = c0->strat[s]->strategy;
    }
    if (!ns) { rp_family_free(&f); return EPB_OK; }
    FILE *fp = open_dat(dir, name, err, &rc);
    if (!fp) { rp_family_free(&f); return rc; }
    dat_text(fp, dim);
    for (size_t s = 0; s < ns; s++) {
        fputc(' ', fp);
        dat_text(fp, st[s]);
    }
    fprintf(fp, "\n");
    for (size_t i = 0; i < f.n; i++) {
        if (f.x[i] <= 0) continue;
        fprintf(fp, "%g", f.x[i]);
        for (size_t s = 0; s < ns; s++) {
            const rp_cell_t *c = rp_step(d, f.cfg[i], st[s]);
            if (c && drawable(f.x[i], c->med)) fprintf(fp, " %.6g", c->med); else fprintf(fp, " NaN");
        }
        fprintf(fp, "\n");
    }
    rc = close_dat(fp, err);
    if (rc == EPB_OK && o->gnuplot && ns) {
        /* the largest family is one of possibly several: the title names the configuration it holds fixed */
        const epb_row_t *r = c0->head->row;
        char p[16] = "", e[16] = "", k[16] = "", title[TEXTLEN];
        if (strcmp(dim, "ranks")) snprintf(p, sizeof p, "P=%d ", r->ranks);
        if (strcmp(dim, "experts")) snprintf(e, sizeof e, "E=%d ", r->experts);
        if (strcmp(dim, "top_k")) snprintf(k, sizeof k, "k=%d ", r->top_k);
        snprintf(title, sizeof title, "step time against %s (%s%s%sT=%ld D=%ld F=%ld %s skew %g)", dim, p, e, k,
                 r->tokens, r->hidden, r->ffn, r->dtype, r->skew);
        gp_vars_t v = { .len = 0 };
        gv_int(&v, "ncols", (long)ns + 1);
        gv_str(&v, "xlab", dim);
        gv_str(&v, "title_", title);
        rc = run_gnuplot(o, "sweep.gp", dir, name, &v, err);
        if (rc == EPB_OK) add_name(names, max, nn, name);
    }
    rp_family_free(&f);
    return rc;
}

/* The crossover plot: for every top_k family and every strategy measured at two or more of its k, the strategy's
 * step time over the fastest strategy's at each k (1 = the winner), one line each; where lines cross, the winner
 * changes. Labels name the strategy and only the fields that differ between the families. */
static int crossover_plot(const rp_data_t *d, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
                          int *nn, epb_err_t *err)
{
    enum { MAXF = 12 };
    rp_family_t fam[MAXF];
    int nf, rc = rp_families(d, "top_k", fam, MAXF, &nf, err);
    if (rc) return rc;
    FILE *fp = NULL;
    int nblocks = 0;
    for (int i = 0; i < nf && !rc && nblocks < MAXSER; i++) {
        const rp_conf_t *c0 = rp_conf(d, fam[i].cfg[0]);
        const epb_row_t *r = c0->head->row;
        int dP = 0, dE = 0, dT = 0, dD = 0, dF = 0, dS = 0, dR = 0, dX = 0;
        for (int j = 0; j < nf; j++) {
            const epb_row_t *q = rp_conf(d, fam[j].cfg[0])->head->row;
            dP |= q->ranks != r->ranks, dE |= q->experts != r->experts, dT |= q->tokens != r->tokens;
            dD |= q->hidden != r->hidden, dF |= q->ffn != r->ffn, dS |= q->skew != r->skew;
            dR |= strcmp(q->router, r->router) != 0, dX |= strcmp(q->dtype, r->dtype) != 0;
        }
        char lab[TEXTLEN] = "";
        size_t l = 0;
#define LAB(cond, ...)                                                                                             \
    if ((cond) && l < sizeof lab) {                                                                                \
        int k_ = snprintf(lab + l, sizeof lab - l, __VA_ARGS__);                                                   \
        if (k_ > 0) l += (size_t)k_;                                                                               \
    }
        LAB(dP, " P=%d", r->ranks)
        LAB(dE, " E=%d", r->experts)
        LAB(dT, " T=%ld", r->tokens)
        LAB(dD, " D=%ld", r->hidden)
        LAB(dF, " F=%ld", r->ffn)
        LAB(dS, " skew=%g", r->skew)
        LAB(dR, " %s", r->router)
        LAB(dX, " %s", r->dtype)
#undef LAB
        for (size_t s = 0; s < c0->gs && nblocks < MAXSER; s++) {
            const char *st = c0->strat[s]->strategy;
            size_t pts = 0;
            for (size_t m = 0; m < fam[i].n; m++) pts += rp_vs_fastest(d, fam[i].cfg[m], st) > 0;
            if (pts < 2) continue;
            if (!fp && !(fp = open_dat(dir, "crossover", err, &rc))) break;
            char t[2 * TEXTLEN];
            snprintf(t, sizeof t, "%s%s", st, lab);
            fprintf(fp, "%s\"top_k\" ", nblocks ? "\n\n" : "");
            dat_text(fp, t);
            fprintf(fp, "\n");
            for (size_t m = 0; m < fam[i].n; m++) {
                double v = rp_vs_fastest(d, fam[i].cfg[m], st);
                if (v > 0) fprintf(fp, "%g %.6g\n", fam[i].x[m], v);
            }
            nblocks++;
        }
    }
    if (fp) {
        int rc2 = close_dat(fp, err);
        if (!rc) rc = rc2;
    }
    for (int i = 0; i < nf; i++) rp_family_free(&fam[i]);
    if (rc || !nblocks || !o->gnuplot) return rc;
    gp_vars_t v = { .len = 0 };
    gv_int(&v, "nblocks", nblocks);
    rc = run_gnuplot(o, "crossover.gp", dir, "crossover", &v, err);
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
        dat_text(f, t);
        fprintf(f, "\n");
        for (size_t i = 0; i < d->ncells; i++)
            if (ser[i] == s && drawable((double)d->cells[i].row->bytes, d->cells[i].busbw))
                fprintf(f, "%llu %.6g\n", (unsigned long long)d->cells[i].row->bytes, d->cells[i].busbw);
        drawn++;
    }
    if (f) rc = close_dat(f, err);
    free(ser);
    rp_map_free(map);
    epb_rows_free(&pool);
    if (rc || !drawn || !o->gnuplot) return rc;
    gp_vars_t v = { .len = 0 };
    gv_int(&v, "nblocks", (long)drawn);
    rc = run_gnuplot(o, "busbw.gp", dir, "busbw", &v, err);
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
        dat_text(f, t);
        fprintf(f, "\n");
        for (size_t j = 0; j < cnt[s]; j++) fprintf(f, "%s %.6g\n", pts[off[s] + j].utc, pts[off[s] + j].v);
        drawn++;
    }
    if (f) {
        int rc2 = close_dat(f, err);
        if (!rc) rc = rc2;
    }
    free(ser);
    free(cnt);
    free(off);
    free(pts);
    rp_map_free(map);
    epb_rows_free(&pool);
    if (rc || !drawn || !o->gnuplot) return rc;
    gp_vars_t v = { .len = 0 };
    gv_int(&v, "nblocks", (long)drawn);
    gv_str(&v, "ylab", moe ? "step time (us, median)" : "busbw (GB/s)");
    rc = run_gnuplot(o, "history.gp", dir, "history", &v, err);
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
