#!/usr/bin/env bash
# Every strategy (and the chunked pipelines) on the CUDA backend checked against the single-device CPU computation at N ranks
# (every feature of published models at once too, FP8 dispatch, the expert capacity and redundant experts), in f32 (tolerance 2e-5) and bf16 (1e-2), with the default communicator (nccl with a GPU per rank, else mpi staging
# through host memory) and, at more than one rank, with --comm mpi. Exit 77 (skipped) when no GPU is visible, 1
# instead when EPB_REQUIRE_GPU is set (ci/gpu).
set -u
BENCH=$(realpath "$1") N=$2
source "$(dirname "$0")/tap.sh" # (its scratch folder goes on exit, a skip's too)
if [ "$(bench_gpus "$BENCH")" -eq 0 ]; then
    # ci/gpu sets EPB_REQUIRE_GPU: there a skip would hide that nothing ran
    if [ -n "${EPB_REQUIRE_GPU:-}" ] && [ "$EPB_REQUIRE_GPU" != 0 ]; then
        echo "EPB_REQUIRE_GPU is set but no CUDA device is visible (or CUDA is not built)"; exit 1
    fi
    echo "no CUDA device visible: skipped"; exit 77
fi
run() {
    local what=$1; shift
    "$BENCH" --device cuda --ranks "$N" -n 2 -w 1 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    tap_ok $rc "$N ranks: $what"
    [ $rc = 0 ] || grep -E "check:|FAIL|bench:" "$work/out" "$work/err" | sed 's/^/# /' | head -20
}
small=(--tokens 64 --hidden 64 --ffn 96)
piped="all,tp2ep:chunks=3,dedup:chunks=2,hier:node_size=1,chunks=2" # the chunked pipelines, hier with stage A
for dt in f32 bf16; do
    run "all strategies $dt and chunked ones, E 4,8 x k 1,2" --strategy "$piped" --dtype "$dt" --experts 4,8 --top-k 1,2 "${small[@]}"
    # with an expert capacity (issue 22): skew 4 drops pairs, which reach the kernels as -1 in the assignment
    run "all strategies $dt, sigmoid + route-norm, skew 4, capacity 1.25" --strategy all --dtype "$dt" --experts 8 \
        --top-k 2 --router sigmoid --route-norm --skew 4 --capacity-factor 1.25 "${small[@]}"
    [ "$N" -gt 1 ] && [ "$dt" = bf16 ] && run "tp2ep $dt padded to capacity 1 (zero rows in every block), skew 4" \
        --strategy tp2ep --dtype "$dt" --experts 8 --top-k 2 --skew 4 --capacity-factor 1 --pad-to-capacity "${small[@]}"
    # redundant experts (issue 22): N more slots, the replicas' gradients summed on the device (bf16: its sums)
    [ "$N" -gt 1 ] && [ "$dt" = bf16 ] && run "dedup in 2 chunks $dt: $N redundant experts, capacity 1.25, skew 4" \
        --strategy dedup:chunks=2 --dtype "$dt" --experts 8 --top-k 2 --skew 4 --capacity-factor 1.25 \
        --redundant "$N" "${small[@]}"
    [ "$N" -gt 1 ] && run "all strategies $dt, --comm mpi (staged)" --strategy all --dtype "$dt" --comm mpi \
        --experts 8 --top-k 2 "${small[@]}"
    # every feature of published models at once on the device (issue 14)
    run "all strategies $dt and chunked ones: gate-before, route-scale, groups, shared experts" --strategy "$piped" \
        --dtype "$dt" --experts 8 --top-k 3 --router sigmoid --route-norm --route-scale 2.5 --groups 4 --topk-groups 2 \
        --gate-before --shared 2 --shared-ffn 48 "${small[@]}"
    # FP8 dispatch (issue 22): the quant/dequant kernels and the packed rows through every exchange; D=136 is a full
    # scale block and a partial one, 8 bytes of scales and 136 codes a row
    # (bf16 only: f32's kernels are test_gpu_ops's, and the emulator's time is CI's)
    [ "$dt" = bf16 ] && run "all strategies $dt and chunked ones: --dispatch-dtype fp8, D=136" --strategy "$piped" \
        --dtype "$dt" --experts 8 --top-k 2 --dispatch-dtype fp8 --tokens 32 --hidden 136 --ffn 48
done
rows=$(tail -n +2 "$work/r.csv" | wc -l) bad=$(python3 -c 'import csv,sys; print(sum(r["check"] != "ok" or r["device"] != "cuda" for r in csv.DictReader(open(sys.argv[1]))))' "$work/r.csv")
[ "$bad" -eq 0 ] && [ "$rows" -gt 0 ]; tap_ok $? "$rows CSV rows, device cuda, all check=ok ($bad not)"
# collectives on device buffers, checked
"$BENCH" --coll all --device cuda --ranks "$N" -b 64K -e 1M -n 2 -w 1 --csv "$work/c.csv" >"$work/out" 2>"$work/err"
tap_ok $? "$N ranks: --coll all on device buffers, checked" "$work/err"
tap_done
