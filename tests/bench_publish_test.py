#!/usr/bin/env python3
"""bench_publish_test.py - `bench.py --export` and `--gate` on a stored
run (tests/data/bench_results.json, a quick run's) and on copies of it
changed by hand.  The exports are checked against the formats' published
descriptions: Bencher's BMF JSON schema (an object of benchmarks, each an
object of measures, each with a number `value` and optional number
`lower_value`/`upper_value`; measure slugs at most 64 characters, names
at most 1024) and github-action-benchmark's custom tools (a list of
objects with string `name` and `unit`, number `value`, optional string
`range` and `extra`).  The gate: an identical pair passes, a 1.5x change
in uring's server CPU fails naming it, a change inside the noise passes,
a better run passes and says so, a headline the new run lacks fails."""
import copy
import json
import os
import subprocess
import sys
import tempfile

from checks import check, finish

BENCH, RESULTS = sys.argv[1:3]
base = json.load(open(RESULTS))


def bench(*args):
    return subprocess.run([sys.executable, BENCH, *args],
                          capture_output=True, text=True, timeout=120)


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


with tempfile.TemporaryDirectory(prefix="ursa-publish-") as out:
    # ---- BMF ----
    r = bench("--export", "bmf", RESULTS, "--out", out)
    check(r.returncode == 0, f"--export bmf: exit {r.returncode} {r.stderr}")
    doc = json.load(open(os.path.join(out, "bmf.json")))
    check(isinstance(doc, dict) and doc, "bmf: an object of benchmarks")
    ids = {c["id"] for c in base["cases"]}
    check(ids <= set(doc), f"bmf: every case is a benchmark "
          f"(missing {sorted(ids - set(doc))[:3]})")
    bad = []
    for name, measures in doc.items():
        if not (isinstance(name, str) and 0 < len(name) <= 1024 and
                isinstance(measures, dict) and measures):
            bad.append(name)
            continue
        for slug, m in measures.items():
            ok = (isinstance(slug, str) and 0 < len(slug) <= 64 and
                  isinstance(m, dict) and number(m.get("value")) and
                  set(m) <= {"value", "lower_value", "upper_value"} and
                  all(number(m[k]) for k in m))
            if ok and "lower_value" in m:
                ok = m["lower_value"] <= m["value"] <= m["upper_value"]
            if not ok:
                bad.append(f"{name}/{slug}")
    check(not bad, f"bmf: entries off the schema: {bad[:5]}")
    c0 = base["cases"][0]
    m = doc[c0["id"]]["server-cpu-us-per-rt"]
    check(m["value"] == c0["server_cpu_us_per_rt"] and
          m["lower_value"] == c0["server_cpu_us_per_rt_min"] and
          m["upper_value"] == c0["server_cpu_us_per_rt_max"],
          f"bmf: a case's CPU and its range carried over ({m})")

    # ---- github-action-benchmark ----
    r = bench("--export", "gab", RESULTS, "--out", out)
    check(r.returncode == 0, f"--export gab: exit {r.returncode} {r.stderr}")
    big = json.load(open(os.path.join(out, "gab-bigger.json")))
    small = json.load(open(os.path.join(out, "gab-smaller.json")))
    for what, lst in (("bigger", big), ("smaller", small)):
        check(isinstance(lst, list) and lst, f"gab {what}: a list")
        off = [e for e in lst if not (
            isinstance(e, dict) and isinstance(e.get("name"), str) and
            isinstance(e.get("unit"), str) and number(e.get("value")) and
            isinstance(e.get("range", ""), str) and
            isinstance(e.get("extra", ""), str) and
            set(e) <= {"name", "unit", "value", "range", "extra"})]
        check(not off, f"gab {what}: entries off the format: {off[:2]}")
        names = [e["name"] for e in lst]
        check(len(names) == len(set(names)), f"gab {what}: names unique")
    check(all("round-trips-per-s" not in e["name"] for e in small) and
          any("round-trips-per-s" in e["name"] for e in big),
          "gab: rates are bigger-is-better, never smaller")
    check(all("server-cpu-us-per-rt" not in e["name"] for e in big) and
          any("server-cpu-us-per-rt" in e["name"] for e in small),
          "gab: CPU per round trip is smaller-is-better")
    check(all(base["env"]["kernel"] in e["extra"] for e in small[:5]),
          "gab: the machine's kernel in extra")
    r = bench("--export", "csv", RESULTS, "--out", out)
    check(r.returncode == 2 and "unknown format 'csv'" in r.stderr,
          f"--export csv is refused, named: {r.stderr[-200:]}")

    # ---- the gate ----
    def write(name, results):
        p = os.path.join(out, name)
        with open(p, "w") as f:
            json.dump(results, f)
        return p

    def scaled(factor, backend="uring"):
        """A copy with backend's server CPU per round trip scaled, round
        by round, in every TCP ping-pong case."""
        r = copy.deepcopy(base)
        for c in r["cases"]:
            if c["backend"] != backend or c["kind"] != "pingpong":
                continue
            k = "server_cpu_us_per_rt"
            for key in (k, k + "_min", k + "_max"):
                if c.get(key) is not None:
                    c[key] *= factor
            c[k + "_rounds"] = [[i, v * factor]
                                for i, v in c.get(k + "_rounds", [])]
        return r

    same = write("same.json", copy.deepcopy(base))
    r = bench("--gate", RESULTS, same)
    check(r.returncode == 0 and "0 headline figures worse" in r.stdout,
          f"gate: an identical pair passes: {r.returncode} {r.stdout[-300:]}")
    worse = write("worse.json", scaled(1.5))
    r = bench("--gate", RESULTS, worse)
    check(r.returncode == 1 and "WORSE: server CPU us/rt, 64 conns, uring"
          in r.stdout and "WORSE: uring/epoll server CPU/rt, 64 conns"
          in r.stdout, f"gate: uring 1.5x the CPU fails, named: "
          f"{r.returncode} {r.stdout[-600:]}")
    check("ursa-epoll" not in "".join(
        l for l in r.stdout.splitlines() if l.startswith("WORSE")),
          "gate: an unchanged backend is not named")
    noise = write("noise.json", scaled(1.02))
    r = bench("--gate", RESULTS, noise)
    check(r.returncode == 0, f"gate: a 2% change inside the noise passes: "
          f"{r.stdout[-400:]}")
    better = write("better.json", scaled(0.5))
    r = bench("--gate", RESULTS, better)
    check(r.returncode == 0 and "better: server CPU us/rt, 64 conns, uring"
          in r.stdout, f"gate: half the CPU passes and says so: "
          f"{r.stdout[-400:]}")
    r = bench("--gate", RESULTS, worse, "--tolerance", "100")
    check(r.returncode == 0, "gate: a tolerance of 100% lets 1.5x pass")
    lost = copy.deepcopy(base)
    lost["cases"] = [c for c in lost["cases"] if c["backend"] != "uring"]
    r = bench("--gate", RESULTS, write("lost.json", lost))
    check(r.returncode == 1 and "missing from the new one" in r.stdout,
          f"gate: a headline the new run lacks fails: {r.stdout[-300:]}")
    r = bench("--gate", RESULTS, os.path.join(out, "nothing.json"))
    check(r.returncode == 2 and "cannot read" in r.stderr,
          "gate: a run that is not there is named")
finish()
