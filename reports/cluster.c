/* Cluster files (docs/CLUSTER.md): what the projection knows of a GPU cluster, or of the machine that ran
 * `bench --calibrate` (report --calibration-out). JSON through jansson; every number sits in an object that names
 * its source. A file that is not JSON, lacks a field, has one of the wrong type or a bandwidth, time or count out
 * of range is refused (EPB_EUSAGE, "FILE: FIELD: reason"). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"

const char *const rp_co_names[RP_NCO] = { "alltoall", "allgather", "reduce_scatter", "allreduce" };

static int bad(epb_err_t *err, const char *path, const char *field, const char *why)
{
    return epb_fail(err, EPB_EUSAGE, "%s: %s: %s", path, field, why);
}

/* The ranges a cluster file's numbers must lie in. The reader refuses a file outside them and the writer
 * (--calibration-out) refuses to write one, so that every file written can be read. */
typedef struct {
    double lo, hi; /* lo > 0 tiny: "must be > 0" */
    int integer;
} range_t;
static const range_t R_GPUS = { 1, 1 << 20, 1 }, R_ELEM = { 1, 8, 1 }, R_RATE = { 1e-9, 1e6, 0 },
                     R_OVERHEAD = { 0, 1e6, 0 }, R_LAT = { 0, 1e7, 0 };

static int check_num(const char *path, const char *field, double d, const range_t *r, epb_err_t *err)
{
    char why[128];
    if (!isfinite(d) || d < r->lo || d > r->hi) {
        if (r->lo > 0 && r->lo < 1e-6)
            snprintf(why, sizeof why, "%g is out of range: must be > 0 (and at most %g)", d, r->hi);
        else
            snprintf(why, sizeof why, "%g is out of range: must be in [%g, %g]", d, r->lo, r->hi);
        return bad(err, path, field, why);
    }
    if (r->integer && d != floor(d)) return bad(err, path, field, "expected an integer");
    return EPB_OK;
}

/* measured points: bytes and us > 0, bytes increasing */
static int check_points(const char *path, const char *field, const rp_link_t *l, epb_err_t *err)
{
    char g[200];
    for (int i = 0; i < l->npoints; i++) {
        double b = l->pt_bytes[i], t = l->pt_us[i];
        snprintf(g, sizeof g, "%s.points[%d]", field, i);
        if (!(b > 0) || !(t > 0) || !isfinite(b) || !isfinite(t)) return bad(err, path, g, "bytes and us must be > 0");
        if (i && b <= l->pt_bytes[i - 1]) return bad(err, path, g, "bytes must increase");
    }
    return EPB_OK;
}

/* rows of a curve: 1 to RP_MAXPTS increasing numbers >= 1 */
static int check_curve(const char *path, const char *field, int n, const double *m, epb_err_t *err)
{
    char f[64];
    if (n < 1 || n > RP_MAXPTS) return bad(err, path, field, "expected an array of 1 to 32 numbers");
    for (int i = 0; i < n; i++) {
        snprintf(f, sizeof f, "%s[%d]", field, i);
        if (!(m[i] >= 1) || !isfinite(m[i]) || (i && m[i] <= m[i - 1]))
            return bad(err, path, f, "expected increasing numbers >= 1");
    }
    return EPB_OK;
}

/* Every number of c in its range: the one check of the reader and the writer. */
static int cluster_check(const char *path, const rp_cluster_t *c, epb_err_t *err)
{
    int rc;
    if ((rc = check_num(path, "gpus_per_node.value", c->gpus_per_node, &R_GPUS, err)) ||
        (rc = check_num(path, "elem_bytes.value", c->elem_bytes, &R_ELEM, err)) ||
        (rc = check_num(path, "copy_gbps.value", c->copy_gbps, &R_RATE, err)) ||
        (rc = check_num(path, "phase_overhead_us.value", c->overhead_us, &R_OVERHEAD, err)) ||
        (rc = check_num(path, "gemm.tflops", c->gemm_tflops, &R_RATE, err)))
        return rc;
    if (c->ncurve < 1) return bad(err, path, "gemm.rows", "expected an array of 1 to 32 numbers");
    char f[64], g[200];
    if ((rc = check_curve(path, "gemm.rows", c->ncurve, c->curve_m, err))) return rc;
    for (int i = 0; i < c->ncurve; i++) {
        snprintf(f, sizeof f, "gemm.efficiency[%d]", i);
        if (!(c->curve_eff[i] > 0) || c->curve_eff[i] > 1) return bad(err, path, f, "expected a number in (0, 1]");
    }
    if (c->nxcurve && (rc = check_curve(path, "experts.rows", c->nxcurve, c->xcurve_m, err))) return rc;
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < c->nxcurve; i++) {
            snprintf(f, sizeof f, "experts.%s_efficiency[%d]", d ? "bwd" : "fwd", i);
            if (!(c->xcurve_eff[d][i] > 0) || c->xcurve_eff[d][i] > 1)
                return bad(err, path, f, "expected a number in (0, 1] (a share of gemm.tflops)");
        }
    static const char *const lname[2] = { "intra", "inter" };
    for (int l = 0; l < 2; l++)
        for (int co = 0; co < RP_NCO; co++) {
            const rp_link_t *k = l ? &c->inter[co] : &c->intra[co];
            snprintf(f, sizeof f, "%s.%s", lname[l], rp_co_names[co]);
            snprintf(g, sizeof g, "%s.lat_us", f);
            if ((rc = check_num(path, g, k->lat_us, &R_LAT, err))) return rc;
            snprintf(g, sizeof g, "%s.bw_gbps", f);
            if ((rc = check_num(path, g, k->bw_gbps, &R_RATE, err))) return rc;
            if ((rc = check_points(path, f, k, err))) return rc;
        }
    return EPB_OK;
}

