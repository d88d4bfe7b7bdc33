/* tests/cuda_emu: the kernel engine. A grid runs block after block; a block's threads are fibers on this OS thread.
 * Each fiber has a stack of its own (mmap'd, with a guard page) started once with makecontext and switched with
 * _setjmp/_longjmp afterwards (swapcontext saves the signal mask with a system call at every switch: 20x slower).
 * A thread runs until it finishes or waits (__syncthreads, a warp shuffle); the last thread to reach a barrier, or
 * the last lane of a shuffle's mask, releases the others, which run again in the next round, in the order
 * EPB_CUDA_EMU_ORDER sets. A round in which nothing runs while threads still wait is a deadlock on a GPU: it is
 * reported (kernel, block, who waits where) and aborts. */
#undef _FORTIFY_SOURCE /* its longjmp check rejects jumps between stacks, which is what fibers are */
#include "cuda_emu.h"
#include "emu.h"

#include <execinfo.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

/* every static __shared__ array of the emulated code (cuda_emu.h puts them in this section); weak: a build whose
 * kernels have none still links */
extern "C" char __start_epb_emu_shared[] __attribute__((weak));
extern "C" char __stop_epb_emu_shared[] __attribute__((weak));

namespace epb_emu {

const uint3 *thread_idx;
uint3 block_idx;
dim3 block_dim, grid_dim;

namespace {

/* order of blocks and of threads between barriers: EPB_CUDA_EMU_ORDER */
enum order_t { ORDER_FORWARD, ORDER_REVERSE, ORDER_SHUFFLE };
order_t order();
uint64_t order_rand();

constexpr size_t STACK_BYTES = 256 << 10; /* per thread; AddressSanitizer's frames are large */
constexpr size_t SMEM_MAX = 48 << 10;     /* shared memory per block without an opt-in attribute */

struct fiber {
    char *stack; /* lowest usable byte, above the guard page */
    jmp_buf ctx;
    void *fake_stack; /* AddressSanitizer's bookkeeping of this fiber's stack */
};

enum state_t { READY, AT_BARRIER, AT_SHUFFLE, DONE };

struct thread {
    uint3 idx;
    int id, warp, lane;
    state_t state;
    const char *file; /* where it waits */
    int line;
    int op, arg, width; /* the shuffle it waits in */
    unsigned mask;
    uint64_t val, result;
};

std::vector<fiber *> fibers;      /* fiber i runs thread i of the block */
std::vector<thread> threads;      /* the running block's */
std::vector<thread *> released;   /* run in the next round */
thread *cur;                      /* the running thread, NULL outside kernels */
fiber *cur_fiber, *booting;
jmp_buf sched_ctx;
ucontext_t boot_uc, fiber_uc;
const std::function<void()> *kernel_body;
const char *kernel_name;
int n_threads, n_done, n_barrier;
char *dyn_smem;                   /* the block's dynamic shared memory, ending at a guard page */
size_t dyn_smem_bytes;
char *smem_map;                   /* SMEM_MAX bytes then a guard page */
const void *main_bottom;          /* the scheduler's stack, for AddressSanitizer */
size_t main_size;
void *sched_fake;

void asan_start(void **save, const void *bottom, size_t size)
{
#if EMU_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}
void asan_finish(void *save, const void **bottom, size_t *size)
{
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

/* the running fiber gives the OS thread back to the scheduler; returns when the scheduler resumes it */
void switch_out()
{
    fiber *f = cur_fiber;
    if (!_setjmp(f->ctx)) {
        asan_start(&f->fake_stack, main_bottom, main_size);
        _longjmp(sched_ctx, 1);
    }
    asan_finish(f->fake_stack, &main_bottom, &main_size);
}

/* a fiber's whole life: park, then run the kernel body for whichever thread the scheduler hands it, forever */
void fiber_main()
{
    fiber *f = booting;
    asan_finish(nullptr, &main_bottom, &main_size);
    if (!_setjmp(f->ctx)) {
        asan_start(&f->fake_stack, main_bottom, main_size);
        _longjmp(sched_ctx, 1);
    }
    asan_finish(f->fake_stack, &main_bottom, &main_size);
    for (;;) {
        (*kernel_body)();
        cur->state = DONE;
        n_done++;
        switch_out();
    }
}

fiber *new_fiber()
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = (char *)mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) fatal("cannot map a %zu-byte fiber stack", STACK_BYTES);
    mprotect(m, page, PROT_NONE); /* the guard: a kernel thread overflowing its stack faults there */
    fiber *f = new fiber();
    f->stack = m + page;
    getcontext(&fiber_uc);
    fiber_uc.uc_stack.ss_sp = f->stack;
    fiber_uc.uc_stack.ss_size = STACK_BYTES;
    fiber_uc.uc_link = nullptr;
    makecontext(&fiber_uc, fiber_main, 0);
    booting = f;
    if (!_setjmp(sched_ctx)) {
        asan_start(&sched_fake, f->stack, STACK_BYTES);
        swapcontext(&boot_uc, &fiber_uc);
    }
    asan_finish(sched_fake, nullptr, nullptr);
    return f;
}

void resume(thread *t)
{
    cur = t;
    thread_idx = &t->idx;
    cur_fiber = fibers[(size_t)t->id];
    if (!_setjmp(sched_ctx)) {
        asan_start(&sched_fake, cur_fiber->stack, STACK_BYTES);
        _longjmp(cur_fiber->ctx, 1);
    }
    asan_finish(sched_fake, nullptr, nullptr);
    cur = nullptr;
}

/* splitmix64: the shuffle order, reproducible from its seed */
uint64_t rng_state;
order_t the_order;
bool order_read;

void read_order()
{
    order_read = true;
    const char *s = getenv("EPB_CUDA_EMU_ORDER");
    the_order = ORDER_FORWARD;
    rng_state = 1;
    if (!s || !*s || !strcmp(s, "forward")) return;
    if (!strcmp(s, "reverse")) {
        the_order = ORDER_REVERSE;
    } else if (!strncmp(s, "shuffle", 7) && (s[7] == 0 || s[7] == ':')) {
        the_order = ORDER_SHUFFLE;
        if (s[7] == ':') rng_state = strtoull(s + 8, nullptr, 0);
    } else {
        fatal("EPB_CUDA_EMU_ORDER='%s': expected forward, reverse, shuffle or shuffle:SEED", s);
    }
}

template <typename T> void put_in_order(std::vector<T> &v, bool by_id)
{
    switch (order()) {
    case ORDER_FORWARD:
        if (by_id) std::sort(v.begin(), v.end(), [](const T &a, const T &b) { return a < b; });
        break;
    case ORDER_REVERSE:
        std::sort(v.begin(), v.end(), [](const T &a, const T &b) { return b < a; });
        break;
    case ORDER_SHUFFLE:
        for (size_t i = v.size(); i > 1; i--) std::swap(v[i - 1], v[(size_t)(order_rand() % i)]);
        break;
    }
}

const char *state_name(const thread &t)
{
    switch (t.state) {
    case READY: return "running";
    case AT_BARRIER: return "__syncthreads";
    case AT_SHUFFLE: return "a warp shuffle";
    default: return "exited";
    }
}

[[noreturn]] void deadlock()
{
    std::string msg;
    char line[256];
    int first_barrier = -1;
    for (const thread &t : threads)
        if (t.state == AT_BARRIER && first_barrier < 0) first_barrier = t.id;
    if (first_barrier >= 0) {
        const thread &b = threads[(size_t)first_barrier];
        snprintf(line, sizeof line, "\n  %d of %d threads wait at __syncthreads (%s:%d) and %d exited: CUDA requires "
                 "every thread of the block to reach it", n_barrier, n_threads, b.file, b.line, n_done);
        msg += line;
    }
    for (const thread &t : threads) {
        if (t.state != AT_SHUFFLE) continue;
        /* the first lane waiting in its warp's shuffle tells the story of that warp */
        bool first = true;
        for (const thread &o : threads)
            if (o.warp == t.warp && o.state == AT_SHUFFLE && o.id < t.id) first = false;
        if (!first) continue;
        snprintf(line, sizeof line, "\n  warp %d: lane %d waits in a warp shuffle (%s:%d) with mask 0x%08x; missing:",
                 t.warp, t.lane, t.file, t.line, t.mask);
        msg += line;
        for (int l = 0; l < 32; l++) {
            if (!(t.mask >> l & 1u)) continue;
            int id = t.warp * 32 + l;
            if (id >= n_threads) {
                snprintf(line, sizeof line, " lane %d (no such thread: the block has %d)", l, n_threads);
                msg += line;
            } else if (threads[(size_t)id].state != AT_SHUFFLE) {
                snprintf(line, sizeof line, " lane %d (%s)", l, state_name(threads[(size_t)id]));
                msg += line;
            }
        }
    }
    fatal("deadlock: no thread of the block can go on%s", msg.c_str());
}

void run_block(unsigned linear_block)
{
    block_idx = uint3{ linear_block % grid_dim.x, linear_block / grid_dim.x % grid_dim.y,
                       linear_block / (grid_dim.x * grid_dim.y) };
    /* shared memory starts undefined: poisoned (NaN as floats, -1 as integers) so that a read before the write
     * shows. Byte stores through volatile: AddressSanitizer would flag a memset over the redzones between the
     * section's arrays. */
    for (volatile char *p = __start_epb_emu_shared; p < __stop_epb_emu_shared; p++) *p = (char)0xff;
    memset(dyn_smem, 0xff, dyn_smem_bytes);
    std::vector<thread *> ready((size_t)n_threads);
    for (int i = 0; i < n_threads; i++) {
        thread &t = threads[(size_t)i];
        t.idx = uint3{ (unsigned)i % block_dim.x, (unsigned)i / block_dim.x % block_dim.y,
                       (unsigned)i / (block_dim.x * block_dim.y) };
        t.id = i;
        t.warp = i / 32;
        t.lane = i % 32;
        t.state = READY;
        ready[(size_t)i] = &t;
    }
    n_done = n_barrier = 0;
    put_in_order(ready, false);
    while (!ready.empty()) {
        released.clear();
        for (thread *t : ready) resume(t);
        ready.swap(released);
        put_in_order(ready, true);
    }
    if (n_done != n_threads) deadlock();
}

order_t order()
{
    if (!order_read) read_order();
    return the_order;
}

uint64_t order_rand()
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void run_grid(const char *kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);

} // namespace

const char *where()
{
    static char buf[512];
    if (!kernel_name) return "";
    if (cur)
        snprintf(buf, sizeof buf, " [in kernel %s, block (%u,%u,%u), thread (%u,%u,%u)]", kernel_name, block_idx.x,
                 block_idx.y, block_idx.z, cur->idx.x, cur->idx.y, cur->idx.z);
    else
        snprintf(buf, sizeof buf, " [in kernel %s, block (%u,%u,%u)]", kernel_name, block_idx.x, block_idx.y,
                 block_idx.z);
    return buf;
}

void fatal(const char *fmt, ...)
{
    fflush(stdout);
    fprintf(stderr, "cuda_emu: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\ncuda_emu: host call stack (addr2line -f -e BINARY ADDRESS names a frame):\n", where());
    void *bt[32];
    backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
    abort();
}

const char *engine_fault(const void *addr)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const char *a = (const char *)addr;
    for (const fiber *f : fibers)
        if (a >= f->stack - page && a < f->stack) return "stack overflow of a kernel thread (256 KiB stacks)";
    if (smem_map && a >= smem_map + SMEM_MAX && a < smem_map + SMEM_MAX + page)
        return "dynamic shared memory accessed past its end (the launch's smem bytes, rounded up to 16)";
    return nullptr;
}

