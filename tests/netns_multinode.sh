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
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null || [ -z "$MPIRUN" ] ||
    ! ip netns list >/dev/null 2>&1; then
    echo "needs root, ip netns, unshare and mpirun: skipped"
    exit 77
fi
source "$HERE/tap.sh"
NA=epbA$$ NB=epbB$$ VA=epbvA$$ VB=epbvB$$ # per run: two runs of this test do not collide
teardown() {
    for ns in "$NA" "$NB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    done
    sleep 0.2
    for ns in "$NA" "$NB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "$VA" 2>/dev/null # (only if it never reached its namespace)
    rm -rf "$work"
}
trap teardown EXIT
trap 'exit 1' INT TERM
ip netns add "$NA" && ip netns add "$NB" && ip link add "$VA" type veth peer name "$VB" &&
    ip link set "$VA" netns "$NA" && ip link set "$VB" netns "$NB" &&
    ip -n "$NA" addr add 10.99.0.1/24 dev "$VA" && ip -n "$NB" addr add 10.99.0.2/24 dev "$VB" &&
    ip -n "$NA" link set "$VA" up && ip -n "$NB" link set "$VB" up &&
    ip -n "$NA" link set lo up && ip -n "$NB" link set lo up
st=$?
tap_ok $st "two namespaces joined by a veth pair (10.99.0.1, 10.99.0.2)"
[ $st = 0 ] || { tap_done; exit 1; }
# the rsh agent: "AGENT HOST COMMAND..." runs COMMAND (shell syntax, as ssh would) on HOST, here in its namespace
cat >"$work/agent" <<EOF
#!/bin/sh
host=\$1; shift
case \$host in
10.99.0.1) exec ip netns exec $NA unshare --uts sh -c "hostname nodea; \$*" ;;
10.99.0.2) exec ip netns exec $NB unshare --uts sh -c "hostname nodeb; \$*" ;;
esac
echo "agent: unknown host \$host" >&2
exit 255
EOF
chmod +x "$work/agent"
printf '10.99.0.1 slots=2\n10.99.0.2 slots=2\n' >"$work/hosts"
# job NP ARGS...: bench under mpirun from host nodea, ranks filled host by host (NP=2: one per host)
job() {
    local np=$1; shift
    local map=()
    [ "$np" = 2 ] && map=(--map-by node)
    timeout 60 ip netns exec "$NA" unshare --uts sh -c 'hostname nodea; exec "$@"' sh \
        env CUDA_VISIBLE_DEVICES= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        "$MPIRUN" -np "$np" "${map[@]}" --bind-to none --hostfile "$work/hosts" --mca plm_rsh_agent "$work/agent" \
        --mca btl self,vader,tcp --mca btl_tcp_if_include 10.99.0.0/24 --mca oob_tcp_if_include 10.99.0.0/24 \
        "$BENCH" "$@"
}
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
wire() {
    local tx rx
    tx=$(ip netns exec "$NA" cat /sys/class/net/"$VA"/statistics/tx_bytes)
    rx=$(ip netns exec "$NA" cat /sys/class/net/"$VA"/statistics/rx_bytes)
    echo $((tx + rx))
}
declare -A moved
for s in tp2ep hier; do
    b0=$(wire)
    job 4 --strategy $s --experts 8 --top-k 4 --tokens 256 --hidden 256 --ffn 64 -n 1 -w 0 -c 0 --csv "$work/w.csv" \
        >"$work/out" 2>&1
    st=$?
    moved[$s]=$(($(wire) - b0))
    tap_ok $st "4 ranks: $s runs for the wire count (${moved[$s]} bytes crossed the veth)" "$work/out"
done
[ "${moved[hier]}" -lt "${moved[tp2ep]}" ]
tap_ok $? "hier moves fewer bytes between the hosts than tp2ep at k=4 (${moved[hier]} vs ${moved[tp2ep]})"
tap_done
