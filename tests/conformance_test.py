#!/usr/bin/env python3
"""conformance_test.py - every ursa-echo-server backend against the same
wire behaviour: echo of many sizes and connections byte for byte,
half-close, greet mode, 500 simultaneous connections, select's refusal past
FD_SETSIZE, UDP and Unix echo, ursa-load at 1, 64 and 1000 connections, a
clean stop with its summary, and bad input.  Also: ursa-load notices a
server that corrupts one byte, and says why it fails when a server hangs up
or a port refuses."""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from apptest import (BACKENDS, CAPS, CLIENT, LOAD, NO_URING, SERVER, SERVERS,
                     Server, check,
                     echo_dgram, echo_stream, finish, parallel, rss_kb,
                     sockaddr)


def load(addr, conns, *extra, wrap=()):
    out = tempfile.mktemp(prefix="ursa-load-", suffix=".json")
    r = subprocess.run([*wrap, LOAD, addr, "--connections", str(conns),
                        "--duration", "1", "--warmup", "0", "--json", out,
                        *extra], capture_output=True, text=True, timeout=60)
    res = {}
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
        os.unlink(out)
    return r, res


def test_backend(b, tmp):
    # Many connections at once, random sizes, byte for byte.
    srv = Server(b)
    payloads = [random.randbytes(random.randint(1, 200000)) for _ in range(40)]
    got = parallel(lambda d: echo_stream(srv.addr, d), payloads)
    check(all(g == d for g, d in zip(got, payloads)),
          f"{b}: 40 parallel random-size echoes")
    # 1 byte to 4 MiB, each sent then half-closed: the echo still flows back.
    for n in [1, 1000, 65536, 1 << 20, 4 << 20]:
        d = random.randbytes(n)
        check(echo_stream(srv.addr, d) == d, f"{b}: echo of {n} bytes")
    # 500 simultaneous connections.
    fam, sa = sockaddr(srv.addr)
    socks = []
    for i in range(500):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(sa)
        socks.append(s)
    for i, s in enumerate(socks):
        s.sendall(b"%08d" % i)
    ok = all(s.recv(8) == b"%08d" % i for i, s in enumerate(socks))
    check(ok, f"{b}: 500 simultaneous connections echo")
    for s in socks:
        s.close()
    # The load generator at 1, 64 and 1000 connections.
    for conns in [1, 64, 1000]:
        r, res = load(srv.addr, conns)
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("round_trips", 0) > 0,
              f"{b}: ursa-load at {conns} connections: exit {r.returncode} "
              f"{res} {r.stderr}")
    stats = srv.stop()
    check(stats.get("connections", 0) >= 40 + 5 + 500 + 1065,
          f"{b}: connections counted: {stats.get('connections')}")
    check(stats.get("bytes_in") == stats.get("bytes_out"),
          f"{b}: bytes in {stats.get('bytes_in')} != out {stats.get('bytes_out')}")
    # libuv cannot count its system calls and says so with -1.
    check(stats.get("cpu_s", -1) >= 0 and
          (stats.get("syscalls", 0) > 0 or
           (b == "libuv" and stats.get("syscalls") == -1)),
          f"{b}: cpu and syscalls in {stats}")

    # A peer that sends and never reads cannot grow the server.
    srv = Server(b)
    test_slow_reader(srv)
    srv.stop()

    # Greet mode.
    srv = Server(b, "--mode", "greet")
    r = subprocess.run([CLIENT, srv.addr], capture_output=True, text=True,
                       timeout=20)
    check(r.returncode == 0 and r.stdout.strip() == "Thank you for connecting",
          f"{b}: greet: {r.returncode} {r.stdout!r} {r.stderr!r}")
    # ursa-load --greet: every greeting byte for byte, connection after
    # connection; a wrong expectation is counted, and fails the run.
    r, res = load(srv.addr, 4, "--greet")
    check(r.returncode == 0 and res.get("errors") == 0 and
          res.get("mode") == "greet" and res.get("round_trips", 0) > 20 and
          res.get("opened_per_s", 0) > 20,
          f"{b}: ursa-load --greet: {r.returncode} {res} {r.stderr[-200:]!r}")
    r, res = load(srv.addr, 2, "--greeting", "Thank you for calling")
    check(r.returncode == 1 and res.get("mismatched", 0) > 0 and
          "greeting differs" in r.stderr,
          f"{b}: a wrong greeting is counted: {r.returncode} {res}")
    stats = srv.stop()
    check(stats.get("connections", 0) > 20, f"{b}: greeted {stats}")

    # UDP and Unix stream.
    for listen in ["127.0.0.1:0", "[::1]:0"]:
        srv = Server(b, "--proto", "udp", listen=listen)
        echo_dgram(srv.addr, [0, 1, 1400, 65507])
        r, res = load(srv.addr, 8, "--proto", "udp", "--size", "1400")
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("round_trips", 0) > 0,
              f"{b}: ursa-load over udp {listen}: {r.returncode} {r.stderr}")
        srv.stop()
    path = f"{tmp}/{b}.sock"
    srv = Server(b, "--proto", "unix", listen="unix:" + path)
    d = random.randbytes(300000)
    check(echo_stream(srv.addr, d) == d, f"{b}: unix stream echo")
    r, res = load(srv.addr, 16, "--proto", "unix")
    check(r.returncode == 0 and res.get("errors") == 0,
          f"{b}: ursa-load over unix: {r.returncode} {r.stderr}")
    srv.stop()
    check(not os.path.exists(path), f"{b}: socket file left behind")

    # Bad input and a busy port.
    busy = Server(b)
    for args, says in [
        (["--bogus", "1"], "unknown option '--bogus'"),
        (["--cpu"], "option '--cpu' needs a value"),
        (["--cpu=x"], "--cpu wants a whole number"),
        (["stray"], "unexpected argument 'stray'"),
        (["--listen", busy.addr], "in use"),
        (["--listen", "127.0.0.1:70000"], "out of range"),
        (["--proto", "unix", "--listen", "127.0.0.1:0"], "needs a unix:"),
        (["--mode", "shout"], "unknown --mode 'shout'"),
        (["--cpu", "x"], "--cpu wants a whole number"),
    ]:
        r = subprocess.run([SERVER, "--backend", b, *args],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"{b} {args}: exit {r.returncode}, stderr {r.stderr!r}")
    busy.stop()


