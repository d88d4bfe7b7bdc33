/* Topology: host, CPU model, cores, and the binding in force, from hwloc (or the OS without it). */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "epb_config.h"
#include "moe.h"

#if EPB_HAVE_HWLOC
#include <hwloc.h>
#if EPB_HAVE_CUDA
#include <hwloc/cudart.h> /* hwloc_cudart_get_device_cpuset: the CPUs near a CUDA device */
#endif
#endif

static void cpu_model_from_proc(char *out, size_t n)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(out, n, "unknown CPU");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && colon) {
            colon += 2;
            colon[strcspn(colon, "\n")] = 0;
            snprintf(out, n, "%s", colon);
            break;
        }
    }
    if (f) fclose(f);
}

#if EPB_HAVE_HWLOC
const char *bench_hwloc_version(void)
{
    static char v[32]; /* written once, same value every time */
    unsigned api = hwloc_get_api_version();
    snprintf(v, sizeof v, "hwloc %u.%u.%u", api >> 16, (api >> 8) & 0xff, api & 0xff);
    return v;
}

/* The local_rank-th object of `type` (round-robin), among those inside `near` when it holds any: ranks on GPUs
 * of one socket spread over that socket's cores, without two of them on one core while cores are left. */
static hwloc_obj_t pick(hwloc_topology_t topo, hwloc_obj_type_t type, int local_rank, hwloc_const_bitmap_t near)
{
    int n = near ? (int)hwloc_get_nbobjs_inside_cpuset_by_type(topo, near, type) : 0;
    if (n > 0) return hwloc_get_obj_inside_cpuset_by_type(topo, near, type, (unsigned)(local_rank % n));
    n = hwloc_get_nbobjs_by_type(topo, type);
    return n > 0 ? hwloc_get_obj_by_type(topo, type, (unsigned)(local_rank % n)) : NULL;
}

/* The CPUs near CUDA device `gpu` (the PCI locality the kernel reports), within this topology; NULL with no GPU,
 * or no locality to speak of: unknown, empty (some VMs report none) or the whole machine. */
static hwloc_bitmap_t gpu_cpuset(hwloc_topology_t topo, int gpu)
{
#if EPB_HAVE_CUDA
    if (gpu < 0) return NULL;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    hwloc_const_bitmap_t machine = hwloc_topology_get_topology_cpuset(topo);
    if (set && hwloc_cudart_get_device_cpuset(topo, gpu, set) == 0) {
        hwloc_bitmap_and(set, set, machine);
        if (!hwloc_bitmap_iszero(set) && !hwloc_bitmap_isequal(set, machine)) return set;
    }
    hwloc_bitmap_free(set);
#else
    (void)topo;
    (void)gpu;
#endif
    return NULL;
}

int bench_topo_init(bench_topo_t *t, bind_mode_t bind, int local_rank, int local_size, int gpu, epb_err_t *err)
{
    memset(t, 0, sizeof *t);
    gethostname(t->host, sizeof t->host - 1);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) || hwloc_topology_load(topo))
        return epb_fail(err, EPB_ESYS, "hwloc: cannot read the topology");
    t->cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    t->pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    t->numa_nodes = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    hwloc_obj_t pkg = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PACKAGE, 0);
    const char *model = pkg ? hwloc_obj_get_info_by_name(pkg, "CPUModel") : NULL;
    if (model) snprintf(t->cpu_model, sizeof t->cpu_model, "%s", model);
    else cpu_model_from_proc(t->cpu_model, sizeof t->cpu_model);

    hwloc_bitmap_t cur = hwloc_bitmap_alloc();
    hwloc_const_bitmap_t all = hwloc_topology_get_complete_cpuset(topo);
    int rc = EPB_OK;
    if (hwloc_get_cpubind(topo, cur, HWLOC_CPUBIND_PROCESS)) hwloc_bitmap_copy(cur, all);
    hwloc_bitmap_t near = gpu_cpuset(topo, gpu);
    if (bind == BIND_AUTO) {
        /* keep a launcher's binding; otherwise a rank with a GPU runs on the CPUs near it (all of them: NCCL's
         * threads need some beside the rank's own), and CPU ranks sharing a node get a core each */
        int launcher = !hwloc_bitmap_isincluded(all, cur);
        if (!launcher && near) {
            hwloc_set_cpubind(topo, near, HWLOC_CPUBIND_PROCESS); /* best effort: unbound is still correct */
            if (hwloc_get_cpubind(topo, cur, HWLOC_CPUBIND_PROCESS)) hwloc_bitmap_copy(cur, all);
        }
        bind = (launcher || near || local_size <= 1) ? BIND_NONE : BIND_CORE;
    }
    if (bind == BIND_CORE || bind == BIND_NUMA) {
        hwloc_obj_t obj = pick(topo, bind == BIND_CORE ? HWLOC_OBJ_CORE : HWLOC_OBJ_NUMANODE, local_rank, near);
        if (!obj || hwloc_set_cpubind(topo, obj->cpuset, HWLOC_CPUBIND_PROCESS))
            rc = epb_fail(err, EPB_ESYS, "--bind %s: hwloc could not bind local rank %d", bind == BIND_CORE ? "core" : "numa",
                          local_rank);
        if (hwloc_get_cpubind(topo, cur, HWLOC_CPUBIND_PROCESS)) hwloc_bitmap_copy(cur, all);
    }
    /* describe what is in force, whoever set it */
    hwloc_bitmap_list_snprintf(t->cpuset, sizeof t->cpuset, cur);
    t->bound = BOUND_OTHER;
    t->bound_index = -1;
    hwloc_obj_t core = hwloc_get_obj_covering_cpuset(topo, cur);
    if (hwloc_bitmap_isincluded(all, cur)) t->bound = BOUND_NONE;
    else if (core && core->type == HWLOC_OBJ_CORE) { t->bound = BOUND_CORE; t->bound_index = (int)core->logical_index; }
    else if (core && core->type == HWLOC_OBJ_PU) {
        hwloc_obj_t c = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_CORE, core);
        if (c) { t->bound = BOUND_CORE; t->bound_index = (int)c->logical_index; }
    } else {
        for (int i = 0; i < t->numa_nodes; i++) {
            hwloc_obj_t nn = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
            if (nn && hwloc_bitmap_isequal(nn->cpuset, cur)) { t->bound = BOUND_NUMA; t->bound_index = i; }
        }
    }
    hwloc_bitmap_free(cur);
    hwloc_bitmap_free(near);
    hwloc_topology_destroy(topo);
    return rc;
}
#else
const char *bench_hwloc_version(void) { return "no hwloc"; }

