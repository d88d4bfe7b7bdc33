#!/usr/bin/env bash
# --device and --dtype validation, which runs anywhere: without a GPU, --device cuda is refused with exit 2 and one
# line naming the option; --dtype bf16 on the CPU likewise; --comm nccl needs --device cuda, a GPU and a build
# with NCCL. Where a GPU is visible, the default device is cuda (the CSV's device column says so). TAP output.
set -u
BENCH=$(realpath "$1")
source "$(dirname "$0")/tap.sh"
expect() { # exit code, expected stderr substring, then bench arguments
    local want_rc=$1 want=$2; shift 2
    "$BENCH" "$@" >"$work/out" 2>"$work/err"
    local rc=$? lines
    lines=$(wc -l < "$work/err")
    if [ "$rc" -eq "$want_rc" ] && { [ "$want_rc" -eq 0 ] || { [ "$lines" -eq 1 ] && grep -q -- "$want" "$work/err"; }; }; then
        tap_ok 0 "$* -> exit $rc${want:+: $(head -1 "$work/err")}"
    else
        tap_ok 1 "$* -> exit $rc, $lines stderr line(s), want exit $want_rc with '$want'" "$work/err"
    fi
}
gpus=$(bench_gpus "$BENCH")
nccl=$("$BENCH" --version | sed -n 's/^NCCL: //p')
echo "# GPUs visible: $gpus; NCCL: $nccl"
small=(--tokens 8 --hidden 16 --ffn 16 --experts 4 -n 1 -w 0 --ranks 1 --csv "$work/r.csv")
expect 2 "--device 'tpu': expected cpu or cuda" --strategy local --device tpu "${small[@]}"
expect 2 "--dtype bf16: the CPU backend runs f32" --strategy local --device cpu --dtype bf16 "${small[@]}"
expect 2 "--comm nccl takes device buffers: it needs --device cuda" --coll allreduce --device cpu --comm nccl --ranks 1 --csv "$work/r.csv"
expect 2 "--calibrate --dtype bf16: the CPU backend runs f32" --calibrate --device cpu --dtype bf16 --csv "$work/r.csv"
expect 2 "--calibrate takes one --hidden and one --ffn" --calibrate --hidden 64,128 --csv "$work/r.csv"
# --comm nccl is refused before any rank starts (exit 2, one line) when NCCL is not built or no GPU is visible;
# --ranks 2 proves it: a refusal after the launch would come from every rank
if [ "$nccl" != built ]; then
    expect 2 "--comm nccl: this build has no NCCL" --coll allreduce --comm nccl --ranks 2 --csv "$work/r.csv"
elif [ "$gpus" -eq 0 ]; then
    expect 2 "--comm nccl needs a GPU per rank, and no CUDA device is visible" --coll allreduce --comm nccl --ranks 2 \
        --csv "$work/r.csv"
fi
if [ "$gpus" -eq 0 ]; then
    expect 2 "--device cuda: no CUDA device is visible" --strategy local --device cuda "${small[@]}"
    expect 2 "--device cuda: no CUDA device is visible" --coll allreduce --device cuda --ranks 1 --csv "$work/r.csv"
    expect 2 "--device cuda: no CUDA device is visible" --calibrate --device cuda --csv "$work/r.csv"
    # no GPU: the default stays cpu
    expect 0 "" --strategy local "${small[@]}"
    tail -n 1 "$work/r.csv" | grep -q ',cpu,'; tap_ok $? "without a GPU the default device is cpu" "$work/r.csv"
else
    expect 0 "" --strategy local "${small[@]}"
    tail -n 1 "$work/r.csv" | grep -q ',cuda,'; tap_ok $? "with a GPU the default device is cuda" "$work/r.csv"
fi
tap_done
