"""udp.py - the UDP block: 1200-byte datagrams at QUIC scale.

ursa-load --proto udp --bulk drives 16 peers with 32 datagrams in flight
each (every datagram echoed; a window not back in 100 ms counts as lost),
sending each window with one sendmmsg (the plain client) or as GSO sends
(the bursting client, as QUIC stacks send).  The servers: uring plain,
uring with --gro (each datagram echoed alone), uring with --gro --gso (a
coalesced receive echoed as one GSO send), ursa-epoll the same two ways,
and mmsg, the hand-written recvmmsg+GRO / sendmmsg+GSO server.  Server on
the server CPU, load on the load CPU (either may be on another host,
where a NIC's GRO coalesces what loopback does not), servers interleaved
round by round."""
import re

from .hosts import sides
from .intervals import fmt, interval, text
from .runner import Failure, Server, interleaved, run_load, summaries

PEERS, WINDOW, SIZE = 16, 32, 1200
# Every wait a batch, the first completion held up to 50 us.
BATCHED = ("--batch-waits", "always", "--batch-wait", "50")
SERVERS = {"uring": ("uring", ()), "uring-gro": ("uring", ("--gro",)),
           "uring-gro-gso": ("uring", ("--gro", "--gso")),
           "ursa-epoll": ("ursa-epoll", ()),
           "ursa-epoll-gro-gso": ("ursa-epoll", ("--gro", "--gso")),
           "mmsg": ("mmsg", ()),
           # The plain client's datagrams arrive one by one (no GRO on
           # loopback): --gso alone merges a round's echoes to a peer into
           # one GSO send, and with every wait a batch (first completion
           # held up to 50 us; one socket is too few handles for the
           # adaptive policy) a round holds more of them.
           "uring-gso": ("uring", ("--gso",)),
           "uring-gso-batched": ("uring", ("--gso",) + BATCHED),
           # The bursting client against GRO+GSO with every wait a batch:
           # what the adaptive policy (never batching one socket) leaves.
           "uring-gro-gso-batched": ("uring", ("--gro", "--gso") +
                                     BATCHED)}
PLAIN_ONLY = ["uring-gso", "uring-gso-batched"]
GSO_ONLY = ["uring-gro-gso-batched"]  # --full only
# The quick suite: the servers its target rows compare (analysis.t_udp),
# and ursa-epoll beside uring with the plain client; the rest in --full.
QUICK = {"plain": ["uring", "ursa-epoll", "mmsg", "uring-gso-batched"],
         "gso": ["uring", "uring-gro-gso", "ursa-epoll-gro-gso", "mmsg"]}


def points(full):
    """(client, servers) pairs: the plain client, then the bursting one."""
    if not full:
        return [(c, QUICK[c]) for c in ("plain", "gso")]
    servers = [s for s in SERVERS if s not in PLAIN_ONLY + GSO_ONLY]
    return [("plain", servers + PLAIN_ONLY), ("gso", servers + GSO_ONLY)]


def udp_run(a, tmp, client, name):
    backend, extra = SERVERS[name]
    splace, lplace, addr = sides(a)
    srv = Server(a.bindir, backend, "udp", "echo", a.scpus, tmp, extra,
                 None, splace, addr)
    secs = 5 if a.full else 2
    args = ["--proto", "udp", "--bulk", "--connections", str(PEERS),
            "--inflight", str(WINDOW), "--size", str(SIZE), "--duration",
            str(secs), "--warmup", "0.5"] + (["--gso"] if client == "gso"
                                             else [])
    try:
        # Across hosts the server's CPU is read on its host over the whole
        # run and scaled to the measured window by its datagrams.
        c0 = splace.cpu_s(srv.pid) if addr else None
        r, res = run_load(a.bindir, srv.addr, args, a.lcpus,
                          None if addr else srv.pid, tmp, timeout=60,
                          place=lplace)
        if addr and res.get("datagrams_total"):
            res["server_cpu_s"] = ((splace.cpu_s(srv.pid) - c0) *
                                   res["datagrams"] / res["datagrams_total"])
    finally:
        stats = srv.stop()
    if r.returncode or not res.get("datagrams"):
        raise Failure(f"{name}: ursa-load exit {r.returncode}: "
                      f"{r.stderr.strip()[-200:]}")
    n = res["datagrams"]
    sent = n + res["lost"]
    return {"dgrams_per_s": res["dgrams_per_s"], "mb_per_s": res["mb_per_s"],
            "server_cpu_us_per_dgram": max(res["server_cpu_s"], 0) * 1e6 / n,
            "client_cpu_us_per_dgram": res["client_cpu_s"] * 1e6 / n,
            # The server's system calls (io_uring_enter on uring) per
            # datagram, over the whole run, warm-up included.
            "server_calls_per_dgram": stats.get("syscalls", 0) / max(
                stats.get("reads", 0), 1),
            "loss": res["lost"] / sent if sent else 0.0,
            "lost": res["lost"], "errors": res["mismatched"]}


