/* Tests of the report generator. Usage: test_report unit|cli|plots FIXTURES_DIR REPORT_EXE
 *   unit:  the computations on tests/reports/fixtures/moe.csv (expected ratios written there) and the
 *          regression statistics on sample sets;
 *   cli:   malformed inputs through the program (exit 2, FILE:LINE, nothing written), regression exit codes,
 *          a report without gnuplot; inputs that hurt (FIFOs, calibrations the reader refuses, HTML and terminal
 *          controls in names, options after --help, a full disk);
 *   plots: every plot rendered and non-empty as SVG and PNG, inlined in report.html (skipped: the plan "1..0 # SKIP",
 *          without gnuplot); a hostile CSV runs nothing;
 *   verdict: fixtures/verdict.csv (make_verdict.py): the verdict first, its intervals, the failed configuration
 *          left out, no percentage above 100 without a FLAG, --baseline exit 1 on failed checks;
 *   scale: the report's instructions (callgrind) grow linearly from 1 to 2 MB; 20 MB within 30 s
 *          (test_report scale ... GEN_CSV). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "tap.h"

static const char *fix, *exe;
static char tmp[] = "/tmp/epb_test_report_XXXXXX";

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) < 1e-6 * (1 + fabs((double)(b))))

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* A TAP line is one line: text from a program's stderr (error messages end in '\n') is flattened before it goes
 * into a description. Returns s. */
