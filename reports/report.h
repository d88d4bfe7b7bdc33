/* epbench report module: reads schema-1 and schema-2 CSV files, groups repetitions into cells and moe
 * configurations, computes the comparisons a design review reads (step time against the fastest strategy,
 * communication share, wait against transfer, busbw and TFLOP/s efficiency, weak scaling),
 * the regression verdicts against a baseline, and renders report.md, report.html and gnuplot plots.
 * main.c is the only caller that prints or exits; everything here returns an EPB_* code up. */
#ifndef EPB_REPORT_H
#define EPB_REPORT_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "epb.h"

/* Longest key (configuration, cell): every text field of a row can be EPB_STR long and params EPB_PARAMS. */
#define RP_KEY 4096
/* Most strategies and phases one configuration's tables and plots show (the rest are counted, not drawn). */
#define RP_MAXS 32
#define RP_MAXP 48

/* ---- data: load and group (data.c) ---- */

/* A phase's kind (DESIGN.md "Phases"): from the CSV's kind column; rows without one (schema 1) get it from the
 * schema-1 phase names (rp_kind_of_v1). */
typedef enum { RP_COMPUTE, RP_COMM, RP_SYNC, RP_TOTAL } rp_kind_t;
const char *rp_kind_name(rp_kind_t k);
/* The kind of a schema-1 phase name: route compute, sync_counts sync, dispatch/combine/combine_bwd/dispatch_bwd/
 * grad_sync comm, step total, any other compute. Fixed: schema 1 will never gain a phase. */
rp_kind_t rp_kind_of_v1(const char *phase);

/* One cell: every row (repetition, distinguished by run_id) of one configuration x op x params x phase, and for
 * coll and peak rows x bytes. Statistics are over repetitions of the per-row values. Strings are interned in the
 * data's key pool (or the table's), equal texts share one pointer. */
typedef struct {
    const char *key;       /* rp_cell_key() */
    const char *cfg;       /* rp_config_key(): the configuration without op, params and phase */
    const char *hclass;    /* rp_host_class() */
    const char *strategy;  /* the label: op, or op:params with ';' shown as ',' (as --strategy NAME:k=v,... reads) */
    rp_kind_t kind;
    size_t conf;           /* moe: index in confs; (size_t)-1 for other modes */
    const epb_row_t *row;  /* first row: the configuration fields */
    size_t n;              /* repetitions */
    size_t nfail;          /* repetitions whose check is "fail" */
    double *t_med;         /* per-repetition t_med_us [n] */
    double med;            /* median over repetitions of t_med_us, us */
    double p95;            /* median over repetitions of t_p95_us, us */
    double bytes;          /* median bytes */
    double busbw;          /* median busbw_gbps, GB/s */
    double tflops;         /* median tflops (or gflop / time when the row has no tflops) */
    double wait;           /* median wait_us (schema 2; 0 for schema 1 rows), us */
    double hidden;         /* median hidden_us: a comm phase's time in flight behind compute, not in med, us */
} rp_cell_t;

/* A moe configuration: the strategies run on it and the phases they reported, both in order of first
 * appearance in the data (names come from the CSV only). */
