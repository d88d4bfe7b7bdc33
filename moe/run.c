/* The run framework: set-up and seeding, the phases (opened and closed here, each a kind that the guard and the
 * counting wrapper enforce), the layer's common parts (route, experts, route backward, gradient sync), training
 * updates, gathering the global tensors from their owners and the single-device check. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

extern const moe_strategy_t moe_strategy_local; /* the single-device semantics: the check's reference */

/* ---- allocations freed with the run ---- */

typedef struct {
    void **p;
    int n, cap;
} bufs_t;

void *moe_alloc(moe_run_t *r, size_t bytes, epb_err_t *err)
{
    bufs_t *b = r->bufs;
    if (b->n == b->cap) {
        int nc = b->cap ? 2 * b->cap : 64;
        void **np = realloc(b->p, (size_t)nc * sizeof *np);
        if (!np) { epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank); return NULL; }
        b->p = np, b->cap = nc;
    }
    void *p = r->be->ops->alloc(r->be, bytes ? bytes : 64);
    if (!p) {
        if (r->m.open >= 0) epb_fail(err, EPB_ESYS, "rank %d: phase %s: %s", r->rank, moe_phase_names[r->m.open], r->be->err.msg);
        else epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->be->err.msg);
        return NULL;
    }
    b->p[b->n++] = p;
    return p;
}

int moe_grow(moe_run_t *r, void **p, size_t *cap, size_t bytes, epb_err_t *err)
{
    if (*p && *cap >= bytes) return EPB_OK;
    bufs_t *b = r->bufs;
    for (int i = 0; *p && i < b->n; i++)
        if (b->p[i] == *p) { /* out of the list, freed */
            r->be->ops->free(r->be, *p);
            b->p[i] = b->p[--b->n];
            break;
        }
    *p = NULL;
    *cap = 0;
    if (!(*p = moe_alloc(r, bytes, err))) return EPB_ESYS;
    *cap = bytes;
    return EPB_OK;
}

static void bufs_free(moe_run_t *r)
{
    bufs_t *b = r->bufs;
    if (!b) return;
    for (int i = 0; i < b->n; i++) r->be->ops->free(r->be, b->p[i]);
    free(b->p);
    free(b);
    r->bufs = NULL;
}

/* ---- phases ---- */

int moe_fail(moe_run_t *r, epb_err_t *err)
{
    const char *why = r->comm && r->comm->err.msg[0] ? r->comm->err.msg : r->be->err.msg;
    return epb_fail(err, EPB_ESYS, "rank %d: phase %s: %s", r->rank,
                    r->m.open >= 0 ? moe_phase_names[r->m.open] : "(between phases)", why);
}

static void busy_wait_us(double us)
{
    double until = epb_now_us() + us;
    while (epb_now_us() < until) {}
}

/* what the guard enforces while ph is open (-1: nothing open, nothing forbidden) */
static void guard_for(moe_run_t *r, int ph)
{
    moe_kind_t k = ph < 0 ? MOE_COMPUTE : moe_phase_kinds[ph];
    r->be->forbid = k == MOE_COMM ? MOE_FORBID_COMPUTE | MOE_FORBID_MEMOPS : k == MOE_SYNC ? MOE_FORBID_COMPUTE : 0;
    r->be->forbid_why = ph < 0 ? NULL : moe_phase_names[ph];
}

/* Time in flight behind compute: since the last call, every comm phase with a collective in flight gains the time
 * this rank spent in a compute phase. Called whenever the open phase or the set in flight changes. */
static void fly_account(moe_run_t *r)
{
    double now = epb_now_us();
    if (r->m.open >= 0 && moe_phase_kinds[r->m.open] == MOE_COMPUTE)
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            if (r->m.fly[ph] > 0) r->m.hidden[ph] += now - r->m.fly_us;
    r->m.fly_us = now;
}

static int phase_close(moe_run_t *r, epb_err_t *err)
{
    int ph = r->m.open;
    if (ph < 0) return EPB_OK;
    const moe_hooks_t *h = &r->hooks;
    if (h->delay_phase == ph && (h->delay_rank < 0 || h->delay_rank == r->rank)) busy_wait_us(h->delay_us);
    if (h->slow_phase == ph) busy_wait_us((epb_now_us() - r->m.open_us) * h->slow_pct / 100.0);
    double us = 0;
    int rc = r->be->ops->event_record(r->be, r->ev[1]);
    if (!rc) rc = r->be->ops->event_elapsed_us(r->be, r->ev[0], r->ev[1], &us);
    if (rc) return moe_fail(r, err);
    r->m.us[ph] += us;
    if (r->m.entries[ph] <= MOE_MAXSEG) r->m.dur[ph][r->m.entries[ph] - 1] = us;
    fly_account(r); /* (the elapsed time waited for the device: the host clock is where the phase ended) */
    r->m.open = -1;
    guard_for(r, -1);
    return EPB_OK;
}

int moe_phase(moe_run_t *r, moe_phase_t ph, epb_err_t *err)
{
    int rc = phase_close(r, err);
    if (rc) return rc;
    r->comm->err.msg[0] = 0;
    r->be->err.msg[0] = 0;
    if (r->be->ops->event_record(r->be, r->ev[0])) return moe_fail(r, err);
    r->m.open = (int)ph;
    r->m.open_us = epb_now_us();
    r->m.fly_us = r->m.open_us;
    /* a comm or sync phase entered: this rank's arrival, on the job clock (the previous phase's end has waited
     * for the device, so the host clock is the device's position too) */
    if (moe_phase_kinds[ph] != MOE_COMPUTE && r->m.entries[ph] < MOE_MAXSEG)
        r->m.arrive[ph][r->m.entries[ph]] = r->m.open_us + r->clock_offset_us;
    r->m.entries[ph]++;
    guard_for(r, (int)ph);
    return EPB_OK;
}

/* the counting wrapper's hooks: a collective belongs to the open comm or sync phase, which gets its bytes and
 * its name; outside the step (the loss, set-up) calls are neither counted nor refused */
static int tally_enter(void *ctx, epb_comm_t *c, const char *coll, double bytes)
{
    moe_run_t *r = ctx;
    int ph = r->m.open;
    if (ph < 0) return EPB_OK;
    if (moe_phase_kinds[ph] == MOE_COMPUTE)
        return epb_fail(&c->err, EPB_ESYS, "%s called in compute phase %s: collectives belong in comm and sync phases",
                        coll, moe_phase_names[ph]);
    r->m.bytes[ph] += bytes;
    if (strcmp(coll, "wait")) { /* a wait completes a collective already named when it started */
        char *l = r->m.coll[ph];
        size_t n = strlen(coll), len = strlen(l);
        int seen = 0;
        for (const char *p = l; *p && !seen; p = strchr(p, '+') ? strchr(p, '+') + 1 : p + strlen(p))
            seen = !strncmp(p, coll, n) && (p[n] == '+' || !p[n]);
        if (!seen && len + n + 2 < sizeof r->m.coll[ph]) snprintf(l + len, sizeof r->m.coll[ph] - len, "%s%s", len ? "+" : "", coll);
    }
    return EPB_OK;
}

/* ---- non-blocking collectives in flight ---- */

int moe_istart_alltoallv(moe_run_t *r, epb_comm_t *c, const void *s, const size_t *sc, const size_t *sd, void *rv,
                         const size_t *rc, const size_t *rd, epb_dtype_t dt, int *h, epb_err_t *err)
{
    int ph = r->m.open, i = 0;
    while (i < MOE_MAXREQ && r->req[i].used) i++;
    if (i == MOE_MAXREQ)
        return epb_fail(err, EPB_ESYS, "rank %d: phase %s: more than %d collectives in flight", r->rank,
                        ph >= 0 ? moe_phase_names[ph] : "(none)", MOE_MAXREQ);
    moe_req_t *q = &r->req[i];
    if (epb_ialltoallv(c, s, sc, sd, rv, rc, rd, dt, &q->req)) {
        r->comm->err = c->err; /* moe_fail reports the run's communicator */
        return moe_fail(r, err);
    }
    fly_account(r);
    *q = (moe_req_t){ c, q->req, ph, 0, 1 };
    if (ph >= 0) r->m.fly[ph]++;
    *h = i;
    return EPB_OK;
}

