#!/usr/bin/env bash
# ci/nightly end to end on a tiny matrix (1 rank, a 1M alltoall, 3 repetitions), against the build under test:
# the first night becomes the baseline; a night with a 300% slowdown injected by the test-only knob is confirmed
# by a second pass and exits 1 naming the phase; --accept makes it the baseline; bad matrix lines and options
# exit 2 and leave no night behind. Then the job's robustness: a torn or old-schema history, a corrupt or
# misplaced baseline, a baseline that is the history, a FIFO or a device, or holds failed checks, bad options and a
# bad last matrix line (all exit 2 before anything is measured), --accept of a failed night, a held history lock, a
# failed report, nights that compare nothing (exit 4; a baseline of zero times among them), and the
# cleanup of dead Open MPI files (in a scratch directory, never the machine's /dev/shm). Not a timing test: the
# injected effect is 4x, and every check whose verdict could depend on timing runs without a baseline. TAP output.
set -u
ROOT=$(realpath "$1") BUILD=$(realpath "$2")
source "$(dirname "$0")/tap.sh"
# the job's cleanup of Open MPI leftovers follows Open MPI's own settings: here a scratch directory
mkdir -p "$work/shm" "$work/tmp"
export OMPI_MCA_btl_vader_backing_directory=$work/shm OMPI_MCA_orte_tmpdir_base=$work/tmp
echo "--coll alltoall -b 1M -e 1M -n 20 -w 2 --ranks 1 -c 0 # a comment" >"$work/m"
export NIGHTLY_RESULTS=$work/res NIGHTLY_MATRIX=$work/m NIGHTLY_REPS=3 NIGHTLY_BUILD=$BUILD NIGHTLY_NO_BUILD=1
unset EPB_TEST_SLOWDOWN NIGHTLY_CONFIRM NIGHTLY_HISTORY NIGHTLY_BASELINE
# fresh RESULTS_DIR: an empty results directory (no baseline, no history)
fresh() { rm -rf "$1"; mkdir -p "$1"; }
# rows FILE: data rows of a CSV
rows() { echo $(($(wc -l <"$1") - 1)); }
# nothing_measured DIR: no bench ran for a results directory (no log, no night, no partial)
nothing_measured() { [ ! -e "$1/bench.log" ] && [ -z "$(ls -A "$1/nights" 2>/dev/null)" ]; }
night_log() { NIGHTLY_RESULTS=$1 "$ROOT/ci/nightly" >"$work/log" 2>&1; }
"$ROOT/ci/nightly" >"$work/log" 2>&1
rc=$?; [ $rc = 0 ] && [ -s "$work/res/baseline.csv" ] && grep -q "this night becomes the baseline" "$work/log" &&
    [ "$(tail -n +2 "$work/res/baseline.csv" | wc -l)" = 3 ] && [ -s "$(ls -d "$work"/res/report-*/report.md)" ]
tap_ok $? "first night: exit 0, 3 rows become the baseline, report written" "$work/log"
EPB_TEST_SLOWDOWN=total:300 "$ROOT/ci/nightly" >"$work/log" 2>&1
rc=$?; [ $rc = 1 ] && grep -q "confirming with a second pass" "$work/log" && grep -q "^slower .*alltoall total" "$work/log" &&
    grep -q "n=3/6" "$work/log" && [ "$(tail -n +2 "$(cat "$work/res/latest-night")" | wc -l)" = 6 ]
tap_ok $? "a 4x slower night: pass 1 alarms, a confirmation pass runs, the verdict on 6 samples names the phase, exit 1" "$work/log"
[ "$(tail -n +2 "$work/res/history.csv" | wc -l)" = 9 ] && [ "$(head -1 "$work/res/history.csv" | cut -c1-6)" = schema ] &&
    [ "$(grep -c '^schema' "$work/res/history.csv")" = 1 ]
