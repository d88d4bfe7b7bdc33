/* Unit tests of common/: statistics, size parsing, GB/s, seeded values, bf16, and the CSV writer
 * round-tripped through the reader, plus every malformed-input case the reader must reject. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "epb.h"
#include "tap.h"

static char dir[] = "/tmp/epb_test_common_XXXXXX";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static epb_row_t sample_row(int i)
{
    epb_row_t r;
    memset(&r, 0, sizeof r);
    r.schema = EPB_SCHEMA;
    r.run_id = "run-1";
    r.utc = "2026-11-24T22:00:00Z";
    r.git_rev = "abc123";
    r.host = "node01";
    r.nodes = 2;
    r.hosts = "node01;node02";
    r.backend = "mpi";
    r.device = "cpu";
    r.device_name = "AMD EPYC, 2 cores; \"bind\"=core"; /* needs quoting */
    r.mode = "coll";
    r.op = "alltoallv";
    r.ranks = 4;
    r.tokens = 1024 + i;
    r.dtype = "f32";
    r.skew = 1.5;
    r.seed = 18446744073709551615ull;
    r.params = "imbalance=1.5";
    r.phase = "total";
    r.kind = "comm";
    r.coll = "alltoallv";
    r.bytes = 65536ull << i;
    r.iters = 20;
    r.t_min_us = 1.25;
    r.t_med_us = 2.5 + i;
    r.t_mean_us = 2.75 + i;
    r.t_p95_us = 3.125 + i;
    r.t_max_us = 123456.789;
    r.wait_us = 0.5 + i;
    r.algbw_gbps = 0.0123456789;
    r.busbw_gbps = 9.87654321;
    r.peak_mem_bytes = 1ull << 40;
    r.model_bytes = 65536.0 * (1 + i);
    r.dropped = 3 + i, r.load_max = 1536.5 + i, r.load_plain = 2048 + i, r.quant_err = 0.03125 + i;
    r.check = "ok";
    return r;
}

static void test_stats(void)
{
    double s[] = { 5, 1, 4, 2, 3 };
    epb_stats_t st;
    TAP_OK(epb_stats(s, 5, &st) == 0, "stats on 5 samples");
    TAP_OK(st.min == 1 && st.max == 5 && st.med == 3 && st.mean == 3, "min/med/mean/max of 1..5");
    TAP_OK(fabs(st.p95 - 4.8) < 1e-12, "p95 of 1..5 interpolates to 4.8 (got %g)", st.p95);
    double e[] = { 4, 1, 3, 2 };
    epb_stats(e, 4, &st);
    TAP_OK(st.med == 2.5, "median of an even count is the mean of the middle two (got %g)", st.med);
    double one = 7;
    epb_stats(&one, 1, &st);
    TAP_OK(st.min == 7 && st.med == 7 && st.p95 == 7 && st.max == 7, "one sample");
    TAP_OK(epb_stats(s, 0, &st) == -1, "no samples is an error");
    double h[100];
    for (int i = 0; i < 100; i++) h[i] = 99 - i;
    epb_stats(h, 100, &st);
    TAP_OK(fabs(st.p95 - 94.05) < 1e-9 && st.med == 49.5, "p95 of 0..99 is 94.05, median 49.5");
}

