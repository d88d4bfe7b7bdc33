/* The CPU ops one by one and the module's edges: routing ties and corner cases, group-limited routing and the route
 * scale on hand-made scores, the permutation and its inverse (whole and for a subset of experts), the gate-before
 * ops (scale_rows) and add, the bias update on known histograms, seeded initialisation by global index, bad
 * configurations, the presets, the params text, the memory refusal, the .npy writer and the dump directory, and the
 * FP8 e4m3 rows of --dispatch-dtype fp8 (codes, rounding, scales, the ops). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe.h"
#include "tap.h"

static char dir[] = "/tmp/epb_test_moe_XXXXXX";

/* the router's rule without the features of issue 14 (scale 1, no groups) */
static moe_route_t rt_plain(moe_router_t router, int norm, double skew)
{
    return (moe_route_t){ .router = router, .norm = norm, .skew = skew, .scale = 1, .groups = 1, .topk_groups = 1 };
}

static void test_routing(moe_backend_t *be)
{
    const moe_ops_t *o = be->ops;
    enum { N = 3, D = 4, E = 5 };
    float x[N * D], Wr[D * E] = { 0 }, bias[E] = { 0 }, scores[N * E], w[N * E];
    int32_t idx[N * E];
    int64_t cnt[E];
    for (int i = 0; i < N * D; i++) x[i] = (float)epb_uniform(1, 0, (uint64_t)i);
    /* Wr = 0: every score equal, so the choices are the lowest indices in order */
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, rt_plain(MOE_SOFTMAX, 0, 0));
    TAP_OK(idx[0] == 0 && idx[1] == 1 && idx[4] == 0 && idx[5] == 1, "all-equal scores: ties go to experts 0, 1");
    TAP_OK(fabsf(w[0] - 0.2f) < 1e-7f && cnt[0] == N && cnt[1] == N && cnt[2] == 0, "gate = 1/E, counts 3 3 0 0 0");
    /* a bias tie between experts 3 and 1: lower index first */
    bias[1] = bias[3] = 0.5f;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, rt_plain(MOE_SOFTMAX, 1, 0));
    TAP_OK(idx[0] == 1 && idx[1] == 3, "bias tie between 1 and 3: order 1, 3 (got %d %d)", idx[0], idx[1]);
    TAP_OK(w[0] == 0.5f && w[1] == 0.5f, "gate weights unbiased and renormalised (%g %g)", w[0], w[1]);
    bias[1] = bias[3] = 0;
    /* k = E: every expert once, in score order; counts N each */
    for (int i = 0; i < D * E; i++) Wr[i] = (float)epb_uniform(2, 0, (uint64_t)i);
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, E, rt_plain(MOE_SIGMOID, 0, 0));
    int perm_ok = 1, sorted = 1;
    for (int t = 0; t < N; t++) {
        int seen = 0;
        for (int j = 0; j < E; j++) seen |= 1 << idx[t * E + j];
        perm_ok &= seen == (1 << E) - 1;
        for (int j = 1; j < E; j++) sorted &= w[t * E + j - 1] >= w[t * E + j];
    }
    int64_t total = 0;
    for (int e = 0; e < E; e++) total += cnt[e];
    TAP_OK(perm_ok && sorted && total == N * E && cnt[0] == N, "k=E: every expert once per token, by score");
    /* k = 1 with a large skew: expert 0 always */
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 1, rt_plain(MOE_SOFTMAX, 0, 30.0));
    TAP_OK(cnt[0] == N && idx[0] == 0 && idx[1] == 0 && idx[2] == 0, "k=1, skew 30: all tokens to expert 0");
    /* T = 1 */
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, 1, D, E, 2, rt_plain(MOE_SOFTMAX, 0, 0));
    TAP_OK(cnt[0] + cnt[1] + cnt[2] + cnt[3] + cnt[4] == 2 && idx[0] != idx[1], "T=1: two distinct choices");
}

/* Group-limited routing and the route scale with known scores: Wr = 0 makes every score equal (sigmoid: 0.5), so
 * the bias alone decides. E=8 in 4 groups of 2: group 0 holds the single best expert (0) but a weak second one, so
 * its score (the sum of its two best) loses to groups 2 and 3. */
static void test_route_groups(moe_backend_t *be)
{
    const moe_ops_t *o = be->ops;
    enum { N = 2, D = 3, E = 8 };
    float x[N * D], Wr[D * E] = { 0 }, scores[N * E], w[N * E], w1[N * E];
    float bias[E] = { 0.9f, -0.5f, 0.1f, 0.1f, 0.3f, 0.2f, 0.3f, 0.25f };
    int32_t idx[N * E], idx1[N * E];
    int64_t cnt[E];
    for (int i = 0; i < N * D; i++) x[i] = (float)epb_uniform(1, 0, (uint64_t)i);
    moe_route_t rt = rt_plain(MOE_SIGMOID, 0, 0);
    o->route_forward(be, scores, idx1, w1, cnt, x, Wr, bias, N, D, E, 2, rt);
    TAP_OK(idx1[0] == 0 && idx1[1] == 4, "no groups: experts 0 and 4 (got %d %d)", idx1[0], idx1[1]);
    /* biased scores 1.4 0 | 0.6 0.6 | 0.8 0.7 | 0.8 0.75: group scores 1.4, 1.2, 1.5, 1.55; the best two g3, g2 */
    rt.groups = 4, rt.topk_groups = 2;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, rt);
    TAP_OK(idx[0] == 4 && idx[1] == 6 && cnt[0] == 0 && cnt[4] == N && cnt[6] == N,
           "groups 2 of 4: expert 0 (best alone, weak group) is out; 4 and 6 of groups 2 and 3 (got %d %d)", idx[0], idx[1]);
    rt.topk_groups = 3;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 3, rt);
    TAP_OK(idx[0] == 0 && idx[1] == 4 && idx[2] == 6, "groups 3 of 4: group 0 is back (got %d %d %d)", idx[0], idx[1],
           idx[2]);
    /* ties between groups go to the lower group index: all biases equal */
    float flat[E] = { 0 };
    rt.topk_groups = 1;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, flat, N, D, E, 2, rt);
    TAP_OK(idx[0] == 0 && idx[1] == 1, "tied groups: group 0, experts 0 and 1 (got %d %d)", idx[0], idx[1]);
    /* route scale: the gate weights (after renormalisation) times the scale, the selection unchanged */
    rt = rt_plain(MOE_SIGMOID, 1, 0);
    o->route_forward(be, scores, idx1, w1, cnt, x, Wr, bias, N, D, E, 2, rt);
    rt.scale = 2.5;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, rt);
    TAP_OK(!memcmp(idx, idx1, sizeof(int32_t) * N * 2) && w1[0] == 0.5f && w[0] == 1.25f && w[1] == 1.25f,
           "route-scale 2.5 after renormalisation: gates 0.5 -> %g %g, same choices", w[0], w[1]);
    /* and its backward: d(gate) = g, through the scale: dlogits = 2.5 x the unscaled one */
    float dg[N * 2] = { 1, -2, 0.5f, 3 }, dx1[N * D] = { 0 }, dx2[N * D] = { 0 }, dW1[D * E] = { 0 }, dW2[D * E] = { 0 },
          work[N * E];
    float Wr2[D * E];
    for (int i = 0; i < D * E; i++) Wr2[i] = (float)epb_uniform(2, 0, (uint64_t)i);
    rt.scale = 1;
    o->route_forward(be, scores, idx1, w1, cnt, x, Wr2, bias, N, D, E, 2, rt);
    o->route_backward(be, dx1, dW1, work, dg, scores, idx1, w1, x, Wr2, N, D, E, 2, rt);
    rt.scale = 2.5;
    o->route_forward(be, scores, idx, w, cnt, x, Wr2, bias, N, D, E, 2, rt);
    o->route_backward(be, dx2, dW2, work, dg, scores, idx, w, x, Wr2, N, D, E, 2, rt);
    double worst = 0;
    for (int i = 0; i < D * E; i++) worst = fmax(worst, fabs(dW2[i] - 2.5 * dW1[i]));
    TAP_OK(worst < 1e-6 && fabs(dW1[0]) + fabs(dW1[1]) > 0, "route-scale 2.5: router gradient 2.5x (max diff %.1e)", worst);
}

