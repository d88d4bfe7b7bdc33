/* gen_csv: writes a nightly-like history (the current schema) of at least MB megabytes, for the report's scaling test and
 * experiments/report-scale. Usage: gen_csv [--mix nightly|history|sweep] OUT.csv MB
 *
 * nightly (the default): one night (from 2026-01-01, one a day) is ci/nightly.matrix run 5 times (NIGHTLY_REPS): the
 * calibration (gemm, memcpy), allgather, reduce_scatter, alltoallv, allreduce and alltoallv --imbalance 1.5 at 64K,
 * 1M and 16M on 2 ranks, and the moe lines: {local, agrs, tp2ep, tp2ep:chunks=4} at top_k 2 (T=256 and T=1024)
 * and {agrs, tp2ep} at top_k 1 and 4, each strategy 18 phases (kinds, collectives, wait) and the step. That is
 * 245 measurements, 1,225 rows, about 0.33 MB a night: a year is about 120 MB, more nights continue into the
 * next year. Hosts rotate over 16 nodes of one class; times carry seeded noise. The names are this generator's
 * test data, not a list the report reads.
 * history: the coll and peak lines of a night only (17 measurements, 85 rows): a long history of few measurements,
 *          thousands of repetitions each (what a quadratic walk over repetitions trips on).
 * sweep:   a tuning sweep, one repetition of each configuration (tokens, experts, top_k, skew varied) with the four
 *          strategies and their 19 rows: every row its own measurement (what a scan over cells trips on). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "epb.h"

enum { REPS = 5 };
static const char *const strat[][2] = { { "local", "" }, { "agrs", "" }, { "tp2ep", "" }, { "tp2ep", "chunks=4" } };
/* the moe lines: T, D, F, top_k, and the strategies run (bit s: strat[s]) */
static const struct {
    long T, D, F;
    int k, strats;
} moe_lines[] = { { 256, 256, 512, 2, 15 }, { 1024, 512, 1024, 2, 15 }, { 256, 256, 512, 1, 6 }, { 256, 256, 512, 4, 6 } };
static const struct {
    const char *name, *kind;
    int coll; /* index in the strategy's collectives below, -1 none */
} phase[] = {
    { "route", "compute", -1 },      { "layout", "sync", 0 },          { "permute", "compute", -1 },
    { "dispatch", "comm", 1 },       { "experts_fwd", "compute", -1 }, { "unpermute", "compute", -1 },
    { "combine", "comm", 2 },        { "gate", "compute", -1 },        { "shared_fwd", "compute", -1 },
    { "gate_bwd", "compute", -1 },   { "combine_bwd", "comm", 1 },     { "unpermute_bwd", "compute", -1 },
    { "experts_bwd", "compute", -1 }, { "permute_bwd", "compute", -1 }, { "dispatch_bwd", "comm", 2 },
    { "shared_bwd", "compute", -1 }, { "route_bwd", "compute", -1 },   { "grad_sync", "comm", 3 },
};
static const char *const colls[][4] = {
    { "", "", "", "allreduce" },
    { "allgather", "allgather", "reduce_scatter", "allreduce" },
    { "alltoall", "alltoallv", "alltoallv", "allreduce" },
    { "alltoall", "alltoallv", "alltoallv", "allreduce" },
};
static const char *const coll_names[] = { "allgather", "reduce_scatter", "alltoallv", "allreduce" };

enum mix { MIX_NIGHTLY, MIX_HISTORY, MIX_SWEEP };

/* The moe rows of one strategy of one configuration (18 phases and the step) at rows[*n]. */
static void moe_rows(const epb_row_t *base, long T, long D, long F, int E, int k, int s, double skew, uint64_t stream,
                     epb_row_t *rows, size_t *n)
{
    double step = 0;
    size_t np = sizeof phase / sizeof phase[0];
    for (size_t p = 0; p <= np; p++) {
        epb_row_t *r = &rows[(*n)++];
        *r = *base;
        r->mode = "moe";
        r->op = strat[s][0];
        r->params = strat[s][1];
        r->ranks = 2;
        r->experts = E;
        r->top_k = k;
        r->tokens = T;
        r->hidden = D;
        r->ffn = F;
        r->skew = skew;
        double t = 20.0 * (double)(1 + p % 5) * k * (1 + s % 3) * (1 + 0.05 * epb_uniform(7, stream, *n));
        if (p == np) t = step; /* the step: the phases' sum */
        else step += t;
        r->phase = p == np ? "step" : phase[p].name;
        r->kind = p == np ? "total" : phase[p].kind;
        r->coll = p == np || phase[p].coll < 0 ? "" : colls[s][phase[p].coll];
        r->t_min_us = t * 0.9;
        r->t_med_us = r->t_mean_us = t;
        r->t_p95_us = t * 1.1;
        r->t_max_us = t * 1.3;
        r->wait_us = *r->coll ? t * 0.1 : 0;
        r->bytes = *r->coll ? (uint64_t)(65536 * k) : 0;
        r->algbw_gbps = r->busbw_gbps = *r->coll ? epb_gbps((double)r->bytes, t) : 0;
        r->peak_mem_bytes = 1u << 24;
    }
}

