/* The communicator's split and non-blocking calls, and the counting wrapper, at any rank count (meson runs it
 * under mpirun at 1 to 4 ranks, and alone on the self communicator). Every result is checked against values each
 * rank computes itself; every rank's failures are summed, rank 0 prints TAP.
 *   - iallgather, ireduce_scatter, ialltoallv (uneven counts: rank s sends s+d+1 elements to d), several in flight,
 *     polled with test, completed with wait, in f32 and bf16;
 *   - sub-communicators by color: halves, the node split, and at 3-4 ranks uneven groups (1+2, 1+3, 2+2) with the
 *     blocking and non-blocking calls on each, and a rank left out (EPB_SPLIT_NONE);
 *   - the wrapper: bytes sent to other ranks per call from the real counts (alltoallv: the send side, which
 *     differs from the receive side at 3 ranks and more), the collective's name, a refusal, and splits of a
 *     wrapper counted too. */
#include <math.h>
#include <string.h>

#include "collectives.h"
#include "comm_impl.h" /* epb_comm_unwrap */
#include "tap.h"

static int fails; /* this rank's failed checks; the TAP lines carry the sum over ranks */

static float val(int src, size_t i, int salt) { return (float)epb_small_int(7 + (uint64_t)salt, (uint64_t)src, i, 8); }

static void store(void *b, epb_dtype_t dt, size_t i, float v)
{
    if (dt == EPB_DT_BF16) ((epb_bf16 *)b)[i] = epb_f32_to_bf16(v);
    else ((float *)b)[i] = v;
}
static float load(const void *b, epb_dtype_t dt, size_t i)
{
    return dt == EPB_DT_BF16 ? epb_bf16_to_f32(((const epb_bf16 *)b)[i]) : ((const float *)b)[i];
}

/* all ranks agree whether every rank passed; rank 0 prints one TAP line */
static void verdict(epb_comm_t *world, int bad, const char *what)
{
    int64_t b = bad;
    epb_allreduce(world, &b, &b, 1, EPB_DT_I64, EPB_SUM);
    if (world->rank == 0) TAP_OK(b == 0, "%d ranks: %s (%lld wrong)", world->size, what, (long long)b);
    fails += bad != 0;
}

/* the three token collectives, non-blocking (all started, then polled and waited) and checked, on comm c */
static int nonblocking_on(epb_comm_t *c, epb_dtype_t dt, int salt)
{
    int P = c->size, me = c->rank, bad = 0;
    size_t n = 37, es = epb_dtype_size(dt);
    char *ag_s = malloc(n * es), *ag_r = malloc(n * es * P), *rs_s = malloc(n * es * P), *rs_r = malloc(n * es);
    size_t *sc = calloc(4 * (size_t)P, sizeof *sc), *sd = sc + P, *rc = sd + P, *rd = rc + P, so = 0, ro = 0;
    for (int d = 0; d < P; d++) {
        sc[d] = (size_t)(me + d + 1), rc[d] = (size_t)(d + me + 1);
        sd[d] = so, rd[d] = ro;
        so += sc[d], ro += rc[d];
    }
    char *v_s = malloc(so * es), *v_r = malloc(ro * es);
    for (size_t i = 0; i < n; i++) store(ag_s, dt, i, val(me, i, salt));
    for (size_t i = 0; i < n * P; i++) store(rs_s, dt, i, val(me, i, salt + 1));
    for (size_t i = 0; i < so; i++) store(v_s, dt, i, val(me, i, salt + 2));
    memset(ag_r, 0xff, n * es * P), memset(rs_r, 0xff, n * es), memset(v_r, 0xff, ro * es);
    epb_req_t *q[3] = { 0 };
    bad += epb_iallgather(c, ag_s, ag_r, n, dt, &q[0]) != EPB_OK;
    bad += epb_ireduce_scatter(c, rs_s, rs_r, n, dt, &q[1]) != EPB_OK;
    bad += epb_ialltoallv(c, v_s, sc, sd, v_r, rc, rd, dt, &q[2]) != EPB_OK;
    for (int spins = 0, all = 0; !bad && !all && spins < 1000000; spins++) { /* test until all report done */
        all = 1;
        for (int k = 0; k < 3; k++) {
            int d = 0;
            bad += epb_test(c, q[k], &d) != EPB_OK;
            all &= d;
        }
    }
    for (int k = 0; k < 3 && !bad; k++) bad += epb_wait(c, q[k]) != EPB_OK;
    for (int s = 0; s < P && !bad; s++)
        for (size_t i = 0; i < n; i++) bad += load(ag_r, dt, (size_t)s * n + i) != val(s, i, salt);
    for (size_t i = 0; i < n && !bad; i++) {
        float want = 0;
        for (int s = 0; s < P; s++) want += val(s, (size_t)me * n + i, salt + 1);
        bad += load(rs_r, dt, i) != want;
    }
    for (int s = 0; s < P && !bad; s++) {
        size_t off = 0; /* where s's block for me starts in s's send buffer */
        for (int d = 0; d < me; d++) off += (size_t)(s + d + 1);
        for (size_t j = 0; j < rc[s]; j++) bad += load(v_r, dt, rd[s] + j) != val(s, off + j, salt + 2);
    }
    free(ag_s), free(ag_r), free(rs_s), free(rs_r), free(sc), free(v_s), free(v_r);
    return bad;
}

