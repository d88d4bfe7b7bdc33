#!/usr/bin/env bash
# ci/nightly --clean-shm against real Open MPI jobs: a 2-rank bench job whose mpirun is killed with SIGKILL
# leaves its ranks' vader segments and mpirun's session directory behind; the cleanup removes those and keeps
# every file of a job that is still running (mapped by its ranks), a file a live process holds open, another
# host's and another user's files, and files that are not Open MPI's. Open MPI is pointed at scratch
# directories (its own MCA settings, which the cleanup follows), so the machine's /dev/shm and /tmp are never
# touched. TAP output; skipped without mpirun.
set -u
ROOT=$(realpath "$1") BENCH=$(realpath "$2") MPIRUN=${3:-}
source "$(dirname "$0")/tap.sh"
if [ -z "$MPIRUN" ]; then echo "1..0 # SKIP no mpirun"; exit 0; fi
mkdir -p "$work/shm" "$work/tmp"
export OMPI_MCA_btl_vader_backing_directory=$work/shm OMPI_MCA_orte_tmpdir_base=$work/tmp
host=$(uname -n) host=${host%%.*} uid=$(id -u)
session=$work/tmp/ompi.$host.$uid
jobs=()
trap 'for p in "${jobs[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

# start_job NAME: a 2-rank alltoall that runs until killed; sets job (mpirun's pid: the child of bench, which
# launched it and waits) and segs (its 2 segment files) once both ranks have mapped theirs
start_job() {
    local before launcher
    before=$(ls "$work/shm")
    "$BENCH" --coll alltoall -b 1K -e 1K -n 100000000 -w 1 -c 0 --ranks 2 --csv "$work/$1.csv" >"$work/$1.log" 2>&1 &
    launcher=$!
    jobs+=("$launcher")
    for _ in $(seq 300); do job=$(pgrep -P "$launcher" | head -1); [ -n "$job" ] && break; sleep 0.1; done
    [ -n "$job" ] || return 1
    jobs+=("$job")
    for _ in $(seq 300); do
        segs=$(ls "$work/shm" | grep -vxF -f <(echo "${before:-none}") | grep '^vader_segment\.')
        [ "$(echo "$segs" | grep -c .)" = 2 ] && [ -d "$session/pid.$job" ] &&
            [ "$(cat /proc/[0-9]*/maps 2>/dev/null | grep -c "$work/shm/vader_segment")" -ge 4 ] && return 0
        sleep 0.1
    done
    return 1
}
# kill_job PID: SIGKILL to mpirun (what a timeout or a scheduler does), then wait until its ranks are gone
kill_job() {
    local ranks
    ranks=$(ps -o pid= --ppid "$1")
    kill -9 "$1"
    wait "$1" 2>/dev/null
    for _ in $(seq 300); do
        local alive=0 p
        for p in $ranks; do grep -q vader_segment "/proc/$p/maps" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    return 1
}
have() { for f in "$@"; do [ -e "$work/shm/$f" ] || return 1; done; }
none() { for f in "$@"; do [ ! -e "$work/shm/$f" ] || return 1; done; }

start_job dead; st=$?
dead=$job dead_segs=$segs
[ $st = 0 ] && kill_job "$dead" && have $dead_segs && [ -d "$session/pid.$dead" ]
tap_ok $? "a 2-rank job whose mpirun gets SIGKILL leaves its 2 segments and its session directory (the problem)" "$work/dead.log"

start_job live; st=$?
live=$job live_segs=$segs
# decoys that must stay: another host's segment, a segment a live process only holds open (no mapping yet),
# another user's segment (as root only), a file that is not Open MPI's
: >"$work/shm/vader_segment.otherhost.$uid.1234.0"
: >"$work/shm/vader_segment.$host.$uid.feed0001.0"
sleep 60 7<"$work/shm/vader_segment.$host.$uid.feed0001.0" &
holder=$!
jobs+=("$holder")
: >"$work/shm/unrelated.0"
decoys="vader_segment.otherhost.$uid.1234.0 vader_segment.$host.$uid.feed0001.0 unrelated.0"
if [ "$uid" = 0 ] && id nobody >/dev/null 2>&1; then
    : >"$work/shm/vader_segment.$host.$uid.beef0001.0"
    chown nobody "$work/shm/vader_segment.$host.$uid.beef0001.0"
    decoys="$decoys vader_segment.$host.$uid.beef0001.0"
fi
[ $st = 0 ]
tap_ok $? "a second job runs with its own 2 segments" "$work/live.log"

"$ROOT/ci/nightly" --clean-shm >"$work/log" 2>&1; rc=$?
[ $rc = 0 ] && none $dead_segs && [ ! -e "$session/pid.$dead" ] && have $live_segs && [ -d "$session/pid.$live" ] &&
    have $decoys && grep -q "2 shared-memory segment(s) .* 1 session directory" "$work/log"
tap_ok $? "--clean-shm removes the killed job's segments and session directory, keeps the live job's and every decoy" "$work/log"

sleep 1
kill -0 "$live" 2>/dev/null && ! grep -qi 'error\|abort' "$work/live.log"
tap_ok $? "the live job still runs after the cleanup" "$work/live.log"

kill_job "$live" && "$ROOT/ci/nightly" --clean-shm >"$work/log" 2>&1 && none $live_segs && [ ! -e "$session/pid.$live" ] &&
    have $decoys
tap_ok $? "once killed too, its segments and session directory go; the decoys stay" "$work/log"
kill "$holder"
wait "$holder" 2>/dev/null
"$ROOT/ci/nightly" --clean-shm >"$work/log" 2>&1 && none "vader_segment.$host.$uid.feed0001.0" &&
    have "vader_segment.otherhost.$uid.1234.0" unrelated.0
tap_ok $? "the held-open segment goes once its holder is gone" "$work/log"
tap_done
