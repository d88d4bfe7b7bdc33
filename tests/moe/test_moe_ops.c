/* The CPU ops one by one and the module's edges: routing ties and corner cases, the permutation and its
 * inverse (whole and for a subset of experts), the bias update on known histograms, seeded initialisation by
 * global index, bad configurations, the memory refusal, the .npy writer and the dump directory. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe.h"
#include "tap.h"

static char dir[] = "/tmp/epb_test_moe_XXXXXX";

static void test_routing(moe_backend_t *be)
{
    const moe_ops_t *o = be->ops;
    enum { N = 3, D = 4, E = 5 };
    float x[N * D], Wr[D * E] = { 0 }, bias[E] = { 0 }, scores[N * E], w[N * E];
    int32_t idx[N * E];
    int64_t cnt[E];
    for (int i = 0; i < N * D; i++) x[i] = (float)epb_uniform(1, 0, (uint64_t)i);
    /* Wr = 0: every score equal, so the choices are the lowest indices in order */
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, MOE_SOFTMAX, 0, 0);
    TAP_OK(idx[0] == 0 && idx[1] == 1 && idx[4] == 0 && idx[5] == 1, "all-equal scores: ties go to experts 0, 1");
    TAP_OK(fabsf(w[0] - 0.2f) < 1e-7f && cnt[0] == N && cnt[1] == N && cnt[2] == 0, "gate = 1/E, counts 3 3 0 0 0");
    /* a bias tie between experts 3 and 1: lower index first */
    bias[1] = bias[3] = 0.5f;
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 2, MOE_SOFTMAX, 1, 0);
    TAP_OK(idx[0] == 1 && idx[1] == 3, "bias tie between 1 and 3: order 1, 3 (got %d %d)", idx[0], idx[1]);
    TAP_OK(w[0] == 0.5f && w[1] == 0.5f, "gate weights unbiased and renormalised (%g %g)", w[0], w[1]);
    bias[1] = bias[3] = 0;
    /* k = E: every expert once, in score order; counts N each */
    for (int i = 0; i < D * E; i++) Wr[i] = (float)epb_uniform(2, 0, (uint64_t)i);
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, E, MOE_SIGMOID, 0, 0);
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
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, N, D, E, 1, MOE_SOFTMAX, 0, 30.0);
    TAP_OK(cnt[0] == N && idx[0] == 0 && idx[1] == 0 && idx[2] == 0, "k=1, skew 30: all tokens to expert 0");
    /* T = 1 */
    o->route_forward(be, scores, idx, w, cnt, x, Wr, bias, 1, D, E, 2, MOE_SOFTMAX, 0, 0);
    TAP_OK(cnt[0] + cnt[1] + cnt[2] + cnt[3] + cnt[4] == 2 && idx[0] != idx[1], "T=1: two distinct choices");
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

static void test_bad_input(void)
{
    epb_err_t err;
    struct { const char *want; moe_config_t c; } cases[8];
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
    d.E = 1 << 16;
    TAP_OK(moe_mem_available() > 0 && moe_mem_check(&d, 64, 0, &err) == EPB_EUSAGE && strstr(err.msg, "available"),
           "65536 experts over 64 ranks refused against MemAvailable: %s", err.msg);
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
    moe_dump_t dm = { "local", 2, &c, z, z, z, z, z, z, zi, z, z, z, z, z, z, z, z, zl, z };
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
    test_permute(be);
    test_bias_update();
    test_init();
    test_bad_input();
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
