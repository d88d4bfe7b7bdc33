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

/* One table drives the writer and the reader of every schema, so they can never disagree on a column. since: the
 * first schema with the column (a schema's order is this table's without the later columns); absent: what a row of
 * an older schema reads for a numeric column it lacks (text reads as empty). */
enum kind { K_STR, K_INT, K_LONG, K_U64, K_DBL };
struct col {
    const char *name;
    enum kind kind;
    size_t off;
    size_t max; /* text: longest accepted length */
    int since;
    double absent;
};
#define S(name, max) { #name, K_STR, offsetof(epb_row_t, name), max, 1, 0 }
#define S2(name, max) { #name, K_STR, offsetof(epb_row_t, name), max, 2, 0 }
#define N(name, kind) { #name, kind, offsetof(epb_row_t, name), 0, 1, 0 }
#define N3(name) { #name, K_DBL, offsetof(epb_row_t, name), 0, 3, -1 }
#define N4(name) { #name, K_DBL, offsetof(epb_row_t, name), 0, 4, -1 }
#define N5(name) { #name, K_DBL, offsetof(epb_row_t, name), 0, 5, -1 }
static const struct col cols[EPB_CSV_NCOLS] = {
    N(schema, K_INT),        S(run_id, EPB_STR),      S(utc, EPB_STR),          S(git_rev, EPB_STR),
    S(host, EPB_STR),        N(nodes, K_INT),         S2(hosts, EPB_HOSTS),     S(backend, EPB_STR),
    S(device, EPB_STR),      S(device_name, EPB_STR), S(mode, EPB_STR),         S(op, EPB_STR),
    N(ranks, K_INT),         N(experts, K_INT),       N(top_k, K_INT),          N(tokens, K_LONG),
    N(hidden, K_LONG),       N(ffn, K_LONG),          S(dtype, EPB_STR),        S(router, EPB_STR),
    N(skew, K_DBL),          N(seed, K_U64),          S2(params, EPB_PARAMS),   S(phase, EPB_STR),
    S2(kind, EPB_STR),       S2(coll, EPB_STR),       N(bytes, K_U64),          N(iters, K_LONG),
    N(t_min_us, K_DBL),      N(t_med_us, K_DBL),      N(t_mean_us, K_DBL),      N(t_p95_us, K_DBL),
    N(t_max_us, K_DBL),      { "wait_us", K_DBL, offsetof(epb_row_t, wait_us), 0, 2, 0 },
    { "hidden_us", K_DBL, offsetof(epb_row_t, hidden_us), 0, 2, 0 },
    N(algbw_gbps, K_DBL),    N(busbw_gbps, K_DBL),    N(gflop, K_DBL),          N(tflops, K_DBL),
    N(peak_mem_bytes, K_U64), S(check, EPB_STR),
    N3(model_bytes),         N4(dropped),             N4(load_max),             N4(load_plain),
    N5(quant_err),
};
#undef S
#undef S2
#undef N
#undef N3
#undef N4
#undef N5

const char *const epb_csv_columns[EPB_CSV_NCOLS] = {
    "schema", "run_id", "utc", "git_rev", "host", "nodes", "hosts", "backend", "device", "device_name", "mode",
    "op", "ranks", "experts", "top_k", "tokens", "hidden", "ffn", "dtype", "router", "skew", "seed", "params",
    "phase", "kind", "coll", "bytes", "iters", "t_min_us", "t_med_us", "t_mean_us", "t_p95_us", "t_max_us",
    "wait_us", "hidden_us", "algbw_gbps", "busbw_gbps", "gflop", "tflops", "peak_mem_bytes", "check",
    "model_bytes", "dropped", "load_max", "load_plain", "quant_err",
};

/* The header line of a schema (1 to EPB_SCHEMA), with its '\n'. */
static size_t header_line(int schema, char *buf, size_t n)
{
    size_t len = 0;
    int first = 1;
    for (int i = 0; i < EPB_CSV_NCOLS; i++) {
        if (cols[i].since > schema) continue;
        len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "%s%s", first ? "" : ",", cols[i].name);
        first = 0;
    }
    len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "\n");
    return len;
}