static char *one_line(char *s)
{
    if (!s) return NULL;
    for (char *c = s; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    size_t l = strlen(s);
    while (l > 0 && s[l - 1] == ' ') s[--l] = 0;
    return s;
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static long fsize(const char *p)
{
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

/* Runs a shell command line; returns the exit status and puts stderr into err (caller frees). */
static int run(const char *cmd, char **err)
{
    char full[8192], ep[512];
    snprintf(ep, sizeof ep, "%s/stderr.txt", tmp);
    snprintf(full, sizeof full, "%s >%s/stdout.txt 2>%s", cmd, tmp, ep);
    int st = system(full);
    if (err) *err = read_file(ep);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Number of entries in tmp whose name starts with prefix (leftover temporaries). */
static int count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return n;
}

/* ---- unit: numbers on the fixture ---- */

static void test_numbers(void)
{
    char path[1024], *paths[1] = { path };
    snprintf(path, sizeof path, "%s/moe.csv", fix);
    rp_data_t d;
    epb_err_t err = { "" };
    int rc = rp_load(&d, paths, 1, &err);
    TAP_OK(rc == EPB_OK, "fixture moe.csv loads (%s)", err.msg);
    if (rc) return;
    const rp_cell_t *step = rp_step(&d, d.cells[0].cfg, "tp2ep");
    TAP_OK(step && step->n == 3 && NEAR(step->med, 500), "tp2ep step: 3 repetitions, median 500 us");
    const char *cfg = step ? step->cfg : "";
    TAP_OK(NEAR(rp_vs_fastest(&d, cfg, "tp2ep"), 1.0), "tp2ep is the fastest: step / fastest = 1");
    TAP_OK(NEAR(rp_vs_fastest(&d, cfg, "agrs"), 2.0), "agrs step / fastest = 1000/500 = 2.00");
    TAP_OK(NEAR(rp_vs_fastest(&d, cfg, "local"), 1.6), "local step / fastest = 800/500 = 1.60");
    TAP_OK(NEAR(rp_comm_share(&d, cfg, "tp2ep"), 300.0 / 490), "tp2ep comm share = 300 over the phase sum 490 "
           "(not over the 500 us step) (got %g)", rp_comm_share(&d, cfg, "tp2ep"));
    TAP_OK(NEAR(rp_comm_share(&d, cfg, "agrs"), 0.81), "agrs comm share = 810/1000 (the phase sum)");
    TAP_OK(NEAR(rp_comm_bytes(&d, cfg, "tp2ep"), 524288), "tp2ep comm bytes per rank = 512K");
    /* schema 1: kinds from the schema-1 names; no collective named, so no busbw comparison */
    const rp_cell_t *disp = rp_find(&d, cfg, "tp2ep", "dispatch"), *sc = rp_find(&d, cfg, "tp2ep", "sync_counts");
    TAP_OK(disp && disp->kind == RP_COMM && sc && sc->kind == RP_SYNC && step->kind == RP_TOTAL,
           "schema 1: dispatch comm, sync_counts sync, step total (from the names)");
    TAP_OK(disp && rp_busbw_eff(&d, disp, NULL) < 0, "schema 1: a comm phase names no collective: no busbw comparison");
    TAP_OK(d.nderived == d.nrows, "schema 1: every row's kind derived (%zu of %zu)", d.nderived, d.nrows);
    const rp_cell_t *ef = rp_find(&d, cfg, "tp2ep", "experts_fwd");
    TAP_OK(NEAR(rp_peak_tflops(&d, ef ? ef->hclass : ""), 0.2), "gemm ceiling = highest peak row, 0.2 TFLOP/s");
    char why[320];
    TAP_OK(ef && rp_flops_eff_why(&d, ef, NULL, why, sizeof why) < 0 && strstr(why, "no BLAS threads"),
           "experts_fwd against a ceiling whose threads per rank nobody knows: refused, and why (%s)", why);
    rp_family_t f;
    rp_largest_family(&d, "top_k", &f, &err);
    TAP_OK(f.n == 3 && f.x[0] == 1 && f.x[2] == 4, "top_k family: k = 1, 2, 4");
    rp_family_free(&f);
    rp_largest_family(&d, "ranks", &f, &err);
    TAP_OK(f.n == 2 && NEAR(rp_weak_eff(&d, &f, 1, "tp2ep"), 0.8) && NEAR(rp_weak_eff(&d, &f, 1, "agrs"), 0.5),
           "weak scaling 2 -> 4 ranks: tp2ep 500/625 = 0.80, agrs 1000/2000 = 0.50");
    rp_family_free(&f);
    const rp_conf_t *conf = rp_conf(&d, cfg);
    TAP_OK(conf && conf->nstrat == 3 && !strcmp(conf->strat[0]->strategy, "local") &&
               !strcmp(conf->strat[1]->strategy, "agrs") && !strcmp(conf->strat[2]->strategy, "tp2ep") &&
               conf->nphase == 12 && !strcmp(conf->phase[0], "route") && !strcmp(conf->phase[11], "grad_sync"),
           "strategies and phases in the order of the data (local, agrs, tp2ep; 12 phases route .. grad_sync)");
    rp_free(&d);

    epb_row_t r;
    memset(&r, 0, sizeof r);
    char hc[256];
    r.host = "gpu-node-017";
    r.device_name = "";
    rp_host_class(&r, hc, sizeof hc);
    TAP_OK(!strcmp(hc, "gpu-node"), "host class strips trailing digits and separator (%s)", hc);
    r.device_name = "NVIDIA H100";
    rp_host_class(&r, hc, sizeof hc);
    TAP_OK(!strcmp(hc, "gpu-node/NVIDIA H100"), "host class includes the device name (%s)", hc);
    r.device_name = "AMD EPYC; 2 cores; bind=core";
    rp_host_class(&r, hc, sizeof hc);
    TAP_OK(!strcmp(hc, "gpu-node/AMD EPYC; 2 cores"), "host class drops the rank binding (%s)", hc);
}

/* ---- unit: schema 2 (moe2.csv): kinds, collectives, wait, params and hosts from the CSV ---- */

static void test_schema2(void)
{
    char path[1024], *paths[1] = { path };
    snprintf(path, sizeof path, "%s/moe2.csv", fix);
    rp_data_t d;
    epb_err_t err = { "" };
    int rc = rp_load(&d, paths, 1, &err);
    TAP_OK(rc == EPB_OK, "fixture moe2.csv loads (%s)", err.msg);
    if (rc) return;
    const rp_conf_t *f = &d.confs[0];
    const char *cfg = f->cfg;
    TAP_OK(d.nderived == 0, "schema 2: no kind derived from a name");
    TAP_OK(f->nstrat == 5 && !strcmp(f->strat[0]->strategy, "agrs") && !strcmp(f->strat[1]->strategy, "tp2ep") &&
               !strcmp(f->strat[2]->strategy, "local") && !strcmp(f->strat[3]->strategy, "tp2ep:chunks=4") &&
               !strcmp(f->strat[4]->strategy, "dedup"),
           "strategies by first appearance, strategy parameters a strategy of their own (agrs, tp2ep, local, "
           "tp2ep:chunks=4, dedup)");
    TAP_OK(f->nphase == 18 && !strcmp(f->phase[1], "layout") && !strcmp(f->phase[17], "grad_sync"),
           "18 phases besides the step, in the data's order");
    const rp_cell_t *lay = rp_find(&d, cfg, "tp2ep", "layout"), *gate = rp_find(&d, cfg, "tp2ep", "gate");
    TAP_OK(lay && lay->kind == RP_SYNC && gate && gate->kind == RP_COMPUTE,
           "kinds from the kind column: layout sync (its name alone would say compute), gate compute");
    const rp_cell_t *s1 = rp_step(&d, cfg, "tp2ep"), *s4 = rp_step(&d, cfg, "tp2ep:chunks=4");
    TAP_OK(s1 && s4 && s1 != s4 && NEAR(s1->med, 500) && NEAR(s4->med, 450), "tp2ep and tp2ep:chunks=4: two steps");
    TAP_OK(NEAR(rp_vs_fastest(&d, cfg, "tp2ep:chunks=4"), 1) && NEAR(rp_vs_fastest(&d, cfg, "agrs"), 1000.0 / 450),
           "the fastest is tp2ep:chunks=4; agrs 1000/450");
    TAP_OK(NEAR(rp_comm_share(&d, cfg, "tp2ep"), 300.0 / 510),
           "tp2ep comm share (comm + sync kinds) = 300 over the phase sum 510");
    double ref = 0;
    const rp_cell_t *disp = rp_find(&d, cfg, "tp2ep", "dispatch");
    TAP_OK(disp && NEAR(rp_busbw_eff(&d, disp, &ref), 0.5) && ref == 1048576,
           "tp2ep dispatch (coll alltoallv) 5 GB/s over the best alltoallv at 1M (10 GB/s, not imbalance=2's 4) = 0.50");
    const rp_cell_t *ad = rp_find(&d, cfg, "agrs", "dispatch");
    TAP_OK(ad && NEAR(rp_busbw_eff(&d, ad, &ref), 0.25) && ref == 2097152,
           "agrs dispatch's coll column says allgather: 8 over 32 GB/s at 2M = 0.25");
    const rp_cell_t *dd = rp_find(&d, cfg, "dedup", "dispatch"), *ld = rp_find(&d, cfg, "local", "dispatch");
    TAP_OK(dd && rp_busbw_eff(&d, dd, NULL) < 0 && ld && rp_busbw_eff(&d, ld, NULL) < 0,
           "no busbw comparison for a phase that ran two collectives, nor for one that ran none");
    TAP_OK(disp && NEAR(disp->wait, 20), "wait_us: the median of the rows' (20)");
    const rp_cell_t *d4 = rp_find(&d, cfg, "tp2ep:chunks=4", "dispatch");
    TAP_OK(d4 && NEAR(d4->hidden, 30) && NEAR(d4->med, 60) && disp && disp->hidden == 0,
           "hidden_us: tp2ep:chunks=4's dispatch 60 us exposed, 30 us hidden behind compute");
    size_t n1 = 0, ni = 0;
    for (size_t i = 0; i < d.ncells; i++) {
        const epb_row_t *r = d.cells[i].row;
        if (strcmp(r->mode, "coll") || strcmp(r->op, "alltoallv") || r->bytes != 1048576) continue;
        if (*r->params) ni += d.cells[i].n; else n1 += d.cells[i].n;
    }
    TAP_OK(n1 == 3 && ni == 3, "alltoallv 1M even and imbalance=2: separate measurements (3 + 3 repetitions)");
    TAP_OK(d.nconfs == 3, "3 moe configurations (k = 2, 1, 4)");
    rp_free(&d);

    /* rows built in memory (rp_group's callers): NULL text is empty text; the seed is part of the configuration */
    epb_row_t mem[3];
    memset(mem, 0, sizeof mem);
    for (int i = 0; i < 3; i++) {
        mem[i].schema = EPB_SCHEMA;
        mem[i].model_bytes = -1;
        mem[i].mode = "moe";
        mem[i].op = "x";
        mem[i].phase = "step";
        mem[i].kind = "total";
        mem[i].t_med_us = 1 + i;
        mem[i].seed = i == 2 ? 7 : 1;
    }
    rp_data_t dm = { .rows = mem, .nrows = 3 };
    rc = rp_group(&dm, &err);
    TAP_OK(rc == EPB_OK && dm.ncells == 2 && dm.nconfs == 2 && dm.cells[0].n == 2 && !strcmp(mem[0].check, ""),
           "in-memory rows with NULL text group (2 cells: the seed tells two configurations apart)");
    rp_free(&dm);

    /* the layer's params (a model, shared experts) make another configuration; the strategy's own do not */
    epb_row_t lr[4];
    memset(lr, 0, sizeof lr);
    static const char *const lops[] = { "tp2ep", "tp2ep", "tp2ep", "agrs" };
    static const char *const lpar[] = { "chunks=1", "chunks=4", "chunks=1;shared=1;shared_ffn=64", "shared=1;shared_ffn=64" };
    for (int i = 0; i < 4; i++) {
        lr[i].schema = EPB_SCHEMA;
        lr[i].model_bytes = -1;
        lr[i].mode = "moe";
        lr[i].op = lops[i];
        lr[i].params = lpar[i];
        lr[i].phase = "step";
        lr[i].kind = "total";
        lr[i].t_med_us = 10 + i;
    }
    rp_data_t dl = { .rows = lr, .nrows = 4 };
    rc = rp_group(&dl, &err);
    TAP_OK(rc == EPB_OK && dl.nconfs == 2 && dl.confs[0].nstrat == 2 && dl.confs[1].nstrat == 2 &&
               !strcmp(rp_layer_params(lpar[2]), "shared=1;shared_ffn=64") && !*rp_layer_params(lpar[1]),
           "tp2ep and tp2ep:chunks=4 share a configuration; shared experts make another (rp_layer_params)");
    rp_free(&dl);

    /* an unknown kind is bad input, named */
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/badkind.csv", tmp);
    FILE *in = fopen(path, "rb"), *out = fopen(bad, "wb");
    char line[4096];
    for (int i = 0; in && out && fgets(line, sizeof line, in); i++) {
        char *k = i == 2 ? strstr(line, ",sync,") : NULL;
        if (k) { *k = 0; fprintf(out, "%s,bogus,%s", line, k + 6); }
        else fputs(line, out);
    }
    if (in) fclose(in);
    if (out) fclose(out);
    paths[0] = bad;
    rc = rp_load(&d, paths, 1, &err);
    TAP_OK(rc == EPB_EUSAGE && strstr(err.msg, "badkind.csv: data row 2: kind 'bogus'"), "unknown kind: exit 2, "
           "named (%s)", err.msg);
}

/* ---- unit: the regression statistics ---- */

static void test_stats(void)
{
    rp_rule_t rule = rp_rule_default();
    double base[] = { 100, 101, 99, 100.5, 99.5 }, v[5];
    rp_cmp_t c, c2;
    rp_compare(base, 5, base, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SAME && NEAR(c.ratio, 1), "identical samples: same (CI [%.3f, %.3f])", c.lo, c.hi);
    for (int i = 0; i < 5; i++) v[i] = base[i] * 1.15;
    rp_compare(base, 5, v, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SLOWER && c.lo > 1.05 && NEAR(c.ratio, 1.15), "+15%% shift: slower, CI [%.3f, %.3f]",
           c.lo, c.hi);
    rp_compare(base, 5, v, 5, &rule, 1, &c2);
    TAP_OK(c.lo == c2.lo && c.hi == c2.hi, "bootstrap is deterministic (seeded)");
    for (int i = 0; i < 5; i++) v[i] = base[i] * 1.03;
    rp_compare(base, 5, v, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SAME, "+3%% shift (below the 5%% minimum effect): same, CI [%.3f, %.3f]", c.lo, c.hi);
    for (int i = 0; i < 5; i++) v[i] = base[i] * 0.8;
    rp_compare(base, 5, v, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_FASTER, "-20%%: faster");
    memcpy(v, base, sizeof v);
    v[2] = 1000;
    rp_compare(base, 5, v, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SAME, "one 10x outlier among 5: no alarm (CI [%.3f, %.3f])", c.lo, c.hi);
    rp_compare(v, 5, base, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SAME, "an outlier in the baseline: no false 'faster'");
    rp_compare(base, 5, base, 2, &rule, 1, &c);
    TAP_OK(c.verdict == RP_INSUFFICIENT, "2 new samples: insufficient samples");
    double many[9] = { 100, 130, 80, 120, 90, 110, 70, 125, 95 }, many2[9];
    for (int i = 0; i < 9; i++) many2[i] = many[(i + 4) % 9];
    rp_compare(many, 9, many2, 9, &rule, 7, &c);
    TAP_OK(c.verdict == RP_SAME, "very noisy, unshifted (+-30%%): same");
    double small_b[3] = { 1.0, 1.0, 1.0 }, small_n[3] = { 1.2, 1.2, 1.2 };
    rp_compare(small_b, 3, small_n, 3, &rule, 1, &c);
    TAP_OK(c.verdict == RP_TOO_SMALL, "+0.2 us on a 1 us phase is below the timer floor: no alarm");
    rule.min_effect = 0.20;
    for (int i = 0; i < 5; i++) v[i] = base[i] * 1.15;
    rp_compare(base, 5, v, 5, &rule, 1, &c);
    TAP_OK(c.verdict == RP_SAME, "+15%% with --min-effect 0.20: same");
    /* noise-aware threshold: a baseline spread evenly over 85..115 (MAD 7.5, robust CV 0.111) over 201 runs, so
     * that the interval is narrow and only the threshold decides */
    rule = rp_rule_default();
    enum { NS = 201 };
    double nb[NS], nn[NS];
    for (int i = 0; i < NS; i++) nb[i] = 85 + 30.0 * ((i * 7) % NS) / (NS - 1);
    for (int i = 0; i < NS; i++) nn[i] = nb[(i + 7) % NS] * 1.10;
    rp_compare(nb, NS, nn, NS, &rule, 3, &c);
    TAP_OK(c.verdict == RP_SAME && fabs(c.noise - 1.4826 * 7.5 / 100) < 0.005 && NEAR(c.effect, c.noise) && c.lo > 1.05,
           "+10%% on a baseline with noise %.3f: same (CI [%.3f, %.3f] clears 1.05 but not 1 + noise)", c.noise,
           c.lo, c.hi);
    rule.noise_mult = 0;
    rp_compare(nb, NS, nn, NS, &rule, 3, &c);
    TAP_OK(c.verdict == RP_SLOWER && NEAR(c.effect, 0.05), "the same with --noise-mult 0: slower");
    rule = rp_rule_default();
    for (int i = 0; i < NS; i++) nn[i] = nb[(i + 7) % NS] * 1.30;
    rp_compare(nb, NS, nn, NS, &rule, 3, &c);
    TAP_OK(c.verdict == RP_SLOWER && c.lo > 1 + c.effect, "+30%% on the same noisy baseline: slower (CI [%.3f, %.3f])",
           c.lo, c.hi);
    rp_compare(base, 5, base, 5, &rule, 1, &c);
    TAP_OK(c.effect == rule.min_effect && c.noise < 0.02, "a quiet baseline (noise %.4f): the 5%% minimum effect rules",
           c.noise);
}

/* ---- cli ---- */

static const char *HDR = "schema,run_id,utc,git_rev,host,nodes,backend,device,device_name,mode,op,ranks,experts,"
                         "top_k,tokens,hidden,ffn,dtype,router,skew,seed,phase,bytes,iters,t_min_us,t_med_us,"
                         "t_mean_us,t_p95_us,t_max_us,algbw_gbps,busbw_gbps,gflop,tflops,peak_mem_bytes,check\n";
static const char *ROW = "1,r1,2026-01-01T00:00:00Z,abc,node01,1,mpi,cpu,,coll,alltoall,2,0,0,0,0,0,f32,softmax,0,1,"
                         "total,1024,10,1,2,2,3,4,0.5,0.25,0,0,0,ok\n";

static void bad_case(const char *name, const char *text, int line)
{
    char p[1024], out[1024], cmd[4096], want[1100];
    snprintf(p, sizeof p, "%s/%s.csv", tmp, name);
    snprintf(out, sizeof out, "%s/out_%s", tmp, name);
    write_file(p, text);
    snprintf(cmd, sizeof cmd, "%s %s -o %s", exe, p, out);
    char *err = NULL;
    int rc = run(cmd, &err);
    one_line(err);
    snprintf(want, sizeof want, "%s:%d:", p, line);
    TAP_OK(rc == 2, "%s: exit 2 (got %d)", name, rc);
    TAP_OK(err && strstr(err, want), "%s: stderr names %s (%s)", name, want, err ? err : "");
    char pre[64];
    snprintf(pre, sizeof pre, ".out_%s", name);
    TAP_OK(!exists(out) && count_prefix(tmp, pre) == 0, "%s: no output directory, no temporary left", name);
    free(err);
}

static void test_cli(void)
{
    char buf[8192];
    bad_case("empty", "", 1);
    snprintf(buf, sizeof buf, "%s%s%.60s", HDR, ROW, ROW);
    bad_case("truncated", buf, 3);
    snprintf(buf, sizeof buf, "%s%s", HDR, "1,r1,2026,abc,node01,1,mpi\n");
    bad_case("columns", buf, 2);
    snprintf(buf, sizeof buf, "%s%s", HDR, ROW);
    char *t = strstr(buf + strlen(HDR), ",10,1,2,2,");
    if (t) memcpy(t, ",1x,1,2,2,", 10);
    bad_case("nonnumeric", buf, 2);
    snprintf(buf, sizeof buf, "%s%s2%s", HDR, ROW, ROW + 1);
    bad_case("mixed_schema", buf, 3);
    snprintf(buf, sizeof buf, "x,%s%s", HDR, ROW);
    bad_case("header", buf, 1);

    /* a good file and a bad one: nothing written; an existing report is left as it was */
    char good[1024], bad[1024], out[1024], cmd[4096], p[1100];
    snprintf(good, sizeof good, "%s/moe.csv", fix);
    snprintf(bad, sizeof bad, "%s/columns.csv", tmp);
    snprintf(out, sizeof out, "%s/keep", tmp);
    mkdir(out, 0755);
    snprintf(p, sizeof p, "%s/report.md", out);
    write_file(p, "old report\n");
    snprintf(cmd, sizeof cmd, "%s --no-plots %s %s -o %s", exe, good, bad, out);
    char *err = NULL;
    int rc = run(cmd, &err);
    char *old = read_file(p);
    TAP_OK(rc == 2 && old && !strcmp(old, "old report\n") && count_prefix(tmp, ".keep") == 0,
           "second file bad: exit 2, previous report untouched");
    free(old);
    free(err);
    /* a good run replaces the previous report whole */
    snprintf(cmd, sizeof cmd, "%s --no-plots %s -o %s", exe, good, out);
    rc = run(cmd, NULL);
    old = read_file(p);
    TAP_OK(rc == 0 && old && strstr(old, "| tp2ep | 500.0 | 550.0 | 61.2% | 512K | 1.00 (fastest) | 3 | ok |") &&
               count_prefix(tmp, ".keep") == 0,
           "good run replaces the previous report; report.md has tp2ep's line (the fastest, share 300/490)");
    free(old);
    /* a directory that is not a report is never replaced */
    snprintf(out, sizeof out, "%s/notreport", tmp);
    mkdir(out, 0755);
    snprintf(p, sizeof p, "%s/precious.txt", out);
    write_file(p, "x");
    snprintf(cmd, sizeof cmd, "%s --no-plots %s -o %s", exe, good, out);
    rc = run(cmd, NULL);
    TAP_OK(rc == 2 && exists(p) && count_prefix(tmp, ".notreport") == 0, "-o on a non-report directory: exit 2, kept");

    /* the largest bytes a row can hold: its median, 2^64 as a double, has no uint64 value (found by the fuzzer:
     * UBSan 'outside the range of representable values'; x86 gcc showed 0) */
    {
        epb_row_t big[2];
        memset(big, 0, sizeof big);
        for (int i = 0; i < 2; i++)
            big[i] = (epb_row_t){ .schema = EPB_SCHEMA, .model_bytes = -1, .run_id = "r", .utc = "2026-06-01T22:00:00Z", .host = "n1", .nodes = 1,
                                  .backend = "mpi", .device = "cpu", .mode = "moe", .op = "s", .ranks = 2,
                                  .experts = 2, .top_k = 1, .tokens = 1, .hidden = 1, .ffn = 1, .dtype = "f32",
                                  .router = "softmax", .phase = i ? "step" : "dispatch", .kind = i ? "total" : "comm",
                                  .coll = i ? "" : "alltoallv", .bytes = i ? 0 : UINT64_MAX, .iters = 1,
                                  .t_min_us = 10, .t_med_us = 10, .t_mean_us = 10, .t_p95_us = 10, .t_max_us = 10,
                                  .check = "ok" };
        char csv[1024];
        epb_err_t e;
        snprintf(csv, sizeof csv, "%s/bigbytes.csv", tmp);
        snprintf(out, sizeof out, "%s/bigbytes", tmp);
        snprintf(cmd, sizeof cmd, "%s --no-plots %s -o %s", exe, csv, out);
        rc = epb_csv_append(csv, big, 2, &e) == EPB_OK ? run(cmd, NULL) : -1;
        snprintf(p, sizeof p, "%s/report.md", out);
        char *md = read_file(p);
        TAP_OK(rc == 0 && md && strstr(md, "| s | 10.0 | 10.0 | 100.0% | 18446744073709551615 |"),
               "bytes = 2^64-1: exit 0, shown as 18446744073709551615 (not 0)");
        free(md);
    }

    /* without gnuplot on PATH: tables written, one line on stderr */
    snprintf(out, sizeof out, "%s/nognuplot", tmp);
    snprintf(cmd, sizeof cmd, "PATH=/nonexistent %s %s -o %s", exe, good, out);
    rc = run(cmd, &err);
    int lines = 0;
    for (const char *s = err; s && (s = strstr(s, "plots skipped")); s++) lines++;
    snprintf(p, sizeof p, "%s/report.md", out);
    char svg[1100];
    snprintf(svg, sizeof svg, "%s/plots/phases_0.svg", out);
    TAP_OK(rc == 0 && fsize(p) > 0 && !exists(svg) && lines == 1,
           "no gnuplot: exit 0, report.md written, no SVG, 'plots skipped' said once (%d)", lines);
    free(err);

    /* regression exit codes through the program */
    static const struct { const char *file; int rc; const char *what; } rg[] = {
        { "same.csv", 0, "same samples on another node of the class" },
        { "shifted.csv", 1, "+15% shifted" },
        { "outlier.csv", 0, "one outlier" },
        { "noisy_same.csv", 0, "noisy, unshifted" },
        { "faster.csv", 0, "faster" },
        { "few.csv", 4, "insufficient samples only: nothing compared" },
    };
    for (size_t i = 0; i < sizeof rg / sizeof rg[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s --baseline %s/base.csv %s/%s", exe, fix, fix, rg[i].file);
        rc = run(cmd, NULL);
        snprintf(p, sizeof p, "%s/stdout.txt", tmp);
        char *o = read_file(p);
        int named = rg[i].rc == 0 || (rg[i].rc == 1 && o && strstr(o, "slower   moe tp2ep dispatch")) ||
                    (rg[i].rc == 4 && o && strstr(o, "-> NOTHING COMPARED"));
        TAP_OK(rc == rg[i].rc && named, "--baseline base.csv %s (%s): exit %d (got %d)", rg[i].file, rg[i].what,
               rg[i].rc, rc);
        free(o);
    }
    /* a header-only baseline compares nothing: exit 4, never "no regression" */
    snprintf(p, sizeof p, "%s/empty_base.csv", tmp);
    FILE *hf = fopen(p, "w");
    for (int i = 0; hf && i < EPB_CSV_NCOLS; i++) fprintf(hf, "%s%s", i ? "," : "", epb_csv_columns[i]);
    if (hf) fputs("\n", hf), fclose(hf);
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s/shifted.csv", exe, p, fix);
    rc = run(cmd, NULL);
    snprintf(p, sizeof p, "%s/stdout.txt", tmp);
    char *o4 = read_file(p);
    TAP_OK(rc == 4 && o4 && strstr(o4, "0 compared") && strstr(o4, "NOTHING COMPARED (no measurement matches"),
           "--baseline with a header-only baseline: exit 4, NOTHING COMPARED (got %d)", rc);
    free(o4);
    snprintf(out, sizeof out, "%s/regr", tmp);
    snprintf(cmd, sizeof cmd, "%s --no-plots --baseline %s/base.csv %s/shifted.csv -o %s", exe, fix, fix, out);
    rc = run(cmd, NULL);
    snprintf(p, sizeof p, "%s/report.md", out);
    char *md = read_file(p);
    TAP_OK(rc == 1 && md && strstr(md, "| slower | moe | tp2ep | dispatch |"), "regression section in report.md");
    free(md);
    snprintf(cmd, sizeof cmd, "%s --min-effect 2 --baseline %s/base.csv %s/same.csv", exe, fix, fix);
    TAP_OK(run(cmd, NULL) == 2, "--min-effect out of range: exit 2");
    snprintf(cmd, sizeof cmd, "%s %s/moe.csv", exe, fix);
    TAP_OK(run(cmd, NULL) == 2, "no -o and no --baseline: exit 2");
}

/* ---- plots: text from a CSV never runs anything ---- */

enum { NPAY = 9 };
static char pay[NPAY][EPB_STR + 1], mark[NPAY][40]; /* tmp is 27 characters */

/* Payload i: gnuplot code after a way out of each kind of quoting, each touching its own marker file. */
static void payloads(void)
{
    for (int i = 0; i < NPAY; i++) snprintf(mark[i], sizeof mark[i], "%s/pwned_%d", tmp, i);
    snprintf(pay[0], sizeof pay[0], "x'; system \"touch %s\"; y='", mark[0]);   /* out of -e's single quotes */
    snprintf(pay[1], sizeof pay[1], "`touch %s`", mark[1]);                      /* gnuplot's backquote substitution */
    snprintf(pay[2], sizeof pay[2], "x\"; system \"touch %s\"; y=\"", mark[2]); /* out of double quotes */
    snprintf(pay[3], sizeof pay[3], "x'\nsystem \"touch %s\"\ny='", mark[3]);  /* a newline ends a command */
    snprintf(pay[4], sizeof pay[4], "x'.system(\"touch %s\").'", mark[4]);     /* an expression in a string */
    snprintf(pay[5], sizeof pay[5], "x\\'; system \"touch %s\"; #", mark[5]);  /* a backslash before the quote */
    snprintf(pay[6], sizeof pay[6], "$(touch %s)<script>", mark[6]);             /* a shell, and HTML */
    snprintf(pay[7], sizeof pay[7], "@m; system \"touch %s\"", mark[7]);       /* a macro */
    snprintf(pay[8], sizeof pay[8], "'' system \"touch %s\" ''", mark[8]);     /* doubled quotes */
}

/* A schema-2 file, written by the CSV writer, whose every text field that reaches a plot holds a payload: two
 * strategies over a top_k family with phases (phases, sweep, crossover and history plots), coll rows on two host
 * classes (busbw with host labels). */
static int write_hostile(const char *path)
{
    epb_row_t rows[256];
    size_t n = 0;
    char utc[3][32];
    epb_err_t err;
    for (int rep = 0; rep < 3; rep++) {
        snprintf(utc[rep], sizeof utc[rep], "2026-04-0%dT22:00:00Z", rep + 1);
        for (int k = 1; k <= 4; k *= 2)
            for (int s = 0; s < 2; s++)
                for (int ph = 0; ph < 4; ph++) {
                    epb_row_t *r = &rows[n++];
                    memset(r, 0, sizeof *r);
                    r->schema = EPB_SCHEMA;
                    r->model_bytes = -1;
                    r->run_id = pay[(ph + 1) % NPAY];
                    r->utc = utc[rep];
                    r->git_rev = pay[2];
                    r->host = "node01";
                    r->nodes = 1;
                    r->hosts = pay[3];
                    r->backend = "mpi";
                    r->device = "cpu";
                    r->device_name = pay[6];
                    r->mode = "moe";
                    r->op = s ? pay[1] : pay[8];
                    r->ranks = 2;
                    r->experts = 8;
                    r->top_k = k;
                    r->tokens = r->hidden = r->ffn = 64;
                    r->dtype = pay[7];
                    r->router = pay[0];
                    r->params = s ? pay[2] : pay[4];
                    static const char *const kinds[] = { "compute", "compute", "comm", "total" };
                    r->phase = ph == 0 ? "route" : ph == 1 ? pay[3] : ph == 2 ? pay[5] : "step";
                    r->kind = kinds[ph];
                    r->coll = ph == 2 ? pay[6] : "";
                    r->iters = 10;
                    r->t_med_us = r->t_min_us = r->t_mean_us = r->t_p95_us = r->t_max_us = 100.0 * (1 + s) * k + ph;
                    r->wait_us = 1;
                    r->check = "ok";
                }
        for (int h = 0; h < 2; h++)
            for (int b = 0; b < 2; b++) {
                epb_row_t *r = &rows[n++];
                memset(r, 0, sizeof *r);
                r->schema = EPB_SCHEMA;
                r->model_bytes = -1;
                r->run_id = r->git_rev = r->hosts = pay[4];
                r->utc = utc[rep];
                r->host = h ? pay[5] : "node01";
                r->nodes = 1;
                r->backend = r->device = "cpu";
                r->device_name = h ? pay[0] : pay[7];
                r->mode = "coll";
                r->op = pay[2];
                r->ranks = 2;
                r->dtype = pay[1];
                r->router = "";
                r->params = pay[3];
                r->phase = "total";
                r->kind = "comm";
                r->coll = pay[2];
                r->bytes = 1024u << (4 * b);
                r->iters = 10;
                r->t_min_us = r->t_med_us = r->t_mean_us = r->t_p95_us = r->t_max_us = 10.0 * (b + 1);
                r->busbw_gbps = 1.0 + b + h;
                r->check = "ok";
            }
    }
    return epb_csv_append(path, rows, n, &err);
}

static void test_injection(void)
{
    char csv[1024], out[1024], cmd[4096], p[1200];
    payloads();
    snprintf(csv, sizeof csv, "%s/hostile.csv", tmp);
    TAP_OK(write_hostile(csv) == EPB_OK, "hostile CSV written by the CSV writer");
    snprintf(out, sizeof out, "%s/hostile", tmp);
    snprintf(cmd, sizeof cmd, "%s %s -o %s", exe, csv, out);
    char *err = NULL;
    int rc = run(cmd, &err);
    TAP_OK(rc == 0, "report on the hostile CSV: exit 0 (%s)", one_line(err) ? err : "");
    free(err);
    int ran = 0;
    for (int i = 0; i < NPAY; i++)
        if (exists(mark[i])) { ran++; printf("# payload %d ran: %s\n", i, mark[i]); }
    TAP_OK(ran == 0, "no payload ran (%d of %d did)", ran, NPAY);
    static const char *const names[] = { "phases_0", "topk", "crossover", "busbw", "history" };
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/plots/%s.svg", out, names[i]);
        TAP_OK(fsize(p) > 2000, "hostile CSV: %s.svg rendered", names[i]);
    }
    snprintf(p, sizeof p, "%s/report.html", out);
    char *h = read_file(p);
    TAP_OK(h && !strstr(h, "<script>") && strstr(h, "&lt;script&gt;"), "report.html shows '<script>' as text");
    free(h);
}

/* Data gnuplot cannot draw must be left out of a plot, not fail the report (exit 3): a ranks family whose only
 * strategy has no step anywhere (its column would be all NaN), and coll rows of 0 bytes (on a log axis). */
static void test_degenerate(void)
{
    epb_row_t rows[16];
    size_t n = 0;
    for (int P = 1; P <= 2; P++)
        for (int ph = 0; ph < 2; ph++) {
            epb_row_t *r = &rows[n++];
            memset(r, 0, sizeof *r);
            *r = (epb_row_t){ .schema = EPB_SCHEMA, .model_bytes = -1, .run_id = "r", .utc = P == 1 ? "2026-05-01T22:00:00Z" : "2026-05-02T22:00:00Z",
                              .git_rev = "", .host = "n1", .nodes = 1, .hosts = "n1", .backend = "mpi", .device = "cpu",
                              .device_name = "", .mode = "moe", .op = "agrs", .ranks = P, .experts = 8, .top_k = 2,
                              .tokens = 64, .hidden = 64, .ffn = 64, .dtype = "f32", .router = "softmax", .params = "",
                              .phase = ph ? "dispatch" : "route", .kind = ph ? "comm" : "compute", .coll = "",
                              .iters = 10, .t_min_us = 5, .t_med_us = 5, .t_mean_us = 5, .t_p95_us = 5,
                              .t_max_us = 5, .check = "ok" };
        }
    for (int b = 0; b < 2; b++) {
        epb_row_t *r = &rows[n++];
        *r = rows[0];
        r->mode = "coll";
        r->op = r->coll = "alltoall";
        r->experts = r->top_k = 0;
        r->phase = "total";
        r->kind = "comm";
        r->bytes = 0;
        r->busbw_gbps = b;
    }
    char csv[1024], out[1024], cmd[4096];
    snprintf(csv, sizeof csv, "%s/degenerate.csv", tmp);
    epb_err_t e;
    TAP_OK(epb_csv_append(csv, rows, n, &e) == EPB_OK, "degenerate CSV written");
    snprintf(out, sizeof out, "%s/degenerate", tmp);
    snprintf(cmd, sizeof cmd, "%s %s -o %s", exe, csv, out);
    char *err = NULL;
    int rc = run(cmd, &err);
    TAP_OK(rc == 0, "a family without steps and 0-byte coll rows: exit 0, undrawable points left out (%s)",
           one_line(err) ? err : "");
    free(err);
}

/* ---- cli: inputs that hurt (issue 20), each refused before anything is written, or shown as text ---- */

/* rows of a fixture file, changed by the caller, written to a new file with the CSV writer */
static int rewrite(const char *from, const char *to, void (*change)(epb_row_t *r))
{
    epb_rows_t t = { 0 };
    epb_err_t e;
    int rc = epb_csv_read(from, &t, &e);
    for (size_t i = 0; !rc && i < t.nrows; i++) {
        t.rows[i].schema = EPB_SCHEMA; /* the writer's schema; a schema-1 row keeps its phase names */
        change(&t.rows[i]);
    }
    if (!rc) rc = epb_csv_append(to, t.rows, t.nrows, &e);
    epb_rows_free(&t);
    return rc;
}

static void zero_times(epb_row_t *r)
{
    r->t_min_us = r->t_med_us = r->t_mean_us = r->t_p95_us = r->t_max_us = r->wait_us = 0;
}

static void keep_times(epb_row_t *r)
{
    (void)r;
}

static void fast_memcpy(epb_row_t *r) /* a copy rate past any cluster file's range */
{
    if (!strcmp(r->mode, "peak") && !strcmp(r->op, "memcpy"))
        r->t_min_us = r->t_med_us = r->t_mean_us = r->t_p95_us = r->t_max_us = 1e-6;
}

static void escape_names(epb_row_t *r) /* a host and a strategy that would clear the screen */
{
    r->host = "node\x1b[2J01";
    r->op = "tp2ep\x1b]0;owned\x07";
}

/* stderr is one line (one '\n', at its end) and holds no control byte */
static int one_clean_line(const char *s)
{
    if (!s) return 0;
    const char *nl = strchr(s, '\n');
    if (!nl || nl[1]) return 0;
    for (const char *c = s; c < nl; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return 0;
    return 1;
}

/* the inputs these tests share: a moe fixture, the projection's fixture CSV and cluster file */
static char good[400], proj[400], cl[400];

static void input_paths(void)
{
    snprintf(good, sizeof good, "%s/moe.csv", fix);
    snprintf(proj, sizeof proj, "%s/../../projection/fixture.csv", fix);
    snprintf(cl, sizeof cl, "%s/../../projection/cluster.json", fix);
}

/* rows no writer makes are malformed input, named by file and line; a baseline of zero times compares nothing */
static void test_rows_sane(void)
{
    char cmd[4096], p[1000], q[400], out[400];
    char *o = NULL;
    int rc;
    static const struct { const char *name, *times; } bad_times[] = { /* for ROW's iters,min,med,mean,p95,max */
        { "negative_time", ",10,-1,2,2,3,4," },
        { "max_below_median", ",10,1,2,2,3,1," },
        { "min_above_median", ",10,3,2,2,3,4," },
    };
    for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
        char buf[8192];
        const char *at = strstr(ROW, ",10,1,2,2,3,4,");
        snprintf(buf, sizeof buf, "%s%.*s%s%s", HDR, (int)(at - ROW), ROW, bad_times[i].times, at + 14);
        bad_case(bad_times[i].name, buf, 2);
    }
    /* a baseline of zero times compares nothing above the timer floor: exit 4, never "no regression" */
    snprintf(p, sizeof p, "%s/base.csv", fix);
    snprintf(q, sizeof q, "%s/zero_base.csv", tmp);
    rc = rewrite(p, q, zero_times);
    snprintf(p, sizeof p, "%s/same.csv", fix);
    snprintf(out, sizeof out, "%s/same2.csv", tmp); /* schema 2, as the baseline */
    if (!rc) rc = rewrite(p, out, keep_times);
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s", exe, q, out);
    if (!rc) rc = run(cmd, NULL);
    snprintf(p, sizeof p, "%s/stdout.txt", tmp);
    o = read_file(p);
    TAP_OK(rc == 4 && o && strstr(o, "0 same, 2 below timer floor") && strstr(o, "NOTHING COMPARED (every match is below"),
           "--baseline of zero times: exit 4, the matches counted below the timer floor, not same (got %d)", rc);
    free(o);
}

/* a FIFO given as any input is refused at once (timeout: blocking is 124); a directory is no JSON */
static void test_fifo(void)
{
    char cmd[4096], q[400], out[400];
    char *err = NULL;
    int rc;
    snprintf(q, sizeof q, "%s/fifo", tmp);
    mkfifo(q, 0600);
    static const char *const what[5] = { "a CSV", "--baseline", "--history", "--project", "--validation" };
    snprintf(out, sizeof out, "%s/out_fifo", tmp);
    for (int i = 0; i < 5; i++) {
        if (i == 0) snprintf(cmd, sizeof cmd, "timeout 10 %s %s -o %s", exe, q, out);
        if (i == 1) snprintf(cmd, sizeof cmd, "timeout 10 %s --baseline %s %s", exe, q, good);
        if (i == 2) snprintf(cmd, sizeof cmd, "timeout 10 %s --history %s %s -o %s", exe, q, good, out);
        if (i == 3) snprintf(cmd, sizeof cmd, "timeout 10 %s --project %s %s", exe, q, proj);
        if (i == 4) snprintf(cmd, sizeof cmd, "timeout 10 %s --project %s --validation %s %s", exe, cl, q, proj);
        rc = run(cmd, &err);
        TAP_OK(rc == 2 && err && strstr(err, "fifo: not a regular file (a FIFO)") && one_clean_line(err) && !exists(out),
               "a FIFO as %s: exit 2 at once, one line naming it (got %d: %s)", what[i], rc, err ? one_line(err) : "");
        free(err);
    }
    snprintf(cmd, sizeof cmd, "%s --project %s %s", exe, tmp, proj);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && err && strstr(err, "not a regular file (a directory)") && !strstr(err, "not JSON"),
           "a directory as --project: exit 2, 'not a regular file (a directory)', not 'not JSON' (%s)", err ? one_line(err) : "");
    free(err);
}

/* --calibration-out writes only what --project reads, and over no input or non-JSON file */
static void test_calibration(void)
{
    char cmd[4096], p[1000], q[400];
    char *err = NULL;
    int rc;
    snprintf(q, sizeof q, "%s/fast.csv", tmp);
    snprintf(p, sizeof p, "%s/cal.json", tmp);
    rc = rewrite(proj, q, fast_memcpy);
    snprintf(cmd, sizeof cmd, "%s --calibration-out %s %s", exe, p, q);
    if (!rc) rc = run(cmd, &err);
    TAP_OK(rc == 2 && err && strstr(err, "--calibration-out ") && strstr(err, "copy_gbps.value: ") &&
               strstr(err, "is out of range") && !exists(p),
           "--calibration-out of a copy rate the reader refuses: exit 2 naming the field, no file (%s)", err ? one_line(err) : "");
    free(err);
    long before = fsize(proj);
    snprintf(q, sizeof q, "%s/proj_copy.csv", tmp);
    snprintf(cmd, sizeof cmd, "cp %s %s && %s --calibration-out %s %s", proj, q, exe, q, q);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && err && strstr(err, "is the input") && fsize(q) == before,
           "--calibration-out naming the input CSV: exit 2, the CSV kept (%s)", err ? one_line(err) : "");
    free(err);
    snprintf(q, sizeof q, "%s/other_results.csv", tmp);
    snprintf(cmd, sizeof cmd, "cp %s %s && %s --calibration-out %s %s", good, q, exe, q, proj);
    before = fsize(good);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && err && strstr(err, "exists and is not a JSON file") && fsize(q) == before,
           "--calibration-out over a file that is not JSON: exit 2, kept (%s)", err ? one_line(err) : "");
    free(err);
}

