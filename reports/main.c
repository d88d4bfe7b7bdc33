/* report: turns epbench CSV files (schema 1 or 2) into report.md, report.html and plots, and (with --baseline)
 * into regression verdicts. Exit codes: 0 ok, 1 regression found (or, with --baseline, a check=fail row in the new
 * data), 2 bad usage or input, 3 system failure, 4 (--baseline) nothing compared. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

#ifndef RP_PLOTS_DIR
#define RP_PLOTS_DIR "plots"
#endif
#define MAXPLOTS 128
#ifndef RP_VALIDATION
#define RP_VALIDATION RP_PLOTS_DIR "/../experiments/results/projection-validation.json"
#endif

typedef struct {
    const char *out;
    char **base;
    int nbase;
    char **inputs;
    int ninputs;
    const char *plots_dir;
    const char *gnuplot;
    char *history;
    int no_plots;
    int help; /* -h, --help: acted on once every option parsed */
    rp_rule_t rule;
    const char *project, *calibration_out, *validation; /* --project, --calibration-out, --validation */
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: report [options] FILE.csv... -o DIR\n"
            "       report --baseline BASE.csv [--baseline MORE.csv] NEW.csv... [-o DIR] [--min-effect 0.05]\n"
            "Reads epbench CSV files (schema 1 or 2) and writes DIR/report.md, DIR/report.html and DIR/plots/*.{svg,png}.\n"
            "With --baseline, compares every measurement of NEW with the same one in BASE and exits 1 when one\n"
            "is slower (rule: reports/REGRESSION.md).\n"
            "  -o, --output DIR     output directory (replaced whole; an existing one must hold a report.md)\n"
            "  --baseline FILE      baseline CSV (repeatable)\n"
            "  --min-effect X       smallest slowdown that counts, as a fraction (default 0.05)\n"
            "  --min-abs-us X       smallest difference of medians that counts, us (default 0.5)\n"
            "  --noise-mult X       the threshold is also at least X times the baseline's robust CV (default 1; 0 off)\n"
            "  --resamples N        bootstrap resamples (default 2000)\n"
            "  --seed N             bootstrap seed (default fixed)\n"
            "  --plots DIR          directory of the gnuplot scripts (default: next to the program or %s)\n"
            "  --gnuplot PROG       gnuplot program (default: gnuplot on PATH)\n"
            "  --no-plots           write the tables only\n"
            "  --history FILE       CSV whose rows the history plot shows (default: the inputs)\n"
            "  --project CLUSTER.json  project every configuration (and the --model presets) onto the cluster the file\n"
            "                       describes (docs/CLUSTER.md): tables on stdout, with -o DIR also report.md,\n"
            "                       projection.csv and the ratio plot (docs/METHOD.md)\n"
            "  --validation FILE    the recorded validation the projection quotes (default: %s)\n"
            "  --calibration-out FILE  write a cluster file from the inputs' mode=peak rows (bench --calibrate)\n"
            "  -h, --help\n"
            "Exit: 0 ok, 1 regression found or (--baseline) a failed check in NEW, 2 bad usage or input, 3 system failure\n"
            "(a write that fails: the file named), 4 (--baseline) nothing compared: no measurement matches the baseline,\n"
            "or every match is below the timer floor (--min-abs-us) or has fewer than 3 repetitions on a side.\n",
            RP_PLOTS_DIR, RP_VALIDATION);
}