int bench_topo_init(bench_topo_t *t, bind_mode_t bind, int local_rank, int local_size, int gpu, epb_err_t *err)
{
    (void)local_rank; (void)local_size; (void)gpu;
    memset(t, 0, sizeof *t);
    gethostname(t->host, sizeof t->host - 1);
    cpu_model_from_proc(t->cpu_model, sizeof t->cpu_model);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    t->cores = t->pus = n > 0 ? (int)n : 1;
    t->numa_nodes = 1;
    if (bind == BIND_CORE || bind == BIND_NUMA)
        return epb_fail(err, EPB_EUSAGE, "--bind: this build has no hwloc; use --bind none or let mpirun bind");
    cpu_set_t set;
    t->bound = BOUND_OTHER;
    t->bound_index = -1;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) >= t->pus) t->bound = BOUND_NONE;
    snprintf(t->cpuset, sizeof t->cpuset, "%d cpus", sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0);
    return EPB_OK;
}
#endif

int bench_topo_summary(const bench_topo_t *t, epb_comm_t *ctl, char *out, size_t n, epb_err_t *err)
{
    int P = ctl->size;
    int64_t mine[3] = { t->bound, t->bound_index, 0 }, *all = malloc(sizeof(int64_t) * 3 * (size_t)P);
    if (!all) return epb_fail(err, EPB_ESYS, "out of memory");
    /* a key per (host, index) so ranks on different nodes sharing "core 0" are not counted as sharing */
    mine[2] = (int64_t)(epb_hash64(0, 0, 0) ^ (uint64_t)strlen(t->host));
    for (const char *c = t->host; *c; c++) mine[2] = (int64_t)epb_hash64((uint64_t)mine[2], 1, (uint64_t)*c);
    int rc = epb_allgather(ctl, mine, all, 3, EPB_DT_I64);
    if (rc) { free(all); return epb_fail(err, rc, "%s", ctl->err.msg); }
    bound_kind_t kind = (bound_kind_t)all[0];
    int same = 1, share = 1;
    for (int r = 0; r < P; r++) {
        if (all[3 * r] != kind) same = 0;
        int s = 0;
        for (int q = 0; q < P; q++) s += all[3 * q] == all[3 * r] && all[3 * q + 1] == all[3 * r + 1] && all[3 * q + 2] == all[3 * r + 2];
        if (s > share) share = s;
    }
    free(all);
    const char *k = !same ? "mixed" : kind == BOUND_NONE ? "none" : kind == BOUND_CORE ? "core" : kind == BOUND_NUMA ? "numa" : "cpuset";
    char sh[16] = "";
    if (same && (kind == BOUND_CORE || kind == BOUND_NUMA) && share > 1) snprintf(sh, sizeof sh, " x%d", share);
    char blas[48] = "", thr[24] = "";
#if EPB_HAVE_BLAS
    snprintf(blas, sizeof blas, "; blas=%s", epb_blas_corename());
    /* the BLAS threads of each rank: a GEMM ceiling compares with a run only at the same threads per rank (and
     * ranks per node); after "; bind=", so not part of the report's host class */
    snprintf(thr, sizeof thr, "; threads=%d", epb_blas_threads());
#endif
    snprintf(out, n, "%s; %d cores%s; bind=%s%s%s", t->cpu_model, t->cores, blas, k, sh, thr);
    return EPB_OK;
}
