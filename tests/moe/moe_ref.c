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

/* order[0..n) sorted by v descending, lower index first on ties (stable insertion sort) */
static void sort_desc(int *order, const double *v, int n)
{
    for (int a = 0; a < n; a++) order[a] = a;
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && v[order[b]] > v[order[b - 1]]; b--) {
            int tmp = order[b];
            order[b] = order[b - 1], order[b - 1] = tmp;
        }
}

/* Choices of token t: with G groups, each group scored by the sum of its two best biased scores (its one score
 * for groups of one expert), the M best groups kept; then all kept experts sorted on biased score (descending,
 * lower index first on ties). Returns how far the selection is from a tie: the gap between the k-th and (k+1)-th
 * kept expert and between the M-th and (M+1)-th group (infinite where there is no such neighbour). */
static double ref_select(int32_t *idx, double *gate, const double *sc, const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    int E = c->E, G = c->groups > 1 ? c->groups : 1, M = G > 1 ? c->topk_groups : 1, gsz = E / G;
    double b[E], gs[G], margin = INFINITY, key[E];
    int order[E], gorder[G], keep[G];
    for (int e = 0; e < E; e++) b[e] = sc[e] + in->bias[e];
    for (int g = 0; g < G; g++) {
        int o[gsz];
        sort_desc(o, b + g * gsz, gsz);
        gs[g] = b[g * gsz + o[0]] + (gsz > 1 ? b[g * gsz + o[1]] : 0);
    }
    sort_desc(gorder, gs, G);
    for (int g = 0; g < G; g++) keep[g] = 0;
    for (int m = 0; m < M; m++) keep[gorder[m]] = 1;
    if (M < G) margin = gs[gorder[M - 1]] - gs[gorder[M]];
    for (int e = 0; e < E; e++) key[e] = keep[e / gsz] ? b[e] : -INFINITY; /* experts of other groups last */
    sort_desc(order, key, E);
    double S = 0;
    for (int j = 0; j < c->k; j++) idx[j] = order[j], S += (gate[j] = sc[order[j]]);
    for (int j = 0; j < c->k; j++) gate[j] = (c->route_norm ? gate[j] / S : gate[j]) * c->route_scale;
    if (c->k < M * gsz) margin = fmin(margin, key[order[c->k - 1]] - key[order[c->k]]);
    return margin;
}

/* One SwiGLU expert on one row: a1 = xin w1, a3 = xin w3 (F), out = (silu(a1) a3) w2 (D). w1, w3 are (D,F) with row
 * stride ld (F for a routed expert, S*Fs for a slice of the shared experts), w2 is (F,D). */
static void ref_ffn(double *a1, double *a3, double *out, const double *xin, const double *w1, const double *w3, long ld,
                    const double *w2, long D, long F)
{
    for (long f = 0; f < F; f++) {
        a1[f] = a3[f] = 0;
        for (long d = 0; d < D; d++) {
            a1[f] += xin[d] * w1[d * ld + f];
            a3[f] += xin[d] * w3[d * ld + f];
        }
    }
    for (long d = 0; d < D; d++) {
        out[d] = 0;
        for (long f = 0; f < F; f++) out[d] += a1[f] / (1 + exp(-a1[f])) * a3[f] * w2[f * D + d];
    }
}

/* Its backward from gout (D): dxin (D) written, dw1, dw3 (like w1, w3), dw2 added into. */
static void ref_ffn_bwd(double *dxin, double *dw1, double *dw3, double *dw2, const double *gout, const double *xin,
                        const double *w1, const double *w3, long ld, const double *w2, long D, long F)
{
    double a1[F], a3[F], o[D];
    ref_ffn(a1, a3, o, xin, w1, w3, ld, w2, D, F);
    for (long d = 0; d < D; d++) dxin[d] = 0;
    for (long f = 0; f < F; f++) {
        double sg = 1 / (1 + exp(-a1[f])), h = a1[f] * sg * a3[f], dh = 0;
        for (long d = 0; d < D; d++) {
            dh += gout[d] * w2[f * D + d];
            dw2[f * D + d] += h * gout[d];
        }
        double da1 = dh * a3[f] * sg * (1 + a1[f] * (1 - sg)), da3 = dh * a1[f] * sg;
        for (long d = 0; d < D; d++) {
            dw1[d * ld + f] += xin[d] * da1;
            dw3[d * ld + f] += xin[d] * da3;
            dxin[d] += w1[d * ld + f] * da1 + w3[d * ld + f] * da3;
        }
    }
}

