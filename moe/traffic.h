/* moe/traffic.h: what one step of a strategy moves, described once per strategy (its registry entry's `traffic`,
 * in its own file) and used by three readers: bench (every phase's expected bytes on the run's own routing, next
 * to what the wire carried: the CSV's model_bytes), the report (bytes model/measured) and the projection (the
 * cost model of report --project, docs/METHOD.md, on an expected routing at any P).
 *
 * A description is data only: per collective call, the bytes each rank sends to and receives from other ranks on
 * each link level (intra: ranks of one node, [n G, (n+1) G); inter: the others); per rank, the rows its
 * data-movement phases copy; per expert, the rows its owner computes. It reads the routing through moe_routing_t,
 * which is either a step's real routing (exact) or an expected one (expert shares: skew, group-limited routing),
 * so one description serves bench's check and the projection. No MPI, no BLAS: the report links it. */
#ifndef EPB_MOE_TRAFFIC_H
#define EPB_MOE_TRAFFIC_H

#include "moe.h"

/* the collectives a description names (the projection costs each kind its own way) */
typedef enum { MOE_CO_ALLTOALL, MOE_CO_ALLGATHER, MOE_CO_REDUCE_SCATTER, MOE_CO_ALLREDUCE, MOE_NCO } moe_co_t;
extern const char *const moe_co_names[MOE_NCO];

/* ---- the routing a description reads ---- */
typedef struct moe_routing moe_routing_t;
struct moe_routing {
    int P, G;  /* ranks; ranks per node (the link levels) */
    long T;    /* tokens per rank */
    int E, k;  /* experts (rank r owns [r E/P, (r+1) E/P)), experts per token */
    int exact; /* 1: a step's routing; 0: expected values */
    double act_bytes; /* bytes of an activation element on the wire: the run's dtype; the projection's cluster's */
    double pad;       /* > 0 (--pad-to-capacity): every (source rank, expert) block of the routed exchange and every
                       * expert's rows per source hold this many rows (the capacity), whatever pairs_e says */
    const int32_t *place; /* redundant experts: E is the expert slots and place[s] the expert slot s holds
                           * (moe_redundant_place); NULL without */
    /* (token, expert) pairs from rank s's tokens to expert e (a slot, with redundant experts) */
    double (*pairs_e)(const moe_routing_t *rt, int s, int e);
    /* tokens of rank s with at least one pair on the experts of ranks [lo, hi) */
    double (*reach)(const moe_routing_t *rt, int s, int lo, int hi);
    void *impl;
};
/* pairs from rank s's tokens to the experts of rank o; pairs of expert e over the batch */
double moe_routing_pairs(const moe_routing_t *rt, int s, int o);
double moe_routing_expert_rows(const moe_routing_t *rt, int e);
/* A step's routing: topk_idx (P*T*k, global token order, as moe_global_t holds it; -1 for a pair that goes
 * nowhere). Exact pairs, reach and rows. EPB_EUSAGE when P is past MOE_TRAFFIC_MAXP_EXACT (its tables are P x P). */
#define MOE_TRAFFIC_MAXP_EXACT 1024
int moe_routing_exact(moe_routing_t *rt, const moe_config_t *c, int P, int G, const int32_t *topk_idx, epb_err_t *err);
/* The expected routing of c on P ranks: expert e gets the share s_e = min(K (e+1)^-gamma, 1/k) of the pairs (gamma 0:
 * uniform), a token's k experts distinct; with group-limited routing (c->groups > 1) a token's experts lie in
 * c->topk_groups groups, and reach counts the groups a rank range holds (docs/METHOD.md, "Routing"). With an expert
 * capacity a share is at most cap / (T k) (the pairs a rank keeps; the rest are dropped); with redundant experts the
 * routing is over the E + R slots, placed by moe_redundant_place on the expected loads, each replica an equal part
 * of its expert's share (rt->place: the placement), and group-limited routing is taken as unlimited. */
int moe_routing_expected(moe_routing_t *rt, const moe_config_t *c, int P, int G, double gamma, epb_err_t *err);
void moe_routing_free(moe_routing_t *rt);
/* The share of the pairs each expert gets under skew exponent gamma (E values adding up to 1, none above 1/k). */
void moe_expert_shares(int E, int k, double gamma, double *s);
/* The skew exponent whose busiest of P ranks (E/P consecutive experts each) holds share smax of the pairs; 0 when
 * smax is no more than uniform routing gives. */
double moe_fit_gamma(int E, int k, int P, double smax);

/* ---- a description ---- */
typedef struct {
    int phase;            /* moe_phase_t */
    moe_co_t co;
    int calls;            /* calls of this shape (a chunked pipeline: one per chunk), the bytes split evenly */
    double *sent, *recv;  /* [2 P]: [l P + r], l 0 intra, 1 inter: bytes rank r sends to / receives from other
                           * ranks in all `calls` calls. Ring collectives (allgather, reduce_scatter, allreduce)
                           * state a rank's bytes at level 0 only: how a ring crosses nodes is the cost model's */
} moe_tcall_t;

typedef struct {
    int P, G, E;
    int ncalls, cap;
    moe_tcall_t *call;
    double *copy;         /* [MOE_NPHASES P]: rows of D elements rank r's data-movement phase copies */
    double *erows;        /* [P E]: rows rank r's experts_fwd computes for expert e (experts_bwd: the same rows) */
} moe_traffic_t;

int moe_traffic_init(moe_traffic_t *t, int P, int G, int E, epb_err_t *err);
void moe_traffic_free(moe_traffic_t *t);
/* Opens a call of phase ph; its index, or -1 out of memory. */
int moe_traffic_call(moe_traffic_t *t, int ph, moe_co_t co, int calls);
/* all-to-all: rank src sends bytes to rank dst (nothing when they are one rank) */
void moe_traffic_p2p(moe_traffic_t *t, int call, int src, int dst, double bytes);
/* a ring collective: rank r sends bytes to other ranks */
void moe_traffic_ring(moe_traffic_t *t, int call, int r, double bytes);
/* an allreduce of n elements of es bytes on every rank (2 (P-1)/P of the buffer per rank, as the wire counts) */
int moe_traffic_allreduce(moe_traffic_t *t, int ph, double n, double es);
/* rank r's phase ph copies rows rows of D elements */
static inline void moe_traffic_copy(moe_traffic_t *t, int ph, int r, double rows) { t->copy[ph * t->P + r] += rows; }
/* The most bytes one rank sends to other ranks in phase ph (what bench's `bytes` column counts). */
double moe_traffic_sent(const moe_traffic_t *t, int ph);

/* The whole step's description of spec on cfg over routing rt: the framework's own collectives (the global
 * tokens_per_expert, grad_sync) and the strategy's (its registry entry's traffic). With redundant experts rt is over
 * the cfg->E + cfg->redundant slots (t initialised with that many) and the strategy describes them as its experts.
 * EPB_EUSAGE when the strategy has no description. */
struct moe_spec;
int moe_traffic_describe(const struct moe_spec *spec, const moe_config_t *cfg, const moe_routing_t *rt,
                         moe_traffic_t *t, epb_err_t *err);

/* ---- for the strategies' descriptions ---- */
/* The routed exchange of xchg.c (tp2ep: one group of P; dedup: P groups of one; hier: groups of ns) with N chunks:
 * stage A rows with their indices and gates, stage B pairs, the count exchanges, and the rows each phase copies. */
int moe_traffic_xchg(const moe_config_t *c, const moe_routing_t *rt, int ns, int N, moe_traffic_t *t);

#endif
