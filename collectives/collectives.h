/* collectives/: the communicator interface, its backends (mpi, self; nccl with the GPU path) and the
 * collective microbenchmarks. Other folders include only this header. */
#ifndef EPB_COLLECTIVES_H
#define EPB_COLLECTIVES_H

#include <stddef.h>
#include <stdint.h>

#include "epb.h"

/* ---- element types ---- */
typedef enum {
    EPB_DT_F32,  /* float */
    EPB_DT_BF16, /* bfloat16 storage; reductions add in float32 (as NCCL does), rounding once per add */
    EPB_DT_I32,
    EPB_DT_I64,
    EPB_DT_F64, /* control traffic (timings) */
} epb_dtype_t;
size_t epb_dtype_size(epb_dtype_t dt);
const char *epb_dtype_name(epb_dtype_t dt);
int epb_dtype_parse(const char *s, epb_dtype_t *out); /* "f32"/"float32", "bf16"/"bfloat16"; 0 or -1 */

typedef enum { EPB_SUM, EPB_MAX, EPB_MIN } epb_redop_t;

/* Where the buffers passed to a communicator's collectives live. Host communicators (mpi, self) take host
 * pointers; a device communicator (nccl; mpi staging through pinned memory; self copying on the device) takes
 * CUDA device pointers, on the GPU it chose (node-local rank modulo the visible GPUs), and runs its work on its
 * own stream, which a compute backend shares so that kernels and collectives stay in order. */
typedef enum { EPB_MEM_HOST, EPB_MEM_DEVICE } epb_mem_t;

typedef struct epb_comm epb_comm_t;
typedef struct epb_req epb_req_t; /* a started non-blocking collective (the backend's own) */

/* split colors: a rank in no sub-communicator; the ranks of each node */
enum { EPB_SPLIT_NONE = -1, EPB_SPLIT_NODE = -2 };

/* A backend. Counts are in elements. Every call is collective over the group and blocking from the host's
 * point of view unless the backend is a device backend, where `sync` waits for the device work. Each returns
 * EPB_OK or EPB_ESYS, with the reason (rank and call) in comm->err. */
typedef struct {
    const char *name;
    /* recv[r*count .. ] = send of rank r; send has count elements, recv size*count */
    int (*allgather)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt);
    /* recv (count) = sum over ranks of send[rank*count ..]; send has size*count elements */
    int (*reduce_scatter)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt);
    /* count elements to and from each peer; send and recv have size*count elements */
    int (*alltoall)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt);
    /* uneven: sendcounts/sdispls/recvcounts/rdispls have size entries, in elements */
    int (*alltoallv)(epb_comm_t *c, const void *send, const size_t *sendcounts, const size_t *sdispls, void *recv,
                     const size_t *recvcounts, const size_t *rdispls, epb_dtype_t dt);
    /* in place when send == recv */
    int (*allreduce)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt, epb_redop_t op);
    int (*bcast)(epb_comm_t *c, void *buf, size_t bytes, int root);
    int (*barrier)(epb_comm_t *c);
    int (*sync)(epb_comm_t *c);
    void (*destroy)(epb_comm_t *c);
    /* Non-blocking start of the token collectives, with the blocking calls' arguments (which must stay valid and
     * untouched until the wait): *req is the started call. test sets *done when it has completed (it still needs
     * its wait); wait completes it (outputs readable, inputs reusable) and frees it. On a device communicator the
     * collective runs on a communication stream ordered after the work already queued on c->stream, and wait
     * orders what is queued on c->stream afterwards behind its completion (the host does not block). */
    int (*iallgather)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt, epb_req_t **req);
    int (*ireduce_scatter)(epb_comm_t *c, const void *send, void *recv, size_t count, epb_dtype_t dt, epb_req_t **req);
    int (*ialltoallv)(epb_comm_t *c, const void *send, const size_t *sendcounts, const size_t *sdispls, void *recv,
                      const size_t *recvcounts, const size_t *rdispls, epb_dtype_t dt, epb_req_t **req);
    int (*test)(epb_comm_t *c, epb_req_t *req, int *done);
    int (*wait)(epb_comm_t *c, epb_req_t *req);
    /* The sub-communicator of the ranks that gave the same color (>= 0), ordered by key then rank, or of this
     * rank's node (EPB_SPLIT_NODE); *out is NULL for EPB_SPLIT_NONE. Same memory kind (and GPU, stream) as c.
     * Collective over c. Destroy it before c. */
    int (*split)(epb_comm_t *c, int color, int key, epb_comm_t **out);
    /* Memory of a device communicator (NULL for host ones): allocate/free on its device, and copy between host
     * and device (to_device 1: host src -> device dst), complete when it returns. */
    void *(*mem_alloc)(epb_comm_t *c, size_t bytes);
    void (*mem_free)(epb_comm_t *c, void *p);
    int (*mem_copy)(epb_comm_t *c, void *dst, const void *src, size_t bytes, int to_device);
} epb_comm_ops_t;

