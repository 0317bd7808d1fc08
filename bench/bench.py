#!/usr/bin/env python3
"""bench.py - ursa's bench suite: every server backend side by side on
loopback, the same load from ursa-load, repeated, with the server's own CPU
time per round trip as the figure that separates designs on a small machine.
Writes results.json, results.csv, report.md and graphs (SVG and PNG) into
one folder.  Run through bench/run.sh, which builds what it needs."""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ["uring", "epoll", "select", "blocking", "libuv"]
COLOURS = {"uring": "#1f77b4", "epoll": "#ff7f0e", "select": "#2ca02c",
           "blocking": "#9467bd", "libuv": "#8c564b", "iperf3": "#7f7f7f"}
KEYS = ["id", "kind", "backend", "proto", "conns", "size", "inflight",
        "rt_per_s", "rt_per_s_min", "rt_per_s_max", "mb_per_s",
        "server_cpu_us_per_rt", "server_cpu_us_per_rt_min",
        "server_cpu_us_per_rt_max", "p50_us", "p99_us", "p999_us",
        "syscalls_per_rt", "enters_per_rt", "enobufs_per_rt", "reads_per_rt",
        "errors", "refused", "repeats"]
IDLE_CONNS = 10000


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


def matrix(full):
    """(kind, proto, conns, size, inflight) for each backend."""
    if full:
        pts = [("pingpong", "tcp", c, s, 1) for c in [1, 16, 64, 256, 1024]
               for s in [64, 512, 4096, 65536]]
        pts += [("pipelined", "tcp", c, s, 16) for c in [1, 64, 256]
                for s in [64, 4096]]
        pts += [("pingpong", "unix", c, s, 1) for c in [1, 64]
                for s in [64, 4096]]
        pts += [("pingpong", "udp", c, s, 1) for c in [1, 64]
                for s in [64, 1400]]
    else:
        pts = [("pingpong", "tcp", c, 64, 1) for c in [1, 64, 256]]
        pts += [("pingpong", "tcp", 64, 4096, 1),
                ("pipelined", "tcp", 64, 64, 16),
                ("pingpong", "unix", 64, 64, 1),
                ("pingpong", "udp", 64, 64, 1)]
    return [(b,) + p for p in pts for b in BACKENDS]


def case_id(b, kind, proto, conns, size, inflight):
    return f"{proto}-{kind}-{conns}c-{size}b-{inflight}i-{b}"


# The A/B block: the uring server with one default feature switched off,
# or one opt-in feature switched on, against its default set-up,
# interleaved run by run so that drift on a shared machine falls on every
# variant alike.  (label, case, server flags)
AB_CASES = {"pingpong": ("pingpong", "tcp", 64, 64, 1),
            "pipelined": ("pipelined", "tcp", 64, 64, 16),
            "4k": ("pingpong", "tcp", 64, 4096, 1),
            "64k": ("pingpong", "tcp", 16, 65536, 1),
            "bulk": ("bulk", "tcp", 1, 65536, 1),
            "64k, 64 KiB buffers": ("pingpong", "tcp", 16, 65536, 1),
            "pipelined 64k": ("pipelined", "tcp", 64, 65536, 8)}
BUNDLE = ["--uring-enable", "recv_bundle"]
BY_PARTS = ["--uring-enable", "buf_inc"]
BIG_BUFS = ["--buf-size", "65536"]
AB_VARIANTS = [
    ("default", "pingpong", []),
    ("no multishot recv", "pingpong", ["--uring-disable", "multishot_recv"]),
    ("no DEFER_TASKRUN", "pingpong", ["--uring-disable", "defer_taskrun"]),
    ("no SINGLE_ISSUER, DEFER_TASKRUN", "pingpong",
     ["--uring-disable", "single_issuer,defer_taskrun"]),
    ("no COOP_TASKRUN", "pingpong", ["--uring-disable", "coop_taskrun"]),
    ("no registered ring fd", "pingpong", ["--uring-disable", "reg_ring_fd"]),
    ("no direct descriptors", "pingpong",
     ["--uring-disable", "direct_files"]),
    ("+ recv bundles", "pingpong", BUNDLE),
    ("+ buffers filled by parts", "pingpong", BY_PARTS),
    ("default", "pipelined", []),
    ("write batch 1 (one send per write)", "pipelined",
     ["--write-batch", "1"]),
    ("default", "4k", []),
    ("echo from a copy (no ursa_buf_keep)", "4k", ["--echo-copy"]),
    # A 64 KiB message takes four reads of the default 16 KiB buffers, and
    # is echoed as four writes; in 64 KiB buffers, one of each.
    ("default", "64k", []),
    ("+ 64 KiB receive buffers", "64k", BIG_BUFS),
    ("default", "64k, 64 KiB buffers", BIG_BUFS),
    ("+ SEND_ZC for writes of 64 KiB", "64k, 64 KiB buffers",
     BIG_BUFS + ["--zc-threshold", "65536"]),
    # 8 messages of 64 KiB in flight per connection.
    ("default", "pipelined 64k", []),
    ("+ 64 KiB receive buffers", "pipelined 64k", BIG_BUFS),
    # A one-way stream of 64 KiB writes into 16 KiB buffers: where a recv
    # finds several buffers' worth queued.
    ("default", "bulk", []),
    ("+ recv bundles", "bulk", BUNDLE),
    ("+ buffers filled by parts", "bulk", BY_PARTS),
    ("+ 64 KiB receive buffers", "bulk", BIG_BUFS),
]
AB_REPEATS = 5
# Techniques the issue names that ursa does not have; the report lists
# them so that their absence is visible, not silent.
AB_MISSING = ["send bundles: queued writes already leave in one sendmsg "
              "(the write-batch row measures that)"]


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


