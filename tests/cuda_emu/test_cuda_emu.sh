#!/usr/bin/env bash
# The emulator's own test (test_cuda_emu.cc): what it computes, in each thread order, that a missing __syncthreads
# shows between orders, that CUDA_VISIBLE_DEVICES hides the device, and that every fault it claims to catch is
# reported (the process aborts with the message named here) rather than computed through.
# Usage: test_cuda_emu.sh TEST_CUDA_EMU_BINARY
set -u
BIN=$(realpath "$1")
source "$(dirname "$0")/../tap.sh"
for order in forward reverse shuffle:1 shuffle:2; do
    EPB_CUDA_EMU_ORDER=$order "$BIN" >"$work/out" 2>&1
    tap_ok $? "semantics, order $order ($(grep -c '^ok' "$work/out") checks)" "$work/out"
    grep -o '[0-9]* of 64 threads read a written slot' "$work/out" | cut -d' ' -f1 >"$work/racy.$order"
done
# thread i reads slot i+1: in forward order only thread 63 finds its slot written (slot 0), in reverse order all
# but thread 63
[ "$(cat "$work/racy.forward")" = 1 ] && [ "$(cat "$work/racy.reverse")" = 63 ]
tap_ok $? "a missing __syncthreads gives another result in reverse order ($(cat "$work/racy.forward") vs $(cat "$work/racy.reverse") of 64)"
[ "$(CUDA_VISIBLE_DEVICES= "$BIN" count)" = 0 ] && [ "$(CUDA_VISIBLE_DEVICES=0 "$BIN" count)" = 1 ]
tap_ok $? "CUDA_VISIBLE_DEVICES= hides the device, =0 shows it"
EPB_CUDA_EMU_ORDER=sideways "$BIN" >"$work/out" 2>&1
[ $? -ne 0 ] && grep -q "EPB_CUDA_EMU_ORDER='sideways'" "$work/out"
tap_ok $? "a bad EPB_CUDA_EMU_ORDER is refused" "$work/out"
# fault MESSAGE: the emulator must abort with MESSAGE on stderr
fault() {
    local name=$1 msg=$2
    "$BIN" "$name" >"$work/out" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 1 ] && [ $rc -ne 2 ] && grep -q -- "$msg" "$work/out"
    tap_ok $? "fault caught: $name ($(grep -m1 -o 'cuda_emu: .\{0,90\}' "$work/out"))" "$work/out"
}
fault divergent-barrier "wait at __syncthreads .* and 16 exited"
fault exited-lane "lane 5 (exited)"
fault divergent-shuffle "warp shuffles in divergent code"
fault kernel-out-of-bounds "past the end of the 1024-byte device allocation.*in kernel oob_kernel, block (0,0,0), thread"
fault kernel-reads-pageable "kernel read_kernel: argument 1 .* points to neither device memory nor pinned"
fault host-reads-device "host code touched device memory"
fault memcpy-wrong-kind "cudaMemcpyDeviceToHost): destination .* is device memory"
fault memcpy-past-end "runs past the end of the 1024-byte device allocation"
fault memset-host "cudaMemsetAsync(.*): not device memory"
fault free-host-pointer "cudaFree(.*): not a pointer cudaMalloc returned (pageable host memory)"
fault free-inside "inside an allocation"
fault use-after-free "fill_kernel: argument 0 .* points to neither"
fault gemm-host-matrix "cublasGemmEx: B = .* is not device memory"
fault grouped-host-pointers "cublasGemmGroupedBatchedEx: Aarray .* is not a device array"
tap_done
