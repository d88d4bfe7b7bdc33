/* The routed exchange of tp2ep, dedup and hier (xchg.h). Host-side plans (counts, splits, which row goes where)
 * are computed from the routing and the exchanged counts; the rows move with the backend's gather ops
 * (unpermute_forward: out[i] = rows[idx[i]]) and sums (permute_backward: out[t] += rows of t), so one code path
 * serves the CPU and the CUDA backend, float32 and bf16. Index arrays hold absolute rows of the whole buffers;
 * per chunk only the destination pointer and the splits move.
 *
 * --gate-before: whoever holds the gates before the experts (the source without stage A, else the relay) scales
 * the rows as it places them (scale_rows_forward instead of a gather) and sums what comes back unweighted; the
 * gate gradients come from the expert-input gradients, against the unscaled rows, where the rows were scaled (the
 * relay keeps its received rows for that and takes dy in a buffer of its own).
 *
 * --dispatch-dtype fp8: the source quantizes the rows it sends (its gather, then quant_fp8), stage A and B carry
 * packed rows (moe_fp8_row_bytes each, as 4-byte words), a relay forwards them as they came (gather_bytes), and the
 * owner dequantizes what it received before its gather into expert order; with neither stage the owner's rows are
 * quantized and dequantized in place. The combine and the whole backward stay in the activation dtype. */
#include <stdlib.h>
#include <string.h>

#include "xchg.h"

typedef struct { void *p; size_t cap; } buf_t; /* a backend buffer grown on demand */
typedef struct { size_t *sc, *sd, *rc, *rd; } spl_t; /* alltoallv counts and displacements, elements */

typedef struct {
    int ng, gs, g, li;         /* groups, ranks per group, this rank's group and index in it */
    int *grp_of, *li_of;       /* (P) every rank's */
    int A, B;                  /* the stages present: A between groups (ng > 1), B inside a group (gs > 1) */
    epb_comm_t *inter, *intra; /* A's (same index, rank = group) and B's (rank = index) communicators */
    epb_comm_t *own_inter, *own_intra; /* those that are splits (destroyed with the run) */
    int N, El, k;
    long T, D;
    size_t ab;
    int gb;                    /* --gate-before */
    int fp8;                   /* --dispatch-dtype fp8 */
    int pad;                   /* --pad-to-capacity (tp2ep in one chunk): every (owner, local expert) block of stage
                                * B holds cap pairs, the missing ones zero rows (a gather index of -1) */
    long cap;
    size_t qb;                 /* its packed row: bytes (qb / 4 words on the wire) */
    buf_t xsAq, xRq, xsBq, xoq; /* the packed rows of xsA, xR, xsB, xo */
    /* routing on the host */
    int32_t *idx_h;            /* (T*k) */
    float *w_h;                /* (T*k) */
    /* stage A, source side: rows ordered (chunk, group, token) */
    long *sA, *rA;             /* (N*ng) rows to / from group g in chunk c */
    long bsA[MOE_MAXCHUNKS + 1], brA[MOE_MAXCHUNKS + 1]; /* chunk bases in sent / received rows; [N] totals */
    int64_t *cA_s, *cA_r;      /* (ng*N*(1+gs*El)) per peer and chunk: rows, then pairs per (index, local expert) */
    int32_t *gA_h, *posA_h, *idxA_h; /* (nsA) token of each row, (T*k) row of a token's first pair of a group, (nsA*k) */
    float *gateA_h, *dgA_h;    /* (nsA*k) */
    float *dg_h;               /* (T*k) */
    buf_t gA, posA, idxAs, gateAs, xsA, ysA, dgAs;
    /* the relay: received rows (A) or the source's tokens, ordered (chunk, source group) */
    long bR[MOE_MAXCHUNKS + 1];
    buf_t xR, yR, idxR, gateR, dgR;
    buf_t dyR;                 /* --gate-before: dy at the relay (xR is still needed) */
    int32_t *idxR_h;           /* (R*k) */
    int64_t *pairs;            /* (N*gs*El) the relay's pairs per chunk, owner index and local expert */
    /* stage B: pairs ordered (chunk, owner index, local expert, relay row) */
    long *sB, *rB;             /* (N*gs) pairs to / from index i in chunk c */
    long bsB[MOE_MAXCHUNKS + 1], brB[MOE_MAXCHUNKS + 1];
    int64_t *cB_r;             /* (gs*N*El) pairs received per relay, chunk, local expert */
    int32_t *gB_h, *posB_h;    /* (nsB) relay row of each pair, (R*k) pair of each relay row's slot */
    buf_t gB, posB, xsB, outB, doutB, dB;
    buf_t xo, outo, douto, dO; /* owner side (nrB,D) */
    /* the owner: expert rows (xp) */
    int32_t *go_h, *inv_h, *poso_h; /* (rows) source row of each xp row; B: (nrB) xp row of each received pair;
                                     * no B: (R*k) xp row of each relay row's slot */
    buf_t go, inv, poso;
    /* alltoallv splits per chunk: A in rows of D and of k elements, B in rows of D */
    spl_t sAD[MOE_MAXCHUNKS], sAK[MOE_MAXCHUNKS], sBD[MOE_MAXCHUNKS];
    spl_t sAQ[MOE_MAXCHUNKS], sBQ[MOE_MAXCHUNKS]; /* the forward dispatch's with fp8: rows of qb / 4 words */
    size_t *splmem;
    buf_t stage;               /* device communicators: the count exchanges go through it */
    int hin[MOE_MAXCHUNKS][3], nin[MOE_MAXCHUNKS], hout[MOE_MAXCHUNKS][2], nout[MOE_MAXCHUNKS];
    size_t cap_h[16];          /* host array capacities (bytes) */
} xchg_t;

#define OOM() epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank)

void xchg_shape(const moe_run_t *r, int *groups, int *group_size)
{
    const xchg_t *x = r->priv;
    *groups = x->ng;
    *group_size = x->gs;
}

/* ---- set-up ---- */

