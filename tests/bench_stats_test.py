#!/usr/bin/env python3
"""bench_stats_test.py - the bench's statistics on stored and made-up
results: the per-round interval and its coverage, targets judged on the
interval, the A/B block's run order (every variant beside a run of its
default), iperf2's output parsed, the trends command's flags over a series
of stored runs, and the veth namespaces removed at the end, on SIGTERM
and when left by a process that is gone."""
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from checks import check, finish

BENCH, RESULTS = sys.argv[1:3]
sys.path.insert(0, os.path.dirname(os.path.abspath(BENCH)))
from ursabench import intervals as iv  # noqa: E402
from ursabench import http_report  # noqa: E402
from ursabench.analysis import Table  # noqa: E402
from ursabench.config import AB_VARIANTS, ab_variants  # noqa: E402
from ursabench.http_profiles import points as http_points  # noqa: E402
from ursabench.outside import limit, parse  # noqa: E402
from ursabench.probes import attribute  # noqa: E402
from ursabench.runner import ab_sequence, summarise  # noqa: E402
from ursabench.trends import trends  # noqa: E402

# A sample's bucket: a lock's or an allocation's time goes to its caller.
K = lambda *syms: [(x, True) for x in syms]
check(attribute(K("kmem_cache_alloc_node", "__alloc_skb", "tcp_sendmsg",
                  "io_send")) == "network stack", "an skb's allocation")
check(attribute(K("__kmalloc", "io_alloc_req", "io_submit_sqes")) ==
      "io_uring", "io_uring's allocation")
check(attribute(K("_raw_spin_lock", "kmem_cache_free", "unknown_fn")) ==
      "memory allocation", "an allocation with no bucketed caller")
check(attribute(K("_raw_spin_lock", "unknown_fn")) ==
      "locks, RCU, interrupts", "a lock with no bucketed caller")
check(attribute(K("native_write_msr", "tcp_v4_rcv")) == "network stack",
      "pass-on frames")
check(attribute(K("kfree") + [("__libc_send", False)]) ==
      "syscall entry and exit", "up to the system call's trap")

# Coverage of the order-statistic interval: 1 - 2 P(Bin(n, 1/2) < k).
check(abs(iv.coverage(3) - 0.75) < 1e-9, f"coverage(3) {iv.coverage(3)}")
check(abs(iv.coverage(5) - 0.9375) < 1e-9, f"coverage(5) {iv.coverage(5)}")
check(iv.depth(7) == 1 and iv.depth(8) == 2 and iv.depth(12) == 3,
      f"depth 7/8/12: {iv.depth(7)} {iv.depth(8)} {iv.depth(12)}")
check(abs(iv.coverage(8, 2) - (1 - 2 * 9 / 256)) < 1e-9, "coverage(8, 2)")

# Per-round ratios pair rounds by number, not by position: y lost round 1.
runs_x = [{"v": 2.0, "round": 0}, {"v": 4.0, "round": 1},
          {"v": 3.0, "round": 2}, {"v": 6.0, "round": 3}]
runs_y = [{"v": 1.0, "round": 0}, {"v": 1.5, "round": 2},
          {"v": 3.0, "round": 3}]
x, y = {"v": 3.5}, {"v": 1.5}
x["v_rounds"] = [[r["round"], r["v"]] for r in runs_x]
y["v_rounds"] = [[r["round"], r["v"]] for r in runs_y]
check(iv.per_round(x, y, "v") == [2.0, 2.0, 2.0],
      f"per-round ratios {iv.per_round(x, y, 'v')}")
p, lo, hi, n, how = iv.interval(x, y, "v")
check((p, lo, hi, n, how) == (2.0, 2.0, 2.0, 3, "rounds"),
      f"interval {p, lo, hi, n, how}: the point is the median per-round "
      f"ratio, not the ratio of the medians ({3.5 / 1.5:.2f})")
# The drift that moves both cancels: the runs spread 3x, the ratio not.
check("no difference" not in iv.text((p, lo, hi, n, how)),
      "a tight interval above 1 is a measured difference")
