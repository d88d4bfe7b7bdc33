/* Unit tests of common/: statistics, size parsing, busbw formulas, seeded values, bf16, and the CSV writer
 * round-tripped through the reader, plus every malformed-input case the reader must reject. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    r.schema = 1;
    epb_row_set(r.run_id, "run-1");
    epb_row_set(r.utc, "2026-11-24T22:00:00Z");
    epb_row_set(r.git_rev, "abc123");
    epb_row_set(r.host, "node01");
    r.nodes = 1;
    epb_row_set(r.backend, "mpi");
    epb_row_set(r.device, "cpu");
    epb_row_set(r.device_name, "AMD EPYC, 2 cores; \"bind\"=core"); /* needs quoting */
    epb_row_set(r.mode, "coll");
    epb_row_set(r.op, "alltoall");
    r.ranks = 4;
    r.tokens = 1024 + i;
    epb_row_set(r.dtype, "f32");
    r.skew = 1.5;
    r.seed = 18446744073709551615ull;
    epb_row_set(r.phase, "total");
    r.bytes = 65536ull << i;
    r.iters = 20;
    r.t_min_us = 1.25;
    r.t_med_us = 2.5 + i;
    r.t_mean_us = 2.75;
    r.t_p95_us = 3.125;
    r.t_max_us = 123456.789;
    r.algbw_gbps = 0.0123456789;
    r.busbw_gbps = 9.87654321;
    r.peak_mem_bytes = 1ull << 40;
    epb_row_set(r.check, "ok");
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
}