def test_slow_reader(srv):
    fam, sa = sockaddr(srv.addr)
    base = rss_kb(srv.p.pid)
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.connect(sa)
        s.setblocking(False)
        chunk = random.randbytes(1 << 16)
        pushed = 0
        end = time.time() + 1.0
        while time.time() < end:
            try:
                pushed += s.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        grown = rss_kb(srv.p.pid) - base
        # Bounded, the server stops reading and TCP stops the peer after a
        # few MiB; unbounded, it takes hundreds of MiB a second.  (RSS
        # alone would not do: ASan's quarantine inflates it.)
        check(1 << 20 < pushed < 64 << 20,
              f"{srv.backend}: {pushed} bytes pushed in a second by a peer "
              "that does not read")
        check(grown < 64 << 10, f"{srv.backend}: server grew {grown} KiB "
                                f"for a peer that does not read")


def test_select_limit():
    """Past FD_SETSIZE select refuses clearly instead of corrupting memory."""
    srv = Server("select")
    fam, sa = sockaddr(srv.addr)
    socks = []
    for i in range(1100):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(sa)
        socks.append(s)
    for s in socks[:900]:
        s.sendall(b"ping")
    check(all(s.recv(4) == b"ping" for s in socks[:900]),
          "select: connections below the limit still echo")
    for s in socks:
        s.close()
    stats = srv.stop()
    check(stats.get("refused", 0) > 0, f"select: nothing refused: {stats}")
    check("at or above the limit of 1024" in srv.err,
          f"select: no clear refusal message: {srv.err!r}")


