/* An independent double-precision plain-loop implementation of DESIGN.md's MoE layer (token by token, no
 * permutation, no BLAS), the reference the tests hold moe/ against. */
#ifndef EPB_MOE_REF_H
#define EPB_MOE_REF_H
#include <stdint.h>

#include "moe.h"

typedef struct {
    const moe_config_t *c;
    long N;
    const double *x;       /* (N,D) */
    const double *Wr;      /* (D,E) */
    const double *bias;    /* (E) */
    const double *w1, *w3; /* (E,D,F) */
    const double *w2;      /* (E,F,D) */
    const double *sw1, *sw3; /* (D,S*Fs): shared expert s is columns s*Fs..(s+1)*Fs-1; NULL without shared */
    const double *sw2;     /* (S*Fs,D) */
} ref_in_t;

/* y (N,D); idx/gate (N,k); counts (E); margin = smallest gap, over tokens, between the k-th and (k+1)-th
 * biased score among the experts of the token's kept groups, and between the M-th and (M+1)-th group score (infinite
 * where there is no such neighbour): how far the selection is from a tie. Every feature of the config: route_scale,
 * groups, gate_before, shared experts. */
void ref_forward(double *y, int32_t *idx, double *gate, int64_t *counts, double *margin, const ref_in_t *in);
/* loss = sum(y*dy); gradients written (not added); dsw* (like sw*) unused without shared experts */
void ref_backward(double *dx, double *dWr, double *dw1, double *dw3, double *dw2, double *dsw1, double *dsw3,
                  double *dsw2, const double *dy, const ref_in_t *in);
#endif
