#!/usr/bin/env python3
"""workflow_test.py - the bench workflow a user copies
(.github/workflows/bench.yml) parses as YAML (python3-yaml), runs on push
to main and on pull requests, gives every step a name or an action, and
every command it runs exists here: each repository script it names is in
the checkout, and each bench.py flag it passes is one bench.py --help
lists (so a renamed flag breaks this test, not a user's CI)."""
import os
import re
import subprocess
import sys

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-yaml
import yaml  # noqa: E402

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(top)
sys.path.insert(0, os.path.join(top, "tests"))
from checks import check, finish  # noqa: E402

wf = yaml.safe_load(open(".github/workflows/bench.yml"))
# YAML 1.1 reads the key "on" as True.
on = wf.get("on", wf.get(True, {}))
check("push" in on and "main" in on["push"].get("branches", []),
      "runs on push to main")
check("pull_request" in on, "runs on pull requests")
steps = [s for job in wf["jobs"].values() for s in job["steps"]]
check(len(steps) >= 6, f"{len(steps)} steps")
check(all("run" in s or "uses" in s for s in steps),
      "every step runs a command or uses an action")
runs = "\n".join(s["run"] for s in steps if "run" in s)
for kind in ("--smoke", "--export bmf", "--export gab", "--page",
             "--gate", "page_test.sh"):
    check(kind in runs, f"the workflow runs {kind}")
scripts = set(re.findall(r"\b((?:bench|tools)/[\w./-]+\.(?:sh|py))\b", runs))
check(scripts, "the workflow names scripts of the repository")
for s in sorted(scripts):
    check(os.path.isfile(s), f"{s} exists")
helptext = subprocess.run([sys.executable, "bench/bench.py", "--help"],
                          capture_output=True, text=True, timeout=60).stdout
flags = set()
for line in runs.splitlines():
    if "bench/bench.py" in line or "bench/run.sh" in line:
        flags |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
check(flags, "the workflow passes bench.py flags")
for f in sorted(flags):
    check(f in helptext, f"bench.py takes {f}")
finish()
