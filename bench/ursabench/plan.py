"""plan.py - a bench run as a table of blocks: what each runs (chosen by
the options and --filter), how many progress steps that makes, and how to
run it; and writing the results."""
import collections
import json
import os
import re
import subprocess
import tempfile
import time

from .analysis import fmt
from .blocks import tls_block, veth_block
from .files import file_block, points
from .page import page
from .process import points as process_points, process_block
from .udp import points as udp_points, udp_block
from .static import stall_block, static_block, static_sizes
from .config import (BACKENDS, KEYS, RUN_ORDER, THREAD_VARIANTS,
                     THREADS_POINT, TLS_CASES, ab_variants, case_id,
                     matrix)
from .http import greet_block
from .http_profiles import (WRK_POINT, http_block, points as http_points,
                            selected as http_selected)
from .outside import NO_BATCH_VARIANT, iperf2_block
from .plots import graphs
from .probes import drain, iperf3, memory, profile, wake
from .report import report
from .runner import (RUN_ERRORS, Failure, ab_block, interleaved, one_run,
                     summarise)

# # Each block is what it runs (todo: from the options, empty when skipped),
# how many progress steps that makes, and how to run it (returning its
# entries of the results); BLOCKS runs them in order.

Block = collections.namedtuple("Block", "key todo steps run")

# The results of a run that ran nothing.
EMPTY = {"cases": [], "bulk": [], "iperf": None, "memory": [], "drain": [],
         "threads": [], "outside": [], "veth": [], "veth_path": None,
         "http": [], "greet": [], "tls": [], "wake": [], "profile": [],
         "ab": [], "files": [], "static": [], "stall": [], "process": [],
         "udp": []}


class Context:
    """What every block shares: the options, a scratch folder, the list of
    correctness failures, and the progress line (step k of n, elapsed and
    an estimate of what is left)."""

    def __init__(self, a, n):
        self.a, self.n, self.k = a, n, 0
        self.t0 = time.time()
        self.tmp = tempfile.mkdtemp(prefix="ursa-bench-")
        self.failures = []
        self.per_run = a.duration + a.warmup + 0.4

    def step(self, label=None, what=None):
        """One step done; with a label, say what it measured."""
        self.k += 1
        if label is None:
            return
        el = time.time() - self.t0
        left = (el / self.k * (self.n - self.k) if self.k
                else self.per_run * self.a.repeats * self.n)
        print(f"[{self.k}/{self.n}] {label}: {what}  (elapsed {el:.0f}s, "
              f"~{left:.0f}s left)", flush=True)


def matching(a, items, name):
    """The items whose name(item) the --filter regex matches (all without
    one)."""
    return [x for x in items if not a.filter or re.search(a.filter, name(x))]


def run_cases(ctx, todo):
    """The case matrix.  A case's backends run interleaved, repeat by
    repeat, in an order that rotates: targets are ratios between backends,
    so drift on a shared machine must fall on all of them alike.  One run
    before everything is thrown away: the first run after start-up
    measured slower than the rest."""
    a, cases = ctx.a, []
    try:
        one_run(a, todo[0][0], *todo[0][1:], ctx.tmp)
    except RUN_ERRORS:
        pass
    points = []
    for c in todo:
        if c[1:] not in points:
            points.append(c[1:])
    for point in points:
        # epoll beside uring and ursa-epoll (cyclically, so also once
        # rotated), since the targets are their ratios.
        backends = sorted((c[0] for c in todo if c[1:] == point),
                          key=RUN_ORDER.index)
        runs = interleaved(backends, a.repeats,
                           lambda b: one_run(a, b, *point, ctx.tmp),
                           lambda b: case_id(b, *point), ctx.failures)
        for b in sorted(backends, key=BACKENDS.index):
            got = runs[backends.index(b)]
            kind, proto, conns, size, inflight = point
            cid = case_id(b, *point)
            if not got:
                ctx.step()
                continue
            s = summarise(got)
            s.update({"id": cid, "kind": kind, "backend": b, "proto": proto,
                      "conns": conns, "size": size, "inflight": inflight,
                      "repeats": len(got)})
            cases.append(s)
            if s["errors"] > s["refused"]:
                ctx.failures.append(f"{cid}: {s['errors']} echo errors")
            ctx.step(cid, f"{s['rt_per_s']:.0f} rt/s, server "
                     f"{s['server_cpu_us_per_rt']:.2f} us/rt, p99 "
                     f"{s['p99_us']:.0f} us, errors {s['errors']}")
    return {"cases": cases}


