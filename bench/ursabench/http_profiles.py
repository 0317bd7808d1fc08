"""http_profiles.py - the HTTP block: profiles of load driven by
ursa-load --http against ursa-http (both backends), nginx and h2o, with
wrk beside ursa-load on the baseline as the outside cross-check.

A profile is a request shape at a connection count (PROFILES).  Each run
starts the server afresh on the server CPU, sends the profile's request
once to check its status and learn the body length every response must
then have (--http-length), and runs ursa-load on the load CPU for at
least 3 s after a 0.5 s warm-up.  ursa-load gives requests/s, p50/p99
from its histogram, its own CPU and the server's (--server-pid: nginx's
worker; the others are one process) over the measured window; the
server's peak RSS (VmHWM, summed over its processes) is read before it
stops.  On the baseline at 64 connections wrk runs in the same rounds,
interleaved with ursa-load, for as long (3 s, no warm-up: wrk has
none); its client CPU is the CPU it used over its run."""
import json
import os
import re
import subprocess
import time

from .hosts import missing, sides
from .http import HTTP_SERVERS, HttpServer, parse_wrk, request
from .runner import Failure, interleaved, summaries

# (profile, connections, path, request bytes POSTed or None, ursa-load
# flags, quick): the quick suite runs the baseline and pipelined ones.
PROFILES = [
    ("baseline", 64, "/plaintext", None, [], True),
    ("baseline", 256, "/plaintext", None, [], True),
    ("pipelined", 64, "/plaintext", None, ["--inflight", "16"], True),
    ("short-lived", 64, "/plaintext", None, ["--reconnect", "10"], False),
    ("json", 64, "/json", None, [], False),
    ("upload-4k", 64, "/upload", 4096, [], False),
    ("upload-256k", 16, "/upload", 262144, [], False),
    ("fragmented", 64, "/plaintext", None, ["--http-fragment", "16"],
     False),
]
# The point wrk runs beside ursa-load.
WRK_POINT = ("baseline", 64)
MIN_SECONDS, WARMUP = 3.0, 0.5


def points(full):
    """The profiles a run makes."""
    return [p for p in PROFILES if full or p[5]]


def selected(a, point):
    """The servers a profile point runs: those whose "http-SERVER" or
    whose row id the --filter regex matches (all without one)."""
    return [s for s in HTTP_SERVERS if not a.filter or
            re.search(a.filter, "http-" + s.replace(" ", "-")) or
            re.search(a.filter, row_id(point[0], point[1], s))]


def inflight(flags):
    return int(flags[flags.index("--inflight") + 1]) \
        if "--inflight" in flags else 1


def row_id(profile, conns, server, client="ursa-load"):
    """wrk's rows keep the id the block used when wrk drove it alone."""
    name = "plaintext" if client == "wrk" else profile
    return f"http-{name}-{conns}c-{server.replace(' ', '-')}"


def busy_pid(srv):
    """The process that serves: nginx's one worker, else the server."""
    if srv.name != "nginx":
        return srv.pid
    for _ in range(50):
        workers = [p for p in srv.place.family(srv.pid) if p != srv.pid]
        if workers:
            return workers[0]
        time.sleep(0.02)
    raise Failure("nginx: no worker process")


def load_run(a, srv, point, seconds, tmp, lplace):
    """ursa-load --http against a running server: its figures as a row.
    Across hosts (srv.place or lplace another host) the server's CPU is
    read on its host around the whole run, scaled to the measured
    window by its share of the requests."""
    profile, conns, path, post, flags, _ = point
    got, body = request(srv.port, path,
                        b"x" * post if post is not None else None, srv.host)
    apart = bool(srv.place.host or lplace.host)
    out = os.path.join(lplace.tmp or tmp, "http-load.json")
    busy = busy_pid(srv)
    cmd = ["taskset", "-c", a.lcpus,
           os.path.join(lplace.bindir or a.bindir, "ursa-load"), "--http",
           f"http://{srv.host}:{srv.port}{path}", "--connections",
           str(conns), "--duration", str(seconds), "--warmup", str(WARMUP),
           "--http-length", str(len(body)), "--json", out] + flags
    cmd += [] if apart else ["--server-pid", str(busy)]
    if post is not None:
        cmd += ["--http-body", str(post)]
    c0 = srv.place.cpu_s(busy) if apart else None
    r = subprocess.run(lplace.wrap(cmd), capture_output=True, text=True,
                       timeout=seconds + 60)
    try:
        res = json.loads(lplace.take(out) or "")
    except ValueError:
        res = None
    if r.returncode or not res:
        raise Failure(f"ursa-load --http {profile} against {srv.name}: exit "
                      f"{r.returncode}: {r.stderr[-300:]}")
    if apart:
        res["server_cpu_s"] = ((srv.place.cpu_s(busy) - c0) *
                               res["requests"] /
                               max(res["requests_total"], 1))
    n = max(res["requests"], 1)
    return {"rt_per_s": res["rps"],
            "server_cpu_us_per_rt": res["server_cpu_s"] * 1e6 / n,
            "client_cpu_us_per_rt": res["client_cpu_us_per_req"],
            "p50_us": res["p50_us"], "p99_us": res["p99_us"],
            "server_cpu_share": res["server_cpu_s"] / res["seconds"],
            "client_cpu_share": res["client_cpu_s"] / res["seconds"],
            "rss_kib": srv.place.peak_rss_kib(srv.pid),
            "response_bytes": len(got),
            "opened": res.get("opened", 0), "errors": res["errors"],
            "refused": 0}