/* names from a CSV are text in report.md: no HTML, no code span */
static void test_markdown(void)
{
    char cmd[4096], p[1000], q[400], out[400];
    int rc;
    payloads();
    snprintf(q, sizeof q, "%s/hostile_md.csv", tmp);
    snprintf(out, sizeof out, "%s/hostile_md", tmp);
    snprintf(cmd, sizeof cmd, "%s --no-plots %s -o %s", exe, q, out);
    rc = write_hostile(q) == EPB_OK ? run(cmd, NULL) : -1;
    snprintf(p, sizeof p, "%s/report.md", out);
    char *md = read_file(p);
    TAP_OK(rc == 0 && md && !strstr(md, "<script>") && strstr(md, "&lt;script&gt;") && !strchr(md, '`') &&
               strstr(md, "&#96;touch "),
           "report.md shows '<script>' and backquotes as text (&lt;, &#96;), never as HTML or code");
    free(md);
}

/* names from a CSV or a cluster file, file names and option values reach the terminal as one line without their control bytes */
static void test_terminal(void)
{
    char cmd[4096], p[1000], q[400];
    char *err = NULL, *o = NULL;
    int rc;
    snprintf(p, sizeof p, "%s/few.csv", fix); /* too few samples: each match has its own line, with its names */
    snprintf(q, sizeof q, "%s/escapes.csv", tmp);
    rc = rewrite(p, q, escape_names);
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s", exe, q, q);
    if (!rc) rc = run(cmd, &err);
    snprintf(p, sizeof p, "%s/stdout.txt", tmp);
    o = read_file(p);
    int ctl = 0;
    for (const char *c = o; c && *c; c++) ctl += (unsigned char)*c < 0x20 && *c != '\n';
    TAP_OK(rc == 4 && o && ctl == 0 && strstr(o, "tp2ep\\x1b]0;owned\\x07") && strstr(o, "node\\x1b[2J:"),
           "a host and strategy with terminal controls: stdout shows them escaped, no control byte (%d)", ctl);
    free(o);
    free(err);
    snprintf(cmd, sizeof cmd, "%s '%s/no\nsuch\x1b[2J.csv' -o %s/x", exe, tmp, tmp);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && one_clean_line(err) && strstr(err, "no\\nsuch\\x1b[2J.csv: cannot open"),
           "a file name with a newline and an escape: one line, both shown (%s)", err ? one_line(err) : "");
    free(err);
    snprintf(q, sizeof q, "%s/cluster_esc.json", tmp);
    char *cj = read_file(cl), *nm = cj ? strstr(cj, "\"name\": \"") : NULL;
    FILE *f = fopen(q, "w");
    if (f && nm) fprintf(f, "%.*s\\u001b[2J%s", (int)(nm + 9 - cj), cj, nm + 9);
    if (f) fclose(f);
    free(cj);
    snprintf(cmd, sizeof cmd, "%s --project %s %s", exe, q, proj);
    rc = run(cmd, NULL);
    snprintf(p, sizeof p, "%s/stdout.txt", tmp);
    o = read_file(p);
    TAP_OK(rc == 0 && o && !strchr(o, '\x1b') && strstr(o, "projection onto \\x1b[2Jtest cluster"),
           "a cluster name with an escape: --project's tables show it escaped (got %d)", rc);
    free(o);

    snprintf(cmd, sizeof cmd, "%s --min-effect '0.1\n0.2' --baseline %s %s", exe, good, good);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && one_clean_line(err) && strstr(err, "--min-effect 0.1\\n0.2: expected"),
           "--min-effect with a newline: exit 2, one line (%s)", err ? one_line(err) : "");
    free(err);
}

