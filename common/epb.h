/* epbench common module: exit codes, error reporting, statistics, size parsing, bandwidth formulas,
 * seeded values, bfloat16 conversion and the CSV schema 1 writer/reader.
 * Shared by bench/, collectives/, moe/ and reports/; it depends on nothing but libc and libm. */
#ifndef EPB_COMMON_H
#define EPB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
/* Parses a finite double within [lo, hi]. Returns 0 or -1. */
int epb_parse_double(const char *s, double lo, double hi, double *out);
/* Human size: 65536 -> "64K", 3000 -> "3000". */
void epb_fmt_size(uint64_t bytes, char *buf, size_t n);

/* ---- bandwidth (nccl-tests' conventions, DESIGN.md) ---- */
/* Factor that turns algbw into busbw for a collective over P ranks: allgather, reduce_scatter, alltoall,
 * alltoallv: (P-1)/P; allreduce: 2(P-1)/P; anything else (memcpy, gemm, broadcast-free ops): 1. */
double epb_busbw_factor(const char *op, int P);
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

/* ---- CSV schema 1 (DESIGN.md "Results") ---- */
#define EPB_SCHEMA 1
#define EPB_CSV_NCOLS 35
extern const char *const epb_csv_columns[EPB_CSV_NCOLS];
#define EPB_STR 96 /* longest text field kept; longer text is an input error for the reader */

typedef struct {
    int schema;
    char run_id[EPB_STR], utc[EPB_STR], git_rev[EPB_STR], host[EPB_STR];
    int nodes;
    char backend[EPB_STR], device[EPB_STR], device_name[EPB_STR], mode[EPB_STR], op[EPB_STR];
    int ranks, experts, top_k;
    long tokens, hidden, ffn;
    char dtype[EPB_STR], router[EPB_STR];
    double skew;
    uint64_t seed;
    char phase[EPB_STR];
    uint64_t bytes;
    long iters;
    double t_min_us, t_med_us, t_mean_us, t_p95_us, t_max_us;
    double algbw_gbps, busbw_gbps, gflop, tflops;
    uint64_t peak_mem_bytes;
    char check[EPB_STR]; /* ok | fail | skipped */
} epb_row_t;

/* Copies src into a row's text field (truncating to EPB_STR-1). */
void epb_row_set(char *field, const char *src);

/* Checks that path can take rows: an existing file must be a regular writable file whose first line is the
 * schema 1 header (or empty); a new file's directory must be writable. Nothing is created or changed. */
int epb_csv_probe(const char *path, epb_err_t *err);

/* Appends rows to path with one write(2) on an O_APPEND descriptor, so rows are never half-written and
 * concurrent writers do not interleave; the header is written only when the file is new or empty. */
int epb_csv_append(const char *path, const epb_row_t *rows, size_t n, epb_err_t *err);

/* Formats one row as a CSV line (with '\n') into buf; returns the length or -1 if n is too small. */
int epb_csv_format_row(const epb_row_t *row, char *buf, size_t n);

/* Reads a whole schema 1 file. Rejects (EPB_EUSAGE, message "FILE:LINE: reason") a missing or empty file, a
 * wrong header, a wrong column count, an unterminated last line, a non-numeric numeric field, a text field
 * over EPB_STR-1 characters and a schema other than 1. On success *rows is malloc'ed (caller frees). */
int epb_csv_read(const char *path, epb_row_t **rows, size_t *nrows, epb_err_t *err);

#endif
