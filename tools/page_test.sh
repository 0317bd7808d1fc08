#!/usr/bin/env bash
# page_test.sh - the bench's page in a real browser (headless Chromium):
# the page of the stored run (tests/data) is rendered and must pass
# tools/page_check.py (every graph drawn, no console message, a
# screenshot); a copy broken on purpose (a script error, a graph with
# nothing in it) must fail it; and given a folder (the quick suite's
# bench/out/latest), its page must pass too, its screenshot kept there as
# page.png for CI to keep.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1" >&2; failed=$((failed + 1)); }

python3 bench/bench.py --render tests/data/bench_results.json \
  --out "$work/stored" > "$work/render.log" 2>&1 \
  && [ -s "$work/stored/index.html" ] \
  && ok "the stored run renders to index.html" \
  || bad "render: $(tail -5 "$work/render.log")"
if python3 tools/page_check.py "$work/stored/index.html" "$work/stored.png"; then
  ok "the stored run's page: every graph drawn, no console message"
else
  bad "the stored run's page"
fi
# Broken on purpose: an error in a script, and a graph emptied.
python3 - "$work/stored/index.html" "$work/broken.html" <<'EOPY'
import re, sys
s = open(sys.argv[1]).read()
s = s.replace("<body", "<script>console.error('broken on purpose')</script><body", 1)
s = re.sub(r"<svg.*?</svg>", "<svg></svg>", s, count=1, flags=re.S)
open(sys.argv[2], "w").write(s)
EOPY
if python3 tools/page_check.py "$work/broken.html" "$work/broken.png" --expect-fail; then
  ok "a broken page fails the check"
else
  bad "a broken page passed the check"
fi
if [ $# -ge 1 ]; then
  if python3 tools/page_check.py "$1/index.html" "$1/page.png"; then
    ok "$1/index.html: every graph drawn, no console message ($1/page.png)"
  else
    bad "$1/index.html"
  fi
fi
echo "page test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
