#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets in fuzz/ with clang (ASan+UBSan)
# and runs each for SECONDS (default 20).  A crash leaves its input in
# fuzz/crashes/; it becomes a test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
bash tools/setup.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p fuzz/crashes
status=0
# The library's sources; the TLS layer only for its own target (it is
# the one that needs OpenSSL).
core=$(ls lib/src/*.c | grep -v '/tls\.c$')
for target in addr_fuzz echo_fuzz tls_fuzz; do
  extra=
  [ "$target" = tls_fuzz ] && extra="lib/src/tls.c -lssl -lcrypto"
  # shellcheck disable=SC2086
  clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -Ilib/include -Ilib/src $core \
    "fuzz/$target.c" $extra -luring -o "$out/$target"
  mkdir -p "$out/corpus-$target"
  if "$out/$target" -max_total_time="$secs" -print_final_stats=1 \
       -artifact_prefix=fuzz/crashes/ "$out/corpus-$target" \
       >"$out/$target.log" 2>&1; then
    echo "fuzz: $target: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$out/$target.log" | awk '{print $2}') runs, no crash"
  else
    echo "fuzz: $target FAILED" >&2
    tail -40 "$out/$target.log" >&2
    status=1
  fi
done
exit $status
