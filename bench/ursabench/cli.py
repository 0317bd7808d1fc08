"""cli.py - the command line: what to run, in what order, and where the
results go."""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from .config import IDLE_CONNS, listed_servers, use_servers
from .hosts import Failure as HostFailure, Place
from .netns import Veth
from .plan import BLOCKS, EMPTY, Context, write_results
from .plots import graphs
from .page import page
from .publish import export, gate
from .report import render
from .runner import environment
from .trends import trends


def options():
    """The command line's options."""
    ap = argparse.ArgumentParser(
        description="ursa's bench suite: every server backend side by side")
    ap.add_argument("--quick", action="store_true",
                    help="a subset that covers every backend (the default)")
    ap.add_argument("--full", action="store_true", help="the whole matrix")
    ap.add_argument("--smoke", action="store_true",
                    help="the headline cases only (64 B ping-pong at 64 and "
                    "256 connections for uring, ursa-epoll and epoll; iperf2 "
                    "against uring and epoll), for pull requests: under a "
                    "minute")
    ap.add_argument("--filter", help="only cases whose id matches this regex")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--placement", choices=["apart", "same"], default="apart",
                    help="server and load on different CPUs, or the same one")
    ap.add_argument("--server-cpus", metavar="LIST",
                    help="the CPUs the servers may use, as taskset takes them "
                    "(0, 0,2, 0-3; default 0); with more than one, the "
                    "threads block's second loop gets a core of its own")
    ap.add_argument("--load-cpus", metavar="LIST",
                    help="the CPUs the load may use (default 1, or 0 with "
                    "--placement same)")
    ap.add_argument("--out", default="bench/out/latest")
    ap.add_argument("--compare", help="a previous results.json to compare with")
    ap.add_argument("--bindir", help="where the servers and ursa-load are")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="write the report (and graphs) of a stored run "
                    "into --out instead of running anything")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-bulk", action="store_true")
    ap.add_argument("--no-drain", action="store_true",
                    help="skip the write-queue drain (ursa-drain)")
    ap.add_argument("--no-threads", action="store_true",
                    help="skip the threads block (one loop against two)")
    ap.add_argument("--no-tls", action="store_true",
                    help="skip the TLS block")
    ap.add_argument("--no-wake", action="store_true",
                    help="skip the wake-up block (ursa-wake)")
    ap.add_argument("--no-outside", action="store_true",
                    help="skip the outside client (iperf2 bounceback)")
    ap.add_argument("--net", choices=["loopback", "veth"], default="loopback",
                    help="the path between load and server for every case: "
                    "loopback, or a veth pair between two network "
                    "namespaces the bench makes (and removes)")
    ap.add_argument("--no-http", action="store_true",
                    help="skip the HTTP block (wrk against ursa-http, nginx "
                    "and h2o)")
    ap.add_argument("--no-files", action="store_true",
                    help="skip the file block (random reads: ursa-fileio, "
                    "fio, libuv)")
    ap.add_argument("--no-static", action="store_true",
                    help="skip the static-file blocks (wrk against "
                    "ursa-http, nginx and h2o serving files; the stall "
                    "figure)")
    ap.add_argument("--no-process", action="store_true",
                    help="skip the process block (ursa-spawn-bench against "
                    "libuv: spawns and pipes)")
    ap.add_argument("--no-udp", action="store_true",
                    help="skip the UDP block (datagram streams against the "
                    "hand-written mmsg server)")
    ap.add_argument("--no-greet", action="store_true",
                    help="skip the greet block (connections per second)")
    ap.add_argument("--no-veth", action="store_true",
                    help="skip the one case run across a veth pair")
    ap.add_argument("--export", nargs=2, metavar=("FORMAT", "RESULTS_JSON"),
                    help="writes a stored run for CI tools into --out: bmf "
                    "(Bencher's metric format, bmf.json) or gab "
                    "(github-action-benchmark's custom tools: "
                    "gab-bigger.json and gab-smaller.json)")
    ap.add_argument("--gate", nargs=2, metavar=("BASE_JSON", "NEW_JSON"),
                    help="exits 1 naming each headline figure of NEW whose "
                    "interval lies wholly beyond BASE's, on its bad side, "
                    "by more than --tolerance; 0 otherwise")
    ap.add_argument("--gate-ratios", action="store_true",
                    help="the gate looks at the ratios between backends "
                    "only, which the machine's own speed does not move")
    ap.add_argument("--page", metavar="DIR",
                    help="writes DIR/index.html from DIR/report.md (and "
                    "--trend-dir's trend.md): one self-contained page")
    ap.add_argument("--trend-dir", metavar="DIR",
                    help="with --page: the folder --trend wrote")
    ap.add_argument("--tolerance", type=float, default=5.0, metavar="PCT",
                    help="the gate's margin beyond the base's interval, in "
                    "per cent (default 5)")
    ap.add_argument("--trend", nargs="+", metavar="RESULTS_JSON",
                    help="draw the headline figures of these stored runs "
                    "(oldest first) over their commits into --out, with "
                    "their intervals, flagging changes beyond them")
    ap.add_argument("--server-host", metavar="[USER@]HOST",
                    help="run the servers on HOST, over ssh (default: here)")
    ap.add_argument("--load-host", metavar="[USER@]HOST",
                    help="run the load on HOST, over ssh (default: here)")
    ap.add_argument("--server-addr", metavar="ADDR",
                    help="the address the load connects to (default: the "
                    "server host's name)")
    ap.add_argument("--ssh-config", metavar="FILE",
                    help="ssh's configuration file for both hosts")
    ap.add_argument("--ssh-option", action="append", default=[],
                    metavar="OPT", help="an ssh -o option (repeatable)")
    ap.add_argument("--idle-conns", type=int, default=IDLE_CONNS)
    ap.add_argument("--no-ab", action="store_true",
                    help="skip the io_uring feature A/B block")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the perf profile of uring and epoll")
    return ap


