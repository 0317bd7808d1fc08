"""static.py - static files over HTTP, and what serving them does to a
small request beside them.

Static: wrk (one thread, 16 connections, on the load CPU) fetching one
file over and over from ursa-http (uring, ursa-epoll), nginx (one worker,
`sendfile on`) and h2o (one thread), each on the server CPU with the
same directory as its root; each server's copy is checked byte for byte
(length and SHA-256) before its run.  Requests/s and MB/s are wrk's;
server CPU per request and per MB is the server's processes' CPU over
wrk's run.

Stall: the p99 of /plaintext on one connection (wrk -c1, its latency
histogram) with the server idle, then while 16 connections pull a 16 MiB
file (a second wrk) and 20 connections hold a 60 MiB response unread;
and the server's RSS growth over the loaded window."""
import hashlib
import os
import re
import resource
import shutil
import socket
import subprocess
import time

from .http import HttpServer, parse_wrk
from .runner import Failure, interleaved, summaries

# "splice": ursa_write_file through the loop's pipes (the opt-in
# file_splice), the A/B against sendfile on the loop's thread.
STATIC_SERVERS = ["ursa-http uring", "ursa-http uring splice",
                  "ursa-http ursa-epoll", "nginx", "h2o"]
STALL_SERVERS = ["ursa-http uring", "ursa-http ursa-epoll", "nginx"]
# The quick suite keeps the servers the targets name, and ursa's epoll
# backend for the static files.
QUICK_STATIC = ["ursa-http uring", "ursa-http ursa-epoll", "nginx"]
QUICK_STALL = ["ursa-http uring", "nginx"]
CONNS = 16
MiB = 1 << 20


def static_sizes(full):
    return [4096, 65536, MiB, 16 * MiB] if full else [4096, MiB, 16 * MiB]


def fname(size):
    return f"f{size}.bin"


def make_root(tmp):
    root = os.path.join(tmp, "static-root")
    os.makedirs(root, exist_ok=True)
    for size in (4096, 65536, MiB, 16 * MiB, 60 * MiB):
        path = os.path.join(root, fname(size))
        if not os.path.exists(path):
            with open(path, "wb") as f:
                left = size
                while left:
                    n = min(left, MiB)
                    f.write(os.urandom(n))
                    left -= n
    return root


