#!/usr/bin/env bash
# Every collective with checking on, at N ranks (bench self-launches them), in f32 and bf16, even and skewed
# alltoallv; every row must say check=ok and the run must exit 0. TAP output (only this script writes it).
set -u
BENCH=$(realpath "$1") N=$2
source "$(dirname "$0")/tap.sh"
run() { # description, then bench arguments
    local what=$1; shift
    "$BENCH" --ranks "$N" -b 3K -e 48K -f 4 -n 3 -w 1 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    tap_ok $rc "$N ranks: $what$([ $rc = 0 ] || echo " (exit $rc)")" "$work/err" "$work/out"
}
run "all collectives, f32" --coll all
run "all collectives, bf16" --coll all --dtype bf16
run "alltoallv with Zipf skew 1.5" --coll alltoallv --imbalance 1.5
run "alltoallv with Zipf skew 4 (some peers get almost nothing)" --coll alltoallv --imbalance 4 --seed 7
rows=$(tail -n +2 "$work/r.csv" | wc -l)
bad=$(python3 -c 'import csv,sys; print(sum(r["check"] != "ok" or r["ranks"] != sys.argv[2] for r in csv.DictReader(open(sys.argv[1]))))' "$work/r.csv" "$N")
# 5 collectives x 3 sizes x 2 dtypes + 2 x 3 alltoallv rows
[ "$rows" -eq 36 ] && [ "$bad" -eq 0 ]; tap_ok $? "CSV has 36 rows ($rows), all check=ok, ranks=$N ($bad not)"
[ "$(grep -c '^schema,' "$work/r.csv")" -eq 1 ]; tap_ok $? "one header over four appending runs"
tap_done