/* obj.key as an object; *o NULL when absent and optional */
static int get_obj(const char *path, json_t *obj, const char *key, const char *field, json_t **o, epb_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return bad(err, path, field, "missing");
    if (!json_is_object(v)) return bad(err, path, field, "expected an object");
    *o = v;
    return EPB_OK;
}

static int get_num(const char *path, json_t *obj, const char *key, const char *field, const range_t *r, double *x,
                   epb_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return bad(err, path, field, "missing");
    if (!json_is_number(v)) return bad(err, path, field, "expected a number");
    double d = json_number_value(v);
    int rc = check_num(path, field, d, r, err);
    if (!rc) *x = d;
    return rc;
}

/* every object that holds numbers holds a "source": a non-empty string */
static int get_source(const char *path, json_t *obj, const char *field, char *out, size_t n, epb_err_t *err)
{
    char f[160];
    snprintf(f, sizeof f, "%s%ssource", field, *field ? "." : "");
    json_t *v = json_object_get(obj, "source");
    if (!v) return bad(err, path, f, "missing (every number names its source)");
    if (!json_is_string(v) || !*json_string_value(v)) return bad(err, path, f, "expected a non-empty string");
    if (out) snprintf(out, n, "%s", json_string_value(v));
    return EPB_OK;
}

/* obj.key: an array of 1 to RP_MAXPTS numbers into x; with like (the array it must be as long as) *n is its length,
 * else *n is set. The ranges are cluster_check's. */
static int get_array(const char *path, json_t *obj, const char *field, const char *key, const char *like, double *x,
                     int *n, epb_err_t *err)
{
    char f[96], g[160];
    snprintf(f, sizeof f, "%s.%s", field, key);
    json_t *a = json_object_get(obj, key);
    if (!a) return bad(err, path, f, "missing");
    if (like && (!json_is_array(a) || (int)json_array_size(a) != *n)) {
        snprintf(g, sizeof g, "expected an array as long as %s.%s", field, like);
        return bad(err, path, f, g);
    }
    if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > RP_MAXPTS)
        return bad(err, path, f, "expected an array of 1 to 32 numbers");
    for (size_t i = 0; i < json_array_size(a); i++) {
        snprintf(g, sizeof g, "%s[%zu]", f, i);
        if (!json_is_number(json_array_get(a, i))) return bad(err, path, g, "expected a number");
        x[i] = json_number_value(json_array_get(a, i));
    }
    *n = (int)json_array_size(a);
    return EPB_OK;
}

/* {"value": X, "source": "..."} */
static int get_value(const char *path, json_t *root, const char *key, const range_t *r, double *x, epb_err_t *err)
{
    json_t *o = NULL;
    char f[160];
    int rc = get_obj(path, root, key, key, &o, err);
    snprintf(f, sizeof f, "%s.value", key);
    if (!rc) rc = get_num(path, o, "value", f, r, x, err);
    if (!rc) rc = get_source(path, o, key, NULL, 0, err);
    return rc;
}