static int grouping(moe_run_t *r, xchg_t *x, int group_size, epb_err_t *err)
{
    int P = r->P;
    if (group_size == 0) { /* the job's nodes: the host communicator's node split gives each rank its node */
        epb_comm_t *node = NULL;
        int32_t me[2], *all = malloc(2 * sizeof *all * (size_t)P);
        if (!all) return OOM();
        int rc = epb_comm_split_node(r->hcomm, &node);
        if (!rc) {
            int32_t lead = r->rank;
            rc = epb_allreduce(node, &lead, &lead, 1, EPB_DT_I32, EPB_MIN);
            me[0] = lead, me[1] = node->rank;
            x->gs = node->size;
        }
        if (!rc) rc = epb_allgather(r->hcomm, me, all, 2, EPB_DT_I32);
        if (rc) epb_fail(err, EPB_ESYS, "rank %d: node split: %s", r->rank, node ? node->err.msg : r->hcomm->err.msg);
        epb_comm_destroy(node);
        /* groups numbered by their first rank */
        for (int q = 0; !rc && q < P; q++) {
            int gi = 0;
            for (int p = 0; p < P; p++) gi += all[2 * p + 1] == 0 && all[2 * p] < all[2 * q];
            x->grp_of[q] = gi;
            x->li_of[q] = all[2 * q + 1];
        }
        free(all);
        if (rc) return rc;
        x->ng = P / x->gs;
        for (int q = 0; q < P; q++)
            if (x->li_of[q] >= x->gs || x->grp_of[q] >= x->ng)
                return epb_fail(err, EPB_EUSAGE, "%s: the job's nodes hold different numbers of ranks (rank %d is "
                                "rank %d of its node, which has %d here): give node_size", r->st->name, q,
                                x->li_of[q], x->gs);
    } else {
        int gs = group_size > P ? P : group_size;
        if (P % gs)
            return epb_fail(err, EPB_EUSAGE, "%s:node_size=%d does not divide %d ranks", r->st->name, group_size, P);
        x->gs = gs, x->ng = P / gs;
        for (int q = 0; q < P; q++) x->grp_of[q] = q / gs, x->li_of[q] = q % gs;
    }
    x->g = x->grp_of[r->rank];
    x->li = x->li_of[r->rank];
    return EPB_OK;
}

int xchg_setup(moe_run_t *r, int group_size, epb_err_t *err)
{
    xchg_t *x = calloc(1, sizeof *x);
    if (!x) return OOM();
    r->priv = x;
    const moe_config_t *c = &r->cfg;
    int P = r->P;
    x->grp_of = calloc((size_t)P, sizeof *x->grp_of);
    x->li_of = calloc((size_t)P, sizeof *x->li_of);
    if (!x->grp_of || !x->li_of) return OOM();
    int rc = grouping(r, x, group_size, err);
    if (rc) return rc;
    x->A = x->ng > 1, x->B = x->gs > 1;
    x->N = r->chunks, x->El = r->El, x->k = c->k, x->T = c->T, x->D = c->D;
    x->ab = moe_dtype_size(c->dtype);
    x->gb = c->gate_before;
    x->fp8 = c->dispatch_fp8;
    x->pad = c->pad_to_capacity && x->B && !x->A && x->N == 1; /* bench refuses it elsewhere */
    x->cap = moe_capacity(c);
    x->qb = moe_fp8_row_bytes(c->D);
    if (x->A && x->B) {
        if (epb_comm_split(r->comm, x->li, x->g, &x->own_inter) || epb_comm_split(r->comm, x->g, x->li, &x->own_intra))
            return epb_fail(err, EPB_ESYS, "rank %d: split: %s", r->rank, r->comm->err.msg);
        x->inter = x->own_inter, x->intra = x->own_intra;
    } else {
        x->inter = x->A ? r->comm : NULL;
        x->intra = x->B ? r->comm : NULL;
    }
    size_t N = (size_t)x->N, ng = (size_t)x->ng, gs = (size_t)x->gs, El = (size_t)x->El, Tk = (size_t)(c->T * c->k);
    x->idx_h = malloc(Tk * 4);
    x->w_h = malloc(Tk * 4);
    x->dg_h = malloc(Tk * 4);
    x->sA = calloc(2 * N * ng, sizeof *x->sA);
    x->sB = calloc(2 * N * gs, sizeof *x->sB);
    x->cA_s = calloc(2 * ng * N * (1 + gs * El), sizeof *x->cA_s);
    x->cB_r = calloc(gs * N * El, sizeof *x->cB_r);
    x->pairs = calloc(N * gs * El, sizeof *x->pairs);
    x->splmem = calloc(N * 4 * (3 * ng + 2 * gs), sizeof *x->splmem);
    if (!x->idx_h || !x->w_h || !x->dg_h || !x->sA || !x->sB || !x->cA_s || !x->cB_r || !x->pairs || !x->splmem)
        return OOM();
    x->rA = x->sA + N * ng;
    x->rB = x->sB + N * gs;
    x->cA_r = x->cA_s + ng * N * (1 + gs * El);
    size_t *m = x->splmem;
    for (size_t ch = 0; ch < N; ch++) {
        spl_t *s[5] = { &x->sAD[ch], &x->sAK[ch], &x->sBD[ch], &x->sAQ[ch], &x->sBQ[ch] };
        size_t w[5] = { ng, ng, gs, ng, gs };
        for (int i = 0; i < 5; i++) {
            s[i]->sc = m, s[i]->sd = m + w[i], s[i]->rc = m + 2 * w[i], s[i]->rd = m + 3 * w[i];
            m += 4 * w[i];
        }
    }
    /* the count exchanges through a device communicator: send and receive halves */
    size_t cnt = (size_t)(x->A ? ng * N * (1 + gs * El) : 0) + (x->B ? gs * N * El : 0);
    if (r->comm->mem != EPB_MEM_HOST && moe_grow(r, &x->stage.p, &x->stage.cap, 2 * cnt * 8 + 64, err)) return EPB_ESYS;
    return EPB_OK;
}

void xchg_teardown(moe_run_t *r)
{
    xchg_t *x = r->priv;
    if (!x) return;
    epb_comm_destroy(x->own_inter);
    epb_comm_destroy(x->own_intra);
    void *h[] = { x->grp_of, x->li_of, x->idx_h, x->w_h, x->dg_h, x->sA, x->sB, x->cA_s, x->cB_r, x->pairs,
                  x->splmem, x->gA_h, x->posA_h, x->idxA_h, x->gateA_h, x->dgA_h, x->idxR_h, x->gB_h, x->posB_h,
                  x->go_h, x->inv_h, x->poso_h };
    for (size_t i = 0; i < sizeof h / sizeof *h; i++) free(h[i]);
    free(x);
    r->priv = NULL;
}

/* ---- small helpers ---- */

/* host array *p of at least n elements of size es (slot: its capacity in cap_h) */
static int hgrow(xchg_t *x, int slot, void *pp, size_t n, size_t es)
{
    void **p = pp;
    if (*p && x->cap_h[slot] >= n * es) return EPB_OK;
    void *q = realloc(*p, n * es + 64);
    if (!q) return EPB_ESYS;
    *p = q;
    x->cap_h[slot] = n * es;
    return EPB_OK;
}

static int bgrow(moe_run_t *r, buf_t *b, size_t bytes, epb_err_t *err) { return moe_grow(r, &b->p, &b->cap, bytes, err); }

/* row i of a backend buffer of rows of w elements of size es */
static void *at(const void *p, long i, long w, size_t es) { return (char *)p + (size_t)i * (size_t)w * es; }

