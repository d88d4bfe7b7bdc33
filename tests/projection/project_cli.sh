#!/usr/bin/env bash
# report --project and --calibration-out (issue 16) on committed fixtures: the recommendation table, the files of
# -o DIR, a projection recomputed by hand (by_hand.py: Python, independent of reports/project.c), the shipped
# cluster files, a calibration written and projected onto, and bad cluster files (exit 2 naming file and field, no
# output). No timing. TAP output.
# Usage: project_cli.sh REPORT SRCDIR (the repository root)
set -u
REPORT=$(realpath "$1") SRC=$(realpath "$2")
FX=$SRC/tests/projection
source "$SRC/tests/tap.sh"

"$REPORT" --project "$FX/cluster.json" "$FX/fixture.csv" --validation /nonexistent >out 2>err
rc=$?
[ $rc = 0 ] && grep -q "^recommendation (projected on test cluster" out &&
    grep -Eq "^  E=8 T=64 D=64 F=128 skew 0 +8 +2 +[a-z]" out && grep -Eq "^  deepseek-v3 \(T=4096\) +256 +8 " out &&
    grep -q "validated error not recorded" out
tap_ok $? "--project on the fixture prints the recommendation table (P 8..256, k, the presets), marked projected" out err
grep -Eq "^  tp2ep:chunks=1 +[0-9.]+ (us|ms) +[0-9.]+ (us|ms|s) +- +1\.[01][0-9]*$" out
tap_ok $? "a measured configuration: projected step, measured step, no error against another machine, bytes model/measured" out

printf '{"step_median_abs_error": 0.17, "step_p90_abs_error": 0.4, "configurations": 18, "published_median_abs_error": 0.125, "published_figures": 20}\n' >valid.json
"$REPORT" --project "$FX/cluster.json" "$FX/fixture.csv" --validation valid.json >out 2>err
[ $? = 0 ] && grep -q "validated error ±17% (median |error| of the step on 18 held-out runs here; 12% on 20 published GPU figures)" out
tap_ok $? "--validation FILE: the recorded validation's errors are quoted next to the projection" out err
"$REPORT" --project "$FX/cluster.json" "$FX/fixture.csv" -o proj --no-plots >out 2>err
[ $? = 0 ] && [ -s proj/report.md ] && [ -s proj/report.html ] && [ -s proj/projection.csv ] &&
    grep -q "## Recommendation (projected)" proj/report.md && grep -q "(projected)" proj/report.md
tap_ok $? "-o DIR writes report.md, report.html and projection.csv with the recommendation table" err
python3 "$FX/by_hand.py" "$FX/cluster.json" "$FX/fixture.csv" proj/projection.csv >hand 2>&1
tap_ok $? "by_hand.py recomputes agrs, tp2ep and dedup phase by phase (fixture, P=2), and agrs, tp2ep, dedup and hier for qwen3 at P=16, 64: $(grep -c "^ok" hand) checks agree" hand

# every shipped cluster file loads and projects
for f in "$SRC"/clusters/*.json; do
    "$REPORT" --project "$f" "$FX/fixture.csv" >out 2>err && grep -q "^recommendation (projected" out
    tap_ok $? "clusters/$(basename "$f") loads and projects" err
    python3 - "$f" >err 2>&1 <<'PY'
import json, sys
def walk(o, path):  # every object holding a number holds a non-empty "source"
    if isinstance(o, dict):
        if any(isinstance(v, (int, float)) or (isinstance(v, list) and v and isinstance(v[0], (int, float)))
               for v in o.values()) and not (isinstance(o.get("source"), str) and o["source"]):
            sys.exit("%s: numbers without a source" % path)
        for k, v in o.items():
            walk(v, path + "." + k)
walk(json.load(open(sys.argv[1])), "")
PY
    tap_ok $? "clusters/$(basename "$f"): every number has its source" err
done

# a calibration: the fixture's mode=peak rows -> a cluster file -> projected onto; errors shown on its host class
"$REPORT" --calibration-out cal.json "$FX/fixture.csv" >out 2>err
[ $? = 0 ] && python3 -c 'import json,sys; c=json.load(open("cal.json")); sys.exit(0 if c["gemm"]["rows"] == [4, 16, 64, 256, 1024] and len(c["intra"]["alltoall"]["points"]) == 4 and c["gpus_per_node"]["value"] == 2 else 1)'
tap_ok $? "--calibration-out writes the GEMM curve by rows and the collectives' points from the peak rows" err cal.json
"$REPORT" --project cal.json "$FX/fixture.csv" >out 2>err
[ $? = 0 ] && grep -Eq "^  agrs +[0-9.]+ (us|ms|s) +[0-9.]+ (us|ms|s) +[-+][0-9]+%" out
tap_ok $? "--project onto this machine's calibration prints the error against the measured step" out err
python3 -c 'import csv,sys; r=csv.reader(open(sys.argv[1])); w=csv.writer(open("nopeak.csv","w"), lineterminator="\n"); h=next(r); w.writerow(h); [w.writerow(x) for x in r if x[h.index("mode")] != "peak"]' "$FX/fixture.csv"
"$REPORT" --calibration-out x.json nopeak.csv >out 2>err
[ $? = 2 ] && grep -q "no mode=peak rows" err && [ ! -e x.json ]
tap_ok $? "--calibration-out without peak rows: exit 2, nothing written" err

"$REPORT" --calibration-out nodir/x.json "$FX/fixture.csv" >out 2>err
[ $? = 2 ] && grep -q "^report: --calibration-out nodir/x.json: cannot write in nodir" err && [ ! -e nodir ]
tap_ok $? "--calibration-out into a missing directory: exit 2 naming the option" err

# bad cluster files: exit 2, one line naming the file and the field, no output directory
bad() { # NAME JQ-LIKE-PYTHON EXPECTED-TEXT
    python3 -c "import json; c=json.load(open('$FX/cluster.json')); $2; json.dump(c, open('$1.json', 'w'))"
    "$REPORT" --project "$1.json" "$FX/fixture.csv" -o "out_$1" >out 2>err
    local rc=$?
    [ $rc = 2 ] && grep -q "$1.json: $3" err && [ "$(wc -l <err)" = 1 ] && [ ! -e "out_$1" ]
    tap_ok $? "bad cluster file ($1): exit 2 naming file and field ($3)" err
}
bad missing "del c['inter']['alltoall']['bw_gbps']" "inter.alltoall.bw_gbps: missing"
bad negative "c['intra']['allgather']['bw_gbps'] = -5" "intra.allgather.bw_gbps: -5 is out of range"
bad zero_gpus "c['gpus_per_node']['value'] = 0" "gpus_per_node.value: 0 is out of range"
bad wrongtype "c['gemm']['tflops'] = '500'" "gemm.tflops: expected a number"
bad nosource "del c['copy_gbps']['source']" "copy_gbps.source: missing"
bad noformat "c['format'] = 'other'" "format: expected"
bad curve "c['gemm']['efficiency'] = [0.5, 2, 1]" "gemm.efficiency\[1\]: expected a number in (0, 1\]"
printf '{"format": "epbench-cluster-1", "name": ' >notjson.json
"$REPORT" --project notjson.json "$FX/fixture.csv" >out 2>err
[ $? = 2 ] && grep -q "notjson.json: not JSON: line 1" err
tap_ok $? "a file that is not JSON: exit 2 naming the file, line and column" err
"$REPORT" --project nonexistent.json "$FX/fixture.csv" >out 2>err
[ $? = 2 ] && grep -q "nonexistent.json" err
tap_ok $? "a missing cluster file: exit 2 naming it" err
tap_done
