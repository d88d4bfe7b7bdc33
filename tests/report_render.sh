#!/usr/bin/env bash
# The report as a reader first sees it: report.html of the verdict fixture (tests/reports/fixtures/verdict.csv)
# rendered by headless Chromium at 1280x900 into BUILD_DIR/artifacts/report-first-screen.png (kept: the CI
# artifact), and the verdict table's position measured in the same layout: its heading and its whole table inside
# the first screen, above any per-configuration heading. TAP output; exit 77 (skipped) without chromium.
# Usage: report_render.sh REPORT_EXE FIXTURES_DIR BUILD_DIR
set -u
REPORT=$(realpath "$1") FIX=$(realpath "$2") BUILD=$(realpath "$3")
CHROMIUM=""
for c in chromium chromium-browser google-chrome; do
    command -v "$c" >/dev/null 2>&1 && { CHROMIUM=$(command -v "$c"); break; }
done
if [ -z "$CHROMIUM" ]; then
    echo "1..0 # SKIP chromium not found (ci/bootstrap --tests installs it)"
    exit 77
fi
source "$(dirname "$(realpath "$0")")/tap.sh"
W=1280 H=900
# chromium wants a writable home and profile; nothing of the user's
export HOME=$work/home
mkdir -p "$HOME" "$BUILD/artifacts"
# headless chromium hung once in CI-like runs (60 s, no output; cause not found): a 20 s bound and one retry
chrome() {
    local i rc
    for i in 1 2; do
        timeout 20 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
            --user-data-dir="$work/profile$i" --window-size=$W,$H "$@" 2>>"$work/chromium.log"
        rc=$?
        [ $rc = 124 ] || return $rc
        echo "chromium: no exit in 20 s (try $i)" >>"$work/chromium.log"
    done
    return $rc
}

"$REPORT" "$FIX/verdict.csv" -o "$work/out" >"$work/report.log" 2>&1
tap_ok $? "report on verdict.csv: exit 0" "$work/report.log"

png=$BUILD/artifacts/report-first-screen.png
rm -f "$png"
chrome --screenshot="$png" "file://$work/out/report.html" >/dev/null
python3 - "$png" $W $H <<'PY' >"$work/png.log" 2>&1
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert (w, h) == (int(sys.argv[2]), int(sys.argv[3])), "size %dx%d" % (w, h)
assert len(data) > 20000, "%d bytes: a blank page" % len(data)
PY
tap_ok $? "first screen rendered: $png (${W}x$H PNG, not blank)" "$work/png.log" "$work/chromium.log"

# the same page with a script that writes where the verdict's heading and table and the first per-configuration
# heading lie (CSS px from the top of the page); --dump-dom prints the result
sed 's#</body></html>#<script>(function(){var h=[].find.call(document.querySelectorAll("h2"),function(e){return e.textContent=="Verdict"});var t=h;while(t\&\&t.tagName!="TABLE")t=t.nextElementSibling;var c=document.querySelector("h3");var y=function(e){return e?Math.round(e.getBoundingClientRect().top+scrollY):-1};var b=t?Math.round(t.getBoundingClientRect().bottom+scrollY):-1;var p=document.createElement("pre");p.id="pos";p.textContent="POS "+y(h)+" "+y(t)+" "+b+" "+y(c);document.body.appendChild(p)})()</script></body></html>#' \
    "$work/out/report.html" >"$work/out/measure.html"
chrome --dump-dom "file://$work/out/measure.html" >"$work/dom.html"
read -r hy ty tb cy < <(sed -n 's/.*POS \(-\?[0-9]*\) \(-\?[0-9]*\) \(-\?[0-9]*\) \(-\?[0-9]*\).*/\1 \2 \3 \4/p' "$work/dom.html")
echo "# verdict heading at ${hy:-?} px, its table ${ty:-?}..${tb:-?} px, first configuration heading at ${cy:-?} px"
[ -n "${hy:-}" ] && [ "$hy" -ge 0 ] && [ "$ty" -gt "$hy" ] && [ "$tb" -le $H ]
tap_ok $? "the verdict heading and its whole table lie in the first ${H} px (table ${ty:-?}..${tb:-?})" \
    "$work/chromium.log"
[ -n "${cy:-}" ] && [ "$cy" -gt "${tb:-0}" ]
tap_ok $? "every per-configuration heading comes after the verdict table (first at ${cy:-?} px)"
grep -q 'FAILED: a check failed (tp2ep)' "$work/dom.html"
tap_ok $? "the rendered verdict marks the failed configuration"
tap_done