static const char *text_of(const epb_row_t *row, const struct col *c)
{
    const char *s = *(const char *const *)((const char *)row + c->off);
    return s ? s : "";
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
            const char *s = text_of(row, &cols[i]);
            if (strlen(s) > cols[i].max) return -1;
            int quote = strpbrk(s, ",\"\r\n") != NULL;
            if (quote && put(buf, n, &len, "\"", 1)) return -1;
            for (const char *c = s; *c; c++) {
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

/* The state of an existing file: empty, or its first line is `want` (a header line with its '\n') and its last byte
 * ends a line. opt names the option in messages ("--csv"), or is NULL for a plain file message. */
static int check_existing(const char *opt, const char *path, int fd, const char *want, int *empty, epb_err_t *err)
{
    char got[4096];
    size_t wl = strlen(want);
    const char *o = opt ? opt : "", *sp = opt ? " " : "";
    if (wl > sizeof got) return epb_fail(err, EPB_ESYS, "%s: header too long", path);
    ssize_t r = pread(fd, got, wl, 0);
    if (r < 0) return epb_fail(err, EPB_EUSAGE, "%s%s%s: cannot read: %s", o, sp, path, strerror(errno));
    *empty = r == 0;
    if (r == 0) return EPB_OK;
    if ((size_t)r != wl || memcmp(want, got, wl)) {
        char v[2048];
        header_line(EPB_SCHEMA, v, sizeof v);
        int results = !strcmp(want, v), old = 0;
        for (int sc = 1; sc < EPB_SCHEMA && !old; sc++) {
            size_t l = header_line(sc, v, sizeof v);
            if ((size_t)r >= l && !memcmp(v, got, l) && ((size_t)r == l || got[l - 1] == '\n')) old = sc;
        }
        if (old && results)
            return epb_fail(err, EPB_EUSAGE, "%s%s%s:1: an epbench schema %d file (this bench writes schema %d); "
                            "refusing to append to it (start a new file: report reads both)", o, sp, path, old,
                            EPB_SCHEMA);
        return epb_fail(err, EPB_EUSAGE, "%s%s%s:1: not %s; refusing to append to it", o, sp, path,
                        results ? "an epbench CSV header" : "this file's header");
    }
    struct stat st;
    char last;
    if (fstat(fd, &st)) return epb_fail(err, EPB_EUSAGE, "%s%s%s: %s", o, sp, path, strerror(errno));
    if (pread(fd, &last, 1, st.st_size - 1) != 1)
        return epb_fail(err, EPB_EUSAGE, "%s%s%s: cannot read: %s", o, sp, path, strerror(errno));
    if (last != '\n')
        return epb_fail(err, EPB_EUSAGE, "%s%s%s: its last row is torn (no line end): appending would glue a row to "
                        "it; remove the fragment (e.g. sed -i '$d' %s) or use a new file", o, sp, path, path);
    return EPB_OK;
}

int epb_lines_probe(const char *opt, const char *path, const char *header, epb_err_t *err)
{
    struct stat st;
    if (!path || !*path) return epb_fail(err, EPB_EUSAGE, "%s: empty path", opt);
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) return epb_fail(err, EPB_EUSAGE, "%s %s: not a regular file", opt, path);
        if (access(path, W_OK)) return epb_fail(err, EPB_EUSAGE, "%s %s: not writable: %s", opt, path, strerror(errno));
        int fd = open(path, O_RDONLY);
        if (fd < 0) return epb_fail(err, EPB_EUSAGE, "%s %s: cannot open: %s", opt, path, strerror(errno));
        int empty, rc = check_existing(opt, path, fd, header, &empty, err);
        close(fd);
        return rc;
    }
    if (errno != ENOENT) return epb_fail(err, EPB_EUSAGE, "%s %s: %s", opt, path, strerror(errno));
    char *dup = strdup(path);
    if (!dup) return epb_fail(err, EPB_ESYS, "out of memory");
    const char *dir = dirname(dup);
    int rc = EPB_OK;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        rc = epb_fail(err, EPB_EUSAGE, "%s %s: directory %s does not exist", opt, path, dir);
    else if (access(dir, W_OK | X_OK))
        rc = epb_fail(err, EPB_EUSAGE, "%s %s: directory %s is not writable", opt, path, dir);
    free(dup);
    return rc;
}

