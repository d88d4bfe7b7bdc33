/* bench/: the `bench` program. Private header shared by its files. */
#ifndef EPB_BENCH_H
#define EPB_BENCH_H

#include <limits.h>
#include <stdint.h>

#include "collectives.h"
#include "epb.h"

typedef enum { MODE_NONE, MODE_COLL, MODE_MOE, MODE_CALIBRATE, MODE_HELP, MODE_VERSION, MODE_LIST } bench_mode_t;
typedef enum { BIND_AUTO, BIND_NONE, BIND_CORE, BIND_NUMA } bind_mode_t;
typedef enum { BENCH_DEV_CPU, BENCH_DEV_CUDA } bench_device_t;

#define BENCH_MAX_LIST 16 /* values in one comma list */

/* The resolved configuration: plain data (no pointers), validated once on rank 0 and broadcast byte for byte,
 * so ranks can never disagree. */
typedef struct {
    bench_mode_t mode;
    /* common */
    int ranks, ranks_given;
    int iters, warmup, check;
    int iters_given, warmup_given; /* -n / -w given: MoE runs below BENCH_DECODE_T tokens then keep them */
    uint64_t seed;
    epb_dtype_t dtype;
    bind_mode_t bind;
    int device, device_given; /* bench_device_t: where the layer runs and the data buffers live */
    char comm[16];
    char csv[PATH_MAX];
    int csv_given;
    /* coll */
    char coll[32];
    uint64_t min_bytes, max_bytes;
    int factor;
    int min_given, max_given;
    double imbalance;
    int coll_opt_given; /* -b, -e, -f or --imbalance given (refused outside --coll) */
    /* moe */
    char strategies[BENCH_MAX_LIST][64]; /* canonical "NAME:key=val,..." (moe_spec_format) */
    int nstrategies;
    long experts[BENCH_MAX_LIST], top_k[BENCH_MAX_LIST], tokens[BENCH_MAX_LIST], hidden[BENCH_MAX_LIST],
        ffn[BENCH_MAX_LIST];
    int nexperts, ntop_k, ntokens, nhidden, nffn;
    long cal_hidden, cal_ffn; /* --calibrate --hidden D --ffn F: its GEMMs' K and N, its experts' D and F (0: 1024) */
    int router;      /* moe_router_t */
    int route_norm;
    double skew, bias_coeff, lr;
    int train;       /* steps; 0 = benchmark */
    char dump[PATH_MAX];
    char loss_csv[PATH_MAX];
    char per_rank[PATH_MAX];  /* every rank's own phase times per iteration, CSV ("" = none) */
    /* published models and their layer features (issue 14); a preset fills what was not given */
    char model[32];           /* --model: a moe_models[] name ("" = none) */
    int list_models;          /* --model list: MODE_LIST prints the presets */
    int scale_down;           /* --scale-down: D, F and the shared FFN divided by it (1 = none) */
    int router_given, route_scale_given, shared_given, shared_ffn_given;
    double route_scale;
    int groups, topk_groups;  /* 0 = not given */
    int gate_before;
    int shared;
    long shared_ffn;          /* 0 = the expert FFN size (after --scale-down) */
    /* launching */
    int oversubscribe;        /* --oversubscribe: more local ranks than the sane bound are meant */
    char hostfile[PATH_MAX];  /* --hostfile: passed to mpirun when bench launches itself */
    double timeout_s;         /* --timeout: seconds one collective call may take before the job ends (0: off) */
    int quiet;                /* --quiet: no progress on stderr */
    char json[PATH_MAX];      /* -J/--json: nccl-tests JSON of a --coll run ("" = none) */
    int dry_run;              /* --dry-run: validate everything a run would (options, sweep, files), run nothing */
    int dispatch_fp8;         /* --dispatch-dtype fp8 (0: the activation dtype) */
    double capacity[BENCH_MAX_LIST]; /* --capacity-factor LIST (0: no expert capacity; one 0 by default) */
    int ncapacity;
    int drop_policy, drop_policy_given; /* --drop-policy (moe_drop_t; probs) */
    int pad_to_capacity;      /* --pad-to-capacity */
    long redundant[BENCH_MAX_LIST]; /* --redundant LIST (0: none; one 0 by default) */
    int nredundant;
    int decode;               /* --decode: decode-size batches (--tokens 1..BENCH_DECODE_T, default 1,2,4..256) */
} bench_opts_t;