static int get_link(const char *path, json_t *level, const char *lname, int co, rp_link_t *l, epb_err_t *err)
{
    json_t *o = NULL;
    char f[160], g[200];
    snprintf(f, sizeof f, "%s.%s", lname, rp_co_names[co]);
    int rc = get_obj(path, level, rp_co_names[co], f, &o, err);
    if (rc) return rc;
    snprintf(g, sizeof g, "%s.lat_us", f);
    if ((rc = get_num(path, o, "lat_us", g, &R_LAT, &l->lat_us, err))) return rc;
    snprintf(g, sizeof g, "%s.bw_gbps", f);
    if ((rc = get_num(path, o, "bw_gbps", g, &R_RATE, &l->bw_gbps, err))) return rc;
    if ((rc = get_source(path, o, f, NULL, 0, err))) return rc;
    l->npoints = 0;
    json_t *pts = json_object_get(o, "points");
    if (!pts) return EPB_OK;
    snprintf(g, sizeof g, "%s.points", f);
    if (!json_is_array(pts) || json_array_size(pts) < 1 || json_array_size(pts) > RP_MAXPTS)
        return bad(err, path, g, "expected an array of 1 to 32 [bytes, us] pairs");
    for (size_t i = 0; i < json_array_size(pts); i++) {
        json_t *p = json_array_get(pts, i);
        snprintf(g, sizeof g, "%s.points[%zu]", f, i);
        if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_number(json_array_get(p, 0)) ||
            !json_is_number(json_array_get(p, 1)))
            return bad(err, path, g, "expected [bytes, us], two numbers");
        l->pt_bytes[i] = json_number_value(json_array_get(p, 0));
        l->pt_us[i] = json_number_value(json_array_get(p, 1));
        l->npoints = (int)i + 1;
    }
    return check_points(path, f, l, err);
}

int rp_cluster_load(const char *path, rp_cluster_t *c, epb_err_t *err)
{
    memset(c, 0, sizeof *c);
    json_error_t je;
    int fd, rc = epb_open_regular(path, &fd, err); /* a directory is not "not JSON", a FIFO is never waited on */
    if (rc) return rc;
    json_t *root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
    close(fd);
    if (!root) {
        if (je.line < 0) return epb_fail(err, EPB_EUSAGE, "%s: %s", path, je.text);
        return epb_fail(err, EPB_EUSAGE, "%s: not JSON: line %d column %d: %s", path, je.line, je.column, je.text);
    }
    double x;
    json_t *v, *lv = NULL, *g = NULL;
    if (!json_is_object(root)) {
        rc = bad(err, path, "(top level)", "expected an object");
        goto out;
    }
    v = json_object_get(root, "format");
    if (!v) rc = bad(err, path, "format", "missing");
    else if (!json_is_string(v) || strcmp(json_string_value(v), RP_CLUSTER_FORMAT))
        rc = bad(err, path, "format", "expected \"" RP_CLUSTER_FORMAT "\"");
    if (rc) goto out;
    v = json_object_get(root, "name");
    if (!v) rc = bad(err, path, "name", "missing");
    else if (!json_is_string(v) || !*json_string_value(v)) rc = bad(err, path, "name", "expected a non-empty string");
    if (rc) goto out;
    snprintf(c->name, sizeof c->name, "%s", json_string_value(v));
    v = json_object_get(root, "host_class");
    if (v && !json_is_string(v)) {
        rc = bad(err, path, "host_class", "expected a string");
        goto out;
    }
    if (v) snprintf(c->host_class, sizeof c->host_class, "%s", json_string_value(v));
    if ((rc = get_value(path, root, "gpus_per_node", &R_GPUS, &x, err))) goto out;
    c->gpus_per_node = (int)x;
    if ((rc = get_value(path, root, "elem_bytes", &R_ELEM, &x, err))) goto out;
    c->elem_bytes = (int)x;
    if ((rc = get_value(path, root, "copy_gbps", &R_RATE, &c->copy_gbps, err))) goto out;
    if ((rc = get_value(path, root, "phase_overhead_us", &R_OVERHEAD, &c->overhead_us, err))) goto out;
    if ((rc = get_obj(path, root, "gemm", "gemm", &g, err))) goto out;
    if ((rc = get_num(path, g, "tflops", "gemm.tflops", &R_RATE, &c->gemm_tflops, err))) goto out;
    if ((rc = get_source(path, g, "gemm", NULL, 0, err))) goto out;
    if ((rc = get_array(path, g, "gemm", "rows", NULL, c->curve_m, &c->ncurve, err)) ||
        (rc = get_array(path, g, "gemm", "efficiency", "rows", c->curve_eff, &c->ncurve, err)))
        goto out;
    json_t *xo = json_object_get(root, "experts"); /* optional */
    if (xo && !json_is_object(xo)) {
        rc = bad(err, path, "experts", "expected an object");
        goto out;
    }
    if (xo && ((rc = get_source(path, xo, "experts", NULL, 0, err)) ||
               (rc = get_array(path, xo, "experts", "rows", NULL, c->xcurve_m, &c->nxcurve, err)) ||
               (rc = get_array(path, xo, "experts", "fwd_efficiency", "rows", c->xcurve_eff[0], &c->nxcurve, err)) ||
               (rc = get_array(path, xo, "experts", "bwd_efficiency", "rows", c->xcurve_eff[1], &c->nxcurve, err))))
        goto out;
    static const char *const lname[2] = { "intra", "inter" };
    for (int l = 0; l < 2; l++) {
        if ((rc = get_obj(path, root, lname[l], lname[l], &lv, err))) goto out;
        for (int co = 0; co < RP_NCO; co++)
            if ((rc = get_link(path, lv, lname[l], co, l ? &c->inter[co] : &c->intra[co], err))) goto out;
    }
    rc = cluster_check(path, c, err); /* the ranges of what was read together (the curve's order) */
out:
    json_decref(root);
    return rc;
}

