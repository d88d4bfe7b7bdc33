/* moe/: the MoE layer of DESIGN.md ("The MoE layer"): configuration, seeded initialisation by global index, the
 * phases, the load-balancing bias update, the --dump writer, the CPU and CUDA backends and the BLAS report. The
 * run framework and the strategies (strategy `local` is the single-device semantics every strategy is checked
 * against) are in strategy.h. */
#ifndef EPB_MOE_H
#define EPB_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "epb.h"
#include "ops.h"

/* ---- configuration ---- */
typedef struct {
    long T;            /* tokens per rank */
    long D, F;         /* hidden, expert FFN size */
    int E, k;          /* experts, top_k */
    moe_router_t router;
    bool route_norm;   /* renormalise the k gate weights to sum 1 */
    double skew;       /* >= 0: logits get -skew*ln(e+1) */
    double bias_coeff; /* aux-loss-free bias update step */
    uint64_t seed;
    moe_dtype_t dtype;
    /* the features of published models (DESIGN.md "The MoE layer"); the defaults leave the layer as above */
    double route_scale; /* > 0: the gate weights, after renormalisation, times this (DeepSeek-V3: 2.5); 1 */
    int groups;         /* group-limited routing: E/groups consecutive experts per group (1: none) */
    int topk_groups;    /* a token chooses among the experts of its topk_groups best groups only (1 with groups 1) */
    bool gate_before;   /* the expert sees gate*x instead of its output being scaled (torchtitan's
                         * score_before_experts, Llama 4); false */
    int shared;         /* S shared SwiGLU experts every token passes through, added to y (0: none) */
    long Fs;            /* their FFN size each (0 when S is 0) */
    /* what crosses the wire */
    bool dispatch_fp8;  /* --dispatch-dtype fp8: every expert's input row is the e4m3 quantization of its token
                         * (DeepEP's dispatch format, moe_fp8_row_bytes), dequantized on the owner; the combine and
                         * the backward stay in the activation dtype (the quantization's gradient is the identity) */
    /* expert capacity (GShard, Switch, Megatron --moe-expert-capacity-factor), moe_capacity_drop: each capacity
     * group of cap_group consecutive tokens (a rank's T: the tokens one router call sees) keeps at most
     * moe_capacity(c) of its (token, expert) pairs per expert; the rest are dropped (they reach no expert and add
     * nothing to y, so their gradient is zero). tokens_per_expert and the bias update count the router's choices. */
    double capacity_factor; /* > 0: the capacity is ceil(capacity_factor * cap_group * k / E); 0: no capacity */
    moe_drop_t drop_policy; /* which pairs stay: the highest gate weights, or the first tokens */
    bool pad_to_capacity;   /* every (source, expert) block of the dispatch padded with zero rows to the capacity:
                             * the all-to-all's splits and the experts' rows fixed, as static-shape kernels need */
    long cap_group;         /* tokens per capacity group; 0: T (the check's reference sets the run's T) */
    /* redundant experts (DeepSeek's EPLB): E + redundant expert slots, (E + redundant)/P per rank; every expert has
     * one slot and the most loaded ones more (moe_redundant_place); a pair of a replicated expert goes to one of
     * its replicas (moe_replica_pick) and the replicas' gradients are summed. The layer stays the unreplicated one:
     * only where its rows are computed changes. 0: none. */
    int redundant;
} moe_config_t;

/* T=2048 D=1024 F=2048 E=16 k=2 softmax, no renormalisation, skew 0, bias_coeff 1e-3, seed 1, f32; route_scale 1,
 * groups 1 (topk_groups 1), gate after the experts, no shared experts, dispatch in the activation dtype, no expert
 * capacity (drop policy probs), no redundant experts */
moe_config_t moe_config_default(void);
/* EPB_EUSAGE with a one-line message naming the option ("--top-k 5 exceeds --experts 4"). */
int moe_config_validate(const moe_config_t *c, epb_err_t *err);
/* The router's rule of c (ops.h) */
moe_route_t moe_route_of(const moe_config_t *c);
/* The layer features of c that are not default, "key=val;..." in this order: shared, shared_ffn, gate_before,
 * route_scale, groups, topk_groups, dispatch_dtype, capacity_factor, drop_policy, pad_to_capacity, redundant ("" when none):
 * the CSV's params column after the strategy's parameters. */
