#!/usr/bin/env bash
# test.sh - the test command: sets up, builds and runs every test.
# Extra arguments go to bazel (e.g. --config=asan).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel test "$@" //...