/* ---- writing (report --calibration-out) ---- */

static json_t *valued(double x, const char *source)
{
    return json_pack("{s:f, s:s}", "value", x, "source", source);
}

int rp_cluster_write(const char *path, const rp_cluster_t *c, const char *source, epb_err_t *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    if (access(slash ? (*dir ? dir : "/") : ".", W_OK))
        return epb_fail(err, EPB_EUSAGE, "--calibration-out %s: cannot write in %s: %s", path, slash ? dir : ".",
                        strerror(errno));
    /* what the reader would refuse is not written: the field out of range, named (the calibration's data) */
    char what[4200];
    snprintf(what, sizeof what, "--calibration-out %s", path);
    int rc = cluster_check(what, c, err);
    if (rc) return rc;
    json_t *root = json_pack("{s:s, s:s, s:s, s:s}", "format", RP_CLUSTER_FORMAT, "name", c->name, "host_class",
                             c->host_class, "source", source);
    if (!root) return epb_fail(err, EPB_ESYS, "out of memory");
    json_object_set_new(root, "gpus_per_node", valued(c->gpus_per_node, "ranks per node of the calibration (params rpn)"));
    json_object_set_new(root, "elem_bytes", valued(c->elem_bytes, c->elem_bytes == 2 ? "bf16: the mode=peak rows' dtype"
                                                                                      : "f32: the mode=peak rows' dtype"));
    json_object_set_new(root, "copy_gbps", valued(c->copy_gbps, "mode=peak op=memcpy: the median copy rate per rank, every rank at once"));
    json_object_set_new(root, "phase_overhead_us",
                        valued(c->overhead_us, c->nxcurve ? "0: the experts' curve holds each call's fixed cost (kernel "
                                                            "launches, the sync) at every M"
                                                          : "CPU ranks: no kernel launches"));
    json_t *rows = json_array(), *eff = json_array();
    for (int i = 0; i < c->ncurve; i++) {
        json_array_append_new(rows, json_real(c->curve_m[i]));
        json_array_append_new(eff, json_real(c->curve_eff[i]));
    }
    char src[256];
    snprintf(src, sizeof src, "mode=peak op=gemm, K = %ld, N = %ld, by M: the best TFLOP/s and each M's share of it",
             c->cal_kn[0], c->cal_kn[1]);
    json_object_set_new(root, "gemm", json_pack("{s:f, s:o, s:o, s:s}", "tflops", c->gemm_tflops, "rows", rows,
                                                "efficiency", eff, "source", src));
    if (c->nxcurve) {
        json_t *xr = json_array(), *xf = json_array(), *xb = json_array();
        for (int i = 0; i < c->nxcurve; i++) {
            json_array_append_new(xr, json_real(c->xcurve_m[i]));
            json_array_append_new(xf, json_real(c->xcurve_eff[0][i]));
            json_array_append_new(xb, json_real(c->xcurve_eff[1][i]));
        }
        snprintf(src, sizeof src, "mode=peak op=experts_fwd, experts_bwd (the SwiGLU ops of moe/ops.h, D = %ld, F = "
                 "%ld), by rows per expert: the best TFLOP/s of each as a share of gemm.tflops", c->cal_kn[0], c->cal_kn[1]);
        json_object_set_new(root, "experts", json_pack("{s:o, s:o, s:o, s:s}", "rows", xr, "fwd_efficiency", xf,
                                                       "bwd_efficiency", xb, "source", src));
    }
    static const char *const lname[2] = { "intra", "inter" };
    for (int l = 0; l < 2; l++) {
        json_t *lv = json_object();
        for (int co = 0; co < RP_NCO; co++) {
            const rp_link_t *k = l ? &c->inter[co] : &c->intra[co];
            json_t *pts = json_array();
            for (int i = 0; i < k->npoints; i++) json_array_append_new(pts, json_pack("[f, f]", k->pt_bytes[i], k->pt_us[i]));
            json_object_set_new(lv, rp_co_names[co], json_pack("{s:f, s:f, s:o, s:s}", "lat_us", k->lat_us, "bw_gbps",
                                                              k->bw_gbps, "points", pts, "source", c->link_src[l]));
        }
        json_object_set_new(root, lname[l], lv);
    }
    /* the file appears whole or not at all */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) || rename(tmp, path)) {
        rc = epb_fail(err, EPB_ESYS, "%s: %s", path, strerror(errno));
        remove(tmp);
    }
    json_decref(root);
    return rc;
}
