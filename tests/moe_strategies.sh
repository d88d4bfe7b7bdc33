#!/usr/bin/env bash
# Every strategy checked against the single-device computation at N ranks: E in {4, 8, 16}, k in {1, 2, 4},
# both routers, with and without renormalisation, skew 0 and a skew that leaves experts (and ranks) without
# tokens. Then loss curves (--train) must be equal across strategies. TAP output from this script only.
set -u
BENCH=$(realpath "$1") N=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99
n=0 failed=0
run() { # description, then bench arguments
    local what=$1; shift
    n=$((n + 1))
    if "$BENCH" --ranks "$N" -n 1 -w 0 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"; then
        echo "ok $n - $N ranks: $what"
    else
        failed=$((failed + 1))
        echo "not ok $n - $N ranks: $what"
        grep -E "check:|FAIL|bench:" "$work/out" "$work/err" | sed 's/^/# /' | head -20
    fi
}
small=(--tokens 24 --hidden 32 --ffn 48)
run "all strategies, E 4,8,16 x k 1,2,4, softmax" --strategy all --experts 4,8,16 --top-k 1,2,4 "${small[@]}"
run "all strategies, sigmoid + route-norm" --strategy all --experts 8 --top-k 1,2,4 --router sigmoid --route-norm "${small[@]}"
run "all strategies, softmax + route-norm, seed 3" --strategy all --experts 4,16 --top-k 2 --route-norm --seed 3 "${small[@]}"
run "all strategies, skew 8: cold experts and ranks get no tokens" --strategy all --experts 8,16 --top-k 1,2 --skew 8 "${small[@]}"
n=$((n + 1))
rows=$(tail -n +2 "$work/r.csv" | wc -l) bad=$(tail -n +2 "$work/r.csv" | awk -F, '$NF != "ok"' | wc -l)
if [ "$bad" -eq 0 ] && [ "$rows" -gt 0 ]; then echo "ok $n - $rows CSV rows, all check=ok"
else failed=$((failed + 1)); echo "not ok $n - $bad of $rows rows not ok"; fi
# skew 8 really leaves experts empty: the phase rows of tp2ep show uneven bytes; check via tokens_per_expert dump
n=$((n + 1))
"$BENCH" --ranks "$N" -n 1 -w 0 --strategy tp2ep --experts 8 --top-k 1 --skew 8 "${small[@]}" --dump "$work/dump" --csv "$work/d.csv" >/dev/null 2>&1
if python3 -c "
import struct,sys
b=open('$work/dump/tokens_per_expert.npy','rb').read()
hl=struct.unpack('<H',b[8:10])[0]; v=struct.unpack('<8q',b[10+hl:10+hl+64])
sys.exit(0 if 0 in v and sum(v)==$N*24 else 1)"; then echo "ok $n - skew 8 leaves some expert with no tokens (dump)"
else failed=$((failed + 1)); echo "not ok $n - skew 8 dump"; fi
# loss curves: every strategy, equal at every step (relative 1e-5)
n=$((n + 1))
"$BENCH" --ranks "$N" --strategy all --experts 8 --top-k 2 "${small[@]}" --train 8 --loss-csv "$work/loss.csv" >/dev/null 2>"$work/err"
if python3 - "$work/loss.csv" <<'PY'
import csv, sys
c = {}
for r in csv.DictReader(open(sys.argv[1])):
    c.setdefault(r["strategy"], []).append(float(r["loss"]))
ref = c["local"]
ok = len(c) == 3 and all(len(v) == 8 for v in c.values()) and ref[-1] < ref[0]
ok = ok and all(abs(a - b) <= 1e-5 * abs(b) for v in c.values() for a, b in zip(v, ref))
sys.exit(0 if ok else 1)
PY
then echo "ok $n - loss curves of local, agrs, tp2ep agree at all 8 steps and decrease"
else failed=$((failed + 1)); echo "not ok $n - loss curves differ"; cat "$work/loss.csv" | sed 's/^/# /'; fi
echo "1..$n"
[ "$failed" -eq 0 ]
