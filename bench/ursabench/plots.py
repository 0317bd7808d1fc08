"""plots.py - the graphs (gnuplot, SVG and PNG) drawn from the cases."""
import os
import subprocess
import sys

from . import http_report
from .config import BACKENDS, COLOURS

# Measured neighbours further apart than this factor on x get no line
# between them.
GAP = 4.0

# The latency percentile plot's percentiles: (label, key, nines).
PCTS = [("50", "p50_us", 0.50), ("90", "p90_us", 0.90),
        ("99", "p99_us", 0.99), ("99.9", "p999_us", 0.999),
        ("99.99", "p9999_us", 0.9999)]


class Graphs:
    """The graphs being made: their folder, the caption every one carries,
    the names made, and the gnuplot script of each."""

    def __init__(self, out, env, cases):
        self.gdir = os.path.join(out, "graphs")
        os.makedirs(self.gdir, exist_ok=True)
        caption = (f"{env['cpu_model']}, {env['cpus']} CPUs, Linux "
                   f"{env['kernel']}, commit {env['commit']}, {env['date']}, "
                   f"server CPU {env['server_cpu']} / load CPU "
                   f"{env['load_cpu']}")
        self.caption = caption.replace('"', "'")
        self.cases = cases
        self.made, self.script = [], []

    def path(self, name):
        return os.path.join(self.gdir, name)

    def head(self, name, title, xlabel, ylabel, logx=False):
        self.made.append(name)
        s = [f'set title "{title}"', f'set xlabel "{xlabel}"',
             f'set ylabel "{ylabel}"', "set grid", "set key outside right",
             f'set label 99 "{self.caption}" at screen 0.01,0.015 font ",8"',
             "set bmargin 5", "set yrange [0:*]"]
        s.append("set logscale x 2" if logx else "unset logscale x")
        return s

    def lines(self, name, title, xlabel, ylabel, sel, xkey, ykey, logx=True,
              rows=None, series=BACKENDS):
        """A point (median, with the repeats' range as its error bar) per
        measurement, and a line only between neighbours at most GAP apart
        on x: where nothing was measured in between, nothing is drawn.
        The x tics are the measured values."""
        s = self.head(name, title, xlabel, ylabel, logx)
        plots, xs = [], set()
        for b in series:
            pts = sorted((c[xkey], c[ykey], c.get(ykey + "_min", c[ykey]),
                          c.get(ykey + "_max", c[ykey]))
                         for c in (rows if rows is not None else self.cases)
                         if c["backend"] == b and sel(c)
                         and c[ykey] is not None)
            if not pts:
                continue
            xs.update(p[0] for p in pts)
            path = self.path(f"{name}-{b}.dat")
            with open(path, "w") as f:
                for i, p in enumerate(pts):
                    # A blank line ends a gnuplot line: no line across a gap.
                    if i and p[0] > GAP * pts[i - 1][0]:
                        f.write("\n")
                    f.write("%s %s %s %s\n" % p)
            plots.append(f"'{path}' using 1:2 with lines lw 2 "
                         f"lc rgb '{COLOURS[b]}' notitle")
            plots.append(f"'{path}' using 1:2:3:4 with yerrorbars pt 7 "
                         f"ps 0.8 lc rgb '{COLOURS[b]}' title '{b}'")
        if plots:
            s.append("set xtics (" + ", ".join(
                f'"{x}" {x}' for x in sorted(xs)) + ")")
            # Room beyond the end points, so no point sits on the border.
            if logx:
                s.append(f"set xrange [{min(xs) / 1.5}:{max(xs) * 1.5}]")
            self.script.append((name, s + ["plot " + ", ".join(plots)]))
        else:
            self.made.remove(name)

    def bars(self, name, title, ylabel, rows):
        """One bar per (label, value, lo, hi, colour), the range as an
        error bar."""
        if not rows:
            return
        s = self.head(name, title, "", ylabel)
        path = self.path(f"{name}.dat")
        with open(path, "w") as f:
            for i, (lab, v, lo, hi, col) in enumerate(rows):
                f.write(f'{i} "{lab}" {v} {lo} {hi} {int(col[1:], 16)}\n')
        s += ["set style fill solid 1.0 border -1", "set boxwidth 0.6",
              "set xrange [-0.6:%d]" % len(rows), "unset key",
              f"plot '{path}' using 1:3:6:xtic(2) with boxes lc rgb "
              f"variable, '{path}' using 1:3:4:5 with yerrorbars lc rgb "
              "'black' pt 0"]
        self.script.append((name, s))


def pingpong64(c):
    return c["kind"] == "pingpong" and c["proto"] == "tcp" and c["size"] == 64


def g_matrix(g, r):
    """The case matrix: round trips and CPU against connections, and
    throughput against message size."""
    g.lines("rt_vs_conns", "Round trips per second, TCP 64 B ping-pong",
            "connections", "round trips / s", pingpong64, "conns",
            "rt_per_s")
    g.lines("cpu_vs_conns", "Server CPU time per round trip, TCP 64 B "
            "ping-pong", "connections", "server CPU us / round trip",
            pingpong64, "conns", "server_cpu_us_per_rt")
    g.lines("mb_vs_size", "Echo throughput by message size, TCP ping-pong, "
            "64 connections", "message size (bytes)", "MB/s each way",
            lambda c: c["kind"] == "pingpong" and c["proto"] == "tcp"
            and c["conns"] == 64, "size", "mb_per_s")


