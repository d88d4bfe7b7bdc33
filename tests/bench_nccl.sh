#!/usr/bin/env bash
# nccl-tests habits of bench --coll (issue 15, item 7), the progress lines and the rank-count notices (items 5,
# 6): nccl-tests' option spellings, the header (every rank's host and device, "times: max over ranks, per
# iteration"), alltoall's per-pair size beside nccl-tests' size, the "# Out of bounds values" and "# Avg bus
# bandwidth" lines, and -J FILE: nccl-tests' JSON keys, read by python's json module, its numbers those of the
# table, a file name with a quote and a backslash escaped in it. Bad -J input exits 2 with one line. TAP output.
# Usage: bench_nccl.sh BENCH
set -u
BENCH=$(realpath "$1")
source "$(dirname "$0")/tap.sh"
json="$work/we\"ird\\name.json"
"$BENCH" --coll alltoall --ranks 2 --minbytes 64K --maxbytes 256K --stepfactor 2 --iters 3 --warmup_iters 1 \
    --check 1 --csv "$work/r.csv" -J "$json" >"$work/out" 2>"$work/err"
tap_ok $? "nccl-tests spellings (--minbytes --maxbytes --stepfactor --iters --warmup_iters --check) and -J: exit 0" \
    "$work/err" "$work/out"
[ "$(grep -c '^  alltoall ' "$work/out")" = 3 ]
tap_ok $? "--minbytes 64K --maxbytes 256K --stepfactor 2: three sizes" "$work/out"
grep -q '^#  Rank  0 Pid *[0-9]* on  *[^ ]* device cpu' "$work/out" && grep -q '^#  Rank  1 Pid' "$work/out"
tap_ok $? "the header lists every rank's host and device" "$work/out"
grep -q '^# times: max over ranks, per iteration' "$work/out"
tap_ok $? "the header says times are the maximum over ranks, per iteration" "$work/out"
awk '$1 == "alltoall" && $2 == "64K" && $3 == "32K"' "$work/out" | grep -q .
tap_ok $? "alltoall at 2 ranks: size 64K beside size/P 32K (what one rank sends each peer)" "$work/out"
grep -q '^# Out of bounds values : 0 OK$' "$work/out"
tap_ok $? "# Out of bounds values : 0 OK" "$work/out"
grep -q '^# Avg bus bandwidth    : [0-9.e+-]*$' "$work/out"
tap_ok $? "# Avg bus bandwidth line" "$work/out"
python3 - "$json" "$work/out" >"$work/py" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("version", "start_time", "args", "config", "results", "out_of_bounds", "average_bus_bandwidth", "errors",
          "end_time"):
    assert k in d, "top-level key %s missing" % k
assert d["version"] == 2
c = d["config"]
for k in ("minimum_bytes", "maximum_bytes", "step_factor", "warmup_iters", "iterations", "validation", "devices"):
    assert k in c, "config key %s missing" % k
assert (c["minimum_bytes"], c["maximum_bytes"], c["step_factor"], c["iterations"], c["warmup_iters"]) == \
    (65536, 262144, 2, 3, 1), c
assert [x["rank"] for x in c["devices"]] == [0, 1] and all(x["hostname"] for x in c["devices"])
assert sys.argv[1] in d["args"], "the -J argument, quote and backslash, comes back as it was"
res = d["results"]
assert [r["size"] for r in res] == [65536, 131072, 262144], [r["size"] for r in res]
for r in res:
    for k in ("size", "count", "type", "redop", "root", "out_of_place", "in_place", "actual_iterations",
              "experiment_name"):
        assert k in r, "result key %s missing" % k
    assert set(r["out_of_place"]) >= {"time", "alg_bw", "bus_bw", "nwrong"}
    assert r["type"] == "float" and r["count"] == r["size"] // 4 and r["experiment_name"] == "alltoall"
    assert r["out_of_place"]["nwrong"] == 0 and r["epbench"]["per_pair_bytes"] == r["size"] // 2
assert d["out_of_bounds"] == {"count": 0, "okay": True}
avg = sum(r["out_of_place"]["bus_bw"] for r in res) / len(res)
printed = float([l for l in open(sys.argv[2]) if l.startswith("# Avg bus bandwidth")][0].split(":")[1])
assert abs(d["average_bus_bandwidth"]["bandwidth"] - avg) <= 1e-9 * max(1, avg), "average = mean of bus_bw"
assert abs(printed - avg) <= 1e-4 * max(1, avg), "printed %g, mean %g" % (printed, avg)
table = {l.split()[1]: float(l.split()[5]) for l in open(sys.argv[2]) if l.startswith("  alltoall ")}
assert abs(table["64K"] - res[0]["out_of_place"]["time"]) < 0.01, "time = the table's median"
PY
tap_ok $? "-J: python's json reads it; nccl-tests' keys; sizes, counts, average and times those of the table" \
    "$work/py"
