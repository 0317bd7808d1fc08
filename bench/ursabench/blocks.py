"""blocks.py - the suite's blocks beyond the case matrix that run servers
under ursa-load with set-ups of their own: TLS, and the case run across
a veth pair."""
import os
import re
import subprocess

from .config import BACKENDS, VETH_POINT, case_id
from .netns import Veth
from .runner import interleaved, one_run, summaries, summarise


def tls_block(a, tmp, todo, failures):
    """TLS ping-pong for each (backend, size), interleaved; certificates
    from tools/make_test_certs.sh."""
    if not todo:
        return []
    certs = os.path.join(tmp, "certs")
    script = os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                          "make_test_certs.sh")
    r = subprocess.run(["bash", script, certs], capture_output=True,
                       text=True, timeout=60)
    if r.returncode:
        failures.append(f"tls: make_test_certs.sh: {r.stderr[-200:]}")
        return []
    srv = ["--tls-cert", os.path.join(certs, "server.pem"), "--tls-key",
           os.path.join(certs, "server.key")]
    load = ["--tls-ca", os.path.join(certs, "ca.pem")]
    # size 0: new handshakes, 16 connections each doing one 64 B round
    # trip and reconnecting (ursa-load --reconnect 1).
    def run(c):
        if c[1] == 0:
            return one_run(a, c[0], "pingpong", "tcp", 16, 64, 1, tmp, srv,
                           load + ["--reconnect", "1"])
        return one_run(a, c[0], "pingpong", "tcp", 64, c[1], 1, tmp, srv,
                       load)
    runs = interleaved(todo, a.repeats, run,
                       lambda c: f"tls {c[0]} {c[1] or 'handshake'}",
                       failures)
    out = []
    for (b, size), got in zip(todo, runs):
        if not got:
            continue
        s = summarise(got)
        hs = size == 0
        s.update({"id": f"tls-{'handshake-16c' if hs else 'pingpong-64c'}-"
                  f"{size if not hs else 64}b-{b}",
                  "kind": "tls-handshake" if hs else "tls", "backend": b,
                  "proto": "tcp", "conns": 16 if hs else 64,
                  "size": 64 if hs else size, "inflight": 1,
                  "repeats": len(got)})
        if s["errors"]:
            failures.append(f"tls {b} {size} B: {s['errors']} echo errors")
        out.append(s)
    return out



def veth_block(a, tmp, failures, progress):
    """VETH_POINT for every backend, across a veth pair between two
    network namespaces; (rows, path description).  Without the rights to
    make namespaces the block is not run, and says why."""
    todo = [b for b in BACKENDS if not a.filter or
            re.search(a.filter, "veth-" + case_id(b, *VETH_POINT))]
    if not todo:
        return [], None
    try:
        net = Veth()
    except (OSError, subprocess.SubprocessError) as e:
        return [], f"not run: {e}"
    try:
        path = net.describe()
        runs = interleaved(todo, a.repeats,
                           lambda b: one_run(a, b, *VETH_POINT, tmp,
                                             net=net),
                           lambda b: "veth " + case_id(b, *VETH_POINT),
                           failures)
    finally:
        net.down()
    kind, proto, conns, size, inflight = VETH_POINT
    rows = summaries(
        todo, runs,
        lambda b: {"id": "veth-" + case_id(b, *VETH_POINT), "kind": kind,
                   "backend": b, "proto": proto, "conns": conns,
                   "size": size, "inflight": inflight, "path": "veth"},
        failures, progress,
        lambda s: f"{s['rt_per_s']:.0f} rt/s, server "
                  f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return rows, path