/* One line on stderr: a message's names (files, options, text from a CSV) with their control bytes made visible,
 * so that no value breaks it into lines or drives the terminal. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char raw[EPB_ERRLEN * 2], shown[EPB_ERRLEN * 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fprintf(stderr, "report: %s\n", epb_printable(raw, shown, sizeof shown));
}

/* Every option is parsed before any is acted on: --help after a bad option is still bad usage. */
static int parse_args(int argc, char **argv, opts_t *o, epb_err_t *err)
{
    enum { O_BASE = 256, O_MINEFF, O_MINABS, O_NOISE, O_RES, O_SEED, O_PLOTS, O_GNUPLOT, O_NOPLOTS, O_HIST,
           O_PROJECT, O_CALOUT, O_VALID };
    static const struct option lo[] = {
        { "output", required_argument, 0, 'o' },       { "baseline", required_argument, 0, O_BASE },
        { "min-effect", required_argument, 0, O_MINEFF }, { "min-abs-us", required_argument, 0, O_MINABS },
        { "noise-mult", required_argument, 0, O_NOISE },
        { "resamples", required_argument, 0, O_RES },  { "seed", required_argument, 0, O_SEED },
        { "plots", required_argument, 0, O_PLOTS },    { "gnuplot", required_argument, 0, O_GNUPLOT },
        { "no-plots", no_argument, 0, O_NOPLOTS },     { "help", no_argument, 0, 'h' },
        { "history", required_argument, 0, O_HIST },
        { "project", required_argument, 0, O_PROJECT }, { "calibration-out", required_argument, 0, O_CALOUT },
        { "validation", required_argument, 0, O_VALID },
        { 0, 0, 0, 0 },
    };
    o->rule = rp_rule_default();
    o->base = calloc((size_t)argc, sizeof *o->base);
    if (!o->base) return epb_fail(err, EPB_ESYS, "out of memory");
    int c;
    long v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", lo, NULL)) != -1) {
        switch (c) {
        case 'o': o->out = optarg; break;
        case O_BASE: o->base[o->nbase++] = optarg; break;
        case O_MINEFF:
            if (epb_parse_double(optarg, 0, 0.99, &o->rule.min_effect))
                return epb_fail(err, EPB_EUSAGE, "--min-effect %s: expected a fraction in [0, 0.99]", optarg);
            break;
        case O_MINABS:
            if (epb_parse_double(optarg, 0, 1e9, &o->rule.min_abs_us))
                return epb_fail(err, EPB_EUSAGE, "--min-abs-us %s: expected microseconds >= 0", optarg);
            break;
        case O_NOISE:
            if (epb_parse_double(optarg, 0, 100, &o->rule.noise_mult))
                return epb_fail(err, EPB_EUSAGE, "--noise-mult %s: expected a number in [0, 100]", optarg);
            break;
        case O_RES:
            if (epb_parse_int(optarg, 100, 1000000, &v))
                return epb_fail(err, EPB_EUSAGE, "--resamples %s: expected an integer in [100, 1000000]", optarg);
            o->rule.resamples = (int)v;
            break;
        case O_SEED:
            if (epb_parse_int(optarg, 0, LONG_MAX, &v))
                return epb_fail(err, EPB_EUSAGE, "--seed %s: expected a non-negative integer", optarg);
            o->rule.seed = (uint64_t)v;
            break;
        case O_PLOTS: o->plots_dir = optarg; break;
        case O_GNUPLOT: o->gnuplot = optarg; break;
        case O_NOPLOTS: o->no_plots = 1; break;
        case O_HIST: o->history = optarg; break;
        case O_PROJECT: o->project = optarg; break;
        case O_CALOUT: o->calibration_out = optarg; break;
        case O_VALID: o->validation = optarg; break;
        case 'h': o->help = 1; break;
        case ':': return epb_fail(err, EPB_EUSAGE, "%s: missing value (see report --help)", argv[optind - 1]);
        default:
            if (optopt) return epb_fail(err, EPB_EUSAGE, "-%c: unknown option (see report --help)", optopt);
            return epb_fail(err, EPB_EUSAGE, "%s: unknown option (see report --help)", argv[optind - 1]);
        }
    }
    if (o->help) return EPB_OK;
    o->inputs = argv + optind;
    o->ninputs = argc - optind;
    if (o->ninputs < 1) return epb_fail(err, EPB_EUSAGE, "no input CSV files (see report --help)");
    if ((o->project || o->calibration_out) && o->nbase)
        return epb_fail(err, EPB_EUSAGE, "--project and --calibration-out do not take --baseline");
    if (!o->out && !o->nbase && !o->project && !o->calibration_out)
        return epb_fail(err, EPB_EUSAGE, "-o DIR is required (or --baseline for a verdict only)");
    return EPB_OK;
}

