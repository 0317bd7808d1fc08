#!/usr/bin/env python3
"""http_files_test.py - ursa-http's static files on both backends, with
the server's memory watched: a 1 GiB (sparse) file byte-exact with RSS
bounded, single Range (206, suffix, open-ended, 416, several ranges
served whole, If-Range), HEAD, ETag and Last-Modified with 304 for
If-None-Match and If-Modified-Since, a FIFO and a device under the root
answered at once while the loop serves others, 100 pipelined 4 MiB
requests in one write answered in order with RSS bounded, 20 clients not
reading a 60 MiB response without RSS growth, and a file truncated while
it is sent: the response is cut and the connection closed, never
followed by another.  All of it a third time with file writes spliced
through the loop's pipes (--uring-enable file_splice), which the
server's descriptors must then show."""
import hashlib
import os
import random
import re
import socket
import stat
import sys
import tempfile
import time

import httpserver
from checks import check, finish

HTTP = sys.argv[1]
MiB = 1 << 20


def Http(backend, *args):
    return httpserver.Http(HTTP, backend, *args)


def pipe_fds(h):
    """The server's pipe descriptors (its output's, and the loop's)."""
    d = f"/proc/{h.p.pid}/fd"
    return sum(os.readlink(f"{d}/{x}").startswith("pipe:")
               for x in os.listdir(d))


def conn(port, timeout=20):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_head(s, buf=b""):
    """Reads one response's status line and headers: (status, headers,
    the bytes read past them)."""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            raise EOFError(f"closed before a header: {buf[:100]!r}")
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, rest


def read_body(s, n, rest, hasher=None):
    """Reads n bytes of body (rest already read); returns (the body, or
    its length when hashed, the bytes read past it, whether it was all
    there)."""
    got = rest[:n]
    extra = rest[n:]
    count = len(got)
    body = [] if hasher else [got]
    if hasher:
        hasher.update(got)
    while count < n:
        b = s.recv(min(1 << 20, n - count))
        if not b:
            break
        count += len(b)
        if hasher:
            hasher.update(b)
        else:
            body.append(b)
    return (count if hasher else b"".join(body)), extra, count == n


def get(port, path, headers="", method="GET"):
    """One request on its own connection: (status, headers, body)."""
    with conn(port) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}"
                  "Connection: close\r\n\r\n".encode())
        st, h, rest = read_head(s)
        n = int(h.get("content-length", "0")) if method != "HEAD" else 0
        body, _, _ = read_body(s, n, rest)
        return st, h, body


root = tempfile.mkdtemp(prefix="ursa-http-files-")
small = random.randbytes(10000)
with open(os.path.join(root, "small.bin"), "wb") as f:
    f.write(small)
f4m = random.randbytes(4 * MiB)
with open(os.path.join(root, "f4m.bin"), "wb") as f:
    f.write(f4m)
# 1 GiB, sparse: 1 MiB of data at every 128 MiB, zeros between.
GIB = 1 << 30
marks = {i * 128 * MiB: random.randbytes(MiB) for i in range(8)}
with open(os.path.join(root, "gib.bin"), "wb") as f:
    f.truncate(GIB)
    for off, data in marks.items():
        f.seek(off)
        f.write(data)


