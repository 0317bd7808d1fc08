#!/usr/bin/env python3
"""echo_app_test.py - the echo example end to end: every --proto and
address form echoes byte for byte; bad input exits 2 naming the fault."""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER = sys.argv[1]
failures = []
checks = [0]


def check(cond, what):
    checks[0] += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def start(*args):
    p = subprocess.Popen([SERVER, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.match(r"echo: (\S+) listening on (.*)$", line.strip())
    if not m:
        p.kill()
        out, err = p.communicate()
        raise RuntimeError(f"server did not start: {line!r} {err!r}")
    return p, m.group(2)


def stop(p):
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    check(p.returncode == 0, f"server exit {p.returncode}: {err}")
    check("connections" in out, f"no summary in {out!r}")
    return out


def sockaddr(text):
    if text.startswith("unix:@"):
        return socket.AF_UNIX, "\0" + text[6:]
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    if text.startswith("["):
        host, port = text[1:].rsplit("]:", 1)
        return socket.AF_INET6, (host, int(port))
    host, port = text.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def stream_echo(addr, kind, sizes):
    fam, sa = sockaddr(addr)
    for n in sizes:
        data = random.randbytes(n)
        with socket.socket(fam, kind) as s:
            s.settimeout(10)
            s.connect(sa)
            if kind == socket.SOCK_SEQPACKET:
                s.send(data)
                got = s.recv(n + 1)
            else:
                # Send from a thread: the server stops reading while its
                # replies are not read, so one thread doing both deadlocks.
                def send():
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                t = threading.Thread(target=send)
                t.start()
                got = b""
                while True:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
                t.join()
            check(got == data, f"{addr} {kind}: {n} bytes came back as "
                               f"{len(got)} (differ={got != data})")


def dgram_echo(addr, sizes, tmp):
    fam, sa = sockaddr(addr)
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        if fam == socket.AF_UNIX:
            s.bind("")  # autobind so that replies have somewhere to go
        for n in sizes:
            data = random.randbytes(n)
            s.sendto(data, sa)
            got = s.recv(70000)
            check(got == data, f"{addr} dgram: {n} bytes came back as "
                               f"{len(got)}")


def main():
    random.seed(7)
    tmp = tempfile.mkdtemp(prefix="ursa-echo-")
    big = [1, 100, 70000, 3 << 20]
    for listen in ["127.0.0.1:0", "[::1]:0", "localhost:0"]:
        p, addr = start("--proto", "tcp", "--listen", listen)
        stream_echo(addr, socket.SOCK_STREAM, big)
        stop(p)
    p, addr = start("--listen", ":0")
    port = addr.rsplit(":", 1)[1]
    stream_echo("127.0.0.1:" + port, socket.SOCK_STREAM, [10])
    stream_echo("[::1]:" + port, socket.SOCK_STREAM, [10])  # dual-stack
    stop(p)
    for listen in ["unix:" + tmp + "/s.sock", "unix:@ursa-echo-%d" % os.getpid()]:
        p, addr = start("--proto", "unix", "--listen", listen)
        stream_echo(addr, socket.SOCK_STREAM, big)
        stop(p)
        if not listen.startswith("unix:@"):
            check(not os.path.exists(listen[5:]), "socket file left behind")
    p, addr = start("--proto", "seqpacket", "--listen", "unix:" + tmp + "/q.sock")
    stream_echo(addr, socket.SOCK_SEQPACKET, [1, 500, 9000])
    stop(p)
    for listen in ["127.0.0.1:0", "[::1]:0"]:
        p, addr = start("--proto", "udp", "--listen", listen)
        dgram_echo(addr, [0, 1, 1400, 65507], tmp)
        stop(p)
    p, addr = start("--proto", "unixgram", "--listen", "unix:" + tmp + "/g.sock")
    dgram_echo(addr, [0, 1, 1400, 60000], tmp)
    stop(p)

    # Bad input: exit 2, a message naming the fault, no crash.
    busy, busy_addr = start("--listen", "127.0.0.1:0")
    cases = [
        (["--bogus"], "unknown or incomplete option '--bogus'"),
        (["--proto", "sctp"], "unknown --proto 'sctp'"),
        (["--listen", "127.0.0.1:99999"], "out of range"),
        (["--listen", "127.0.0.1"], "missing ':PORT'"),
        (["--listen", "nosuchhost.invalid:80"], "unknown host"),
        (["--listen", "unix:/" + "x" * 200], "longer than sun_path"),
        (["--proto", "unix", "--listen", "127.0.0.1:0"], "needs a unix:"),
        (["--listen", busy_addr], "address already in use"),
        (["--duration", "soon"], "--duration"),
    ]
    for args, says in cases:
        r = subprocess.run([SERVER, *args], capture_output=True, text=True,
                           timeout=20)
        check(r.returncode == 2, f"{args}: exit {r.returncode}, want 2")
        check(says in r.stderr, f"{args}: stderr {r.stderr!r} lacks {says!r}")
    stop(busy)
    print(f"{checks[0] - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
