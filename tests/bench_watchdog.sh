#!/usr/bin/env bash
# --timeout (DESIGN.md "Contracts": a job whose collective runs past --timeout ends with 3 and one line naming the
# rank and the phase), on real 2-rank jobs:
#   - a rank stopped with SIGSTOP: the watchdog of the rank left waiting ends the job within --timeout 5 (plus
#     the teardown), naming the stopped rank, the collective and the mode (--coll) or the MoE phase (--strategy);
#   - --timeout 0: no watchdog thread, a 3 s stop is survived; bad --timeout values exit 2;
#   - the heartbeat table of a job killed under a plain mpirun stays, and the next job removes it, never a live
#     job's.
# Only processes this script started are stopped, continued or killed. TAP output; skipped without MPI.
set -u
BENCH=$(realpath "$1") MPIRUN=${2:-}
source "$(dirname "$0")/tap.sh"
if [ -z "$MPIRUN" ] || ! "$BENCH" --version | grep -q "mpi,"; then
    echo "1..0 # SKIP no MPI in this build"; exit 0
fi
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
host=$(uname -n) host=${host%%.*} uid=$(id -u)
started=() stopped=()
# at exit: continue what this script stopped, end what it started (their mpirun ends their ranks)
trap 'for p in "${stopped[@]}"; do kill -CONT "$p" 2>/dev/null; done
      for p in "${started[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 1
      for p in "${started[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

