/* moe/ops.h: the compute-backend interface of the MoE layer. moe/cpu (OpenBLAS, float32) implements it today;
 * moe/cuda (kernels + cuBLAS, float32 or bf16) implements the same table later. Strategies (local, agrs, tp2ep)
 * are written once against this table plus the communicator, never per device.
 *
 * Conventions (llm.c style):
 * - Arguments: outputs first, then saved activations, then inputs/weights, then sizes.
 * - Every *_backward ADDS into its gradient outputs; the caller zeroes them (ops->zero) before a step.
 * - Memory: "backend" pointers come from ops->alloc (host for cpu, device for cuda); "host" pointers are plain
 *   host memory. Tensors marked (act) have the backend's activation dtype (float32 on cpu); router scores, gate
 *   weights and their gradients are always float32, as DESIGN.md computes the router in fp32.
 * - Rows of (token, choice) pairs are indexed i = t*k + j. An assignment maps each pair to a local expert; pairs
 *   whose expert is not in [e0, e0+El) are "not here" (pos = -1) and are skipped by every op.
 * - Functions return EPB_OK or EPB_ESYS with the reason in be->err. */
#ifndef EPB_MOE_OPS_H
#define EPB_MOE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "epb.h"

typedef enum { MOE_F32, MOE_BF16 } moe_dtype_t;
typedef enum { MOE_SOFTMAX, MOE_SIGMOID } moe_router_t;
/* which (token, expert) pairs an expert over its capacity keeps (moe.h "expert capacity") */
typedef enum { MOE_DROP_PROBS, MOE_DROP_POSITION } moe_drop_t;

/* The router's rule (DESIGN.md "The MoE layer"), passed by value to route_forward/route_backward and to the
 * per-token functions of route_row.h. */
#define MOE_MAX_GROUPS 64 /* a token's allowed groups are one 64-bit mask */
typedef struct {
    moe_router_t router; /* softmax | sigmoid over all E experts */
    int norm;            /* renormalise the k gate weights to sum 1 */
    double skew;         /* logits get -skew*ln(e+1) */
    double scale;        /* the gate weights (after renormalisation) times this: --route-scale, 1 = off */
    int groups;          /* G equal groups of consecutive experts; a token chooses among the experts of its */
    int topk_groups;     /* topk_groups best groups only (a group's score: the sum of its two best biased scores);
                          * 1 and 1 = no groups */
} moe_route_t;

typedef struct moe_backend moe_backend_t;
typedef struct moe_event moe_event_t; /* a point on the backend's timeline (a clock reading or a cudaEvent) */

