"""report.py - report.md from a run's results, and rendering one again
from a stored results.json."""
import os

from .analysis import fmt, targets
from .config import case_of
from .intervals import interval, text
from .process import process_section
from .udp import udp_section
from .http_report import section as http_section
from .sections import (files_section, greet_section,
                       outside_section, static_section, veth_section)
from .tables import (ab_section, bulk_section, drain_section, memory_section,
                     threads_section, tls_section, wake_section)


def placed(lines, hosts):
    """A block's headings, each naming the hosts of a run across hosts."""
    if not hosts:
        return lines
    where = (f" (load on {hosts['load']['host']}, server on "
             f"{hosts['server']['host']} at {hosts.get('server_addr')})")
    return [x + where if x.startswith("## ") or x.startswith("### ") else x
            for x in lines]


def report(out, env, cases, bulk, iperf, mem, made, previous, ab=None,
           prof=(), drain=(), threads=(), wake=(), tls=(), outside=(),
           veth=(), http=(), greet=(), files=(), static=(), stall=(),
           process=(), udp=()):
    L = ["# ursa bench report", ""]
    L += ["| machine | |", "|---|---|"]
    for k in ["cpu_model", "cpus", "kernel", "liburing", "libuv", "commit",
              "date", "placement", "server_cpu", "load_cpu"]:
        L.append(f"| {k} | {env[k]} |")
    L.append(f"| io_uring features used | {', '.join(env['ring_features_used'])} |")
    L.append(f"| path between load and server | "
             f"{env.get('net', 'loopback (127.0.0.1)')} |")
    hosts = env.get("hosts")
    if hosts:
        # A run across hosts: each host's own table, from the host.
        L += ["", f"Across hosts: the server on {hosts['server']['host']} "
              f"(reached at {hosts.get('server_addr')}), the load on "
              f"{hosts['load']['host']}.  Server CPU is read from the server "
              "host's /proc around each whole load run (warm-up included) "
              "and divided by all its round trips.", "",
              "| | server host | load host |", "|---|---|---|"]
        for k in ("host", "cpu_model", "cpus", "kernel", "nic", "liburing",
                  "ring_features_used"):
            v = [hosts[r].get(k) for r in ("server", "load")]
            v = [", ".join(x) if isinstance(x, list) else x for x in v]
            L.append(f"| {k} | {v[0]} | {v[1]} |")
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
                 list(greet), list(outside), list(files), list(static),
                 list(stall), list(process), list(udp), list(ab or []))
    prev = {c["id"]: c for c in (previous or {}).get("cases", [])}
    groups = {}
    for c in cases:
        groups.setdefault(case_of(c), []).append(c)
    for g, cs in groups.items():
        c0 = cs[0]
        path = ("a Unix socket" if c0["proto"] == "unix" else "veth"
                if env.get("net", "").startswith("veth") else "loopback")
        if hosts:
            path = (f"load on {hosts['load']['host']}, server on "
                    f"{hosts['server']['host']} at {hosts.get('server_addr')}")
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
    L += placed(http_section(list(http)), hosts)
    L += placed(greet_section(list(greet)), hosts)
    L += static_section(list(static), list(stall))
    L += files_section(list(files))
    L += process_section(list(process))
    L += placed(udp_section(list(udp)), hosts)
    L += placed(outside_section(list(outside), cases), hosts)
    L += veth_section(list(veth), cases, env)
    L += placed(bulk_section(bulk, iperf), hosts)
    L += memory_section(mem)
    L += drain_section(drain)
    L += placed(threads_section(threads, env), hosts)
    L += tls_section(tls)
    L += wake_section(wake)
    L += placed(ab_section(ab), hosts)
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
           results.get("greet", []), results.get("files", []),
           results.get("static", []), results.get("stall", []),
           results.get("process", []), results.get("udp", []))
    return os.path.join(out, "report.md")
