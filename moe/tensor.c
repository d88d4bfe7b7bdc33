/* Activation tensors between host float32 and a backend of either dtype, and the comparisons of results. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"

void moe_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = epb_bf16_to_f32(epb_f32_to_bf16(x[i]));
}

int moe_act_to_backend(moe_backend_t *be, void *dst, const float *src, size_t n)
{
    if (be->dtype == MOE_F32) return be->ops->to_backend(be, dst, src, n * 4);
    epb_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return epb_fail(&be->err, EPB_ESYS, "out of memory converting %zu values to bf16", n);
    for (size_t i = 0; i < n; i++) h[i] = epb_f32_to_bf16(src[i]);
    int rc = be->ops->to_backend(be, dst, h, n * sizeof *h);
    free(h);
    return rc;
}

int moe_act_to_host(moe_backend_t *be, float *dst, const void *src, size_t n)
{
    if (be->dtype == MOE_F32) return be->ops->to_host(be, dst, src, n * 4);
    epb_bf16 *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return epb_fail(&be->err, EPB_ESYS, "out of memory converting %zu values from bf16", n);
    int rc = be->ops->to_host(be, h, src, n * sizeof *h);
    for (size_t i = 0; !rc && i < n; i++) dst[i] = epb_bf16_to_f32(h[i]);
    free(h);
    return rc;
}

double moe_rel_err_l2(const float *a, const float *ref, size_t n)
{
    double dd = 0, rr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        dd += d * d; /* NaN sticks */
        rr += (double)ref[i] * ref[i];
    }
    if (isnan(dd)) return NAN;
    return rr > 0 ? sqrt(dd / rr) : sqrt(dd);
}

double moe_rel_err_dt(moe_dtype_t dtype, const float *a, const float *ref, size_t n)
{
    return dtype == MOE_BF16 ? moe_rel_err_l2(a, ref, n) : moe_rel_err(a, ref, n);
}

double moe_rel_err(const float *a, const float *ref, size_t n)
{
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN sticks */
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    if (isnan(maxdiff)) return NAN;
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}