void *dyn_shared()
{
    if (!cur) fatal("dynamic shared memory used outside a kernel");
    return dyn_smem;
}

void syncthreads(const char *file, int line)
{
    if (!cur) fatal("__syncthreads called outside a kernel (%s:%d)", file, line);
    thread *t = cur;
    t->state = AT_BARRIER;
    t->file = file;
    t->line = line;
    n_barrier++;
    if (n_barrier == n_threads - n_done) {
        if (n_done > 0) deadlock(); /* exited threads never arrive: a barrier in divergent code */
        for (thread &o : threads) {
            if (o.line != line || strcmp(o.file, file))
                fatal("__syncthreads in divergent code: thread (%u,%u,%u) waits at %s:%d, thread (%u,%u,%u) at "
                      "%s:%d", t->idx.x, t->idx.y, t->idx.z, file, line, o.idx.x, o.idx.y, o.idx.z, o.file, o.line);
            o.state = READY;
            released.push_back(&o);
        }
        n_barrier = 0;
    }
    switch_out();
}

uint64_t shfl(int op, unsigned mask, uint64_t v, int arg, int width, const char *file, int line)
{
    static const char *const names[] = { "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync" };
    if (!cur) fatal("%s called outside a kernel (%s:%d)", names[op], file, line);
    thread *t = cur;
    if (width < 1 || width > 32 || (width & (width - 1)))
        fatal("%s (%s:%d): width %d is not a power of 2 in [1, 32]", names[op], file, line, width);
    if (!(mask >> t->lane & 1u))
        fatal("%s (%s:%d): lane %d is not in its own mask 0x%08x", names[op], file, line, t->lane, mask);
    t->state = AT_SHUFFLE;
    t->op = op;
    t->mask = mask;
    t->val = v;
    t->arg = arg;
    t->width = width;
    t->file = file;
    t->line = line;
    int base = t->warp * 32;
    bool all = true;
    for (int l = 0; l < 32 && all; l++)
        if (mask >> l & 1u) all = base + l < n_threads && threads[(size_t)(base + l)].state == AT_SHUFFLE;
    if (all) { /* the last lane of the mask: every lane's result, then all go on */
        for (int l = 0; l < 32; l++) {
            if (!(mask >> l & 1u)) continue;
            thread &o = threads[(size_t)(base + l)];
            if (o.op != op || o.mask != mask || o.width != width || o.line != line || strcmp(o.file, file))
                fatal("warp shuffles in divergent code: lane %d is in %s (%s:%d, mask 0x%08x), lane %d in %s (%s:%d, "
                      "mask 0x%08x): the lanes of a mask must execute the same shuffle", t->lane, names[op], file, line,
                      mask, l, names[o.op], o.file, o.line, o.mask);
            int seg = l & ~(width - 1), src = l;
            switch (op) {
            case SHFL_IDX: src = seg + (o.arg & (width - 1)); break;
            case SHFL_UP: src = l - o.arg >= seg ? l - o.arg : l; break;
            case SHFL_DOWN: src = l + o.arg < seg + width ? l + o.arg : l; break;
            case SHFL_XOR: src = (l ^ o.arg) < seg + width ? l ^ o.arg : l; break;
            }
            if (!(mask >> src & 1u))
                fatal("%s (%s:%d): lane %d reads lane %d, which is not in the mask 0x%08x (undefined on a GPU)",
                      names[op], file, line, l, src, mask);
            o.result = threads[(size_t)(base + src)].val;
            o.state = READY;
            released.push_back(&o);
        }
    }
    switch_out();
    return t->result;
}