/* The files given, before any is read or written: an input that is not a regular file is refused (a FIFO would
 * block the reader for ever), and --calibration-out may replace neither an input nor a file that is not a cluster
 * file's JSON. --project may name the file --calibration-out is about to write. */
static int check_files(const opts_t *o, epb_err_t *err)
{
    struct stat st;
    int fd, rc;
    if (o->project && !(o->calibration_out && epb_same_file(o->project, o->calibration_out))) {
        if ((rc = epb_open_regular(o->project, &fd, err))) return rc;
        close(fd);
    }
    /* a missing validation is "not recorded"; one that is there must be a file */
    if (o->validation && stat(o->validation, &st) == 0 && !S_ISREG(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "--validation %s: not a regular file (%s)", o->validation,
                        epb_file_kind(st.st_mode));
    if (!o->calibration_out) return EPB_OK;
    for (int i = 0; i < o->ninputs; i++)
        if (epb_same_file(o->calibration_out, o->inputs[i]))
            return epb_fail(err, EPB_EUSAGE, "--calibration-out %s is the input %s: it would be replaced",
                            o->calibration_out, o->inputs[i]);
    if (o->history && epb_same_file(o->calibration_out, o->history))
        return epb_fail(err, EPB_EUSAGE, "--calibration-out %s is --history %s: it would be replaced",
                        o->calibration_out, o->history);
    return epb_json_output_ok("--calibration-out", o->calibration_out, err);
}

static int script_dir_ok(const char *dir)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/phases.gp", dir);
    return access(p, R_OK) == 0;
}

/* --plots, then $EPB_PLOTS_DIR, then an installed layout next to the program, then the source tree. */
static const char *find_plots_dir(const opts_t *o, char *buf, size_t n)
{
    if (o->plots_dir) return o->plots_dir;
    const char *env = getenv("EPB_PLOTS_DIR");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l > 0) {
        exe[l] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            static const char *const rel[] = { "/../share/epbench/plots", "/../plots", "/plots" };
            for (int i = 0; i < 3; i++) {
                snprintf(buf, n, "%s%s", exe, rel[i]);
                if (script_dir_ok(buf)) return buf;
            }
        }
    }
    return RP_PLOTS_DIR;
}

/* report --baseline's exit when no measurement could be compared (none matched, or every match has too few
 * samples): a night that compared nothing must not look like a night without a regression */
#define RP_NOTHING_COMPARED 4

