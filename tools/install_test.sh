#!/usr/bin/env bash
# install_test.sh - installs ursa into a temporary prefix and builds the
# guide's example three ways (pkg-config and the shared library, the static
# library, another Bazel workspace), runs each and checks that it echoes;
# checks the exported symbols and soname; uninstalls.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1" >&2; failed=$((failed + 1)); }

bash tools/install.sh --prefix "$prefix" >"$work/install.log" 2>&1 \
  && ok "install into $prefix" || { cat "$work/install.log"; bad "install"; }

# The guide's example, exactly as the guide shows it.
awk '/<!-- example: echo_once.c -->/{f=1; next} f && /^```c/{g=1; next} g && /^```/{exit} g' \
  docs/guide.md > "$work/echo_once.c"
[ -s "$work/echo_once.c" ] && ok "example extracted" || bad "no example in docs/guide.md"

# Runs an echo_once binary and checks one echo through it.
check_echo() { # name command...
  local name=$1; shift
  "$@" > "$work/out" 2>&1 &
  local pid=$! port=""
  for _ in $(seq 50); do
    port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    kill $pid 2>/dev/null; bad "$name: did not start: $(cat "$work/out")"; return
  fi
  local msg="ursa says hello $RANDOM" reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s' "$msg" >&3
  IFS= read -r -t 5 -N "${#msg}" reply <&3 || true
  exec 3>&-
  if wait $pid && [ "$reply" = "$msg" ]; then ok "$name echoes"; else bad "$name: got '$reply'"; fi
}

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
if cc -Wall -Werror -o "$work/shared" "$work/echo_once.c" $(pkg-config --cflags --libs ursa); then
  ok "cc \$(pkg-config --cflags --libs ursa)"
  check_echo "shared build" env LD_LIBRARY_PATH="$prefix/lib" "$work/shared"
  # Outside the loader's path, without help the program cannot start (the
  # guide says so), and with the rpath the guide shows it needs none.
  if "$work/shared" > "$work/noload" 2>&1; then
    bad "shared build started with no way to find libursa.so.0"
  elif grep -q "libursa.so.0: cannot open shared object file" "$work/noload"; then
    ok "shared build without rpath or LD_LIBRARY_PATH: the loader's message"
  else
    bad "shared build without help: $(head -c 300 "$work/noload")"
  fi
  if cc -Wall -Werror -o "$work/rpath" "$work/echo_once.c" $(pkg-config --cflags --libs ursa) \
       -Wl,-rpath,"$(pkg-config --variable=libdir ursa)"; then
    check_echo "shared build with rpath" "$work/rpath"
  else
    bad "rpath build does not compile"
  fi
else
  bad "shared build does not compile"
fi
if cc -Wall -Werror -o "$work/static" "$work/echo_once.c" $(pkg-config --cflags ursa) \
     "$prefix/lib/libursa.a" $(pkg-config --libs liburing); then
  ok "static build"
  check_echo "static build" "$work/static"
else
  bad "static build does not compile"
fi

so="$prefix/lib/libursa.so"
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libursa.so.0 ] && ok "soname libursa.so.0" || bad "soname '$soname'"
others=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^ursa_' | grep -v '^URSA_0$' || true)
[ -z "$others" ] && ok "only ursa_ symbols exported" || bad "also exported: $others"

# Another Bazel workspace that depends on @ursa//lib:ursa.
ws="$work/consumer"
mkdir -p "$ws"
cp "$work/echo_once.c" "$ws/"
cat > "$ws/WORKSPACE" <<EOW
local_repository(name = "ursa", path = "$top")
local_repository(name = "rules_cc", path = "$top/third_party/rules_cc")
local_repository(name = "rules_java", path = "$top/third_party/rules_java")
local_repository(name = "remote_coverage_tools", path = "$top/third_party/remote_coverage_tools")
EOW
cat > "$ws/BUILD" <<'EOB'
cc_binary(name = "echo_once", srcs = ["echo_once.c"], deps = ["@ursa//lib:ursa"])
EOB
if (cd "$ws" && bazel build --nosandbox_debug //:echo_once > "$work/bazel.log" 2>&1); then
  ok "bazel build @ursa//lib:ursa from another workspace"
  check_echo "bazel consumer" "$ws/bazel-bin/echo_once"
else
  cat "$work/bazel.log" >&2; bad "bazel consumer build"
fi
(cd "$ws" && bazel shutdown >/dev/null 2>&1) || true

bash tools/install.sh --uninstall --prefix "$prefix" >/dev/null \
  && [ -z "$(find "$prefix" -type f -o -type l)" ] \
  && ok "uninstall leaves nothing" || bad "uninstall left: $(find "$prefix" -type f -o -type l)"

echo "install test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