void moe_config_params(const moe_config_t *c, char *buf, size_t n);

/* ---- expert capacity (--capacity-factor) ---- */
int moe_drop_parse(const char *s, moe_drop_t *out); /* "probs" | "position"; 0 or -1 */
const char *moe_drop_name(moe_drop_t d);
/* The pairs one expert keeps per capacity group: ceil(capacity_factor * G * k / E) with G = cap_group (T when 0),
 * at least 1; 0 without a capacity. */
long moe_capacity(const moe_config_t *c);
/* The tokens of one capacity group: cap_group, or T when 0 */
static inline long moe_capacity_group(const moe_config_t *c) { return c->cap_group > 0 ? c->cap_group : c->T; }
/* The capacity rule on N tokens' routing (idx, w: (N,k) as the router left them; N a multiple of the group size G,
 * tokens in global order): in each group of G tokens, expert e keeps its cap pairs with the largest gate weight
 * (MOE_DROP_PROBS; ties: the earlier token) or of the earliest tokens (MOE_DROP_POSITION). assign (N*k) is idx
 * where kept and -1 where dropped; kept (E, may be NULL) counts the kept pairs per expert. Returns the pairs
 * dropped, or -1 out of memory. */
long moe_capacity_drop(const int32_t *idx, const float *w, long N, int k, int E, long G, long cap, moe_drop_t policy,
                       int32_t *assign, int64_t *kept);

/* ---- redundant experts (--redundant) ---- */
#define MOE_MAX_REDUNDANT 65536
/* EPLB's placement of E experts with loads load[E] (pairs per expert, measured) on P ranks of S = (E+R)/P slots
 * each, into slot_log[E+R] (the expert each slot holds; rank p holds slots [p S, (p+1) S)):
 *   1. replicas: every expert has one; R times, the expert of the largest load per replica, load_e / n_e, gains
 *      one (ties: the lower expert);
 *   2. packing: the E+R replicas, each of weight load_e / n_e, heaviest first (ties: the lower expert), each to the
 *      rank of least weight so far among those with a free slot that hold no replica of its expert yet (when every
 *      rank with a free slot holds one: among those; ties: the lower rank);
 *   3. a rank's slots in ascending expert order.
 * R % P == 0 (the caller's check). Returns 0, or -1 out of memory. */
int moe_redundant_place(const int64_t *load, int E, int R, int P, int32_t *slot_log);
/* The replicas of each expert from a placement: expert e's are rep_slot[rep_off[e] .. rep_off[e+1]), ascending
 * (rep_off: E+1 values, rep_slot: E+R). */
void moe_replica_index(const int32_t *slot_log, int E, int R, int32_t *rep_off, int32_t *rep_slot);
/* The slot that serves global token t's pair with expert e: its replicas taken in turn by token,
 * rep_slot[rep_off[e] + t % n_e] (n_e = its replica count): a deterministic, even split. */
static inline int32_t moe_replica_pick(const int32_t *rep_off, const int32_t *rep_slot, int32_t e, long t)
{
    int32_t n = rep_off[e + 1] - rep_off[e];
    return rep_slot[rep_off[e] + (n > 1 ? (int32_t)(t % n) : 0)];
}

/* ---- published configurations (--model NAME) ---- */
/* The routed-expert layer of a model as its published configuration gives it. T is not here (--tokens stays the
 * user's); nor skew, bias_coeff, seed, dtype. */
typedef struct {
    const char *name;   /* "deepseek-v3" */
    const char *source; /* where the numbers come from: the model card / config.json */
    long D, F;          /* hidden size, routed-expert FFN size */
    int E, k;
    moe_router_t router;
    bool route_norm;
    double route_scale;
    int groups, topk_groups;
    bool gate_before;
    int shared;         /* shared experts, FFN size Fs each */
    long Fs;
} moe_model_t;
extern const moe_model_t moe_models[];
extern const int moe_nmodels;
const moe_model_t *moe_model_find(const char *name); /* NULL when unknown */
/* "mixtral-8x7b, qwen3-30b-a3b, ..." into buf; returns buf */
const char *moe_model_names(char *buf, size_t n);
int moe_router_parse(const char *s, moe_router_t *out); /* "softmax" | "sigmoid"; 0 or -1 */
const char *moe_router_name(moe_router_t r);
const char *moe_dtype_name(moe_dtype_t dt);            /* "f32" | "bf16" */
size_t moe_dtype_size(moe_dtype_t dt);