def udp_block(a, tmp, todo, failures, progress):
    rows = []
    for client, servers in todo:
        names = [s for s in servers if not a.filter or re.search(
            a.filter, f"udp-{client}-{s}")] or servers
        runs = interleaved(names, a.repeats,
                           lambda s: udp_run(a, tmp, client, s),
                           lambda s: f"udp {client} client, {s}", failures)
        rows += summaries(
            names, runs,
            lambda s: {"id": f"udp-{client}-{s}", "client": client,
                       "server": s},
            failures, progress,
            lambda s: (f"{fmt(s['dgrams_per_s'])} datagrams/s, "
                       f"{fmt(s['server_cpu_us_per_dgram'], 3)} us server "
                       f"CPU each, loss {fmt(100 * s['loss'], 2)}%"))
    return rows


def udp_section(rows):
    if not rows:
        return []
    L = ["## UDP at QUIC scale (ursa-load --proto udp --bulk)", "",
         f"{PEERS} peers x {WINDOW} datagrams of {SIZE} bytes in flight, "
         "each echoed.  The plain client sends each window with one "
         "sendmmsg; the bursting client with GSO sends; both receive with "
         "GRO.  --gro: coalesced receives, each datagram echoed alone; "
         "--gso: a coalesced receive echoed as one GSO send (uring-gso, "
         "without --gro: a round's echoes to one peer as one GSO send; "
         "-batched: and every wait a batch, 50 us; both with the plain "
         "client only; uring-gro-gso-batched: GRO+GSO with every wait a "
         "batch, with the bursting client).  The quick suite runs the "
         "servers its targets compare; --full runs every server with "
         "either client.  mmsg is the "
         "hand-written recvmmsg+GRO / sendmmsg+GSO server.  Server CPU per "
         "datagram is the server process's over the measured window; "
         "ratios are to mmsg in the same round.", "",
         "| client | server | datagrams/s | MB/s | server CPU us/dgram | "
         "vs mmsg | calls/dgram | loss | errors |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next((x for x in rows if x["client"] == r["client"] and
                    x["server"] == "mmsg"), None)
        mine = r is ref or not ref
        iv = (None,) * 5 if mine else interval(r, ref,
                                               "server_cpu_us_per_dgram")
        L.append(f"| {r['client']} | {r['server']} | "
                 f"{fmt(r['dgrams_per_s'])} | {fmt(r['mb_per_s'])} | "
                 f"{fmt(r['server_cpu_us_per_dgram'], 3)} | "
                 f"{fmt(iv[0], 2)}{'' if mine else text(iv)} | "
                 f"{fmt(r['server_calls_per_dgram'], 3)} | "
                 f"{fmt(100 * r['loss'], 2)}% | {r['errors']} |")
    return L + [""]


def targets(t, rows, le):
    """The block's target rows (analysis.t_udp)."""
    def px(client, server):
        return next((x for x in rows if x["client"] == client and
                     x["server"] == server), None)
    k = "server_cpu_us_per_dgram"
    g, u, m = px("gso", "uring-gro-gso"), px("gso", "uring"), px("gso", "mmsg")
    if g and u:
        t.ratio_row("UDP, bursting client: uring GSO+GRO server CPU per "
                    "datagram vs uring without", g, u, k, "<= 0.45x",
                    le(0.45), " us", nd=3)
    if g and m:
        t.ratio_row("UDP, bursting client: uring GSO+GRO vs the mmsg server",
                    g, m, k, "<= 1.05x", le(1.05), " us", nd=3)
    e = px("gso", "ursa-epoll-gro-gso")
    if e and m:
        t.ratio_row("UDP, bursting client: ursa-epoll GSO+GRO vs the mmsg "
                    "server", e, m, k, "<= 1.2x", le(1.2), " us", nd=3)
    p, pm = px("plain", "uring"), px("plain", "mmsg")
    if p and pm:
        t.ratio_row("UDP, plain client: uring vs the mmsg server", p, pm, k,
                    "<= 1.05x", le(1.05), " us", nd=3)
    pb = px("plain", "uring-gso-batched")
    if pb and pm:
        t.ratio_row("UDP, plain client: uring with a round's echoes merged "
                    "into GSO sends and batched waits vs the mmsg server", pb,
                    pm, k, "<= 0.85x", le(0.85), " us", nd=3)