typedef struct {
    const char *cfg;
    const rp_cell_t *head;  /* its first cell in data order: the configuration fields for titles */
    size_t nstrat, nphase;  /* all of them; tables and plots show the first RP_MAXS / RP_MAXP */
    const rp_cell_t **strat; /* [nstrat] a cell of each strategy (its op, params and label) */
    const char **phase;      /* [nphase] phase names, the total phase (step) excluded */
    const rp_cell_t **step;  /* [nstrat] the strategy's total (step) cell, or NULL */
    size_t gs, gp;           /* grid dimensions: min(nstrat, RP_MAXS), min(nphase, RP_MAXP) */
    const rp_cell_t **grid;  /* [gs * gp]: strategy s, phase p at s * gp + p; NULL where not measured */
    double *comm_us;         /* [nstrat] sum of the medians of the strategy's comm and sync phases, us */
    double *comm_bytes;      /* [nstrat] sum of their median bytes */
    size_t *ncomm;           /* [nstrat] how many such phases */
    double *comm_wait;       /* [nstrat] sum of the wait medians of its comm phases, us */
    double *comm_only_us;    /* [nstrat] sum of the medians of its comm phases (sync left out), us */
    double *comm_only_bytes; /* [nstrat] sum of their median bytes: the measured token volume (and grad_sync) */
    double *comm_only_model; /* [nstrat] the same phases' model_bytes (the strategy's traffic description on the
                              * run's routing), or -1 when a row lacks it (older schemas) */
    double *phase_us;        /* [nstrat] sum of the medians of all its phases but the step, us */
    size_t *sfail;           /* [nstrat] failed repetitions of the strategy: the most of any of its cells */
    size_t nfail;            /* sum of sfail: a configuration with any failed check is excluded from comparisons */
} rp_conf_t;

/* A string -> index hash map; keys are not copied (they must outlive the map). */
typedef struct rp_map rp_map_t;
#define RP_NONE ((size_t)-1)
size_t rp_map_get(const rp_map_t *m, const char *key); /* RP_NONE when absent */
int rp_map_put(rp_map_t **m, const char *key, size_t val); /* key absent; creates *m; -1 out of memory */
void rp_map_free(rp_map_t *m);

typedef struct {
    epb_row_t *rows;   /* = table.rows */
    size_t nrows;
    epb_rows_t table;  /* the rows read, with the strings they point at */
    rp_cell_t *cells;  /* in order of first appearance */
    size_t ncells;
    rp_conf_t *confs;  /* moe configurations, in order of first appearance */
    size_t nconfs;
    size_t *row_cell;  /* [nrows] the cell of each row */
    size_t nderived;   /* rows whose kind came from the schema-1 phase names */
    size_t nfailrows;  /* rows whose check is "fail" */
    epb_rows_t keys;   /* no rows: its pool holds the keys and labels the cells point at */
    rp_map_t *by_key;  /* cell key -> cell */
    rp_map_t *by_cfg;  /* configuration key -> conf */
    rp_map_t *by_group; /* rp_coll_cells / rp_peak_cells keys -> group */
    size_t *grp_off, *grp_cell; /* group g's cells: grp_cell[grp_off[g] .. grp_off[g+1]) */
} rp_data_t;

/* Host class: host name without trailing digits (and separators before them), joined with the device name
 * when there is one: "node07" + "NVIDIA H100" -> "node/NVIDIA H100". */
void rp_host_class(const epb_row_t *r, char *buf, size_t n);
/* The layer's part of a moe row's params: from the first layer-feature key of docs/CSV.md (model=, scale_down=,
 * shared=, shared_ffn=, gate_before=, route_scale=, groups=, topk_groups=,
 * dispatch_dtype=) to the end; "" when none. */
const char *rp_layer_params(const char *params);
/* Configuration key: mode, ranks, nodes, backend, device, experts, top_k, tokens, hidden, ffn, dtype, router,
 * skew, seed, host class; for coll and peak rows also params (an uneven --imbalance run is its own configuration),
 * for moe rows the layer's params (rp_layer_params: another model or shared experts is another configuration).
 * Text fields are length-prefixed, so no two different rows share a key. */
void rp_config_key(const epb_row_t *r, char *buf, size_t n);
/* Cell key: configuration key + op + params + phase (+ bytes for coll and peak rows). */
void rp_cell_key(const epb_row_t *r, char *buf, size_t n);
/* A strategy's label: op, or op:params with the params' ';' written ',' ("tp2ep:chunks=4,x=1"). */
void rp_strategy_label(const epb_row_t *r, char *buf, size_t n);

/* Reads every file (all or nothing) into d; errors are "FILE:LINE: reason" or "FILE: row N: reason" with
 * EPB_EUSAGE (an unknown kind among them). */
