#!/usr/bin/env bash
# install_test.sh - installs ursa into a temporary prefix and builds the
# guide's example three ways (pkg-config and the shared library, the static
# library, another Bazel workspace), runs each and checks that it echoes;
# builds the guide's chat server and checks its fan-out, back-pressure and
# SIGTERM exit, plainly and under ASan+UBSan (and the echo example too);
# builds the guide's job runner and checks its output, exit lines,
# back-pressure and stop, plainly and under ASan+UBSan;
# builds and runs a program on the installed TLS layer (pkg-config
# ursa_tls); checks the exported symbols and soname; uninstalls.
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
  # Emptied here, not by the redirection below: that one runs in the
  # background job, and the loop could read the last run's port first.
  : > "$work/out"
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
  if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf '%s' "$msg" >&3
    IFS= read -r -t 5 -N "${#msg}" reply <&3 || true
    exec 3>&-
  fi
  # A program that got no echo to answer would wait for ever.
  [ "$reply" = "$msg" ] || kill $pid 2>/dev/null
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

# The guide's chat server: a line reaches every other client, a reader that
# stops reading misses lines and is told how many once it has caught up,
# and SIGTERM closes everything with exit 0.  It runs twice: as built
# plainly, and under ASan+UBSan with leak checking, where a request that
# is not zero-filled is refused (malloc's bytes are not zero there) and a
# peer that close-all does not free is a leak that fails the exit.
awk '/<!-- example: chat.c -->/{f=1; next} f && /^```c/{g=1; next} g && /^```/{exit} g' \
  docs/guide.md > "$work/chat.c"
cat > "$work/chat_check.py" <<'EOPY'
import socket, sys, threading, time
port = int(sys.argv[1])
a, b, c = (socket.create_connection(("127.0.0.1", port)) for _ in range(3))
time.sleep(0.2)  # all three accepted
a.sendall(b"hello\n")
for s in (b, c):
    s.settimeout(5)
    got = b""
    while len(got) < 6:
        got += s.recv(64)
    assert got == b"hello\n", got
# c stops reading; b keeps up.  a says a lot: c misses some.
got_b = []
def drain():
    b.settimeout(5)
    try:
        while True:
            d = b.recv(1 << 16)
            if not d:
                break
            got_b.append(len(d))
    except socket.timeout:
        pass
t = threading.Thread(target=drain)
t.start()
line = b"x" * 8191 + b"\n"
for _ in range(2000):
    a.sendall(line)
time.sleep(1)
c.settimeout(5)
seen = b""
try:
    while b"[missed " not in seen:
        d = c.recv(1 << 20)
        if not d:
            break
        seen = seen[-64:] + d
except socket.timeout:
    pass
t.join()
assert b"[missed " in seen, "the slow reader was never told what it missed"
# b read all along: it got much of it (it too skips what comes while its
# own queue is over the mark), never more than was said.
assert 0 < sum(got_b) <= 2000 * len(line) + 64 * 40, sum(got_b)
print("fan-out and back-pressure ok")
EOPY
# Runs a guide server (it prints "port N"), its Python check against it,
# then SIGTERM with a client still connected: close-all must close and
# free it, and the server exit 0 having said "closing".
check_server() { # example name binary what-the-check-shows
  local ex=$1 name=$2 bin=$3 shows=$4
  "$bin" > "$work/$ex.out" 2> "$work/$ex.err" &
  local pid=$! port=""
  for _ in $(seq 50); do
    port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/$ex.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  if python3 "$work/${ex}_check.py" "$port" > "$work/$ex.py.out" 2>&1; then
    ok "$ex ($name): $shows"
  else
    bad "$ex ($name): $(tail -5 "$work/$ex.py.out")"
  fi
  exec 4<>"/dev/tcp/127.0.0.1/$port"
  sleep 0.2
  kill -TERM "$pid" 2>/dev/null
  local st=0
  wait "$pid" || st=$?
  exec 4>&-
  if [ "$st" -eq 0 ] && grep -q "closing" "$work/$ex.err"; then
    ok "$ex ($name): SIGTERM closes everything, exit 0"
  else
    bad "$ex ($name): after SIGTERM: exit $st $(tail -20 "$work/$ex.err")"
  fi
}
check_chat() { # name binary
  check_server chat "$1" "$2" \
    "a line reaches the others; a slow reader misses lines and is told"
}
if cc -Wall -Werror -o "$work/chat" "$work/chat.c" $(pkg-config --cflags ursa) \
     "$prefix/lib/libursa.a" $(pkg-config --libs liburing); then
  ok "the guide's chat server builds"
  check_chat plain "$work/chat"
else
  bad "the guide's chat server does not compile"
fi
asan="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
if cc -Wall -Werror $asan -o "$work/chat_asan" "$work/chat.c" \
     $(pkg-config --cflags ursa) "$prefix/lib/libursa.a" \
     $(pkg-config --libs liburing); then
  ok "the guide's chat server builds under ASan+UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 check_chat asan "$work/chat_asan"
else
  bad "the guide's chat server does not compile under ASan+UBSan"