static void test_sizes(void)
{
    uint64_t v;
    TAP_OK(epb_parse_size("4096", &v) == 0 && v == 4096, "plain bytes");
    TAP_OK(epb_parse_size("64K", &v) == 0 && v == 65536, "64K");
    TAP_OK(epb_parse_size("16M", &v) == 0 && v == 16u << 20, "16M");
    TAP_OK(epb_parse_size("1G", &v) == 0 && v == 1u << 30, "1G");
    TAP_OK(epb_parse_size("8k", &v) == 0 && v == 8192, "lower-case suffix");
    TAP_OK(epb_parse_size("2MiB", &v) == 0 && v == 2u << 20, "MiB");
    TAP_OK(epb_parse_size("2MB", &v) == 0 && v == 2u << 20, "MB");
    const char *bad[] = { "", "0", "-1", "-64K", "abc", "12Q", "1.5M", " 64K", "64K ", "K", "99999999999999999999",
                          "17179869184G" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        TAP_OK(epb_parse_size(bad[i], &v) == -1, "size '%s' rejected", bad[i]);
    char buf[32];
    epb_fmt_size(65536, buf, sizeof buf);
    TAP_OK(!strcmp(buf, "64K"), "format 64K");
    epb_fmt_size(3u << 20, buf, sizeof buf);
    TAP_OK(!strcmp(buf, "3M"), "format 3M");
    epb_fmt_size(1000, buf, sizeof buf);
    TAP_OK(!strcmp(buf, "1000"), "format 1000");
    long l;
    TAP_OK(epb_parse_int("12", 1, 100, &l) == 0 && l == 12, "int 12");
    TAP_OK(epb_parse_int("0", 1, 100, &l) == -1, "int below range");
    TAP_OK(epb_parse_int("3x", 1, 100, &l) == -1, "int with garbage");
    TAP_OK(epb_parse_int("", 1, 100, &l) == -1, "empty int");
    double d;
    TAP_OK(epb_parse_double("1.5", 0, 10, &d) == 0 && d == 1.5, "double 1.5");
    TAP_OK(epb_parse_double("nan", 0, 10, &d) == -1, "nan rejected");
    TAP_OK(epb_parse_double("-1", 0, 10, &d) == -1, "double below range");
    TAP_OK(epb_parse_double("0x10", 0, 100, &d) == -1, "hexadecimal rejected (--skew 0x10 is not 16)");
    TAP_OK(epb_parse_double(" 1", 0, 10, &d) == -1 && epb_parse_double("1 ", 0, 10, &d) == -1, "blanks rejected");
    TAP_OK(epb_parse_double("2.5e-1", 0, 10, &d) == 0 && d == 0.25 && epb_parse_double(".5", 0, 10, &d) == 0,
           "decimal forms with exponent and leading point accepted");
}

static void test_gbps(void)
{
    TAP_OK(fabs(epb_gbps(1e9, 1e6) - 1.0) < 1e-12, "1e9 bytes in 1 s is 1 GB/s");
    TAP_OK(epb_gbps(100, 0) == 0, "zero time gives 0, not inf");
}

static void test_values(void)
{
    TAP_OK(epb_hash64(1, 2, 3) == epb_hash64(1, 2, 3), "hash is deterministic");
    TAP_OK(epb_hash64(1, 2, 3) != epb_hash64(1, 2, 4) && epb_hash64(1, 2, 3) != epb_hash64(2, 2, 3),
           "hash depends on index and seed");
    double lo = 1, hi = -1, sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = epb_uniform(7, 0, (uint64_t)i);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sum += u;
    }
    TAP_OK(lo >= -1 && hi < 1 && lo < -0.999 && hi > 0.999 && fabs(sum / 1e5) < 0.01,
           "uniform covers [-1,1) with mean ~0 (%g %g %g)", lo, hi, sum / 1e5);
    int seen[9] = { 0 }, inrange = 1;
    for (int i = 0; i < 1000; i++) {
        int v = epb_small_int(3, 1, (uint64_t)i, 4);
        if (v < -4 || v > 4) inrange = 0;
        else seen[v + 4] = 1;
    }
    int all = 1;
    for (int i = 0; i < 9; i++) all &= seen[i];
    TAP_OK(inrange && all, "small ints cover [-4,4] and nothing else");
    TAP_OK(epb_bf16_to_f32(epb_f32_to_bf16(1.0f)) == 1.0f, "bf16 1.0 round trip");
    TAP_OK(epb_bf16_to_f32(epb_f32_to_bf16(255.0f)) == 255.0f, "bf16 holds 255 exactly");
    TAP_OK(epb_bf16_to_f32(epb_f32_to_bf16(1.00390625f)) == 1.0f, "bf16 ties round to even (down)");
    TAP_OK(epb_bf16_to_f32(epb_f32_to_bf16(1.01171875f)) == 1.015625f, "bf16 ties round to even (up)");
    TAP_OK(isnan(epb_bf16_to_f32(epb_f32_to_bf16(NAN))), "bf16 keeps NaN");
}