struct epb_comm {
    const epb_comm_ops_t *ops;
    int rank, size;             /* in the group */
    int local_rank, local_size; /* on this node */
    int nodes;                  /* distinct hosts in the group */
    epb_mem_t mem;
    int device;                 /* CUDA device of a device communicator; -1 for host ones */
    void *stream;               /* its cudaStream_t (collectives are enqueued there; sync waits for it); or NULL */
    epb_err_t err;
    void *impl;
};

/* ---- process runtime (MPI init/finalize when built with MPI) ---- */
int epb_runtime_init(int *argc, char ***argv, epb_err_t *err);
void epb_runtime_finalize(void);
void epb_runtime_abort(int code); /* tear every rank down (MPI_Abort) after a fatal error on one */
/* True when this process was started by a launcher (mpirun, mpiexec, srun, PMI/PMIx). */
int epb_under_launcher(void);
int epb_have_mpi(void);
/* "Open MPI 4.1.4", "MPICH 4.0"..., or "none" when built without MPI. */
const char *epb_mpi_library(void);
int epb_mpi_is_openmpi(void);

/* Creates a world communicator of the named backend ("mpi", "self"); "auto" picks mpi when built with it
 * and started by a launcher, self otherwise. Host memory. */
int epb_comm_create(const char *backend, epb_comm_t **out, epb_err_t *err);
/* The same for buffers in `mem`. EPB_MEM_DEVICE: "nccl" (device memory only), "mpi" (staged through pinned host
 * memory: Open MPI from Debian is not CUDA-aware; ranks may share a GPU), "self" (device copies), or "auto":
 * nccl when built with it and every rank on a node has a GPU of its own, else mpi under a launcher, else self.
 * EPB_EUSAGE naming --comm/--device when the combination cannot be built here. */
int epb_comm_create_mem(const char *backend, epb_mem_t mem, epb_comm_t **out, epb_err_t *err);
void epb_comm_destroy(epb_comm_t *c);
const char *epb_comm_backends(void); /* "mpi, self, nccl" as built */

/* The offset (us) to add to this process's epb_now_us() to read rank 0's clock, so that times taken on different
 * ranks compare (a rank's arrival at a collective against the last rank's). 0 for ranks on rank 0's host (one
 * monotonic clock per host) and for a communicator of one node; across hosts, every other node's first rank
 * measures it against rank 0 by ping-pong (the exchange with the least round trip of 32 wins: Cristian's method,
 * error at most half that round trip) and its node takes its value. Collective over c (a host communicator). */
int epb_clock_offset(epb_comm_t *c, double *offset_us, epb_err_t *err);

/* ---- GPUs (0 and "none" when built without CUDA or no driver/device is there) ---- */
int epb_gpu_count(void);
/* The GPU a rank uses: its node-local rank modulo the visible GPUs (several ranks may share one); -1 for none. */
int epb_gpu_pick(int local_rank);
void epb_gpu_name(int device, char *buf, size_t n); /* "NVIDIA H100 80GB HBM3" */

