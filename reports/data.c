/* Loading schema-1 and schema-2 files and grouping their rows into cells (configuration x op x params x phase),
 * whose repetitions are the samples the statistics use, and into moe configurations (strategies x phases).
 * Everything here is linear in the rows: one key and one hash lookup per row, the rest per cell. */
#include "report.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- a string -> index hash map (open addressing); the keys are not copied: they must outlive the map ---- */

struct rp_map {
    const char **keys; /* NULL = empty slot */
    size_t *vals;
    size_t nslots, used;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

void rp_map_free(rp_map_t *m)
{
    if (!m) return;
    free(m->keys);
    free(m->vals);
    free(m);
}

size_t rp_map_get(const rp_map_t *m, const char *key)
{
    if (!m || !m->nslots) return RP_NONE;
    for (size_t j = hash_str(key) & (m->nslots - 1);; j = (j + 1) & (m->nslots - 1)) {
        if (!m->keys[j]) return RP_NONE;
        if (!strcmp(m->keys[j], key)) return m->vals[j];
    }
}

static int map_grow(rp_map_t *m)
{
    size_t ns = m->nslots ? m->nslots * 2 : 256;
    const char **keys = calloc(ns, sizeof *keys);
    size_t *vals = malloc(ns * sizeof *vals);
    if (!keys || !vals) { free(keys); free(vals); return -1; }
    for (size_t i = 0; i < m->nslots; i++) {
        if (!m->keys[i]) continue;
        size_t j = hash_str(m->keys[i]) & (ns - 1);
        while (keys[j]) j = (j + 1) & (ns - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->nslots = ns;
    return 0;
}

/* Adds key (absent) -> val. */
int rp_map_put(rp_map_t **mp, const char *key, size_t val)
{
    if (!*mp && !(*mp = calloc(1, sizeof **mp))) return -1;
    rp_map_t *m = *mp;
    if ((m->used + 1) * 2 > m->nslots && map_grow(m)) return -1;
    size_t j = hash_str(key) & (m->nslots - 1);
    while (m->keys[j]) j = (j + 1) & (m->nslots - 1);
    m->keys[j] = key;
    m->vals[j] = val;
    m->used++;
    return 0;
}

/* ---- kinds ---- */

const char *rp_kind_name(rp_kind_t k)
{
    switch (k) {
    case RP_COMPUTE: return "compute";
    case RP_COMM: return "comm";
    case RP_SYNC: return "sync";
    case RP_TOTAL: return "total";
    }
    return "?";
}

rp_kind_t rp_kind_of_v1(const char *phase)
{
    static const char *const comm[] = { "dispatch", "combine", "combine_bwd", "dispatch_bwd", "grad_sync", NULL };
    if (!strcmp(phase, "step")) return RP_TOTAL;
    if (!strcmp(phase, "sync_counts")) return RP_SYNC;
    for (int i = 0; comm[i]; i++)
        if (!strcmp(phase, comm[i])) return RP_COMM;
    return RP_COMPUTE;
}

/* The kind of a row: its kind column, or (empty: schema 1) derived; -1 for a kind the schema does not have. */
static int row_kind(const epb_row_t *r, int *derived)
{
    *derived = 0;
    const char *k = r->kind ? r->kind : "";
    if (*k) {
        for (int i = RP_COMPUTE; i <= RP_TOTAL; i++)
            if (!strcmp(k, rp_kind_name((rp_kind_t)i))) return i;
        return -1;
    }
    *derived = 1;
    if (!strcmp(r->mode, "coll")) return RP_COMM;
    if (!strcmp(r->mode, "peak")) return RP_COMPUTE;
    return (int)rp_kind_of_v1(r->phase);
}

/* ---- keys ---- */

void rp_host_class(const epb_row_t *r, char *buf, size_t n)
{
    char h[EPB_STR + 1];
    snprintf(h, sizeof h, "%s", r->host);
    size_t l = strlen(h);
    /* node07 -> node, gpu-a-12 -> gpu-a: nightly runs land on different nodes of one partition */
    while (l > 0 && isdigit((unsigned char)h[l - 1])) l--;
    while (l > 1 && (h[l - 1] == '-' || h[l - 1] == '_' || h[l - 1] == '.')) l--;
    if (l == 0) l = strlen(h); /* an all-digit name stays itself */
    h[l] = 0;
    /* bench appends the rank binding ("; bind=core") to the CPU name; it differs between modes (calibration
     * runs unbound) and is not hardware, so it is not part of the class */
    char dev[EPB_STR + 1];
    snprintf(dev, sizeof dev, "%s", r->device_name);
    char *b = strstr(dev, "; bind=");
    if (b) *b = 0;
    if (dev[0])
        snprintf(buf, n, "%s/%s", h, dev);
    else
        snprintf(buf, n, "%s", h);
}

/* Appends "<length>:<text>|": no text can make two different field lists read the same. */
static size_t key_text(char *buf, size_t n, size_t len, const char *s)
{
    int k = snprintf(buf + (len < n ? len : n), len < n ? n - len : 0, "%zu:%s|", strlen(s), s);
    return len + (k > 0 ? (size_t)k : 0);
}

const char *rp_layer_params(const char *params)
{
    /* docs/CSV.md, params: the strategy's own parameters come first, then these, in this order; the first of them
     * starts the layer's part. The keys are the schema's, like the column names. */
    static const char *const keys[] = { "model", "scale_down", "shared", "shared_ffn", "gate_before", "route_scale",
                                        "groups", "topk_groups", "dispatch_dtype", NULL };
    for (const char *p = params ? params : ""; *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ';');
        if (eq && (!end || eq < end))
            for (int i = 0; keys[i]; i++)
                if (strlen(keys[i]) == (size_t)(eq - p) && !strncmp(p, keys[i], (size_t)(eq - p))) return p;
        if (!end) break;
        p = end + 1;
    }
    return "";
}

void rp_config_key(const epb_row_t *r, char *buf, size_t n)
{
    char hc[2 * EPB_STR + 2];
    rp_host_class(r, hc, sizeof hc);
    size_t l = key_text(buf, n, 0, r->mode);
    l = key_text(buf, n, l, r->backend);
    l = key_text(buf, n, l, r->device);
    l = key_text(buf, n, l, r->dtype);
    l = key_text(buf, n, l, r->router);
    l = key_text(buf, n, l, hc);
    /* coll and peak rows: all their params (an uneven --imbalance run is its own configuration); moe rows: the
     * layer's (a model, shared experts...), not the strategy's own (tp2ep and tp2ep:chunks=4 are compared) */
    if (strcmp(r->mode, "moe")) l = key_text(buf, n, l, r->params ? r->params : "");
    else l = key_text(buf, n, l, rp_layer_params(r->params));
    if (l < n)
        snprintf(buf + l, n - l, "P%d|N%d|E%d|k%d|T%ld|D%ld|F%ld|s%.17g|S%" PRIu64, r->ranks, r->nodes, r->experts,
                 r->top_k, r->tokens, r->hidden, r->ffn, r->skew, r->seed);
}

void rp_cell_key(const epb_row_t *r, char *buf, size_t n)
{
    rp_config_key(r, buf, n);
    size_t l = strlen(buf);
    l = key_text(buf, n, l, r->op);
    l = key_text(buf, n, l, r->phase);
    if (!strcmp(r->mode, "moe"))
        l = key_text(buf, n, l, r->params ? r->params : ""); /* strategy parameters: another strategy */
    else if (l < n) /* coll and peak: the size is part of the measurement */
        snprintf(buf + l, n - l, "B%" PRIu64, r->bytes);
}

void rp_strategy_label(const epb_row_t *r, char *buf, size_t n)
{
    const char *p = r->params ? r->params : "";
    snprintf(buf, n, "%s%s%s", r->op, *p ? ":" : "", p);
    for (char *c = buf + strlen(r->op); *c; c++)
        if (*c == ';') *c = ',';
}

/* ---- grouping ---- */

static double median_of(const double *v, size_t n)
{
    epb_stats_t st;
    if (n == 0 || epb_stats(v, n, &st)) return 0.0;
    return st.med;
}

static const char *intern(rp_data_t *d, const char *s)
{
    return epb_strpool_add(&d->keys.pool, s, strlen(s));
}

/* Creates the cell of row i (whose key is key). */
static int new_cell(rp_data_t *d, size_t i, const char *key, rp_kind_t kind, size_t *cap)
{
    if (d->ncells == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        rp_cell_t *c = realloc(d->cells, nc * sizeof *c);
        if (!c) return -1;
        d->cells = c;
        *cap = nc;
    }
    const epb_row_t *r = &d->rows[i];
    char buf[RP_KEY];
    rp_cell_t *c = &d->cells[d->ncells];
    memset(c, 0, sizeof *c);
    c->row = r;
    c->kind = kind;
    c->conf = RP_NONE;
    if (!(c->key = intern(d, key))) return -1;
    rp_config_key(r, buf, sizeof buf);
    if (!(c->cfg = intern(d, buf))) return -1;
    rp_host_class(r, buf, sizeof buf);
    if (!(c->hclass = intern(d, buf))) return -1;
    rp_strategy_label(r, buf, sizeof buf);
    if (!(c->strategy = intern(d, buf))) return -1;
    if (rp_map_put(&d->by_key, c->key, d->ncells)) return -1;
    d->ncells++;
    return 0;
}

/* The per-repetition samples and the medians of every cell. */
static int cell_stats(rp_data_t *d)
{
    size_t n = d->nrows, nc = d->ncells;
    size_t *off = calloc(nc + 1, sizeof *off), *fill = calloc(nc, sizeof *fill);
    double *s = malloc(7 * (n ? n : 1) * sizeof *s);
    int rc = (!off || !fill || !s) ? -1 : 0;
    if (!rc) {
        for (size_t c = 0; c < nc; c++) off[c + 1] = off[c] + d->cells[c].n;
        double *tm = s, *p95 = s + n, *by = s + 2 * n, *bw = s + 3 * n, *tf = s + 4 * n, *wt = s + 5 * n,
               *hd = s + 6 * n;
        for (size_t i = 0; i < n; i++) {
            size_t c = d->row_cell[i], k = off[c] + fill[c]++;
            const epb_row_t *r = &d->rows[i];
            tm[k] = r->t_med_us;
            p95[k] = r->t_p95_us;
            by[k] = (double)r->bytes;
            bw[k] = r->busbw_gbps;
            /* gflop / us = 1e9 flop / 1e-6 s = 1e15 flop/s = 1e3 TFLOP/s */
            tf[k] = r->tflops > 0 ? r->tflops : (r->gflop > 0 && r->t_med_us > 0 ? r->gflop / r->t_med_us * 1e3 : 0);
            wt[k] = r->wait_us;
            hd[k] = r->hidden_us;
            int fail = r->check && !strcmp(r->check, "fail");
            d->cells[c].nfail += (size_t)fail;
            d->nfailrows += (size_t)fail;
        }
        for (size_t c = 0; c < nc; c++) {
            rp_cell_t *cl = &d->cells[c];
            size_t o = off[c];
            cl->t_med = tm + o; /* the block is freed through cells[0].t_med (rp_free) */
            cl->med = median_of(tm + o, cl->n);
            cl->p95 = median_of(p95 + o, cl->n);
            cl->bytes = median_of(by + o, cl->n);
            cl->busbw = median_of(bw + o, cl->n);
            cl->tflops = median_of(tf + o, cl->n);
            cl->wait = median_of(wt + o, cl->n);
            cl->hidden = median_of(hd + o, cl->n);
        }
        if (nc) {
            /* keep only the t_med block (the cells' samples); the rest was scratch */
            double *keep = realloc(s, (n ? n : 1) * sizeof *s);
            if (keep && keep != s)
                for (size_t c = 0; c < nc; c++) d->cells[c].t_med = keep + off[c];
            s = NULL;
        }
    }
    free(s);
    free(off);
    free(fill);
    return rc;
}

/* The moe configurations: strategies and phases of each, in order of first appearance, and their grids. */
static int build_confs(rp_data_t *d)
{
    size_t nc = d->ncells, cap = 0;
    size_t *sidx = malloc((nc ? nc : 1) * sizeof *sidx), *pidx = malloc((nc ? nc : 1) * sizeof *pidx);
    rp_map_t *sm = NULL, *pm = NULL; /* "conf|op|params" -> strategy, "conf|phase" -> phase */
    epb_rows_t tmp = { 0 };          /* the maps' keys */
    int rc = (!sidx || !pidx) ? -1 : 0;
    char buf[RP_KEY];
    for (size_t c = 0; c < nc && !rc; c++) {
        rp_cell_t *cl = &d->cells[c];
        sidx[c] = pidx[c] = RP_NONE;
        if (strcmp(cl->row->mode, "moe")) continue;
        size_t k = rp_map_get(d->by_cfg, cl->cfg);
        if (k == RP_NONE) {
            if (d->nconfs == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                rp_conf_t *nconf = realloc(d->confs, ncap * sizeof *nconf);
                if (!nconf) { rc = -1; break; }
                d->confs = nconf;
                cap = ncap;
            }
            k = d->nconfs++;
            memset(&d->confs[k], 0, sizeof d->confs[k]);
            d->confs[k].cfg = cl->cfg;
            d->confs[k].head = cl;
            if (rp_map_put(&d->by_cfg, cl->cfg, k)) { rc = -1; break; }
        }
        cl->conf = k;
        rp_conf_t *f = &d->confs[k];
        size_t l = key_text(buf, sizeof buf, (size_t)snprintf(buf, sizeof buf, "%zu|", k), cl->row->op);
        key_text(buf, sizeof buf, l, cl->row->params ? cl->row->params : "");
        size_t s = rp_map_get(sm, buf);
        if (s == RP_NONE) {
            const char *kk = epb_strpool_add(&tmp.pool, buf, strlen(buf));
            if (!kk || rp_map_put(&sm, kk, s = f->nstrat++)) { rc = -1; break; }
        }
        sidx[c] = s;
        if (cl->kind == RP_TOTAL) continue;
        key_text(buf, sizeof buf, (size_t)snprintf(buf, sizeof buf, "%zu|", k), cl->row->phase);
        size_t p = rp_map_get(pm, buf);
        if (p == RP_NONE) {
            const char *kk = epb_strpool_add(&tmp.pool, buf, strlen(buf));
            if (!kk || rp_map_put(&pm, kk, p = f->nphase++)) { rc = -1; break; }
        }
        pidx[c] = p;
    }
    for (size_t k = 0; k < d->nconfs && !rc; k++) {
        rp_conf_t *f = &d->confs[k];
        f->gs = f->nstrat < RP_MAXS ? f->nstrat : RP_MAXS;
        f->gp = f->nphase < RP_MAXP ? f->nphase : RP_MAXP;
        f->strat = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->strat);
        f->step = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->step);
        f->phase = calloc(f->nphase ? f->nphase : 1, sizeof *f->phase);
        f->grid = calloc(f->gs && f->gp ? f->gs * f->gp : 1, sizeof *f->grid);
        f->comm_us = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_us);
        f->comm_bytes = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_bytes);
        f->ncomm = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->ncomm);
        f->comm_wait = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_wait);
        f->comm_only_us = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_only_us);
        f->comm_only_bytes = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_only_bytes);
        f->comm_only_model = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->comm_only_model);
        f->phase_us = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->phase_us);
        f->sfail = calloc(f->nstrat ? f->nstrat : 1, sizeof *f->sfail);
        if (!f->strat || !f->step || !f->phase || !f->grid || !f->comm_us || !f->comm_bytes || !f->ncomm ||
            !f->comm_wait || !f->comm_only_us || !f->comm_only_bytes || !f->comm_only_model || !f->phase_us || !f->sfail)
            rc = -1;
    }
    for (size_t c = 0; c < nc && !rc; c++) {
        const rp_cell_t *cl = &d->cells[c];
        if (sidx[c] == RP_NONE) continue;
        rp_conf_t *f = &d->confs[cl->conf];
        size_t s = sidx[c], p = pidx[c];
        if (!f->strat[s]) f->strat[s] = cl;
        /* a repetition whose check failed says so on its rows: the strategy's failed repetitions are the most any
         * of its cells counts */
        if (cl->nfail > f->sfail[s]) {
            f->nfail += cl->nfail - f->sfail[s];
            f->sfail[s] = cl->nfail;
        }
        if (cl->kind == RP_TOTAL) {
            if (!f->step[s]) f->step[s] = cl;
            continue;
        }
        if (!f->phase[p]) f->phase[p] = cl->row->phase;
        f->phase_us[s] += cl->med;
        if (rp_is_comm_kind(cl->kind)) {
            f->comm_us[s] += cl->med;
            f->comm_bytes[s] += cl->bytes;
            f->ncomm[s]++;
        }
        if (cl->kind == RP_COMM) {
            f->comm_only_us[s] += cl->med;
            f->comm_only_bytes[s] += cl->bytes;
            /* a row without the description's bytes (an older schema) leaves the strategy without a model */
            if (f->comm_only_model[s] >= 0)
                f->comm_only_model[s] = cl->row->model_bytes >= 0 ? f->comm_only_model[s] + cl->row->model_bytes : -1;
            /* a phase's wait is part of its time; the medians of the two need not keep that order */
            f->comm_wait[s] += cl->wait < cl->med ? cl->wait : cl->med;
        }
        if (s < f->gs && p < f->gp && !f->grid[s * f->gp + p]) f->grid[s * f->gp + p] = cl;
    }
    rp_map_free(sm);
    rp_map_free(pm);
    epb_rows_free(&tmp);
    free(sidx);
    free(pidx);
    return rc;
}