/* --gate-before's ops and add on hand-checkable values, and their agreement with combine's */
static void test_scale_rows(moe_backend_t *be)
{
    const moe_ops_t *o = be->ops;
    enum { N = 3, k = 2, D = 4, R = 5 };
    float x[N * D], w[N * k] = { 0.5f, -2, 1, 3, 0.25f, 4 }, out[R * D], out2[R * D];
    int32_t pos[N * k] = { 4, 0, -1, 2, 1, 3 }; /* pair (1,0) is not here; rows 0..4 in another order */
    for (int i = 0; i < N * D; i++) x[i] = (float)(i + 1);
    for (int i = 0; i < R * D; i++) out[i] = out2[i] = -7;
    o->scale_rows_forward(be, out, x, pos, w, N, k, D);
    int ok = 1;
    for (int i = 0; i < N * k; i++)
        for (int d = 0; d < D && pos[i] >= 0; d++) ok &= out[pos[i] * D + d] == w[i] * x[(i / k) * D + d];
    TAP_OK(ok, "scale_rows_forward: out[pos[i]] = w[i] x[i/k]");
    /* the same as combine_backward into zeros without the gate gradient */
    memset(out2, 0, sizeof out2);
    o->combine_backward(be, out2, NULL, x, NULL, pos, w, N, k, D);
    TAP_OK(!memcmp(out, out2, sizeof out), "scale_rows_forward = combine_backward(d_gate NULL) into zeros");
    o->scale_rows_forward(be, out2, x, pos, NULL, N, k, D);
    ok = 1;
    for (int i = 0; i < N * k; i++)
        for (int d = 0; d < D && pos[i] >= 0; d++) ok &= out2[pos[i] * D + d] == x[(i / k) * D + d];
    TAP_OK(ok, "scale_rows_forward without weights: a plain scatter");
    /* backward: d_in[t] += sum_j w d_out[pos], d_w[i] += <d_out[pos], x[t]> (adding into what was there) */
    float g[R * D], din[N * D], dw[N * k];
    for (int i = 0; i < R * D; i++) g[i] = (float)epb_uniform(3, 0, (uint64_t)i);
    for (int i = 0; i < N * D; i++) din[i] = 1;
    for (int i = 0; i < N * k; i++) dw[i] = 10;
    o->scale_rows_backward(be, din, dw, g, x, pos, w, N, k, D);
    double e_in = 0, e_w = 0;
    for (int t = 0; t < N; t++)
        for (int d = 0; d < D; d++) {
            double want = 1;
            for (int j = 0; j < k; j++)
                if (pos[t * k + j] >= 0) want += (double)w[t * k + j] * g[pos[t * k + j] * D + d];
            e_in = fmax(e_in, fabs(din[t * D + d] - want));
        }
    for (int i = 0; i < N * k; i++) {
        double want = 10;
        for (int d = 0; d < D && pos[i] >= 0; d++) want += (double)g[pos[i] * D + d] * x[(i / k) * D + d];
        e_w = fmax(e_w, fabs(dw[i] - want));
    }
    TAP_OK(e_in < 1e-5 && e_w < 1e-4 && dw[2] == 10, "scale_rows_backward: d_in and d_w added (errors %.1e %.1e), "
           "a pair not here untouched", e_in, e_w);
    float dw2[N * k];
    memcpy(dw2, dw, sizeof dw);
    o->scale_rows_backward(be, din, NULL, g, x, pos, w, N, k, D);
    TAP_OK(!memcmp(dw, dw2, sizeof dw), "scale_rows_backward with d_w NULL leaves the gate gradients alone");
    /* combine with no weights = combine with weights 1 */
    float ones[N * k], y1[N * D], y2[N * D];
    for (int i = 0; i < N * k; i++) ones[i] = 1;
    o->combine_forward(be, y1, g, pos, ones, N, k, D);
    o->combine_forward(be, y2, g, pos, NULL, N, k, D);
    TAP_OK(!memcmp(y1, y2, sizeof y1), "combine_forward without weights = with weights 1");
    float a[N * D], b[N * D];
    for (int i = 0; i < N * D; i++) a[i] = (float)i, b[i] = 0.5f;
    o->add(be, b, a, N * D);
    TAP_OK(b[0] == 0.5f && b[N * D - 1] == N * D - 0.5f, "add: y += a");
}