/* n int64 to and from every rank of c (host or device communicator), counted like any collective */
static int alltoall_i64(moe_run_t *r, xchg_t *x, epb_comm_t *c, const int64_t *s, int64_t *rv, size_t n)
{
    if (c->mem == EPB_MEM_HOST) return epb_alltoall(c, s, rv, n, EPB_DT_I64);
    size_t b = n * (size_t)c->size * 8;
    char *st = x->stage.p;
    if (r->be->ops->to_backend(r->be, st, s, b) || epb_alltoall(c, st, st + b, n, EPB_DT_I64) || epb_sync(c) ||
        r->be->ops->to_host(r->be, rv, st + b, b))
        return EPB_ESYS;
    return EPB_OK;
}

/* splits of rows per peer (n peers) scaled to w elements per row: displacements from the chunk's first row */
static void splits(spl_t *s, const long *send, const long *recv, int n, long w)
{
    size_t so = 0, ro = 0;
    for (int p = 0; p < n; p++) {
        s->sc[p] = (size_t)send[p] * (size_t)w, s->sd[p] = so, so += s->sc[p];
        s->rc[p] = (size_t)recv[p] * (size_t)w, s->rd[p] = ro, ro += s->rc[p];
    }
}

/* alltoallv of chunk ch through s (reverse: from the receive side back), blocking or started (handle into *h) */
static int a2av(moe_run_t *r, epb_comm_t *c, const spl_t *s, int reverse, void *send, long sbase, void *recv,
                long rbase, long w, epb_dtype_t dt, int *h, epb_err_t *err)
{
    size_t es = epb_dtype_size(dt);
    void *sp = at(send, sbase, w, es), *rp = at(recv, rbase, w, es);
    const size_t *sc = reverse ? s->rc : s->sc, *sd = reverse ? s->rd : s->sd, *rc = reverse ? s->sc : s->rc,
                 *rd = reverse ? s->sd : s->rd;
    if (h) return moe_istart_alltoallv(r, c, sp, sc, sd, rp, rc, rd, dt, h, err);
    if (epb_alltoallv(c, sp, sc, sd, rp, rc, rd, dt)) {
        r->comm->err = c->err;
        return moe_fail(r, err);
    }
    return EPB_OK;
}

/* out rows [lo, lo+n) = rows[idx[lo..]] (idx absolute into rows) */
static int gather(moe_run_t *r, void *out, const void *rows, const buf_t *idx, long lo, long n)
{
    if (n <= 0) return EPB_OK;
    return r->be->ops->unpermute_forward(r->be, at(out, lo, r->cfg.D, moe_dtype_size(r->cfg.dtype)), rows,
                                         (const int32_t *)idx->p + lo, n, r->cfg.D);
}

static int upload(moe_run_t *r, buf_t *b, const int32_t *h, long lo, long n)
{
    if (n <= 0) return EPB_OK;
    return r->be->ops->to_backend(r->be, (int32_t *)b->p + lo, h + lo, (size_t)n * 4);
}

/* the relay's rows, routing and gradients: received (A) or this rank's own tokens */
static void *xR(moe_run_t *r, xchg_t *x) { return x->A ? x->xR.p : r->x; }
static void *yR(moe_run_t *r, xchg_t *x) { return x->A ? x->yR.p : r->y; }
static float *gateR(moe_run_t *r, xchg_t *x) { return x->A ? x->gateR.p : r->topk_w; }
static float *dgR(moe_run_t *r, xchg_t *x) { return x->A ? x->dgR.p : r->d_gate; }
static void *dyR(xchg_t *x) { return x->gb ? x->dyR.p : x->xR.p; } /* the relay's dy (stage A) */
static long nR(const xchg_t *x, int ch) { return x->bR[ch + 1] - x->bR[ch]; }
static int key_of(const xchg_t *x, int32_t e) { return x->li_of[e / x->El] * x->El + e % x->El; } /* B's order */
/* the group owning expert e; -1 for a pair that goes nowhere (dropped by the expert capacity) */
static int grp_e(const xchg_t *x, int32_t e) { return e < 0 ? -1 : x->grp_of[e / x->El]; }

/* ---- plans ---- */

/* Stage A's source plan: rows (chunk, group, token), their token, the row of each token's first pair of a group,
 * and each row's k indices (-1 where the expert is in another group) and gates. */
static int plan_A_source(moe_run_t *r, xchg_t *x, epb_err_t *err)
{
    int k = x->k, ng = x->ng;
    long nsA = x->bsA[x->N];
    if (hgrow(x, 0, &x->gA_h, (size_t)nsA, 4) || hgrow(x, 1, &x->posA_h, (size_t)(x->T * k), 4) ||
        hgrow(x, 2, &x->idxA_h, (size_t)nsA * k, 4) || hgrow(x, 3, &x->gateA_h, (size_t)nsA * k, 4) ||
        hgrow(x, 4, &x->dgA_h, (size_t)nsA * k, 4))
        return OOM();
    long *cur = calloc((size_t)(x->N * ng), sizeof *cur);
    if (!cur) return OOM();
    for (int ch = 0; ch < x->N; ch++)
        for (int g = 0, o = (int)x->bsA[ch]; g < ng; g++) cur[ch * ng + g] = o, o += (int)x->sA[ch * ng + g];
    for (int ch = 0; ch < x->N; ch++) {
        long t0, t1;
        moe_chunk_range(x->T, x->N, ch, &t0, &t1);
        for (long t = t0; t < t1; t++)
            for (int j = 0; j < k; j++) {
                int32_t e = x->idx_h[t * k + j];
                int g = grp_e(x, e), j0 = 0;
                if (e < 0) { x->posA_h[t * k + j] = -1; continue; }
                while (grp_e(x, x->idx_h[t * k + j0]) != g) j0++;
                long row;
                if (j0 == j) { /* the token's first expert in group g: a new row */
                    row = cur[ch * ng + g]++;
                    x->gA_h[row] = (int32_t)t;
                    x->posA_h[t * k + j] = (int32_t)row;
                    for (int i = 0; i < k; i++) x->idxA_h[row * k + i] = -1, x->gateA_h[row * k + i] = 0;
                } else {
                    row = x->posA_h[t * k + j0];
                    x->posA_h[t * k + j] = -1;
                }
                x->idxA_h[row * k + j] = e;
                x->gateA_h[row * k + j] = x->w_h[t * k + j];
            }
    }
    free(cur);
    return EPB_OK;
}

/* Stage B's plan for the relay rows of chunk ch (their indices in idxR_h): pairs ordered (owner index, local
 * expert, row), each pair's relay row, and the pair of each row's slot (-1 for an expert in another group). */
