"""sections.py - the report's sections on the outside client (iperf2)
and on the case run across a veth pair, each beside the same case as
ursa-load drove it on loopback."""
from .analysis import find
from .intervals import fmt, interval, text
from .outside import CONNS, limit


def _limit(c):
    return limit(c.get("client_cpu_share"), c.get("server_cpu_share"))


def _share(c):
    return (f"client {fmt(c.get('client_cpu_share'), 2)}, server "
            f"{fmt(c.get('server_cpu_share'), 2)}")


def _vs(c, e):
    if not (c and e) or c is e:
        return "-"
    iv = interval(c, e, "server_cpu_us_per_rt")
    return fmt(iv[0], 2) + text(iv)


def outside_section(outside, cases):
    if not outside:
        return []
    L = ["## An outside client: iperf2 bounceback, TCP 64 B ping-pong", "",
         "iperf2 (Debian's iperf, written elsewhere) with `--bounceback "
         "--bounceback-period 0 -l 64 -P N`: N connections, each sending "
         "64 B and waiting for it to come back, beside ursa-load on the "
         "same case.  iperf2 runs a thread per connection, all on the load "
         "CPU; it checks its own sequence numbers, not every byte "
         "(ursa-load does).  Its rate is the per-connection bounce counts "
         "summed (its SUM line reads 0), over its whole run (connection "
         "set-up included); its latency is the mean of the connections' "
         "means, as iperf2 gives no percentiles finer than 100 us bins.  "
         "Server CPU per round trip is the server's own CPU (from /proc) "
         "over iperf2's run.  'Limited by' reads each side's CPU over the "
         "run as a share of one CPU: 0.9 or more on a side means that side "
         "was the bottleneck, and the other side's figure is what it did "
         "at the pace it was given.", ""]
    for n in CONNS:
        rows = [c for c in outside if c["conns"] == n]
        if not rows:
            continue
        e = next((c for c in rows if c["backend"] == "epoll"), None)
        L += [f"### {n} connection{'s' if n > 1 else ''}", "",
              "| backend | iperf2 rt/s | server CPU us/rt | vs epoll "
              "[interval] | mean us | limited by (CPU shares) | ursa-load "
              "rt/s | server CPU us/rt | vs epoll [interval] | limited by "
              "(CPU shares) |", "|---" * 10 + "|"]
        for c in rows:
            u = find(cases, c["backend"], "pingpong", "tcp", n, 64, 1)
            ue = find(cases, "epoll", "pingpong", "tcp", n, 64, 1)
            L.append(
                f"| {c['backend']} | {fmt(c['rt_per_s'])} "
                f"[{fmt(c.get('rt_per_s_min'))}-{fmt(c.get('rt_per_s_max'))}]"
                f" | {fmt(c['server_cpu_us_per_rt'], 2)} | {_vs(c, e)} | "
                f"{fmt(c.get('mean_us'))} | {_limit(c)} ({_share(c)}) | "
                + (f"{fmt(u['rt_per_s'])} | {fmt(u['server_cpu_us_per_rt'], 2)}"
                   f" | {_vs(u, ue)} | {_limit(u)} ({_share(u)}) |" if u else
                   "not run | | | |"))
        L.append("")
    return L


