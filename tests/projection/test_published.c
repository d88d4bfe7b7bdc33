/* The projection's model against published GPU figures (tests/projection/published.json): each figure's
 * configuration through rp_model on the cluster file it names, its relative error against the published value,
 * and a check that the error stays within the bound recorded next to it (what the model achieves; docs/METHOD.md
 * says why the large ones are large). TAP output; a summary line with the median error.
 * Usage: test_published PUBLISHED.json */
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long num(json_t *f, const char *k) { return (long)json_integer_value(json_object_get(f, k)); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_published PUBLISHED.json\n");
        return 2;
    }
    json_error_t je;
    json_t *root = json_load_file(argv[1], 0, &je);
    if (!root) {
        printf("Bail out! %s: %s\n", argv[1], je.text);
        return 1;
    }
    char dir[4096], path[8300];
    snprintf(dir, sizeof dir, "%s", argv[1]);
    snprintf(path, sizeof path, "%s/%s", dirname(dir), json_string_value(json_object_get(root, "cluster")));
    rp_cluster_t cl, other;
    epb_err_t err = { "" };
    if (rp_cluster_load(path, &cl, &err)) {
        printf("Bail out! %s\n", err.msg);
        return 1;
    }
    json_t *figs = json_object_get(root, "figures");
    size_t n = json_array_size(figs);
    double *errs = calloc(n + 1, sizeof *errs);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(figs, i);
        const char *id = json_string_value(json_object_get(f, "id")), *ph = json_string_value(json_object_get(f, "phase")),
                   *metric = json_string_value(json_object_get(f, "metric")), *src = json_string_value(json_object_get(f, "source"));
        json_t *bnd = json_object_get(f, "bound");
        if (!id || !metric || !src || !*src || !json_is_number(bnd) || (!ph && strncmp(metric, "coll_", 5))) {
            printf("not ok %zu - figure %zu: id, metric, a source, a bound (and a phase) are needed\n", i + 1, i);
            bad++;
            continue;
        }
        json_t *fc = json_object_get(f, "cluster"); /* a figure may name its own cluster file */
        const rp_cluster_t *base = &cl;
        if (json_is_string(fc)) {
            snprintf(dir, sizeof dir, "%s", argv[1]);
            snprintf(path, sizeof path, "%s/%s", dirname(dir), json_string_value(fc));
            if (rp_cluster_load(path, &other, &err)) {
                printf("not ok %zu - %s: %s\n", i + 1, id, err.msg);
                bad++;
                continue;
            }
            base = &other;
        }
        if (!strncmp(metric, "coll_", 5)) { /* a bare collective, nccl-tests' way: time or busbw at a size */
            const char *cn = json_string_value(json_object_get(f, "coll"));
            int co = -1;
            for (int j = 0; cn && j < RP_NCO; j++)
                if (!strcmp(cn, rp_co_names[j])) co = j;
            double size = json_number_value(json_object_get(f, "size")), pub = json_number_value(json_object_get(f, "published"));
            int P = (int)num(f, "P");
            if (co < 0 || size <= 0 || P < 2) {
                printf("not ok %zu - %s: coll, size and P (>= 2) are needed\n", i + 1, id);
                bad++;
                continue;
            }
            double t = rp_coll_time(base, co, size, P), model = t;
            if (!strcmp(metric, "coll_busbw_gbps"))
                model = size / (t * 1e3) * (co == RP_CO_ALLREDUCE ? 2.0 * (P - 1) / P : (double)(P - 1) / P);
            double e = (model - pub) / pub, bound = json_number_value(bnd);
            errs[i] = fabs(e);
            int ok = fabs(e) <= bound;
            bad += !ok;
            printf("%s %zu - %s: model %.4g, published %.4g %s, error %+.1f%% (bound %.0f%%)\n", ok ? "ok" : "not ok", i + 1,
                   id, model, pub, metric + 5, 100 * e, 100 * bound);
            continue;
        }
        rp_mcfg_t m = { .T = num(f, "T"), .D = num(f, "D"), .F = 2048, .E = num(f, "E"), .k = num(f, "k"),
                        .P = (int)num(f, "P") };
        snprintf(m.spec, sizeof m.spec, "%s", json_string_value(json_object_get(f, "strategy")));
        rp_cluster_t c = *base;
        c.elem_bytes = (int)num(f, "elem_bytes");
        rp_pred_t pr;
        int p;
        for (p = 0; p < rp_model_nphases && strcmp(rp_model_phases[p], ph); p++) {}
        if (p == rp_model_nphases || rp_model(&c, &m, &pr, &err)) {
            printf("not ok %zu - %s: %s\n", i + 1, id, p == rp_model_nphases ? "unknown phase" : err.msg);
            bad++;
            continue;
        }
        double model, pub = json_number_value(json_object_get(f, "published"));
        const char *unit = "us";
        if (!strcmp(metric, "time_us"))
            model = pr.t_us[p];
        else { /* the busiest rank's bytes on the figure's level over the phase's time */
            const char *lv = json_string_value(json_object_get(f, "level"));
            double by = lv && !strcmp(lv, "inter") ? pr.bytes_inter[p] : pr.bytes_intra[p];
            model = by / (pr.t_us[p] * 1e3);
            unit = "GB/s";
        }
        double e = (model - pub) / pub, bound = json_number_value(bnd);
        errs[i] = fabs(e);
        int ok = fabs(e) <= bound;
        bad += !ok;
        printf("%s %zu - %s: model %.4g %s, published %.4g %s, error %+.1f%% (bound %.0f%%)\n", ok ? "ok" : "not ok",
               i + 1, id, model, unit, pub, unit, 100 * e, 100 * bound);
    }
    qsort(errs, n, sizeof *errs, cmp);
    printf("# %zu published figures, median |error| %.1f%%, largest %.1f%%\n", n,
           n ? 100 * (n % 2 ? errs[n / 2] : 0.5 * (errs[n / 2 - 1] + errs[n / 2])) : 0, n ? 100 * errs[n - 1] : 0);
    printf("1..%zu\n", n);
    free(errs);
    json_decref(root);
    return bad ? 1 : 0;
}