/* Appends one night (REPS repetitions of the matrix; sweep: 64 configurations once) to out. */
static int night_rows(const char *out, enum mix mix, long night, epb_row_t *rows, epb_err_t *err)
{
    static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    long y = 2026 + night / 365, d = night % 365, m = 0;
    while (d >= days[m]) d -= days[m++];
    char utc[REPS][48], run[REPS][32], host[REPS][24];
    size_t n = 0;
    for (int rep = 0; rep < REPS; rep++) {
        snprintf(utc[rep], sizeof utc[rep], "%04d-%02d-%02dT22:%02d:00Z", (int)y % 10000, (int)m + 1, (int)d + 1,
                 rep * 7);
        snprintf(run[rep], sizeof run[rep], "n%ld-r%d", night, rep);
        snprintf(host[rep], sizeof host[rep], "node%02ld", (night * REPS + rep) % 16 + 1);
        epb_row_t base = { .schema = EPB_SCHEMA, .model_bytes = -1, .run_id = run[rep], .utc = utc[rep], .git_rev = "0123456789ab",
                           .host = host[rep], .nodes = 1, .hosts = host[rep], .backend = "mpi", .device = "cpu",
                           .device_name = "AMD EPYC 9R14; 2 cores; bind=core", .dtype = "f32", .router = "softmax",
                           .seed = 1, .iters = 20, .check = "ok" };
        uint64_t stream = (uint64_t)night * 8 + (uint64_t)rep;
        if (mix == MIX_SWEEP) { /* 64 configurations of this night's sweep, once each */
            if (rep) break;
            for (int c = 0; c < 16; c++)
                for (int s = 0; s < 4; s++)
                    moe_rows(&base, 64 * (night % 64 + 1), 256, 512, 8 << (c % 4), 1 << (c / 4 % 3),
                             s, (double)(night / 64) + 0.5 * (c / 12), stream, rows, &n);
            break;
        }
        for (size_t l = 0; mix == MIX_NIGHTLY && l < sizeof moe_lines / sizeof moe_lines[0]; l++)
            for (int s = 0; s < 4; s++)
                if (moe_lines[l].strats >> s & 1)
                    moe_rows(&base, moe_lines[l].T, moe_lines[l].D, moe_lines[l].F, 16, moe_lines[l].k, s, 0, stream,
                             rows, &n);
        for (int c = 0; c < 5; c++) /* the fifth: alltoallv --imbalance 1.5 */
            for (int sz = 0; sz < 3; sz++) {
                epb_row_t *r = &rows[n++];
                *r = base;
                r->mode = "coll";
                r->op = r->coll = coll_names[c < 4 ? c : 2];
                r->params = c == 4 ? "imbalance=1.5" : "";
                r->ranks = 2;
                r->phase = "total";
                r->kind = "comm";
                r->bytes = (uint64_t)65536 << (4 * sz); /* 64K, 1M, 16M */
                double t = 5 + (double)r->bytes / 2e3 * (1 + 0.05 * epb_uniform(8, stream, n));
                r->t_min_us = t * 0.9;
                r->t_med_us = r->t_mean_us = t;
                r->t_p95_us = t * 1.1;
                r->t_max_us = t * 1.3;
                r->wait_us = c == 4 ? t * 0.3 : t * 0.02;
                r->algbw_gbps = epb_gbps((double)r->bytes, t);
                r->busbw_gbps = r->algbw_gbps * 0.75;
                r->peak_mem_bytes = 2 * r->bytes;
            }
        for (int g = 0; g < 2; g++) {
            epb_row_t *r = &rows[n++];
            *r = base;
            r->mode = "peak";
            r->op = g ? "memcpy" : "gemm";
            r->ranks = 1;
            r->phase = "total";
            r->kind = "compute";
            r->bytes = g ? 1u << 26 : 0;
            r->t_min_us = r->t_med_us = r->t_mean_us = r->t_p95_us = r->t_max_us = 1000;
            r->gflop = g ? 0 : 100;
            r->tflops = g ? 0 : 0.1;
            r->algbw_gbps = g ? 60 : 0;
        }
    }
    return epb_csv_append(out, rows, n, err);
}

int main(int argc, char **argv)
{
    long mb;
    enum mix mix = MIX_NIGHTLY;
    if (argc == 5 && !strcmp(argv[1], "--mix")) {
        if (!strcmp(argv[2], "history")) mix = MIX_HISTORY;
        else if (!strcmp(argv[2], "sweep")) mix = MIX_SWEEP;
        else if (strcmp(argv[2], "nightly")) argc = 0;
        argv += 2;
        argc -= argc ? 2 : 0;
    }
    if (argc != 3 || epb_parse_int(argv[2], 1, 100000, &mb)) {
        fprintf(stderr, "usage: gen_csv [--mix nightly|history|sweep] OUT.csv MB\n");
        return EPB_EUSAGE;
    }
    const char *out = argv[1];
    struct stat st;
    if (stat(out, &st) == 0) {
        fprintf(stderr, "gen_csv: %s exists; refusing to append to it\n", out);
        return EPB_EUSAGE;
    }
    epb_row_t *rows = calloc(REPS * 256, sizeof *rows); /* a night: at most 5 x 245 rows */
    if (!rows) return EPB_ESYS;
    epb_err_t err;
    int rc = EPB_OK;
    for (long night = 0; rc == EPB_OK; night++) {
        if ((rc = night_rows(out, mix, night, rows, &err))) fprintf(stderr, "gen_csv: %s\n", err.msg);
        if (stat(out, &st) == 0 && (uint64_t)st.st_size >= (uint64_t)mb << 20) break;
    }
    free(rows);
    return rc;
}