/* Convenience wrappers: c->ops->X(c, ...). */
static inline int epb_allgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{ return c->ops->allgather(c, s, r, n, dt); }
static inline int epb_reduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{ return c->ops->reduce_scatter(c, s, r, n, dt); }
static inline int epb_alltoall(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt)
{ return c->ops->alltoall(c, s, r, n, dt); }
static inline int epb_alltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                                const size_t *rc, const size_t *rd, epb_dtype_t dt)
{ return c->ops->alltoallv(c, s, sc, sd, r, rc, rd, dt); }
static inline int epb_allreduce(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_redop_t op)
{ return c->ops->allreduce(c, s, r, n, dt, op); }
static inline int epb_bcast(epb_comm_t *c, void *buf, size_t bytes, int root) { return c->ops->bcast(c, buf, bytes, root); }
static inline int epb_barrier(epb_comm_t *c) { return c->ops->barrier(c); }
static inline int epb_sync(epb_comm_t *c) { return c->ops->sync(c); }
static inline int epb_iallgather(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{ return c->ops->iallgather(c, s, r, n, dt, q); }
static inline int epb_ireduce_scatter(epb_comm_t *c, const void *s, void *r, size_t n, epb_dtype_t dt, epb_req_t **q)
{ return c->ops->ireduce_scatter(c, s, r, n, dt, q); }
static inline int epb_ialltoallv(epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *r,
                                 const size_t *rc, const size_t *rd, epb_dtype_t dt, epb_req_t **q)
{ return c->ops->ialltoallv(c, s, sc, sd, r, rc, rd, dt, q); }
static inline int epb_test(epb_comm_t *c, epb_req_t *q, int *done) { return c->ops->test(c, q, done); }
static inline int epb_wait(epb_comm_t *c, epb_req_t *q) { return c->ops->wait(c, q); }
static inline int epb_comm_split(epb_comm_t *c, int color, int key, epb_comm_t **out)
{ return c->ops->split(c, color, key, out); }
static inline int epb_comm_split_node(epb_comm_t *c, epb_comm_t **out) { return c->ops->split(c, EPB_SPLIT_NODE, c->rank, out); }

/* ---- the counting wrapper (the run framework's view of the data communicator) ----
 * Forwards every call to `inner` and first tells `enter` the collective's name and the bytes this rank sends to
 * other ranks in it, computed from the call's real counts: allgather, reduce_scatter, alltoall (P-1) x its block;
 * alltoallv the blocks to other ranks (sendcounts, itself excluded); allreduce 2(P-1)/P x the buffer (a ring);
 * bcast (P-1) x the buffer on the root; non-blocking calls when started. A non-zero return from enter refuses
 * the call (its message in c->err). leave runs when every call that entered returns: a blocking call, a
 * non-blocking start (once started), a wait (named "wait"). So enter and leave always come in pairs, and a
 * rank is inside the communicator exactly between them. sync is not a call (see epb_comm_tally_sync_calls).
 * Splitting a wrapper is a call too (named "split", 0 bytes: it waits for every rank of the parent) and gives a
 * wrapper of the sub-communicator with the same hooks. */
typedef struct {
    int (*enter)(void *ctx, epb_comm_t *c, const char *coll, double bytes_out);
    void (*leave)(void *ctx, epb_comm_t *c, const char *coll);
    void *ctx;
} epb_tally_t;
/* *out wraps inner (destroying *out destroys inner when own_inner). */
int epb_comm_tally_create(epb_comm_t *inner, int own_inner, const epb_tally_t *t, epb_comm_t **out, epb_err_t *err);
/* From now on sync, on wrapper c and its later splits, is a call too: enter and leave named "sync", 0 bytes. On a
 * device communicator a collective returns once queued and really completes in sync, so a watchdog of calls
 * needs it; the run framework's tally does not (sync belongs to the open phase). EPB_EUSAGE when c is no
 * wrapper. */
int epb_comm_tally_sync_calls(epb_comm_t *c);

/* ---- the collective microbenchmarks (one small struct per collective, nccl-tests style) ---- */
typedef struct {
    epb_comm_t *comm;
    epb_dtype_t dt;
    uint64_t seed;
    double imbalance;      /* alltoallv Zipf exponent; 0 = even */
    size_t bytes;          /* nominal per-rank size as nccl-tests counts it */
    size_t send_elems, recv_elems;
    void *send, *recv;     /* in comm->mem memory: what run passes to the collective */
    void *hsend, *hrecv;   /* host memory: what init writes and check reads (send/recv themselves when host) */
    size_t *counts;        /* alltoallv: P*P matrix, counts[src*P + dst] elements */
    size_t *sc, *sd, *rc, *rd; /* this rank's alltoallv counts and displacements */
    double moved_bytes;    /* max over ranks of max(sent, received) bytes: algbw numerator (alltoallv) */
} epb_coll_ctx_t;

typedef struct {
    const char *name;
    int splits; /* the nominal size is divided over the ranks (must be a multiple of ranks x element size) */
    int uneven; /* takes --imbalance: per-destination counts differ (its value is part of the configuration) */
    /* busbw = algbw x this over P ranks (nccl-tests' factors): (P-1)/P when every rank moves all but its own
     * share once, 2(P-1)/P for a ring all-reduce, 0 on one rank (nothing crosses a bus) */
    double (*busbw_factor)(int P);
    /* Element counts of this rank's send and receive buffers for a nominal size already checked by
     * epb_coll_check_size. */
    int (*sizes)(epb_coll_ctx_t *x, epb_err_t *err);
    /* Fills hsend with seeded small integers that every rank can regenerate. */
    void (*init)(epb_coll_ctx_t *x);
    int (*run)(epb_coll_ctx_t *x);
    /* Number of wrong elements in hrecv against the expected output this rank computes itself (after
     * epb_coll_ctx_fetch for a device communicator). */
    long (*check)(const epb_coll_ctx_t *x);
    const char *redop; /* the reduction ("sum"), NULL for none: nccl-tests' redop column and JSON key */
} epb_coll_t;

extern const epb_coll_t epb_colls[];
extern const int epb_ncolls;
const epb_coll_t *epb_coll_find(const char *name);
/* "allgather, reduce_scatter, alltoall, alltoallv, allreduce", from the table, into buf; returns buf */
const char *epb_coll_names(char *buf, size_t n);

/* EPB_OK when `bytes` splits into whole elements as the collective needs over P ranks; otherwise EPB_EUSAGE
 * naming the required multiple. */
int epb_coll_check_size(const epb_coll_t *coll, uint64_t bytes, int P, epb_dtype_t dt, epb_err_t *err);
/* The smallest multiple of the split unit of every collective that is >= bytes (for default sizes). */
uint64_t epb_coll_round_size(uint64_t bytes, int P, epb_dtype_t dt);

/* Sets up x for one size: computes element counts, allocates host buffers (and, for a device communicator,
 * device buffers through its mem_alloc hook), fills inputs. x->comm, dt, seed, imbalance, bytes must be set.
 * epb_coll_ctx_free releases the buffers. */
int epb_coll_ctx_setup(const epb_coll_t *coll, epb_coll_ctx_t *x, epb_err_t *err);
/* Brings recv back into hrecv before a check (nothing to do for a host communicator). */
int epb_coll_ctx_fetch(epb_coll_ctx_t *x, epb_err_t *err);
void epb_coll_ctx_free(epb_coll_ctx_t *x);

/* Seeded Zipf-like alltoallv count matrix: every sender splits `elems` over destinations with weights
 * 1/(1+pos(d))^S, pos a seeded permutation of the ranks (the same hot destination for every sender, as a
 * hot expert). S = 0 gives an even split (remainders to the lowest destinations). counts is P*P. */
void epb_zipf_counts(size_t elems, int P, double S, uint64_t seed, size_t *counts);

#endif