static void test_busbw(void)
{
    TAP_OK(epb_busbw_factor("allreduce", 4) == 1.5, "allreduce 2(P-1)/P at P=4");
    TAP_OK(epb_busbw_factor("allgather", 4) == 0.75, "allgather (P-1)/P");
    TAP_OK(epb_busbw_factor("reduce_scatter", 2) == 0.5, "reduce_scatter (P-1)/P");
    TAP_OK(epb_busbw_factor("alltoall", 8) == 0.875, "alltoall (P-1)/P");
    TAP_OK(epb_busbw_factor("alltoallv", 3) == 2.0 / 3, "alltoallv (P-1)/P");
    TAP_OK(epb_busbw_factor("alltoall", 1) == 0, "one rank moves nothing over the bus");
    TAP_OK(epb_busbw_factor("memcpy", 4) == 1, "non-collectives: busbw = algbw");
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

static void test_csv(void)
{
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/r.csv", dir);
    epb_err_t err = { { 0 } };
    epb_row_t rows[3] = { sample_row(0), sample_row(1), sample_row(2) };
    TAP_OK(epb_csv_probe(path, &err) == EPB_OK, "probe accepts a new file in a writable directory");
    TAP_OK(epb_csv_append(path, rows, 2, &err) == EPB_OK, "append 2 rows to a new file");
    TAP_OK(epb_csv_append(path, rows + 2, 1, &err) == EPB_OK, "append 1 more row");
    epb_row_t *got = NULL;
    size_t n = 0;
    TAP_OK(epb_csv_read(path, &got, &n, &err) == EPB_OK && n == 3, "read back 3 rows (%s)", err.msg);
    int same = n == 3;
    for (size_t i = 0; same && i < 3; i++) {
        same &= !strcmp(got[i].device_name, rows[i].device_name) && got[i].tokens == rows[i].tokens &&
                got[i].bytes == rows[i].bytes && got[i].seed == rows[i].seed &&
                got[i].t_med_us == rows[i].t_med_us && got[i].t_max_us == rows[i].t_max_us &&
                fabs(got[i].algbw_gbps - rows[i].algbw_gbps) < 1e-15 && got[i].skew == 1.5 &&
                got[i].peak_mem_bytes == rows[i].peak_mem_bytes && !strcmp(got[i].check, "ok");
    }
    TAP_OK(same, "every field round-trips, quoted text included");
    free(got);
    FILE *f = fopen(path, "r");
    char line[1024];
    int headers = 0;
    while (fgets(line, sizeof line, f)) headers += !strncmp(line, "schema,run_id,", 14);
    fclose(f);
    TAP_OK(headers == 1, "the header is written once (%d)", headers);

    /* a file with another header is never appended to, and stays unchanged */
    snprintf(bad, sizeof bad, "%s/other.csv", dir);
    write_file(bad, "a,b,c\n1,2,3\n");
    TAP_OK(epb_csv_probe(bad, &err) == EPB_EUSAGE && strstr(err.msg, "other.csv:1"), "probe rejects a foreign header");
    TAP_OK(epb_csv_append(bad, rows, 1, &err) == EPB_EUSAGE, "append refuses a foreign file");
    struct stat st;
    stat(bad, &st);
    TAP_OK(st.st_size == 12, "the foreign file is unchanged");
    TAP_OK(epb_csv_probe("/nonexistent-dir/x.csv", &err) == EPB_EUSAGE && strstr(err.msg, "/nonexistent-dir"),
           "probe rejects a missing directory: %s", err.msg);
    TAP_OK(epb_csv_probe(dir, &err) == EPB_EUSAGE, "probe rejects a directory as the file");

    /* malformed inputs: each is rejected with file:line */
    char hdr[1024] = "", good[1024];
    for (int i = 0; i < EPB_CSV_NCOLS; i++) {
        strcat(hdr, i ? "," : "");
        strcat(hdr, epb_csv_columns[i]);
    }
    strcat(hdr, "\n");
    epb_csv_format_row(&rows[0], good, sizeof good);
    struct { const char *name, *want; char text[4096]; } cases[8];
    int nc = 0;
    cases[nc].name = "empty file"; cases[nc].want = ":1:"; cases[nc++].text[0] = 0;
    cases[nc].name = "header only is fine"; cases[nc].want = NULL; snprintf(cases[nc++].text, 4096, "%s", hdr);
    cases[nc].name = "truncated mid-row"; cases[nc].want = ":3: truncated";
    snprintf(cases[nc++].text, 4096, "%s%s%.40s", hdr, good, good);
    cases[nc].name = "wrong column count"; cases[nc].want = ":2: wrong column count";
    snprintf(cases[nc++].text, 4096, "%s1,2,3\n", hdr);
    cases[nc].name = "non-numeric field"; cases[nc].want = ":2: column schema";
    snprintf(cases[nc++].text, 4096, "%sx%s", hdr, good + 1);
    cases[nc].name = "mixed schemas"; cases[nc].want = ":3: schema 2";
    snprintf(cases[nc++].text, 4096, "%s%s2%s", hdr, good, good + 1);
    cases[nc].name = "wrong header"; cases[nc].want = ":1: not an epbench schema 1 header";
    snprintf(cases[nc++].text, 4096, "schema,run,utc\n");
    cases[nc].name = "extra column"; cases[nc].want = ":2: wrong column count";
    snprintf(cases[nc].text, 4096, "%s%s", hdr, good);
    cases[nc++].text[strlen(hdr) + strlen(good) - 1] = ',', strcat(cases[nc - 1].text, "9\n");
    for (int i = 0; i < nc; i++) {
        write_file(bad, cases[i].text);
        memset(&err, 0, sizeof err);
        got = NULL;
        int rc = epb_csv_read(bad, &got, &n, &err);
        if (!cases[i].want) TAP_OK(rc == EPB_OK && n == 0, "%s", cases[i].name);
        else TAP_OK(rc == EPB_EUSAGE && strstr(err.msg, cases[i].want) && strstr(err.msg, "other.csv"),
                    "%s rejected: %s", cases[i].name, err.msg);
        free(got);
    }
    TAP_OK(epb_csv_read("/nonexistent.csv", &got, &n, &err) == EPB_EUSAGE, "missing file rejected");
}

int main(void)
{
    if (!mkdtemp(dir)) return 99;
    test_stats();
    test_sizes();
    test_busbw();
    test_values();
    test_csv();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return tap_done();
}