# Eight rounds: one stray round at each end is left out.
a = {"v": 1.0, "v_rounds": [[r, 1.0] for r in range(8)]}
b = {"v": 1.0, "v_rounds": [[r, v] for r, v in
                            enumerate([1, 1, 1, 1, 1, 1, 0.5, 2.0])]}
_, lo, hi, n, _ = iv.interval(a, b, "v")
check((lo, hi, n) == (1.0, 1.0, 8), f"8-round interval {lo, hi, n}")
# Without rounds: the extremes, best against worst.
e1 = iv.interval({"v": 2.0, "v_min": 1.8, "v_max": 2.2},
                 {"v": 1.0, "v_min": 0.9, "v_max": 1.1}, "v")
check(abs(e1[1] - 1.8 / 1.1) < 1e-9 and abs(e1[2] - 2.2 / 0.9) < 1e-9 and
      e1[4] == "extremes", f"extremes {e1}")
span = (1.0, 0.9, 1.1, 3, "rounds")
check("no difference measured" in iv.text(span), iv.text(span))
check(iv.text((1.0, None, None, 0, "")) == "", "no interval, no text")

# Targets judged on the interval.
le = lambda g: (lambda r: r <= g)
check(iv.judge((0.8, 0.7, 0.85, 5, "rounds"), le(0.9)) is True, "met")
check(iv.judge((0.95, 0.92, 0.99, 5, "rounds"), le(0.9)) is False, "missed")
check(iv.judge((0.88, 0.8, 0.95, 5, "rounds"), le(0.9)) == "unresolved",
      "an interval across the goal is not resolved")
check(iv.judge((0.88, None, None, 0, ""), le(0.9)) is True, "point only")
check(iv.judge((None, None, None, 0, ""), le(0.9)) is None, "nothing")
check(abs(iv.resolution([(1.0, 0.9, 1.1, 5, "rounds"),
                         (2.0, 1.9, 2.1, 5, "rounds"),
                         (1.0, 0.5, 1.5, 0, "extremes")]) - 0.1) < 1e-9,
      "resolution: the median half-width of per-round intervals only")

# summarise keeps each figure round by round.
s = summarise([{"rt_per_s": 10.0, "errors": 0, "round": 3},
               {"rt_per_s": 30.0, "errors": 1, "round": 5}])
check(s["rt_per_s_rounds"] == [[3, 10.0], [5, 30.0]] and s["errors"] == 1
      and s["rt_per_s"] == 20.0 and "round" not in s, f"summarise {s}")

# The A/B order: every variant once a round, beside its case's default.
for r in range(8):
    seq = ab_sequence(AB_VARIANTS, r)
    seen = [i for i, _ in seq if AB_VARIANTS[i][0] != "default"]
    check(sorted(seen) == [i for i, v in enumerate(AB_VARIANTS)
                           if v[0] != "default"],
          f"round {r}: each variant once ({len(seen)})")
    for pos, (i, pair) in enumerate(seq):
        if AB_VARIANTS[i][0] == "default":
            check(pair is None, "a default run has no pair")
            continue
        check(pair is not None and abs(pair - pos) == 1 and
              AB_VARIANTS[seq[pair][0]][0] == "default" and
              AB_VARIANTS[seq[pair][0]][1] == AB_VARIANTS[i][1],
              f"round {r}: {AB_VARIANTS[i][:2]} beside its default")
# The quick suite's A/B rows: the control and every batched-wait pair
# (their targets), a strict subset of --full's.
quick = ab_variants(False)
check(("default, again (control)", "pingpong", []) in quick and
      all(v in quick for v in AB_VARIANTS if v[0] == "batched waits off")
      and all(("default", v[1], []) in quick for v in quick)
      and len(quick) < len(AB_VARIANTS) and ab_variants(True) == AB_VARIANTS,
      f"quick A/B rows {[v[:2] for v in quick]}")
seq = ab_sequence(quick, 0)
check(all(pair is not None for i, pair in seq if quick[i][0] != "default"),
      "quick A/B: every variant beside its default")
first = [AB_VARIANTS[ab_sequence(AB_VARIANTS, r)[0][0]] for r in range(3)]
check(len({f[1] for f in first}) == 3, "the rounds start on different cases")

