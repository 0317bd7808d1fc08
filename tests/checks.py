"""checks.py - the tally every Python test suite here keeps: check() counts
and reports a failed condition, finish() prints the count and exits
non-zero on any failure."""
import sys

checks = 0
failures = []


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def finish():
    """Prints the tally and exits non-zero on any failed check."""
    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