/* a request seen complete (by a test or its wait) no longer counts as in flight */
static void req_landed(moe_run_t *r, moe_req_t *q)
{
    fly_account(r);
    q->done = 1;
    if (q->phase >= 0) r->m.fly[q->phase]--;
}

int moe_wait(moe_run_t *r, int h, epb_err_t *err)
{
    moe_req_t *q = h >= 0 && h < MOE_MAXREQ ? &r->req[h] : NULL;
    if (!q || !q->used) return epb_fail(err, EPB_ESYS, "rank %d: moe_wait: no collective %d in flight", r->rank, h);
    int rc = epb_wait(q->comm, q->req);
    if (!q->done) req_landed(r, q);
    q->used = 0;
    if (rc) {
        r->comm->err = q->comm->err;
        return moe_fail(r, err);
    }
    return EPB_OK;
}

/* Tests every collective in flight once (MPI progresses a non-blocking collective only inside MPI calls). */
static int progress(moe_run_t *r, epb_err_t *err)
{
    for (int i = 0; i < MOE_MAXREQ; i++) {
        moe_req_t *q = &r->req[i];
        int done = 0;
        if (!q->used || q->done) continue;
        if (epb_test(q->comm, q->req, &done)) {
            r->comm->err = q->comm->err;
            return moe_fail(r, err);
        }
        if (done) req_landed(r, q);
    }
    return EPB_OK;
}

static int in_flight(const moe_run_t *r)
{
    for (int i = 0; i < MOE_MAXREQ; i++)
        if (r->req[i].used && !r->req[i].done) return 1;
    return 0;
}

/* ---- set-up ---- */

double moe_expert_flop(const moe_config_t *c, double rows, int backward)
{
    return (backward ? 12.0 : 6.0) * rows * (double)c->D * (double)c->F;
}

int moe_rows_reserve(moe_run_t *r, long rows, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    r->rows = rows;
    if (rows <= r->rows_cap && r->xp) return EPB_OK;
    size_t ab = moe_dtype_size(c->dtype), rd = (size_t)rows * (size_t)c->D * ab, rf = (size_t)rows * (size_t)c->F * ab;
    void **bd[] = { &r->xp, &r->ep_out, &r->d_ep_out, &r->d_xp }, **bf[] = { &r->a1, &r->a3, &r->s };
    size_t caps = 0; /* every buffer is (re)allocated together: their capacity is rows_cap */
    for (int i = 0; i < 4; i++) { caps = 0; if (moe_grow(r, bd[i], &caps, rd, err)) return EPB_ESYS; }
    for (int i = 0; i < 3; i++) { caps = 0; if (moe_grow(r, bf[i], &caps, rf, err)) return EPB_ESYS; }
    caps = 0;
    if (moe_grow(r, &r->work, &caps, 2 * rf, err)) return EPB_ESYS;
    r->rows_cap = rows;
    return EPB_OK;
}

/* This rank's pairs on the host (assign_h, from topk_idx) with the expert capacity's rule applied: kept (E) gets
 * the kept pairs per expert; the pairs dropped, -1 out of memory, -2 when the backend failed (its err says why) */
static long host_capped(moe_run_t *r, int64_t *kept)
{
    const moe_config_t *c = &r->cfg;
    size_t Tk = (size_t)c->T * (size_t)c->k;
    if (r->be->ops->to_host(r->be, r->assign_h, r->topk_idx, Tk * 4) ||
        r->be->ops->to_host(r->be, r->gate_h, r->topk_w, Tk * 4))
        return -2;
    return moe_capacity_drop(r->assign_h, r->gate_h, c->T, c->k, c->E, moe_capacity_group(c), moe_capacity(c),
                             c->drop_policy, r->assign_h, kept);
}

/* Redundant experts: the load of the run's first batch (its tokens routed with the initial router and bias,
 * untimed; every rank's pairs summed, with a capacity those it keeps) placed by EPLB's rule (moe_redundant_place),
 * the same on every rank; the replica tables and gw. */
static int place_redundant(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    int E = c->E, Ep = r->Ep;
    if (be->ops->route_forward(be, r->scores, r->topk_idx, r->topk_w, r->counts, r->x, r->Wr, r->bias, c->T, c->D, E,
                               c->k, moe_route_of(c)) || be->ops->sync(be))
        return epb_fail(err, EPB_ESYS, "rank %d: routing the first batch (--redundant): %s", r->rank, be->err.msg);
    int64_t *load = malloc(sizeof *load * (size_t)E);
    r->slot_log = malloc(sizeof *r->slot_log * (size_t)Ep);
    r->rep_off = malloc(sizeof *r->rep_off * ((size_t)E + 1));
    r->rep_slot = malloc(sizeof *r->rep_slot * (size_t)Ep);
    r->rep_idx = malloc(sizeof *r->rep_idx * (size_t)E);
    if (!load || !r->slot_log || !r->rep_off || !r->rep_slot || !r->rep_idx) {
        free(load);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory (--redundant)", r->rank);
    }
    memcpy(load, r->counts, sizeof *load * (size_t)E);
    long d = c->capacity_factor > 0 ? host_capped(r, load) : 0; /* what the experts compute: the pairs kept */
    int rc = EPB_OK;
    if (d == -2) rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    else if (d < 0 || (!(rc = epb_allreduce(r->hcomm, load, load, (size_t)E, EPB_DT_I64, EPB_SUM)) &&
                       moe_redundant_place(load, E, c->redundant, r->P, r->slot_log)))
        rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory (--redundant)", r->rank);
    else if (rc) epb_fail(err, rc, "rank %d: %s", r->rank, r->hcomm->err.msg);
    free(load);
    if (rc) return rc;
    moe_replica_index(r->slot_log, E, c->redundant, r->rep_off, r->rep_slot);
    r->nrep = 0;
    for (int e = 0; e < E; e++) r->rep_idx[e] = r->rep_off[e + 1] - r->rep_off[e] > 1 ? r->nrep++ : -1;
    size_t gn = 3 * (size_t)r->nrep * (size_t)c->D * (size_t)c->F * moe_dtype_size(c->dtype);
    return r->nrep && !(r->gw = moe_alloc(r, gn, err)) ? EPB_ESYS : EPB_OK;
}

/* the run's own tensors for the owned experts, seeded by global index: x and dy of tokens rank*T.., Wr,
 * expert_bias = 0, the experts of slots e0..e0+El */
