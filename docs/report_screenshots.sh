#!/usr/bin/env bash
# Render the sample report (8 seed methods and every later stage, synthetic values) and take
# headless-browser screenshots at 1400 px and 800 px wide; fail if the page itself scrolls
# horizontally at either width (wide tables and figures must scroll inside their own box).
#
#   apt-get install -y chromium          # Debian's chromium, once
#   docs/report_screenshots.sh [OUT]     # default OUT: runs/report-sample
#
# Writes OUT/report.html, OUT/screenshot-1400.png and OUT/screenshot-800.png; look at them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/report-sample}
PYTHON=${PYTHON:-python}
CHROMIUM=${CHROMIUM:-chromium}
HEIGHT=${HEIGHT:-14000}

PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" tests/report_sample.py "$OUT" >/dev/null
OUT=$(cd "$OUT" && pwd)

browser() {
  local profile
  profile=$(mktemp -d)
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" "$@" 2>/dev/null
  rm -rf "$profile"
}

# A copy of the page that prints how wide its content is once laid out.
probe="$OUT/.width-probe.html"
sed 's#</body>#<script>document.body.insertAdjacentHTML("beforeend", "<p id=probe>" + document.documentElement.scrollWidth + "/" + window.innerWidth + "</p>")</script></body>#' \
  "$OUT/report.html" >"$probe"

status=0
for width in 1400 800; do
  browser --hide-scrollbars --window-size="$width,$HEIGHT" \
    --screenshot="$OUT/screenshot-$width.png" "file://$OUT/report.html" >/dev/null
  measured=$(browser --window-size="$width,900" --dump-dom "file://$probe" |
    sed -n 's#.*<p id="probe">\([0-9]*\)/\([0-9]*\)</p>.*#\1 \2#p')
  read -r content window <<<"$measured"
  echo "$width px: content $content px wide in a $window px window; $OUT/screenshot-$width.png"
  if [ "$content" -gt "$window" ]; then
    echo "  the page scrolls horizontally at $width px" >&2
    status=1
  fi
done
rm -f "$probe"
exit $status