/* every option is parsed before --help acts */
static void test_help(void)
{
    char cmd[4096];
    char *err = NULL;
    int rc;
    snprintf(cmd, sizeof cmd, "%s --help --bogus", exe);
    rc = run(cmd, &err);
    TAP_OK(rc == 2 && err && strstr(err, "--bogus: unknown option") && one_clean_line(err), "--help --bogus: exit 2 naming --bogus");
    free(err);
    snprintf(cmd, sizeof cmd, "%s --help", exe);
    TAP_OK(run(cmd, NULL) == 0, "--help alone: exit 0");
}

/* a write that fails (a file size limit, a full tmpfs): exit 3 naming the file and the reason, nothing left */
static void test_full_disk(void)
{
    char cmd[4096], p[1000], out[400];
    char *err = NULL;
    int rc;
    /* a file size limit stands in for a full disk (SIGXFSZ ignored, so that the write fails): the plot data
     * fit, an image does not; its write failure named, exit 3, nothing left */
    snprintf(out, sizeof out, "%s/fsize", tmp);
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f 8; exec %s %s/verdict.csv -o %s", exe, fix, out);
    rc = run(cmd, &err);
    if (rp_which("gnuplot", p, sizeof p))
        TAP_SKIP("no gnuplot: the plots' write failure is not reached");
    else
        TAP_OK(rc == 3 && one_clean_line(err) && strstr(err, "/plots/") && strstr(err, ".svg: write failed: File too large") &&
                   !exists(out) && count_prefix(tmp, ".fsize") == 0,
               "an image past the file size limit: exit 3, 'plots/NAME.svg: write failed: File too large', nothing left (%s)",
               err ? one_line(err) : "");
    free(err);
    /* a real full disk, where mounting is allowed (root): a 64 KiB tmpfs */
    char mnt[400];
    snprintf(mnt, sizeof mnt, "%s/full", tmp);
    mkdir(mnt, 0755);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=64k tmpfs %s", mnt);
    if (rp_which("gnuplot", p, sizeof p) || geteuid() != 0 || run(cmd, NULL) != 0) {
        TAP_SKIP("a full tmpfs needs gnuplot (the plots fill it), root and mount");
    } else {
        snprintf(cmd, sizeof cmd, "%s %s/verdict.csv -o %s/rep", exe, fix, mnt);
        rc = run(cmd, &err);
        snprintf(p, sizeof p, "%s/rep", mnt);
        TAP_OK(rc == 3 && one_clean_line(err) && strstr(err, "write failed: No space left on device") &&
                   !strstr(err, "exit status") && !exists(p) && count_prefix(mnt, ".rep") == 0,
               "a full disk: exit 3, 'FILE: write failed: No space left on device', nothing left (%s)", err ? one_line(err) : "");
        free(err);
        snprintf(cmd, sizeof cmd, "umount %s", mnt);
        run(cmd, NULL);
    }
}