def gib_digest():
    h = hashlib.sha256()
    zero = bytes(MiB)
    for i in range(GIB // MiB):
        h.update(marks.get(i * MiB, zero))
    return h.hexdigest()


GIB_SHA = gib_digest()
with open(os.path.join(root, "f60m.bin"), "wb") as f:
    f.truncate(60 * MiB)
os.mkfifo(os.path.join(root, "fifo"))
try:
    os.mknod(os.path.join(root, "null"), stat.S_IFCHR | 0o666,
             os.makedev(1, 3))
    have_dev = True
except OSError as e:
    print(f"note: no device node under the root here (mknod: {e}); the "
          "FIFO stands for both")
    have_dev = False

# The third: file writes spliced through the loop's pipes (opt-in).
for be, extra in (("uring", ()), ("ursa-epoll", ()),
                  ("uring", ("--uring-enable", "file_splice"))):
    h = Http(be, "--root", root, "--idle-timeout", "0", *extra)
    pipes0 = pipe_fds(h)
    be += " splice" if extra else ""
    p = h.port
    # Small and 4 MiB files, byte-exact, with their validators.
    st, hd, body = get(p, "/small.bin")
    check(st == 200 and body == small and
          hd.get("accept-ranges") == "bytes" and
          re.match(r'^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$', hd.get("etag", ""))
          and re.match(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$",
                       hd.get("last-modified", "")),
          f"{be}: a small file with ETag and Last-Modified {hd}")
    etag, lm = hd.get("etag"), hd.get("last-modified")
    st, hd, body = get(p, "/f4m.bin")
    check(st == 200 and body == f4m, f"{be}: 4 MiB byte-exact "
          f"({len(body)} bytes)")
    pipes = pipe_fds(h) - pipes0
    check((pipes > 0) == bool(extra) and pipes <= 32,
          f"{be}: {pipes} pipe descriptors more after a file was sent")
    # HEAD: the headers of the GET, no body.
    st, hd, body = get(p, "/f4m.bin", method="HEAD")
    check(st == 200 and hd.get("content-length") == str(len(f4m)) and
          body == b"", f"{be}: HEAD of a file {hd}")
    # Conditional requests.
    for hdrs, want in ((f"If-None-Match: {etag}\r\n", 304),
                       (f"If-None-Match: W/{etag}\r\n", 304),
                       (f"If-None-Match: \"other\", {etag}\r\n", 304),
                       ("If-None-Match: *\r\n", 304),
                       ("If-None-Match: \"other\"\r\n", 200),
                       (f"If-Modified-Since: {lm}\r\n", 304),
                       ("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n",
                        200),
                       (f"If-None-Match: \"other\"\r\nIf-Modified-Since: "
                        f"{lm}\r\n", 200)):
        st, hd, body = get(p, "/small.bin", hdrs)
        check(st == want and (want == 200) == (body == small) and
              (want != 304 or (hd.get("etag") == etag and body == b"" and
                               "content-length" not in hd)),
              f"{be}: {hdrs.strip()!r} -> {st} (want {want})")
    # Range.
    n = len(small)
    for rng, want, lo, hi in (("bytes=0-99", 206, 0, 99),
                              ("bytes=9990-", 206, 9990, n - 1),
                              ("bytes=-25", 206, n - 25, n - 1),
                              ("bytes=5000-999999", 206, 5000, n - 1),
                              ("bytes=10000-", 416, 0, 0),
                              ("bytes=0-1,5-9", 200, 0, n - 1),
                              ("pages=1-2", 200, 0, n - 1)):
        st, hd, body = get(p, "/small.bin", f"Range: {rng}\r\n")
        ok = st == want
        if want == 206:
            ok = ok and body == small[lo:hi + 1] and \
                hd.get("content-range") == f"bytes {lo}-{hi}/{n}"
        elif want == 416:
            ok = ok and hd.get("content-range") == f"bytes */{n}"
        else:
            ok = ok and body == small
        check(ok, f"{be}: Range {rng} -> {st} {hd.get('content-range')}")
    st, hd, body = get(p, "/small.bin",
                       f"Range: bytes=1-2\r\nIf-Range: {etag}\r\n")
    check(st == 206 and body == small[1:3], f"{be}: If-Range matching")
    st, hd, body = get(p, "/small.bin",
                       "Range: bytes=1-2\r\nIf-Range: \"old\"\r\n")
    check(st == 200 and body == small, f"{be}: If-Range stale: whole")
    st, hd, body = get(p, "/gib.bin", f"Range: bytes={3 * GIB // 4}-"
                       f"{3 * GIB // 4 + 99}\r\n")
    check(st == 206 and body == marks[6 * 128 * MiB][:100],
          f"{be}: a range 768 MiB into the file")
    # A FIFO (and a device) under the root: 403 at once, and the loop
    # serves others meanwhile (the FIFO has no writer).
    t0 = time.monotonic()
    for name in ("fifo", "null") if have_dev else ("fifo",):
        st, _, _ = get(p, "/" + name)
        check(st == 403, f"{be}: /{name} refused ({st})")
    st, _, body = get(p, "/small.bin")
    dt = time.monotonic() - t0
    check(st == 200 and body == small and dt < 2,
          f"{be}: answered at once ({dt:.3f} s)")

    # 1 GiB byte-exact, RSS bounded.
    rss0 = h.rss_kib()
    with conn(p, timeout=60) as s:
        s.sendall(b"GET /gib.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        st, hd, rest = read_head(s)
        sha = hashlib.sha256()
        count, _, whole = read_body(s, int(hd["content-length"]), rest, sha)
    grow = h.rss_kib("VmHWM") - rss0
    check(st == 200 and whole and count == GIB and
          sha.hexdigest() == GIB_SHA,
          f"{be}: 1 GiB byte-exact ({count} bytes)")
    check(grow < 16 * 1024 * (4 if h.tsan else 1),
          f"{be}: 1 GiB served in {grow} KiB more RSS")

    # 100 pipelined 4 MiB requests in one write: in order, byte-exact,
    # and the server holds a bounded part of the 400 MiB.
    rss0 = h.rss_kib("VmHWM")
    want = hashlib.sha256(f4m).hexdigest()
    req = b"GET /f4m.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 99 + \
        b"GET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    good = 0
    with conn(p, timeout=60) as s:
        s.sendall(req)
        rest = b""
        for i in range(99):
            st, hd, rest = read_head(s, rest)
            sha = hashlib.sha256()
            n, rest, whole = read_body(s, int(hd["content-length"]), rest,
                                       sha)
            good += st == 200 and whole and sha.hexdigest() == want
        st, hd, rest = read_head(s, rest)
        last, rest, _ = read_body(s, int(hd["content-length"]), rest)
        tail = s.recv(100)
    grow = h.rss_kib("VmHWM") - rss0
    check(good == 99 and last == small and tail == b"",
          f"{be}: 100 pipelined file requests ({good} of 99 4 MiB right)")
    check(grow < 16 * 1024 * (4 if h.tsan else 1),
          f"{be}: 400 MiB pipelined in {grow} KiB more RSS")

    # 20 clients that do not read a 60 MiB response: RSS stays, and
    # others are served meanwhile.
    rss0 = h.rss_kib()
    stuck = []
    for _ in range(20):
        s = conn(p)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /f60m.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.append(s)
    time.sleep(1)
    t0 = time.monotonic()
    st, _, body = get(p, "/small.bin")
    dt = time.monotonic() - t0
    grow = h.rss_kib() - rss0
    for s in stuck:
        s.close()
    check(st == 200 and body == small and dt < 1,
          f"{be}: served beside 20 stalled 60 MiB responses ({dt:.3f} s)")
    bound = 16 * 1024 * (4 if h.tsan else 1)
    check(grow < bound, f"{be}: 20 unread 60 MiB responses hold "
          f"{grow} KiB more RSS (bound {bound} KiB)")

    # Truncated while it is sent: the body is cut short and the
    # connection closed, the pipelined request after it never answered.
    path = os.path.join(root, "shrinks.bin")
    with open(path, "wb") as f:
        f.write(bytes(64 * MiB))
    with conn(p) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        st, hd, rest = read_head(s)
        time.sleep(0.3)
        os.truncate(path, 1 * MiB)
        n, extra, whole = read_body(s, int(hd["content-length"]), rest,
                                    hashlib.sha256())
        more = extra + s.recv(65536)
    check(st == 200 and not whole and n < 64 * MiB and more == b"",
          f"{be}: a file cut short while sent ({n} bytes), then closed "
          f"({more[:40]!r})")
    out = h.stop()
    check("requests" in out, f"{be}: summary {out!r}")
finish()
