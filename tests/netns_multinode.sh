#!/usr/bin/env bash
# Two hosts on one machine (shared/recipes/multinode.md): network namespaces joined by a veth pair (10.99.0.1 and
# 10.99.0.2, nowhere else), each with its own host name (unshare --uts), and mpirun across them over TCP with a
# plm_rsh_agent that enters the other namespace instead of ssh. Checks, at 2 ranks (one per host) and 4 (two per
# host), with --bind-to none:
#   - hier (its nodes from the job's hosts), hier:chunks=2 and tp2ep agree with the single-device computation;
#   - every CSV row names both hosts and nodes=2, and hier's table says it runs 2 nodes;
#   - the bytes that really cross the veth (its counters, around one run each, checks off): hier moves fewer than
#     tp2ep at 4 ranks, k=4 (a token crosses once per remote node, not once per remote expert).
# Everything is torn down on exit, also when a step fails: the processes left in the namespaces are stopped by
# their pids, then the namespaces (and the veth pair with them) are deleted.
# Exit 77 (skipped) unless root with `ip netns`, unshare and mpirun. TAP output.
# Usage: netns_multinode.sh BENCH [MPIRUN]
set -u
BENCH=$(realpath "$1") MPIRUN=${2:-$(command -v mpirun)} HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/netns_lib.sh"
netns_require "$MPIRUN"
source "$HERE/tap.sh"
netns_tap_up
job() { local np=$1; shift; MPIRUN=$MPIRUN netns_job "$np" "$BENCH" "$@"; }
small=(--experts 8 --tokens 32 --hidden 32 --ffn 48 -n 2 -w 1)
for np in 2 4; do
    job "$np" --strategy hier,hier:chunks=2,tp2ep --top-k 1,4 "${small[@]}" --csv "$work/r$np.csv" >"$work/out" 2>&1
    tap_ok $? "$np ranks on 2 hosts: hier, hier:chunks=2 and tp2ep agree with one device (check on)" "$work/out"
    csv_all "$work/r$np.csv" 'r["check"] == "ok" and r["nodes"] == "2" and r["hosts"] == "nodea;nodeb" and r["ranks"] == "'$np'"'
    tap_ok $? "$np ranks: every CSV row has check=ok, nodes=2 and hosts nodea;nodeb" "$work/r$np.csv"
    grep -q "note: hier: 2 nodes of $((np / 2)) rank" "$work/out"
    tap_ok $? "$np ranks: hier takes its 2 nodes from the hosts ($(grep -m1 'note:' "$work/out" | sed 's/^ *//'))"
done
# bytes on the wire between the hosts, hier against tp2ep on the same routing
declare -A moved
for s in tp2ep hier; do
    b0=$(netns_wire)
    job 4 --strategy $s --experts 8 --top-k 4 --tokens 256 --hidden 256 --ffn 64 -n 1 -w 0 -c 0 --csv "$work/w.csv" \
        >"$work/out" 2>&1
    st=$?
    moved[$s]=$(($(netns_wire) - b0))
    tap_ok $st "4 ranks: $s runs for the wire count (${moved[$s]} bytes crossed the veth)" "$work/out"
done
[ "${moved[hier]}" -lt "${moved[tp2ep]}" ]
tap_ok $? "hier moves fewer bytes between the hosts than tp2ep at k=4 (${moved[hier]} vs ${moved[tp2ep]})"
tap_done