void check_kernel_pointer(const char *kernel, int arg, const void *p)
{
    if (p && find_alloc(p, 0).kind == MEM_HOST)
        fatal("kernel %s: argument %d (%p) points to neither device memory nor pinned host memory: a GPU cannot "
              "read pageable host memory", kernel, arg, p);
}

void launch(const char *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, std::function<void()> body)
{
    check_stream(stream, kernel);
    if (!visible_devices()) {
        set_last_error(cudaErrorNoDevice);
        return;
    }
    unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    /* the limits of every architecture since Kepler (CUDA C++ Programming Guide, "Compute Capabilities") */
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 ||
        nt == 0 || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
        set_last_error(cudaErrorInvalidConfiguration);
        return;
    }
    if (smem > SMEM_MAX) {
        set_last_error(cudaErrorInvalidValue);
        return;
    }
    enqueue(stream, [kernel, grid, block, smem, body]() { run_grid(kernel, grid, block, smem, body); });
}

namespace {

void run_grid(const char *kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!smem_map) {
        smem_map = (char *)mmap(nullptr, SMEM_MAX + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (smem_map == MAP_FAILED) fatal("cannot map the shared memory");
        mprotect(smem_map + SMEM_MAX, page, PROT_NONE);
    }
    /* ends at the guard page: a kernel indexing past its dynamic shared memory faults (in 16-byte units) */
    dyn_smem_bytes = smem;
    dyn_smem = smem_map + SMEM_MAX - (smem + 15) / 16 * 16;
    grid_dim = grid;
    block_dim = block;
    n_threads = (int)(block.x * block.y * block.z);
    while (fibers.size() < (size_t)n_threads) fibers.push_back(new_fiber());
    threads.resize((size_t)n_threads);
    kernel_name = kernel;
    kernel_body = &body;
    unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    if (order() == ORDER_FORWARD) {
        for (unsigned long long b = 0; b < nb; b++) run_block((unsigned)b);
    } else {
        std::vector<unsigned> blocks((size_t)nb);
        for (unsigned long long b = 0; b < nb; b++) blocks[(size_t)b] = (unsigned)b;
        put_in_order(blocks, false);
        for (unsigned b : blocks) run_block(b);
    }
    kernel_name = nullptr;
}

} // namespace
} // namespace epb_emu