static void test_permute(moe_backend_t *be)
{
    const moe_ops_t *o = be->ops;
    enum { N = 50, D = 3, k = 2, E = 7 };
    float x[N * D], xp[N * k * D], dx[N * D];
    int32_t assign[N * k], pos[N * k];
    int64_t off[E + 1];
    for (int i = 0; i < N * D; i++) x[i] = (float)i;
    for (int i = 0; i < N * k; i++) assign[i] = (int32_t)(epb_hash64(5, 0, (uint64_t)i) % E);
    for (int t = 0; t < N; t++) /* two distinct experts per token, as routing gives */
        if (assign[t * k] == assign[t * k + 1]) assign[t * k + 1] = (assign[t * k] + 1) % E;
    for (int pass = 0; pass < 2; pass++) {
        int e0 = pass ? 2 : 0, El = pass ? 3 : E; /* pass 1: a rank owning experts 2..4 only */
        o->permute_forward(be, xp, pos, off, x, assign, N, k, D, e0, El);
        int ok = off[0] == 0, stable = 1, here = 0;
        for (int a = 0; a < El; a++) ok &= off[a + 1] >= off[a];
        for (int i = 0; i < N * k; i++) {
            int a = assign[i] - e0;
            if (a < 0 || a >= El) {
                ok &= pos[i] == -1;
                continue;
            }
            here++;
            ok &= pos[i] >= off[a] && pos[i] < off[a + 1] && !memcmp(xp + pos[i] * D, x + (i / k) * D, sizeof(float) * D);
            for (int i2 = 0; i2 < i; i2++) /* stable: earlier pairs of the same expert come first */
                if (assign[i2] == assign[i]) stable &= pos[i2] < pos[i];
        }
        TAP_OK(ok && stable && off[El] == here, "permute (experts %d..%d): rows grouped by expert, stable, %d here",
               e0, e0 + El - 1, here);
        /* inverse: permute_backward of the permuted rows gives back x times the number of choices here */
        memset(dx, 0, sizeof dx);
        o->permute_backward(be, dx, xp, pos, N, k, D);
        int inv = 1;
        for (int t = 0; t < N; t++) {
            int m = 0;
            for (int j = 0; j < k; j++) m += pos[t * k + j] >= 0;
            for (int d = 0; d < D; d++) inv &= dx[t * D + d] == m * x[t * D + d];
        }
        TAP_OK(inv, "permute round trip (experts %d..%d): scatter-add of the permuted rows gives m*x", e0, e0 + El - 1);
        /* combine from the permuted layout equals combine from the per-(token, choice) layout */
        float gw[N * k], y1[N * D], y2[N * D], tc[N * k * D];
        for (int i = 0; i < N * k; i++) {
            gw[i] = (float)epb_uniform(6, 0, (uint64_t)i);
            if (pos[i] >= 0) memcpy(tc + i * D, xp + pos[i] * D, sizeof(float) * D);
            else memset(tc + i * D, 0, sizeof(float) * D);
        }
        float tc2[N * k * D], back[N * k * D];
        o->unpermute_forward(be, tc2, xp, pos, N * k, D);
        TAP_OK(!memcmp(tc, tc2, sizeof tc), "unpermute_forward puts rows back per (token, choice), zeros elsewhere");
        memset(back, 0, sizeof back);
        o->unpermute_backward(be, back, tc2, pos, N * k, D);
        TAP_OK(!memcmp(back, xp, sizeof(float) * (size_t)(off[El] * D)), "unpermute_backward inverts it");
        o->combine_forward(be, y1, xp, pos, gw, N, k, D);
        o->combine_forward(be, y2, tc, NULL, gw, N, k, D);
        TAP_OK(!memcmp(y1, y2, sizeof y1), "combine via pos == combine over the (token, choice) layout");
    }
    /* k=1 regrouping of arbitrary rows (what a receiver of an all-to-all does): identity assignment keeps order */
    int32_t same[N];
    for (int i = 0; i < N; i++) same[i] = 0;
    o->permute_forward(be, xp, pos, off, x, same, N, 1, D, 0, 1);
    TAP_OK(off[1] == N && !memcmp(xp, x, sizeof x) && pos[N - 1] == N - 1, "one expert: permutation is the identity");
}

static void test_bias_update(void)
{
    float b[4] = { 0 };
    int64_t h1[4] = { 10, 20, 30, 40 };
    moe_bias_update(b, h1, 4, 1e-3);
    TAP_OK(fabsf(b[0] - 1e-3f) < 1e-9f && fabsf(b[1] - 1e-3f) < 1e-9f && fabsf(b[2] + 1e-3f) < 1e-9f &&
           fabsf(b[3] + 1e-3f) < 1e-9f, "histogram 10 20 30 40: +c +c -c -c");
    float b2[4] = { 0.5f, 0, 0, 0 };
    int64_t h2[4] = { 0, 0, 0, 100 };
    moe_bias_update(b2, h2, 4, 1e-3); /* signs + + + -, mean 0.5c subtracted */
    TAP_OK(fabsf(b2[0] - 0.5005f) < 1e-7f && fabsf(b2[1] - 5e-4f) < 1e-9f && fabsf(b2[3] + 1.5e-3f) < 1e-9f,
           "histogram 0 0 0 100: +0.5c +0.5c +0.5c -1.5c (%g %g %g)", b2[0] - 0.5, b2[1], b2[3]);
    float b3[3] = { 0 };
    int64_t h3[3] = { 7, 7, 7 };
    moe_bias_update(b3, h3, 3, 1e-3);
    TAP_OK(b3[0] == 0 && b3[1] == 0 && b3[2] == 0, "a balanced histogram leaves the bias unchanged");
}

static void test_init(void)
{
    moe_config_t c = moe_config_default();
    c.D = 8, c.F = 6, c.E = 4;
    float a[5 * 8], b[2 * 8];
    moe_init_tokens(a, &c, MOE_STREAM_X, 0, 5); /* tokens 0..4 on one rank */
    moe_init_tokens(b, &c, MOE_STREAM_X, 3, 2); /* tokens 3..4 as a second rank would make them */
    TAP_OK(!memcmp(a + 3 * 8, b, sizeof b), "x of global token t is the same whatever the rank split");
    float w_all[4 * 8 * 6], w_part[8 * 6];
    moe_init_weights(NULL, w_all, NULL, NULL, &c, 0, 4);
    moe_init_weights(NULL, w_part, NULL, NULL, &c, 2, 1);
    TAP_OK(!memcmp(w_all + 2 * 8 * 6, w_part, sizeof w_part), "w1 of expert 2 is the same on its owner");
    double mx = 0;
    for (int i = 0; i < 4 * 8 * 6; i++) mx = fmax(mx, fabs(w_all[i]));
    TAP_OK(mx <= 1 / sqrt(8.0) && mx > 0.5 / sqrt(8.0), "w1 ~ U(-1,1)/sqrt(D) (max %g)", mx);
}