def veth_section(veth, cases, env):
    if not veth and not env.get("veth_case"):
        return []
    L = ["## Across a veth pair: TCP 64 B ping-pong, 64 connections", ""]
    if not veth:
        return L + [f"The veth case was {env.get('veth_case')}.", ""]
    L += [f"The same case as on loopback, with the server and ursa-load "
          f"each in a network namespace of the bench's own, joined by a "
          f"{env.get('veth_case')}: a device, a queue discipline and GRO "
          f"on the path, the nearest this machine gets to two hosts.  "
          f"Packets cross the pair through the receiving side's backlog "
          f"in softirq, which the kernel may run in ksoftirqd rather than "
          f"in the process that sent them; that share of the work is "
          f"charged to no server; and these runs came at another time "
          f"than the loopback ones, on a machine whose speed drifts, so "
          f"compare the backends with each other here (the per-round "
          f"ratios), not with the loopback figures.", "",
          "| backend | rt/s (veth) | server CPU us/rt | vs epoll [interval] "
          "| p50 us | p99 us | limited by (CPU shares) | rt/s (loopback) | "
          "server CPU us/rt (loopback) |", "|---" * 9 + "|"]
    e = next((c for c in veth if c["backend"] == "epoll"), None)
    for c in veth:
        lo = find(cases, c["backend"], c["kind"], c["proto"], c["conns"],
                  c["size"], c["inflight"])
        L.append(f"| {c['backend']} | {fmt(c['rt_per_s'])} "
                 f"[{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])}] | "
                 f"{fmt(c['server_cpu_us_per_rt'], 2)} | {_vs(c, e)} | "
                 f"{fmt(c['p50_us'])} | {fmt(c['p99_us'])} | {_limit(c)} "
                 f"({_share(c)}) | "
                 + (f"{fmt(lo['rt_per_s'])} | "
                    f"{fmt(lo['server_cpu_us_per_rt'], 2)} |" if lo else
                    "not run | |"))
    return L + [""]


def greet_section(greet):
    if not greet:
        return []
    e = next((g for g in greet if g["backend"] == "epoll"), None)
    L = ["## Greet: accept, send a greeting, close", "",
         "The tutorial server (`ursa-echo-server --mode greet`: accept, "
         "write \"Thank you for connecting\", shut down, read to the "
         "peer's close) under `ursa-load --greet`: 16 connections, each "
         "reading the greeting byte for byte to the server's EOF, closing "
         "and connecting again at once.  A connection is a round trip "
         "here: connections/s, server CPU per connection, and the time "
         "from connect to EOF.", "",
         "| backend | connections/s | vs epoll [interval] | server CPU us "
         "per connection | vs epoll [interval] | p50 us | p99 us | limited "
         "by (CPU shares) | errors |", "|---" * 9 + "|"]
    for g in greet:
        i1 = interval(g, e, "rt_per_s")
        same = g is e
        L.append(f"| {g['backend']} | {fmt(g['rt_per_s'])} "
                 f"[{fmt(g.get('rt_per_s_min'))}-"
                 f"{fmt(g.get('rt_per_s_max'))}] | "
                 f"{'-' if same else fmt(i1[0], 2) + text(i1)} | "
                 f"{fmt(g['server_cpu_us_per_rt'], 2)} | {_vs(g, e)} | "
                 f"{fmt(g.get('p50_us'))} | {fmt(g.get('p99_us'))} | "
                 f"{_limit(g)} ({_share(g)}) | {g['errors']} |")
    return L + [""]


