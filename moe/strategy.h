/* moe/strategy.h: the run framework and the expert-parallel strategy interface (DESIGN.md "Strategies",
 * "Phases"). One run type: a strategy on one rank, over a communicator and a backend. The framework owns the
 * layer's common parts and the measurement: it routes, runs the experts on the rows a strategy brings, applies
 * the router's backward, synchronises the gradients, opens and closes every phase, and counts the bytes each
 * communicator call sends (through a counting wrapper). A strategy only describes how tokens reach the experts'
 * owners and come back (dispatch, combine, and their backward), switching phases with moe_phase(); it never times
 * or counts. A guard makes a phase's kind binding: compute ops in a comm or sync phase, or a collective in a
 * compute phase, fail the step. Strategies are registry entries (name, description, parameters); the registry
 * is generated from the list in moe/meson.build, so adding one is a new file plus one line there. */
#ifndef EPB_MOE_STRATEGY_H
#define EPB_MOE_STRATEGY_H

#include "collectives.h"
#include "moe.h"
#include "traffic.h"

typedef struct moe_run moe_run_t;
typedef struct moe_spec moe_spec_t;

/* ---- strategies ---- */

/* One direction of a chunked pipeline (the strategy parameter `chunks`, DESIGN.md "Strategies"): the framework
 * splits the step into the run's chunks and runs, for forward (dispatch in, combine out) and for backward
 * (combine_bwd in, dispatch_bwd out):
 *     in_start(0); for c: in_finish(c); in_start(c+1); experts(c); out_start(c);   then out_finish(c) for every c
 * so chunk c+1's input collective is in flight while chunk c's experts compute, and chunk c's output collective
 * while chunk c+1 arrives. The strategy switches phases inside each hook (moe_phase) and starts and completes
 * its collectives with moe_istart_alltoallv / moe_wait; in_finish(c) leaves chunk c's expert rows where
 * r->offsets says (chunk c's block). */
typedef struct {
    int (*in_start)(moe_run_t *r, int c, epb_err_t *err);
    int (*in_finish)(moe_run_t *r, int c, epb_err_t *err);
    int (*out_start)(moe_run_t *r, int c, epb_err_t *err);
    int (*out_finish)(moe_run_t *r, int c, epb_err_t *err);
} moe_pipe_t;

#define MOE_MAX_PARAMS 4
/* An integer parameter a strategy declares: `--strategy NAME:key=val,...` sets it, within [lo, hi]. */
typedef struct {
    const char *key;
    const char *what; /* one line for --help */
    long def, lo, hi;
} moe_param_t;

typedef struct {
    const char *name;
    const char *what;      /* one line for --help */
    const char *anchor;    /* where the field uses it ("torchtitan PR #1269, Megatron alltoall") */
    int replicated;        /* every rank holds all E experts; their gradients are all-reduced in grad_sync */
    int is_default;        /* the strategy of a MoE run given no --strategy (`bench --experts 16`): one entry */
    int pads;              /* --pad-to-capacity: its dispatch pads every (source, expert) block to the capacity
                            * (in one chunk) */
    const moe_param_t *params;
    int nparams;
    /* Optional: whether spec can run cfg on P ranks (EPB_EUSAGE naming the parameter), checked on rank 0 with
     * the other options before anything runs. */
    int (*validate)(const moe_spec_t *spec, const moe_config_t *cfg, int P, epb_err_t *err);
    /* Set-up, after the framework allocated and seeded the run's tensors: the strategy's own buffers (r->priv). */
    int (*setup)(moe_run_t *r, epb_err_t *err);
    void (*teardown)(moe_run_t *r);
    /* Forward, called with phase layout open and the global tokens_per_expert in r->tpe (this rank's routing in
     * r->topk_idx, r->topk_w, r->counts): bring the rows of the owned experts into r->xp, grouped by local expert
     * as r->offsets says (reserve them with moe_rows_reserve). */
    int (*dispatch)(moe_run_t *r, epb_err_t *err);
    /* After the experts (their output rows in r->ep_out): y of this rank's tokens into r->y. */
    int (*combine)(moe_run_t *r, epb_err_t *err);
    /* Backward, from r->dy: the gradient of the expert output rows into r->d_ep_out (and, where the gate weights
     * are applied, their gradient). */
    int (*combine_backward)(moe_run_t *r, epb_err_t *err);
    /* After the experts' backward (r->d_xp): add the input gradient into r->dx and leave this rank's gate-weight
     * gradient in r->d_gate. */
    int (*dispatch_backward)(moe_run_t *r, epb_err_t *err);
    /* Optional: a pipelined strategy (it declares the parameter `chunks`). Then dispatch only prepares (layout
     * exchanges, the source-side permute of every chunk), the framework runs pipe_fwd around the experts of each
     * chunk, and combine finishes (what the source does once every chunk is back); likewise combine_backward,
     * pipe_bwd and dispatch_backward. */
    const moe_pipe_t *pipe_fwd, *pipe_bwd;
    /* What a step of spec moves on routing rt (traffic.h), added to t: the collectives of dispatch, combine and
     * their backward and any count exchange in layout, and the rows its data-movement phases (permute, unpermute,
     * gate) copy; the framework adds its own (tokens_per_expert, grad_sync) and the experts' rows. bench checks it
     * against the wire on every run (the CSV's model_bytes) and the projection costs it. 0, or -1 out of memory. */
    int (*traffic)(const moe_spec_t *spec, const moe_config_t *cfg, const moe_routing_t *rt, moe_traffic_t *t);
} moe_strategy_t;