BULK_POINT = ("bulk", "tcp", 1, 65536, 4)


def run_bulk(ctx, todo):
    """The bulk stream, its backends interleaved as the cases are, and
    iperf3 beside it as the loopback's limit."""
    a, bulk = ctx.a, []
    runs = interleaved(todo, a.repeats,
                       lambda b: one_run(a, b, *BULK_POINT, ctx.tmp),
                       lambda b: f"tcp-bulk-1c-65536b-4i-{b}", ctx.failures)
    for b, got in zip(todo, runs):
        cid = f"tcp-bulk-1c-65536b-4i-{b}"
        if not got:
            ctx.step()
            continue
        s = summarise(got)
        s.update({"id": cid, "kind": "bulk", "backend": b, "proto": "tcp",
                  "conns": 1, "size": 65536, "inflight": 4,
                  "repeats": len(got)})
        bulk.append(s)
        if s["errors"]:
            ctx.failures.append(f"{cid}: {s['errors']} errors")
        ctx.step(cid, f"{s['mb_per_s']:.0f} MB/s")
    iperf = None if getattr(a, "places", None) else iperf3(a, ctx.tmp)
    print("    iperf3: " + (f"{iperf['mb_per_s']:.0f} MB/s" if iperf
                             else "not run"), flush=True)
    return {"bulk": bulk, "iperf": iperf}


def run_memory(ctx, todo):
    """Each backend's memory per idle connection."""
    mem = []
    for b in todo:
        try:
            m = memory(ctx.a, b, ctx.tmp)
            mem.append(m)
            ctx.step(f"tcp-idle-{b}", f"{fmt(m['bytes_per_conn'], 0)} bytes "
                     f"per idle connection ({m['held']} held) {m['note']}")
        except (Failure, OSError, ValueError, KeyError,
                subprocess.SubprocessError) as e:
            ctx.step()
            ctx.failures.append(f"tcp-idle-{b}: {e}")
    return {"memory": mem}


def run_drain(ctx, todo):
    """The write-queue drain (ursa-drain) on each backend."""
    drains = []
    for b in todo:
        try:
            got = drain(ctx.a, b, ctx.tmp)
            drains += got
            ctx.step(f"drain-{b}", ", ".join(
                f"{r['writes']} writes {r['ns_per_write']:.0f} ns/write"
                for r in got))
        except RUN_ERRORS as e:
            ctx.step()
            ctx.failures.append(f"drain-{b}: {e}")
    return {"drain": drains}