/* The plots of the verdict fixture: intervals and the model in the crossover, the failed configuration left out of
 * it, the phase stack's wait segments and step marker, busbw's memcpy ceiling, the history's title. */
static void test_plots_verdict(void)
{
    char out[1024], cmd[4096], p[1200];
    snprintf(out, sizeof out, "%s/vplots", tmp);
    snprintf(cmd, sizeof cmd, "%s %s/verdict.csv -o %s", exe, fix, out);
    TAP_OK(run(cmd, NULL) == 0, "report with plots on verdict.csv: exit 0");
    snprintf(p, sizeof p, "%s/plots/crossover.dat", out);
    char *x = read_file(p);
    int bars = 0, wide = 0, p4k4 = 0, block = 0;
    double k, r, lo, hi;
    for (char *l = x; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        if (!strncmp(l, "\"top_k\"", 7)) block = !!strstr(l, "P=4") && !strstr(l, "model");
        if (sscanf(l, "%lf %lf %lf %lf", &k, &r, &lo, &hi) != 4) continue;
        bars += lo <= r && r <= hi;
        wide += lo < r && r < hi;
        p4k4 += block && k == 4;
    }
    TAP_OK(x && bars >= 8 && wide >= 4 && p4k4 == 0,
           "crossover.dat: ratio inside its interval on every point (%d), a real interval off the fastest (%d), "
           "no point of the failed P=4 k=4 (%d)", bars, wide, p4k4);
    TAP_OK(x && strstr(x, "\"model tp2ep P=2: its traffic description\"") &&
               strstr(x, "\"model agrs P=4: its traffic description\""),
           "crossover.dat: the volume model's lines (the traffic descriptions' model_bytes), one per strategy and P");
    free(x);
    snprintf(p, sizeof p, "%s/plots/phases_0.dat", out);
    x = read_file(p);
    TAP_OK(x && strstr(x, "\"dispatch transfer\" \"dispatch wait\"") && strstr(x, "\"tp2ep\" 10 20 72 18 ") &&
               strstr(x, " 300\n"),
           "phases_0.dat: a comm phase as transfer then wait (90 us = 72 + 18), the step (300) as the last column");
    free(x);
    snprintf(p, sizeof p, "%s/plots/busbw.svg", out);
    x = read_file(p);
    TAP_OK(x && strstr(x, "memcpy ceiling 5.00 GB/s per rank"), "busbw.svg: the memcpy ceiling of --calibrate");
    free(x);
    snprintf(p, sizeof p, "%s/plots/history.svg", out);
    x = read_file(p);
    TAP_OK(x && strstr(x, "history: step time, P=2, 1 node, E=16 k=1"), "history.svg: titled with its configuration");
    free(x);
}