static int alloc_seed(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    size_t T = (size_t)c->T, D = (size_t)c->D, E = (size_t)c->E, k = (size_t)c->k, ab = moe_dtype_size(c->dtype),
           wn = (size_t)r->El * D * (size_t)c->F;
    moe_backend_t *be = r->be;
    if (!(r->x = moe_alloc(r, T * D * ab, err)) || !(r->Wr = moe_alloc(r, D * E * 4, err)) ||
        !(r->bias = moe_alloc(r, E * 4, err)) || !(r->w1 = moe_alloc(r, wn * ab, err)) ||
        !(r->w3 = moe_alloc(r, wn * ab, err)) || !(r->w2 = moe_alloc(r, wn * ab, err)) ||
        !(r->topk_idx = moe_alloc(r, T * k * 4, err)) || !(r->topk_w = moe_alloc(r, T * k * 4, err)) ||
        !(r->y = moe_alloc(r, T * D * ab, err)) || !(r->dy = moe_alloc(r, T * D * ab, err)) ||
        !(r->dx = moe_alloc(r, T * D * ab, err)) || !(r->dWr = moe_alloc(r, D * E * 4, err)) ||
        !(r->dw1 = moe_alloc(r, wn * ab, err)) || !(r->dw3 = moe_alloc(r, wn * ab, err)) ||
        !(r->dw2 = moe_alloc(r, wn * ab, err)) || !(r->scores = moe_alloc(r, T * E * 4, err)) ||
        !(r->rwork = moe_alloc(r, T * E * 4, err)) || !(r->d_gate = moe_alloc(r, T * k * 4, err)))
        return EPB_ESYS;
    r->assign = r->topk_idx;
    if ((c->capacity_factor > 0 || c->redundant > 0) && !(r->assign = moe_alloc(r, T * k * 4, err))) return EPB_ESYS;
    size_t SF = (size_t)c->shared * (size_t)c->Fs, sn = D * SF;
    if (SF && (!(r->sw1 = moe_alloc(r, sn * ab, err)) || !(r->sw3 = moe_alloc(r, sn * ab, err)) ||
               !(r->sw2 = moe_alloc(r, sn * ab, err)) || !(r->dsw1 = moe_alloc(r, sn * ab, err)) ||
               !(r->dsw3 = moe_alloc(r, sn * ab, err)) || !(r->dsw2 = moe_alloc(r, sn * ab, err)) ||
               !(r->ys = moe_alloc(r, T * D * ab, err)) || !(r->sa1 = moe_alloc(r, T * SF * ab, err)) ||
               !(r->sa3 = moe_alloc(r, T * SF * ab, err)) || !(r->ss = moe_alloc(r, T * SF * ab, err)) ||
               !(r->swork = moe_alloc(r, 2 * T * SF * ab, err))))
        return EPB_ESYS;
    size_t big = wn > T * D ? wn : T * D;
    big = big > sn ? big : sn;
    float *h = malloc((big > D * E ? big : D * E) * 4);
    if (!h) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    int rc = EPB_OK;
    void *sdst[3] = { r->sw1, r->sw3, r->sw2 };
    for (int i = 0; i < 3 && SF && !rc; i++) { /* replicated: the same on every rank */
        float *sw[3] = { NULL, NULL, NULL };
        sw[i] = h;
        moe_init_shared(sw[0], sw[1], sw[2], c);
        rc = moe_act_to_backend(be, sdst[i], h, sn);
    }
    moe_init_weights(h, NULL, NULL, NULL, c, 0, 0);
    if (!rc) rc = be->ops->to_backend(be, r->Wr, h, D * E * 4) || be->ops->zero(be, r->bias, E * 4);
    moe_init_tokens(h, c, MOE_STREAM_X, (long)r->rank * c->T, c->T);
    if (!rc) rc = moe_act_to_backend(be, r->x, h, T * D);
    moe_init_tokens(h, c, MOE_STREAM_DY, (long)r->rank * c->T, c->T);
    if (!rc) rc = moe_act_to_backend(be, r->dy, h, T * D);
    if (rc) {
        free(h);
        return epb_fail(err, EPB_ESYS, "rank %d: initialising: %s", r->rank, be->err.msg);
    }
    if (c->redundant > 0 && (rc = place_redundant(r, err))) {
        free(h);
        return rc;
    }
    /* the owned slots' experts, each seeded as the expert it holds (consecutive experts without redundant ones) */
    float *w[3] = { NULL, NULL, NULL };
    void *dst[3] = { r->w1, r->w3, r->w2 };
    size_t DF = D * (size_t)c->F;
    for (int i = 0; i < 3 && !rc; i++) {
        w[0] = w[1] = w[2] = NULL;
        w[i] = h;
        if (!r->slot_log) moe_init_weights(NULL, w[0], w[1], w[2], c, r->e0, r->El);
        for (int a = 0; r->slot_log && a < r->El; a++, w[i] += DF)
            moe_init_weights(NULL, w[0], w[1], w[2], c, r->slot_log[r->e0 + a], 1);
        rc = moe_act_to_backend(be, dst[i], h, wn);
    }
    free(h);
    return rc ? epb_fail(err, EPB_ESYS, "rank %d: initialising: %s", r->rank, be->err.msg) : EPB_OK;
}

/* the counts of the layout all-reduce: tokens_per_expert, then the kept pairs per expert (with a capacity) and per
 * slot (with redundant experts) */
static size_t layout_n(const moe_run_t *r)
{
    const moe_config_t *c = &r->cfg;
    return (size_t)c->E * (c->capacity_factor > 0 ? 2 : 1) + (c->redundant > 0 ? (size_t)r->Ep : 0);
}

/* the stage of small host arrays through a device communicator: the layout's counts, or two E-sized halves */
static size_t stage_bytes(const moe_run_t *r)
{
    size_t n = layout_n(r), two = 2 * (size_t)r->cfg.E;
    return (n > two ? n : two) * 8 + 64;
}

int moe_run_create(moe_run_t *r, const moe_spec_t *spec, const moe_config_t *cfg, epb_comm_t *comm, epb_comm_t *hcomm,
                   moe_backend_t *be, epb_err_t *err)
{
    memset(r, 0, sizeof *r);
    r->m.open = -1;
    r->hooks = MOE_HOOKS_NONE;
    r->spec = *spec;
    r->st = spec->st;
    r->cfg = *cfg;
    r->data = comm;
    r->hcomm = hcomm ? hcomm : comm;
    r->be = be;
    if (r->hcomm->mem != EPB_MEM_HOST)
        return epb_fail(err, EPB_EUSAGE, "communicator %s takes device memory: the run needs a host communicator too",
                        comm->ops->name);
    if ((comm->mem == EPB_MEM_DEVICE) != (be->on_device != 0))
        return epb_fail(err, EPB_EUSAGE, "communicator %s takes %s memory but the %s backend's is %s memory",
                        comm->ops->name, comm->mem == EPB_MEM_DEVICE ? "device" : "host", moe_backend_name(be),
                        be->on_device ? "device" : "host");
    if (cfg->dtype != be->dtype)
        return epb_fail(err, EPB_EUSAGE, "--dtype %s: the %s backend runs %s", moe_dtype_name(cfg->dtype),
                        moe_backend_name(be), moe_dtype_name(be->dtype));
    r->P = comm->size;
    r->rank = comm->rank;
    if (cfg->E % r->P)
        return epb_fail(err, EPB_EUSAGE, "--experts %d cannot be divided over %d ranks", cfg->E, r->P);
    if (cfg->redundant > 0 && r->st->replicated)
        return epb_fail(err, EPB_EUSAGE, "--redundant %d: %s holds every expert on every rank, nothing to replicate",
                        cfg->redundant, r->st->name);
    if (cfg->redundant % r->P)
        return epb_fail(err, EPB_EUSAGE, "--redundant %d cannot be divided over %d ranks (R %% ranks must be 0)",
                        cfg->redundant, r->P);
    r->Ep = cfg->E + cfg->redundant;
    r->El = r->st->replicated ? cfg->E : r->Ep / r->P;
    r->e0 = r->st->replicated ? 0 : r->rank * r->El;
    r->comm_dt = cfg->dtype == MOE_BF16 ? EPB_DT_BF16 : EPB_DT_F32;
    epb_tally_t hooks = { tally_enter, NULL, r };
    int rc = epb_comm_tally_create(comm, 0, &hooks, &r->comm, err);
    if (rc) return rc;
    moe_backend_guard(be);
    r->bufs = calloc(1, sizeof(bufs_t));
    r->counts = calloc((size_t)cfg->E, sizeof *r->counts);
    /* with a capacity the kept counts follow tpe, with redundant experts the slots' (one all-reduce of all);
     * without, they are tpe itself */
    int capped = cfg->capacity_factor > 0;
    r->tpe = calloc(layout_n(r), sizeof *r->tpe);
    r->kept = r->tpe && capped ? r->tpe + cfg->E : r->tpe;
    r->skept = r->tpe && cfg->redundant ? r->tpe + cfg->E * (capped ? 2 : 1) : r->kept;
    r->bias_after = calloc((size_t)cfg->E, sizeof *r->bias_after);
    r->chunks = (int)moe_spec_get(spec, "chunks");
    if (r->chunks < 1 || !r->st->pipe_fwd) r->chunks = 1; /* only a pipelined strategy declares chunks */
    r->offsets = calloc((size_t)r->chunks * ((size_t)r->El + 1), sizeof *r->offsets);
    if (cfg->capacity_factor > 0 || cfg->redundant > 0) {
        r->assign_h = malloc((size_t)cfg->T * (size_t)cfg->k * sizeof *r->assign_h);
        if (capped) r->gate_h = malloc((size_t)cfg->T * (size_t)cfg->k * sizeof *r->gate_h);
        if (!r->assign_h || (capped && !r->gate_h)) rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    }
    if (!r->bufs || !r->counts || !r->tpe || !r->bias_after || !r->offsets)
        rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    for (int i = 0; i < 2 && !rc; i++)
        if (be->ops->event_create(be, &r->ev[i])) rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    if (!rc && comm->mem != EPB_MEM_HOST && !(r->stage = moe_alloc(r, stage_bytes(r), err))) rc = EPB_ESYS;
    if (!rc) rc = alloc_seed(r, err);
    if (!rc && r->st->setup) rc = r->st->setup(r, err);
    if (rc) moe_run_destroy(r);
    return rc;
}

