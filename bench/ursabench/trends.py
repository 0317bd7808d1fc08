"""trends.py - the headline figures of several stored runs (one
results.json per commit, oldest first, as a CI job keeps them) drawn over
the commits with their intervals, and each change between neighbouring
runs that lies beyond both runs' intervals flagged.  A single run cannot
show a regression; a series can."""
import json
import os
import subprocess
import sys

from .analysis import find
from .intervals import fmt, interval

# (group, figure name, what to take): a case figure with its repeats'
# range, or a ratio between two backends with its per-round interval.
def headlines():
    out = []
    for n in (64, 256):
        for b in ("uring", "ursa-epoll", "epoll"):
            out.append(("cpu", f"server CPU us/rt, {n} conns, {b}",
                        ("case", b, n, "server_cpu_us_per_rt")))
        out.append(("ratio", f"uring/epoll server CPU/rt, {n} conns",
                    ("ratio", "uring", "epoll", n, "server_cpu_us_per_rt")))
        out.append(("ratio", f"ursa-epoll/epoll server CPU/rt, {n} conns",
                    ("ratio", "ursa-epoll", "epoll", n,
                     "server_cpu_us_per_rt")))
    for b in ("uring", "epoll"):
        out.append(("rate", f"round trips/s, 64 conns, {b}",
                    ("case", b, 64, "rt_per_s")))
    out.append(("ratio", "uring/epoll server CPU/rt, 64 conns, iperf2",
                ("outside", "uring", "epoll", 64, "server_cpu_us_per_rt")))
    return out


def figure(results, how):
    """(value, lo, hi) of one headline in one run, or None."""
    pp = lambda b, n: find(results.get("cases", []), b, "pingpong", "tcp",
                           n, 64, 1)
    if how[0] == "case":
        _, b, n, k = how
        c = pp(b, n)
        if not c or c.get(k) is None:
            return None
        return c[k], c.get(k + "_min", c[k]), c.get(k + "_max", c[k])
    _, x, y, n, k = how
    rows = (results.get("outside", []) if how[0] == "outside"
            else results.get("cases", []))
    pick = lambda b: next((c for c in rows if c["backend"] == b and
                           c["conns"] == n and c.get("kind") == "pingpong" and
                           c.get("size") == 64 and
                           c.get("inflight", 1) == 1 and
                           c.get("proto", "tcp") == "tcp"), None)
    p, lo, hi, _, _ = interval(pick(x), pick(y), k)
    if p is None:
        return None
    return p, lo if lo is not None else p, hi if hi is not None else p


def changes(series):
    """(index, previous, current) for each step whose intervals do not
    overlap: a change beyond both runs' noise."""
    out = []
    prev = None
    for i, f in enumerate(series):
        if f is None:
            continue
        if prev is not None:
            j, p = prev
            if f[1] > p[2] or f[2] < p[1]:
                out.append((i, j, p, f))
        prev = (i, f)
    return out


def label(results, path):
    env = results.get("env", {})
    lab = env.get("commit") or os.path.basename(os.path.dirname(path)) or path
    # Runs across the veth pair are not comparable with loopback ones.
    return lab + (" (veth)" if env.get("net", "").startswith("veth") else "")


