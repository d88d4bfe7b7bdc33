/* Loading schema-1 files and grouping their rows into cells (configuration x op x phase), whose repetitions
 * are the samples the statistics use. */
#include "report.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void rp_host_class(const epb_row_t *r, char *buf, size_t n)
{
    char h[EPB_STR];
    snprintf(h, sizeof h, "%s", r->host);
    size_t l = strlen(h);
    /* node07 -> node, gpu-a-12 -> gpu-a: nightly runs land on different nodes of one partition */
    while (l > 0 && isdigit((unsigned char)h[l - 1])) l--;
    while (l > 1 && (h[l - 1] == '-' || h[l - 1] == '_' || h[l - 1] == '.')) l--;
    if (l == 0) l = strlen(h); /* an all-digit name stays itself */
    h[l] = 0;
    /* bench appends the rank binding ("; bind=core") to the CPU name; it differs between modes (calibration
     * runs unbound) and is not hardware, so it is not part of the class */
    char dev[EPB_STR];
    snprintf(dev, sizeof dev, "%s", r->device_name);
    char *b = strstr(dev, "; bind=");
    if (b) *b = 0;
    if (dev[0])
        snprintf(buf, n, "%s/%s", h, dev);
    else
        snprintf(buf, n, "%s", h);
}

void rp_config_key(const epb_row_t *r, char *buf, size_t n)
{
    char hc[2 * EPB_STR];
    rp_host_class(r, hc, sizeof hc);
    snprintf(buf, n, "%s|P%d|N%d|%s|%s|E%d|k%d|T%ld|D%ld|F%ld|%s|%s|s%g|%s", r->mode, r->ranks, r->nodes,
             r->backend, r->device, r->experts, r->top_k, r->tokens, r->hidden, r->ffn, r->dtype, r->router,
             r->skew, hc);
}

void rp_cell_key(const epb_row_t *r, char *buf, size_t n)
{
    char cfg[RP_KEY];
    rp_config_key(r, cfg, sizeof cfg);
    if (!strcmp(r->mode, "moe"))
        snprintf(buf, n, "%s|%s|%s", cfg, r->op, r->phase);
    else /* coll and peak: the size is part of the configuration */
        snprintf(buf, n, "%s|%s|%s|B%" PRIu64, cfg, r->op, r->phase, r->bytes);
}

static double median_of(double *v, size_t n)
{
    epb_stats_t st;
    if (n == 0 || epb_stats(v, n, &st)) return 0.0;
    return st.med;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int rp_group(rp_data_t *d, epb_err_t *err)
{
    size_t n = d->nrows;
    d->cells = NULL;
    d->ncells = 0;
    if (n == 0) return EPB_OK;
    /* sort row indices by cell key, keeping first-appearance order of cells afterwards */
    char **keys = calloc(n, sizeof *keys);
    char *store = malloc(n * RP_KEY);
    size_t *first = malloc(n * sizeof *first);
    double *tmp = malloc(n * 4 * sizeof *tmp);
    rp_cell_t *cells = calloc(n, sizeof *cells);
    int rc = EPB_OK;
    if (!keys || !store || !first || !tmp || !cells) { rc = epb_fail(err, EPB_ESYS, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        keys[i] = store + i * RP_KEY;
        rp_cell_key(&d->rows[i], keys[i], RP_KEY);
    }
    /* distinct keys in first-appearance order: a sorted copy for membership, a linear pass for order */
    char **sorted = malloc(n * sizeof *sorted);
    if (!sorted) { rc = epb_fail(err, EPB_ESYS, "out of memory"); goto out; }
    memcpy(sorted, keys, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    unsigned char *seen = calloc(n, 1);
    if (!seen) { free(sorted); rc = epb_fail(err, EPB_ESYS, "out of memory"); goto out; }
    size_t nc = 0;
    for (size_t i = 0; i < n && rc == EPB_OK; i++) {
        char **hit = bsearch(&keys[i], sorted, n, sizeof *sorted, cmp_str);
        size_t s = (size_t)(hit - sorted);
        while (s > 0 && !strcmp(sorted[s - 1], keys[i])) s--; /* first of equal keys is the marker */
        if (seen[s]) continue;
        seen[s] = 1;
        rp_cell_t *c = &cells[nc++];
        snprintf(c->key, sizeof c->key, "%s", keys[i]);
        rp_config_key(&d->rows[i], c->cfg, sizeof c->cfg);
        rp_host_class(&d->rows[i], c->hclass, sizeof c->hclass);
        c->row = &d->rows[i];
        size_t m = 0;
        for (size_t j = i; j < n; j++) m += !strcmp(keys[j], keys[i]);
        c->t_med = malloc(m * sizeof *c->t_med);
        if (!c->t_med) { rc = epb_fail(err, EPB_ESYS, "out of memory"); break; }
        double *p95 = tmp, *by = tmp + n, *bw = tmp + 2 * n, *tf = tmp + 3 * n;
        for (size_t j = i; j < n; j++) {
            if (strcmp(keys[j], keys[i])) continue;
            const epb_row_t *r = &d->rows[j];
            c->t_med[c->n] = r->t_med_us;
            p95[c->n] = r->t_p95_us;
            by[c->n] = (double)r->bytes;
            bw[c->n] = r->busbw_gbps;
            /* gflop / us = 1e9 flop / 1e-6 s = 1e15 flop/s = 1e3 TFLOP/s */
            tf[c->n] = r->tflops > 0 ? r->tflops : (r->gflop > 0 && r->t_med_us > 0 ? r->gflop / r->t_med_us * 1e3 : 0);
            c->n++;
        }
        double *cp = malloc(c->n * sizeof *cp);
        if (!cp) { rc = epb_fail(err, EPB_ESYS, "out of memory"); break; }
        memcpy(cp, c->t_med, c->n * sizeof *cp);
        c->med = median_of(cp, c->n);
        free(cp);
        c->p95 = median_of(p95, c->n);
        c->bytes = median_of(by, c->n);
        c->busbw = median_of(bw, c->n);
        c->tflops = median_of(tf, c->n);
    }
    free(seen);
    free(sorted);
    d->cells = cells;
    d->ncells = nc;
    cells = NULL;
out:
    free(keys);
    free(store);
    free(first);
    free(tmp);
    free(cells);
    return rc;
}

int rp_load(rp_data_t *d, char *const *paths, int npaths, epb_err_t *err)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < npaths; i++) {
        int rc = epb_csv_read(paths[i], &d->table, err);
        if (rc != EPB_OK) { rp_free(d); return rc; }
    }
    d->rows = d->table.rows;
    d->nrows = d->table.nrows;
    int rc = rp_group(d, err);
    if (rc != EPB_OK) rp_free(d);
    return rc;
}

void rp_free(rp_data_t *d)
{
    for (size_t i = 0; i < d->ncells; i++) free(d->cells[i].t_med);
    free(d->cells);
    if (d->table.rows == d->rows) d->rows = NULL; /* rows built by a caller (tests) are theirs */
    epb_rows_free(&d->table);
    memset(d, 0, sizeof *d);
}

const rp_cell_t *rp_find(const rp_data_t *d, const char *cfg, const char *op, const char *phase)
{
    for (size_t i = 0; i < d->ncells; i++) {
        const rp_cell_t *c = &d->cells[i];
        if (!strcmp(c->cfg, cfg) && !strcmp(c->row->op, op) && !strcmp(c->row->phase, phase)) return c;
    }
    return NULL;
}
