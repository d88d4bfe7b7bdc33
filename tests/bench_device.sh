#!/usr/bin/env bash
# --device and --dtype validation, which runs anywhere: without a GPU, --device cuda is refused with exit 2 and one
# line naming the option; --dtype bf16 on the CPU likewise; --comm nccl needs --device cuda. Where a GPU is
# visible, the default device is cuda (the CSV's device column says so). TAP output.
set -u
BENCH=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99
n=0 failed=0
expect() { # exit code, expected stderr substring, then bench arguments
    local want_rc=$1 want=$2; shift 2
    n=$((n + 1))
    "$BENCH" "$@" >"$work/out" 2>"$work/err"
    local rc=$? lines
    lines=$(wc -l < "$work/err")
    if [ "$rc" -eq "$want_rc" ] && { [ "$want_rc" -eq 0 ] || { [ "$lines" -eq 1 ] && grep -q -- "$want" "$work/err"; }; }; then
        echo "ok $n - $* -> exit $rc${want:+: $(head -1 "$work/err")}"
    else
        failed=$((failed + 1))
        echo "not ok $n - $* -> exit $rc, $lines stderr line(s), want exit $want_rc with '$want'"
        sed 's/^/# /' "$work/err" | head -5
    fi
}
gpus=$("$BENCH" --version | sed -n 's/.*, \([0-9]*\) GPU(s) visible.*/\1/p')
gpus=${gpus:-0}
echo "# GPUs visible: $gpus"
small=(--tokens 8 --hidden 16 --ffn 16 --experts 4 -n 1 -w 0 --ranks 1 --csv "$work/r.csv")
expect 2 "--device 'tpu': expected cpu or cuda" --strategy local --device tpu "${small[@]}"
expect 2 "--dtype bf16: the CPU backend runs f32" --strategy local --device cpu --dtype bf16 "${small[@]}"
expect 2 "--comm nccl takes device buffers: it needs --device cuda" --coll allreduce --device cpu --comm nccl --ranks 1 --csv "$work/r.csv"
expect 2 "--device cuda: --calibrate" --calibrate --device cuda --csv "$work/r.csv"
if [ "$gpus" -eq 0 ]; then
    expect 2 "--device cuda: no CUDA device is visible" --strategy local --device cuda "${small[@]}"
    expect 2 "--device cuda: no CUDA device is visible" --coll allreduce --device cuda --ranks 1 --csv "$work/r.csv"
    # no GPU: the default stays cpu
    expect 0 "" --strategy local "${small[@]}"
    n=$((n + 1))
    if tail -n 1 "$work/r.csv" | grep -q ',cpu,'; then echo "ok $n - without a GPU the default device is cpu"
    else failed=$((failed + 1)); echo "not ok $n - default device without a GPU"; tail -n 1 "$work/r.csv" | sed 's/^/# /'; fi
else
    expect 0 "" --strategy local "${small[@]}"
    n=$((n + 1))
    if tail -n 1 "$work/r.csv" | grep -q ',cuda,'; then echo "ok $n - with a GPU the default device is cuda"
    else failed=$((failed + 1)); echo "not ok $n - default device with a GPU"; tail -n 1 "$work/r.csv" | sed 's/^/# /'; fi
fi
echo "1..$n"
[ "$failed" -eq 0 ]
