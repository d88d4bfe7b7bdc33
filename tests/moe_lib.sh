# Shared by the strategy tests (moe_strategies.sh, moe_features.sh); needs BENCH, N and work, and tap.sh sourced.
# run DESCRIPTION BENCH-ARGS...: one checked bench run at N ranks (1 iteration, no warm-up) appending to
# $work/r.csv, a TAP line for its exit, and on failure the lines that say why.
run() {
    local what=$1; shift
    "$BENCH" --ranks "$N" -n 1 -w 0 -c 1 --csv "$work/r.csv" "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    tap_ok $rc "$N ranks: $what"
    [ $rc = 0 ] || grep -E "check:|FAIL|bench:" "$work/out" "$work/err" | sed 's/^/# /' | head -20
}
