"""analysis.py - the targets table and the analysis that bounds each
target not met, from the run's own counters and profile."""

from . import http_report, loopcost, udp
from .bounds import NOTES, profile_table
from .config import case_of
from .intervals import fmt, interval, judge
from .intervals import text as ivtext

def find(cases, backend, kind, proto, conns, size, inflight):
    return next((c for c in cases if c["backend"] == backend and
                 c["kind"] == kind and c["proto"] == proto and
                 c["conns"] == conns and c["size"] == size and
                 c["inflight"] == inflight), None)

class Table:
    """The targets table being written: its rows, the notes on what bounds
    each target not met, and what one group tells a later note."""

    def __init__(self):
        self.rows, self.notes = [], []
        self.cpu_missed, self.one_missed = False, False
        self.enters_missed, self.behind_notes = [], []

    def row(self, name, value, goal, ok):
        self.rows.append(f"| {name} | {value} | {goal} | " + {
            True: "yes", False: "no", None: "n/a",
            "unresolved": "not resolved (the interval straddles the goal)"}[
                ok] + " |")
        return ok

    def ratio_row(self, name, x, y, k, goal, test, unit="us", scale=1.0,
                  nd=2):
        """A target on x[k]/y[k], judged on its per-round interval."""
        iv = interval(x, y, k)
        return self.row(name, f"{fmt(x[k] * scale, nd)} vs "
                        f"{fmt(y[k] * scale, nd)}{unit} = {fmt(iv[0], 2)}x"
                        + ivtext(iv), goal, judge(iv, test))


class Run:
    """What one run measured, by block, with a finder for its cases."""

    def __init__(self, **blocks):
        self.__dict__.update(blocks)

    def pp(self, b, n):
        """The 64 B TCP ping-pong of backend b at n connections."""
        return find(self.cases, b, "pingpong", "tcp", n, 64, 1)


def le(g):
    return lambda r: r <= g


def ge(g):
    return lambda r: r >= g


CPU = "server_cpu_us_per_rt"


def t_server_cpu(t, r):
    for n in (64, 256):
        u, e, sl = r.pp("uring", n), r.pp("epoll", n), r.pp("select", n)
        if not (u and e and sl):
            continue
        ok1 = t.ratio_row(f"server CPU/rt, {n} conns, vs epoll", u, e, CPU,
                          "<= 0.4x", le(0.4), " us")
        ok2 = t.ratio_row(f"server CPU/rt, {n} conns, vs select", u, sl, CPU,
                          "<= 0.2x", le(0.2), " us")
        t.cpu_missed |= not (ok1 is True and ok2 is True)
    # The library's epoll backend against the hand-written epoll loop.
    for n in (64, 256):
        ue, e = r.pp("ursa-epoll", n), r.pp("epoll", n)
        if ue and e:
            t.ratio_row(f"ursa-epoll server CPU/rt, {n} conns, vs "
                        "hand-written epoll", ue, e, CPU, "<= 1.10x",
                        le(1.10), " us")


def t_enters(t, r):
    for n in (64, 256):
        u = r.pp("uring", n)
        if u and u.get("enters_per_rt") is not None:
            if not t.row(f"io_uring enters/rt, {n} conns",
                         fmt(u["enters_per_rt"], 3), "<= 0.1",
                         u["enters_per_rt"] <= 0.1):
                t.enters_missed.append((n, u))


def t_one_conn(t, r):
    u1, b1, e1 = r.pp("uring", 1), r.pp("blocking", 1), r.pp("epoll", 1)
    if u1 and b1 and e1 and u1["p50_us"] and b1["p50_us"] and e1["p50_us"]:
        t.one_missed |= t.ratio_row(
            "1 conn p50 vs blocking", u1, b1, "p50_us", "<= 1.05x",
            le(1.05), " us", nd=1) is not True
        t.one_missed |= t.ratio_row(
            "1 conn p50 vs epoll", u1, e1, "p50_us", "not behind (<= 1x)",
            le(1.0), " us", nd=1) is not True


