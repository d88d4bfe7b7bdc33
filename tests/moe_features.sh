#!/usr/bin/env bash
# The features of published MoE models (issue 14) at N ranks, every registered strategy checked against the
# single-device computation (-c 1: exit 0 only when every configuration agrees):
# - each feature alone (gate before the experts, route scale, group-limited routing, shared experts) and all of them
#   together, and FP8 dispatch (issue 22: y moved from the unquantized layer by less than e4m3's bound, tp2ep's
#   dispatch bytes those of FP8 rows), on every strategy, the pipelined ones also in 2 chunks, hier on nodes of 2 ranks where N allows; and
#   10 training steps with all of them, every strategy's loss curve equal to local's;
# - group-limited routing with groups aligned to ranks (G = N, and G = 2N: groups of experts owned by whole ranks):
#   on the real routing (a --dump's topk_idx) no token reaches more than M ranks, while without groups some token
#   does; dedup's measured dispatch rows stay within the bound T x min(M, N-1) and tp2ep's and dedup's bytes equal
#   their formulas on that routing (tests/moe_volume.py);
# - at 2 ranks, every preset (--model, tests/moe/models.c's list via `bench --model list`) scaled down with
#   --strategy all, checked, its name and features in the CSV's params column.
# Strategy and model names come from bench, never from this file. TAP output.
set -u
BENCH=$(realpath "$1") N=$2 HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tap.sh"
source "$HERE/moe_lib.sh"
mapfile -t PIPED < <("$BENCH" --strategy list | awk '/^[a-z]/ {s=$1} /^  :chunks=/ {print s}')
SPECS=all
for s in "${PIPED[@]}"; do SPECS+=",$s:chunks=2"; done
[ $((N % 2)) = 0 ] && [ "$N" -gt 2 ] && SPECS+=",hier:node_size=2,hier:node_size=2,chunks=2" # both of hier's stages
E=$((N == 3 ? 6 : 8)) G=$((E / 2)) # groups of 2 experts
small=(--tokens 24 --hidden 32 --ffn 48 --experts $E --strategy "$SPECS")
run "every strategy, gate-before, softmax k=1,3" "${small[@]}" --top-k 1,3 --gate-before
run "every strategy, route-scale 2.5, sigmoid + route-norm k=2" "${small[@]}" --top-k 2 --router sigmoid --route-norm \
    --route-scale 2.5
run "every strategy, groups 2 of $G, k=1,3, skew 1" "${small[@]}" --top-k 1,3 --groups $G --topk-groups 2 --skew 1
run "every strategy, 2 shared experts of FFN 24, k=2" "${small[@]}" --top-k 2 --shared 2 --shared-ffn 24
run "every strategy, all together (sigmoid + route-norm, scale 2.5, groups 2 of $G, gate-before, 2 shared), k=3" \
    "${small[@]}" --top-k 3 --router sigmoid --route-norm --route-scale 2.5 --groups $G --topk-groups 2 --gate-before \
    --shared 2 --shared-ffn 24 --skew 0.5
# FP8 dispatch (issue 22): D=160 is a full scale block and a partial one; the check's reference quantizes alike
run "every strategy, FP8 dispatch, D=160, groups 2 of $G, 2 shared, k=2" --tokens 24 --hidden 160 --ffn 48 \
    --experts $E --strategy "$SPECS" --top-k 2 --groups $G --topk-groups 2 --shared 2 --shared-ffn 24 \
    --dispatch-dtype fp8
python3 - "$work/out" <<'PY'
import re, sys
e = [float(m) for m in re.findall(r"fp8 dispatch against the unquantized layer \(norm-wise, not a check\): y ([0-9.e+-]+)",
                                  open(sys.argv[1]).read())]
print("# y's error against the unquantized layer: %s" % " ".join("%.2e" % v for v in e))
sys.exit(0 if e and all(1e-4 <= v <= 1 / 16 for v in e) else 1)  # above f32 round-off, within e4m3
PY
tap_ok $? "$N ranks: FP8 dispatch moves y away from the unquantized layer, within e4m3's 1/16 (every strategy)"
run "tp2ep and dedup, the same layer without FP8" --tokens 24 --hidden 160 --ffn 48 --experts $E --strategy tp2ep,dedup \
    --top-k 2 --groups $G --topk-groups 2 --shared 2 --shared-ffn 24
