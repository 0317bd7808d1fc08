#!/usr/bin/env bash
# run.sh - the main job.  Until the bench suite lands, it builds the echo
# example, starts it on a free loopback port, sends it messages and checks
# every reply byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel build //apps:echo_server
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bazel-bin/apps/echo_server --listen 127.0.0.1:0 --duration 5 >"$out" &
pid=$!
port=""
for _ in $(seq 50); do
  port=$(sed -n "s/^echo: tcp listening on 127.0.0.1:\([0-9]*\)$/\1/p" "$out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "run: echo server did not start" >&2; kill $pid; exit 1; }
fails=0
for msg in "hello ursa" "$(head -c 3000 /dev/urandom | base64 -w0)"; do
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s' "$msg" >&3
  reply=""
  IFS= read -r -t 5 -N "${#msg}" reply <&3 || true
  exec 3>&-
  if [ "$reply" = "$msg" ]; then
    echo "run: echoed ${#msg} bytes intact"
  else
    echo "run: echo of ${#msg} bytes came back as ${#reply} bytes that differ" >&2
    fails=$((fails + 1))
  fi
done
kill -INT $pid
wait $pid
cat "$out"
[ $fails -eq 0 ]
