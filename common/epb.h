/* epbench common module: exit codes, error reporting, statistics, size parsing, bandwidth formulas,
 * seeded values, bfloat16 conversion and the CSV writer/reader (schema 5; schemas 1 to 4 read).
 * Shared by bench/, collectives/, moe/ and reports/; it depends on nothing but libc and libm. */
#ifndef EPB_COMMON_H
#define EPB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- exit codes (DESIGN.md "Contracts") ---- */
enum {
    EPB_OK = 0,     /* success */
    EPB_ECHECK = 1, /* a correctness check failed, or a regression was found */
    EPB_EUSAGE = 2, /* bad usage or input; the message names the option or file */
    EPB_ESYS = 3,   /* runtime/system failure (MPI, CUDA, out of memory) */
};

/* Library code formats its error into a caller-owned buffer and returns one of the codes above; only main()
 * prints and exits. */
#define EPB_ERRLEN 512
typedef struct {
    char msg[EPB_ERRLEN];
} epb_err_t;

/* Writes the message into err (if non-NULL) and returns code, so `return epb_fail(err, EPB_EUSAGE, ...)`. */
int epb_fail(epb_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- files and printed text (files.c) ---- */
/* s as one line a terminal shows as it is: every C0 control byte and DEL becomes a visible escape (\n, \r, \t,
 * \xHH), so a name from a file or an option can neither break a message into lines nor move the cursor. Cut to
 * whole escapes within n bytes. Returns buf. */
const char *epb_printable(const char *s, char *buf, size_t n);
/* "a regular file", "a directory", "a FIFO", "a character device"... */
const char *epb_file_kind(mode_t mode);
/* Opens an input for reading, never blocking: what is not a regular file (a FIFO, a directory, a device) is
 * refused before it is opened, and what was opened is checked again. EPB_EUSAGE "PATH: not a regular file (a
 * FIFO)" or "PATH: cannot open: reason"; *fd a blocking descriptor otherwise. */
int epb_open_regular(const char *path, int *fd, epb_err_t *err);
/* Whether a and b name one file: the same device and inode when both exist; when neither does yet, the same
 * canonical path (the folder's real path and the name), so that two spellings of one new file match. */
int epb_same_file(const char *a, const char *b);
/* A JSON output written whole over what path names (bench -J, report --calibration-out) may replace a JSON file
 * only: path is new, or a regular file that is empty or whose first non-blank byte is '{'. A results CSV, a FIFO
 * or a folder named by mistake is never replaced: EPB_EUSAGE "OPT PATH: ..." (nothing opened for writing). */
int epb_json_output_ok(const char *opt, const char *path, epb_err_t *err);

/* ---- time ---- */
double epb_now_us(void); /* monotonic clock, microseconds */
void epb_utc_iso(char *buf, size_t n); /* "2026-11-24T22:00:03Z" */

/* ---- statistics over per-iteration samples ---- */
typedef struct {
    double min, med, mean, p95, max;
} epb_stats_t;

/* Sorts a copy of samples (n >= 1). Median: mean of the two middle samples for even n. p95: linear
 * interpolation between closest ranks (the "R-7" / numpy default definition). */
int epb_stats(const double *samples, size_t n, epb_stats_t *out);
double epb_quantile_sorted(const double *sorted, size_t n, double q);

/* ---- sizes ---- */
/* Parses "4096", "64K", "16M", "1G" (binary multiples, optional trailing 'B'/'iB'). Rejects empty, negative,
 * non-numeric, fractional-with-suffix-free garbage, zero and overflow. Returns 0 or -1. */
int epb_parse_size(const char *s, uint64_t *out);
/* Parses a positive decimal integer without sign or garbage into *out within [lo, hi]. Returns 0 or -1. */
int epb_parse_int(const char *s, long lo, long hi, long *out);
/* Whether s is a plain decimal number: [-]digits, or with real: [-]digits[.digits][e[+-]digits] (also .5 and 5.);
 * no blanks, no '+' sign, no hex, no inf or nan. */
int epb_decimal_syntax(const char *s, int real);
/* Parses a finite double within [lo, hi], written as a plain decimal number. Returns 0 or -1. */
int epb_parse_double(const char *s, double lo, double hi, double *out);
/* Human size: 65536 -> "64K", 3000 -> "3000". */
void epb_fmt_size(uint64_t bytes, char *buf, size_t n);

/* ---- bandwidth ---- */
/* GB/s (1e9 bytes per second) for bytes moved in t_us microseconds; 0 when t_us <= 0. */
double epb_gbps(double bytes, double t_us);

/* ---- seeded values, reproducible by global index whatever the rank count ---- */
uint64_t epb_hash64(uint64_t seed, uint64_t stream, uint64_t index);
/* Uniform in [-1, 1). */
double epb_uniform(uint64_t seed, uint64_t stream, uint64_t index);
/* Small integer in [-range, range]: exact in float32 and bfloat16 sums while P*range <= 256. */
int epb_small_int(uint64_t seed, uint64_t stream, uint64_t index, int range);

/* ---- bfloat16 (storage type; arithmetic happens in float32) ---- */
typedef uint16_t epb_bf16;
epb_bf16 epb_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float epb_bf16_to_f32(epb_bf16 h);

/* ---- CSV schema 5 (DESIGN.md "Results: CSV schema 2", extended: docs/CSV.md defines every column) ----
 * Schema 5 is schema 4 plus quant_err at the end, schema 4 is schema 3 plus dropped, load_max and load_plain,
 * schema 3 is schema 2 plus
 * model_bytes; schema 1 lacks hosts, params, kind, coll, wait_us and hidden_us. Every schema is read; only the
 * current one is written. */
#define EPB_SCHEMA 5
#define EPB_CSV_NCOLS 46    /* schema 5 */
extern const char *const epb_csv_columns[EPB_CSV_NCOLS];
/* Longest text the reader accepts (and the writer writes) per kind of field; longer text is an input error. */
#define EPB_STR 96       /* most text fields */
#define EPB_PARAMS 512   /* params: "key=val;..." */
#define EPB_HOSTS 4096   /* hosts: every host of the job, ';'-joined */

/* One row. Text fields point at strings the row does not own: a writer points them at its own storage (NULL
 * writes an empty field), the reader at the interned strings of its epb_rows_t. */
typedef struct {
    int schema;
    const char *run_id, *utc, *git_rev, *host;
    int nodes;
    const char *hosts; /* schema 2: the distinct hosts of the job, ';'-joined (schema 1: empty) */
    const char *backend, *device, *device_name, *mode, *op;
    int ranks, experts, top_k;
    long tokens, hidden, ffn;
    const char *dtype, *router;
    double skew;
    uint64_t seed;
    const char *params; /* schema 2: strategy parameters and layer features, "key=val;..." canonical order */
    const char *phase;
    const char *kind; /* schema 2: compute | comm | sync | total (schema 1: empty) */
    const char *coll; /* schema 2: the collectives the phase ran, '+'-joined in first-call order */
    uint64_t bytes;
    long iters;
    double t_min_us, t_med_us, t_mean_us, t_p95_us, t_max_us;
    double wait_us;   /* schema 2: median over iterations of the phase's wait for the last rank to arrive */
    double hidden_us; /* schema 2: median over iterations of a comm phase's time in flight behind compute (not in t_*) */
    double algbw_gbps, busbw_gbps, gflop, tflops;
    uint64_t peak_mem_bytes;
    const char *check; /* ok | fail | skipped */
    /* schema 3 (-1 in rows of older schemas, and where the column does not apply) */
    double model_bytes; /* MoE phases: the bytes the strategy's traffic description (moe/traffic.h) expects this
                         * phase to send, the most of any rank, on this run's own routing; the `bytes` column is
                         * what the wire carried */
    /* schema 4 (-1 in rows of older schemas, and where the column does not apply); moe rows: every row of the
     * configuration carries the last step's values */
    double dropped;     /* (token, expert) pairs of the whole batch the expert capacity dropped (0 without it) */
    double load_max;    /* rows the busiest rank's experts computed (padding included) */
    double load_plain;  /* rows the busiest rank would compute holding its E/P experts alone, no replicas */
    /* schema 5 (-1 in rows of older schemas, and where the column does not apply) */
    double quant_err;   /* moe rows with --dispatch-dtype fp8 and the check on: y's norm-wise error against the
                         * unquantized layer (what FP8 dispatch costs; not a pass/fail check) */
} epb_row_t;

/* Rows read from CSV files, with the strings they point at (each distinct text stored once). */
typedef struct epb_strpool epb_strpool_t;
typedef struct {
    epb_row_t *rows;
    size_t nrows, cap;
    epb_strpool_t *pool;
} epb_rows_t;
void epb_rows_free(epb_rows_t *t);
/* The pool's copy of s (interned: equal strings share one copy); NULL when out of memory. */
const char *epb_strpool_add(epb_strpool_t **pool, const char *s, size_t len);

/* Checks that path can take rows: an existing file must be a regular writable file whose first line is the
 * current schema's header (or empty) and whose last byte ends a line (a torn last row is refused: rows appended
 * after it would be glued to the fragment); a new file's directory must be writable. Nothing is created or
 * changed. EPB_EUSAGE naming `opt` (e.g. "--csv") and the file otherwise. */
int epb_csv_probe_opt(const char *opt, const char *path, epb_err_t *err);
static inline int epb_csv_probe(const char *path, epb_err_t *err) { return epb_csv_probe_opt("--csv", path, err); }

/* Appends rows to path with one write(2) on an O_APPEND descriptor under an advisory lock, so rows are never
 * half-written and concurrent writers do not interleave; the header is written only when the file is new or
 * empty; a file with a foreign header or a torn last row is refused (EPB_EUSAGE). When the write fails (a full
 * disk), the file is cut back to its old length, and a file this call created is removed (EPB_ESYS). */
int epb_csv_append(const char *path, const epb_row_t *rows, size_t n, epb_err_t *err);

/* The same guarantees for any line-oriented CSV whose first line is `header` (with its '\n'), e.g. a loss curve:
 * probe and append body (whole lines, len bytes); opt names the option in messages. */
int epb_lines_probe(const char *opt, const char *path, const char *header, epb_err_t *err);
int epb_lines_append(const char *opt, const char *path, const char *header, const char *body, size_t len, epb_err_t *err);

/* Formats one row as a CSV line (with '\n') into buf; returns the length or -1 if n is too small or a text field
 * is longer than its limit. */
int epb_csv_format_row(const epb_row_t *row, char *buf, size_t n);

/* Reads a whole schema 1, 2 or 3 file and appends its rows to *t (whose pool the strings go to). Streams
 * the file (memory: the rows and their distinct strings, not the file). Rejects (EPB_EUSAGE, "FILE:LINE:
 * reason") a missing or empty file, what is not a regular file (a FIFO is never waited on), a header of neither
 * schema, a wrong column count, an unterminated last line, a NUL byte, a numeric field that is not a plain decimal
 * number (no blanks, no hex, no inf/nan), a text field over its limit, a row whose schema is not its header's, a
 * negative time, times out of order (min <= median <= p95 <= max, min <= mean <= max) and a check that is not ok,
 * fail or skipped. Schema 1 rows get empty hosts, params, kind, coll and wait_us 0. On failure *t keeps the rows
 * of earlier calls only. */
int epb_csv_read(const char *path, epb_rows_t *t, epb_err_t *err);

#endif
