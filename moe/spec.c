/* Strategies by name, with their parameters: `--strategy NAME:key=val,...` parsed once, validated against what the
 * registry entry declares, and written back in one canonical form. */
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

const moe_strategy_t *moe_strategy_find(const char *name)
{
    for (int i = 0; i < moe_nstrategies; i++)
        if (!strcmp(moe_strategies[i]->name, name)) return moe_strategies[i];
    return NULL;
}

const moe_strategy_t *moe_strategy_default(void)
{
    for (int i = 0; i < moe_nstrategies; i++)
        if (moe_strategies[i]->is_default) return moe_strategies[i];
    return moe_strategies[0];
}

const char *moe_strategy_names(char *buf, size_t n)
{
    size_t l = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < moe_nstrategies && l < n; i++)
        l += (size_t)snprintf(buf + l, n - l, "%s%s", i ? ", " : "", moe_strategies[i]->name);
    return buf;
}

static int param_index(const moe_strategy_t *st, const char *key, size_t klen)
{
    for (int i = 0; i < st->nparams; i++)
        if (strlen(st->params[i].key) == klen && !strncmp(st->params[i].key, key, klen)) return i;
    return -1;
}

int moe_spec_parse_in(const moe_strategy_t *const *tab, int ntab, const char *text, moe_spec_t *out, epb_err_t *err)
{
    memset(out, 0, sizeof *out);
    const char *colon = strchr(text, ':');
    size_t nlen = colon ? (size_t)(colon - text) : strlen(text);
    for (int i = 0; i < ntab && !out->st; i++)
        if (strlen(tab[i]->name) == nlen && !strncmp(tab[i]->name, text, nlen)) out->st = tab[i];
    if (!out->st) {
        char names[512];
        size_t l = 0;
        for (int i = 0; i < ntab && l < sizeof names; i++)
            l += (size_t)snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", tab[i]->name);
        return epb_fail(err, EPB_EUSAGE, "--strategy '%s': unknown strategy '%.*s' (accepted: %s, all)", text,
                        (int)nlen, text, ntab ? names : "none");
    }
    const moe_strategy_t *st = out->st;
    int given[MOE_MAX_PARAMS] = { 0 };
    for (int i = 0; i < st->nparams && i < MOE_MAX_PARAMS; i++) out->param[i] = st->params[i].def;
    if (!colon) return EPB_OK;
    const char *p = colon + 1;
    if (!*p) return epb_fail(err, EPB_EUSAGE, "--strategy '%s': nothing after ':' (expected key=value)", text);
    while (*p) {
        const char *end = strchr(p, ','), *eq = strchr(p, '=');
        if (!end) end = p + strlen(p);
        if (!eq || eq > end || eq == p)
            return epb_fail(err, EPB_EUSAGE, "--strategy '%s': '%.*s' is not key=value", text, (int)(end - p), p);
        int i = param_index(st, p, (size_t)(eq - p));
        if (i < 0) {
            char keys[256] = "";
            size_t l = 0;
            for (int j = 0; j < st->nparams && l < sizeof keys; j++)
                l += (size_t)snprintf(keys + l, sizeof keys - l, "%s%s", j ? ", " : "", st->params[j].key);
            return epb_fail(err, EPB_EUSAGE, "--strategy '%s': %s has no parameter '%.*s' (%s%s)", text, st->name,
                            (int)(eq - p), p, st->nparams ? "its parameters: " : "it takes none", keys);
        }
        const moe_param_t *pm = &st->params[i];
        if (given[i]) return epb_fail(err, EPB_EUSAGE, "--strategy '%s': %s given twice", text, pm->key);
        given[i] = 1;
        char val[32];
        size_t vl = (size_t)(end - eq - 1);
        long v;
        if (vl == 0 || vl >= sizeof val) v = pm->lo - 1;
        else {
            memcpy(val, eq + 1, vl);
            val[vl] = 0;
            if (epb_parse_int(val, pm->lo, pm->hi, &v)) v = pm->lo - 1;
        }
        if (v < pm->lo || v > pm->hi)
            return epb_fail(err, EPB_EUSAGE, "--strategy '%s': %s:%s='%.*s' must be an integer from %ld to %ld (%s)",
                            text, st->name, pm->key, (int)vl, eq + 1, pm->lo, pm->hi, pm->what);
        out->param[i] = v;
        p = *end ? end + 1 : end;
        if (*end && !*p) return epb_fail(err, EPB_EUSAGE, "--strategy '%s': empty item after ','", text);
    }
    return EPB_OK;
}

void moe_spec_format(const moe_spec_t *s, char *buf, size_t n)
{
    size_t l = (size_t)snprintf(buf, n, "%s", s->st->name);
    for (int i = 0; i < s->st->nparams && l < n; i++)
        l += (size_t)snprintf(buf + l, n - l, "%s%s=%ld", i ? "," : ":", s->st->params[i].key, s->param[i]);
}

void moe_spec_params(const moe_spec_t *s, char *buf, size_t n)
{
    size_t l = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < s->st->nparams && l < n; i++)
        l += (size_t)snprintf(buf + l, n - l, "%s%s=%ld", i ? ";" : "", s->st->params[i].key, s->param[i]);
}

long moe_spec_get(const moe_spec_t *s, const char *key)
{
    int i = param_index(s->st, key, strlen(key));
    return i < 0 ? 0 : s->param[i];
}
