"""publish.py - a stored run in the formats CI tools read, and the
regression gate between two runs.

- Bencher's metric format (BMF): {benchmark: {measure: {value,
  lower_value, upper_value}}}, one benchmark per row of the run (its id)
  and one measure per figure of it, the repeats' range as the bounds.
- github-action-benchmark's custom tools: two lists (customBiggerIsBetter
  for rates, customSmallerIsBetter for CPU and latency) of {name, unit,
  value, range, extra}, the range as "lo-hi" and the machine in extra.
- The gate: the headline figures of trends.py (server CPU per round trip
  at 64 and 256 connections for each backend, the uring/epoll and
  ursa-epoll/epoll ratios, round trips/s, iperf2's ratio), each with its
  interval (a case figure's range over its repeats, a ratio's per-round
  interval); a figure whose new interval lies wholly beyond the base's,
  on its bad side, by more than the tolerance fails the gate, as does a
  headline the base has and the new run lacks."""
import json
import os

from .intervals import fmt
from .trends import figure, headlines

# The figures exported: key -> (measure slug, unit, bigger is better).
FIGURES = {
    "rt_per_s": ("round-trips-per-s", "round trips/s", True),
    "server_cpu_us_per_rt": ("server-cpu-us-per-rt", "us", False),
    "p50_us": ("p50-us", "us", False),
    "p99_us": ("p99-us", "us", False),
    "mb_per_s": ("mb-per-s", "MB/s", True),
    "opened_per_s": ("connections-per-s", "connections/s", True),
    "server_cpu_us_per_open": ("server-cpu-us-per-connection", "us", False),
    "iops": ("iops", "reads/s", True),
    "cpu_us_per_read": ("cpu-us-per-read", "us", False),
    "server_cpu_us_per_mb": ("server-cpu-us-per-mb", "us", False),
    "ms_per_spawn": ("ms-per-spawn", "ms", False),
    "spawns_per_s": ("spawns-per-s", "spawns/s", True),
    "cpu_us_per_mb": ("cpu-us-per-mb", "us", False),
}
# The blocks whose rows carry an id and the figures above.
BLOCKS = ("cases", "http", "greet", "files", "static", "process", "tls",
          "outside", "veth")


def metrics(results):
    """(benchmark, key, value, lo, hi) for every figure of every row."""
    out = []
    for block in BLOCKS:
        for row in results.get(block) or []:
            name = row.get("id")
            if not name:
                continue
            for key in FIGURES:
                v = row.get(key)
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                if key == "opened_per_s" and not v:
                    continue  # a case that opens no connections
                lo, hi = row.get(key + "_min", v), row.get(key + "_max", v)
                if lo is None or hi is None:
                    lo = hi = v
                out.append((name, key, float(v), float(min(lo, v)),
                            float(max(hi, v))))
    return out


def machine(results):
    env = results.get("env", {})
    return {k: env.get(k) for k in ("commit", "date", "cpu_model", "cpus",
                                    "kernel", "liburing", "libuv", "net")} | {
        "ring_features_used": env.get("ring_features_used", [])}


def bmf(results):
    doc = {}
    for name, key, v, lo, hi in metrics(results):
        doc.setdefault(name, {})[FIGURES[key][0]] = {
            "value": v, "lower_value": lo, "upper_value": hi}
    return doc


def gab(results):
    """(bigger is better, smaller is better) entry lists."""
    m = machine(results)
    extra = "\n".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                      for k, v in m.items())
    bigger, smaller = [], []
    for name, key, v, lo, hi in metrics(results):
        slug, unit, up = FIGURES[key]
        entry = {"name": f"{name} {slug}", "unit": unit, "value": v,
                 "range": f"{fmt(lo, 2)}-{fmt(hi, 2)}", "extra": extra}
        (bigger if up else smaller).append(entry)
    return bigger, smaller


def export(fmt_name, results_path, out):
    """Writes the export into out; returns the paths written."""
    with open(results_path) as f:
        results = json.load(f)
    os.makedirs(out, exist_ok=True)
    if fmt_name == "bmf":
        paths = {os.path.join(out, "bmf.json"): bmf(results)}
    else:
        big, small = gab(results)
        paths = {os.path.join(out, "gab-bigger.json"): big,
                 os.path.join(out, "gab-smaller.json"): small}
    for p, doc in paths.items():
        with open(p, "w") as f:
            json.dump(doc, f, indent=1)
    return list(paths)


def gate(base, new, tolerance, ratios_only=False):
    """(failures, notes): the headline figures that got worse beyond both
    intervals and the tolerance (a fraction), and those that got better;
    ratios_only: the ratios between backends alone."""
    fails, notes = [], []
    for group, name, how in headlines():
        if ratios_only and group != "ratio":
            continue
        b, n = figure(base, how), figure(new, how)
        if b is None:
            continue
        if n is None:
            fails.append(f"{name}: in the base run ({fmt(b[0], 2)}), "
                         "missing from the new one")
            continue
        up = group == "rate"
        show = (f"{name}: {fmt(b[0], 2)} [{fmt(b[1], 2)}-{fmt(b[2], 2)}] -> "
                f"{fmt(n[0], 2)} [{fmt(n[1], 2)}-{fmt(n[2], 2)}]")
        worse = (n[2] < b[1] * (1 - tolerance)) if up else \
            (n[1] > b[2] * (1 + tolerance))
        better = (n[1] > b[2] * (1 + tolerance)) if up else \
            (n[2] < b[1] * (1 - tolerance))
        if worse:
            fails.append(show)
        elif better:
            notes.append(show)
    return fails, notes
