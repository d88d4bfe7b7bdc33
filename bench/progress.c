/* Progress of a sweep on stderr (rank 0): on a terminal one line per configuration, redrawn as its iterations
 * run ("config 3/9 tp2ep k=2: iteration 12/20, ETA 1m40s"); otherwise one plain line as each configuration
 * starts. --quiet turns it off. Drawn between iterations, never inside a timed region, at most ten times a second. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define REDRAW_US 1e5

/* "1m40s", "2h05m", "12s" */
static void fmt_dur(double s, char *buf, size_t n)
{
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

void bench_progress_begin(bench_progress_t *p, int on, int n)
{
    memset(p, 0, sizeof *p);
    p->on = on;
    const char *e = getenv(BENCH_PROGRESS_TTY_ENV); /* under our own mpirun: the launcher's terminal */
    p->tty = on && (isatty(STDERR_FILENO) || (e && !strcmp(e, "1")));
    p->n = n;
    p->t0 = epb_now_us();
}

/* The remaining time from the pace so far: done configurations plus the fraction of this one. */
static void eta(const bench_progress_t *p, double frac, char *buf, size_t n)
{
    double done = p->i + frac, el = (epb_now_us() - p->t0) * 1e-6;
    if (done <= 0) snprintf(buf, n, "?");
    else fmt_dur(el / done * (p->n - done), buf, n);
}

void bench_progress_config(bench_progress_t *p, int i, const char *fmt, ...)
{
    if (!p->on) return;
    if (p->tty && p->drawn) fputc('\n', stderr); /* the previous configuration's line stays */
    p->i = i;
    p->drawn = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->what, sizeof p->what, fmt, ap);
    va_end(ap);
    char e[32], el[32];
    eta(p, 0, e, sizeof e);
    fmt_dur((epb_now_us() - p->t0) * 1e-6, el, sizeof el);
    if (p->tty) {
        fprintf(stderr, "\r\033[Kbench: config %d/%d %s: starting, ETA %s", i + 1, p->n, p->what, i ? e : "?");
        p->drawn = 1;
        p->last = epb_now_us();
    } else {
        fprintf(stderr, "bench: config %d/%d %s (elapsed %s, ETA %s)\n", i + 1, p->n, p->what, el, i ? e : "?");
    }
    fflush(stderr);
}

void bench_progress_iter(bench_progress_t *p, int it, int iters)
{
    if (!p->tty) return;
    double now = epb_now_us();
    if (it < iters && now - p->last < REDRAW_US) return;
    p->last = now;
    char e[32];
    eta(p, iters > 0 ? (double)it / iters : 0, e, sizeof e);
    fprintf(stderr, "\r\033[Kbench: config %d/%d %s: iteration %d/%d, ETA %s", p->i + 1, p->n, p->what, it, iters, e);
    fflush(stderr);
    p->drawn = 1;
}

void bench_progress_end(bench_progress_t *p)
{
    if (p->tty && p->drawn) fputc('\n', stderr);
    p->drawn = 0;
}