static int plan_B_relay(moe_run_t *r, xchg_t *x, int ch, epb_err_t *err)
{
    int k = x->k, G = x->gs * x->El;
    long cur[G], end[G], o = x->bsB[ch];
    for (int q = 0; q < G; q++) cur[q] = o, o += (long)x->pairs[(size_t)ch * G + q], end[q] = o;
    for (long rr = x->bR[ch]; rr < x->bR[ch + 1]; rr++)
        for (int j = 0; j < k; j++) {
            int32_t e = x->idxR_h[rr * k + j];
            if (e < 0 || x->grp_of[e / x->El] != x->g) { x->posB_h[rr * k + j] = -1; continue; }
            int q = key_of(x, e);
            if (cur[q] == end[q])
                return epb_fail(err, EPB_ESYS, "rank %d: chunk %d: the routing has more pairs than its counts", r->rank, ch);
            x->gB_h[cur[q]] = (int32_t)rr;
            x->posB_h[rr * k + j] = (int32_t)cur[q]++;
        }
    for (int q = 0; q < G; q++) {
        while (x->pad && cur[q] < end[q]) x->gB_h[cur[q]++] = -1; /* the block's padding: a zero row */
        if (cur[q] != end[q])
            return epb_fail(err, EPB_ESYS, "rank %d: chunk %d: the routing disagrees with its exchanged counts", r->rank, ch);
    }
    return EPB_OK;
}

/* The owner's expert rows of chunk ch with B: received in (relay, local expert) order, grouped by expert. */
static void plan_owner_B(xchg_t *x, const int64_t *offsets, int ch)
{
    int El = x->El, gs = x->gs;
    long rrow = x->brB[ch];
    for (int s = 0; s < gs; s++)
        for (int a = 0; a < El; a++) {
            long xrow = (long)offsets[a];
            for (int s2 = 0; s2 < s; s2++) xrow += (long)x->cB_r[((size_t)s2 * x->N + ch) * El + a];
            for (int64_t i = 0; i < x->cB_r[((size_t)s * x->N + ch) * El + a]; i++, rrow++, xrow++) {
                x->go_h[xrow] = (int32_t)rrow;
                x->inv_h[rrow] = (int32_t)xrow;
            }
        }
}

/* The owner's expert rows of chunk ch without B: each relay row's slots of the owned experts, grouped by expert. */
static int plan_owner_direct(moe_run_t *r, xchg_t *x, const int64_t *offsets, int ch, epb_err_t *err)
{
    int k = x->k, El = x->El;
    long cur[El > 0 ? El : 1];
    for (int a = 0; a < El; a++) cur[a] = (long)offsets[a];
    for (long rr = x->bR[ch]; rr < x->bR[ch + 1]; rr++)
        for (int j = 0; j < k; j++) {
            int32_t e = x->idxR_h[rr * k + j];
            unsigned a = (unsigned)(e - r->e0);
            if (e < 0 || a >= (unsigned)El) { x->poso_h[rr * k + j] = -1; continue; }
            if (cur[a] >= (long)offsets[a + 1])
                return epb_fail(err, EPB_ESYS, "rank %d: chunk %d: the routing has more rows than its counts", r->rank, ch);
            x->go_h[cur[a]] = (int32_t)rr;
            x->poso_h[rr * k + j] = (int32_t)cur[a]++;
        }
    for (int a = 0; a < El; a++)
        if (cur[a] != (long)offsets[a + 1])
            return epb_fail(err, EPB_ESYS, "rank %d: chunk %d: the routing disagrees with its exchanged counts", r->rank, ch);
    return EPB_OK;
}

/* ---- forward ---- */