def t_bulk_memory_drain(t, r):
    ub = next((c for c in r.bulk if c["backend"] == "uring"), None)
    if ub and r.iperf:
        t.ratio_row("bulk 64 KiB stream vs iperf3", ub, r.iperf, "mb_per_s",
                    ">= 0.90x", ge(0.9), " MB/s", nd=1)
    # The same library on epoll and a blocking read loop on the same stream.
    for b, k, what, goal, test in (
            ("ursa-epoll", "mb_per_s", "MB/s", ">= 1x", ge(1.0)),
            ("blocking", "mb_per_s", "MB/s", ">= 1x", ge(1.0)),
            ("blocking", CPU, "server CPU per 64 KiB", "<= 1x", le(1.0))):
        o = next((c for c in r.bulk if c["backend"] == b), None)
        if ub and o:
            t.ratio_row(f"bulk 64 KiB stream: uring {what} vs {b}", ub, o, k,
                        goal, test, " MB/s" if k == "mb_per_s" else " us",
                        nd=1 if k == "mb_per_s" else 2)
    um = next((m for m in r.mem if m["backend"] == "uring"), None)
    if um and um.get("bytes_per_conn") is not None:
        t.row(f"RSS per idle connection ({um['held']} held)",
              f"{fmt(um['bytes_per_conn'], 0)} B", "<= 2048 B",
              um["bytes_per_conn"] <= 2048)
    for b in ("uring", "epoll"):
        ds = sorted((d for d in r.drain if d["backend"] == b),
                    key=lambda d: d["writes"])
        if len(ds) >= 2:
            t.ratio_row(f"write-queue drain ({b}): time per write, "
                        f"{ds[-1]['writes']:,} vs {ds[0]['writes']:,} queued",
                        ds[-1], ds[0], "ns_per_write", "<= 1.5x (flat)",
                        le(1.5), " ns", nd=0)
    ml = next((m for m in r.mem if m["backend"] == "libuv"), None)
    for b in ("uring", "ursa-epoll"):
        m = next((m for m in r.mem if m["backend"] == b), None)
        if not (m and ml) or m.get("bytes_per_conn") is None or \
                ml.get("bytes_per_conn") is None:
            continue
        t.row(f"{b} RSS per idle connection vs libuv",
              f"{fmt(m['bytes_per_conn'], 0)} vs "
              f"{fmt(ml['bytes_per_conn'], 0)} B",
              "<= libuv's", m["bytes_per_conn"] <= ml["bytes_per_conn"])


def t_threads_wake(t, r):
    # Two loops against one on the same CPU (the threads block).
    for b, disp, goal in (("uring", "reuseport", 1.10),
                          ("uring", "handoff", 1.20)):
        one = next((x for x in r.threads if x["backend"] == b and
                    x["threads"] == 1), None)
        two = next((x for x in r.threads if x["backend"] == b and
                    x["threads"] == 2 and x["dispatch"] == disp), None)
        if one and two:
            t.ratio_row(f"{b} 2 threads ({disp}) server CPU/rt vs 1 thread, "
                        "256 conns", two, one, CPU, f"<= {goal:.2f}x",
                        le(goal), " us")
    uv = next((w for w in r.wake if w["mode"] == "uv-async"), None)
    pt = next((w for w in r.wake if w["mode"] == "post-thread" and
               w["backend"] == "uring"), None)
    if uv and pt:
        t.ratio_row("ursa_post p50 post-to-callback (plain thread to uring "
                    "loop) vs uv_async_send", pt, uv, "lat_p50_ns", "<= 1x",
                    le(1.0), " us", scale=1e-3)
    sm = next((w for w in r.wake if w["mode"] == "post-thread" and
               w["backend"] == "uring+sync_msg_ring"), None)
    if sm and pt:
        # The opt-in ring message against the eventfd: kept off by default
        # unless this shows a gain.
        for k, what, nd in (("lat_p50_ns", "p50 post-to-callback", 1e-3),
                            ("posts_per_s", "posts/s", 1e-6)):
            iv = interval(sm, pt, k)
            t.row(f"ursa_post from a plain thread, {what}: ring message "
                  f"without a ring (sync_msg_ring, opt-in) vs eventfd",
                  f"{fmt(sm[k] * nd, 2)} vs {fmt(pt[k] * nd, 2)}"
                  f"{' us' if nd == 1e-3 else 'M/s'} = {fmt(iv[0], 2)}x"
                  + ivtext(iv), "(A/B, reported)", None)
    ct = next((w for w in r.wake if w["mode"] == "call-thread" and
               w["backend"] == "uring"), None)
    if uv and ct:
        t.ratio_row("ursa_post_call (the bounded ring) posts/s vs "
                    "uv_async_send", ct, uv, "posts_per_s", ">= 2x", ge(2.0),
                    "M/s", scale=1e-6)


