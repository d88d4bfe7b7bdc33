/* What every strategy shares: run set-up, the step, phase timing, training updates, gathering the global
 * tensors from their owners, the single-device check, and the registry. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

extern const moe_strategy_t moe_strategy_local, moe_strategy_agrs, moe_strategy_tp2ep;
const moe_strategy_t *const moe_strategies[] = { &moe_strategy_local, &moe_strategy_agrs, &moe_strategy_tp2ep };
const int moe_nstrategies = sizeof moe_strategies / sizeof *moe_strategies;

const moe_strategy_t *moe_strategy_find(const char *name)
{
    for (int i = 0; i < moe_nstrategies; i++)
        if (!strcmp(moe_strategies[i]->name, name)) return moe_strategies[i];
    return NULL;
}

const char *moe_strategy_names(void) { return "local, agrs, tp2ep"; }

int moe_ph_begin(moe_run_t *r) { return r->be->ops->event_record(r->be, r->ev[0]); }

int moe_ph_end(moe_run_t *r, moe_phase_t ph)
{
    double us = 0;
    int rc = r->be->ops->event_record(r->be, r->ev[1]);
    if (!rc) rc = r->be->ops->event_elapsed_us(r->be, r->ev[0], r->ev[1], &us);
    r->phase_us[ph] += us;
    return rc;
}

double moe_expert_flop(const moe_config_t *c, double rows, int backward)
{
    return (backward ? 12.0 : 6.0) * rows * (double)c->D * (double)c->F;
}

void *moe_buf(moe_run_t *r, moe_bufs_t *b, size_t bytes)
{
    if (b->n == (int)(sizeof b->p / sizeof *b->p)) {
        epb_fail(&r->be->err, EPB_ESYS, "too many buffers");
        return NULL;
    }
    void *p = r->be->ops->alloc(r->be, bytes ? bytes : 64);
    if (p) b->p[b->n++] = p;
    return p;
}

void moe_bufs_free(moe_run_t *r, moe_bufs_t *b)
{
    for (int i = 0; i < b->n; i++) r->be->ops->free(r->be, b->p[i]);
    b->n = 0;
}

int moe_run_alloc_shard(moe_run_t *r, moe_bufs_t *b, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    size_t T = (size_t)c->T, D = (size_t)c->D, E = (size_t)c->E, k = (size_t)c->k, ab = moe_dtype_size(c->dtype),
           wn = (size_t)r->El * D * (size_t)c->F;
    moe_backend_t *be = r->be;
    if (c->dtype != be->dtype)
        return epb_fail(err, EPB_EUSAGE, "--dtype %s: the %s backend runs %s", moe_dtype_name(c->dtype), be->ops->name,
                        moe_dtype_name(be->dtype));
    if (!(r->x = moe_buf(r, b, T * D * ab)) || !(r->Wr = moe_buf(r, b, D * E * 4)) || !(r->bias = moe_buf(r, b, E * 4)) ||
        !(r->w1 = moe_buf(r, b, wn * ab)) || !(r->w3 = moe_buf(r, b, wn * ab)) || !(r->w2 = moe_buf(r, b, wn * ab)) ||
        !(r->topk_idx = moe_buf(r, b, T * k * 4)) || !(r->topk_w = moe_buf(r, b, T * k * 4)) ||
        !(r->y = moe_buf(r, b, T * D * ab)) || !(r->dy = moe_buf(r, b, T * D * ab)) ||
        !(r->dx = moe_buf(r, b, T * D * ab)) || !(r->dWr = moe_buf(r, b, D * E * 4)) ||
        !(r->dw1 = moe_buf(r, b, wn * ab)) || !(r->dw3 = moe_buf(r, b, wn * ab)) || !(r->dw2 = moe_buf(r, b, wn * ab)) ||
        !(r->scores = moe_buf(r, b, T * E * 4)) || !(r->rwork = moe_buf(r, b, T * E * 4)) ||
        !(r->d_gate = moe_buf(r, b, T * k * 4)))
        return epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    size_t big = wn > T * D ? wn : T * D;
    float *h = malloc((big > D * E ? big : D * E) * 4);
    if (!h) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    int rc = EPB_OK;
    float *w[3] = { NULL, NULL, NULL };
    void *dst[3] = { r->w1, r->w3, r->w2 };
    for (int i = 0; i < 3 && !rc; i++) {
        w[0] = w[1] = w[2] = NULL;
        w[i] = h;
        moe_init_weights(NULL, w[0], w[1], w[2], c, r->e0, r->El);
        rc = moe_act_to_backend(be, dst[i], h, wn);
    }
    moe_init_weights(h, NULL, NULL, NULL, c, 0, 0);
    if (!rc) rc = be->ops->to_backend(be, r->Wr, h, D * E * 4) || be->ops->zero(be, r->bias, E * 4);
    moe_init_tokens(h, c, MOE_STREAM_X, (long)r->rank * c->T, c->T);
    if (!rc) rc = moe_act_to_backend(be, r->x, h, T * D);
    moe_init_tokens(h, c, MOE_STREAM_DY, (long)r->rank * c->T, c->T);
    if (!rc) rc = moe_act_to_backend(be, r->dy, h, T * D);
    free(h);
    return rc ? epb_fail(err, EPB_ESYS, "rank %d: initialising: %s", r->rank, be->err.msg) : EPB_OK;
}

int moe_run_create(moe_run_t *r, const moe_strategy_t *st, const moe_config_t *cfg, epb_comm_t *comm,
                   epb_comm_t *hcomm, moe_backend_t *be, epb_err_t *err)
{
    memset(r, 0, sizeof *r);
    r->st = st;
    r->cfg = *cfg;
    r->comm = comm;
    r->hcomm = hcomm ? hcomm : comm;
    r->be = be;
    if (r->hcomm->mem != EPB_MEM_HOST)
        return epb_fail(err, EPB_EUSAGE, "communicator %s takes device memory: the run needs a host communicator too",
                        comm->ops->name);
    if ((comm->mem == EPB_MEM_DEVICE) != (be->on_device != 0))
        return epb_fail(err, EPB_EUSAGE, "communicator %s takes %s memory but the %s backend's is %s memory",
                        comm->ops->name, comm->mem == EPB_MEM_DEVICE ? "device" : "host", be->ops->name,
                        be->on_device ? "device" : "host");
    r->P = comm->size;
    r->rank = comm->rank;
    if (cfg->E % r->P)
        return epb_fail(err, EPB_EUSAGE, "--experts %d cannot be divided over %d ranks", cfg->E, r->P);
    r->El = st->replicated ? cfg->E : cfg->E / r->P;
    r->e0 = st->replicated ? 0 : r->rank * r->El;
    r->comm_dt = cfg->dtype == MOE_BF16 ? EPB_DT_BF16 : EPB_DT_F32;
    r->counts = calloc((size_t)cfg->E, sizeof *r->counts);
    r->tpe = calloc((size_t)cfg->E, sizeof *r->tpe);
    r->bias_after = calloc((size_t)cfg->E, sizeof *r->bias_after);
    if (!r->counts || !r->tpe || !r->bias_after) {
        moe_run_destroy(r);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory", r->rank);
    }
    int rc = EPB_OK;
    for (int i = 0; i < 2 && !rc; i++)
        if (be->ops->event_create(be, &r->ev[i])) rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    if (!rc && comm->mem != EPB_MEM_HOST && !(r->stage = be->ops->alloc(be, (size_t)cfg->E * 16 + 64)))
        rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, be->err.msg);
    if (!rc) rc = st->setup(r, err);
    if (rc) moe_run_destroy(r);
    return rc;
}

void moe_run_destroy(moe_run_t *r)
{
    if (r->st && r->be) r->st->teardown(r);
    for (int i = 0; i < 2; i++)
        if (r->ev[i]) r->be->ops->event_destroy(r->be, r->ev[i]);
    if (r->stage) r->be->ops->free(r->be, r->stage);
    free(r->counts);
    free(r->tpe);
    free(r->bias_after);
    memset(r, 0, sizeof *r);
}

static int zero_grads(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    moe_backend_t *be = r->be;
    size_t ab = moe_dtype_size(c->dtype), wn = (size_t)r->El * (size_t)c->D * (size_t)c->F;
    if (be->ops->zero(be, r->dx, (size_t)c->T * (size_t)c->D * ab) ||
        be->ops->zero(be, r->dWr, (size_t)c->D * (size_t)c->E * 4) || be->ops->zero(be, r->dw1, wn * ab) ||
        be->ops->zero(be, r->dw3, wn * ab) || be->ops->zero(be, r->dw2, wn * ab))
        return epb_fail(err, EPB_ESYS, "rank %d: zeroing gradients: %s", r->rank, be->err.msg);
    return r->st->zero_grad ? r->st->zero_grad(r, err) : EPB_OK;
}

int moe_run_step(moe_run_t *r, epb_err_t *err)
{
    memset(r->phase_us, 0, sizeof r->phase_us);
    memset(r->phase_bytes, 0, sizeof r->phase_bytes);
    memset(r->phase_flop, 0, sizeof r->phase_flop);
    int rc = zero_grads(r, err);
    if (!rc && r->be->ops->sync(r->be)) rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->be->err.msg);
    double t0 = epb_now_us();
    if (!rc) rc = r->st->forward(r, err);
    if (!rc) rc = r->st->backward(r, err);
    if (!rc && r->be->ops->sync(r->be)) rc = epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->be->err.msg);
    r->step_us = epb_now_us() - t0;
    if (rc) return rc;
    const moe_config_t *c = &r->cfg;
    if (r->be->ops->to_host(r->be, r->bias_after, r->bias, (size_t)c->E * 4))
        return epb_fail(err, EPB_ESYS, "rank %d: %s", r->rank, r->be->err.msg);
    moe_bias_update(r->bias_after, r->tpe, c->E, c->bias_coeff);
    /* the FLOPs every strategy does alike: the router GEMM forward, and its two GEMMs backward */
    double route = 2.0 * (double)c->T * (double)c->D * (double)c->E;
    r->phase_flop[MOE_PH_ROUTE] = route;
    r->phase_flop[MOE_PH_ROUTE_BWD] = 2 * route;
    return EPB_OK;
}

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
    if (sgd_update(r->be, r->Wr, r->dWr, (size_t)c->D * (size_t)c->E, lr) || sgd_update(r->be, r->w1, r->dw1, wn, lr) ||
        sgd_update(r->be, r->w3, r->dw3, wn, lr) || sgd_update(r->be, r->w2, r->dw2, wn, lr) ||
        r->be->ops->to_backend(r->be, r->bias, r->bias_after, (size_t)c->E * 4))
        return epb_fail(err, EPB_ESYS, "rank %d: SGD update failed: %s", r->rank, r->be->err.msg);
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
        moe_init_tokens(t, c, MOE_STREAM_DY + 1, (long)r->rank * c->T, c->T);
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
                    &g->d_router_w, &g->dw1, &g->dw3, &g->dw2, &g->topk_w, &g->expert_bias_after };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) { free(*f[i]); *f[i] = NULL; }
    free(g->topk_idx);
    free(g->tokens_per_expert);
    g->topk_idx = NULL;
    g->tokens_per_expert = NULL;
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
    g->tokens_per_expert = malloc(E * 8);
    for (int i = 0; i < 4; i++) if (!*tok[i]) rc = EPB_ESYS;
    for (int i = 0; i < 6; i++) if (!*wts[i]) rc = EPB_ESYS;
    if (rc || !g->router_w || !g->d_router_w || !g->expert_bias || !g->expert_bias_after || !g->topk_w ||
        !g->topk_idx || !g->tokens_per_expert) {
        moe_global_free(g);
        return epb_fail(err, EPB_ESYS, "rank %d: out of memory gathering the global tensors", r->rank);
    }
    for (int i = 0; i < 4 && !rc; i++) rc = gather_sharded(r, *tok[i], tsrc[i], T * D, 4, 1, err);
    for (int i = 0; i < 6 && !rc; i++)
        rc = r->El == c->E ? copy_host(r, *wts[i], wsrc[i], W * 4, 1, err) : gather_sharded(r, *wts[i], wsrc[i], wl, 4, 1, err);
    if (!rc) rc = gather_sharded(r, g->topk_w, r->topk_w, T * k, 4, 0, err);
    if (!rc) rc = gather_sharded(r, g->topk_idx, r->topk_idx, T * k, 4, 0, err);
    if (!rc) rc = copy_host(r, g->router_w, r->Wr, D * E * 4, 0, err);
    if (!rc) rc = copy_host(r, g->d_router_w, r->dWr, D * E * 4, 0, err);
    if (!rc) rc = copy_host(r, g->expert_bias, r->bias, E * 4, 0, err);
    if (!rc) {
        memcpy(g->expert_bias_after, r->bias_after, E * 4);
        memcpy(g->tokens_per_expert, r->tpe, E * 8);
    }
    if (rc) moe_global_free(g);
    return rc;
}

