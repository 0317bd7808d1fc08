"""netns.py - the nearest this machine gets to two hosts: the server in a
network namespace of its own, the load in another, joined by a veth pair.
Traffic then crosses a device with a queue discipline and GRO on each side
instead of loopback.  Both namespaces are the bench's own (named after its
process), so the machine's own network is never touched, and they are
removed at the end, also when the run fails or is interrupted; ones left
by a bench process that no longer exists are removed at start."""
import atexit
import os
import re
import signal
import subprocess

PREFIX = "ursa-bench-"
SERVER_IP, LOAD_IP = "10.251.0.1", "10.251.0.2"


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True,
                       timeout=30)
    if check and r.returncode:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()[:200]}")
    return r.stdout


def stale():
    """Namespaces of this bench whose process is gone."""
    out = []
    for line in ip("netns", "list", check=False).splitlines():
        m = re.match(rf"({PREFIX}(\d+)-(srv|load))\b", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            out.append(m.group(1))
    return out


class Veth:
    """Two namespaces and the veth pair between them; prefix(side) is the
    command prefix that runs a program in one of them."""

    def __init__(self):
        pid = os.getpid()
        self.srv, self.load = f"{PREFIX}{pid}-srv", f"{PREFIX}{pid}-load"
        self.up = False
        for ns in stale():
            ip("netns", "del", ns, check=False)
        atexit.register(self.down)
        self.old_term = signal.signal(signal.SIGTERM, self._term)
        try:
            ip("netns", "add", self.srv)
            ip("netns", "add", self.load)
            self.up = True
            a, b = f"ub{pid % 100000}s", f"ub{pid % 100000}l"
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            ip("link", "set", a, "netns", self.srv)
            ip("link", "set", b, "netns", self.load)
            for ns, dev, addr in ((self.srv, a, SERVER_IP),
                                  (self.load, b, LOAD_IP)):
                ip("-n", ns, "addr", "add", addr + "/24", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except (OSError, subprocess.SubprocessError):
            self.down()
            raise
        self.device = a
        self.server_ip = SERVER_IP

    def _term(self, signum, frame):
        self.down()
        raise SystemExit(128 + signum)

    def prefix(self, side):
        return ["ip", "netns", "exec", self.srv if side == "srv"
                else self.load]

    def describe(self):
        """The path as the report names it: the pair and its qdisc."""
        q = ip("-n", self.srv, "-o", "link", "show", self.device,
               check=False)
        m = re.search(r"qdisc (\S+)", q)
        return (f"veth pair ({SERVER_IP} and {LOAD_IP}, qdisc "
                f"{m.group(1) if m else 'unknown'}) between two network "
                f"namespaces")

    def down(self):
        """Removes both namespaces (the veth pair goes with them); safe to
        call more than once."""
        if self.up:
            for ns in (self.srv, self.load):
                ip("netns", "del", ns, check=False)
            self.up = False
