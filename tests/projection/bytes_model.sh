#!/usr/bin/env bash
# The projection's traffic formulas (docs/METHOD.md) against the bytes bench counted on the real routing: agrs, tp2ep,
# dedup (and hier in groups of 2 at 4 ranks) at 2, 3 and 4 ranks, k 1 and 4, skew 0 and 1.5 (and at 2 and 4 ranks FP8
# dispatch, and an expert capacity with and without redundant experts), one unchecked iteration each; report --project's projection.csv holds both, per comm phase. The model gives expected bytes (the routing's
# busiest rank, skew fitted from its expert FLOPs), the run one sample of the routing: they must agree within 15%
# (T=512: the sampling noise of a rank's pair count is a few %). No timing. TAP output.
# Usage: bytes_model.sh BENCH REPORT SRCDIR
set -u
BENCH=$(realpath "$1") REPORT=$(realpath "$2") SRC=$(realpath "$3")
source "$SRC/tests/tap.sh"
if ! "$BENCH" --version | grep -q "mpi,"; then echo "1..0 # SKIP no MPI in this build"; exit 0; fi
for P in 2 3 4; do
    s=agrs,tp2ep,dedup
    [ $P = 4 ] && s=$s,hier:node_size=2
    for skew in 0 1.5; do
        "$BENCH" --strategy $s --experts 12 --tokens 512 --hidden 32 --ffn 32 --top-k 1,4 --skew $skew --ranks $P \
            -n 1 -w 0 -c 0 --csv runs.csv >out 2>err
        tap_ok $? "bench at $P ranks, skew $skew (bytes only)" err
    done
    [ $P = 3 ] && continue
    # the knobs of issue 22 at skew 1.5: an expert capacity (the hot experts' caps bind), redundant experts (the model
    # places by the same rule on the expected loads)
    "$BENCH" --strategy $s --experts 12 --tokens 512 --hidden 32 --ffn 32 --top-k 1,4 --skew 1.5 --ranks $P \
        --capacity-factor 0,1.25 --redundant 0,$P -n 1 -w 0 -c 0 --csv runs.csv >out 2>err
    tap_ok $? "bench at $P ranks, skew 1.5, capacity 0 and 1.25, 0 and $P redundant experts (bytes only)" err
    # FP8 dispatch (issue 22): rows of 36 bytes instead of 128, which the model must know too
    "$BENCH" --strategy $s --experts 12 --tokens 512 --hidden 32 --ffn 32 --top-k 1,4 --ranks $P --dispatch-dtype fp8 \
        -n 1 -w 0 -c 0 --csv runs.csv >out 2>err
    tap_ok $? "bench at $P ranks, --dispatch-dtype fp8 (bytes only)" err
done
"$REPORT" --project "$SRC/tests/projection/cluster.json" runs.csv -o proj --no-plots >out 2>err
tap_ok $? "report --project on the runs" err
python3 - proj/projection.csv >log 2>&1 <<'PY'
import csv, sys
bad, n = [], 0
for r in csv.DictReader(open(sys.argv[1])):
    if r["source"] != "csv" or r["phase"] not in ("layout", "dispatch", "combine", "combine_bwd", "dispatch_bwd", "grad_sync"):
        continue
    pb, mb = float(r["projected_bytes"]), float(r["measured_bytes"])
    n += 1
    if mb <= 0 and pb <= 0:
        continue
    ratio = pb / mb if mb > 0 else float("inf")
    # redundant experts: the model places the replicas on the expected shares, bench on its first batch's counts,
    # so which experts are replicated (grad_sync's all-reduce) and where (dedup's reach) may differ: 30% there
    # (docs/METHOD.md); every other phase 15%
    tol = 0.30 if "redundant=" in r["strategy"] and (r["phase"] == "grad_sync" or r["strategy"].startswith("dedup")) else 0.15
    print("%-28s %-16s %-12s model %10.0f measured %10.0f  %.3f" % (r["config"], r["strategy"], r["phase"], pb, mb, ratio))
    if not 1 - tol <= ratio <= 1 + tol:
        bad.append((r["config"], r["strategy"], r["phase"], ratio))
print("%d comm phases compared; outside 15%% (30%% where a placement decides): %s" % (n, bad or "none"))
sys.exit(1 if bad or n < 100 else 0)
PY
tap_ok $? "the model's bytes per comm phase within 15% of bench's on the real routing ($(tail -1 log | cut -d';' -f1))" log
tap_done
