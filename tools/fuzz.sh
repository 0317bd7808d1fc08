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
# The library's sources, in whatever folders its layers keep them; the
# TLS layer (tls*.c) only for its own target (the one that needs OpenSSL).
core=$(find lib/src -name '*.c' ! -name 'tls*.c' | sort)
tls=$(find lib/src -name 'tls*.c' | sort)
incs=$(find lib/src -type d | sed 's/^/-I/')
for target in addr_fuzz echo_fuzz tls_fuzz http_fuzz; do
  extra=
  [ "$target" = tls_fuzz ] && extra="$tls -lssl -lcrypto"
  # ursa-http's request path over Debian's llhttp sources.
  [ "$target" = http_fuzz ] && extra="-I. -I/usr/share/include/llhttp \
    apps/http/http_core.c /usr/share/llhttp/llhttp.c /usr/share/llhttp/api.c \
    /usr/share/llhttp/http.c -lpthread -lz"
  # shellcheck disable=SC2086
  clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -Ilib/include $incs $core \
    "fuzz/$target.c" $extra -luring -o "$out/$target"
  mkdir -p "$out/corpus-$target"
  if [ "$target" = http_fuzz ]; then
    # Seeds: a file request and a chunked upload, so that the fuzzer
    # starts inside the grammar.
    printf 'GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n' >"$out/corpus-$target/get"
    printf 'POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' \
      >"$out/corpus-$target/chunked"
    printf 'GET http://x/plaintext HTTP/1.2\r\nHost: x\r\nExpect: 100-continue\r\n\r\n' \
      >"$out/corpus-$target/absolute"
  fi
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
