#!/usr/bin/env bash
# A lost rank and --timeout (DESIGN.md "Contracts": a job whose rank dies, or whose collective runs past --timeout,
# ends with 3 and one line naming the rank and the phase), on real 2-rank jobs:
#   - a rank stopped with SIGSTOP: the watchdog of the rank left waiting ends the job within --timeout 5 (plus
#     the teardown), naming the stopped rank, the collective and the mode (--coll) or the MoE phase (--strategy),
#     also when the call waited in is on a split (hier, 2 nodes of 2 ranks);
#   - a rank killed with SIGKILL: bench, which launched mpirun, exits 3 with one line naming it (no mpirun banner);
#   - --timeout 0: no watchdog thread, a 3 s stop is survived; SIGTERM to bench is passed on to mpirun (exit 3);
#   - bad --timeout values exit 2; MPI that cannot start under Slurm without PMIx exits 3 with the hint;
#   - mpirun's outcomes mapped (a fake mpirun around the real one): a rank's 1 and 2 stay, mpirun's banner is
#     hidden; a rank ended without a word, mpirun killed or failing, a job that never started: 3;
#   - the heartbeat table of a job killed under a plain mpirun stays, and the next job removes it, never a live
#     job's.
# Only processes this script started are stopped, continued or killed. TAP output; skipped without MPI.
set -u
BENCH=$(realpath "$1") MPIRUN=${2:-}
source "$(dirname "$0")/tap.sh"
# the heartbeat tables of this script's jobs in a folder of its own: other bench jobs on the machine (tests running
# beside this one) neither add to its counts nor clean its stale table before it looks
export EPB_HEARTBEAT_DIR=$work/hb
mkdir -p "$EPB_HEARTBEAT_DIR"
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
tables() { ls "$EPB_HEARTBEAT_DIR" 2>/dev/null | grep "^epb-hb\.$host\.$uid\." | sort; }

# ---- options ----
for v in -1 abc 0.01 1e9 ""; do
    "$BENCH" --coll alltoall --ranks 1 --timeout "$v" >"$work/o" 2>"$work/e"
    rc=$?; [ $rc = 2 ] && [ "$(wc -l <"$work/e")" = 1 ] && grep -q -- "--timeout '$v'" "$work/e"
    tap_ok $? "--timeout '$v': exit 2, one line naming the option (got $rc)" "$work/e"
done
"$BENCH" --help | grep -q -- "--timeout S .*exit 3"; tap_ok $? "--help describes --timeout"

# ---- MPI that cannot start: srun without PMIx (faked: SLURM_* set, no PMIX_*, PMI_* or OMPI_* variable) ----
unset_pmi=()
for v in $(env | sed -n 's/^\(\(PMIX\|PMI\|OMPI\)_[A-Za-z0-9_]*\)=.*/\1/p'); do unset_pmi+=(-u "$v"); done
env "${unset_pmi[@]}" SLURM_NODELIST="$host" SLURM_STEP_ID=0 SLURM_JOB_ID=1 SLURM_PROCID=0 SLURM_NTASKS=1 \
    "$BENCH" --coll alltoall -b 8K -e 8K -n 1 -w 0 --ranks 1 --csv "$work/s.csv" >"$work/o" 2>"$work/e"
rc=$?; [ $rc = 3 ] && [ "$(wc -l <"$work/e")" = 1 ] && grep -q "^bench: MPI cannot start: .*under Slurm use srun --mpi=pmix" "$work/e"
tap_ok $? "under srun without PMIx: exit 3 (got $rc), one line with the hint, not Open MPI's page" "$work/e"

