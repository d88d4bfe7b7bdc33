/* The watchdog of collective calls and the per-node heartbeat table (DESIGN.md "Contracts": a collective past
 * --timeout ends the job with 3, naming the rank and phase).
 *
 * Every rank has a slot in a table shared by the ranks of its node (a file in /dev/shm, one per job and node). The
 * counting wrappers around the data and control communicators write into it at every call's entry and exit: the
 * collective, the MoE phase open at entry, and a per-communicator counter that is odd while the rank is inside a
 * call. That is two stores on the measured path and no clock read. A thread per rank samples its own slot a few
 * times a second; a call whose counter has not moved for --timeout seconds ends the job: one line on stderr (this
 * rank, the phase or mode, the collective, how long, and which ranks of this node have not arrived at it, from
 * their slots), then _exit(3). The thread makes no MPI call (the ranks run MPI_THREAD_FUNNELED) and touches
 * nothing the main thread holds: it formats into its own buffer and write()s it. mpirun, seeing a rank exit 3,
 * ends the others and itself exits 3.
 *
 * The table also tells a self-launching bench (launch.c) which rank died and where: the launcher reads it after
 * mpirun has returned, then removes it. Files of jobs whose processes are all gone are removed when the next job
 * starts on the node (bench_watchdog_start), so none accumulate. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "moe.h"

/* the tables' folder: /dev/shm, or $EPB_HEARTBEAT_DIR (the same on every node of the job: mpirun -x) */
static const char *hb_dir(void)
{
    const char *d = getenv("EPB_HEARTBEAT_DIR");
    return d && *d ? d : "/dev/shm";
}
#define HB_PREFIX "epb-hb."
#define HB_MAGIC 0x48425045u /* "EPBH" */
#define HB_VERSION 1
#define HB_YOUNG_S 60 /* a table nobody has registered in yet may be a job starting: kept this long */

enum { HB_FREE, HB_RUNNING, HB_DONE, HB_FAILED };
/* the counters of a slot: the data and control communicators' (whose calls every rank makes, in the same order, so
 * that their counts compare across ranks), and that of any split of them (a sub-group's calls: no comparison) */
enum { SEQ_SPLIT = BENCH_WD_NCHAN, NSEQ };

/* One rank's slot, a cache line of its own: ranks write theirs at every call, and neighbours must not share a
 * line. Written by its rank's main thread only; read by its watchdog, the node's other ranks and the launcher. */
typedef struct {
    int32_t pid;    /* 0: free */
    int32_t rank;   /* in the job */
    int32_t state;  /* HB_* */
    uint32_t where; /* the last call entered: phase + 1 (bits 0-11), collective (12-17), the collective entered
                     * before a wait (18-23), counter (24-31) */
    uint64_t seq[NSEQ]; /* 2 x the calls entered, + 1 while inside one (odd: in a call) */
} __attribute__((aligned(64))) hb_slot_t;

typedef struct {
    uint32_t magic, version;
    int32_t nslots;       /* the node's ranks */
    int32_t reporter;     /* 0, or 1 + the rank that reports a timeout (the first one; the others stay quiet) */
    int32_t launcher_pid; /* the self-launching bench when it runs on this node (kept while it lives), else 0 */
    hb_slot_t slot[];
} __attribute__((aligned(64))) hb_table_t;

/* the collectives' names as the counting wrapper gives them, and the watchdog's own calls */
static const char *const coll_names[] = { "a call", "allgather", "reduce_scatter", "alltoall", "alltoallv",
                                          "allreduce", "bcast", "barrier", "wait", "sync", "set-up", "finalize",
                                          "split" };
#define NCOLL ((int)(sizeof coll_names / sizeof *coll_names))
enum { COLL_WAIT = 8 }; /* coll_names[COLL_WAIT]: the wait of a started collective */
static const char *const seq_names[NSEQ] = { "the data communicator", "the control communicator",
                                             "a split communicator" };

typedef struct {
    bench_watchdog_t *wd;
    int idx;          /* BENCH_WD_DATA or BENCH_WD_CTL (SEQ_SPLIT for calls on its splits) */
    const char *name; /* the last collective entered, and its index: the wrapper passes string literals, so a */
    uint32_t id;      /* pointer compare finds a repeated one */
    uint32_t before;  /* the last one entered that is not a wait: what a wait most likely completes */
} wd_chan_t;