def run_threads(ctx, todo):
    """One loop against two, the variants interleaved as a case's
    backends."""
    a, threads = ctx.a, []
    runs = interleaved(todo, a.repeats,
                       lambda v: one_run(a, v[1], *THREADS_POINT, ctx.tmp,
                                         v[4]),
                       lambda v: f"threads {v[1]} {v[0]}", ctx.failures)
    for (label, b, nthreads, dispatch, extra), got in zip(todo, runs):
        if not got:
            ctx.step()
            continue
        s = summarise(got)
        s.update({"id": f"tcp-threads-256c-64b-{b}-{nthreads}t-{dispatch}",
                  "label": label, "backend": b, "threads": nthreads,
                  "dispatch": dispatch, "conns": THREADS_POINT[2],
                  "size": THREADS_POINT[3], "repeats": len(got)})
        threads.append(s)
        if s["errors"]:
            ctx.failures.append(f"threads {b} {label}: {s['errors']} echo "
                                "errors")
        ctx.step(f"threads {b} {label}", f"{s['rt_per_s']:.0f} rt/s, server "
                 f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return {"threads": threads}


def run_veth(ctx, todo):
    """The one case across a veth pair."""
    rows, path = veth_block(ctx.a, ctx.tmp, ctx.failures, ctx.step)
    if path and path.startswith("not run"):
        print(f"    veth: {path}", flush=True)
    return {"veth": rows, "veth_path": path}


def run_tls(ctx, todo):
    """TLS ping-pong and handshakes for each (backend, size)."""
    rows = tls_block(ctx.a, ctx.tmp, todo, ctx.failures)
    for row in rows:
        ctx.step(row["id"], f"{row['rt_per_s']:.0f} rt/s, server "
                 f"{row['server_cpu_us_per_rt']:.2f} us/rt")
    return {"tls": rows}


def run_wake(ctx, todo):
    """Posts to a loop against an eventfd and libuv (ursa-wake)."""
    wakes = wake(ctx.a, ctx.tmp, ctx.failures)
    ctx.step("wake", ", ".join(
        f"{w['mode']} ({w['backend']}) {w['posts_per_s'] / 1e6:.1f}M/s "
        f"p50 {w['lat_p50_ns'] / 1e3:.2f} us" for w in wakes))
    return {"wake": wakes}


def run_profile(ctx, todo):
    """perf profiles of the uring and epoll servers behind the analysis."""
    prof = []
    for n, b in todo:
        try:
            prof.append(profile(ctx.a, b, ctx.tmp, n))
        except (Failure, OSError, ValueError,
                subprocess.SubprocessError) as e:
            prof.append({"backend": b, "conns": n, "error": str(e)[:200]})
    print("    profile: " + ", ".join(
        f"{p['backend']} {p['conns']}c " +
        (f"{p['kernel']:.0f}% kernel" if "kernel" in p else p["error"])
        for p in prof), flush=True)
    return {"profile": prof}


def todo_http(a):
    """The profile points of the HTTP block that a server of it runs at
    under the filter."""
    if a.no_http:
        return []
    return [p for p in http_points(a.full) if http_selected(a, p)]


def outside_backends(a):
    """The servers the outside client drives: every backend and the uring
    server with batched waits off, in the run order."""
    return matching(a, sorted(BACKENDS + [NO_BATCH_VARIANT],
                              key=lambda b: RUN_ORDER.index(b.split("+")[0])),
                    lambda b: f"iperf2-tcp-pingpong-{b}")


BLOCKS = [
    # Across hosts (a.places), no Unix-socket cases and no iperf3.
    Block("cases",
          lambda a: [c for c in matching(a, matrix(a.full),
                                         lambda c: case_id(*c))
                     if not (getattr(a, "places", None) and c[2] == "unix")],
          lambda a, todo: len(todo), run_cases),
    Block("bulk",
          lambda a: [] if a.no_bulk else matching(
              a, BACKENDS, lambda b: f"tcp-bulk-{b}"),
          lambda a, todo: len(todo), run_bulk),
    Block("memory",
          lambda a: [] if a.no_memory else matching(
              a, BACKENDS, lambda b: f"tcp-idle-{b}"),
          lambda a, todo: len(todo), run_memory),
    Block("drain",
          lambda a: [] if a.no_drain else matching(
              a, ["uring", "epoll"], lambda b: f"drain-{b}"),
          lambda a, todo: len(todo), run_drain),
    Block("threads",
          lambda a: [] if a.no_threads else matching(
              a, THREAD_VARIANTS, lambda v: f"threads-{v[1]}-{v[0]}"),
          lambda a, todo: len(todo), run_threads),
    # Three connection counts a backend.
    Block("outside",
          lambda a: [] if a.no_outside else outside_backends(a),
          lambda a, todo: 3 * len(todo),
          lambda ctx, todo: {"outside": iperf2_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    # Every backend once, unless every case runs across the pair anyway.
    Block("veth",
          lambda a: [] if a.no_veth or a.veth else list(BACKENDS),
          lambda a, todo: len(todo), run_veth),
    Block("http", todo_http,
          lambda a, todo: sum((2 if p[:2] == WRK_POINT else 1) *
                              len(http_selected(a, p)) for p in todo),
          lambda ctx, todo: {"http": http_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    # Seven readers at each point (five in the quick suite).
    Block("files",
          lambda a: [] if a.no_files or (
              a.filter and not re.search(a.filter, "file")) else points(
                  a.full),
          lambda a, todo: (7 if a.full else 5) * len(todo),
          lambda ctx, todo: {"files": file_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    # Four servers at each file size (three in the quick suite).
    Block("static",
          lambda a: [] if a.no_static or (
              a.filter and not re.search(a.filter, "static")) else
          static_sizes(a.full),
          lambda a, todo: (4 if a.full else 3) * len(todo),
          lambda ctx, todo: {"static": static_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    Block("stall",
          lambda a: [] if a.no_static or (
              a.filter and not re.search(a.filter, "stall")) else ["stall"],
          lambda a, todo: 3 if a.full else 2,
          lambda ctx, todo: {"stall": stall_block(
              ctx.a, ctx.tmp, ctx.failures, ctx.step)}),
    # Three backends at each point.
    Block("process",
          lambda a: [] if a.no_process or (
              a.filter and not re.search(a.filter, "process")) else
          process_points(a.full),
          lambda a, todo: 3 * len(todo),
          lambda ctx, todo: {"process": process_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    Block("udp",
          lambda a: [] if a.no_udp or (
              a.filter and not re.search(a.filter, "udp")) else
          udp_points(a.full),
          lambda a, todo: sum(len(s) for _, s in todo),
          lambda ctx, todo: {"udp": udp_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    Block("greet",
          lambda a: [] if a.no_greet else matching(
              a, BACKENDS, lambda b: f"tcp-greet-16c-{b}"),
          lambda a, todo: len(todo),
          lambda ctx, todo: {"greet": greet_block(
              ctx.a, ctx.tmp, todo, ctx.failures, ctx.step)}),
    Block("tls",
          lambda a: [] if a.no_tls else matching(
              a, TLS_CASES, lambda c: f"tls-{c[0]}-{c[1]}b"),
          lambda a, todo: len(todo), run_tls),
    Block("wake",
          lambda a: [] if a.no_wake or (
              a.filter and not re.search(a.filter, "wake")) else ["wake"],
          lambda a, todo: len(todo), run_wake),
    Block("profile",
          lambda a: [] if a.no_profile else [
              (n, b) for n in (64, 256) for b in ("uring", "epoll")],
          lambda a, todo: 0, run_profile),
    Block("ab",
          lambda a: [] if a.no_ab else ab_variants(a.full),
          lambda a, todo: len(todo),
          lambda ctx, todo: {"ab": ab_block(ctx.a, ctx.tmp, todo,
                                            ctx.failures, ctx.step)}),
]


def write_results(a, env, r, failures, previous):
    """results.json, results.csv, the graphs and report.md."""
    rows = r["cases"] + r["bulk"]
    iperf = r["iperf"]
    if iperf:
        rows.append({"id": "tcp-bulk-1c-65536b-iperf3", "kind": "bulk",
                     "backend": "iperf3", "proto": "tcp", "conns": 1,
                     "size": 65536, "inflight": None,
                     "mb_per_s": iperf["mb_per_s"],
                     "mb_per_s_min": iperf["mb_per_s_min"],
                     "mb_per_s_max": iperf["mb_per_s_max"], "errors": 0,
                     "repeats": a.repeats})
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"env": env, "cases": rows, "memory": r["memory"],
                   "ab": r["ab"], "profile": r["profile"],
                   "drain": r["drain"], "threads": r["threads"],
                   "wake": r["wake"], "tls": r["tls"],
                   "outside": r["outside"], "veth": r["veth"],
                   "http": r["http"], "greet": r["greet"],
                   "files": r["files"], "static": r["static"],
                   "stall": r["stall"], "process": r["process"], "udp": r["udp"],
                   "failures": failures}, f, indent=1)
    with open(os.path.join(a.out, "results.csv"), "w") as f:
        f.write(",".join(KEYS) + "\n")
        for row in rows:
            f.write(",".join("" if row.get(key) is None else str(row[key])
                             for key in KEYS) + "\n")
    made = graphs(a.out, env, r["cases"], r["bulk"], iperf, r["outside"],
                  r["http"], r["greet"])
    report(a.out, env, r["cases"], r["bulk"], iperf, r["memory"], made,
           previous, r["ab"], r["profile"], r["drain"], r["threads"],
           r["wake"], r["tls"], r["outside"], r["veth"], r["http"],
           r["greet"], r["files"], r["static"], r["stall"], r["process"],
           r["udp"])
    page(a.out)
