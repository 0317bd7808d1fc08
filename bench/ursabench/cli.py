"""cli.py - the command line: what to run, in what order, and where the
results go."""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from .analysis import fmt
from .config import (AB_VARIANTS, BACKENDS, IDLE_CONNS, KEYS, RUN_ORDER,
                     THREAD_VARIANTS, THREADS_POINT, TLS_CASES, case_id,
                     listed_servers, matrix)
from .plots import graphs
from .blocks import tls_block, veth_block
from .http import HTTP_SERVERS, greet_block, http_block
from .netns import Veth
from .outside import MIN_WAIT_VARIANT, iperf2_block
from .probes import drain, iperf3, memory, profile, wake
from .report import render, report
from .runner import (RUN_ERRORS, Failure, ab_block, environment,
                     interleaved, one_run, summarise)
from .trends import trends


def main():
    ap = argparse.ArgumentParser(
        description="ursa's bench suite: every server backend side by side")
    ap.add_argument("--quick", action="store_true",
                    help="a subset that covers every backend (the default)")
    ap.add_argument("--full", action="store_true", help="the whole matrix")
    ap.add_argument("--filter", help="only cases whose id matches this regex")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--placement", choices=["apart", "same"], default="apart",
                    help="server and load on different CPUs, or the same one")
    ap.add_argument("--out", default="bench/out/latest")
    ap.add_argument("--compare", help="a previous results.json to compare with")
    ap.add_argument("--bindir", help="where the servers and ursa-load are")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="write the report (and graphs) of a stored run "
                    "into --out instead of running anything")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-bulk", action="store_true")
    ap.add_argument("--no-drain", action="store_true",
                    help="skip the write-queue drain (ursa-drain)")
    ap.add_argument("--no-threads", action="store_true",
                    help="skip the threads block (one loop against two)")
    ap.add_argument("--no-tls", action="store_true",
                    help="skip the TLS block")
    ap.add_argument("--no-wake", action="store_true",
                    help="skip the wake-up block (ursa-wake)")
    ap.add_argument("--no-outside", action="store_true",
                    help="skip the outside client (iperf2 bounceback)")
    ap.add_argument("--net", choices=["loopback", "veth"], default="loopback",
                    help="the path between load and server for every case: "
                    "loopback, or a veth pair between two network "
                    "namespaces the bench makes (and removes)")
    ap.add_argument("--no-http", action="store_true",
                    help="skip the HTTP block (wrk against ursa-http, nginx "
                    "and h2o)")
    ap.add_argument("--no-greet", action="store_true",
                    help="skip the greet block (connections per second)")
    ap.add_argument("--no-veth", action="store_true",
                    help="skip the one case run across a veth pair")
    ap.add_argument("--trend", nargs="+", metavar="RESULTS_JSON",
                    help="draw the headline figures of these stored runs "
                    "(oldest first) over their commits into --out, with "
                    "their intervals, flagging changes beyond them")
    ap.add_argument("--idle-conns", type=int, default=IDLE_CONNS)
    ap.add_argument("--no-ab", action="store_true",
                    help="skip the io_uring feature A/B block")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the perf profile of uring and epoll")
    a = ap.parse_args()
    if a.trend:
        try:
            path, flagged = trends(a.trend, a.out)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--trend: cannot read the runs: {e}")
        print(f"bench: trends of {len(a.trend)} runs in {path}; "
              f"{len(flagged)} changes beyond the intervals")
        for f in flagged:
            print("  " + f)
        return
    if a.render:
        with open(a.render) as f:
            results = json.load(f)
        previous = None
        if a.compare:
            with open(a.compare) as f:
                previous = json.load(f)
        print(render(results, a.out, previous,
                     graphs if shutil.which("gnuplot") else None))
        return
    if not a.bindir:
        ap.error("--bindir is needed to run the suite")
    listed = listed_servers(a.bindir)
    if listed != BACKENDS:
        ap.error(f"ursa-echo-server lists the servers {listed}, the bench's "
                 f"config {BACKENDS}: give bench/ursabench/config.py the "
                 f"same ones (order, colour)")
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    if a.duration is None:
        a.duration = 3.0 if a.full else 0.8
    if a.duration <= 0:
        ap.error("--duration must be above 0")
    ncpu = os.cpu_count() or 1
    a.scpu = 0
    a.lcpu = 1 if a.placement == "apart" and ncpu > 1 else 0
    # Room for 10,000 idle connections on each side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except ValueError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < a.idle_conns + 200:
        print(f"bench: RLIMIT_NOFILE is {soft}; the memory case uses "
              f"{soft - 200} connections instead of {a.idle_conns}")
        a.idle_conns = max(soft - 200, 100)
    previous = None
    if a.compare:
        with open(a.compare) as f:
            previous = json.load(f)

    os.makedirs(a.out, exist_ok=True)
    env = environment(a.bindir, a.placement, a.scpu, a.lcpu)
    a.veth = None
    if a.net == "veth":
        try:
            a.veth = Veth()
        except (OSError, subprocess.SubprocessError) as e:
            ap.error(f"--net veth: cannot make the network namespaces: {e}")
        env["net"] = a.veth.describe()
    else:
        env["net"] = "loopback (127.0.0.1; Unix sockets for unix cases)"
    todo = [c for c in matrix(a.full)
            if not a.filter or re.search(a.filter, case_id(*c))]
    bulk_todo = [] if a.no_bulk else [b for b in BACKENDS if not a.filter or
                                      re.search(a.filter, f"tcp-bulk-{b}")]
    mem_todo = [] if a.no_memory else [b for b in BACKENDS if not a.filter or
                                       re.search(a.filter, f"tcp-idle-{b}")]
    drain_todo = [] if a.no_drain else [b for b in ("uring", "epoll")
                                        if not a.filter or
                                        re.search(a.filter, f"drain-{b}")]
    ab_n = 0 if a.no_ab else len(AB_VARIANTS)
    threads_todo = [] if a.no_threads else [
        v for v in THREAD_VARIANTS if not a.filter or
        re.search(a.filter, f"threads-{v[1]}-{v[0]}")]
    do_wake = not a.no_wake and (not a.filter or
                                 re.search(a.filter, "wake") is not None)
    tls_todo = [] if a.no_tls else [
        c for c in TLS_CASES if not a.filter or
        re.search(a.filter, f"tls-{c[0]}-{c[1]}b")]
    outside_todo = [] if a.no_outside else [
        b for b in sorted(BACKENDS + [MIN_WAIT_VARIANT],
                          key=lambda b: RUN_ORDER.index(b.split("+")[0]))
        if not a.filter or
        re.search(a.filter, f"iperf2-tcp-pingpong-{b}")]
    veth_n = 0 if a.no_veth or a.veth else len(BACKENDS)
    http_conns = [] if a.no_http else ([16, 64, 256] if a.full else [64])
    http_n = len(http_conns) * len([
        s for s in HTTP_SERVERS if not a.filter or
        re.search(a.filter, "http-" + s.replace(" ", "-"))])
    if not http_n:
        http_conns = []
    greet_todo = [] if a.no_greet else [
        b for b in BACKENDS if not a.filter or
        re.search(a.filter, f"tcp-greet-16c-{b}")]
    n = (len(todo) + len(bulk_todo) + len(mem_todo) + len(drain_todo) +
         ab_n + len(threads_todo) + int(do_wake) + len(tls_todo) +
         3 * len(outside_todo) + veth_n + http_n + len(greet_todo))
    per_run = a.duration + a.warmup + 0.4
    t0 = time.time()
    k = 0
    tmp = tempfile.mkdtemp(prefix="ursa-bench-")
    cases, bulk, mem, failures = [], [], [], []

    def progress(label, what):
        el = time.time() - t0
        left = el / k * (n - k) if k else per_run * a.repeats * n
        print(f"[{k}/{n}] {label}: {what}  (elapsed {el:.0f}s, ~{left:.0f}s "
              "left)", flush=True)

    # The backends of one case run interleaved, repeat by repeat, in an
    # order that rotates: targets are ratios between backends, so drift on
    # a shared machine must fall on all of them alike.  One run before
    # everything is thrown away: the first run after start-up measured
    # slower than the rest.
    if todo:
        try:
            one_run(a, todo[0][0], *todo[0][1:], tmp)
        except RUN_ERRORS:
            pass
    points = []
    for c in todo:
        if c[1:] not in points:
            points.append(c[1:])
    for point in points:
        # Run order: epoll beside uring and ursa-epoll (cyclically, so
        # also once rotated), since the targets are their ratios and the
        # machine's speed drifts within a round.
        backends = sorted((c[0] for c in todo if c[1:] == point),
                          key=RUN_ORDER.index)
        runs = interleaved(backends, a.repeats,
                           lambda b: one_run(a, b, *point, tmp),
                           lambda b: case_id(b, *point), failures)
        for b in sorted(backends, key=BACKENDS.index):
            got = runs[backends.index(b)]
            kind, proto, conns, size, inflight = point
            cid = case_id(b, *point)
            k += 1
            if not got:
                continue
            s = summarise(got)
            s.update({"id": cid, "kind": kind, "backend": b, "proto": proto,
                      "conns": conns, "size": size, "inflight": inflight,
                      "repeats": len(got)})
            cases.append(s)
            if s["errors"] > s["refused"]:
                failures.append(f"{cid}: {s['errors']} echo errors")
            progress(cid, f"{s['rt_per_s']:.0f} rt/s, server "
                     f"{s['server_cpu_us_per_rt']:.2f} us/rt, p99 "
                     f"{s['p99_us']:.0f} us, errors {s['errors']}")
    # The bulk stream, its backends interleaved as the cases are.
    bulk_point = ("bulk", "tcp", 1, 65536, 4)
    runs = interleaved(bulk_todo, a.repeats,
                       lambda b: one_run(a, b, *bulk_point, tmp),
                       lambda b: f"tcp-bulk-1c-65536b-4i-{b}", failures)
    for b, got in zip(bulk_todo, runs):
        cid = f"tcp-bulk-1c-65536b-4i-{b}"
        k += 1
        if got:
            s = summarise(got)
            s.update({"id": cid, "kind": "bulk", "backend": b, "proto": "tcp",
                      "conns": 1, "size": 65536, "inflight": 4,
                      "repeats": len(got)})
            bulk.append(s)
            if s["errors"]:
                failures.append(f"{cid}: {s['errors']} errors")
            progress(cid, f"{s['mb_per_s']:.0f} MB/s")
    iperf = iperf3(a, tmp) if bulk_todo else None
    if bulk_todo:
        print("    iperf3: " + (f"{iperf['mb_per_s']:.0f} MB/s" if iperf
                                 else "not run"), flush=True)
    for b in mem_todo:
        try:
            m = memory(a, b, tmp)
            mem.append(m)
            k += 1
            progress(f"tcp-idle-{b}", f"{fmt(m['bytes_per_conn'], 0)} bytes "
                     f"per idle connection ({m['held']} held) {m['note']}")
        except (Failure, OSError, ValueError, KeyError,
                subprocess.SubprocessError) as e:
            k += 1
            failures.append(f"tcp-idle-{b}: {e}")
    drains = []
    for b in drain_todo:
        k += 1
        try:
            got = drain(a, b, tmp)
            drains += got
            progress(f"drain-{b}", ", ".join(
                f"{r['writes']} writes {r['ns_per_write']:.0f} ns/write"
                for r in got))
        except RUN_ERRORS as e:
            failures.append(f"drain-{b}: {e}")
    # One loop against two, the variants interleaved as a case's backends.
    threads = []
    runs = interleaved(threads_todo, a.repeats,
                       lambda v: one_run(a, v[1], *THREADS_POINT, tmp, v[4]),
                       lambda v: f"threads {v[1]} {v[0]}", failures)
    for (label, b, nthreads, dispatch, extra), got in zip(threads_todo, runs):
        k += 1
        if not got:
            continue
        s = summarise(got)
        s.update({"id": f"tcp-threads-256c-64b-{b}-{nthreads}t-{dispatch}",
                  "label": label, "backend": b, "threads": nthreads,
                  "dispatch": dispatch, "conns": THREADS_POINT[2],
                  "size": THREADS_POINT[3], "repeats": len(got)})
        threads.append(s)
        if s["errors"]:
            failures.append(f"threads {b} {label}: {s['errors']} echo errors")
        progress(f"threads {b} {label}", f"{s['rt_per_s']:.0f} rt/s, server "
                 f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    def step(label, what):
        nonlocal k
        k += 1
        progress(label, what)
    outside = iperf2_block(a, tmp, outside_todo, failures, step)
    veth_rows, veth_path = [], None
    if veth_n:
        veth_rows, veth_path = veth_block(a, tmp, failures, step)
        if veth_path and veth_path.startswith("not run"):
            print(f"    veth: {veth_path}", flush=True)
    http_rows = http_block(a, tmp, http_conns, failures, step) \
        if http_conns else []
    greet_rows = greet_block(a, tmp, greet_todo, failures, step) \
        if greet_todo else []
    tls_rows = tls_block(a, tmp, tls_todo, failures)
    for row in tls_rows:
        k += 1
        progress(row["id"], f"{row['rt_per_s']:.0f} rt/s, server "
                 f"{row['server_cpu_us_per_rt']:.2f} us/rt")
    wakes = []
    if do_wake:
        k += 1
        wakes = wake(a, tmp, failures)
        progress("wake", ", ".join(
            f"{w['mode']} ({w['backend']}) {w['posts_per_s'] / 1e6:.1f}M/s "
            f"p50 {w['lat_p50_ns'] / 1e3:.2f} us" for w in wakes))
    prof = []
    if not a.no_profile:
        for n in (64, 256):
            for b in ("uring", "epoll"):
                try:
                    prof.append(profile(a, b, tmp, n))
                except (Failure, OSError, ValueError,
                        subprocess.SubprocessError) as e:
                    prof.append({"backend": b, "conns": n,
                                 "error": str(e)[:200]})
        print("    profile: " + ", ".join(
            f"{p['backend']} {p['conns']}c " +
            (f"{p['kernel']:.0f}% kernel" if "kernel" in p else p["error"])
            for p in prof), flush=True)
    ab = []
    if not a.no_ab:
        def ab_progress(label, what):
            nonlocal k
            k += 1
            progress(label, what)
        ab = ab_block(a, tmp, failures, ab_progress)
    shutil.rmtree(tmp, ignore_errors=True)
    if a.veth:
        a.veth.down()
    env["veth_case"] = veth_path

    rows = cases + bulk
    if iperf:
        rows.append({"id": "tcp-bulk-1c-65536b-iperf3", "kind": "bulk",
                     "backend": "iperf3", "proto": "tcp", "conns": 1,
                     "size": 65536, "inflight": None,
                     "mb_per_s": iperf["mb_per_s"],
                     "mb_per_s_min": iperf["mb_per_s_min"],
                     "mb_per_s_max": iperf["mb_per_s_max"], "errors": 0,
                     "repeats": a.repeats})
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"env": env, "cases": rows, "memory": mem, "ab": ab,
                   "profile": prof, "drain": drains, "threads": threads,
                   "wake": wakes, "tls": tls_rows, "outside": outside,
                   "veth": veth_rows, "http": http_rows,
                   "greet": greet_rows, "failures": failures}, f,
                  indent=1)
    with open(os.path.join(a.out, "results.csv"), "w") as f:
        f.write(",".join(KEYS) + "\n")
        for r in rows:
            f.write(",".join("" if r.get(key) is None else str(r[key])
                             for key in KEYS) + "\n")
    made = graphs(a.out, env, cases, bulk, iperf, outside, http_rows,
                  greet_rows)
    report(a.out, env, cases, bulk, iperf, mem, made, previous, ab, prof,
           drains, threads, wakes, tls_rows, outside, veth_rows, http_rows,
           greet_rows)
    print(f"bench: {len(cases) + len(bulk)} cases, {len(mem)} memory runs in "
          f"{time.time() - t0:.0f}s; results in {a.out}/ (results.json, "
          f"results.csv, report.md, graphs/)")
    if failures:
        print("bench: correctness failures:\n  " + "\n  ".join(failures),
              file=sys.stderr)
        sys.exit(1)
