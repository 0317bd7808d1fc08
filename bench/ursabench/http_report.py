"""http_report.py - the HTTP block's report: its rows of the targets
table, its section and its graphs.  Rows from runs before the profiles
(wrk alone, at one or more connection counts) carry neither a profile nor
a client: they read as wrk on the baseline."""
from .http_profiles import MIN_SECONDS, PROFILES, WARMUP, WRK_POINT
from .intervals import fmt, interval, text
from .outside import limit

CPU = "server_cpu_us_per_rt"
URING = "ursa-http uring"


def client(h):
    return h.get("client", "wrk")


def profile(h):
    return h.get("profile", "baseline")


def find(http, server, prof="baseline", conns=64, who="ursa-load"):
    return next((h for h in http if h["server"] == server and
                 profile(h) == prof and h["conns"] == conns and
                 client(h) == who), None)


def groups(http):
    """(profile, conns, client) of the rows, in PROFILES' order, wrk's
    after ursa-load's."""
    order = [p[:2] for p in PROFILES]
    keys = {(profile(h), h["conns"], client(h)) for h in http}
    return sorted(keys, key=lambda k: (
        order.index(k[:2]) if k[:2] in order else len(order), k[1],
        k[2] != "ursa-load"))


def targets(t, http):
    """Server CPU per request of ursa-http (uring) against nginx (<=
    0.75x) and h2o (<= 1x) at every quick profile ursa-load ran (the
    others reported); ursa-load's own CPU per request against wrk's (<=
    0.7x); wrk's requests/s rows."""
    for prof, conns, who in groups(http):
        hu = find(http, URING, prof, conns, who)
        if who != "ursa-load" or not hu:
            continue
        # The targets are on the quick suite's profiles; --full's others
        # are reported beside them.
        quick = any(p[:2] == (prof, conns) and p[5] for p in PROFILES)
        for other, goal, g in (("nginx", "<= 0.75x", 0.75),
                               ("h2o", "<= 1x", 1.0)):
            ho = find(http, other, prof, conns, who)
            name = (f"HTTP {prof}, {conns} conns (ursa-load): ursa-http "
                    f"(uring) server CPU per request vs {other}")
            if ho and quick:
                t.ratio_row(name, hu, ho, CPU, goal, lambda r, g=g: r <= g,
                            " us")
            elif ho:
                iv = interval(hu, ho, CPU)
                t.row(name, f"{fmt(hu[CPU], 2)} vs {fmt(ho[CPU], 2)} us = "
                      f"{fmt(iv[0], 2)}x{text(iv)}", "(reported: --full)",
                      None)
    lu, wu = find(http, URING), find(http, URING, who="wrk")
    if lu and wu:
        t.ratio_row("ursa-load --http client CPU per request vs wrk's, "
                    "64 conns, both against ursa-http (uring)", lu, wu,
                    "client_cpu_us_per_rt", "<= 0.7x", lambda r: r <= 0.7,
                    " us")
    hu, hn, hh = (find(http, s, who="wrk") for s in (URING, "nginx", "h2o"))
    if hu and hn:
        t.ratio_row("ursa-http (uring) requests/s vs nginx, 64 conns (wrk)",
                    hu, hn, "rt_per_s", ">= 1.3x", lambda r: r >= 1.3, "",
                    nd=0)
    if hu and hh:
        t.ratio_row("ursa-http (uring) requests/s vs h2o, 64 conns (wrk)",
                    hu, hh, "rt_per_s", "not behind (>= 1x)",
                    lambda r: r >= 1.0, "", nd=0)