int moe_run_create_single(moe_run_t *r, const moe_config_t *cfg, moe_backend_t *be, epb_err_t *err)
{
    epb_comm_t *one = NULL;
    memset(r, 0, sizeof *r);
    int rc = epb_comm_create_mem("self", be->on_device ? EPB_MEM_DEVICE : EPB_MEM_HOST, &one, err);
    if (rc) return rc;
    epb_comm_t *host = NULL;
    if (be->on_device && (rc = epb_comm_create("self", &host, err))) {
        epb_comm_destroy(one);
        return rc;
    }
    moe_spec_t spec = { &moe_strategy_local, { 0 } };
    if ((rc = moe_run_create(r, &spec, cfg, one, host, be, err))) {
        epb_comm_destroy(host);
        epb_comm_destroy(one);
        return rc;
    }
    r->own_comm = one;
    r->own_hcomm = host;
    return EPB_OK;
}

void moe_run_destroy(moe_run_t *r)
{
    if (r->st && r->be && r->st->teardown) r->st->teardown(r);
    for (int i = 0; i < 2; i++)
        if (r->ev[i]) r->be->ops->event_destroy(r->be, r->ev[i]);
    if (r->be) bufs_free(r);
    if (r->be) guard_for(r, -1);
    epb_comm_destroy(r->comm);
    epb_comm_destroy(r->own_comm);
    epb_comm_destroy(r->own_hcomm);
    free(r->counts);
    free(r->tpe);
    free(r->assign_h);
    free(r->gate_h);
    free(r->slot_log);
    free(r->rep_off);
    free(r->rep_slot);
    free(r->rep_idx);
    free(r->bias_after);
    free(r->offsets);
    memset(r, 0, sizeof *r);
}

/* ---- the step ---- */

int moe_run_zero_grad(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    size_t ab = moe_dtype_size(c->dtype), wn = (size_t)r->El * (size_t)c->D * (size_t)c->F;
    if (be->ops->zero(be, r->dx, (size_t)c->T * (size_t)c->D * ab) ||
        be->ops->zero(be, r->dWr, (size_t)c->D * (size_t)c->E * 4) || be->ops->zero(be, r->dw1, wn * ab) ||
        be->ops->zero(be, r->dw3, wn * ab) || be->ops->zero(be, r->dw2, wn * ab) || be->ops->sync(be))
        return epb_fail(err, EPB_ESYS, "rank %d: zeroing gradients: %s", r->rank, be->err.msg);
    size_t sn = (size_t)c->D * (size_t)c->shared * (size_t)c->Fs * ab;
    if (sn && (be->ops->zero(be, r->dsw1, sn) || be->ops->zero(be, r->dsw3, sn) || be->ops->zero(be, r->dsw2, sn) ||
               be->ops->sync(be)))
        return epb_fail(err, EPB_ESYS, "rank %d: zeroing gradients: %s", r->rank, be->err.msg);
    return EPB_OK;
}

/* The owned experts on chunk c's rows (r->offsets' block c), in phase experts_fwd or experts_bwd, their FLOPs
 * counted. With collectives in flight on a host communicator the experts run one at a time and the collectives are
 * tested between them (MPI moves a non-blocking collective only inside MPI calls); otherwise in one call (a device
 * communicator progresses on its own stream). */
static int experts_chunk(moe_run_t *r, int c, int backward, epb_err_t *err)
{
    const moe_config_t *c_ = &r->cfg;
    moe_backend_t *be = r->be;
    const int64_t *off = r->offsets + (size_t)c * ((size_t)r->El + 1);
    long base = (long)off[0], rows = (long)off[r->El] - base;
    size_t ab = moe_dtype_size(c_->dtype), D = (size_t)c_->D, F = (size_t)c_->F, wn = D * F * ab;
    MOE_PHASE(backward ? MOE_PH_EXPERTS_BWD : MOE_PH_EXPERTS_FWD);
    /* the chunk's rows as a block of their own: row pointers shifted to its first row, offsets from 0 */
    int64_t *o = malloc(((size_t)r->El + 1) * sizeof *o);
    if (!o) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    for (int a = 0; a <= r->El; a++) o[a] = off[a] - base;
#define ROW(p, w) ((char *)(p) + (size_t)base * (w) * ab)
    void *xp = ROW(r->xp, D), *out = ROW(r->ep_out, D), *dout = ROW(r->d_ep_out, D), *dxp = ROW(r->d_xp, D),
         *a1 = ROW(r->a1, F), *a3 = ROW(r->a3, F), *sg = ROW(r->s, F);
#undef ROW
    int one_by_one = !r->hooks.no_progress && r->comm->mem == EPB_MEM_HOST && in_flight(r);
    int rc = EPB_OK;
    if (backward && rows) rc = be->ops->zero(be, dxp, (size_t)rows * D * ab) ? moe_fail(r, err) : EPB_OK;
    for (int a = 0; !rc && a < (one_by_one ? r->El : 1); a++) {
        int n = one_by_one ? 1 : r->El;
        const int64_t *oa = o + a;
        if (one_by_one && oa[1] == oa[0]) continue;
        size_t w = (size_t)a * wn;
        const char *w1 = (const char *)r->w1 + w, *w3 = (const char *)r->w3 + w, *w2 = (const char *)r->w2 + w;
        if (!backward) rc = be->ops->experts_forward(be, out, a1, a3, sg, r->work, xp, w1, w3, w2, oa, n, c_->D, c_->F);
        else {
            char *dw1 = (char *)r->dw1 + w, *dw3 = (char *)r->dw3 + w, *dw2 = (char *)r->dw2 + w;
            rc = be->ops->experts_backward(be, dxp, dw1, dw3, dw2, r->work, dout, a1, a3, sg, xp, w1, w3, w2, oa, n,
                                           c_->D, c_->F);
        }
        if (rc) rc = moe_fail(r, err);
        else if (one_by_one) rc = progress(r, err);
    }
    free(o);
    r->m.flop[backward ? MOE_PH_EXPERTS_BWD : MOE_PH_EXPERTS_FWD] += moe_expert_flop(c_, (double)rows, backward);
    return rc;
}

/* the chunked schedule of moe_pipe_t (strategy.h), one direction */
static int pipeline(moe_run_t *r, const moe_pipe_t *p, int backward, epb_err_t *err)
{
    int N = r->chunks, rc = p->in_start(r, 0, err);
    for (int c = 0; c < N && !rc; c++) {
        rc = p->in_finish(r, c, err);
        if (!rc && c + 1 < N) rc = p->in_start(r, c + 1, err);
        if (!rc) rc = experts_chunk(r, c, backward, err);
        if (!rc) rc = p->out_start(r, c, err);
    }
    for (int c = 0; c < N && !rc; c++) rc = p->out_finish(r, c, err);
    return rc;
}

/* a step that failed may leave collectives in flight: they are completed (their errors ignored) before the next */
static void drain(moe_run_t *r)
{
    for (int i = 0; i < MOE_MAXREQ; i++)
        if (r->req[i].used) {
            epb_wait(r->req[i].comm, r->req[i].req);
            r->req[i].used = 0;
        }
}

/* The S shared experts on this rank's T tokens, as one SwiGLU of FFN size S*Fs (moe_init_shared's layout): forward
 * adds their output into y (phase shared_fwd), backward adds their input gradient into dx and their weight
 * gradients into dsw (phase shared_bwd). Nothing without shared experts: the phases stay empty. */