/* ---- groups of cells the comparisons look up: the coll rows of one collective on one machine shape, the
 * peak rows of one host class ---- */

static size_t coll_key(char *buf, size_t n, const char *coll, const char *hclass, int ranks, int nodes)
{
    size_t l = key_text(buf, n, 0, "coll");
    l = key_text(buf, n, l, coll);
    l = key_text(buf, n, l, hclass);
    if (l < n) snprintf(buf + l, n - l, "P%d|N%d", ranks, nodes);
    return l;
}

static void peak_key(char *buf, size_t n, const char *hclass)
{
    key_text(buf, n, key_text(buf, n, 0, "peak"), hclass);
}

/* The group key of cell c, or 0 when it belongs to none. */
static int group_key(const rp_cell_t *c, char *buf, size_t n)
{
    const epb_row_t *q = c->row;
    if (!strcmp(q->mode, "coll") && q->bytes > 0 && c->busbw > 0) {
        coll_key(buf, n, q->coll && *q->coll ? q->coll : q->op, c->hclass, q->ranks, q->nodes);
        return 1;
    }
    if (!strcmp(q->mode, "peak") && !strcmp(q->op, "gemm")) {
        peak_key(buf, n, c->hclass);
        return 1;
    }
    return 0;
}

static int build_groups(rp_data_t *d)
{
    size_t nc = d->ncells, ng = 0;
    size_t *g = malloc((nc ? nc : 1) * sizeof *g), *cnt = NULL;
    char buf[RP_KEY];
    int rc = g ? 0 : -1;
    for (size_t c = 0; c < nc && !rc; c++) {
        g[c] = RP_NONE;
        if (!group_key(&d->cells[c], buf, sizeof buf)) continue;
        size_t k = rp_map_get(d->by_group, buf);
        if (k == RP_NONE) {
            const char *kk = intern(d, buf);
            if (!kk || rp_map_put(&d->by_group, kk, k = ng++)) rc = -1;
        }
        g[c] = k;
    }
    if (!rc) {
        d->grp_off = calloc(ng + 1, sizeof *d->grp_off);
        d->grp_cell = malloc((nc ? nc : 1) * sizeof *d->grp_cell);
        cnt = calloc(ng ? ng : 1, sizeof *cnt);
        if (!d->grp_off || !d->grp_cell || !cnt) rc = -1;
    }
    if (!rc) {
        for (size_t c = 0; c < nc; c++)
            if (g[c] != RP_NONE) d->grp_off[g[c] + 1]++;
        for (size_t k = 0; k < ng; k++) d->grp_off[k + 1] += d->grp_off[k];
        for (size_t c = 0; c < nc; c++)
            if (g[c] != RP_NONE) d->grp_cell[d->grp_off[g[c]] + cnt[g[c]]++] = c;
    }
    free(g);
    free(cnt);
    return rc;
}

