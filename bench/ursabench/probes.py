"""probes.py - the outside measurements: iperf3's loopback limit, memory
per idle connection, and a perf profile of a server charged to buckets."""
import json
import os
import re
import shutil
import statistics
import subprocess
import time

from .config import (PASS_TO_CALLER, PROFILE_ALLOC, PROFILE_BUCKETS,
                     PROFILE_PASS_ON, SYSCALL_WRAPPERS)
from .config import WAKE_MODES
from .runner import Failure, Server, interleaved

# Queue lengths of the write-queue drain: flat time per write across them
# is a drain in linear time.
DRAIN_WRITES = (10000, 40000, 160000)


def iperf3(a, tmp):
    """Loopback limit: iperf3, one stream of 64 KiB writes, same CPUs."""
    if not shutil.which("iperf3"):
        return None
    runs = []
    for _ in range(a.repeats):
        port = 5201 + os.getpid() % 1000
        srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port), "-A",
                                str(a.scpu)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port),
                            "-t", str(max(1, round(a.duration + a.warmup))),
                            "-O", str(a.warmup), "-l", "64K", "-A",
                            str(a.lcpu), "-J"], capture_output=True, text=True,
                           timeout=60)
        srv.wait(timeout=10)
        try:
            d = json.loads(r.stdout)
            runs.append(d["end"]["sum_received"]["bits_per_second"] / 8e6)
        except (ValueError, KeyError):
            pass
    if not runs:
        return None
    return {"mb_per_s": statistics.median(runs), "mb_per_s_min": min(runs),
            "mb_per_s_max": max(runs)}

def drain(a, b, tmp):
    """ursa-drain on backend b: ns per write with each queue length queued
    at once, the median of the repeats (a run also checks every byte)."""
    out = []
    path = os.path.join(tmp, "drain.json")
    for n in DRAIN_WRITES:
        got = []
        for _ in range(a.repeats):
            r = subprocess.run([os.path.join(a.bindir, "ursa-drain"),
                                "--writes", str(n), "--backend", b,
                                "--json", path], capture_output=True,
                               text=True, timeout=120)
            if r.returncode:
                raise Failure(f"ursa-drain --backend {b} --writes {n}: exit "
                              f"{r.returncode}: {r.stdout.strip()[-200:]} "
                              f"{r.stderr.strip()[-200:]}")
            with open(path) as f:
                got.append(json.load(f))
        ns = [g["ns_per_write"] for g in got]
        out.append({"backend": b, "writes": n,
                    "ns_per_write": statistics.median(ns),
                    "ns_per_write_min": min(ns), "ns_per_write_max": max(ns),
                    "sends": got[0]["sends"], "repeats": len(got)})
    return out

