"""intervals.py - every ratio with its interval.

A block's items run interleaved, one run of each per round, so a round's
runs share the machine's state of the moment: the ratio of two items in
the same round cancels the drift that moves both.  The interval printed
beside a ratio is an order-statistic interval of those per-round ratios
for their median: from the k-th smallest to the k-th largest, which holds
the median with probability 1 - 2 P(Binomial(n, 1/2) < k), whatever their
distribution; k is the largest that keeps that at 90% or more (k = 1, the
whole range, below 8 rounds: 75% at 3 rounds, 94% at 5; k = 2 from 8
rounds, 93%), so one stray round at each end does not widen it.  Stored
runs without per-round values fall back to the rows' extremes (one's
best against the other's worst), which is wider."""
import math


def fmt(v, nd=1):
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)

# The figures a summary keeps round by round (as [round, value] pairs
# under key + "_rounds").
ROUND_KEYS = ("rt_per_s", "server_cpu_us_per_rt", "p50_us", "p99_us",
              "mb_per_s", "opened_per_s", "server_cpu_us_per_open",
              "posts_per_s", "lat_p50_ns", "lat_p99_ns", "iops",
              "cpu_us_per_read", "server_cpu_us_per_mb", "idle_p99_us",
              "rss_growth_kib", "ms_per_spawn", "spawns_per_s",
              "cpu_us_per_mb", "dgrams_per_s", "server_cpu_us_per_dgram",
              "client_cpu_us_per_rt", "rss_kib")


def coverage(n, k=1):
    """The chance that the k-th smallest to the k-th largest of n
    per-round ratios hold their median."""
    if n < 2 or 2 * k > n:
        return 0.0
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n


def depth(n):
    """The k of the interval over n rounds (see above)."""
    k = 1
    while coverage(n, k + 1) >= 0.9:
        k += 1
    return k


def per_round(x, y, k):
    """x[k]/y[k] for each round both ran in, in round order."""
    xs = dict((r, v) for r, v in x.get(k + "_rounds") or [])
    ys = dict((r, v) for r, v in y.get(k + "_rounds") or [])
    return [xs[r] / ys[r] for r in sorted(xs) if r in ys and
            xs[r] is not None and ys[r]]


def interval(x, y, k):
    """(point, lo, hi, n, how) for x[k]/y[k]: with per-round values (how
    'rounds', n of them) the median of the per-round ratios and its
    order-statistic interval; without, the ratio of the medians and the
    extremes (how 'extremes'); lo and hi are None when neither is known,
    point when the ratio is not."""
    if not x or not y or x.get(k) is None or not y.get(k):
        return None, None, None, 0, ""
    point = x[k] / y[k]
    rs = sorted(per_round(x, y, k))
    if len(rs) >= 2:
        # The point is then the median of the per-round ratios, the figure
        # the interval is for (the ratio of the medians can fall outside).
        d = depth(len(rs))
        n = len(rs)
        med = rs[n // 2] if n % 2 else (rs[n // 2 - 1] + rs[n // 2]) / 2
        return med, rs[d - 1], rs[-d], n, "rounds"
    lo_x, hi_x = x.get(k + "_min"), x.get(k + "_max")
    lo_y, hi_y = y.get(k + "_min"), y.get(k + "_max")
    if None in (lo_x, hi_x, lo_y, hi_y) or not lo_y or not hi_y:
        return point, None, None, len(rs), ""
    return point, lo_x / hi_y, hi_x / lo_y, 0, "extremes"


def spans_one(lo, hi):
    return lo is not None and hi is not None and lo <= 1 <= hi


def text(iv, nd=2):
    """' [lo-hi]', with 'no difference measured' when the interval
    spans 1; '' without an interval."""
    _, lo, hi, n, how = iv
    if lo is None:
        return ""
    what = f"{n} rounds" if how == "rounds" else "extremes"
    return (f" [{fmt(lo, nd)}-{fmt(hi, nd)}, {what}"
            + ("; no difference measured]" if spans_one(lo, hi) else "]"))


def judge(iv, test):
    """A target on a ratio, judged on its interval: True when the whole
    interval meets test, False when none of it does, 'unresolved' when it
    straddles the goal; on the point when there is no interval."""
    point, lo, hi, _, _ = iv
    if point is None:
        return None
    if lo is None:
        return test(point)
    a, b = test(lo), test(hi)
    if a and b:
        return True
    if not a and not b:
        return False
    return "unresolved"


def effect(with_, without, k, higher_better):
    """A feature's effect (above 1: it helps) with its interval: the
    ratio with/without for figures where higher is better, without/with
    for costs."""
    if higher_better:
        return interval(with_, without, k)
    return interval(without, with_, k)


def resolution(ivs):
    """What a block of intervals can tell apart: the median half-width of
    its per-round intervals, as a fraction (0.06: effects beyond about 6%
    stand out of the noise)."""
    hw = sorted((hi - lo) / 2 / p for p, lo, hi, _, how in ivs
                if how == "rounds" and p)
    if not hw:
        return None
    return hw[len(hw) // 2]