int xchg_dispatch(moe_run_t *r, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    int N = x->N, ng = x->ng, gs = x->gs, El = x->El, k = x->k, W = 1 + gs * El;
    size_t ab = x->ab, D = (size_t)x->D, Tk = (size_t)(x->T * k);
    /* layout (open): the routing on the host, the counts each stage needs, exchanged */
    MOE_DO(be->ops->to_host(be, x->idx_h, r->assign, Tk * 4)); /* -1: a pair the capacity dropped */
    if (x->A) MOE_DO(be->ops->to_host(be, x->w_h, r->topk_w, Tk * 4));
    memset(x->pairs, 0, (size_t)N * gs * El * sizeof *x->pairs);
    if (x->A) {
        memset(x->cA_s, 0, (size_t)ng * N * W * sizeof *x->cA_s);
        memset(x->sA, 0, (size_t)N * ng * sizeof *x->sA);
        for (int ch = 0; ch < N; ch++) {
            long t0, t1;
            moe_chunk_range(x->T, N, ch, &t0, &t1);
            for (long t = t0; t < t1; t++)
                for (int j = 0; j < k; j++) {
                    int32_t e = x->idx_h[t * k + j];
                    int g = grp_e(x, e), j0 = 0;
                    if (e < 0) continue;
                    int64_t *cg = x->cA_s + ((size_t)g * N + ch) * W;
                    while (grp_e(x, x->idx_h[t * k + j0]) != g) j0++;
                    if (j0 == j) cg[0]++, x->sA[ch * ng + g]++;
                    cg[1 + key_of(x, e)]++;
                }
        }
        MOE_DO(alltoall_i64(r, x, x->inter, x->cA_s, x->cA_r, (size_t)N * W));
        x->bsA[0] = x->brA[0] = x->bR[0] = 0;
        for (int ch = 0; ch < N; ch++) {
            long so = 0, ro = 0;
            for (int g = 0; g < ng; g++) {
                const int64_t *cg = x->cA_r + ((size_t)g * N + ch) * W;
                x->rA[ch * ng + g] = (long)cg[0];
                for (int q = 0; q < gs * El; q++) x->pairs[(size_t)ch * gs * El + q] += cg[1 + q];
                so += x->sA[ch * ng + g], ro += x->rA[ch * ng + g];
            }
            x->bsA[ch + 1] = x->bsA[ch] + so;
            x->brA[ch + 1] = x->bR[ch + 1] = x->brA[ch] + ro;
            splits(&x->sAD[ch], x->sA + ch * ng, x->rA + ch * ng, ng, x->D);
            splits(&x->sAK[ch], x->sA + ch * ng, x->rA + ch * ng, ng, k);
            splits(&x->sAQ[ch], x->sA + ch * ng, x->rA + ch * ng, ng, (long)(x->qb / 4));
        }
    } else { /* the relay is the source: its tokens in chunk order */
        for (int ch = 0; ch < N; ch++) {
            long t0, t1;
            moe_chunk_range(x->T, N, ch, &t0, &t1);
            x->bR[ch] = t0, x->bR[ch + 1] = t1;
            for (long t = t0; t < t1; t++)
                for (int j = 0; j < k; j++)
                    if (x->idx_h[t * k + j] >= 0) x->pairs[(size_t)ch * gs * El + key_of(x, x->idx_h[t * k + j])]++;
        }
        if (x->pad) /* one chunk: every block the capacity (the rule kept at most that many of this rank's pairs) */
            for (int q = 0; q < gs * El; q++) {
                if (x->pairs[q] > x->cap)
                    return epb_fail(err, EPB_ESYS, "rank %d: %lld pairs for one expert exceed the capacity %ld", r->rank,
                                    (long long)x->pairs[q], x->cap);
                x->pairs[q] = x->cap;
            }
    }
    long R = x->bR[N], rows = 0;
    /* the owner's rows per chunk and local expert */
    if (x->B) {
        int64_t *cB_s = malloc((size_t)gs * N * El * sizeof *cB_s);
        if (!cB_s) return OOM();
        for (int i = 0; i < gs; i++)
            for (int ch = 0; ch < N; ch++)
                memcpy(cB_s + ((size_t)i * N + ch) * El, x->pairs + ((size_t)ch * gs + i) * El, (size_t)El * 8);
        int rc = alltoall_i64(r, x, x->intra, cB_s, x->cB_r, (size_t)N * El);
        free(cB_s);
        if (rc) return moe_fail(r, err);
        x->bsB[0] = x->brB[0] = 0;
        for (int ch = 0; ch < N; ch++) {
            long so = 0, ro = 0;
            for (int i = 0; i < gs; i++) {
                long s = 0, rv = 0;
                for (int a = 0; a < El; a++)
                    s += (long)x->pairs[((size_t)ch * gs + i) * El + a], rv += (long)x->cB_r[((size_t)i * N + ch) * El + a];
                x->sB[ch * gs + i] = s, x->rB[ch * gs + i] = rv, so += s, ro += rv;
            }
            x->bsB[ch + 1] = x->bsB[ch] + so, x->brB[ch + 1] = x->brB[ch] + ro;
            splits(&x->sBD[ch], x->sB + ch * gs, x->rB + ch * gs, gs, x->D);
            splits(&x->sBQ[ch], x->sB + ch * gs, x->rB + ch * gs, gs, (long)(x->qb / 4));
        }
    }
    for (int ch = 0; ch < N; ch++) {
        int64_t *off = r->offsets + (size_t)ch * (El + 1);
        off[0] = rows;
        for (int a = 0; a < El; a++) {
            int64_t n = 0;
            if (x->B)
                for (int i = 0; i < gs; i++) n += x->cB_r[((size_t)i * N + ch) * El + a];
            else
                n = x->pairs[(size_t)ch * El + a];
            off[a + 1] = off[a] + n;
        }
        rows = (long)off[El];
    }
    /* permute: room for this step, the plans that the counts and this rank's routing decide, the source's rows */
    MOE_PHASE(MOE_PH_PERMUTE);
    long nsA = x->bsA[N], nsB = x->B ? x->bsB[N] : 0, nrB = x->B ? x->brB[N] : 0;
    if (moe_rows_reserve(r, rows, err)) return EPB_ESYS;
    if (x->A && (bgrow(r, &x->gA, (size_t)nsA * 4, err) || bgrow(r, &x->posA, Tk * 4, err) ||
                 bgrow(r, &x->idxAs, (size_t)nsA * k * 4, err) || bgrow(r, &x->gateAs, (size_t)nsA * k * 4, err) ||
                 bgrow(r, &x->dgAs, (size_t)nsA * k * 4, err) || bgrow(r, &x->xsA, (size_t)nsA * D * ab, err) ||
                 bgrow(r, &x->ysA, (size_t)nsA * D * ab, err) || bgrow(r, &x->xR, (size_t)R * D * ab, err) ||
                 bgrow(r, &x->yR, (size_t)R * D * ab, err) || bgrow(r, &x->idxR, (size_t)R * k * 4, err) ||
                 bgrow(r, &x->gateR, (size_t)R * k * 4, err) || bgrow(r, &x->dgR, (size_t)R * k * 4, err) ||
                 (x->gb && bgrow(r, &x->dyR, (size_t)R * D * ab, err))))
        return EPB_ESYS;
    if (x->B && (bgrow(r, &x->gB, (size_t)nsB * 4, err) || bgrow(r, &x->posB, (size_t)R * k * 4, err) ||
                 bgrow(r, &x->xsB, (size_t)nsB * D * ab, err) || bgrow(r, &x->outB, (size_t)nsB * D * ab, err) ||
                 bgrow(r, &x->doutB, (size_t)nsB * D * ab, err) || bgrow(r, &x->dB, (size_t)nsB * D * ab, err) ||
                 bgrow(r, &x->xo, (size_t)nrB * D * ab, err) || bgrow(r, &x->outo, (size_t)nrB * D * ab, err) ||
                 bgrow(r, &x->douto, (size_t)nrB * D * ab, err) || bgrow(r, &x->dO, (size_t)nrB * D * ab, err) ||
                 bgrow(r, &x->inv, (size_t)nrB * 4, err)))
        return EPB_ESYS;
    if (bgrow(r, &x->go, (size_t)rows * 4, err) || (!x->B && bgrow(r, &x->poso, (size_t)R * k * 4, err)))
        return EPB_ESYS;
    size_t qb = x->qb;
    if (x->fp8 && ((x->A && (bgrow(r, &x->xsAq, (size_t)nsA * qb, err) || bgrow(r, &x->xRq, (size_t)R * qb, err))) ||
                   (x->B && (bgrow(r, &x->xsBq, (size_t)nsB * qb, err) || bgrow(r, &x->xoq, (size_t)nrB * qb, err))) ||
                   (!x->A && !x->B && bgrow(r, &x->xoq, (size_t)rows * qb, err))))
        return EPB_ESYS;
    if (hgrow(x, 5, &x->idxR_h, (size_t)R * k, 4) || hgrow(x, 6, &x->go_h, (size_t)rows, 4) ||
        (x->B && (hgrow(x, 7, &x->gB_h, (size_t)nsB, 4) || hgrow(x, 8, &x->posB_h, (size_t)R * k, 4) ||
                  hgrow(x, 9, &x->inv_h, (size_t)nrB, 4))) ||
        (!x->B && hgrow(x, 10, &x->poso_h, (size_t)R * k, 4)))
        return OOM();
    if (x->A) {
        int rc = plan_A_source(r, x, err);
        if (rc) return rc;
        MOE_DO(upload(r, &x->gA, x->gA_h, 0, nsA));
        MOE_DO(upload(r, &x->posA, x->posA_h, 0, (long)Tk));
        MOE_DO(upload(r, &x->idxAs, x->idxA_h, 0, nsA * k));
        MOE_DO(be->ops->to_backend(be, x->gateAs.p, x->gateA_h, (size_t)nsA * k * 4));
        MOE_DO(gather(r, x->xsA.p, r->x, &x->gA, 0, nsA));
        if (x->fp8) MOE_DO(be->ops->quant_fp8(be, x->xsAq.p, x->xsA.p, nsA, x->D));
    } else
        memcpy(x->idxR_h, x->idx_h, Tk * 4);
    for (int ch = 0; ch < N; ch++) {
        const int64_t *off = r->offsets + (size_t)ch * (El + 1);
        if (x->B) plan_owner_B(x, off, ch);
        if (x->A) continue; /* the relay's plans wait for its rows (in_finish) */
        int rc = x->B ? plan_B_relay(r, x, ch, err) : plan_owner_direct(r, x, off, ch, err);
        if (rc) return rc;
    }
    if (x->B) MOE_DO(upload(r, &x->inv, x->inv_h, 0, nrB));
    if (x->B || !x->A) MOE_DO(upload(r, &x->go, x->go_h, 0, rows));
    if (!x->A && x->B) {
        MOE_DO(upload(r, &x->gB, x->gB_h, 0, nsB));
        MOE_DO(upload(r, &x->posB, x->posB_h, 0, (long)Tk));
        if (x->gb && x->pad) /* the padding's rows, which no pair writes */
            MOE_DO(be->ops->zero(be, x->xsB.p, (size_t)nsB * D * ab));
        if (x->gb) /* tp2ep: each pair leaves its source as gate * x */
            MOE_DO(be->ops->scale_rows_forward(be, x->xsB.p, r->x, x->posB.p, r->topk_w, x->T, k, x->D));
        else
            MOE_DO(gather(r, x->xsB.p, r->x, &x->gB, 0, nsB));
        if (x->fp8) MOE_DO(be->ops->quant_fp8(be, x->xsBq.p, x->xsB.p, nsB, x->D));
    }
    if (!x->A && !x->B) MOE_DO(upload(r, &x->poso, x->poso_h, 0, (long)Tk));
    return EPB_OK;
}