python3 - "$work/r.csv" "$N" <<'PY'
import csv, sys
# the same routing (it reads the unquantized tokens): a dispatched row is 2 scales and 160 codes, 168 bytes, against
# 640 of f32; dedup's rows also carry k=2 indices and gates (16 bytes) in both
d = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["phase"] == "dispatch" and r["op"] in ("tp2ep", "dedup") and r["params"].startswith("chunks=1;") \
            and r["hidden"] == "160":
        d[(r["op"], "dispatch_dtype=fp8" in r["params"])] = float(r["bytes"])
want = {"tp2ep": 168 / 640, "dedup": (168 + 16) / (640 + 16)}
if sys.argv[2] == "1":  # one rank: nothing crosses, with FP8 or without
    sys.exit(0 if len(d) == 4 and not any(d.values()) else 1)
got = {s: d[(s, True)] / d[(s, False)] for s in want if (s, True) in d and d.get((s, False))}
print("# dispatch bytes with FP8 / without: %s" % ", ".join("%s %.4f (want %.4f)" % (s, got[s], want[s]) for s in got))
sys.exit(0 if len(got) == 2 and all(abs(got[s] - want[s]) < 1e-9 for s in got) else 1)
PY
tap_ok $? "$N ranks: FP8 dispatch rows are 168 bytes where f32's are 640 (tp2ep's and dedup's dispatch, same routing; 0 at 1 rank)"
# expert capacity (issue 22): each rank's T tokens keep at most ceil(C T k / E) pairs per expert, the reference
# applies the same rule, so every strategy stays checked; 0 in the list is the uncapped layer beside it; tp2ep padded
# to the capacity sends exactly its (owner, expert) blocks (at 1 rank nothing is exchanged, nothing padded)
run "every strategy, capacity 0 (none), 1 and 1.25, drop policy position, gate-before, 2 shared, k=2, skew 1" \
    "${small[@]}" --top-k 2 --skew 1 --capacity-factor 0,1,1.25 --drop-policy position --gate-before --shared 2 \
    --shared-ffn 24
run "tp2ep padded to capacity 1.5, drop policy probs, k=3, skew 1" --tokens 24 --hidden 32 --ffn 48 --experts $E \
    --strategy tp2ep --top-k 3 --skew 1 --capacity-factor 1.5 --pad-to-capacity
python3 - "$work/r.csv" "$N" "$E" <<'PY'
import csv, math, sys
P, E = int(sys.argv[2]), int(sys.argv[3])
rows = [r for r in csv.DictReader(open(sys.argv[1])) if "capacity_factor" in r["params"] or
        (r["top_k"] == "2" and "gate_before=1;" in r["params"] + ";" and r["hidden"] == "32" and "sigmoid" not in r["router"]
         and "groups=" not in r["params"] and "shared=2" in r["params"])]