tap_ok $? "history holds both nights' 9 rows under one header" "$work/log"
"$ROOT/ci/nightly" --accept >"$work/log" 2>&1 && cmp -s "$work/res/baseline.csv" "$(cat "$work/res/latest-night")"
tap_ok $? "--accept makes the latest night the baseline" "$work/log"
EPB_TEST_SLOWDOWN=total:300 "$ROOT/ci/nightly" --no-confirm --reps 3 >"$work/log" 2>&1
rc=$?; { [ $rc = 0 ] || [ $rc = 1 ]; } && ! grep -q "confirming" "$work/log" && grep -q "^regression check:" "$work/log" &&
    [ "$(tail -n +2 "$(cat "$work/res/latest-night")" | wc -l)" = 3 ]
tap_ok $? "--no-confirm: a verdict on pass 1 alone (3 rows in the night, no second pass)" "$work/log"
nights=$(ls "$work/res/nights" | wc -l)
echo "--coll nosuch -b 1M" >"$work/bad"
NIGHTLY_MATRIX=$work/bad "$ROOT/ci/nightly" >"$work/log" 2>&1
rc=$?; [ $rc = 2 ] && grep -q "bench refused the line '--coll nosuch -b 1M'" "$work/log" && [ "$(ls "$work/res/nights" | wc -l)" = "$nights" ]
tap_ok $? "a bad matrix line: exit 2 naming it, no night file or partial left" "$work/log"
"$ROOT/ci/nightly" --reps 0 >"$work/log" 2>&1; [ $? = 2 ] && grep -q "reps" "$work/log"; tap_ok $? "--reps 0: exit 2" "$work/log"
"$ROOT/ci/nightly" --bogus >"$work/log" 2>&1; [ $? = 2 ] && grep -q "unknown option '--bogus'" "$work/log"; tap_ok $? "unknown option: exit 2" "$work/log"

"$ROOT/ci/nightly" --help >"$work/log" 2>&1; grep -q "4 NOTHING COMPARED" "$work/log"
tap_ok $? "--help documents exit 4 (nothing compared)" "$work/log"

# a history parses whole: the report reads every row against a header-only baseline, compares nothing (exit 4;
# a parse error would be exit 2)
parses() { head -n 1 "$1" >"$work/hdr.csv"; "$BUILD/reports/report" --baseline "$work/hdr.csv" "$1" >/dev/null 2>&1; [ $? = 4 ]; }

# two jobs at once on one results directory (same second, same baseline and history): distinct nights of 3 rows
# each, the history gains all 6 rows whole; one pass each (--no-confirm), their verdicts (timing) not checked
nights=$(ls "$work/res/nights" | wc -l) before=$(rows "$work/res/history.csv")
NIGHTLY_CONFIRM=0 "$ROOT/ci/nightly" >"$work/log1" 2>&1 & p1=$!
NIGHTLY_CONFIRM=0 "$ROOT/ci/nightly" >"$work/log2" 2>&1 & p2=$!
wait $p1; rc1=$?; wait $p2; rc2=$?
cat "$work/log1" "$work/log2" >"$work/log"
n1=$(sed -n 's/^nightly: pass 1: .* -> //p' "$work/log1") n2=$(sed -n 's/^nightly: pass 1: .* -> //p' "$work/log2")
{ [ $rc1 = 0 ] || [ $rc1 = 1 ]; } && { [ $rc2 = 0 ] || [ $rc2 = 1 ]; } && [ "$n1" != "$n2" ] &&
    [ "$(rows "$n1")" = 3 ] && [ "$(rows "$n2")" = 3 ] && [ "$(ls "$work/res/nights" | wc -l)" = $((nights + 2)) ] &&
    [ "$(rows "$work/res/history.csv")" = $((before + 6)) ] && parses "$work/res/history.csv"
tap_ok $? "two nights at once: distinct night files of 3 rows each, the history gains 6 whole rows" "$work/log"

# ---- the history ----
r=$work/torn; fresh "$r"
cp "$work/res/history.csv" "$r/history.csv"
before=$(rows "$r/history.csv")
printf '2,20261129T0' >>"$r/history.csv" # a killed append
night_log "$r"; rc=$?
torn=$(ls "$r"/history-torn-*.csv 2>/dev/null)
[ $rc = 0 ] && [ "$(cat "$torn")" = "2,20261129T0" ] && [ "$(rows "$r/history.csv")" = $((before + 3)) ] &&
    [ "$(grep -n 'was torn' "$work/log" | cut -d: -f1)" -lt "$(grep -n 'pass 1:' "$work/log" | cut -d: -f1)" ] &&
    parses "$r/history.csv"