static int read_file(const char *path, epb_rows_t *t, epb_err_t *err)
{
    epb_rows_free(t);
    memset(err, 0, sizeof *err);
    return epb_csv_read(path, t, err);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

static void test_csv(void)
{
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/r.csv", dir);
    epb_err_t err = { { 0 } };
    epb_rows_t t = { 0 };
    epb_row_t rows[3] = { sample_row(0), sample_row(1), sample_row(2) };
    TAP_OK(epb_csv_probe(path, &err) == EPB_OK, "probe accepts a new file in a writable directory");
    TAP_OK(epb_csv_append(path, rows, 2, &err) == EPB_OK, "append 2 rows to a new file");
    TAP_OK(epb_csv_append(path, rows + 2, 1, &err) == EPB_OK, "append 1 more row");
    TAP_OK(read_file(path, &t, &err) == EPB_OK && t.nrows == 3, "read back 3 rows (%s)", err.msg);
    int same = t.nrows == 3;
    for (size_t i = 0; same && i < 3; i++) {
        const epb_row_t *g = &t.rows[i];
        same &= g->schema == EPB_SCHEMA && g->model_bytes == rows[i].model_bytes && g->dropped == rows[i].dropped &&
                g->load_max == rows[i].load_max && g->load_plain == rows[i].load_plain && g->quant_err == rows[i].quant_err && !strcmp(g->device_name, rows[i].device_name) && g->tokens == rows[i].tokens &&
                g->bytes == rows[i].bytes && g->seed == rows[i].seed && g->t_med_us == rows[i].t_med_us &&
                g->t_max_us == rows[i].t_max_us && fabs(g->algbw_gbps - rows[i].algbw_gbps) < 1e-15 &&
                g->skew == 1.5 && g->peak_mem_bytes == rows[i].peak_mem_bytes && !strcmp(g->check, "ok") &&
                !strcmp(g->hosts, "node01;node02") && !strcmp(g->params, "imbalance=1.5") &&
                !strcmp(g->kind, "comm") && !strcmp(g->coll, "alltoallv") && g->wait_us == rows[i].wait_us;
    }
    TAP_OK(same, "every field round-trips, quoted text and the schema 2 and 3 columns included");
    TAP_OK(t.nrows == 3 && t.rows[0].run_id == t.rows[2].run_id, "equal texts are stored once (interned)");
    FILE *f = fopen(path, "r");
    char line[2048];
    int headers = 0;
    while (fgets(line, sizeof line, f)) headers += !strncmp(line, "schema,run_id,", 14);
    fclose(f);
    TAP_OK(headers == 1, "the header is written once (%d)", headers);

    /* a file with another header is never appended to, and stays unchanged */
    snprintf(bad, sizeof bad, "%s/other.csv", dir);
    write_file(bad, "a,b,c\n1,2,3\n");
    TAP_OK(epb_csv_probe(bad, &err) == EPB_EUSAGE && strstr(err.msg, "other.csv:1"), "probe rejects a foreign header");
    TAP_OK(epb_csv_append(bad, rows, 1, &err) == EPB_EUSAGE, "append refuses a foreign file");
    TAP_OK(file_size(bad) == 12, "the foreign file is unchanged");
    TAP_OK(epb_csv_probe("/nonexistent-dir/x.csv", &err) == EPB_EUSAGE && strstr(err.msg, "/nonexistent-dir"),
           "probe rejects a missing directory: %s", err.msg);
    TAP_OK(epb_csv_probe(dir, &err) == EPB_EUSAGE, "probe rejects a directory as the file");

    /* a torn last row (a writer killed mid-row by something else, a full disk): nothing is glued to it */
    char torn[256], text[8192], good[4096], hdr[2048] = "";
    for (int i = 0; i < EPB_CSV_NCOLS; i++) {
        strcat(hdr, i ? "," : "");
        strcat(hdr, epb_csv_columns[i]);
    }
    strcat(hdr, "\n");
    epb_csv_format_row(&rows[0], good, sizeof good);
    snprintf(torn, sizeof torn, "%s/torn.csv", dir);
    snprintf(text, sizeof text, "%s%s%.30s", hdr, good, good);
    write_file(torn, text);
    long before = file_size(torn);
    TAP_OK(epb_csv_probe(torn, &err) == EPB_EUSAGE && strstr(err.msg, "torn"), "probe refuses a torn last row: %s",
           err.msg);
    TAP_OK(epb_csv_append(torn, rows, 1, &err) == EPB_EUSAGE && file_size(torn) == before,
           "append refuses it and leaves the file as it was");

    /* a full disk (the file size limit stands in for it): the new file does not stay, an old one is cut back */
    char full[256];
    snprintf(full, sizeof full, "%s/full.csv", dir);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = { 100, 100 };
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc1 = epb_csv_append(full, rows, 3, &err); /* a new file: the header alone is over 100 bytes */
        int gone = access(full, F_OK) != 0;
        _exit(rc1 == EPB_ESYS && gone ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a failed write leaves no new file behind (not 0 bytes)");
    before = file_size(path);
    pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = { (rlim_t)before + 100, (rlim_t)before + 100 };
        setrlimit(RLIMIT_FSIZE, &rl);
        _exit(epb_csv_append(path, rows, 3, &err) == EPB_ESYS ? 0 : 1);
    }
    waitpid(pid, &status, 0);
    TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && file_size(path) == before,
           "a short write to an existing file is cut back to its old length (%ld)", file_size(path));

    /* schema 1 to 4 files are read, their missing columns empty (text), 0 (schema 2's numbers in schema 1) or -1
     * (those of schemas 3, 4 and 5) */
    static const char *const v2only[] = { "hosts", "params", "kind", "coll", "wait_us", "hidden_us" };
    static const char *const v3only[] = { "model_bytes" }, *const v4only[] = { "dropped", "load_max", "load_plain" },
                             *const v5only[] = { "quant_err" };
    /* the current row split into its fields */
    char *fields[EPB_CSV_NCOLS], tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", good);
    tmp[strlen(tmp) - 1] = 0;
    int nf = 0;
    for (char *q = tmp, *s0 = tmp;; q++) {
        if (*q == '"') { q = strchr(q + 1, '"'); while (q[1] == '"') q = strchr(q + 2, '"'); continue; }
        if (*q == ',' || !*q) { int end = !*q; *q = 0; fields[nf++] = s0; s0 = q + 1; if (end) break; }
    }
    for (int old = 1; old <= 4; old++) {
        char ohdr[2048] = "", orow[4096] = "";
        int skip[EPB_CSV_NCOLS] = { 0 };
        for (int i = 0; i < EPB_CSV_NCOLS; i++) {
            for (size_t j = 0; old == 1 && j < sizeof v2only / sizeof *v2only; j++) skip[i] |= !strcmp(epb_csv_columns[i], v2only[j]);
            for (size_t j = 0; old <= 2 && j < sizeof v3only / sizeof *v3only; j++) skip[i] |= !strcmp(epb_csv_columns[i], v3only[j]);
            for (size_t j = 0; old <= 3 && j < sizeof v4only / sizeof *v4only; j++) skip[i] |= !strcmp(epb_csv_columns[i], v4only[j]);
            for (size_t j = 0; j < sizeof v5only / sizeof *v5only; j++) skip[i] |= !strcmp(epb_csv_columns[i], v5only[j]);
        }
        for (int i = 0, first = 1; i < EPB_CSV_NCOLS && nf == EPB_CSV_NCOLS; i++) {
            if (skip[i]) continue;
            strcat(ohdr, first ? "" : ",");
            strcat(ohdr, epb_csv_columns[i]);
            strcat(orow, first ? (old == 1 ? "1" : old == 2 ? "2" : old == 3 ? "3" : "4") : ",");
            if (!first) strcat(orow, fields[i]);
            first = 0;
        }
        snprintf(text, sizeof text, "%s\n%s\n", ohdr, orow);
        write_file(bad, text);
        int ok = read_file(bad, &t, &err) == EPB_OK && t.nrows == 1 && t.rows[0].schema == old &&
                 t.rows[0].bytes == rows[0].bytes && (old >= 3 ? t.rows[0].model_bytes == rows[0].model_bytes
                                                                    : t.rows[0].model_bytes == -1) &&
                 (old == 4 ? t.rows[0].dropped == rows[0].dropped && t.rows[0].load_plain == rows[0].load_plain
                           : t.rows[0].dropped == -1 && t.rows[0].load_max == -1 && t.rows[0].load_plain == -1) &&
                 t.rows[0].quant_err == -1;
        if (ok && old == 1) ok = !strcmp(t.rows[0].kind, "") && !strcmp(t.rows[0].params, "") && t.rows[0].wait_us == 0;
        if (ok && old == 2) ok = !strcmp(t.rows[0].params, rows[0].params ? rows[0].params : "");
        TAP_OK(ok, "a schema %d file reads, its later columns empty or -1 (%s)", old, err.msg);
        char want[32];
        snprintf(want, sizeof want, "schema %d", old);
        TAP_OK(epb_csv_probe(bad, &err) == EPB_EUSAGE && strstr(err.msg, want),
               "a schema %d file is not appended to, and the message says why: %s", old, err.msg);
    }

    /* malformed inputs: each is rejected with file:line */
    struct { const char *name, *want; char text[8192]; } *cases = calloc(32, sizeof *cases);
    int nc = 0;
    /* the row with field `col` replaced by `v` */
    #define WITH(col, v) do { char r_[4096]; int k_ = 0; r_[0] = 0; \
        for (int i_ = 0; i_ < EPB_CSV_NCOLS; i_++) { k_ += snprintf(r_ + k_, sizeof r_ - k_, "%s%s", i_ ? "," : "", \
            !strcmp(epb_csv_columns[i_], col) ? v : fields[i_]); } \
        snprintf(cases[nc].text, 8192, "%s%s\n", hdr, r_); } while (0)
    cases[nc].name = "empty file"; cases[nc].want = ":1:"; cases[nc++].text[0] = 0;
    cases[nc].name = "header only is fine"; cases[nc].want = NULL; snprintf(cases[nc++].text, 8192, "%s", hdr);
    cases[nc].name = "truncated mid-row"; cases[nc].want = ":3: truncated";
    snprintf(cases[nc++].text, 8192, "%s%s%.40s", hdr, good, good);
    cases[nc].name = "wrong column count"; cases[nc].want = ":2: wrong column count";
    snprintf(cases[nc++].text, 8192, "%s1,2,3\n", hdr);
    cases[nc].name = "non-numeric field"; cases[nc].want = ":2: column schema";
    snprintf(cases[nc++].text, 8192, "%sx%s", hdr, good + 1);
    cases[nc].name = "mixed schemas"; cases[nc].want = ":3: schema 1 under a schema 5 header";
    snprintf(cases[nc++].text, 8192, "%s%s1%s", hdr, good, good + 1);
    cases[nc].name = "wrong header"; cases[nc].want = ":1: not an epbench CSV header";
    snprintf(cases[nc++].text, 8192, "schema,run,utc\n");
    cases[nc].name = "extra column"; cases[nc].want = ":2: wrong column count";
    snprintf(cases[nc].text, 8192, "%s%s", hdr, good);
    cases[nc++].text[strlen(hdr) + strlen(good) - 1] = ',', strcat(cases[nc - 1].text, "9\n");
    cases[nc].name = "a blank before a number"; cases[nc].want = ":2: column ranks: not a plain decimal number";
    WITH("ranks", " 12"); nc++;
    cases[nc].name = "a hexadecimal number"; cases[nc].want = ":2: column skew: not a plain decimal number";
    WITH("skew", "0x10"); nc++;
    cases[nc].name = "inf"; cases[nc].want = ":2: column t_med_us: not a plain decimal number";
    WITH("t_med_us", "inf"); nc++;
    cases[nc].name = "text over its limit"; cases[nc].want = ":2: column op: text too long";
    WITH("op", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    nc++;
    /* numbers no writer's row holds (issue 20): a negative time, statistics out of order, an unknown check */
    cases[nc].name = "a negative time"; cases[nc].want = ":2: column t_min_us: -0.5 is negative";
    WITH("t_min_us", "-0.5"); nc++;
    cases[nc].name = "a negative wait"; cases[nc].want = ":2: column wait_us: -3 is negative";
    WITH("wait_us", "-3"); nc++;
    cases[nc].name = "min above the median"; cases[nc].want = ":2: t_min_us 3 exceeds t_med_us 2.5";
    WITH("t_min_us", "3"); nc++;
    cases[nc].name = "the median above p95"; cases[nc].want = ":2: t_med_us 2.5 exceeds t_p95_us 2";
    WITH("t_p95_us", "2"); nc++;
    cases[nc].name = "max below p95 and the median"; cases[nc].want = ":2: t_p95_us 3.125 exceeds t_max_us 2";
    WITH("t_max_us", "2"); nc++;
    cases[nc].name = "the mean above max"; cases[nc].want = ":2: t_mean_us 200000 exceeds t_max_us 123457";
    WITH("t_mean_us", "200000"); nc++;
    cases[nc].name = "a check that is not ok, fail or skipped"; cases[nc].want = ":2: column check: 'FAILED' is not ok";
    WITH("check", "FAILED"); nc++;
    cases[nc].name = "a NUL byte inside a field"; cases[nc].want = ":2: a NUL byte";
    snprintf(cases[nc].text, 8192, "%s%s", hdr, good);
    size_t nul_at = strlen(hdr) + 3; /* inside run_id; the file is written with its length below */
    nc++;
    for (int i = 0; i < nc; i++) {
        if (!strcmp(cases[i].name, "a NUL byte inside a field")) {
            FILE *w = fopen(bad, "wb");
            size_t l = strlen(cases[i].text);
            cases[i].text[nul_at] = 0;
            fwrite(cases[i].text, 1, l, w);
            fclose(w);
        } else
            write_file(bad, cases[i].text);
        int rc = read_file(bad, &t, &err);
        if (!cases[i].want) TAP_OK(rc == EPB_OK && t.nrows == 0, "%s", cases[i].name);
        else TAP_OK(rc == EPB_EUSAGE && strstr(err.msg, cases[i].want) && strstr(err.msg, "other.csv"),
                    "%s rejected: %s", cases[i].name, err.msg);
    }
    /* accepted: an underflowing double (a denormal), a quoted field with a line break */
    WITH("t_min_us", "1e-320");
    write_file(bad, cases[nc].text);
    TAP_OK(read_file(bad, &t, &err) == EPB_OK && t.nrows == 1 && t.rows[0].t_min_us > 0 && t.rows[0].t_min_us < 1e-300,
           "1e-320 is a number (%s)", err.msg);
    WITH("device_name", "\"two\nlines\"");
    write_file(bad, cases[nc].text);
    TAP_OK(read_file(bad, &t, &err) == EPB_OK && t.nrows == 1 && !strcmp(t.rows[0].device_name, "two\nlines"),
           "a quoted line break is part of its field (%s)", err.msg);
    #undef WITH
    free(cases);
    TAP_OK(read_file("/nonexistent.csv", &t, &err) == EPB_EUSAGE, "missing file rejected");
    /* a FIFO is refused at once (no writer would ever come: the read would block for ever), a directory too */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.csv", dir);
    TAP_OK(mkfifo(fifo, 0600) == 0 && read_file(fifo, &t, &err) == EPB_EUSAGE && strstr(err.msg, "not a regular file (a FIFO)"),
           "a FIFO is refused without blocking: %s", err.msg);
    TAP_OK(read_file(dir, &t, &err) == EPB_EUSAGE && strstr(err.msg, "not a regular file (a directory)"),
           "a directory is refused: %s", err.msg);
    epb_rows_free(&t);
}

