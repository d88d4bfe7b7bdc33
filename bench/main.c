/* bench: options -> config (validated once on rank 0, broadcast) -> run -> rows -> CSV. Only main exits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"
#include "epb_git_rev.h"

#if EPB_HAVE_BLAS
#include "moe.h"
#endif

/* OpenBLAS chooses its kernels once, when it loads. When it picked AVX2 kernels on an AVX-512 CPU
 * (epb_blas_better_coretype), set OPENBLAS_CORETYPE and start this program again, before MPI or any BLAS call,
 * so that every rank (mpirun passes the environment on) runs the faster kernels. Setting OPENBLAS_CORETYPE
 * yourself, to any value, turns this off. */
static void blas_coretype_reexec(char **argv)
{
#if EPB_HAVE_BLAS
    const char *better = epb_blas_better_coretype();
    if (!better) return;
    const char *picked = getenv("EPB_TEST_BLAS_CORE");
    if (!picked) picked = epb_blas_corename();
    if (setenv("OPENBLAS_CORETYPE", better, 1)) return;
    if (!epb_under_launcher())
        fprintf(stderr, "bench: OpenBLAS picked its %s (AVX2) kernels on an AVX-512 CPU: running with "
                        "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to choose yourself)\n", picked, better);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    /* no re-exec: go on with the kernels already loaded, and say so */
    fprintf(stderr, "bench: could not restart with OPENBLAS_CORETYPE=%s (%s); keeping %s\n", better,
            strerror(errno), picked);
    unsetenv("OPENBLAS_CORETYPE");
#else
    (void)argv;
#endif
}

static void print_version(void)
{
    printf("epbench %s (git %s)\n", EPB_VERSION, EPB_GIT_REV);
    printf("communicators: %s", epb_comm_backends());
    if (epb_have_mpi()) printf(" (%s)", epb_mpi_library());
    printf("\nBLAS: ");
#if EPB_HAVE_BLAS
    char info[256];
    epb_blas_info(info, sizeof info);
    printf("%s\n", info);
#else
    printf("none\n");
#endif
    printf("topology: %s\n", bench_hwloc_version());
    if (EPB_CUDA_EMU) /* tests/cuda_emu: the kernels run on the CPU, for tests; nothing here is a GPU */
        printf("CUDA: EMULATED on the CPU (-Demulate_cuda=true, tests/cuda_emu: for tests only, no GPU is used)");
    else
        printf("CUDA: %s", EPB_HAVE_CUDA ? "built (kernels compiled)" : "not built");
    if (EPB_HAVE_CUDA) printf(", %d GPU(s) visible", epb_gpu_count());
    printf("\nNCCL: %s\n", EPB_HAVE_NCCL ? "built" : "not built");
}

/* Everything that can be checked before any rank runs: the same on the launcher and on rank 0. P is the rank
 * count the run will have. */
static int validate(bench_opts_t *o, int P, epb_err_t *err)
{
    int rc = EPB_OK;
    if (o->mode == MODE_COLL) {
        uint64_t sizes[64];
        int n;
        rc = bench_coll_plan(o, P, sizes, 64, &n, err);
    } else if (o->mode == MODE_MOE)
        rc = bench_moe_plan(o, P, err);
    if (rc) return rc;
    bench_hooks_t hooks; /* the test-only hooks' syntax, before any rank starts */
    if ((rc = bench_hooks_read(&hooks, o->mode, err))) return rc;
    return bench_validate_files(o, err);
}

/* A message as one line: a value it echoes (an option, a file name) has its control bytes shown, not sent. */
static const char *shown(const epb_err_t *err, char *buf, size_t n)
{
    return epb_printable(err->msg, buf, n);
}

static int fail(int rc, const epb_err_t *err)
{
    char s[4 * EPB_ERRLEN];
    fprintf(stderr, "bench: %s\n", shown(err, s, sizeof s));
    return rc;
}

