#define _POSIX_C_SOURCE 200809L
#include "epb.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One table drives both the writer and the reader, so the two can never disagree on a column. */
enum kind { K_STR, K_INT, K_LONG, K_U64, K_DBL };
struct col {
    const char *name;
    enum kind kind;
    size_t off;
};
#define C(name, kind) { #name, kind, offsetof(epb_row_t, name) }
static const struct col cols[EPB_CSV_NCOLS] = {
    C(schema, K_INT),       C(run_id, K_STR),     C(utc, K_STR),        C(git_rev, K_STR),
    C(host, K_STR),         C(nodes, K_INT),      C(backend, K_STR),    C(device, K_STR),
    C(device_name, K_STR),  C(mode, K_STR),       C(op, K_STR),         C(ranks, K_INT),
    C(experts, K_INT),      C(top_k, K_INT),      C(tokens, K_LONG),    C(hidden, K_LONG),
    C(ffn, K_LONG),         C(dtype, K_STR),      C(router, K_STR),     C(skew, K_DBL),
    C(seed, K_U64),         C(phase, K_STR),      C(bytes, K_U64),      C(iters, K_LONG),
    C(t_min_us, K_DBL),     C(t_med_us, K_DBL),   C(t_mean_us, K_DBL),  C(t_p95_us, K_DBL),
    C(t_max_us, K_DBL),     C(algbw_gbps, K_DBL), C(busbw_gbps, K_DBL), C(gflop, K_DBL),
    C(tflops, K_DBL),       C(peak_mem_bytes, K_U64), C(check, K_STR),
};
#undef C

const char *const epb_csv_columns[EPB_CSV_NCOLS] = {
    "schema", "run_id", "utc", "git_rev", "host", "nodes", "backend", "device", "device_name", "mode", "op",
    "ranks", "experts", "top_k", "tokens", "hidden", "ffn", "dtype", "router", "skew", "seed", "phase", "bytes",
    "iters", "t_min_us", "t_med_us", "t_mean_us", "t_p95_us", "t_max_us", "algbw_gbps", "busbw_gbps", "gflop",
    "tflops", "peak_mem_bytes", "check",
};

void epb_row_set(char *field, const char *src)
{
    snprintf(field, EPB_STR, "%s", src ? src : "");
}

static size_t header_line(char *buf, size_t n)
{
    size_t len = 0;
    for (int i = 0; i < EPB_CSV_NCOLS; i++)
        len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "%s%s", i ? "," : "", cols[i].name);
    len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "\n");
    return len;
}

/* ---- writer ---- */

static int put(char *buf, size_t n, size_t *len, const char *s, size_t sl)
{
    if (*len + sl >= n) return -1;
    memcpy(buf + *len, s, sl);
    *len += sl;
    buf[*len] = 0;
    return 0;
}

int epb_csv_format_row(const epb_row_t *row, char *buf, size_t n)
{
    size_t len = 0;
    char tmp[64];
    if (n) buf[0] = 0;
    for (int i = 0; i < EPB_CSV_NCOLS; i++) {
        const char *p = (const char *)row + cols[i].off;
        if (i && put(buf, n, &len, ",", 1)) return -1;
        int tl = 0;
        switch (cols[i].kind) {
        case K_STR: {
            int quote = strpbrk(p, ",\"\r\n") != NULL;
            if (quote && put(buf, n, &len, "\"", 1)) return -1;
            for (const char *c = p; *c; c++) {
                if (*c == '"' && put(buf, n, &len, "\"", 1)) return -1;
                if (put(buf, n, &len, c, 1)) return -1;
            }
            if (quote && put(buf, n, &len, "\"", 1)) return -1;
            continue;
        }
        case K_INT: tl = snprintf(tmp, sizeof tmp, "%d", *(const int *)p); break;
        case K_LONG: tl = snprintf(tmp, sizeof tmp, "%ld", *(const long *)p); break;
        case K_U64: tl = snprintf(tmp, sizeof tmp, "%" PRIu64, *(const uint64_t *)p); break;
        case K_DBL: {
            double v = *(const double *)p;
            tl = snprintf(tmp, sizeof tmp, "%.9g", isfinite(v) ? v : 0.0); /* never emit nan/inf */
            break;
        }
        }
        if (put(buf, n, &len, tmp, (size_t)tl)) return -1;
    }
    if (put(buf, n, &len, "\n", 1)) return -1;
    return (int)len;
}

