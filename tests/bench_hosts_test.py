#!/usr/bin/env python3
"""bench_hosts_test.py - the bench across two hosts without a second
machine: two network namespaces joined by a veth pair, Debian's sshd
started here on its own port with its own host and user keys in a scratch
folder in the "server" namespace, and bench.py run in the "load"
namespace with --server-host.  A short run (TCP and UDP cases, iperf2,
HTTP with ursa-load and wrk against ursa-http and nginx, UDP streams
with both clients, an A/B pair, two server loops on two server CPUs) is
byte-exact (ursa-load checks every echo and every response's length),
its report names both hosts, their machine
tables and the hosts in every heading, and the remote scratch directory
is gone afterwards; the same with the load on the remote host; an
unreachable host, a refused key and a tool missing on the server host
(nginx, off the PATH ssh gives) are each named in one line with a
non-zero exit and no traceback.  The namespaces, the veth pair and sshd
are removed at the end, also when a check fails."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from checks import check, finish

BENCH, BINDIR = sys.argv[1], os.path.dirname(os.path.abspath(sys.argv[2]))
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TAG = f"ubh{os.getpid() % 100000}"
SRV, LOAD = f"{TAG}-srv", f"{TAG}-load"
SIP, LIP = "10.252.0.1", "10.252.0.2"
tmp = tempfile.mkdtemp(prefix="ursa-bench-hosts-")
procs = []


def sh(*cmd, check_rc=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       **kw)
    if check_rc and r.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()[-300:]}")
    return r


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    for ns in (SRV, LOAD):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


atexit.register(cleanup)
if os.geteuid() != 0:
    check(False, "this test makes network namespaces: it must run as root")
    finish()
check(os.path.exists(SSHD), f"sshd is installed ({SSHD}; tools/setup.sh "
      "installs openssh-server)")
if not os.path.exists(SSHD):
    finish()

# The two "hosts".
sh("ip", "netns", "add", SRV)
sh("ip", "netns", "add", LOAD)
sh("ip", "link", "add", f"{TAG}s", "type", "veth", "peer", "name", f"{TAG}l")
for ns, dev, addr in ((SRV, f"{TAG}s", SIP), (LOAD, f"{TAG}l", LIP)):
    sh("ip", "link", "set", dev, "netns", ns)
    sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
    sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")

# sshd in the server namespace: its own keys, port and configuration.
for name in ("host", "user", "other"):
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
       os.path.join(tmp, name))
shutil.copy(os.path.join(tmp, "user.pub"), os.path.join(tmp, "authorized"))
os.makedirs("/run/sshd", exist_ok=True)
sbin = os.path.join(tmp, "sbin")
os.makedirs(sbin)
for n in os.listdir("/usr/sbin"):
    if n != "nginx":
        os.symlink(os.path.join("/usr/sbin", n), os.path.join(sbin, n))
conf = os.path.join(tmp, "sshd_config")
with open(conf, "w") as f:
    f.write(f"""Port 2222
# Port 2223: the same host with a PATH that lacks nginx (below).
Port 2223
ListenAddress {SIP}
HostKey {tmp}/host
AuthorizedKeysFile {tmp}/authorized
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {tmp}/sshd.pid
Match LocalPort 2223
  SetEnv PATH=/usr/local/bin:/usr/bin:{tmp}/sbin
""")
procs.append(subprocess.Popen(["ip", "netns", "exec", SRV, SSHD, "-D", "-e",
                               "-f", conf], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "sshd.log"),
                                          "w")))
cfg = os.path.join(tmp, "ssh_config")
with open(cfg, "w") as f:
    f.write(f"""Host bare
  HostName {SIP}
  Port 2223
Host server bare
  HostName {SIP}
  Port 2222
  User root
  IdentityFile {tmp}/user
  IdentitiesOnly yes
  UserKnownHostsFile {tmp}/known_hosts
  StrictHostKeyChecking accept-new
  ConnectTimeout 5
""")
for _ in range(50):
    r = sh("ip", "netns", "exec", LOAD, "ssh", "-F", cfg, "-o",
           "BatchMode=yes", "server", "true", check_rc=False)
    if r.returncode == 0:
        break
    time.sleep(0.1)
check(r.returncode == 0, f"ssh into the server namespace: {r.stderr!r}")


def bench(*args, ab=False):
    out = os.path.join(tmp, "out")
    return sh("ip", "netns", "exec", LOAD, "python3", BENCH, "--bindir",
              BINDIR, "--out", out, "--repeats", "1", "--duration", "0.3",
              "--no-profile", "--ssh-config", cfg, *args,
              *([] if ab else ["--no-ab"]), check_rc=False), out


def results(out):
    """The run's results.json, or {} when it wrote none."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def scratch():
    return sh("ip", "netns", "exec", SRV, "sh", "-c",
              "ls -d /tmp/ursa-bench.* 2>/dev/null", check_rc=False
              ).stdout.split()


