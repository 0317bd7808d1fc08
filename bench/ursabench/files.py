"""files.py - the file block: random reads of one file at a queue depth.

ursa-fileio reads with ursa's file requests (uring; ursa-epoll, whose
reads go to the work pool; uring without the inline reads, the A/B of
URSA_FEAT_FILE_INLINE) and with libuv's uv_fs_read (its thread pool, the
Debian libuv 1.44); fio reads the same file at the same depth with its
io_uring engine (iodepth) and its psync engine (one thread per read in
flight, --thread).  Every reader is pinned to the server CPU, so each
gets one CPU, kernel workers included (io_uring's io-wq threads and the
pools inherit the pin).  IOPS and CPU are each tool's own, over its
measured window: ursa-fileio's getrusage(RUSAGE_SELF) (every thread,
pool threads and io-wq workers included), fio's usr_cpu + sys_cpu over
its jobs' runtime, which counts its job threads only: for its io_uring
engine the io-wq workers a punted read runs on are missing (measured
here on tmpfs at depth 32: 0.48 s in fio's figure, 1.15 s for the
whole process), so that engine's CPU per read is a floor.  The
process's own CPU from wait4 is not used: fio spends about 0.15 s
starting, a fifth of a quick run.  fio runs with
--invalidate=0: by default it drops the file's pages before a job, and
then measures the disk, not the reads.  Two files of 256 MiB: one on the
file system of --out (the root file system here), one on tmpfs
(/dev/shm).  The share of each file in the page cache (mincore) is taken
before and after every run and reported beside it."""
import json
import os
import re
import shutil
import subprocess
import time

from .runner import Failure, interleaved, summaries

FILE_SIZE = 256 << 20
READERS = ["uring", "ursa-epoll", "uring no-inline", "uring fixed", "libuv",
           "fio io_uring", "fio psync"]
# The quick suite leaves out the A/B readers (no target is on them).
QUICK_READERS = [r for r in READERS
                 if r not in ("uring no-inline", "uring fixed")]


def points(full):
    """(where, bs, depth) of the block."""
    sizes = (4096, 65536) if full else (4096,)
    depths = (1, 8, 32) if full else (1, 32)
    return [(w, bs, q) for w in ("root", "tmpfs") for bs in sizes
            for q in depths]


def fs_type(path):
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                       text=True)
    return r.stdout.strip() or "unknown"


def make_file(path):
    """FILE_SIZE random bytes at path (kept when already that size)."""
    if os.path.exists(path) and os.path.getsize(path) == FILE_SIZE:
        return
    with open(path, "wb") as f:
        for _ in range(FILE_SIZE >> 20):
            f.write(os.urandom(1 << 20))


def residency(a, path):
    r = subprocess.run([os.path.join(a.bindir, "ursa-fileio"), "--file",
                        path, "--residency", "--json"], capture_output=True,
                       text=True, timeout=60)
    try:
        return json.loads(r.stdout)["residency"]
    except (ValueError, KeyError):
        return None


def timed(cmd, timeout):
    """Runs cmd to its end: (stdout, stderr, exit status).  The caller
    reads its CPU from the children's times around it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Failure(f"{cmd[3]} ran past {timeout} s")
    return out, err, p.returncode


def file_run(a, reader, path, bs, depth):
    """One run: reads, IOPS, CPU per read, residency before and after."""
    before = residency(a, path)
    secs = max(0.5, a.duration)
    pin = ["taskset", "-c", str(a.scpu)]
    if reader.startswith("fio"):
        engine = reader.split()[1]
        cmd = pin + ["fio", "--name=r", f"--filename={path}",
                     "--rw=randread", f"--bs={bs}", f"--ioengine={engine}",
                     "--time_based", f"--runtime={round(secs * 1000)}ms",
                     "--invalidate=0",
                     "--output-format=json"]
        cmd += ([f"--iodepth={depth}"] if engine == "io_uring" else
                [f"--numjobs={depth}", "--thread", "--group_reporting"])
    else:
        backend, *rest = reader.split()
        cmd = pin + [os.path.join(a.bindir, "ursa-fileio"), "--file", path,
                     "--backend", backend, "--bs", str(bs), "--depth",
                     str(depth), "--duration", str(secs), "--json"]
        if rest:  # no-inline, fixed
            cmd.append("--" + rest[0])
    out, err, rc = timed(cmd, 60 + 4 * secs)
    if rc:
        raise Failure(f"{reader}: exit {rc}: {err.strip()[-200:]}")
    if reader.startswith("fio"):
        job = json.loads(out[out.index("{"):])["jobs"][0]
        reads, iops = job["read"]["total_ios"], job["read"]["iops"]
        errors = job.get("error", 0)
        cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100 * \
            job.get("job_runtime", job["read"]["runtime"]) / 1000
    else:
        j = json.loads(out)
        reads, iops, cpu = j["reads"], j["iops"], j["cpu_s"]
        errors = j["errors"] + j["short"]
    return {"iops": iops, "cpu_us_per_read": cpu * 1e6 / max(reads, 1),
            "reads": reads, "residency_before": before,
            "residency_after": residency(a, path), "errors": errors}


def file_block(a, tmp, todo, failures, progress):
    """Every reader at each point, interleaved."""
    if not shutil.which("fio"):
        failures.append("files: fio is not installed")
        return []
    paths = {"root": os.path.join(os.path.abspath(a.out), "file-block.bin"),
             "tmpfs": f"/dev/shm/ursa-file-block-{os.getpid()}.bin"}
    rows = []
    try:
        for p in {paths[w] for w, _, _ in todo}:
            make_file(p)
        pool = READERS if a.full else QUICK_READERS
        readers = [x for x in pool if not a.filter or re.search(
            a.filter, "file-" + x.replace(" ", "-"))] or pool
        for where, bs, q in todo:
            path = paths[where]
            kind = fs_type(path)
            runs = interleaved(
                readers, a.repeats, lambda x: file_run(a, x, path, bs, q),
                lambda x: f"file {where} {bs} B depth {q} {x}", failures)
            rows += summaries(
                readers, runs,
                lambda x: {"id": f"file-{where}-{bs}b-q{q}-"
                           f"{x.replace(' ', '-')}", "reader": x,
                           "where": where, "fs": kind, "bs": bs,
                           "depth": q},
                failures, progress,
                lambda s: f"{s['iops']:.0f} IOPS, {s['cpu_us_per_read']:.2f}"
                          f" us CPU/read, residency "
                          f"{s['residency_before'] or 0:.2f}")
    finally:
        # Neither file stays: one is memory, the other 256 MiB in --out.
        for p in paths.values():
            if os.path.exists(p):
                os.unlink(p)
    return rows