# The HTTP block's targets: server CPU per request of ursa-http (uring)
# against nginx and h2o at each quick profile, judged on the per-round
# interval; a --full profile reported, not judged; ursa-load's client CPU
# against wrk's; a stored run's wrk-only rows still read.
def hrow(server, prof, conns, who, cpu, client_cpu=5.0):
    r = summarise([{"rt_per_s": 1e5, "server_cpu_us_per_rt": cpu * f,
                    "client_cpu_us_per_rt": client_cpu * f, "errors": 0,
                    "round": i} for i, f in enumerate((0.98, 1.0, 1.02))])
    r.update({"server": server, "profile": prof, "conns": conns,
              "client": who})
    return r
http = []
for prof, conns in (("baseline", 64), ("pipelined", 64), ("upload-4k", 64)):
    http += [hrow("ursa-http uring", prof, conns, "ursa-load",
                  5.0 if prof != "pipelined" else 9.0),
             hrow("nginx", prof, conns, "ursa-load", 10.0),
             hrow("h2o", prof, conns, "ursa-load", 8.0)]
http += [hrow("ursa-http uring", "baseline", 64, "wrk", 6.0, 10.0),
         hrow("nginx", "baseline", 64, "wrk", 8.0, 10.0)]
t = Table()
http_report.targets(t, http)
rows = "\n".join(t.rows)
check("| HTTP baseline, 64 conns (ursa-load): ursa-http (uring) server CPU "
      "per request vs nginx | 5.00 vs 10.00 us = 0.50x" in rows and
      "vs nginx | 5.00 vs 10.00 us = 0.50x [0.50-0.50, 3 rounds] | <= 0.75x "
      "| yes |" in rows, f"baseline vs nginx met: {rows}")
check("HTTP pipelined, 64 conns (ursa-load): ursa-http (uring) server CPU "
      "per request vs nginx | 9.00 vs 10.00 us = 0.90x [0.90-0.90, 3 rounds]"
      " | <= 0.75x | no |" in rows, f"pipelined vs nginx missed: {rows}")
check("HTTP pipelined, 64 conns (ursa-load): ursa-http (uring) server CPU "
      "per request vs h2o | 9.00 vs 8.00 us = 1.12x" in rows and
      "| <= 1x | no |" in rows, "pipelined vs h2o missed")
check("upload-4k, 64 conns (ursa-load): ursa-http (uring) server CPU per "
      "request vs nginx | 5.00 vs 10.00 us = 0.50x [0.50-0.50, 3 rounds] | "
      "(reported: --full) | n/a |" in rows, "a --full profile is reported")
check("client CPU per request vs wrk's, 64 conns, both against ursa-http "
      "(uring) | 5.00 vs 10.00 us = 0.50x [0.50-0.50, 3 rounds] | <= 0.7x | "
      "yes |" in rows, "ursa-load vs wrk")
check("requests/s vs nginx, 64 conns (wrk)" in rows, "wrk's own rows")
sec = "\n".join(http_report.section(http))
check("### baseline, 64 connections (ursa-load)" in sec and
      "### baseline, 64 connections (wrk)" in sec and
      sec.index("(ursa-load)") < sec.index("### baseline, 64 connections "
                                           "(wrk)") and
      "### upload-4k, 64 connections (ursa-load)" in sec,
      "the section's tables, ursa-load's before wrk's")
old = [{k: v for k, v in h.items() if k not in ("profile", "client")}
       for h in http if h["client"] == "wrk"]
t = Table()
http_report.targets(t, old)
check(any("requests/s vs nginx, 64 conns (wrk)" in r for r in t.rows) and
      not any("(ursa-load)" in r for r in t.rows), "a stored wrk-only run")
check([p[:2] for p in http_points(False)] ==
      [("baseline", 64), ("baseline", 256), ("pipelined", 64)] and
      len(http_points(True)) == 8, "the quick and full profiles")

