"""The report of `benchmarks/api.py`: medians and spreads, ratios by round, the issue's targets."""

from __future__ import annotations

import statistics

# Issue 12, "Speed": the API against the peer (Platformatic DB) and the bare Litestar app.
PEER_FACTOR = 2.0
BARE_FACTOR = 1.0
P99_MS = 20.0
RSS_MB = 150.0
POSITION_EXTRA = 0.10  # a get naming a satisfied X-Min-Position costs at most 10 % more


def _spread(values: list[float], fmt: str) -> str:
    """`median (min–max)` of the runs."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{format(mid, fmt)} ({format(low, fmt)}–{format(high, fmt)})"


def _ratios(runs: dict, kind: str, other: str, scenario: str) -> list[float]:
    """req/s of `kind` over `other`, round by round."""
    mine, theirs = runs.get(kind, {}).get(scenario, []), runs.get(other, {}).get(scenario, [])
    return [a["rps"] / b["rps"] for a, b in zip(mine, theirs, strict=False) if a and b]


def print_table(runs: dict, peaks: dict, exits: dict) -> None:
    print(f"{'target':<9}{'scenario':<9}{'req/s':<22}{'p50 ms':<22}{'p99 ms':<22}"
          f"{'% of ceiling':<16}{'errors':>7}")  # fmt: skip
    for kind, scenarios in runs.items():
        for scenario, rounds in scenarios.items():
            results = [r for r in rounds if r]  # None: a skipped run
            if not results:
                continue
            shares = _spread(
                [r * 100 for r in _ratios(runs, kind, "ceiling", scenario)] or [0], ".0f"
            )
            print(f"{kind:<9}{scenario:<9}{_spread([r['rps'] for r in results], '.0f'):<22}"
                  f"{_spread([r['p50'] for r in results], '.2f'):<22}"
                  f"{_spread([r['p99'] for r in results], '.1f'):<22}"
                  f"{shares if 'ceiling' in runs else '—':<16}"
                  f"{sum(r['errors'] for r in results):>7}")  # fmt: skip
        rss = "—" if peaks[kind] is None else f"{peaks[kind]:.0f} MiB"
        print(f"{kind:<9}peak RSS {rss}; exit code after SIGTERM {exits[kind]}")


def print_targets(runs: dict, peaks: dict, api: str) -> None:
    """Each target of the issue: the measured value (median over the rounds), met / NOT met."""
    print(f"\ntargets (issue 12, Speed), for `{api}`; ratios are medians of per-round ratios:")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for scenario in ("get", "list"):
        for other, factor in (("peer", PEER_FACTOR), ("bare", BARE_FACTOR)):
            ratios = _ratios(runs, api, other, scenario)
            if not ratios:
                print(f"  {scenario} ≥ {factor:.1f} × {other}: not measured")
                continue
            value = statistics.median(ratios)
            print(f"  {scenario} ≥ {factor:.1f} × {other}: {_spread(ratios, '.2f')} "
                  f"→ {verdict(value >= factor)}")  # fmt: skip
    for scenario in ("get", "list"):
        bound = _ratios(runs, "floor", "peer", scenario)
        if bound:
            print(f"  bound: {scenario} of the floor app (a dict of answers under the same "
                  f"framework and server) = {_spread(bound, '.2f')} × peer; the API reaches "
                  f"{_spread(_ratios(runs, api, 'floor', scenario), '.2f')} × floor")  # fmt: skip
    p99 = {
        s: statistics.median(r["p99"] for r in rs if r) for s, rs in runs[api].items() if any(rs)
    }
    worst = max(p99.values())
    shown = ", ".join(f"{s} {v:.1f}" for s, v in p99.items())
    print(f"  p99 ≤ {P99_MS:.0f} ms: {shown} ms → {verdict(worst <= P99_MS)}")
    if "floor" in runs:
        floor = {s: statistics.median(r["p99"] for r in rs if r) for s, rs in runs["floor"].items()
                 if any(rs)}  # fmt: skip
        print(
            "  bound: p99 of the floor app "
            + ", ".join(f"{s} {v:.1f}" for s, v in floor.items())
            + " ms (64 connections: latency is connections ÷ req/s, plus the machine's stalls)"
        )
    rss_mb = peaks[api] * 1.048576
    print(f"  RSS ≤ {RSS_MB:.0f} MB: {peaks[api]:.0f} MiB ({rss_mb:.0f} MB) → "
          f"{verdict(rss_mb <= RSS_MB)}")  # fmt: skip
    print_position_target(runs[api])


def print_position_target(runs: dict) -> None:
    """getpos against get on one target: req/s ratio per round, and the extra cost per request."""
    ratios = [
        p["rps"] / g["rps"]
        for g, p in zip(runs.get("get", []), runs.get("getpos", []), strict=False)
        if g and p
    ]
    name = f"X-Min-Position ≤ {POSITION_EXTRA:.0%} extra"
    if not ratios:
        print(f"  {name}: not measured (scenarios get and getpos)")
        return
    extra = 1 / statistics.median(ratios) - 1  # the cost of a request is 1 / req/s
    print(f"  {name}: getpos/get req/s {_spread(ratios, '.2f')}, {extra:+.1%} per request "
          f"→ {'met' if extra <= POSITION_EXTRA else 'NOT met'}")  # fmt: skip
