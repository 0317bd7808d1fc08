"""tables.py - the report's sections on the blocks beside the case matrix:
bulk, memory, the write-queue drain, threads, TLS, wake-ups and the A/B
block; each a function of the results it shows, returning lines."""

from .config import AB_MISSING
from .intervals import coverage, depth, effect, fmt, interval, resolution, text


def bulk_section(bulk, iperf):
    """The bulk stream against iperf3."""
    L = []
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
    return L

def memory_section(mem):
    """Memory per idle connection."""
    L = []
    if mem:
        L += [f"## Memory: {mem[0]['conns']} idle connections", "",
              "| backend | held | RSS before | RSS with them | bytes per "
              "connection | note |", "|---|---|---|---|---|---|"]
        for m in mem:
            L.append(f"| {m['backend']} | {m['held']} | {m['rss_base_kb']} KiB "
                     f"| {m['rss_peak_kb']} KiB | {fmt(m['bytes_per_conn'], 0)} "
                     f"| {m['note']} |")
        L.append("")
    return L

def drain_section(drain):
    """The write-queue drain."""
    L = []
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
    return L

def threads_section(threads, env=None):
    """One loop against two."""
    L = []
    cpus = str((env or {}).get("server_cpu", 0))
    if threads and ("," in cpus or "-" in cpus):
        why = (f"The server process may run on CPUs {cpus} "
               "(--server-cpus), so a second loop can have a core of its "
               "own: the rows show what a second core buys, as far as the "
               "client on the load CPUs can drive it.")
    else:
        why = ("The server process is pinned to one CPU and ursa-load to "
               "another, so two server threads share one CPU: the rows "
               "show what running a second loop costs (its wake-ups, the "
               "hand-off's posts, the kernel spreading connections), not "
               "what a second core buys (--server-cpus with two CPUs "
               "shows that).")
    if threads:
        L += ["## Threads: one loop against two", "",
              "TCP ping-pong, 256 connections, 64 B.  " + why +
              "  CPU is the process's, all threads.",
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
    return L

def tls_section(tls):
    """TLS ping-pong and handshakes."""
    L = []
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
    return L

def wake_section(wake):
    """Wake-ups: posts to a loop against an eventfd and libuv."""
    L = []
    if wake:
        L += ["## Wake-ups: posting work to a loop on another thread", "",
              "`ursa-wake`: the loop's thread on the server CPU, the sender "
              "on the load CPU.  Posts/s: "
              f"{wake[0]['posts']:,} posts made as fast as the sender can, "
              "until the last callback ran.  Latency: one post at a time "
              f"({wake[0]['samples']:,}), the sender waiting for the "
              "callback's answer; post to callback, read on the loop.  "
              "post-thread: `ursa_post()` from a plain thread (eventfd; "
              "on `uring+sync_msg_ring`, a ring message sent without a "
              "ring, 6.13, opt-in); "
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
    return L

def ab_section(ab):
    """The A/B block: one io_uring feature at a time against the default."""
    L = []
    if ab:
        L += ["## A/B: io_uring features one at a time", "",
              "The uring server with one default feature switched off "
              "(`--uring-disable`, `--write-batch`, `--echo-copy`, "
              "`--batch-waits never`) or one "
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
              "--greet`, a round trip being one connection; 1 conn, 4 "
              "conns and 256 conns: the 64 B ping-pong at that many "
              "connections).  "
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
    return L