static const size_t *group_cells(const rp_data_t *d, const char *key, size_t *n)
{
    size_t k = rp_map_get(d->by_group, key);
    *n = k == RP_NONE ? 0 : d->grp_off[k + 1] - d->grp_off[k];
    return k == RP_NONE ? NULL : d->grp_cell + d->grp_off[k];
}

const size_t *rp_coll_cells(const rp_data_t *d, const char *coll, const char *hclass, int ranks, int nodes, size_t *n)
{
    char buf[RP_KEY];
    coll_key(buf, sizeof buf, coll, hclass, ranks, nodes);
    return group_cells(d, buf, n);
}

const size_t *rp_peak_cells(const rp_data_t *d, const char *hclass, size_t *n)
{
    char buf[RP_KEY];
    peak_key(buf, sizeof buf, hclass);
    return group_cells(d, buf, n);
}

/* Rows a caller built may leave text NULL (the writer's convention for empty); the reader never does. */
static void empty_text(epb_row_t *r)
{
    const char **t[] = { &r->run_id, &r->utc, &r->git_rev, &r->host, &r->hosts, &r->backend, &r->device,
                         &r->device_name, &r->mode, &r->op, &r->dtype, &r->router, &r->params, &r->phase, &r->kind,
                         &r->coll, &r->check };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!*t[i]) *t[i] = "";
}

