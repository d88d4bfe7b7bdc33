#!/usr/bin/env bash
# Every registered strategy checked against the single-device computation at N ranks: E in three multiples of N,
# k in {1, 2, 4} and k = E, both routers, with and without renormalisation, skew 0 and a skew that leaves experts
# (and ranks) without tokens; the pipelined ones also with chunks=2 and 4, and hier with a node size dividing N
# (both of its stages at 4 ranks). Bytes per phase equal each strategy's formula on the real routing (skew 0 and
# 1.5, k 1, 2, 4; the 3-rank skewed case sends and receives different amounts, so a send/receive mix-up fails);
# dedup's dispatch rows against tp2ep's; hier's inter-node bytes fewer than tp2ep's where tokens pick several
# experts of one remote node. Loss curves (--train 20) equal local's within 1e-6. The strategy names come from the
# registry (bench --strategy list), never from this file. TAP output from this script only.
set -u
BENCH=$(realpath "$1") N=$2 HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tap.sh"
source "$HERE/moe_lib.sh"
mapfile -t STRATS < <("$BENCH" --strategy list | awk '/^[a-z]/ {print $1}')
[ "${#STRATS[@]}" -ge 5 ]; tap_ok $? "the registry lists ${#STRATS[@]} strategies (${STRATS[*]})"
# the pipelined strategies (those declaring chunks) with 2 and 4 chunks, hier on nodes of NS ranks
mapfile -t PIPED < <("$BENCH" --strategy list | awk '/^[a-z]/ {s=$1} /^  :chunks=/ {print s}')
NS=$((N % 2 ? N : 2)) # divides N: 2 at 2 and 4 ranks (two stages at 4), N at 1 and 3
EXTRA=all
for s in "${PIPED[@]}"; do EXTRA+=",$s:chunks=2,$s:chunks=4"; done
EXTRA+=",hier:node_size=$NS,hier:node_size=$NS,chunks=3"
[ "$N" = 3 ] && EXTRA+=",hier:node_size=1"
small=(--tokens 24 --hidden 32 --ffn 48)
E1=$((N > 2 ? N : 4)) E2=$((2 * E1)) E3=$((4 * E1)) # multiples of N: 4,8,16 at 1, 2 and 4 ranks; 3,6,12 at 3
run "all strategies, E $E1,$E2,$E3 x k 1,2,$((E1 < 4 ? E1 : 4)), softmax" --strategy all --experts $E1,$E2,$E3 \
    --top-k 1,2,$((E1 < 4 ? E1 : 4)) "${small[@]}"
run "every strategy, chunks 2 and 4, hier node_size $NS: E $E1,$E2 x k 1,2,$E1 (= E)" --strategy "$EXTRA" \
    --experts $E1,$E2 --top-k 1,2,$E1 "${small[@]}"
run "all strategies, sigmoid + route-norm" --strategy "$EXTRA" --experts $E2 --top-k 1,2,4 --router sigmoid --route-norm "${small[@]}"
run "all strategies, softmax + route-norm, seed 3" --strategy "$EXTRA" --experts $E1,$E3 --top-k 2 --route-norm --seed 3 "${small[@]}"
run "all strategies, skew 8: cold experts and ranks get no tokens" --strategy "$EXTRA" --experts $E2,$E3 --top-k 1,2 --skew 8 "${small[@]}"
rows=$(tail -n +2 "$work/r.csv" | wc -l)
bad=$(python3 -c 'import csv,sys; print(sum(r["check"] != "ok" for r in csv.DictReader(open(sys.argv[1]))))' "$work/r.csv")
[ "$bad" -eq 0 ] && [ "$rows" -gt 0 ]; tap_ok $? "$rows CSV rows, all check=ok ($bad not)"
csv_all "$work/r.csv" '(r["coll"] != "") == (r["kind"] in ("comm", "sync") and float(r["t_med_us"]) > 0)'
tap_ok $? "every comm and sync phase that ran names its collectives; no compute phase does"
# each strategy's traffic description (its registry entry, moe/traffic.h) against the wire, on the run's own routing
csv_all "$work/r.csv" 'float(r["model_bytes"]) >= 0 and abs(float(r["bytes"]) - float(r["model_bytes"])) <= 0.5'
tap_ok $? "every phase of every run sent the bytes its strategy's traffic description expects (model_bytes)"
# the load columns: without replicas or a capacity the busiest rank holds its own experts' pairs (at least the mean,
# T k), nothing is dropped, and the replicated local computes exactly its own T k rows
csv_all "$work/r.csv" 'float(r["dropped"]) == 0 and float(r["load_max"]) == float(r["load_plain"]) and float(r["load_max"]) >= int(r["tokens"]) * int(r["top_k"]) and (r["op"] != "local" or float(r["load_max"]) == int(r["tokens"]) * int(r["top_k"]))'
tap_ok $? "load_max = load_plain >= T k on every row (local: = T k), dropped 0"
# skew 8 really leaves experts empty
"$BENCH" --ranks "$N" -n 1 -w 0 --strategy tp2ep --experts $E2 --top-k 1 --skew 8 "${small[@]}" --dump "$work/dump" --csv "$work/d.csv" >/dev/null 2>&1
python3 -c "
import struct,sys
b=open('$work/dump/tokens_per_expert.npy','rb').read()
hl=struct.unpack('<H',b[8:10])[0]; v=struct.unpack('<${E2}q',b[10+hl:10+hl+8*$E2])
sys.exit(0 if 0 in v and sum(v)==$N*24 else 1)"
tap_ok $? "skew 8 leaves some expert with no tokens (dump)"
# Bytes per phase equal the formulas evaluated on the real routing, written again in Python (independently of the
# traffic descriptions) (topk_idx from a dump of the same configuration),
# max over ranks, for every strategy (tests/moe_volume.py holds the formulas). tp2ep, dedup and hier are one
# formula over groups of ns ranks: a token goes once to each other group that owns any of its experts (rows of D x 4
# bytes plus k int32 indices and k float32 gates; back: D x 4, the gate gradients 4k more), and inside a group
# each (token, expert) pair goes to its owner (D x 4); tp2ep is one group of P ranks, dedup P groups of one rank.
BYTES_SPECS="tp2ep,tp2ep:chunks=2,agrs,local,dedup,dedup:chunks=4,hier:node_size=$NS,hier:node_size=$NS,chunks=2"
[ "$N" = 3 ] && BYTES_SPECS+=",hier:node_size=1"
[ "$N" = 4 ] && BYTES_SPECS+=",hier:node_size=4,hier:node_size=1"
KS=$( ((E2 >= 4)) && echo "1 2 4" || echo "1 2")
for skew in 0 1.5; do
    rm -f "$work/b.csv"
    for k in $KS; do
        rm -rf "$work/bd$k"
        "$BENCH" --ranks "$N" -n 1 -w 0 -c 0 --strategy local --experts $E2 --top-k $k --skew $skew "${small[@]}" \
            --dump "$work/bd$k" --csv "$work/dump.csv" >/dev/null 2>"$work/err"
    done
    "$BENCH" --ranks "$N" -n 1 -w 0 -c 0 --strategy "$BYTES_SPECS" --experts $E2 --top-k "${KS// /,}" --skew $skew \
        "${small[@]}" --csv "$work/b.csv" >"$work/out" 2>"$work/err"
    tap_ok $? "$N ranks, skew $skew: every strategy runs for the byte counts" "$work/err"
    python3 "$HERE/moe_volume.py" "$work/b.csv" "$work" "$N" >"$work/vol" 2>&1
    tap_ok $? "$N ranks, skew $skew, k ${KS// /,}: bytes per phase equal each strategy's formula on the real routing" "$work/vol"
    sed -n 's/^NOTE /# /p' "$work/vol"
