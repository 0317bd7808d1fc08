"""process.py - the process block: child processes and pipes.

ursa-spawn-bench does the same work with ursa (uring; ursa-epoll) and
with libuv (uv_spawn, which forks in Debian's 1.44; uv_pipe over the
same kind of pipe):
- spawn: /bin/true run to its exit, one at a time, from a parent that
  first allocated and touched 0, 200 or 800 MiB (a large server's
  memory): ms per spawn is the whole cycle (the call, the child's exec
  and exit, the exit's callback) over the count;
- rate: 4 children at once from a small parent: spawns/s;
- pipe: 1 GiB written by a child into a pipe the parent reads as a
  stream to EOF: MB/s, and the parent's CPU per MB (its getrusage; the
  child, the same program for every reader, is not counted).  Each
  library's pipe as it comes: ursa sizes the pipes it makes to 256 KiB
  (URSA_SPAWN_PIPE_SIZE), libuv reads the kernel's 64 KiB one.  --full
  adds both at one size, 64 KiB and 256 KiB (pipe-64k, pipe-256k).  The
  parent on the server CPU, the child on the load CPU: left to the
  scheduler, whether the two shared a CPU moved the CPU per MB 2.5x
  from run to run (123 us together, 290-890 apart).
The spawns are not pinned: parent and children share the machine's
CPUs, as a job runner's do.  The readers of a point run interleaved, as
every block's."""
import json
import os
import re
import subprocess

from .intervals import fmt, interval, text
from .runner import Failure, interleaved, summaries

BACKENDS = ["uring", "ursa-epoll", "libuv"]
HEAPS = (0, 200, 800)
# Children per run: fewer where libuv's fork is slow (27 ms at 800 MiB).
COUNTS = {0: 300, 200: 100, 800: 50}
RATE_COUNT, RATE_AT_ONCE = 1000, 4
PIPE_BYTES = 1 << 30


PIPE_SIZED = ["pipe-64k", "pipe-256k"]  # --full: every reader's pipe so


def pipe_kib(what):
    """The KiB of a PIPE_SIZED point ("pipe-64k": "64")."""
    return what[len("pipe-"):-len("k")]


def points(full):
    """What the block measures: ("spawn", heap) for each heap (200 MiB in
    --full), ("rate", 0) and ("pipe", 0); --full, the pipe at each size of
    PIPE_SIZED."""
    # The quick suite leaves out the 200 MiB parent (no target of its own).
    heaps = HEAPS if full else [h for h in HEAPS if h != 200]
    return [("spawn", h) for h in heaps] + [("rate", 0), ("pipe", 0)] + (
        [(w, 0) for w in PIPE_SIZED] if full else [])


def bench_run(a, backend, what, heap):
    cmd = [os.path.join(a.bindir, "ursa-spawn-bench"), "--backend", backend,
           "--json"]
    if what.startswith("pipe"):
        cmd += ["--mode", "pipe", "--bytes", str(PIPE_BYTES), "--cpu",
                str(a.scpu), "--child-cpu", str(a.lcpu)]
        if what != "pipe":
            cmd += ["--pipe-kib", pipe_kib(what)]
    elif what == "rate":
        cmd += ["--count", str(RATE_COUNT), "--concurrency",
                str(RATE_AT_ONCE)]
    else:
        cmd += ["--count", str(COUNTS[heap]), "--heap-mib", str(heap)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise Failure(f"{backend}: exit {r.returncode}: "
                      f"{r.stderr.strip()[-200:]}")
    j = json.loads(r.stdout)
    j["errors"] = j.pop("failed")
    for k in ("mode", "backend"):
        j.pop(k)
    return j


def process_block(a, tmp, todo, failures, progress):
    """Every backend at each point, interleaved."""
    backends = [b for b in BACKENDS if not a.filter or re.search(
        a.filter, "process-" + b)] or BACKENDS
    rows = []
    for what, heap in todo:
        runs = interleaved(
            backends, a.repeats, lambda b: bench_run(a, b, what, heap),
            lambda b: f"process {what} {heap} MiB {b}", failures)
        rows += summaries(
            backends, runs,
            lambda b: {"id": f"process-{what}-{heap}mib-{b}", "backend": b,
                       "what": what, "heap_mib": heap},
            failures, progress,
            lambda s: (f"{fmt(s['mb_per_s'])} MB/s, "
                       f"{fmt(s['cpu_us_per_mb'], 1)} us CPU/MB"
                       if s["what"].startswith("pipe") else
                       f"{fmt(s['spawns_per_s'])} spawns/s, "
                       f"{fmt(s['ms_per_spawn'], 3)} ms each"))
    return rows


def process_section(rows):
    if not rows:
        return []
    L = ["## Processes and pipes (ursa-spawn-bench, libuv)", "",
         "The same work through ursa_spawn() and pipe streams, and through "
         "libuv's uv_spawn() (Debian's 1.44, which forks) and uv_pipe.  "
         "spawn: /bin/true to its exit, one at a time, after the parent "
         "touched a heap of that size; ms per spawn is the whole cycle.  "
         "rate: 4 at once, small parent.  pipe: 1 GiB from a child "
         "(on the load CPU) through a pipe, read as a stream (on the "
         "server CPU); CPU is the parent's.  Each library's pipe: ursa "
         "makes its pipes 256 KiB (URSA_SPAWN_PIPE_SIZE), libuv's reader "
         "gets the kernel's 64 KiB; --full adds every reader at one size.  "
         "Ratios are to libuv in the same round.", "",
         "| what | backend | spawns/s | ms per spawn | ms in the call | "
         "vs libuv | MB/s | CPU us/MB | vs libuv | errors |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next((x for x in rows if x["what"] == r["what"] and
                    x["heap_mib"] == r["heap_mib"] and
                    x["backend"] == "libuv"), None)
        mine = r is ref or not ref
        what = (f"spawn, {r['heap_mib']} MiB heap" if r["what"] == "spawn"
                else "spawn, 4 at once" if r["what"] == "rate"
                else "pipe, each library's" if r["what"] == "pipe"
                else f"pipe, every one {pipe_kib(r['what'])} KiB")
        if r["what"].startswith("pipe"):
            i1 = (None,) * 5 if mine else interval(r, ref, "mb_per_s")
            i2 = (None,) * 5 if mine else interval(r, ref, "cpu_us_per_mb")
            L.append(f"| {what} | {r['backend']} | | | | | "
                     f"{fmt(r['mb_per_s'])} | {fmt(r['cpu_us_per_mb'], 1)} "
                     f"| {fmt(i1[0], 2)}{'' if mine else text(i1)}, CPU "
                     f"{fmt(i2[0], 2)}{'' if mine else text(i2)} | "
                     f"{r['errors']} |")
        else:
            key = "spawns_per_s" if r["what"] == "rate" else "ms_per_spawn"
            iv = (None,) * 5 if mine else interval(r, ref, key)
            L.append(f"| {what} | {r['backend']} | {fmt(r['spawns_per_s'])} "
                     f"| {fmt(r['ms_per_spawn'], 3)} | "
                     f"{fmt(r['call_ms'], 3)} | "
                     f"{fmt(iv[0], 3)}{'' if mine else text(iv)} | | | | "
                     f"{r['errors']} |")
    return L + [""]
