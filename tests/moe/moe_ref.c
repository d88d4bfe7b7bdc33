/* Double-precision plain-loop MoE layer: see moe_ref.h. Written from DESIGN.md, sharing no code with moe/. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe_ref.h"

/* scores (E) of token t, unbiased */
static void ref_scores(double *sc, const ref_in_t *in, long t)
{
    const moe_config_t *c = in->c;
    for (int e = 0; e < c->E; e++) {
        double l = -c->skew * log(e + 1.0);
        for (long d = 0; d < c->D; d++) l += in->x[t * c->D + d] * in->Wr[d * c->E + e];
        sc[e] = l;
    }
    if (c->router == MOE_SOFTMAX) {
        double mx = sc[0], sum = 0;
        for (int e = 1; e < c->E; e++) mx = fmax(mx, sc[e]);
        for (int e = 0; e < c->E; e++) sum += (sc[e] = exp(sc[e] - mx));
        for (int e = 0; e < c->E; e++) sc[e] /= sum;
    } else {
        for (int e = 0; e < c->E; e++) sc[e] = 1 / (1 + exp(-sc[e]));
    }
}

/* choices of token t by sorting all experts on biased score (descending, lower index first on ties) */
static double ref_select(int32_t *idx, double *gate, const double *sc, const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    int order[c->E];
    for (int e = 0; e < c->E; e++) order[e] = e;
    for (int a = 1; a < c->E; a++) /* insertion sort, stable */
        for (int b = a; b > 0; b--) {
            double vb = sc[order[b]] + in->bias[order[b]], va = sc[order[b - 1]] + in->bias[order[b - 1]];
            if (vb > va) {
                int tmp = order[b];
                order[b] = order[b - 1], order[b - 1] = tmp;
            } else {
                break;
            }
        }
    double S = 0;
    for (int j = 0; j < c->k; j++) idx[j] = order[j], S += (gate[j] = sc[order[j]]);
    if (c->route_norm)
        for (int j = 0; j < c->k; j++) gate[j] /= S;
    if (c->k == c->E) return INFINITY;
    return (sc[order[c->k - 1]] + in->bias[order[c->k - 1]]) - (sc[order[c->k]] + in->bias[order[c->k]]);
}

/* a1, a3 (F) and out (D) of expert e on token t */
static void ref_expert(double *a1, double *a3, double *out, const ref_in_t *in, long t, int e)
{
    long D = in->c->D, F = in->c->F;
    const double *x = in->x + t * D;
    for (long f = 0; f < F; f++) {
        a1[f] = a3[f] = 0;
        for (long d = 0; d < D; d++) {
            a1[f] += x[d] * in->w1[(e * D + d) * F + f];
            a3[f] += x[d] * in->w3[(e * D + d) * F + f];
        }
    }
    for (long d = 0; d < D; d++) {
        out[d] = 0;
        for (long f = 0; f < F; f++) out[d] += a1[f] / (1 + exp(-a1[f])) * a3[f] * in->w2[(e * F + f) * D + d];
    }
}

void ref_forward(double *y, int32_t *idx, double *gate, int64_t *counts, double *margin, const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    long D = c->D, F = c->F;
    int k = c->k;
    double *sc = malloc(sizeof(double) * (size_t)(c->E + 2 * F + D)), *a1 = sc + c->E, *a3 = a1 + F, *o = a3 + F;
    memset(counts, 0, sizeof *counts * (size_t)c->E);
    *margin = INFINITY;
    for (long t = 0; t < in->N; t++) {
        ref_scores(sc, in, t);
        *margin = fmin(*margin, ref_select(idx + t * k, gate + t * k, sc, in));
        for (long d = 0; d < D; d++) y[t * D + d] = 0;
        for (int j = 0; j < k; j++) {
            counts[idx[t * k + j]]++;
            ref_expert(a1, a3, o, in, t, idx[t * k + j]);
            for (long d = 0; d < D; d++) y[t * D + d] += gate[t * k + j] * o[d];
        }
    }
    free(sc);
}

void ref_backward(double *dx, double *dWr, double *dw1, double *dw3, double *dw2, const double *dy,
                  const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    long D = c->D, F = c->F, N = in->N;
    int E = c->E, k = c->k;
    memset(dx, 0, sizeof *dx * (size_t)(N * D));
    memset(dWr, 0, sizeof *dWr * (size_t)(D * E));
    memset(dw1, 0, sizeof *dw1 * (size_t)(E * D * F));
    memset(dw3, 0, sizeof *dw3 * (size_t)(E * D * F));
    memset(dw2, 0, sizeof *dw2 * (size_t)(E * F * D));
    double *sc = malloc(sizeof(double) * (size_t)(2 * E + 3 * F + D + 2 * k)), *ds = sc + E, *a1 = ds + E,
           *a3 = a1 + F, *dh = a3 + F, *o = dh + F, *gate = o + D, *dg = gate + k;
    int32_t idx[k];
    for (long t = 0; t < N; t++) {
        const double *x = in->x + t * D, *g = dy + t * D;
        ref_scores(sc, in, t);
        ref_select(idx, gate, sc, in);
        for (int j = 0; j < k; j++) {
            int e = idx[j];
            ref_expert(a1, a3, o, in, t, e);
            dg[j] = 0;
            for (long d = 0; d < D; d++) dg[j] += g[d] * o[d];
            for (long f = 0; f < F; f++) {
                double sg = 1 / (1 + exp(-a1[f])), h = a1[f] * sg * a3[f];
                dh[f] = 0;
                for (long d = 0; d < D; d++) {
                    dh[f] += gate[j] * g[d] * in->w2[(e * F + f) * D + d];
                    dw2[(e * F + f) * D + d] += h * gate[j] * g[d];
                }
                double da1 = dh[f] * a3[f] * sg * (1 + a1[f] * (1 - sg)), da3 = dh[f] * a1[f] * sg;
                for (long d = 0; d < D; d++) {
                    dw1[(e * D + d) * F + f] += x[d] * da1;
                    dw3[(e * D + d) * F + f] += x[d] * da3;
                    dx[t * D + d] += in->w1[(e * D + d) * F + f] * da1 + in->w3[(e * D + d) * F + f] * da3;
                }
            }
        }
        /* gate -> scores (renormalisation) -> logits (softmax | sigmoid) */
        for (int e = 0; e < E; e++) ds[e] = 0;
        double S = 0;
        for (int j = 0; j < k; j++) S += sc[idx[j]];
        for (int j = 0; j < k; j++) {
            if (!c->route_norm) {
                ds[idx[j]] += dg[j];
                continue;
            }
            for (int i = 0; i < k; i++) /* d(s_i/S)/d s_j = [i==j]/S - s_i/S^2 */
                ds[idx[j]] += dg[i] * ((i == j) / S - sc[idx[i]] / (S * S));
        }
        double dot = 0;
        for (int e = 0; e < E; e++) dot += ds[e] * sc[e];
        for (int e = 0; e < E; e++) {
            double dl = c->router == MOE_SOFTMAX ? sc[e] * (ds[e] - dot) : ds[e] * sc[e] * (1 - sc[e]);
            for (long d = 0; d < D; d++) {
                dx[t * D + d] += dl * in->Wr[d * E + e];
                dWr[d * E + e] += x[d] * dl;
            }
        }
    }
    free(sc);
}