/* ---- the single-device check ---- */


int moe_check_global(const moe_global_t *g, const moe_config_t *cfg, int P, double tol, char *report,
                     size_t report_len, epb_err_t *err)
{
    moe_config_t c = *cfg;
    c.dtype = MOE_F32; /* the reference is float32; for a bf16 run, on the bf16-rounded inputs the run had */
    long N = (long)P * c.T;
    moe_backend_t *be;
    int rc = moe_cpu_backend_create(&be, err);
    if (rc) return -1;
    moe_layer_t L;
    if ((rc = moe_layer_create(&L, &c, N, be, err))) { moe_backend_destroy(be); return -1; }
    size_t D = (size_t)c.D, E = (size_t)c.E, F = (size_t)c.F, k = (size_t)c.k, T = (size_t)N;
    /* the reference seeds its own inputs by global index: a strategy that initialised a shard wrongly fails */
    if ((rc = moe_layer_init(&L, 0, err))) { moe_layer_destroy(&L); moe_backend_destroy(be); return -1; }
    memcpy(L.bias, g->expert_bias, E * 4); /* the bias this step routed with (0 unless training) */
    if (cfg->dtype == MOE_BF16) {
        moe_round_bf16(L.x, T * D);
        moe_round_bf16(L.dy, T * D);
        moe_round_bf16(L.w1, E * D * F);
        moe_round_bf16(L.w3, E * D * F);
        moe_round_bf16(L.w2, E * F * D);
    }
    int inputs_differ = memcmp(L.x, g->x, T * D * 4) || memcmp(L.dy, g->dy, T * D * 4) ||
                        memcmp(L.Wr, g->router_w, D * E * 4) || memcmp(L.w1, g->w1, E * D * F * 4) ||
                        memcmp(L.w3, g->w3, E * D * F * 4) || memcmp(L.w2, g->w2, E * F * D * 4);
    int bad = inputs_differ;
    if (moe_layer_forward(&L, NULL, err) || moe_layer_zero_grad(&L, err) || moe_layer_backward(&L, NULL, err)) {
        bad = -1;
        goto out;
    }
    float *bias_ref = malloc(E * 4);
    memcpy(bias_ref, g->expert_bias, E * 4);
    moe_bias_update(bias_ref, L.counts, (int)E, c.bias_coeff);
    struct { const char *name; const float *a, *ref; size_t n; } t[] = {
        { "y", g->y, L.y, T * D }, { "dx", g->dx, L.dx, T * D }, { "d_router_w", g->d_router_w, L.dWr, D * E },
        { "dw1", g->dw1, L.dw1, E * D * F }, { "dw3", g->dw3, L.dw3, E * D * F }, { "dw2", g->dw2, L.dw2, E * F * D },
        { "topk_w", g->topk_w, L.topk_w, T * k }, { "expert_bias_after", g->expert_bias_after, bias_ref, E },
    };
    size_t used = 0;
    if (report && report_len) report[0] = 0;
    if (report && report_len && cfg->dtype == MOE_BF16)
        used += (size_t)snprintf(report, report_len, "(bf16, norm-wise) ");
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        double e = moe_rel_err_dt(cfg->dtype, t[i].a, t[i].ref, t[i].n); /* bf16: norm-wise (moe.h) */
        int ok = e <= tol; /* NaN fails */
        bad += !ok;
        if (report && used < report_len)
            used += (size_t)snprintf(report + used, report_len - used, "%s%s %.2e%s", i ? ", " : "", t[i].name, e,
                                     ok ? "" : " FAIL");
    }
    long idx_diff = 0, tpe_diff = 0;
    for (size_t i = 0; i < T * k; i++) idx_diff += g->topk_idx[i] != L.topk_idx[i];
    for (size_t e = 0; e < E; e++) tpe_diff += g->tokens_per_expert[e] != L.counts[e];
    bad += (idx_diff != 0) + (tpe_diff != 0);
    if (report && used < report_len)
        snprintf(report + used, report_len - used, ", topk_idx %ld differ%s, tokens_per_expert %ld differ%s%s", idx_diff,
                 idx_diff ? " FAIL" : "", tpe_diff, tpe_diff ? " FAIL" : "",
                 inputs_differ ? ", seeded inputs differ FAIL" : "");
    free(bias_ref);
