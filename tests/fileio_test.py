#!/usr/bin/env python3
"""fileio_test.py - ursa-fileio, the files block's reader: every backend
and mode (reads at once, through the ring or pool only, into registered
buffers) reads a 4 MiB file at depth 1 and 8 with no error and no short
read; --fixed with libuv and a file smaller than one read are refused
with exit 2 and a message naming them."""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish

FILEIO = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="ursa-fileio-")
path = os.path.join(tmp, "data")
with open(path, "wb") as f:
    f.write(os.urandom(4 << 20))


def run(*args):
    return subprocess.run([FILEIO, "--file", path, "--duration", "0.3",
                           *args], capture_output=True, text=True, timeout=60)


for backend in ("uring", "ursa-epoll", "libuv"):
    modes = [[]] if backend == "libuv" else [[], ["--no-inline"],
                                             ["--fixed"]]
    for mode in modes:
        for depth in ("1", "8"):
            r = run("--backend", backend, "--depth", depth, "--json", *mode)
            try:
                j = json.loads(r.stdout)
            except ValueError:
                j = {}
            check(r.returncode == 0 and j.get("reads", 0) > 100 and
                  j.get("errors") == 0 and j.get("short") == 0 and
                  j.get("cpu_s", 0) > 0,
                  f"{backend} {' '.join(mode)} depth {depth}: "
                  f"{r.returncode} {j or r.stderr[-300:]}")
r = run("--backend", "libuv", "--fixed")
check(r.returncode == 2 and "--fixed" in r.stderr and "libuv" in r.stderr,
      f"--fixed with libuv refused: {r.returncode} {r.stderr!r}")
r = run("--bs", str(8 << 20))
check(r.returncode == 2 and "--bs" in r.stderr,
      f"a file smaller than one read refused: {r.returncode} {r.stderr!r}")
os.unlink(path)
os.rmdir(tmp)
finish()
