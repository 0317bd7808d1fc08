#!/usr/bin/env bash
# setup.sh - installs what building and testing ursa needs, from Debian.
# Safe to run again: it does nothing when every package is present.
set -euo pipefail

packages=(
  bazel-bootstrap   # Bazel 4.2.3 (WORKSPACE mode, offline)
  liburing-dev      # io_uring
  libgtest-dev      # GoogleTest
  googletest
  gnuplot-nox       # bench graphs
  pkg-config        # the install test
  libuv1-dev        # the libuv comparison server and file reader
  fio               # the file block's outside reference
  iperf3            # the bench suite's loopback limit
  iperf             # iperf2: the outside echo client (--bounceback)
  iproute2          # ip netns: the bench's veth pair
  node-llhttp       # llhttp's C sources, for ursa-http's parser
  curl              # ursa-http's conformance tests
  wrk               # the http bench's client
  nginx-light       # the http bench's peers
  h2o
  python3           # test and bench drivers
  python3-markdown  # the bench page (report.md to HTML)
  python3-yaml      # the workflow test
  chromium          # the bench page test (headless)
  valgrind
  clang             # fuzz targets (libFuzzer)
  libclang-rt-14-dev
  linux-perf        # the bench report's profile of the servers
  libssl-dev        # TLS (OpenSSL 3)
  zlib1g-dev        # ursa-http's upload receipt (CRC-32)
  openssl           # the test certificates, s_client/s_server interop
  openssh-server    # the bench across hosts, tested between namespaces
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