void ref_forward(double *y, int32_t *idx, double *gate, int64_t *counts, double *margin, const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    long D = c->D, F = c->F, Fs = c->Fs, SF = (long)c->shared * Fs, FF = F > Fs ? F : Fs;
    int k = c->k;
    double *sc = malloc(sizeof(double) * (size_t)(c->E + 2 * FF + 2 * D)), *a1 = sc + c->E, *a3 = a1 + FF,
           *o = a3 + FF, *xin = o + D;
    memset(counts, 0, sizeof *counts * (size_t)c->E);
    *margin = INFINITY;
    for (long t = 0; t < in->N; t++) {
        const double *x = in->x + t * D;
        ref_scores(sc, in, t);
        *margin = fmin(*margin, ref_select(idx + t * k, gate + t * k, sc, in));
        for (long d = 0; d < D; d++) y[t * D + d] = 0;
        for (int j = 0; j < k; j++) {
            int e = idx[t * k + j];
            double g = gate[t * k + j];
            counts[e]++;
            /* gate after: y += g expert(x); gate before: y += expert(g x) */
            for (long d = 0; d < D; d++) xin[d] = c->gate_before ? g * x[d] : x[d];
            ref_ffn(a1, a3, o, xin, in->w1 + e * D * F, in->w3 + e * D * F, F, in->w2 + e * F * D, D, F);
            for (long d = 0; d < D; d++) y[t * D + d] += (c->gate_before ? 1 : g) * o[d];
        }
        for (int s = 0; s < c->shared; s++) { /* shared expert s: columns s*Fs.. of sw1, sw3, rows of sw2 */
            ref_ffn(a1, a3, o, x, in->sw1 + s * Fs, in->sw3 + s * Fs, SF, in->sw2 + s * Fs * D, D, Fs);
            for (long d = 0; d < D; d++) y[t * D + d] += o[d];
        }
    }
    free(sc);
}

void ref_backward(double *dx, double *dWr, double *dw1, double *dw3, double *dw2, double *dsw1, double *dsw3,
                  double *dsw2, const double *dy, const ref_in_t *in)
{
    const moe_config_t *c = in->c;
    long D = c->D, F = c->F, N = in->N, Fs = c->Fs, SF = (long)c->shared * Fs, FF = F > Fs ? F : Fs;
    int E = c->E, k = c->k;
    memset(dx, 0, sizeof *dx * (size_t)(N * D));
    memset(dWr, 0, sizeof *dWr * (size_t)(D * E));
    memset(dw1, 0, sizeof *dw1 * (size_t)(E * D * F));
    memset(dw3, 0, sizeof *dw3 * (size_t)(E * D * F));
    memset(dw2, 0, sizeof *dw2 * (size_t)(E * F * D));
    if (SF) {
        memset(dsw1, 0, sizeof *dsw1 * (size_t)(D * SF));
        memset(dsw3, 0, sizeof *dsw3 * (size_t)(D * SF));
        memset(dsw2, 0, sizeof *dsw2 * (size_t)(SF * D));
    }
    double *sc = malloc(sizeof(double) * (size_t)(2 * E + 2 * FF + 4 * D + 2 * k)), *ds = sc + E, *a1 = ds + E,
           *a3 = a1 + FF, *o = a3 + FF, *xin = o + D, *gout = xin + D, *dxin = gout + D, *gate = dxin + D,
           *dg = gate + k;
    int32_t idx[k];
    for (long t = 0; t < N; t++) {
        const double *x = in->x + t * D, *g = dy + t * D;
        ref_scores(sc, in, t);
        ref_select(idx, gate, sc, in);
        for (int j = 0; j < k; j++) {
            int e = idx[j];
            const double *w1 = in->w1 + e * D * F, *w3 = in->w3 + e * D * F, *w2 = in->w2 + e * F * D;
            for (long d = 0; d < D; d++) {
                xin[d] = c->gate_before ? gate[j] * x[d] : x[d];
                gout[d] = c->gate_before ? g[d] : gate[j] * g[d];
            }
            ref_ffn(a1, a3, o, xin, w1, w3, F, w2, D, F);
            ref_ffn_bwd(dxin, dw1 + e * D * F, dw3 + e * D * F, dw2 + e * F * D, gout, xin, w1, w3, F, w2, D, F);
            /* gate after: dg = <dy, expert(x)>; gate before: dg = <d(expert input), x>, dx gets g d(input) */
            dg[j] = 0;
            for (long d = 0; d < D; d++) {
                dg[j] += c->gate_before ? dxin[d] * x[d] : g[d] * o[d];
                dx[t * D + d] += (c->gate_before ? gate[j] : 1) * dxin[d];
            }
        }
        for (int s = 0; s < c->shared; s++) {
            ref_ffn_bwd(dxin, dsw1 + s * Fs, dsw3 + s * Fs, dsw2 + s * Fs * D, g, x, in->sw1 + s * Fs,
                        in->sw3 + s * Fs, SF, in->sw2 + s * Fs * D, D, Fs);
            for (long d = 0; d < D; d++) dx[t * D + d] += dxin[d];
        }
        /* gate -> scores (scale, renormalisation) -> logits (softmax | sigmoid) */
        for (int e = 0; e < E; e++) ds[e] = 0;
        double S = 0, cs = c->route_scale;
        for (int j = 0; j < k; j++) S += sc[idx[j]];
        for (int j = 0; j < k; j++) {
            if (!c->route_norm) {
                ds[idx[j]] += cs * dg[j];
                continue;
            }
            for (int i = 0; i < k; i++) /* d(c s_i/S)/d s_j = c([i==j]/S - s_i/S^2) */
                ds[idx[j]] += dg[i] * cs * ((i == j) / S - sc[idx[i]] / (S * S));
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
