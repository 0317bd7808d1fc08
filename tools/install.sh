#!/usr/bin/env bash
# install.sh - installs ursa for programs built without Bazel:
#   tools/install.sh [--prefix DIR]             (default /usr/local)
#   tools/install.sh --uninstall [--prefix DIR]
# Puts include/ursa/ursa.h, lib/libursa.a, lib/libursa.so.0.1.0 (with its
# libursa.so.0 and libursa.so links) and lib/pkgconfig/ursa.pc under DIR,
# and the TLS layer beside it (include/ursa/tls.h, lib/libursa_tls.so.0.1.0
# and its links, lib/pkgconfig/ursa_tls.pc: link it with
# `pkg-config --libs ursa_tls`), and lists them in
# share/ursa/install_manifest.txt for the uninstall.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }
              prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install: unknown option '$1'" >&2; exit 2 ;;
  esac
done
case "$prefix" in
  /*) ;;
  *) prefix="$(pwd)/$prefix" ;;
esac
manifest="$prefix/share/ursa/install_manifest.txt"

if [ "$uninstall" = 1 ]; then
  [ -f "$manifest" ] || { echo "install: nothing installed under $prefix (no $manifest)" >&2; exit 1; }
  while IFS= read -r f; do rm -f "$f"; done < "$manifest"
  rm -f "$manifest"
  rmdir "$prefix/share/ursa" "$prefix/include/ursa" 2>/dev/null || true
  echo "install: removed ursa from $prefix"
  exit 0
fi

bash tools/setup.sh
bazel build //lib:ursa //lib:libursa.so.0 //lib:libursa_a \
  //lib:libursa_tls.so.0
major=$(sed -n 's/^#define URSA_VERSION_MAJOR \([0-9]*\)$/\1/p' lib/include/ursa/ursa.h)
minor=$(sed -n 's/^#define URSA_VERSION_MINOR \([0-9]*\)$/\1/p' lib/include/ursa/ursa.h)
patch=$(sed -n 's/^#define URSA_VERSION_PATCH \([0-9]*\)$/\1/p' lib/include/ursa/ursa.h)
version="$major.$minor.$patch"
libdir="$prefix/lib"
mkdir -p "$prefix/include/ursa" "$libdir/pkgconfig" "$prefix/share/ursa"
bin=$(bazel info bazel-bin 2>/dev/null)

files=()
put() { # src dst mode
  install -m "$3" "$1" "$2"
  files+=("$2")
}
# A shared library NAME: the versioned file and its soname and dev links.
put_so() {
  put "$bin/lib/$1.so.0" "$libdir/$1.so.$version" 755
  ln -sf "$1.so.$version" "$libdir/$1.so.$major"
  ln -sf "$1.so.$major" "$libdir/$1.so"
  files+=("$libdir/$1.so.$major" "$libdir/$1.so")
}
# A pkg-config file NAME.pc from lib/NAME.pc.in.
put_pc() {
  sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@VERSION@|$version|" \
    "lib/$1.pc.in" > "$libdir/pkgconfig/$1.pc"
  files+=("$libdir/pkgconfig/$1.pc")
}
put lib/include/ursa/ursa.h "$prefix/include/ursa/ursa.h" 644
# Every layer's PIC objects in one archive, so that it links into PIE
# programs.
put "$bin/lib/libursa.a" "$libdir/libursa.a" 644
put_so libursa
put_pc ursa
# The TLS layer: a library of its own, so that only its users link OpenSSL.
put lib/include/ursa/tls.h "$prefix/include/ursa/tls.h" 644
put_so libursa_tls
put_pc ursa_tls
printf '%s\n' "${files[@]}" > "$manifest"
if [ "$(id -u)" = 0 ] && [ "$libdir" = /usr/local/lib ] && command -v ldconfig >/dev/null; then
  ldconfig
fi
echo "install: ursa $version installed under $prefix"