static int first_line_is_header(const char *path, int fd, int *empty, epb_err_t *err)
{
    char want[1024], got[1024];
    size_t wl = header_line(want, sizeof want);
    ssize_t r = pread(fd, got, wl, 0);
    if (r < 0) return epb_fail(err, EPB_EUSAGE, "%s: cannot read: %s", path, strerror(errno));
    *empty = r == 0;
    if (r == 0) return 0;
    if ((size_t)r != wl || memcmp(want, got, wl))
        return epb_fail(err, EPB_EUSAGE, "%s:1: not an epbench schema 1 CSV header; refusing to append to it",
                        path);
    return 0;
}

int epb_csv_probe(const char *path, epb_err_t *err)
{
    struct stat st;
    if (!path || !*path) return epb_fail(err, EPB_EUSAGE, "--csv: empty path");
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) return epb_fail(err, EPB_EUSAGE, "--csv %s: not a regular file", path);
        if (access(path, W_OK)) return epb_fail(err, EPB_EUSAGE, "--csv %s: not writable: %s", path, strerror(errno));
        int fd = open(path, O_RDONLY);
        if (fd < 0) return epb_fail(err, EPB_EUSAGE, "--csv %s: cannot open: %s", path, strerror(errno));
        int empty, rc = first_line_is_header(path, fd, &empty, err);
        close(fd);
        return rc;
    }
    if (errno != ENOENT) return epb_fail(err, EPB_EUSAGE, "--csv %s: %s", path, strerror(errno));
    char *dup = strdup(path);
    if (!dup) return epb_fail(err, EPB_ESYS, "out of memory");
    const char *dir = dirname(dup);
    int rc = EPB_OK;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        rc = epb_fail(err, EPB_EUSAGE, "--csv %s: directory %s does not exist", path, dir);
    else if (access(dir, W_OK | X_OK))
        rc = epb_fail(err, EPB_EUSAGE, "--csv %s: directory %s is not writable", path, dir);
    free(dup);
    return rc;
}

int epb_csv_append(const char *path, const epb_row_t *rows, size_t n, epb_err_t *err)
{
    size_t cap = 1024 + n * 1024, len = 0;
    char *buf = malloc(cap);
    if (!buf) return epb_fail(err, EPB_ESYS, "out of memory formatting %zu CSV rows", n);
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT, 0644);
    if (fd < 0) {
        free(buf);
        return epb_fail(err, EPB_EUSAGE, "--csv %s: cannot open for appending: %s", path, strerror(errno));
    }
    /* An advisory lock keeps the "header only when empty" decision and the append together when several
     * processes (a nightly matrix, parallel jobs) share one file. */
    struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    while (fcntl(fd, F_SETLKW, &lk) < 0 && errno == EINTR) {}
    int empty = 0, rc = first_line_is_header(path, fd, &empty, err);
    if (rc == EPB_OK) {
        if (empty) len = header_line(buf, cap);
        for (size_t i = 0; i < n; i++) {
            int l = epb_csv_format_row(&rows[i], buf + len, cap - len);
            if (l < 0) {
                rc = epb_fail(err, EPB_ESYS, "%s: row %zu too long to format", path, i);
                break;
            }
            len += (size_t)l;
        }
    }
    if (rc == EPB_OK) {
        ssize_t w = write(fd, buf, len);
        if (w != (ssize_t)len) {
            /* a short write (disk full) would leave a partial row: cut the file back to where it was */
            struct stat st;
            if (w > 0 && fstat(fd, &st) == 0 && ftruncate(fd, st.st_size - w)) {}
            rc = epb_fail(err, EPB_ESYS, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "short write");
        }
    }
    if (close(fd) && rc == EPB_OK) rc = epb_fail(err, EPB_ESYS, "%s: close failed: %s", path, strerror(errno));
    free(buf);
    return rc;
}

/* ---- reader ---- */

/* Splits one CSV record starting at *pp into fields (RFC 4180 quoting); advances *pp past the line end.
 * Returns the number of fields, or -1 for an unterminated quote / line without '\n', -2 too many fields. */
static int split_record(char **pp, char *end, char **fields, int maxf)
{
    char *p = *pp, *w = p;
    int nf = 0;
    for (;;) {
        if (nf == maxf) return -2;
        fields[nf++] = w;
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p >= end) return -1;
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') { *w++ = '"'; p += 2; continue; }
                    p++;
                    break;
                }
                *w++ = *p++;
            }
        } else {
            while (p < end && *p != ',' && *p != '\n' && *p != '\r') *w++ = *p++;
        }
        if (p < end && *p == ',') { *w++ = 0; p++; continue; }
        if (p < end && *p == '\r') p++;
        if (p < end && *p == '\n') { *w = 0; *pp = p + 1; return nf; }
        return -1; /* end of file without newline, or garbage after a closing quote */
    }
}