static int fwd_in_start(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    x->nin[ch] = 0;
    if (!x->A && !x->B) return EPB_OK;
    MOE_PHASE(MOE_PH_DISPATCH);
    int *h = x->hin[ch];
    if (x->A) {
        if ((x->fp8 ? a2av(r, x->inter, &x->sAQ[ch], 0, x->xsAq.p, x->bsA[ch], x->xRq.p, x->brA[ch], (long)(x->qb / 4),
                           EPB_DT_I32, &h[0], err)
                    : a2av(r, x->inter, &x->sAD[ch], 0, x->xsA.p, x->bsA[ch], x->xR.p, x->brA[ch], x->D, r->comm_dt,
                           &h[0], err)) ||
            a2av(r, x->inter, &x->sAK[ch], 0, x->idxAs.p, x->bsA[ch], x->idxR.p, x->brA[ch], x->k, EPB_DT_I32, &h[1], err) ||
            a2av(r, x->inter, &x->sAK[ch], 0, x->gateAs.p, x->bsA[ch], x->gateR.p, x->brA[ch], x->k, EPB_DT_F32, &h[2], err))
            return EPB_ESYS;
        x->nin[ch] = 3;
    } else {
        if (x->fp8 ? a2av(r, x->intra, &x->sBQ[ch], 0, x->xsBq.p, x->bsB[ch], x->xoq.p, x->brB[ch], (long)(x->qb / 4),
                          EPB_DT_I32, &h[0], err)
                   : a2av(r, x->intra, &x->sBD[ch], 0, x->xsB.p, x->bsB[ch], x->xo.p, x->brB[ch], x->D, r->comm_dt,
                          &h[0], err))
            return EPB_ESYS;
        x->nin[ch] = 1;
    }
    return EPB_OK;
}

/* waits for the chunk's collectives started by a start hook, in the open comm phase */
static int wait_all(moe_run_t *r, const int *h, int n, epb_err_t *err)
{
    for (int i = 0; i < n; i++)
        if (moe_wait(r, h[i], err)) return EPB_ESYS;
    return EPB_OK;
}

static int fwd_in_finish(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const int64_t *off = r->offsets + (size_t)ch * (x->El + 1);
    long xlo = (long)off[0], xn = (long)off[x->El] - xlo, k = x->k, lo = x->bR[ch], n = nR(x, ch);
    if (x->nin[ch]) {
        MOE_PHASE(MOE_PH_DISPATCH);
        if (wait_all(r, x->hin[ch], x->nin[ch], err)) return EPB_ESYS;
    }
    MOE_PHASE(MOE_PH_PERMUTE);
    if (x->A) { /* the relay's rows of this chunk are here: its plans */
        if (n) MOE_DO(be->ops->to_host(be, x->idxR_h + lo * k, (int32_t *)x->idxR.p + lo * k, (size_t)(n * k) * 4));
        if (x->B) {
            int rc = plan_B_relay(r, x, ch, err);
            if (rc) return rc;
            MOE_DO(upload(r, &x->gB, x->gB_h, x->bsB[ch], x->bsB[ch + 1] - x->bsB[ch]));
            MOE_DO(upload(r, &x->posB, x->posB_h, lo * k, n * k));
            long pb = x->bsB[ch], pn = x->bsB[ch + 1] - pb;
            if (x->fp8 && pn) /* the packed rows go on as they came */
                MOE_DO(be->ops->gather_bytes(be, (char *)x->xsBq.p + (size_t)pb * x->qb, x->xRq.p,
                                             (const int32_t *)x->gB.p + pb, pn, x->qb));
            else if (x->gb && n) /* the relay's pairs leave as gate * x */
                MOE_DO(be->ops->scale_rows_forward(be, x->xsB.p, at(x->xR.p, lo, x->D, x->ab), (const int32_t *)x->posB.p + lo * k,
                                               (const float *)x->gateR.p + lo * k, n, (int)k, x->D));
            else if (!x->gb)
                MOE_DO(gather(r, x->xsB.p, x->xR.p, &x->gB, pb, pn));
            MOE_PHASE(MOE_PH_DISPATCH);
            if (x->fp8 ? a2av(r, x->intra, &x->sBQ[ch], 0, x->xsBq.p, pb, x->xoq.p, x->brB[ch], (long)(x->qb / 4),
                              EPB_DT_I32, NULL, err)
                       : a2av(r, x->intra, &x->sBD[ch], 0, x->xsB.p, pb, x->xo.p, x->brB[ch], x->D, r->comm_dt, NULL, err))
                return EPB_ESYS;
            MOE_PHASE(MOE_PH_PERMUTE);
        } else {
            int rc = plan_owner_direct(r, x, off, ch, err);
            if (rc) return rc;
            MOE_DO(upload(r, &x->go, x->go_h, xlo, xn));
            MOE_DO(upload(r, &x->poso, x->poso_h, lo * k, n * k));
        }
    }
    if (x->fp8 && x->B) { /* the owner's received pairs of this chunk, dequantized */
        long rb = x->brB[ch], rn = x->brB[ch + 1] - rb;
        if (rn) MOE_DO(be->ops->dequant_fp8(be, at(x->xo.p, rb, x->D, x->ab), (char *)x->xoq.p + (size_t)rb * x->qb, rn, x->D));
    } else if (x->fp8 && x->A && n) /* the owner is the relay: its received rows, dequantized */
        MOE_DO(be->ops->dequant_fp8(be, at(x->xR.p, lo, x->D, x->ab), (char *)x->xRq.p + (size_t)lo * x->qb, n, x->D));
    if (x->gb && !x->B) { /* the relay is the owner: its rows become expert rows as gate * x */
        if (n)
            MOE_DO(be->ops->scale_rows_forward(be, r->xp, at(xR(r, x), lo, x->D, x->ab), (const int32_t *)x->poso.p + lo * k,
                                           gateR(r, x) + lo * k, n, (int)k, x->D));
    } else
        MOE_DO(gather(r, r->xp, x->B ? x->xo.p : xR(r, x), &x->go, xlo, xn));
    if (x->fp8 && !x->A && !x->B && xn) { /* nothing crossed: the owner's rows as FP8 would carry them */
        MOE_DO(be->ops->quant_fp8(be, x->xoq.p, at(r->xp, xlo, x->D, x->ab), xn, x->D));
        MOE_DO(be->ops->dequant_fp8(be, at(r->xp, xlo, x->D, x->ab), x->xoq.p, xn, x->D));
    }
    return EPB_OK;
}

