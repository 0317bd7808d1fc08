"""loopcost.py - what the event loop itself costs per round trip: the
server's CPU per round trip less the share of it that the same run's
profile puts in the TCP stack and its copies, work every server does
whatever its loop.  And the outside client's CPU targets."""

from .intervals import fmt, interval, judge
from .intervals import text as ivtext

STACK = ("network stack", "copies")
KEY = "loop_us_per_rt"
CPU = "server_cpu_us_per_rt"


def profile_at(prof, backend, conns):
    return next((p for p in prof if p["backend"] == backend and
                 p.get("conns", 64) == conns and "shares" in p), None)


def stack_us(prof, cpu):
    """The us of cpu (per round trip) the profile puts in the stack."""
    return sum(prof["shares"][k] for k in STACK) / 100 * cpu


def readiness_us(prof, cpu):
    """The us of cpu in readiness checks and system-call entry and exit:
    what a completion-based loop does not pay."""
    sh = prof["shares"]
    return (sh["readiness (epoll, select, poll)"] +
            sh["syscall entry and exit"]) / 100 * cpu


def beyond_stack(prof, cpu, least):
    """(bucket, us) outside the stack for the buckets with at least `least`
    percent of the samples, the largest first."""
    return sorted(((k, v / 100 * cpu) for k, v in prof["shares"].items()
                   if k not in STACK and v >= least), key=lambda kv: -kv[1])


def loop_cost(case, prof):
    """case's CPU figures scaled by the share its profile puts outside the
    stack, as KEY with its _min, _max and _rounds (so that intervals.py
    reads them as any figure); None without both."""
    if not case or not prof or case.get(CPU) is None:
        return None
    keep = 1 - stack_us(prof, 1.0)
    scale = lambda v: None if v is None else v * keep
    return {KEY: scale(case[CPU]), "keep": keep,
            KEY + "_min": scale(case.get(CPU + "_min")),
            KEY + "_max": scale(case.get(CPU + "_max")),
            KEY + "_rounds": [[r, scale(v)] for r, v in
                              case.get(CPU + "_rounds") or []]}


def rows(cases, prof, outside, find, row):
    """Adds the target rows through row(name, value, goal, ok); returns
    the notes on what bounds the ones not met."""
    notes = []
    pp = lambda b, n: find(cases, b, "pingpong", "tcp", n, 64, 1)
    for n in (64, 256):
        u = loop_cost(pp("uring", n), profile_at(prof, "uring", n))
        e = loop_cost(pp("epoll", n), profile_at(prof, "epoll", n))
        if not (u and e):
            continue
        iv = interval(u, e, KEY)
        goal = "<= 0.5x" if n == 64 else "(reported)"
        ok = judge(iv, lambda r: r <= 0.5) if n == 64 else None
        row(f"event-loop cost per round trip (server CPU less the stack), "
            f"{n} conns, uring vs epoll",
            f"{fmt(u[KEY], 2)} vs {fmt(e[KEY], 2)} us = {fmt(iv[0], 2)}x"
            + ivtext(iv), goal, ok)
        if n == 64 and ok is not True:
            pu, pe = profile_at(prof, "uring", n), profile_at(prof, "epoll", n)
            cu = pp("uring", n)[CPU]
            parts = beyond_stack(pu, cu, 0.5)
            notes.append(
                f"**Event-loop cost at {n} connections.**  With the TCP "
                f"stack and its copies at {100 * (1 - u['keep']):.0f}% of "
                f"uring's samples and {100 * (1 - e['keep']):.0f}% of "
                f"epoll's, uring spent {fmt(u[KEY], 2)} us per round trip "
                f"outside them: "
                + ", ".join(f"{k} {v:.2f}" for k, v in parts)
                + f".  epoll spent {fmt(e[KEY], 2)} us, of which its "
                f"readiness checks and system-call entry were "
                f"{readiness_us(pe, pp('epoll', n)[CPU]):.2f}.  Half of "
                f"epoll's would be {e[KEY] / 2:.2f} us: io_uring's own "
                f"kernel code alone is "
                f"{pu['shares']['io_uring'] / 100 * cu:.2f} us of uring's, and "
                f"the scheduler and memory buckets are work both servers' "
                f"sockets do.  The interval comes from the rounds' CPU "
                f"figures; the profile's shares are one 1.5 s sample each.")
    e_out = {c["conns"]: c for c in outside if c["backend"] == "epoll"}
    for b in ("uring", "uring+nobatch"):
        for n in (64, 256):
            c = next((c for c in outside if c["backend"] == b and
                      c["conns"] == n), None)
            if not (c and n in e_out):
                continue
            iv = interval(c, e_out[n], CPU)
            dflt = b == "uring"
            ok = row(f"outside client (iperf2), {n} conns: {b} server "
                     f"CPU/rt vs epoll" + (" (batched waits off)"
                                           if not dflt else ""),
                     f"{fmt(c[CPU], 2)} vs {fmt(e_out[n][CPU], 2)} us = "
                     f"{fmt(iv[0], 2)}x" + ivtext(iv),
                     "<= 0.8x" if dflt else "(reported)",
                     judge(iv, lambda r: r <= 0.8) if dflt else None)
            if dflt and ok is not True:
                notes.append(_outside_note(outside, n, e_out[n], c))
    return notes