# The blocks a run across hosts makes (the others start their own
# programs on this machine, and say so), and the outside tools they want
# on each host.
ACROSS_HOSTS = ("cases", "bulk", "threads", "outside", "http", "greet",
                "udp", "ab")
TOOLS = {"outside": {"load": ["iperf"]},
         "http": {"load": ["wrk"], "server": ["nginx", "h2o"]}}


def across_hosts(ap, a):
    """The two hosts.Place of a run across hosts, each prepared; the
    blocks that cannot run across hosts turned off, with a line each."""
    if a.net == "veth":
        ap.error("--net veth is one machine; it does not go with "
                 "--server-host or --load-host")
    if not a.server_addr:
        if not a.server_host:
            ap.error("--load-host needs --server-addr: the address of this "
                     "machine that the load host connects to")
        a.server_addr = a.server_host.split("@")[-1]
    ssh = (["-F", a.ssh_config] if a.ssh_config else []) + [
        x for o in a.ssh_option for x in ("-o", o)]
    try:
        places = (Place(a.server_host, ssh, a.bindir, "server"),
                  Place(a.load_host, ssh, a.bindir, "load"))
    except (HostFailure, OSError, subprocess.SubprocessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(2)
    for k in ("memory", "drain", "tls", "wake", "files",
              "static", "process", "veth", "profile"):
        if not getattr(a, "no_" + k):
            print(f"bench: {k}: not run across hosts (it starts its "
                  "programs on this machine)")
            setattr(a, "no_" + k, True)
    # The outside tools each host lacks, named now; their rows say so too.
    for place in places:
        want = sorted({t for k, by in TOOLS.items() if not getattr(
            a, "no_" + k) for t in by.get(place.role, [])})
        try:
            gone = place.missing(want)
        except (HostFailure, subprocess.SubprocessError) as e:
            print(f"bench: {e}", file=sys.stderr)
            sys.exit(2)
        if gone:
            print(f"bench: {place.role} host {place.name()}: "
                  f"{', '.join(gone)} not installed; those rows are not run")
    return places


def cpu_list(ap, flag, value, default):
    """A taskset-style CPU list ("0", "0,2", "0-3") as sorted numbers."""
    out = set()
    for part in (value or default).split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (
                dash and int(hi) < int(lo)):
            ap.error(f"{flag} '{value}' is not a CPU list (like 0, 0,2 or "
                     "0-3)")
        out.update(range(int(lo), int(hi if dash else lo) + 1))
    return sorted(out)


# What --smoke runs: the figures the gate looks at, nothing else.
SMOKE_FILTER = (r"^(tcp-pingpong-(64|256)c-64b-1i-(uring|ursa-epoll|epoll)"
                r"|iperf2-tcp-pingpong-(uring|epoll))$")


def smoke(a):
    if a.filter or a.full:
        raise SystemExit("bench.py: --smoke sets its own cases; it takes "
                         "neither --filter nor --full")
    a.filter = SMOKE_FILTER
    for k in ("memory", "bulk", "drain", "threads", "tls", "wake", "http",
              "files", "static", "process", "udp", "greet", "veth", "ab",
              "profile"):
        setattr(a, "no_" + k, True)
    if a.duration is None:
        a.duration = 0.5


def publish_main(ap, a):
    """--export and --gate: stored runs only, nothing is run."""
    if a.export:
        what, path = a.export
        if what not in ("bmf", "gab"):
            ap.error(f"--export: unknown format '{what}' (want bmf or gab)")
        try:
            for p in export(what, path, a.out):
                print(f"bench: wrote {p}")
        except (OSError, ValueError) as e:
            ap.error(f"--export: cannot read {path}: {e}")
        return
    if a.tolerance < 0:
        ap.error("--tolerance must be 0 or more")
    try:
        runs = []
        for p in a.gate:
            with open(p) as f:
                runs.append(json.load(f))
    except (OSError, ValueError) as e:
        ap.error(f"--gate: cannot read the runs: {e}")
    fails, notes = gate(runs[0], runs[1], a.tolerance / 100, a.gate_ratios)
    for n in notes:
        print(f"better: {n}")
    for f in fails:
        print(f"WORSE: {f}")
    print(f"bench: gate {a.gate[0]} -> {a.gate[1]} (tolerance "
          f"{a.tolerance:g}%): {len(fails)} headline figures worse beyond "
          f"the intervals, {len(notes)} better")
    sys.exit(1 if fails else 0)


def main():
    ap = options()
    a = ap.parse_args()
    if a.export or a.gate:
        publish_main(ap, a)
        return
    if a.page:
        if not os.path.exists(os.path.join(a.page, "report.md")):
            ap.error(f"--page: no report.md in {a.page}")
        path = page(a.page, a.trend_dir)
        if not path:
            sys.exit(1)
        print(f"bench: wrote {path}")
        return
    if a.trend:
        try:
            path, flagged = trends(a.trend, a.out)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--trend: cannot read the runs: {e}")
        print(f"bench: trends of {len(a.trend)} runs in {path}; "
              f"{len(flagged)} changes beyond the intervals")
        for f in flagged:
            print("  " + f)
        return
    if a.render:
        with open(a.render) as f:
            results = json.load(f)
        previous = None
        if a.compare:
            with open(a.compare) as f:
                previous = json.load(f)
        print(render(results, a.out, previous,
                     graphs if shutil.which("gnuplot") else None))
        page(a.out)
        return
    if not a.bindir:
        ap.error("--bindir is needed to run the suite")
    if a.smoke:
        smoke(a)
    try:
        use_servers(listed_servers(a.bindir))
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        ap.error(f"ursa-echo-server --list-backends --json in {a.bindir}: "
                 f"{e}")
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    if a.duration is None:
        a.duration = 3.0 if a.full else 0.8
    if a.duration <= 0:
        ap.error("--duration must be above 0")
    ncpu = os.cpu_count() or 1
    a.scpus = cpu_list(ap, "--server-cpus", a.server_cpus, "0")
    a.lcpus = cpu_list(ap, "--load-cpus", a.load_cpus,
                       "1" if a.placement == "apart" and ncpu > 1 else "0")
    # What takes one CPU (a pinned loop, iperf3 -A) takes the first.
    a.scpu, a.lcpu = a.scpus[0], a.lcpus[0]
    # Room for 10,000 idle connections on each side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except ValueError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < a.idle_conns + 200:
        print(f"bench: RLIMIT_NOFILE is {soft}; the memory case uses "
              f"{soft - 200} connections instead of {a.idle_conns}")
        a.idle_conns = max(soft - 200, 100)
    previous = None
    if a.compare:
        with open(a.compare) as f:
            previous = json.load(f)

    os.makedirs(a.out, exist_ok=True)
    a.places = None
    if a.server_host or a.load_host:
        a.places = across_hosts(ap, a)
    for flag, cpus, place in (("--server-cpus", a.scpus, a.places[0] if
                               a.places else None),
                              ("--load-cpus", a.lcpus, a.places[1] if
                               a.places else None)):
        have = place.cpus() if place else ncpu
        if not have:
            continue
        if max(cpus) >= have:
            ap.error(f"{flag}: CPU {max(cpus)} is beyond the {have} CPUs "
                     f"of {place.name() if place else 'this machine'}")
    shared = set(a.scpus) & set(a.lcpus)
    if shared and a.placement == "apart" and (
            not a.places or a.places[0].host == a.places[1].host):
        print(f"bench: the server and the load share CPU "
              f"{','.join(map(str, sorted(shared)))}")
    a.scpus, a.lcpus = ",".join(map(str, a.scpus)), ",".join(map(str, a.lcpus))
    env = environment(a.bindir, a.placement, a.scpus, a.lcpus)
    if a.places:
        env["hosts"] = {"server": a.places[0].machine(a.server_addr),
                        "load": a.places[1].machine(a.server_addr),
                        "server_addr": a.server_addr}
    a.veth = None
    if a.net == "veth":
        try:
            a.veth = Veth()
        except (OSError, subprocess.SubprocessError) as e:
            ap.error(f"--net veth: cannot make the network namespaces: {e}")
        env["net"] = a.veth.describe()
    elif a.places:
        env["net"] = (f"across hosts: the load on {a.places[1].name()}, the "
                      f"server on {a.places[0].name()} at {a.server_addr}")
    else:
        env["net"] = "loopback (127.0.0.1; Unix sockets for unix cases)"
    plan = [(blk, blk.todo(a)) for blk in BLOCKS]
    ctx = Context(a, sum(blk.steps(a, todo) for blk, todo in plan))
    results = {key: value for key, value in EMPTY.items()}
    for blk, todo in plan:
        if todo:
            results.update(blk.run(ctx, todo))
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    if a.veth:
        a.veth.down()
    for p in a.places or ():
        p.close()
    env["veth_case"] = results["veth_path"]
    write_results(a, env, results, ctx.failures, previous)
    print(f"bench: {len(results['cases']) + len(results['bulk'])} cases, "
          f"{len(results['memory'])} memory runs in "
          f"{time.time() - ctx.t0:.0f}s; results in {a.out}/ (results.json, "
          f"results.csv, report.md, graphs/)")
    if ctx.failures:
        print("bench: correctness failures:\n  " + "\n  ".join(ctx.failures),
              file=sys.stderr)
        sys.exit(1)