struct bench_watchdog {
    double timeout_s; /* 0: no thread */
    int rank, size, local_rank, local_size;
    hb_table_t *tab;  /* the node's table, or NULL (then `own` is this rank's slot alone) */
    size_t tab_bytes;
    hb_slot_t own;
    hb_slot_t *me;
    char path[256];
    char why_none[512]; /* why there is no table */
    int leave_for_launcher; /* a launcher on this node reads the table after the job */
    const volatile int *phase; /* the run's open phase (moe_meter_t.open), or &no_phase */
    int no_phase;
    char mode[160];     /* "--coll alltoall 1M", "--strategy tp2ep E=16 k=2 T=256" */
    volatile int hold;  /* 1: the calls now waited in wait for one rank's long solo work (the check) */
    wd_chan_t chan[BENCH_WD_NCHAN];
    pthread_t thread;
    int running, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* ---- names ---- */

static void short_host(char *buf, size_t n)
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1)) snprintf(h, sizeof h, "localhost");
    h[strcspn(h, ".")] = 0;
    for (char *c = h; *c; c++)
        if (*c == '/' || *c == ' ') *c = '_';
    snprintf(buf, n, "%s", h);
}

void bench_hb_launcher_key(char *buf, size_t n)
{
    char h[64];
    short_host(h, sizeof h);
    snprintf(buf, n, "%s-%ld", h, (long)getpid());
}

/* <hb_dir>/epb-hb.<this host>.<uid>.<job key>: the key is the launcher's "host-pid" (or rank 0's), so two jobs
 * never share a name while their keys' processes live; the host and uid let the cleanup look at this node's and
 * this user's files only (a container sharing /dev/shm under another host name is left alone) */
static void table_path(const char *key, char *buf, size_t n)
{
    char h[128];
    short_host(h, sizeof h);
    snprintf(buf, n, "%s/" HB_PREFIX "%s.%ld.%s", hb_dir(), h, (long)getuid(), key);
}

static int coll_id(const char *coll)
{
    for (int i = 1; i < NCOLL; i++)
        if (!strcmp(coll, coll_names[i])) return i;
    return 0;
}

static const char *phase_name(int phase)
{
    return phase >= 0 && phase < MOE_NPHASES ? moe_phase_names[phase] : NULL;
}

/* the process's state from /proc: "stopped", "running"..., "dead" (a zombie), or "gone" */
static const char *proc_state(int pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return "gone";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return "gone";
    buf[n] = 0;
    const char *c = strrchr(buf, ')'); /* the command name may hold anything; the state follows its ')' */
    switch (c && c[1] == ' ' ? c[2] : '?') {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "in uninterruptible I/O";
    case 'T': return "stopped";
    case 't': return "stopped by a debugger";
    case 'Z': return "dead";
    default: return "state unknown";
    }
}

/* whether pid is a process that has not ended (a zombie has: its parent has not collected it yet) */
static int alive(int pid)
{
    if (pid <= 0 || (kill(pid, 0) && errno != EPERM)) return 0;
    const char *st = proc_state(pid);
    return strcmp(st, "dead") && strcmp(st, "gone");
}

/* ---- stale tables ---- */

/* Whether a table's job is over: every process it names is gone. A table nobody has registered in yet is a job
 * starting, unless it is older than HB_YOUNG_S. */
static int table_dead(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0) return 0;
    struct stat st;
    int dead = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == getuid()) {
        if ((size_t)st.st_size < sizeof(hb_table_t)) {
            dead = time(NULL) - st.st_mtime > HB_YOUNG_S; /* never set up */
        } else {
            hb_table_t *t = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
            if (t != MAP_FAILED) {
                int registered = 0, living = alive(t->launcher_pid);
                int n = t->magic == HB_MAGIC ? t->nslots : 0;
                if ((size_t)n > ((size_t)st.st_size - sizeof *t) / sizeof(hb_slot_t)) n = 0;
                for (int i = 0; i < n; i++) {
                    int pid = __atomic_load_n(&t->slot[i].pid, __ATOMIC_ACQUIRE);
                    registered += pid != 0;
                    living += alive(pid);
                }
                dead = !living && (registered || time(NULL) - st.st_mtime > HB_YOUNG_S);
                munmap(t, (size_t)st.st_size);
            }
        }
    }
    close(fd);
    return dead;
}

