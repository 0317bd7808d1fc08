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

from .hosts import Place, server_pid
from .runner import Failure, interleaved, one_run, summaries

BODY = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'
HTTP_SERVERS = ["ursa-http uring", "ursa-http ursa-epoll", "nginx", "h2o"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path="/plaintext", body=None, host="127.0.0.1"):
    """One request (GET, or POST of body) on a connection of its own:
    (the whole response, its body); Failure unless the status is 200."""
    head = (f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1\r\n"
            "Host: x\r\nConnection: close\r\n").encode()
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n".encode()
    with socket.create_connection((host, port), timeout=5) as s:
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


def check_body(port, host="127.0.0.1"):
    """GET /plaintext once: status 200 and exactly BODY, or Failure; the
    response's whole length."""
    got, body = request(port, host=host)
    if body != BODY:
        raise Failure(f"port {port}: /plaintext answered {got[:200]!r}")
    return len(got)


class HttpServer:
    """One of HTTP_SERVERS on cpu, in tmp; .pid, .port, .host (the
    address the load connects to), .place, .stop()."""

    def __init__(self, a, name, cpu, tmp, root=None, place=None, addr=None):
        """root: a directory whose files it also serves (nginx with
        sendfile on); place (hosts.Place): the host it runs on, listening
        on every address, reached at addr."""
        self.place = place or Place(bindir=a.bindir)
        self.host = addr or "127.0.0.1"
        listen = "0.0.0.0" if addr else "127.0.0.1"
        bindir = self.place.bindir or a.bindir
        # On another host the port is a guess at a free one there.
        self.port = free_port()
        self.dir = os.path.join(self.place.tmp or tmp,
                                "http-" + name.replace(" ", "-"))
        self.place.run(["mkdir", "-p", self.dir])
        pin = ["taskset", "-c", str(cpu)]
        if name.startswith("ursa-http"):
            cmd = pin + [os.path.join(bindir, "ursa-http"), "--backend",
                         name.split()[1], "--listen",
                         f"{listen}:{self.port}"]
            cmd += ["--root", root] if root else []
            # "ursa-http uring splice": file writes spliced through pipes.
            cmd += ["--uring-enable", "file_splice"] if name.endswith(
                " splice") else []
        elif name == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            temp = "\n".join(f"  {k}_temp_path {self.dir}/{k};" for k in
                             ("client_body", "proxy", "fastcgi", "uwsgi",
                              "scgi"))
            self.place.write(conf, ("user root;\n" if root and
                                    self.place.root else "") + f"""\
worker_processes 1;
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
    listen {listen}:{self.port};
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
            self.place.write(os.path.join(self.dir, "plaintext.txt"),
                             BODY.decode())
            self.place.write(os.path.join(self.dir, "message.json"),
                             JSON.decode())
            # The file handler: h2o's fast path for fixed bytes (its mruby
            # handler would run a script per request).
            self.place.write(conf, f"""listen:
  host: {listen}
  port: {self.port}
num-threads: 1
{"user: root" if self.place.root else ""}
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
        self.p = self.place.popen(cmd)
        self.pid = server_pid(self.p, self.place)
        for _ in range(100):
            try:
                self.head = check_body(self.port, self.host)
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
            sig = signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT
            if self.place.host:
                self.place.run(["kill", f"-{sig.name[3:]}", str(self.pid)],
                               check=False)
            else:
                self.p.send_signal(sig)
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