int rp_load(rp_data_t *d, char *const *paths, int npaths, epb_err_t *err);
/* Groups d->rows into cells and configurations (called by rp_load; exposed for tests that build rows in memory:
 * their NULL text fields become ""). Linear in the rows: one key and one hash lookup per row. */
int rp_group(rp_data_t *d, epb_err_t *err);
void rp_free(rp_data_t *d);
/* The moe configuration whose key is cfg, or NULL. O(1). */
const rp_conf_t *rp_conf(const rp_data_t *d, const char *cfg);
/* The cell of configuration cfg, strategy label and phase (moe), or NULL. */
const rp_cell_t *rp_find(const rp_data_t *d, const char *cfg, const char *strategy, const char *phase);
/* The total (step) cell of a strategy label in configuration cfg, or NULL. */
const rp_cell_t *rp_step(const rp_data_t *d, const char *cfg, const char *strategy);

/* The mode=coll cells of collective coll (coll column, else op) on ranks, nodes and host class hclass with bytes
 * and busbw (any params, any size), in data order; *n gets their count. O(1). */
const size_t *rp_coll_cells(const rp_data_t *d, const char *coll, const char *hclass, int ranks, int nodes, size_t *n);
/* The mode=peak op=gemm cells of a host class. */
const size_t *rp_peak_cells(const rp_data_t *d, const char *hclass, size_t *n);

/* ---- analysis (analyze.c) ---- */

/* Whether a kind moves data between ranks (comm or sync): what the communication share adds up. */
int rp_is_comm_kind(rp_kind_t k);

/* Whether a cell is left out of every comparison: a failed check in it, or (moe) in its configuration. */
int rp_cell_failed(const rp_data_t *d, const rp_cell_t *c);

/* The strategy's step time over the fastest strategy's in the same configuration: 1 for the winner; 0 when
 * either is missing or the configuration has a failed check. */
double rp_vs_fastest(const rp_data_t *d, const char *cfg, const char *strategy);
/* The fastest strategy's step cell of a configuration, or NULL (none, or a failed check in the configuration). */
const rp_cell_t *rp_fastest(const rp_data_t *d, const char *cfg);
/* Sum of the comm and sync phases' medians over the sum of all the strategy's phase medians: a true share (each
 * phase time is a maximum over ranks, so the phases need not add up to the step and a share of the step can pass
 * 100%); -1 when there is no such phase. */
double rp_comm_share(const rp_data_t *d, const char *cfg, const char *strategy);
/* Sum of the comm and sync phases' bytes (per rank, max over ranks as the CSV holds them). */
double rp_comm_bytes(const rp_data_t *d, const char *cfg, const char *strategy);
/* A comm phase's busbw over the busbw the mode=coll rows of the collective it ran (its coll column, one
 * collective) reached, same host class, ranks and nodes, at the size nearest (in log scale) to the phase's
 * equivalent buffer bytes*P/(P-1) (the best such row at that size). -1 when there is nothing to compare with
 * (schema-1 rows name no collective); *ref_bytes gets the coll size used. */
double rp_busbw_eff(const rp_data_t *d, const rp_cell_t *phase, double *ref_bytes);
/* The same, and *ref (may be NULL) gets the coll cell compared with (its params say which run it was). */
double rp_busbw_ref(const rp_data_t *d, const rp_cell_t *phase, double *ref_bytes, const rp_cell_t **ref);
/* The mode=peak op=gemm ceiling (highest median TFLOP/s) on a host class, or 0. */
double rp_peak_tflops(const rp_data_t *d, const char *hclass);
/* A compute phase's TFLOP/s over the gemm ceiling measured under the same BLAS threads per rank (device_name's
 * "threads=") and ranks per node (ranks/nodes) as the phase's run, or -1. When there is a ceiling on the host
 * class but none that matches, why (into why, may be NULL; "" otherwise). */