def files_section(files):
    if not files:
        return []
    L = ["## Files: random reads (ursa-fileio, fio, libuv)", "",
         "Random reads of a 256 MiB file at a queue depth, every reader "
         "pinned to the server CPU (io_uring's workers and the thread "
         "pools with it).  IOPS and CPU per read are each tool's own over "
         "its window: ursa-fileio's whole process (pool threads and io-wq "
         "workers included), fio's job threads (its io_uring engine's "
         "io-wq workers are not in its figure: a floor).  Residency is the share of the file in "
         "the page cache before the run (mincore); fio runs with "
         "--invalidate=0.  `uring no-inline` is ursa with every read "
         "through the ring (URSA_FEAT_FILE_INLINE off); `uring fixed` "
         "reads into registered buffers (ursa_fs_read_fixed: "
         "READ_FIXED on the ring; cached reads at depth 1 still go at "
         "once).  Ratios are to "
         "fio's io_uring engine in the same round.", ""]
    for key in sorted({(f["where"], f["bs"], f["depth"]) for f in files},
                      key=lambda k: (k[0], k[1], k[2])):
        rows = [f for f in files if (f["where"], f["bs"], f["depth"]) == key]
        ref = next((f for f in rows if f["reader"] == "fio io_uring"), None)
        L += [f"### {key[0]} ({rows[0]['fs']}), {key[1]} B, depth {key[2]}",
              "", "| reader | IOPS | vs fio io_uring | CPU us/read | "
              "vs fio io_uring | residency before | errors |",
              "|---|---|---|---|---|---|---|"]
        for f in rows:
            i1 = interval(f, ref, "iops") if ref else (None,) * 5
            i2 = interval(f, ref, "cpu_us_per_read") if ref else (None,) * 5
            L.append(f"| {f['reader']} | {fmt(f['iops'])} "
                     f"[{fmt(f['iops_min'])}-{fmt(f['iops_max'])}] | "
                     f"{fmt(i1[0], 2)}{'' if f is ref else text(i1)} | "
                     f"{fmt(f['cpu_us_per_read'], 2)} | "
                     f"{fmt(i2[0], 2)}{'' if f is ref else text(i2)} | "
                     f"{fmt(f.get('residency_before'), 2)} | "
                     f"{f['errors']} |")
        L.append("")
    return L


def static_section(static, stall):
    L = []
    if static:
        L += ["## Static files: wrk against ursa-http, nginx (sendfile) and "
              "h2o", "",
              "wrk, one thread and 16 connections on the load CPU, fetching "
              "one file again and again; each server alone on the server "
              "CPU, with the same root (nginx: `sendfile on`).  Each "
              "server's copy of the file is checked (length and SHA-256) "
              "before its run.  Server CPU is all its processes' over wrk's "
              "run.  Ratios are to nginx in the same round.  On loopback "
              "a sender's system calls also carry much of the receiver's "
              "TCP work (which side's context runs it depends on timing), "
              "so server and wrk CPU per MB is given too.  `uring splice`: "
              "file writes spliced through the loop's pipes "
              "(`--uring-enable file_splice`), against sendfile on the "
              "loop's thread.", "",
              "| file | server | requests/s | MB/s | server CPU us/req | "
              "us/MB | vs nginx | server + wrk us/MB | p99 us | errors |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for size in sorted({h["size"] for h in static}):
            rows = [h for h in static if h["size"] == size]
            ng = next((h for h in rows if h["server"] == "nginx"), None)
            for h in rows:
                iv = interval(h, ng, "server_cpu_us_per_mb") if ng else \
                    (None,) * 5
                L.append(f"| {size // 1024} KiB | {h['server']} | "
                         f"{fmt(h['rt_per_s'])} | {fmt(h['mb_per_s'])} | "
                         f"{fmt(h['server_cpu_us_per_rt'], 1)} | "
                         f"{fmt(h['server_cpu_us_per_mb'], 1)} | "
                         f"{fmt(iv[0], 2)}{'' if h is ng else text(iv)} | "
                         f"{fmt(h.get('both_cpu_us_per_mb'), 1)} | "
                         f"{fmt(h['p99_us'])} | {h['errors']} |")
        L.append("")
    if stall:
        L += ["## Stall: a small request beside large files", "",
              "/plaintext on one connection (wrk -c1, its p99), first with "
              "the server idle, then while 16 connections pull a 16 MiB "
              "file (a second wrk) and 20 connections hold a 60 MiB "
              "response unread; RSS is the server's growth over the "
              "loaded window.", "",
              "| server | idle p99 us | loaded p50 us | loaded p99 us | "
              "RSS growth MiB |", "|---|---|---|---|---|"]
        for x in stall:
            L.append(f"| {x['server']} | {fmt(x['idle_p99_us'])} | "
                     f"{fmt(x['p50_us'])} | {fmt(x['p99_us'])} | "
                     f"{fmt(x['rss_growth_kib'] / 1024, 1)} |")
        L.append("")
    return L