# ---- a rank stopped: --coll ----
launch stopc --coll alltoall -b 1M -e 1M -n 1000000 -w 1 --ranks 2 --timeout 5
r1=$(rank_pid "$job" 1) && started_run "$work/stopc.out" "# collective"
tap_ok $? "--coll job started (rank 1: pid ${r1:-?})" "$work/stopc.err"
watchdog_thread "${r1:-0}"; tap_ok $? "--timeout 5: the ranks run the watchdog thread"
kill -STOP "$r1" && stopped+=("$r1")
if ends_within "$job" 15; then
    [ $rc = 3 ] && (($(echo "$secs >= 4.5" | bc))); tap_ok $? "rank 1 stopped: the job ends with 3 after the timeout, within 15 s (exit $rc after $secs s)" "$work/stopc.err"
    [ "$(grep -c "has not completed" "$work/stopc.err")" = 1 ] &&
        tail -1 "$work/stopc.err" | grep -qE "^bench: rank 0 \(pid [0-9]+\): [a-z_]+ on the (data|control) communicator has not completed after [0-9.]+ s \(--timeout 5\) in --coll alltoall 1M; waiting for rank 1 \(pid $r1, stopped\) .*ending the job \(exit 3\)$"
    tap_ok $? "one line, the last, names rank 0 waiting, the collective, the mode and rank 1 stopped" "$work/stopc.err"
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
    tail -1 "$work/stopm.err" | grep -qE "^bench: rank 0 \(pid [0-9]+\): [a-z_ ()]+ on the (data|control) communicator has not completed after [0-9.]+ s \(--timeout 5\) in phase ($phases) of --strategy tp2ep[: ].*; waiting for rank 1 \(pid $r1, stopped\) .*\(exit 3\)$"
    tap_ok $? "the line names the MoE phase rank 0 waits in and rank 1 stopped" "$work/stopm.err"
else
    tap_ok 1 "rank 1 stopped in a MoE step: exit 3 within 15 s (still running)" "$work/stopm.err"
    tap_ok 1 "the line names the MoE phase" "$work/stopm.err"
fi
kill -CONT "$r1" 2>/dev/null

# ---- a rank stopped while the others wait on a split: hier, 2 nodes of 2 ranks (rank 3 slow in experts_fwd) ----
# (on a loaded machine rank 3 may still be in the strategy's set-up when stopped: the others then wait in the
# split of the data communicator itself, named with no phase; that split was once not watched, and the job hung)
EPB_TEST_DELAY=experts_fwd:1000:3 launch stoph --strategy hier:node_size=2 -n 100000 -w 1 --ranks 4 --timeout 3
r3=$(rank_pid "$job" 3) && started_run "$work/stoph.out" "# epbench moe"
tap_ok $? "--strategy hier at 4 ranks started (rank 3: pid ${r3:-?})" "$work/stoph.err"
sleep 1.5
kill -STOP "$r3" && stopped+=("$r3")
if ends_within "$job" 15; then
    [ $rc = 3 ] && tail -1 "$work/stoph.err" | grep -qE "^bench: rank [0-2] \(pid [0-9]+\): [a-z_ ()]+ on (a split|the data) communicator has not completed .* in (phase [a-z_]+ of )?--strategy hier:.*; waiting for rank 3 \(pid $r3, stopped\) .*\(exit 3\)$"
    tap_ok $? "a rank stopped under hier: exit 3 (got $rc) after $secs s, the line names rank 3 stopped" "$work/stoph.err"
else
    # a failure says whether the job hangs or is only slow: it is given 45 s more, rank 3 still stopped
    late="still running 60 s after the stop"
    ends_within "$job" 45 && late="it ended $secs s later, exit $rc"
    tap_ok 1 "a rank stopped under hier: the job ends within 15 s ($late)" "$work/stoph.err"
    ps -o pid,stat,etime,args --ppid "$job" 2>/dev/null | sed 's/^/# /'
fi
kill -CONT "$r3" 2>/dev/null

# ---- a rank killed (self-launched) ----
launch kill --coll alltoall -b 1M -e 1M -n 1000000 -w 1 --ranks 2
launcher=$job
r1=$(rank_pid "$job" 1) && started_run "$work/kill.out" "# collective"
tap_ok $? "job started (rank 1: pid ${r1:-?})" "$work/kill.err"
[ -n "$(tables | grep -- "-$launcher\$")" ]; tap_ok $? "the job has its heartbeat table, named after the launcher"
kill -KILL "$r1"
if ends_within "$job" 15; then
    [ $rc = 3 ] && tail -1 "$work/kill.err" | grep -qE "^bench: rank 1 \(pid $r1\) died \(killed by signal 9.*\); its last collective: [a-z_]+ on the (data|control) communicator.*; the job was ended \(exit 3\)$"
    tap_ok $? "rank 1 killed with SIGKILL: exit 3 (got $rc), the last line names rank 1, its pid and last collective" "$work/kill.err"
    ! grep -qE "Primary job|mpirun noticed|^-----" "$work/kill.err"; tap_ok $? "mpirun's banner is not shown" "$work/kill.err"
    [ -z "$(tables | grep -- "-$launcher\$")" ]; tap_ok $? "the launcher removed the job's heartbeat table"