def test_uring_only(tmp):
    # The opt-in receive paths carry the same bytes, streams and messages.
    opt = ["--uring-enable", "recv_bundle,buf_inc", "--buf-size", "4096"]
    srv = Server("uring", *opt)
    d = random.randbytes(3000000)
    check(echo_stream(srv.addr, d) == d, "uring with bundles: tcp echo")
    r, res = load(srv.addr, 32)
    check(r.returncode == 0 and res.get("errors") == 0,
          f"uring with bundles: ursa-load: {r.returncode} {r.stderr}")
    srv.stop()
    srv = Server("uring", "--proto", "seqpacket", *opt,
                 listen=f"unix:{tmp}/qb.sock")
    for n in [1, 500, 4000]:
        d = random.randbytes(n)
        check(echo_stream(srv.addr, d, socket.SOCK_SEQPACKET) == d,
              f"uring with bundles: seqpacket {n}")
    srv.stop()
    # Greet mode's connections are plain descriptors unless asked for.
    srv = Server("uring", "--mode", "greet", "--uring-enable", "direct_files")
    r, res = load(srv.addr, 4, "--greet")
    check(r.returncode == 0 and res.get("errors") == 0 and
          res.get("round_trips", 0) > 20,
          f"greet on direct descriptors: {r.returncode} {res}")
    srv.stop()
    for v, says in [("multishot_recv",
                     "only direct_files, recv_bundle, buf_inc, read_multishot, "
                     "sync_msg_ring, reg_wait and file_splice are opt-in"),
                    ("min_wait",
                     "only direct_files, recv_bundle, buf_inc, read_multishot, "
                     "sync_msg_ring, reg_wait and file_splice are opt-in"),
                    ("nope", "--uring-enable: unknown feature 'nope'")]:
        r = subprocess.run([SERVER, "--backend", "uring", "--uring-enable", v],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"--uring-enable {v}: exit {r.returncode}, {r.stderr!r}")
    # Batched waits under each policy: every byte echoed (ursa-load checks
    # each) at 16 connections, the count the server reports in its stats
    # (never: none; always: some), and a bad policy or bound named.
    for pol in ["auto", "always", "never"]:
        srv = Server("uring", "--batch-waits", pol, "--batch-wait", "200")
        r, res = load(srv.addr, 16)
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("round_trips", 0) > 20,
              f"echo with batched waits {pol}: {r.returncode} {res}")
        bw = srv.stop().get("batch_waits")
        check(bw == 0 if pol == "never" else
              (bw or 0) > 0 if pol == "always" else bw is not None,
              f"--batch-waits {pol}: {bw} batched waits")
    r = subprocess.run([SERVER, "--backend", "uring", "--batch-waits", "some"],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "--batch-waits 'some' is not auto, always "
          "or never" in r.stderr,
          f"--batch-waits some: exit {r.returncode}, {r.stderr!r}")
    for v in ["0", "10001", "x"]:
        r = subprocess.run([SERVER, "--backend", "uring", "--batch-wait", v],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and "--batch-wait" in r.stderr,
              f"--batch-wait {v}: exit {r.returncode}, {r.stderr!r}")
    # Messages on the library, either backend.
    for b in [b for b in BACKENDS if "messages" in CAPS[b]]:
        srv = Server(b, "--proto", "seqpacket", listen=f"unix:{tmp}/q.sock")
        for n in [1, 500, 9000]:
            d = random.randbytes(n)
            check(echo_stream(srv.addr, d, socket.SOCK_SEQPACKET) == d,
                  f"{b}: seqpacket {n}")
        srv.stop()
        srv = Server(b, "--proto", "unixgram", listen=f"unix:{tmp}/g.sock")
        echo_dgram(srv.addr, [0, 1, 1400, 60000])
        srv.stop()
    r = subprocess.run([SERVER, "--backend", "epoll", "--proto", "seqpacket",
                        "--listen", f"unix:{tmp}/x.sock"], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode == 2 and "is for uring and ursa-epoll, not epoll" in r.stderr,
          f"seqpacket on epoll: {r.returncode} {r.stderr!r}")
    # auto picks uring where io_uring works (it does here).
    srv = Server("auto")
    d = random.randbytes(1000)
    check(echo_stream(srv.addr, d) == d, "auto: echo")
    srv.backend = "auto"
    out = srv.stop()
    check(out.get("backend") == "uring", f"auto did not pick uring: {out}")
    r = subprocess.run([SERVER, "--backend", "kqueue"], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode == 2 and "unknown --backend 'kqueue'" in r.stderr,
          f"unknown backend: {r.stderr!r}")