# The A/B cases where the adaptive batched waits must cost nothing: few
# connections, where a batch would hold back peers that wait on the
# server (the lockstep docs/DESIGN.md describes).
NO_LOSS = (("1 conn", 1), ("4 conns", 4))


def batching_rows(ab, row):
    """The adaptive batched waits (the default) against batched waits off,
    in the A/B block's rounds: no loss at 1 and 4 connections."""
    for case, n in NO_LOSS:
        v = next((v for v in ab if v["case"] == case and
                  v["label"] == "batched waits off"), None)
        d = v and v.get("base")
        if not d:
            continue
        bw = d.get("batch_waits_per_rt")
        if bw is not None:
            # Why no loss is expected: below 8 handles the policy never
            # batches, so the default's waits are the plain ones.
            row(f"batched waits (adaptive, the default), ursa-load {n} "
                f"conn{'s' if n > 1 else ''}: batched waits per round trip "
                f"(median of the rounds)", fmt(bw, 3), "0 (no lockstep)",
                bw == 0)
        for k, what, goal, test in (
                ("rt_per_s", "round trips/s", ">= 0.97x", lambda r: r >= 0.97),
                (CPU, "server CPU/rt", "<= 1.03x", lambda r: r <= 1.03),
                ("p99_us", "p99", "<= 1.2x", lambda r: r <= 1.2)):
            iv = interval(d, v, k)
            row(f"batched waits (adaptive, the default) vs off, ursa-load "
                f"{n} conn{'s' if n > 1 else ''}: {what}",
                f"{fmt(d[k], 2)} vs {fmt(v[k], 2)} = {fmt(iv[0], 2)}x"
                + ivtext(iv), goal, judge(iv, test))


def _outside_note(outside, n, e, u):
    """What bounds the uring server's CPU under iperf2: the counters."""
    off = next((c for c in outside if c["backend"] == "uring+nobatch" and
                c["conns"] == n), None)
    share = lambda c, k: fmt(c.get(k), 2)
    counts = []
    if u.get("enters_per_rt") is not None:
        counts.append(f"uring made {fmt(u['enters_per_rt'], 3)} enters per "
                      f"round trip, epoll {fmt(e.get('syscalls_per_rt'), 2)} "
                      f"system calls")
    if u.get("sleeps_per_rt") is not None:
        counts.append(f"uring slept (and woke) {fmt(u['sleeps_per_rt'], 2)} "
                      f"times per round trip, epoll "
                      f"{fmt(e.get('sleeps_per_rt'), 2)}")
    text = (f"**Outside client at {n} connections.**  iperf2 was the "
            f"bottleneck (its CPU share {share(u, 'client_cpu_share')}), so "
            f"the servers idled between requests (CPU share uring "
            f"{share(u, 'server_cpu_share')}, epoll "
            f"{share(e, 'server_cpu_share')}).  "
            + ("Its counters: " + "; ".join(counts) + ".  " if counts else "")
            + "With batched waits (the default) one wake-up serves a batch "
            "of requests; what is left per round trip is the TCP work both "
            "servers do (receive, send, and the loopback delivery to the "
            "client that a send pays for), which batching cannot remove.")
    if off:
        iv = interval(off, e, CPU)
        text += ("  With batched waits off (`uring+nobatch`) it"
                 + (f" made {fmt(off['enters_per_rt'], 3)} enters per round "
                    f"trip and" if off.get("enters_per_rt") is not None
                    else "")
                 + f" used {fmt(iv[0], 2)}x{ivtext(iv)} epoll's CPU: each "
                 f"request then wakes the server, and a wake-up costs uring "
                 f"about what epoll_wait, read and write cost epoll.")
    return text
