#!/usr/bin/env bash
# run.sh - the main job: builds the servers and the load generator and runs
# the bench suite (quick by default; --full for the whole matrix; every
# other flag goes to bench/bench.py, see --help).  Results, graphs and the
# report land in bench/out/latest/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel build //apps:ursa-echo-server //apps:ursa-load //apps:ursa-probe \
  //apps:ursa-drain //apps:ursa-wake //apps:ursa-http //apps:ursa-fileio \
  //apps:ursa-spawn-bench
bin=$(bazel info bazel-bin 2>/dev/null)/apps
exec python3 bench/bench.py --bindir "$bin" "$@"
