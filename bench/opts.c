/* Option parsing and validation: every bad input is one line naming the option and the accepted values. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

#define DEFAULT_CSV "results/epbench.csv"

enum {
    OPT_COLL = 256, OPT_CALIBRATE, OPT_CSV, OPT_RANKS, OPT_BIND, OPT_IMBALANCE, OPT_DTYPE, OPT_SEED, OPT_COMM,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    { "coll", required_argument, 0, OPT_COLL },
    { "calibrate", no_argument, 0, OPT_CALIBRATE },
    { "min-bytes", required_argument, 0, 'b' },
    { "max-bytes", required_argument, 0, 'e' },
    { "step-factor", required_argument, 0, 'f' },
    { "iters", required_argument, 0, 'n' },
    { "warmup", required_argument, 0, 'w' },
    { "check", required_argument, 0, 'c' },
    { "csv", required_argument, 0, OPT_CSV },
    { "ranks", required_argument, 0, OPT_RANKS },
    { "bind", required_argument, 0, OPT_BIND },
    { "imbalance", required_argument, 0, OPT_IMBALANCE },
    { "dtype", required_argument, 0, OPT_DTYPE },
    { "seed", required_argument, 0, OPT_SEED },
    { "comm", required_argument, 0, OPT_COMM },
    { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, OPT_VERSION },
    { 0, 0, 0, 0 },
};

void bench_usage(FILE *f)
{
    fprintf(f,
"usage: bench --coll NAME [options]      collective microbenchmark (nccl-tests style, CSV out)\n"
"       bench --calibrate [options]      this machine's ceilings: memcpy GB/s and sgemm GFLOP/s\n"
"       bench --help | --version\n"
"\n"
"Started by hand with --ranks N > 1, bench re-executes itself under mpirun with N local ranks (printing the\n"
"launch line on stderr); under mpirun, mpiexec or srun it runs as launched.\n"
"\n"
"Collective microbenchmark:\n"
"  --coll NAME           allgather, reduce_scatter, alltoall, alltoallv, allreduce, or all\n"
"  -b, --min-bytes SIZE  smallest size, K/M/G suffixes (default 64K, rounded up to split evenly over the ranks)\n"
"  -e, --max-bytes SIZE  largest size (default 16M)\n"
"  -f, --step-factor N   multiply the size by N each step, N >= 2 (default 2)\n"
"  --imbalance S         alltoallv only: seeded Zipf skew of per-destination counts, S >= 0 (default 0 = even)\n"
"  --dtype f32|bf16      element type (default f32; bf16 reductions add in float32)\n"
"  Sizes count as in nccl-tests: allgather the gathered buffer, reduce_scatter and alltoall(v) the send\n"
"  buffer, allreduce the buffer; a given size must split evenly into elements over the ranks.\n"
"\n"
"Common:\n"
"  -n, --iters N         timed iterations per size (default 20)\n"
"  -w, --warmup N        untimed iterations first (default 5)\n"
"  -c, --check 0|1       verify results against seeded expectations (default 1); wrong elements exit 1\n"
"  --csv FILE            append CSV schema 1 rows (default " DEFAULT_CSV ", its folder created)\n"
"  --ranks N             ranks to launch when started by hand (default 4; 1 runs in-process)\n"
"  --bind none|core|numa pin each rank to its own core / NUMA node, round-robin when oversubscribed\n"
"                        (default: core, unless the launcher already bound the rank)\n"
"  --comm auto|mpi|self  communicator (default auto: mpi under a launcher, self for one rank)\n"
"  --seed N              seed of every input (default 42)\n"
"  -h, --help            this text;  --version  version, git revision and what was built in\n"
"\n"
"Exit codes: 0 ok, 1 a check failed, 2 bad usage or input, 3 runtime failure (MPI, memory).\n"
"\n"
"Examples:\n"
"  bench --coll alltoall -b 64K -e 16M --ranks 2\n"
"  bench --coll alltoallv --imbalance 1.5 --ranks 4 --csv a2av.csv\n"
"  mpirun -np 8 --hostfile hosts bench --coll all -b 1M -e 256M -n 50\n"
"  bench --calibrate --csv results/peak.csv\n");
}

static void defaults(bench_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_NONE;
    o->ranks = 4;
    o->iters = 20;
    o->warmup = 5;
    o->check = 1;
    o->seed = 42;
    o->dtype = EPB_DT_F32;
    o->bind = BIND_AUTO;
    snprintf(o->comm, sizeof o->comm, "auto");
    snprintf(o->csv, sizeof o->csv, DEFAULT_CSV);
    o->min_bytes = 64 << 10;
    o->max_bytes = 16 << 20;
    o->factor = 2;
}

static int set_mode(bench_opts_t *o, bench_mode_t m, const char *opt, epb_err_t *err)
{
    if (o->mode != MODE_NONE && o->mode != m)
        return epb_fail(err, EPB_EUSAGE, "%s: only one of --coll, --calibrate may be given", opt);
    o->mode = m;
    return EPB_OK;
}

static int int_opt(const char *name, const char *v, long lo, long hi, int *out, epb_err_t *err)
{
    long l;
    if (epb_parse_int(v, lo, hi, &l))
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected an integer from %ld to %ld", name, v, lo, hi);
    *out = (int)l;
    return EPB_OK;
}

static int size_opt(const char *name, const char *v, uint64_t *out, epb_err_t *err)
{
    if (epb_parse_size(v, out))
        return epb_fail(err, EPB_EUSAGE, "%s '%s': expected a positive size in bytes, e.g. 4096, 64K, 16M, 1G", name, v);
    return EPB_OK;
}

static int read_slowdown(bench_opts_t *o, epb_err_t *err)
{
    const char *s = getenv("EPB_TEST_SLOWDOWN");
    if (!s || !*s) return EPB_OK;
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof o->slow_phase ||
        epb_parse_double(colon + 1, 0, 1000, &o->slow_pct))
        return epb_fail(err, EPB_EUSAGE, "EPB_TEST_SLOWDOWN '%s': expected PHASE:PERCENT, e.g. total:15", s);
    memcpy(o->slow_phase, s, (size_t)(colon - s));
    o->slow_phase[colon - s] = 0;
    return EPB_OK;
}

int bench_parse(int argc, char **argv, bench_opts_t *o, epb_err_t *err)
{
    defaults(o);
    opterr = 0; /* our own messages */
    optind = 1;
    int c, rc = EPB_OK;
    long l;
    while (rc == EPB_OK && (c = getopt_long(argc, argv, ":b:e:f:n:w:c:h", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_COLL:
            if (strcmp(optarg, "all") && !epb_coll_find(optarg))
                return epb_fail(err, EPB_EUSAGE, "--coll '%s': unknown collective (accepted: %s, all)", optarg,
                                epb_coll_names());
            snprintf(o->coll, sizeof o->coll, "%s", optarg);
            rc = set_mode(o, MODE_COLL, "--coll", err);
            break;
        case OPT_CALIBRATE: rc = set_mode(o, MODE_CALIBRATE, "--calibrate", err); break;
        case 'b': rc = size_opt("-b/--min-bytes", optarg, &o->min_bytes, err); o->min_given = 1; break;
        case 'e': rc = size_opt("-e/--max-bytes", optarg, &o->max_bytes, err); o->max_given = 1; break;
        case 'f': rc = int_opt("-f/--step-factor", optarg, 2, 1024, &o->factor, err); break;
        case 'n': rc = int_opt("-n/--iters", optarg, 1, 100000000, &o->iters, err); break;
        case 'w': rc = int_opt("-w/--warmup", optarg, 0, 100000000, &o->warmup, err); break;
        case 'c': rc = int_opt("-c/--check", optarg, 0, 1, &o->check, err); break;
        case OPT_CSV:
            if (!*optarg) return epb_fail(err, EPB_EUSAGE, "--csv: expected a file path");
            if (strlen(optarg) >= sizeof o->csv) return epb_fail(err, EPB_EUSAGE, "--csv: path too long");
            snprintf(o->csv, sizeof o->csv, "%s", optarg);
            o->csv_given = 1;
            break;
        case OPT_RANKS:
            rc = int_opt("--ranks", optarg, 1, 1 << 20, &o->ranks, err);
            o->ranks_given = 1;
            break;
        case OPT_BIND:
            if (!strcmp(optarg, "none")) o->bind = BIND_NONE;
            else if (!strcmp(optarg, "core")) o->bind = BIND_CORE;
            else if (!strcmp(optarg, "numa")) o->bind = BIND_NUMA;
            else return epb_fail(err, EPB_EUSAGE, "--bind '%s': expected none, core or numa", optarg);
            break;
        case OPT_IMBALANCE:
            if (epb_parse_double(optarg, 0, 16, &o->imbalance))
                return epb_fail(err, EPB_EUSAGE, "--imbalance '%s': expected a number from 0 (even) to 16", optarg);
            break;
        case OPT_DTYPE:
            if (epb_dtype_parse(optarg, &o->dtype))
                return epb_fail(err, EPB_EUSAGE, "--dtype '%s': expected f32 or bf16", optarg);
            break;
        case OPT_SEED:
            if (epb_parse_int(optarg, 0, LONG_MAX, &l))
                return epb_fail(err, EPB_EUSAGE, "--seed '%s': expected a non-negative integer", optarg);
            o->seed = (uint64_t)l;
            break;
        case OPT_COMM:
            if (strcmp(optarg, "auto") && strcmp(optarg, "mpi") && strcmp(optarg, "self"))
                return epb_fail(err, EPB_EUSAGE, "--comm '%s': expected auto, mpi or self (built in: %s)", optarg,
                                epb_comm_backends());
            snprintf(o->comm, sizeof o->comm, "%s", optarg);
            break;
        case 'h': o->mode = MODE_HELP; return EPB_OK;
        case OPT_VERSION: o->mode = MODE_VERSION; return EPB_OK;
        case ':':
            return epb_fail(err, EPB_EUSAGE, "%s: missing value (see bench --help)", argv[optind - 1]);
        default:
            if (optopt) return epb_fail(err, EPB_EUSAGE, "-%c: unknown option (see bench --help)", optopt);
            return epb_fail(err, EPB_EUSAGE, "%s: unknown option (see bench --help)", argv[optind - 1]);
        }
    }
    if (rc) return rc;
    if (optind < argc)
        return epb_fail(err, EPB_EUSAGE, "'%s': unexpected argument (options start with -; see bench --help)",
                        argv[optind]);
    if (o->mode == MODE_NONE)
        return epb_fail(err, EPB_EUSAGE, "nothing to run: give --coll NAME (%s, all) or --calibrate (see bench --help)",
                        epb_coll_names());
    if (o->min_bytes > o->max_bytes) {
        char a[32], b[32];
        epb_fmt_size(o->min_bytes, a, sizeof a);
        epb_fmt_size(o->max_bytes, b, sizeof b);
        return epb_fail(err, EPB_EUSAGE, "-b/--min-bytes %s exceeds -e/--max-bytes %s", a, b);
    }
    if (!strcmp(o->comm, "self") && o->ranks_given && o->ranks > 1)
        return epb_fail(err, EPB_EUSAGE, "--comm self runs one rank, but --ranks is %d", o->ranks);
    if (o->mode == MODE_CALIBRATE && !o->ranks_given) o->ranks = 1; /* a per-core ceiling unless asked */
    return read_slowdown(o, err);
}

int bench_validate_files(bench_opts_t *o, epb_err_t *err)
{
    if (!o->csv_given) { /* the default folder is ours to create */
        if (mkdir("results", 0755) && errno != EEXIST)
            return epb_fail(err, EPB_EUSAGE, "--csv %s: cannot create folder results: %s", o->csv, strerror(errno));
    }
    return epb_csv_probe(o->csv, err);
}