double rp_flops_eff(const rp_data_t *d, const rp_cell_t *phase);
double rp_flops_eff_why(const rp_data_t *d, const rp_cell_t *phase, double *peak, char *why, size_t n);
/* BLAS threads per rank from a device_name ("...; threads=T"), or 0 when it does not say. */
int rp_threads_of(const char *device_name);

/* The token volume (comm phases, fwd+bwd, per rank, bytes) that strategy s's traffic description expects for
 * configuration f (the CSV's model_bytes, from the strategy's own file through the registry: no list of names
 * here), next to comm_only_bytes, what the wire carried; -1 when the rows do not carry it (schema 1 and 2). */
double rp_volume_model(const rp_conf_t *f, size_t s);


/* A family: configurations of one mode that differ only in one dimension ("top_k", "experts", "ranks"). */
typedef struct {
    const char *dim;
    size_t n;            /* distinct configurations */
    const char **cfg;    /* sorted by the dimension's value (interned configuration keys) */
    double *x;           /* the dimension's value per configuration */
} rp_family_t;
/* The largest family over dim among moe configurations (n >= 2), or n = 0. Free with rp_family_free. */
int rp_largest_family(const rp_data_t *d, const char *dim, rp_family_t *f, epb_err_t *err);
/* Every family over dim (n >= 2 members), in the order of the data, at most max; free each with rp_family_free. */
int rp_families(const rp_data_t *d, const char *dim, rp_family_t *out, int max, int *n, epb_err_t *err);
void rp_family_free(rp_family_t *f);
/* Weak-scaling efficiency t_step(smallest P) / t_step(P) of a strategy along a ranks family, or -1 (also when
 * either configuration has a failed check). */
double rp_weak_eff(const rp_data_t *d, const rp_family_t *f, size_t i, const char *strategy);

/* ---- regression (regress.c) ---- */

typedef enum { RP_SAME, RP_SLOWER, RP_FASTER, RP_INSUFFICIENT, RP_TOO_SMALL, RP_NVERDICTS } rp_verdict_t;
const char *rp_verdict_name(rp_verdict_t v);

typedef struct {
    double min_effect;  /* 0.05: slower only when the whole CI lies above 1 + min_effect */
    double min_abs_us;  /* 0.5: and the medians differ by at least this much (timer-resolution floor) */
    double noise_mult;  /* 1: the effect must also exceed noise_mult x the baseline's robust CV (MAD-based) */
    int resamples;      /* 2000 */
    uint64_t seed;      /* bootstrap seed, fixed so verdicts are reproducible */
    double level;       /* 0.95 */
} rp_rule_t;
rp_rule_t rp_rule_default(void);

typedef struct {
    rp_verdict_t verdict;
    size_t nb, nn;         /* samples per side */
    double med_b, med_n;   /* medians, us */
    double ratio;          /* med_n / med_b */
    double lo, hi;         /* bootstrap CI of the ratio */
    double noise;          /* robust CV of the baseline samples: 1.4826 MAD / median */
    double effect;         /* the threshold used: max(min_effect, noise_mult * noise) */
} rp_cmp_t;

/* The percentile-bootstrap interval (rule->level, rule->resamples, rule->seed) of median(now) / median(base) over
 * resamples of each side: the one bootstrap of the regression rule and of the report's verdict. */
int rp_ratio_ci(const double *base, size_t nb, const double *now, size_t nn, const rp_rule_t *rule, uint64_t stream,
                double *lo, double *hi);

/* Compares two sample sets (per-repetition t_med_us). stream decorrelates the bootstrap of different cells
 * while keeping each one reproducible. */
int rp_compare(const double *base, size_t nb, const double *now, size_t nn, const rp_rule_t *rule,
               uint64_t stream, rp_cmp_t *out);

typedef struct {
    const rp_cell_t *base, *now;
    rp_cmp_t cmp;
} rp_match_t;
/* Every cell of now with a matching cell in base (same cell key), compared; *nslower counts RP_SLOWER. Cells with a
 * failed check on either side (rp_cell_failed) are left out. */