# iperf2's bounceback lines (its format, 2.1.8): the counts summed.
out = """[ ID] Interval            Transfer    Bandwidth         BB cnt=avg/min/max/stdev         Rtry  Cwnd/RTT    RPS
[  1] 0.0000-2.0002 sec  4.62 MBytes  19.4 Mbits/sec    37849=0.051/0.017/2.740/0.030 ms    0  576K/29 us    19421 rps
[  1] 0.0000-2.0002 sec BB8(f)-PDF: bin(w=100us):cnt(37849)=1:36542,2:1263 (5.00/95.00/99.7%=1/1/2,Outliers=0,obl/obu=0/0)
[  3] 0.0000-2.0001 sec  4.58 MBytes  19.2 Mbits/sec    37522=0.060/0.014/2.667/0.031 ms    0  576K/23 us    19249 rps
[SUM] 0.0000-2.0002 sec  0.000 Bytes  0.000 bits/sec  0/0         0
"""
conns, total, secs, mean, mx = parse(out)
check((conns, total) == (2, 37849 + 37522) and abs(secs - 2.0002) < 1e-9,
      f"iperf2 parse {conns} {total} {secs}")
check(abs(mean - (37849 * 51 + 37522 * 60) / (37849 + 37522)) < 1e-6 and
      abs(mx - 2740) < 1e-6, f"iperf2 latency {mean} {mx}")
check(parse("connect failed: Connection refused\n")[:2] == (0, 0),
      "nothing parsed from a failed run")
check(limit(0.99, 0.6) == "client CPU" and limit(0.5, 0.95) == "server CPU"
      and limit(0.95, 0.99) == "both CPUs full"
      and limit(0.4, 0.4).startswith("neither"), "limited by")

# Trends over stored runs: the same run three times flags nothing; a
# fourth with uring's CPU 1.5x and tight flags exactly that figure.
base = json.load(open(RESULTS))
with tempfile.TemporaryDirectory(prefix="ursa-trend-") as tmp:
    paths = []
    for i in range(3):
        r = copy.deepcopy(base)
        r["env"]["commit"] = f"c{i}"
        paths.append(os.path.join(tmp, f"r{i}.json"))
        json.dump(r, open(paths[-1], "w"))
    md, flagged = trends(paths, os.path.join(tmp, "out"))
    check(flagged == [], f"no change flagged in identical runs: {flagged}")
    text = open(md).read()
    check("| figure | c0 | c1 | c2 |" in text and
          "server CPU us/rt, 64 conns, uring" in text, "trend table")
    r = copy.deepcopy(base)
    r["env"]["commit"] = "c3"
    for c in r["cases"]:
        if c["backend"] == "uring" and c["conns"] == 64 and \
                c["kind"] == "pingpong" and c["size"] == 64 and \
                c["proto"] == "tcp":
            v = c["server_cpu_us_per_rt"] * 1.5
            c["server_cpu_us_per_rt"] = v
            c["server_cpu_us_per_rt_min"] = v * 0.99
            c["server_cpu_us_per_rt_max"] = v * 1.01
    paths.append(os.path.join(tmp, "r3.json"))
    json.dump(r, open(paths[-1], "w"))
    _, flagged = trends(paths, os.path.join(tmp, "out2"))
    check(any(f.startswith("server CPU us/rt, 64 conns, uring: c2") and
              "-> c3" for f in flagged) and
          not any("epoll" in f.split(":")[0] and "uring" not in
                  f.split(":")[0] for f in flagged),
          f"the uring change flagged, epoll's not: {flagged}")
    r = subprocess.run([sys.executable, BENCH, "--trend", *paths, "--out",
                        os.path.join(tmp, "cli")], capture_output=True,
                       text=True, timeout=120)
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        f.write("{not json")
    for args, says in (([paths[0], "/nonexistent/results.json"],
                        "/nonexistent/results.json"), ([bad], "--trend")):
        rb = subprocess.run([sys.executable, BENCH, "--trend", *args,
                             "--out", os.path.join(tmp, "bad")],
                            capture_output=True, text=True, timeout=60)
        check(rb.returncode == 2 and says in rb.stderr and
              "Traceback" not in rb.stderr,
              f"--trend {args[-1]}: exit {rb.returncode} {rb.stderr[-200:]}")
    check(r.returncode == 0 and "changes beyond the intervals" in r.stdout
          and os.path.exists(os.path.join(tmp, "cli", "trend.md")),
          f"bench.py --trend: {r.returncode} {r.stdout[-300:]} "
          f"{r.stderr[-300:]}")


