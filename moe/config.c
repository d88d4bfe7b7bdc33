/* Configuration, validation, memory estimate, seeded initialisation and the load-balancing bias update. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe.h"

moe_config_t moe_config_default(void)
{
    return (moe_config_t){ .T = 2048, .D = 1024, .F = 2048, .E = 16, .k = 2, .router = MOE_SOFTMAX,
                           .route_norm = false, .skew = 0, .bias_coeff = 1e-3, .seed = 1, .dtype = MOE_F32,
                           .route_scale = 1, .groups = 1, .topk_groups = 1, .gate_before = false, .shared = 0,
                           .Fs = 0, .dispatch_fp8 = false, .capacity_factor = 0, .drop_policy = MOE_DROP_PROBS,
                           .pad_to_capacity = false, .cap_group = 0, .redundant = 0 };
}

moe_route_t moe_route_of(const moe_config_t *c)
{
    return (moe_route_t){ .router = c->router, .norm = c->route_norm, .skew = c->skew, .scale = c->route_scale,
                          .groups = c->groups, .topk_groups = c->topk_groups };
}

void moe_config_params(const moe_config_t *c, char *buf, size_t n)
{
    size_t u = 0;
    buf[0] = 0;
#define ADD(...) do { if (u < n) u += (size_t)snprintf(buf + u, n - u, __VA_ARGS__); } while (0)
    if (c->shared > 0) ADD("%sshared=%d;shared_ffn=%ld", u ? ";" : "", c->shared, c->Fs);
    if (c->gate_before) ADD("%sgate_before=1", u ? ";" : "");
    if (c->route_scale != 1) ADD("%sroute_scale=%g", u ? ";" : "", c->route_scale);
    if (c->groups > 1) ADD("%sgroups=%d;topk_groups=%d", u ? ";" : "", c->groups, c->topk_groups);
    if (c->dispatch_fp8) ADD("%sdispatch_dtype=fp8", u ? ";" : "");
    if (c->capacity_factor > 0)
        ADD("%scapacity_factor=%g;drop_policy=%s%s", u ? ";" : "", c->capacity_factor, moe_drop_name(c->drop_policy),
            c->pad_to_capacity ? ";pad_to_capacity=1" : "");
    if (c->redundant > 0) ADD("%sredundant=%d", u ? ";" : "", c->redundant);
#undef ADD
}

int moe_drop_parse(const char *s, moe_drop_t *out)
{
    if (s && !strcmp(s, "probs")) return *out = MOE_DROP_PROBS, 0;
    if (s && !strcmp(s, "position")) return *out = MOE_DROP_POSITION, 0;
    return -1;
}

const char *moe_drop_name(moe_drop_t d) { return d == MOE_DROP_POSITION ? "position" : "probs"; }

long moe_capacity(const moe_config_t *c)
{
    if (!(c->capacity_factor > 0)) return 0;
    long G = moe_capacity_group(c);
    double cap = ceil(c->capacity_factor * (double)G * c->k / c->E);
    /* an expert gets a token at most once: a capacity above G keeps every pair */
    return cap < 1 ? 1 : cap > (double)G ? G : (long)cap;
}

/* ---- redundant experts ---- */