int rp_regress(const rp_data_t *base, const rp_data_t *now, const rp_rule_t *rule, rp_match_t **out,
               size_t *nout, size_t *nslower, epb_err_t *err);
/* counts[v]: how many of the n matches got verdict v. */
void rp_verdict_counts(const rp_match_t *m, size_t n, size_t counts[RP_NVERDICTS]);
/* Whether nothing was compared: no match is same, slower or faster (none matched, or every match is below the
 * timer floor or has too few samples). A comparison that guards nothing must never read as "no regression". */
int rp_nothing_compared(const size_t counts[RP_NVERDICTS]);

/* The verdict of one configuration: strategies ranked by step time, each one's ratio to the fastest with a
 * bootstrap interval over repetitions (rp_ratio_ci; analyze.c). */
typedef struct {
    size_t s;         /* strategy index in the configuration */
    const rp_cell_t *step;
    double ratio;     /* median step / the fastest's */
    double lo, hi;    /* 95% bootstrap interval of the ratio; 0 when a side has one repetition */
    int same;         /* the interval holds 1: no significant difference from the fastest */
} rp_rank_t;
/* Fills rank[0..*n) (room for conf->nstrat) in ascending step time; strategies without a step are left out. */
int rp_rank_conf(const rp_data_t *d, const rp_conf_t *f, const rp_rule_t *rule, rp_rank_t *rank, size_t *n);

/* ---- document: one content, two renderings (doc.c) ---- */

