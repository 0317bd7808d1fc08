"""hosts.py - where the server and the load run: this machine, or another
reached over ssh (OpenSSH, in batch mode: keys, port and options from the
user's ssh config, --ssh-config or --ssh-option).

A remote host gets a scratch directory of the bench's own (mktemp -d under
/tmp), the programs the run needs copied into it over the ssh connection
itself (no shared filesystem, no scp), and everything runs from there; the
directory is removed at the end, also on SIGINT and SIGTERM.  A host that
cannot be reached, a refused key or a program missing there is named in
one line (Failure).  Each host's machine table (CPU, cores, kernel, the
NIC towards the server, liburing, io_uring features) comes from the host
itself."""
import atexit
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess


class Failure(Exception):
    pass


# The programs of ours a host runs: the server and the load side.
PROGRAMS = {"server": ["ursa-echo-server", "ursa-http", "ursa-probe"],
            "load": ["ursa-load", "ursa-probe"]}


class Place:
    """One host: run(cmd), popen(cmd), read(path), cpu_s(pid), and
    bindir/tmp as paths on it.  host None is this machine."""

    def __init__(self, host=None, ssh=(), bindir=None, role="server"):
        self.host, self.ssh, self.role = host, list(ssh), role
        self.scratch = None
        self._absent = {}  # tool: missing, as the host answered
        if not host:
            self.bindir, self.tmp = bindir, None  # the run's own
            self.root = os.geteuid() == 0
            return
        r = self.run(["mktemp", "-d", "/tmp/ursa-bench.XXXXXX"], check=False)
        if r.returncode:
            raise Failure(self._why(r, "cannot be reached"))
        self.scratch = r.stdout.strip()
        atexit.register(self.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            signal.signal(sig, lambda s, f, old=old: self._signal(s, f, old))
        self.root = self.run(["id", "-u"]).stdout.strip() == "0"
        self.bindir = self.scratch + "/bin"
        self.tmp = self.scratch + "/tmp"
        self.run(["mkdir", "-p", self.bindir, self.tmp])
        for name in PROGRAMS[role]:
            self.put(os.path.join(bindir, name), f"{self.bindir}/{name}")

    def name(self):
        return self.host or "this machine"

    def _why(self, r, what):
        err = (r.stderr or "").strip().splitlines()
        return f"{self.role} host {self.host}: {what}: " + (
            err[-1] if err else f"ssh exit {r.returncode}")

    def wrap(self, cmd):
        """cmd as a command line on this machine."""
        if not self.host:
            return list(cmd)
        return ["ssh", "-o", "BatchMode=yes", *self.ssh, self.host, "--",
                shlex.join(cmd)]

    def run(self, cmd, timeout=60, check=True, stdin=None):
        r = subprocess.run(self.wrap(cmd), capture_output=True, text=True,
                           timeout=timeout, stdin=stdin)
        if check and r.returncode:
            raise Failure(self._why(r, f"{cmd[0]} failed"))
        return r

    def popen(self, cmd):
        """A long-running program; on a remote host its first line of
        output is its pid (for stop), the rest its own."""
        if self.host:
            cmd = ["sh", "-c", 'echo "pid $$"; exec "$@"', "sh", *cmd]
        return subprocess.Popen(self.wrap(cmd), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def put(self, local, remote):
        with open(local, "rb") as f:
            r = subprocess.run(self.wrap(["sh", "-c", 'cat > "$1" && chmod '
                                          '+x "$1"', "sh", remote]),
                               stdin=f, capture_output=True, timeout=120)
        if r.returncode:
            raise Failure(f"{self.role} host {self.host}: cannot copy "
                          f"{os.path.basename(local)}: "
                          f"{r.stderr.decode(errors='replace').strip()[-200:]}")

    def read(self, path):
        if not self.host:
            with open(path) as f:
                return f.read()
        return self.run(["cat", path]).stdout

    def write(self, path, text):
        """A file on the host (a server's configuration)."""
        if not self.host:
            with open(path, "w") as f:
                f.write(text)
            return
        r = subprocess.run(self.wrap(["sh", "-c", 'cat > "$1"', "sh", path]),
                           input=text, capture_output=True, text=True,
                           timeout=60)
        if r.returncode:
            raise Failure(self._why(r, f"cannot write {path}"))

    def take(self, path):
        """A result file's text, removed after reading; None if absent."""
        if not self.host:
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                return None
            os.unlink(path)
            return text
        r = self.run(["sh", "-c", 'cat "$1" && rm -f "$1"', "sh", path],
                     check=False)
        return r.stdout if r.returncode == 0 and r.stdout.strip() else None

    def cpu_s(self, pid):
        """pid's user and system CPU seconds, from the host's /proc."""
        return stat_cpu_s(self.read(f"/proc/{pid}/stat"))

    def _stats(self):
        """{pid: /proc/PID/stat line} of every process on the host."""
        if self.host:
            text = self.run(["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"],
                            check=False).stdout
            lines = text.splitlines()
        else:
            lines = []
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{d}/stat") as f:
                            lines.append(f.read())
                    except OSError:
                        pass
        return {int(line.split(" ", 1)[0]): line for line in lines
                if line[:1].isdigit()}

    def _family(self, pid):
        """{pid: stat line} of pid and its children."""
        return {p: line for p, line in self._stats().items()
                if p == pid or int(line.rsplit(")", 1)[1].split()[1]) == pid}

    def family(self, pid):
        """pid and its children (nginx's master and worker)."""
        return list(self._family(pid))

    def tree_cpu(self, pid):
        """CPU seconds of pid and its children."""
        return sum(stat_cpu_s(line) for line in self._family(pid).values())

    def _status(self, paths, key):
        """The sum of one numeric field of /proc status files."""
        if self.host:
            text = self.run(["sh", "-c", 'cat "$@" 2>/dev/null', "sh",
                             *paths], check=False).stdout
        else:
            text = ""
            for path in paths:
                try:
                    with open(path) as f:
                        text += f.read()
                except OSError:
                    pass
        return sum(int(m) for m in re.findall(rf"^{key}:\s+(\d+)", text,
                                              re.M))

    def peak_rss_kib(self, pid):
        """VmHWM of pid and its children, KiB."""
        return self._status([f"/proc/{p}/status" for p in self.family(pid)],
                            "VmHWM")

    def sleeps(self, pid):
        """The times pid's threads gave up the CPU of their own accord
        (voluntary context switches: each a sleep, and a wake-up)."""
        tasks = (self.run(["sh", "-c", 'ls "/proc/$1/task"', "sh",
                           str(pid)]).stdout.split() if self.host
                 else os.listdir(f"/proc/{pid}/task"))
        return self._status([f"/proc/{pid}/task/{t}/status" for t in tasks],
                            "voluntary_ctxt_switches")

    def timed(self, cmd, timeout):
        """Runs an outside client to its end: (exit code, its output, its
        CPU seconds).  Here, the children reaped meanwhile (it alone);
        there, the shell's `times` for its children."""
        if not self.host:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=timeout)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.returncode, r.stdout + r.stderr, (
                r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        r = subprocess.run(self.wrap(["sh", "-c", '"$@" 2>&1; rc=$?; echo '
                                      '"@times"; times; exit $rc', "sh",
                                      *cmd]),
                           capture_output=True, text=True, timeout=timeout)
        out, _, t = r.stdout.rpartition("@times\n")
        # The second line of `times`: the children's user and system time.
        spent = re.findall(r"(\d+)m([\d.]+)s", t)[2:4]
        return r.returncode, out + r.stderr, sum(
            int(m) * 60 + float(sec) for m, sec in spent)

    def cpus(self):
        """The host's CPU count (None if it cannot be read)."""
        if not self.host:
            return os.cpu_count()
        n = self.run(["nproc"], check=False).stdout.strip()
        return int(n) if n.isdigit() else None

    def missing(self, tools):
        """Those of tools not installed on the host (asked once each)."""
        known = self._absent
        ask = [t for t in tools if t not in known]
        if ask:
            gone = self._look(ask)
            known.update((t, t in gone) for t in ask)
        return [t for t in tools if known[t]]

    def _look(self, tools):
        if not self.host:
            from shutil import which
            return [t for t in tools if not which(t)]
        r = self.run(["sh", "-c", 'for t; do command -v "$t" >/dev/null || '
                      'echo "$t"; done', "sh", *tools], check=False)
        return r.stdout.split()

    def machine(self, towards=None):
        """The host's machine table; towards: the address whose route
        names the NIC."""
        script = r'''
echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "cores=$(nproc)"
echo "kernel=$(uname -r)"
echo "liburing=$(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null)"
if [ -n "$1" ]; then
  # The device holding the address (the server), else the route to it.
  dev=$(ip -o addr show to "$1" 2>/dev/null | awk '{print $2}' | head -1)
  [ -n "$dev" ] || dev=$(ip route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -1)
  echo "nic=$dev"
  # A device's driver, or a virtual one's kind (veth, bridge ...).
  drv=$(readlink "/sys/class/net/$dev/device/driver" 2>/dev/null)
  [ -n "$drv" ] && drv=$(basename "$drv")
  [ -n "$drv" ] || drv=$(ip -d -o link show dev "$dev" 2>/dev/null | sed -n 's/.*maxmtu [0-9]* *\\ *\([a-z][a-z0-9_]*\) .*/\1/p')
  echo "driver=$drv"
  [ -n "$dev" ] && echo "speed=$(cat /sys/class/net/$dev/speed 2>/dev/null)"
fi
'''
        r = self.run(["sh", "-c", script, "sh", towards or ""], check=False)
        m = dict(line.split("=", 1) for line in r.stdout.splitlines()
                 if "=" in line)
        probe = self.run([f"{self.bindir}/ursa-probe", "--json"],
                         check=False).stdout
        try:
            feats = json.loads(probe).get("features", {})
        except ValueError:
            feats = {}
        nic = m.get("nic") or "?"
        if m.get("driver"):
            nic += f" ({m['driver']}"
            nic += (f", {m['speed']} Mb/s)" if m.get("speed", "").strip("-")
                    .isdigit() else ")")
        return {"host": self.name(), "cpu_model": m.get("cpu", "?"),
                "cpus": int(m["cores"]) if m.get("cores", "").isdigit()
                else None, "kernel": m.get("kernel") or platform.release(),
                "nic": nic, "liburing": m.get("liburing") or "?",
                "ring_features_used": sorted(k for k, v in feats.items()
                                             if v.get("used"))}

    def _signal(self, signum, frame, old):
        self.close()
        if callable(old):
            old(signum, frame)
        raise SystemExit(128 + signum)

    def close(self):
        """Removes the scratch directory (safe to call more than once)."""
        if self.scratch:
            s, self.scratch = self.scratch, None
            subprocess.run(self.wrap(["rm", "-rf", s]), capture_output=True,
                           timeout=60)


def stat_cpu_s(stat):
    """User and system CPU seconds from a /proc/PID/stat line."""
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def sides(a):
    """(server place, load place, the address the load connects to when
    the run goes across hosts, else None)."""
    places = getattr(a, "places", None)
    if not places:
        here = Place(bindir=a.bindir)
        return here, here, None
    return places[0], places[1], a.server_addr


def missing(a, role, tool):
    """Why tool cannot run on the role's host ("wrk is not installed on
    the load host HOST"), or None when it is there."""
    splace, lplace, _ = sides(a)
    place = splace if role == "server" else lplace
    if not place.missing([tool]):
        return None
    return f"{tool} is not installed" + (
        f" on the {role} host {place.host}" if place.host else "")


def server_pid(p, place):
    """The server's pid on its host: the first line a remote popen
    prints, or the process's own."""
    if not place.host:
        return p.pid
    line = p.stdout.readline()
    m = re.match(r"pid (\d+)$", line.strip())
    if not m:
        raise Failure(f"server host {place.host}: no pid from the server "
                      f"({line!r})")
    return int(m.group(1))
