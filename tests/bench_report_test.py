#!/usr/bin/env python3
"""bench_report_test.py - renders the bench report from a stored
results.json (tests/data/bench_results.json, a quick run's) through
`bench.py --render`, and fails on any {...} left unformatted (a string
that lost its f prefix), on a missing section, on a case or backend of the
run that the report does not show, on a backend split from its case's
table, and on a module of the package over
400 lines."""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from checks import check, finish

BENCH, RESULTS = sys.argv[1:3]

with tempfile.TemporaryDirectory(prefix="ursa-report-") as out:
    r = subprocess.run([sys.executable, BENCH, "--render", RESULTS, "--out",
                        out], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"render: exit {r.returncode} {r.stderr[-500:]}")
    path = os.path.join(out, "report.md")
    text = open(path).read() if os.path.exists(path) else ""
check(text.startswith("# ursa bench report"), "report.md has its title")
left = re.findall(r"\{[A-Za-z_][^{}\n]*\}", text)
check(not left, f"unformatted placeholders in the report: {left[:5]}")
for section in ["## Targets", "| machine |"] + (
        ["## Write-queue drain", "write-queue drain (uring)"]
        if json.load(open(RESULTS)).get("drain") else []) + (
        ["## Threads: one loop against two", "2 threads (reuseport) server "
         "CPU/rt vs 1 thread"] if json.load(open(RESULTS)).get("threads")
        else []) + (
        ["## Wake-ups", "vs uv_async_send", "| uv-async | libuv |",
         "ursa_post_call (the bounded ring) posts/s"]
        if json.load(open(RESULTS)).get("wake") else []) + (
        ["## TLS: ping-pong over TLS", "uring vs epoll+OpenSSL",
         "TLS handshakes/s, uring vs epoll", "server CPU us per handshake"]
        if json.load(open(RESULTS)).get("tls") else []) + (
        ["## An outside client: iperf2 bounceback", "### 256 connections",
         "limited by (CPU shares)"]
        if json.load(open(RESULTS)).get("outside") else []) + (
        ["## Across a veth pair", "| path between load and server |"]
        if json.load(open(RESULTS)).get("veth") else []) + (
        ["## HTTP: ursa-load and wrk against ursa-http, nginx and h2o",
         "ursa-http (uring) requests/s vs nginx, 64 conns",
         "ursa-http (uring) requests/s vs h2o", "| nginx |", "| h2o |"]
        if json.load(open(RESULTS)).get("http") else []) + (
        ["## Greet: accept, send a greeting, close",
         "greet: uring connections/s vs hand-written epoll"]
        if json.load(open(RESULTS)).get("greet") else []) + (
        ["## Files: random reads (ursa-fileio, fio, libuv)",
         "file reads 4 KiB, root", "| fio psync |"]
        if json.load(open(RESULTS)).get("files") else []) + (
        ["## Static files: wrk against ursa-http, nginx (sendfile) and h2o",
         "server CPU per MB vs nginx (sendfile)"]
        if json.load(open(RESULTS)).get("static") else []) + (
        ["## Stall: a small request beside large files",
         "stall: RSS growth with 20 unread 60 MiB responses"]
        if json.load(open(RESULTS)).get("stall") else []) + (
        ["## Processes and pipes (ursa-spawn-bench, libuv)",
         "spawn with an 800 MiB parent: ms per spawn vs libuv",
         "pipe CPU per MB vs uv_pipe", "| spawn, 4 at once | libuv |"]
        if json.load(open(RESULTS)).get("process") else []):
    check(section in text, f"the report has '{section}'")
results = json.load(open(RESULTS))
for b in sorted({c["backend"] for c in results["cases"]}):
    check(b in text, f"the report shows backend {b}")
# Every backend of a case sits in that case's one table, beside epoll
# (a backend's name may hold a hyphen: ursa-epoll).
sections = re.split(r"^## ", text, flags=re.M)
for c in results["cases"]:
    if c["kind"] not in ("pingpong", "pipelined"):
        continue  # the bulk stream has a table of its own
    key = (f"{c['proto'].upper()} {c['kind']}, {c['conns']} connection")
    tables = [sec for sec in sections if sec.startswith(key) and
              f"{c['size']} B, {c['inflight']} in flight" in sec.split("\n")[0]
              and f"| {c['backend']} |" in sec]
    check(len(tables) == 1 and "| epoll |" in tables[0],
          f"case {c['id']} is in {len(tables)} tables, "
          f"{'with' if tables and '| epoll |' in tables[0] else 'without'} "
          f"epoll")
for ab in results.get("ab", []):
    check(ab["label"] in text, f"the report shows A/B row {ab['label']}")
# Every ratio to epoll in a case table carries its interval, and a target
# on a ratio is judged on it.
if any(c.get("rt_per_s_rounds") for c in results["cases"]):
    for sec in sections:
        if not sec.startswith("TCP pingpong"):
            continue
        for line in sec.splitlines():
            if line.startswith("| ") and not line.startswith(
                    ("| backend", "| epoll ")):
                check(line.count(" rounds") >= 2,
                      f"a case row without its intervals: {line[:120]}")
    check(re.search(r"\| server CPU/rt, 64 conns, vs epoll \| [^|]*"
                    r"\[[0-9.]+-[0-9.]+, \d+ rounds", text) is not None,
          "the targets table gives the interval")
if results.get("ab") and any(v.get("base") for v in results["ab"]):
    check("What this block resolves" in text and "The control row" in text,
          "the A/B block says what it can resolve")
for o in results.get("outside", []):
    sec = next((x for x in sections if x.startswith("An outside client")),
               "")
    check(f"| {o['backend']} | " in sec, f"iperf2 row {o['id']} shown")
# The event loop's own cost: the server's CPU per round trip less the
# profile's stack share, worked out here from the stored figures.
for n in (64, 256):
    pr = {p["backend"]: p for p in results.get("profile", [])
          if p.get("conns", 64) == n and "shares" in p}
    cs = {c["backend"]: c for c in results["cases"]
          if c["kind"] == "pingpong" and c["proto"] == "tcp" and
          c["conns"] == n and c["size"] == 64 and c["inflight"] == 1}
    if not ("uring" in pr and "epoll" in pr and "uring" in cs and
            "epoll" in cs):
        continue
    want = [cs[b]["server_cpu_us_per_rt"] *
            (1 - (pr[b]["shares"]["network stack"] +
                  pr[b]["shares"]["copies"]) / 100) for b in ("uring", "epoll")]
    m = re.search(rf"\| event-loop cost per round trip [^|]*, {n} conns, "
                  rf"uring vs epoll \| ([0-9.]+) vs ([0-9.]+) us = [0-9.]+x "
                  rf"\[[0-9.]+-[0-9.]+", text)
    check(m is not None and abs(float(m.group(1)) - want[0]) < 0.006 and
          abs(float(m.group(2)) - want[1]) < 0.006,
          f"event-loop cost at {n} conns: report "
          f"{m.groups() if m else None}, computed {want}")
pkg = os.path.join(os.path.dirname(BENCH), "ursabench")
for mod in sorted(glob.glob(os.path.join(pkg, "*.py"))):
    n = sum(1 for _ in open(mod))
    check(n <= 400, f"{os.path.basename(mod)} is {n} lines (at most 400)")
finish()