done
if [ "$N" = 2 ]; then # DESIGN.md's dedup example: E=16, k=4, P=2, uniform routing; 256 tokens per rank
    rm -rf "$work/bd4" "$work/b.csv"
    "$BENCH" --ranks 2 -n 1 -w 0 -c 0 --strategy local --experts 16 --top-k 4 --tokens 256 --hidden 32 --ffn 48 \
        --dump "$work/bd4" --csv "$work/dump.csv" >/dev/null 2>"$work/err"
    "$BENCH" --ranks 2 -n 1 -w 0 -c 0 --strategy dedup,tp2ep --experts 16 --top-k 4 --tokens 256 --hidden 32 --ffn 48 \
        --csv "$work/b.csv" >/dev/null 2>"$work/err"
    python3 "$HERE/moe_volume.py" "$work/b.csv" "$work" 2 >"$work/vol" 2>&1
    tap_ok $? "2 ranks, E=16 k=4: dedup's and tp2ep's bytes equal their formulas on the real routing" "$work/vol"
    sed -n 's/^NOTE /# /p' "$work/vol"
    echo "# uniform routing predicts dedup (1 - C(8,4)/C(16,4)) T = 0.96 T rows per rank, tp2ep k(P-1)/P T = 2 T pairs"
fi
if [ "$N" = 3 ]; then # the skewed 3-rank routing must tell sending from receiving, or the case above proves nothing
    "$BENCH" --ranks 3 -n 1 -w 0 -c 0 --strategy tp2ep --experts $E2 --top-k 2 --skew 1.5 "${small[@]}" --csv "$work/s.csv" >/dev/null 2>&1
    python3 -c 'import csv,sys; g={r["phase"]: float(r["bytes"]) for r in csv.DictReader(open(sys.argv[1]))}; sys.exit(0 if g["dispatch"] != g["combine"] else 1)' "$work/s.csv"
    tap_ok $? "3 ranks, skew 1.5: the busiest sender and the busiest receiver move different bytes"
fi
# loss curves: every registered strategy (and the chunked and grouped variants), equal to local's at every step
# within 1e-6 relative
"$BENCH" --ranks "$N" --strategy "$EXTRA" --experts $E2 --top-k 2 "${small[@]}" --train 20 --loss-csv "$work/loss.csv" >/dev/null 2>"$work/err"
python3 - "$work/loss.csv" "${STRATS[@]}" <<'PY'
import csv, sys
c = {}
for r in csv.DictReader(open(sys.argv[1])):
    c.setdefault((r["strategy"], r["params"]), []).append(float(r["loss"]))
ref = c[("local", "")]
names = sorted({s for s, _ in c})
worst = max(abs(a - b) / abs(b) for v in c.values() for a, b in zip(v, ref))
print("# %d curves of %d steps; worst relative difference from local's %.2e" % (len(c), len(ref), worst))
ok = names == sorted(sys.argv[2:]) and all(len(v) == 20 for v in c.values()) and ref[-1] < ref[0] and len(c) > len(names)
sys.exit(0 if ok and worst <= 1e-6 else 1)
PY
tap_ok $? "loss curves of every strategy and variant agree with local's at all 20 steps within 1e-6 and decrease" "$work/loss.csv" "$work/err"
tap_done
