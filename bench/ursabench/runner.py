"""runner.py - running servers and the load: one run, its summary, the
interleaved repeat loop every block uses, and the A/B block."""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess

from .config import AB_CASES, AB_DURATION, AB_REPEATS, AB_WARMUP
from .hosts import Failure, Place, server_pid
from .intervals import ROUND_KEYS


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""

def environment(bindir, placement, scpu, lcpu):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    probe = {}
    try:
        probe = json.loads(sh([os.path.join(bindir, "ursa-probe"), "--json"]))
    except ValueError:
        pass
    used = [k for k, v in probe.get("features", {}).items() if v.get("used")]
    return {
        "kernel": platform.release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "liburing": sh(["dpkg-query", "-W", "-f=${Version}", "liburing-dev"]),
        "libuv": sh(["dpkg-query", "-W", "-f=${Version}", "libuv1-dev"]),
        "ring_features_used": used,
        "commit": sh(["git", "rev-parse", "--short", "HEAD"]) or "unknown",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "placement": placement,
        "server_cpu": scpu,
        "load_cpu": lcpu,
    }

def pinned(cmd, cpu):
    """cmd pinned to cpu: by its own --cpu for one, by taskset for a list
    (--server-cpus, --load-cpus)."""
    if cpu is None:
        return list(cmd)
    if str(cpu).isdigit():
        return list(cmd) + ["--cpu", str(cpu)]
    return ["taskset", "-c", str(cpu)] + list(cmd)


