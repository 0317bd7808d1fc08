#!/usr/bin/env python3
"""ping_app_test.py - ursa-ping against 127.0.0.1 and ::1: every request
answered, output shaped like ping(8); bad input and a process allowed
neither ICMP socket kind exit 2 with a clear message."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from checks import check, finish

PING = sys.argv[1]


def run(args, user=None, backend=None):
    cmd = [PING, *args]
    if user:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               *cmd]
    env = dict(os.environ)
    if backend:
        env["URSA_BACKEND"] = backend  # raw sockets on the epoll backend too
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env=env)


for host, backend in [("127.0.0.1", None), ("::1", None), ("localhost", None),
                      ("127.0.0.1", "epoll"), ("::1", "epoll")]:
    r = run(["-c", "3", "-i", "20", host], backend=backend)
    host = f"{host} ({backend or 'default'} backend)"
    check(r.returncode == 0, f"{host}: exit {r.returncode} {r.stderr}")
    replies = re.findall(r"^64 bytes from .*: icmp_seq=(\d+).* time=[0-9.]+ ms$",
                         r.stdout, re.M)
    check(replies == ["1", "2", "3"], f"{host}: replies {replies}\n{r.stdout}")
    check("3 packets transmitted, 3 received, 0% packet loss" in r.stdout,
          f"{host}: summary missing\n{r.stdout}")
    check(re.search(r"rtt min/avg/max/mdev = [0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+ ms",
                    r.stdout) is not None, f"{host}: no rtt line")

r = run(["-c", "2", "-i", "10", "-s", "1400", "127.0.0.1"])
check(r.returncode == 0 and "1408 bytes from" in r.stdout, "1400-byte payload")

for args, says in [
    (["nosuchhost.invalid"], "unknown host"),
    (["-c", "0", "127.0.0.1"], "-c wants a whole number"),
    (["-s", "99999", "127.0.0.1"], "-s wants a whole number"),
    (["-x", "127.0.0.1"], "unknown option '-x'"),
    ([], "usage"),
]:
    r = run(args)
    check(r.returncode == 2, f"{args}: exit {r.returncode}")
    check(says in r.stderr, f"{args}: {r.stderr!r} lacks {says!r}")

# Without root and outside ping_group_range, neither socket kind opens.
lo, hi = map(int, open("/proc/sys/net/ipv4/ping_group_range").read().split())
if os.geteuid() == 0 and shutil.which("setpriv") and not lo <= 65534 <= hi:
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    copy = os.path.join(tmp, "ursa-ping")
    shutil.copy(PING, copy)
    os.chmod(copy, 0o755)
    PING = copy
    r = run(["-c", "1", "127.0.0.1"], user="nobody")
    check(r.returncode == 2, f"unprivileged: exit {r.returncode} {r.stderr}")
    check("neither a raw ICMP socket" in r.stderr, f"unprivileged: {r.stderr!r}")
    shutil.rmtree(tmp)
else:
    print("skipped: the unprivileged case needs root, setpriv and a "
          "ping_group_range without nobody's group")

finish()
