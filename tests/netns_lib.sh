# tests/netns_lib.sh, sourced by tests/netns_multinode.sh and experiments/strategies-multinode: two hosts on one
# machine (shared/recipes/multinode.md). netns_up DIR makes two network namespaces joined by a veth pair
# (10.99.0.1 and 10.99.0.2, nowhere else), an rsh agent that runs a command on either "host" in its namespace with
# its own host name (nodea, nodeb: unshare --uts) and a hostfile, all under DIR; netns_job NP BENCH ARGS... runs
# bench under mpirun from nodea over TCP (--bind-to none; NP=2: one rank per host, else filled host by host);
# netns_wire prints the bytes that crossed the veth so far; netns_down stops what is left in the namespaces (by
# pid) and deletes them (safe under set -e). Root only. Names carry the caller's pid: two runs do not collide.
NETNS_A=epbA$$ NETNS_B=epbB$$ NETNS_VA=epbvA$$ NETNS_VB=epbvB$$ NETNS_DIR=
netns_up() {
    NETNS_DIR=$1
    ip netns add "$NETNS_A" && ip netns add "$NETNS_B" && ip link add "$NETNS_VA" type veth peer name "$NETNS_VB" &&
        ip link set "$NETNS_VA" netns "$NETNS_A" && ip link set "$NETNS_VB" netns "$NETNS_B" &&
        ip -n "$NETNS_A" addr add 10.99.0.1/24 dev "$NETNS_VA" && ip -n "$NETNS_B" addr add 10.99.0.2/24 dev "$NETNS_VB" &&
        ip -n "$NETNS_A" link set "$NETNS_VA" up && ip -n "$NETNS_B" link set "$NETNS_VB" up &&
        ip -n "$NETNS_A" link set lo up && ip -n "$NETNS_B" link set lo up || return 1
    # the rsh agent: "AGENT HOST COMMAND..." runs COMMAND (shell syntax, as ssh would) on HOST, in its namespace
    cat >"$NETNS_DIR/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case \$host in
10.99.0.1) exec ip netns exec $NETNS_A unshare --uts sh -c "hostname nodea; \$*" ;;
10.99.0.2) exec ip netns exec $NETNS_B unshare --uts sh -c "hostname nodeb; \$*" ;;
esac
echo "agent: unknown host \$host" >&2
exit 255
AGENT
    chmod +x "$NETNS_DIR/agent"
    printf '10.99.0.1 slots=2\n10.99.0.2 slots=2\n' >"$NETNS_DIR/hosts"
}
netns_job() {
    local np=$1 map=()
    shift
    [ "$np" = 2 ] && map=(--map-by node)
    timeout "${NETNS_TIMEOUT:-60}" ip netns exec "$NETNS_A" unshare --uts sh -c 'hostname nodea; exec "$@"' sh \
        env CUDA_VISIBLE_DEVICES= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        "${MPIRUN:-mpirun}" -np "$np" "${map[@]}" --bind-to none --hostfile "$NETNS_DIR/hosts" \
        --mca plm_rsh_agent "$NETNS_DIR/agent" --mca btl self,vader,tcp --mca btl_tcp_if_include 10.99.0.0/24 \
        --mca oob_tcp_if_include 10.99.0.0/24 "$@"
}
netns_wire() {
    local tx rx
    tx=$(ip netns exec "$NETNS_A" cat /sys/class/net/"$NETNS_VA"/statistics/tx_bytes) || return 1
    rx=$(ip netns exec "$NETNS_A" cat /sys/class/net/"$NETNS_VA"/statistics/rx_bytes) || return 1
    echo $((tx + rx))
}
netns_down() {
    local ns pid
    for ns in "$NETNS_A" "$NETNS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    done
    sleep 0.2
    for ns in "$NETNS_A" "$NETNS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$NETNS_VA" 2>/dev/null || true # only if it never reached its namespace
    return 0
}

# Exits 77 (skipped) unless this is root with ip netns, unshare and an mpirun ($1).
netns_require() {
    if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null || [ -z "$1" ] ||
        ! ip netns list >/dev/null 2>&1; then
        echo "needs root, ip netns, unshare and mpirun: skipped"
        exit 77
    fi
}

# For a TAP test (tap.sh sourced, $work its scratch folder): the two namespaces up and torn down on any exit, a TAP
# line saying so; when they cannot be made, the plan and exit 1.
netns_tap_up() {
    trap 'netns_down; rm -rf "$work"' EXIT
    trap 'exit 1' INT TERM
    netns_up "$work"
    local st=$?
    tap_ok $st "two namespaces joined by a veth pair (10.99.0.1, 10.99.0.2)"
    [ $st = 0 ] || { tap_done; exit 1; }
}