class Server:
    """An echo server on one CPU; net (a netns.Veth) puts it in the
    server's namespace of a veth pair; place (hosts.Place) on another
    host, listening on every address and reached at addr (--server-addr
    or the ssh host's name)."""

    def __init__(self, bindir, backend, proto, mode, cpu, tmp, extra=(),
                 net=None, place=None, addr=None):
        self.place = place if place and place.host else None
        if self.place:
            bindir, tmp = place.bindir, place.tmp
        self.stats_path = os.path.join(tmp, "server.json")
        host = net.server_ip if net else "127.0.0.1"
        if addr:
            host = "0.0.0.0"
        listen = f"{host}:0" if proto in ("tcp", "udp") else \
            "unix:" + os.path.join(tmp, "bench.sock")
        cmd = (net.prefix("srv") if net else []) + pinned([
            os.path.join(bindir, "ursa-echo-server"), "--backend", backend,
            "--proto", proto, "--listen", listen, "--mode", mode,
            "--stats-json", self.stats_path, *extra], cpu)
        if self.place:
            self.p = self.place.popen(cmd)
            self.pid = server_pid(self.p, self.place)
        else:
            self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            self.pid = self.p.pid
        line = self.p.stdout.readline()
        m = re.search(r"listening on (\S+)$", line.strip())
        if not m:
            self.p.kill()
            raise Failure(f"{backend} server did not start: {line!r} "
                          f"{self.p.stderr.read()[:500]!r}")
        self.addr = m.group(1)
        if addr:
            self.addr = f"{addr}:{self.addr.rsplit(':', 1)[1]}"

    def rss_kb(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.place:
            self.place.run(["kill", "-TERM", str(self.pid)], check=False)
        else:
            self.p.send_signal(signal.SIGTERM)
        try:
            _, err = self.p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Failure("server did not stop within 30 s")
        if self.p.returncode != 0:
            raise Failure(f"server exit {self.p.returncode}: {err[:500]}")
        if self.place:
            return json.loads(self.place.read(self.stats_path))
        with open(self.stats_path) as f:
            return json.load(f)

def run_load(bindir, addr, args, cpu, server_pid, tmp, timeout, net=None,
             place=None):
    """ursa-load against addr; with place (hosts.Place) on that host, and
    the server's CPU (server_pid None) left to the caller."""
    place = place if place and place.host else Place(bindir=bindir)
    if place.host:
        bindir, tmp = place.bindir, place.tmp
    out = os.path.join(tmp, "load.json")
    cmd = [os.path.join(bindir, "ursa-load"), addr, "--json", out, *args]
    if server_pid is not None:
        cmd += ["--server-pid", str(server_pid)]
    cmd = (net.prefix("load") if net else []) + pinned(cmd, cpu)
    r = subprocess.run(place.wrap(cmd), capture_output=True, text=True,
                       timeout=timeout)
    text = place.take(out)
    return r, json.loads(text) if text is not None else {}

def one_run(a, b, kind, proto, conns, size, inflight, tmp, extra=(),
            load_extra=(), net=None):
    """One server and one ursa-load run against it; net: the veth pair to
    run across (default: --net's, loopback when that is not veth)."""
    net = net or getattr(a, "veth", None)
    if proto == "unix":
        net = None
    mode = {"bulk": "sink", "greet": "greet"}.get(kind, "echo")
    places = getattr(a, "places", None)
    splace, lplace = places if places else (None, None)
    # Across hosts the load cannot read the server's /proc: its CPU is
    # read on its own host around the whole load run (warm-up included).
    apart = bool(splace and splace.host) or bool(lplace and lplace.host)
    srv = Server(a.bindir, b, proto, mode, a.scpus, tmp, extra, net, splace,
                 a.server_addr if apart else None)
    load_args = ["--connections", str(conns), "--size", str(size),
                 "--inflight", str(inflight), "--duration", str(a.duration),
                 "--warmup", str(a.warmup), *load_extra]
    if proto != "tcp":
        load_args += ["--proto", proto]
    if kind == "bulk":
        load_args.append("--bulk")
    if kind == "greet":
        load_args.append("--greet")
    try:
        c0 = splace.cpu_s(srv.pid) if apart else None
        r, res = run_load(a.bindir, srv.addr, load_args, a.lcpus,
                          None if apart else srv.pid, tmp,
                          timeout=60 + a.duration * 3, net=net, place=lplace)
        if apart and res.get("round_trips_total"):
            # The whole run's CPU, scaled to the measured window by its
            # share of the round trips: CPU per round trip over the run.
            res["server_cpu_s"] = ((splace.cpu_s(srv.pid) - c0) *
                                   res.get("round_trips", 0) /
                                   res["round_trips_total"])
    finally:
        stats = srv.stop()
    errors = res.get("errors", 1)
    if r.returncode != 0:
        errors = max(errors, 1)
        why = r.stderr.strip()[:300]
        if stats.get("refused"):
            why += (f" [server refused {stats['refused']} connections by "
                    "design]")
        print(f"    ursa-load exit {r.returncode}: {why}", flush=True)
    rts = max(res.get("round_trips", 0), 1)
    total = max(res.get("round_trips_total", 0), 1)
    sys_rt = None if stats.get("syscalls", -1) < 0 else stats["syscalls"] / total
    return {
        "rt_per_s": res.get("rt_per_s", 0.0),
        "mb_per_s": res.get("mb_per_s", 0.0),
        "server_cpu_us_per_rt": max(res.get("server_cpu_s", 0), 0) * 1e6 / rts,
        "p50_us": res.get("p50_us"), "p99_us": res.get("p99_us"),
        "p999_us": res.get("p999_us"),
        "syscalls_per_rt": sys_rt,
        "enters_per_rt": stats["enters"] / total if b == "uring" else None,
        # Waits that asked for a batch (ursa.h, batch_policy).
        "batch_waits_per_rt": (stats.get("batch_waits", 0) / total
                               if b == "uring" else None),
        # Times the receive ring was empty when data came (each one re-arms
        # a multishot recv); named in the note on a case behind epoll.
        "enobufs_per_rt": (stats.get("enobufs", 0) / total
                           if b == "uring" else None),
        # Receives that returned data: how many reads a message took.
        "reads_per_rt": stats.get("reads", 0) / total,
        # --reconnect: connections (or TLS handshakes) opened per second,
        # and the server's CPU for each.
        "opened_per_s": res.get("opened_per_s"),
        "server_cpu_us_per_open": (
            max(res.get("server_cpu_s", 0), 0) * 1e6 /
            (res["opened_per_s"] * res["seconds"])
            if res.get("opened_per_s") and res.get("seconds") else None),
        # Each side's CPU over the measured window as a share of one CPU:
        # which of them (if either) limited the run.
        "client_cpu_share": (res["client_cpu_s"] / res["seconds"]
                             if res.get("seconds") else None),
        "server_cpu_share": (max(res.get("server_cpu_s", 0), 0) /
                             res["seconds"] if res.get("seconds") else None),
        "p9999_us": res.get("p9999_us"), "p90_us": res.get("p90_us"),
        "errors": errors,
        # Connections a server refused by design (select past FD_SETSIZE)
        # fail on the load side; they are counted, not hidden.
        "refused": stats.get("refused", 0),
    }

def summarise(runs):
    """The median of each figure over the runs; for the figures ratios
    are taken of, also its range and its value round by round (for the
    per-round intervals, intervals.py)."""
    out = {}
    for k in runs[0]:
        if k == "round":
            continue
        vals = [r[k] for r in runs if r[k] is not None]
        if k in ("errors", "refused"):
            out[k] = sum(vals)
        elif isinstance(vals[0] if vals else None, str):
            out[k] = vals[0]
        elif vals:
            out[k] = statistics.median(vals)
            if k in ROUND_KEYS:
                out[k + "_min"], out[k + "_max"] = min(vals), max(vals)
                out[k + "_rounds"] = [[r.get("round", i), r[k]]
                                      for i, r in enumerate(runs)
                                      if r[k] is not None]
        else:
            out[k] = None
    return out

def summaries(items, runs, fields, failures, progress, what):
    """A block's rows: for each item that ran, summarise(its runs) with
    fields(item) and its repeats; errors beyond the server's refusals go
    into failures, and progress(id, what(row)) reports the row."""
    rows = []
    for item, got in zip(items, runs):
        if not got:
            continue
        s = summarise(got)
        s.update(fields(item))
        s["repeats"] = len(got)
        if s["errors"] > s.get("refused", 0):
            failures.append(f"{s['id']}: {s['errors']} errors")
        rows.append(s)
        progress(s["id"], what(s))
    return rows


# What a failed run raises; the run is noted and the rest go on.
RUN_ERRORS = (Failure, OSError, ValueError, KeyError,
              subprocess.SubprocessError)


def interleaved(items, repeats, run, label, failures):
    """The one repeat loop: run(item) `repeats` times for every item, one
    repeat of each in turn, each round starting one item later, so that
    drift on a shared machine falls on all of them and none always runs
    first (the first run of a round measured slower than the rest).
    Returns the results per item, in item order; a failed run goes into
    failures as 'label(item): error'."""
    runs = [[] for _ in items]
    if not items:
        return runs
    for r in range(repeats):
        order = list(range(len(items)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            try:
                got = run(items[i])
                if isinstance(got, dict):
                    got["round"] = r
                runs[i].append(got)
            except RUN_ERRORS as e:
                failures.append(f"{label(items[i])}: {e}")
                print(f"    {label(items[i])}: {e}", flush=True)
    return runs


def ab_sequence(variants, r):
    """Round r's run order for the A/B block: (index into variants, the
    index of the variant's own comparison run or None).  The machine's
    speed shifts by tens of percent over seconds (seen here: uring and
    epoll runs alternating moved from 6.3 and 7.0 to 4.1 and 5.0 us per
    round trip together), so a variant is compared with a run of its
    case's default made right beside it: each case's variants go in
    pairs around one default run (V D V), pairs and cases in an order
    that rotates with r."""
    cases = []
    for i, v in enumerate(variants):
        if v[1] not in cases:
            cases.append(v[1])
    cases = cases[r % len(cases):] + cases[:r % len(cases)] if cases else []
    seq = []
    for c in cases:
        base = next((i for i, v in enumerate(variants)
                     if v[1] == c and v[0] == "default"), None)
        vs = [i for i, v in enumerate(variants) if v[1] == c and i != base]
        if vs:
            vs = vs[r % len(vs):] + vs[:r % len(vs)]
        if base is None:
            seq += [(i, None) for i in vs]
            continue
        if not vs:
            seq.append((base, None))
        for j in range(0, len(vs), 2):
            seq.append((vs[j], len(seq) + 1))
            seq.append((base, None))
            if j + 1 < len(vs):
                seq.append((vs[j + 1], len(seq) - 1))
    return seq


def ab_block(a, tmp, variants, failures, progress):
    """Runs variants (of AB_VARIANTS) in rounds of ab_sequence(); returns
    one summary per variant, each non-default one with 'base': its
    comparison runs' figures round by round (the default runs made beside
    it)."""
    todo = [v for v in variants if not a.filter or
            re.search(a.filter, f"ab-{v[1]}-{v[0]}")]
    ab = argparse.Namespace(**vars(a))
    ab.duration = min(a.duration, AB_DURATION)
    ab.warmup = min(a.warmup, AB_WARMUP)
    runs = [[] for _ in todo]
    bases = [[] for _ in todo]
    for r in range(max(a.repeats, AB_REPEATS) if todo else 0):
        seq = ab_sequence(todo, r)
        got = []
        for i, _ in seq:
            label, case, extra = todo[i]
            try:
                res = one_run(ab, "uring", *AB_CASES[case], tmp, extra)
                res["round"] = r
            except RUN_ERRORS as e:
                res = None
                failures.append(f"ab {case} {label}: {e}")
                print(f"    ab {case} {label}: {e}", flush=True)
            got.append(res)
            if res:
                runs[i].append(res)
        for (i, pair), res in zip(seq, got):
            if res and pair is not None and got[pair]:
                bases[i].append(got[pair])
    out = []
    for (label, case, extra), got, base in zip(todo, runs, bases):
        if not got:
            continue
        s = summarise(got)
        s.update({"label": label, "case": case, "flags": " ".join(extra),
                  "repeats": len(got)})
        if base:
            # The default's runs beside this variant's, under the same
            # round numbers as the variant's own.
            s["base"] = summarise(base)
        if s["errors"]:
            failures.append(f"ab {case} {label}: {s['errors']} echo errors")
        out.append(s)
        progress(f"ab {case}: {label}", f"{s['rt_per_s']:.0f} rt/s, server "
                 f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return out
