#!/usr/bin/env python3
"""http_test.py - ursa-http on both backends, against curl and raw
sockets: keep-alive, HEAD, chunked and Content-Length uploads checked by
length and checksum, Expect: 100-continue, pipelined requests answered
in order, a request split byte by byte, each limit answered with its
status and the connection closed (400, 405, 413, 414, 431, 408 for a
slowloris peer), the idle timeout, static files byte-exact with every
way out of the root refused (.., encoded dots, symlinks, absolute
paths), --threads, and bad flags."""
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import zlib

import httpserver
from checks import check, finish

HTTP = sys.argv[1]
LOAD = sys.argv[2]
CURL = "curl"



def Http(backend, *args):
    return httpserver.Http(HTTP, backend, *args)


def curl(*args, data=None):
    r = subprocess.run([CURL, "-s", "-S", "--max-time", "20", *args],
                       input=data, capture_output=True, timeout=60)
    return r


def raw(port, payload, timeout=5, close_wait=True):
    """Sends payload, reads until the server closes (or timeout); the
    bytes read and whether the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        got, closed = b"", False
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
                got += b
                if not close_wait:
                    break
        except socket.timeout:
            pass
    return got, closed


def responses(data):
    """Splits a byte stream of responses: [(status, headers dict, body)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        if status == 100:
            n = 0
        out.append((status, hdrs, rest[:n]))
        data = rest[n:]
    return out


root = tempfile.mkdtemp(prefix="ursa-http-root-")
os.makedirs(os.path.join(root, "sub"))
big = random.randbytes(3 * 1024 * 1024 + 17)
with open(os.path.join(root, "sub", "big.bin"), "wb") as f:
    f.write(big)
with open(os.path.join(root, "index.html"), "w") as f:
    f.write("<h1>ursa</h1>\n")
secret_dir = tempfile.mkdtemp(prefix="ursa-http-outside-")
secret = os.path.join(secret_dir, "secret.txt")
with open(secret, "w") as f:
    f.write("not to be served\n")
os.symlink(secret, os.path.join(root, "link.txt"))
os.symlink("../" + os.path.basename(secret_dir), os.path.join(root, "up"))

for be in ("uring", "ursa-epoll"):
    h = Http(be, "--root", root, "--header-timeout", "1",
             "--idle-timeout", "2", "--max-body", "4000000",
             "--max-url", "1024", "--max-headers", "20",
             "--max-header-bytes", "4096")
    u = h.url
    # The two TechEmpower routes, exactly.
    r = curl("-i", u + "/plaintext")
    st = responses(r.stdout)
    check(len(st) == 1 and st[0][0] == 200 and st[0][2] == b"Hello, World!"
          and st[0][1].get("content-type") == "text/plain" and
          re.match(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$",
                   st[0][1].get("date", "")),
          f"{be}: /plaintext {r.stdout[:300]!r}")
    r = curl(u + "/json")
    check(r.stdout == b'{"message":"Hello, World!"}', f"{be}: /json")
    # Keep-alive: curl reuses the one connection for three requests.
    r = curl("-v", u + "/plaintext", u + "/json", u + "/plaintext")
    check(r.stdout == b'Hello, World!{"message":"Hello, World!"}Hello, '
          b'World!' and r.stderr.count(b"Re-using existing connection") == 2,
          f"{be}: keep-alive {r.stderr[-400:]!r}")
    # HEAD: the GET's headers, no body.
    r = curl("-I", u + "/plaintext")
    st = responses(r.stdout)
    check(st and st[0][0] == 200 and st[0][1].get("content-length") == "13"
          and r.stdout.endswith(b"\r\n\r\n"), f"{be}: HEAD {r.stdout!r}")
    # Uploads: chunked and by Content-Length, answered with length and
    # checksum; a big one with Expect: 100-continue.
    body = random.randbytes(200000)
    want = f"bytes={len(body)} crc32={zlib.crc32(body):08x}\n".encode()
    r = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
             u + "/upload", data=body)
    check(r.stdout == want, f"{be}: chunked upload {r.stdout!r} {want!r}")
    r = curl("--data-binary", "@-", u + "/upload", data=body)
    check(r.stdout == want, f"{be}: Content-Length upload {r.stdout!r}")
    body3 = random.randbytes(3000000)
    r = curl("-v", "-H", "Expect: 100-continue", "--data-binary", "@-",
             u + "/upload", data=body3)
    check(r.stdout == f"bytes={len(body3)} crc32={zlib.crc32(body3):08x}\n"
          .encode() and b"100 Continue" in r.stderr,
          f"{be}: Expect: 100-continue {r.stdout!r}")
    # Static files, byte for byte, and HEAD of one.
    r = curl(u + "/sub/big.bin")
    check(r.stdout == big, f"{be}: a 3 MiB file ({len(r.stdout)} bytes)")
    r = curl(u + "/")
    check(r.stdout == b"<h1>ursa</h1>\n", f"{be}: / is index.html")
    r = curl("-I", u + "/sub/big.bin")
    check(f"Content-Length: {len(big)}".encode() in r.stdout and
          r.stdout.endswith(b"\r\n\r\n"), f"{be}: HEAD of a file")
    r = curl("-o", "/dev/null", "-w", "%{http_code}", u + "/nothing")
    check(r.stdout == b"404", f"{be}: a missing file is 404")
    # Every way out of the root is refused, and the secret never sent.
    for path in ("/../" + os.path.basename(secret_dir) + "/secret.txt",
                 "/%2e%2e/" + os.path.basename(secret_dir) + "/secret.txt",
                 "/%2E%2E%2F" + os.path.basename(secret_dir) + "%2Fsecret.txt",
                 "/sub/..%2f..%2f" + os.path.basename(secret_dir) +
                 "/secret.txt",
                 "/link.txt", "/up/secret.txt", "//etc/passwd",
                 "/sub/%00x"):
        got, _ = raw(h.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        st = responses(got)
        check(st and st[0][0] in (400, 403, 404) and
              b"not to be served" not in got and b"root:" not in got,
              f"{be}: {path} refused ({got[:80]!r})")
    # Pipelined: three requests in one write, answered in order.
    got, closed = raw(h.port, b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /plaintext HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
    st = responses(got)
    check([s[2] for s in st] == [b"Hello, World!",
                                 b'{"message":"Hello, World!"}',
                                 b"Hello, World!"] and closed and
          st[-1][1].get("connection") == "close",
          f"{be}: pipelined in order, closed after Connection: close "
          f"{got[-200:]!r}")
    # 50 pipelined requests in pieces that cut through them anywhere.
    req = b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n" * 49 + \
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        i = 0
        while i < len(req):
            n = random.randint(1, 97)
            s.sendall(req[i:i + n])
            i += n
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    st = responses(got)
    check(len(st) == 50 and all(x[0] == 200 for x in st) and
          st[-1][2] == b"Hello, World!", f"{be}: 50 requests split "
          f"anywhere ({len(st)} answers)")
    # One request a byte at a time (within the header timeout).
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        for b in b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n":
            s.send(bytes([b]))
            time.sleep(0.005)
        got = s.recv(65536)
    check(responses(got) and responses(got)[0][2] == b"Hello, World!",
          f"{be}: a request byte by byte")
    # HTTP/1.0: closed after the answer unless it asks to stay.
    got, closed = raw(h.port, b"GET /plaintext HTTP/1.0\r\n\r\n")
    check(closed and responses(got)[0][2] == b"Hello, World!",
          f"{be}: HTTP/1.0 closes")
    got, closed = raw(h.port, b"GET /plaintext HTTP/1.0\r\nConnection: "
                      b"keep-alive\r\n\r\n", timeout=0.5)
    check(not closed and responses(got)[0][1].get("connection") ==
          "keep-alive", f"{be}: HTTP/1.0 keep-alive stays open")
    # Each limit: its status, then the connection closes.
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /plaintext HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /plaintext HTTP/1.1\r\n" +
         b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
        (b"GET /plaintext HTTP/1.1\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n",
         431),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n"
         b"\r\n", 413),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
         b"\r\n\r\n" + b"".join(b"ffff\r\n" + b"z" * 0xffff + b"\r\n"
                                for _ in range(70)) + b"0\r\n\r\n", 413),
        (b"GET /plaintext HTTP/1.1\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n", 400),
    ]
    for payload, want_status in cases:
        got, closed = raw(h.port, payload)
        st = responses(got)
        check(st and st[-1][0] == want_status and closed and
              st[-1][1].get("connection") == "close",
              f"{be}: {payload[:40]!r} -> {want_status} and closed "
              f"({got[:120]!r}, closed {closed})")
    # A method a route does not take: 405 with Allow, and the connection
    # stays (the request was well formed).
    got, closed = raw(h.port, b"DELETE /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /plaintext HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
    st = responses(got)
    check(len(st) == 2 and st[0][0] == 405 and
          st[0][1].get("allow") == "GET, HEAD" and st[1][0] == 200,
          f"{be}: 405 with Allow, then the next request ({got[:80]!r})")
    # Slowloris: half a header, then silence: 408 after --header-timeout.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    dt = time.monotonic() - t0
    st = responses(got)
    check(st and st[0][0] == 408 and 0.8 <= dt <= 5,
          f"{be}: slowloris answered 408 after {dt:.2f} s ({got[:60]!r})")
    # A slowloris that keeps trickling is closed all the same.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        s.sendall(b"GET /plaintext HTTP/1.1\r\n")
        got, closed = b"", False
        for i in range(40):
            try:
                s.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            s.setblocking(False)
            try:
                b = s.recv(65536)
                got += b
                if not b:
                    closed = True
                    break
            except BlockingIOError:
                pass
            s.setblocking(True)
    check(b" 408 " in got or closed, f"{be}: a trickling header is cut off "
          f"({got[:60]!r}) after {time.monotonic() - t0:.2f} s")
    # Idle: a kept-alive connection with nothing asked is closed.
    t0 = time.monotonic()
    got, closed = raw(h.port, b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
                      timeout=10)
    dt = time.monotonic() - t0
    check(closed and 1.5 <= dt <= 6 and responses(got)[0][0] == 200,
          f"{be}: idle connection closed after {dt:.2f} s")
    out = h.stop()
    m = re.search(r"(\d+) requests", out)
    check(m and int(m.group(1)) > 60, f"{be}: summary {out!r}")

    # The body and send timeouts, and the header clock per request.
    t = Http(be, "--root", root, "--header-timeout", "1", "--body-timeout",
             "1", "--send-timeout", "1", "--idle-timeout", "0")
    t0 = time.monotonic()
    got, closed = raw(t.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 100\r\n\r\nabc", timeout=10)
    dt = time.monotonic() - t0
    st = responses(got)
    check(st and st[0][0] == 408 and closed and 0.8 <= dt <= 5,
          f"{be}: a stalled body answered 408 after {dt:.2f} s ({got[:60]!r})")
    # A pipelining client whose writes split requests: each request's
    # headers are in within 0.1 s of its first byte, the connection is
    # always inside one for 2.5 s; all 26 answered.
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        req = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req[:20])
        for i in range(25):
            time.sleep(0.1)
            s.sendall(req[20:] + req[:20])
        s.sendall(req[20:-2] + b"Connection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    st = responses(got)
    check(len(st) == 26 and all(x[0] == 200 for x in st),
          f"{be}: split pipelined requests all answered "
          f"({[x[0] for x in st][-3:]}, {len(st)} responses)")
    # A client that asks for a 3 MiB file and never reads is closed after
    # the send timeout.
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", t.port))
        s.sendall(b"GET /sub/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        time.sleep(3)
        s.settimeout(10)
        closed = False
        try:
            while s.recv(1 << 20):
                pass
            closed = True
        except (ConnectionResetError, socket.timeout) as e:
            closed = isinstance(e, ConnectionResetError)
    out = t.stop()
    m = re.search(r"(\d+) timed out", out)
    check(closed and m and int(m.group(1)) >= 2,
          f"{be}: a peer that does not read is closed ({out!r})")

# --threads: two loops share the port; requests land on both.
h = Http("uring", "--threads", "2")
for _ in range(20):
    r = curl(h.url + "/plaintext")
    check(r.stdout == b"Hello, World!", "--threads 2: /plaintext")
out = h.stop()
check("20 requests" in out, f"--threads 2: all 20 counted: {out!r}")

# ursa-load --http against it: keep-alive, pipelined, POST bodies, JSON,
# reconnecting; every response's status checked, and counted the same on
# both sides.
h = Http("uring")
def load(*args):
    out = tempfile.mktemp(prefix="ursa-load-http-", suffix=".json")
    r = subprocess.run([LOAD, "--duration", "0.5", "--warmup", "0.1",
                        "--json", out, *args], capture_output=True,
                       text=True, timeout=60)
    res = {}
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
        os.unlink(out)
    return r, res
total = 0
for args, what in [
        (["--http", h.url + "/plaintext", "--connections", "4"],
         "keep-alive GET"),
        (["--http", h.url + "/plaintext", "--connections", "2",
          "--inflight", "8"], "pipelined x8"),
        (["--http", h.url + "/upload", "--http-body", "3000",
          "--connections", "2"], "POST of 3000 bytes"),
        (["--http", h.url + "/upload", "--http-json", "--connections", "2"],
         "POST of JSON"),
        (["--http", h.url + "/json", "--connections", "2", "--reconnect",
          "5"], "a new connection every 5"),
        (["--http", h.url + "/plaintext", "--connections", "4",
          "--http-length", "13"], "every body 13 bytes"),
        # Requests in 7-byte pieces, two pipelined: headers and bodies cut
        # anywhere, each answered 200 with the upload's 26-byte receipt.
        (["--http", h.url + "/upload", "--http-body", "3000",
          "--http-fragment", "7", "--inflight", "2", "--connections", "8",
          "--http-length", "26"], "POSTs in 7-byte pieces"),
        (["--http", h.url + "/plaintext", "--http-fragment", "5",
          "--connections", "8", "--batch-waits", "always"],
         "pieces, batched waits always"),
        (["--http", h.url + "/plaintext", "--connections", "8",
          "--batch-waits", "never"], "batched waits never")]:
    r, res = load(*args)
    check(r.returncode == 0 and res.get("requests", 0) > 50 and
          res.get("errors") == 0 and res.get("p99_us", 0) > 0,
          f"ursa-load --http {what}: {r.returncode} {r.stderr[-200:]!r} "
          f"{res}")
    total += res.get("requests_total", 0)
    if what.startswith("a new connection"):
        check(res.get("opened", 0) >= res.get("requests", 0) // 5 - 2,
              f"--reconnect 5 opened {res.get('opened')} for "
              f"{res.get('requests')} requests")
r, res = load("--http", h.url + "/nothing", "--connections", "1")
check(r.returncode == 1 and res.get("bad_status", 0) > 0 and
      "status" in r.stderr, f"ursa-load --http: a 404 is an error: "
      f"{r.returncode} {r.stderr[-200:]!r}")
r, res = load("--http", h.url + "/plaintext", "--http-length", "12",
              "--connections", "1")
check(r.returncode == 1 and res.get("bad_length", 0) > 0 and
      "not 12" in r.stderr, f"ursa-load --http-length 12 against 13 bytes: "
      f"{r.returncode} {r.stderr[-200:]!r}")
r, res = load("--http", h.url + "/nothing", "--http-status", "404",
              "--connections", "1")
check(r.returncode == 0 and res.get("errors") == 0,
      f"ursa-load --http-status 404: {r.returncode} {r.stderr[-200:]!r}")
out = h.stop()
m = re.search(r"(\d+) requests", out)
check(m and int(m.group(1)) >= total, f"the server counted {out!r}, the "
      f"client {total} answered")
# A server that ends every connection after its fifth response (with
# Connection: close), as nginx does after keepalive_requests: ursa-load
# opens a new connection each time, counts the requests pipelined behind
# the close as unanswered, and reports no error.
import threading
closer = socket.socket()
closer.bind(("127.0.0.1", 0))
closer.listen(64)
closer_stop = threading.Event()
def closer_conn(c):
    with c:
        buf, n = b"", 0
        while not closer_stop.is_set():
            try:
                got = c.recv(65536)
            except OSError:
                return
            if not got:
                return
            buf += got
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                n += 1
                last = n == 5
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
                          (b"Connection: close\r\n" if last else b"") +
                          b"\r\nok")
                if last:
                    return
def closer_accept():
    while not closer_stop.is_set():
        try:
            c, _ = closer.accept()
        except OSError:
            return
        threading.Thread(target=closer_conn, args=(c,), daemon=True).start()
threading.Thread(target=closer_accept, daemon=True).start()
curl_url = f"http://127.0.0.1:{closer.getsockname()[1]}/"
for depth in ("1", "3"):
    r, res = load("--http", curl_url, "--connections", "2", "--inflight",
                  depth, "--http-length", "2")
    check(r.returncode == 0 and res.get("errors") == 0 and
          res.get("server_closes", 0) > 10 and res.get("requests", 0) > 50
          and (res.get("abandoned", 0) > 0) == (depth == "3") and
          res.get("opened", 0) >= res.get("server_closes", 0) - 2,
          f"ursa-load --inflight {depth} against a server closing after 5: "
          f"{r.returncode} {r.stderr[-200:]!r} {res}")
closer_stop.set()
closer.close()

for args, needle in [
        (["--http", "https://127.0.0.1:1/"], "https is not spoken here"),
        (["--http", "http:///x"], "no host"),
        (["--http", "http://nohost/x"], "--http 'http://nohost/x'"),
        (["--http", "http://127.0.0.1:1/", "127.0.0.1:1"],
         "takes the place of ADDR"),
        (["--http-json", "127.0.0.1:1"], "go with --http URL"),
        (["--http-length", "5", "127.0.0.1:1"], "go with --http URL"),
        (["--batch-waits", "never", "127.0.0.1:1"], "go with --http URL"),
        (["--http", "http://127.0.0.1:1/", "--http-fragment", "0"],
         "--http-fragment"),
        (["--http", "http://127.0.0.1:1/", "--batch-waits", "sometimes"],
         "'sometimes' is not auto, always or never"),
        (["--http", "http://127.0.0.1:1/", "--http-body", "1",
          "--http-json"], "one of --http-body and --http-json")]:
    r = subprocess.run([LOAD, *args], capture_output=True, text=True,
                       timeout=20)
    check(r.returncode == 2 and needle in r.stderr,
          f"ursa-load {args}: {r.returncode} {r.stderr!r}")
r = subprocess.run([LOAD, "--http", "http://127.0.0.1:1/", "--duration",
                    "0.3", "--warmup", "0", "--connections", "2"],
                   capture_output=True, text=True, timeout=20)
check(r.returncode == 1 and "connect" in r.stderr,
      f"ursa-load --http to a closed port: {r.returncode} {r.stderr!r}")

# Bad flags exit 2 and name the problem.
for args, needle in ((["--backend", "nope"], "unknown --backend 'nope'"),
                     (["--threads", "0"], "--threads wants"),
                     (["--root", "/nonexistent/x"], "--root '/nonexistent/x'"),
                     (["--listen", "127.0.0.1:99999"], "bad --listen"),
                     (["--max-url", "x"], "--max-url wants"),
                     (["--header-timeout", "0"], "--header-timeout wants"),
                     (["--body-timeout", "x"], "--body-timeout wants"),
                     (["--stats-json", "/nonexistent/x.json"],
                      "--stats-json '/nonexistent/x.json'"),
                     (["extra"], "unexpected argument 'extra'")):
    r = subprocess.run([HTTP, *args], capture_output=True, text=True,
                       timeout=10)
    check(r.returncode == 2 and needle in r.stderr,
          f"{args}: exit {r.returncode} {r.stderr!r}")
r = subprocess.run([HTTP, "--help"], capture_output=True, text=True)
check(r.returncode == 0 and "--root DIR" in r.stdout, "--help")
finish()