/* prints the verdict lines and the summary; returns whether nothing was compared */
static int print_verdicts(const rp_match_t *m, size_t n, size_t nslower)
{
    size_t counts[RP_NVERDICTS];
    rp_verdict_counts(m, n, counts);
    for (size_t i = 0; i < n; i++) {
        const rp_cmp_t *c = &m[i].cmp;
        if (c->verdict == RP_SAME || c->verdict == RP_TOO_SMALL) continue; /* the summary line counts them */
        const epb_row_t *r = m[i].now->row;
        /* names from the CSV reach a terminal: their control bytes shown, never sent */
        char mode[4 * EPB_STR + 1], strat[4 * RP_KEY + 1], phase[4 * EPB_STR + 1], hclass[4 * RP_KEY + 1];
        printf("%-8s %s %s %s P=%d", c->verdict == RP_INSUFFICIENT ? "n/a" : rp_verdict_name(c->verdict),
               epb_printable(r->mode, mode, sizeof mode), epb_printable(m[i].now->strategy, strat, sizeof strat),
               epb_printable(r->phase, phase, sizeof phase), r->ranks);
        if (!strcmp(r->mode, "moe"))
            printf(" E=%d k=%d T=%ld D=%ld F=%ld", r->experts, r->top_k, r->tokens, r->hidden, r->ffn);
        else
            printf(" bytes=%llu", (unsigned long long)r->bytes);
        printf(" %s: median %.2f -> %.2f us, ratio %.3f", epb_printable(m[i].now->hclass, hclass, sizeof hclass),
               c->med_b, c->med_n, c->ratio);
        if (c->verdict == RP_INSUFFICIENT)
            printf(", insufficient samples (%zu base, %zu new; need 3 each)\n", c->nb, c->nn);
        else
            printf(", 95%% CI [%.3f, %.3f], threshold %.3f (baseline noise %.3f), n=%zu/%zu\n", c->lo, c->hi,
                   c->effect, c->noise, c->nb, c->nn);
    }
    int nothing = rp_nothing_compared(counts);
    const char *why = !n ? "NOTHING COMPARED (no measurement matches the baseline)"
                      : !counts[RP_TOO_SMALL] ? "NOTHING COMPARED (too few repetitions: 3 needed on each side)"
                      : !counts[RP_INSUFFICIENT] ? "NOTHING COMPARED (every match is below the timer floor, --min-abs-us)"
                                                 : "NOTHING COMPARED (every match is below the timer floor or has too "
                                                   "few repetitions)";
    /* ci/nightly reads this line: its fields keep their order, "below timer floor" sits before "insufficient" */
    printf("regression check: %zu compared, %zu slower, %zu faster, %zu same, %zu below timer floor, %zu insufficient "
           "samples -> %s\n", n, counts[RP_SLOWER], counts[RP_FASTER], counts[RP_SAME], counts[RP_TOO_SMALL],
           counts[RP_INSUFFICIENT], nslower ? "REGRESSION" : nothing ? why : "no regression");
    return nothing && !nslower;
}

static int write_report(const opts_t *o, const rp_data_t *now, const rp_data_t *hist, const rp_regress_view_t *rv,
                        epb_err_t *err)
{
    char tmp[PATH_MAX], gp[PATH_MAX], pd[PATH_MAX], p[PATH_MAX + 32];
    rp_plot_opts_t po = { NULL, find_plots_dir(o, pd, sizeof pd) };
    if (!o->no_plots) {
        if (rp_which(o->gnuplot ? o->gnuplot : "gnuplot", gp, sizeof gp) == 0)
            po.gnuplot = gp;
        else
            say("%s not found%s; plots skipped, tables written", o->gnuplot ? o->gnuplot : "gnuplot",
                o->gnuplot ? "" : " on PATH");
    }
    if (po.gnuplot && !script_dir_ok(po.plots_dir))
        return epb_fail(err, EPB_EUSAGE, "plot scripts not found in %s (use --plots DIR)", po.plots_dir);
    int rc = rp_outdir_begin(o->out, tmp, sizeof tmp, err);
    if (rc) return rc;
    char names[MAXPLOTS][64];
    const char *list[MAXPLOTS];
    int nn = 0;
    rc = rp_plots(now, hist, tmp, &po, names, MAXPLOTS, &nn, err);
    for (int i = 0; i < nn; i++) list[i] = names[i];
    list[nn] = NULL;
    rp_doc_t *doc = rc ? NULL : rp_doc_new();
    if (!rc && !doc) rc = epb_fail(err, EPB_ESYS, "out of memory");
    if (!rc) {
        rp_tables(doc, now, rv, list);
        snprintf(p, sizeof p, "%s/report.md", tmp);
        rc = rp_doc_write_md(doc, p, err);
    }
    if (!rc) {
        snprintf(p, sizeof p, "%s/report.html", tmp);
        rc = rp_doc_write_html(doc, tmp, p, err);
    }
    rp_doc_free(doc);
    if (rc) {
        rp_outdir_abort(tmp);
        return rc;
    }
    return rp_outdir_commit(tmp, o->out, err);
}