extern const moe_strategy_t *const moe_strategies[];
extern const int moe_nstrategies;
const moe_strategy_t *moe_strategy_find(const char *name);
/* The entry marked is_default (the first one when none is). */
const moe_strategy_t *moe_strategy_default(void);
/* "local, agrs, tp2ep", from the registry, into buf; returns buf */
const char *moe_strategy_names(char *buf, size_t n);

/* A strategy with its parameter values. */
struct moe_spec {
    const moe_strategy_t *st;
    long param[MOE_MAX_PARAMS];
};
/* Parses "NAME" or "NAME:key=val,key=val" against the registry (tab: ntab entries; moe_strategies for the real
 * one): unknown name or key, a value that is not an integer in the parameter's range, a key given twice:
 * EPB_EUSAGE naming it. Unset parameters take their defaults. */
int moe_spec_parse_in(const moe_strategy_t *const *tab, int ntab, const char *text, moe_spec_t *out, epb_err_t *err);
static inline int moe_spec_parse(const char *text, moe_spec_t *out, epb_err_t *err)
{
    return moe_spec_parse_in(moe_strategies, moe_nstrategies, text, out, err);
}
/* The canonical text: "NAME:key=val,..." with every parameter (or "NAME" when it has none). */
void moe_spec_format(const moe_spec_t *s, char *buf, size_t n);
/* The parameters alone, "key=val;key=val" in declared order ("" when none): the CSV's params column. */
void moe_spec_params(const moe_spec_t *s, char *buf, size_t n);
/* The value of parameter key (its default when the strategy has no such key: never, for a registered key). */
long moe_spec_get(const moe_spec_t *s, const char *key);

/* ---- measurement: what the framework records per step ---- */

#define MOE_MAXSEG 64 /* entries of one phase per step whose arrivals are kept (a chunked pipeline enters often) */
#define MOE_MAXCHUNKS 16 /* the largest `chunks` a strategy may declare */
#define MOE_MAXREQ 64    /* non-blocking collectives in flight at once */
typedef struct {
    double us[MOE_NPHASES];               /* this rank's time per phase (the sum of its entries): the exposed time */
    double hidden[MOE_NPHASES];           /* comm phases: time one of its collectives was in flight while this rank
                                           * was in a compute phase (not in us) */
    double bytes[MOE_NPHASES];            /* bytes this rank sent to other ranks in the phase */
    double flop[MOE_NPHASES];
    int entries[MOE_NPHASES];             /* how often the phase was entered */
    double arrive[MOE_NPHASES][MOE_MAXSEG]; /* comm and sync phases: job-clock time of each entry */
    double dur[MOE_NPHASES][MOE_MAXSEG];  /* and this rank's time in each entry (its wait is at most that) */
    char coll[MOE_NPHASES][EPB_STR];      /* the collectives called, '+'-joined in first-call order */
    int open;                             /* the open phase, -1 for none */
    double open_us;                       /* this rank's clock when it opened */
    int fly[MOE_NPHASES];                 /* collectives of each phase started and not yet seen complete */
    double fly_us;                        /* this rank's clock when hidden[] was last brought up to date */
} moe_meter_t;

/* A non-blocking collective started through the run (moe_istart_alltoallv): the framework tracks it so that it
 * can make progress on it between expert GEMMs and account for its time in flight. */
typedef struct {
    epb_comm_t *comm;
    epb_req_t *req;
    int phase;  /* the comm phase that started it */
    int done;   /* a test saw it complete */
    int used;
} moe_req_t;

/* Test-only hooks (from the environment, per rank; never in the broadcast configuration): busy-wait inside a
 * phase before it closes, on one rank or all. */