def section(http):
    if not http:
        return []
    ran = {client(h) for h in http}
    L = ["## HTTP: ursa-load and wrk against ursa-http, nginx and h2o", "",
         "Every server on the server CPU: ursa-http on both of ursa's "
         "backends; nginx 1.22 with one worker, `access_log off`, "
         "`keepalive_requests 1000000` and `return`; h2o 2.2 with one "
         "thread, its file handler (and a mruby handler for uploads).  Each "
         "answers GET /plaintext with the same 13 bytes, GET /json with the "
         "same 27; a POST to /upload gets a short receipt once the body is "
         "read (ursa-http hashes it, nginx discards it, h2o's mruby reads "
         "it).  Every server starts afresh for each run, its servers "
         "interleaved round by round."]
    if "ursa-load" in ran:
        L += ["", f"ursa-load --http (on ursa, the load CPU) runs "
              f"{MIN_SECONDS:.0f} s after a {WARMUP} s warm-up and checks "
              "every response's status, framing and body length; requests/s, "
              "p50/p99 and both CPUs are over its measured window (the "
              "server's from /proc: nginx's worker).  Profiles: baseline "
              "(keep-alive, one request at a time), pipelined (16 in "
              "flight), short-lived (a new connection every 10 requests, "
              "the 10th asking for Connection: close), json (GET /json), "
              "upload (POSTs of 4 KiB and 256 KiB), fragmented (each "
              "request written in 16-byte pieces, each once the last was "
              "sent)."]
    if "wrk" in ran:
        L += ["", f"wrk 4.1 (one thread) runs beside ursa-load on the "
              f"baseline at {WRK_POINT[1]} connections, in the same rounds, "
              "for as long (it has no warm-up): the outside cross-check.  "
              "Its client CPU is the CPU it used over its run, its server "
              "CPU the server's processes' over the same run."]
    L += ["", "RSS is the server's peak (VmHWM, over its processes).  "
          "'Limited by' reads each side's CPU share: 0.9 or more means "
          "that side was the bottleneck.", ""]
    for prof, conns, who in groups(http):
        rows = [h for h in http if profile(h) == prof and
                h["conns"] == conns and client(h) == who]
        ng = next((h for h in rows if h["server"] == "nginx"), None)
        L += [f"### {prof}, {conns} connections ({who})", "",
              "| server | requests/s | server CPU us per request | vs nginx "
              "[interval] | p50 us | p99 us | RSS MiB | client CPU us per "
              "request | limited by (CPU shares) | errors |",
              "|---" * 10 + "|"]
        for h in rows:
            iv = interval(h, ng, CPU)
            rss = h.get("rss_kib")
            lim = limit(h.get("client_cpu_share"), h.get("server_cpu_share"))
            L.append(
                f"| {h['server']} | {fmt(h['rt_per_s'])} "
                f"[{fmt(h.get('rt_per_s_min'))}-{fmt(h.get('rt_per_s_max'))}]"
                f" | {fmt(h[CPU], 2)} | "
                f"{'-' if h is ng or not ng else fmt(iv[0], 2) + text(iv)} | "
                f"{fmt(h.get('p50_us'))} | {fmt(h.get('p99_us'))} | "
                f"{fmt(rss / 1024, 1) if rss else 'n/a'} | "
                f"{fmt(h.get('client_cpu_us_per_rt'), 2)} | "
                f"{lim} (client {fmt(h.get('client_cpu_share'), 2)}, server "
                f"{fmt(h.get('server_cpu_share'), 2)}) | {h['errors']} |")
        L.append("")
    pairs = [(s, find(http, s), find(http, s, who="wrk"))
             for s in (URING, "ursa-http ursa-epoll", "nginx", "h2o")]
    pairs = [p for p in pairs if p[1] and p[2]]
    if pairs:
        L += [f"### The two clients on the baseline, {WRK_POINT[1]} "
              "connections", "",
              "Where the server is the limit (its CPU share 0.95 or more "
              "under both), the clients must agree on its rate and its CPU "
              "per request; where wrk is (its share 0.95 or more), "
              "ursa-load reaches further.", "",
              "| server | requests/s, ursa-load / wrk | server CPU per "
              "request, ursa-load / wrk | server's CPU share (ursa-load, "
              "wrk) | wrk's CPU share |", "|---" * 5 + "|"]
        for name, lu, wu in pairs:
            r, c = interval(lu, wu, "rt_per_s"), interval(lu, wu, CPU)
            L.append(f"| {name} | {fmt(r[0], 2)}{text(r)} | "
                     f"{fmt(c[0], 2)}{text(c)} | "
                     f"{fmt(lu.get('server_cpu_share'), 2)}, "
                     f"{fmt(wu.get('server_cpu_share'), 2)} | "
                     f"{fmt(wu.get('client_cpu_share'), 2)} |")
        L.append("")
    return L


def graphs(g, http, colours):
    """Requests/s and server CPU per request by server, a pair of graphs
    per profile and client."""
    for prof, conns, who in groups(http):
        rows = [h for h in http if profile(h) == prof and
                h["conns"] == conns and client(h) == who]
        tag = f"{prof}_{conns}c" + ("_wrk" if who == "wrk" else "")
        what = f"HTTP {prof}, {who}, {conns} connections"
        g.bars(f"http_{tag}", f"{what}: requests per second",
               "requests / s",
               [(h["server"], h["rt_per_s"], h.get("rt_per_s_min", 0),
                 h.get("rt_per_s_max", 0), colours.get(h["server"],
                                                       "#7f7f7f"))
                for h in rows])
        g.bars(f"http_cpu_{tag}", f"{what}: server CPU per request",
               "server CPU us / request",
               [(h["server"], h[CPU], h.get(CPU + "_min", 0),
                 h.get(CPU + "_max", 0), colours.get(h["server"], "#7f7f7f"))
                for h in rows])
