/* epbench report module: reads schema-1 CSV files, groups repetitions into cells, computes the comparisons a
 * design review reads (speedup over agrs, communication share, busbw and TFLOP/s efficiency, weak scaling),
 * the regression verdicts against a baseline, and renders report.md, report.html and gnuplot plots.
 * main.c is the only caller that prints or exits; everything here returns an EPB_* code up. */
#ifndef EPB_REPORT_H
#define EPB_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "epb.h"

#define RP_KEY 512

/* ---- data: load and group (data.c) ---- */

/* One cell: every row (repetition, distinguished by run_id) of one configuration x op x phase, and for coll
 * rows x bytes. Statistics are over repetitions of the per-row values. */
typedef struct {
    char key[RP_KEY];      /* rp_cell_key() */
    char cfg[RP_KEY];      /* rp_config_key(): the configuration without op and phase */
    char hclass[2 * EPB_STR];
    const epb_row_t *row;  /* first row: the configuration fields */
    size_t n;              /* repetitions */
    double *t_med;         /* per-repetition t_med_us [n] */
    double med;            /* median over repetitions of t_med_us, us */
    double p95;            /* median over repetitions of t_p95_us, us */
    double bytes;          /* median bytes */
    double busbw;          /* median busbw_gbps, GB/s */
    double tflops;         /* median tflops (or gflop / time when the row has no tflops) */
} rp_cell_t;

typedef struct {
    epb_row_t *rows;   /* = table.rows */
    size_t nrows;
    epb_rows_t table;  /* the rows read, with the strings they point at */
    rp_cell_t *cells; /* in order of first appearance */
    size_t ncells;
} rp_data_t;

/* Host class: host name without trailing digits (and separators before them), joined with the device name
 * when there is one: "node07" + "NVIDIA H100" -> "node/NVIDIA H100". */
void rp_host_class(const epb_row_t *r, char *buf, size_t n);
/* Configuration key: mode, ranks, nodes, backend, device, experts, top_k, tokens, hidden, ffn, dtype, router,
 * skew, host class. */
void rp_config_key(const epb_row_t *r, char *buf, size_t n);
/* Cell key: configuration key + op + phase (+ bytes for coll rows). */
void rp_cell_key(const epb_row_t *r, char *buf, size_t n);

/* Reads every file (all or nothing) into d; errors are "FILE:LINE: reason" with EPB_EUSAGE. */
int rp_load(rp_data_t *d, char *const *paths, int npaths, epb_err_t *err);
/* Groups rows into cells (called by rp_load; exposed for tests that build rows in memory). */
int rp_group(rp_data_t *d, epb_err_t *err);
void rp_free(rp_data_t *d);
/* The cell of configuration cfg, op and phase (first such cell; coll cells also need bytes, use rp_find_bytes). */
const rp_cell_t *rp_find(const rp_data_t *d, const char *cfg, const char *op, const char *phase);

/* ---- analysis (analyze.c) ---- */

extern const char *const rp_moe_phases[]; /* the 13 phases in DESIGN.md order, NULL-terminated */
int rp_is_comm_phase(const char *phase);
/* The collective a strategy's communication phase corresponds to, or NULL (local, compute phases). */
const char *rp_phase_collective(const char *strategy, const char *phase);

/* Step time of strategy over step time of agrs in the same configuration: >1 means faster than agrs.
 * Returns 0 when either is missing. */
double rp_speedup_over_agrs(const rp_data_t *d, const char *cfg, const char *strategy);
/* Sum of the communication phases' medians over the step median, in [0, 1+]; -1 when there is no step. */
double rp_comm_share(const rp_data_t *d, const char *cfg, const char *strategy);
/* Sum of the communication phases' bytes (per rank, max over ranks as the CSV holds them). */
double rp_comm_bytes(const rp_data_t *d, const char *cfg, const char *strategy);
/* A communication phase's busbw over the busbw mode=coll rows reached for the matching collective, same host
 * class and ranks, at the size nearest (in log scale) to the phase's equivalent buffer bytes*P/(P-1).
 * Returns -1 when there is nothing to compare with; *ref_bytes gets the coll size used. */
double rp_busbw_eff(const rp_data_t *d, const rp_cell_t *phase, double *ref_bytes);
/* The mode=peak op=gemm ceiling (highest median TFLOP/s) on a host class, or 0. */
double rp_peak_tflops(const rp_data_t *d, const char *hclass);
/* A compute phase's TFLOP/s over the gemm ceiling, or -1. */
double rp_flops_eff(const rp_data_t *d, const rp_cell_t *phase);

/* A family: configurations of one mode that differ only in one dimension ("top_k", "experts", "ranks"). */
typedef struct {
    const char *dim;
    size_t n;            /* distinct configurations */
    char (*cfg)[RP_KEY]; /* sorted by the dimension's value */
    double *x;           /* the dimension's value per configuration */
} rp_family_t;
/* The largest family over dim among moe configurations (n >= 2), or n = 0. Free with rp_family_free. */
int rp_largest_family(const rp_data_t *d, const char *dim, rp_family_t *f, epb_err_t *err);
/* Every family over dim (n >= 2 members), in the order of the data, at most max; free each with rp_family_free. */
int rp_families(const rp_data_t *d, const char *dim, rp_family_t *out, int max, int *n, epb_err_t *err);
void rp_family_free(rp_family_t *f);
/* Weak-scaling efficiency t_step(smallest P) / t_step(P) of a strategy along a ranks family, or -1. */
double rp_weak_eff(const rp_data_t *d, const rp_family_t *f, size_t i, const char *strategy);

/* Whether cell i is the first step cell of its moe configuration: the one that stands for it, in data order
 * (the report's sections and the phases_N plots are numbered by these). */
int rp_config_head(const rp_data_t *d, size_t i);
/* Whether configuration cfg has per-phase rows (not just step). */
int rp_has_phases(const rp_data_t *d, const char *cfg);
/* Strategies present in configuration cfg, ordered local, agrs, tp2ep, then others; returns count (<= max). */
int rp_strategies(const rp_data_t *d, const char *cfg, const char **out, int max);

/* ---- regression (regress.c) ---- */

typedef enum { RP_SAME, RP_SLOWER, RP_FASTER, RP_INSUFFICIENT, RP_TOO_SMALL } rp_verdict_t;
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

/* Compares two sample sets (per-repetition t_med_us). stream decorrelates the bootstrap of different cells
 * while keeping each one reproducible. */
int rp_compare(const double *base, size_t nb, const double *now, size_t nn, const rp_rule_t *rule,
               uint64_t stream, rp_cmp_t *out);

typedef struct {
    const rp_cell_t *base, *now;
    rp_cmp_t cmp;
} rp_match_t;
/* Every cell of now with a matching cell in base (same cell key), compared; *nslower counts RP_SLOWER. */
int rp_regress(const rp_data_t *base, const rp_data_t *now, const rp_rule_t *rule, rp_match_t **out,
               size_t *nout, size_t *nslower, epb_err_t *err);

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

#endif