int epb_lines_append(const char *opt, const char *path, const char *header, const char *body, size_t len, epb_err_t *err)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return epb_fail(err, EPB_EUSAGE, "%s %s: cannot open for appending: %s", opt, path, strerror(errno));
    /* An advisory lock keeps the "header only when empty" decision and the append together when several
     * processes (a nightly matrix, parallel jobs) share one file. */
    struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    while (fcntl(fd, F_SETLKW, &lk) < 0 && errno == EINTR) {}
    int empty = 0, rc = check_existing(opt, path, fd, header, &empty, err);
    char *buf = NULL;
    size_t hl = strlen(header), total = len + (empty ? hl : 0);
    if (rc == EPB_OK && !(buf = malloc(total ? total : 1))) rc = epb_fail(err, EPB_ESYS, "out of memory");
    if (rc == EPB_OK) {
        if (empty) memcpy(buf, header, hl);
        memcpy(buf + (empty ? hl : 0), body, len);
        struct stat st;
        off_t before = fstat(fd, &st) == 0 ? st.st_size : -1;
        /* one write(2) on an O_APPEND descriptor: whole rows, never interleaved with another writer's */
        ssize_t w = write(fd, buf, total);
        if (w != (ssize_t)total) {
            int e = w < 0 ? errno : ENOSPC;
            /* a short write (disk full) would leave a partial row: cut the file back to where it was; a file this
             * call made (empty before) goes, rather than stay as a header or 0 bytes */
            if (before >= 0 && ftruncate(fd, before)) {}
            if (before == 0) unlink(path);
            rc = epb_fail(err, EPB_ESYS, "%s %s: write failed: %s", opt, path, strerror(e));
        }
    }
    if (close(fd) && rc == EPB_OK) rc = epb_fail(err, EPB_ESYS, "%s %s: close failed: %s", opt, path, strerror(errno));
    free(buf);
    return rc;
}

int epb_csv_probe_opt(const char *opt, const char *path, epb_err_t *err)
{
    char want[2048];
    header_line(EPB_SCHEMA, want, sizeof want);
    return epb_lines_probe(opt, path, want, err);
}

int epb_csv_append(const char *path, const epb_row_t *rows, size_t n, epb_err_t *err)
{
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < EPB_CSV_NCOLS; c++) /* quoting at most doubles a text */
            cap += cols[c].kind == K_STR ? 2 * strlen(text_of(&rows[i], &cols[c])) + 3 : 32;
    char *buf = malloc(cap), want[2048];
    if (!buf) return epb_fail(err, EPB_ESYS, "out of memory formatting %zu CSV rows", n);
    header_line(EPB_SCHEMA, want, sizeof want);
    int rc = EPB_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        int l = epb_csv_format_row(&rows[i], buf + len, cap - len);
        if (l < 0) rc = epb_fail(err, EPB_ESYS, "%s: row %zu does not format (a text field over its limit)", path, i);
        else len += (size_t)l;
    }
    if (!rc) rc = epb_lines_append("--csv", path, want, buf, len, err);
    free(buf);
    return rc;
}

/* ---- string pool: every distinct text of the rows read stored once (a year of nightly rows repeats a few
 * hundred strings), in blocks, found through an open-addressing hash table ---- */