before = scratch()
r, out = bench("--server-host", "server", "--server-addr", SIP,
               "--server-cpus", "0-1", "--filter",
               r"^((tcp-pingpong-4c|udp-pingpong-64c)-64b-1i-(uring|epoll)"
               r"|iperf2-tcp-pingpong-uring|http-baseline-64c-(ursa-http-"
               r"uring|nginx)|threads-uring-2 threads, reuseport|udp"
               r"|udp-plain-uring|udp-gso-uring-gro-gso"
               r"|ab-1 conn-(default|batched waits off))$",
               ab=True)
check(r.returncode == 0, f"the run across hosts: {r.returncode} "
      f"{r.stderr[-500:]!r}")
res = results(out)
ids = sorted(c["id"] for c in res.get("cases", []))
check(ids == ["tcp-pingpong-4c-64b-1i-epoll", "tcp-pingpong-4c-64b-1i-uring",
              "udp-pingpong-64c-64b-1i-epoll",
              "udp-pingpong-64c-64b-1i-uring"],
      f"four cases ran: {ids}")
for c in res.get("cases", []) + res.get("outside", []) + res.get(
        "threads", []):
    check(c["errors"] == 0 and c["rt_per_s"] > 0 and
          c["server_cpu_us_per_rt"] > 0, f"{c['id']}: byte-exact, with a "
          f"rate and the server's CPU: {c['errors']} {c['rt_per_s']} "
          f"{c['server_cpu_us_per_rt']}")
ids = sorted(c["id"] for c in res.get("outside", []))
check(ids == [f"iperf2-tcp-pingpong-{n}c-64b-uring" for n in (1, 256, 64)],
      f"iperf2 at three connection counts: {ids}")
ids = sorted(c["id"] for c in res.get("threads", []))
check(ids == ["tcp-threads-256c-64b-uring-2t-reuseport"] and
      res.get("env", {}).get("server_cpu") == "0,1",
      f"two loops on the server host's two CPUs: {ids} "
      f"{res.get('env', {}).get('server_cpu')}")
udp = {f"{c['client']} {c['server']}": c for c in res.get("udp", [])}
check(sorted(udp) == ["gso uring-gro-gso", "plain uring"] and all(
    c["errors"] == 0 and c["dgrams_per_s"] > 0 and
    c["server_cpu_us_per_dgram"] > 0 for c in udp.values()),
      f"UDP streams, both clients, byte-exact, with the server's CPU: "
      f"{udp}")
ab = [c for c in res.get("ab", []) if c.get("case") == "1 conn"]
check(len(ab) == 2 and all(c["errors"] == 0 and c["rt_per_s"] > 0
                           for c in ab),
      f"the A/B rows (default and batched waits off, one connection): "
      f"{[(c.get('label'), c.get('errors')) for c in ab]}")
http = {c["id"]: c for c in res.get("http", [])}
check(sorted(http) == ["http-baseline-64c-nginx",
                       "http-baseline-64c-ursa-http-uring",
                       "http-plaintext-64c-nginx",
                       "http-plaintext-64c-ursa-http-uring"],
      f"HTTP: ursa-load and wrk against ursa-http and nginx: {sorted(http)}")
for k, c in http.items():
    check(c["errors"] == 0 and c["rt_per_s"] > 0 and
          c["server_cpu_us_per_rt"] > 0 and c["rss_kib"] > 0 and
          c["client_cpu_us_per_rt"] > 0 and c["response_bytes"] > 13,
          f"{k}: every response whole, with the server's CPU and memory "
          f"read on its host and the client's here: {c['errors']} "
          f"{c['rt_per_s']} {c['server_cpu_us_per_rt']} {c['rss_kib']} "
          f"{c['client_cpu_us_per_rt']}")
hosts = res.get("env", {}).get("hosts", {})
check(hosts.get("server", {}).get("host") == "server" and
      hosts.get("load", {}).get("host") == "this machine" and
      hosts.get("server_addr") == SIP, f"the hosts in results.json: {hosts}")
nics = (str(hosts.get("server", {}).get("nic")),
        str(hosts.get("load", {}).get("nic")))
check(nics[0].startswith(f"{TAG}s (veth") and
      nics[1].startswith(f"{TAG}l (veth"),
      f"each host's NIC towards the other: {nics}")
report = open(os.path.join(out, "report.md")).read() if os.path.exists(
    os.path.join(out, "report.md")) else ""
check("Across hosts: the server on server (reached at 10.252.0.1), the "
      "load on this machine" in report and "| nic |" in report and
      "| server host | load host |" in report,
      "the report names both hosts and their machine tables")
