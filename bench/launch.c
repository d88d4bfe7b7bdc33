/* Self-launch: `./bench ... --ranks N` started by hand runs itself under mpirun with N local ranks, waits for
 * the job and turns its outcome into bench's exit code (DESIGN.md "Contracts"): a rank's 1, 2 or 3 stays; a rank
 * killed by a signal or dead without a word, mpirun failing, or the job interrupted is 3, with one line naming the
 * rank and, from the node's heartbeat table (watchdog.c), its last phase and collective. mpirun's stderr passes
 * through this process, which keeps everything but the banners it replaces with that line. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"

int bench_core_count(void)
{
    /* physical cores, as mpirun counts slots; sysconf gives hardware threads */
    bench_topo_t t;
    epb_err_t e;
    if (bench_topo_init(&t, BIND_NONE, 0, 1, -1, &e) == EPB_OK && t.cores > 0) return t.cores;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}


/* ---- mpirun's stderr ---- */

/* What mpirun's banners said (Open MPI 4.1: blocks between lines of dashes), each -1 when it did not say. */
typedef struct {
    int signal_rank, signal; /* "mpirun noticed that process rank R ... exited on signal S" */
    char signal_name[48];
    int improper_rank;       /* "mpirun has exited due to process rank R ... exiting improperly" */
    int init_failed;         /* a rank's MPI_Init failed ("An error occurred in MPI_Init") */
} banners_t;

typedef struct {
    char line[4096];
    size_t len;
    int in_block;
    char block[16384]; /* a banner held until its closing line decides whether it is shown */
    size_t blen;
    char last[2048];   /* a rank's line that ends the job ("bench: ... (exit 3)"), shown after everything else */
    size_t llen;
    banners_t b;
} filter_t;

static void put(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

static int dashes(const char *l)
{
    size_t n = strspn(l, "-");
    return n >= 20 && (l[n] == 0 || l[n] == '\n');
}

/* A banner bench replaces with its own line (or leaves to the rank's own): read what it says, and drop it. Any
 * other is shown. */
static int known_banner(filter_t *f, const char *t)
{
    banners_t *b = &f->b;
    const char *p;
    if (strstr(t, "Primary job") && strstr(t, "terminated normally")) return 1;
    if ((p = strstr(t, "mpirun noticed that process rank "))) {
        int r, sig;
        if (sscanf(p, "mpirun noticed that process rank %d with PID %*d on node %*s exited on signal %d", &r,
                   &sig) == 2 && b->signal_rank < 0) {
            b->signal_rank = r, b->signal = sig;
            const char *open = strchr(p, '('), *close = open ? strchr(open, ')') : NULL;
            if (open && close && close - open - 1 < (long)sizeof b->signal_name)
                snprintf(b->signal_name, sizeof b->signal_name, "%.*s", (int)(close - open - 1), open + 1);
        }
        return 1;
    }
    if ((p = strstr(t, "mpirun has exited due to process rank "))) {
        int r;
        if (sscanf(p, "mpirun has exited due to process rank %d", &r) == 1 && b->improper_rank < 0)
            b->improper_rank = r;
        return 1;
    }
    /* a rank's exit 1, 2 or 3 (mpirun's exit code says which) and MPI_Abort: the rank has said why */
    if (strstr(t, "exited with non-zero status") && strstr(t, "Exit code:")) return 1;
    if (strstr(t, "MPI_ABORT was invoked on rank ")) return 1;
    return 0;
}

static int ends_job(const char *l, size_t n)
{
    static const char tail[] = "(exit 3)\n";
    return !strncmp(l, "bench: ", 7) && n >= sizeof tail - 1 && !strcmp(l + n - (sizeof tail - 1), tail);
}

static void filter_line(filter_t *f, const char *l, size_t n)
{
    if (strstr(l, "An error occurred in MPI_Init")) f->b.init_failed = 1;
    /* the line that says why the job ends stays last, after what the other ranks print while they are ended */
    if (!f->in_block && ends_job(l, n) && f->llen + n < sizeof f->last) {
        memcpy(f->last + f->llen, l, n);
        f->llen += n;
        return;
    }
    if (!f->in_block) {
        if (dashes(l)) {
            f->in_block = 1;
            f->blen = 0;
        } else
            put(l, n);
        return;
    }
    if (dashes(l)) { /* the banner is complete */
        f->in_block = 0;
        f->block[f->blen] = 0;
        if (!known_banner(f, f->block)) {
            put(l, n);
            put(f->block, f->blen);
            put(l, n);
        }
        return;
    }
    if (f->blen + n + 1 < sizeof f->block) {
        memcpy(f->block + f->blen, l, n);
        f->blen += n;
    }
}

static void filter_feed(filter_t *f, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f->line[f->len++] = buf[i];
        if (buf[i] == '\n' || f->len == sizeof f->line - 1) {
            f->line[f->len] = 0;
            filter_line(f, f->line, f->len);
            f->len = 0;
        }
    }
    /* rank 0's progress line redraws itself ("\r...", no line end): shown as it comes, not held for a '\n' */
    if (!f->in_block && f->len && f->line[0] == '\r') {
        put(f->line, f->len);
        f->len = 0;
    }
}