def fetch(port, path):
    """GET path once: the body, or Failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close"
                  "\r\n\r\n".encode())
        got = bytearray()
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise Failure(f"/{path} answered {head[:100]!r}")
    return body


def check_file(port, root, size):
    with open(os.path.join(root, fname(size)), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    body = fetch(port, fname(size))
    if len(body) != size or hashlib.sha256(body).hexdigest() != want:
        raise Failure(f"/{fname(size)}: {len(body)} bytes, not the file's "
                      f"{size}")


def wrk(a, port, path, conns, secs, cpu=None):
    return subprocess.Popen(
        ["taskset", "-c", str(a.lcpu if cpu is None else cpu), "wrk", "-t1",
         f"-c{conns}", f"-d{secs}", "--latency",
         f"http://127.0.0.1:{port}/{path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def static_run(a, name, size, tmp, root):
    srv = HttpServer(a, name, a.scpu, tmp, root)
    try:
        check_file(srv.port, root, size)
        c0 = srv.place.tree_cpu(srv.pid)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = wrk(a, srv.port, fname(size), CONNS, max(1, round(a.duration)))
        out, err = p.communicate(timeout=120)
        wall = time.monotonic() - t0
        c1 = srv.place.tree_cpu(srv.pid)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        srv.stop()
    if p.returncode:
        raise Failure(f"wrk against {name}: exit {p.returncode}: {err[-200:]}")
    reqs, rps, p50, p99, errors = parse_wrk(out)
    cpu = c1 - c0
    wrk_cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    mb = reqs * size / 1e6
    return {"rt_per_s": rps, "mb_per_s": rps * size / 1e6,
            "server_cpu_us_per_rt": cpu * 1e6 / max(reqs, 1),
            "server_cpu_us_per_mb": cpu * 1e6 / max(mb, 1e-9),
            # On loopback the sender's system calls also run much of the
            # receiver's TCP work, in whichever context the timing gives.
            "both_cpu_us_per_mb": (cpu + wrk_cpu) * 1e6 / max(mb, 1e-9),
            "p50_us": p50, "p99_us": p99, "server_cpu_share": cpu / wall,
            "client_cpu_share": wrk_cpu / wall,
            "errors": errors, "refused": 0}


def static_block(a, tmp, sizes, failures, progress):
    """Every server of STATIC_SERVERS at each file size, interleaved."""
    missing = [t for t in ("wrk", "nginx", "h2o") if not shutil.which(t)]
    if missing:
        failures.append("static: not installed: " + ", ".join(missing))
        return []
    root = make_root(tmp)
    pool = STATIC_SERVERS if a.full else QUICK_STATIC
    todo = [s for s in pool if not a.filter or re.search(
        a.filter, "static-" + s.replace(" ", "-"))] or pool
    rows = []
    for size in sizes:
        runs = interleaved(todo, a.repeats,
                           lambda s: static_run(a, s, size, tmp, root),
                           lambda s: f"static {size} B {s}", failures)
        rows += summaries(
            todo, runs,
            lambda s: {"id": f"http-static-{size}b-{s.replace(' ', '-')}",
                       "server": s, "size": size, "conns": CONNS},
            failures, progress,
            lambda r: f"{r['rt_per_s']:.0f} req/s, {r['mb_per_s']:.0f} MB/s,"
                      f" server {r['server_cpu_us_per_rt']:.1f} us/req, "
                      f"{r['server_cpu_us_per_mb']:.1f} us/MB")
    return rows


def rss_kib(pid):
    """VmRSS of pid and its children (nginx's master and worker)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if int(d) != pid and ppid != pid:
                continue
            with open(f"/proc/{d}/status") as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        total += int(ln.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def probe_p99(a, port, secs):
    p = wrk(a, port, "plaintext", 1, secs)
    out, err = p.communicate(timeout=60)
    if p.returncode:
        raise Failure(f"wrk -c1: exit {p.returncode}: {err[-200:]}")
    reqs, rps, p50, p99, errors = parse_wrk(out)
    if errors:
        raise Failure(f"/plaintext probe: {errors} errors")
    return p50, p99, rps


def stall_run(a, name, tmp, root):
    srv = HttpServer(a, name, a.scpu, tmp, root)
    held, pull = [], None
    secs = max(1, round(a.duration))
    try:
        check_file(srv.port, root, 16 * MiB)
        _, idle_p99, _ = probe_p99(a, srv.port, secs)
        rss0 = rss_kib(srv.pid)
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(f"GET /{fname(60 * MiB)} HTTP/1.1\r\nHost: x\r\n\r\n"
                      .encode())
            held.append(s)
        pull = wrk(a, srv.port, fname(16 * MiB), 16, secs + 2)
        time.sleep(0.5)
        p50, p99, rps = probe_p99(a, srv.port, secs)
        rss1 = rss_kib(srv.pid)
        pull.communicate(timeout=60)
        pull_rc = pull.returncode
    finally:
        if pull and pull.poll() is None:
            pull.kill()
            pull.wait()
        for s in held:
            s.close()
        srv.stop()
    if pull_rc:
        raise Failure(f"the 16 MiB pullers: wrk exit {pull_rc}")
    return {"idle_p99_us": idle_p99, "p50_us": p50, "p99_us": p99,
            "rt_per_s": rps, "rss_growth_kib": rss1 - rss0, "errors": 0}


def stall_block(a, tmp, failures, progress):
    if not shutil.which("wrk") or not shutil.which("nginx"):
        failures.append("stall: wrk or nginx is not installed")
        return []
    root = make_root(tmp)
    servers = STALL_SERVERS if a.full else QUICK_STALL
    runs = interleaved(servers, a.repeats,
                       lambda s: stall_run(a, s, tmp, root),
                       lambda s: f"stall {s}", failures)
    return summaries(
        servers, runs,
        lambda s: {"id": f"http-stall-{s.replace(' ', '-')}", "server": s},
        failures, progress,
        lambda r: f"/plaintext p99 {r['p99_us']:.0f} us loaded, "
                  f"{r['idle_p99_us']:.0f} us idle; RSS +"
                  f"{r['rss_growth_kib'] / 1024:.1f} MiB")