/* e4m3 by the OCP spec: known codes, ties to even, saturation, every code back to itself, the row format and its
 * error bound, and the CPU ops */
static void test_fp8(moe_backend_t *be)
{
    static const struct { float v; uint8_t c; } known[] = {
        { 0.0f, 0x00 }, { -0.0f, 0x80 }, { 1.0f, 0x38 }, { -2.0f, 0xC0 }, { 448.0f, 0x7E }, { -448.0f, 0xFE },
        { 460.0f, 0x7E }, { 1e9f, 0x7E }, { -INFINITY, 0xFE }, { 0x1p-9f, 0x01 }, { 0x1p-6f, 0x08 },
        { 0x1p-10f, 0x00 },    /* half the smallest subnormal: a tie, to even 0 */
        { 0x3p-10f, 0x02 },    /* 1.5 x 2^-9: a tie, to even 2 */
        { 1.0625f, 0x38 },     /* between 1 and 1.125: to even 1 */
        { 1.1875f, 0x3A },     /* between 1.125 and 1.25: to even 1.25 */
        { 0x1.f8p-7f, 0x08 },  /* rounds up out of the subnormals (7.875 x 2^-9 -> 8 x 2^-9) */
        { 240.0f, 0x77 },      /* 1.875 x 2^7 */
        { 248.0f, 0x78 },      /* between 240 and 256: to even 256 */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (moe_e4m3_from_f32(known[i].v) != known[i].c) {
            bad++;
            printf("# e4m3(%a) = 0x%02x, want 0x%02x\n", (double)known[i].v, moe_e4m3_from_f32(known[i].v), known[i].c);
        }
    TAP_OK(!bad && moe_e4m3_from_f32(NAN) == 0x7F, "e4m3: %zu known codes, ties to even, saturation at 448, NaN 0x7F",
           sizeof known / sizeof *known);
    int back = 0, nan = 0;
    for (int c = 0; c < 256; c++) {
        float v = moe_e4m3_to_f32((uint8_t)c);
        if ((c & 0x7F) == 0x7F) nan += isnan(v);
        else back += moe_e4m3_from_f32(v) == c;
    }
    TAP_OK(back == 254 && nan == 2 && moe_e4m3_to_f32(0x7E) == 448 && moe_e4m3_to_f32(0x01) == 0x1p-9f,
           "e4m3: every finite code decodes and encodes back to itself (%d of 254), 0x7F/0xFF are NaN", back);
    /* rows: D = 301 is two full blocks of 128 and one of 45, 3 bytes of padding */
    enum { D = 301, N = 3 };
    TAP_OK(moe_fp8_row_bytes(D) == 3 * 4 + 304 && moe_fp8_row_bytes(1) == 8 && moe_fp8_row_bytes(7168) == 56 * 4 + 7168,
           "FP8 row bytes: %zu for D=301 (3 scales, 301 codes, 3 of padding), 8 for D=1, %zu for D=7168",
           moe_fp8_row_bytes(D), moe_fp8_row_bytes(7168));
    float x[N * D], y[N * D], z[N * D];
    uint8_t q[N * (3 * 4 + 304)], q2[sizeof q];
    for (long i = 0; i < N * D; i++) x[i] = (float)(epb_uniform(5, 1, (uint64_t)i) * ldexp(1, (int)(i % 13) - 6));
    for (long i = 128; i < 256; i++) x[i] = 0; /* an all-zero block: scale 1 */
    moe_config_t c = moe_config_default();
    c.D = D;
    c.dispatch_fp8 = true;
    int rc = be->ops->quant_fp8(be, q, x, N, D) || be->ops->dequant_fp8(be, y, q, N, D);
    double worst = 0;
    int in_bound = 1;
    for (long t = 0; t < N; t++)
        for (long b = 0; b < 3; b++) {
            float s, amax = 0;
            memcpy(&s, q + t * moe_fp8_row_bytes(D) + 4 * b, 4);
            for (long i = b * 128; i < D && i < (b + 1) * 128; i++) amax = fmaxf(amax, fabsf(x[t * D + i]));
            in_bound &= s == (amax > 0 ? amax / 448 : 1);
            for (long i = b * 128; i < D && i < (b + 1) * 128; i++) { /* half a spacing: 2^-4 relative, 2^-10 s below */
                double e = fabs((double)y[t * D + i] - x[t * D + i]), lim = fmax(fabs(x[t * D + i]) / 16, s * 0x1p-10);
                in_bound &= e <= lim;
                if (fabs(x[t * D + i]) >= s * 0x1p-6) worst = fmax(worst, e / fabs(x[t * D + i])); /* a normal code */
            }
        }
    int pad0 = 1;
    for (long t = 0; t < N; t++)
        for (size_t j = 12 + D; j < moe_fp8_row_bytes(D); j++) pad0 &= q[t * moe_fp8_row_bytes(D) + j] == 0;
    TAP_OK(!rc && in_bound && worst > 0.02 && worst <= 1.0 / 16 && pad0 && moe_dispatch_row_bytes(&c, 2) == 316,
           "FP8 rows: scale = block max / 448 (1 for a zero block), every element within half a spacing (worst of a "
           "normal code %.4f relative, bound 1/16), padding zero, 316 bytes on the wire against 602 of bf16", worst);
    /* a block of subnormal floats: amax / 448 would underflow (to 0 below ~6e-43: 0/0 = NaN); the scale is FLT_MIN */
    float tiny[128], tq[128];
    uint8_t tb[4 + 128];
    for (int i = 0; i < 128; i++) tiny[i] = (float)(i - 64) * 1e-43f;
    moe_fp8_quant_row(tb, tiny, 128);
    moe_fp8_dequant_row(tq, tb, 128);
    float ts;
    memcpy(&ts, tb, 4);
    int finite = 1;
    for (int i = 0; i < 128; i++) finite &= !isnan(tq[i]) && fabsf(tq[i] - tiny[i]) <= 0x1p-10f * FLT_MIN;
    TAP_OK(ts == FLT_MIN && finite, "FP8 rows: a block of subnormal values gets the scale FLT_MIN, no NaN, within half a "
           "spacing of it");
    int32_t pos[2] = { 2, 0 };
    rc = be->ops->gather_bytes(be, q2, q, pos, 2, moe_fp8_row_bytes(D)) || be->ops->dequant_fp8(be, z, q2, 2, D);
    TAP_OK(!rc && !memcmp(z, y + 2 * D, D * 4) && !memcmp(z + D, y, D * 4), "gather_bytes moves packed rows whole");
}

/* The capacity rule (moe_capacity_drop) against its definition, pair by pair: a pair (t, e) of group g stays when
 * fewer than cap pairs of e in g come before it (probs: a larger weight, or the same weight and an earlier token;
 * position: an earlier token) */
static void test_capacity(void)
{
    enum { N = 60, K = 3, E = 6, G = 20 };
    int32_t idx[N * K], as[N * K];
    float w[N * K];
    int64_t kept[E];
    for (int t = 0; t < N; t++) /* k distinct experts, skewed towards the low ones; weights with ties */
        for (int j = 0; j < K; j++) {
            /* a skewed pick, then upwards (mod E) to the first expert the token has not chosen */
            int e = (int)(E * pow(0.5 + 0.5 * epb_uniform(7, 1, (uint64_t)(t * K + j)), 3.0)) % E, seen = 1;
            for (int n = 0; seen && n < E; n++, e = seen ? (e + 1) % E : e) {
                seen = 0;
                for (int i = 0; i < j; i++) seen |= idx[t * K + i] == e;
            }
            idx[t * K + j] = e;
            w[t * K + j] = (float)((int)(4 + 4 * epb_uniform(7, 2, (uint64_t)(t * K + j))) / 8.0); /* 4 values */
        }
    moe_config_t c = moe_config_default();
    c.T = G, c.k = K, c.E = E, c.capacity_factor = 1;
    long cap = moe_capacity(&c); /* ceil(1 * 20 * 3 / 6) = 10 */
    int32_t by_probs[N * K];
    for (int pol = 0; pol < 2; pol++) {
        long dropped = moe_capacity_drop(idx, w, N, K, E, G, cap, (moe_drop_t)pol, as, kept), want_drop = 0, bad = 0;
        if (pol == MOE_DROP_PROBS) memcpy(by_probs, as, sizeof as);
        else bad += !memcmp(by_probs, as, sizeof as); /* the two policies keep different pairs here */
        int64_t want_kept[E] = { 0 };
        for (int i = 0; i < N * K; i++) {
            int t = i / K, g = t / G, before = 0;
            for (int q = g * G * K; q < (g + 1) * G * K; q++) {
                if (idx[q] != idx[i] || q == i) continue;
                before += pol == MOE_DROP_POSITION ? q < i : w[q] > w[i] || (w[q] == w[i] && q < i);
            }
            int stays = before < cap;
            want_drop += !stays;
            if (stays) want_kept[idx[i]]++;
            bad += as[i] != (stays ? idx[i] : -1);
        }
        for (int e = 0; e < E; e++) bad += kept[e] != want_kept[e];
        TAP_OK(!bad && dropped == want_drop && want_drop > 0, "capacity %ld, %s: %ld of %d pairs dropped, every pair "
               "as its definition says (%ld differ)", cap, moe_drop_name((moe_drop_t)pol), dropped, N * K, bad);
    }
    /* in place (assign may be idx), and a capacity no expert reaches keeps everything */
    int32_t inplace[N * K], all[N * K];
    memcpy(inplace, idx, sizeof inplace);
    long d0 = moe_capacity_drop(inplace, w, N, K, E, G, cap, MOE_DROP_PROBS, inplace, NULL);
    moe_capacity_drop(idx, w, N, K, E, G, cap, MOE_DROP_PROBS, as, NULL);
    long d1 = moe_capacity_drop(idx, w, N, K, E, G, G, MOE_DROP_PROBS, all, kept);
    TAP_OK(d0 > 0 && !memcmp(inplace, as, sizeof as) && d1 == 0 && !memcmp(all, idx, sizeof all),
           "in place as out of place; capacity G keeps all %d pairs", N * K);
    c.capacity_factor = 100;
    long big = moe_capacity(&c);
    c.capacity_factor = 1e-9;
    long tiny = moe_capacity(&c);
    c.capacity_factor = 1.25, c.T = 24, c.k = 2, c.E = 8;
    TAP_OK(big == G && tiny == 1 && moe_capacity(&c) == 8, "capacity: at most the group's tokens (%ld), at least 1 "
           "(%ld), ceil(1.25 * 24 * 2 / 8) = 8 (%ld)", big, tiny, moe_capacity(&c));
}

/* Redundant experts: EPLB's placement (moe_redundant_place) on a worked example and, on seeded skewed loads, the
 * properties its rule promises; the replica index and the split by token */
static void test_redundant(void)
{
    /* loads 100 10 40 10 on 2 ranks with 2 redundant slots: expert 0 gains both (100/1, then 100/2 > 40); packing
     * by weight 40, 33.3 x3, 10, 10: rank 0 {2, 0, 3}, rank 1 {0, 0, 1} (its second replica of 0 because both
     * ranks hold one and rank 1 weighs less), each rank's slots in expert order */
    int64_t load[4] = { 100, 10, 40, 10 };
    int32_t sl[6], off[5], rs[6];
    int rc = moe_redundant_place(load, 4, 2, 2, sl);
    const int32_t want[6] = { 0, 2, 3, 0, 0, 1 }, want_off[5] = { 0, 3, 4, 5, 6 }, want_rs[6] = { 0, 3, 4, 5, 1, 2 };
    moe_replica_index(sl, 4, 2, off, rs);
    TAP_OK(!rc && !memcmp(sl, want, sizeof want) && !memcmp(off, want_off, sizeof off) && !memcmp(rs, want_rs, sizeof rs),
           "EPLB placement of loads 100 10 40 10 on 2 ranks, 2 redundant: slots %d %d %d | %d %d %d", sl[0], sl[1], sl[2],
           sl[3], sl[4], sl[5]);
    int split[3] = { 0, 0, 0 }, only = 1;
    for (long t = 0; t < 300; t++) {
        int32_t u = moe_replica_pick(off, rs, 0, t);
        split[u == 0 ? 0 : u == 3 ? 1 : u == 4 ? 2 : 0] += u == 0 || u == 3 || u == 4;
        only &= moe_replica_pick(off, rs, 1, t) == 5;
    }
    TAP_OK(split[0] == 100 && split[1] == 100 && split[2] == 100 && only && moe_replica_pick(off, rs, 0, 4) == 3,
           "expert 0's pairs of 300 tokens split 100/100/100 over its slots by token; expert 1's to its one slot");
    /* seeded skewed loads: every rank S slots, every expert one at least, no rank with two slots of one expert while
     * another has a free slot without it, the replica counts EPLB's (no replica could move to lower the largest
     * load per replica), and the busiest rank no heavier than holding its E/P experts alone */
    int bad = 0, cases = 0;
    for (int E = 4; E <= 32; E *= 2)
        for (int P = 1; P <= 8 && P <= E; P *= 2)
            for (int R = P; R <= 2 * E; R += R < E ? P : E) {
                int Ep = E + R, S = Ep / P;
                int64_t *ld = malloc(sizeof *ld * (size_t)E);
                int32_t *place = malloc(sizeof *place * (size_t)Ep);
                int *n = calloc((size_t)E, sizeof *n);
                for (int e = 0; e < E; e++) ld[e] = (int64_t)(1000.0 * pow(e + 1, -1.2) * (0.5 + epb_uniform(9, (uint64_t)E, (uint64_t)e)));
                bad += moe_redundant_place(ld, E, R, P, place) != 0;
                for (int u = 0; u < Ep; u++) n[place[u]]++;
                double top = 0, heavy = 0, plain = 0;
                for (int e = 0; e < E; e++) top = fmax(top, (double)ld[e] / n[e]);
                for (int e = 0; e < E; e++) bad += n[e] < 1 || (n[e] > 1 && (double)ld[e] / (n[e] - 1) < top);
                for (int p = 0; p < P; p++) {
                    double w = 0, q = 0;
                    for (int a = 0; a < S; a++) {
                        int e = place[p * S + a];
                        w += (double)ld[e] / n[e];
                        bad += a > 0 && e < place[p * S + a - 1]; /* expert order */
                        bad += a > 0 && e == place[p * S + a - 1] && n[e] <= P && R <= E; /* twice where avoidable */
                    }
                    for (int e = p * (E / P); e < (p + 1) * (E / P); e++) q += (double)ld[e];
                    heavy = fmax(heavy, w), plain = fmax(plain, q);
                }
                bad += heavy > plain + 1e-9;
                cases++;
                free(ld), free(place), free(n);
            }
    TAP_OK(!bad && cases > 20, "EPLB placement on %d seeded skewed loads (E 4-32, P 1-8, R P..2E): the rule's "
           "properties hold (%d violations)", cases, bad);
}

static void test_bad_input(void)
{
    epb_err_t err;
    struct { const char *want; moe_config_t c; } cases[20];
    int n = 0;
    moe_config_t d = moe_config_default();
    d.E = 4;
    cases[n].want = "--top-k 5 exceeds --experts 4", cases[n].c = d, cases[n++].c.k = 5;
    cases[n].want = "--top-k 0", cases[n].c = d, cases[n++].c.k = 0;
    cases[n].want = "--experts 0", cases[n].c = d, cases[n].c.E = 0, cases[n++].c.k = 1;
    cases[n].want = "--tokens 0", cases[n].c = d, cases[n++].c.T = 0;
    cases[n].want = "--hidden -3", cases[n].c = d, cases[n++].c.D = -3;
    cases[n].want = "--ffn 0", cases[n].c = d, cases[n++].c.F = 0;
    cases[n].want = "--router", cases[n].c = d, cases[n++].c.router = (moe_router_t)7;
    cases[n].want = "--skew", cases[n].c = d, cases[n++].c.skew = -1;
    /* the features of issue 14: groups, route scale, shared experts */
    moe_config_t g8 = d;
    g8.E = 8, g8.k = 2;
    cases[n].want = "--groups 3 does not divide --experts 8", cases[n].c = g8, cases[n].c.groups = 3, cases[n++].c.topk_groups = 1;
    cases[n].want = "--topk-groups 5 exceeds --groups 4", cases[n].c = g8, cases[n].c.groups = 4, cases[n++].c.topk_groups = 5;
    cases[n].want = "--top-k 3 exceeds the 2 experts of the --topk-groups 1 best groups (--groups 4 of 2 experts each)",
    cases[n].c = g8, cases[n].c.groups = 4, cases[n].c.topk_groups = 1, cases[n++].c.k = 3;
    cases[n].want = "--groups 128: at most 64", cases[n].c = g8, cases[n].c.E = 128, cases[n].c.groups = 128,
    cases[n++].c.topk_groups = 1;
    cases[n].want = "--route-scale 0 must be a positive", cases[n].c = g8, cases[n++].c.route_scale = 0;
    cases[n].want = "--shared-ffn 64 needs shared experts", cases[n].c = g8, cases[n++].c.Fs = 64;
    cases[n].want = "--shared-ffn 0 must be positive", cases[n].c = g8, cases[n++].c.shared = 2;
    cases[n].want = "--shared -1 must be >= 0", cases[n].c = g8, cases[n++].c.shared = -1;
    cases[n].want = "--dispatch-dtype fp8 with --gate-before", cases[n].c = g8, cases[n].c.gate_before = true,
    cases[n++].c.dispatch_fp8 = true;
    for (int i = 0; i < n; i++) {
        memset(&err, 0, sizeof err);
        int rc = moe_config_validate(&cases[i].c, &err);
        TAP_OK(rc == EPB_EUSAGE && strstr(err.msg, cases[i].want) && !strchr(err.msg, '\n'),
               "rejected with '%s': %s", cases[i].want, err.msg);
    }
    TAP_OK(moe_config_validate(&d, &err) == EPB_OK, "the default configuration (E=4) is valid");
    moe_router_t r;
    TAP_OK(moe_router_parse("softmax", &r) == 0 && r == MOE_SOFTMAX && moe_router_parse("sigmoid", &r) == 0 &&
           r == MOE_SIGMOID && moe_router_parse("relu", &r) == -1, "router names parse; 'relu' is unknown");
    /* memory: the default layer against 1 MiB, and a huge layer against what this machine has */
    d = moe_config_default();
    uint64_t need = moe_mem_estimate(&d, 1);
    char fig[64];
    snprintf(fig, sizeof fig, "%llu bytes", (unsigned long long)need);
    TAP_OK(need > 3ull * 16 * 1024 * 2048 * 4 * 2, "estimate covers weights and gradients (%llu)",
           (unsigned long long)need);
    TAP_OK(moe_mem_check(&d, 1, 1 << 20, &err) == EPB_EUSAGE && strstr(err.msg, fig), "refused: %s", err.msg);
    TAP_OK(moe_mem_check(&d, 1, need, &err) == EPB_OK, "accepted when exactly enough is available");
    moe_config_t sh = d;
    sh.shared = 2, sh.Fs = 512;
    uint64_t need_sh = moe_mem_estimate(&sh, 1);
    TAP_OK(need_sh >= need + 3ull * 1024 * 2 * 512 * 4 * 2 && strstr((moe_mem_check(&sh, 1, need, &err), err.msg),
           "--shared 2 --shared-ffn 512"), "shared experts add to the estimate (%llu > %llu) and to the message",
           (unsigned long long)need_sh, (unsigned long long)need);
    TAP_OK(moe_mem_check_job(&d, 4, 4, d.E / 4, moe_mem_estimate(&d, 4), &err) == EPB_EUSAGE &&
           strstr(err.msg, "4 of them on this host"), "4 ranks on one host need more than the reference alone: %s",
           err.msg);
    d.E = 1 << 16;
    TAP_OK(moe_mem_available() > 0 && moe_mem_check(&d, 64, 0, &err) == EPB_EUSAGE && strstr(err.msg, "available"),
           "65536 experts over 64 ranks refused against MemAvailable: %s", err.msg);
}

/* The presets: unique names, each a valid layer as published, found by name; the params text of the features */
static void test_models(void)
{
    epb_err_t err;
    int ok = moe_nmodels >= 4, names_ok = 1;
    for (int i = 0; i < moe_nmodels; i++) {
        const moe_model_t *m = &moe_models[i];
        moe_config_t c = moe_config_default();
        c.T = 16, c.D = m->D, c.F = m->F, c.E = m->E, c.k = m->k, c.router = m->router, c.route_norm = m->route_norm;
        c.route_scale = m->route_scale, c.groups = m->groups, c.topk_groups = m->topk_groups;
        c.gate_before = m->gate_before, c.shared = m->shared, c.Fs = m->Fs;
        if (moe_config_validate(&c, &err)) ok = 0, printf("# %s: %s\n", m->name, err.msg);
        ok &= moe_model_find(m->name) == m && m->source && strstr(m->source, "config.json");
        for (int j = 0; j < i; j++) names_ok &= strcmp(moe_models[j].name, m->name) != 0;
    }
    TAP_OK(ok && names_ok, "%d presets, each valid as published, with its source; unique names", moe_nmodels);
    const char *want[] = { "mixtral-8x7b", "qwen3-30b-a3b", "llama4-scout", "deepseek-v3" };
    int found = 1;
    for (int i = 0; i < 4; i++) found &= moe_model_find(want[i]) != NULL;
    const moe_model_t *ds = moe_model_find("deepseek-v3");
    TAP_OK(found && !moe_model_find("gpt-5") && ds && ds->E == 256 && ds->k == 8 && ds->D == 7168 && ds->F == 2048 &&
           ds->groups == 8 && ds->topk_groups == 4 && ds->shared == 1 && ds->route_scale == 2.5 &&
           ds->router == MOE_SIGMOID && ds->route_norm, "the four required presets; DeepSeek-V3 as its config.json");
    moe_config_t c = moe_config_default();
    char buf[256];
    moe_config_params(&c, buf, sizeof buf);
    TAP_OK(buf[0] == 0, "the default layer has no feature params");
    c.shared = 1, c.Fs = 128, c.gate_before = true, c.route_scale = 2.5, c.groups = 8, c.topk_groups = 4;
    moe_config_params(&c, buf, sizeof buf);
    TAP_OK(!strcmp(buf, "shared=1;shared_ffn=128;gate_before=1;route_scale=2.5;groups=8;topk_groups=4"),
           "params in canonical order: %s", buf);
}

static void test_npy_and_dump(void)
{
    epb_err_t err;
    char path[512];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    float data[6] = { 1, 2, 3, 4, 5, 6 };
    long shape[2] = { 2, 3 };
    TAP_OK(moe_npy_write(path, data, "<f4", 2, shape, &err) == EPB_OK, "write a (2,3) float32 .npy");
    unsigned char buf[256];
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    size_t hlen = buf[8] | (size_t)buf[9] << 8;
    TAP_OK(got >= 10 && !memcmp(buf, "\x93NUMPY\x01\x00", 8), "magic and version 1.0");
    TAP_OK((10 + hlen) % 64 == 0 && buf[10 + hlen - 1] == '\n', "header padded to 64 bytes, ends in newline (%zu)",
           10 + hlen);
    char hdr[256] = { 0 };
    memcpy(hdr, buf + 10, hlen < 255 ? hlen : 255);
    TAP_OK(strstr(hdr, "'descr': '<f4'") && strstr(hdr, "'fortran_order': False") && strstr(hdr, "'shape': (2, 3)"),
           "header: %.60s", hdr);
    TAP_OK(got == 10 + hlen + sizeof data && !memcmp(buf + 10 + hlen, data, sizeof data), "data follows the header");
    int64_t l[3] = { 1, 2, 3 };
    long s1[1] = { 3 };
    snprintf(path, sizeof path, "%s/b.npy", dir);
    moe_npy_write(path, l, "<i8", 1, s1, &err);
    f = fopen(path, "rb");
    got = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, buf + 10, 100);
    hlen = buf[8] | (size_t)buf[9] << 8;
    TAP_OK(strstr(hdr, "'descr': '<i8'") && strstr(hdr, "'shape': (3,)") && (10 + hlen) % 64 == 0 &&
           got == 10 + hlen + 24, "1-d int64: (3,), %zu bytes", got);
    snprintf(path, sizeof path, "%s/a.npy.tmp", dir);
    TAP_OK(access(path, F_OK) != 0, "no temporary file left behind");

    /* a whole dump of a tiny layer, and unwritable directories */
    moe_config_t c = moe_config_default();
    c.T = 2, c.D = 3, c.F = 2, c.E = 2, c.k = 1;
    float z[64] = { 0 };
    int32_t zi[8] = { 0 };
    int64_t zl[8] = { 0 };
    moe_dump_t dm = { "local", 2, &c, z, z, z, z, z, z, zi, z, z, z, z, z, z, z, z, zl, z, NULL, NULL, NULL, NULL, NULL,
                      NULL };
    snprintf(path, sizeof path, "%s/dump/new", dir);
    TAP_OK(moe_dump_write(path, &dm, &err) == EPB_OK || (printf("# %s\n", err.msg), 0), "dump into a new directory (parents created)");
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/dump", dir);
    mkdir(path, 0777);
    TAP_OK(moe_dump_write(path, &dm, &err) == EPB_OK, "dump into an existing directory");
    snprintf(path, sizeof path, "%s/dump/config.json", dir);
    f = fopen(path, "r");
    char js[1024] = { 0 };
    if (f) fread(js, 1, sizeof js - 1, f), fclose(f);
    TAP_OK(strstr(js, "\"strategy\": \"local\"") && strstr(js, "\"ranks\": 2") && strstr(js, "\"route_norm\": false") &&
           strstr(js, "\"top_k\": 1") && strstr(js, "\"dtype\": \"f32\"") && strstr(js, "\"bias_coeff\""),
           "config.json holds the contract's fields");
    const char *names[] = { "x", "router_w", "expert_bias", "w1", "w3", "w2", "topk_idx", "topk_w", "y", "dy", "dx",
                            "d_router_w", "dw1", "dw3", "dw2", "tokens_per_expert", "expert_bias_after" };
    int all = 1;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/dump/%s.npy", dir, names[i]);
        all &= access(path, F_OK) == 0;
    }
    TAP_OK(all, "all 17 .npy files written");
    snprintf(path, sizeof path, "%s/dump/shared_w1.npy", dir);
    TAP_OK(access(path, F_OK) != 0, "no shared-expert files without shared experts");
    /* with shared experts: their weights and gradients too, and config.json names every feature */
    c.shared = 2, c.Fs = 3, c.gate_before = true, c.route_scale = 2.5, c.groups = 2, c.topk_groups = 1;
    snprintf(path, sizeof path, "%s/dump_sh", dir);
    TAP_OK(moe_dump_write(path, &dm, &err) == EPB_EUSAGE && strstr(err.msg, "shared_w1 missing"),
           "shared experts without their tensors: %s", err.msg);
    dm.shared_w1 = dm.shared_w3 = dm.shared_w2 = dm.d_shared_w1 = dm.d_shared_w3 = dm.d_shared_w2 = z;
    TAP_OK(moe_dump_write(path, &dm, &err) == EPB_OK, "dump with 2 shared experts");
    const char *sn[] = { "shared_w1", "shared_w3", "shared_w2", "d_shared_w1", "d_shared_w3", "d_shared_w2" };
    all = 1;
    for (size_t i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/dump_sh/%s.npy", dir, sn[i]);
        all &= access(path, F_OK) == 0;
    }
    snprintf(path, sizeof path, "%s/dump_sh/shared_w2.npy", dir);
    f = fopen(path, "rb");
    memset(buf, 0, sizeof buf);
    got = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    TAP_OK(all && strstr((char *)buf + 10, "'shape': (6, 3)"), "23 files: the shared experts' (S*Fs, D) = (6, 3)");
    snprintf(path, sizeof path, "%s/dump_sh/config.json", dir);
    f = fopen(path, "r");
    memset(js, 0, sizeof js);
    if (f) fread(js, 1, sizeof js - 1, f), fclose(f);
    TAP_OK(strstr(js, "\"route_scale\": 2.5") && strstr(js, "\"groups\": 2") && strstr(js, "\"topk_groups\": 1") &&
           strstr(js, "\"gate_before\": true") && strstr(js, "\"shared\": 2") && strstr(js, "\"shared_ffn\": 3"),
           "config.json names every feature");
    snprintf(path, sizeof path, "%s/dump/x.npy/sub", dir); /* parent is a regular file */
    TAP_OK(moe_dump_write(path, &dm, &err) == EPB_EUSAGE && strstr(err.msg, path), "unwritable: %s", err.msg);
    TAP_OK(moe_dump_write("/proc/epb-no-such-dir", &dm, &err) == EPB_EUSAGE && strstr(err.msg, "/proc/epb-no-such-dir"),
           "uncreatable: %s", err.msg);
}