/* ---- FP8 dispatch rows (--dispatch-dtype fp8) ----
 * A row of D elements travels as ceil(D/MOE_FP8_BLOCK) float32 scales, then D e4m3 codes (OCP FP8 E4M3: bias 7,
 * no infinities, largest finite 448), then zero padding to a multiple of 4 bytes. A block's scale is its largest
 * magnitude / 448 (1 for an all-zero block, FLT_MIN at least); an element's code is e4m3(x / scale), rounded to nearest even and
 * saturated to +-448, NaN kept NaN; it dequantizes to code * scale. Elements of a normal code are within 2^-4
 * of their value relative (half of e4m3's 2^-3 spacing), smaller ones within 2^-10 * scale absolute. */
#define MOE_FP8_BLOCK 128
size_t moe_fp8_row_bytes(long D);
/* bytes of one dispatched row of c on the wire: moe_fp8_row_bytes(D) with dispatch_fp8, else D * act_bytes */
double moe_dispatch_row_bytes(const moe_config_t *c, double act_bytes);
/* The e4m3 code of v (the rounding above; -0 keeps its sign, NaN is 0x7F) and the value of a code: the CPU
 * backend's conversions, which tests compare with the CUDA toolkit's __nv_cvt_float_to_fp8. */
uint8_t moe_e4m3_from_f32(float v);
float moe_e4m3_to_f32(uint8_t code);
/* One row of D float32 values into a packed row (moe_fp8_row_bytes(D) bytes) and back: the CPU backend's ops and
 * the reference of the tests. */
void moe_fp8_quant_row(uint8_t *q, const float *x, long D);
void moe_fp8_dequant_row(float *x, const uint8_t *q, long D);

/* ---- memory ---- */
/* Bytes one process needs to hold the single-device layer over P*T tokens (all weights, their gradients, the
 * activations of P*T*k rows, the shared experts' over P*T tokens, and the scratch): an upper bound of any
 * strategy's per-rank footprint, and exactly what the reference check over the global batch needs. */
uint64_t moe_mem_estimate(const moe_config_t *c, int P);
/* The same with the weights (and gradients) of El routed experts: a bound of one rank's own footprint when it holds
 * El of them (E/P under expert parallelism, E when they are replicated). */
uint64_t moe_mem_estimate_rank(const moe_config_t *c, int P, int El);
/* MemAvailable from /proc/meminfo, else sysconf(_SC_AVPHYS_PAGES)*page size; 0 when unknown. */
uint64_t moe_mem_available(void);
/* EPB_EUSAGE ("layer needs 12.3 GiB (12345678 bytes) for 4 ranks but 8.0 GiB are available ...") when the
 * estimate exceeds avail_bytes; avail_bytes 0 means "ask moe_mem_available()". */
int moe_mem_check(const moe_config_t *c, int P, uint64_t avail_bytes, epb_err_t *err);
/* The same for a job: the reference check (moe_mem_estimate) plus `local` ranks on this host holding El experts
 * each (moe_mem_estimate_rank); local 0 is moe_mem_check. */
int moe_mem_check_job(const moe_config_t *c, int P, int local, int El, uint64_t avail_bytes, epb_err_t *err);
/* What moe_mem_check_job compares with the available memory (with FP8 dispatch the check's second, unquantized
 * reference counts too) */
uint64_t moe_mem_need_job(const moe_config_t *c, int P, int local, int El);

/* ---- seeded values by global index (identical whatever the rank count) ---- */
enum {
    MOE_STREAM_X = 1, MOE_STREAM_WR, MOE_STREAM_W1, MOE_STREAM_W3, MOE_STREAM_W2, MOE_STREAM_DY,
    MOE_STREAM_TEACHER, /* --train's target output */
    MOE_STREAM_SW1, MOE_STREAM_SW3, MOE_STREAM_SW2,
};
/* x[t,:] for global tokens t0..t0+N-1 ~ U(-1,1); dy likewise from its own stream. */
void moe_init_tokens(float *x, const moe_config_t *c, uint64_t stream, long t0, long N);
/* Wr (D,E) ~ U(-1,1)/sqrt(D); w1, w3 (El,D,F) ~ U(-1,1)/sqrt(D); w2 (El,F,D) ~ U(-1,1)/sqrt(F), for global
 * experts e0..e0+El-1. Any pointer may be NULL. */
