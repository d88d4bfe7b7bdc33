#!/usr/bin/env bash
# bench --calibrate's rows (issues 16 and 21) at 2 local ranks, short (-n 2): memcpy, gemm and the experts' ops
# (experts_fwd, experts_bwd) with threads=T;rpn=2 at M = 4..1024 rows, every collective at the sizes -e 1M leaves on
# the intra-node level, rows that the CSV reader takes and report --calibration-out turns into a cluster file (the
# experts' curve in it) that --project loads. No timing. TAP output.
# Usage: calibrate_rows.sh BENCH REPORT SRCDIR [cpu|gpu]
#   cpu (default): the CPU backend, f32, K = N = 1024 (the default shape)
#   gpu: --device cuda --dtype bf16 at --hidden 64 --ffn 96 (the CUDA backend's cuBLAS and grouped GEMMs, the device
#        communicator; a small shape, so that the CPU emulator of tests/cuda_emu runs it in seconds): every compute
#        row in bf16, the cluster file's elem_bytes 2. Exit 77 (skipped) without a GPU, 1 when EPB_REQUIRE_GPU is set.
set -u
BENCH=$(realpath "$1") REPORT=$(realpath "$2") SRC=$(realpath "$3") DEV=${4:-cpu}
source "$SRC/tests/tap.sh"
if ! "$BENCH" --version | grep -q "mpi,"; then echo "1..0 # SKIP no MPI in this build"; exit 0; fi
if [ "$DEV" = gpu ]; then
    if [ "$(bench_gpus "$BENCH")" -eq 0 ]; then
        if [ -n "${EPB_REQUIRE_GPU:-}" ] && [ "$EPB_REQUIRE_GPU" != 0 ]; then
            echo "EPB_REQUIRE_GPU is set but no CUDA device is visible (or CUDA is not built)"; exit 1
        fi
        echo "no CUDA device visible: skipped"; exit 77
    fi
    dev=(--device cuda --dtype bf16 --hidden 64 --ffn 96) D=64 F=96 DT=bf16 EB=2
else
    dev=() D=1024 F=1024 DT=f32 EB=4
fi
"$BENCH" --calibrate --ranks 2 -n 2 -w 0 -e 1M "${dev[@]}" --csv peak.csv >out 2>err
tap_ok $? "bench --calibrate --ranks 2 ${dev[*]} runs" out err
csv_all peak.csv 'r["mode"] == "peak" and r["ranks"] == "2" and r["check"] == "skipped"'
tap_ok $? "every row is a mode=peak row of 2 ranks" peak.csv
csv_any peak.csv 'r["op"] == "memcpy" and float(r["algbw_gbps"]) > 0 and r["params"].startswith("threads=") and r["params"].endswith(";rpn=2")'
tap_ok $? "memcpy row with GB/s and params threads=T;rpn=2" peak.csv
python3 - peak.csv "$D" "$F" "$DT" "$DEV" >err 2>&1 <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
D, F, dt, dev = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
comp = [r for r in rows if r["kind"] == "compute"]
assert comp and all(r["dtype"] == dt and r["device"] == ("cuda" if dev == "gpu" else "cpu") for r in comp), comp
g = sorted(int(r["tokens"]) for r in rows if r["op"] == "gemm" and float(r["tflops"]) > 0 and r["hidden"] == str(D)
           and r["ffn"] == str(F) and r["params"].endswith(";rpn=2"))
assert g == [4, 16, 64, 256, 1024], g
for op, f in (("experts_fwd", 6), ("experts_bwd", 12)):
    x = [r for r in comp if r["op"] == op and r["params"].endswith(";rpn=2")]
    assert sorted(int(r["tokens"]) for r in x) == [4, 16, 64, 256, 1024], (op, x)
    for r in x:  # FLOPs of E experts x M rows each, the rate from the median
        M, E, d, ff = (int(r[c]) for c in ("tokens", "experts", "hidden", "ffn"))
        assert (E, d, ff) == (min(4, 2048 // M), D, F), r  # at most 2048 rows
        assert abs(float(r["gflop"]) - f * M * E * D * F / 1e9) < 1e-6 * f * M * E * D * F / 1e9, r
        assert abs(float(r["tflops"]) * float(r["t_med_us"]) * 1e-6 * 1e3 - float(r["gflop"])) < 1e-3 * float(r["gflop"]), r
for c in ("alltoall", "allgather", "reduce_scatter", "allreduce"):
    s = sorted(int(r["bytes"]) for r in rows if r["op"] == c and r["coll"] == c and r["kind"] == "comm"
               and r["params"] == "level=intra;rpn=2" and float(r["t_med_us"]) > 0 and float(r["busbw_gbps"]) > 0)
    assert s == [8192, 131072, 1048576], (c, s)  # -e 1M caps the sizes (to 128M without it)
PY
tap_ok $? "gemm and experts' rows ($DT) at M 4..1024 (K = $D, N = $F), each collective at 8K..1M (-e) on level=intra" err
"$REPORT" --calibration-out cal.json peak.csv >out 2>err && "$REPORT" --project cal.json peak.csv >out 2>>err &&
    grep -q "^recommendation (projected" out && python3 - cal.json "$EB" "$D" "$F" >>err 2>&1 <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
x = c["experts"]
assert c["elem_bytes"]["value"] == int(sys.argv[2]), c["elem_bytes"]
assert x["rows"] == [4, 16, 64, 256, 1024] and "D = %s, F = %s" % (sys.argv[3], sys.argv[4]) in x["source"], x
assert all(0 < e <= 1 for e in x["fwd_efficiency"] + x["bwd_efficiency"]), x
PY
tap_ok $? "report --calibration-out reads the rows (the experts' curve, elem_bytes $EB), --project loads the file" err
tap_done
