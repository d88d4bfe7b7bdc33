#include "epb.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double epb_quantile_sorted(const double *s, size_t n, double q)
{
    if (n == 0) return 0.0;
    double h = q * (double)(n - 1); /* linear between closest ranks */
    size_t lo = (size_t)h;
    if (lo + 1 >= n) return s[n - 1];
    return s[lo] + (h - (double)lo) * (s[lo + 1] - s[lo]);
}

int epb_stats(const double *samples, size_t n, epb_stats_t *out)
{
    if (n == 0) return -1;
    double *s = malloc(n * sizeof *s);
    if (!s) return -1;
    memcpy(s, samples, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += s[i];
    out->min = s[0];
    out->max = s[n - 1];
    out->mean = sum / (double)n;
    out->med = epb_quantile_sorted(s, n, 0.5);
    out->p95 = epb_quantile_sorted(s, n, 0.95);
    free(s);
    return 0;
}
