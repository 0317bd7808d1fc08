#!/usr/bin/env bash
# test.sh - the test command: sets up, builds and runs every test.
# Extra arguments go to bazel (e.g. --config=asan).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test "$@" //... 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# One line a CI reader understands, counted from Bazel's per-target lines.
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED in' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FAILED TO BUILD|NO STATUS|FLAKY)' "$log")
echo "test targets: $passed passed, $failed failed"
exit "$rc"
