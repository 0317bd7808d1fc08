#!/usr/bin/env python3
"""bench.py - ursa's bench suite: every server backend side by side on
loopback, the same load from ursa-load, repeated, with the server's own CPU
time per round trip as the figure that separates designs on a small machine.
Writes results.json, results.csv, report.md and graphs (SVG and PNG) into
one folder.  Run through bench/run.sh, which builds what it needs.

The suite is the package bench/ursabench: config (the matrix and the A/B
variants as data), runner (one run, the one interleaved repeat loop),
probes (iperf3, memory, perf), plots, analysis (the targets), report, and
cli (this command line).  `bench.py --render results.json --out DIR`
writes the report of a stored run again."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ursabench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
