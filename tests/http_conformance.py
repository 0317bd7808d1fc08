#!/usr/bin/env python3
"""http_conformance.py - HTTP/1.1 conformance over raw sockets: requests
built byte by byte from the requirements of RFC 9112 (message syntax,
framing, connections) and RFC 9110 (semantics), each case naming its
section, each answered as the RFC says a server MUST (or, where the RFC
lets a server choose, as one of its choices).

Run by the test suite against ursa-http on both backends:
    http_conformance.py PATH/TO/ursa-http
and by hand against any server (nginx, h2o), for the side-by-side table in
docs/measurements.md:
    http_conformance.py --url http://127.0.0.1:8080 [--path /index.html]
        [--upload /upload] [--json FILE]
--path is a resource the server answers GET with 200; --upload one it
takes a POST body at (any status but a framing error counts, so a static
server's 405 is fine).  Prints one line per case failed, a summary, and
exits 1 when any case failed."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

TIMEOUT = 3.0


class Res:
    """A response: status, headers (lower-case names; repeated ones
    joined), body."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


def parse(data, heads=()):
    """The responses in data, in order; heads: the indexes of responses to
    HEAD (no body).  Stops at the first that is cut short."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = data[:end].split(b"\r\n")
        m = re.match(rb"HTTP/(\d)\.(\d) (\d{3})", lines[0])
        if not m:
            break
        status = int(m.group(3))
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            k = k.strip().lower().decode("latin-1")
            v = v.strip().decode("latin-1")
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        data = data[end + 4:]
        body = b""
        nobody = (status < 200 or status in (204, 304) or
                  (len([r for r in out if r.status >= 200]) in heads and
                   status >= 200))
        if not nobody:
            if "content-length" in hdrs:
                n = int(hdrs["content-length"].split(",")[0])
                if len(data) < n:
                    break
                body, data = data[:n], data[n:]
            elif "chunked" in hdrs.get("transfer-encoding", ""):
                while True:
                    e = data.find(b"\r\n")
                    if e < 0:
                        return out
                    n = int(data[:e].split(b";")[0], 16)
                    body += data[e + 2:e + 2 + n]
                    data = data[e + 4 + n:]
                    if n == 0:
                        break
            else:
                body, data = data, b""
        out.append(Res(status, hdrs, body))
    return out


def exchange(host, port, payload, half_close=True, timeout=TIMEOUT):
    """Sends payload (bytes, or a list of pieces sent apart), closes the
    sending side, reads until the server closes or goes quiet.  Returns
    (bytes, closed)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        for piece in payload if isinstance(payload, list) else [payload]:
            s.sendall(piece)
            if isinstance(payload, list):
                time.sleep(0.05)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got, closed = b"", False
        s.settimeout(timeout)
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            got += b
        return got, closed
    finally:
        s.close()


# ---- expectations: each takes (responses, closed, raw) ----

def status(*want):
    def f(rs, closed, raw):
        finals = [r for r in rs if r.status >= 200]
        return bool(finals) and finals[0].status in want, \
            f"want {'/'.join(map(str, want))}, got " \
            f"{[r.status for r in rs] or raw[:60]!r}"
    return f


def rejected(*want):
    """An error status (want, or any 4xx when want is empty) and the
    connection closed after it, with nothing else answered."""
    def f(rs, closed, raw):
        finals = [r for r in rs if r.status >= 200]
        ok_status = bool(finals) and (finals[0].status in want if want else
                                      400 <= finals[0].status < 500)
        return ok_status and closed and len(finals) == 1, \
            f"want {'/'.join(map(str, want)) or '4xx'} then close, got " \
            f"{[r.status for r in rs] or raw[:60]!r} closed={closed}"
    return f


def closed_or_rejected(rs, closed, raw):
    """No second request read: one answer at most (an error, or the
    request's own), then the connection closed."""
    finals = [r for r in rs if r.status >= 200]
    return closed and len(finals) <= 1, \
        f"got {[r.status for r in rs]} closed={closed}"


