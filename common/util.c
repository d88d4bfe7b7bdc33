#define _POSIX_C_SOURCE 200809L
#include "epb.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int epb_fail(epb_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

double epb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

void epb_utc_iso(char *buf, size_t n)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- parsing ---- */

int epb_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return -1;
    for (const char *p = s; *p; p++)
        if ((*p < '0' || *p > '9') && !(p == s && (*p == '-' || *p == '+'))) return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int epb_decimal_syntax(const char *s, int real)
{
    const char *p = s;
    if (*p == '-') p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (real && *p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return 0;
    if (real && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == 0;
}

int epb_parse_double(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s || !epb_decimal_syntax(s, 1)) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int epb_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1; /* no sign, no blank, no empty */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -1;
    uint64_t mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'm': case 'M': mult = 1ull << 20; end++; break;
    case 'g': case 'G': mult = 1ull << 30; end++; break;
    default: break;
    }
    if (mult > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    if (v == 0 || v > UINT64_MAX / mult) return -1;
    *out = (uint64_t)v * mult;
    return 0;
}

void epb_fmt_size(uint64_t b, char *buf, size_t n)
{
    if (b >= (1ull << 30) && b % (1ull << 30) == 0) snprintf(buf, n, "%lluG", (unsigned long long)(b >> 30));
    else if (b >= (1ull << 20) && b % (1ull << 20) == 0) snprintf(buf, n, "%lluM", (unsigned long long)(b >> 20));
    else if (b >= (1ull << 10) && b % (1ull << 10) == 0) snprintf(buf, n, "%lluK", (unsigned long long)(b >> 10));
    else snprintf(buf, n, "%llu", (unsigned long long)b);
}

/* ---- bandwidth ---- */

double epb_gbps(double bytes, double t_us)
{
    return t_us > 0 ? bytes / (t_us * 1e3) : 0.0; /* bytes / (t_us * 1e-6) / 1e9 */
}

/* ---- seeded values: splitmix64 finaliser over (seed, stream, index) ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t epb_hash64(uint64_t seed, uint64_t stream, uint64_t index)
{
    return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (stream * 0xd1b54a32d192ed03ull)) + index);
}

double epb_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    /* 53 random bits -> [0,1) -> [-1,1) */
    return (double)(epb_hash64(seed, stream, index) >> 11) * 0x1.0p-52 - 1.0;
}

int epb_small_int(uint64_t seed, uint64_t stream, uint64_t index, int range)
{
    return (int)(epb_hash64(seed, stream, index) % (uint64_t)(2 * range + 1)) - range;
}

/* ---- bfloat16 ---- */

epb_bf16 epb_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (epb_bf16)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (epb_bf16)(u >> 16);
}

float epb_bf16_to_f32(epb_bf16 h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