/* blocking calls on a sub-communicator: an allreduce of ranks and an allgather of world ranks, checked against
 * the group the colors define */
static int blocking_on(epb_comm_t *c, int world_rank, const int *members, int nmembers)
{
    int bad = c->size != nmembers;
    int64_t sum = world_rank, want = 0;
    for (int i = 0; i < nmembers; i++) want += members[i];
    bad += epb_allreduce(c, &sum, &sum, 1, EPB_DT_I64, EPB_SUM) != EPB_OK || sum != want;
    int32_t *all = malloc(sizeof *all * (size_t)(c->size > 0 ? c->size : 1)), mine = world_rank;
    bad += epb_allgather(c, &mine, all, 1, EPB_DT_I32) != EPB_OK;
    for (int i = 0; i < c->size && !bad && i < nmembers; i++) bad += all[i] != members[i]; /* key = world rank */
    free(all);
    return bad;
}

/* a split by colors[world rank] (EPB_SPLIT_NONE leaves a rank out), checked with both kinds of calls */
static void split_case(epb_comm_t *world, const int *colors, const char *what)
{
    int me = world->rank, P = world->size, members[8], nm = 0, bad = 0;
    for (int r = 0; r < P; r++)
        if (colors[me] >= 0 && colors[r] == colors[me]) members[nm++] = r;
    epb_comm_t *sub = NULL;
    bad += epb_comm_split(world, colors[me], me, &sub) != EPB_OK;
    if (!bad && colors[me] < 0) bad += sub != NULL;
    else if (!bad) {
        bad += sub == NULL;
        if (sub) {
            int pos = 0; /* this rank's place among the members (key = world rank) */
            while (pos < nm && members[pos] != me) pos++;
            bad += sub->rank != pos;
            bad += blocking_on(sub, me, members, nm);
            bad += nonblocking_on(sub, EPB_DT_F32, 11);
        }
    }
    epb_comm_destroy(sub);
    verdict(world, bad, what);
}

/* ---- the counting wrapper ---- */
typedef struct {
    double bytes;
    char last[32];
    int calls, leaves, refuse;
    int inside; /* entered and not yet left */
} count_t;

static int count_enter(void *ctx, epb_comm_t *c, const char *coll, double bytes)
{
    count_t *k = ctx;
    if (k->refuse) return epb_fail(&c->err, EPB_ESYS, "refused %s", coll);
    k->bytes += bytes;
    k->calls++;
    k->inside++;
    snprintf(k->last, sizeof k->last, "%s", coll);
    return EPB_OK;
}