d, bad = {}, []
for r in rows:
    cf = float(r["params"].split("capacity_factor=")[1].split(";")[0]) if "capacity_factor" in r["params"] else 0
    if r["phase"] == "dispatch":
        d[(r["op"], r["params"].split(";")[0], cf)] = float(r["bytes"])
    if r["phase"] != "step":
        continue
    drop = float(r["dropped"])
    if (cf > 0) != (drop > 0):
        bad.append("%s %s: dropped %s" % (r["op"], r["params"], r["dropped"]))
    if "pad_to_capacity=1" in r["params"] and P > 1:  # every expert computes P blocks of the capacity, all sent
        T, k = int(r["tokens"]), int(r["top_k"])
        cap = min(T, math.ceil(1.5 * T * k / E))
        want = (P - 1) * (E // P) * cap * 32 * 4
        got = d.get(("tp2ep", "chunks=1", 1.5))
        if float(r["load_max"]) != P * (E // P) * cap or got != want:
            bad.append("padded: load_max %s (want %d), dispatch %s bytes (want %d)" % (r["load_max"], P * (E // P) * cap, got, want))
        print("# padded tp2ep: capacity %d, load_max %s, dispatch %s bytes, dropped %s" % (cap, r["load_max"], got, r["dropped"]))
# a capacity never sends more than the uncapped layer; tp2ep's dispatch at capacity 1 strictly less (skew 1 drops)
for (s, p, cf), b in d.items():
    if cf in (1, 1.25) and (s, p, 0) in d and b > d[(s, p, 0)]:
        bad.append("%s %s: capacity %g sends %g > %g" % (s, p, cf, b, d[(s, p, 0)]))
if P > 1 and not d.get(("tp2ep", "chunks=1", 1), 1e30) < d.get(("tp2ep", "chunks=1", 0), 0):
    bad.append("tp2ep at capacity 1 does not send less than without")
print("# dispatch bytes (strategy, capacity): %s" % ", ".join("%s/%s %g: %g" % (s, p, c, b) for (s, p, c), b in sorted(d.items())))
for b in bad: print("#", b)
sys.exit(0 if not bad and len(d) >= 4 else 1)
PY
tap_ok $? "$N ranks: the capacity's configurations count their dropped pairs (none without); no more bytes than uncapped; padded tp2ep sends (P-1) E/P blocks of the capacity and computes P per expert"
# redundant experts (issue 22): E + R slots, the experts of the first batch's heaviest load replicated and packed by
# EPLB's rule, a replicated expert's pairs split by token, its slots' gradients summed; the check's reference is the
# unreplicated layer. The strategies that take them are those bench accepts (--dry-run); the others (every rank
# holding every expert) are refused with a reason, exit 2.
# (at 1, 2 and 4 ranks: 3 ranks adds nothing the others do not, and CI's time is short)
if [ "$N" != 3 ]; then
R=$N
mapfile -t NAMES < <("$BENCH" --strategy list | awk '/^[a-z]/ {print $1}')
RSPECS="" refused=0
for s in "${NAMES[@]}"; do
    if "$BENCH" --ranks "$N" --dry-run --strategy "$s" --experts $E --redundant $R >/dev/null 2>"$work/err"; then
        RSPECS+="${RSPECS:+,}$s"
    else
        [ $? = 2 ] && grep -q "nothing to replicate" "$work/err" && refused=$((refused + 1))
    fi
done
RSPECS+=",${PIPED[0]}:chunks=2" # one pipeline (every chunk's exchange by slot); hier's two stages where N allows
[ $((N % 2)) = 0 ] && [ "$N" -gt 2 ] && RSPECS+=",hier:node_size=2,chunks=2"
[ $(( ${#NAMES[@]} - refused )) -ge 3 ] && [ "$refused" -ge 1 ]
tap_ok $? "$N ranks: --redundant $R is taken by $RSPECS; $refused strategy refused it (exit 2, nothing to replicate)"
# (with a capacity too: tests/torch_ref.sh features, gpu_strategies.sh and bytes_model.sh)
run "$RSPECS with 0 and $R redundant experts, k=2, skew 2" --tokens 24 --hidden 32 --ffn 48 \
    --experts $E --strategy "$RSPECS" --top-k 2 --skew 2 --redundant 0,$R
python3 - "$work/r.csv" "$N" <<'PY'
import csv, sys
P = int(sys.argv[2])
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["phase"] == "step" and "skew" in r and r["skew"] == "2"]
base, bad = {}, []
for r in rows:
    if "redundant=" not in r["params"]:
        base[(r["op"], r["params"])] = r
for r in rows:
    if "redundant=" not in r["params"]:
        continue
    key = (r["op"], r["params"].replace(";redundant=%d" % P, "").replace("redundant=%d" % P, ""))
    b = base.get(key)
    lm, lp = float(r["load_max"]), float(r["load_plain"])
    if b is None:
        bad.append("%s %s: no configuration without redundant experts" % key)
    elif lp != float(b["load_max"]) or float(b["load_plain"]) != float(b["load_max"]):
        bad.append("%s %s: load_plain %g is not the unreplicated run's load %s" % (key + (lp, b["load_max"])))
    elif (P > 1 and not lm < lp) or (P == 1 and lm != lp):
        bad.append("%s %s: the busiest rank computes %g rows with replicas, %g without" % (key + (lm, lp)))
    print("# %s %s: busiest rank %g rows with %d redundant experts, %g without" % (key + (lm, P, lp)))
sys.exit(1 if bad or len(base) < 3 else 0)
PY
tap_ok $? "$N ranks: with $R redundant experts at skew 2 the busiest rank computes fewer rows than holding its E/P experts alone (the same at 1 rank); load_plain is the unreplicated run's load"
fi
bad=$(python3 -c 'import csv,sys; print(sum(r["check"] != "ok" for r in csv.DictReader(open(sys.argv[1]))))' "$work/r.csv")
[ "$bad" -eq 0 ]; tap_ok $? "every row of the feature runs check=ok ($bad not)"
csv_all "$work/r.csv" 'float(r["model_bytes"]) >= 0 and abs(float(r["bytes"]) - float(r["model_bytes"])) <= 0.5'
tap_ok $? "with every feature, each phase sent the bytes its strategy's traffic description expects (model_bytes)"
python3 - "$work/r.csv" <<'PY'
import csv, sys
ps = {r["params"] for r in csv.DictReader(open(sys.argv[1]))}
want = ["gate_before=1", "route_scale=2.5", "groups=", "shared=2;shared_ffn=24",
        "shared=2;shared_ffn=24;gate_before=1;route_scale=2.5;groups=", "topk_groups=2;dispatch_dtype=fp8",
        "gate_before=1;capacity_factor=1;drop_policy=position", "capacity_factor=1.5;drop_policy=probs;pad_to_capacity=1"]
sys.exit(0 if all(any(w in p for p in ps) for w in want) else 1)
PY
tap_ok $? "each feature's configuration is set apart in the params column"

# training with every feature: each strategy's loss curve equals local's (the shared experts' updates included)
"$BENCH" --ranks "$N" --strategy "$SPECS" --tokens 24 --hidden 32 --ffn 48 --experts $E --top-k 3 --router sigmoid \
    --route-norm --route-scale 2.5 --groups $G --topk-groups 2 --gate-before --shared 2 --shared-ffn 24 --train 10 \
    --loss-csv "$work/loss.csv" >/dev/null 2>"$work/err"
python3 - "$work/loss.csv" <<'PY'
import csv, sys
c = {}
for r in csv.DictReader(open(sys.argv[1])):
    c.setdefault((r["strategy"], r["params"]), []).append(float(r["loss"]))
ref = [v for (s, p), v in c.items() if s == "local"][0]
worst = max(abs(a - b) / abs(b) for v in c.values() for a, b in zip(v, ref))
print("# %d curves of %d steps; worst relative difference from local's %.2e" % (len(c), len(ref), worst))
sys.exit(0 if len(c) > 1 and all(len(v) == 10 for v in c.values()) and ref[-1] < ref[0] and worst <= 1e-6 else 1)
PY
tap_ok $? "$N ranks: --train 10 with every feature: every strategy's loss curve equals local's within 1e-6 and decreases" \
    "$work/loss.csv" "$work/err"

# groups aligned to ranks: each group's experts on one rank, so a token reaches at most M of them
if [ "$N" -gt 1 ]; then
    for mult in 1 2; do
        GA=$((N * mult)) EA=$((N * mult * 2)) M=$((N > 2 ? 2 : 1)) K=$((N > 2 ? 3 : 2))
        cfg=(--tokens 64 --hidden 32 --ffn 48 --experts $EA --top-k $K --skew 0.5 -n 1 -w 0)
        rm -rf "$work/bd$K" "$work/free" "$work/b.csv"
        "$BENCH" --ranks "$N" "${cfg[@]}" -c 0 --strategy local --groups $GA --topk-groups $M --dump "$work/bd$K" \
            --csv "$work/dump.csv" >/dev/null 2>"$work/err"
        "$BENCH" --ranks "$N" "${cfg[@]}" -c 0 --strategy local --dump "$work/free" --csv "$work/dump.csv" >/dev/null \
            2>>"$work/err"
        "$BENCH" --ranks "$N" "${cfg[@]}" -c 1 --strategy tp2ep,dedup --groups $GA --topk-groups $M --csv "$work/b.csv" \
            >"$work/out" 2>>"$work/err"
        tap_ok $? "$N ranks, $GA groups of $((EA / GA)) experts (whole ranks), $M kept, k=$K: tp2ep and dedup checked" \
            "$work/err"
        python3 - "$work" "$N" "$M" <<'PY' >"$work/vol" 2>&1
import csv, json, struct, sys
work, P, M = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def routing(d):
    c = json.load(open(d + "/config.json"))
    T, k, E = c["tokens"], c["top_k"], c["experts"]
    b = open(d + "/topk_idx.npy", "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    return c, struct.unpack("<%di" % (P * T * k), b[10 + hl:10 + hl + 4 * P * T * k])
c, idx = routing(work + "/bd%d" % json.load(open(work + "/free/config.json"))["top_k"])
T, k, E, D = c["tokens"], c["top_k"], c["experts"], c["hidden"]
El = E // P
reach = lambda idx: [len({e // El for e in idx[t * k:(t + 1) * k]}) for t in range(P * T)]
limited, free = max(reach(idx)), max(reach(routing(work + "/free")[1]))
rows = {r["op"]: float(r["bytes"]) for r in csv.DictReader(open(work + "/b.csv")) if r["phase"] == "dispatch"}
bound = T * min(M, P - 1) * (D * 4 + 8 * k)  # rows of D floats plus k indices and k gates each
print("ranks a token reaches: at most %d with groups, %d without; dedup dispatch %d bytes, bound %d; tp2ep %d"
      % (limited, free, rows["dedup"], bound, rows["tp2ep"]))
ok = limited <= M and free > M and rows["dedup"] <= bound and 0 < rows["tp2ep"] <= T * k * D * 4
sys.exit(0 if ok else 1)
PY
        tap_ok $? "$N ranks, $GA groups, $M kept: no token reaches more than $M ranks (without groups some do), dedup's rows within T x min(M, P-1)" "$work/vol"
        sed 's/^/# /' "$work/vol"
        python3 "$HERE/moe_volume.py" "$work/b.csv" "$work" "$N" >"$work/vol" 2>&1
        tap_ok $? "$N ranks, $GA groups: tp2ep's and dedup's bytes per phase equal their formulas on the limited routing" "$work/vol"
    done
fi

# every preset at 2 ranks, scaled down, with every strategy (by 64: deepseek-v3's 256 experts at /16 hold 44M weights
# that seeding, the reference and the gathers move five times over, 29 s of this test for nothing more)
if [ "$N" = 2 ]; then
    mapfile -t MODELS < <("$BENCH" --model list | awk '{print $1}')
    [ "${#MODELS[@]}" -ge 4 ]; tap_ok $? "bench --model list names ${#MODELS[@]} presets (${MODELS[*]})"
    rm -f "$work/m.csv"
    for m in "${MODELS[@]}"; do
        "$BENCH" --model "$m" --scale-down 64 --strategy all --ranks 2 --tokens 16 -n 1 -w 0 --csv "$work/m.csv" \
            >"$work/out" 2>"$work/err"
        tap_ok $? "--model $m --scale-down 64 --strategy all --ranks 2 (--tokens 16): every strategy checked" "$work/err"
        [ $? = 0 ] || grep -E "check:|FAIL" "$work/out" | sed 's/^/# /' | head -10
    done
    python3 - "$work/m.csv" "${MODELS[@]}" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
names = {p.split("model=")[1].split(";")[0] for r in rows for p in [r["params"]] if "model=" in p}
ds = [r for r in rows if "model=deepseek-v3;" in r["params"]]
ok = names == set(sys.argv[2:]) and all(r["check"] == "ok" for r in rows) and ds and all(
    r["experts"] == "256" and r["top_k"] == "8" and r["hidden"] == "112" and r["ffn"] == "32" and
    r["params"].endswith("model=deepseek-v3;scale_down=64;shared=1;shared_ffn=32;route_scale=2.5;groups=8;topk_groups=4")
    for r in ds)
sys.exit(0 if ok else 1)
PY
    tap_ok $? "every preset's rows name it and its features in params; deepseek-v3/64 is E=256 k=8 D=112 F=32" "$work/m.csv"
    # decode-size runs (issue 22): --decode sweeps 1, 2, 4 ... 256 tokens per rank, 100 timed iterations below 256
    # unless -n says otherwise; every size checked
    rm -f "$work/dec.csv"
    "$BENCH" --model mixtral-8x7b --scale-down 64 --decode --strategy tp2ep --ranks 2 --csv "$work/dec.csv" \
        >"$work/out" 2>"$work/err" &&
    "$BENCH" --model mixtral-8x7b --scale-down 64 --decode --tokens 3 -n 7 --strategy dedup --ranks 2 \
        --csv "$work/dec.csv" >>"$work/out" 2>>"$work/err" &&
    grep -q "iters 20 warmup 5 (100 and 10 below 256 tokens)" "$work/out" &&
    python3 - "$work/dec.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["phase"] == "step"]
got = [(r["op"], int(r["tokens"]), int(r["iters"])) for r in rows]
want = [("tp2ep", t, 100 if t < 256 else 20) for t in (1, 2, 4, 8, 16, 32, 64, 128, 256)] + [("dedup", 3, 7)]
print("# got", got)
sys.exit(0 if got == want and all(r["check"] == "ok" for r in rows) else 1)
PY
    tap_ok $? "--model mixtral-8x7b --decode: T 1..256 checked, 100 iterations below 256 (20 at 256), -n 7 kept" \
        "$work/out" "$work/err"
fi
tap_done
