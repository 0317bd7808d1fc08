"""runner.py - running servers and the load: one run, its summary, the
interleaved repeat loop every block uses, and the A/B block."""
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess

from .config import AB_CASES, AB_REPEATS, AB_VARIANTS


class Failure(Exception):
    pass

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

class Server:
    def __init__(self, bindir, backend, proto, mode, cpu, tmp, extra=()):
        self.stats_path = os.path.join(tmp, "server.json")
        listen = "127.0.0.1:0" if proto in ("tcp", "udp") else \
            "unix:" + os.path.join(tmp, "bench.sock")
        cmd = [os.path.join(bindir, "ursa-echo-server"), "--backend", backend,
               "--proto", proto, "--listen", listen, "--mode", mode,
               "--stats-json", self.stats_path, *extra]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on (\S+)$", line.strip())
        if not m:
            self.p.kill()
            raise Failure(f"{backend} server did not start: {line!r} "
                          f"{self.p.stderr.read()[:500]!r}")
        self.addr = m.group(1)

    def rss_kb(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            _, err = self.p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Failure("server did not stop within 30 s")
        if self.p.returncode != 0:
            raise Failure(f"server exit {self.p.returncode}: {err[:500]}")
        with open(self.stats_path) as f:
            return json.load(f)

def run_load(bindir, addr, args, cpu, server_pid, tmp, timeout):
    out = os.path.join(tmp, "load.json")
    cmd = [os.path.join(bindir, "ursa-load"), addr, "--json", out,
           "--server-pid", str(server_pid), *args]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    res = {}
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
        os.unlink(out)
    return r, res

def one_run(a, b, kind, proto, conns, size, inflight, tmp, extra=(),
            load_extra=()):
    mode = "sink" if kind == "bulk" else "echo"
    srv = Server(a.bindir, b, proto, mode, a.scpu, tmp, extra)
    load_args = ["--connections", str(conns), "--size", str(size),
                 "--inflight", str(inflight), "--duration", str(a.duration),
                 "--warmup", str(a.warmup), *load_extra]
    if proto != "tcp":
        load_args += ["--proto", proto]
    if kind == "bulk":
        load_args.append("--bulk")
    try:
        r, res = run_load(a.bindir, srv.addr, load_args, a.lcpu, srv.p.pid,
                          tmp, timeout=60 + a.duration * 3)
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
        "errors": errors,
        # Connections a server refused by design (select past FD_SETSIZE)
        # fail on the load side; they are counted, not hidden.
        "refused": stats.get("refused", 0),
    }

def summarise(runs):
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if r[k] is not None]
        if k in ("errors", "refused"):
            out[k] = sum(vals)
        elif vals:
            out[k] = statistics.median(vals)
            if k in ("rt_per_s", "server_cpu_us_per_rt", "opened_per_s"):
                out[k + "_min"], out[k + "_max"] = min(vals), max(vals)
        else:
            out[k] = None
    return out

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
                runs[i].append(run(items[i]))
            except RUN_ERRORS as e:
                failures.append(f"{label(items[i])}: {e}")
                print(f"    {label(items[i])}: {e}", flush=True)
    return runs


def ab_block(a, tmp, failures, progress):
    """Runs AB_VARIANTS interleaved; returns one summary per variant."""
    todo = [v for v in AB_VARIANTS if not a.filter or
            re.search(a.filter, f"ab-{v[1]}-{v[0]}")]
    runs = interleaved(
        todo, max(a.repeats, AB_REPEATS),
        lambda v: one_run(a, "uring", *AB_CASES[v[1]], tmp, v[2]),
        lambda v: f"ab {v[1]} {v[0]}", failures)
    out = []
    for (label, case, extra), got in zip(todo, runs):
        if not got:
            continue
        s = summarise(got)
        s.update({"label": label, "case": case, "flags": " ".join(extra),
                  "repeats": len(got)})
        if s["errors"]:
            failures.append(f"ab {case} {label}: {s['errors']} echo errors")
        out.append(s)
        progress(f"ab {case}: {label}", f"{s['rt_per_s']:.0f} rt/s, server "
                 f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return out