out:
    moe_layer_destroy(&L);
    moe_backend_destroy(be);
    return bad;
}

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
    if (bytes > (size_t)r->cfg.E * 16 + 64) return epb_fail(&r->be->err, EPB_ESYS, "stage too small for %zu bytes", bytes);
    return stage_io(r, buf, 0, bytes, 1) || epb_allreduce(r->comm, r->stage, r->stage, n, dt, EPB_SUM) ||
                   epb_sync(r->comm) || stage_io(r, buf, 0, bytes, 0)
               ? EPB_ESYS
               : EPB_OK;
}

int moe_alltoall_host(moe_run_t *r, const void *send, void *recv, size_t n_per_rank, epb_dtype_t dt)
{
    if (r->comm->mem == EPB_MEM_HOST) return epb_alltoall(r->comm, send, recv, n_per_rank, dt);
    size_t bytes = n_per_rank * (size_t)r->P * epb_dtype_size(dt);
    if (2 * bytes > (size_t)r->cfg.E * 16 + 64)
        return epb_fail(&r->be->err, EPB_ESYS, "stage too small for 2x%zu bytes", bytes);
    return stage_io(r, (void *)send, 0, bytes, 1) ||
                   epb_alltoall(r->comm, r->stage, (char *)r->stage + bytes, n_per_rank, dt) || epb_sync(r->comm) ||
                   stage_io(r, recv, bytes, bytes, 0)
               ? EPB_ESYS
               : EPB_OK;
}

