"""http.py - the HTTP block and the greet block.

HTTP: wrk (one thread, on the load CPU) against ursa-http (uring and
ursa-epoll), nginx (one worker, access log off, `return 200`) and h2o
(one thread), each on the server CPU and answering GET /plaintext with
the same 13 bytes, "Hello, World!", checked byte for byte before every
run.  Requests/s and wrk's p50/p99 are wrk's; server CPU per request is
the server's processes' CPU (from /proc, all of them: nginx's master and
worker) over wrk's run, divided by wrk's requests.

Greet: the tutorial server (accept, send a greeting, close) on every
echo-server backend, driven by `ursa-load --greet`, which reads each
greeting byte for byte to the server's EOF and connects again:
connections/s and server CPU per connection."""
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time

from .outside import cpu_seconds
from .runner import Failure, interleaved, one_run, summaries

BODY = b"Hello, World!"
HTTP_SERVERS = ["ursa-http uring", "ursa-http ursa-epoll", "nginx", "h2o"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu(pid):
    """CPU seconds of pid and its children (nginx's master and worker)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == pid or int(fields[1]) == pid:
            total += cpu_seconds(int(d))
    return total


def check_body(port):
    """GET /plaintext once: status 200 and exactly BODY, or Failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    head, _, body = got.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or body != BODY:
        raise Failure(f"port {port}: /plaintext answered {got[:200]!r}")
    return len(got)


class HttpServer:
    """One of HTTP_SERVERS on cpu, in tmp; .pid, .port, .stop()."""

    def __init__(self, a, name, cpu, tmp, root=None):
        """root: a directory whose files it also serves (nginx with
        sendfile on)."""
        self.port = free_port()
        self.dir = os.path.join(tmp, "http-" + name.replace(" ", "-"))
        os.makedirs(self.dir, exist_ok=True)
        pin = ["taskset", "-c", str(cpu)]
        if name.startswith("ursa-http"):
            cmd = pin + [os.path.join(a.bindir, "ursa-http"), "--backend",
                         name.split()[1], "--listen",
                         f"127.0.0.1:{self.port}"]
            cmd += ["--root", root] if root else []
        elif name == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            temp = "\n".join(f"  {k}_temp_path {self.dir}/{k};" for k in
                             ("client_body", "proxy", "fastcgi", "uwsgi",
                              "scgi"))
            with open(conf, "w") as f:
                f.write(("user root;\n" if root and os.geteuid() == 0
                         else "") + f"""worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{self.port};
{f"    root {root};{chr(10)}    sendfile on;{chr(10)}    tcp_nopush on;" if root else ""}
    location = /plaintext {{
      default_type text/plain;
      return 200 "Hello, World!";
    }}
  }}
}}
""")
            cmd = pin + ["nginx", "-p", self.dir, "-e",
                         os.path.join(self.dir, "error.log"), "-c", conf]
        elif name == "h2o":
            conf = os.path.join(self.dir, "h2o.conf")
            with open(os.path.join(self.dir, "plaintext.txt"), "wb") as f:
                f.write(BODY)
            # The file handler: h2o's fast path for fixed bytes (its mruby
            # handler would run a script per request).
            with open(conf, "w") as f:
                f.write(f"""listen:
  host: 127.0.0.1
  port: {self.port}
num-threads: 1
user: root
pid-file: {self.dir}/h2o.pid
error-log: {self.dir}/error.log
hosts:
  default:
    paths:
      /plaintext:
        file.file: {self.dir}/plaintext.txt
""" + (f"""      /:
        file.dir: {root}
""" if root else ""))
            cmd = pin + ["h2o", "-c", conf]
        else:
            raise Failure(f"unknown http server {name}")
        self.name = name
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.pid = self.p.pid
        for _ in range(100):
            try:
                self.head = check_body(self.port)
                return
            except (OSError, Failure) as e:
                err = e
                if self.p.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise Failure(f"{name} did not serve /plaintext: {err}; "
                      f"{self.p.stderr.read()[-300:] if self.p.stderr else ''}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM if self.name != "nginx"
                               else signal.SIGQUIT)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def parse_wrk(out):
    """(requests, requests/s, p50 us, p99 us, errors) from wrk --latency."""
    def us(v, unit):
        return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
    reqs = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = dict((m.group(1), us(m.group(2), m.group(3))) for m in
               re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out,
                           re.M))
    errors = sum(int(x) for x in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    if not (reqs and rps):
        raise Failure(f"wrk: no result in {out[-300:]!r}")
    return (int(reqs.group(1)), float(rps.group(1)), pct.get("50"),
            pct.get("99"), errors)


def http_run(a, name, conns, tmp):
    srv = HttpServer(a, name, a.scpu, tmp)
    try:
        c0 = tree_cpu(srv.pid)
        # wrk is the only child reaped in this window (the server after).
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        r = subprocess.run(["taskset", "-c", str(a.lcpu), "wrk", "-t1",
                            f"-c{conns}", f"-d{max(1, round(a.duration))}",
                            "--latency",
                            f"http://127.0.0.1:{srv.port}/plaintext"],
                           capture_output=True, text=True, timeout=120)
        wall = time.monotonic() - t0
        c1 = tree_cpu(srv.pid)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        srv.stop()
    client = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    reqs, rps, p50, p99, errors = parse_wrk(r.stdout)
    if r.returncode:
        raise Failure(f"wrk against {name}: exit {r.returncode}: "
                      f"{r.stderr[-200:]}")
    return {"rt_per_s": rps, "server_cpu_us_per_rt": (c1 - c0) * 1e6 /
            max(reqs, 1), "p50_us": p50, "p99_us": p99,
            "server_cpu_share": (c1 - c0) / wall,
            "client_cpu_share": client / wall, "response_bytes": srv.head,
            "errors": errors, "refused": 0}


def http_block(a, tmp, conns_list, failures, progress):
    """Every server of HTTP_SERVERS at each count, interleaved."""
    missing = [t for t in ("wrk", "nginx", "h2o") if not shutil.which(t)]
    if missing:
        failures.append("http: not installed: " + ", ".join(missing))
        return []
    todo = [s for s in HTTP_SERVERS if not a.filter or
            re.search(a.filter, "http-" + s.replace(" ", "-"))]
    rows = []
    for n in conns_list:
        runs = interleaved(todo, a.repeats, lambda s: http_run(a, s, n, tmp),
                           lambda s: f"http {n}c {s}", failures)
        rows += summaries(
            todo, runs,
            lambda s: {"id": f"http-plaintext-{n}c-{s.replace(' ', '-')}",
                       "server": s, "conns": n},
            failures, progress,
            lambda r: f"{r['rt_per_s']:.0f} req/s, server "
                      f"{r['server_cpu_us_per_rt']:.2f} us/req")
    return rows


def greet_block(a, tmp, backends, failures, progress):
    """The greet server on each backend under ursa-load --greet (16
    connections, each reconnecting as soon as its greeting ends)."""
    runs = interleaved(
        backends, a.repeats,
        lambda b: one_run(a, b, "greet", "tcp", 16, 64, 1, tmp),
        lambda b: f"greet {b}", failures)
    return summaries(
        backends, runs,
        lambda b: {"id": f"tcp-greet-16c-{b}", "kind": "greet",
                   "backend": b, "proto": "tcp", "conns": 16},
        failures, progress,
        lambda s: f"{s['rt_per_s']:.0f} connections/s, server "
                  f"{s['server_cpu_us_per_rt']:.2f} us each")