tap_ok $? "a torn last history row is cut off into history-torn-*.csv before the matrix runs; the night appends whole rows, exit 0" "$work/log"

r=$work/glued; fresh "$r"
{ cat "$work/res/history.csv"; printf '2,20261129T0'; tail -n 1 "$work/res/history.csv"; } >"$r/history.csv"
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "history.csv:$(($(wc -l <"$work/res/history.csv") + 1)): wrong column count" "$work/log" &&
    grep -q "nothing measured" "$work/log" && nothing_measured "$r"
tap_ok $? "a history that does not parse (a row glued by an older job): exit 2 naming the line, before any bench run" "$work/log"

r=$work/schema1; fresh "$r"
schema=$(sed -n 's/^#define EPB_SCHEMA \([0-9]*\)$/\1/p' "$ROOT/common/epb.h")
cp "$ROOT/tests/reports/fixtures/base.csv" "$r/history.csv"
night_log "$r"; rc=$?
[ $rc = 0 ] && cmp -s "$ROOT/tests/reports/fixtures/base.csv" "$r/history-schema1.csv" && grep -q "moved to $r/history-schema1.csv" "$work/log" &&
    [ "$(head -c 9 "$r/history.csv")" = "schema,ru" ] && [ "$(rows "$r/history.csv")" = 3 ] &&
    [ "$(sed -n '2{s/,.*//;p}' "$r/history.csv")" = "$schema" ] && [ -s "$(ls -d "$r"/report-*/report.md)" ]
tap_ok $? "a schema 1 history is moved to history-schema1.csv (said so) and a history of the current schema ($schema) starts with the night" "$work/log"

r=$work/locked; fresh "$r"
# the holder is one process (the subshell execs sleep), so killing it releases the lock and nothing lingers
(exec 8>>"$r/history.csv.lock"; flock -x 8; touch "$work/held"; exec sleep 60) &
holder=$!
for _ in $(seq 100); do [ -e "$work/held" ] && break; sleep 0.1; done
NIGHTLY_LOCK_WAIT=1 night_log "$r"; rc=$?
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
[ $rc = 3 ] && grep -q "locked by another job" "$work/log" && nothing_measured "$r"
tap_ok $? "the history lock held by another job: the night waits (here 1 s), then exit 3 before any bench run" "$work/log"

# ---- the baseline and the paths, checked before measuring ----
r=$work/corrupt; fresh "$r"
{ head -n 1 "$work/res/baseline.csv"; echo "2,not,a,row"; } >"$r/baseline.csv"
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "baseline.csv:2: wrong column count" "$work/log" && grep -q "the baseline $r/baseline.csv does not parse" "$work/log" &&
    nothing_measured "$r"
tap_ok $? "a corrupt baseline: exit 2 naming the file and line, before any bench run" "$work/log"

r=$work/nodir; fresh "$r"
NIGHTLY_BASELINE=$work/missing/baseline.csv night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "directory $work/missing does not exist" "$work/log" && nothing_measured "$r"
tap_ok $? "a baseline in a missing directory: exit 2 before any bench run" "$work/log"
NIGHTLY_HISTORY=$work/missing/history.csv night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "history $work/missing/history.csv: directory $work/missing does not exist" "$work/log" && nothing_measured "$r"
tap_ok $? "a history in a missing directory: exit 2 before any bench run" "$work/log"