void moe_init_weights(float *Wr, float *w1, float *w3, float *w2, const moe_config_t *c, int e0, int El);
/* The S shared experts side by side along the FFN dimension (shared expert s is columns, or rows of sw2,
 * s*Fs..(s+1)*Fs-1): one SwiGLU of FFN size S*Fs computes their sum exactly. sw1, sw3 (D, S*Fs) ~ U(-1,1)/sqrt(D);
 * sw2 (S*Fs, D) ~ U(-1,1)/sqrt(Fs), each from its own stream by element index. Any pointer may be NULL. */
void moe_init_shared(float *sw1, float *sw3, float *sw2, const moe_config_t *c);

/* ---- load balancing ---- */
/* delta = coeff*sign(mean(tpe) - tpe); delta -= mean(delta); bias += delta  (tpe: global counts) */
void moe_bias_update(float *bias, const int64_t *tokens_per_expert, int E, double coeff);

/* ---- phases (DESIGN.md "Phases"): what each holds and of which kind ----
 * compute: ops on one rank; comm: communicator calls and their completion only; sync: the count and metadata
 * exchanges that decide the splits. The run framework (strategy.h) opens and closes them; every strategy reports
 * every phase (zero where unused). */
typedef enum { MOE_COMPUTE, MOE_SYNC, MOE_COMM } moe_kind_t;
typedef enum {
    MOE_PH_ROUTE, MOE_PH_LAYOUT, MOE_PH_PERMUTE, MOE_PH_DISPATCH, MOE_PH_EXPERTS_FWD, MOE_PH_UNPERMUTE,
    MOE_PH_COMBINE, MOE_PH_GATE, MOE_PH_SHARED_FWD,
    MOE_PH_GATE_BWD, MOE_PH_COMBINE_BWD, MOE_PH_UNPERMUTE_BWD, MOE_PH_EXPERTS_BWD, MOE_PH_PERMUTE_BWD,
    MOE_PH_DISPATCH_BWD, MOE_PH_SHARED_BWD, MOE_PH_ROUTE_BWD, MOE_PH_GRAD_SYNC,
    MOE_NPHASES
} moe_phase_t;
extern const char *const moe_phase_names[MOE_NPHASES];
extern const moe_kind_t moe_phase_kinds[MOE_NPHASES];
const char *moe_kind_name(moe_kind_t k); /* "compute", "sync", "comm" */
int moe_phase_find(const char *name);    /* the phase of that name, or -1 */
/* "softmax", "sigmoid+norm", ...: the router column (a static string) */
const char *moe_router_label(moe_router_t r, bool route_norm);

/* ---- the --dump contract (DESIGN.md "Contracts"): global host tensors, float32 ---- */
typedef struct {
    const char *strategy;
    int ranks;
    const moe_config_t *cfg;    /* T is per rank; the tensors hold ranks*T tokens in global order */
    const float *x, *router_w, *expert_bias, *w1, *w3, *w2;
    const int32_t *topk_idx;
    const float *topk_w, *y, *dy, *dx, *d_router_w, *dw1, *dw3, *dw2;
    const int64_t *tokens_per_expert;
    const float *expert_bias_after;
    /* with cfg->shared > 0: the shared experts (moe_init_shared's layout) and their gradients */
    const float *shared_w1, *shared_w3, *shared_w2, *d_shared_w1, *d_shared_w3, *d_shared_w2;
} moe_dump_t;
/* Creates dir if missing and writes the 17 .npy files (23 with shared experts) and config.json (every option that
 * changes the math), each to a temporary name renamed into place. EPB_EUSAGE naming the directory/file when it
 * cannot be created or written. */
int moe_dump_write(const char *dir, const moe_dump_t *d, epb_err_t *err);
/* One NumPy v1.0 file: descr "<f4", "<i4" or "<i8", C order; header padded so the data starts at a multiple
 * of 64 bytes. Writes path.tmp then renames. */
int moe_npy_write(const char *path, const void *data, const char *descr, int ndim, const long *shape,
                  epb_err_t *err);

/* ---- the CPU backend (moe/cpu) ---- */
/* EPB_EUSAGE when built without BLAS. */
int moe_cpu_backend_create(moe_backend_t **out, epb_err_t *err);
static inline void moe_backend_destroy(moe_backend_t *be) { if (be) be->ops->destroy(be); }

