/* Self-launch: `./bench ... --ranks N` started by hand re-executes itself under mpirun with N local ranks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"

static int count_cores(void)
{
    /* physical cores, as mpirun counts slots; sysconf gives hardware threads */
    bench_topo_t t;
    epb_err_t e;
    if (bench_topo_init(&t, BIND_NONE, 0, 1, -1, &e) == EPB_OK && t.cores > 0) return t.cores;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int bench_self_launch(const bench_opts_t *o, int argc, char **argv, epb_err_t *err)
{
    if (epb_under_launcher() || o->ranks <= 1) return EPB_OK;
    if (!epb_have_mpi())
        return epb_fail(err, EPB_EUSAGE, "--ranks %d: this build has no MPI (built in: %s); use --ranks 1", o->ranks,
                        epb_comm_backends());
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return epb_fail(err, EPB_ESYS, "cannot find this program's path (/proc/self/exe): %s", strerror(errno));
    exe[n] = 0;
    const char *mpirun = getenv("EPB_MPIRUN");
    if (!mpirun || !*mpirun) mpirun = EPB_MPIRUN;

    int cores = count_cores();
    /* a typo (--ranks 1048576) must not fork a million local processes: beyond 16 per core on this host, only an
     * explicit --oversubscribe or a hostfile (ranks elsewhere) says it is meant */
    if (!o->hostfile[0] && !o->oversubscribe && o->ranks > 16 * cores)
        return epb_fail(err, EPB_EUSAGE, "--ranks %d: more than 16 ranks per core on this host (%d cores); give "
                        "--hostfile FILE to place them on other hosts, or --oversubscribe if you mean it", o->ranks, cores);
    if (o->hostfile[0] && access(o->hostfile, R_OK))
        return epb_fail(err, EPB_EUSAGE, "--hostfile %s: %s", o->hostfile, strerror(errno));
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
    for (int i = 0; i < a; i++) fprintf(stderr, " %s", args[i]);
    fprintf(stderr, "\n");
    fflush(stderr);
    execvp(mpirun, args);
    int e = errno;
    free(args);
    return epb_fail(err, EPB_ESYS, "cannot run %s: %s (install openmpi-bin, set EPB_MPIRUN, or use --ranks 1)",
                    mpirun, strerror(e));
}
