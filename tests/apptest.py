"""apptest.py - what the app-level suites share: the programs under test
(from argv), the check() tally, a server started on a free port and
stopped with its JSON summary, and small socket helpers."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from checks import check, finish  # noqa: F401 (the suites import them here)

SERVER, LOAD, CLIENT, NO_URING = sys.argv[1:5]


def list_backends():
    """The servers ursa-echo-server has, with what each can do, as it
    says itself: the one list the suites take their backends from."""
    out = subprocess.run([SERVER, "--list-backends", "--json"],
                         capture_output=True, text=True, timeout=20,
                         check=True).stdout
    return json.loads(out)


SERVERS = list_backends()
# The servers of every protocol; the UDP-only one (mmsg) has its own tests.
BACKENDS = [s["name"] for s in SERVERS if "udp_only" not in s["caps"]]
CAPS = {s["name"]: set(s["caps"]) for s in SERVERS}


class Server:
    def __init__(self, backend, *args, listen="127.0.0.1:0"):
        self.json = tempfile.mktemp(prefix="ursa-stats-", suffix=".json")
        self.p = subprocess.Popen(
            [SERVER, "--backend", backend, "--listen", listen,
             "--stats-json", self.json, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.match(r"server: (\S+) (\S+) listening on (.*)$", line.strip())
        if not m:
            self.p.kill()
            raise RuntimeError(f"{backend} did not start: {line!r} "
                               f"{self.p.stderr.read()!r}")
        self.addr = m.group(3)
        self.backend = backend

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=30)
        check(self.p.returncode == 0,
              f"{self.backend}: exit {self.p.returncode} {err}")
        check("connections" in out, f"{self.backend}: no summary: {out!r}")
        stats = {}
        try:
            with open(self.json) as f:
                stats = json.load(f)
            os.unlink(self.json)
        except (OSError, ValueError) as e:
            check(False, f"{self.backend}: stats json: {e}")
        self.err = err
        return stats


def sockaddr(text):
    if text.startswith("unix:@"):
        return socket.AF_UNIX, "\0" + text[6:]
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    if text.startswith("["):
        host, port = text[1:].rsplit("]:", 1)
        return socket.AF_INET6, (host, int(port))
    host, port = text.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def echo_stream(addr, data, kind=socket.SOCK_STREAM):
    """Sends data, half-closes, reads to EOF; returns what came back."""
    fam, sa = sockaddr(addr)
    with socket.socket(fam, kind) as s:
        s.settimeout(20)
        s.connect(sa)
        if kind == socket.SOCK_SEQPACKET:
            s.send(data)
            return s.recv(len(data) + 1)

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        got = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        t.join()
        return bytes(got)


def echo_dgram(addr, sizes):
    fam, sa = sockaddr(addr)
    ok = True
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        if fam == socket.AF_UNIX:
            s.bind("")
        for n in sizes:
            data = random.randbytes(n)
            s.sendto(data, sa)
            ok &= check(s.recv(70000) == data, f"{addr}: datagram of {n}")
    return ok


def parallel(fn, items):
    results = [None] * len(items)

    def run(i):
        try:
            results[i] = fn(items[i])
        except Exception as e:  # reported as a failed check below
            results[i] = e
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User plus system time a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