def answered(rs, closed, raw):
    """Any final answer: the RFC lets the server choose."""
    return any(r.status >= 200 for r in rs), f"got {raw[:60]!r}"


def statuses(*want):
    """Exactly these final statuses, in order."""
    def f(rs, closed, raw):
        got = [r.status for r in rs if r.status >= 200]
        return got == list(want), f"want {list(want)}, got {got}"
    return f


def both(*checks):
    def f(rs, closed, raw):
        for c in checks:
            ok, why = c(rs, closed, raw)
            if not ok:
                return ok, why
        return True, ""
    return f


def header(name, pred, what):
    def f(rs, closed, raw):
        finals = [r for r in rs if r.status >= 200]
        v = finals[0].headers.get(name) if finals else None
        return finals and pred(v), f"{name}: {v!r} ({what})"
    return f


def stays_open(rs, closed, raw):
    return not closed, "the connection closed"


def closes(rs, closed, raw):
    return closed, "the connection stayed open"


def no_100(rs, closed, raw):
    return all(r.status != 100 for r in rs), "a 100 Continue was sent"


def got_100(rs, closed, raw):
    return any(r.status == 100 for r in rs), "no 100 Continue"


def upload_ok(rs, closed, raw):
    """The body was framed: any answer but a framing error (400/411/413/
    501) or a close without one."""
    finals = [r for r in rs if r.status >= 200]
    return bool(finals) and finals[0].status not in (400, 411, 413, 501), \
        f"got {[r.status for r in rs]}"


# ---- the cases ----