else
    tap_ok 1 "rank 1 killed: the job ends within 15 s" "$work/kill.err"
fi

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
stale=$EPB_HEARTBEAT_DIR/epb-hb.$host.$uid.$host-$r0
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
[ "$(echo "$live" | grep -c .)" = 1 ] && [ -e "$EPB_HEARTBEAT_DIR/$live" ]; tap_ok $? "and kept the live job's (${live:-none})"
kill -TERM "$off"
if ends_within "$off" 15; then
    [ $rc = 3 ] && tail -1 "$work/off.err" | grep -q "^bench: interrupted (Terminated): mpirun ended the job (exit 3)$" &&
        gone "$r1" && [ ! -e "$EPB_HEARTBEAT_DIR/$live" ]
    tap_ok $? "SIGTERM to bench reaches mpirun: ranks ended, exit 3 (got $rc), one line, table removed" "$work/off.err"
else
    tap_ok 1 "SIGTERM to bench ends the job within 15 s" "$work/off.err"
fi
[ "$(comm -13 <(echo "$before") <(tables) | grep -c .)" = 0 ]; tap_ok $? "no heartbeat table left by these jobs" 

# ---- mpirun's outcomes, through a fake mpirun around the real one ----
cat >"$work/mpirun" <<EOF
#!/usr/bin/env bash
# the real mpirun (unless the job never starts), then what FAKE says it ended with
dash() { echo "--------------------------------------------------------------------------"; }
[ "\$FAKE" = nostart ] || "$MPIRUN" "\$@" || exit
case "\$FAKE" in
rank1|rank2) dash >&2; printf 'Primary job  terminated normally, but 1 process returned\na non-zero exit code. Per user-direction, the job has been aborted.\n' >&2; dash >&2
    dash >&2; printf 'mpirun detected that one or more processes exited with non-zero status, thus causing\nthe job to be terminated. The first process to do so was:\n\n  Process name: [[1234,1],1]\n  Exit code:    %s\n' "\${FAKE#rank}" >&2; dash >&2
    exit "\${FAKE#rank}" ;;
improper) dash >&2; printf 'mpirun has exited due to process rank 1 with PID 0 on\nnode x exiting improperly. There are three reasons this could occur:\n' >&2; dash >&2; exit 1 ;;
killed) kill -KILL \$\$ ;;
odd) exit 213 ;;
nostart) dash >&2; echo "There are not enough slots available in the system to satisfy the 2" >&2; dash >&2; exit 1 ;;
esac
EOF
chmod +x "$work/mpirun"
fake() { # fake OUTCOME: a quick 2-rank job under the fake mpirun; its exit status in rc
    FAKE=$1 EPB_MPIRUN=$work/mpirun "$BENCH" --coll alltoall -b 8K -e 8K -n 2 -w 0 --ranks 2 --csv "$work/f.csv" \
        >"$work/f.out" 2>"$work/f.err"
    rc=$?
}
fake rank1; [ $rc = 1 ] && ! grep -qE "Primary job|exited with non-zero|^-----" "$work/f.err"
tap_ok $? "a rank's exit 1 (a failed check) stays 1 (got $rc), mpirun's banner hidden" "$work/f.err"
fake rank2; [ $rc = 2 ]; tap_ok $? "a rank's exit 2 stays 2 (got $rc)" "$work/f.err"
fake improper; [ $rc = 3 ] && tail -1 "$work/f.err" | grep -q "^bench: rank 1 (pid [0-9]*) died (ended without a word.*(exit 3)$" &&
    ! grep -q "exiting improperly" "$work/f.err"
tap_ok $? "a rank ended without a word: exit 3 (got $rc), one line naming rank 1" "$work/f.err"
fake killed; [ $rc = 3 ] && tail -1 "$work/f.err" | grep -q "^bench: mpirun was killed by signal 9"
tap_ok $? "mpirun killed: exit 3 (got $rc), said" "$work/f.err"
fake odd; [ $rc = 3 ] && tail -1 "$work/f.err" | grep -q "^bench: mpirun failed (exit 213)"
tap_ok $? "mpirun's own exit 213: exit 3 (got $rc)" "$work/f.err"
fake nostart; [ $rc = 3 ] && grep -q "not enough slots" "$work/f.err" && tail -1 "$work/f.err" | grep -q "before any rank started"
tap_ok $? "mpirun failing to start the ranks (exit 1): exit 3 (got $rc), its own message kept" "$work/f.err"
tap_done