static int shared_experts(moe_run_t *r, int backward, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    long SF = (long)c->shared * c->Fs;
    if (!SF) return EPB_OK;
    int64_t off[2] = { 0, c->T }; /* every token through the one (merged) expert */
    MOE_PHASE(backward ? MOE_PH_SHARED_BWD : MOE_PH_SHARED_FWD);
    if (!backward) {
        MOE_DO(be->ops->experts_forward(be, r->ys, r->sa1, r->sa3, r->ss, r->swork, r->x, r->sw1, r->sw3, r->sw2, off, 1,
                                    c->D, SF));
        MOE_DO(be->ops->add(be, r->y, r->ys, (size_t)c->T * (size_t)c->D));
    } else
        MOE_DO(be->ops->experts_backward(be, r->dx, r->dsw1, r->dsw3, r->dsw2, r->swork, r->dy, r->sa1, r->sa3, r->ss, r->x,
                                     r->sw1, r->sw3, r->sw2, off, 1, c->D, SF));
    r->m.flop[backward ? MOE_PH_SHARED_BWD : MOE_PH_SHARED_FWD] = (backward ? 12.0 : 6.0) * (double)c->T * (double)c->D * (double)SF;
    return EPB_OK;
}

/* The gradient the update reads for weight i (0 w1, 1 w3, 2 w2) of local slot a: gw's for a replicated expert,
 * else the slot's own */
static void *slot_grad(const moe_run_t *r, int i, int a)
{
    size_t DF = (size_t)r->cfg.D * (size_t)r->cfg.F, ab = moe_dtype_size(r->cfg.dtype);
    int j = r->slot_log ? r->rep_idx[r->slot_log[r->e0 + a]] : -1;
    void *dw[3] = { r->dw1, r->dw3, r->dw2 };
    return j >= 0 ? (char *)r->gw + ((size_t)i * (size_t)r->nrep + (size_t)j) * DF * ab : (char *)dw[i] + (size_t)a * DF * ab;
}

/* Redundant experts: the weight gradients of this rank's slots of replicated experts added into gw (zeroed first),
 * which grad_sync sums over the ranks: the experts' gradient assembled, a compute phase (experts_bwd) */
static int replica_grads(moe_run_t *r, epb_err_t *err)
{
    moe_backend_t *be = r->be;
    size_t DF = (size_t)r->cfg.D * (size_t)r->cfg.F, ab = moe_dtype_size(r->cfg.dtype);
    void *dw[3] = { r->dw1, r->dw3, r->dw2 };
    MOE_PHASE(MOE_PH_EXPERTS_BWD);
    MOE_DO(be->ops->zero(be, r->gw, 3 * (size_t)r->nrep * DF * ab));
    for (int a = 0; a < r->El; a++)
        for (int i = 0; r->rep_idx[r->slot_log[r->e0 + a]] >= 0 && i < 3; i++)
            MOE_DO(be->ops->add(be, slot_grad(r, i, a), (char *)dw[i] + (size_t)a * DF * ab, DF));
    return EPB_OK;
}

int moe_run_forward(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    memset(&r->m, 0, sizeof r->m);
    r->m.open = -1;
    double t0 = epb_now_us();
    MOE_PHASE(MOE_PH_ROUTE);
    MOE_DO(be->ops->route_forward(be, r->scores, r->topk_idx, r->topk_w, r->counts, r->x, r->Wr, r->bias, c->T, c->D, c->E,
                              c->k, moe_route_of(c)));
    r->m.flop[MOE_PH_ROUTE] = 2.0 * (double)c->T * (double)c->D * (double)c->E;
    memcpy(r->tpe, r->counts, (size_t)c->E * sizeof *r->tpe);
    r->dropped = 0;
    if (r->assign != r->topk_idx) { /* the pairs that reach an expert, and where, on the host */
        size_t Tk = (size_t)c->T * (size_t)c->k;
        if (c->capacity_factor > 0) { /* the capacity rule on this rank's pairs (a capacity group of its T tokens) */
            r->dropped = host_capped(r, r->kept);
            if (r->dropped == -2) return moe_fail(r, err);
            if (r->dropped < 0) return epb_fail(err, EPB_ESYS, "rank %d: out of memory (expert capacity)", r->rank);
        } else
            MOE_DO(be->ops->to_host(be, r->assign_h, r->topk_idx, Tk * 4));
        if (r->slot_log) { /* each kept pair to one of its expert's replicas (by global token), counted per slot */
            memset(r->skept, 0, sizeof *r->skept * (size_t)r->Ep);
            for (size_t i = 0; i < Tk; i++)
                if (r->assign_h[i] >= 0) {
                    int32_t s = moe_replica_pick(r->rep_off, r->rep_slot, r->assign_h[i], (long)r->rank * c->T + (long)(i / (size_t)c->k));
                    r->assign_h[i] = s;
                    r->skept[s]++;
                }
        }
        MOE_DO(be->ops->to_backend(be, r->assign, r->assign_h, Tk * 4));
    }
    /* layout: the global tokens_per_expert (the bias update and the owners' row counts need it), with a capacity
     * the kept pairs per expert, with redundant experts per slot, beside it in the same all-reduce */
    MOE_PHASE(MOE_PH_LAYOUT);
    MOE_DO(moe_allreduce_host(r, r->tpe, layout_n(r), EPB_DT_I64));
    int rc = r->st->dispatch(r, err);
    if (!rc) rc = r->st->pipe_fwd ? pipeline(r, r->st->pipe_fwd, 0, err) : experts_chunk(r, 0, 0, err);
    if (!rc) rc = r->st->combine(r, err);
    if (!rc) rc = shared_experts(r, 0, err);
    if (!rc) rc = phase_close(r, err);
    if (rc) {
        drain(r);
        return rc;
    }
    r->step_us = epb_now_us() - t0;
    return EPB_OK;
}

int moe_run_backward(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    double t0 = epb_now_us();
    int rc = r->st->combine_backward(r, err);
    if (!rc) rc = r->st->pipe_bwd ? pipeline(r, r->st->pipe_bwd, 1, err) : experts_chunk(r, 0, 1, err);
    if (!rc) rc = r->st->dispatch_backward(r, err);
    if (!rc) rc = shared_experts(r, 1, err);
    if (!rc && r->nrep) rc = replica_grads(r, err);
    if (rc) {
        drain(r);
        return rc;
    }
    MOE_PHASE(MOE_PH_ROUTE_BWD);
    MOE_DO(be->ops->route_backward(be, r->dx, r->dWr, r->rwork, r->d_gate, r->scores, r->topk_idx, r->topk_w, r->x, r->Wr,
                               c->T, c->D, c->E, c->k, moe_route_of(c)));
    r->m.flop[MOE_PH_ROUTE_BWD] = 4.0 * (double)c->T * (double)c->D * (double)c->E;
    /* the replicated router sees sharded tokens: its gradient is summed over the group; replicated experts too */
    MOE_PHASE(MOE_PH_GRAD_SYNC);
    size_t wn = (size_t)r->El * (size_t)c->D * (size_t)c->F;
    MOE_DO(epb_allreduce(r->comm, r->dWr, r->dWr, (size_t)(c->D * c->E), EPB_DT_F32, EPB_SUM));
    if (r->st->replicated) {
        MOE_DO(epb_allreduce(r->comm, r->dw1, r->dw1, wn, r->comm_dt, EPB_SUM));
        MOE_DO(epb_allreduce(r->comm, r->dw3, r->dw3, wn, r->comm_dt, EPB_SUM));
        MOE_DO(epb_allreduce(r->comm, r->dw2, r->dw2, wn, r->comm_dt, EPB_SUM));
    }
    if (r->nrep) /* a replicated expert's gradient: the sum of its slots' */
        MOE_DO(epb_allreduce(r->comm, r->gw, r->gw, 3 * (size_t)r->nrep * (size_t)c->D * (size_t)c->F, r->comm_dt, EPB_SUM));
    size_t sn = (size_t)c->D * (size_t)c->shared * (size_t)c->Fs; /* the shared experts see sharded tokens too */
    if (sn) {
        MOE_DO(epb_allreduce(r->comm, r->dsw1, r->dsw1, sn, r->comm_dt, EPB_SUM));
        MOE_DO(epb_allreduce(r->comm, r->dsw3, r->dsw3, sn, r->comm_dt, EPB_SUM));
        MOE_DO(epb_allreduce(r->comm, r->dsw2, r->dsw2, sn, r->comm_dt, EPB_SUM));
    }
    MOE_DO(epb_sync(r->comm));
    if ((rc = phase_close(r, err))) return rc;
    if (r->hooks.slow_phase == MOE_NPHASES) /* the test-only step slowdown: after the last phase, in the step */
        busy_wait_us((epb_now_us() - t0 + r->step_us) * r->hooks.slow_pct / 100.0);
    r->step_us += epb_now_us() - t0;
    if (be->ops->to_host(be, r->bias_after, r->bias, (size_t)c->E * 4))
        return epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    moe_bias_update(r->bias_after, r->tpe, c->E, c->bias_coeff);
    return EPB_OK;
}

