#!/usr/bin/env bash
# bench --calibrate across two hosts made of network namespaces (tests/netns_lib.sh), 4 ranks, two per host: the
# collectives are measured on both levels (intra: the two ranks of each host; inter: one rank per host, both such
# communicators at once), and report --calibration-out takes each level from its own rows (gpus_per_node 2). Short
# (-n 2), no timing. Exit 77 (skipped) unless root with ip netns, unshare and mpirun. TAP output.
# Usage: netns_calibrate.sh BENCH REPORT SRCDIR [MPIRUN]
set -u
BENCH=$(realpath "$1") REPORT=$(realpath "$2") SRC=$(realpath "$3") MPIRUN=${4:-$(command -v mpirun)}
source "$SRC/tests/netns_lib.sh"
netns_require "$MPIRUN"
source "$SRC/tests/tap.sh"
netns_tap_up
MPIRUN=$MPIRUN netns_job 4 "$BENCH" --calibrate -n 2 -w 0 -e 1M --csv "$work/cal.csv" >"$work/out" 2>&1
tap_ok $? "bench --calibrate on 4 ranks, 2 hosts" "$work/out"
python3 - "$work/cal.csv" >"$work/log" 2>&1 <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert all(r["hosts"] == "nodea;nodeb" and r["mode"] == "peak" for r in rows), "hosts"
for level, nodes in (("intra", "1"), ("inter", "2")):
    for c in ("alltoall", "allgather", "reduce_scatter", "allreduce"):
        got = [r for r in rows if r["op"] == c and r["params"] == "level=%s;rpn=2" % level]
        assert len(got) == 3 and all(r["ranks"] == "2" and r["nodes"] == nodes for r in got), (level, c, len(got))
assert any(r["op"] == "gemm" and r["params"].endswith(";rpn=2") for r in rows), "gemm"
PY
tap_ok $? "collective rows on both levels (intra: 2 ranks of a host; inter: 2 ranks on 2 hosts), 3 sizes each (-e 1M)" "$work/log"
"$REPORT" --calibration-out "$work/cal.json" "$work/cal.csv" >"$work/out" 2>&1 && python3 - "$work/cal.json" >"$work/log" 2>&1 <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["gpus_per_node"]["value"] == 2
for lv in ("intra", "inter"):
    for co, l in c[lv].items():
        assert len(l["points"]) == 3 and "not measured" not in l["source"], (lv, co)
assert c["intra"]["alltoall"]["points"] != c["inter"]["alltoall"]["points"]
PY
tap_ok $? "--calibration-out takes each level from its own rows (gpus_per_node 2)" "$work/out" "$work/log"
tap_done
