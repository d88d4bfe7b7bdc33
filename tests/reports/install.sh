#!/usr/bin/env bash
# The installed report: `meson install --destdir` puts every plot script of plots/ where the installed program
# looks (../share/epbench/plots from its own path), and that program, run from the install tree on a top-k sweep
# (tests/reports/fixtures/moe.csv), draws every plot, the crossover among them. TAP output; the rendering checks
# are skipped without gnuplot. Usage: install.sh BUILD_DIR SOURCE_DIR FIXTURES_DIR
set -u
BUILD=$(realpath "$1") SRC=$(realpath "$2") FIX=$(realpath "$3")
source "$SRC/tests/tap.sh"
meson install -C "$BUILD" --destdir "$work/root" --no-rebuild >"$work/install.log" 2>&1
tap_ok $? "meson install --destdir" "$work/install.log"
exe=$(find "$work/root" -type f -name report -perm -u+x | head -n 1)
share=$(find "$work/root" -type d -path '*/share/epbench/plots' | head -n 1)
[ -n "$exe" ] && [ -n "$share" ]
tap_ok $? "installed: bin/report and share/epbench/plots (${exe#$work/root}, ${share#$work/root})" "$work/install.log"
missing=""
for gp in "$SRC"/plots/*.gp; do
    [ -f "$share/$(basename "$gp")" ] || missing+=" $(basename "$gp")"
done
[ -z "$missing" ]
tap_ok $? "every plots/*.gp is installed${missing:+ (missing:$missing)}"
if ! command -v gnuplot >/dev/null 2>&1; then
    echo "ok $((n + 1)) - # SKIP the installed report's plots: gnuplot not found on PATH"
    n=$((n + 1))
    tap_done
    exit
fi
# run outside the source and build trees, with nothing pointing at the source's scripts
cd "$work" && env -u EPB_PLOTS_DIR "$exe" "$FIX/moe.csv" -o "$work/out" >"$work/run.log" 2>&1
tap_ok $? "the installed report on a top-k sweep: exit 0" "$work/run.log"
drawn=0
for p in phases_0 topk crossover ranks busbw history; do
    [ -s "$work/out/plots/$p.svg" ] && [ -s "$work/out/plots/$p.png" ] && drawn=$((drawn + 1))
done
[ $drawn = 6 ]
tap_ok $? "the installed report drew all 6 plots, crossover among them ($drawn)" "$work/run.log"
tap_done
