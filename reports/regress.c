/* Regression verdicts: ratio of medians new/base with a seeded percentile-bootstrap confidence interval and a
 * minimum effect size. The rule is documented in reports/REGRESSION.md; keep the two in step. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *rp_verdict_name(rp_verdict_t v)
{
    switch (v) {
    case RP_SAME: return "same";
    case RP_SLOWER: return "slower";
    case RP_FASTER: return "faster";
    case RP_INSUFFICIENT: return "insufficient samples";
    case RP_TOO_SMALL: return "below timer floor";
    case RP_NVERDICTS: break;
    }
    return "?";
}

rp_rule_t rp_rule_default(void)
{
    return (rp_rule_t){ .min_effect = 0.05, .min_abs_us = 0.5, .noise_mult = 1.0, .resamples = 2000,
                        .seed = 0x65706265ull, .level = 0.95 };
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A sample prepared for resampling: its values sorted, the rank of each original index among them, and a count
 * per rank. A resample's median comes from the counts of its draws (O(n), no sort), and equals the median of the
 * drawn values sorted: the order statistics of a multiset do not depend on how it is ordered. */
typedef struct {
    size_t n;
    double *sorted;
    size_t *rank;
    uint32_t *count;
} resampler_t;

typedef struct {
    double v;
    size_t i;
} val_idx_t;