int moe_shard_route(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    MOE_PHASE(r, MOE_PH_ROUTE, r->be->ops->route_forward(r->be, r->scores, r->topk_idx, r->topk_w, r->counts, r->x, r->Wr,
                                                         r->bias, c->T, c->D, c->E, c->k, c->router, c->route_norm,
                                                         c->skew));
    for (int e = 0; e < c->E; e++) r->tpe[e] = r->counts[e];
    return EPB_OK;
}

int moe_shard_route_backward(moe_run_t *r, epb_err_t *err)
{
    const moe_config_t *c = &r->cfg;
    MOE_PHASE(r, MOE_PH_ROUTE_BWD, r->be->ops->route_backward(r->be, r->dx, r->dWr, r->rwork, r->d_gate, r->scores,
                                                              r->topk_idx,
                                                              r->topk_w, r->x, r->Wr, c->T, c->D, c->E, c->k,
                                                              c->router, c->route_norm));
    MOE_PHASE(r, MOE_PH_GRAD_SYNC,
              epb_allreduce(r->comm, r->dWr, r->dWr, (size_t)(c->D * c->E), EPB_DT_F32, EPB_SUM) || epb_sync(r->comm));
    r->phase_bytes[MOE_PH_GRAD_SYNC] = moe_ring_bytes(r->P, 4.0 * c->D * c->E);
    return EPB_OK;
}