typedef struct {
    const char *name; /* "cpu", "cuda" */

    /* ---- memory, copies, sync, timing ---- */
    void *(*alloc)(moe_backend_t *be, size_t bytes); /* 64-byte aligned; NULL (reason in be->err) on failure */
    void (*free)(moe_backend_t *be, void *p);
    int (*zero)(moe_backend_t *be, void *p, size_t bytes);
    int (*to_backend)(moe_backend_t *be, void *dst, const void *host_src, size_t bytes);
    int (*to_host)(moe_backend_t *be, void *host_dst, const void *src, size_t bytes);
    int (*copy)(moe_backend_t *be, void *dst, const void *src, size_t bytes); /* backend to backend */
    int (*sync)(moe_backend_t *be);                                          /* wait for queued work */
    int (*event_create)(moe_backend_t *be, moe_event_t **ev);
    void (*event_destroy)(moe_backend_t *be, moe_event_t *ev);
    int (*event_record)(moe_backend_t *be, moe_event_t *ev);
    /* microseconds from a to b; waits for b */
    int (*event_elapsed_us)(moe_backend_t *be, const moe_event_t *a, const moe_event_t *b, double *us);
    void (*destroy)(moe_backend_t *be);

    /* ---- router ----
     * scores = softmax|sigmoid(x @ Wr - skew*ln(e+1)); choice j of token t = the j-th largest of scores+bias
     * among the experts of the token's rt.topk_groups best groups (ties to the lower expert, and group, index);
     * topk_w = the unbiased scores of the choices, renormalised to sum 1 when rt.norm, times rt.scale.
     * counts[e] = number of choices of expert e (written, not added). */
    int (*route_forward)(moe_backend_t *be,
                         float *scores,       /* (N,E) backend, saved for backward */
                         int32_t *topk_idx,   /* (N,k) backend */
                         float *topk_w,       /* (N,k) backend */
                         int64_t *counts,     /* (E)   host */
                         const void *x,       /* (N,D) backend (act) */
                         const float *Wr,     /* (D,E) backend */
                         const float *bias,   /* (E)   backend, expert_bias */
                         long N, long D, int E, int k, moe_route_t rt);
    /* d_gate -> dx += dlogits @ Wr^T and dWr += x^T @ dlogits (through the scale, renormalisation and
     * softmax|sigmoid; the selection, groups included, is not differentiated). work holds N*E floats of scratch. */
    int (*route_backward)(moe_backend_t *be,
                          void *dx,             /* (N,D) backend (act), added into */
                          float *dWr,           /* (D,E) backend, added into */
                          float *work,          /* (N,E) backend scratch */
                          const float *d_gate,  /* (N,k) backend */
                          const float *scores,  /* (N,E) saved */
                          const int32_t *topk_idx, const float *topk_w, /* (N,k) saved */
                          const void *x, const float *Wr,
                          long N, long D, int E, int k, moe_route_t rt);

    /* ---- permutation ----
     * Stable counting sort of the N*k pairs by local expert a = assign[i] - e0 (pairs with a outside [0,El) are
     * not here): xp row pos[i] = x[i / k]; rows of local expert a are [offsets[a], offsets[a+1]), in pair order.
     * offsets[El] = number of rows here. xp must hold that many rows (N*k at most). */
    int (*permute_forward)(moe_backend_t *be,
                           void *xp,              /* (rows,D) backend (act) */
                           int32_t *pos,          /* (N*k) backend: row of pair i in xp, or -1 */
                           int64_t *offsets,      /* (El+1) host */
                           const void *x,         /* (N,D) backend (act) */
                           const int32_t *assign, /* (N*k) backend, global expert ids (e.g. topk_idx) */
                           long N, int k, long D, int e0, int El);
    /* dx[t] += sum_j d_xp[pos[t*k+j]] */
    int (*permute_backward)(moe_backend_t *be, void *dx, const void *d_xp, const int32_t *pos, long N, int k,
                            long D);

    /* The inverse of permute_forward for n rows: out[i] = rows[pos[i]] (zeros where pos[i] = -1); with k = 1
     * it undoes a regrouping (e.g. a receiver's rows grouped by (source, expert) -> by expert -> back). */
    int (*unpermute_forward)(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, long D);
    /* d_rows[pos[i]] += d_out[i] */
    int (*unpermute_backward)(moe_backend_t *be, void *d_rows, const void *d_out, const int32_t *pos, long n,
                              long D);

    /* ---- experts (SwiGLU over contiguous rows per local expert) ----
     * rows [offsets[a], offsets[a+1]) go through expert a: a1 = xp w1[a], a3 = xp w3[a], s = sigmoid(a1),
     * h = a1*s*a3, out = h w2[a]. Experts with no rows are skipped. offsets are host memory. */
    int (*experts_forward)(moe_backend_t *be,
                           void *out,                  /* (rows,D) backend (act) */
                           void *a1, void *a3, void *s, /* (rows,F) saved */
                           void *h,                    /* (rows,F) scratch */
                           const void *xp,             /* (rows,D) */
                           const void *w1, const void *w3, /* (El,D,F) */
                           const void *w2,             /* (El,F,D) */
                           const int64_t *offsets, int El, long D, long F);
    /* d_xp += ..., dw1/dw3/dw2 += ... ; work holds 2*rows*F (act) of scratch */
    int (*experts_backward)(moe_backend_t *be,
                            void *d_xp,                 /* (rows,D) */
                            void *dw1, void *dw3,       /* (El,D,F) */
                            void *dw2,                  /* (El,F,D) */
                            void *work,                 /* (2,rows,F) scratch */
                            const void *d_out,          /* (rows,D) */
                            const void *a1, const void *a3, const void *s, /* (rows,F) saved */
                            const void *xp, const void *w1, const void *w3, const void *w2,
                            const int64_t *offsets, int El, long D, long F);

    /* ---- one dense product (bench --calibrate's GEMM ceiling): C (M,N) = A (M,K) B (K,N), row-major, act ---- */
    int (*gemm)(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K);

    /* ---- gate weights on rows placed by pair (--gate-before: the expert sees gate * x) ----
     * out[pos[i]] = w[i] * in[i / k] for the N*k pairs i with pos[i] >= 0 (w NULL: weight 1, a plain scatter);
     * other rows of out untouched. pos == NULL means out is laid out per pair (row i). */
    int (*scale_rows_forward)(moe_backend_t *be,
                              void *out,           /* (rows,D) backend (act), written */
                              const void *in,      /* (N,D) */
                              const int32_t *pos,  /* (N*k) or NULL */
                              const float *w,      /* (N*k) or NULL */
                              long N, int k, long D);
    /* d_in[t] += sum_j w[t*k+j] * d_out[pos[t*k+j]] (j in order); d_w[i] += dot(d_out[pos[i]], in[t]) (d_w may be
     * NULL: not computed) */
    int (*scale_rows_backward)(moe_backend_t *be,
                               void *d_in,          /* (N,D) added into */
                               float *d_w,          /* (N*k) added into, or NULL */
                               const void *d_out,   /* (rows,D) */
                               const void *in,      /* (N,D) */
                               const int32_t *pos, const float *w,
                               long N, int k, long D);
    /* ---- FP8 rows (--dispatch-dtype fp8; moe.h "FP8 dispatch rows" gives the format and the rounding) ----
     * q: n packed rows of moe_fp8_row_bytes(D) bytes each, from x (n,D) (act) */
    int (*quant_fp8)(moe_backend_t *be, void *q, const void *x, long n, long D);
    /* x (n,D) (act) = code * scale of the n packed rows q (rounded to bf16 for a bf16 backend) */
    int (*dequant_fp8)(moe_backend_t *be, void *x, const void *q, long n, long D);
    /* out row i = rows row pos[i] for n rows of row_bytes bytes (a multiple of 4), copied as they are: a relay
     * forwarding packed rows */
    int (*gather_bytes)(moe_backend_t *be, void *out, const void *rows, const int32_t *pos, long n, size_t row_bytes);
    /* y[i] += a[i] over n elements (act): the shared experts' output into the layer's */
    int (*add)(moe_backend_t *be, void *y, const void *a, size_t n);

    /* ---- unpermute + combine (gate weights applied on the token's side) ----
     * y[t] = sum_{j=0..k-1} topk_w[t,j] * ep_out[pos[t*k+j]], in that order, pairs with pos -1 skipped.
     * pos == NULL means ep_out is laid out per pair (row t*k+j); topk_w == NULL means weight 1 (the gates were
     * applied before the experts). y is written. */
    int (*combine_forward)(moe_backend_t *be,
                           void *y,               /* (N,D) backend (act) */
                           const void *ep_out,    /* (rows,D) */
                           const int32_t *pos,    /* (N*k) or NULL */
                           const float *topk_w,   /* (N,k) */
                           long N, int k, long D);
    /* d_ep_out[pos[i]] += topk_w[i] * dy[t]; d_gate[i] += dot(dy[t], ep_out[pos[i]]). topk_w == NULL: weight 1;
     * d_gate == NULL: not computed (ep_out unused) */
    int (*combine_backward)(moe_backend_t *be,
                            void *d_ep_out,        /* (rows,D) */
                            float *d_gate,         /* (N,k) */
                            const void *dy,        /* (N,D) */
                            const void *ep_out, const int32_t *pos, const float *topk_w,
                            long N, int k, long D);
} moe_ops_t;

/* What a phase forbids (moe_backend_guard): the compute ops (route, permute, unpermute, experts, scale_rows, the FP8
 * rows, add, combine), and the memory ops that move data (zero, copy, to_backend, to_host) */
enum { MOE_FORBID_COMPUTE = 1, MOE_FORBID_MEMOPS = 2 };

struct moe_backend {
    const moe_ops_t *ops;
    const moe_ops_t *real; /* the backend's own table once moe_backend_guard put the guard in front of it */
    unsigned forbid;       /* MOE_FORBID_* bits the guard enforces now (the run framework sets them per phase) */
    const char *forbid_why; /* the phase that forbids them, for the message */
    moe_dtype_t dtype;          /* activation/weight dtype */
    int on_device;              /* 0: backend memory is host memory */
    size_t cur_bytes, peak_bytes; /* through ops->alloc: what peak_mem_bytes reports */
    epb_err_t err;
    void *impl;
};

/* Puts a guard in front of be's ops (once): every op is forwarded unless be->forbid refuses it, which fails with
 * EPB_ESYS naming the op and be->forbid_why. */
void moe_backend_guard(moe_backend_t *be);
static inline const char *moe_backend_name(const moe_backend_t *be) { return (be->real ? be->real : be->ops)->name; }

#endif