/* --calibration-out FILE, then --project CLUSTER (both may be given: the file written is then projected onto) */
static int project_main(const opts_t *o, const rp_data_t *d, epb_err_t *err)
{
    int rc = EPB_OK;
    if (o->calibration_out) {
        rp_cluster_t c;
        char hc[256];
        if ((rc = rp_calibration_cluster(d, &c, hc, sizeof hc, err))) return rc;
        if ((rc = rp_cluster_write(o->calibration_out, &c, o->inputs[0], err))) return rc;
        say("wrote %s (host class %s)", o->calibration_out, hc);
    }
    if (!o->project) return EPB_OK;
    char gp[PATH_MAX], pd[PATH_MAX];
    rp_project_opts_t po = { o->project, o->out, o->validation ? o->validation : RP_VALIDATION, NULL,
                             find_plots_dir(o, pd, sizeof pd) };
    if (o->out && !o->no_plots && rp_which(o->gnuplot ? o->gnuplot : "gnuplot", gp, sizeof gp) == 0) po.gnuplot = gp;
    rc = rp_project(d, &po, err);
    if (!rc && o->out) say("wrote %s/report.md and %s/projection.csv", o->out, o->out);
    return rc;
}

int main(int argc, char **argv)
{
    opts_t o = { 0 };
    epb_err_t err = { "" };
    int rc = parse_args(argc, argv, &o, &err);
    if (!rc && o.help) {
        usage(stdout);
        free(o.base);
        return EPB_OK;
    }
    if (!rc) rc = check_files(&o, &err);
    if (rc) {
        say("%s", err.msg);
        free(o.base);
        return rc;
    }
    rp_data_t now, base = { 0 }, hist = { 0 };
    rc = rp_load(&now, o.inputs, o.ninputs, &err);
    if (!rc && o.nbase) rc = rp_load(&base, o.base, o.nbase, &err);
    if (!rc && o.history) rc = rp_load(&hist, &o.history, 1, &err);
    if (rc) {
        say("%s", err.msg);
        rp_free(&now);
        rp_free(&base);
        free(o.base);
        return rc;
    }
    if (o.project || o.calibration_out) { /* the projection's modes (project.c) */
        rc = project_main(&o, &now, &err);
        if (rc) say("%s", err.msg);
        rp_free(&now);
        rp_free(&hist);
        free(o.base);
        return rc;
    }
    rp_match_t *m = NULL;
    size_t nm = 0, nslower = 0;
    if (o.nbase) {
        rc = rp_regress(&base, &now, &o.rule, &m, &nm, &nslower, &err);
        if (!rc && nm == 0) {
            say("no measurement of %s has a match in the baseline", o.inputs[0]);
        }
    }
    int nothing = 0, failed = 0;
    if (!rc && o.nbase) {
        nothing = print_verdicts(m, nm, nslower);
        /* a night whose checks failed is not a night without a regression, whatever its times say */
        if (now.nfailrows) {
            size_t nc = 0;
            for (size_t k = 0; k < now.nconfs; k++) nc += now.confs[k].nfail > 0;
            /* not "regression check:": ci/nightly reads the last line that starts so as the summary */
            printf("FAILED CHECKS: %zu row%s of the new data say check=fail (%zu moe configuration%s); "
                   "those measurements were not compared\n", now.nfailrows, now.nfailrows == 1 ? "" : "s", nc,
                   nc == 1 ? "" : "s");
            say("%zu row%s of %s%s have check=fail: exit 1", now.nfailrows,
                    now.nfailrows == 1 ? "" : "s", o.inputs[0], o.ninputs > 1 ? " (and the other inputs)" : "");
            failed = 1;
        }
    }
    if (!rc && o.out) {
        rp_regress_view_t rv = { m, nm, &o.rule, o.nbase ? o.base[0] : NULL };
        rc = write_report(&o, &now, &hist, o.nbase ? &rv : NULL, &err);
        if (!rc) say("wrote %s/report.md and %s/report.html", o.out, o.out);
    }
    if (rc) say("%s", err.msg);
    free(m);
    rp_free(&now);
    rp_free(&base);
    rp_free(&hist);
    free(o.base);
    if (rc) return rc;
    return nslower || failed ? EPB_ECHECK : nothing ? RP_NOTHING_COMPARED : EPB_OK;
}