def one_run(a, b, kind, proto, conns, size, inflight, tmp, extra=()):
    mode = "sink" if kind == "bulk" else "echo"
    srv = Server(a.bindir, b, proto, mode, a.scpu, tmp, extra)
    load_args = ["--connections", str(conns), "--size", str(size),
                 "--inflight", str(inflight), "--duration", str(a.duration),
                 "--warmup", str(a.warmup)]
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
            if k in ("rt_per_s", "server_cpu_us_per_rt"):
                out[k + "_min"], out[k + "_max"] = min(vals), max(vals)
        else:
            out[k] = None
    return out


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


# Where a profiled server's samples fell, by the first rule that matches
# the symbol (kernel symbols; user space is one bucket).
PROFILE_BUCKETS = [
    ("copies", ("_copy_to_iter", "_copy_from_iter", "copy_user",
                "copy_page", "memcpy", "memmove", "__check_object_size",
                "__virt_addr_valid", "check_heap_object")),
    ("io_uring", ("io_", "__io_", "io_uring")),
    ("readiness (epoll, select, poll)", (
        "ep_", "do_epoll", "__x64_sys_epoll", "do_select", "core_sys_select",
        "do_sys_poll", "__pollwait", "poll_freewait", "sock_poll",
        "tcp_poll", "__x64_sys_select", "__x64_sys_pselect")),
    ("syscall entry and exit", (
        "entry_SYSCALL", "do_syscall", "syscall_", "__x64_sys_",
        "exit_to_user_mode", "__do_sys", "__sys_", "fdget", "__fget",
        "fput", "__fdget")),
    ("network stack", (
        "tcp", "__tcp", "ip_", "__ip", "ipv6", "ip6", "skb", "__skb",
        "kfree_skb", "sock_", "__sock", "sk_", "__sk", "inet", "net_",
        "__netif", "netif", "__dev", "dev_", "loopback", "process_backlog",
        "__napi", "napi", "release_sock", "lock_sock", "__kfree_skb",
        "consume_skb", "unix_", "bpf", "nf_", "__inet", "validate_xmit",
        "sch_", "__qdisc", "qdisc", "raw_v", "__release_sock",
        "__local_bh", "do_softirq", "__do_softirq", "handle_softirqs",
        "irq_exit", "bbr_", "raw_local_deliver", "__alloc_skb",
        "__build_skb", "ipt_", "nft_", "skb_defer", "page_frag")),
    ("memory allocation", ("kmem_cache", "__slab", "kfree", "__kmalloc",
                           "kmalloc", "__alloc", "alloc_pages", "slab_",
                           "___slab", "memcg", "mod_memcg", "__memcg")),
    ("locks, RCU, interrupts", ("_raw_spin", "__raw_callee", "native_",
                                "__rcu", "rcu_", "queued_spin", "__pv_",
                                "_raw_read", "_raw_write")),
    ("scheduler and wake-ups", (
        "schedule", "__schedule", "try_to_wake_up", "finish_task_switch",
        "pick_next", "enqueue_", "dequeue_", "update_", "ttwu", "psi_",
        "__switch_to", "__wake_up", "autoremove_wake", "select_task_rq",
        "native_sched", "sched_", "cpuidle", "default_idle", "set_next",
        "put_prev", "hrtimer", "__hrtimer", "ktime")),
]


# Frames that only pass time on to whoever called them: a sample in one is
# charged to the first caller that belongs to a bucket (interrupts enabled
# again after a wake-up count as the wake-up; at system-call entry, as the
# system call).
PROFILE_PASS_ON = ("pvm_", "__raw_callee_save", "native_", "__pv_", "asm_",
                   "sysvec_", "__sysvec", "irq_", "__irq", "_raw_spin_unlock",
                   "paravirt", "xen_")
# A sample in one of these user-space functions is the system call's trap.
SYSCALL_WRAPPERS = ("__send", "__libc_send", "__libc_recv", "__recv",
                    "epoll_wait", "__GI_epoll_wait", "__epoll_wait", "select",
                    "__select", "poll", "__poll", "__libc_read",
                    "__libc_write", "read", "write", "accept4", "syscall",
                    "__sys_io_uring_enter", "io_uring_enter",
                    "io_uring_submit", "__io_uring_submit", "recv", "send")
PROFILE_LOCKS = "locks, RCU, interrupts"


def attribute(frames):
    """The bucket of one sample's call chain, leaf first: the first frame
    that belongs to a bucket other than locks; a lock's time goes to the
    code that took the lock."""
    lock = False
    for sym, kernel in frames:
        if not kernel:
            return ("syscall entry and exit" if sym in SYSCALL_WRAPPERS
                    else "user space")
        if sym.startswith(PROFILE_PASS_ON):
            continue
        for name, prefixes in PROFILE_BUCKETS:
            if sym.startswith(prefixes):
                if name != PROFILE_LOCKS:
                    return name
                lock = True
                break
    return PROFILE_LOCKS if lock else "other kernel"