def trends(paths, out):
    """Writes trend.md, trend.json and graphs/trend-*.svg/png into out;
    returns (path of trend.md, flagged lines)."""
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    labels = [label(r, p) for r, p in zip(runs, paths)]
    table, flagged, data = [], [], {}
    for group, name, how in headlines():
        series = [figure(r, how) for r in runs]
        if not any(series):
            continue
        data[name] = {"group": group, "points": series}
        cells = [f"{fmt(f[0], 2)} [{fmt(f[1], 2)}-{fmt(f[2], 2)}]"
                 if f else "-" for f in series]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
        for i, j, p, f in changes(series):
            flagged.append(f"{name}: {labels[j]} {fmt(p[0], 2)} "
                           f"[{fmt(p[1], 2)}-{fmt(p[2], 2)}] -> {labels[i]} "
                           f"{fmt(f[0], 2)} [{fmt(f[1], 2)}-{fmt(f[2], 2)}]")
    os.makedirs(os.path.join(out, "graphs"), exist_ok=True)
    made = draw(out, labels, data)
    L = ["# ursa bench trends", "",
         f"{len(runs)} runs, oldest first: " + ", ".join(
             f"{lab} ({r.get('env', {}).get('date', '?')})"
             for lab, r in zip(labels, runs)) + ".", "",
         "Each figure is the run's median with its interval: a case "
         "figure's range over its repeats, a ratio's per-round interval "
         "(see the report).  A change is flagged when two neighbouring "
         "runs' intervals do not overlap: a change beyond both runs' "
         "noise.  The absolute figures move with the machine's own speed, "
         "which drifts by tens of percent (docs/measurements.md); the "
         "ratios between backends of one run are the figures that show a "
         "change in ursa itself.", ""]
    L += [f"![{m}](graphs/{m}.svg)" for m in made] + [""]
    L += ["| figure | " + " | ".join(labels) + " |",
          "|---" * (len(labels) + 1) + "|"] + table + [""]
    L += ["## Changes beyond the intervals", ""]
    L += [f"- {f}" for f in flagged] if flagged else ["None."]
    path = os.path.join(out, "trend.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(out, "trend.json"), "w") as f:
        json.dump({"runs": labels, "figures": data, "flagged": flagged}, f,
                  indent=1)
    return path, flagged


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#17becf"]

TITLES = {"cpu": "Server CPU per round trip (us), TCP 64 B ping-pong",
          "ratio": "Ratios between backends (below 1: the first uses less)",
          "rate": "Round trips per second, TCP 64 B ping-pong, 64 conns"}


def draw(out, labels, data):
    """One graph per group: each figure's points with its interval as an
    error bar, over the runs; returns the graph names drawn."""
    gdir = os.path.join(out, "graphs")
    gp, made = [], []
    for group, title in TITLES.items():
        figs = [(n, d) for n, d in data.items() if d["group"] == group]
        if not figs:
            continue
        name = f"trend-{group}"
        plots = []
        for i, (n, d) in enumerate(figs):
            path = os.path.join(gdir, f"{name}-{i}.dat")
            with open(path, "w") as f:
                for x, p in enumerate(d["points"]):
                    # A run without the figure breaks the line.
                    f.write(f"{x} {p[0]} {p[1]} {p[2]}\n" if p else "\n")
            col = PALETTE[i % len(PALETTE)]
            plots.append(f"'{path}' using 1:2:3:4 with yerrorbars pt 7 "
                         f"lc rgb '{col}' title '{n}', '{path}' using 1:2 "
                         f"with lines lc rgb '{col}' notitle")
        body = [f'set title "{title}"', "set key below", "set grid",
                "set xrange [-0.5:%g]" % (len(labels) - 0.5),
                "set xtics (" + ", ".join(
                    f'"{lab}" {x}' for x, lab in enumerate(labels)) + ")",
                "set xtics rotate by -30", "plot " + ", ".join(plots)]
        for term, ext in (("svg size 1000,560 dynamic", "svg"),
                          ("pngcairo size 1000,560", "png")):
            gp += [f"set terminal {term}",
                   f"set output '{os.path.join(gdir, name)}.{ext}'"]
            gp += body + ["reset"]
        made.append(name)
    if not gp:
        return []
    script = os.path.join(gdir, "trend.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    try:
        r = subprocess.run(["gnuplot", script], capture_output=True,
                           text=True, timeout=120)
    except OSError as e:
        print(f"bench: gnuplot: {e}", file=sys.stderr)
        return []
    if r.returncode:
        print("bench: gnuplot failed: " + r.stderr[:1000], file=sys.stderr)
        return []
    return made
