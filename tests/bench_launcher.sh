#!/usr/bin/env bash
# bench started by mpirun directly: it must not re-launch, must honour the launcher's rank count, and must
# refuse a --ranks that disagrees with it. Also --help/--version and the calibration rows. TAP output.
set -u
BENCH=$(realpath "$1") MPIRUN=${2:-}
source "$(dirname "$0")/tap.sh"
"$BENCH" --help >"$work/out" 2>"$work/err"; tap_ok $? "--help exits 0" "$work/err"
grep -q -- "--min-bytes SIZE" "$work/out" && grep -q "default 64K" "$work/out" && grep -q "Examples:" "$work/out"; tap_ok $? "--help lists options with defaults and examples" "$work/err"
"$BENCH" --version >"$work/out" 2>"$work/err" && grep -q "^epbench .* (git " "$work/out" && grep -q "^communicators: " "$work/out"; tap_ok $? "--version prints version, git revision and the built-in parts" "$work/err"
"$BENCH" --calibrate -n 4 -w 1 -e 8M --ranks 1 --csv "$work/peak.csv" >"$work/out" 2>"$work/err"; tap_ok $? "--calibrate runs" "$work/err"
csv_any "$work/peak.csv" 'r["mode"] == "peak" and r["op"] == "memcpy" and float(r["algbw_gbps"]) > 0' &&
    csv_any "$work/peak.csv" 'r["mode"] == "peak" and r["op"] == "gemm" and float(r["tflops"]) > 0'; tap_ok $? "calibration writes memcpy GB/s and gemm TFLOP/s peak rows" "$work/err"
# OpenBLAS core type: bench restarts itself with OPENBLAS_CORETYPE=SkylakeX when OpenBLAS picked AVX2 kernels on
# an AVX-512 CPU. EPB_TEST_BLAS_CORE pretends OpenBLAS picked Haswell; the outcome depends on this CPU's flags.
if "$BENCH" --version | grep -q "OpenBLAS"; then
    env -u OPENBLAS_CORETYPE EPB_TEST_BLAS_CORE=Haswell "$BENCH" --calibrate -n 1 -w 0 -e 1M --ranks 1 --csv "$work/ct.csv" >"$work/out" 2>"$work/err"
    rc=$?
    if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo; then
        [ $rc = 0 ] && grep -q "running with OPENBLAS_CORETYPE=SkylakeX" "$work/err" && [ "$(grep -c "OPENBLAS_CORETYPE" "$work/err")" = 1 ] &&
            csv_all "$work/ct.csv" '"blas=SkylakeX" in r["device_name"]'
        tap_ok $? "AVX2 kernels on an AVX-512 CPU: bench restarts once with OPENBLAS_CORETYPE=SkylakeX, device_name says blas=SkylakeX" "$work/err"
    else
        [ $rc = 0 ] && ! grep -q "OPENBLAS_CORETYPE" "$work/err"; tap_ok $? "no AVX-512 on this CPU: the AVX2 kernels stay, no restart" "$work/err"
    fi
    OPENBLAS_CORETYPE=Haswell EPB_TEST_BLAS_CORE=Haswell "$BENCH" --version >"$work/out" 2>"$work/err"
    [ $? = 0 ] && ! grep -q "running with" "$work/err" && grep -q "core=Haswell; OPENBLAS_CORETYPE=Haswell" "$work/out"; tap_ok $? "OPENBLAS_CORETYPE set by the user is kept" "$work/err"
fi
if [ -z "$MPIRUN" ] || ! "$BENCH" --version | grep -q "mpi,"; then
    echo "1..$n # SKIP no MPI in this build"; exit 0
fi
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
"$MPIRUN" "${root[@]}" --oversubscribe -np 2 "$BENCH" --coll allgather -b 8K -e 8K -n 2 -w 0 --csv "$work/r.csv" >"$work/out" 2>"$work/err"; tap_ok $? "mpirun -np 2 bench runs as launched" "$work/err"
! grep -q "launching" "$work/err"; tap_ok $? "no re-launch under mpirun" "$work/err"
csv_all "$work/r.csv" 'r["ranks"] == "2" and r["nodes"] == "1" and r["check"] == "ok"'; tap_ok $? "row says ranks=2, nodes=1, check ok" "$work/err"
"$MPIRUN" "${root[@]}" --oversubscribe -np 2 "$BENCH" --coll allgather --ranks 3 --csv "$work/r.csv" >"$work/out" 2>"$work/err"
rc=$?; [ $rc = 2 ] && grep -q -- "--ranks 3, but the launcher started 2 ranks" "$work/err" && [ "$(grep -c "^bench:" "$work/err")" -eq 1 ]; tap_ok $? "--ranks disagreeing with mpirun exits 2, one bench line (rank 0 only)" "$work/err"
"$BENCH" --coll allgather -b 8K -e 8K -n 2 -w 0 --ranks 2 --csv "$work/r.csv" >"$work/out" 2>"$work/err"
grep -q "^bench: launching: .*-np 2 .*--bind-to none .*--ranks 2" "$work/err"; tap_ok $? "started by hand with --ranks 2 it prints its mpirun line on stderr" "$work/err"
tap_done