int moe_run_step(moe_run_t *r, epb_err_t *err)
{
    int rc = moe_run_zero_grad(r, err);
    if (!rc) rc = moe_run_forward(r, err);
    if (!rc) rc = moe_run_backward(r, err);
    return rc;
}

int moe_run_waits(moe_run_t *r, double wait_us[MOE_NPHASES], epb_err_t *err)
{
    size_t n = (size_t)MOE_NPHASES * MOE_MAXSEG, P = (size_t)r->P;
    double *mine = malloc(n * sizeof *mine), *all = malloc(n * P * sizeof *all);
    int rc = mine && all ? EPB_OK : epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    for (size_t i = 0; !rc && i < n; i++) mine[i] = -1e300; /* entries that did not happen never arrive last */
    for (int ph = 0; !rc && ph < MOE_NPHASES; ph++)
        for (int e = 0; e < r->m.entries[ph] && e < MOE_MAXSEG; e++)
            if (moe_phase_kinds[ph] != MOE_COMPUTE) mine[(size_t)ph * MOE_MAXSEG + e] = r->m.arrive[ph][e];
    if (!rc && (rc = epb_allgather(r->hcomm, mine, all, n, EPB_DT_F64))) epb_fail(err, rc, "%s", r->hcomm->err.msg);
    for (int ph = 0; !rc && ph < MOE_NPHASES; ph++) {
        double w = 0;
        for (int e = 0; e < r->m.entries[ph] && e < MOE_MAXSEG && moe_phase_kinds[ph] != MOE_COMPUTE; e++) {
            double last = -1e300;
            for (size_t q = 0; q < P; q++)
                if (all[q * n + (size_t)ph * MOE_MAXSEG + e] > last) last = all[q * n + (size_t)ph * MOE_MAXSEG + e];
            double we = last - r->m.arrive[ph][e];
            w += we < 0 ? 0 : we > r->m.dur[ph][e] ? r->m.dur[ph][e] : we;
        }
        /* the clock offsets between hosts are estimates: a wait is never negative nor longer than the phase */
        wait_us[ph] = w < 0 ? 0 : w > r->m.us[ph] ? r->m.us[ph] : w;
    }
    free(mine);
    free(all);
    return rc;
}

static int gather_sharded(moe_run_t *r, void *host_out, const void *src, size_t n, size_t elem, int act, epb_err_t *err);

int moe_run_traffic(moe_run_t *r, int G, moe_traffic_t *t, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    size_t n = (size_t)c->T * (size_t)c->k;
    int32_t *all = malloc(sizeof *all * n * (size_t)r->P);
    if (!all) return epb_fail(err, EPB_ESYS, "rank %d: out of memory (traffic)", r->rank);
    int rc = gather_sharded(r, all, r->assign, n, 4, 0, err); /* the pairs that reached an expert (their slots) */
    moe_routing_t rt;
    moe_config_t pc = *c; /* the routing over the expert slots */
    pc.E = r->Ep;
    if (!rc && !(rc = moe_routing_exact(&rt, &pc, r->P, G, all, err))) {
        if (c->pad_to_capacity && r->P > 1) rt.pad = (double)moe_capacity(c); /* one rank: no exchange to pad */
        rt.place = r->slot_log;
        if (!(rc = moe_traffic_init(t, r->P, G, r->Ep, err)) && (rc = moe_traffic_describe(&r->spec, c, &rt, t, err)))
            moe_traffic_free(t);
        moe_routing_free(&rt);
    }
    free(all);
    return rc;
}

/* ---- training ---- */

/* x -= lr * g over n float32 elements of backend memory (through host copies, so any backend works) */
static int sgd_update(moe_backend_t *be, void *x, const void *g, size_t n, double lr)
{
    float *hx = malloc(n * 4), *hg = malloc(n * 4);
    int rc = (!hx || !hg) ? EPB_ESYS : EPB_OK;
    if (!rc) rc = be->ops->to_host(be, hx, x, n * 4) || be->ops->to_host(be, hg, g, n * 4) ? EPB_ESYS : EPB_OK;
    for (size_t i = 0; !rc && i < n; i++) hx[i] -= (float)(lr * hg[i]);
    if (!rc) rc = be->ops->to_backend(be, x, hx, n * 4) ? EPB_ESYS : EPB_OK;
    free(hx);
    free(hg);
    return rc;
}

int moe_run_sgd(moe_run_t *r, double lr, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    if (c->dtype != MOE_F32) return epb_fail(err, EPB_EUSAGE, "--train: only f32 is implemented");
    size_t wn = (size_t)r->El * (size_t)c->D * (size_t)c->F;
    size_t sn = (size_t)c->D * (size_t)c->shared * (size_t)c->Fs;
    int bad = 0;
    size_t DF = wn / (size_t)r->El;
    void *w[3] = { r->w1, r->w3, r->w2 };
    for (int i = 0; i < 3 && !bad; i++) /* slot by slot: a replicated expert's reads gw */
        for (int a = 0; a < r->El && !bad; a++)
            bad = sgd_update(r->be, (char *)w[i] + (size_t)a * DF * 4, slot_grad(r, i, a), DF, lr);
    if (bad || sgd_update(r->be, r->Wr, r->dWr, (size_t)c->D * (size_t)c->E, lr) ||
        (sn && (sgd_update(r->be, r->sw1, r->dsw1, sn, lr) || sgd_update(r->be, r->sw3, r->dsw3, sn, lr) ||
                sgd_update(r->be, r->sw2, r->dsw2, sn, lr))) ||
        r->be->ops->to_backend(r->be, r->bias, r->bias_after, (size_t)c->E * 4))
        return epb_fail(err, EPB_ESYS, "rank %d: SGD update failed: %s", r->rank, r->be->err.msg);
    return EPB_OK;
}

int moe_run_set_bias(moe_run_t *r, const float *bias, epb_err_t *err)
{
    if (r->be->ops->to_backend(r->be, r->bias, bias, (size_t)r->cfg.E * 4))
        return epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->be->err.msg);
    return EPB_OK;
}

int moe_run_mse_grad(moe_run_t *r, double *loss, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    size_t n = (size_t)c->T * (size_t)c->D;
    float *y = malloc(n * 4), *t = malloc(n * 4);
    int rc = (!y || !t) ? epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank) : EPB_OK;
    if (!rc && moe_act_to_host(r->be, y, r->y, n)) rc = epb_fail(err, EPB_ESYS, "%s", r->be->err.msg);
    double sum = 0, scale = 2.0 / ((double)r->P * (double)n);
    if (!rc) {
        /* the teacher: a fixed seeded output of the same scale as the layer's, by global token */
        moe_init_tokens(t, c, MOE_STREAM_TEACHER, (long)r->rank * c->T, c->T);
        for (size_t i = 0; i < n; i++) {
            double d = (double)y[i] - 0.1 * (double)t[i];
            sum += d * d;
            y[i] = (float)(scale * d);
        }
        if (moe_act_to_backend(r->be, r->dy, y, n)) rc = epb_fail(err, EPB_ESYS, "%s", r->be->err.msg);
    }
    if (!rc && (rc = moe_allreduce_host(r, &sum, 1, EPB_DT_F64)))
        epb_fail(err, rc, "%s", r->comm->err.msg[0] ? r->comm->err.msg : r->be->err.msg);
    *loss = sum / ((double)r->P * (double)n);
    free(y);
    free(t);
    return rc;
}

/* ---- gathering the global tensors ---- */

/* n elements (elem bytes each; act: an activation tensor, gathered as float32) of this rank's backend tensor ->
 * all ranks' in rank order, on the host, over the host communicator */