static int test_plots(void)
{
    char gp[1024];
    if (rp_which("gnuplot", gp, sizeof gp)) {
        printf("1..0 # SKIP gnuplot not found on PATH\n");
        return 0; /* TAP: the plan "1..0 # SKIP" is the skip; meson counts a non-zero exit as an error */
    }
    char out[1024], cmd[4096], p[1200];
    snprintf(out, sizeof out, "%s/plots", tmp);
    snprintf(cmd, sizeof cmd, "%s %s/moe.csv -o %s", exe, fix, out);
    int rc = run(cmd, NULL);
    TAP_OK(rc == 0, "report with plots: exit 0");
    static const char *const names[] = { "phases_0", "topk", "crossover", "ranks", "busbw", "history" };
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/plots/%s.svg", out, names[i]);
        char *s = read_file(p);
        TAP_OK(s && strstr(s, "<svg") && strstr(s, "</svg>") && strlen(s) > 2000, "%s.svg rendered (%ld bytes)",
               names[i], fsize(p));
        free(s);
        snprintf(p, sizeof p, "%s/plots/%s.png", out, names[i]);
        FILE *f = fopen(p, "rb");
        unsigned char sig[8] = { 0 };
        if (f) { if (fread(sig, 1, 8, f) != 8) sig[0] = 0; fclose(f); }
        TAP_OK(fsize(p) > 2000 && sig[1] == 'P' && sig[2] == 'N' && sig[3] == 'G', "%s.png rendered (%ld bytes)",
               names[i], fsize(p));
    }
    snprintf(p, sizeof p, "%s/report.html", out);
    char *h = read_file(p);
    int nsvg = 0;
    for (const char *s = h; s && (s = strstr(s, "<svg")); s++) nsvg++;
    TAP_OK(h && nsvg == 6 && !strstr(h, "<?xml") && !strstr(h, "plot missing"), "report.html inlines the 6 SVGs (%d)",
           nsvg);
    free(h);
    /* the crossover data: the fixture's one top_k family (P=2, k 1, 2, 4), tp2ep/agrs of the step medians */
    snprintf(p, sizeof p, "%s/plots/crossover.dat", out);
    char *x = read_file(p);
    int rows = 0;
    double kk, ratio, prev = 0;
    for (char *l = x; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        if (sscanf(l, "%lf %lf", &kk, &ratio) == 2 && kk > prev && ratio > 0) rows++, prev = kk;
    TAP_OK(x && rows == 3, "crossover.dat: one family, k = 1, 2, 4 with positive ratios (%d rows)", rows);
    free(x);
    test_plots_verdict();
    test_injection();
    test_degenerate();
    return tap_done();
}