def t_tls(t, r):
    tu = next((c for c in r.tls if c["backend"] == "uring" and
               c["size"] == 64 and c["kind"] == "tls"), None)
    te = next((c for c in r.tls if c["backend"] == "epoll" and
               c["size"] == 64 and c["kind"] == "tls"), None)
    if tu and te:
        t.ratio_row("TLS server CPU/rt, 64 conns, 64 B, uring vs "
                    "epoll+OpenSSL", tu, te, CPU, "<= 0.9x", le(0.9), " us")
    hu = next((c for c in r.tls if c["backend"] == "uring" and
               c["kind"] == "tls-handshake"), None)
    he = next((c for c in r.tls if c["backend"] == "epoll" and
               c["kind"] == "tls-handshake"), None)
    if hu and he and hu.get("opened_per_s") and he.get("opened_per_s"):
        # Not below: at or above, or no difference the rounds can show.
        iv = interval(hu, he, "opened_per_s")
        ok = judge(iv, ge(1.0))
        t.row("TLS handshakes/s, uring vs epoll+OpenSSL (client-bound: see "
              "the CPU per handshake)",
              f"{fmt(hu['opened_per_s'])} vs {fmt(he['opened_per_s'])} = "
              f"{fmt(iv[0], 2)}x{ivtext(iv)}; server CPU per handshake "
              f"{fmt(hu.get('server_cpu_us_per_open'))} vs "
              f"{fmt(he.get('server_cpu_us_per_open'))} us",
              "not below (>= 1x, or an interval spanning 1)",
              True if ok == "unresolved" else ok)


def t_http_greet(t, r):
    # HTTP: every profile ursa-load ran, and wrk's cross-check.
    http_report.targets(t, r.http)
    gu = next((g for g in r.greet if g["backend"] == "uring"), None)
    ge_ = next((g for g in r.greet if g["backend"] == "epoll"), None)
    if gu and ge_:
        t.ratio_row("greet: uring connections/s vs hand-written epoll", gu,
                    ge_, "rt_per_s", ">= 1.3x", ge(1.3), "", nd=0)


def t_files(t, r):
    """4 KiB random reads: ursa (uring) against the better fio engine at
    each point, and libuv's pool at depth 32 on the root file system."""
    def fx(reader, where, q):
        return next((f for f in r.files if f["reader"] == reader and
                     f["where"] == where and f["bs"] == 4096 and
                     f["depth"] == q), None)
    for where in ("root", "tmpfs"):
        for q in (1, 32):
            u = fx("uring", where, q)
            fio = [f for f in (fx("fio io_uring", where, q),
                               fx("fio psync", where, q)) if f]
            if not (u and fio):
                continue
            best = max(fio, key=lambda f: f["iops"])
            name = f"file reads 4 KiB, {where} ({u['fs']}), depth {q}"
            t.ratio_row(f"{name}: IOPS vs {best['reader']}", u, best, "iops",
                        ">= 0.9x", ge(0.9), "", nd=0)
            t.ratio_row(f"{name}: CPU per read vs {best['reader']}", u, best,
                        "cpu_us_per_read", "<= 1.1x", le(1.1), " us")
    u, lv = fx("uring", "root", 32), fx("libuv", "root", 32)
    if u and lv:
        t.ratio_row("file reads 4 KiB, root, depth 32: IOPS vs libuv's "
                    "thread pool", u, lv, "iops", ">= 1.5x", ge(1.5), "",
                    nd=0)