static int cmp_val_idx(const void *a, const void *b)
{
    const val_idx_t *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static void resampler_free(resampler_t *r)
{
    free(r->sorted);
    free(r->rank);
    free(r->count);
}

static int resampler_init(resampler_t *r, const double *s, size_t n)
{
    r->n = n;
    r->sorted = malloc(n * sizeof *r->sorted);
    r->rank = malloc(n * sizeof *r->rank);
    r->count = malloc(n * sizeof *r->count);
    val_idx_t *t = malloc(n * sizeof *t);
    if (!r->sorted || !r->rank || !r->count || !t) { free(t); resampler_free(r); return EPB_ESYS; }
    for (size_t i = 0; i < n; i++) t[i] = (val_idx_t){ s[i], i };
    qsort(t, n, sizeof *t, cmp_val_idx);
    for (size_t k = 0; k < n; k++) r->sorted[k] = t[k].v, r->rank[t[k].i] = k;
    free(t);
    return EPB_OK;
}

/* The k-th smallest (0-based) drawn value, walking the counts from rank *at with *below draws before it. */
static double nth_drawn(const resampler_t *r, size_t k, size_t *at, size_t *below)
{
    while (*at < r->n && *below + r->count[*at] <= k) *below += r->count[(*at)++];
    return r->sorted[*at < r->n ? *at : r->n - 1];
}

/* Median (epb_quantile_sorted's R-7 rule) of n values drawn with replacement from the sample, the draws numbered
 * from *idx in the hash stream: s[hash % n], as a plain resample would draw them. */
static double resample_median(resampler_t *r, uint64_t seed, uint64_t stream, uint64_t *idx)
{
    size_t n = r->n;
    memset(r->count, 0, n * sizeof *r->count);
    for (size_t i = 0; i < n; i++) r->count[r->rank[epb_hash64(seed, stream, (*idx)++) % n]]++;
    double h = 0.5 * (double)(n - 1);
    size_t lo = (size_t)h, at = 0, below = 0;
    double a = nth_drawn(r, lo, &at, &below);
    if (lo + 1 >= n) return a;
    double b = nth_drawn(r, lo + 1, &at, &below);
    return a + (h - (double)lo) * (b - a);
}

int rp_ratio_ci(const double *base, size_t nb, const double *now, size_t nn, const rp_rule_t *rule, uint64_t stream,
                double *lo, double *hi)
{
    *lo = *hi = 0;
    if (!nb || !nn) return EPB_OK;
    int B = rule->resamples > 0 ? rule->resamples : 2000;
    double *ratios = malloc((size_t)B * sizeof *ratios);
    resampler_t rb, rn;
    if (!ratios) return EPB_ESYS;
    if (resampler_init(&rb, base, nb)) { free(ratios); return EPB_ESYS; }
    if (resampler_init(&rn, now, nn)) { resampler_free(&rb); free(ratios); return EPB_ESYS; }
    uint64_t idx = 0;
    int m = 0;
    for (int b = 0; b < B; b++) {
        double mb = resample_median(&rb, rule->seed, stream, &idx);
        double mn = resample_median(&rn, rule->seed, stream, &idx);
        if (mb > 0) ratios[m++] = mn / mb;
    }
    resampler_free(&rb);
    resampler_free(&rn);
    qsort(ratios, (size_t)m, sizeof *ratios, cmp_double);
    double a = (1 - rule->level) / 2;
    *lo = m ? epb_quantile_sorted(ratios, (size_t)m, a) : 0;
    *hi = m ? epb_quantile_sorted(ratios, (size_t)m, 1 - a) : 0;
    free(ratios);
    return EPB_OK;
}

int rp_compare(const double *base, size_t nb, const double *now, size_t nn, const rp_rule_t *rule,
               uint64_t stream, rp_cmp_t *out)
{
    memset(out, 0, sizeof *out);
    out->nb = nb;
    out->nn = nn;
    epb_stats_t sb, sn;
    if (nb) epb_stats(base, nb, &sb);
    if (nn) epb_stats(now, nn, &sn);
    out->med_b = nb ? sb.med : 0;
    out->med_n = nn ? sn.med : 0;
    out->ratio = out->med_b > 0 ? out->med_n / out->med_b : 0;
    if (nb < 3 || nn < 3) { out->verdict = RP_INSUFFICIENT; return EPB_OK; }
    /* a phase that takes no time (local's dispatch), or under the timer floor on both sides: nothing to compare */
    if (out->med_b <= 0 || (out->med_b < rule->min_abs_us && out->med_n < rule->min_abs_us)) {
        out->verdict = RP_TOO_SMALL;
        return EPB_OK;
    }
    /* the baseline's own run-to-run spread, robustly: measurements that scatter more within a night also drift
     * more between nights (REGRESSION.md, "Noise-aware threshold"), so their threshold grows with it */
    double *dev = malloc(nb * sizeof *dev);
    if (!dev) return EPB_ESYS;
    for (size_t i = 0; i < nb; i++) dev[i] = fabs(base[i] - out->med_b);
    qsort(dev, nb, sizeof *dev, cmp_double);
    out->noise = 1.4826 * epb_quantile_sorted(dev, nb, 0.5) / out->med_b;
    free(dev);
    out->effect = rule->min_effect;
    if (rule->noise_mult * out->noise > out->effect) out->effect = rule->noise_mult * out->noise;
    if (rp_ratio_ci(base, nb, now, nn, rule, stream, &out->lo, &out->hi)) return EPB_ESYS;
    if (out->lo > 1 + out->effect)
        out->verdict = RP_SLOWER;
    else if (out->hi < 1 - out->effect)
        out->verdict = RP_FASTER;
    else
        out->verdict = RP_SAME;
    /* a significant change smaller than the timer floor is not worth an alarm (sub-microsecond phases) */
    if (out->verdict != RP_SAME && fabs(out->med_n - out->med_b) < rule->min_abs_us) out->verdict = RP_TOO_SMALL;
    return EPB_OK;
}

void rp_verdict_counts(const rp_match_t *m, size_t n, size_t counts[RP_NVERDICTS])
{
    memset(counts, 0, RP_NVERDICTS * sizeof *counts);
    for (size_t i = 0; i < n; i++) counts[m[i].cmp.verdict]++;
}

int rp_nothing_compared(const size_t counts[RP_NVERDICTS])
{
    return counts[RP_SAME] + counts[RP_SLOWER] + counts[RP_FASTER] == 0;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int rp_regress(const rp_data_t *base, const rp_data_t *now, const rp_rule_t *rule, rp_match_t **out,
               size_t *nout, size_t *nslower, epb_err_t *err)
{
    *out = NULL;
    *nout = *nslower = 0;
    if (now->ncells == 0) return EPB_OK;
    rp_match_t *m = calloc(now->ncells, sizeof *m);
    if (!m) return epb_fail(err, EPB_ESYS, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < now->ncells; i++) {
        const rp_cell_t *c = &now->cells[i];
        if (!strcmp(c->row->mode, "peak")) continue; /* calibration is context, not a result to guard */
        size_t j = rp_map_get(base->by_key, c->key);
        if (j == RP_NONE) continue;
        const rp_cell_t *b = &base->cells[j];
        /* a failed check makes a time meaningless: never compared (main says why and exits 1 for the new side) */
        if (rp_cell_failed(now, c) || rp_cell_failed(base, b)) continue;
        m[n].base = b;
        m[n].now = c;
        /* the stream is the cell key, so a verdict does not depend on which other cells are in the files */
        if (rp_compare(b->t_med, b->n, c->t_med, c->n, rule, fnv1a(c->key), &m[n].cmp)) {
            free(m);
            return epb_fail(err, EPB_ESYS, "out of memory");
        }
        *nslower += m[n].cmp.verdict == RP_SLOWER;
        n++;
    }
    *out = m;
    *nout = n;
    return EPB_OK;
}
