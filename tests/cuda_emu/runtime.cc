/* tests/cuda_emu: the CUDA runtime calls epbench makes, over host memory, with the toolkit header's declarations
 * (so C callers link to these instead of libcudart). One device, "epbench CUDA emulator (CPU)", unless
 * CUDA_VISIBLE_DEVICES hides it as it would hide a GPU.
 *
 * What it checks, so that a bug shows here rather than on a GPU:
 * - Device memory (cudaMalloc) lives in mappings of its own, with guard pages, and is PROT_NONE while host code
 *   runs: host code that reads or writes it faults and is reported (a GPU's memory is not host memory). While the
 *   device runs (queued work, the runtime's copies) a fault in an allocation opens that allocation until the device
 *   is done (opening every allocation at every synchronisation costs a system call each: minutes per test). A
 *   kernel or copy past an allocation's end (256-byte granularity, as cudaMalloc's alignment) hits a guard page and
 *   is reported with the kernel, block and thread. New device and pinned memory is filled with 0xff bytes (NaN as
 *   floats, -1 as integers), as neither is zeroed.
 * - Every copy or memset with an explicit kind has its device side inside one device allocation and its host side
 *   outside all of them; cudaFree/cudaFreeHost take only what cudaMalloc/cudaMallocHost returned; kernel pointer
 *   arguments point into device or pinned memory; streams and events are live. A violation aborts with a message.
 * - Work runs in stream order when the host waits for it (cudaStreamSynchronize, cudaEventSynchronize, a copy to
 *   pageable memory), not when it is queued, as a GPU may: host code that reads a result early reads poison, and
 *   work ordered on one stream but needed by another without synchronisation runs late. A copy from pageable memory
 *   takes its data at the call (CUDA 13 runtime API, "API synchronization behavior"); one from pinned memory at
 *   execution; a copy into pinned memory poisons it at the call.
 * Events time host wall-clock execution of the queued work; they say nothing about a GPU's speed. */
#include "emu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <set>

struct CUstream_st {
    std::deque<std::function<void()>> work;
    unsigned flags;
};

struct CUevent_st {
    unsigned flags;
    uint64_t recorded, completed; /* how many records were queued and have run */
    CUstream_st *stream;          /* of the last record (NULL: the legacy stream) */
    double t_ms;                  /* host clock when the last record ran */
};