int rp_group(rp_data_t *d, epb_err_t *err)
{
    size_t n = d->nrows, cap = 0;
    d->cells = NULL;
    d->ncells = 0;
    if (n == 0) return EPB_OK;
    for (size_t i = 0; i < n; i++) empty_text(&d->rows[i]);
    if (!(d->row_cell = malloc(n * sizeof *d->row_cell))) return epb_fail(err, EPB_ESYS, "out of memory");
    char key[RP_KEY];
    for (size_t i = 0; i < n; i++) {
        const epb_row_t *r = &d->rows[i];
        int derived, kind = row_kind(r, &derived);
        if (kind < 0)
            return epb_fail(err, EPB_EUSAGE, "row %zu: kind '%.40s' is not compute, comm, sync or total", i + 1,
                            r->kind);
        d->nderived += (size_t)derived;
        rp_cell_key(r, key, sizeof key);
        size_t c = rp_map_get(d->by_key, key);
        if (c == RP_NONE) {
            if (new_cell(d, i, key, (rp_kind_t)kind, &cap)) return epb_fail(err, EPB_ESYS, "out of memory");
            c = d->ncells - 1;
        }
        d->row_cell[i] = c;
        d->cells[c].n++;
    }
    if (cell_stats(d) || build_confs(d) || build_groups(d)) return epb_fail(err, EPB_ESYS, "out of memory");
    return EPB_OK;
}