/* the helpers bench and report share for the files they are given and the names they print */
static void test_files(void)
{
    char buf[64], a[300], b[300], c[300];
    TAP_OK(!strcmp(epb_printable("a\nb\x1b[2Jc\x7f\td\r", buf, sizeof buf), "a\\nb\\x1b[2Jc\\x7f\\td\\r"),
           "control bytes and DEL become visible escapes: %s", buf);
    TAP_OK(!strcmp(epb_printable("plain text, kept", buf, sizeof buf), "plain text, kept"), "printable text is kept");
    TAP_OK(!strcmp(epb_printable("ab\n", buf, 4), "ab"), "cut to whole escapes: '%s'", buf);
    snprintf(a, sizeof a, "%s/same.csv", dir);
    snprintf(b, sizeof b, "%s/./same.csv", dir);
    snprintf(c, sizeof c, "%s/other.csv", dir);
    TAP_OK(epb_same_file(a, b) && !epb_same_file(a, c), "two spellings of one file yet to be made are one file");
    write_file(a, "x\n");
    TAP_OK(epb_same_file(a, b) && !epb_same_file(a, c), "an existing file: the same device and inode");
    snprintf(b, sizeof b, "%s/link.csv", dir);
    TAP_OK(symlink(a, b) == 0 && epb_same_file(a, b), "a symbolic link to it is the same file");
    snprintf(b, sizeof b, "%s/hard.csv", dir);
    TAP_OK(link(a, b) == 0 && epb_same_file(a, b), "a hard link to it is the same file");
}

int main(void)
{
    if (!mkdtemp(dir)) return 99;
    test_stats();
    test_sizes();
    test_gbps();
    test_values();
    test_csv();
    test_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return tap_done();
}