namespace epb_emu {
namespace {

constexpr unsigned char POISON = 0xff;
const unsigned char EMU_UUID[16] = { 'e', 'p', 'b', '-', 'c', 'u', 'd', 'a', '-', 'e', 'm', 'u', '-', 'c', 'p', 'u' };

struct record {
    mem_kind kind;
    char *base;
    size_t bytes;
    char *map, *data; /* device: the mapping (guard page, data pages, guard page) and its data pages */
    size_t map_bytes, data_bytes;
};
std::map<uintptr_t, record> allocs; /* by base */
/* written by the SIGSEGV handler: volatile, and fenced in device_enter/leave */
record *opened[4096]; /* device allocations made accessible since device_enter */
volatile size_t n_opened;
struct freed_range {
    uintptr_t base;
    size_t bytes;
};
freed_range freed[1024]; /* the last device frees, to name a use after free */
size_t n_freed;
volatile int device_depth;
cudaError_t last_error = cudaSuccess;
std::set<CUstream_st *> streams;
std::set<CUevent_st *> events;
struct sigaction old_segv;
bool initialised;
int n_visible = -1;
size_t page;

cudaError_t fail(cudaError_t e)
{
    if (e != cudaSuccess) last_error = e;
    return e;
}

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void protect(const record &r, int prot)
{
    if (mprotect(r.data, r.data_bytes, prot))
        fatal("mprotect of device memory failed: %s", strerror(errno));
}

const char *kind_name(mem_kind k)
{
    return k == MEM_DEVICE ? "device memory" : k == MEM_PINNED ? "pinned host memory" : "pageable host memory";
}

void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (const auto &kv : allocs) {
        const record &r = kv.second;
        if (r.kind != MEM_DEVICE || a < (uintptr_t)r.map || a >= (uintptr_t)r.map + r.map_bytes) continue;
        uintptr_t b = (uintptr_t)r.base;
        bool in_data = a >= (uintptr_t)r.data && a < (uintptr_t)r.data + r.data_bytes;
        if (device_depth > 0 && in_data) { /* the device touches it: open it, and the access runs again */
            if (n_opened == sizeof opened / sizeof *opened)
                fatal("the device touched more than %zu allocations between two synchronisations", sizeof opened / sizeof *opened);
            protect(r, PROT_READ | PROT_WRITE);
            opened[n_opened] = const_cast<record *>(&r);
            n_opened = n_opened + 1;
            return;
        }
        if (device_depth == 0 && in_data)
            fatal("host code touched device memory at %p (byte %td of the %zu-byte cudaMalloc allocation at %p): "
                  "device memory is not host memory, copy it with cudaMemcpy", si->si_addr, (ptrdiff_t)(a - b),
                  r.bytes, r.base);
        if (a >= b + r.bytes)
            fatal("out-of-bounds access at %p: byte %zu past the end of the %zu-byte device allocation at %p",
                  si->si_addr, (size_t)(a - b - r.bytes), r.bytes, r.base);
        fatal("out-of-bounds access at %p: %zu bytes before the %zu-byte device allocation at %p", si->si_addr,
              (size_t)(b - a), r.bytes, r.base);
    }
    if (const char *what = engine_fault(si->si_addr)) fatal("%s at %p", what, si->si_addr);
    for (size_t i = 0; i < n_freed && i < sizeof freed / sizeof *freed; i++)
        if (a >= freed[i].base && a < freed[i].base + freed[i].bytes)
            fatal("access at %p to device memory already freed (the %zu-byte allocation at %p)", si->si_addr,
                  freed[i].bytes, (void *)freed[i].base);
    if (where()[0]) fatal("segmentation fault at %p", si->si_addr);
    /* not ours: the previous handler (or the default action) gets the fault when the instruction runs again */
    sigaction(SIGSEGV, &old_segv, nullptr);
}

void init()
{
    if (initialised) return;
    initialised = true;
    page = (size_t)sysconf(_SC_PAGESIZE);
    /* an alternate stack: a kernel thread's stack overflow must still be reported */
    static char alt[64 << 10];
    stack_t ss = {};
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    sigaltstack(&ss, nullptr);
    struct sigaction sa = {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
}

const record *find(const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return nullptr;
    --it;
    const record &r = it->second;
    uintptr_t b = (uintptr_t)r.base;
    if (a >= b && (bytes ? a + bytes <= b + r.bytes : a <= b + r.bytes)) return &r;
    return nullptr;
}

/* does [p, p+bytes) touch any device allocation? (a host range must not) */
const record *overlaps_device(const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it != allocs.begin()) --it; /* the allocation starting at or before a may reach into the range */
    for (; it != allocs.end() && (uintptr_t)it->second.base < a + bytes; ++it) {
        const record &r = it->second;
        if (r.kind == MEM_DEVICE && (uintptr_t)r.base + r.bytes > a) return &r;
    }
    return nullptr;
}

/* Device memory is inaccessible to the host (PROT_NONE) except between device_enter and device_leave (the device
 * running queued work, or the runtime copying), where a fault opens the allocation it hit (on_segv) */
void device_enter()
{
    device_depth = device_depth + 1;
    /* the device's accesses stay after this (a memcpy would otherwise move freely around a plain counter) */
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

void device_leave()
{
    std::atomic_signal_fence(std::memory_order_seq_cst);
    device_depth = device_depth - 1;
    if (device_depth) return;
    for (size_t i = 0; i < n_opened; i++) protect(*opened[i], PROT_NONE);
    n_opened = 0;
}

void drain_one(CUstream_st *s)
{
    std::function<void()> op = std::move(s->work.front());
    s->work.pop_front();
    op();
}

void drain(CUstream_st *s)
{
    if (s->work.empty()) return;
    device_enter();
    while (!s->work.empty()) drain_one(s);
    device_leave();
}

/* the legacy default stream waits for every blocking stream */
void drain_blocking()
{
    for (CUstream_st *s : streams)
        if (!(s->flags & cudaStreamNonBlocking)) drain(s);
}

void check_event(cudaEvent_t e, const char *call)
{
    if (!events.count(e)) fatal("%s: event %p is not a live event (destroyed, or never created)", call, (void *)e);
}

const char *kind_str(cudaMemcpyKind k)
{
    switch (k) {
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    default: return "cudaMemcpyDefault";
    }
}

/* the side of a copy that must be device memory */
void need_device(const void *p, size_t n, const char *side, cudaMemcpyKind k)
{
    if (find(p, n) && find(p, n)->kind == MEM_DEVICE) return;
    const record *r = find(p, 0);
    if (r && r->kind == MEM_DEVICE)
        fatal("cudaMemcpyAsync (%s): %s [%p, +%zu) runs past the end of the %zu-byte device allocation at %p", kind_str(k),
              side, p, n, r->bytes, r->base);
    fatal("cudaMemcpyAsync (%s): %s %p is %s, not device memory", kind_str(k), side, p,
          kind_name(r ? r->kind : MEM_HOST));
}

void need_host(const void *p, size_t n, const char *side, cudaMemcpyKind k)
{
    if (const record *r = overlaps_device(p, n))
        fatal("cudaMemcpyAsync (%s): %s [%p, +%zu) is device memory (the %zu-byte allocation at %p), not host memory",
              kind_str(k), side, p, n, r->bytes, r->base);
}

} // namespace

alloc_info find_alloc(const void *p, size_t bytes)
{
    const record *r = find(p, bytes);
    if (!r) return alloc_info{ MEM_HOST, nullptr, 0 };
    return alloc_info{ r->kind, r->base, r->bytes };
}


void check_stream(cudaStream_t s, const char *call)
{
    if (s && s != cudaStreamLegacy && !streams.count(s))
        fatal("%s: stream %p is not a live stream (destroyed, or never created)", call, (void *)s);
}

void enqueue(cudaStream_t s, std::function<void()> op)
{
    if (s && s != cudaStreamLegacy) {
        s->work.push_back(std::move(op));
        return;
    }
    drain_blocking();
    device_enter();
    op();
    device_leave();
}

void set_last_error(cudaError_t e) { fail(e); }

int visible_devices()
{
    if (n_visible < 0) {
        /* as the driver reads it: the first entry must name this device (ordinal 0 or its UUID), else none */
        const char *v = getenv("CUDA_VISIBLE_DEVICES");
        n_visible = 1;
        if (v) {
            while (*v == ' ') v++;
            n_visible = (!strncmp(v, "0", 1) && (v[1] == 0 || v[1] == ',')) || !strncmp(v, "GPU-6570622d", 12);
        }
    }
    return n_visible;
}

} // namespace epb_emu