def t_static(t, r):
    """Static files against nginx (sendfile on), and the stall figure."""
    def sx(name, size):
        return next((h for h in r.static if h["server"] == name and
                     h["size"] == size), None)
    for size, key, goal, test in (
            (4096, CPU, "<= 0.85x", le(0.85)),
            (1 << 20, "server_cpu_us_per_mb", "<= 1x", le(1.0)),
            (16 << 20, "server_cpu_us_per_mb", "<= 1x", le(1.0))):
        u, n = sx("ursa-http uring", size), sx("nginx", size)
        if u and n:
            what = "request" if key == CPU else "MB"
            t.ratio_row(f"static {size // 1024} KiB: ursa-http (uring) "
                        f"server CPU per {what} vs nginx (sendfile)", u, n,
                        key, goal, test, " us")
    su = next((x for x in r.stall if x["server"] == "ursa-http uring"),
              None)
    sn = next((x for x in r.stall if x["server"] == "nginx"), None)
    if su:
        idle = {"p99_us": su["idle_p99_us"],
                "p99_us_rounds": su.get("idle_p99_us_rounds")}
        t.ratio_row("stall: /plaintext p99 while files are pulled and held, "
                    "vs idle (ursa-http uring)", su, idle, "p99_us",
                    "<= 2x", le(2.0), " us", nd=0)
        t.row("stall: RSS growth with 20 unread 60 MiB responses (ursa-http "
              "uring)", f"{fmt(su['rss_growth_kib'] / 1024, 1)} MiB",
              "<= 16 MiB", su["rss_growth_kib"] <= 16 * 1024)
    if su and sn:
        t.ratio_row("stall: loaded /plaintext p99, ursa-http (uring) vs "
                    "nginx", su, sn, "p99_us", "<= 1x", le(1.0), " us", nd=0)


def t_process(t, r):
    """Child processes and pipes against libuv (uv_spawn forks)."""
    def px(what, heap, b):
        return next((x for x in r.process if x["what"] == what and
                     x["heap_mib"] == heap and x["backend"] == b), None)
    u, lv = px("spawn", 800, "uring"), px("spawn", 800, "libuv")
    if u and lv:
        t.ratio_row("spawn with an 800 MiB parent: ms per spawn vs libuv",
                    u, lv, "ms_per_spawn", "<= 0.2x", le(0.2), " ms", nd=3)
    u, lv = px("rate", 0, "uring"), px("rate", 0, "libuv")
    if u and lv:
        t.ratio_row("spawns/s, small parent, 4 at once, vs libuv", u, lv,
                    "spawns_per_s", ">= 1.2x", ge(1.2), "", nd=0)
    u, lv = px("pipe", 0, "uring"), px("pipe", 0, "libuv")
    if u and lv:
        t.ratio_row("pipe MB/s vs uv_pipe", u, lv, "mb_per_s", ">= 1x",
                    ge(1.0), "", nd=0)
        t.ratio_row("pipe CPU per MB vs uv_pipe", u, lv, "cpu_us_per_mb",
                    "<= 1x", le(1.0), " us", nd=1)


def t_udp(t, r):
    """UDP at QUIC scale: GSO and GRO against the hand-written server."""
    udp.targets(t, r.udp, le)