typedef struct {
    int delay_phase;   /* -1: none */
    double delay_us;
    int delay_rank;    /* -1: every rank */
    int slow_phase;    /* -1: none; MOE_NPHASES: the step (after its last phase) */
    double slow_pct;   /* busy-wait this percent of the entry's own time */
    int no_progress;   /* 1: no tests of the collectives in flight between expert GEMMs (what they buy) */
} moe_hooks_t;
#define MOE_HOOKS_NONE ((moe_hooks_t){ -1, 0, -1, -1, 0, 0 })

/* ---- the run ---- */

/* One rank's state of one strategy on one configuration. Tensors are backend memory unless marked host. */
struct moe_run {
    moe_spec_t spec;
    const moe_strategy_t *st;    /* = spec.st */
    moe_config_t cfg;
    epb_comm_t *comm;            /* the counting wrapper of the data communicator (buffers in comm->mem) */
    epb_comm_t *data;            /* the data communicator itself */
    epb_comm_t *hcomm;           /* a host-memory communicator of the same group (gathers, waits) */
    moe_backend_t *be;
    int P, rank;
    int e0, El;                  /* owned expert slots [e0, e0+El) of Ep: the experts themselves without redundant
                                  * experts, else slot s holds expert slot_log[s] */
    int Ep;                      /* expert slots: E + cfg.redundant */
    int32_t *slot_log;           /* (Ep) host: the expert each slot holds (moe_redundant_place; NULL without) */
    int32_t *rep_off, *rep_slot; /* (E+1), (Ep) host: each expert's slots (moe_replica_index) */
    int32_t *rep_idx;            /* (E) host: a replicated expert's index in gw, -1 for an expert of one slot */
    int nrep;                    /* experts of more than one slot */
    void *gw;                    /* (3, nrep, D*F) the replicated experts' dw1, dw3, dw2 summed over their slots in
                                  * grad_sync (every rank's copy the same): what the update reads for their slots */
    /* parameters */
    void *x;                     /* (T,D) this rank's tokens: global tokens rank*T .. */
    float *Wr;                   /* (D,E) replicated */
    float *bias;                 /* (E) replicated expert_bias this step routes with */
    void *w1, *w3, *w2;          /* (El,D,F) (El,D,F) (El,F,D) */
    void *sw1, *sw3, *sw2;       /* the S shared experts, replicated: (D,S*Fs) (D,S*Fs) (S*Fs,D) (moe_init_shared);
                                  * NULL without shared experts */
    /* outputs of a step */
    int32_t *topk_idx;           /* (T,k) */
    float *topk_w;               /* (T,k) */
    void *y, *dy, *dx;           /* (T,D) */
    float *dWr;                  /* (D,E) */
    void *dw1, *dw3, *dw2;       /* like w1, w3, w2 */
    void *dsw1, *dsw3, *dsw2;    /* like sw1, sw3, sw2, all-reduced in grad_sync */
    void *ys;                    /* (T,D) the shared experts' output */
    void *sa1, *sa3, *ss, *swork; /* (T,S*Fs) x3 saved, (2,T,S*Fs) scratch */
    int32_t *assign;             /* (T,k) the pairs that reach an expert, what the strategies route by: the slot
                                  * of topk_idx's expert (moe_replica_pick; the expert itself without redundant
                                  * experts) where kept, -1 where the expert capacity dropped the pair (topk_idx
                                  * itself without either); topk_idx stays the router's choice (route_bwd, the check) */
    int64_t *counts;             /* (E) host: this rank's selections */
    int64_t *tpe;                /* (E) host: tokens_per_expert, all-reduced over the group */
    int64_t *kept;               /* (E) host: the pairs of each expert that assign keeps, all-reduced (tpe itself
                                  * without a capacity): the rows its owner computes */
    int64_t *skept;              /* (Ep) host: the pairs each slot computes, all-reduced (kept itself without
                                  * redundant experts) */
    int32_t *assign_h;           /* (T,k) host scratch of the capacity rule and the replica split (NULL without) */
    float *gate_h;               /* (T,k) likewise */
    int64_t dropped;             /* (token, expert) pairs of this rank's tokens the expert capacity dropped in the
                                  * last step (0 without a capacity): the CSV's `dropped`, summed over ranks */
    float *bias_after;           /* (E) host: bias after this step's update */
    float *scores, *rwork;       /* (T,E) saved scores, route_backward scratch */
    float *d_gate;               /* (T,k) gradient of this rank's gate weights */
    /* the experts' rows (the framework's; dispatch fills xp and offsets, combine reads ep_out) */
    long rows, rows_cap;         /* rows in xp for the owned experts; rows allocated */
    int chunks;                  /* the strategy's `chunks` parameter (1 when it has none) */
    int64_t *offsets;            /* (chunks*(El+1)) host: chunk c's rows of local expert a are
                                  * [offsets[c*(El+1)+a], offsets[c*(El+1)+a+1]) of xp (one chunk: as before) */
    void *xp, *ep_out, *d_ep_out, *d_xp; /* (rows,D) */
    void *a1, *a3, *s, *work;    /* (rows,F) x3, (2,rows,F) */
    /* measurement of the last step */
    moe_meter_t m;
    double step_us;              /* the whole forward+backward of the last step, on this rank */
    double clock_offset_us;      /* epb_now_us() + this = the job clock (arrivals compare across ranks) */
    moe_req_t req[MOE_MAXREQ];   /* non-blocking collectives in flight */
    moe_hooks_t hooks;
    moe_event_t *ev[2];
    epb_dtype_t comm_dt;         /* the activation dtype as the communicator names it */
    void *stage;                 /* backend buffer: small host arrays through a device communicator */
    void *bufs;                  /* the framework's allocations */
    epb_comm_t *own_comm, *own_hcomm; /* the one-rank communicators of moe_run_create_single */
    void *priv;                  /* the strategy's own */
    char note[EPB_STR];          /* the strategy's remark on this configuration ("hier: 1 node of 4 ranks: ..."),
                                  * printed with its table */
};