# The report in the test's log, for the note on a run.
print(report)
where = "load on this machine, server on server at 10.252.0.1)"
heads = [x for x in report.splitlines() if x.startswith(("## ", "### "))
         and not x.startswith(("### Where", "## Targets"))]
check(len(heads) >= 6 and all(x.endswith(where) for x in heads),
      "every heading names the hosts: " + repr(
          [x for x in heads if not x.endswith(where)] or heads))
check("not run across hosts" in r.stdout, "the blocks left out say so")
check(scratch() == before, f"the remote scratch directory is gone: "
      f"{scratch()} (before: {before})")

# A host nobody answers at, and a key the server refuses: one line each.
r, _ = bench("--server-host", "root@10.252.0.9", "--ssh-option",
             "ConnectTimeout=2", "--filter", "^tcp-pingpong-4c-64b-1i-uring$")
lines = r.stderr.strip().splitlines()
check(r.returncode == 2 and len(lines) == 1 and "10.252.0.9" in lines[0]
      and "cannot be reached" in lines[0] and "Traceback" not in r.stderr,
      f"an unreachable host: {r.returncode} {r.stderr!r}")
with open(cfg) as f:
    bad = f.read().replace(f"{tmp}/user", f"{tmp}/other")
bad_cfg = os.path.join(tmp, "ssh_config_bad")
with open(bad_cfg, "w") as f:
    f.write(bad)
r = sh("ip", "netns", "exec", LOAD, "python3", BENCH, "--bindir", BINDIR,
       "--out", os.path.join(tmp, "bad"), "--ssh-config", bad_cfg,
       "--server-host", "server", "--server-addr", SIP, "--filter",
       "^tcp-pingpong-4c-64b-1i-uring$", check_rc=False)
lines = r.stderr.strip().splitlines()
check(r.returncode == 2 and len(lines) == 1 and "server" in lines[0] and
      "Permission denied" in lines[0] and "Traceback" not in r.stderr,
      f"a refused key: {r.returncode} {r.stderr!r}")
# The other way round: the load on the remote host (its outside clients'
# CPU from the shell's `times` there), the server here.
before_load = scratch()
r, out = bench("--load-host", "server", "--server-addr", LIP, "--filter",
               r"^(tcp-pingpong-4c-64b-1i-uring|iperf2-tcp-pingpong-uring"
               r"|http-baseline-64c-ursa-http-uring)$")
check(r.returncode == 0, f"the load on the other host: {r.returncode} "
      f"{r.stderr[-500:]!r}")
res = results(out)
rows = {c["id"]: c for k in ("cases", "outside", "http")
        for c in res.get(k, [])}
check(sorted(rows) == ["http-baseline-64c-ursa-http-uring",
                       "http-plaintext-64c-ursa-http-uring",
                       "iperf2-tcp-pingpong-1c-64b-uring",
                       "iperf2-tcp-pingpong-256c-64b-uring",
                       "iperf2-tcp-pingpong-64c-64b-uring",
                       "tcp-pingpong-4c-64b-1i-uring"],
      f"a case, iperf2 and HTTP with the load remote: {sorted(rows)}")
for k, c in rows.items():
    check(c["errors"] == 0 and c["rt_per_s"] > 0 and
          c["server_cpu_us_per_rt"] > 0 and
          (c.get("client_cpu_share") or 0) > 0,
          f"{k}: whole, with both sides' CPU: {c['errors']} "
          f"{c['rt_per_s']} {c['server_cpu_us_per_rt']} "
          f"{c.get('client_cpu_share')}")
hosts = res.get("env", {}).get("hosts", {})
check(hosts.get("load", {}).get("host") == "server" and
      hosts.get("server", {}).get("host") == "this machine",
      f"the load host is the remote one: {hosts}")
check(scratch() == before_load, f"the load host's scratch directory is "
      f"gone: {scratch()}")

# nginx missing on the server host: sshd's port 2223 ("bare") gives a
# PATH without it (everything else in /usr/sbin is there).
r, _ = bench("--server-host", "bare", "--server-addr", SIP,
             "--filter", r"^http-baseline-64c-nginx$")
lines = [x for x in r.stderr.strip().splitlines() if "nginx" in x]
check(r.returncode != 0 and len(lines) == 1 and
      "nginx is not installed on the server host bare" in lines[0] and
      "server host bare: nginx not installed" in r.stdout and
      "Traceback" not in r.stderr,
      f"a tool missing on the server host: {r.returncode} {r.stdout!r} "
      f"{r.stderr!r}")
check(scratch() == before, f"the remote scratch directory is gone after "
      f"the run without nginx: {scratch()}")
r = sh("python3", BENCH, "--bindir", BINDIR, "--load-host", "server",
       check_rc=False)
check(r.returncode == 2 and "--load-host needs --server-addr" in r.stderr,
      f"--load-host without --server-addr: {r.stderr!r}")
finish()