static int gather_sharded(moe_run_t *r, void *host_out, const void *src, size_t n, size_t elem, int act, epb_err_t *err)
{
    void *mine = malloc(n * elem > 0 ? n * elem : 1);
    int rc = mine ? EPB_OK : epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    if (!rc && n && (act ? moe_act_to_host(r->be, mine, src, n) : r->be->ops->to_host(r->be, mine, src, n * elem)))
        rc = epb_fail(err, EPB_ESYS, "%s", r->be->err.msg);
    epb_dtype_t dt = elem == 8 ? EPB_DT_I64 : EPB_DT_I32; /* 4-byte payloads move as int32 words, exactly */
    if (!rc && (rc = epb_allgather(r->hcomm, mine, host_out, n, dt))) epb_fail(err, rc, "%s", r->hcomm->err.msg);
    free(mine);
    return rc;
}

static int copy_host(moe_run_t *r, void *host_out, const void *src, size_t bytes, int act, epb_err_t *err)
{
    if (act ? moe_act_to_host(r->be, host_out, src, bytes / 4) : r->be->ops->to_host(r->be, host_out, src, bytes))
        return epb_fail(err, EPB_ESYS, "%s", r->be->err.msg);
    return EPB_OK;
}

void moe_global_free(moe_global_t *g)
{
    float **f[] = { &g->x, &g->router_w, &g->expert_bias, &g->w1, &g->w3, &g->w2, &g->y, &g->dy, &g->dx,
                    &g->d_router_w, &g->dw1, &g->dw3, &g->dw2, &g->topk_w, &g->expert_bias_after, &g->shared_w1,
                    &g->shared_w3, &g->shared_w2, &g->d_shared_w1, &g->d_shared_w3, &g->d_shared_w2 };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) { free(*f[i]); *f[i] = NULL; }
    free(g->topk_idx);
    free(g->tokens_per_expert);
    g->topk_idx = NULL;
    g->tokens_per_expert = g->kept = NULL;
}

int moe_run_gather(moe_run_t *r, moe_global_t *g, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    memset(g, 0, sizeof *g);
    size_t P = (size_t)r->P, T = (size_t)c->T, D = (size_t)c->D, E = (size_t)c->E, F = (size_t)c->F,
           k = (size_t)c->k, wl = (size_t)r->El * D * F, W = E * D * F;
    float **tok[] = { &g->x, &g->y, &g->dy, &g->dx };
    void *tsrc[] = { r->x, r->y, r->dy, r->dx };
    float **wts[] = { &g->w1, &g->w3, &g->w2, &g->dw1, &g->dw3, &g->dw2 };
    void *wsrc[] = { r->w1, r->w3, r->w2, r->dw1, r->dw3, r->dw2 };
    int rc = EPB_OK;
    for (int i = 0; i < 4; i++) *tok[i] = malloc(P * T * D * 4);
    for (int i = 0; i < 6; i++) *wts[i] = malloc(W * 4);
    g->router_w = malloc(D * E * 4);
    g->d_router_w = malloc(D * E * 4);
    g->expert_bias = malloc(E * 4);
    g->expert_bias_after = malloc(E * 4);
    g->topk_w = malloc(P * T * k * 4);
    g->topk_idx = malloc(P * T * k * 4);
    g->tokens_per_expert = malloc(2 * E * 8); /* then kept */
    g->kept = g->tokens_per_expert ? g->tokens_per_expert + E : NULL;
    for (int i = 0; i < 4; i++) if (!*tok[i]) rc = EPB_ESYS;
    for (int i = 0; i < 6; i++) if (!*wts[i]) rc = EPB_ESYS;
    if (rc || !g->router_w || !g->d_router_w || !g->expert_bias || !g->expert_bias_after || !g->topk_w ||
        !g->topk_idx || !g->tokens_per_expert) {
        moe_global_free(g);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory gathering the global tensors", r->rank);
    }
    for (int i = 0; i < 4 && !rc; i++) rc = gather_sharded(r, *tok[i], tsrc[i], T * D, 4, 1, err);
    /* with redundant experts: every slot, then each expert from its first slot, a replicated one's gradient from gw */
    size_t DF = D * F, nr = (size_t)r->nrep;
    float *slots = r->slot_log ? malloc((size_t)r->Ep * DF * 4) : NULL, *gwh = nr ? malloc(3 * nr * DF * 4) : NULL;
    if ((r->slot_log && !slots) || (nr && !gwh)) rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory gathering the global tensors", r->rank);
    if (!rc && nr && moe_act_to_host(r->be, gwh, r->gw, 3 * nr * DF)) rc = epb_fail(err, EPB_ESYS, "%s", r->be->err.msg);
    for (int i = 0; i < 6 && !rc; i++) {
        float *dst = slots ? slots : *wts[i];
        rc = r->El == c->E ? copy_host(r, dst, wsrc[i], W * 4, 1, err) : gather_sharded(r, dst, wsrc[i], wl, 4, 1, err);
        for (size_t e = 0; !rc && slots && e < E; e++) {
            int j = r->rep_idx[e];
            const float *src = i >= 3 && j >= 0 ? gwh + ((size_t)(i - 3) * nr + (size_t)j) * DF
                                                : slots + (size_t)r->rep_slot[r->rep_off[e]] * DF;
            memcpy(*wts[i] + e * DF, src, DF * 4);
        }
    }
    free(slots);
    free(gwh);
    if (!rc) rc = gather_sharded(r, g->topk_w, r->topk_w, T * k, 4, 0, err);
    if (!rc) rc = gather_sharded(r, g->topk_idx, r->topk_idx, T * k, 4, 0, err);
    if (!rc) rc = copy_host(r, g->router_w, r->Wr, D * E * 4, 0, err);
    if (!rc) rc = copy_host(r, g->d_router_w, r->dWr, D * E * 4, 0, err);
    if (!rc) rc = copy_host(r, g->expert_bias, r->bias, E * 4, 0, err);
    if (!rc) {
        memcpy(g->expert_bias_after, r->bias_after, E * 4);
        memcpy(g->tokens_per_expert, r->tpe, E * 8);
        memcpy(g->kept, r->kept, E * 8);
        g->dropped = r->dropped;
        if (epb_allreduce(r->hcomm, &g->dropped, &g->dropped, 1, EPB_DT_I64, EPB_SUM))
            rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->hcomm->err.msg);
    }
    /* the shared experts are replicated (their gradients all-reduced): this rank's copy is the global one */
    size_t sn = D * (size_t)c->shared * (size_t)c->Fs;
    float **sh[] = { &g->shared_w1, &g->shared_w3, &g->shared_w2, &g->d_shared_w1, &g->d_shared_w3, &g->d_shared_w2 };
    void *ssrc[] = { r->sw1, r->sw3, r->sw2, r->dsw1, r->dsw3, r->dsw2 };
    for (int i = 0; i < 6 && sn && !rc; i++) {
        if (!(*sh[i] = malloc(sn * 4))) rc = epb_fail(err, EPB_ESYS, "rank %d: out of memory gathering the global tensors", r->rank);
        else rc = copy_host(r, *sh[i], ssrc[i], sn * 4, 1, err);
    }
    if (rc) moe_global_free(g);
    return rc;
}

/* ---- the single-device check ---- */

/* The reference layer of c (T = the global batch) on be, its seeded inputs rounded to bf16 for a bf16 run (dtype) */
static int ref_layer(moe_run_t *L, const moe_config_t *c, moe_dtype_t dtype, const float *bias, moe_backend_t *be,
                     epb_err_t *err)
{
    if (moe_run_create_single(L, c, be, err) || moe_run_set_bias(L, bias, err)) return EPB_ESYS;
    size_t D = (size_t)c->D, E = (size_t)c->E, F = (size_t)c->F, T = (size_t)c->T;
    size_t sn = D * (size_t)c->shared * (size_t)c->Fs;
    if (dtype == MOE_BF16) {
        float *t[] = { L->x, L->dy, L->w1, L->w3, L->w2, L->sw1, L->sw3, L->sw2 };
        size_t n[] = { T * D, T * D, E * D * F, E * D * F, E * F * D, sn, sn, sn };
        for (int i = 0; i < 8; i++)
            if (n[i]) moe_round_bf16(t[i], n[i]);
    }
    return EPB_OK;
}