/* at the end: a partial line, and a banner never closed, shown as they are */
static void filter_end(filter_t *f)
{
    if (f->in_block) {
        put("--------------------------------------------------------------------------\n", 75);
        put(f->block, f->blen);
    }
    if (f->len) put(f->line, f->len);
    put(f->last, f->llen);
}

/* ---- the outcome ---- */

/* "; its last collective: alltoallv on the data communicator in phase dispatch (inside it)" from the heartbeat
 * table (the phase open when the call was entered), or what is not known */
static void where_of(const bench_hb_rank_t *hb, int n, int rank, char *buf, size_t len, int *pid)
{
    *pid = 0;
    for (int i = 0; i < n; i++) {
        if (hb[i].rank != rank) continue;
        *pid = hb[i].pid;
        if (!hb[i].coll[0]) snprintf(buf, len, "; it had made no collective call");
        else
            snprintf(buf, len, "; its last collective: %s on %s%s%s (%s)", hb[i].coll, hb[i].comm,
                     hb[i].phase[0] ? " in phase " : "", hb[i].phase, hb[i].inside ? "inside it" : "left");
        return;
    }
    snprintf(buf, len, "; where it was is not visible from this host");
}

static int rank_lost(epb_err_t *err, const bench_hb_rank_t *hb, int n, int rank, const char *how)
{
    char where[256], pid[32] = "";
    int p;
    where_of(hb, n, rank, where, sizeof where, &p);
    if (p) snprintf(pid, sizeof pid, " (pid %d)", p);
    return epb_fail(err, EPB_ESYS, "rank %d%s died (%s)%s; the job was ended (exit 3)", rank, pid, how, where);
}

/* The job's exit code from mpirun's status, its banners and the table; err gets bench's line when bench has one
 * to add (the ranks have said the rest). */