# issue 20: what a night took as it came, now refused before anything is measured
# with_rows IN OUT PYEXPR: IN's rows, each changed by the Python statement on row (a dict by column name)
with_rows() {
    python3 -c 'import csv,sys
rd = csv.DictReader(open(sys.argv[1])); w = csv.DictWriter(open(sys.argv[2], "w", newline=""), rd.fieldnames, lineterminator="\n")
w.writeheader()
for row in rd: exec(sys.argv[3]); w.writerow(row)' "$@"
}
r=$work/samefile; fresh "$r"
cp "$work/res/baseline.csv" "$r/history.csv"
NIGHTLY_BASELINE=$r/history.csv night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "baseline $r/history.csv and --history $r/history.csv are one file" "$work/log" && nothing_measured "$r"
tap_ok $? "--baseline equal to --history: exit 2 before any bench run" "$work/log"
ln -s history.csv "$r/baseline.csv"
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "are one file" "$work/log" && nothing_measured "$r"
tap_ok $? "a baseline that is a link to the history (same device and inode): exit 2 before any bench run" "$work/log"

r=$work/fifo; fresh "$r"
mkfifo "$r/baseline.csv"
NIGHTLY_RESULTS=$r timeout 60 "$ROOT/ci/nightly" >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "baseline $r/baseline.csv: not a regular file (fifo)" "$work/log" && [ -p "$r/baseline.csv" ] &&
    nothing_measured "$r"
tap_ok $? "a FIFO as the baseline: exit 2, the FIFO left as it is, nothing measured (exit $rc)" "$work/log"
r=$work/devnull; fresh "$r"
ln -s /dev/null "$r/baseline.csv"
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "not a regular file (character special file)" "$work/log" && [ -L "$r/baseline.csv" ] && nothing_measured "$r"
tap_ok $? "a link to a device as the baseline: exit 2, the link kept, nothing measured" "$work/log"

r=$work/failbase; fresh "$r"
with_rows "$work/res/baseline.csv" "$r/baseline.csv" 'row["check"] = "fail"'
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "the baseline $r/baseline.csv has failed checks ([0-9]* rows with check=fail)" "$work/log" &&
    nothing_measured "$r"
tap_ok $? "a baseline with check=fail rows: exit 2 naming it, before any bench run" "$work/log"
with_rows "$work/res/baseline.csv" "$r/baseline.csv" 'row["check"] = "FAILED"'
night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "baseline.csv:2: column check: 'FAILED' is not ok, fail or skipped" "$work/log" && nothing_measured "$r"
tap_ok $? "a baseline with check=FAILED rows: exit 2 naming the file and line, before any bench run" "$work/log"
cp "$work/res/baseline.csv" "$r/baseline.csv"
with_rows "$work/res/baseline.csv" "$r/failed-night.csv" 'row["check"] = "fail"'
echo "$r/failed-night.csv" >"$r/latest-night"
NIGHTLY_RESULTS=$r "$ROOT/ci/nightly" --accept >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "has failed checks" "$work/log" && cmp -s "$work/res/baseline.csv" "$r/baseline.csv"
tap_ok $? "--accept of a night whose checks failed: exit 2, the baseline unchanged" "$work/log"

r=$work/badopts; fresh "$r"
NIGHTLY_RESULTS=$r "$ROOT/ci/nightly" --min-effect nan >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "min-effect/NIGHTLY_MIN_EFFECT nan: expected a fraction" "$work/log" && nothing_measured "$r"
tap_ok $? "--min-effect nan: exit 2 before any bench run" "$work/log"
NIGHTLY_RESULTS=$r NIGHTLY_NOISE_MULT=-1 "$ROOT/ci/nightly" >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "noise-mult/NIGHTLY_NOISE_MULT -1: expected a number" "$work/log" && nothing_measured "$r"
tap_ok $? "NIGHTLY_NOISE_MULT=-1: exit 2 before any bench run" "$work/log"
{ cat "$work/m"; echo "--coll allgather -b 1000 -e 1000 --ranks 3"; } >"$work/m2"
NIGHTLY_MATRIX=$work/m2 night_log "$r"; rc=$?
[ $rc = 2 ] && grep -q "bench refused the line '--coll allgather -b 1000 -e 1000 --ranks 3': .*cannot be split over 3 ranks" "$work/log" &&
    nothing_measured "$r"
tap_ok $? "a bad last matrix line: exit 2 naming it before the first line runs" "$work/log"

