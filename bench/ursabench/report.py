"""report.py - report.md from a run's results, and rendering one again
from a stored results.json."""
import os

from .analysis import fmt, targets
from .config import AB_MISSING, case_of
from .intervals import coverage, depth, effect, interval, resolution, text
from .sections import (greet_section, http_section, outside_section,
                       veth_section)


def report(out, env, cases, bulk, iperf, mem, made, previous, ab=None,
           prof=(), drain=(), threads=(), wake=(), tls=(), outside=(),
           veth=(), http=(), greet=()):
    L = ["# ursa bench report", ""]
    L += ["| machine | |", "|---|---|"]
    for k in ["cpu_model", "cpus", "kernel", "liburing", "libuv", "commit",
              "date", "placement", "server_cpu", "load_cpu"]:
        L.append(f"| {k} | {env[k]} |")
    L.append(f"| io_uring features used | {', '.join(env['ring_features_used'])} |")
    L.append(f"| path between load and server | "
             f"{env.get('net', 'loopback (127.0.0.1)')} |")
    L += ["", "The backends of a case run interleaved, one repeat of each in "
          "turn, in an order that rotates by one each repeat, after one "
          "warm-up run that is not counted.  "
          "Each figure is the median of the repeats, with [min-max] where "
          "it matters; ratios are to epoll in the same run (below 1 is better "
          "for CPU, above 1 better for round trips), each the median of the "
          "ratios of runs made in the same round, with its interval in "
          "brackets (intervals.py: an order-statistic interval for that "
          "median; 'no difference measured' when it spans 1).  Server CPU is the "
          "server process's own CPU time (utime+stime from /proc, all "
          "threads) over the measured window, divided by the round trips in "
          "it.  System calls per round trip count every call the server made "
          "over its whole life against every round trip including warm-up; "
          "libuv's are not counted.  Errors in brackets are connections "
          "the server refused by design (select cannot watch descriptors at "
          "or above FD_SETSIZE, 1024); only errors beyond those fail the "
          "run.", ""]
    for name in made:
        L.append(f"![{name}](graphs/{name}.svg)")
    L.append("")
    L += targets(cases, bulk, iperf, mem, list(prof), list(drain),
                 list(threads), list(wake), list(tls), list(http),
                 list(greet), list(outside))
    prev = {c["id"]: c for c in (previous or {}).get("cases", [])}
    groups = {}
    for c in cases:
        groups.setdefault(case_of(c), []).append(c)
    for g, cs in groups.items():
        c0 = cs[0]
        path = ("a Unix socket" if c0["proto"] == "unix" else "veth"
                if env.get("net", "").startswith("veth") else "loopback")
        L += [f"## {c0['proto'].upper()} {c0['kind']}, {c0['conns']} "
              f"connections, {c0['size']} B, {c0['inflight']} in flight "
              f"(ursa-load, {path})", ""]
        hdr = ("| backend | round trips/s | vs epoll | server CPU us/rt | "
               "vs epoll | p50 us | p99 us | p99.9 us | syscalls/rt | "
               "enters/rt | errors (refused) |")
        if prev:
            hdr += " rt/s change |"
        L += [hdr, "|---" * (hdr.count("|") - 1) + "|"]
        ep = next((c for c in cs if c["backend"] == "epoll"), None)
        for c in cs:
            i1 = interval(c, ep, "rt_per_s")
            i2 = interval(c, ep, "server_cpu_us_per_rt")
            r1 = fmt(i1[0], 2) + ("" if c is ep else text(i1))
            r2 = fmt(i2[0], 2) + ("" if c is ep else text(i2))
            row = (f"| {c['backend']} | {fmt(c['rt_per_s'])} "
                   f"[{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])}] | "
                   f"{r1} | {fmt(c['server_cpu_us_per_rt'], 2)} "
                   f"[{fmt(c['server_cpu_us_per_rt_min'], 2)}-"
                   f"{fmt(c['server_cpu_us_per_rt_max'], 2)}] | {r2} | "
                   f"{fmt(c['p50_us'])} | {fmt(c['p99_us'])} | "
                   f"{fmt(c['p999_us'])} | {fmt(c['syscalls_per_rt'], 2)} | "
                   f"{fmt(c['enters_per_rt'], 3)} | {c['errors']}"
                   + (f" ({c['refused']})" if c.get("refused") else "") + " |")
            if prev:
                p = prev.get(c["id"])
                row += (f" {100 * (c['rt_per_s'] / p['rt_per_s'] - 1):+.1f}% |"
                        if p and p.get("rt_per_s") else " new |")
            L.append(row)
        L.append("")
    L += http_section(list(http))
    L += greet_section(list(greet))
    L += outside_section(list(outside), cases)
    L += veth_section(list(veth), cases, env)
    if bulk:
        L += ["## Bulk stream: one connection, 64 KiB writes, one way", "",
              "| backend | MB/s | of iperf3 | server CPU us per 64 KiB | errors |",
              "|---|---|---|---|---|"]
        for c in bulk:
            share = (f"{100 * c['mb_per_s'] / iperf['mb_per_s']:.0f}%"
                     if iperf else "n/a")
            L.append(f"| {c['backend']} | {fmt(c['mb_per_s'])} | {share} | "
                     f"{fmt(c['server_cpu_us_per_rt'], 2)} | {c['errors']} |")
        if iperf:
            L.append(f"| iperf3 | {fmt(iperf['mb_per_s'])} "
                     f"[{fmt(iperf['mb_per_s_min'])}-"
                     f"{fmt(iperf['mb_per_s_max'])}] | 100% | | |")
        else:
            L.append("| iperf3 | not run (not installed) | | | |")
        L.append("")
    if mem:
        L += [f"## Memory: {mem[0]['conns']} idle connections", "",
              "| backend | held | RSS before | RSS with them | bytes per "
              "connection | note |", "|---|---|---|---|---|---|"]
        for m in mem:
            L.append(f"| {m['backend']} | {m['held']} | {m['rss_base_kb']} KiB "
                     f"| {m['rss_peak_kb']} KiB | {fmt(m['bytes_per_conn'], 0)} "
                     f"| {m['note']} |")
        L.append("")
    if drain:
        L += ["## Write-queue drain", "",
              "`ursa-drain`: N writes of 100 B queued on one TCP stream at "
              "once, sent by the loop while a thread reads (and checksums) "
              "the other end; time from the first write to the last "
              "callback, per write.  Flat across N is a drain in linear "
              "time.", "",
              "| backend | writes queued | ns per write | sends |",
              "|---|---|---|---|"]
        for d in drain:
            L.append(f"| {d['backend']} | {d['writes']:,} | "
                     f"{fmt(d['ns_per_write'], 0)} "
                     f"[{fmt(d['ns_per_write_min'], 0)}-"
                     f"{fmt(d['ns_per_write_max'], 0)}] | {d['sends']:,} |")
        L.append("")
    if threads:
        L += ["## Threads: one loop against two", "",
              "TCP ping-pong, 256 connections, 64 B.  The server process is "
              "pinned to one CPU and ursa-load to the other (this machine "
              "has two), so two server threads share one CPU: the rows show "
              "what running a second loop costs (its wake-ups, the "
              "hand-off's posts, the kernel spreading connections), not "
              "what a second core buys.  On a machine with a core per loop "
              "and a client that is not the bottleneck, the same CPU per "
              "round trip would serve about twice the round trips; these "
              "runs cannot show that.  CPU is the process's, all threads.",
              "", "| backend | loops | dispatch | round trips/s | server CPU "
              "us/rt | vs 1 thread [interval] | p99 us | errors |",
              "|---|---|---|---|---|---|---|---|"]
        one = {t["backend"]: t for t in threads if t["threads"] == 1}
        for t in threads:
            o = one.get(t["backend"])
            r = "-"
            if o and t is not o:
                iv = interval(t, o, "server_cpu_us_per_rt")
                r = fmt(iv[0], 2) + "x" + text(iv)
            L.append(f"| {t['backend']} | {t['threads']} | {t['dispatch']} | "
                     f"{fmt(t['rt_per_s'])} [{fmt(t['rt_per_s_min'])}-"
                     f"{fmt(t['rt_per_s_max'])}] | "
                     f"{fmt(t['server_cpu_us_per_rt'], 2)} "
                     f"[{fmt(t['server_cpu_us_per_rt_min'], 2)}-"
                     f"{fmt(t['server_cpu_us_per_rt_max'], 2)}] | "
                     f"{r} | {fmt(t['p99_us'])} | "
                     f"{t['errors']} |")
        L.append("")
    if tls:
        L += ["## TLS: ping-pong over TLS, 64 connections", "",
              "ursa-load --tls (OpenSSL, checking every byte) against "
              "ursa's TLS over memory BIOs (uring, ursa-epoll) and the "
              "hand-written epoll server with OpenSSL reading and writing "
              "the socket itself; TLS 1.3, the servers' default.  "
              "Handshakes: 16 connections, each doing one 64 B round trip "
              "and opening a new connection (`ursa-load --reconnect 1`): "
              "new handshakes per second and the server's CPU per "
              "handshake.", "",
              "| backend | size | round trips/s | server CPU us/rt | vs epoll "
              "| errors |", "|---|---|---|---|---|---|"]
        hss = [c for c in tls if c["kind"] == "tls-handshake"]
        for c in (c for c in tls if c["kind"] == "tls"):
            e = next((x for x in tls if x["backend"] == "epoll" and
                      x["size"] == c["size"]), None)
            iv = interval(c, e, "server_cpu_us_per_rt")
            r = fmt(iv[0], 2) + ("" if c is e else text(iv))
            L.append(f"| {c['backend']} | {c['size']} | {fmt(c['rt_per_s'])} "
                     f"[{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])}] | "
                     f"{fmt(c['server_cpu_us_per_rt'], 2)} "
                     f"[{fmt(c['server_cpu_us_per_rt_min'], 2)}-"
                     f"{fmt(c['server_cpu_us_per_rt_max'], 2)}] | "
                     f"{r} | {c['errors']} |")
        if hss:
            L += ["", "| backend | handshakes/s | server CPU us per "
                  "handshake | errors |", "|---|---|---|---|"]
            for c in hss:
                rng = (f" [{fmt(c['opened_per_s_min'])}-"
                       f"{fmt(c['opened_per_s_max'])}]"
                       if c.get("opened_per_s_min") is not None else "")
                L.append(f"| {c['backend']} | {fmt(c.get('opened_per_s'))}"
                         f"{rng} | "
                         f"{fmt(c.get('server_cpu_us_per_open'))} | "
                         f"{c['errors']} |")
        L.append("")
    if wake:
        L += ["## Wake-ups: posting work to a loop on another thread", "",
              "`ursa-wake`: the loop's thread on the server CPU, the sender "
              "on the load CPU.  Posts/s: "
              f"{wake[0]['posts']:,} posts made as fast as the sender can, "
              "until the last callback ran.  Latency: one post at a time "
              f"({wake[0]['samples']:,}), the sender waiting for the "
              "callback's answer; post to callback, read on the loop.  "
              "post-thread: `ursa_post()` from a plain thread (eventfd); "
              "call-thread: `ursa_post_call()` from a plain thread (the "
              "bounded ring, retried when full); "
              "post-loop: from another ursa loop's callback (MSG_RING on "
              "io_uring, the eventfd on epoll), both loops blocking between "
              "samples; eventfd: a hand-written mutex queue and an eventfd "
              "under epoll, written by the post that finds the queue empty; "
              "uv-async: a mutex queue and `uv_async_send()`.  Wake-ups: "
              "how many the rate's posts cost.", "",
              "| mode | backend | posts/s | wake-ups | p50 us | p99 us |",
              "|---|---|---|---|---|---|"]
        for w in wake:
            L.append(f"| {w['mode']} | {w['backend']} | "
                     f"{fmt(w['posts_per_s'] / 1e6, 2)}M "
                     f"[{fmt(w['posts_per_s_min'] / 1e6, 2)}-"
                     f"{fmt(w['posts_per_s_max'] / 1e6, 2)}] | "
                     f"{fmt(w['wakeups'], 0)} | "
                     f"{fmt(w['lat_p50_ns'] / 1e3, 2)} "
                     f"[{fmt(w['lat_p50_ns_min'] / 1e3, 2)}-"
                     f"{fmt(w['lat_p50_ns_max'] / 1e3, 2)}] | "
                     f"{fmt(w['lat_p99_ns'] / 1e3, 2)} |")
        L.append("")
    if ab:
        L += ["## A/B: io_uring features one at a time", "",
              "The uring server with one default feature switched off "
              "(`--uring-disable`, `--write-batch`, `--echo-copy`) or one "
              "opt-in feature switched on (rows starting with +), against "
              "its default set-up.  Each round runs every variant once, "
              "next to a run of its case's default (two variants around "
              "one default run), in an order that rotates each round "
              "(8 rounds of 0.5 s after 0.15 s of warm-up): a variant is "
              "compared with the default run made beside it, as the "
              "machine's own speed drifts within a round.  TCP, "
              "64 connections, 64 B (4k: 4 KiB; 64k: 16 connections, 64 "
              "KiB; bulk: 1 connection sending 64 KiB writes one way, a "
              "round trip being one write); pipelined is 16 in flight "
              "(pipelined 64k: 64 connections, 8 messages of 64 KiB in "
              "flight on each; greet: 16 connections of `ursa-load "
              "--greet`, a round trip being one connection; 4 conns: the "
              "64 B ping-pong at 4 connections).  "
              "The feature's effect is the ratio of the run with it to the "
              "run without it, for either kind of row: above 1 means the "
              "feature helps by that factor (more round trips/s, or less "
              "CPU per round trip).", "",
              "| case | variant | flags | round trips/s | feature's effect "
              "(rt/s) | server CPU us/rt | feature's effect (CPU) | "
              "enters/rt | ENOBUFS/rt | p50 us |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        base = {v["case"]: v for v in ab if v["label"] == "default"}
        ivs = []
        for v in ab:
            # Against the default runs made beside this variant's when the
            # run kept them; else against the default's row.
            b0 = v.get("base") or base.get(v["case"])
            plus = v["label"].startswith(("+", "default, again"))
            with_, without = (v, b0) if plus else (b0, v)
            e1 = e2 = (None,) * 4 + ("",)
            if b0 and v is not base.get(v["case"]):
                e1 = effect(with_, without, "rt_per_s", True)
                e2 = effect(with_, without, "server_cpu_us_per_rt", False)
                ivs.append(e2)
            L.append(f"| {v['case']} | {v['label']} | `{v['flags'] or '-'}` "
                     f"| {fmt(v['rt_per_s'])} [{fmt(v['rt_per_s_min'])}-"
                     f"{fmt(v['rt_per_s_max'])}] | {fmt(e1[0], 2)}"
                     f"{text(e1)} | {fmt(v['server_cpu_us_per_rt'], 2)} | "
                     f"{fmt(e2[0], 2)}{text(e2)} | "
                     f"{fmt(v['enters_per_rt'], 3)} | "
                     f"{fmt(v.get('enobufs_per_rt'), 3)} | "
                     f"{'-' if v['case'] == 'bulk' else fmt(v['p50_us'])} |")
        res = resolution(ivs)
        ns = sorted(e[3] for e in ivs if e[3])
        n = ns[len(ns) // 2] if ns else 0
        aa = next((v for v in ab if v["label"].startswith("default, again")),
                  None)
        b_aa = aa and (aa.get("base") or base.get(aa["case"]))
        aa_iv = effect(aa, b_aa, "server_cpu_us_per_rt", True) \
            if aa and b_aa else None
        k = depth(n)
        L += ["", f"Each effect's interval runs from the "
              + ("smallest to the largest" if k == 1 else
                 f"{k}nd smallest to the {k}nd largest" if k == 2 else
                 f"{k}th smallest to the {k}th largest")
              + f" of its per-round ratios ({n} rounds: it holds the "
              f"median per-round ratio with probability "
              f"{100 * coverage(n, k):.0f}%, whatever their distribution); "
              f"an interval "
              f"that spans 1 is no difference measured, whatever the "
              f"point.  Judge a feature by its CPU per round trip: the "
              f"server's own CPU over the measured window, which moves "
              f"less than round trips/s, since two servers in the same "
              f"state use the same CPU per round trip whatever the load "
              f"generator's pace.  "
              + (f"What this block resolves: the CPU intervals' median "
                 f"half-width is {100 * res:.0f}%, so an effect of about "
                 f"{100 * res:.0f}% or more keeps 1 out of its interval "
                 f"and is resolved; a smaller one reads as no difference "
                 f"measured.  "
                 if res is not None else "")
              + (f"The control row (the default set-up run as a variant of "
                 f"its own, so its true effect is 1) measured "
                 f"{fmt(aa_iv[0], 2)}{text(aa_iv)}." if aa_iv else "")]
        L += ["", "Not measured, because ursa leaves it out (docs/DESIGN.md "
              "says why): " + "; ".join(AB_MISSING) + ".", ""]
    L += ["UDP cases: each of ursa-load's \"connections\" is a socket of its "
          "own, connected to the server; a lost datagram counts as an "
          "error.", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L))


def render(results, out, previous=None, draw=None):
    """Writes report.md (and, given draw, the graphs through it) for a
    stored results.json as the run that made it would have."""
    rows = results["cases"]
    cases = [c for c in rows if c["kind"] != "bulk"]
    bulk = [c for c in rows if c["kind"] == "bulk" and c["backend"] != "iperf3"]
    ip = [c for c in rows if c["backend"] == "iperf3"]
    # Runs before the range was stored give the median for both ends.
    iperf = {k: ip[0].get(k, ip[0]["mb_per_s"])
             for k in ("mb_per_s", "mb_per_s_min", "mb_per_s_max")} \
        if ip else None
    os.makedirs(out, exist_ok=True)
    outside = results.get("outside", [])
    made = draw(out, results["env"], cases, bulk, iperf, outside,
                results.get("http", []), results.get("greet", [])) \
        if draw else []
    report(out, results["env"], cases, bulk, iperf, results.get("memory", []),
           made, previous, results.get("ab", []), results.get("profile", []),
           results.get("drain", []), results.get("threads", []),
           results.get("wake", []), results.get("tls", []), outside,
           results.get("veth", []), results.get("http", []),
           results.get("greet", []))
    return os.path.join(out, "report.md")
