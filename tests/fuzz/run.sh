#!/usr/bin/env bash
# Runs the CSV/report fuzzer for SECONDS on the committed seed corpus (read-only: new inputs go to a scratch
# directory, removed afterwards); a crash, sanitizer report or leak fails the test and leaves its input as
# BUILD/fuzz-crash-* (libFuzzer's artifact). Usage: run.sh FUZZER CORPUS DICT SECONDS ARTIFACT_PREFIX; EPB_FUZZ_SECONDS
# overrides SECONDS (ci/test --full: 600).
set -u
fuzzer=$1 corpus=$2 dict=$3 seconds=${EPB_FUZZ_SECONDS:-$4} prefix=$5
new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
"$fuzzer" -max_total_time="$seconds" -dict="$dict" -max_len=16384 -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix="$prefix" -print_final_stats=1 "$new" "$corpus" 2>&1 | grep -v '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)'
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] && echo "fuzz: no finding in $seconds s"
exit "$rc"