/* Checks the kinds of the rows [from, to) read from path, so that the error names the file. */
static int check_kinds(const rp_data_t *d, size_t from, size_t to, const char *path, epb_err_t *err)
{
    for (size_t i = from; i < to; i++) {
        int derived;
        if (row_kind(&d->table.rows[i], &derived) < 0)
            return epb_fail(err, EPB_EUSAGE, "%s: data row %zu: kind '%.40s' is not compute, comm, sync or total",
                            path, i - from + 1, d->table.rows[i].kind);
    }
    return EPB_OK;
}

int rp_load(rp_data_t *d, char *const *paths, int npaths, epb_err_t *err)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < npaths; i++) {
        size_t before = d->table.nrows;
        int rc = epb_csv_read(paths[i], &d->table, err);
        if (rc == EPB_OK) rc = check_kinds(d, before, d->table.nrows, paths[i], err);
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
    if (d->ncells) free(d->cells[0].t_med); /* one block holds every cell's samples (cell_stats) */
    free(d->cells);
    for (size_t k = 0; k < d->nconfs; k++) {
        free(d->confs[k].strat);
        free(d->confs[k].step);
        free(d->confs[k].phase);
        free(d->confs[k].grid);
        free(d->confs[k].comm_us);
        free(d->confs[k].comm_bytes);
        free(d->confs[k].ncomm);
        free(d->confs[k].comm_wait);
        free(d->confs[k].comm_only_us);
        free(d->confs[k].comm_only_bytes);
        free(d->confs[k].comm_only_model);
        free(d->confs[k].phase_us);
        free(d->confs[k].sfail);
    }
    free(d->confs);
    free(d->row_cell);
    rp_map_free(d->by_key);
    rp_map_free(d->by_cfg);
    rp_map_free(d->by_group);
    free(d->grp_off);
    free(d->grp_cell);
    epb_rows_free(&d->keys);
    if (d->table.rows == d->rows) d->rows = NULL; /* rows built by a caller (tests) are theirs */
    epb_rows_free(&d->table);
    memset(d, 0, sizeof *d);
}

