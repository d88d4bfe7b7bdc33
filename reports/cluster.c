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

/* obj.key as an object; *o NULL when absent and optional */
static int get_obj(const char *path, json_t *obj, const char *key, const char *field, json_t **o, epb_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return bad(err, path, field, "missing");
    if (!json_is_object(v)) return bad(err, path, field, "expected an object");
    *o = v;
    return EPB_OK;
}

static int get_num(const char *path, json_t *obj, const char *key, const char *field, double lo, double hi, double *x,
                   epb_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return bad(err, path, field, "missing");
    if (!json_is_number(v)) return bad(err, path, field, "expected a number");
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) {
        char why[128];
        if (lo > 0 && lo < 1e-6)
            snprintf(why, sizeof why, "%g is out of range: must be > 0 (and at most %g)", d, hi);
        else
            snprintf(why, sizeof why, "%g is out of range: must be in [%g, %g]", d, lo, hi);
        return bad(err, path, field, why);
    }
    *x = d;
    return EPB_OK;
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

/* {"value": X, "source": "..."} */
static int get_value(const char *path, json_t *root, const char *key, double lo, double hi, double *x, epb_err_t *err)
{
    json_t *o = NULL;
    char f[160];
    int rc = get_obj(path, root, key, key, &o, err);
    snprintf(f, sizeof f, "%s.value", key);
    if (!rc) rc = get_num(path, o, "value", f, lo, hi, x, err);
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
    if ((rc = get_num(path, o, "lat_us", g, 0, 1e7, &l->lat_us, err))) return rc;
    snprintf(g, sizeof g, "%s.bw_gbps", f);
    if ((rc = get_num(path, o, "bw_gbps", g, 1e-9, 1e6, &l->bw_gbps, err))) return rc;
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
        double b = json_number_value(json_array_get(p, 0)), t = json_number_value(json_array_get(p, 1));
        if (!(b > 0) || !(t > 0) || !isfinite(b) || !isfinite(t)) return bad(err, path, g, "bytes and us must be > 0");
        if (i && b <= l->pt_bytes[i - 1]) return bad(err, path, g, "bytes must increase");
        l->pt_bytes[i] = b;
        l->pt_us[i] = t;
        l->npoints = (int)i + 1;
    }
    return EPB_OK;
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
    if ((rc = get_value(path, root, "gpus_per_node", 1, 1 << 20, &x, err))) goto out;
    if (x != floor(x)) { rc = bad(err, path, "gpus_per_node.value", "expected an integer"); goto out; }
    c->gpus_per_node = (int)x;
    if ((rc = get_value(path, root, "elem_bytes", 1, 8, &x, err))) goto out;
    if (x != floor(x)) { rc = bad(err, path, "elem_bytes.value", "expected an integer"); goto out; }
    c->elem_bytes = (int)x;
    if ((rc = get_value(path, root, "copy_gbps", 1e-9, 1e6, &c->copy_gbps, err))) goto out;
    if ((rc = get_value(path, root, "phase_overhead_us", 0, 1e6, &c->overhead_us, err))) goto out;
    if ((rc = get_obj(path, root, "gemm", "gemm", &g, err))) goto out;
    if ((rc = get_num(path, g, "tflops", "gemm.tflops", 1e-9, 1e6, &c->gemm_tflops, err))) goto out;
    if ((rc = get_source(path, g, "gemm", NULL, 0, err))) goto out;
    json_t *rows = json_object_get(g, "rows"), *eff = json_object_get(g, "efficiency");
    if (!rows) { rc = bad(err, path, "gemm.rows", "missing"); goto out; }
    if (!eff) { rc = bad(err, path, "gemm.efficiency", "missing"); goto out; }
    if (!json_is_array(rows) || json_array_size(rows) < 1 || json_array_size(rows) > RP_MAXPTS) {
        rc = bad(err, path, "gemm.rows", "expected an array of 1 to 32 numbers");
        goto out;
    }
    if (!json_is_array(eff) || json_array_size(eff) != json_array_size(rows)) {
        rc = bad(err, path, "gemm.efficiency", "expected an array as long as gemm.rows");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i), *e = json_array_get(eff, i);
        char f[64];
        snprintf(f, sizeof f, "gemm.rows[%zu]", i);
        if (!json_is_number(r) || !(json_number_value(r) >= 1) || (i && json_number_value(r) <= c->curve_m[i - 1])) {
            rc = bad(err, path, f, "expected increasing numbers >= 1");
            goto out;
        }
        snprintf(f, sizeof f, "gemm.efficiency[%zu]", i);
        if (!json_is_number(e) || !(json_number_value(e) > 0) || json_number_value(e) > 1) {
            rc = bad(err, path, f, "expected a number in (0, 1]");
            goto out;
        }
        c->curve_m[i] = json_number_value(r);
        c->curve_eff[i] = json_number_value(e);
        c->ncurve = (int)i + 1;
    }
    static const char *const lname[2] = { "intra", "inter" };
    for (int l = 0; l < 2; l++) {
        if ((rc = get_obj(path, root, lname[l], lname[l], &lv, err))) goto out;
        for (int co = 0; co < RP_NCO; co++)
            if ((rc = get_link(path, lv, lname[l], co, l ? &c->inter[co] : &c->intra[co], err))) goto out;
    }
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
    json_t *root = json_pack("{s:s, s:s, s:s, s:s}", "format", RP_CLUSTER_FORMAT, "name", c->name, "host_class",
                             c->host_class, "source", source);
    int rc = EPB_OK;
    if (!root) return epb_fail(err, EPB_ESYS, "out of memory");
    json_object_set_new(root, "gpus_per_node", valued(c->gpus_per_node, "ranks per node of the calibration (params rpn)"));
    json_object_set_new(root, "elem_bytes", valued(c->elem_bytes, "f32: the CPU backend's element"));
    json_object_set_new(root, "copy_gbps", valued(c->copy_gbps, "mode=peak op=memcpy: the median copy rate per rank, every rank at once"));
    json_object_set_new(root, "phase_overhead_us", valued(c->overhead_us, "CPU ranks: no kernel launches"));
    json_t *rows = json_array(), *eff = json_array();
    for (int i = 0; i < c->ncurve; i++) {
        json_array_append_new(rows, json_real(c->curve_m[i]));
        json_array_append_new(eff, json_real(c->curve_eff[i]));
    }
    json_object_set_new(root, "gemm", json_pack("{s:f, s:o, s:o, s:s}", "tflops", c->gemm_tflops, "rows", rows,
                                                "efficiency", eff, "source",
                                                "mode=peak op=gemm, K = N = 1024, by M: the best TFLOP/s and each M's share of it"));
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