/* ---- verdict: the answer first, with its interval, failed checks left out, no bare percentage above 100 ---- */

/* The row of the verdict table (a report.md line) whose configuration starts with prefix, or NULL. */
static const char *verdict_line(const char *md, const char *prefix, char *buf, size_t n)
{
    const char *v = strstr(md, "## Verdict"), *end = v ? strstr(v + 1, "\n## ") : NULL;
    char want[128];
    snprintf(want, sizeof want, "\n| %s", prefix);
    const char *l = v ? strstr(v, want) : NULL;
    if (!l || (end && l > end)) return NULL;
    l++;
    const char *e = strchr(l, '\n');
    snprintf(buf, n, "%.*s", (int)(e ? e - l : (long)strlen(l)), l);
    return buf;
}

/* Every number followed by '%' in a text: the cells (between '|' in Markdown, between tags in HTML) whose value is
 * above 100 must say FLAG. Returns the number of unflagged ones; *shown counts the flagged ones. */
static int unflagged_over_100(const char *text, char sep_open, char sep_close, int *flagged, char *first, size_t n)
{
    int bad = 0;
    first[0] = 0;
    for (const char *p = text; *p; p++) {
        if (*p != '%' || p == text || !(p[-1] >= '0' && p[-1] <= '9')) continue;
        const char *b = p;
        while (b > text && ((b[-1] >= '0' && b[-1] <= '9') || b[-1] == '.')) b--;
        double v = atof(b);
        if (v <= 100.0) continue;
        /* the cell around it */
        const char *cs = b, *ce = p;
        while (cs > text && *cs != sep_open && *cs != '\n') cs--;
        while (*ce && *ce != sep_close && *ce != '\n') ce++;
        int flag = 0;
        for (const char *q = cs; q + 4 <= ce && !flag; q++) flag = !strncmp(q, "FLAG", 4);
        if (flag) (*flagged)++;
        else if (!bad++) snprintf(first, n, "%.*s", (int)(ce - cs < 200 ? ce - cs : 200), cs);
    }
    return bad;
}

static int test_verdict(void)
{
    char path[1024], okp[1024], *paths[1] = { path };
    snprintf(path, sizeof path, "%s/verdict.csv", fix);
    snprintf(okp, sizeof okp, "%s/verdict_ok.csv", fix);
    rp_data_t d;
    epb_err_t err = { "" };
    int rc = rp_load(&d, paths, 1, &err);
    TAP_OK(rc == EPB_OK && d.nconfs == 6, "verdict.csv loads: 6 configurations (%s)", err.msg);
    if (rc) return tap_done();
    rp_rule_t rule = rp_rule_default();
    const rp_conf_t *c21 = NULL, *c22 = NULL, *c24 = NULL, *c44 = NULL, *c42 = NULL;
    for (size_t k = 0; k < d.nconfs; k++) {
        const epb_row_t *r = d.confs[k].head->row;
        if (r->ranks == 2 && r->top_k == 1) c21 = &d.confs[k];
        if (r->ranks == 2 && r->top_k == 2) c22 = &d.confs[k];
        if (r->ranks == 2 && r->top_k == 4) c24 = &d.confs[k];
        if (r->ranks == 4 && r->top_k == 2) c42 = &d.confs[k];
        if (r->ranks == 4 && r->top_k == 4) c44 = &d.confs[k];
    }
    TAP_OK(c21 && c22 && c24 && c42 && c44, "the configurations P=2 k=1,2,4 and P=4 k=2,4 are there");
    if (!(c21 && c22 && c24 && c42 && c44)) { rp_free(&d); return tap_done(); }
    rp_rank_t rk[4];
    size_t nr;
    rp_rank_conf(&d, c21, &rule, rk, &nr);
    TAP_OK(nr == 2 && !strcmp(c21->strat[rk[0].s]->strategy, "tp2ep") && NEAR(rk[1].ratio, 400.0 / 300) &&
               rk[1].lo > 1 && rk[1].hi >= rk[1].ratio && rk[1].lo <= rk[1].ratio && !rk[1].same,
           "P=2 k=1: tp2ep fastest, agrs 1.33 [%.3f, %.3f] (the interval lies above 1)", rk[1].lo, rk[1].hi);
    rp_rank_conf(&d, c22, &rule, rk, &nr);
    TAP_OK(nr == 2 && rk[1].lo < 1 && rk[1].hi > 1 && rk[1].same,
           "P=2 k=2: 500 vs 505 +-10: the interval [%.3f, %.3f] holds 1: no significant difference", rk[1].lo,
           rk[1].hi);
    rp_rank_conf(&d, c24, &rule, rk, &nr);
    TAP_OK(nr == 2 && !strcmp(c24->strat[rk[0].s]->strategy, "agrs") && rk[1].lo > 1, "P=2 k=4: agrs fastest");
    TAP_OK(c44->nfail == 1 && !rp_fastest(&d, c44->cfg) && rp_vs_fastest(&d, c44->cfg, "agrs") == 0 &&
               rp_cell_failed(&d, rp_step(&d, c44->cfg, "agrs")),
           "P=4 k=4: one failed repetition; no fastest, no ratio, even agrs's (passing) step is left out");
    double share = rp_comm_share(&d, c21->cfg, "tp2ep"), step = rp_step(&d, c21->cfg, "tp2ep")->med;
    TAP_OK(share > 0 && share <= 1 && c21->comm_us[0] > step,
           "comm and sync phases add up to %.0f us, more than the %.0f us step; the share of the phase sum is %.3f",
           c21->comm_us[0], step, share);
    const rp_cell_t *ef2 = rp_find(&d, c21->cfg, "tp2ep", "experts_fwd"), *ef4 = rp_find(&d, c42->cfg, "tp2ep",
                                                                                          "experts_fwd");
    char why[320];
    double peak;
    TAP_OK(ef2 && ef2->tflops > rp_peak_tflops(&d, ef2->hclass) / 4 &&
               rp_flops_eff_why(&d, ef2, &peak, why, sizeof why) < 0 && strstr(why, "1 BLAS thread per rank"),
           "P=2 experts_fwd (0.08 TFLOP/s, 1 thread, 2 ranks per node) against a 2-thread 1-rank ceiling of 0.05: "
           "refused (%s)", why);
    TAP_OK(ef4 && NEAR(rp_flops_eff_why(&d, ef4, &peak, why, sizeof why), 0.4) && NEAR(peak, 0.2),
           "P=4 experts_fwd against the matching ceiling (1 thread, 4 ranks on 1 node): 0.08 / 0.2 = 40%%");
    rp_family_t fams[8];
    int nfam = 0, weak_ok = 0, weak_failed = 0;
    rp_families(&d, "ranks", fams, 8, &nfam, &err);
    for (int i = 0; i < nfam; i++) {
        if (fams[i].n != 2) continue;
        const epb_row_t *r0 = rp_conf(&d, fams[i].cfg[0])->head->row;
        if (r0->top_k == 4) weak_failed = rp_weak_eff(&d, &fams[i], 1, "agrs") < 0;
        if (r0->top_k == 1) weak_ok = NEAR(rp_weak_eff(&d, &fams[i], 1, "tp2ep"), 300.0 / 350);
        rp_family_free(&fams[i]);
    }
    TAP_OK(nfam == 3 && weak_ok && weak_failed,
           "weak scaling: k=1 tp2ep 300/350; k=4 (P=4 failed) has none, not even for agrs, whose rows passed");
    /* the fixture's model_bytes are the strategies' bytes, DESIGN.md's volumes: tp2ep/agrs = k/P (plus agrs's
     * indices and gates); the volume model is their sum over the comm phases */
    double vt = -1, va = -1;
    for (size_t s = 0; s < c42->nstrat; s++) {
        if (!strcmp(c42->strat[s]->strategy, "tp2ep")) vt = rp_volume_model(c42, s);
        if (!strcmp(c42->strat[s]->strategy, "agrs")) va = rp_volume_model(c42, s);
    }
    double T = 256, D = 256, B = 4, P = 4, k = 2, vol_t = 3 * T * k * D * B / P * 4, vol_a = 3 * T * D * B * 4 + 2 * 3 * T * k * 4;
    TAP_OK(NEAR(vt, vol_t + 256 * 16 * 4) && NEAR(va, vol_a + 256 * 16 * 4),
           "volume model: the comm phases' model_bytes (tp2ep %.0f, agrs %.0f) with grad_sync's", vt, va);
    rp_free(&d);

    /* the rendered report */
    char out[1024], cmd[4096], p[1200];
    snprintf(out, sizeof out, "%s/verdict", tmp);
    snprintf(cmd, sizeof cmd, "%s --no-plots %s -o %s", exe, path, out);
    rc = run(cmd, NULL);
    snprintf(p, sizeof p, "%s/report.md", out);
    char *md = read_file(p);
    snprintf(p, sizeof p, "%s/report.html", out);
    char *html = read_file(p);
    TAP_OK(rc == 0 && md && html, "report on verdict.csv: exit 0 (%d)", rc);
    if (!md || !html) { free(md); free(html); return tap_done(); }
    const char *v = strstr(md, "## Verdict"), *t1 = strstr(md, "\n### "), *tab = strstr(md, "\n| ");
    TAP_OK(v && t1 && tab && v < t1 && v < tab && strstr(v, "| configuration | ranking") == strstr(md, "\n| ") + 1,
           "report.md: the verdict section and its table come before any per-configuration heading or table");
    const char *hv = strstr(html, "<h2>Verdict</h2>"), *h3 = strstr(html, "<h3>"), *ht = strstr(html, "<table>");
    TAP_OK(hv && h3 && ht && hv < ht && ht < h3 && strstr(ht, "<th>configuration</th>") == ht + strlen("<table>\n<tr>"),
           "report.html: the verdict heading, then its table, before any per-configuration heading");
    char line[2048];
    const char *l = verdict_line(md, "P=2, 1 node, skew=0, k=1,", line, sizeof line);
    TAP_OK(l && strstr(l, "tp2ep 300.0 &lt; agrs 400.0") && strstr(l, "agrs 1.33 [") && strstr(l, "tp2ep fastest, by") &&
               !strstr(l, "no significant") && strstr(l, "agrs 1.97 (model 1.97)") && strstr(l, "checks: all ok") &&
               strstr(l, "| 3 |"),
           "verdict P=2 k=1: ranking, the interval, the measured volume ratio beside the traffic description's, 3 "
           "repetitions, checks ok: %s", l ? l : "(no row)");
    int nsame = 0;
    for (const char *pfx[] = { "P=2, 1 node, skew=0, k=2,", "P=4, 1 node, skew=0, k=2," }, **q = pfx; q < pfx + 2; q++) {
        l = verdict_line(md, *q, line, sizeof line);
        nsame += l && strstr(l, "no significant difference: tp2ep, agrs") && strstr(l, "[0.9");
    }
    TAP_OK(nsame == 2, "verdict k=2 (P=2 and 4): no significant difference, with the interval");
    l = verdict_line(md, "P=4, 1 node, skew=0, k=4,", line, sizeof line);
    TAP_OK(l && strstr(l, "FAILED") && strstr(l, "(tp2ep)") && strstr(l, "checks: 1 failed") && !strstr(l, "fastest"),
           "verdict P=4 k=4: FAILED, the failing strategy named, nothing ranked: %s", l ? l : "(no row)");
    TAP_OK(strstr(md, "k=4 T=256 D=256 F=512 f32 softmax skew=0, mpi cpu") &&
               strstr(md, "(hosts node01): FAILED (1 failed check; left out of every comparison)"),
           "the failed configuration's own heading says FAILED");
    int flagged = 0;
    char first[256];
    int bad = unflagged_over_100(md, '|', '|', &flagged, first, sizeof first);
    TAP_OK(bad == 0, "report.md: no share or efficiency above 100%% without a FLAG (%d unflagged: %s)", bad, first);
    TAP_OK(flagged > 0, "report.md: the fixture's busbw above the bare collective's is shown, flagged (%d)", flagged);
    flagged = 0;
    bad = unflagged_over_100(html, '>', '<', &flagged, first, sizeof first);
    TAP_OK(bad == 0 && flagged > 0, "report.html: likewise (%d unflagged: %s)", bad, first);
    TAP_OK(strstr(md, "not compared: no gemm ceiling at 1 BLAS thread per rank and 2 ranks on 1 node"),
           "report.md: the compute efficiency against a ceiling of other threads is refused, and says why");
    free(md);
    free(html);

    /* --baseline: a new side with failed checks is exit 1, and says why; the same rows all ok are not */
    char *e = NULL;
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s", exe, okp, okp);
    rc = run(cmd, NULL);
    TAP_OK(rc == 0, "--baseline ok.csv ok.csv: exit 0 (%d)", rc);
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s", exe, okp, path);
    rc = run(cmd, &e);
    snprintf(p, sizeof p, "%s/stdout.txt", tmp);
    char *so = read_file(p);
    TAP_OK(rc == 1 && e && strstr(e, "check=fail: exit 1") && so && strstr(so, "FAILED CHECKS") &&
               strstr(so, "-> no regression"),
           "--baseline ok.csv failed.csv: exit 1, the failed checks named though no time regressed (%s)",
           one_line(e) ? e : "");
    free(e);
    free(so);
    snprintf(cmd, sizeof cmd, "%s --baseline %s %s", exe, path, okp);
    rc = run(cmd, NULL);
    TAP_OK(rc == 0, "--baseline failed.csv ok.csv: the baseline's failed configuration is left out, exit 0 (%d)", rc);
    return tap_done();
}