/* Sets up spec's strategy over cfg (T tokens per rank) on data communicator comm with backend be, parameters
 * seeded by global index. hcomm: a host-memory communicator of the same group, or NULL when comm takes host
 * memory. Puts the guard in front of be's ops. */
int moe_run_create(moe_run_t *r, const moe_spec_t *spec, const moe_config_t *cfg, epb_comm_t *comm, epb_comm_t *hcomm,
                   moe_backend_t *be, epb_err_t *err);
/* The single-device layer: strategy local on a one-rank communicator of its own (host or device memory as be's)
 * over cfg->T tokens, global tokens 0.. : the check's reference, and the layer for tests and benchmarks. */
int moe_run_create_single(moe_run_t *r, const moe_config_t *cfg, moe_backend_t *be, epb_err_t *err);
void moe_run_destroy(moe_run_t *r);
/* The gradients zeroed (untimed), then forward and backward, timed; bias_after from the global counts. */
int moe_run_step(moe_run_t *r, epb_err_t *err);
/* The two halves (training puts the loss gradient between them): zero_grad untimed; forward and backward each
 * timed, step_us their sum. */
int moe_run_zero_grad(moe_run_t *r, epb_err_t *err);
int moe_run_forward(moe_run_t *r, epb_err_t *err);
int moe_run_backward(moe_run_t *r, epb_err_t *err);
/* This rank's wait per phase in the last step: for each entry of a comm or sync phase, from its arrival to the
 * last rank's arrival at the same entry (job clock), at most the entry's own time (an entry that only starts a
 * non-blocking collective waits for nobody; its wait shows in the entry that completes it), summed; 0 for
 * compute phases. Collective over hcomm. */
int moe_run_waits(moe_run_t *r, double wait_us[MOE_NPHASES], epb_err_t *err);
/* The traffic of the last step on its real routing (traffic.h: every rank's top-k gathered; G ranks per node for
 * the link levels), into *t (moe_traffic_free it), on every rank. Collective over hcomm. */
int moe_run_traffic(moe_run_t *r, int G, moe_traffic_t *t, epb_err_t *err);
/* Training: W -= lr*dW for the router and the owned experts, expert_bias = bias_after. */
int moe_run_sgd(moe_run_t *r, double lr, epb_err_t *err);
/* dy = 2(y - teacher)/(P*T*D) for the global MSE loss to a fixed seeded teacher; its value (the same on every
 * rank) into *loss. Collective. */
int moe_run_mse_grad(moe_run_t *r, double *loss, epb_err_t *err);
/* expert_bias of the next step, from host floats (E). */
int moe_run_set_bias(moe_run_t *r, const float *bias, epb_err_t *err);

/* The global tensors of the last step, on every rank (host float32/int). Gathered from their owners. */
typedef struct {
    float *x, *router_w, *expert_bias, *w1, *w3, *w2, *y, *dy, *dx, *d_router_w, *dw1, *dw3, *dw2, *topk_w,
        *expert_bias_after;
    int32_t *topk_idx;
    int64_t *tokens_per_expert;
    int64_t *kept;    /* (E) the pairs each expert computed (the expert capacity's kept; = tokens_per_expert without) */
    int64_t dropped;  /* pairs the expert capacity dropped, every rank's */
    float *shared_w1, *shared_w3, *shared_w2, *d_shared_w1, *d_shared_w3, *d_shared_w2; /* NULL without shared */
} moe_global_t;
int moe_run_gather(moe_run_t *r, moe_global_t *g, epb_err_t *err);
void moe_global_free(moe_global_t *g);

