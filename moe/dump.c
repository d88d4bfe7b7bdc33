/* The --dump contract of DESIGN.md: the global tensors of one step as NumPy .npy v1.0 files plus config.json.
 * Every file is written to a temporary name and renamed, so a reader never sees a half-written file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "moe.h"

static int write_atomic(const char *path, const void *head, size_t nhead, const void *data, size_t ndata,
                        epb_err_t *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return epb_fail(err, EPB_EUSAGE, "--dump: path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    /* a folder that refuses the file is the user's input (exit 2); a write that fails once the file exists (a
     * full disk, an I/O error) is a runtime failure (exit 3) */
    if (!f) {
        int e = errno;
        return epb_fail(err, e == ENOSPC || e == EDQUOT || e == EIO ? EPB_ESYS : EPB_EUSAGE,
                        "--dump: cannot write %s: %s", tmp, strerror(e));
    }
    errno = 0;
    int ok = fwrite(head, 1, nhead, f) == nhead && (!ndata || fwrite(data, 1, ndata, f) == ndata);
    int e = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        if (!e) e = errno ? errno : EIO;
        remove(tmp);
        return epb_fail(err, EPB_ESYS, "--dump: writing %s failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        remove(tmp);
        return epb_fail(err, EPB_EUSAGE, "--dump: cannot write %s: %s", path, strerror(e));
    }
    return EPB_OK;
}

int moe_npy_write(const char *path, const void *data, const char *descr, int ndim, const long *shape,
                  epb_err_t *err)
{
    size_t esize = !strcmp(descr, "<f4") || !strcmp(descr, "<i4") ? 4 : !strcmp(descr, "<i8") ? 8 : 0;
    if (!esize || ndim < 0 || ndim > 8) return epb_fail(err, EPB_EUSAGE, "npy %s: unsupported dtype %s", path, descr);
    char dict[512], head[600];
    size_t count = 1;
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++) {
        /* numpy's own spelling: (5,) for one dimension, (2, 3) for more */
        n += snprintf(dict + n, sizeof dict - (size_t)n, i ? ", %ld" : ndim == 1 ? "%ld," : "%ld", shape[i]);
        count *= (size_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* magic(6) version(2) len(2) dict, padded with spaces and one '\n' to a multiple of 64 bytes */
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64, hlen = total - 10;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', hlen - (size_t)n - 1);
    head[total - 1] = '\n';
    return write_atomic(path, head, total, data, count * esize, err);
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return errno = ENAMETOOLONG, -1;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
            *s = '/';
        }
    return mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

int moe_dump_write(const char *dir, const moe_dump_t *d, epb_err_t *err)
{
    if (make_dirs(dir) != 0)
        return epb_fail(err, EPB_EUSAGE, "--dump %s: cannot create the directory: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return epb_fail(err, EPB_EUSAGE, "--dump %s: not a directory", dir);
    const moe_config_t *c = d->cfg;
    long N = (long)d->ranks * c->T, D = c->D, F = c->F, E = c->E, k = c->k, SF = (long)c->shared * c->Fs;
    struct {
        const char *name, *descr;
        const void *data;
        int ndim;
        long shape[3];
    } t[] = {
        { "x", "<f4", d->x, 2, { N, D } },
        { "router_w", "<f4", d->router_w, 2, { D, E } },
        { "expert_bias", "<f4", d->expert_bias, 1, { E } },
        { "w1", "<f4", d->w1, 3, { E, D, F } },
        { "w3", "<f4", d->w3, 3, { E, D, F } },
        { "w2", "<f4", d->w2, 3, { E, F, D } },
        { "topk_idx", "<i4", d->topk_idx, 2, { N, k } },
        { "topk_w", "<f4", d->topk_w, 2, { N, k } },
        { "y", "<f4", d->y, 2, { N, D } },
        { "dy", "<f4", d->dy, 2, { N, D } },
        { "dx", "<f4", d->dx, 2, { N, D } },
        { "d_router_w", "<f4", d->d_router_w, 2, { D, E } },
        { "dw1", "<f4", d->dw1, 3, { E, D, F } },
        { "dw3", "<f4", d->dw3, 3, { E, D, F } },
        { "dw2", "<f4", d->dw2, 3, { E, F, D } },
        { "tokens_per_expert", "<i8", d->tokens_per_expert, 1, { E } },
        { "expert_bias_after", "<f4", d->expert_bias_after, 1, { E } },
        /* the shared experts side by side (moe_init_shared): expert s is columns (rows of w2) s*Fs..(s+1)*Fs-1 */
        { "shared_w1", "<f4", d->shared_w1, 2, { D, SF } },
        { "shared_w3", "<f4", d->shared_w3, 2, { D, SF } },
        { "shared_w2", "<f4", d->shared_w2, 2, { SF, D } },
        { "d_shared_w1", "<f4", d->d_shared_w1, 2, { D, SF } },
        { "d_shared_w3", "<f4", d->d_shared_w3, 2, { D, SF } },
        { "d_shared_w2", "<f4", d->d_shared_w2, 2, { SF, D } },
    };
    char path[4200];
    size_t nt = sizeof t / sizeof *t - (c->shared > 0 ? 0 : 6); /* the shared experts' files only when there are some */
    for (size_t i = 0; i < nt; i++) {
        if (!t[i].data) return epb_fail(err, EPB_EUSAGE, "--dump %s: tensor %s missing", dir, t[i].name);
        snprintf(path, sizeof path, "%s/%s.npy", dir, t[i].name);
        int rc = moe_npy_write(path, t[i].data, t[i].descr, t[i].ndim, t[i].shape, err);
        if (rc) return rc;
    }
    char json[2048];
    int n = snprintf(json, sizeof json,
                     "{\n  \"strategy\": \"%s\",\n  \"ranks\": %d,\n  \"tokens\": %ld,\n  \"hidden\": %ld,\n"
                     "  \"ffn\": %ld,\n  \"experts\": %d,\n  \"top_k\": %d,\n  \"router\": \"%s\",\n"
                     "  \"skew\": %.17g,\n  \"route_norm\": %s,\n  \"bias_coeff\": %.17g,\n  \"seed\": %llu,\n"
                     "  \"dtype\": \"%s\",\n  \"route_scale\": %.17g,\n  \"groups\": %d,\n  \"topk_groups\": %d,\n"
                     "  \"gate_before\": %s,\n  \"shared\": %d,\n  \"shared_ffn\": %ld,\n  \"dispatch_dtype\": \"%s\",\n"
                     "  \"capacity_factor\": %.17g,\n  \"drop_policy\": \"%s\",\n  \"capacity\": %ld,\n"
                     "  \"pad_to_capacity\": %s,\n  \"redundant\": %d\n}\n",
                     d->strategy, d->ranks, c->T, c->D, c->F, c->E, c->k, moe_router_name(c->router), c->skew,
                     c->route_norm ? "true" : "false", c->bias_coeff, (unsigned long long)c->seed,
                     moe_dtype_name(c->dtype), c->route_scale, c->groups, c->topk_groups,
                     c->gate_before ? "true" : "false", c->shared, c->Fs, c->dispatch_fp8 ? "fp8" : "act",
                     c->capacity_factor, moe_drop_name(c->drop_policy), moe_capacity(c),
                     c->pad_to_capacity ? "true" : "false", c->redundant);
    snprintf(path, sizeof path, "%s/config.json", dir);
    return write_atomic(path, json, (size_t)n, NULL, 0, err);
}