def wake(a, tmp, failures):
    """ursa-wake in each mode, interleaved round by round: posts per second
    and post-to-callback latency, loop on the server CPU, sender on the
    load CPU; medians of the repeats with their ranges."""
    path = os.path.join(tmp, "wake.json")

    def run(m):
        mode, be = m
        cmd = [os.path.join(a.bindir, "ursa-wake"), "--mode", mode,
               "--json", path, "--cpu-loop", str(a.scpu), "--cpu-sender",
               str(a.lcpu)]
        if mode.startswith(("post", "call")):
            base, _, feat = be.partition("+")
            cmd += ["--backend", base] + (["--uring-enable", feat]
                                          if feat else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise Failure(f"ursa-wake --mode {mode}: exit {r.returncode}: "
                          f"{r.stderr.strip()[-200:]}")
        with open(path) as f:
            return json.load(f)
    runs = interleaved(WAKE_MODES, a.repeats, run,
                       lambda m: f"wake {m[0]} ({m[1]})", failures)
    out = []
    for (mode, be), got in zip(WAKE_MODES, runs):
        if not got:
            continue
        row = {"mode": mode, "backend": be, "repeats": len(got),
               "posts": got[0]["posts"], "samples": got[0]["samples"]}
        for k in ("posts_per_s", "lat_p50_ns", "lat_p99_ns", "wakeups"):
            vals = [g[k] for g in got]
            row[k] = statistics.median(vals)
            row[k + "_min"], row[k + "_max"] = min(vals), max(vals)
            row[k + "_rounds"] = [[g["round"], g[k]] for g in got]
        out.append(row)
    return out

def memory(a, b, tmp):
    """Server RSS per connection while IDLE_CONNS connections sit idle."""
    srv = Server(a.bindir, b, "tcp", "echo", a.scpu, tmp)
    time.sleep(0.2)
    base = srv.rss_kb()
    hold = 3.0
    load = subprocess.Popen(
        [os.path.join(a.bindir, "ursa-load"), srv.addr, "--idle",
         "--connections", str(a.idle_conns), "--duration", str(hold),
         "--warmup", "0", "--json", os.path.join(tmp, "idle.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = base
    t0 = time.time()
    while load.poll() is None and time.time() - t0 < hold + 30:
        try:
            peak = max(peak, srv.rss_kb())
        except OSError:
            break
        time.sleep(0.1)
    load.wait(timeout=60)
    stats = srv.stop()
    held = stats["connections"]  # refused ones are not counted there
    per = (peak - base) * 1024 / held if held else None
    note = ""
    if stats.get("refused"):
        note = f"refused {stats['refused']} (descriptor limit)"
    return {"backend": b, "conns": a.idle_conns, "held": held,
            "rss_base_kb": base, "rss_peak_kb": peak,
            "bytes_per_conn": per, "note": note}

def attribute(frames):
    """The bucket of one sample's call chain, leaf first: the first frame
    that belongs to a bucket other than locks and memory allocation; a
    lock's or an allocation's time goes to the code that took the lock or
    asked for the memory (an skb's allocation is the network stack's, an
    io_uring request's is io_uring's), and to its own bucket only when no
    caller in the kernel belongs to another."""
    held = None
    for sym, kernel in frames:
        if not kernel:
            return ("syscall entry and exit" if sym in SYSCALL_WRAPPERS
                    else "user space")
        if sym.startswith(PROFILE_PASS_ON):
            continue
        for name, prefixes in PROFILE_BUCKETS:
            if sym.startswith(prefixes):
                if name not in PASS_TO_CALLER:
                    return name
                if held != PROFILE_ALLOC:
                    held = name
                break
    return held or "other kernel"

def profile(a, b, tmp, conns=64):
    """perf record on the server at conns connections x 64 B ping-pong;
    returns the share of its samples per bucket, or a reason."""
    if not shutil.which("perf"):
        return {"backend": b, "conns": conns, "error": "perf is not installed"}
    srv = Server(a.bindir, b, "tcp", "echo", a.scpu, tmp)
    data = os.path.join(tmp, f"perf-{b}.data")
    cmd = [os.path.join(a.bindir, "ursa-load"), srv.addr, "--connections",
           str(conns), "--size", "64", "--duration", "3", "--warmup", "0"]
    if a.lcpu is not None:
        cmd += ["--cpu", str(a.lcpu)]
    load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.8)
        r = subprocess.run(["perf", "record", "-q", "-g", "-p",
                            str(srv.p.pid),
                            "-o", data, "--", "sleep", "1.5"],
                           capture_output=True, text=True, timeout=60)
    finally:
        load.wait(timeout=60)
        srv.stop()
    if r.returncode != 0 or not os.path.exists(data):
        return {"backend": b, "conns": conns, "error": "perf record failed: "
                + (r.stderr.strip().splitlines() or ["?"])[-1][:200]}
    rep = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                         capture_output=True, text=True, timeout=300)
    counts = {name: 0 for name, _ in PROFILE_BUCKETS}
    counts.update({"other kernel": 0, "user space": 0})
    n = nk = 0
    for sample in re.split(r"\n\s*\n", rep.stdout):
        frames = []
        for line in sample.splitlines():
            m = re.match(r"\s*[0-9a-f]+\s+(\S+)\s+\((.*)\)\s*$", line)
            if m:
                frames.append((m.group(1).split("+")[0],
                               m.group(2) == "[kernel.kallsyms]"))
        if not frames:
            continue
        n += 1
        nk += frames[0][1]
        counts[attribute(frames)] += 1
    if n < 50:
        return {"backend": b, "conns": conns,
                "error": f"perf gave {n} samples"}
    shares = {k: 100.0 * v / n for k, v in counts.items()}
    kernel = 100.0 * nk / n
    return {"backend": b, "conns": conns, "kernel": kernel, "shares": shares,
            "samples": n}
