#!/usr/bin/env bash
# bench --calibrate's rows (issue 16) at 2 local ranks, short (-n 2): memcpy and gemm rows with threads=T;rpn=2, the
# GEMM at M = 4..1024 rows (K = N = 1024), every collective at 4 sizes on the intra-node level, rows that the CSV
# reader takes and report --calibration-out turns into a cluster file that --project loads. No timing. TAP output.
# Usage: calibrate_rows.sh BENCH REPORT SRCDIR
set -u
BENCH=$(realpath "$1") REPORT=$(realpath "$2") SRC=$(realpath "$3")
source "$SRC/tests/tap.sh"
if ! "$BENCH" --version | grep -q "mpi,"; then echo "1..0 # SKIP no MPI in this build"; exit 0; fi
"$BENCH" --calibrate --ranks 2 -n 2 -w 0 -e 1M --csv peak.csv >out 2>err
tap_ok $? "bench --calibrate --ranks 2 runs" out err
csv_all peak.csv 'r["mode"] == "peak" and r["ranks"] == "2" and r["check"] == "skipped"'
tap_ok $? "every row is a mode=peak row of 2 ranks" peak.csv
csv_any peak.csv 'r["op"] == "memcpy" and float(r["algbw_gbps"]) > 0 and r["params"].startswith("threads=") and r["params"].endswith(";rpn=2")'
tap_ok $? "memcpy row with GB/s and params threads=T;rpn=2" peak.csv
python3 - peak.csv >err 2>&1 <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
g = sorted(int(r["tokens"]) for r in rows if r["op"] == "gemm" and float(r["tflops"]) > 0 and r["hidden"] == "1024"
           and r["ffn"] == "1024" and r["params"].endswith(";rpn=2") and r["kind"] == "compute")
assert g == [4, 16, 64, 256, 1024], g
for op, f in (("experts_fwd", 6), ("experts_bwd", 12)):
    x = [r for r in rows if r["op"] == op and r["kind"] == "compute" and r["params"].endswith(";rpn=2")]
    assert sorted(int(r["tokens"]) for r in x) == [4, 16, 64, 256, 1024], (op, x)
    for r in x:  # FLOPs of E experts x M rows each, the rate from the median
        M, E, D, F = (int(r[c]) for c in ("tokens", "experts", "hidden", "ffn"))
        assert (E, D, F) == (min(4, 2048 // M), 1024, 1024), r  # at most 2048 rows
        assert abs(float(r["gflop"]) - f * M * E * D * F / 1e9) < 1e-6 * f * M * E * D * F / 1e9, r
        assert abs(float(r["tflops"]) * float(r["t_med_us"]) * 1e-6 * 1e3 - float(r["gflop"])) < 1e-3 * float(r["gflop"]), r
for c in ("alltoall", "allgather", "reduce_scatter", "allreduce"):
    s = sorted(int(r["bytes"]) for r in rows if r["op"] == c and r["coll"] == c and r["kind"] == "comm"
               and r["params"] == "level=intra;rpn=2" and float(r["t_med_us"]) > 0 and float(r["busbw_gbps"]) > 0)
    assert s == [8192, 131072, 1048576], (c, s)  # -e 1M caps the sizes (to 128M without it)
PY
tap_ok $? "gemm and experts' rows at M 4..1024 (K = N = 1024), each collective at 8K..1M (-e) on level=intra" err
"$REPORT" --calibration-out cal.json peak.csv >out 2>err && "$REPORT" --project cal.json peak.csv >out 2>>err &&
    grep -q "^recommendation (projected" out && python3 - cal.json >>err 2>&1 <<'PY'
import json, sys
x = json.load(open(sys.argv[1]))["experts"]
assert x["rows"] == [4, 16, 64, 256, 1024] and x["source"], x
assert all(0 < e <= 1.5 for e in x["fwd_efficiency"] + x["bwd_efficiency"]), x
PY
tap_ok $? "report --calibration-out reads the rows (the experts' curve too), --project loads the file it wrote" err
tap_done
