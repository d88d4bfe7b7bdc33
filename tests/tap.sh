# tests/tap.sh, sourced by the shell tests after they have read their arguments: a scratch directory $work
# (the current directory, removed on exit), the TAP counters, one result line per check, the plan, and how many
# GPUs bench sees.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99
n=0 failed=0
# tap_ok STATUS DESCRIPTION [FILE...]: "ok N - DESCRIPTION" when STATUS is 0, else "not ok N - DESCRIPTION"
# followed by the FILEs (logs) as "# " comments.
tap_ok() {
    local st=$1 what=$2
    shift 2
    n=$((n + 1))
    if [ "$st" = 0 ]; then
        echo "ok $n - $what"
    else
        failed=$((failed + 1))
        echo "not ok $n - $what"
        [ $# -gt 0 ] && sed 's/^/# /' "$@" 2>/dev/null | tail -40
    fi
    return 0
}
# bench_gpus BENCH: the GPUs bench sees, from its --version line ("..., N GPU(s) visible"); 0 without CUDA
bench_gpus() {
    local n
    n=$("$1" --version | sed -n 's/.*, \([0-9]*\) GPU(s) visible.*/\1/p')
    echo "${n:-0}"
}
# The plan, and the script's exit status: 0 when every check passed.
tap_done() {
    echo "1..$n"
    [ "$failed" -eq 0 ]
}
# csv_all FILE PYEXPR / csv_any FILE PYEXPR: whether every row (at least one) / some row of an epbench CSV satisfies
# the Python expression over r, the row as a dict by column name (columns are read by name, never by position)
csv_all() { python3 -c 'import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); sys.exit(0 if rows and all(eval(sys.argv[2], {}, {"r": r}) for r in rows) else 1)' "$@"; }
csv_any() { python3 -c 'import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); sys.exit(0 if any(eval(sys.argv[2], {}, {"r": r}) for r in rows) else 1)' "$@"; }