now() { date +%s%N; }
# gone PID: whether PID has ended (a zombie child not yet waited for counts as ended)
gone() { local st; st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ]; }
# ends_within PID SECONDS: whether the child PID ends within SECONDS; its exit status in rc, the time in secs
ends_within() {
    local t0 end; t0=$(now) end=$(($(now) + $2 * 1000000000))
    while ! gone "$1"; do
        [ "$(now)" -ge $end ] && return 1
        sleep 0.1
    done
    wait "$1"; rc=$?
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
}
# rank_pid LAUNCHER R: rank R's pid in the job under LAUNCHER (bench -> mpirun -> ranks, or mpirun -> ranks),
# told by the OMPI_COMM_WORLD_RANK in its environment; waits up to 30 s for it
rank_pid() {
    local p m
    for _ in $(seq 300); do
        for p in $(pgrep -P "$1") $(for m in $(pgrep -P "$1"); do pgrep -P "$m"; done); do
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return 0; }
        done
        sleep 0.1
    done
    return 1
}
# started_run FILE TEXT: waits up to 60 s until the job's stdout (rank 0's) holds TEXT: every rank is set up
started_run() {
    for _ in $(seq 600); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
# launch NAME ARGS...: bench ARGS in the background, stdout in NAME.out, stderr in NAME.err; its pid in job
launch() {
    local name=$1
    shift
    "$BENCH" "$@" --csv "$work/$name.csv" >"$work/$name.out" 2>"$work/$name.err" &
    job=$!
    started+=("$job")
}
# watchdog_thread PID: whether the process runs the --timeout thread (named epb-watchdog)
watchdog_thread() { grep -qx epb-watchdog /proc/"$1"/task/*/comm 2>/dev/null; }
tables() { ls /dev/shm 2>/dev/null | grep "^epb-hb\.$host\.$uid\." | sort; }

# ---- options ----
for v in -1 abc 0.01 1e9 ""; do
    "$BENCH" --coll alltoall --ranks 1 --timeout "$v" >"$work/o" 2>"$work/e"
    rc=$?; [ $rc = 2 ] && [ "$(wc -l <"$work/e")" = 1 ] && grep -q -- "--timeout '$v'" "$work/e"
    tap_ok $? "--timeout '$v': exit 2, one line naming the option (got $rc)" "$work/e"
done
"$BENCH" --help | grep -q -- "--timeout S .*exit 3"; tap_ok $? "--help describes --timeout"

# ---- a rank stopped: --coll ----
launch stopc --coll alltoall -b 1M -e 1M -n 1000000 -w 1 --ranks 2 --timeout 5
r1=$(rank_pid "$job" 1) && started_run "$work/stopc.out" "# collective"
tap_ok $? "--coll job started (rank 1: pid ${r1:-?})" "$work/stopc.err"
watchdog_thread "${r1:-0}"; tap_ok $? "--timeout 5: the ranks run the watchdog thread"
kill -STOP "$r1" && stopped+=("$r1")
if ends_within "$job" 15; then
    [ $rc = 3 ] && (($(echo "$secs >= 4.5" | bc))); tap_ok $? "rank 1 stopped: the job ends with 3 after the timeout, within 15 s (exit $rc after $secs s)" "$work/stopc.err"
    [ "$(grep -c "has not completed" "$work/stopc.err")" = 1 ] &&
        grep -qE "^bench: rank 0 \(pid [0-9]+\): [a-z_]+ on the (data|control) communicator has not completed after [0-9.]+ s \(--timeout 5\) in --coll alltoall 1M; waiting for rank 1 \(pid $r1, stopped\) .*ending the job \(exit 3\)$" "$work/stopc.err"
    tap_ok $? "one line names rank 0 waiting, the collective, the mode and rank 1 stopped" "$work/stopc.err"
else
    tap_ok 1 "rank 1 stopped: the job ends with 3 within 15 s (still running)" "$work/stopc.err"
    tap_ok 1 "one line names rank 1" "$work/stopc.err"
fi
kill -CONT "$r1" 2>/dev/null

# ---- a rank stopped: --strategy (rank 1 spends ~1 s of each step in experts_fwd, rank 0 waits in a phase) ----
EPB_TEST_DELAY=experts_fwd:1000:1 launch stopm --strategy tp2ep -n 100000 -w 1 --ranks 2 --timeout 5
r1=$(rank_pid "$job" 1) && started_run "$work/stopm.out" "# epbench moe"
tap_ok $? "--strategy job started (rank 1: pid ${r1:-?})" "$work/stopm.err"
sleep 1.5
kill -STOP "$r1" && stopped+=("$r1")
if ends_within "$job" 15; then
    # rank 0 may have waited up to a step's 1 s delay already when rank 1 stops
    [ $rc = 3 ] && (($(echo "$secs >= 3.5" | bc))); tap_ok $? "rank 1 stopped in a MoE step: exit 3 within 15 s (exit $rc after $secs s)" "$work/stopm.err"
    phases="route|layout|permute|dispatch|experts_fwd|unpermute|combine|gate|shared_fwd|gate_bwd|combine_bwd|unpermute_bwd|experts_bwd|permute_bwd|dispatch_bwd|shared_bwd|route_bwd|grad_sync"
    grep -qE "^bench: rank 0 \(pid [0-9]+\): [a-z_]+ on the (data|control) communicator has not completed after [0-9.]+ s \(--timeout 5\) in phase ($phases) of --strategy tp2ep[: ].*; waiting for rank 1 \(pid $r1, stopped\) .*\(exit 3\)$" "$work/stopm.err"
    tap_ok $? "the line names the MoE phase rank 0 waits in and rank 1 stopped" "$work/stopm.err"
else
    tap_ok 1 "rank 1 stopped in a MoE step: exit 3 within 15 s (still running)" "$work/stopm.err"
    tap_ok 1 "the line names the MoE phase" "$work/stopm.err"
fi
kill -CONT "$r1" 2>/dev/null

# ---- a rank killed under a plain mpirun: its table stays, the next job removes it ----
before=$(tables)
"$MPIRUN" "${root[@]}" --oversubscribe --bind-to none -np 2 "$BENCH" --coll alltoall -b 1M -e 1M -n 1000000 -w 1 \
    --csv "$work/plain.csv" >"$work/plain.out" 2>"$work/plain.err" &
job=$!
started+=("$job")
r0=$(rank_pid "$job" 0) && r1=$(rank_pid "$job" 1) && started_run "$work/plain.out" "# collective"
tap_ok $? "plain mpirun job started" "$work/plain.err"
kill -KILL "$r1"
ends_within "$job" 15
stale=/dev/shm/epb-hb.$host.$uid.$host-$r0
[ -e "$stale" ]; tap_ok $? "the killed job's heartbeat table stays behind ($stale)"

# ---- --timeout 0: no watchdog; a live job's table is kept while the next job cleans ----
before_off=$(tables)
launch off --coll alltoall -b 1M -e 1M -n 1000000 -w 1 --ranks 2 --timeout 0
off=$job
r0=$(rank_pid "$job" 0) && r1=$(rank_pid "$job" 1) && started_run "$work/off.out" "# collective"
tap_ok $? "--timeout 0 job started (rank 1: pid ${r1:-?})" "$work/off.err"
live=$(comm -13 <(echo "$before_off") <(tables))
! watchdog_thread "$r1"; tap_ok $? "--timeout 0: no watchdog thread"
kill -STOP "$r1" && stopped+=("$r1")
sleep 3
kill -CONT "$r1"
sleep 1
! gone "$off" && ! grep -q "has not completed" "$work/off.err"; tap_ok $? "--timeout 0: a 3 s stop is survived, nothing said" "$work/off.err"
"$BENCH" --coll alltoall -b 8K -e 8K -n 2 -w 0 --ranks 2 --csv "$work/q.csv" >"$work/q.out" 2>"$work/q.err"
rc=$?; [ $rc = 0 ] && [ ! -e "$stale" ]; tap_ok $? "the next job (exit $rc) removed the dead job's table" "$work/q.err"
[ "$(echo "$live" | grep -c .)" = 1 ] && [ -e "/dev/shm/$live" ]; tap_ok $? "and kept the live job's (${live:-none})"
kill -TERM "$off"
ends_within "$off" 15
# mpirun ended its ranks with SIGTERM: once they are gone, its table is a dead job's, which the next job removes
for _ in $(seq 100); do gone "$r0" && gone "$r1" && break; sleep 0.1; done
"$BENCH" --coll alltoall -b 8K -e 8K -n 2 -w 0 --ranks 2 --csv "$work/q.csv" >"$work/q.out" 2>"$work/q.err"
[ "$(comm -13 <(echo "$before") <(tables) | grep -c .)" = 0 ]; tap_ok $? "no heartbeat table left by these jobs" 

tap_done