# A run takes its servers from the program: the list it prints becomes
# BACKENDS (the same list object every module imported), the known ones
# keep their run order, a new one runs last and is drawn in grey.
from ursabench import config as cfg  # noqa: E402
from ursabench import plots  # noqa: E402
saved = (list(cfg.BACKENDS), list(cfg.RUN_ORDER), dict(cfg.COLOURS))
cfg.use_servers(["uring", "epoll", "newcomer"])
check(cfg.BACKENDS == ["uring", "epoll", "newcomer"] and
      plots.BACKENDS is cfg.BACKENDS, f"use_servers: {cfg.BACKENDS}")
check(cfg.RUN_ORDER == ["uring", "epoll", "newcomer"],
      f"run order: {cfg.RUN_ORDER}")
check(cfg.COLOURS["newcomer"] == "#7f7f7f" and
      cfg.COLOURS["uring"] == saved[2]["uring"], "colours")
check(len(cfg.matrix(False)) % 3 == 0 and
      {c[0] for c in cfg.matrix(False)} == {"uring", "epoll", "newcomer"},
      "the case matrix runs every listed server")
cfg.BACKENDS[:], cfg.RUN_ORDER[:] = saved[0], saved[1]
cfg.COLOURS.clear()
cfg.COLOURS.update(saved[2])


# The veth namespaces: made, and removed by down(), by SIGTERM, and at
# the next start when their process is gone.
def namespaces():
    r = subprocess.run(["ip", "netns", "list"], capture_output=True,
                       text=True)
    return [ln.split()[0] for ln in r.stdout.splitlines()
            if ln.startswith("ursa-bench-")]


probe = subprocess.run(["ip", "netns", "add", "ursa-bench-probe"],
                       capture_output=True, text=True)
if probe.returncode:
    print(f"skip: veth checks need network namespaces: {probe.stderr}")
else:
    subprocess.run(["ip", "netns", "del", "ursa-bench-probe"])
    from ursabench.netns import Veth  # noqa: E402
    subprocess.run(["ip", "netns", "add", "ursa-bench-999999999-srv"])
    v = Veth()
    mine = [f"ursa-bench-{os.getpid()}-srv", f"ursa-bench-{os.getpid()}-load"]
    check(all(n in namespaces() for n in mine), f"made {namespaces()}")
    check("ursa-bench-999999999-srv" not in namespaces(),
          "a namespace left by a process that is gone is removed")
    # A TCP connection across the pair, server side in one namespace,
    # client in the other.
    srv = subprocess.Popen(
        ["ip", "netns", "exec", mine[0], sys.executable, "-c",
         "import socket; s = socket.socket(); s.bind(('%s', 0)); s.listen();"
         "print(s.getsockname()[1], flush=True); c, _ = s.accept();"
         "c.sendall(c.recv(64)[::-1])" % v.server_ip],
        stdout=subprocess.PIPE, text=True)
    port = srv.stdout.readline().strip()
    r = subprocess.run(
        ["ip", "netns", "exec", mine[1], sys.executable, "-c",
         "import socket; c = socket.create_connection(('%s', %s), 5);"
         "c.sendall(b'abc'); print(c.recv(64).decode())"
         % (v.server_ip, port or 0)], capture_output=True, text=True,
        timeout=30)
    srv.wait(timeout=10)
    check(r.stdout.strip() == "cba", f"the pair carries TCP: {r.stdout!r} "
          f"{r.stderr[-200:]!r}")
    v.down()
    v.down()
    check(not any(n in namespaces() for n in mine), "down() removes both")
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; sys.path.insert(0, sys.argv[1]);"
                              "from ursabench.netns import Veth; v = Veth();"
                              "print('up', flush=True); time.sleep(60)",
                              os.path.dirname(os.path.abspath(BENCH))],
                             stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    names = [f"ursa-bench-{child.pid}-srv", f"ursa-bench-{child.pid}-load"]
    check(line.strip() == "up" and all(n in namespaces() for n in names),
          "a bench process made its namespaces")
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    time.sleep(0.2)
    check(not any(n in namespaces() for n in names),
          f"SIGTERM removed them: {namespaces()}")
finish()