typedef struct rp_doc rp_doc_t;
rp_doc_t *rp_doc_new(void);
void rp_doc_free(rp_doc_t *doc);
/* Builders never fail: an allocation failure is remembered and reported by the writers (EPB_ESYS). */
void rp_doc_heading(rp_doc_t *doc, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rp_doc_para(rp_doc_t *doc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rp_doc_table(rp_doc_t *doc, int ncols, const char *const *header);
/* Appends a cell to the last table, row after row. */
void rp_doc_cell(rp_doc_t *doc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A plot: name is the file stem under plots/ (name.svg, name.png). */
void rp_doc_image(rp_doc_t *doc, const char *name, const char *caption);
int rp_doc_write_md(const rp_doc_t *doc, const char *path, epb_err_t *err);
/* dir is where plots/NAME.svg lie, to inline them. */
int rp_doc_write_html(const rp_doc_t *doc, const char *dir, const char *path, epb_err_t *err);

/* ---- the report's content (tables.c) ---- */

typedef struct {
    const rp_match_t *matches; /* NULL when no baseline */
    size_t nmatches;
    const rp_rule_t *rule;
    const char *base_name;
} rp_regress_view_t;

/* Appends every section to doc; plots lists the plot stems that were drawn (NULL-terminated, may be empty). */
void rp_tables(rp_doc_t *doc, const rp_data_t *d, const rp_regress_view_t *rv, const char *const *plots);

/* ---- plots (plots.c) ---- */

typedef struct {
    const char *gnuplot;   /* program path, or NULL: no plots */
    const char *plots_dir; /* where the .gp scripts are */
} rp_plot_opts_t;

/* Writes the data files under dir/plots/ and, when gnuplot is set, runs the scripts into SVG and PNG.
 * hist (may be NULL: d is used) holds the rows of the history plot, for example the nightly history CSV.
 * names receives the stems drawn (up to max, NULL-terminated). A gnuplot failure is EPB_ESYS. */
int rp_plots(const rp_data_t *d, const rp_data_t *hist, const char *dir, const rp_plot_opts_t *o, char names[][64], int max,
             int *nnames, epb_err_t *err);

/* gnuplot's -e program: typed assignments only, text reduced to a safe character set (plots.c). */
typedef struct {
    char buf[2048];
    size_t len;
    int over;
} rp_gpvars_t;
void rp_gv_int(rp_gpvars_t *v, const char *name, long x);
/* A string variable: the text reduced to letters, digits, blank and _ . , : = + - / ( ) %, single-quoted. */
void rp_gv_str(rp_gpvars_t *v, const char *name, const char *text);
/* A data file's text field: the same reduced text, double-quoted. */
void rp_dat_text(FILE *f, const char *text);
/* Runs gnuplot on the plot script (in o->plots_dir) in dir/plots with name.dat, for SVG then PNG, with the
 * variables of v; fails (EPB_ESYS) when gnuplot fails or leaves an empty output, EPB_EUSAGE without the script. */
int rp_run_gnuplot(const rp_plot_opts_t *o, const char *script, const char *dir, const char *name, const rp_gpvars_t *v,
                   epb_err_t *err);

/* Finds an executable on PATH; returns 0 and fills buf, or -1. */
int rp_which(const char *prog, char *buf, size_t n);

/* ---- output directory: build in a sibling temporary, then rename into place (outdir.c) ---- */

/* Creates a temporary directory next to final (same file system); tmp gets its path. */
int rp_outdir_begin(const char *final, char *tmp, size_t n, epb_err_t *err);
/* Moves tmp to final atomically. An existing final must be a previous report (holds report.md); it is
 * replaced. Anything else is refused (EPB_EUSAGE) and tmp removed. */
int rp_outdir_commit(const char *tmp, const char *final, epb_err_t *err);
/* Removes the temporary tree (after a failure). */
void rp_outdir_abort(const char *tmp);
/* Closes a file written into it: EPB_ESYS "PATH: write failed: reason" (a full disk: "No space left on device")
 * when any write, the last flush or the close failed. */
int rp_close_output(FILE *f, const char *path, epb_err_t *err);

/* ---- the projection: cluster files (cluster.c), the cost model and `report --project` (project.c) ----
 * docs/METHOD.md defines every term; docs/CLUSTER.md the file format. */

#define RP_CLUSTER_FORMAT "epbench-cluster-1"
#define RP_MAXPTS 32
enum { RP_CO_ALLTOALL, RP_CO_ALLGATHER, RP_CO_REDUCE_SCATTER, RP_CO_ALLREDUCE, RP_NCO };
extern const char *const rp_co_names[RP_NCO];
/* One collective at one level: t(B) = lat_us + B / bw_gbps for B bytes a rank sends to other ranks (the CSV's
 * bytes), or, when points are given (a calibration), t interpolated linearly between the measured (B, us) points
 * (the first point's time below it, the last point's time plus (B - B_last) / bw above it). */
typedef struct {
    double lat_us, bw_gbps;
    int npoints;
    double pt_bytes[RP_MAXPTS], pt_us[RP_MAXPTS];
} rp_link_t;
typedef struct {
    char name[128];
    char host_class[256]; /* a calibration's host class (optional "host_class"): measured steps compare with it */
    int gpus_per_node; /* ranks per node */
    int elem_bytes;    /* bytes of one token element on the wire and in memory (bf16 2, f32 4) */
    double copy_gbps;  /* memory copy rate per rank (bytes copied per second: each is read and written) */
    double overhead_us; /* fixed cost of each compute phase (kernel launches) */
    double gemm_tflops; /* the GEMM peak per rank */
    int ncurve;         /* its efficiency by rows M: curve_eff[i] of the peak at curve_m[i] rows */
    double curve_m[RP_MAXPTS], curve_eff[RP_MAXPTS];
    /* optional "experts": the experts' own ops (forward, backward) at xcurve_m[i] rows per expert, as a share of
     * gemm_tflops (a calibration's experts_fwd/experts_bwd rows); nxcurve 0: the experts run at the GEMM curve */
    int nxcurve;
    double xcurve_m[RP_MAXPTS], xcurve_eff[2][RP_MAXPTS];
    rp_link_t intra[RP_NCO], inter[RP_NCO]; /* inter: the bytes a rank sends to other nodes, through its NIC */
    char link_src[2][256]; /* rp_cluster_write: the source written for each level */
    long cal_kn[2];        /* rp_cluster_write: a calibration's GEMM K and N (the experts' D and F) */
} rp_cluster_t;
/* EPB_EUSAGE "PATH: FIELD: reason" (missing, wrong type, out of range, not JSON). */
int rp_cluster_load(const char *path, rp_cluster_t *c, epb_err_t *err);
/* Writes c (with link_src) to path atomically; source says where the numbers come from. */
int rp_cluster_write(const char *path, const rp_cluster_t *c, const char *source, epb_err_t *err);
/* The cluster file of d's mode=peak rows (one host class; EPB_EUSAGE when none or several). */
int rp_calibration_cluster(const rp_data_t *d, rp_cluster_t *c, char *hclass, size_t n, epb_err_t *err);

/* One MoE configuration as the model sees it. */
typedef struct {
    char spec[128];    /* the strategy and its parameters in bench's syntax ("tp2ep:chunks=4", "hier:node_size=8");
                        * node_size 0 (the default): the cluster's node */
    long T, D, F, E, k, shared, shared_ffn;
    int groups, topk_groups; /* group-limited routing (groups 1: none) */
    int dispatch_fp8;        /* dispatch_dtype=fp8: the dispatched rows are FP8 rows (moe_fp8_row_bytes) */
    double capacity_factor;  /* > 0: an expert capacity (moe_capacity of each rank's T); 0 none */
    int pad_to_capacity;     /* pad_to_capacity=1: the exchange's blocks padded to the capacity */
    int redundant_per_rank;  /* redundant experts per rank (redundant=R of P ranks: R/P), kept per rank at any P */
    int P;
    double gamma; /* routing skew: expert e gets a share ~ (e+1)^-gamma of the pairs (capped at 1/k) */
} rp_mcfg_t;
/* A phase's predicted time (us) and the bytes or FLOPs that made it. */
typedef struct {
    double t_us[RP_MAXP];        /* the most any rank spends in the phase (a comm or sync phase: its wait too) */
    double wait_us[RP_MAXP];     /* the longest wait of a rank for the last one, in comm and sync phases */
    double bytes[RP_MAXP];       /* comm: the most bytes one rank sends to other ranks (the CSV's bytes column) */
    double bytes_intra[RP_MAXP]; /* the busiest rank's max(sent, received) inside its node, summed over the calls */
    double bytes_inter[RP_MAXP]; /* ... and to other nodes */
    double gflop[RP_MAXP];       /* the busiest rank's */
    double step_us;              /* the critical path: the last rank's end */
} rp_pred_t;
/* the model's phases, in the CSV's order (moe_phase_names) */
extern const char *const *const rp_model_phases;
extern const int rp_model_nphases;
/* One collective (an RP_CO_*) of nominal size bytes as nccl-tests counts it (the gathered buffer for allgather, the
 * send buffer for reduce_scatter and alltoall, the buffer for allreduce) on P ranks of cl, us. */
double rp_coll_time(const rp_cluster_t *cl, int co, double bytes, int P);
/* Predicts every phase of c on cluster cl from its strategy's traffic description (the registry); EPB_EUSAGE for
 * an unknown strategy or parameter, one without a description, or sizes the model does not take. */
int rp_model(const rp_cluster_t *cl, const rp_mcfg_t *c, rp_pred_t *out, epb_err_t *err);

typedef struct {
    const char *cluster_path;
    const char *out;        /* directory (report.md, report.html, projection.csv, plots/) or NULL: stdout only */
    const char *validation; /* the recorded validation (JSON) or NULL */
    const char *gnuplot;    /* NULL: no plot */
    const char *plots_dir;
} rp_project_opts_t;
int rp_project(const rp_data_t *d, const rp_project_opts_t *o, epb_err_t *err);

#endif