/* Removes this host's and this user's tables whose jobs are over; returns how many. */
static int clean_stale(void)
{
    char h[128], prefix[192];
    short_host(h, sizeof h);
    snprintf(prefix, sizeof prefix, HB_PREFIX "%s.%ld.", h, (long)getuid());
    DIR *d = opendir(hb_dir());
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix))) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", hb_dir(), e->d_name);
        if (table_dead(path) && unlink(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

/* ---- the hooks (the measured path: two compares, two stores) ---- */

/* the counter of a call on c: a split (a sub-group, smaller than the job) counts apart */
static int seq_of(const wd_chan_t *ch, const epb_comm_t *c)
{
    return c && c->size != ch->wd->size ? SEQ_SPLIT : ch->idx;
}

static int wd_enter(void *ctx, epb_comm_t *c, const char *coll, double bytes)
{
    (void)bytes;
    wd_chan_t *ch = ctx;
    if (coll != ch->name) {
        ch->name = coll;
        ch->id = (uint32_t)coll_id(coll);
    }
    if (ch->id != COLL_WAIT) ch->before = ch->id;
    hb_slot_t *s = ch->wd->me;
    int q = seq_of(ch, c);
    uint32_t where = ((uint32_t)(*ch->wd->phase + 1) & 0xfffu) | ch->id << 12 | ch->before << 18 | (uint32_t)q << 24;
    __atomic_store_n(&s->where, where, __ATOMIC_RELAXED);
    __atomic_store_n(&s->seq[q], s->seq[q] + 1, __ATOMIC_RELEASE);
    return EPB_OK;
}

static void wd_leave(void *ctx, epb_comm_t *c, const char *coll)
{
    (void)coll;
    wd_chan_t *ch = ctx;
    hb_slot_t *s = ch->wd->me;
    int q = seq_of(ch, c);
    __atomic_store_n(&s->seq[q], s->seq[q] + 1, __ATOMIC_RELEASE);
}

void bench_watchdog_call(bench_watchdog_t *wd, int chan, const char *what, int entering)
{
    if (!wd) return;
    if (entering) wd_enter(&wd->chan[chan], NULL, what, 0);
    else wd_leave(&wd->chan[chan], NULL, what);
}

/* ---- the report ---- */

/* a where word's counter (0 for a damaged one), phase (-1: none) and collective (0: none) */
static int seq_in(uint32_t where)
{
    int q = (int)(where >> 24 & 0xffu);
    return q < NSEQ ? q : 0;
}

static int phase_in(uint32_t where) { return (int)(where & 0xfffu) - 1; }

static int coll_in(uint32_t where)
{
    int c = (int)(where >> 12 & 0x3fu);
    return c < NCOLL ? c : 0;
}

/* "alltoallv", or "wait (after alltoallv)" for the wait of a started call ("" for none) */
static void coll_text(uint32_t where, char *buf, size_t n)
{
    int c = coll_in(where), before = (int)(where >> 18 & 0x3fu);
    if (c == COLL_WAIT && before > 0 && before < NCOLL) snprintf(buf, n, "wait (after %s)", coll_names[before]);
    else snprintf(buf, n, "%s", c > 0 ? coll_names[c] : "");
}

/* "alltoallv on the data communicator in phase dispatch" from a slot's where word (the phase open when the call
 * was entered) */
static void describe_where(uint32_t where, char *buf, size_t n)
{
    const char *ph = phase_name(phase_in(where));
    char coll[48];
    coll_text(where, coll, sizeof coll);
    if (!coll[0]) snprintf(buf, n, "no call yet");
    else snprintf(buf, n, "%s on %s%s%s", coll, seq_names[seq_in(where)], ph ? " in phase " : "", ph ? ph : "");
}

typedef struct {
    char *buf;
    size_t cap, len;
} line_t;

static void add(line_t *l, const char *fmt, ...)
{
    if (l->len + 1 >= l->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(l->buf + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    if (w > 0) l->len += (size_t)w < l->cap - l->len ? (size_t)w : l->cap - l->len - 1;
}

/* The ranks of this node this rank is waiting for in its call on counter ch: those that have not arrived (entered
 * fewer calls there: ranks make the same calls on the data or control communicator, in the same order; on a split
 * the counts do not compare) and those that have but are stopped or gone, so cannot take part. Ranks that have
 * arrived and run are waiting too, and not named. */
static void waiting_for(const bench_watchdog_t *wd, int ch, line_t *l)
{
    uint64_t mine = (__atomic_load_n(&wd->me->seq[ch], __ATOMIC_ACQUIRE) + 1) / 2;
    int named = 0, registered = 0;
    for (int i = 0; wd->tab && i < wd->tab->nslots; i++) {
        hb_slot_t *s = &wd->tab->slot[i];
        int pid = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);
        if (s == wd->me || !pid) continue;
        registered++;
        uint64_t theirs = (__atomic_load_n(&s->seq[ch], __ATOMIC_ACQUIRE) + 1) / 2;
        const char *st = proc_state(pid);
        int runs = strncmp(st, "stopped", 7) && strcmp(st, "dead") && strcmp(st, "gone");
        if ((theirs >= mine || ch == SEQ_SPLIT) && runs) continue;
        if (named++ == 6) add(l, ", ..."); /* one line, even on a node of many ranks */
        if (named > 6) continue;
        char where[128];
        uint32_t w = __atomic_load_n(&s->where, __ATOMIC_RELAXED);
        describe_where(w, where, sizeof where);
        int inside = (int)(__atomic_load_n(&s->seq[seq_in(w)], __ATOMIC_ACQUIRE) & 1);
        add(l, "%srank %d (pid %d, %s) ", named > 1 ? ", " : "waiting for ",
            __atomic_load_n(&s->rank, __ATOMIC_RELAXED), pid, st);
        if (ch == SEQ_SPLIT) /* whether it has arrived is not told */
            add(l, "which is %s (%s %s)", st, inside ? "waiting in" : "last left", where);
        else if (theirs < mine)
            add(l, "which has not arrived (%s %s; %llu call%s behind)", inside ? "waiting in" : "last left", where,
                (unsigned long long)(mine - theirs), mine - theirs > 1 ? "s" : "");
        else
            add(l, "which %s this call but is %s", theirs == mine && inside ? "is inside" : "has passed", st);
    }
    if (!wd->tab)
        add(l, "which ranks have not arrived is not known here (%s)", wd->why_none);
    else if (!named)
        add(l, "every other rank of this node %s", ch == SEQ_SPLIT ? "runs" : "has arrived and runs");
    int elsewhere = wd->size - (wd->tab ? registered + 1 : 1);
    if (elsewhere > 0)
        add(l, "; %d rank%s on other hosts %s not visible from here", elsewhere, elsewhere > 1 ? "s" : "",
            elsewhere > 1 ? "are" : "is");
}

/* Until the slot of rank `rank` on this node says HB_FAILED (its line written) or its process is gone: at most 2 s */
static void wait_reporter(const bench_watchdog_t *wd, int rank)
{
    for (int i = 0; i < wd->tab->nslots; i++) {
        hb_slot_t *s = &wd->tab->slot[i];
        int pid = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);
        if (s == wd->me || !pid || __atomic_load_n(&s->rank, __ATOMIC_RELAXED) != rank) continue;
        const struct timespec ms10 = { 0, 10000000 };
        for (int t = 0; t < 200 && __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != HB_FAILED; t++) {
            const char *st = proc_state(pid);
            if (!strcmp(st, "dead") || !strcmp(st, "gone")) return;
            nanosleep(&ms10, NULL);
        }
        return;
    }
}

static void fire(bench_watchdog_t *wd, int ch, double waited_s)
{
    int32_t none = 0;
    if (wd->tab && !__atomic_compare_exchange_n(&wd->tab->reporter, &none, wd->rank + 1, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_ACQUIRE)) {
        /* another rank of this node is saying it; one line is enough. Its line comes first: exiting now would
         * let mpirun end the job (and the reporter) before that line is written, so wait (at most 2 s) until the
         * reporter's slot says it has written it, or the reporter is gone. */
        wait_reporter(wd, none - 1);
        __atomic_store_n(&wd->me->state, HB_FAILED, __ATOMIC_RELEASE);
        _exit(EPB_ESYS);
    }
    char buf[2048];
    line_t l = { buf, sizeof buf, 0 };
    uint32_t w = __atomic_load_n(&wd->me->where, __ATOMIC_RELAXED);
    const char *phase = phase_name(phase_in(w));
    char coll[48];
    coll_text(w, coll, sizeof coll);
    add(&l, "bench: rank %d (pid %ld): %s on %s has not completed after %.1f s (--timeout %g) in ", wd->rank,
        (long)getpid(), coll[0] ? coll : "a call", seq_names[ch], waited_s, wd->timeout_s);
    if (phase) add(&l, "phase %s of %s", phase, wd->mode);
    else add(&l, "%s", wd->mode);
    add(&l, "; ");
    waiting_for(wd, ch, &l);
    add(&l, "; ending the job (exit 3)\n");
    if (l.len + 1 >= l.cap) memcpy(buf + sizeof buf - 2, "\n", 2);
    ssize_t rc = write(2, buf, strlen(buf));
    (void)rc;
    __atomic_store_n(&wd->me->state, HB_FAILED, __ATOMIC_RELEASE);
    if (wd->tab && !wd->leave_for_launcher) unlink(wd->path); /* nobody reads it after the job */
    _exit(EPB_ESYS);
}

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *wd_main(void *arg)
{
    bench_watchdog_t *wd = arg;
    prctl(PR_SET_NAME, "epb-watchdog"); /* what ps -L and /proc/PID/task/TID/comm show */
    /* a few samples per timeout, at most 4 a second: a call is caught within timeout + period */
    double period = wd->timeout_s / 10;
    if (period > 0.25) period = 0.25;
    if (period < 0.02) period = 0.02;
    uint64_t seen[NSEQ] = { 0 };
    double since[NSEQ] = { 0 };
    pthread_mutex_lock(&wd->mu);
    while (!wd->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        double t = (double)until.tv_nsec * 1e-9 + period;
        until.tv_sec += (time_t)t;
        until.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
        pthread_cond_timedwait(&wd->cv, &wd->mu, &until);
        if (wd->stop) break;
        double now = mono_s();
        for (int ch = 0; ch < NSEQ; ch++) {
            uint64_t s = __atomic_load_n(&wd->me->seq[ch], __ATOMIC_ACQUIRE);
            if (!(s & 1) || wd->hold || s != seen[ch]) { /* outside a call, excused, or a new call: its clock starts */
                seen[ch] = wd->hold ? 0 : s;
                since[ch] = now;
            } else if (now - since[ch] >= wd->timeout_s) {
                pthread_mutex_unlock(&wd->mu);
                fire(wd, ch, now - since[ch]);
            }
        }
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

/* ---- set-up and end ---- */

/* The node's table: local rank 0 creates it fresh (after removing stale ones), the others open it after a
 * barrier. Any failure leaves this rank with a private slot and the reason in why_none; the barrier is made
 * whatever happens, so no rank waits for another. */
static int open_table(bench_watchdog_t *wd, epb_comm_t *ctl, const char *key, epb_err_t *err)
{
    table_path(key, wd->path, sizeof wd->path);
    size_t bytes = sizeof(hb_table_t) + (size_t)wd->local_size * sizeof(hb_slot_t);
    int fd = -1;
    if (wd->local_rank == 0) {
        clean_stale();
        unlink(wd->path); /* a file of this name is a dead job's whose key was reused */
        fd = open(wd->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        if (fd >= 0 && ftruncate(fd, (off_t)bytes)) {
            close(fd);
            unlink(wd->path);
            fd = -1;
        }
        if (fd < 0) snprintf(wd->why_none, sizeof wd->why_none, "cannot create %s: %s", wd->path, strerror(errno));
    }
    if (wd->local_rank == 0 && fd >= 0) {
        hb_table_t *t = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (t != MAP_FAILED) {
            t->version = HB_VERSION;
            t->nslots = wd->local_size;
            t->launcher_pid = wd->leave_for_launcher ? atoi(strrchr(key, '-') + 1) : 0;
            __atomic_store_n(&t->magic, HB_MAGIC, __ATOMIC_RELEASE);
            wd->tab = t;
        } else {
            snprintf(wd->why_none, sizeof wd->why_none, "cannot map %s: %s", wd->path, strerror(errno));
            unlink(wd->path);
        }
    }
    if (epb_barrier(ctl)) return epb_fail(err, EPB_ESYS, "%s", ctl->err.msg);
    if (wd->local_rank != 0) {
        fd = open(wd->path, O_RDWR | O_NOFOLLOW);
        struct stat st;
        if (fd < 0) {
            snprintf(wd->why_none, sizeof wd->why_none, "no heartbeat table %s: %s", wd->path, strerror(errno));
        } else if (fstat(fd, &st) || (size_t)st.st_size != bytes) {
            snprintf(wd->why_none, sizeof wd->why_none, "heartbeat table %s has the wrong size", wd->path);
        } else {
            hb_table_t *t = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (t == MAP_FAILED)
                snprintf(wd->why_none, sizeof wd->why_none, "cannot map %s: %s", wd->path, strerror(errno));
            else if (__atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != HB_MAGIC || t->nslots != wd->local_size) {
                snprintf(wd->why_none, sizeof wd->why_none, "heartbeat table %s is not this job's", wd->path);
                munmap(t, bytes);
            } else
                wd->tab = t;
        }
    }
    if (fd >= 0) close(fd);
    wd->tab_bytes = bytes;
    return EPB_OK;
}

int bench_watchdog_start(bench_watchdog_t **out, double timeout_s, epb_comm_t *ctl, epb_err_t *err)
{
    *out = NULL;
    bench_watchdog_t *wd = aligned_alloc(64, (sizeof *wd + 63) / 64 * 64); /* its own slot is a cache line */
    if (!wd) return epb_fail(err, EPB_ESYS, "rank %d: out of memory", ctl->rank);
    memset(wd, 0, sizeof *wd);
    wd->timeout_s = timeout_s;
    wd->rank = ctl->rank, wd->size = ctl->size, wd->local_rank = ctl->local_rank, wd->local_size = ctl->local_size;
    wd->no_phase = -1;
    wd->phase = &wd->no_phase;
    wd->me = &wd->own;
    snprintf(wd->mode, sizeof wd->mode, "the set-up");
    for (int c = 0; c < BENCH_WD_NCHAN; c++) wd->chan[c] = (wd_chan_t){ .wd = wd, .idx = c };
    pthread_mutex_init(&wd->mu, NULL);
    pthread_condattr_t ca; /* its waits end at times of CLOCK_MONOTONIC, as wd_main computes them */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* the job's key, rank 0's: the launcher's when bench launched itself (it finds the table after the job) */
    char key[160] = "";
    if (ctl->rank == 0) {
        const char *l = getenv(BENCH_LAUNCHER_ENV);
        if (l && *l && strlen(l) < sizeof key && !strchr(l, '/') && strrchr(l, '-')) snprintf(key, sizeof key, "%s", l);
        else bench_hb_launcher_key(key, sizeof key);
    }
    int rc = epb_bcast(ctl, key, sizeof key, 0);
    if (rc) {
        free(wd);
        return epb_fail(err, rc, "%s", ctl->err.msg);
    }
    /* a launcher on this node (its key names this host) reads the table after the job: it is left to it */
    char h[128];
    short_host(h, sizeof h);
    size_t hl = strlen(h);
    const char *l = getenv(BENCH_LAUNCHER_ENV);
    wd->leave_for_launcher = l && !strcmp(l, key) && !strncmp(key, h, hl) && key[hl] == '-';
    if ((rc = open_table(wd, ctl, key, err))) {
        free(wd);
        return rc;
    }
    if (wd->tab) wd->me = &wd->tab->slot[wd->local_rank];
    wd->me->rank = wd->rank;
    wd->me->state = HB_RUNNING;
    __atomic_store_n(&wd->me->pid, (int32_t)getpid(), __ATOMIC_RELEASE);
    if (timeout_s > 0) {
        /* the thread takes no signal: SIGINT and SIGTERM stay the main thread's */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&wd->thread, NULL, wd_main, wd);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
            bench_watchdog_stop(wd);
            return epb_fail(err, EPB_ESYS, "rank %d: cannot start the --timeout watchdog thread: %s", ctl->rank,
                            strerror(e));
        }
        wd->running = 1;
    }
    *out = wd;
    return EPB_OK;
}

int bench_watchdog_wrap(bench_watchdog_t *wd, epb_comm_t *c, int chan, epb_comm_t **out, epb_err_t *err)
{
    epb_tally_t hooks = { wd_enter, wd_leave, &wd->chan[chan] };
    int rc = epb_comm_tally_create(c, 1, &hooks, out, err);
    /* a device communicator's collectives complete in sync (a host communicator's sync does nothing) */
    if (!rc && c->mem == EPB_MEM_DEVICE) rc = epb_comm_tally_sync_calls(*out);
    return rc;
}

void bench_watchdog_mode(bench_watchdog_t *wd, const char *fmt, ...)
{
    if (!wd) return;
    char m[sizeof wd->mode];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    /* the thread reads it only to report a call stuck for seconds, never while the main thread writes it here,
     * between calls */
    memcpy(wd->mode, m, sizeof m);
}

void bench_watchdog_phase(bench_watchdog_t *wd, const int *open_phase)
{
    if (wd) wd->phase = open_phase ? open_phase : &wd->no_phase;
}

void bench_watchdog_hold(bench_watchdog_t *wd, int on)
{
    if (wd) wd->hold = on;
}

void bench_watchdog_failed(bench_watchdog_t *wd)
{
    if (wd) __atomic_store_n(&wd->me->state, HB_FAILED, __ATOMIC_RELEASE);
}

void bench_watchdog_stop(bench_watchdog_t *wd)
{
    if (!wd) return;
    if (wd->running) {
        pthread_mutex_lock(&wd->mu);
        wd->stop = 1;
        pthread_cond_signal(&wd->cv);
        pthread_mutex_unlock(&wd->mu);
        pthread_join(wd->thread, NULL);
    }
    if (wd->me->state == HB_RUNNING) __atomic_store_n(&wd->me->state, HB_DONE, __ATOMIC_RELEASE);
    if (wd->tab) {
        /* the launcher on this node reads the table and removes it; else the node's last rank to end does (a rank
         * still running or dead without a word keeps it for the next job's cleanup) */
        int all_done = !wd->leave_for_launcher;
        for (int i = 0; i < wd->tab->nslots; i++)
            all_done &= __atomic_load_n(&wd->tab->slot[i].state, __ATOMIC_ACQUIRE) == HB_DONE;
        munmap(wd->tab, wd->tab_bytes);
        if (all_done) unlink(wd->path);
    }
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
}

/* ---- the launcher's side ---- */

int bench_hb_possible(void) { return access(hb_dir(), W_OK | X_OK) == 0; }

int bench_hb_take(const char *key, bench_hb_rank_t *out, int max)
{
    char path[256];
    table_path(key, path, sizeof path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW), n = 0;
    if (fd < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(hb_table_t)) {
        hb_table_t *t = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (t != MAP_FAILED) {
            int slots = t->magic == HB_MAGIC ? t->nslots : 0;
            if ((size_t)slots > ((size_t)st.st_size - sizeof *t) / sizeof(hb_slot_t)) slots = 0;
            for (int i = 0; i < slots && n < max; i++) {
                const hb_slot_t *s = &t->slot[i];
                if (!s->pid) continue;
                bench_hb_rank_t *r = &out[n++];
                r->rank = s->rank;
                r->pid = s->pid;
                r->ended = s->state == HB_DONE || s->state == HB_FAILED;
                r->alive = alive(s->pid);
                uint32_t w = s->where;
                const char *phase = phase_name(phase_in(w));
                snprintf(r->phase, sizeof r->phase, "%s", phase ? phase : "");
                coll_text(w, r->coll, sizeof r->coll);
                snprintf(r->comm, sizeof r->comm, "%s", seq_names[seq_in(w)]);
                r->inside = (int)(s->seq[seq_in(w)] & 1);
            }
            munmap(t, (size_t)st.st_size);
        }
    }
    close(fd);
    unlink(path);
    return n;
}