using namespace epb_emu;

/* ---------------------------------------------------------------- errors, devices */

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    default: return "unknown error (cuda_emu)";
    }
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = visible_devices();
    return fail(*count ? cudaSuccess : cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device)
{
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    init();
    return fail(device == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    if (device != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "epbench CUDA emulator (CPU)");
    memcpy(p->uuid.bytes, EMU_UUID, sizeof EMU_UUID);
    p->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    p->sharedMemPerBlock = 48 << 10;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9; /* what ops_cuda.cu is built for (-Dgpu_arch=90) */
    p->multiProcessorCount = 1;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- memory */

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    *ptr = nullptr;
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    init();
    if (!bytes) return cudaSuccess;
    size_t used = (bytes + 255) / 256 * 256, data_bytes = (used + page - 1) / page * page;
    if (data_bytes < bytes) return fail(cudaErrorMemoryAllocation);
    char *m = (char *)mmap(nullptr, data_bytes + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
    record r = { MEM_DEVICE, m + page + data_bytes - used, bytes, m, m + page, data_bytes + 2 * page, data_bytes };
    protect(r, PROT_READ | PROT_WRITE);
    memset(r.base, POISON, bytes);
    protect(r, PROT_NONE);
    allocs[(uintptr_t)r.base] = r;
    *ptr = r.base;
    return cudaSuccess;
}

/* The record of an allocation `call` frees, taken out of the registry once every stream has finished (what cudaFree
 * does in practice, though its documentation only says it may; cudaFreeHost does synchronize): queued work may still
 * use it. Anything but a pointer of the matching allocator (`what`) is fatal, as on a GPU it corrupts the heap. */
static record release(void *ptr, mem_kind kind, const char *call, const char *what)
{
    auto it = allocs.find((uintptr_t)ptr);
    if (it == allocs.end() || it->second.kind != kind) {
        const record *r = find(ptr, 0);
        fatal("%s(%p): not a pointer %s returned (%s%s)", call, ptr, what, kind_name(r ? r->kind : MEM_HOST),
              r && r->base != ptr ? ", inside an allocation" : "");
    }
    for (CUstream_st *s : streams) drain(s);
    record r = it->second;
    allocs.erase(it);
    return r;
}

cudaError_t cudaFree(void *ptr)
{
    if (!ptr) return cudaSuccess;
    record r = release(ptr, MEM_DEVICE, "cudaFree", "cudaMalloc");
    freed[n_freed++ % (sizeof freed / sizeof *freed)] = freed_range{ (uintptr_t)r.base, r.bytes };
    munmap(r.map, r.map_bytes);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes)
{
    *ptr = nullptr;
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    init();
    if (!bytes) return cudaSuccess;
    void *p = nullptr;
    if (posix_memalign(&p, page, bytes)) return fail(cudaErrorMemoryAllocation);
    memset(p, POISON, bytes);
    allocs[(uintptr_t)p] = record{ MEM_PINNED, (char *)p, bytes, nullptr, nullptr, 0, 0 };
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr)
{
    if (!ptr) return cudaSuccess;
    release(ptr, MEM_PINNED, "cudaFreeHost", "cudaMallocHost");
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t stream)
{
    check_stream(stream, "cudaMemcpyAsync");
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return fail(cudaErrorInvalidValue);
    if (!bytes) return cudaSuccess;
    if (kind == cudaMemcpyDefault) { /* unified addressing: the pointers say */
        bool dd = find(dst, bytes) && find(dst, bytes)->kind == MEM_DEVICE;
        bool sd = find(src, bytes) && find(src, bytes)->kind == MEM_DEVICE;
        kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dst_dev) need_device(dst, bytes, "destination", kind);
    else need_host(dst, bytes, "destination", kind);
    if (src_dev) need_device(src, bytes, "source", kind);
    else need_host(src, bytes, "source", kind);
    bool src_pinned = !src_dev && find(src, bytes) && find(src, bytes)->kind == MEM_PINNED;
    bool dst_pinned = !dst_dev && find(dst, bytes) && find(dst, bytes)->kind == MEM_PINNED;
    if ((!src_dev && !src_pinned) || (!dst_dev && !dst_pinned)) {
        /* pageable memory on either side: the copy is done (to host) or its source taken (from host) when the call
         * returns, after the stream's earlier work */
        if (stream && stream != cudaStreamLegacy) drain(stream);
        else drain_blocking();
        device_enter();
        memcpy(dst, src, bytes);
        device_leave();
        return cudaSuccess;
    }
    if (!dst_dev) memset(dst, POISON, bytes); /* pinned destination: undefined until the stream gets there */
    enqueue(stream, [dst, src, bytes]() { memcpy(dst, src, bytes); });
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    check_stream(stream, "cudaMemsetAsync");
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    if (!bytes) return cudaSuccess;
    const record *r = find(ptr, bytes);
    if (!r || r->kind != MEM_DEVICE) {
        r = find(ptr, 0);
        fatal("cudaMemsetAsync(%p, %d, %zu): %s", ptr, value, bytes,
              r && r->kind == MEM_DEVICE ? "runs past the end of its device allocation" : "not device memory");
    }
    enqueue(stream, [ptr, value, bytes]() { memset(ptr, value, bytes); });
    return cudaSuccess;
}

/* ---------------------------------------------------------------- streams */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    if (flags & ~(unsigned)cudaStreamNonBlocking) return fail(cudaErrorInvalidValue);
    init();
    *s = new CUstream_st();
    (*s)->flags = flags;
    streams.insert(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (!s || s == cudaStreamLegacy) return fail(cudaErrorInvalidResourceHandle);
    check_stream(s, "cudaStreamDestroy");
    drain(s); /* queued work still completes */
    streams.erase(s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    check_stream(s, "cudaStreamSynchronize");
    if (s && s != cudaStreamLegacy) drain(s);
    else drain_blocking();
    return cudaSuccess;
}

/* the queued work runs now and is reported done: a poller sees it finish */
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

/* ---------------------------------------------------------------- events */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    if (!visible_devices()) return fail(cudaErrorNoDevice);
    if (flags & ~(unsigned)(cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess))
        return fail(cudaErrorInvalidValue);
    *e = new CUevent_st();
    (*e)->flags = flags;
    events.insert(*e);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    check_event(e, "cudaEventRecord");
    check_stream(s, "cudaEventRecord");
    uint64_t gen = ++e->recorded;
    e->stream = s && s != cudaStreamLegacy ? s : nullptr;
    enqueue(s, [e, gen]() {
        e->t_ms = now_ms();
        e->completed = gen;
    });
    return cudaSuccess;
}

/* runs the event's stream until its last record has completed */
static void wait_event(cudaEvent_t e)
{
    device_enter();
    while (e->completed < e->recorded) drain_one(e->stream);
    device_leave();
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    check_event(e, "cudaEventSynchronize");
    wait_event(e);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    check_event(a, "cudaEventElapsedTime");
    check_event(b, "cudaEventElapsedTime");
    if ((a->flags | b->flags) & cudaEventDisableTiming || !a->recorded || !b->recorded)
        return fail(cudaErrorInvalidResourceHandle);
    if (a->completed < a->recorded || b->completed < b->recorded) return fail(cudaErrorNotReady);
    *ms = (float)(b->t_ms - a->t_ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    check_event(e, "cudaEventDestroy");
    wait_event(e); /* a pending record still runs (and writes the event): let it, then release */
    events.erase(e);
    delete e;
    return cudaSuccess;
}