struct epb_strpool {
    char **slots;   /* interned strings, NULL = empty */
    size_t nslots, used;
    char *block;    /* current storage block */
    size_t left;
    char **blocks;  /* every block, to free */
    size_t nblocks;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int pool_grow(epb_strpool_t *p)
{
    size_t ns = p->nslots ? p->nslots * 2 : 1024;
    char **slots = calloc(ns, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < p->nslots; i++) {
        if (!p->slots[i]) continue;
        size_t j = hash_bytes(p->slots[i], strlen(p->slots[i])) & (ns - 1);
        while (slots[j]) j = (j + 1) & (ns - 1);
        slots[j] = p->slots[i];
    }
    free(p->slots);
    p->slots = slots;
    p->nslots = ns;
    return 0;
}

const char *epb_strpool_add(epb_strpool_t **pp, const char *s, size_t len)
{
    if (!*pp && !(*pp = calloc(1, sizeof **pp))) return NULL;
    epb_strpool_t *p = *pp;
    if ((p->used + 1) * 2 > p->nslots && pool_grow(p)) return NULL;
    size_t j = hash_bytes(s, len) & (p->nslots - 1);
    for (; p->slots[j]; j = (j + 1) & (p->nslots - 1))
        if (!strncmp(p->slots[j], s, len) && p->slots[j][len] == 0) return p->slots[j];
    if (p->left < len + 1) {
        size_t bs = len + 1 > 65536 ? len + 1 : 65536;
        char **bl = realloc(p->blocks, (p->nblocks + 1) * sizeof *bl);
        if (!bl) return NULL;
        p->blocks = bl;
        if (!(p->block = malloc(bs))) return NULL;
        p->blocks[p->nblocks++] = p->block;
        p->left = bs;
    }
    char *c = p->block;
    memcpy(c, s, len);
    c[len] = 0;
    p->block += len + 1;
    p->left -= len + 1;
    p->slots[j] = c;
    p->used++;
    return c;
}

void epb_rows_free(epb_rows_t *t)
{
    if (t->pool) {
        for (size_t i = 0; i < t->pool->nblocks; i++) free(t->pool->blocks[i]);
        free(t->pool->blocks);
        free(t->pool->slots);
        free(t->pool);
    }
    free(t->rows);
    memset(t, 0, sizeof *t);
}

/* ---- reader ---- */

/* The end of the record starting at p (just past its '\n'), honouring RFC 4180 quotes; NULL when [p, end) holds
 * no whole record yet. *nul is set when a NUL byte lies inside it. */
static char *record_end(char *p, char *end, int *nul)
{
    int inq = 0;
    *nul = 0;
    for (; p < end; p++) {
        if (*p == 0) *nul = 1;
        if (*p == '"') inq = !inq; /* a doubled quote toggles twice */
        else if (*p == '\n' && !inq) return p + 1;
    }
    return NULL;
}

/* Splits the record [p, rend) (rend just past its '\n') into fields in place. Returns the number of fields, -1
 * for garbage after a closing quote, -2 for more than maxf fields. */
static int split_record(char *p, char *rend, char **fields, int maxf)
{
    char *w = p, *end = rend - 1; /* the '\n' */
    if (end > p && end[-1] == '\r') end--;
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
            while (p < end && *p != ',') *w++ = *p++;
        }
        if (p < end && *p == ',') { *w++ = 0; p++; continue; }
        if (p == end) { *w = 0; return nf; }
        return -1; /* garbage after a closing quote */
    }
}

static const char out_of_memory[] = "out of memory";

/* Parses one field into row; returns NULL or the reason it is refused (out_of_memory: not the input's fault). */
static const char *parse_field(const struct col *c, const char *s, size_t len, epb_row_t *row, epb_strpool_t **pool)
{
    char *p = (char *)row + c->off, *end;
    if (c->kind == K_STR) {
        if (len > c->max) return "text too long";
        const char *v = epb_strpool_add(pool, s, len);
        if (!v) return out_of_memory;
        *(const char **)p = v;
        return NULL;
    }
    if (!epb_decimal_syntax(s, c->kind == K_DBL)) return "not a plain decimal number";
    errno = 0;
    switch (c->kind) {
    case K_INT: {
        long v = strtol(s, &end, 10);
        if (errno || v < INT32_MIN || v > INT32_MAX) return "out of range";
        *(int *)p = (int)v;
        break;
    }
    case K_LONG: *(long *)p = strtol(s, &end, 10); if (errno) return "out of range"; break;
    case K_U64:
        if (*s == '-') return "negative";
        *(uint64_t *)p = strtoull(s, &end, 10);
        if (errno) return "out of range";
        break;
    case K_DBL: {
        double v = strtod(s, &end);
        /* ERANGE on underflow (1e-320) still gives a finite value, which is fine; overflow gives inf */
        if (!isfinite(v)) return "out of range";
        *(double *)p = v;
        break;
    }
    default: return "bad column";
    }
    return NULL;
}