/* ---- scale: the report's work grows linearly with its input ---- */

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One run of the report on csv: its wall time in seconds, or -1 when it fails or passes limit_s. */
static double time_report(const char *csv, double limit_s)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "timeout %.0f %s --no-plots %s -o %s/scale_out", limit_s, exe, csv, tmp);
    double t0 = wall_s();
    if (run(cmd, NULL) != 0) return -1;
    return wall_s() - t0;
}

/* The instructions the report executes on csv, counted by valgrind's callgrind ("Collected : N"): the same on
 * every run of the same input, whatever else the machine does; -1 when it fails. */
static double instructions(const char *csv)
{
    char cmd[4096], *err = NULL;
    snprintf(cmd, sizeof cmd, "timeout 300 valgrind --tool=callgrind --callgrind-out-file=/dev/null %s --no-plots %s -o %s/scale_out",
             exe, csv, tmp);
    double n = -1;
    if (run(cmd, &err) == 0 && err) {
        const char *c = strstr(err, "Collected : ");
        if (c) n = strtod(c + 12, NULL);
    }
    free(err);
    return n > 0 ? n : -1;
}

/* For each mix of gen_csv (a year of nightly runs: few measurements, many repetitions; a tuning sweep: every
 * row its own measurement):
 * - the complexity guard: from the "1 MB" to the "2 MB" file the instructions the report executes grow by less
 *   than 1.2x the growth of the bytes (linear work: 1.0x less the fixed start-up, measured 0.97 and 0.99; work
 *   with a quadratic term as large as the linear one at 1 MB: 1.38x). Counted, not timed, so a busy machine can
 *   neither fail nor pass it;
 * - a hang guard: 20 MB renders (exit 0) within 30 s.
 * How the wall time and memory grow is measured in experiments/report-scale (recorded results). */
static int test_scale(const char *gen)
{
    static const char *const mixes[] = { "nightly", "sweep" };
    static const int sizes[] = { 1, 2, 20 };
    int have_vg = system("valgrind --version >/dev/null 2>&1") == 0;
    for (int m = 0; m < 2; m++) {
        double ins[2] = { -1, -1 }, bytes[2] = { 0, 0 };
        for (int i = 0; i < 3; i++) {
            int mb = sizes[i];
            char csv[1024], cmd[4096];
            snprintf(csv, sizeof csv, "%s/%s%d.csv", tmp, mixes[m], mb);
            snprintf(cmd, sizeof cmd, "%s --mix %s %s %d", gen, mixes[m], csv, mb);
            int rc = run(cmd, NULL);
            TAP_OK(rc == 0 && fsize(csv) >= (long)mb << 20, "gen_csv --mix %s: %d MB (%ld bytes)", mixes[m], mb,
                   fsize(csv));
            if (i < 2) {
                bytes[i] = (double)fsize(csv);
                if (have_vg) ins[i] = instructions(csv);
            } else {
                double t = time_report(csv, 30);
                TAP_OK(t > 0, "report on %d MB (%s): exit 0 within 30 s (%.2f s)", mb, mixes[m], t);
            }
            unlink(csv);
        }
        if (!have_vg)
            TAP_SKIP("%s: the instruction counts need valgrind (ci/bootstrap --tests installs it)", mixes[m]);
        else
            TAP_OK(ins[0] > 0 && ins[1] > 0 && bytes[0] > 0 && ins[1] / ins[0] < 1.2 * (bytes[1] / bytes[0]),
                   "%s: instructions grow %.3fx from %.0f to %.0f bytes (%.3fx): less than 1.2x the bytes' growth",
                   mixes[m], ins[0] > 0 ? ins[1] / ins[0] : 0, bytes[0], bytes[1], bytes[1] / bytes[0]);
    }
    return tap_done();
}

int main(int argc, char **argv)
{
    if (argc != 4 && !(argc == 5 && !strcmp(argv[1], "scale"))) {
        fprintf(stderr, "usage: test_report unit|cli|plots FIXTURES_DIR REPORT_EXE\n"
                        "       test_report scale FIXTURES_DIR REPORT_EXE GEN_CSV\n");
        return 2;
    }
    fix = argv[2];
    exe = argv[3];
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 3; }
    int rc;
    if (!strcmp(argv[1], "unit")) {
        test_numbers();
        test_schema2();
        test_stats();
        rc = tap_done();
    } else if (!strcmp(argv[1], "cli")) {
        test_cli();
        input_paths();
        test_rows_sane();
        test_fifo();
        test_calibration();
        test_markdown();
        test_terminal();
        test_help();
        test_full_disk();
        rc = tap_done();
    } else if (!strcmp(argv[1], "verdict")) {
        rc = test_verdict();
    } else if (!strcmp(argv[1], "scale")) {
        rc = test_scale(argv[4]);
    } else {
        rc = test_plots();
    }
    rp_outdir_abort(tmp); /* removes the tree; no rm needed on PATH */
    return rc;
}