static int outcome(int status, const banners_t *b, int interrupted, const bench_hb_rank_t *hb, int n,
                   int table_expected, epb_err_t *err)
{
    char how[96];
    if (interrupted)
        return epb_fail(err, EPB_ESYS, "interrupted (%s): mpirun ended the job (exit 3)", strsignal(interrupted));
    if (b->signal_rank >= 0) {
        snprintf(how, sizeof how, "killed by signal %d%s%s", b->signal, b->signal_name[0] ? ", " : "", b->signal_name);
        return rank_lost(err, hb, n, b->signal_rank, how);
    }
    if (b->improper_rank >= 0)
        return rank_lost(err, hb, n, b->improper_rank, "ended without a word: no message, no MPI_Finalize");
    if (WIFSIGNALED(status))
        return epb_fail(err, EPB_ESYS, "mpirun was killed by signal %d (%s); the job was ended (exit 3)",
                        WTERMSIG(status), strsignal(WTERMSIG(status)));
    int code = WEXITSTATUS(status), sig = code > 128 && code <= 128 + SIGRTMAX ? code - 128 : 0; /* 128 + signal */
    if (b->init_failed && code != 0)
        return epb_fail(err, EPB_ESYS, "MPI could not start on a rank (MPI_Init failed, above); the job was ended "
                        "(exit 3)");
    /* a rank fails a check (1) only after it has registered in the table; before, it is MPI or mpirun failing */
    if (code == EPB_ECHECK && n == 0 && table_expected)
        return epb_fail(err, EPB_ESYS, "the job failed before any rank started (mpirun exit 1, above; exit 3)");
    if (code <= EPB_ESYS) return code; /* 0, or a rank's own 1, 2, 3 with its message */
    /* a rank died and mpirun said nothing bench understood: the table's ranks that never said they ended */
    for (int i = 0; i < n; i++)
        if (!hb[i].ended && !hb[i].alive) {
            if (sig) snprintf(how, sizeof how, "signal %d or exit without a word; mpirun exit %d", sig, code);
            else snprintf(how, sizeof how, "signal or exit without a word; mpirun exit %d", code);
            return rank_lost(err, hb, n, hb[i].rank, how);
        }
    if (sig)
        return epb_fail(err, EPB_ESYS, "a rank died (signal %d: mpirun exit %d); the job was ended (exit 3)", sig,
                        code);
    return epb_fail(err, EPB_ESYS, "mpirun failed (exit %d): the job did not run to its end (exit 3)", code);
}

/* ---- launching ---- */

/* Runs args under a child process, its stderr through the filter, until it exits: SIGINT and SIGTERM sent to this
 * process are passed on to it (a terminal's Ctrl-C reaches it directly). Returns EPB_OK with its wait status, or
 * EPB_ESYS when it could not be started. */