/* Whether x <= y, allowing for the rounding of two values printed with %.9g. */
static int le(double x, double y)
{
    return x <= y + 1e-8 * fabs(y);
}

/* What no writer's row can hold, whatever the file's other rows say: a negative time, statistics out of their
 * order (min <= median <= p95 <= max, min <= mean <= max: they describe one set of samples), a check that is not
 * ok, fail or skipped. NULL when the row is sane, else the reason, written into why. */
static const char *row_insane(const epb_row_t *r, char *why, size_t n)
{
    static const char *const tn[] = { "t_min_us", "t_med_us", "t_mean_us", "t_p95_us", "t_max_us", "wait_us",
                                      "hidden_us" };
    const double t[] = { r->t_min_us, r->t_med_us, r->t_mean_us, r->t_p95_us, r->t_max_us, r->wait_us, r->hidden_us };
    for (int i = 0; i < 7; i++)
        if (t[i] < 0) {
            snprintf(why, n, "column %s: %g is negative (a time is never below 0)", tn[i], t[i]);
            return why;
        }
    /* pairs of (smaller, larger) indices into t */
    static const int order[][2] = { { 0, 1 }, { 1, 3 }, { 3, 4 }, { 0, 2 }, { 2, 4 } };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        int a = order[i][0], b = order[i][1];
        if (!le(t[a], t[b])) {
            snprintf(why, n, "%s %g exceeds %s %g (the statistics of one set of samples: min <= median <= p95 <= "
                     "max, min <= mean <= max)", tn[a], t[a], tn[b], t[b]);
            return why;
        }
    }
    if (strcmp(r->check, "ok") && strcmp(r->check, "fail") && strcmp(r->check, "skipped")) {
        snprintf(why, n, "column check: '%.40s' is not ok, fail or skipped", r->check);
        return why;
    }
    return NULL;
}

typedef struct {
    const char *path;
    FILE *f;
    char *buf;
    size_t cap, start, len; /* the unparsed bytes are buf[start, len) */
    int eof;
} reader_t;

/* Makes sure buf[start, len) holds a whole record (or the file has ended); returns its end, or NULL at the end of
 * the file. *rc is set on an error (I/O, memory, a record over 1 MiB). */
static char *next_record(reader_t *r, int *nul, int *rc, epb_err_t *err, long line)
{
    for (;;) {
        *nul = 0;
        char *e = r->buf ? record_end(r->buf + r->start, r->buf + r->len, nul) : NULL; /* NULL + 0 is undefined */
        if (e) return e;
        if (r->eof) {
            if (r->start < r->len)
                *rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: truncated row (no line end)", r->path, line);
            return NULL;
        }
        if (r->start > 0) { /* slide the partial record down */
            memmove(r->buf, r->buf + r->start, r->len - r->start);
            r->len -= r->start;
            r->start = 0;
        }
        if (r->cap - r->len < 65536) {
            if (r->cap >= ((size_t)1 << 21)) {
                *rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: a row over 1 MiB: not an epbench CSV", r->path, line);
                return NULL;
            }
            size_t nc = r->cap ? r->cap * 2 : (size_t)1 << 20;
            char *nb = realloc(r->buf, nc);
            if (!nb) { *rc = epb_fail(err, EPB_ESYS, "%s: out of memory", r->path); return NULL; }
            r->buf = nb;
            r->cap = nc;
        }
        size_t got = fread(r->buf + r->len, 1, r->cap - r->len, r->f);
        r->len += got;
        if (got == 0) {
            if (ferror(r->f)) { *rc = epb_fail(err, EPB_EUSAGE, "%s: read error", r->path); return NULL; }
            r->eof = 1;
        }
    }
}

