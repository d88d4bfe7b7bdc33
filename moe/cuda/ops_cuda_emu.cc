/* -Demulate_cuda=true (tests only): the CUDA backend, ops_cuda.cu unchanged, compiled by the host C++ compiler against
 * the CPU emulator of tests/cuda_emu, so that CI without a GPU runs its kernels and host code. */
#include "cuda_emu.h"

#include "ops_cuda.cu"