int moe_redundant_place(const int64_t *load, int E, int R, int P, int32_t *slot_log)
{
    int Ep = E + R, S = Ep / P;
    int *n = malloc(sizeof *n * (size_t)E), *order = malloc(sizeof *order * (size_t)Ep), *rank_of = malloc(sizeof *rank_of * (size_t)Ep),
        *used = calloc((size_t)P, sizeof *used);
    double *sum = calloc((size_t)P, sizeof *sum);
    unsigned char *holds = calloc((size_t)P * (size_t)E, 1);
    if (!n || !order || !rank_of || !used || !sum || !holds) {
        free(n), free(order), free(rank_of), free(used), free(sum), free(holds);
        return -1;
    }
    for (int e = 0; e < E; e++) n[e] = 1;
    for (int i = 0; i < R; i++) { /* load_a / n_a > load_b / n_b, exactly: load_a n_b > load_b n_a */
        int best = 0;
        for (int e = 1; e < E; e++)
            if ((double)load[e] * n[best] > (double)load[best] * n[e]) best = e;
        n[best]++;
    }
    /* the replicas, heaviest first: expert e's n_e entries together (a stable order of the experts by weight) */
    for (int e = 0; e < E; e++) order[e] = e;
    for (int i = 1; i < E; i++) { /* insertion sort, stable: ties keep the lower expert first */
        int e = order[i], j = i;
        while (j > 0 && (double)load[e] * n[order[j - 1]] > (double)load[order[j - 1]] * n[e]) order[j] = order[j - 1], j--;
        order[j] = e;
    }
    int q = 0;
    for (int i = 0; i < E; i++) {
        int e = order[i];
        double wgt = (double)load[e] / n[e];
        for (int j = 0; j < n[e]; j++) {
            int best = -1, best_held = 1;
            for (int p = 0; p < P; p++) {
                if (used[p] == S) continue;
                int held = holds[(size_t)p * E + e];
                if (best < 0 || held < best_held || (held == best_held && sum[p] < sum[best])) best = p, best_held = held;
            }
            used[best]++, sum[best] += wgt, holds[(size_t)best * E + e] = 1;
            rank_of[q++] = best * Ep + e; /* sorted below: by rank, then expert */
        }
    }
    for (int i = 1; i < Ep; i++) { /* insertion sort of rank*Ep+e: each rank's slots, ascending expert */
        int v = rank_of[i], j = i;
        while (j > 0 && rank_of[j - 1] > v) rank_of[j] = rank_of[j - 1], j--;
        rank_of[j] = v;
    }
    for (int i = 0; i < Ep; i++) slot_log[i] = rank_of[i] % Ep;
    free(n), free(order), free(rank_of), free(used), free(sum), free(holds);
    return 0;
}

void moe_replica_index(const int32_t *slot_log, int E, int R, int32_t *rep_off, int32_t *rep_slot)
{
    int Ep = E + R;
    for (int e = 0; e <= E; e++) rep_off[e] = 0;
    for (int s = 0; s < Ep; s++) rep_off[slot_log[s] + 1]++;
    for (int e = 0; e < E; e++) rep_off[e + 1] += rep_off[e];
    for (int e = 0; e < E; e++) /* slots ascending within each expert */
        for (int u = 0, j = rep_off[e]; u < Ep; u++)
            if (slot_log[u] == e) rep_slot[j++] = u;
}

/* the pairs of one expert in a group, in token order; with MOE_DROP_PROBS sorted by weight, larger first */
typedef struct { float w; int32_t i; } moe_pair_t;
static int pair_by_weight(const void *a, const void *b)
{
    const moe_pair_t *p = a, *q = b;
    if (p->w != q->w) return p->w > q->w ? -1 : 1;
    return (p->i > q->i) - (p->i < q->i); /* the earlier token first */
}

long moe_capacity_drop(const int32_t *idx, const float *w, long N, int k, int E, long G, long cap, moe_drop_t policy,
                       int32_t *assign, int64_t *kept)
{
    long Gk = G * k, dropped = 0;
    int64_t *start = malloc(((size_t)E + 1) * sizeof *start);
    moe_pair_t *pr = malloc((size_t)(Gk > 0 ? Gk : 1) * sizeof *pr);
    if (!start || !pr) {
        free(start), free(pr);
        return -1;
    }
    if (kept) memset(kept, 0, (size_t)E * sizeof *kept);
    for (long g0 = 0; g0 < N; g0 += G) {
        const int32_t *ix = idx + g0 * k;
        long n = (g0 + G <= N ? G : N - g0) * k;
        /* a stable counting sort of the group's pairs by expert: each expert's pairs in token order */
        memset(start, 0, ((size_t)E + 1) * sizeof *start);
        for (long i = 0; i < n; i++) start[ix[i] + 1]++;
        for (int e = 0; e < E; e++) start[e + 1] += start[e];
        for (long i = 0; i < n; i++) {
            int64_t at = start[ix[i]]++;
            pr[at].i = (int32_t)i, pr[at].w = w[g0 * k + i];
        }
        for (int e = E; e > 0; e--) start[e] = start[e - 1]; /* back to the buckets' starts */
        start[0] = 0;
        for (int e = 0; e < E; e++) {
            moe_pair_t *b = pr + start[e];
            long m = (long)(start[e + 1] - start[e]);
            if (m > cap && policy == MOE_DROP_PROBS) qsort(b, (size_t)m, sizeof *b, pair_by_weight);
            for (long j = 0; j < m; j++) assign[g0 * k + b[j].i] = j < cap ? e : -1;
            if (m > cap) dropped += m - cap;
            if (kept) kept[e] += m < cap ? m : cap;
        }
    }
    free(start);
    free(pr);
    return dropped;
}

