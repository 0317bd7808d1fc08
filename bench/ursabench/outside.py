"""outside.py - a client nobody here wrote: iperf2's bounceback test
(Debian's iperf, 2.1.x) driving the echo servers' 64 B ping-pong, beside
ursa-load.  `iperf -c HOST --bounceback --bounceback-period 0 -l 64 -P N`
opens N connections, each sending 64 B and waiting for it to come back
before the next.  Its SUM line reads 0 in bounceback mode, so the rate is
the per-connection counts summed.  iperf2 runs a thread per connection;
all of them share the load CPU."""
import re
import subprocess
import time

from .config import NO_BATCH
from .hosts import missing, sides
from .runner import Failure, Server, interleaved, summaries

CONNS = (1, 64, 256)

# One connection's final line: "[  3] 0.0000-1.3001 sec ... 37522=0.052/
# 0.014/2.667/0.031 ms ..." (bounces = avg/min/max/stdev).
LINE = re.compile(r"^\[\s*(\d+)\]\s+0\.0+-([\d.]+) sec\s.*?\s(\d+)="
                  r"([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def parse(out):
    """(connections, bounces, seconds, mean latency us, max latency us)
    from iperf2's final per-connection lines."""
    conns, total, secs, lat_sum, mx = 0, 0, 0.0, 0.0, 0.0
    for line in out.splitlines():
        if "PDF" in line:
            continue
        m = LINE.match(line)
        if not m:
            continue
        n = int(m.group(3))
        conns += 1
        total += n
        secs = max(secs, float(m.group(2)))
        lat_sum += n * float(m.group(4)) * 1e3
        mx = max(mx, float(m.group(6)) * 1e3)
    return conns, total, secs, (lat_sum / total if total else None), mx


def limit(client, server):
    """Which side a run's CPU shares (of one CPU each) say limited it."""
    c = client is not None and client >= 0.9
    s = server is not None and server >= 0.9
    if c and s:
        return "both CPUs full"
    if c:
        return "client CPU"
    if s:
        return "server CPU"
    return "neither CPU full (wake-up latency)"


# The uring server with batched waits switched off: where the client is
# the bottleneck the server is idle between requests, which is where the
# default's batched waits save wake-ups.
NO_BATCH_VARIANT = "uring+nobatch"


def one(a, b, conns, tmp, net=None, extra=()):
    net = net or getattr(a, "veth", None)
    if b == NO_BATCH_VARIANT:
        b, extra = "uring", tuple(NO_BATCH) + tuple(extra)
    splace, lplace, addr = sides(a)
    srv = Server(a.bindir, b, "tcp", "echo", a.scpus, tmp, extra, net,
                 splace, addr)
    host, port = srv.addr.rsplit(":", 1)
    # Counted over the whole run (iperf2 has no warm-up to leave out).
    secs = a.duration
    cmd = (net.prefix("load") if net else []) + [
        "taskset", "-c", a.lcpus, "iperf", "-c", host, "-p", port,
        "--bounceback", "--bounceback-period", "0", "-l", "64", "-P",
        str(conns), "-t", f"{secs:.1f}", "-e"]
    st = {}
    try:
        c0, w0 = splace.cpu_s(srv.pid), splace.sleeps(srv.pid)
        t0 = time.monotonic()
        try:
            rc, out, client = lplace.timed(cmd, 60 + secs * 3)
        except subprocess.TimeoutExpired:
            raise Failure(f"iperf -P {conns} against {b}: no end in "
                          f"{60 + secs * 3:.0f} s")
        wall = time.monotonic() - t0
        c1, w1 = splace.cpu_s(srv.pid), splace.sleeps(srv.pid)
    finally:
        st = srv.stop()
    n, total, secs_run, mean, mx = parse(out)
    if rc or n != conns or not total:
        raise Failure(f"iperf -P {conns} against {b}: exit {rc}, "
                      f"{n} of {conns} connections reported: "
                      f"{out.strip()[-300:]!r}")
    return {"rt_per_s": total / secs_run,
            "server_cpu_us_per_rt": (c1 - c0) * 1e6 / total,
            "mean_us": mean, "max_us": mx,
            "server_cpu_share": (c1 - c0) / wall,
            "sleeps_per_rt": (w1 - w0) / total,
            # The server's own counts over its life (set-up included).
            "enters_per_rt": (st["enters"] / st["round_trips"]
                              if st.get("enters") is not None and
                              st.get("round_trips") else None),
            "syscalls_per_rt": (st["syscalls"] / st["round_trips"]
                                if st.get("syscalls") is not None and
                                st.get("round_trips") else None),
            "client_cpu_share": client / wall,
            "errors": 0, "refused": 0}


def iperf2_block(a, tmp, backends, failures, progress):
    """Every backend at each count of CONNS, interleaved round by round as
    a case's backends are; one summary row per (count, backend)."""
    if not backends:
        return []
    why = missing(a, "load", "iperf")
    if why:
        failures.append(f"iperf2: {why} (Debian's iperf); its rows are "
                        "not run")
        return []
    rows = []
    for conns in CONNS:
        runs = interleaved(backends, a.repeats,
                           lambda b: one(a, b, conns, tmp),
                           lambda b: f"iperf2 {conns}c {b}", failures)
        rows += summaries(
            backends, runs,
            lambda b: {"id": f"iperf2-tcp-pingpong-{conns}c-64b-{b}",
                       "client": "iperf2", "kind": "pingpong",
                       "proto": "tcp", "backend": b, "conns": conns,
                       "size": 64, "inflight": 1},
            failures, progress,
            lambda s: f"{s['rt_per_s']:.0f} rt/s, server "
                      f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return rows