static void count_leave(void *ctx, epb_comm_t *c, const char *coll)
{
    (void)c, (void)coll;
    ((count_t *)ctx)->leaves++;
    ((count_t *)ctx)->inside--;
}

static void test_tally(epb_comm_t *world)
{
    count_t k = { 0 };
    epb_tally_t hooks = { count_enter, count_leave, &k };
    epb_comm_t *t = NULL;
    epb_err_t err;
    int P = world->size, me = world->rank, bad = epb_comm_tally_create(world, 0, &hooks, &t, &err) != EPB_OK;
    if (bad) { verdict(world, 1, "wrapper set-up"); return; }
    size_t n = 10;
    float *s = calloc(n * (size_t)P * 4, sizeof *s), *r = calloc(n * (size_t)P * 4, sizeof *r);
    bad += epb_allgather(t, s, r, n, EPB_DT_F32) || k.bytes != (P - 1) * n * 4.0 || strcmp(k.last, "allgather");
    verdict(world, bad, "allgather counts (P-1) x its block");
    k.bytes = 0;
    bad = epb_reduce_scatter(t, s, r, n, EPB_DT_BF16) || k.bytes != (P - 1) * n * 2.0 || strcmp(k.last, "reduce_scatter");
    verdict(world, bad, "reduce_scatter counts (P-1) x its block, in the element size");
    k.bytes = 0;
    bad = epb_allreduce(t, s, s, n, EPB_DT_F32, EPB_SUM) || fabs(k.bytes - (P > 1 ? 2.0 * (P - 1) / P * n * 4 : 0)) > 1e-9;
    verdict(world, bad, "allreduce counts a ring, 2(P-1)/P x the buffer");
    /* uneven: rank me sends me*P+d+1 elements to d and receives d*P+me+1 from d; the send side is counted */
    size_t *sc = calloc(4 * (size_t)P, sizeof *sc), *sd = sc + P, *rc = sd + P, *rd = rc + P, so = 0, ro = 0;
    double want = 0;
    for (int d = 0; d < P; d++) {
        sc[d] = (size_t)(me * P + d + 1), rc[d] = (size_t)(d * P + me + 1), sd[d] = so, rd[d] = ro;
        so += sc[d], ro += rc[d];
        if (d != me) want += (double)sc[d] * 4;
    }
    float *vs = calloc(so, 4), *vr = calloc(ro, 4);
    k.bytes = 0;
    bad = epb_alltoallv(t, vs, sc, sd, vr, rc, rd, EPB_DT_F32) || k.bytes != want;
    verdict(world, bad, "alltoallv counts what this rank sends to the others (not what it receives)");
    k.bytes = 0;
    epb_req_t *q = NULL;
    int leaves = k.leaves;
    bad = epb_ialltoallv(t, vs, sc, sd, vr, rc, rd, EPB_DT_F32, &q) || k.bytes != want || k.leaves != leaves + 1 ||
          k.inside || epb_wait(t, q) || strcmp(k.last, "wait") || k.leaves != leaves + 2 || k.inside;
    verdict(world, bad, "ialltoallv counts when started and leaves once started; its wait is a call of its own");
    int calls0 = k.calls;
    bad = epb_sync(t) || k.calls != calls0;
    verdict(world, bad, "sync is not a call of its own by default");
    count_t ks = { 0 };
    epb_tally_t sync_hooks = { count_enter, count_leave, &ks };
    epb_comm_t *ts = NULL, *ts_half = NULL;
    bad = epb_comm_tally_create(world, 0, &sync_hooks, &ts, &err) || epb_comm_tally_sync_calls(ts) ||
          epb_comm_tally_sync_calls(world) != EPB_EUSAGE || epb_sync(ts) || ks.calls != 1 ||
          strcmp(ks.last, "sync") || ks.leaves != 1 || ks.inside || ks.bytes != 0;
    /* a split keeps it (the split itself a call of the parent's) */
    bad += epb_comm_split(ts, 0, me, &ts_half) || !ts_half || ks.calls != 2 || strcmp(ks.last, "split") ||
           epb_sync(ts_half) || ks.calls != 3 || ks.inside;
    epb_comm_destroy(ts_half);
    epb_comm_t *tt = NULL;
    int unwrap_bad = epb_comm_tally_create(ts, 0, &hooks, &tt, &err) || epb_comm_unwrap(tt) != world ||
                     epb_comm_unwrap(world) != world;
    epb_comm_destroy(tt);
    epb_comm_destroy(ts);
    verdict(world, bad, "epb_comm_tally_sync_calls: sync is a call named sync (enter and leave, 0 bytes), in splits too");
    verdict(world, unwrap_bad, "the backend under two wrappers is found (the clock offset needs its MPI handle)");
    k.refuse = 1;
    int calls = k.calls;
    bad = epb_allgather(t, s, r, n, EPB_DT_F32) != EPB_ESYS || !strstr(t->err.msg, "refused allgather") || k.calls != calls;
    k.refuse = 0;
    verdict(world, bad, "a refused call fails with the hook's message and never reaches the communicator");
    epb_comm_t *half = NULL;
    calls = k.calls, leaves = k.leaves;
    k.bytes = 0;
    bad = epb_comm_split(t, me % 2, me, &half) != EPB_OK || !half;
    /* the split waits for every rank of the parent: a call (a watchdog sees a rank stuck in it), 0 bytes */
    bad += k.calls != calls + 1 || k.leaves != leaves + 1 || k.inside || strcmp(k.last, "split") || k.bytes != 0;
    if (half) {
        k.bytes = 0;
        bad += epb_allgather(half, s, r, n, EPB_DT_F32) || k.bytes != (half->size - 1) * n * 4.0;
        epb_comm_destroy(half);
    }
    verdict(world, bad, "a split of the wrapper is a call (split, 0 bytes), and the split counts over its own ranks");
    free(s), free(r), free(sc), free(vs), free(vr);
    epb_comm_destroy(t);
}