/* Test-only hooks, read by every rank from its own environment (mpirun passes it on), never part of the broadcast
 * configuration:
 *   EPB_TEST_SLOWDOWN=PHASE:PERCENT  busy-wait PERCENT of the phase's own time inside it: a MoE phase, `step`
 *                                    (after the last phase), or `total` (--coll, --calibrate)
 *   EPB_TEST_DELAY=PHASE:MS[:RANK]   busy-wait MS milliseconds at the end of a MoE phase, on RANK or every rank */
typedef struct {
    char slow_phase[32];
    double slow_pct;
    char delay_phase[32];
    double delay_ms;
    int delay_rank;
} bench_hooks_t;
/* EPB_EUSAGE naming the variable when one is malformed or names no phase of mode's. */
int bench_hooks_read(bench_hooks_t *h, bench_mode_t mode, epb_err_t *err);

/* opts.c */
/* Decode-size runs (issue 22): below this many tokens per rank a MoE configuration's default iterations are
 * BENCH_DECODE_ITERS timed after BENCH_DECODE_WARMUP (instead of -n 20 -w 5): its phases last microseconds, and
 * the median and p95 of 20 samples of a latency-bound step move with the scheduler. --decode sweeps 1, 2, 4, ...
 * up to this many tokens per rank. */
#define BENCH_DECODE_T 256
#define BENCH_DECODE_ITERS 100
#define BENCH_DECODE_WARMUP 10
/* The timed and warm-up iterations of a MoE configuration of T tokens per rank: -n and -w where given, else the
 * defaults above (T < BENCH_DECODE_T) or o->iters, o->warmup. */
int bench_moe_iters(const bench_opts_t *o, long T, int *warmup);
/* Parses argv into o. Returns EPB_OK, or EPB_EUSAGE with a one-line message naming the option and the
 * accepted values. Does not touch the file system. */
int bench_parse(int argc, char **argv, bench_opts_t *o, epb_err_t *err);
/* Checks that need the file system (the CSV path): rank 0 only. May create the default results/ folder. */
int bench_validate_files(bench_opts_t *o, epb_err_t *err);
void bench_usage(FILE *f);

/* launch.c */
/* When started by hand with --ranks N > 1: runs this program under mpirun with N ranks, waits, and returns the
 * job's exit code with *launched set (err then holds bench's line when it has one to add: a rank lost, mpirun
 * failing, an interruption). Otherwise returns EPB_OK, or the reason it cannot launch (EPB_EUSAGE...), *launched 0. */
int bench_self_launch(const bench_opts_t *o, int argc, char **argv, int *launched, epb_err_t *err);
/* What bench_self_launch refuses before it launches (no MPI in the build, too many ranks for this host, an unreadable
 * hostfile): EPB_EUSAGE, or EPB_OK (also under a launcher and for one rank). */
int bench_launch_check(const bench_opts_t *o, epb_err_t *err);
/* This host's physical cores (as mpirun counts slots), at least 1. */
int bench_core_count(void);
/* Set by a self-launching bench whose stderr is a terminal: rank 0 redraws its progress line through mpirun. */
#define BENCH_PROGRESS_TTY_ENV "EPB_PROGRESS_TTY"
/* Under a launcher, before MPI_Init: EPB_ESYS with the reason and the hint when MPI cannot start here (Open MPI
 * under srun without PMIx). */
int bench_mpi_startable(epb_err_t *err);
/* "; under Slurm use srun --mpi=pmix" when SLURM_* variables are set and no PMIX_* one, else "" */
const char *bench_mpi_hint(void);

/* watchdog.c: --timeout, and the per-node heartbeat table (a file in /dev/shm or $EPB_HEARTBEAT_DIR) in which every rank's counting
 * wrappers record each call's entry and exit, its collective and the MoE phase open */
enum { BENCH_WD_DATA, BENCH_WD_CTL, BENCH_WD_NCHAN }; /* the wrapped communicators ("channels") */
#define BENCH_LAUNCHER_ENV "EPB_LAUNCHER_ID" /* "host-pid" of a self-launching bench, set for its ranks */
typedef struct bench_watchdog bench_watchdog_t;
/* Collective over ctl (the raw control communicator): removes this node's tables of dead jobs, sets up this job's
 * (local rank 0 creates it), registers this rank, and starts the watchdog thread when timeout_s > 0. Without
 * /dev/shm the rank keeps a private slot and still has its watchdog (which then cannot name the ranks missing). */