/* ---- lookups ---- */

const rp_conf_t *rp_conf(const rp_data_t *d, const char *cfg)
{
    size_t k = rp_map_get(d->by_cfg, cfg);
    return k == RP_NONE ? NULL : &d->confs[k];
}

static size_t strat_index(const rp_conf_t *f, const char *strategy)
{
    for (size_t s = 0; s < f->nstrat; s++)
        if (!strcmp(f->strat[s]->strategy, strategy)) return s;
    return RP_NONE;
}

const rp_cell_t *rp_step(const rp_data_t *d, const char *cfg, const char *strategy)
{
    const rp_conf_t *f = rp_conf(d, cfg);
    size_t s = f ? strat_index(f, strategy) : RP_NONE;
    return s == RP_NONE ? NULL : f->step[s];
}

const rp_cell_t *rp_find(const rp_data_t *d, const char *cfg, const char *strategy, const char *phase)
{
    const rp_conf_t *f = rp_conf(d, cfg);
    size_t s = f ? strat_index(f, strategy) : RP_NONE;
    if (s == RP_NONE) return NULL;
    if (f->step[s] && !strcmp(f->step[s]->row->phase, phase)) return f->step[s];
    /* the cell key of this strategy's row with the phase replaced */
    epb_row_t r = *f->strat[s]->row;
    r.phase = phase;
    char key[RP_KEY];
    rp_cell_key(&r, key, sizeof key);
    size_t c = rp_map_get(d->by_key, key);
    return c == RP_NONE ? NULL : &d->cells[c];
}