def profile(a, b, tmp):
    """perf record on the server at 64 connections x 64 B ping-pong;
    returns the share of its samples per bucket, or a reason."""
    if not shutil.which("perf"):
        return {"backend": b, "error": "perf is not installed"}
    srv = Server(a.bindir, b, "tcp", "echo", a.scpu, tmp)
    data = os.path.join(tmp, f"perf-{b}.data")
    cmd = [os.path.join(a.bindir, "ursa-load"), srv.addr, "--connections",
           "64", "--size", "64", "--duration", "3", "--warmup", "0"]
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
        return {"backend": b, "error": "perf record failed: "
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
        return {"backend": b, "error": f"perf gave {n} samples"}
    shares = {k: 100.0 * v / n for k, v in counts.items()}
    kernel = 100.0 * nk / n
    return {"backend": b, "kernel": kernel, "shares": shares, "samples": n}


def fmt(v, nd=1):
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def graphs(out, env, cases, bulk, iperf):
    """Writes the data files and one gnuplot script; returns graph names."""
    gdir = os.path.join(out, "graphs")
    os.makedirs(gdir, exist_ok=True)
    caption = (f"{env['cpu_model']}, {env['cpus']} CPUs, Linux "
               f"{env['kernel']}, commit {env['commit']}, {env['date']}, "
               f"server CPU {env['server_cpu']} / load CPU {env['load_cpu']}")
    caption = caption.replace('"', "'")
    made = []
    script = []

    def head(name, title, xlabel, ylabel, logx=False):
        made.append(name)
        s = [f'set title "{title}"', f'set xlabel "{xlabel}"',
             f'set ylabel "{ylabel}"', "set grid", "set key outside right",
             f'set label 99 "{caption}" at screen 0.01,0.015 font ",8"',
             "set bmargin 5", "set yrange [0:*]"]
        s.append("set logscale x 2" if logx else "unset logscale x")
        return s

    def lines(name, title, xlabel, ylabel, sel, xkey, ykey, logx=True):
        s = head(name, title, xlabel, ylabel, logx)
        plots = []
        for b in BACKENDS:
            pts = sorted((c[xkey], c[ykey], c.get(ykey + "_min", c[ykey]),
                          c.get(ykey + "_max", c[ykey]))
                         for c in cases if c["backend"] == b and sel(c)
                         and c[ykey] is not None)
            if not pts:
                continue
            path = os.path.join(gdir, f"{name}-{b}.dat")
            with open(path, "w") as f:
                for p in pts:
                    f.write("%s %s %s %s\n" % p)
            plots.append(f"'{path}' using 1:2:3:4 with yerrorlines lw 2 "
                         f"lc rgb '{COLOURS[b]}' title '{b}'")
        if plots:
            script.append((name, s + ["plot " + ", ".join(plots)]))
        else:
            made.remove(name)

    pingpong64 = lambda c: (c["kind"] == "pingpong" and c["proto"] == "tcp"
                            and c["size"] == 64)
    lines("rt_vs_conns", "Round trips per second, TCP 64 B ping-pong",
          "connections", "round trips / s", pingpong64, "conns", "rt_per_s")
    lines("cpu_vs_conns", "Server CPU time per round trip, TCP 64 B ping-pong",
          "connections", "server CPU us / round trip", pingpong64, "conns",
          "server_cpu_us_per_rt")
    lines("mb_vs_size", "Echo throughput by message size, TCP ping-pong, "
          "64 connections", "message size (bytes)", "MB/s each way",
          lambda c: c["kind"] == "pingpong" and c["proto"] == "tcp"
          and c["conns"] == 64, "size", "mb_per_s")

    # Latency p50/p99 by backend, one pair of bars each.
    lat = [c for c in cases if pingpong64(c) and c["conns"] == 64]
    if lat:
        s = head("latency", "Latency, TCP 64 B ping-pong, 64 connections "
                 "(solid p50, light p99)", "backend", "microseconds")
        path = os.path.join(gdir, "latency.dat")
        s.append("set xtics (" + ", ".join(
            f'"{b}" {i}' for i, b in enumerate(BACKENDS)) + ")")
        with open(path, "w") as f:
            for i, b in enumerate(BACKENDS):
                c = next((c for c in lat if c["backend"] == b), None)
                if c:
                    f.write(f"{i} {b} {c['p50_us']} {c['p99_us']} "
                            f"{int(COLOURS[b][1:], 16)}\n")
        s += ["set style fill solid 1.0 border -1", "set boxwidth 0.35",
              "set xrange [-0.6:%d]" % len(BACKENDS), "unset key",
              f"plot '{path}' using ($1-0.19):3:5 with boxes "
              "lc rgb variable, "
              f"'{path}' using ($1+0.19):4:5 with boxes fs transparent "
              "solid 0.35 lc rgb variable"]
        script.append(("latency", s))

    # Bulk stream against iperf3.
    if bulk:
        s = head("bulk", "Bulk stream, one connection, 64 KiB writes, "
                 "against iperf3", "", "MB/s")
        path = os.path.join(gdir, "bulk.dat")
        rows = [(c["backend"], c["mb_per_s"]) for c in bulk]
        if iperf:
            rows.append(("iperf3", iperf["mb_per_s"]))
        with open(path, "w") as f:
            for i, (b, v) in enumerate(rows):
                f.write(f"{i} {b} {v} {int(COLOURS[b][1:], 16)}\n")
        s += ["set style fill solid 1.0 border -1", "set boxwidth 0.6",
              "set xrange [-0.6:%d]" % len(rows), "unset key",
              f"plot '{path}' using 1:3:4:xtic(2) with boxes lc rgb variable"]
        script.append(("bulk", s))

    gp = []
    for name, body in script:
        for term, ext in (("svg size 1000,560 dynamic", "svg"),
                          ("pngcairo size 1000,560", "png")):
            gp += [f"set terminal {term}",
                   f"set output '{os.path.join(gdir, name)}.{ext}'"]
            gp += body
            gp += ["unset label", "reset"]
    with open(os.path.join(gdir, "graphs.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    r = subprocess.run(["gnuplot", os.path.join(gdir, "graphs.gp")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("bench: gnuplot failed: " + r.stderr[:2000], file=sys.stderr)
        return []
    return made


def ab_block(a, tmp, failures, progress):
    """Runs AB_VARIANTS interleaved; returns one summary per variant."""
    todo = [v for v in AB_VARIANTS if not a.filter or
            re.search(a.filter, f"ab-{v[1]}-{v[0]}")]
    runs = {i: [] for i in range(len(todo))}
    # At least 5 rounds, and each round starts one variant later, so that
    # no variant always runs first (the first run of a round measured
    # slower than the rest).
    for r in range(max(a.repeats, AB_REPEATS)):
        order = list(enumerate(todo))
        order = order[r % len(order):] + order[:r % len(order)]
        for i, (label, case, extra) in order:
            try:
                runs[i].append(one_run(a, "uring", *AB_CASES[case], tmp,
                                       extra))
            except (Failure, OSError, ValueError, KeyError,
                    subprocess.SubprocessError) as e:
                failures.append(f"ab {case} {label}: {e}")
    out = []
    for i, (label, case, extra) in enumerate(todo):
        if not runs[i]:
            continue
        s = summarise(runs[i])
        s.update({"label": label, "case": case, "flags": " ".join(extra),
                  "repeats": len(runs[i])})
        if s["errors"]:
            failures.append(f"ab {case} {label}: {s['errors']} echo errors")
        out.append(s)
        progress(f"ab {case}: {label}", f"{s['rt_per_s']:.0f} rt/s, server "
                 f"{s['server_cpu_us_per_rt']:.2f} us/rt")
    return out


def find(cases, backend, kind, proto, conns, size, inflight):
    return next((c for c in cases if c["backend"] == backend and
                 c["kind"] == kind and c["proto"] == proto and
                 c["conns"] == conns and c["size"] == size and
                 c["inflight"] == inflight), None)


def targets(cases, bulk, iperf, mem, prof):
    """The performance targets as this run measured them, each met or not,
    and for each one not met what bounds it (from this run's counters and
    profile).  Returns report lines."""
    rows, notes = [], []

    def ratio(x, y):
        return x / y if x is not None and y else None

    def row(name, value, goal, ok):
        rows.append(f"| {name} | {value} | {goal} | "
                    f"{'yes' if ok else 'no' if ok is not None else 'n/a'} |")
        return ok

    pp = lambda b, n: find(cases, b, "pingpong", "tcp", n, 64, 1)
    cpu_missed = False
    for n in (64, 256):
        u, e, sl = pp("uring", n), pp("epoll", n), pp("select", n)
        if not (u and e and sl):
            continue
        r1 = ratio(u["server_cpu_us_per_rt"], e["server_cpu_us_per_rt"])
        r2 = ratio(u["server_cpu_us_per_rt"], sl["server_cpu_us_per_rt"])
        ok1 = row(f"server CPU/rt, {n} conns, vs epoll",
                  f"{fmt(u['server_cpu_us_per_rt'], 2)} vs "
                  f"{fmt(e['server_cpu_us_per_rt'], 2)} us = {fmt(r1, 2)}x",
                  "<= 0.4x", r1 is not None and r1 <= 0.4)
        ok2 = row(f"server CPU/rt, {n} conns, vs select",
                  f"{fmt(u['server_cpu_us_per_rt'], 2)} vs "
                  f"{fmt(sl['server_cpu_us_per_rt'], 2)} us = {fmt(r2, 2)}x",
                  "<= 0.2x", r2 is not None and r2 <= 0.2)
        cpu_missed |= not (ok1 and ok2)
    enters_missed = []
    for n in (64, 256):
        u = pp("uring", n)
        if u and u.get("enters_per_rt") is not None:
            if not row(f"io_uring enters/rt, {n} conns",
                       fmt(u["enters_per_rt"], 3), "<= 0.1",
                       u["enters_per_rt"] <= 0.1):
                enters_missed.append((n, u))
    u1, b1, e1 = pp("uring", 1), pp("blocking", 1), pp("epoll", 1)
    one_missed = False
    if u1 and b1 and e1 and u1["p50_us"] and b1["p50_us"] and e1["p50_us"]:
        one_missed |= not row("1 conn p50 vs blocking",
                              f"{fmt(u1['p50_us'])} vs {fmt(b1['p50_us'])} us"
                              f" = {fmt(ratio(u1['p50_us'], b1['p50_us']), 2)}x",
                              "<= 1.05x", u1["p50_us"] <= 1.05 * b1["p50_us"])
        one_missed |= not row("1 conn p50 vs epoll",
                              f"{fmt(u1['p50_us'])} vs {fmt(e1['p50_us'])} us",
                              "not behind", u1["p50_us"] <= e1["p50_us"])
    ub = next((c for c in bulk if c["backend"] == "uring"), None)
    if ub and iperf:
        share = ub["mb_per_s"] / iperf["mb_per_s"]
        row("bulk 64 KiB stream vs iperf3",
            f"{fmt(ub['mb_per_s'])} vs {fmt(iperf['mb_per_s'])} MB/s = "
            f"{100 * share:.0f}%", ">= 90%", share >= 0.9)
    um = next((m for m in mem if m["backend"] == "uring"), None)
    if um and um.get("bytes_per_conn") is not None:
        row(f"RSS per idle connection ({um['held']} held)",
            f"{fmt(um['bytes_per_conn'], 0)} B", "<= 2048 B",
            um["bytes_per_conn"] <= 2048)
    behind, behind_notes = [], []
    for c in cases:
        if c["backend"] != "uring" or (c["kind"] == "pingpong" and
                                       c["proto"] == "tcp" and
                                       c["size"] == 64):
            continue
        e = find(cases, "epoll", c["kind"], c["proto"], c["conns"],
                 c["size"], c["inflight"])
        if not e:
            continue
        r1 = ratio(c["rt_per_s"], e["rt_per_s"])
        r2 = ratio(c["server_cpu_us_per_rt"], e["server_cpu_us_per_rt"])
        if (r1 is not None and r1 < 0.95) or (r2 is not None and r2 > 1.05):
            behind.append(f"{c['id'].rsplit('-', 1)[0]} (rt/s {fmt(r1, 2)}x, "
                          f"CPU {fmt(r2, 2)}x)")
            overlap = (c.get("rt_per_s_max") or 0) >= (e.get("rt_per_s_min")
                                                      or 0)
            behind_notes.append(
                f"{c['id'].rsplit('-', 1)[0]}: uring "
                f"{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])} rt/s, "
                f"epoll {fmt(e['rt_per_s_min'])}-{fmt(e['rt_per_s_max'])} "
                f"over {c['repeats']} repeats: "
                + ("one run each: no spread to judge by"
                   if c["repeats"] < 2 else
                   "the ranges overlap, so this run cannot tell the two "
                   "apart" if overlap else "no overlap: a gap beyond this "
                   "run's noise")
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
    row("other cases in this run vs epoll (rt/s >= 0.95x, CPU <= 1.05x)",
        "; ".join(behind) if behind else "none behind", "none behind",
        not behind)

    pu = next((p for p in prof if p["backend"] == "uring" and "shares" in p),
              None)
    pe = next((p for p in prof if p["backend"] == "epoll" and "shares" in p),
              None)
    if cpu_missed:
        e = pp("epoll", 64)
        if pu and pe and e:
            sh_u, sh_e = pu["shares"], pe["shares"]
            u = pp("uring", 64)
            cu, ce = u["server_cpu_us_per_rt"], e["server_cpu_us_per_rt"]
            stack_u = (sh_u["network stack"] + sh_u["copies"]) / 100 * cu
            stack_e = (sh_e["network stack"] + sh_e["copies"]) / 100 * ce
            over_e = (sh_e["readiness (epoll, select, poll)"] +
                      sh_e["syscall entry and exit"]) / 100 * ce
            sel = pp("select", 64)
            cs = sel["server_cpu_us_per_rt"] if sel else None
            floor_e = stack_u / ce
            floor_s = stack_u / cs if cs else None
            rest = sorted(((k, v / 100 * cu) for k, v in sh_u.items()
                           if k not in ("network stack", "copies") and
                           v >= 1.0), key=lambda kv: -kv[1])
            text = (
                f"**Server CPU per round trip.**  This run's profile of the "
                f"two servers at 64 connections (perf with call chains, "
                f"each sample charged to the first caller in a bucket; "
                f"table below) puts {stack_u:.2f} us of uring's {cu:.2f} us "
                f"per round trip in the TCP stack and its copies (epoll: "
                f"{stack_e:.2f} of {ce:.2f} us).  A server must do that work "
                f"whatever its event loop, so even if nothing else cost "
                f"anything uring would need {floor_e:.2f}x epoll's CPU"
                + (f" and {floor_s:.2f}x select's" if floor_s else "") + ".  ")
            above = ([f"0.4x epoll ({floor_e:.2f}x)"] if floor_e > 0.4
                     else []) + ([f"0.2x select ({floor_s:.2f}x)"]
                                 if floor_s and floor_s > 0.2 else [])
            if above:
                text += ("That floor alone is above " + " and ".join(above)
                         + ", which therefore cannot be met on loopback "
                         "TCP, where the network stack is most of a round "
                         "trip's cost.  ")
            text += ("Beyond the stack, uring's time went to " + ", ".join(
                f"{k} {v:.2f} us" for k, v in rest) + ".  ")
            text += (f"What io_uring removes is epoll's readiness checks and "
                     f"system-call entry and exit, {over_e:.2f} us per round "
                     f"trip here, while io_uring's own kernel code costs "
                     f"{sh_u['io_uring'] / 100 * cu:.2f} us.  Nothing was "
                     f"loosened to approach the target.")
            notes.append(text)
        else:
            notes.append("**Server CPU per round trip.**  Not met; no "
                         "profile in this run (see the profile section) to "
                         "show what bounds it.")
    u64 = pp("uring", 64)
    for n in (64, 256):
        u, e = pp("uring", n), pp("epoll", n)
        if not (u and e):
            continue
        lo, hi = u["server_cpu_us_per_rt_min"], u["server_cpu_us_per_rt_max"]
        ce = e["server_cpu_us_per_rt"]
        spread = ratio(hi, lo)
        vs_epoll = ratio(u["server_cpu_us_per_rt"], ce)
        if spread is None or spread < 1.5 or vs_epoll is None or \
                vs_epoll <= 0.4:
            continue
        # Repeats far apart: the median hides that the server settled in
        # one of two states, and which one it was in decides the target.
        notes.append(
            f"**Two states at {n} connections.**  uring's repeats ranged "
            f"{lo:.2f}-{hi:.2f} us of CPU per round trip "
            f"({fmt(u['rt_per_s_min'])}-{fmt(u['rt_per_s_max'])} round "
            f"trips/s): its best repeat was {lo / ce:.2f}x epoll's median, "
            f"its median {vs_epoll:.2f}x.  "
            + (f"The fastest repeat ran near the 64-connection case's rate "
               f"({fmt(u64['rt_per_s'])} round trips/s, "
               f"{fmt(u64['enters_per_rt'], 3)} enters per round trip); "
               if u64 and n != 64 else "")
            + f"the median repeat made {fmt(u['enters_per_rt'], 3)} enters "
            f"per round trip, so it woke for fewer completions each time, "
            f"and each wake-up costs CPU.  A repeat stays in the state it "
            f"falls into, so which state the repeats land in decides this "
            f"target; waiting for more completions per enter would hold "
            f"the fast state at the price of latency at low load "
            f"(docs/DESIGN.md, min-wait).")
    for n, u in enters_missed:
        notes.append(
            f"**Enters at {n} connections.**  {fmt(u['enters_per_rt'], 3)} "
            f"enters per round trip means one wait per "
            f"{1 / u['enters_per_rt']:.1f} round trips: each enter submits "
            f"everything queued and waits for one completion, and at {n} "
            f"connections the replies from the load generator arrive spread "
            f"out, so the server often finds few ready and waits again.  "
            f"Waiting for more completions at once would trade latency for "
            f"fewer enters (docs/DESIGN.md, min-wait).")
    if one_missed and u1 and e1 and b1:
        spread = (u1["rt_per_s_max"] - u1["rt_per_s_min"]) / u1["rt_per_s"]
        notes.append(
            f"**One connection.**  Each round trip is two cross-CPU "
            f"wake-ups (~{fmt(u1['p50_us'] / 2)} us each here).  uring's "
            f"p50 was {100 * (u1['p50_us'] / b1['p50_us'] - 1):.1f}% "
            f"above blocking's and its round trips/s ranged "
            f"{100 * spread:.0f}% across its own repeats in this run"
            + (", more than the 5% the target asks to resolve"
               if spread > 0.05 else "") + f".  uring makes {fmt(u1['enters_per_rt'], 1)} enters per "
            f"round trip against epoll's {fmt(e1['syscalls_per_rt'], 1)} "
            f"system calls; the second enter runs while the server would "
            f"otherwise sleep, so it costs CPU, not latency.")
    if behind_notes:
        notes.append("**Cases behind epoll.**  " + "; ".join(behind_notes)
                     + ".")
    L = ["## Targets", "",
         "The performance targets, as this run measured them; for each one "
         "not met, what this run's counters and profile show bounds it.", "",
         "| target | measured | goal | met |", "|---|---|---|---|"] + rows
    L += [""] + [n + "\n" for n in notes]
    if prof:
        names = [n for n, _ in PROFILE_BUCKETS] + ["other kernel",
                                                   "user space"]
        L += ["### Where the server's CPU goes (perf, 64 connections x 64 B)",
              "", "| | " + " | ".join(p["backend"] for p in prof) + " |",
              "|---" * (len(prof) + 1) + "|"]
        for n in names:
            L.append(f"| {n} | " + " | ".join(
                f"{p['shares'][n]:.1f}%" if "shares" in p else "n/a"
                for p in prof) + " |")
        errs = [f"{p['backend']}: {p['error']}" for p in prof if "error" in p]
        if errs:
            L += ["", "No profile for " + "; ".join(errs) + "."]
        L.append("")
    return L


def report(out, env, cases, bulk, iperf, mem, made, previous, ab=None,
           prof=()):
    L = ["# ursa bench report", ""]
    L += ["| machine | |", "|---|---|"]
    for k in ["cpu_model", "cpus", "kernel", "liburing", "libuv", "commit",
              "date", "placement", "server_cpu", "load_cpu"]:
        L.append(f"| {k} | {env[k]} |")
    L.append(f"| io_uring features used | {', '.join(env['ring_features_used'])} |")
    L += ["", "The backends of a case run interleaved, one repeat of each in "
          "turn, in an order that rotates by one each repeat, after one "
          "warm-up run that is not counted.  "
          "Each figure is the median of the repeats, with [min-max] where "
          "it matters; ratios are to epoll in the same run (below 1 is better "
          "for CPU, above 1 better for round trips).  Server CPU is the "
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
    L += targets(cases, bulk, iperf, mem, list(prof))
    prev = {c["id"]: c for c in (previous or {}).get("cases", [])}
    groups = {}
    for c in cases:
        groups.setdefault(c["id"].rsplit("-", 1)[0], []).append(c)
    for g, cs in groups.items():
        c0 = cs[0]
        L += [f"## {c0['proto'].upper()} {c0['kind']}, {c0['conns']} "
              f"connections, {c0['size']} B, {c0['inflight']} in flight", ""]
        hdr = ("| backend | round trips/s | vs epoll | server CPU us/rt | "
               "vs epoll | p50 us | p99 us | p99.9 us | syscalls/rt | "
               "enters/rt | errors (refused) |")
        if prev:
            hdr += " rt/s change |"
        L += [hdr, "|---" * (hdr.count("|") - 1) + "|"]
        ep = next((c for c in cs if c["backend"] == "epoll"), None)
        for c in cs:
            r1 = (c["rt_per_s"] / ep["rt_per_s"]) if ep and ep["rt_per_s"] else None
            r2 = (c["server_cpu_us_per_rt"] / ep["server_cpu_us_per_rt"]
                  if ep and ep["server_cpu_us_per_rt"] else None)
            row = (f"| {c['backend']} | {fmt(c['rt_per_s'])} "
                   f"[{fmt(c['rt_per_s_min'])}-{fmt(c['rt_per_s_max'])}] | "
                   f"{fmt(r1, 2)} | {fmt(c['server_cpu_us_per_rt'], 2)} "
                   f"[{fmt(c['server_cpu_us_per_rt_min'], 2)}-"
                   f"{fmt(c['server_cpu_us_per_rt_max'], 2)}] | {fmt(r2, 2)} | "
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
    if mem:
        L += [f"## Memory: {mem[0]['conns']} idle connections", "",
              "| backend | held | RSS before | RSS with them | bytes per "
              "connection | note |", "|---|---|---|---|---|---|"]
        for m in mem:
            L.append(f"| {m['backend']} | {m['held']} | {m['rss_base_kb']} KiB "
                     f"| {m['rss_peak_kb']} KiB | {fmt(m['bytes_per_conn'], 0)} "
                     f"| {m['note']} |")
        L.append("")
    if ab:
        L += ["## A/B: io_uring features one at a time", "",
              "The uring server with one default feature switched off "
              "(`--uring-disable`, `--write-batch`, `--echo-copy`) or one "
              "opt-in feature switched on (rows starting with +), against "
              "its default set-up; the variants' runs are interleaved, in "
              "an order that rotates each round (at least 5 rounds).  TCP, "
              "64 connections, 64 B (4k: 4 KiB; 64k: 16 connections, 64 "
              "KiB; bulk: 1 connection sending 64 KiB writes one way, a "
              "round trip being one write); pipelined is 16 in flight "
              "(pipelined 64k: 64 connections, 8 messages of 64 KiB in "
              "flight on each).  "
              "The feature's effect is the ratio of the run with it to the "
              "run without it, for either kind of row: above 1 means the "
              "feature helps by that factor (more round trips/s, or less "
              "CPU per round trip).", "",
              "| case | variant | flags | round trips/s | feature's effect "
              "(rt/s) | server CPU us/rt | feature's effect (CPU) | "
              "enters/rt | ENOBUFS/rt | p50 us |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        base = {v["case"]: v for v in ab if v["label"] == "default"}
        for v in ab:
            b0 = base.get(v["case"])
            with_, without = (v, b0) if v["label"].startswith("+") else \
                (b0, v)
            g1 = (with_["rt_per_s"] / without["rt_per_s"]
                  if b0 and without["rt_per_s"] and v is not b0 else None)
            g2 = (without["server_cpu_us_per_rt"] /
                  with_["server_cpu_us_per_rt"]
                  if b0 and with_["server_cpu_us_per_rt"] and v is not b0
                  else None)
            L.append(f"| {v['case']} | {v['label']} | `{v['flags'] or '-'}` "
                     f"| {fmt(v['rt_per_s'])} [{fmt(v['rt_per_s_min'])}-"
                     f"{fmt(v['rt_per_s_max'])}] | {fmt(g1, 2)} | "
                     f"{fmt(v['server_cpu_us_per_rt'], 2)} | {fmt(g2, 2)} | "
                     f"{fmt(v['enters_per_rt'], 3)} | "
                     f"{fmt(v.get('enobufs_per_rt'), 3)} | "
                     f"{'-' if v['case'] == 'bulk' else fmt(v['p50_us'])} |")
        L += ["", "Not measured, because ursa leaves it out (docs/DESIGN.md "
              "says why): " + "; ".join(AB_MISSING) + ".", ""]
    L += ["UDP cases: each of ursa-load's \"connections\" is a socket of its "
          "own, connected to the server; a lost datagram counts as an "
          "error.", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a subset that covers every backend (the default)")
    ap.add_argument("--full", action="store_true", help="the whole matrix")
    ap.add_argument("--filter", help="only cases whose id matches this regex")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--placement", choices=["apart", "same"], default="apart",
                    help="server and load on different CPUs, or the same one")
    ap.add_argument("--out", default="bench/out/latest")
    ap.add_argument("--compare", help="a previous results.json to compare with")
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-bulk", action="store_true")
    ap.add_argument("--idle-conns", type=int, default=IDLE_CONNS)
    ap.add_argument("--no-ab", action="store_true",
                    help="skip the io_uring feature A/B block")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the perf profile of uring and epoll")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    if a.duration is None:
        a.duration = 3.0 if a.full else 1.0
    if a.duration <= 0:
        ap.error("--duration must be above 0")
    ncpu = os.cpu_count() or 1
    a.scpu = 0
    a.lcpu = 1 if a.placement == "apart" and ncpu > 1 else 0
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
    env = environment(a.bindir, a.placement, a.scpu, a.lcpu)
    todo = [c for c in matrix(a.full)
            if not a.filter or re.search(a.filter, case_id(*c))]
    bulk_todo = [] if a.no_bulk else [b for b in BACKENDS if not a.filter or
                                      re.search(a.filter, f"tcp-bulk-{b}")]
    mem_todo = [] if a.no_memory else [b for b in BACKENDS if not a.filter or
                                       re.search(a.filter, f"tcp-idle-{b}")]
    ab_n = 0 if a.no_ab else len(AB_VARIANTS)
    n = len(todo) + len(bulk_todo) + len(mem_todo) + ab_n
    per_run = a.duration + a.warmup + 0.4
    t0 = time.time()
    k = 0
    tmp = tempfile.mkdtemp(prefix="ursa-bench-")
    cases, bulk, mem, failures = [], [], [], []

    def progress(label, what):
        el = time.time() - t0
        left = el / k * (n - k) if k else per_run * a.repeats * n
        print(f"[{k}/{n}] {label}: {what}  (elapsed {el:.0f}s, ~{left:.0f}s "
              "left)", flush=True)

    # The backends of one case run interleaved, repeat by repeat, in an
    # order that rotates: targets are ratios between backends, so drift on
    # a shared machine must fall on all of them alike.  One run before
    # everything is thrown away: the first run after start-up measured
    # slower than the rest.
    if todo:
        try:
            one_run(a, todo[0][0], *todo[0][1:], tmp)
        except (Failure, OSError, ValueError, KeyError,
                subprocess.SubprocessError):
            pass
    points = []
    for c in todo:
        if c[1:] not in points:
            points.append(c[1:])
    for point in points:
        backends = [c[0] for c in todo if c[1:] == point]
        runs = {b: [] for b in backends}
        for r in range(a.repeats):
            for b in backends[r % len(backends):] + backends[:r % len(backends)]:
                try:
                    runs[b].append(one_run(a, b, *point, tmp))
                except (Failure, OSError, ValueError, KeyError,
                        subprocess.SubprocessError) as e:
                    cid = case_id(b, *point)
                    failures.append(f"{cid}: {e}")
                    print(f"    {cid}: {e}", flush=True)
        for b in backends:
            kind, proto, conns, size, inflight = point
            cid = case_id(b, *point)
            k += 1
            if not runs[b]:
                continue
            s = summarise(runs[b])
            s.update({"id": cid, "kind": kind, "backend": b, "proto": proto,
                      "conns": conns, "size": size, "inflight": inflight,
                      "repeats": len(runs[b])})
            cases.append(s)
            if s["errors"] > s["refused"]:
                failures.append(f"{cid}: {s['errors']} echo errors")
            progress(cid, f"{s['rt_per_s']:.0f} rt/s, server "
                     f"{s['server_cpu_us_per_rt']:.2f} us/rt, p99 "
                     f"{s['p99_us']:.0f} us, errors {s['errors']}")
    for b in bulk_todo:
        cid = f"tcp-bulk-1c-65536b-4i-{b}"
        runs = []
        for _ in range(a.repeats):
            try:
                runs.append(one_run(a, b, "bulk", "tcp", 1, 65536, 4, tmp))
            except (Failure, OSError, ValueError, KeyError,
                    subprocess.SubprocessError) as e:
                failures.append(f"{cid}: {e}")
        k += 1
        if runs:
            s = summarise(runs)
            s.update({"id": cid, "kind": "bulk", "backend": b, "proto": "tcp",
                      "conns": 1, "size": 65536, "inflight": 4,
                      "repeats": len(runs)})
            bulk.append(s)
            if s["errors"]:
                failures.append(f"{cid}: {s['errors']} errors")
            progress(cid, f"{s['mb_per_s']:.0f} MB/s")
    iperf = iperf3(a, tmp) if bulk_todo else None
    if bulk_todo:
        print("    iperf3: " + (f"{iperf['mb_per_s']:.0f} MB/s" if iperf
                                 else "not run"), flush=True)
    for b in mem_todo:
        try:
            m = memory(a, b, tmp)
            mem.append(m)
            k += 1
            progress(f"tcp-idle-{b}", f"{fmt(m['bytes_per_conn'], 0)} bytes "
                     f"per idle connection ({m['held']} held) {m['note']}")
        except (Failure, OSError, ValueError, KeyError,
                subprocess.SubprocessError) as e:
            k += 1
            failures.append(f"tcp-idle-{b}: {e}")
    prof = []
    if not a.no_profile:
        for b in ("uring", "epoll"):
            try:
                prof.append(profile(a, b, tmp))
            except (Failure, OSError, ValueError,
                    subprocess.SubprocessError) as e:
                prof.append({"backend": b, "error": str(e)[:200]})
        print("    profile: " + ", ".join(
            f"{p['backend']} " + (f"{p['kernel']:.0f}% kernel" if "kernel" in p
                                  else p["error"]) for p in prof), flush=True)
    ab = []
    if not a.no_ab:
        def ab_progress(label, what):
            nonlocal k
            k += 1
            progress(label, what)
        ab = ab_block(a, tmp, failures, ab_progress)
    shutil.rmtree(tmp, ignore_errors=True)

    rows = cases + bulk
    if iperf:
        rows.append({"id": "tcp-bulk-1c-65536b-iperf3", "kind": "bulk",
                     "backend": "iperf3", "proto": "tcp", "conns": 1,
                     "size": 65536, "inflight": None,
                     "mb_per_s": iperf["mb_per_s"], "errors": 0,
                     "repeats": a.repeats})
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"env": env, "cases": rows, "memory": mem, "ab": ab,
                   "profile": prof,
                   "failures": failures}, f, indent=1)
    with open(os.path.join(a.out, "results.csv"), "w") as f:
        f.write(",".join(KEYS) + "\n")
        for r in rows:
            f.write(",".join("" if r.get(key) is None else str(r[key])
                             for key in KEYS) + "\n")
    made = graphs(a.out, env, cases, bulk, iperf)
    report(a.out, env, cases, bulk, iperf, mem, made, previous, ab, prof)
    print(f"bench: {len(cases) + len(bulk)} cases, {len(mem)} memory runs in "
          f"{time.time() - t0:.0f}s; results in {a.out}/ (results.json, "
          f"results.csv, report.md, graphs/)")
    if failures:
        print("bench: correctness failures:\n  " + "\n  ".join(failures),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