/* a rank's failure: "bench: rank R: ..." once, whether or not the message already names the rank */
static void rank_fail(int rank, const epb_err_t *err)
{
    char s[4 * EPB_ERRLEN];
    if (!strncmp(err->msg, "rank ", 5)) fprintf(stderr, "bench: %s\n", shown(err, s, sizeof s));
    else fprintf(stderr, "bench: rank %d: %s\n", rank, shown(err, s, sizeof s));
    fflush(stderr);
}

int main(int argc, char **argv)
{
    blas_coretype_reexec(argv);
    bench_opts_t o;
    epb_err_t err = { { 0 } };
    int rc = bench_parse(argc, argv, &o, &err);
    if (!epb_under_launcher()) { /* started by hand: fail fast, then launch the ranks */
        if (rc) return fail(rc, &err);
        if (o.mode == MODE_HELP) { bench_usage(stdout); return EPB_OK; }
        if (o.mode == MODE_LIST) { bench_list(stdout, &o); return EPB_OK; }
        if (o.mode == MODE_VERSION) { print_version(); return EPB_OK; }
        /* the default 4 ranks on a smaller host would time the scheduler: as many ranks as cores (at least 2) */
        int cores = bench_core_count(), dflt = o.ranks;
        if (!o.ranks_given && o.ranks > 1 && !o.hostfile[0] && strcmp(o.comm, "self") && o.ranks > cores)
            o.ranks = cores < 2 ? 2 : cores;
        if ((rc = validate(&o, o.ranks, &err))) return fail(rc, &err); /* bad input: its one line only */
        if (o.dry_run) return (rc = bench_launch_check(&o, &err)) ? fail(rc, &err) : EPB_OK;
        if (o.ranks != dflt)
            fprintf(stderr, "bench: --ranks not given: running %d ranks, not the default %d, which would "
                    "oversubscribe this host's %d core%s (give --ranks N to choose)\n", o.ranks, dflt, cores,
                    cores == 1 ? "" : "s");
        int launched = 0;
        rc = bench_self_launch(&o, argc, argv, &launched, &err);
        if (launched) { /* the job's outcome, with bench's line last when it has one */
            if (err.msg[0]) fail(rc, &err);
            return rc;
        }
        if (rc) return fail(rc, &err);
    } else if ((rc = bench_mpi_startable(&err)))
        return fail(rc, &err);

    if ((rc = epb_runtime_init(&argc, &argv, &err))) {
        char s[4 * EPB_ERRLEN];
        fprintf(stderr, "bench: %s%s\n", shown(&err, s, sizeof s), bench_mpi_hint());
        return EPB_ESYS; /* MPI cannot start: a runtime failure, whatever the code */
    }
    epb_comm_t *ctl = NULL, *data = NULL;
    bench_watchdog_t *wd = NULL;
    if ((rc = epb_comm_create("auto", &ctl, &err))) {
        fail(rc, &err);
        epb_runtime_finalize();
        return rc;
    }
    /* rank 0 validates and broadcasts the resolved configuration with the verdict */
    struct { int rc; epb_err_t err; bench_opts_t o; } v;
    memset(&v, 0, sizeof v);
    if (ctl->rank == 0) {
        v.rc = rc;
        v.err = err;
        if (!v.rc && o.mode != MODE_HELP && o.mode != MODE_VERSION && o.mode != MODE_LIST) {
            if (o.ranks_given && o.ranks != ctl->size)
                v.rc = epb_fail(&v.err, EPB_EUSAGE, "--ranks %d, but the launcher started %d ranks", o.ranks, ctl->size);
            else if (!strcmp(o.comm, "self") && ctl->size > 1)
                v.rc = epb_fail(&v.err, EPB_EUSAGE, "--comm self runs one rank, but the launcher started %d; use "
                                "--comm mpi or auto", ctl->size);
            else
                v.rc = validate(&o, ctl->size, &v.err);
        }
        v.o = o;
    }
    if (epb_bcast(ctl, &v, sizeof v, 0)) {
        fail(EPB_ESYS, &ctl->err);
        epb_runtime_abort(EPB_ESYS);
    }
    o = v.o;
    o.ranks = ctl->size;
    if (v.rc) {
        if (ctl->rank == 0) fail(v.rc, &v.err);
        rc = v.rc;
        goto done;
    }
    if (o.mode == MODE_HELP || o.mode == MODE_VERSION || o.mode == MODE_LIST || o.dry_run) {
        if (ctl->rank == 0) {
            if (o.mode == MODE_HELP) bench_usage(stdout);
            else if (o.mode == MODE_VERSION) print_version();
            else if (o.mode == MODE_LIST) bench_list(stdout, &o);
        }
        goto done; /* --dry-run under a launcher: rank 0 validated the configuration, nothing runs */
    }
    /* from here every call on the control and data communicators is watched (--timeout) and recorded in the
     * node's heartbeat table */
    epb_comm_t *wctl = NULL;
    if ((rc = bench_watchdog_start(&wd, o.timeout_s, ctl, &err)) ||
        (rc = bench_watchdog_wrap(wd, ctl, BENCH_WD_CTL, &wctl, &err))) {
        rank_fail(ctl->rank, &err);
        if (ctl->size > 1) epb_runtime_abort(rc);
        goto done;
    }
    ctl = wctl;
    /* bind first (near its GPU with --device cuda), then set up the data communicator: the CUDA context, NCCL's
     * threads and the pinned staging memory then start on the CPUs this rank runs on */
    bench_topo_t topo;
    int gpu = o.device == BENCH_DEV_CUDA ? epb_gpu_pick(ctl->local_rank) : -1;
    epb_comm_t *raw = NULL;
    if (!(rc = bench_topo_init(&topo, o.bind, ctl->local_rank, ctl->local_size, gpu, &err))) {
        bench_watchdog_call(wd, BENCH_WD_CTL, "set-up", 1); /* NCCL's set-up waits for every rank */
        rc = epb_comm_create_mem(o.comm, o.device == BENCH_DEV_CUDA ? EPB_MEM_DEVICE : EPB_MEM_HOST, &raw, &err);
        bench_watchdog_call(wd, BENCH_WD_CTL, "set-up", 0);
    }
    if (!rc && (rc = bench_watchdog_wrap(wd, raw, BENCH_WD_DATA, &data, &err))) epb_comm_destroy(raw);
    if (rc) {
        /* any rank may fail here (its binding, its GPU, NCCL); the others may be waiting in the set-up: end them all */
        rank_fail(ctl->rank, &err);
        bench_watchdog_failed(wd);
        if (ctl->size > 1) epb_runtime_abort(rc);
        goto done;
    }
    bench_ctx_t b;
    if (!(rc = bench_ctx_init(&b, &o, ctl, data, &topo, wd, &err))) {
        if (o.mode == MODE_COLL) rc = bench_run_coll(&b, &err);
        else if (o.mode == MODE_CALIBRATE) rc = bench_run_calibrate(&b, &err);
        else if (o.mode == MODE_MOE) rc = bench_run_moe(&b, &err);
    }
    if (rc && rc != EPB_ECHECK) {
        /* a runtime failure on one rank may leave the others blocked in a collective: say where, end all */
        rank_fail(ctl->rank, &err);
        bench_watchdog_failed(wd);
        if (ctl->size > 1) epb_runtime_abort(rc);
    }
done:
    epb_comm_destroy(data);
    epb_comm_destroy(ctl);
    bench_watchdog_call(wd, BENCH_WD_CTL, "finalize", 1); /* MPI_Finalize waits for every rank */
    epb_runtime_finalize();
    bench_watchdog_call(wd, BENCH_WD_CTL, "finalize", 0);
    bench_watchdog_stop(wd);
    return rc;
}