def g_outside(g, r):
    """The outside client (iperf2 bounceback) against connections."""
    if not r["outside"]:
        return
    g.lines("iperf2_rt_vs_conns", "Round trips per second, iperf2 "
            "bounceback, 64 B (an outside client)", "connections",
            "round trips / s", lambda c: True, "conns", "rt_per_s",
            rows=list(r["outside"]))
    g.lines("iperf2_cpu_vs_conns", "Server CPU per round trip, iperf2 "
            "bounceback, 64 B (an outside client)", "connections",
            "server CPU us / round trip", lambda c: True, "conns",
            "server_cpu_us_per_rt", rows=list(r["outside"]))


def g_latency(g, r):
    """Latency p50/p99 by backend, one pair of bars each; then p50 to
    p99.99 per backend on a log scale of 1/(1-p), so that each further
    nine is one step."""
    lat = [c for c in r["cases"] if pingpong64(c) and c["conns"] == 64]
    if lat:
        s = g.head("latency", "Latency, TCP 64 B ping-pong, 64 connections "
                   "(solid p50, light p99)", "backend", "microseconds")
        path = g.path("latency.dat")
        s.append("set xtics (" + ", ".join(
            f'"{b}" {i}' for i, b in enumerate(BACKENDS)) + ")")
        with open(path, "w") as f:
            for i, b in enumerate(BACKENDS):
                c = next((c for c in lat if c["backend"] == b), None)
                if c:
                    f.write(f"{i} {b} {c['p50_us']} {c['p99_us']} "
                            f"{int(COLOURS[b][1:], 16)}\n")
        s += ["set style fill solid 1.0 border -1", "set boxwidth 0.35",
              "set xrange [-0.6:%d]" % len(BACKENDS), "unset key",
              f"plot '{path}' using ($1-0.19):3:5 with boxes "
              "lc rgb variable, "
              f"'{path}' using ($1+0.19):4:5 with boxes fs transparent "
              "solid 0.35 lc rgb variable"]
        g.script.append(("latency", s))
    pct = [c for c in lat if all(c.get(k) for _, k, _ in PCTS)]
    if pct:
        s = g.head("latency_percentiles", "Latency percentiles, TCP 64 B "
                   "ping-pong, 64 connections (ursa-load)", "percentile",
                   "microseconds (log)")
        s += ["set logscale x 10", "set logscale y 10", "set yrange [*:*]",
              "set xrange [1.4:14000]",
              "set xtics (" + ", ".join(
                  f'"p{lab}" {1 / (1 - q):g}' for lab, _, q in PCTS) + ")"]
        plots = []
        for c in pct:
            path = g.path(f"pct-{c['backend']}.dat")
            with open(path, "w") as f:
                for _, k, q in PCTS:
                    f.write(f"{1 / (1 - q):g} {c[k]}\n")
            plots.append(f"'{path}' using 1:2 with linespoints lw 2 pt 7 "
                         f"lc rgb '{COLOURS[c['backend']]}' "
                         f"title '{c['backend']}'")
        g.script.append(("latency_percentiles", s + ["plot " +
                                                     ", ".join(plots)]))


HTTP_COLOURS = {"ursa-http uring": COLOURS["uring"],
                "ursa-http ursa-epoll": COLOURS["ursa-epoll"],
                "nginx": "#2ca02c", "h2o": "#d62728"}


def g_http_greet(g, r):
    """HTTP requests/s and CPU per request by server, and greet's
    connections per second by backend."""
    http_report.graphs(g, r["http"], HTTP_COLOURS)
    g.bars("greet", "Greet (accept, greeting, close): connections per "
           "second", "connections / s",
           [(x["backend"], x["rt_per_s"], x.get("rt_per_s_min", 0),
             x.get("rt_per_s_max", 0), COLOURS[x["backend"]])
            for x in r["greet"]])


def g_bulk(g, r):
    """The bulk stream against iperf3."""
    if not r["bulk"]:
        return
    s = g.head("bulk", "Bulk stream, one connection, 64 KiB writes, "
               "against iperf3", "", "MB/s")
    path = g.path("bulk.dat")
    rows = [(c["backend"], c["mb_per_s"]) for c in r["bulk"]]
    if r["iperf"]:
        rows.append(("iperf3", r["iperf"]["mb_per_s"]))
    with open(path, "w") as f:
        for i, (b, v) in enumerate(rows):
            f.write(f"{i} {b} {v} {int(COLOURS[b][1:], 16)}\n")
    s += ["set style fill solid 1.0 border -1", "set boxwidth 0.6",
          "set xrange [-0.6:%d]" % len(rows), "unset key",
          f"plot '{path}' using 1:3:4:xtic(2) with boxes lc rgb variable"]
    g.script.append(("bulk", s))


# In the order the report shows them.
GRAPHS = [g_matrix, g_outside, g_latency, g_http_greet, g_bulk]


def graphs(out, env, cases, bulk, iperf, outside=(), http=(), greet=()):
    """Writes the data files and one gnuplot script; returns graph names."""
    g = Graphs(out, env, cases)
    r = {"cases": cases, "bulk": bulk, "iperf": iperf, "outside": outside,
         "http": http, "greet": greet}
    for f in GRAPHS:
        f(g, r)
    gp = []
    for name, body in g.script:
        for term, ext in (("svg size 1000,560 dynamic", "svg"),
                          ("pngcairo size 1000,560", "png")):
            gp += [f"set terminal {term}",
                   f"set output '{os.path.join(g.gdir, name)}.{ext}'"]
            gp += body
            gp += ["unset label", "reset"]
    with open(os.path.join(g.gdir, "graphs.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    r = subprocess.run(["gnuplot", os.path.join(g.gdir, "graphs.gp")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("bench: gnuplot failed: " + r.stderr[:2000], file=sys.stderr)
        return []
    return g.made