fi
if cc -Wall -Werror $asan -o "$work/echo_asan" "$work/echo_once.c" \
     $(pkg-config --cflags ursa) "$prefix/lib/libursa.a" \
     $(pkg-config --libs liburing); then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 check_echo "ASan+UBSan" "$work/echo_asan"
else
  bad "the guide's echo example does not compile under ASan+UBSan"
fi

# The guide's job runner: output and stderr streamed back byte-exact with
# the exit line, 3 MB to a client that reads late (back-pressure on the
# child), a signal, a missing program (sh's 127), a client that leaves
# stops its job, and SIGTERM exits 0; plainly and under ASan+UBSan.
awk '/<!-- example: runner.c -->/{f=1; next} f && /^```c/{g=1; next} g && /^```/{exit} g' \
  docs/guide.md > "$work/runner.c"
cat > "$work/runner_check.py" <<'EOPY'
import os, socket, sys, time
port = int(sys.argv[1])
marker = f"31.{os.getpid()}"  # this run's own sleeping job

def job(cmd, slow=False):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(cmd.encode() + b"\n")
    s.settimeout(20)
    if slow:
        time.sleep(0.5)  # the runner's queue fills: the child must wait
    got = b""
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        got += d
    s.close()
    return got

got = job("echo hello; echo oops >&2; exit 3")
assert got == b"hello\noops\n[exit 3]\n", got
n = 3000000
got = job(f"head -c {n} /dev/zero | tr '\\0' a", slow=True)
assert got == b"a" * n + b"[exit 0]\n", (len(got), got[-40:])
got = job("kill -TERM $$")
assert got == b"[signal 15]\n", got
got = job("ursa-no-such-command")
assert got.endswith(b"[exit 127]\n") and b"ursa-no-such-command" in got, got
# A client that leaves stops its job: the child is gone soon after.
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"sleep {marker}\n".encode())
time.sleep(0.3)
s.close()
def sleeping():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if f.read() == f"sleep\0{marker}\0".encode():
                        return True
            except OSError:
                pass
    return False
for _ in range(50):
    if not sleeping():
        break
    time.sleep(0.1)
assert not sleeping(), "the job of a client that left still runs"
print("runner ok")
EOPY
check_runner() { # name binary
  check_server runner "$1" "$2" \
    "output, exit and signal lines, back-pressure, a leaving client stops its job"
}
if cc -Wall -Werror -o "$work/runner" "$work/runner.c" \
     $(pkg-config --cflags ursa) "$prefix/lib/libursa.a" \
     $(pkg-config --libs liburing); then
  ok "the guide's job runner builds"
  check_runner plain "$work/runner"
else
  bad "the guide's job runner does not compile"
fi
if cc -Wall -Werror $asan -o "$work/runner_asan" "$work/runner.c" \
     $(pkg-config --cflags ursa) "$prefix/lib/libursa.a" \
     $(pkg-config --libs liburing); then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 check_runner asan "$work/runner_asan"
else
  bad "the guide's job runner does not compile under ASan+UBSan"
fi

so="$prefix/lib/libursa.so"
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libursa.so.0 ] && ok "soname libursa.so.0" || bad "soname '$soname'"
others=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^ursa_' | grep -v '^URSA_0$' || true)
[ -z "$others" ] && ok "only ursa_ symbols exported" || bad "also exported: $others"

# The TLS layer installed beside it: a program that makes a context from a
# file that is not there gets the file named, and the kTLS probe answers.
cat > "$work/tls_check.c" <<'EOC'
#include <stdio.h>
#include <string.h>
#include <ursa/tls.h>
int main(void) {
  ursa_tls_ctx *c = NULL;
  ursa_tls_options o = {0};
  o.cert_file = "/nonexistent/cert.pem";
  o.key_file = "/nonexistent/key.pem";
  if (ursa_tls_ctx_new(&c, 1, &o) != -2) return 1;
  if (!strstr(ursa_tls_error_detail(), "/nonexistent/cert.pem")) return 2;
  char why[200];
  ursa_tls_ktls(why, sizeof(why));
  printf("%s\n", why);
  return strncmp(why, "ktls:", 5) ? 3 : 0;
}
EOC
if cc -Wall -Werror -o "$work/tls_check" "$work/tls_check.c" \
     $(pkg-config --cflags --libs ursa_tls) \
     -Wl,-rpath,"$(pkg-config --variable=libdir ursa_tls)"; then
  ok "cc \$(pkg-config --cflags --libs ursa_tls)"
  if out=$("$work/tls_check" 2>&1); then
    ok "the installed TLS layer runs: $out"
  else
    bad "tls_check: exit $? $out"
  fi
else
  bad "TLS build does not compile"
fi
tso="$prefix/lib/libursa_tls.so.0"
tothers=$(nm -D --defined-only "$tso" | awk '{print $3}' | grep -v '^ursa_tls_' | grep -v '^URSA_TLS_0$' || true)
[ -z "$tothers" ] && ok "libursa_tls exports only ursa_tls_ symbols" || bad "libursa_tls also exports: $tothers"

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
