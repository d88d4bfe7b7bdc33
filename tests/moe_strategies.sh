#!/usr/bin/env bash
# Every registered strategy checked against the single-device computation at N ranks: E in three multiples of N,
# k in {1, 2, 4}, both routers, with and without renormalisation, skew 0 and a skew that leaves experts (and ranks)
# without tokens. Bytes per phase equal the formulas on the real routing (the 3-rank skewed case sends and receives
# different amounts, so a send/receive mix-up fails). Loss curves (--train) equal across strategies. The strategy
# names come from the registry (bench --strategy list), never from this file. TAP output from this script only.
set -u
BENCH=$(realpath "$1") N=$2
source "$(dirname "$0")/tap.sh"
run() { # description, then bench arguments
    local what=$1; shift
    "$BENCH" --ranks "$N" -n 1 -w 0 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    tap_ok $rc "$N ranks: $what"
    [ $rc = 0 ] || grep -E "check:|FAIL|bench:" "$work/out" "$work/err" | sed 's/^/# /' | head -20
}
mapfile -t STRATS < <("$BENCH" --strategy list | awk '{print $1}')
[ "${#STRATS[@]}" -ge 3 ]; tap_ok $? "the registry lists ${#STRATS[@]} strategies (${STRATS[*]})"
small=(--tokens 24 --hidden 32 --ffn 48)
E1=$((N > 2 ? N : 4)) E2=$((2 * E1)) E3=$((4 * E1)) # multiples of N: 4,8,16 at 1, 2 and 4 ranks; 3,6,12 at 3
run "all strategies, E $E1,$E2,$E3 x k 1,2,$((E1 < 4 ? E1 : 4)), softmax" --strategy all --experts $E1,$E2,$E3 \
    --top-k 1,2,$((E1 < 4 ? E1 : 4)) "${small[@]}"