static int run_child(char **args, int *status, banners_t *b, int *interrupted, epb_err_t *err)
{
    int errp[2], execp[2];
    if (pipe2(errp, O_CLOEXEC)) return epb_fail(err, EPB_ESYS, "pipe: %s", strerror(errno));
    if (pipe2(execp, O_CLOEXEC)) {
        close(errp[0]), close(errp[1]);
        return epb_fail(err, EPB_ESYS, "pipe: %s", strerror(errno));
    }
    sigset_t fwd, old;
    sigemptyset(&fwd);
    sigaddset(&fwd, SIGINT);
    sigaddset(&fwd, SIGTERM);
    sigaddset(&fwd, SIGCHLD);
    sigprocmask(SIG_BLOCK, &fwd, &old);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        /* mpirun ends with this process: a launcher killed with SIGKILL must not leave its job running */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(EPB_ESYS);
        sigprocmask(SIG_SETMASK, &old, NULL);
        dup2(errp[1], 2);
        execvp(args[0], args);
        int e = errno;
        ssize_t w = write(execp[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    int e = errno;
    close(errp[1]);
    close(execp[1]);
    if (pid < 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        close(errp[0]), close(execp[0]);
        return epb_fail(err, EPB_ESYS, "cannot start %s: %s", args[0], strerror(e));
    }
    int exec_errno = 0;
    ssize_t got = read(execp[0], &exec_errno, sizeof exec_errno); /* EOF (0) once the exec succeeded */
    close(execp[0]);
    int sfd = signalfd(-1, &fwd, SFD_CLOEXEC); /* without one, mpirun's end is polled for */
    filter_t f;
    memset(&f, 0, sizeof f);
    f.b = (banners_t){ -1, -1, "", -1, 0 };
    int exited = 0, open_pipe = 1;
    *interrupted = 0;
    /* until mpirun has exited and its stderr is read: once it has exited, a process that inherited the pipe and
     * lives on keeps the launcher waiting half a second at most */
    while (!exited || open_pipe) {
        struct pollfd p[2];
        int np = 0, pi = -1, si = -1;
        if (open_pipe) pi = np, p[np++] = (struct pollfd){ errp[0], POLLIN, 0 };
        if (sfd >= 0 && !exited) si = np, p[np++] = (struct pollfd){ sfd, POLLIN, 0 };
        int r = poll(p, (nfds_t)np, exited ? 500 : (sfd >= 0 ? -1 : 200));
        if (r < 0 && errno != EINTR) break;
        if (r == 0 && exited) break;
        if (r > 0 && pi >= 0 && p[pi].revents) {
            char buf[4096];
            ssize_t n = read(errp[0], buf, sizeof buf);
            if (n > 0) filter_feed(&f, buf, (size_t)n);
            else if (n == 0 || errno != EINTR) open_pipe = 0;
        }
        if (r > 0 && si >= 0 && (p[si].revents & POLLIN)) {
            struct signalfd_siginfo info;
            if (read(sfd, &info, sizeof info) == sizeof info && info.ssi_signo != SIGCHLD) {
                /* from a terminal (SI_KERNEL), mpirun got it too: passing it on would be its second Ctrl-C */
                if (info.ssi_code != SI_KERNEL) kill(pid, (int)info.ssi_signo);
                if (!*interrupted) *interrupted = (int)info.ssi_signo;
            }
        }
        if (!exited && waitpid(pid, status, WNOHANG) == pid) exited = 1;
    }
    if (!exited) waitpid(pid, status, 0);
    filter_end(&f);
    *b = f.b;
    if (sfd >= 0) close(sfd);
    close(errp[0]);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (got == (ssize_t)sizeof exec_errno)
        return epb_fail(err, EPB_ESYS, "cannot run %s: %s (install openmpi-bin, set EPB_MPIRUN, or use --ranks 1)",
                        args[0], strerror(exec_errno));
    return EPB_OK;
}

int bench_launch_check(const bench_opts_t *o, epb_err_t *err)
{
    if (epb_under_launcher() || o->ranks <= 1) return EPB_OK;
    if (!epb_have_mpi())
        return epb_fail(err, EPB_EUSAGE, "--ranks %d: this build has no MPI (built in: %s); use --ranks 1", o->ranks,
                        epb_comm_backends());
    int cores = bench_core_count();
    /* a typo (--ranks 1048576) must not fork a million local processes: beyond 16 per core on this host, only an
     * explicit --oversubscribe or a hostfile (ranks elsewhere) says it is meant */
    if (!o->hostfile[0] && !o->oversubscribe && o->ranks > 16 * cores)
        return epb_fail(err, EPB_EUSAGE, "--ranks %d: more than 16 ranks per core on this host (%d cores); give "
                        "--hostfile FILE to place them on other hosts, or --oversubscribe if you mean it", o->ranks, cores);
    if (o->hostfile[0] && access(o->hostfile, R_OK))
        return epb_fail(err, EPB_EUSAGE, "--hostfile %s: %s", o->hostfile, strerror(errno));
    return EPB_OK;
}

int bench_self_launch(const bench_opts_t *o, int argc, char **argv, int *launched, epb_err_t *err)
{
    *launched = 0;
    int rc = bench_launch_check(o, err);
    if (rc || epb_under_launcher() || o->ranks <= 1) return rc;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return epb_fail(err, EPB_ESYS, "cannot find this program's path (/proc/self/exe): %s", strerror(errno));
    exe[n] = 0;
    const char *mpirun = getenv("EPB_MPIRUN");
    if (!mpirun || !*mpirun) mpirun = EPB_MPIRUN;

    int cores = bench_core_count();
    if (o->ranks_given && !o->hostfile[0] && o->ranks > cores)
        fprintf(stderr, "bench: warning: --ranks %d on %d cores oversubscribes this host: ranks take turns on the "
                "cores, so the timings measure the scheduler as much as the code\n", o->ranks, cores);
    char np[16];
    snprintf(np, sizeof np, "%d", o->ranks);
    char **args = calloc((size_t)argc + 16, sizeof *args);
    if (!args) return epb_fail(err, EPB_ESYS, "out of memory");
    int a = 0;
    args[a++] = (char *)mpirun;
    args[a++] = "-np";
    args[a++] = np;
    if (o->hostfile[0]) {
        args[a++] = "--hostfile";
        args[a++] = (char *)o->hostfile;
    }
    if (epb_mpi_is_openmpi()) {
        if (o->oversubscribe || (!o->hostfile[0] && o->ranks > cores)) {
            /* ranks waiting in MPI must give the core to the rank computing beside them */
            args[a++] = "--oversubscribe";
            args[a++] = "--mca";
            args[a++] = "mpi_yield_when_idle";
            args[a++] = "1";
        }
        if (geteuid() == 0) args[a++] = "--allow-run-as-root";
        /* bench binds its ranks itself (--bind), so mpirun must not */
        args[a++] = "--bind-to";
        args[a++] = "none";
    }
    args[a++] = exe;
    for (int i = 1; i < argc; i++) args[a++] = argv[i];
    args[a] = NULL;

    fprintf(stderr, "bench: launching:");
    for (int i = 0; i < a; i++) { /* one line, whatever an argument holds */
        char shown[4 * PATH_MAX];
        fprintf(stderr, " %s", epb_printable(args[i], shown, sizeof shown));
    }
    fprintf(stderr, "\n");
    fflush(stderr);
    /* rank 0's stderr is mpirun's pipe: it redraws its progress line when this process's stderr is a terminal */
    if (isatty(STDERR_FILENO)) setenv(BENCH_PROGRESS_TTY_ENV, "1", 1);
    /* the ranks name the node's heartbeat table after this process, so that it is found after the job */
    char key[160];
    bench_hb_launcher_key(key, sizeof key);
    setenv(BENCH_LAUNCHER_ENV, key, 1);
    *launched = 1;
    int status = 0, interrupted = 0;
    banners_t b;
    rc = run_child(args, &status, &b, &interrupted, err);
    free(args);
    bench_hb_rank_t hb[256];
    int nhb = bench_hb_take(key, hb, 256);
    if (rc) return rc;
    /* ranks on this host register in a table here, when they can create one */
    int table_expected = !o->hostfile[0] && bench_hb_possible();
    return outcome(status, &b, interrupted, hb, nhb, table_expected, err);
}

int bench_mpi_startable(epb_err_t *err)
{
    /* Open MPI started without a launcher it knows becomes a singleton, and a singleton inside a Slurm allocation
     * (SLURM_NODELIST) dies in MPI_Init with exit 1 and a page of text: plain srun, without --mpi=pmix, gives it
     * no PMIx. Said here, in one line, before MPI_Init. */
    if (!epb_mpi_is_openmpi() || !getenv("SLURM_NODELIST")) return EPB_OK;
    static const char *pmi[] = { "PMIX_RANK", "PMIX_NAMESPACE", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_SIZE" };
    for (size_t i = 0; i < sizeof pmi / sizeof *pmi; i++)
        if (getenv(pmi[i])) return EPB_OK;
    return epb_fail(err, EPB_ESYS, "MPI cannot start: srun started this process without PMIx (SLURM_NODELIST is set, "
                    "no PMIX_* variable), and Open MPI's MPI_Init fails then; under Slurm use srun --mpi=pmix");
}

/* the hint for an MPI_Init that failed: under Slurm without PMIx */
const char *bench_mpi_hint(void)
{
    extern char **environ;
    int slurm = 0, pmix = 0;
    for (char **e = environ; *e; e++) {
        slurm |= !strncmp(*e, "SLURM_", 6);
        pmix |= !strncmp(*e, "PMIX_", 5);
    }
    return slurm && !pmix ? "; under Slurm use srun --mpi=pmix" : "";
}
