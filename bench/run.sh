#!/usr/bin/env bash
# run.sh - the main job.  The full bench suite is not written yet; until it
# is, this runs a quick side-by-side: each server backend pinned to CPU 0,
# ursa-load pinned to CPU 1, 64-byte ping-pong at 1 and 64 connections, and
# prints each run's round trips/s, latency and the server's CPU time per
# round trip.  Any echo error fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel build //apps:ursa-echo-server //apps:ursa-load
bin=$(bazel info bazel-bin 2>/dev/null)/apps
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cpus=$(nproc)
scpu=0
lcpu=$((cpus > 1 ? 1 : 0))
printf '%-9s %5s %12s %9s %9s %14s %9s\n' backend conns "rt/s" "p50 us" "p99 us" "srv cpu us/rt" errors
fails=0
for conns in 1 64; do
  for backend in uring epoll select blocking; do
    "$bin/ursa-echo-server" --backend "$backend" --listen 127.0.0.1:0 \
      --cpu "$scpu" --stats-json "$out/srv.json" >"$out/srv.out" 2>&1 &
    pid=$!
    port=""
    for _ in $(seq 50); do
      port=$(sed -n 's/^server: .* listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$out/srv.out")
      [ -n "$port" ] && break
      sleep 0.1
    done
    if [ -z "$port" ]; then
      echo "run: $backend server did not start: $(cat "$out/srv.out")" >&2
      kill $pid 2>/dev/null || true
      fails=$((fails + 1))
      continue
    fi
    rc=0
    "$bin/ursa-load" "127.0.0.1:$port" --connections "$conns" --duration 2 \
      --warmup 1 --cpu "$lcpu" --json "$out/load.json" >"$out/load.out" 2>&1 || rc=$?
    kill -TERM $pid
    wait $pid || rc=$?
    [ $rc -eq 0 ] || { fails=$((fails + 1)); cat "$out/load.out" "$out/srv.out" >&2; }
    python3 - "$backend" "$conns" "$out/load.json" "$out/srv.json" <<'PY'
import json, sys
b, c, lf, sf = sys.argv[1:]
l, s = json.load(open(lf)), json.load(open(sf))
rts = max(l["round_trips"], 1)
# The server ran longer than the measured window (warm-up, start, stop), so
# its CPU is spread over every round trip it served, warm-up included.
total = max(s["reads"], 1)
print(f'{b:<9} {c:>5} {l["rt_per_s"]:>12.0f} {l["p50_us"]:>9.1f} '
      f'{l["p99_us"]:>9.1f} {s["cpu_s"] * 1e6 / total:>14.2f} {l["errors"]:>9}')
PY
  done
done
echo "run: server pinned to CPU $scpu, load to CPU $lcpu of $cpus"
[ $fails -eq 0 ]