int bench_watchdog_start(bench_watchdog_t **wd, double timeout_s, epb_comm_t *ctl, epb_err_t *err);
/* *out: c wrapped (owned: destroying *out destroys c) so that its calls are recorded on channel chan */
int bench_watchdog_wrap(bench_watchdog_t *wd, epb_comm_t *c, int chan, epb_comm_t **out, epb_err_t *err);
/* Outside the measured path: what the job is doing, for the report ("--coll alltoall 1M"); the run's open phase
 * (&run->m.open; NULL when no run); hold 1 while the calls waited in wait for one rank's long solo work (rank 0's
 * single-device check), which is not a hang whatever its length. */
void bench_watchdog_mode(bench_watchdog_t *wd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_watchdog_phase(bench_watchdog_t *wd, const int *open_phase);
void bench_watchdog_hold(bench_watchdog_t *wd, int on);
/* A call that is no communicator's (the data communicator's set-up, MPI_Finalize) recorded on chan: entering 1
 * before it, 0 after. */
void bench_watchdog_call(bench_watchdog_t *wd, int chan, const char *what, int entering);
/* This rank has said why it fails (before MPI_Abort): the launcher need not name it. */
void bench_watchdog_failed(bench_watchdog_t *wd);
/* Stops the thread; this rank has ended; the node's last rank to end removes the table. NULL is a no-op. */
void bench_watchdog_stop(bench_watchdog_t *wd);
/* The launcher's side: its key ("host-pid" of this process), and after the job, what the table of this node says
 * of each rank registered there (up to max; returns how many), the table then removed. */
typedef struct {
    int rank, pid;
    int ended;  /* it said it ended (normally, or with its own message) */
    int alive;  /* its process still exists */
    int inside; /* in its last call when last seen */
    char phase[32], coll[48], comm[32]; /* its last call: "dispatch", "alltoallv" or "wait (after alltoallv)", "the
                                         * data communicator" */
} bench_hb_rank_t;
void bench_hb_launcher_key(char *buf, size_t n);
int bench_hb_take(const char *key, bench_hb_rank_t *out, int max);
int bench_hb_possible(void); /* whether tables can be made here (/dev/shm is writable) */

/* topo.c: host, nodes, CPU model and the binding in force, from hwloc */
typedef enum { BOUND_NONE, BOUND_CORE, BOUND_NUMA, BOUND_OTHER } bound_kind_t;
typedef struct {
    char host[64];
    char cpu_model[96];
    int cores, pus, numa_nodes;
    bound_kind_t bound; /* the binding in force, read back from the OS after binding */
    int bound_index;    /* the core or NUMA node, -1 otherwise */
    char cpuset[64];    /* its CPUs, e.g. "1" or "0-1" */
} bench_topo_t;
/* Reads the topology and applies the binding. gpu: the CUDA device the rank will use, -1 for none. BIND_AUTO,
 * unless the launcher has bound the rank already: a rank with a GPU on the CPUs near it (when the GPU reports its
 * locality); otherwise one core per rank when a node runs several ranks, none for a lone rank, so its BLAS threads
 * can spread. BIND_CORE/BIND_NUMA pick among the CPUs near the GPU when it has them. Call before any CUDA or NCCL
 * set-up, so that their threads start on these CPUs. */
int bench_topo_init(bench_topo_t *t, bind_mode_t bind, int local_rank, int local_size, int gpu, epb_err_t *err);
/* The device_name column: CPU model, cores and the binding in force over all ranks ("bind=core" when every
 * rank is pinned to one core, "bind=core x2" when two ranks share each core, "bind=none"...). */
int bench_topo_summary(const bench_topo_t *t, epb_comm_t *ctl, char *out, size_t n, epb_err_t *err);
const char *bench_hwloc_version(void);

/* progress.c: where a sweep is, on rank 0's stderr (see the file) */
typedef struct {
    int on, tty;       /* rank 0 without --quiet; stderr is a terminal (a line redrawn) */
    int i, n;          /* the configuration (0-based) of n */
    char what[128];    /* "tp2ep k=2" */
    double t0, last;   /* the sweep's start; the last redraw (us) */
    int drawn;         /* a partial line is on the terminal */
} bench_progress_t;
void bench_progress_begin(bench_progress_t *p, int on, int n);
void bench_progress_config(bench_progress_t *p, int i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* it of iters timed iterations done (between iterations, outside the timed region) */
void bench_progress_iter(bench_progress_t *p, int it, int iters);
void bench_progress_end(bench_progress_t *p);

/* run.c: shared by every mode */
typedef struct {
    const bench_opts_t *o;
    bench_hooks_t hooks; /* this rank's test-only hooks */
    epb_comm_t *ctl;  /* host control communicator: config, timings, check counts */
    epb_comm_t *data; /* the communicator under test */
    bench_topo_t topo;
    bench_watchdog_t *wd; /* --timeout and the heartbeat table (NULL: none) */
    epb_row_t base;   /* run-wide columns filled once (run_id, utc, git_rev, host, nodes, backend, device...) */
    int failed_checks;
    /* the text base points at */
    char run_id[EPB_STR], utc[EPB_STR], host[64], device_name[EPB_STR];
    char hosts[EPB_HOSTS + 1]; /* every host of the job in rank order, ';'-joined (shortened past EPB_HOSTS) */
    double clock_offset_us;    /* epb_now_us() + this = the job clock (rank 0's) */
    bench_progress_t progress; /* rank 0's progress line */
} bench_ctx_t;

/* The job-wide clock, us: this rank's monotonic clock moved onto rank 0's (epb_clock_offset). */
static inline double bench_job_now(const bench_ctx_t *b) { return epb_now_us() + b->clock_offset_us; }

/* topo: this rank's topology and binding, from bench_topo_init (done before the data communicator); wd: the
 * watchdog (NULL: none), which sees the set-up's calls too */
int bench_ctx_init(bench_ctx_t *b, const bench_opts_t *o, epb_comm_t *ctl, epb_comm_t *data, const bench_topo_t *topo,
                   bench_watchdog_t *wd, epb_err_t *err);
/* Max over ranks of per-iteration times (in place, n samples), then statistics into the row. */
int bench_reduce_times(bench_ctx_t *b, double *t_us, int n, epb_stats_t *st);
/* This rank's wait per sample: from its arrival arr[i] (job clock) to the last rank's arrival at sample i. n
 * samples taken alike on every rank. Collective. */
int bench_waits(bench_ctx_t *b, const double *arr, double *wait, size_t n, epb_err_t *err);
/* The critical path of n samples taken alike on every rank (sample i is the same iteration and phase everywhere):
 * t[i] becomes the maximum over ranks and wait[i] (this rank's wait in sample i on entry) the wait of the rank
 * that took it. Collective. */
int bench_critical(bench_ctx_t *b, double *t, double *wait, size_t n, epb_err_t *err);
/* The strategy registry for --help and --strategy list: name, description, parameters. */
void bench_list_strategies(FILE *f, const char *indent);
/* What MODE_LIST prints: the presets with their parameters (--model list) or the strategies (--strategy list). */
void bench_list(FILE *f, const bench_opts_t *o);
/* Busy-waits the test-only slowdown for `phase` when EPB_TEST_SLOWDOWN names it; elapsed_us is the phase's
 * own measured time so far. */
void bench_maybe_slow(const bench_ctx_t *b, const char *phase, double elapsed_us);
/* Every rank's host and device (the header lists them, -J writes them): gathered in rank order into *out on
 * rank 0 (malloc'd, P entries; NULL elsewhere). Collective. Moved as int64 words: 192 bytes. */
typedef struct {
    int32_t rank, pid;
    char host[64];
    char device[120]; /* "cpu core 3", "cpu cpus 0-1", "cpu unbound", "cuda 0 NVIDIA H100" */
} bench_rank_desc_t;
int bench_rank_descs(bench_ctx_t *b, bench_rank_desc_t **out, epb_err_t *err);
/* Prints them as "#  Rank  0 Pid   1234 on node01 device cpu core 0" lines (rank 0). */
void bench_print_ranks(const bench_rank_desc_t *d, int P);
/* Rank 0 appends rows to the CSV. */
int bench_write_rows(bench_ctx_t *b, const epb_row_t *rows, size_t n, epb_err_t *err);

/* coll.c, calibrate.c */
int bench_coll_plan(const bench_opts_t *o, int P, uint64_t *sizes, int max, int *n, epb_err_t *err);
int bench_run_coll(bench_ctx_t *b, epb_err_t *err);
/* moe.c: every configuration of the sweep checked (sizes, divisibility over P ranks, memory) before any runs */
int bench_moe_plan(const bench_opts_t *o, int P, epb_err_t *err);
int bench_run_moe(bench_ctx_t *b, epb_err_t *err);
int bench_run_calibrate(bench_ctx_t *b, epb_err_t *err);
/* The moe library's backend of this run: cuda on the data communicator's GPU and stream (--device cuda, --dtype), or
 * cpu. (struct moe_backend: moe/ops.h; bench.h does not include the moe headers.) */
struct moe_backend;
int bench_backend_create(bench_ctx_t *b, struct moe_backend **be, epb_err_t *err);

#endif
