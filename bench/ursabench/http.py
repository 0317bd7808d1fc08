"""http.py - the HTTP servers the HTTP, static and stall blocks drive,
and the greet block.

The servers: ursa-http (uring and ursa-epoll), nginx (one worker, access
log off, `return`) and h2o (one thread), each on the server CPU; each
answers GET /plaintext with the same 13 bytes, "Hello, World!" (checked
byte for byte at start), GET /json with the same 27-byte document, and a
POST to /upload with a short receipt once it has read the body (ursa-http:
its length and hash; nginx: `return 200`, which reads and discards it;
h2o: a mruby handler that reads it).  The HTTP block itself is in
http_profiles.py.

Greet: the tutorial server (accept, send a greeting, close) on every
echo-server backend, driven by `ursa-load --greet`, which reads each
greeting byte for byte to the server's EOF and connects again:
connections/s and server CPU per connection."""
import os
import re
import signal
import socket
import subprocess
import time

from .outside import cpu_seconds
from .runner import Failure, interleaved, one_run, summaries

BODY = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'
HTTP_SERVERS = ["ursa-http uring", "ursa-http ursa-epoll", "nginx", "h2o"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def family(pid):
    """pid and its children (nginx's master and worker), by /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(d) == pid or ppid == pid:
            out.append(int(d))
    return out


def tree_cpu(pid):
    """CPU seconds of pid and its children."""
    total = 0.0
    for p in family(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def request(port, path="/plaintext", body=None):
    """One request (GET, or POST of body) on a connection of its own:
    (the whole response, its body); Failure unless the status is 200."""
    head = (f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1\r\n"
            "Host: x\r\nConnection: close\r\n").encode()
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + b"\r\n" + (body or b""))
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    top, _, rest = got.partition(b"\r\n\r\n")
    if not top.startswith(b"HTTP/1.1 200"):
        raise Failure(f"port {port}: {path} answered {got[:200]!r}")
    return got, rest


def check_body(port):
    """GET /plaintext once: status 200 and exactly BODY, or Failure; the
    response's whole length."""
    got, body = request(port)
    if body != BODY:
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
  # ursa-http and h2o keep a connection for any number of requests.
  keepalive_requests 1000000;
{temp}
  server {{
    listen 127.0.0.1:{self.port};
{f"    root {root};{chr(10)}    sendfile on;{chr(10)}    tcp_nopush on;" if root else ""}
    location = /plaintext {{
      default_type text/plain;
      return 200 "Hello, World!";
    }}
    location = /json {{
      default_type application/json;
      return 200 '{JSON.decode()}';
    }}
    location = /upload {{
      default_type text/plain;
      client_max_body_size 1m;
      return 200 "received\\n";
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
            with open(os.path.join(self.dir, "message.json"), "wb") as f:
                f.write(JSON)
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
      /json:
        file.file: {self.dir}/message.json
      /upload:
        mruby.handler: |
          Proc.new do |env|
            n = env["rack.input"] ? env["rack.input"].read.bytesize : 0
            [200, {{"content-type" => "text/plain"}}, ["bytes=#{{n}}\\n"]]
          end
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