int moe_router_parse(const char *s, moe_router_t *out)
{
    if (s && !strcmp(s, "softmax")) return *out = MOE_SOFTMAX, 0;
    if (s && !strcmp(s, "sigmoid")) return *out = MOE_SIGMOID, 0;
    return -1;
}

const char *moe_router_name(moe_router_t r)
{
    return r == MOE_SOFTMAX ? "softmax" : r == MOE_SIGMOID ? "sigmoid" : "unknown";
}
const char *moe_router_label(moe_router_t r, bool route_norm)
{
    if (r == MOE_SOFTMAX) return route_norm ? "softmax+norm" : "softmax";
    if (r == MOE_SIGMOID) return route_norm ? "sigmoid+norm" : "sigmoid";
    return "unknown";
}

/* DESIGN.md "Phases", in that order */
const char *const moe_phase_names[MOE_NPHASES] = {
    "route", "layout", "permute", "dispatch", "experts_fwd", "unpermute", "combine", "gate", "shared_fwd",
    "gate_bwd", "combine_bwd", "unpermute_bwd", "experts_bwd", "permute_bwd", "dispatch_bwd", "shared_bwd",
    "route_bwd", "grad_sync",
};
const moe_kind_t moe_phase_kinds[MOE_NPHASES] = {
    MOE_COMPUTE, MOE_SYNC, MOE_COMPUTE, MOE_COMM, MOE_COMPUTE, MOE_COMPUTE, MOE_COMM, MOE_COMPUTE, MOE_COMPUTE,
    MOE_COMPUTE, MOE_COMM, MOE_COMPUTE, MOE_COMPUTE, MOE_COMPUTE, MOE_COMM, MOE_COMPUTE, MOE_COMPUTE, MOE_COMM,
};

int moe_phase_find(const char *name)
{
    for (int p = 0; p < MOE_NPHASES; p++)
        if (!strcmp(moe_phase_names[p], name)) return p;
    return -1;
}

const char *moe_kind_name(moe_kind_t k) { return k == MOE_COMM ? "comm" : k == MOE_SYNC ? "sync" : "compute"; }

const char *moe_dtype_name(moe_dtype_t dt) { return dt == MOE_BF16 ? "bf16" : "f32"; }
size_t moe_dtype_size(moe_dtype_t dt) { return dt == MOE_BF16 ? 2 : 4; }

/* ---- FP8 e4m3 rows (moe.h) ---- */