/* Computes the same global batch (P*T tokens, bias as given) on one device (strategy local over a one-rank
 * communicator, the CPU backend) and compares every output and gradient, tokens_per_expert and the updated bias.
 * Writes one line per tensor into report (may be NULL) and returns the number of tensors that differ beyond tol
 * (relative to the reference's largest magnitude; bf16 norm-wise; NaN always differs), or -1 on a set-up failure
 * (reason in err). With cfg->dispatch_fp8 the reference quantizes as the run did, and a second one without FP8
 * gives what the quantization costs, float32 against float32 on the same inputs (the run's own bf16 or GPU rounding
 * is not in it): y's norm-wise difference into *fp8_err (y, dx and dw1 in the report); *fp8_err is -1 otherwise
 * (fp8_err may be NULL). */
int moe_check_global(const moe_global_t *g, const moe_config_t *cfg, int P, double tol, char *report,
                     size_t report_len, double *fp8_err, epb_err_t *err);

/* ---- for the strategy files ---- */

/* Closes the open phase and opens ph: everything until the next switch is ph's. Fails (naming the rank) when the
 * backend fails to record. */
int moe_phase(moe_run_t *r, moe_phase_t ph, epb_err_t *err);
/* Non-blocking all-to-all (collectives.h's arguments, which must stay valid until the wait) on c, the run's
 * communicator or a split of it, in the open comm phase: its bytes are counted when it starts. *h is its handle
 * for moe_wait, which completes it in the open comm phase (its phase or another). The framework tests the
 * collectives in flight between expert GEMMs (host communicators), so that they progress while compute runs, and
 * adds the time each comm phase had one in flight during compute phases to that phase's hidden time. */
int moe_istart_alltoallv(moe_run_t *r, epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *rv,
                         const size_t *rc, const size_t *rd, epb_dtype_t dt, int *h, epb_err_t *err);
int moe_wait(moe_run_t *r, int h, epb_err_t *err);
/* Chunk c of N over n items: [*lo, *hi) = [c*n/N, (c+1)*n/N) */
static inline void moe_chunk_range(long n, int N, int c, long *lo, long *hi)
{
    *lo = (long)((long long)n * c / N);
    *hi = (long)((long long)n * (c + 1) / N);
}
/* Makes room for `rows` rows of the experts (xp, ep_out, d_ep_out, d_xp, a1, a3, s, work), growing when needed;
 * sets r->rows. */
int moe_rows_reserve(moe_run_t *r, long rows, epb_err_t *err);
/* Backend allocation of at least `bytes` at *p, grown (contents not kept) when *cap is smaller. */
int moe_grow(moe_run_t *r, void **p, size_t *cap, size_t bytes, epb_err_t *err);
/* A backend allocation freed with the run (NULL with the reason in err). */
void *moe_alloc(moe_run_t *r, size_t bytes, epb_err_t *err);
/* The step's failure, naming rank and phase: `return moe_fail(r, err)` after a call that failed (its reason is in
 * the communicator's or the backend's err). */
int moe_fail(moe_run_t *r, epb_err_t *err);
/* In a strategy function taking (moe_run_t *r, ..., epb_err_t *err) and returning an epb status: MOE_DO(call)
 * returns the step's failure when call fails (non-zero); MOE_PHASE(ph) switches to phase ph or returns why not. */
#define MOE_DO(call) do { if (call) return moe_fail(r, err); } while (0)
#define MOE_PHASE(ph) do { int rc_ = moe_phase(r, (ph), err); if (rc_) return rc_; } while (0)

/* Collectives on small host arrays (counts, a loss) over the data communicator: directly when it takes host
 * memory, else staged through r->stage, so that a device communicator (NCCL) carries them as it would in a
 * training stack. n elements of at most 8 bytes, n <= 2*E (or the layout's counts, E + kept + slots). */
int moe_allreduce_host(moe_run_t *r, void *buf, size_t n, epb_dtype_t dt);
int moe_alltoall_host(moe_run_t *r, const void *send, void *recv, size_t n_per_rank, epb_dtype_t dt);

/* FLOPs of the SwiGLU experts over `rows` rows: 6*rows*D*F forward, 12*rows*D*F backward */
double moe_expert_flop(const moe_config_t *c, double rows, int backward);

#endif