static int fwd_out_start(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    long k = x->k, lo = x->bR[ch], n = nR(x, ch);
    size_t ab = x->ab;
    x->nout[ch] = 0;
    if (x->B) {
        MOE_PHASE(MOE_PH_UNPERMUTE); /* the chunk's expert outputs back into the order they arrived in */
        MOE_DO(gather(r, x->outo.p, r->ep_out, &x->inv, x->brB[ch], x->brB[ch + 1] - x->brB[ch]));
        MOE_PHASE(MOE_PH_COMBINE);
        if (!x->A) /* to the source, which applies the gates once every chunk is back */
            return a2av(r, x->intra, &x->sBD[ch], 1, x->outo.p, x->brB[ch], x->outB.p, x->bsB[ch], x->D, r->comm_dt,
                        &x->hout[ch][x->nout[ch]++], err);
        if (a2av(r, x->intra, &x->sBD[ch], 1, x->outo.p, x->brB[ch], x->outB.p, x->bsB[ch], x->D, r->comm_dt, NULL, err))
            return EPB_ESYS;
    }
    if (!x->A && x->B) return EPB_OK;
    /* the relay applies the gates and sums its pairs of each row */
    MOE_PHASE(MOE_PH_GATE);
    if (n)
        MOE_DO(be->ops->combine_forward(be, at(yR(r, x), lo, x->D, ab), x->B ? x->outB.p : r->ep_out,
                                    (const int32_t *)(x->B ? x->posB.p : x->poso.p) + lo * k,
                                    x->gb ? NULL : gateR(r, x) + lo * k, n, (int)k, x->D));
    if (!x->A) return EPB_OK;
    MOE_PHASE(MOE_PH_COMBINE);
    return a2av(r, x->inter, &x->sAD[ch], 1, x->yR.p, x->brA[ch], x->ysA.p, x->bsA[ch], x->D, r->comm_dt,
                &x->hout[ch][x->nout[ch]++], err);
}

static int fwd_out_finish(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    if (!x->nout[ch]) return EPB_OK;
    MOE_PHASE(MOE_PH_COMBINE);
    return wait_all(r, x->hout[ch], x->nout[ch], err);
}

int xchg_combine(moe_run_t *r, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const moe_config_t *c = &r->cfg;
    if (x->A) { /* the source sums one partial per group */
        MOE_PHASE(MOE_PH_GATE);
        MOE_DO(be->ops->zero(be, r->y, (size_t)(c->T * c->D) * x->ab));
        MOE_DO(be->ops->permute_backward(be, r->y, x->ysA.p, x->posA.p, c->T, c->k, c->D));
    } else if (x->B) { /* tp2ep: the gates applied on the source, y[t] = sum_j w[t,j] out[pair t,j] */
        MOE_PHASE(MOE_PH_GATE);
        MOE_DO(be->ops->combine_forward(be, r->y, x->outB.p, x->posB.p, x->gb ? NULL : r->topk_w, c->T, c->k, c->D));
    }
    return EPB_OK;
}

/* ---- backward ---- */

int xchg_combine_backward(moe_run_t *r, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const moe_config_t *c = &r->cfg;
    size_t ab = x->ab;
    MOE_PHASE(MOE_PH_GATE_BWD);
    MOE_DO(be->ops->zero(be, r->d_gate, (size_t)(c->T * c->k) * 4));
    if (x->A) /* y's backward: each partial's gradient is its token's dy (sent in xsA's place) */
        MOE_DO(gather(r, x->xsA.p, r->dy, &x->gA, 0, x->bsA[x->N]));
    else if (x->B) {
        MOE_DO(be->ops->zero(be, x->doutB.p, (size_t)x->bsB[x->N] * (size_t)c->D * ab));
        MOE_DO(be->ops->combine_backward(be, x->doutB.p, x->gb ? NULL : r->d_gate, r->dy, x->outB.p, x->posB.p,
                                     x->gb ? NULL : r->topk_w, c->T, c->k, c->D));
    } else {
        MOE_DO(be->ops->zero(be, r->d_ep_out, (size_t)r->rows * (size_t)c->D * ab));
        MOE_DO(be->ops->combine_backward(be, r->d_ep_out, x->gb ? NULL : r->d_gate, r->dy, r->ep_out, x->poso.p,
                                     x->gb ? NULL : r->topk_w, c->T, c->k, c->D));
    }
    return EPB_OK;
}

static int bwd_in_start(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    x->nin[ch] = 0;
    if (!x->A && !x->B) return EPB_OK;
    MOE_PHASE(MOE_PH_COMBINE_BWD);
    x->nin[ch] = 1;
    if (x->A) /* dy rows to the relays, into xR's place (with --gate-before a place of their own) */
        return a2av(r, x->inter, &x->sAD[ch], 0, x->xsA.p, x->bsA[ch], dyR(x), x->brA[ch], x->D, r->comm_dt,
                    &x->hin[ch][0], err);
    return a2av(r, x->intra, &x->sBD[ch], 0, x->doutB.p, x->bsB[ch], x->douto.p, x->brB[ch], x->D, r->comm_dt,
                &x->hin[ch][0], err);
}