def cases(path, upload):
    P = path.encode()
    U = upload.encode()
    H = b"Host: x\r\n"

    def get(extra=b"", line=None, target=None, version=b"HTTP/1.1"):
        t = target if target is not None else P
        return (line if line is not None else b"GET " + t + b" " + version) \
            + b"\r\n" + extra + b"\r\n"

    def post(hdrs, body):
        return b"POST " + U + b" HTTP/1.1\r\n" + H + hdrs + b"\r\n" + body

    ok = status(200)
    C = []

    def case(sec, name, req, check, half_close=True, heads=()):
        C.append({"section": sec, "name": name, "req": req, "check": check,
                  "half_close": half_close, "heads": heads})

    # RFC 9112 2: message format and the start line.
    case("9112 2.1", "a plain HTTP/1.1 request", get(H), ok)
    case("9112 2.2", "an empty line before the request line is ignored",
         b"\r\n" + get(H), ok)
    case("9112 2.2", "a bare LF as line terminator (MAY be accepted)",
         b"GET " + P + b" HTTP/1.1\nHost: x\n\n", status(200, 400))
    case("9112 2.2", "whitespace between the start line and the first "
         "field: rejected or the line consumed",
         get(b" X: y\r\n" + H), status(200, 400))
    case("9112 2.2", "a NUL in the request line", get(H, line=b"GET /\0 "
         b"HTTP/1.1"), rejected())
    case("9112 2.3", "HTTP/1.0 is answered", get(b"", version=b"HTTP/1.0"),
         ok)
    case("9112 2.3", "HTTP/1.2: a higher minor version is read as 1.1",
         get(H, version=b"HTTP/1.2"), ok)
    case("9112 2.3", "HTTP/1.9", get(H, version=b"HTTP/1.9"), ok)
    case("9110 15.6.6", "HTTP/2.0 on an HTTP/1.1 connection: 505",
         get(H, version=b"HTTP/2.0"), rejected(505, 400))
    case("9110 15.6.6", "HTTP/3.0: 505", get(H, version=b"HTTP/3.0"),
         rejected(505, 400))
    case("9112 2.3", "the version is case-sensitive (http/1.1)",
         get(H, version=b"http/1.1"), rejected())
    case("9112 2.3", "a two-digit minor (HTTP/1.10)",
         get(H, version=b"HTTP/1.10"), rejected())
    case("9112 2.3", "a missing minor (HTTP/1)", get(H, version=b"HTTP/1"),
         rejected())
    case("9112 2.3", "no version at all", b"GET " + P + b"\r\n\r\n",
         closes)
    case("9112 3", "a space after the version", get(H, version=b"HTTP/1.1 "),
         rejected())
    case("9112 3", "two spaces between method and target (SHOULD 400, MAY "
         "parse)", get(H, line=b"GET  " + P + b" HTTP/1.1"),
         status(200, 400))
    case("9112 3", "a tab between method and target",
         get(H, line=b"GET\t" + P + b" HTTP/1.1"), status(200, 400))
    case("9112 3", "an empty target", get(H, line=b"GET  HTTP/1.1"),
         rejected())
    case("9112 3", "a request line with only the method",
         b"GET\r\n" + H + b"\r\n", rejected())
    # RFC 9110 9: methods.
    case("9110 9.1", "an unknown method: 501", get(H, line=b"FOO " + P +
         b" HTTP/1.1"), rejected(501, 405, 400))
    case("9110 9.1", "methods are case-sensitive (get)",
         get(H, line=b"get " + P + b" HTTP/1.1"), rejected(501, 400, 405))
    case("9110 9.1", "a method with a byte no token has",
         get(H, line=b"GE(T " + P + b" HTTP/1.1"), rejected())
    case("9110 9.3.2", "HEAD: the GET's headers, no body",
         b"HEAD " + P + b" HTTP/1.1\r\n" + H + b"\r\n" + get(H),
         both(statuses(200, 200), lambda rs, c, raw: (
             len(rs) >= 2 and rs[0].body == b"" and rs[0].headers.get(
                 "content-length") == rs[1].headers.get("content-length"),
             "HEAD and GET lengths differ, or HEAD had a body")),
         heads=(0,))
    case("9110 15.5.6", "405 carries Allow", b"DELETE " + P +
         b" HTTP/1.1\r\n" + H + b"\r\n",
         both(status(405, 403, 501), lambda rs, c, raw: (
             not rs or rs[-1].status != 405 or "allow" in rs[-1].headers,
             "a 405 without Allow")))
    case("9110 9.3.1", "GET with a body: the body is read and the next "
         "request answered", b"GET " + P + b" HTTP/1.1\r\n" + H +
         b"Content-Length: 4\r\n\r\nabcd" + get(H), statuses(200, 200))
    # RFC 9112 3.2: the request target.
    case("9112 3.2.1", "origin form with a query", get(H, target=P +
         b"?a=1&b=2"), ok)
    case("9112 3.2.2", "absolute form (a server MUST accept it)",
         get(H, target=b"http://x" + P), ok)
    case("9112 3.2.2", "absolute form with a port", get(
        H, target=b"http://x:8080" + P), ok)
    case("9112 3.2.2", "absolute form whose authority differs from Host",
         get(b"Host: other\r\n", target=b"http://x" + P), ok)
    case("9112 3.2.2", "absolute form, upper-case scheme",
         get(H, target=b"HTTP://x" + P), ok)
    case("9112 3.2.3", "authority form is CONNECT's only",
         get(H, target=b"x:80"), rejected(400, 404, 405))
    case("9112 3.2.4", "asterisk form is OPTIONS's only",
         get(H, target=b"*"), rejected(400, 404, 405))
    case("9112 3.2", "a raw space in the target",
         get(H, line=b"GET /a b HTTP/1.1"), rejected())
    case("9112 3.2", "a control byte in the target",
         get(H, target=P + b"\x01"), rejected())
    case("9112 3.2", "a DEL in the target", get(H, target=P + b"\x7f"),
         rejected())
    case("9112 3", "a target of 20,000 bytes: 414", get(H, target=b"/" +
         b"a" * 20000), rejected(414, 400))
    # RFC 9112 3.2: Host.
    case("9112 3.2", "HTTP/1.1 without Host: 400", get(b""), rejected(400))
    case("9112 3.2", "HTTP/1.0 without Host", get(b"", version=b"HTTP/1.0"),
         ok)
    case("9112 3.2", "two Host lines: 400", get(H + H), rejected(400))
    case("9112 3.2", "two different Host lines: 400",
         get(H + b"Host: y\r\n"), rejected(400))
    case("9112 3.2", "a Host with a space inside: 400",
         get(b"Host: a b\r\n"), rejected(400))
    case("9112 3.2", "a Host with userinfo (@): 400",
         get(b"Host: u@x\r\n"), rejected(400))
    case("9112 3.2", "a Host with a path: 400", get(b"Host: x/y\r\n"),
         rejected(400))
    case("9112 3.2", "a Host with a quote: 400", get(b"Host: \"x\"\r\n"),
         rejected(400))
    case("9112 3.2", "a Host with a port", get(b"Host: x:8080\r\n"), ok)
    case("9112 3.2", "an IPv6 literal Host", get(b"Host: [::1]:8080\r\n"),
         ok)
    case("9112 3.2", "an IPv4 Host", get(b"Host: 127.0.0.1\r\n"), ok)
    case("9112 3.2", "a Host with a trailing dot", get(b"Host: x.\r\n"), ok)
    case("9112 3.2", "an empty Host (valid when the target has no "
         "authority)", get(b"Host:\r\n"), status(200, 400))
    case("9112 3.2", "HTTP/1.0 with two Host lines: 400",
         get(H + H, version=b"HTTP/1.0"), rejected(400))
    # RFC 9112 5 / 9110 5: header fields.
    case("9112 5.1", "whitespace before the colon: 400",
         get(b"Host : x\r\n"), rejected(400))
    case("9112 5.1", "a tab before the colon: 400",
         get(H + b"X-A\t: y\r\n"), rejected(400))
    case("9112 5.1", "an empty field name: 400", get(H + b": y\r\n"),
         rejected(400))
    case("9112 5.1", "a line without a colon: 400", get(H + b"Bad Header\r\n"),
         rejected(400))
    case("9110 5.1", "a byte no token has in a name: 400",
         get(H + b"X(Y): z\r\n"), rejected(400))
    case("9110 5.1", "a non-ASCII byte in a name: 400",
         get(H + b"X\xe9: z\r\n"), rejected(400))
    case("9112 5.2", "obs-fold: rejected or read as a space",
         get(H + b"X-A: one\r\n two\r\n"), status(200, 400))
    case("9110 5.5", "a NUL in a value: 400", get(H + b"X-A: a\0b\r\n"),
         rejected(400))
    case("9110 5.5", "a bare CR in a value: 400", get(H + b"X-A: a\rb\r\n"),
         rejected(400))
    case("9110 5.5", "OWS around a value", get(H + b"X-A: \t y \t\r\n"), ok)
    case("9110 5.5", "an empty value", get(H + b"X-A:\r\n"), ok)
    case("9110 5.5", "obs-text (a Latin-1 byte) in a value",
         get(H + b"X-A: caf\xe9\r\n"), ok)
    case("9110 5.3", "a repeated field", get(H + b"X-A: 1\r\nX-A: 2\r\n"),
         ok)
    case("9110 5.1", "field names are case-insensitive (hOsT)",
         get(b"hOsT: x\r\n"), ok)
    case("9110 5.4", "a header section of 40 KB: 431 (or 400)",
         get(H + b"X-A: " + b"a" * 40000 + b"\r\n"), rejected(431, 400))
    case("9110 5.4", "200 fields of 20 bytes",
         get(H + b"".join(b"X-%03d: aaaaaaaaaaa\r\n" % i for i in
                          range(200))), status(200, 431, 400))
    case("9112 5", "a field line ending in LF alone (MAY be accepted)",
         b"GET " + P + b" HTTP/1.1\r\nHost: x\n\r\n", status(200, 400))
    # RFC 9112 6: message body and its framing.
    case("9112 6.3", "Content-Length body", post(
        b"Content-Length: 5\r\n", b"hello"), upload_ok)
    case("9112 6.3", "Content-Length: 0", post(b"Content-Length: 0\r\n",
                                               b""), upload_ok)
    case("9112 6.3", "a body framed by Content-Length, then the next "
         "request", post(b"Content-Length: 5\r\n", b"hello") + get(H),
         lambda rs, c, raw: (len([r for r in rs if r.status >= 200]) == 2
                             and rs[-1].status == 200,
                             f"got {[r.status for r in rs]}"))
    case("9112 6.3", "a Content-Length that is not a number: 400",
         post(b"Content-Length: abc\r\n", b"abc"), rejected(400))
    case("9112 6.3", "a negative Content-Length: 400",
         post(b"Content-Length: -1\r\n", b""), rejected(400))
    case("9112 6.3", "a Content-Length with a sign: 400",
         post(b"Content-Length: +5\r\n", b"hello"), rejected(400))
    case("9112 6.3", "a Content-Length with a space inside: 400",
         post(b"Content-Length: 1 0\r\n", b"0123456789"), rejected(400))
    case("9112 6.3", "two different Content-Lengths: 400",
         post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
         rejected(400))
    case("9112 6.3", "a Content-Length list of different values: 400",
         post(b"Content-Length: 5, 6\r\n", b"hello!"), rejected(400))
    case("9112 6.3", "two equal Content-Lengths (MAY be accepted)",
         post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
         answered)
    case("9112 6.3", "a Content-Length beyond 2^64: 400 or 413",
         post(b"Content-Length: 99999999999999999999999\r\n", b""),
         rejected(400, 413))
    case("9112 6.3", "a Content-Length over the server's limit: 413",
         post(b"Content-Length: 100000000000\r\n", b""), rejected(413, 400))
    case("9112 6.1", "chunked", post(b"Transfer-Encoding: chunked\r\n",
                                     b"5\r\nhello\r\n0\r\n\r\n"), upload_ok)
    case("9112 6.1", "Chunked, any case", post(
        b"Transfer-Encoding: ChUnKeD\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
         upload_ok)
    case("9112 6.1", "chunked with OWS after it", post(
        b"Transfer-Encoding: chunked \r\n", b"5\r\nhello\r\n0\r\n\r\n"),
         upload_ok)
    case("9112 6.1", "gzip, chunked: a coding the server does not know: "
         "501", post(b"Transfer-Encoding: gzip, chunked\r\n",
                     b"5\r\nhello\r\n0\r\n\r\n"), rejected(501, 400))
    case("9112 6.1", "identity: 501 (or 400)", post(
        b"Transfer-Encoding: identity\r\n", b""), rejected(501, 400))
    case("9112 6.1", "chunked not last in a request: 400",
         post(b"Transfer-Encoding: chunked, gzip\r\n",
              b"5\r\nhello\r\n0\r\n\r\n"), rejected(400, 501))
    case("9112 6.1", "chunked twice: 400", post(
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n"), rejected(400, 501))
    case("9112 6.1", "Transfer-Encoding and Content-Length: rejected, or "
         "the connection closed after", post(
             b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
             b"0\r\n\r\n" + get(H)), closed_or_rejected)
    case("9112 6.1", "Transfer-Encoding in HTTP/1.0: faulty framing, "
         "closed", b"POST " + U + b" HTTP/1.0\r\nTransfer-Encoding: "
         b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + get(H),
         closed_or_rejected)
    case("9112 6.1", "a space before the colon of Transfer-Encoding: 400",
         post(b"Transfer-Encoding : chunked\r\n",
              b"0\r\n\r\n"), rejected(400))
    case("9112 6.1", "xchunked: 501 (or 400)", post(
        b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
         rejected(501, 400))
    case("9112 6.1", "a vertical tab before chunked: 400 or 501", post(
        b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"),
         rejected(400, 501))
    case("9112 6.3", "POST without a length: no body (411 or read as "
         "empty)", b"POST " + U + b" HTTP/1.1\r\n" + H + b"\r\n",
         answered)
    # RFC 9112 7: chunked coding.
    case("9112 7.1", "upper-case hex chunk size", post(
        b"Transfer-Encoding: chunked\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"),
         upload_ok)
    case("9112 7.1", "leading zeros in a chunk size", post(
        b"Transfer-Encoding: chunked\r\n", b"0005\r\nhello\r\n0\r\n\r\n"),
         upload_ok)
    case("9112 7.1.1", "chunk extensions are ignored", post(
        b"Transfer-Encoding: chunked\r\n",
        b"5;name=value\r\nhello\r\n0;x\r\n\r\n"), upload_ok)
    case("9112 7.1.1", "a quoted chunk extension", post(
        b"Transfer-Encoding: chunked\r\n",
        b"5;n=\"v\"\r\nhello\r\n0\r\n\r\n"), upload_ok)
    case("9112 7.1.2", "a trailer section", post(
        b"Transfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"), upload_ok)
    case("9112 7.1", "a chunk size that is not hex: 400", post(
        b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
         rejected(400))
    case("9112 7.1", "a chunk size with a space before it: 400", post(
        b"Transfer-Encoding: chunked\r\n", b" 5\r\nhello\r\n0\r\n\r\n"),
         rejected(400))
    case("9112 7.1", "chunk data longer than its size: 400", post(
        b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"),
         rejected(400))
    case("9112 7.1", "a chunk size of 2^64-1: refused at once",
         post(b"Transfer-Encoding: chunked\r\n",
              b"ffffffffffffffff\r\nhello"), rejected(400, 413))
    case("9112 7.1", "a chunk size past 2^64: 400 or 413", post(
        b"Transfer-Encoding: chunked\r\n",
        b"1ffffffffffffffff\r\nhello"), rejected(400, 413))
    case("9112 7.1", "a chunked body, then the next request", post(
        b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n") +
         get(H), lambda rs, c, raw: (
             len([r for r in rs if r.status >= 200]) == 2 and
             rs[-1].status == 200, f"got {[r.status for r in rs]}"))
    # RFC 9112 9: connections.
    case("9112 9.3", "HTTP/1.1 stays open", get(H), stays_open,
         half_close=False)
    case("9112 9.6", "Connection: close: answered with close, then closed",
         get(H + b"Connection: close\r\n"),
         both(ok, closes, header("connection",
                                 lambda v: v and "close" in v.lower(),
                                 "want close")), half_close=False)
    case("9112 9.6", "Connection: CLOSE (any case)",
         get(H + b"Connection: CLOSE\r\n"), both(ok, closes),
         half_close=False)
    case("9112 9.3", "HTTP/1.0 closes after its response",
         get(b"", version=b"HTTP/1.0"), both(ok, closes), half_close=False)
    case("9112 9.3", "HTTP/1.0 with keep-alive stays open",
         get(b"Connection: keep-alive\r\n", version=b"HTTP/1.0"),
         both(ok, stays_open), half_close=False)
    case("9112 9.3.2", "three pipelined requests answered in order",
         get(H) + get(H, target=P + b"?2") + get(H, target=P + b"?3"),
         statuses(200, 200, 200))
    case("9112 9.3.2", "pipelined requests sent in pieces",
         [get(H)[:7], get(H)[7:] + get(H)[:20], get(H)[20:]],
         statuses(200, 200))
    case("9112 9.6", "nothing after Connection: close is answered",
         get(H + b"Connection: close\r\n") + get(H), statuses(200))
    case("9112 9.6", "a request after an error is not answered",
         get(b"Host : x\r\n") + get(H), statuses(400))
    # RFC 9110 10.1.1: Expect.
    case("9110 10.1.1", "Expect: 100-continue gets 100, then the answer",
         b"POST " + U + b" HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
         b"Expect: 100-continue\r\n\r\nhello", both(got_100, upload_ok))
    case("9110 10.1.1", "Expect: 100-Continue (any case)",
         b"POST " + U + b" HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
         b"Expect: 100-Continue\r\n\r\nhello", both(got_100, upload_ok))
    case("9110 10.1.1", "an HTTP/1.0 client's Expect is ignored (no 100)",
         b"POST " + U + b" HTTP/1.0\r\nContent-Length: 5\r\n"
         b"Expect: 100-continue\r\n\r\nhello", both(no_100, upload_ok))
    case("9110 10.1.1", "100-continueXYZ is not 100-continue",
         b"POST " + U + b" HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
         b"Expect: 100-continueXYZ\r\n\r\nhello", no_100)
    # RFC 9110 6, 8, 15: what a response carries.
    case("9110 6.6.1", "an origin server with a clock sends Date",
         get(H), both(ok, header("date", lambda v: v and re.match(
             r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$", v),
             "an IMF-fixdate")))
    case("9110 8.6", "Content-Length matches the body", get(H),
         lambda rs, c, raw: (rs and "content-length" in rs[0].headers and
                             int(rs[0].headers["content-length"]) ==
                             len(rs[0].body), "length and body differ"))
    case("9112 4", "the status line is HTTP/1.1 NNN reason",
         get(H), lambda rs, c, raw: (
             re.match(rb"HTTP/1\.1 200 [\x21-\x7e][ -~]*\r\n", raw) is not
             None, f"{raw[:40]!r}"))
    case("9110 15.5.1", "a 400 response says why in a body it frames",
         get(b"Host : x\r\n"), lambda rs, c, raw: (
             rs and rs[0].status == 400 and
             ("content-length" in rs[0].headers or
              "transfer-encoding" in rs[0].headers),
             "an unframed error body"))
    return C


def run(host, port, path, upload, only=None):
    """Runs every case; returns [(case, ok, why)]."""
    results = []
    for c in cases(path, upload):
        if only and not re.search(only, c["name"]):
            continue
        try:
            raw, closed = exchange(host, port, c["req"], c["half_close"],
                                   timeout=1.0 if not c["half_close"]
                                   else TIMEOUT)
            rs = parse(raw, c["heads"])
            ok, why = c["check"](rs, closed, raw)
        except OSError as e:
            ok, why = False, f"{type(e).__name__}: {e}"
        results.append((c, bool(ok), why))
    return results


def report(name, results, json_out=None):
    failed = [(c, why) for c, ok, why in results if not ok]
    for c, why in failed:
        print(f"  FAIL {name}: [RFC {c['section']}] {c['name']}: {why}")
    print(f"{name}: {len(results) - len(failed)} of {len(results)} cases "
          "passed", flush=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump([{"section": c["section"], "case": c["name"],
                        "ok": ok, "why": why} for c, ok, why in results],
                      f, indent=1)
    return not failed


def main():
    args = sys.argv[1:]
    opts = {"--path": "/plaintext", "--upload": "/upload", "--json": None,
            "--url": None, "--only": None}
    binary = None
    while args:
        a = args.pop(0)
        if a in opts:
            if not args:
                sys.exit(f"http_conformance: {a} needs a value")
            opts[a] = args.pop(0)
        elif binary is None and not a.startswith("-"):
            binary = a
        else:
            sys.exit(f"http_conformance: unknown argument {a!r}")
    if opts["--url"]:
        m = re.match(r"http://([^/:]+|\[[^\]]+\]):(\d+)/?$", opts["--url"])
        if not m:
            sys.exit("http_conformance: --url wants http://HOST:PORT")
        res = run(m.group(1).strip("[]"), int(m.group(2)), opts["--path"],
                  opts["--upload"], opts["--only"])
        sys.exit(0 if report(opts["--url"], res, opts["--json"]) else 1)
    if not binary:
        sys.exit("usage: http_conformance.py URSA_HTTP | --url URL")
    ok = True
    n = 0
    for backend in ("uring", "ursa-epoll"):
        p = subprocess.Popen([binary, "--backend", backend, "--listen",
                              "127.0.0.1:0", "--max-body", "1048576"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        line = p.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
        if not m:
            p.kill()
            sys.exit(f"ursa-http did not start: {line!r}")
        res = run("127.0.0.1", int(m.group(1)), opts["--path"],
                  opts["--upload"], opts["--only"])
        n = len(res)
        ok &= report(f"ursa-http {backend}", res, opts["--json"])
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        if p.returncode != 0:
            print(f"ursa-http {backend}: exit {p.returncode}: {err[-300:]}")
            ok = False
    if n < 100:
        print(f"only {n} cases: the suite promises at least 100")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
