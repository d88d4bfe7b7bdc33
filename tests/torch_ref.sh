#!/usr/bin/env bash
# bench --dump checked by an independent implementation: tests/torch_ref.py recomputes the step in float64 with
# PyTorch autograd (DESIGN.md's layer written again, sharing no code with moe/) and compares y, dx, every gradient,
# the top-k and the bias update.
#   cpu: every registered strategy (and its chunked variant) at 2 ranks, some at 1 and 4 (hier with both of its
#        stages), both routers, skew, route-norm, k up to E, on the CPU; then three
#        planted faults that the reference must catch (a y off by 1e-3 of its range, one top-k choice changed, a
#        NaN in a gradient), and the eager timing of tests/torch_ref.py once (on the CPU).
#   gpu: tp2ep at 1 rank, agrs, dedup and hier (chunked) at 2 ranks sharing the GPU, f32 and bf16, and every feature
#        of published models at once. Exit 77 (skipped) when no GPU is visible, 1 instead when EPB_REQUIRE_GPU is set
#        (ci/gpu).
#   features: the features of published models (issue 14) on the CPU: each alone (gate before the experts, route
#        scale, group-limited routing, shared experts) on a different strategy, all together on every registered
#        strategy (the pipelined ones chunked), the deepseek-v3 and llama4-scout presets scaled down, the expert
#        capacity (both drop policies, padded tp2ep, with every feature), redundant experts with a capacity; then
#        planted faults in config.json (each feature's setting changed, the capacity's among them) that the
#        reference must catch.
# Usage: torch_ref.sh BENCH TORCH_REF_PY cpu|gpu|features. Exit 77 (skipped) when no Python here imports torch and numpy, 1
# instead when EPB_REQUIRE_TORCH is set (ci/test sets it: its bootstrap installs python3-torch; so does ci/gpu).
set -u
BENCH=$(realpath "$1") REF=$(realpath "$2") MODE=$3
py=
for p in ${EPB_PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch, numpy' >/dev/null 2>&1; then py=$p; break; fi
done
if [ -z "$py" ]; then
    if [ -n "${EPB_REQUIRE_TORCH:-}" ] && [ "$EPB_REQUIRE_TORCH" != 0 ]; then
        echo "EPB_REQUIRE_TORCH is set but no python3 here imports torch and numpy (Debian: python3-torch)"; exit 1
    fi
    echo "no python3 with torch and numpy: skipped"; exit 77
fi
source "$(dirname "$0")/tap.sh"
if [ "$MODE" = gpu ] && [ "$(bench_gpus "$BENCH")" -eq 0 ]; then
    if [ -n "${EPB_REQUIRE_GPU:-}" ] && [ "$EPB_REQUIRE_GPU" != 0 ]; then
        echo "EPB_REQUIRE_GPU is set but no CUDA device is visible (or CUDA is not built)"; exit 1
    fi
    echo "no CUDA device visible: skipped"; exit 77
fi
echo "# $py: torch $("$py" -c 'import torch; print(torch.__version__)')"
small=(--tokens 96 --hidden 64 --ffn 128 --experts 8 -n 1 -w 0 -c 0)
base=("${small[@]}") # what check puts first: the small layer, or (presets) only the step's size
cpu=(--device cpu) # the CPU checks stay on the CPU where a GPU is visible (the default device then)
# every feature of issue 14 at once (E=8: 4 groups of 2, the tokens' 2 best kept, k=3 of those 4 experts)
feats=(--router sigmoid --route-norm --route-scale 2.5 --groups 4 --topk-groups 2 --gate-before --shared 2 --shared-ffn 48
       --top-k 3)
# check NAME BENCH-ARGS...: dump one step into a directory of its own; the reference checks every dump at once
# (one Python process: PyTorch takes ~2 s to load), in checks_done
pend_dir=() pend_what=() pend_want=()
check() {
    local what=$1 d=$work/d${#pend_dir[@]}; shift
    rm -rf "$d"
    if ! "$BENCH" "${base[@]}" "$@" --dump "$d" --csv "$work/r.csv" >"$work/out" 2>&1; then
        tap_ok 1 "$what: bench --dump failed" "$work/out"; return
    fi
    pend_dir+=("$d") pend_what+=("$what") pend_want+=(ok)
}
# expect_fault DIR NAME WHAT: DIR is a dump with a fault planted; the reference must fail on it (exit 1) and name
# the array NAME as differing
expect_fault() { pend_dir+=("$1") pend_want+=("$2") pend_what+=("planted fault caught: $3"); }
checks_done() {
    [ ${#pend_dir[@]} -gt 0 ] || return 0
    "$py" "$REF" check "${pend_dir[@]}" "$work/none" >"$work/ref" 2>&1 # none: a dump that is not there must not pass
    grep -q "^exit 2" "$work/none.ref"; tap_ok $? "the reference fails a dump that is not there" "$work/none.ref" "$work/ref"
    local i rc
    for i in "${!pend_dir[@]}"; do
        local f=${pend_dir[$i]}.ref want=${pend_want[$i]}
        rc=$(sed -n 's/^exit //p' "$f" 2>/dev/null)
        if [ "$want" = ok ]; then
            [ "$rc" = 0 ]; tap_ok $? "${pend_what[$i]}: PyTorch agrees" "$f"
        else
            [ "$rc" = 1 ] && grep -q "^  $want .*FAIL" "$f"
            tap_ok $? "${pend_what[$i]} (exit $rc, $want differs)" "$f"
        fi
    done
    pend_dir=() pend_what=() pend_want=()
}
if [ "$MODE" = gpu ]; then
    for dt in f32 bf16; do
        check "GPU $dt: tp2ep, 1 rank, route-norm k=2" --device cuda --dtype "$dt" --ranks 1 --strategy tp2ep \
            --top-k 2 --route-norm
        check "GPU $dt: agrs, 2 ranks (mpi, staged) k=2" --device cuda --dtype "$dt" --comm mpi --ranks 2 \
            --strategy agrs --top-k 2
        check "GPU $dt: dedup, 2 ranks (mpi, staged) k=4" --device cuda --dtype "$dt" --comm mpi --ranks 2 \
            --strategy dedup --top-k 4
        check "GPU $dt: hier:node_size=1,chunks=2, 2 ranks (mpi, staged) k=2" --device cuda --dtype "$dt" --comm mpi \
            --ranks 2 --strategy hier:node_size=1,chunks=2 --top-k 2
        check "GPU $dt: tp2ep:chunks=2, 2 ranks (mpi, staged), every feature" --device cuda --dtype "$dt" --comm mpi \
            --ranks 2 --strategy tp2ep:chunks=2 "${feats[@]}"
    done
    checks_done
    tap_done
    exit
fi
mapfile -t strats < <("$BENCH" --strategy list | awk '/^[a-z]/ {print $1}')
mapfile -t piped < <("$BENCH" --strategy list | awk '/^[a-z]/ {s=$1} /^  :chunks=/ {print s}')
if [ "$MODE" = features ]; then
    check "gate-before alone: tp2ep:chunks=2, 2 ranks, softmax k=2" "${cpu[@]}" --ranks 2 --strategy tp2ep:chunks=2 \
        --top-k 2 --gate-before
    check "route-scale alone: agrs, 2 ranks, sigmoid + route-norm, scale 2.5, k=2" "${cpu[@]}" --ranks 2 --strategy agrs \
        --top-k 2 --router sigmoid --route-norm --route-scale 2.5
    check "groups alone: dedup, 2 ranks (two groups of 2 experts each), 2 of 4 groups, k=3" "${cpu[@]}" --ranks 2 \
        --strategy dedup --top-k 3 --groups 4 --topk-groups 2
    check "shared experts alone: hier:node_size=1, 2 ranks, 3 shared of FFN 32, k=2" "${cpu[@]}" --ranks 2 \
        --strategy hier:node_size=1 --top-k 2 --shared 3 --shared-ffn 32
    # all together on every registered strategy (the registry's list); the pipelined ones in 2 chunks
    for s in "${strats[@]}"; do
        spec=$s
        for p in "${piped[@]}"; do [ "$p" = "$s" ] && spec="$s:chunks=2"; done
        check "every feature: $spec, 2 ranks" "${cpu[@]}" --ranks 2 --strategy "$spec" "${feats[@]}"
    done
    check "every feature: hier:node_size=2,chunks=2, 4 ranks (both stages)" "${cpu[@]}" --ranks 4 \
        --strategy hier:node_size=2,chunks=2 "${feats[@]}"
    # the expert capacity (issue 22): the reference drops by its own reading of the rule (tests/torch_ref.py)
    check "capacity 1, drop policy position: dedup:chunks=2, 2 ranks, skew 1, k=3" "${cpu[@]}" --ranks 2 \
        --strategy dedup:chunks=2 --top-k 3 --skew 1 --capacity-factor 1 --drop-policy position
    check "capacity 1.25, drop policy probs, padded: tp2ep, 4 ranks, skew 1, k=2" "${cpu[@]}" --ranks 4 \
        --strategy tp2ep --top-k 2 --skew 1 --capacity-factor 1.25 --pad-to-capacity
    check "capacity 1 with every feature: hier:node_size=2,chunks=2, 4 ranks" "${cpu[@]}" --ranks 4 \
        --strategy hier:node_size=2,chunks=2 "${feats[@]}" --capacity-factor 1
    # redundant experts (issue 22): the dump is the unreplicated layer's, the replicas' gradients summed
    check "2 redundant experts with capacity 1.25: dedup, 2 ranks, skew 2" "${cpu[@]}" --ranks 2 \
        --strategy dedup --top-k 2 --skew 2 --capacity-factor 1.25 --redundant 2
    base=(--tokens 32 -n 1 -w 0 -c 0)
    check "--model deepseek-v3 --scale-down 64 (E=256 k=8, 4 of 8 groups, scale 2.5, 1 shared): tp2ep, 2 ranks" \
        "${cpu[@]}" --ranks 2 --strategy tp2ep --model deepseek-v3 --scale-down 64
    check "--model llama4-scout --scale-down 64 (E=16 k=1 sigmoid, gate-before, 1 shared): local, 1 rank" "${cpu[@]}" \
        --ranks 1 --strategy local --model llama4-scout --scale-down 64
    # planted faults: a dump of every feature with one of them said otherwise in config.json: the reference must
    # fail (exit 1) and name what differs, so each setting is really read and applied
    base=("${small[@]}")
    rm -rf "$work/good"
    "$BENCH" "${small[@]}" "${cpu[@]}" --ranks 2 --strategy tp2ep "${feats[@]}" --dump "$work/good" --csv "$work/r.csv" \
        >/dev/null 2>&1
    plant_cfg() {
        local what=$1 code=$2 want=$3 d=$work/bad${#pend_dir[@]}
        rm -rf "$d" && cp -r "$work/good" "$d"
        "$py" -c "import json, sys; c = json.load(open(sys.argv[1])); $code; json.dump(c, open(sys.argv[1], 'w'))" \
            "$d/config.json"
        expect_fault "$d" "$want" "$what"
    }
    plant_cfg "config.json says gate after the experts" 'c["gate_before"] = False' y
    plant_cfg "config.json says route_scale 2.4" 'c["route_scale"] = 2.4' topk_w
    plant_cfg "config.json says 3 of 4 groups" 'c["topk_groups"] = 3' topk_idx
    plant_cfg "config.json says no shared experts" 'c["shared"] = 0; c["shared_ffn"] = 0' y
    plant_cfg "config.json says shared experts of FFN 40" 'c["shared_ffn"] = 40' shared_w1
    rm -rf "$work/good"
    "$BENCH" "${small[@]}" "${cpu[@]}" --ranks 2 --strategy tp2ep --top-k 3 --skew 1 --capacity-factor 1 --dump "$work/good" \
        --csv "$work/r.csv" >/dev/null 2>&1
    plant_cfg "config.json says drop policy position" 'c["drop_policy"] = "position"' y
    plant_cfg "config.json says capacity factor 2" \
        'c["capacity_factor"] = 2; c["capacity"] = min(c["tokens"], -(-2 * c["tokens"] * c["top_k"] // c["experts"]))' y
    plant_cfg "config.json says no capacity" 'c["capacity_factor"] = 0' y
    checks_done
    tap_done
    exit
fi
# every registered strategy (the registry's list), at 2 ranks; the pipelined ones in 3 chunks too
for s in "${strats[@]}"; do
    check "$s, 2 ranks, softmax skew 1.5 k=4" "${cpu[@]}" --ranks 2 --strategy "$s" --top-k 4 --skew 1.5
done
for s in "${piped[@]}"; do
    check "$s:chunks=3, 2 ranks, sigmoid + route-norm k=2" "${cpu[@]}" --ranks 2 --strategy "$s:chunks=3" --top-k 2 \
        --router sigmoid --route-norm
done
check "hier:node_size=2, 4 ranks (both stages), softmax k=8 (every expert)" "${cpu[@]}" --ranks 4 \
    --strategy hier:node_size=2 --top-k 8
check "dedup, 4 ranks, softmax skew 4 k=3" "${cpu[@]}" --ranks 4 --strategy dedup --top-k 3 --skew 4
check "local, 1 rank, softmax k=2" "${cpu[@]}" --ranks 1 --strategy local --top-k 2
check "agrs, 2 ranks, sigmoid + route-norm k=2" "${cpu[@]}" --ranks 2 --strategy agrs --top-k 2 --router sigmoid --route-norm
check "tp2ep, 2 ranks, softmax skew 1.5 k=4" "${cpu[@]}" --ranks 2 --strategy tp2ep --top-k 4 --skew 1.5
check "agrs, 4 ranks, softmax skew 4 k=1" "${cpu[@]}" --ranks 4 --strategy agrs --top-k 1 --skew 4
check "tp2ep, 4 ranks, sigmoid k=8 (every expert)" "${cpu[@]}" --ranks 4 --strategy tp2ep --top-k 8 --router sigmoid

# ci/gpu's PyTorch eager timing, tried on the CPU: it must run and print a positive time
"$py" "$REF" time 128 64 128 8 2 cpu >"$work/ref" 2>&1
grep -Eq '^torch_eager_us [0-9.]+$' "$work/ref" && awk '{exit !($2 > 0)}' "$work/ref"
tap_ok $? "torch_ref.py time (bf16, on the CPU) prints torch_eager_us" "$work/ref"

# planted faults in a good dump: each must make the reference fail (exit 1) and name the array
rm -rf "$work/good"
"$BENCH" "${small[@]}" "${cpu[@]}" --ranks 1 --strategy local --top-k 2 --dump "$work/good" --csv "$work/r.csv" >/dev/null 2>&1
plant() {
    local what=$1 name=$2 code=$3 d=$work/bad${#pend_dir[@]}
    rm -rf "$d" && cp -r "$work/good" "$d"
    "$py" -c "import numpy as np, sys; a = np.load(sys.argv[1]); $code; np.save(sys.argv[1], a)" "$d/$name.npy"
    expect_fault "$d" "$name" "$what"
}
plant "y off by 1e-3 of its range in one element" y 'a[3, 5] += 1e-3 * abs(a).max()'
plant "one top-k choice changed" topk_idx 'a[7, 0] = (a[7, 0] + 1) % 8'
plant "a NaN in dw2" dw2 'a[0, 0, 0] = np.nan'
checks_done
tap_done