def behind_note(c, e):
    """What a uring case behind epoll's shows about why."""
    return (
        f"{case_of(c)}: uring "
        f"{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])} rt/s, "
        f"epoll {fmt(e['rt_per_s_min'])}-{fmt(e['rt_per_s_max'])} "
        f"over {c['repeats']} rounds"
        + (f"; uring read each message in "
           f"{fmt(c['reads_per_rt'], 1)} receives against epoll's "
           f"{fmt(e['reads_per_rt'], 1)}, because a read fills one "
           "receive buffer (16 KiB by default) where epoll reads 64 "
           "KiB at once: each extra read is a receive completion "
           "and an echo write more (the A/B rows with 64 KiB "
           "receive buffers measure that)"
           if (c.get("reads_per_rt") or 0) >
           1.5 * (e.get("reads_per_rt") or 1e9) else "")
        + (f"; uring's receive ring ran dry "
           f"{fmt(c['enobufs_per_rt'], 2)} times per round trip "
           "(ENOBUFS: each ends a multishot recv, which is armed "
           "again; a larger --buf-count or --buf-size removes it)"
           if (c.get("enobufs_per_rt") or 0) >= 0.01 else ""))


def t_behind(t, r):
    behind = []
    for c in r.cases:
        if c["backend"] != "uring" or (c["kind"] == "pingpong" and
                                       c["proto"] == "tcp" and
                                       c["size"] == 64):
            continue
        e = find(r.cases, "epoll", c["kind"], c["proto"], c["conns"],
                 c["size"], c["inflight"])
        if not e:
            continue
        i1 = interval(c, e, "rt_per_s")
        i2 = interval(c, e, CPU)
        # Behind only where the interval lies wholly on the worse side of
        # 1: a difference this run measured, not its noise.
        if (i1[2] is not None and i1[2] < 1) or \
                (i2[1] is not None and i2[1] > 1):
            behind.append(f"{case_of(c)} (rt/s {fmt(i1[0], 2)}x"
                          f"{ivtext(i1)}, CPU {fmt(i2[0], 2)}x{ivtext(i2)})")
            t.behind_notes.append(behind_note(c, e))
    t.row("other cases in this run vs epoll (no interval wholly behind)",
          "; ".join(behind) if behind else "none behind", "none behind",
          not behind)


def t_loop_cost(t, r):
    t.notes += loopcost.rows(r.cases, r.prof, r.outside, find, t.row)
    loopcost.batching_rows(r.ab, t.row)


# The target rows in the order the report shows them, then the notes on
# what bounds each target not met (the event loop's cost rows and notes
# come with the rows).
TARGETS = [t_server_cpu, t_enters, t_one_conn, t_bulk_memory_drain,
           t_threads_wake, t_tls, t_http_greet, t_files, t_static,
           t_process, t_udp, t_behind, t_loop_cost]


def targets(cases, bulk, iperf, mem, prof, drain=(), threads=(), wake=(),
            tls=(), http=(), greet=(), outside=(), files=(), static=(),
            stall=(), process=(), udp=(), ab=()):
    """The performance targets as this run measured them, each met or not,
    and for each one not met what bounds it (from this run's counters and
    profile).  Returns report lines."""
    r = Run(cases=cases, bulk=bulk, iperf=iperf, mem=mem, prof=prof,
            drain=drain, threads=threads, wake=wake, tls=tls, http=http,
            greet=greet, outside=outside, files=files, static=static,
            stall=stall, process=process, udp=udp, ab=ab)
    t = Table()
    for f in TARGETS + NOTES:
        f(t, r)
    L = ["## Targets", "",
         "The performance targets, as this run measured them; for each one "
         "not met, what this run's counters and profile show bounds it.", "",
         "| target | measured | goal | met |", "|---|---|---|---|"] + t.rows
    L += [""] + [n + "\n" for n in t.notes]
    if prof:
        L += profile_table(prof)
    return L