ls "$work" | grep -q '\.tmp\.' && bad=1 || bad=0
[ $bad = 0 ]; tap_ok $? "-J leaves no temporary file"

# progress: a plain line per configuration on a non-terminal stderr; --quiet none
[ "$(grep -c '^bench: config [1-3]/3 alltoall ' "$work/err")" = 3 ]
tap_ok $? "progress: one plain line per configuration on stderr (not a terminal)" "$work/err"
# on a terminal (script(1) gives bench one): the line is redrawn in place ("\r", erase) up to the last iteration,
# through the self-launch's mpirun
if command -v script >/dev/null 2>&1; then
    script -qec "$(printf '%q ' "$BENCH" --coll alltoall --ranks 2 -b 64K -e 128K -n 3 -w 0 --csv "$work/r.csv")" \
        /dev/null >"$work/tty" 2>&1
    grep -aq $'\r\033\[Kbench: config 2/2 alltoall 128K: iteration 3/3, ETA' "$work/tty"
    tap_ok $? "progress on a terminal: one line per configuration redrawn up to 'iteration 3/3, ETA'" "$work/tty"
else
    echo "ok $((n + 1)) - # SKIP script(1) not found: no terminal to test the redrawn line on"; n=$((n + 1))
fi
"$BENCH" --coll alltoall --ranks 2 -b 64K -e 64K -n 2 -w 0 --quiet --csv "$work/r.csv" >"$work/out2" 2>"$work/err2"
tap_ok $? "--quiet: exit 0" "$work/err2"
! grep -q 'config 1/1' "$work/err2"
tap_ok $? "--quiet: no progress line" "$work/err2"

# bad -J input: one line naming the option, exit 2, nothing written
"$BENCH" --strategy tp2ep -J "$work/x.json" >"$work/o3" 2>"$work/e3"
rc=$?
[ $rc = 2 ] && [ "$(wc -l <"$work/e3")" = 1 ] && grep -q -- '-J/--json' "$work/e3" && [ ! -e "$work/x.json" ]
tap_ok $? "-J with --strategy: exit 2 ($rc), one line naming -J/--json" "$work/e3"
"$BENCH" --coll alltoall -J "$work/no/such/dir/x.json" >"$work/o4" 2>"$work/e4"
rc=$?
[ $rc = 2 ] && [ "$(wc -l <"$work/e4")" = 1 ] && grep -q -- '-J/--json .*does not exist' "$work/e4"
tap_ok $? "-J into a missing folder: exit 2 ($rc), one line" "$work/e4"

# ranks: the default never oversubscribes silently; an explicit oversubscription warns
"$BENCH" --coll alltoall -b 96K -e 96K -n 2 -w 0 --quiet --csv "$work/r.csv" >"$work/o5" 2>"$work/e5"
rc=$?
p=$(sed -n 's/^# epbench coll | \([0-9]*\) ranks.*/\1/p' "$work/o5")
if grep -q -- '--ranks not given: running' "$work/e5"; then
    nr=$(sed -n 's/.*--ranks not given: running \([0-9]*\) ranks.*/\1/p' "$work/e5")
    [ $rc = 0 ] && [ "$p" = "$nr" ] && [ "$nr" -lt 4 ] && [ "$nr" -ge 2 ]
    tap_ok $? "no --ranks on a small host: $nr ranks (the core count, at least 2), said on stderr" "$work/e5" "$work/o5"
else
    [ $rc = 0 ] && [ "$p" = 4 ]
    tap_ok $? "no --ranks: the default 4 ranks fit this host's cores" "$work/e5" "$work/o5"
fi
"$BENCH" --coll alltoall --ranks 3 -b 96K -e 96K -n 2 -w 0 --quiet --csv "$work/r.csv" >"$work/o6" 2>"$work/e6"
rc=$?
c=$(sed -n 's/.*--ranks 3 on \([0-9]*\) cores oversubscribes.*/\1/p' "$work/e6")
if [ -n "$c" ]; then
    [ $rc = 0 ] && [ "$c" -lt 3 ] && grep -q 'measure the scheduler' "$work/e6"
    tap_ok $? "--ranks 3 on $c cores: a one-line warning that the timings measure the scheduler" "$work/e6"
else
    echo "ok $((n + 1)) - # SKIP --ranks 3 does not oversubscribe this host"; n=$((n + 1))
fi
tap_done