int moe_check_global(const moe_global_t *g, const moe_config_t *cfg, int P, double tol, char *report,
                     size_t report_len, double *fp8_err, epb_err_t *err)
{
    moe_config_t c = *cfg;
    c.dtype = MOE_F32; /* the reference is float32; for a bf16 run, on the bf16-rounded inputs the run had */
    c.T = (long)P * cfg->T;
    /* the capacity rule per rank's T tokens, as the run applied it; padding changes rows, not the layer */
    c.cap_group = moe_capacity_group(cfg);
    c.pad_to_capacity = false;
    c.redundant = 0; /* replicas change where rows are computed, not the layer */
    moe_backend_t *be = NULL;
    moe_run_t L, U;
    memset(&L, 0, sizeof L);
    memset(&U, 0, sizeof U);
    int bad = -1;
    if (fp8_err) *fp8_err = -1;
    if (moe_cpu_backend_create(&be, err) || ref_layer(&L, &c, cfg->dtype, g->expert_bias, be, err)) goto out;
    size_t D = (size_t)c.D, E = (size_t)c.E, F = (size_t)c.F, k = (size_t)c.k, T = (size_t)c.T;
    /* the reference seeds its own inputs by global index (the CPU backend's memory is host memory): a strategy
     * that initialised a shard wrongly fails */
    float *x = L.x, *dy = L.dy, *w1 = L.w1, *w3 = L.w3, *w2 = L.w2;
    size_t sn = D * (size_t)c.shared * (size_t)c.Fs;
    int inputs_differ = memcmp(x, g->x, T * D * 4) || memcmp(dy, g->dy, T * D * 4) ||
                        memcmp(L.Wr, g->router_w, D * E * 4) || memcmp(w1, g->w1, E * D * F * 4) ||
                        memcmp(w3, g->w3, E * D * F * 4) || memcmp(w2, g->w2, E * F * D * 4) ||
                        (sn && (!g->shared_w1 || memcmp(L.sw1, g->shared_w1, sn * 4) ||
                                memcmp(L.sw3, g->shared_w3, sn * 4) || memcmp(L.sw2, g->shared_w2, sn * 4)));
    if (moe_run_step(&L, err)) goto out;
    bad = inputs_differ;
    struct { const char *name; const float *a, *ref; size_t n; } t[] = {
        { "y", g->y, L.y, T * D }, { "dx", g->dx, L.dx, T * D }, { "d_router_w", g->d_router_w, L.dWr, D * E },
        { "dw1", g->dw1, L.dw1, E * D * F }, { "dw3", g->dw3, L.dw3, E * D * F }, { "dw2", g->dw2, L.dw2, E * F * D },
        { "topk_w", g->topk_w, L.topk_w, T * k }, { "expert_bias_after", g->expert_bias_after, L.bias_after, E },
        /* the shared experts' gradients, when there are shared experts */
        { "d_shared_w1", g->d_shared_w1, L.dsw1, sn }, { "d_shared_w3", g->d_shared_w3, L.dsw3, sn },
        { "d_shared_w2", g->d_shared_w2, L.dsw2, sn },
    };
    size_t used = 0, nt = sizeof t / sizeof *t - (sn ? 0 : 3);
    if (report && report_len) report[0] = 0;
    if (report && report_len && cfg->dtype == MOE_BF16)
        used += (size_t)snprintf(report, report_len, "(bf16, norm-wise) ");
    for (size_t i = 0; i < nt; i++) {
        double e = moe_rel_err_dt(cfg->dtype, t[i].a, t[i].ref, t[i].n); /* bf16: norm-wise (moe.h) */
        int ok = e <= tol; /* NaN fails */
        bad += !ok;
        if (report && used < report_len)
            used += (size_t)snprintf(report + used, report_len - used, "%s%s %.2e%s", i ? ", " : "", t[i].name, e,
                                     ok ? "" : " FAIL");
    }
    long idx_diff = 0, tpe_diff = 0, kept_diff = 0;
    for (size_t i = 0; i < T * k; i++) idx_diff += g->topk_idx[i] != L.topk_idx[i];
    for (size_t e = 0; e < E; e++) tpe_diff += g->tokens_per_expert[e] != L.tpe[e], kept_diff += g->kept[e] != L.kept[e];
    bad += (idx_diff != 0) + (tpe_diff != 0) + (kept_diff != 0) + (g->dropped != L.dropped);
    if (report && used < report_len)
        used += (size_t)snprintf(report + used, report_len - used, ", topk_idx %ld differ%s, tokens_per_expert %ld "
                                 "differ%s%s", idx_diff, idx_diff ? " FAIL" : "", tpe_diff, tpe_diff ? " FAIL" : "",
                                 inputs_differ ? ", seeded inputs differ FAIL" : "");
    if (report && used < report_len && cfg->capacity_factor > 0)
        used += (size_t)snprintf(report + used, report_len - used, ", capacity %ld: %lld pairs dropped (the "
                                 "reference's %lld)%s, kept per expert %ld differ%s", moe_capacity(cfg),
                                 (long long)g->dropped, (long long)L.dropped, g->dropped != L.dropped ? " FAIL" : "",
                                 kept_diff, kept_diff ? " FAIL" : "");
    if (cfg->dispatch_fp8) { /* what FP8 dispatch costs in accuracy: the run against the unquantized layer */
        moe_config_t u = c;
        u.dispatch_fp8 = false;
        if (ref_layer(&U, &u, cfg->dtype, g->expert_bias, be, err) || moe_run_step(&U, err)) {
            bad = -1;
            goto out;
        }
        /* the two references differ by the quantization alone (the run's own bf16 or GPU rounding is the check's) */
        double ey = moe_rel_err_l2(L.y, U.y, T * D), edx = moe_rel_err_l2(L.dx, U.dx, T * D),
               edw = moe_rel_err_l2(L.dw1, U.dw1, E * D * F);
        if (fp8_err) *fp8_err = ey;
        if (report && used < report_len)
            snprintf(report + used, report_len - used, "; fp8 dispatch against the unquantized layer (norm-wise, not "
                     "a check): y %.2e, dx %.2e, dw1 %.2e", ey, edx, edw);
    }
out:
    moe_run_destroy(&U);
    moe_run_destroy(&L);
    moe_backend_destroy(be);
    return bad;
}

/* ---- small host arrays over the data communicator ---- */

/* n elements from host to the stage (at offset off bytes) or back */
static int stage_io(moe_run_t *r, void *host, size_t off, size_t bytes, int to_stage)
{
    char *st = (char *)r->stage + off;
    return to_stage ? r->be->ops->to_backend(r->be, st, host, bytes) : r->be->ops->to_host(r->be, host, st, bytes);
}

int moe_allreduce_host(moe_run_t *r, void *buf, size_t n, epb_dtype_t dt)
{
    if (r->comm->mem == EPB_MEM_HOST) return epb_allreduce(r->comm, buf, buf, n, dt, EPB_SUM);
    size_t bytes = n * epb_dtype_size(dt);
    if (bytes > stage_bytes(r)) return epb_fail(&r->be->err, EPB_ESYS, "stage too small for %zu bytes", bytes);
    return stage_io(r, buf, 0, bytes, 1) || epb_allreduce(r->comm, r->stage, r->stage, n, dt, EPB_SUM) ||
                   epb_sync(r->comm) || stage_io(r, buf, 0, bytes, 0)
               ? EPB_ESYS
               : EPB_OK;
}

int moe_alltoall_host(moe_run_t *r, const void *send, void *recv, size_t n_per_rank, epb_dtype_t dt)
{
    if (r->comm->mem == EPB_MEM_HOST) return epb_alltoall(r->comm, send, recv, n_per_rank, dt);
    size_t bytes = n_per_rank * (size_t)r->P * epb_dtype_size(dt);
    if (2 * bytes > stage_bytes(r))
        return epb_fail(&r->be->err, EPB_ESYS, "stage too small for 2x%zu bytes", bytes);
    return stage_io(r, (void *)send, 0, bytes, 1) ||
                   epb_alltoall(r->comm, r->stage, (char *)r->stage + bytes, n_per_rank, dt) || epb_sync(r->comm) ||
                   stage_io(r, recv, bytes, bytes, 0)
               ? EPB_ESYS
               : EPB_OK;
}