int main(void)
{
    if (!mkdtemp(dir)) return 99;
    moe_backend_t *be;
    epb_err_t err;
    if (moe_cpu_backend_create(&be, &err)) {
        TAP_OK(0, "cpu backend: %s", err.msg);
        return tap_done();
    }
    test_routing(be);
    test_route_groups(be);
    test_scale_rows(be);
    test_permute(be);
    test_fp8(be);
    test_capacity();
    test_redundant();
    test_bias_update();
    test_init();
    test_bad_input();
    test_models();
    test_npy_and_dump();
    char info[512];
    epb_blas_info(info, sizeof info);
    const char *better = epb_blas_better_coretype();
    TAP_OK(strlen(info) > 0, "BLAS: %s; better core type: %s", info, better ? better : "none");
    TAP_OK(epb_blas_coretype_choice("Haswell", 1, NULL) && !strcmp(epb_blas_coretype_choice("Haswell", 1, NULL),
           "SkylakeX") && epb_blas_coretype_choice("Zen", 1, NULL), "AVX2 core on an AVX-512 CPU: use SkylakeX");
    TAP_OK(!epb_blas_coretype_choice("Haswell", 0, NULL) && !epb_blas_coretype_choice("Haswell", 1, "Haswell") &&
           !epb_blas_coretype_choice("SkylakeX", 1, NULL) && !epb_blas_coretype_choice("Cooperlake", 1, NULL),
           "no change without AVX-512, with OPENBLAS_CORETYPE set, or on an AVX-512 core");
    moe_backend_destroy(be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return tap_done();
}