size_t moe_fp8_row_bytes(long D)
{
    size_t nb = (size_t)(D + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK;
    return 4 * nb + (((size_t)D + 3) & ~(size_t)3);
}

double moe_dispatch_row_bytes(const moe_config_t *c, double act_bytes)
{
    return c->dispatch_fp8 ? (double)moe_fp8_row_bytes(c->D) : (double)c->D * act_bytes;
}

uint8_t moe_e4m3_from_f32(float v)
{
    uint8_t sign = signbit(v) ? 0x80 : 0;
    float a = fabsf(v);
    if (isnan(v)) return 0x7F;
    if (a >= 448.0f) return sign | 0x7E; /* saturated: 448 and what would round past it (infinity too) */
    int e;
    frexpf(a, &e);                       /* a in [2^(e-1), 2^e) */
    int E = e - 1 < -6 ? -6 : e - 1;     /* below 2^-6 the subnormal spacing 2^-9 */
    int m = (int)rintf(ldexpf(a, 3 - E)); /* a / 2^(E-3): exact; rintf rounds to nearest even */
    if (m == 16) E++, m = 8;             /* rounded up to the next power of two */
    if (m < 8) return sign | (uint8_t)m; /* subnormal (E is -6), or zero */
    return sign | (uint8_t)(((E + 7) << 3) | (m - 8));
}

float moe_e4m3_to_f32(uint8_t code)
{
    int ef = (code >> 3) & 15, mt = code & 7;
    if (ef == 15 && mt == 7) return NAN;
    float v = ef ? ldexpf(1.0f + (float)mt / 8.0f, ef - 7) : ldexpf((float)mt, -9);
    return code & 0x80 ? -v : v;
}

void moe_fp8_quant_row(uint8_t *q, const float *x, long D)
{
    long nb = (D + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK;
    uint8_t *codes = q + 4 * nb;
    for (long b = 0; b < nb; b++) {
        long lo = b * MOE_FP8_BLOCK, hi = lo + MOE_FP8_BLOCK < D ? lo + MOE_FP8_BLOCK : D;
        float amax = 0;
        for (long i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(x[i]));
        float s = amax > 0 ? fmaxf(amax / 448.0f, FLT_MIN) : 1.0f; /* a normal scale, even for a tiny block */
        memcpy(q + 4 * b, &s, 4);
        for (long i = lo; i < hi; i++) codes[i] = moe_e4m3_from_f32(x[i] / s);
    }
    memset(codes + D, 0, moe_fp8_row_bytes(D) - 4 * (size_t)nb - (size_t)D);
}

void moe_fp8_dequant_row(float *x, const uint8_t *q, long D)
{
    long nb = (D + MOE_FP8_BLOCK - 1) / MOE_FP8_BLOCK;
    const uint8_t *codes = q + 4 * nb;
    for (long b = 0; b < nb; b++) {
        float s;
        memcpy(&s, q + 4 * b, 4);
        long lo = b * MOE_FP8_BLOCK, hi = lo + MOE_FP8_BLOCK < D ? lo + MOE_FP8_BLOCK : D;
        for (long i = lo; i < hi; i++) x[i] = moe_e4m3_to_f32(codes[i]) * s;
    }
}

int moe_config_validate(const moe_config_t *c, epb_err_t *err)
{
    if (c->T < 1) return epb_fail(err, EPB_EUSAGE, "--tokens %ld must be positive", c->T);
    if (c->D < 1) return epb_fail(err, EPB_EUSAGE, "--hidden %ld must be positive", c->D);
    if (c->F < 1) return epb_fail(err, EPB_EUSAGE, "--ffn %ld must be positive", c->F);
    if (c->E < 1) return epb_fail(err, EPB_EUSAGE, "--experts %d must be positive", c->E);
    if (c->k < 1) return epb_fail(err, EPB_EUSAGE, "--top-k %d must be at least 1", c->k);
    if (c->k > c->E) return epb_fail(err, EPB_EUSAGE, "--top-k %d exceeds --experts %d", c->k, c->E);
    if (c->router != MOE_SOFTMAX && c->router != MOE_SIGMOID)
        return epb_fail(err, EPB_EUSAGE, "--router: unknown router (%d); use softmax or sigmoid", (int)c->router);
    if (!(c->skew >= 0) || !isfinite(c->skew))
        return epb_fail(err, EPB_EUSAGE, "--skew %g must be finite and >= 0", c->skew);
    if (!(c->bias_coeff >= 0) || !isfinite(c->bias_coeff))
        return epb_fail(err, EPB_EUSAGE, "--bias-coeff %g must be finite and >= 0", c->bias_coeff);
    if (c->dtype != MOE_F32 && c->dtype != MOE_BF16)
        return epb_fail(err, EPB_EUSAGE, "--dtype: unknown dtype (%d)", (int)c->dtype);
    if (!(c->route_scale > 0) || !isfinite(c->route_scale))
        return epb_fail(err, EPB_EUSAGE, "--route-scale %g must be a positive finite number", c->route_scale);
    if (c->groups < 1) return epb_fail(err, EPB_EUSAGE, "--groups %d must be at least 1", c->groups);
    if (c->groups > MOE_MAX_GROUPS)
        return epb_fail(err, EPB_EUSAGE, "--groups %d: at most %d groups", c->groups, MOE_MAX_GROUPS);
    if (c->E % c->groups)
        return epb_fail(err, EPB_EUSAGE, "--groups %d does not divide --experts %d", c->groups, c->E);
    if (c->topk_groups < 1) return epb_fail(err, EPB_EUSAGE, "--topk-groups %d must be at least 1", c->topk_groups);
    if (c->topk_groups > c->groups)
        return epb_fail(err, EPB_EUSAGE, "--topk-groups %d exceeds --groups %d", c->topk_groups, c->groups);
    if ((long)c->k > (long)c->topk_groups * (c->E / c->groups))
        return epb_fail(err, EPB_EUSAGE, "--top-k %d exceeds the %d experts of the --topk-groups %d best groups "
                        "(--groups %d of %d experts each)", c->k, c->topk_groups * (c->E / c->groups), c->topk_groups,
                        c->groups, c->E / c->groups);
    if (c->shared < 0) return epb_fail(err, EPB_EUSAGE, "--shared %d must be >= 0", c->shared);
    if (c->shared == 0 && c->Fs != 0)
        return epb_fail(err, EPB_EUSAGE, "--shared-ffn %ld needs shared experts (--shared S, S >= 1)", c->Fs);
    if (c->shared > 0 && c->Fs < 1) return epb_fail(err, EPB_EUSAGE, "--shared-ffn %ld must be positive", c->Fs);
    if (c->dispatch_fp8 && c->D > 65535L * MOE_FP8_BLOCK)
        return epb_fail(err, EPB_EUSAGE, "--dispatch-dtype fp8: --hidden %ld has more than 65535 scale blocks of %d",
                        c->D, MOE_FP8_BLOCK);
    if (c->dispatch_fp8 && c->gate_before)
        return epb_fail(err, EPB_EUSAGE, "--dispatch-dtype fp8 with --gate-before: the strategies scale the rows by "
                        "their gates at different places (the source, the relay, the owner), and e4m3 rounding does "
                        "not commute with the scaling, so the layer would not be one function to check; use one");
    if (!(c->capacity_factor >= 0) || !isfinite(c->capacity_factor))
        return epb_fail(err, EPB_EUSAGE, "--capacity-factor %g must be a positive finite number", c->capacity_factor);
    if (c->drop_policy != MOE_DROP_PROBS && c->drop_policy != MOE_DROP_POSITION)
        return epb_fail(err, EPB_EUSAGE, "--drop-policy: unknown policy (%d); use probs or position", (int)c->drop_policy);
    if (c->pad_to_capacity && !(c->capacity_factor > 0))
        return epb_fail(err, EPB_EUSAGE, "--pad-to-capacity needs an expert capacity (--capacity-factor C)");
    if (c->cap_group < 0 || (c->cap_group > 0 && c->T % c->cap_group))
        return epb_fail(err, EPB_EUSAGE, "capacity group of %ld tokens does not divide --tokens %ld", c->cap_group, c->T);
    if (c->redundant < 0 || c->redundant > MOE_MAX_REDUNDANT)
        return epb_fail(err, EPB_EUSAGE, "--redundant %d must be from 0 to %d", c->redundant, MOE_MAX_REDUNDANT);
    if (c->redundant > 0 && c->pad_to_capacity)
        return epb_fail(err, EPB_EUSAGE, "--pad-to-capacity with --redundant: a replica serves a share of its expert's "
                        "capacity that the split does not fix, so there is no block size to pad to; use one");
    /* row indices are int32 in the ops; GEMM sizes are int in cblas */
    if ((double)c->T * c->k > 2147483647.0 || (double)c->D * c->F > 2147483647.0)
        return epb_fail(err, EPB_EUSAGE, "--tokens %ld x --top-k %d or --hidden x --ffn exceed 2^31-1", c->T, c->k);
    if ((double)c->D * c->shared * c->Fs > 2147483647.0)
        return epb_fail(err, EPB_EUSAGE, "--hidden %ld x --shared %d x --shared-ffn %ld exceed 2^31-1", c->D, c->shared,
                        c->Fs);
    return EPB_OK;
}

uint64_t moe_mem_estimate(const moe_config_t *c, int P) { return moe_mem_estimate_rank(c, P, c->E); }

uint64_t moe_mem_estimate_rank(const moe_config_t *c, int P, int El)
{
    double b = (double)moe_dtype_size(c->dtype), N = (double)P * c->T, R = N * c->k, D = c->D, F = c->F,
           E = El;
    double weights = 3 * E * D * F * b * 2;               /* w1 w3 w2 and their gradients */
    double router = (D * c->E * 2 + 2.0 * c->E) * 4;      /* Wr, dWr, expert_bias, counts */
    double tokens = 4 * N * D * b + N * c->E * 4 + 3 * N * c->k * 4; /* x y dy dx, scores, topk_idx/w, d_gate */
    double rows = 4 * R * D * b + R * 4 + 5 * R * F * b;  /* xp ep_out d_ep_out d_xp, pos; a1 a3 s, work x2 */
    double SF = (double)c->shared * (double)c->Fs;         /* the shared experts: one SwiGLU of FFN S*Fs */
    double shared = 3 * D * SF * b * 2 + N * D * b + 5 * N * SF * b; /* weights, grads; output; a1 a3 s, work x2 */
    /* FP8 dispatch: packed rows of the pairs (sent, received, forwarded) and of the tokens (agrs's gather) */
    double fp8 = c->dispatch_fp8 ? (2 * R + 2 * N) * (double)moe_fp8_row_bytes(c->D) : 0;
    return (uint64_t)(weights + router + tokens + rows + shared + fp8);
}

uint64_t moe_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (uint64_t)kb * 1024;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

int moe_mem_check(const moe_config_t *c, int P, uint64_t avail_bytes, epb_err_t *err)
{
    return moe_mem_check_job(c, P, 0, c->E, avail_bytes, err);
}

uint64_t moe_mem_need_job(const moe_config_t *c, int P, int local, int El)
{
    /* with FP8 dispatch the check computes the unquantized layer too, next to the reference */
    return moe_mem_estimate(c, P) * (c->dispatch_fp8 ? 2 : 1) + (uint64_t)local * moe_mem_estimate_rank(c, P, El);
}

int moe_mem_check_job(const moe_config_t *c, int P, int local, int El, uint64_t avail_bytes, epb_err_t *err)
{
    if (!avail_bytes) avail_bytes = moe_mem_available();
    uint64_t need = moe_mem_need_job(c, P, local, El);
    char sh[64] = "", here[64] = "";
    if (c->shared > 0) snprintf(sh, sizeof sh, " --shared %d --shared-ffn %ld", c->shared, c->Fs);
    if (local > 0) snprintf(here, sizeof here, ", %d of them on this host with the reference check", local);
    if (avail_bytes && need > avail_bytes)
        return epb_fail(err, EPB_EUSAGE,
                        "layer too large for memory: needs %.2f GiB (%llu bytes) for %d rank(s)%s (--tokens %ld "
                        "--hidden %ld --ffn %ld --experts %d --top-k %d%s) but %.2f GiB (%llu bytes) are available",
                        need / 1073741824.0, (unsigned long long)need, P, here, c->T, c->D, c->F, c->E, c->k, sh,
                        avail_bytes / 1073741824.0, (unsigned long long)avail_bytes);
    return EPB_OK;
}

void moe_init_tokens(float *x, const moe_config_t *c, uint64_t stream, long t0, long N)
{
    for (long t = 0; t < N; t++)
        for (long d = 0; d < c->D; d++)
            x[t * c->D + d] = (float)epb_uniform(c->seed, stream, (uint64_t)(t0 + t) * (uint64_t)c->D + d);
}

void moe_init_weights(float *Wr, float *w1, float *w3, float *w2, const moe_config_t *c, int e0, int El)
{
    long D = c->D, F = c->F, E = c->E;
    double sD = 1.0 / sqrt((double)D), sF = 1.0 / sqrt((double)F);
    if (Wr)
        for (long i = 0; i < D * E; i++) Wr[i] = (float)(sD * epb_uniform(c->seed, MOE_STREAM_WR, (uint64_t)i));
    uint64_t base = (uint64_t)e0 * (uint64_t)(D * F); /* global index of expert e0's first element */
    for (uint64_t i = 0; i < (uint64_t)El * (uint64_t)(D * F); i++) {
        if (w1) w1[i] = (float)(sD * epb_uniform(c->seed, MOE_STREAM_W1, base + i));
        if (w3) w3[i] = (float)(sD * epb_uniform(c->seed, MOE_STREAM_W3, base + i));
        if (w2) w2[i] = (float)(sF * epb_uniform(c->seed, MOE_STREAM_W2, base + i));
    }
}

void moe_init_shared(float *sw1, float *sw3, float *sw2, const moe_config_t *c)
{
    double sD = 1.0 / sqrt((double)c->D), sF = c->Fs > 0 ? 1.0 / sqrt((double)c->Fs) : 0;
    uint64_t n = (uint64_t)c->D * (uint64_t)c->shared * (uint64_t)(c->Fs > 0 ? c->Fs : 0);
    for (uint64_t i = 0; i < n; i++) {
        if (sw1) sw1[i] = (float)(sD * epb_uniform(c->seed, MOE_STREAM_SW1, i));
        if (sw3) sw3[i] = (float)(sD * epb_uniform(c->seed, MOE_STREAM_SW3, i));
        if (sw2) sw2[i] = (float)(sF * epb_uniform(c->seed, MOE_STREAM_SW2, i));
    }
}

static double sign(double v) { return v > 0 ? 1 : v < 0 ? -1 : 0; }

void moe_bias_update(float *bias, const int64_t *tpe, int E, double coeff)
{
    double mean = 0, dmean = 0;
    for (int e = 0; e < E; e++) mean += (double)tpe[e];
    mean /= E;
    for (int e = 0; e < E; e++) dmean += coeff * sign(mean - (double)tpe[e]);
    dmean /= E;
    for (int e = 0; e < E; e++) bias[e] += (float)(coeff * sign(mean - (double)tpe[e]) - dmean);
}