int epb_csv_read(const char *path, epb_rows_t *t, epb_err_t *err)
{
    reader_t r = { .path = path };
    int fd, rc = epb_open_regular(path, &fd, err); /* a FIFO or a directory is refused, never waited on */
    if (rc) return rc;
    if (!(r.f = fdopen(fd, "rb"))) {
        close(fd);
        return epb_fail(err, EPB_ESYS, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t nrows0 = t->nrows;
    int nul, schema = 0, ncols = 0, map[EPB_CSV_NCOLS]; /* field i of a row -> cols[map[i]] */
    char *fields[EPB_CSV_NCOLS + 1];
    long line = 1;
    char *e = next_record(&r, &nul, &rc, err, line);
    if (rc) goto out;
    if (!e) {
        rc = epb_fail(err, EPB_EUSAGE, "%s:1: %s", path,
                      r.len ? "truncated header (no line end)" : "empty file (expected an epbench CSV header)");
        goto out;
    }
    size_t hl = (size_t)(e - r.buf - r.start);
    const char *h = r.buf + r.start;
    /* a header written on Windows keeps its \r */
    int crlf = hl >= 2 && h[hl - 2] == '\r';
    size_t bare = hl - (size_t)crlf;
    for (int sc = EPB_SCHEMA; sc >= 1 && !schema; sc--) {
        char hs[2048];
        size_t l = header_line(sc, hs, sizeof hs);
        if (bare == l && !memcmp(h, hs, l - 1)) schema = sc;
    }
    if (!schema) {
        rc = epb_fail(err, EPB_EUSAGE, "%s:1: not an epbench CSV header (schema 1 to %d; see docs/CSV.md)", path,
                      EPB_SCHEMA);
        goto out;
    }
    for (int i = 0; i < EPB_CSV_NCOLS; i++)
        if (cols[i].since <= schema) map[ncols++] = i;
    r.start += hl;
    for (;;) {
        line++;
        e = next_record(&r, &nul, &rc, err, line);
        if (!e) break;
        char *rec = r.buf + r.start;
        if (nul) { rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: a NUL byte in the row", path, line); break; }
        int nf = split_record(rec, e, fields, EPB_CSV_NCOLS + 1);
        if (nf == -1) { rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: text after a closing quote", path, line); break; }
        if (nf != ncols) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: wrong column count (%s%d, expected %d)", path, line,
                          nf < 0 ? "more than " : "", nf < 0 ? ncols : nf, ncols);
            break;
        }
        if (t->nrows == t->cap) {
            size_t nc = t->cap ? t->cap * 2 : 256;
            epb_row_t *nr = realloc(t->rows, nc * sizeof *nr);
            if (!nr) { rc = epb_fail(err, EPB_ESYS, "%s: out of memory", path); break; }
            t->rows = nr;
            t->cap = nc;
        }
        epb_row_t *row = &t->rows[t->nrows];
        memset(row, 0, sizeof *row);
        for (int i = 0; i < EPB_CSV_NCOLS; i++) /* the numeric columns an older schema lacks */
            if (cols[i].since > schema && cols[i].kind == K_DBL) *(double *)((char *)row + cols[i].off) = cols[i].absent;
        for (int i = 0; i < nf && !rc; i++) {
            const struct col *c = &cols[map[i]];
            size_t len = strlen(fields[i]);
            const char *why = parse_field(c, fields[i], len, row, &t->pool);
            if (why)
                rc = epb_fail(err, why == out_of_memory ? EPB_ESYS : EPB_EUSAGE,
                              "%s:%ld: column %s: %s '%.40s%s'", path, line, c->name, why, fields[i],
                              len > 40 ? "..." : "");
        }
        if (rc) break;
        if (row->schema != schema) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: schema %d under a schema %d header (mixed schemas)", path, line,
                          row->schema, schema);
            break;
        }
        /* the text columns an older schema lacks read as empty */
        for (int i = 0; i < EPB_CSV_NCOLS; i++)
            if (cols[i].kind == K_STR && !*(const char **)((char *)row + cols[i].off))
                *(const char **)((char *)row + cols[i].off) = "";
        char insane[256];
        if (row_insane(row, insane, sizeof insane)) {
            rc = epb_fail(err, EPB_EUSAGE, "%s:%ld: %s", path, line, insane);
            break;
        }
        t->nrows++;
        r.start = (size_t)(e - r.buf);
    }
out:
    fclose(r.f);
    free(r.buf);
    if (rc) t->nrows = nrows0;
    return rc;
}