int main(int argc, char **argv)
{
    epb_err_t err;
    epb_comm_t *world = NULL;
    if (epb_runtime_init(&argc, &argv, &err) || epb_comm_create("auto", &world, &err)) {
        printf("1..0 # SKIP no communicator: %s\n", err.msg);
        return 1;
    }
    int P = world->size, me = world->rank;
    verdict(world, nonblocking_on(world, EPB_DT_F32, 0), "iallgather, ireduce_scatter, ialltoallv in flight together, f32");
    verdict(world, nonblocking_on(world, EPB_DT_BF16, 3), "the same in bf16");
    int colors[8] = { 0 };
    for (int r = 0; r < P; r++) colors[r] = r % 2;
    split_case(world, colors, "split into even and odd ranks");
    for (int r = 0; r < P; r++) colors[r] = r == P - 1 && P > 1 ? EPB_SPLIT_NONE : 0;
    split_case(world, colors, "split leaving the last rank out");
    if (P >= 3) {
        for (int r = 0; r < P; r++) colors[r] = r == 0 ? 0 : 1;
        split_case(world, colors, P == 4 ? "uneven nodes 1+3" : "uneven nodes 1+2");
    }
    if (P == 4) {
        for (int r = 0; r < P; r++) colors[r] = r / 2;
        split_case(world, colors, "nodes 2+2");
    }
    /* the real node split: every rank of this machine, one sub-communicator */
    epb_comm_t *node = NULL;
    int bad = epb_comm_split_node(world, &node) != EPB_OK || !node;
    if (node) {
        int members[8];
        for (int r = 0; r < P; r++) members[r] = r;
        bad += node->size != world->local_size || blocking_on(node, me, members, P) ||
               nonblocking_on(node, EPB_DT_F32, 5);
        epb_comm_destroy(node);
    }
    verdict(world, bad, "node split (one host: all ranks)");
    test_tally(world);
    int rc = 0;
    if (me == 0) rc = tap_done();
    epb_comm_destroy(world);
    epb_runtime_finalize();
    return me == 0 ? rc : fails != 0;
}
