/* moe/route_row.h: the router's rule for one token, forward and backward, written once for moe/cpu (compiled by
 * the C compiler) and moe/cuda (compiled by nvcc as device code, one thread per token), so both devices route
 * by the same definition (DESIGN.md, "The MoE layer"). */
#ifndef EPB_MOE_ROUTE_ROW_H
#define EPB_MOE_ROUTE_ROW_H

#include <math.h>
#include <stdint.h>

#include "ops.h"

#ifdef __CUDACC__
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif

/* sc (E) holds the logits x[t] @ Wr on entry and the scores on return: minus skew*ln(e+1), then softmax or
 * sigmoid. With rt.groups G > 1 (E/G consecutive experts each), a group's score is the sum of its two best biased
 * scores (its one score for groups of one expert) and only the experts of the rt.topk_groups best groups (strict
 * '>': the lower group index on ties) may be chosen. chosen (k): the top-k of scores + bias among those, by
 * repeated arg-max; strict '>' keeps the lower index on ties. w (k): the unbiased scores of the choices,
 * renormalised to sum 1 when rt.norm, times rt.scale. The caller counts chosen. */
static inline MOE_HD void moe_route_row_forward(float *sc, int32_t *chosen, float *w, const float *bias, int E,
                                                int k, moe_route_t rt)
{
    if (rt.skew != 0)
        for (int e = 0; e < E; e++) sc[e] -= (float)(rt.skew * log((double)e + 1.0));
    if (rt.router == MOE_SOFTMAX) {
        float mx = sc[0], sum = 0;
        for (int e = 1; e < E; e++) mx = sc[e] > mx ? sc[e] : mx;
        for (int e = 0; e < E; e++) sum += (sc[e] = expf(sc[e] - mx));
        for (int e = 0; e < E; e++) sc[e] /= sum;
    } else {
        for (int e = 0; e < E; e++) sc[e] = 1.0f / (1.0f + expf(-sc[e]));
    }
    int G = rt.groups > 1 ? rt.groups : 1, gsz = E / G;
    uint64_t allowed = ~(uint64_t)0; /* bit g: group g may be chosen from */
    if (G > 1) {
        float gs[MOE_MAX_GROUPS];
        for (int g = 0; g < G; g++) {
            float b1 = sc[g * gsz] + bias[g * gsz], b2 = 0;
            int n2 = 0;
            for (int e = g * gsz + 1; e < (g + 1) * gsz; e++) {
                float v = sc[e] + bias[e];
                if (v > b1) b2 = b1, b1 = v;
                else if (!n2 || v > b2) b2 = v;
                n2 = 1;
            }
            gs[g] = n2 ? b1 + b2 : b1;
        }
        allowed = 0;
        for (int m = 0; m < rt.topk_groups && m < G; m++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!((allowed >> g) & 1) && (best < 0 || gs[g] > gs[best])) best = g;
            allowed |= (uint64_t)1 << best;
        }
    }
    float gsum = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        float bv = 0;
        for (int e = 0; e < E; e++) {
            if (!((allowed >> (e / gsz)) & 1)) continue;
            int seen = 0;
            for (int i = 0; i < j; i++) seen |= chosen[i] == e;
            if (seen) continue;
            float v = sc[e] + bias[e];
            if (best < 0 || v > bv) best = e, bv = v;
        }
        chosen[j] = best;
        w[j] = sc[best];
        gsum += sc[best];
    }
    if (rt.norm)
        for (int j = 0; j < k; j++) w[j] /= gsum;
    if (rt.scale != 1)
        for (int j = 0; j < k; j++) w[j] *= (float)rt.scale;
}

/* dl (E) = d(logits) of one token from g (k) = d(gate weights), through the scale, the renormalisation and
 * softmax|sigmoid; sc, idx, w as the forward left them. The chosen experts are distinct. */
static inline MOE_HD void moe_route_row_backward(float *dl, const float *g, const float *sc, const int32_t *idx,
                                                 const float *w, int E, int k, moe_route_t rt)
{
    /* w_j = c s_j / S: ds_j = (c g_j - sum_i g_i w_i) / S; without renormalisation w_j = c s_j: ds_j = c g_j */
    float S = 0, gw = 0, c = (float)rt.scale;
    int route_norm = rt.norm, sigmoid = rt.router == MOE_SIGMOID;
    if (route_norm)
        for (int j = 0; j < k; j++) S += sc[idx[j]], gw += g[j] * w[j];
#define MOE_DS(j) (route_norm ? (c * g[j] - gw) / S : c * g[j])
    for (int e = 0; e < E; e++) dl[e] = 0;
    if (!sigmoid) {
        /* dl_e = s_e (ds_e - dot), dot = sum_i s_i ds_i. For a chosen e, ds_e - dot cancels badly when s_e is
         * close to 1 (a peaked router), so it is computed as sum_{i != e} s_i (ds_e - ds_i) instead, with the
         * unchosen experts' share summed directly. */
        float dot = 0, unchosen = 0;
        for (int j = 0; j < k; j++) dot += MOE_DS(j) * sc[idx[j]];
        for (int e = 0; e < E; e++) {
            int is_chosen = 0;
            for (int j = 0; j < k; j++) is_chosen |= idx[j] == e;
            if (!is_chosen) unchosen += sc[e];
        }
        for (int e = 0; e < E; e++) dl[e] = -sc[e] * dot;
        for (int j = 0; j < k; j++) {
            float dsj = MOE_DS(j), acc = dsj * unchosen;
            for (int i = 0; i < k; i++)
                if (i != j) acc += sc[idx[i]] * (dsj - MOE_DS(i));
            dl[idx[j]] = sc[idx[j]] * acc;
        }
    } else {
        for (int j = 0; j < k; j++) dl[idx[j]] = MOE_DS(j) * (sc[idx[j]] * (1 - sc[idx[j]]));
    }
#undef MOE_DS
}

#endif
