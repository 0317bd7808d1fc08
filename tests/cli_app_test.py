#!/usr/bin/env python3
"""cli_app_test.py - the programs' command lines: --help lists every flag
the program takes (its getopt_long table, read from its source) exactly
once, each listed flag is recognised, and the GNU conventions hold
(--flag=value, unambiguous abbreviations, "--" ending the options).  Bad
input is refused with exit 2 and a message naming it."""
import re
import subprocess
import sys

from checks import check, finish

# The programs, then their sources in the same order.
_n = (len(sys.argv) - 1) // 2
SERVER, LOAD, CLIENT, PING = sys.argv[1:5]
SOURCES = dict(zip(sys.argv[1:1 + _n], sys.argv[1 + _n:]))


def run(prog, *args):
    return subprocess.run([prog, *args], capture_output=True, text=True,
                          timeout=20)


def table_flags(src):
    """The long options in a source's getopt_long table, and the short
    ones in its option string."""
    text = open(src).read()
    longs = {"--" + m for m in re.findall(
        r'\{"([a-z-]+)", (?:no|required)_argument', text)}
    shorts = set()
    m = re.search(r'cli_next\(PROG, argc, argv, "([^"]*)"', text)
    if m:
        shorts = {"-" + ch for ch in m.group(1) if ch != ":"}
    return longs | shorts


def help_flags(text):
    """The flags --help lists: each entry line starts with its flags."""
    listed = []
    for line in text.splitlines():
        m = re.match(r"\s+((?:-\w, )?(?:--[a-z-]+|-\w))\b", line)
        if m:
            listed += [f.strip() for f in m.group(1).split(",")]
    return listed


for prog, src in SOURCES.items():
    name = prog.rsplit("/", 1)[-1]
    r = run(prog, "--help")
    check(r.returncode == 0 and r.stdout.startswith("usage:"),
          f"{name} --help: exit {r.returncode}")
    listed = help_flags(r.stdout)
    dups = sorted({f for f in listed if listed.count(f) > 1})
    check(not dups, f"{name} --help lists {dups} more than once")
    want = table_flags(src)
    check(set(listed) == want,
          f"{name} --help lists {sorted(set(listed) - want)} that it does "
          f"not take, and misses {sorted(want - set(listed))}")
    # Every listed flag is recognised: the unknown one after it is what
    # fails, and the run stops before doing anything.
    bare = set(re.findall(r'\{"([a-z-]+)", no_argument', open(src).read()))
    for flag in sorted(want - {"-h", "--help"}):
        arg = ([flag] if flag[2:] in bare else [flag + "=1"]) \
            if flag.startswith("--") else [flag, "1"]
        r = run(prog, *arg, "--no-such-flag", "127.0.0.1:1")
        check(r.returncode == 2 and f"unknown option '{flag}'" not in r.stderr,
              f"{name} {flag}: exit {r.returncode}, {r.stderr.strip()!r}")
    r = run(prog, "--no-such-flag")
    check(r.returncode == 2 and "unknown option '--no-such-flag'" in r.stderr,
          f"{name}: an unknown flag gives {r.returncode} {r.stderr!r}")

# GNU conventions, through ursa-load and ursa-echo-client.
for prog, args, says, what in [
    (LOAD, ["--inf=0"], "--inflight wants a whole number",
     "an abbreviation is the whole flag"),
    (LOAD, ["--conn=1"], "option '--conn' is ambiguous",
     "an ambiguous abbreviation is refused"),
    (LOAD, ["--bulk=yes"], "option '--bulk' takes no value",
     "a value for a flag that takes none"),
    (LOAD, ["--size"], "option '--size' needs a value",
     "a flag without its value"),
    (CLIENT, ["--", "--not-a-flag"], "bad address", "'--' ends the options"),
    (CLIENT, ["127.0.0.2:1"], "one address only", "two addresses"),
]:
    r = run(prog, "127.0.0.1:1", *args) if prog is LOAD or args[0] != "--" \
        else run(prog, *args)
    check(r.returncode == 2 and says in r.stderr, f"{what}: {r.stderr!r}")

# --uring-enable takes the opt-in features only, in ursa-http as in the
# echo server, each refusal naming what it takes.
HTTP = next(p for p in SOURCES if p.endswith("ursa-http"))
for prog in (HTTP, SERVER):
    for v, says in (("min_wait", "--uring-enable: only "),
                    ("nope", "--uring-enable: unknown feature 'nope'")):
        r = run(prog, "--uring-enable", v, "--listen", "127.0.0.1:1")
        check(r.returncode == 2 and says in r.stderr and
              (v == "nope" or "file_splice" in r.stderr and
               f"not '{v}'" in r.stderr),
              f"{prog} --uring-enable {v}: {r.returncode} {r.stderr!r}")

# ursa-spawn-bench's pinned pipe run (the bench's): parent and child each
# on the CPU named, every byte through; --child-cpu is pipe mode's only.
SPAWN = next(p for p in SOURCES if p.endswith("ursa-spawn-bench"))
for be in ("uring", "ursa-epoll", "libuv"):
    r = run(SPAWN, "--mode", "pipe", "--backend", be, "--bytes", "3000001",
            "--cpu", "0", "--child-cpu", "0", "--json")
    check(r.returncode == 0 and '"bytes":3000001,' in r.stdout and
          '"failed":0' in r.stdout,
          f"spawn-bench pinned pipe {be}: {r.returncode} {r.stdout!r} "
          f"{r.stderr!r}")
# The pipe's size and the opt-in multishot read, each backend: every byte.
for be, extra in [("uring", ["--pipe-kib", "64"]),
                  ("uring", ["--enable", "read_multishot"]),
                  ("ursa-epoll", ["--enable", "read_multishot",
                                  "--pipe-kib", "1024"]),
                  ("libuv", ["--pipe-kib", "256"])]:
    r = run(SPAWN, "--mode", "pipe", "--backend", be, "--bytes", "3000001",
            "--json", *extra)
    check(r.returncode == 0 and '"bytes":3000001,' in r.stdout and
          '"failed":0' in r.stdout,
          f"spawn-bench pipe {be} {extra}: {r.returncode} {r.stdout!r} "
          f"{r.stderr!r}")
for args, says in [(["--enable", "waitid"],
                    "--enable: only recv_bundle, buf_inc, read_multishot, "
                    "sync_msg_ring, reg_wait and file_splice are opt-in, "
                    "not 'waitid'"),
                   (["--enable", "nope"], "--enable: unknown feature 'nope'"),
                   (["--disable", "nope"],
                    "--disable: unknown feature 'nope'"),
                   (["--pipe-kib", "2"], "--pipe-kib")]:
    r = run(SPAWN, "--mode", "pipe", *args)
    check(r.returncode == 2 and says in r.stderr,
          f"spawn-bench {args}: {r.returncode} {r.stderr!r}")
r = run(SPAWN, "--mode", "spawn", "--child-cpu", "0")
check(r.returncode == 2 and "--child-cpu is for --mode pipe" in r.stderr,
      f"--child-cpu in spawn mode: {r.returncode} {r.stderr!r}")
r = run(SPAWN, "--mode", "pipe", "--cpu", "4095")
check(r.returncode == 1 and "--cpu 4095" in r.stderr,
      f"--cpu beyond the machine: {r.returncode} {r.stderr!r}")
r = run(SPAWN, "--mode", "pipe", "--child-cpu", "4095")
check(r.returncode == 2 and "--child-cpu 4095: this machine has" in r.stderr,
      f"--child-cpu beyond the machine: {r.returncode} {r.stderr!r}")
finish()