/* ---- the CUDA backend (moe/cuda; built when the toolkit is found) ---- */
/* A backend of activation dtype `dtype` on CUDA device `device`; its work goes to `stream` (a cudaStream_t, e.g.
 * the device communicator's, so kernels and collectives are ordered) or, when NULL, to a stream of its own.
 * EPB_EUSAGE when built without CUDA or when no such device is visible; EPB_ESYS when CUDA/cuBLAS set-up fails. */
int moe_cuda_backend_create(moe_backend_t **out, moe_dtype_t dtype, int device, void *stream, epb_err_t *err);
/* Visible CUDA devices; 0 when there are none, the driver is missing, or built without CUDA. */
int moe_cuda_device_count(void);
/* "grouped" (one cublasGemmGroupedBatchedEx per GEMM phase) or "per-expert" (one cublasGemmEx per expert) */
const char *moe_cuda_gemm_path(const moe_backend_t *be);
/* One dense row-major C(M,N) = A(M,K) B(K,N) in the backend's dtype, through the same cuBLAS handle, stream and
 * math mode as the expert GEMMs (cublasGemmEx, fp32 compute): the ceiling gpu_bench measures them against.
 * EPB_EUSAGE without CUDA. */
int moe_cuda_gemm(moe_backend_t *be, void *C, const void *A, const void *B, long M, long N, long K);

/* ---- activation tensors ((act) in ops.h) between float32 host memory and a backend of either dtype ---- */
/* n elements: host float32 -> backend act (rounded to bf16 for a bf16 backend) */
int moe_act_to_backend(moe_backend_t *be, void *dst, const float *src, size_t n);
/* n elements: backend act -> host float32 */
int moe_act_to_host(moe_backend_t *be, float *dst, const void *src, size_t n);
/* rounds n float32 values to the nearest bf16 value, in place (what a bf16 backend stores) */
void moe_round_bf16(float *x, size_t n);

/* ---- the BLAS in use ---- */
/* "OpenBLAS 0.3.21 ... core=Haswell" (openblas_get_config + openblas_get_corename) into buf. */
void epb_blas_info(char *buf, size_t n);
/* The kernel set OpenBLAS runs ("Haswell", "SkylakeX", "Cooperlake"...), "unknown" for another CBLAS. */
const char *epb_blas_corename(void);
/* The threads one BLAS call uses on this rank (openblas_get_num_threads; 1 for another CBLAS). */
int epb_blas_threads(void);
/* The OPENBLAS_CORETYPE value that gives faster kernels than the ones OpenBLAS picked (the CPU has
 * AVX-512 F/BW/VL/DQ, the picked core is an AVX2 one, and OPENBLAS_CORETYPE is unset), or NULL. The caller
 * sets it and re-executes itself before any BLAS call (OpenBLAS reads it once, at load time). */
const char *epb_blas_better_coretype(void);
/* The decision itself, for given facts (testable anywhere): picked_core as openblas_get_corename() says,
 * whether the CPU has AVX-512 F/BW/VL/DQ, and the OPENBLAS_CORETYPE value (NULL when unset). */
const char *epb_blas_coretype_choice(const char *picked_core, int cpu_has_avx512, const char *env_coretype);

/* max |a - ref| / max |ref| (max |a - ref| when ref is all zero); NaN anywhere gives NaN, which fails every
 * tolerance. The comparison of float32 results in the checks and the tests. */
double moe_rel_err(const float *a, const float *ref, size_t n);
/* ||a - ref||_2 / ||ref||_2 (||a - ref||_2 when ref is all zero), NaN as above: the comparison of bf16 results.
 * Every element of a bf16 result carries a few roundings of 2^-9, so its largest element error has a tail that
 * grows with the tensor (at E=8, T=64, D=64, F=96 one configuration in ~40 has a dw element 1.08e-2 off, in a
 * numpy model of the same rounding too), while the norm-wise error sits at 2-6e-3: where the contract's "between
 * 1e-3 and 1e-2" puts it, and stable enough to gate on. */
double moe_rel_err_l2(const float *a, const float *ref, size_t n);
/* the comparison for results of `dtype`: moe_rel_err for float32, moe_rel_err_l2 for bf16 */
double moe_rel_err_dt(moe_dtype_t dtype, const float *a, const float *ref, size_t n);

#endif