run "all strategies, sigmoid + route-norm" --strategy all --experts $E2 --top-k 1,2,4 --router sigmoid --route-norm "${small[@]}"
run "all strategies, softmax + route-norm, seed 3" --strategy all --experts $E1,$E3 --top-k 2 --route-norm --seed 3 "${small[@]}"
run "all strategies, skew 8: cold experts and ranks get no tokens" --strategy all --experts $E2,$E3 --top-k 1,2 --skew 8 "${small[@]}"
rows=$(tail -n +2 "$work/r.csv" | wc -l)
bad=$(python3 -c 'import csv,sys; print(sum(r["check"] != "ok" for r in csv.DictReader(open(sys.argv[1]))))' "$work/r.csv")
[ "$bad" -eq 0 ] && [ "$rows" -gt 0 ]; tap_ok $? "$rows CSV rows, all check=ok ($bad not)"
csv_all "$work/r.csv" '(r["coll"] != "") == (r["kind"] in ("comm", "sync") and float(r["t_med_us"]) > 0)'
tap_ok $? "every comm and sync phase that ran names its collectives; no compute phase does"
# skew 8 really leaves experts empty
"$BENCH" --ranks "$N" -n 1 -w 0 --strategy tp2ep --experts $E2 --top-k 1 --skew 8 "${small[@]}" --dump "$work/dump" --csv "$work/d.csv" >/dev/null 2>&1
python3 -c "
import struct,sys
b=open('$work/dump/tokens_per_expert.npy','rb').read()
hl=struct.unpack('<H',b[8:10])[0]; v=struct.unpack('<${E2}q',b[10+hl:10+hl+8*$E2])
sys.exit(0 if 0 in v and sum(v)==$N*24 else 1)"
tap_ok $? "skew 8 leaves some expert with no tokens (dump)"
# Bytes per phase equal the formulas evaluated on the real routing (topk_idx from the dump), max over ranks. tp2ep
# sends the rows whose expert another rank owns (D x 4 bytes each) and gets back what it received; agrs moves
# (P-1) x T x D x 4 bytes plus routing metadata (index and gate, 8 bytes per pair forward, the gate gradient 4
# backward); local moves no tokens and all-reduces the expert gradients; all-reduces count as a ring, 2(P-1)/P.
# The layout phase: the all-reduce of the counts, plus tp2ep's all-to-all of them.
for strat in tp2ep agrs local; do for skew in 0 1.5; do
    rm -rf "$work/bd" "$work/b.csv"
    "$BENCH" --ranks "$N" -n 1 -w 0 -c 0 --strategy $strat --experts $E2 --top-k 2 --skew $skew "${small[@]}" --dump "$work/bd" --csv "$work/b.csv" >/dev/null 2>"$work/err"
    msg=$(python3 - "$work/bd" "$work/b.csv" "$N" "$strat" 2>&1 <<'PY'
import csv, json, struct, sys
d, f, P, strat = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = json.load(open(d + "/config.json"))
T, D, E, k, F = c["tokens"], c["hidden"], c["experts"], c["top_k"], c["ffn"]
b = open(d + "/topk_idx.npy", "rb").read()
hl = struct.unpack("<H", b[8:10])[0]
assert "'<i4'" in b[10:10 + hl].decode(), "topk_idx is not int32"
idx = struct.unpack("<%di" % (P * T * k), b[10 + hl:10 + hl + 4 * P * T * k])
El = E // P
ring = lambda n: 2.0 * (P - 1) / P * n if P > 1 else 0.0
sent = [0] * P; recv = [0] * P
for i, e in enumerate(idx):
    src, dst = i // k // T, e // El
    if src != dst: sent[src] += 1; recv[dst] += 1
want = {"layout": ring(E * 8), "grad_sync": ring(4 * D * E)}
if strat == "tp2ep":
    want.update({"layout": (P - 1) * El * 8 + ring(E * 8), "dispatch": max(sent) * D * 4,
                 "combine": max(recv) * D * 4, "combine_bwd": max(sent) * D * 4, "dispatch_bwd": max(recv) * D * 4})
elif strat == "agrs":
    want.update({"dispatch": (P - 1) * (T * D * 4 + 8 * T * k), "combine": (P - 1) * T * D * 4,
                 "combine_bwd": (P - 1) * T * D * 4, "dispatch_bwd": (P - 1) * (T * D * 4 + 4 * T * k)})
else:
    want["grad_sync"] = ring(4 * D * E + 3 * 4 * E * D * F)
got = {r["phase"]: float(r["bytes"]) for r in csv.DictReader(open(f))}
for p in got:
    want.setdefault(p, 0.0)
want["step"] = sum(v for p, v in want.items() if p != "step")
bad = ["%s: %g, formula %g" % (p, got.get(p, -1), v) for p, v in want.items() if abs(got.get(p, -1) - v) > 0.5]
if P > 1 and strat == "tp2ep" and sum(sent) == 0: bad.append("no pair left its rank: the test proves nothing")
print("; ".join(bad) if bad else "sent %s recv %s" % (sent, recv))
sys.exit(1 if bad else 0)
PY
    )
    tap_ok $? "$strat skew $skew: bytes per phase equal the formulas on the real routing ($msg)"
done; done
if [ "$N" = 3 ]; then # the skewed 3-rank routing must tell sending from receiving, or the case above proves nothing
    "$BENCH" --ranks 3 -n 1 -w 0 -c 0 --strategy tp2ep --experts $E2 --top-k 2 --skew 1.5 "${small[@]}" --csv "$work/s.csv" >/dev/null 2>&1
    python3 -c 'import csv,sys; g={r["phase"]: float(r["bytes"]) for r in csv.DictReader(open(sys.argv[1]))}; sys.exit(0 if g["dispatch"] != g["combine"] else 1)' "$work/s.csv"
    tap_ok $? "3 ranks, skew 1.5: the busiest sender and the busiest receiver move different bytes"
fi
# loss curves: every registered strategy, equal to local's at every step (relative 1e-5)
"$BENCH" --ranks "$N" --strategy all --experts $E2 --top-k 2 "${small[@]}" --train 8 --loss-csv "$work/loss.csv" >/dev/null 2>"$work/err"
python3 - "$work/loss.csv" "${STRATS[@]}" <<'PY'
import csv, sys
c = {}
for r in csv.DictReader(open(sys.argv[1])):
    c.setdefault(r["strategy"], []).append(float(r["loss"]))
ref = c["local"]
ok = sorted(c) == sorted(sys.argv[2:]) and all(len(v) == 8 for v in c.values()) and ref[-1] < ref[0]
ok = ok and all(abs(a - b) <= 1e-5 * abs(b) for v in c.values() for a, b in zip(v, ref))
sys.exit(0 if ok else 1)
PY
tap_ok $? "loss curves of every strategy agree with local's at all 8 steps and decrease" "$work/loss.csv" "$work/err"
tap_done