static int parse_field(const struct col *c, const char *s, epb_row_t *row)
{
    char *p = (char *)row + c->off, *end;
    if (c->kind == K_STR) {
        if (strlen(s) >= EPB_STR) return -1;
        strcpy(p, s);
        return 0;
    }
    if (!*s) return -1;
    errno = 0;
    switch (c->kind) {
    case K_INT: { long v = strtol(s, &end, 10); if (v < INT32_MIN || v > INT32_MAX) return -1; *(int *)p = (int)v; break; }
    case K_LONG: *(long *)p = strtol(s, &end, 10); break;
    case K_U64:
        if (*s == '-') return -1;
        *(uint64_t *)p = strtoull(s, &end, 10);
        break;
    case K_DBL: {
        double v = strtod(s, &end);
        if (!isfinite(v)) return -1;
        *(double *)p = v;
        break;
    }
    default: return -1;
    }
    return (errno || *end) ? -1 : 0;
}

int epb_csv_read(const char *path, epb_row_t **rows_out, size_t *nrows_out, epb_err_t *err)
{
    *rows_out = NULL;
    *nrows_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return epb_fail(err, EPB_EUSAGE, "%s: cannot open: %s", path, strerror(errno));
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nd = realloc(data, cap);
            if (!nd) { free(data); fclose(f); return epb_fail(err, EPB_ESYS, "%s: out of memory", path); }
            data = nd;
        }
        size_t r = fread(data + len, 1, 65536, f);
        len += r;
        if (r == 0) break;
    }
    int ioerr = ferror(f);
    fclose(f);
    int rc = EPB_OK;
    epb_row_t *rows = NULL;
    size_t nrows = 0, rcap = 0;
    char *p = data, *end = data + len, *fields[EPB_CSV_NCOLS + 1];
    long line = 1;
    if (ioerr) { rc = epb_fail(err, EPB_EUSAGE, "%s: read error", path); goto out; }
    if (len == 0) { rc = epb_fail(err, EPB_EUSAGE, "%s:1: empty file (expected the schema 1 header)", path); goto out; }
    int nf = split_record(&p, end, fields, EPB_CSV_NCOLS + 1);
    if (nf != EPB_CSV_NCOLS) {
        rc = epb_fail(err, EPB_EUSAGE, "%s:1: not an epbench schema 1 header (%s)", path,
                      nf < 0 ? "unterminated line" : "wrong column count");
        goto out;
    }
    for (int i = 0; i < EPB_CSV_NCOLS; i++)
        if (strcmp(fields[i], cols[i].name)) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:1: not an epbench schema 1 header (column %d is '%s', expected '%s')",
                          path, i + 1, fields[i], cols[i].name);
            goto out;
        }
    while (p < end) {
        line++;
        nf = split_record(&p, end, fields, EPB_CSV_NCOLS + 1);
        if (nf == -1) { rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: truncated row (no line end)", path, line); goto out; }
        if (nf != EPB_CSV_NCOLS) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: wrong column count (%s%d, expected %d)", path, line,
                          nf < 0 ? "more than " : "", nf < 0 ? EPB_CSV_NCOLS : nf, EPB_CSV_NCOLS);
            goto out;
        }
        if (nrows == rcap) {
            rcap = rcap ? rcap * 2 : 256;
            epb_row_t *nr = realloc(rows, rcap * sizeof *rows);
            if (!nr) { rc = epb_fail(err, EPB_ESYS, "%s: out of memory", path); goto out; }
            rows = nr;
        }
        epb_row_t *row = &rows[nrows];
        memset(row, 0, sizeof *row);
        for (int i = 0; i < EPB_CSV_NCOLS; i++)
            if (parse_field(&cols[i], fields[i], row)) {
                rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: column %s: %s '%s'", path, line, cols[i].name,
                              cols[i].kind == K_STR ? "text too long" : "not a number", fields[i]);
                goto out;
            }
        if (row->schema != EPB_SCHEMA) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: schema %d, expected %d (mixed schemas)", path, line, row->schema,
                          EPB_SCHEMA);
            goto out;
        }
        nrows++;
    }
out:
    free(data);
    if (rc != EPB_OK) { free(rows); return rc; }
    *rows_out = rows;
    *nrows_out = nrows;
    return EPB_OK;
}