# a baseline whose times are all 0 guards nothing: exit 4, the reason said
r=$work/zero; fresh "$r"
with_rows "$work/res/baseline.csv" "$r/baseline.csv" 'row.update({k: "0" for k in row if k.startswith("t_") or k in ("wait_us", "algbw_gbps", "busbw_gbps")})'
night_log "$r"; rc=$?
[ $rc = 4 ] && grep -q "1 below timer floor" "$work/log" && grep -q "^nightly: NOTHING COMPARED: no match above the timer floor" "$work/log"
tap_ok $? "a baseline of zero times: exit 4, 'NOTHING COMPARED: no match above the timer floor'" "$work/log"

r=$work/failrep; fresh "$r"
mkdir -p "$work/fakebin"; printf '#!/bin/sh\nexit 1\n' >"$work/fakebin/gnuplot"; chmod +x "$work/fakebin/gnuplot"
PATH=$work/fakebin:$PATH night_log "$r"; rc=$?
nf=$(ls "$r"/nights/night-*.csv 2>/dev/null)
[ $rc = 3 ] && [ "$(rows "$nf")" = 3 ] && grep -q "measurements are kept in $nf" "$work/log" && [ "$(rows "$r/history.csv")" = 3 ]
tap_ok $? "a report that fails after measuring: exit 3, the night kept and named, in the history" "$work/log"

# ---- nights that compare nothing: exit 4 and the reason ----
r=$work/empty; fresh "$r"
head -n 1 "$work/res/baseline.csv" >"$r/baseline.csv"
night_log "$r"; rc=$?
[ $rc = 4 ] && grep -q "^nightly: NOTHING COMPARED: baseline empty" "$work/log" && [ "$(rows "$(cat "$r/latest-night")")" = 3 ]
tap_ok $? "a header-only baseline: exit 4, 'NOTHING COMPARED: baseline empty', the night kept" "$work/log"

r=$work/otherhost; fresh "$r"
python3 -c 'import csv,sys
rd = csv.DictReader(open(sys.argv[1])); w = csv.DictWriter(open(sys.argv[2], "w", newline=""), rd.fieldnames, lineterminator="\n")
w.writeheader()
for row in rd: row["host"] = "othernode07"; w.writerow(row)' "$work/res/baseline.csv" "$r/baseline.csv"
night_log "$r"; rc=$?
[ $rc = 4 ] && grep -q "^nightly: NOTHING COMPARED: baseline from another host class (baseline: othernode/" "$work/log"
tap_ok $? "a baseline from another host class: exit 4, 'NOTHING COMPARED: baseline from another host class'" "$work/log"

r=$work/tworeps; fresh "$r"
cp "$work/res/baseline.csv" "$r/baseline.csv"
NIGHTLY_REPS=2 night_log "$r"; rc=$?
[ $rc = 4 ] && grep -q "warning: --reps 2" "$work/log" &&
    grep -q "^nightly: NOTHING COMPARED: too few repetitions (need 3; the baseline has [0-9]*, this night 2 per measurement)" "$work/log"
tap_ok $? "NIGHTLY_REPS=2: warned before measuring, exit 4, 'NOTHING COMPARED: too few repetitions (need 3...)'" "$work/log"

# ---- Open MPI leftovers: a night removes dead ones and keeps held ones ----
r=$work/shmnight; fresh "$r"
host=$(uname -n); host=${host%%.*}
: >"$work/shm/vader_segment.$host.$(id -u).dead0001.0"
: >"$work/shm/vader_segment.$host.$(id -u).live0001.0"
sleep 60 7<"$work/shm/vader_segment.$host.$(id -u).live0001.0" &
sleeper=$!
night_log "$r"; rc=$?
kill "$sleeper"; wait "$sleeper" 2>/dev/null
[ $rc = 0 ] && [ ! -e "$work/shm/vader_segment.$host.$(id -u).dead0001.0" ] && [ -e "$work/shm/vader_segment.$host.$(id -u).live0001.0" ] &&
    grep -q "removed what dead Open MPI jobs left: 1 shared-memory segment" "$work/log"
tap_ok $? "a night first removes a segment nobody holds and keeps one a live process holds open" "$work/log"
tap_done
