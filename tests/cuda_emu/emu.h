/* tests/cuda_emu: what the emulator's parts (engine.cc, runtime.cc, cublas.cc) share. Not for the emulated code. */
#ifndef EPB_CUDA_EMU_INTERNAL_H
#define EPB_CUDA_EMU_INTERNAL_H

#include <cuda_runtime_api.h>

#include <stddef.h>
#include <stdint.h>

#include <functional>

namespace epb_emu {

/* Reports a misuse a GPU would punish (or silently corrupt), with the kernel, block and thread running if any,
 * and aborts: the test that ran it fails, and the message says why. */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "kernel K block (x,y,z) thread (x,y,z)" when a kernel runs, else "" (for messages) */
const char *where();

/* ---- memory (runtime.cc) ---- */
enum mem_kind { MEM_HOST, MEM_DEVICE, MEM_PINNED }; /* MEM_HOST: pageable, not ours */
struct alloc_info {
    mem_kind kind;
    const char *base;
    size_t bytes;
};
/* The allocation that holds [p, p+bytes) whole; kind MEM_HOST (base NULL) when none does. bytes 0 accepts one past
 * the end. */
alloc_info find_alloc(const void *p, size_t bytes);

/* ---- streams (runtime.cc) ---- */
/* Queues op on stream s (0: the legacy default stream, which runs it at once after every blocking stream); the op
 * runs when the stream is synchronized, with device memory accessible. */
void enqueue(cudaStream_t s, std::function<void()> op);
/* fatal unless s is 0 or a live stream */
void check_stream(cudaStream_t s, const char *call);
/* the error cudaGetLastError returns next (launch configuration errors) */
void set_last_error(cudaError_t e);
/* cudaGetDeviceCount's answer (CUDA_VISIBLE_DEVICES respected): 0 or 1 */
int visible_devices();

/* ---- engine.cc ---- */
/* for the SIGSEGV report: what a fault at addr in the engine's own memory means (a kernel thread's stack
 * overflow, dynamic shared memory out of bounds), or NULL */
const char *engine_fault(const void *addr);

} // namespace epb_emu

#endif
