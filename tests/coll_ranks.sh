#!/usr/bin/env bash
# Every collective with checking on, at N ranks (bench self-launches them), in f32 and bf16, even and skewed
# alltoallv; every row must say check=ok and the run must exit 0. TAP output (only this script writes it).
set -u
BENCH=$(realpath "$1") N=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99
n=0 failed=0
run() { # description, then bench arguments
    local what=$1; shift
    n=$((n + 1))
    if "$BENCH" --ranks "$N" -b 3K -e 48K -f 4 -n 3 -w 1 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"; then
        echo "ok $n - $N ranks: $what"
    else
        failed=$((failed + 1))
        echo "not ok $n - $N ranks: $what (exit $?)"
        sed 's/^/# /' "$work/err" "$work/out"
    fi
}
run "all collectives, f32" --coll all
run "all collectives, bf16" --coll all --dtype bf16
run "alltoallv with Zipf skew 1.5" --coll alltoallv --imbalance 1.5
run "alltoallv with Zipf skew 4 (some peers get almost nothing)" --coll alltoallv --imbalance 4 --seed 7
n=$((n + 1))
rows=$(tail -n +2 "$work/r.csv" | wc -l)
bad=$(tail -n +2 "$work/r.csv" | awk -F, '$NF != "ok" || $12 != '"$N"'' | wc -l)
# 5 collectives x 3 sizes x 2 dtypes + 2 x 3 alltoallv rows
if [ "$rows" -eq 36 ] && [ "$bad" -eq 0 ]; then echo "ok $n - 36 CSV rows, all check=ok, ranks=$N"
else failed=$((failed + 1)); echo "not ok $n - CSV has $rows rows, $bad not ok"; fi
n=$((n + 1))
if [ "$(grep -c '^schema,' "$work/r.csv")" -eq 1 ]; then echo "ok $n - one header over four appending runs"
else failed=$((failed + 1)); echo "not ok $n - header count"; fi
echo "1..$n"
[ "$failed" -eq 0 ]