def wrk_run(a, srv, conns, seconds, lplace):
    """wrk (one thread) for seconds against a running server."""
    c0 = srv.place.tree_cpu(srv.pid)
    t0 = time.monotonic()
    rc, out, client = lplace.timed(
        ["taskset", "-c", a.lcpus, "wrk", "-t1", f"-c{conns}",
         f"-d{round(seconds)}", "--latency",
         f"http://{srv.host}:{srv.port}/plaintext"], seconds + 60)
    wall = time.monotonic() - t0
    c1 = srv.place.tree_cpu(srv.pid)
    if rc:
        raise Failure(f"wrk against {srv.name}: exit {rc}: {out[-200:]}")
    reqs, rps, p50, p99, errors = parse_wrk(out)
    n = max(reqs, 1)
    return {"rt_per_s": rps, "server_cpu_us_per_rt": (c1 - c0) * 1e6 / n,
            "client_cpu_us_per_rt": client * 1e6 / n, "p50_us": p50,
            "p99_us": p99, "server_cpu_share": (c1 - c0) / wall,
            "client_cpu_share": client / wall,
            "rss_kib": srv.place.peak_rss_kib(srv.pid),
            "response_bytes": srv.head, "opened": conns, "errors": errors,
            "refused": 0}


def one(a, server, client, point, tmp):
    """A fresh server and one run of client against it."""
    seconds = max(MIN_SECONDS, a.duration)
    splace, lplace, addr = sides(a)
    srv = HttpServer(a, server, a.scpus, tmp, place=splace, addr=addr)
    try:
        if client == "wrk":
            return wrk_run(a, srv, point[1], seconds, lplace)
        return load_run(a, srv, point, seconds, tmp, lplace)
    finally:
        srv.stop()


def http_block(a, tmp, todo, failures, progress):
    """Every server at each profile point of todo, interleaved round by
    round (with wrk beside ursa-load at WRK_POINT)."""
    # The outside servers and wrk, where they are installed.
    absent = {}
    for s in {s for p in todo for s in selected(a, p)} & {"nginx", "h2o"}:
        absent[s] = missing(a, "server", s)
        if absent[s]:
            failures.append(f"http {s}: {absent[s]}; its rows are not run")
    no_wrk = missing(a, "load", "wrk")
    if no_wrk and any(p[:2] == WRK_POINT for p in todo):
        failures.append(f"http: {no_wrk}; the wrk rows are not run")
    rows = []
    for point in todo:
        profile, conns = point[:2]
        servers = [s for s in selected(a, point) if not absent.get(s)]
        items = [(s, "ursa-load") for s in servers]
        if (profile, conns) == WRK_POINT and not no_wrk:
            items += [(s, "wrk") for s in servers]
        runs = interleaved(items, a.repeats,
                           lambda i: one(a, i[0], i[1], point, tmp),
                           lambda i: f"http {profile} {conns}c {i[0]} "
                                     f"({i[1]})", failures)
        rows += summaries(
            items, runs,
            lambda i: {"id": row_id(profile, conns, i[0], i[1]),
                       "server": i[0], "client": i[1], "profile": profile,
                       "conns": conns, "path": point[2],
                       "inflight": inflight(point[4])},
            failures, progress,
            lambda r: f"{r['rt_per_s']:.0f} req/s, server "
                      f"{r['server_cpu_us_per_rt']:.2f} us/req, client "
                      f"{r['client_cpu_us_per_rt']:.2f} us/req")
    return rows
