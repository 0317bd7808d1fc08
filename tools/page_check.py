#!/usr/bin/env python3
"""page_check.py - loads a bench page (index.html) in headless Chromium
and fails on a console message of the page (a script error, a
console.error), on a graph the browser did not lay out with a size and
lines in it (the page's own script counts them into data-graphs and
data-drawn), on a page without graphs or tables, or on a screenshot that
did not come out.  Usage: page_check.py PAGE.html SCREENSHOT.png
[--expect-fail].  --expect-fail inverts the verdict: the check run on a
page broken on purpose, to show that it can fail."""
import os
import re
import shutil
import subprocess
import sys
import tempfile


def browser():
    for b in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(b):
            return b
    return None


def check(page, shot):
    """The problems found, as strings (none: the page is good)."""
    b = browser()
    if not b:
        return ["no Chromium here (apt-get install chromium)"]
    url = "file://" + os.path.abspath(page)
    # A profile of its own, so that no other Chromium's state is read.
    with tempfile.TemporaryDirectory(prefix="ursa-page-") as prof:
        common = [b, "--headless", "--no-sandbox", "--disable-gpu",
                  "--no-first-run", f"--user-data-dir={prof}",
                  "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=5000", "--window-size=1280,4000"]
        dom = subprocess.run(common + ["--dump-dom", url], capture_output=True,
                             text=True, timeout=120)
        if os.path.exists(shot):
            os.unlink(shot)
        snap = subprocess.run(common + [f"--screenshot={shot}", url],
                              capture_output=True, text=True, timeout=120)
    problems = []
    for line in (dom.stderr + snap.stderr).splitlines():
        if ":CONSOLE" in line and url in line:
            problems.append("console: " + line.split("] ", 1)[-1][:200])
    body = re.search(r"<body[^>]*>", dom.stdout)
    if dom.returncode or not body:
        problems.append(f"the page did not load (exit {dom.returncode})")
        return problems
    g = re.search(r'data-graphs="(\d+)"', body.group(0))
    d = re.search(r'data-drawn="(\d+)"', body.group(0))
    if not g or not d:
        problems.append("the page's script did not run (no data-graphs)")
    else:
        graphs, drawn = int(g.group(1)), int(d.group(1))
        if graphs == 0:
            problems.append("no graphs on the page")
        if drawn != graphs:
            problems.append(f"{graphs - drawn} of {graphs} graphs not drawn")
    if "<table" not in dom.stdout:
        problems.append("no tables on the page")
    if "not drawn</em>" in dom.stdout:
        problems.append("the report names a graph that is not there")
    if not os.path.exists(shot) or os.path.getsize(shot) < 10000:
        problems.append(f"no screenshot at {shot} (exit {snap.returncode})")
    return problems


def main():
    args = [a for a in sys.argv[1:] if a != "--expect-fail"]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(*args)
    if "--expect-fail" in sys.argv:
        print(f"page_check: the broken page fails as it should: "
              f"{'; '.join(problems)}" if problems else
              "page_check: FAIL: the broken page passed")
        return 0 if problems else 1
    for p in problems:
        print(f"page_check: FAIL: {p}")
    if not problems:
        print(f"page_check: {args[0]}: every graph drawn, no console "
              f"message; screenshot {args[1]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