static int bwd_in_finish(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const int64_t *off = r->offsets + (size_t)ch * (x->El + 1);
    long xlo = (long)off[0], xn = (long)off[x->El] - xlo, k = x->k, lo = x->bR[ch], n = nR(x, ch);
    size_t ab = x->ab, D = (size_t)x->D;
    if (!x->nin[ch]) return EPB_OK;
    MOE_PHASE(MOE_PH_COMBINE_BWD);
    if (wait_all(r, x->hin[ch], x->nin[ch], err)) return EPB_ESYS;
    if (x->A) { /* the relay: the gates' backward on its rows (dy in xR, or dyR) */
        MOE_PHASE(MOE_PH_GATE_BWD);
        void *dout = x->B ? x->doutB.p : r->d_ep_out;
        long plo = x->B ? x->bsB[ch] : xlo, pn = x->B ? x->bsB[ch + 1] - x->bsB[ch] : xn;
        if (pn) MOE_DO(be->ops->zero(be, at(dout, plo, x->D, ab), (size_t)pn * D * ab));
        if (n) {
            MOE_DO(be->ops->zero(be, dgR(r, x) + lo * k, (size_t)(n * k) * 4));
            MOE_DO(be->ops->combine_backward(be, dout, x->gb ? NULL : dgR(r, x) + lo * k, at(dyR(x), lo, x->D, ab),
                                         x->B ? x->outB.p : r->ep_out,
                                         (const int32_t *)(x->B ? x->posB.p : x->poso.p) + lo * k,
                                         x->gb ? NULL : gateR(r, x) + lo * k, n, (int)k, x->D));
        }
        if (!x->B) return EPB_OK;
        MOE_PHASE(MOE_PH_COMBINE_BWD);
        if (a2av(r, x->intra, &x->sBD[ch], 0, x->doutB.p, x->bsB[ch], x->douto.p, x->brB[ch], x->D, r->comm_dt, NULL, err))
            return EPB_ESYS;
    }
    MOE_PHASE(MOE_PH_UNPERMUTE_BWD); /* the received gradients to the expert rows */
    MOE_DO(gather(r, r->d_ep_out, x->douto.p, &x->go, xlo, xn));
    return EPB_OK;
}

static int bwd_out_start(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const int64_t *off = r->offsets + (size_t)ch * (x->El + 1);
    long k = x->k, lo = x->bR[ch], n = nR(x, ch);
    size_t ab = x->ab;
    x->nout[ch] = 0;
    (void)off;
    if (x->B) {
        MOE_PHASE(MOE_PH_PERMUTE_BWD); /* expert rows back to the order they arrived in */
        MOE_DO(gather(r, x->dO.p, r->d_xp, &x->inv, x->brB[ch], x->brB[ch + 1] - x->brB[ch]));
        MOE_PHASE(MOE_PH_DISPATCH_BWD);
        if (!x->A)
            return a2av(r, x->intra, &x->sBD[ch], 1, x->dO.p, x->brB[ch], x->dB.p, x->bsB[ch], x->D, r->comm_dt,
                        &x->hout[ch][x->nout[ch]++], err);
        if (a2av(r, x->intra, &x->sBD[ch], 1, x->dO.p, x->brB[ch], x->dB.p, x->bsB[ch], x->D, r->comm_dt, NULL, err))
            return EPB_ESYS;
    }
    /* the relay sums each row's pair gradients (into yR's place; without A, straight into dx) */
    MOE_PHASE(MOE_PH_PERMUTE_BWD);
    void *dxr = x->A ? x->yR.p : r->dx;
    if (x->A && n) MOE_DO(be->ops->zero(be, at(dxr, lo, x->D, ab), (size_t)n * (size_t)x->D * ab));
    if (n && x->gb) /* dx += gate * d(input), the gate gradients against the unscaled rows */
        MOE_DO(be->ops->scale_rows_backward(be, at(dxr, lo, x->D, ab), dgR(r, x) + lo * k, x->B ? x->dB.p : r->d_xp,
                                        at(xR(r, x), lo, x->D, ab), (const int32_t *)(x->B ? x->posB.p : x->poso.p) + lo * k,
                                        gateR(r, x) + lo * k, n, (int)k, x->D));
    else if (n)
        MOE_DO(be->ops->permute_backward(be, at(dxr, lo, x->D, ab), x->B ? x->dB.p : r->d_xp,
                                     (const int32_t *)(x->B ? x->posB.p : x->poso.p) + lo * k, n, (int)k, x->D));
    if (!x->A) return EPB_OK;
    MOE_PHASE(MOE_PH_DISPATCH_BWD); /* one gradient row per (token, group) back to the source, its gate gradients in f32 */
    if (a2av(r, x->inter, &x->sAD[ch], 1, x->yR.p, x->brA[ch], x->ysA.p, x->bsA[ch], x->D, r->comm_dt,
             &x->hout[ch][x->nout[ch]++], err) ||
        a2av(r, x->inter, &x->sAK[ch], 1, x->dgR.p, x->brA[ch], x->dgAs.p, x->bsA[ch], x->k, EPB_DT_F32,
             &x->hout[ch][x->nout[ch]++], err))
        return EPB_ESYS;
    return EPB_OK;
}

static int bwd_out_finish(moe_run_t *r, int ch, epb_err_t *err)
{
    xchg_t *x = r->priv;
    if (!x->nout[ch]) return EPB_OK;
    MOE_PHASE(MOE_PH_DISPATCH_BWD);
    return wait_all(r, x->hout[ch], x->nout[ch], err);
}

int xchg_dispatch_backward(moe_run_t *r, epb_err_t *err)
{
    xchg_t *x = r->priv;
    moe_backend_t *be = r->be;
    const moe_config_t *c = &r->cfg;
    int k = c->k;
    if (x->A) { /* the source adds one gradient row per group into dx and takes each pair's gate gradient */
        MOE_PHASE(MOE_PH_PERMUTE_BWD);
        MOE_DO(be->ops->permute_backward(be, r->dx, x->ysA.p, x->posA.p, c->T, k, c->D));
        long nsA = x->bsA[x->N];
        if (nsA) MOE_DO(be->ops->to_host(be, x->dgA_h, x->dgAs.p, (size_t)nsA * k * 4));
        for (long t = 0; t < c->T; t++)
            for (int j = 0; j < k; j++) {
                int g = grp_e(x, x->idx_h[t * k + j]), j0 = 0;
                if (g < 0) { x->dg_h[t * k + j] = 0; continue; } /* dropped: no gradient */
                while (grp_e(x, x->idx_h[t * k + j0]) != g) j0++;
                x->dg_h[t * k + j] = x->dgA_h[(long)x->posA_h[t * k + j0] * k + j];
            }
        MOE_DO(be->ops->to_backend(be, r->d_gate, x->dg_h, (size_t)(c->T * k) * 4));
    } else if (x->B) {
        MOE_PHASE(MOE_PH_PERMUTE_BWD); /* on the source: each pair's gradient into its token */
        if (x->gb)
            MOE_DO(be->ops->scale_rows_backward(be, r->dx, r->d_gate, x->dB.p, r->x, x->posB.p, r->topk_w, c->T, k, c->D));
        else
            MOE_DO(be->ops->permute_backward(be, r->dx, x->dB.p, x->posB.p, c->T, k, c->D));
    }
    return EPB_OK;
}

const moe_pipe_t xchg_pipe_fwd = { fwd_in_start, fwd_in_finish, fwd_out_start, fwd_out_finish };
const moe_pipe_t xchg_pipe_bwd = { bwd_in_start, bwd_in_finish, bwd_out_start, bwd_out_finish };