def test_without_io_uring():
    """io_uring blocked by a seccomp filter, as in a container."""
    r = subprocess.run([NO_URING, SERVER, "--backend", "uring", "--listen",
                        "127.0.0.1:0"], capture_output=True, text=True,
                       timeout=20)
    check(r.returncode == 2 and "seccomp" in r.stderr and
          "epoll backend" in r.stderr,
          f"uring without io_uring: {r.returncode} {r.stderr!r}")
    p = subprocess.Popen([NO_URING, SERVER, "--backend", "auto", "--listen",
                          "127.0.0.1:0", "--duration", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    m = re.search(r"server: (\S+) tcp listening on (\S+)$", line.strip())
    check(m is not None and m.group(1) == "ursa-epoll",
          f"auto without io_uring: {line!r}")
    if m:
        addr = m.group(2)
        d = random.randbytes(5000)
        check(echo_stream(addr, d) == d, "auto fallback echoes")
        # The clients run unchanged there too, on the library's AUTO.
        r, res = load(addr, 16, wrap=(NO_URING,))
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("round_trips", 0) > 0,
              f"ursa-load without io_uring: {r.returncode} {res} "
              f"{r.stderr!r}")
        r = subprocess.run([NO_URING, CLIENT, addr, "--message", "no ring"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 0 and "no ring" in r.stdout,
              f"ursa-echo-client without io_uring: {r.returncode} "
              f"{r.stdout!r} {r.stderr!r}")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    check(p.returncode == 0 and "using epoll" in err and "seccomp" in err,
          f"auto fallback said nothing: {p.returncode} {err!r}")
    # The probe says which backend a loop gets there, and why.
    probe = os.path.join(os.path.dirname(SERVER), "ursa-probe")
    r = subprocess.run([NO_URING, probe, "--json"], capture_output=True,
                       text=True, timeout=20)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        j = {}
    check(r.returncode == 0 and j.get("backend") == "epoll" and
          "EPERM" in j.get("backend_why", ""),
          f"ursa-probe without io_uring: {r.returncode} {r.stdout!r}")


def test_load_notices_corruption():
    """A server that flips one byte of its echo: ursa-load must say so."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    port = ls.getsockname()[1]

    def serve():
        c, _ = ls.accept()
        seen = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            d = bytearray(d)
            if seen <= 1000 < seen + len(d):  # byte 1000 of the stream
                d[1000 - seen] ^= 0x20
            seen += len(d)
            c.sendall(bytes(d))
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r, res = load(f"127.0.0.1:{port}", 1, "--size", "100")
    check(r.returncode != 0, "ursa-load exit 0 on a corrupted echo")
    check(res.get("mismatched", 0) >= 1, f"ursa-load did not count it: {res}")
    check("differ" in r.stderr, f"ursa-load said nothing: {r.stderr!r}")
    # With --threads 2 each loop has one of the two connections, both
    # corrupted: the count is over both loops.
    ts = []
    for _ in range(2):
        ts.append(threading.Thread(target=serve, daemon=True))
        ts[-1].start()
    r, res = load(f"127.0.0.1:{port}", 2, "--size", "100", "--threads", "2")
    check(r.returncode != 0 and res.get("mismatched", 0) >= 2,
          f"ursa-load --threads 2 on two corrupted echoes: {r.returncode} "
          f"{res}")
    ls.close()
    # A server that hangs up at once: ursa-load must fail and say why on
    # stderr, since the bench keeps only stderr.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]

    def hang_up():
        for _ in range(3):
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.close()
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    r, res = load(f"127.0.0.1:{port}", 3)
    check(r.returncode == 1 and res.get("io_errors", 0) >= 1 and
          re.search(r"ursa-load: \d+ errors .*i/o [1-9]", r.stderr),
          f"ursa-load on hang-ups: {r.returncode} {res} {r.stderr!r}")
    ls.close()
    r, res = load("127.0.0.1:1", 2)
    check(r.returncode == 1 and res.get("connect_errors") == 2 and
          "connect 2" in r.stderr,
          f"ursa-load on a refused port: {r.returncode} {res} {r.stderr!r}")
    r = subprocess.run([LOAD, "127.0.0.1:1", "--size", "0"],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "--size wants" in r.stderr,
          f"ursa-load bad flag: {r.returncode} {r.stderr!r}")


def test_threads():
    print("--- threads", flush=True)
    # --threads 2: the same bytes back through two loops, however the
    # connections are shared out, and one signal stops them all.
    cases = [("uring", "reuseport"), ("uring", "handoff"),
             ("uring", "fewest"), ("ursa-epoll", "reuseport"),
             ("ursa-epoll", "handoff"), ("epoll", "reuseport")]
    for b, d in cases:
        srv = Server(b, "--threads", "2", "--dispatch", d)
        payloads = [random.randbytes(random.randint(1, 300000))
                    for _ in range(24)]
        got = parallel(lambda x: echo_stream(srv.addr, x), payloads)
        check(all(g == x for g, x in zip(got, payloads)),
              f"{b} --threads 2 --dispatch {d}: 24 parallel echoes")
        r, res = load(srv.addr, 64, "--size", "1000")
        check(r.returncode == 0 and res.get("round_trips", 0) > 0,
              f"{b} --threads 2 --dispatch {d}: ursa-load at 64: "
              f"{r.returncode} {r.stderr[-300:]!r}")
        # The client on two loops as well: its counts are summed over both.
        r, res = load(srv.addr, 33, "--size", "700", "--threads", "2")
        check(r.returncode == 0 and res.get("connected") == 33 and
              res.get("round_trips", 0) > 0 and res.get("errors") == 0,
              f"{b} --threads 2 --dispatch {d}: ursa-load --threads 2: "
              f"{r.returncode} {res} {r.stderr[-300:]!r}")
        stats = srv.stop()
        check(stats.get("connections") == 24 + 64 + 33,
              f"{b} --threads 2 --dispatch {d}: connections counted over "
              f"both loops: {stats.get('connections')}")
        check(stats.get("bytes_in") == stats.get("bytes_out"),
              f"{b} --threads 2 --dispatch {d}: bytes in == out")
    # --workers: each message through a pool thread and back by ursa_post;
    # 4 in flight per connection, so replies out of order would show.
    for b, extra in [("uring", []), ("ursa-epoll", []),
                     ("uring", ["--threads", "2", "--dispatch", "handoff"])]:
        srv = Server(b, "--workers", "2", *extra)
        payloads = [random.randbytes(random.randint(1, 200000))
                    for _ in range(12)]
        got = parallel(lambda x: echo_stream(srv.addr, x), payloads)
        check(all(g == x for g, x in zip(got, payloads)),
              f"{b} --workers 2 {' '.join(extra)}: 12 parallel echoes")
        r, res = load(srv.addr, 16, "--size", "3000", "--inflight", "4")
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("round_trips", 0) > 0,
              f"{b} --workers 2 {' '.join(extra)}: ursa-load 4 in flight: "
              f"{r.returncode} {res} {r.stderr[-300:]!r}")
        stats = srv.stop()
        check(stats.get("bytes_in") == stats.get("bytes_out"),
              f"{b} --workers 2: bytes in == out: {stats}")
    r = subprocess.run([SERVER, "--listen", "127.0.0.1:0", "--backend",
                        "epoll", "--workers", "2"], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode == 2 and "--workers is for" in r.stderr,
          f"epoll --workers: {r.returncode} {r.stderr!r}")
    srv = Server("uring")
    r, res = load(srv.addr, 8, "--reconnect", "1")
    check(r.returncode == 0 and res.get("errors") == 0 and
          res.get("opened_per_s", 0) > 0,
          f"ursa-load --reconnect 1: {r.returncode} {res} {r.stderr[-300:]!r}")
    stats = srv.stop()
    check(stats.get("connections", 0) > 8,
          f"--reconnect opened new connections: {stats.get('connections')}")
    r = subprocess.run([LOAD, "127.0.0.1:1", "--reconnect", "1", "--bulk"],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "--reconnect is for" in r.stderr,
          f"ursa-load --reconnect --bulk: {r.returncode} {r.stderr!r}")
    r = subprocess.run([LOAD, "127.0.0.1:1", "--threads", "0"],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "--threads wants" in r.stderr,
          f"ursa-load --threads 0: {r.returncode} {r.stderr!r}")
    for args, says in [
            (["--backend", "select", "--threads", "2"], "--threads is for"),
            (["--backend", "uring", "--dispatch", "handoff"],
             "--dispatch needs --threads"),
            (["--backend", "uring", "--threads", "0"], "--threads wants"),
            (["--backend", "epoll", "--threads", "2", "--dispatch",
              "handoff"], "handoff and fewest is for uring and ursa-epoll, "
                          "not epoll"),
            (["--backend", "epoll", "--threads", "2", "--proto", "unix",
              "--listen", "unix:@ursa-conf-x"], "--threads over unix"),
            (["--backend", "libuv", "--workers", "2"],
             "--workers is for uring and ursa-epoll, not libuv"),
            (["--backend", "nope"], "(want uring, ursa-epoll, epoll"),
            (["--json"], "--json goes with --list-backends"),
            (["--backend", "uring", "--threads", "2", "--dispatch", "x"],
             "unknown --dispatch"),
            (["--backend", "uring", "--threads", "2", "--dispatch",
              "handoff", "--proto", "udp"], "not for --proto udp")]:
        r = subprocess.run([SERVER, "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"{' '.join(args)}: {r.returncode} {r.stderr!r}")


def test_tls(tmp):
    # --tls-cert on uring and ursa-epoll: ursa-load --tls checks every
    # byte through TLS; Python's ssl module as a client; the refusals.
    print("--- tls", flush=True)
    certs = os.path.join(tmp, "certs")
    r = subprocess.run(["bash", "tools/make_test_certs.sh", certs],
                       capture_output=True, text=True, timeout=60)
    if not check(r.returncode == 0, f"make_test_certs.sh: {r.stderr}"):
        return
    cert, key, ca = (os.path.join(certs, n) for n in
                     ("server.pem", "server.key", "ca.pem"))
    import ssl
    for b in [b for b in BACKENDS if "tls" in CAPS[b]]:
        srv = Server(b, "--tls-cert", cert, "--tls-key", key)
        r, res = load(srv.addr, 32, "--tls-ca", ca, "--size", "3000",
                      "--inflight", "2", "--threads", "2")
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("handshakes") == 32 and res.get("round_trips", 0) > 0,
              f"{b} TLS: ursa-load --tls: {r.returncode} {res} "
              f"{r.stderr[-300:]!r}")
        ctx = ssl.create_default_context(cafile=ca)
        fam, sa = sockaddr(srv.addr)
        data = random.randbytes(300000)
        # One thread: an SSL object read and written from two threads at
        # once loses data on the client side (seen: 8 runs in 40 cut short
        # against every server), so sends and reads take turns, with at
        # most 64 KiB in flight.
        with socket.create_connection(sa, timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                got, sent = bytearray(), 0
                while len(got) < len(data):
                    if sent < len(data) and sent - len(got) < 65536:
                        n = min(16384, len(data) - sent)
                        s.sendall(data[sent:sent + n])
                        sent += n
                        continue
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
        check(bytes(got) == data, f"{b} TLS: Python's ssl client, 300 KB")
        # New handshakes: each connection reconnects after 2 round trips.
        r, res = load(srv.addr, 4, "--tls-ca", ca, "--reconnect", "2")
        check(r.returncode == 0 and res.get("errors") == 0 and
              res.get("opened_per_s", 0) > 0 and
              res.get("handshakes", 0) > 4 and res.get("connected") == 4,
              f"{b} TLS: ursa-load --reconnect 2: {r.returncode} {res} "
              f"{r.stderr[-300:]!r}")
        # The tutorial client over TLS, and refusing the wrong CA.
        r = subprocess.run([CLIENT, srv.addr, "--tls-ca", ca, "--message",
                            "tls hello"], capture_output=True, text=True,
                           timeout=20)
        check(r.returncode == 0 and "tls hello" in r.stdout,
              f"{b} TLS: ursa-echo-client --tls: {r.returncode} "
              f"{r.stdout!r} {r.stderr!r}")
        r = subprocess.run([CLIENT, srv.addr, "--tls-ca",
                            os.path.join(certs, "other-ca.pem")],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 1 and "local issuer" in r.stderr,
              f"{b} TLS: ursa-echo-client, wrong CA: {r.returncode} "
              f"{r.stderr!r}")
        # A client that trusts another CA is refused, and says why.
        r, res = load(srv.addr, 2, "--tls-ca",
                      os.path.join(certs, "other-ca.pem"))
        check(r.returncode == 1 and "unknown CA" in r.stderr,
              f"{b} TLS: ursa-load with the wrong CA: {r.returncode} "
              f"{r.stderr[-300:]!r}")
        stats = srv.stop()
        check(stats.get("handshakes", 0) >= 34 and
              stats.get("tls_failed", 0) >= 3,
              f"{b} TLS: the server counted its handshakes: {stats}")
    for args, says in [
            (["--tls-cert", cert], "go together"),
            (["--tls-cert", os.path.join(certs, "nope.pem"), "--tls-key",
              key], "nope.pem"),
            (["--tls-cert", os.path.join(certs, "wrong.pem"), "--tls-key",
              key], "server.key"),
            (["--tls-cert", cert, "--tls-key", key, "--mode", "greet"],
             "echo and sink"),
            (["--backend", "select", "--tls-cert", cert, "--tls-key", key],
             "--tls-cert is for")]:
        full = args if "--backend" in args else ["--backend", "uring", *args]
        r = subprocess.run([SERVER, "--listen", "127.0.0.1:0", "--duration",
                            "2", *full], capture_output=True, text=True,
                           timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"server {' '.join(args)}: {r.returncode} {r.stderr!r}")


def test_list_backends():
    """The server's table as it prints it: the six servers in the bench's
    order, each with a line of text, and what each can do; every option a
    server lacks the capability for is refused naming the ones that have
    it."""
    check(BACKENDS == ["uring", "ursa-epoll", "epoll", "select", "blocking",
                       "libuv"], f"--list-backends --json: {BACKENDS}")
    check(CAPS["uring"] >= {"threads", "dispatch", "tls", "workers",
                            "messages", "library"} and
          CAPS["select"] == set() and CAPS["epoll"] == {"threads", "tls"},
          f"capabilities: {CAPS}")
    text = subprocess.run([SERVER, "--list-backends"], capture_output=True,
                          text=True, timeout=20).stdout
    check(all(any(line.split()[0] == b for line in text.splitlines())
              for b in BACKENDS), f"--list-backends: {text!r}")
    for b in BACKENDS:
        for cap, args in [("threads", ["--threads", "2"]),
                          ("workers", ["--workers", "2"])]:
            if cap in CAPS[b]:
                continue
            r = subprocess.run([SERVER, "--backend", b, "--listen",
                                "127.0.0.1:0", *args], capture_output=True,
                               text=True, timeout=20)
            have = [x for x in BACKENDS if cap in CAPS[x]]
            check(r.returncode == 2 and f"not {b}" in r.stderr and
                  all(x in r.stderr for x in have),
                  f"{b} {args}: {r.returncode} {r.stderr!r}")


def test_udp_offload():
    """The UDP servers with GRO and GSO (uring and ursa-epoll with --gro
    and --gso, and the hand-written mmsg server) echo ursa-load's datagram
    streams, plain and sent with GSO, with every datagram checked (its
    peer, number, length and last byte) and none altered; the options
    are refused where they do not apply, by name."""
    check(SERVERS[-1]["name"] == "mmsg" and "udp_only" in CAPS["mmsg"],
          f"the mmsg server is listed, udp only: {SERVERS[-1]}")
    for backend, extra in [("uring", ["--gro", "--gso"]),
                           ("uring", ["--gro", "--large-bufs", "4"]),
                           ("ursa-epoll", ["--gro", "--gso"]),
                           ("uring", ["--gso"]), ("ursa-epoll", ["--gso"]),
                           ("uring", ["--gso", "--batch-waits", "always"]),
                           ("mmsg", []), ("uring", [])]:
        for client in ([], ["--gso"]):
            srv = Server(backend, "--proto", "udp", *extra)
            out = tempfile.mktemp(prefix="ursa-udp-", suffix=".json")
            r = subprocess.run(
                [LOAD, srv.addr, "--proto", "udp", "--bulk",
                 "--connections", "4", "--inflight", "16", "--size", "1200",
                 "--duration", "0.5", "--warmup", "0.1", "--json", out,
                 *client], capture_output=True, text=True, timeout=30)
            stats = srv.stop()
            res = json.load(open(out)) if os.path.exists(out) else {}
            if os.path.exists(out):
                os.unlink(out)
            what = f"{backend} {' '.join(extra)} client {' '.join(client)}"
            check(r.returncode == 0 and res.get("datagrams", 0) > 1000 and
                  res.get("mismatched") == 0,
                  f"udp bulk {what}: {r.returncode} {r.stderr[-300:]!r} "
                  f"{res}")
            # The server saw at least what came back, byte for byte.
            check(stats.get("bytes_in", 0) >= res.get("datagrams", 0) * 1200
                  and stats.get("bytes_out", 0) >= res.get("datagrams", 0)
                  * 1200, f"udp bulk {what}: server {stats}")
    for args, says in [
            (["--backend", "uring", "--gro"], "are for --proto udp, not tcp"),
            (["--backend", "epoll", "--gro", "--proto", "udp"],
             "--gro and --gso is for uring and ursa-epoll, not epoll"),
            (["--backend", "mmsg"], "the mmsg server is udp only"),
            (["--backend", "uring", "--proto", "udp", "--large-bufs", "64"],
             "--large-bufs sizes the ring --gro receives into"),
            (["--backend", "uring", "--proto", "udp", "--gro",
              "--large-bufs", "100"], "--large-bufs 100 is not a power")]:
        r = subprocess.run([SERVER, "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"server {' '.join(args)}: {r.returncode} {r.stderr!r}")
    # --gso alone merges a round's echoes to a peer into GSO sends: sizes
    # that cannot share one (a longer one after a shorter) still come back
    # whole, each once.
    for backend in ["uring", "ursa-epoll"]:
        srv = Server(backend, "--proto", "udp", "--gso")
        fam, sa = sockaddr(srv.addr)
        sizes = [1200, 1200, 700, 1200, 1200, 30, 1, 1200, 5000, 5000, 100]
        sent = [random.randbytes(n) for n in sizes]
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.connect(sa)
            for d in sent:
                u.send(d)
            got = []
            try:
                while len(got) < len(sent):
                    got.append(u.recv(65536))
            except socket.timeout:
                pass
        check(sorted(got) == sorted(sent),
              f"{backend} --gso: {len(got)} of {len(sent)} echoes back, "
              f"sizes {[len(g) for g in got]}")
        srv.stop()
    for args, says in [
            (["--gso"], "--gso is for --proto udp --bulk"),
            (["--proto", "udp", "--bulk", "--size", "4"],
             "takes datagrams of 8 to 65507 bytes"),
            (["--proto", "udp", "--bulk", "--threads", "2"], "one thread")]:
        r = subprocess.run([LOAD, "127.0.0.1:9", *args], capture_output=True,
                           text=True, timeout=20)
        check(r.returncode == 2 and says in r.stderr,
              f"ursa-load {' '.join(args)}: {r.returncode} {r.stderr!r}")


def main():
    random.seed(11)
    test_list_backends()
    test_udp_offload()
    tmp = tempfile.mkdtemp(prefix="ursa-conf-")
    only = os.environ.get("BACKENDS")
    for b in (only.split(",") if only else BACKENDS):
        print(f"--- {b}", flush=True)
        test_backend(b, tmp)
    test_select_limit()
    test_uring_only(tmp)
    test_without_io_uring()
    test_load_notices_corruption()
    test_threads()
    test_tls(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
