"""Shared timing and reporting for the benchmark scripts.

Every benchmark measures a ceiling in the same run (the bare ``cryptography`` call, the scapy
peer, a naive scan) and reports ratios against it, because these machines are noisy. ``--smoke``
shrinks every size so that the test suite can run each script in a second; ``--json`` prints the
rows as JSON instead of a table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line: ``ops`` operations of ``size`` bytes took ``seconds``."""

    case: str
    what: str
    ops: int
    seconds: float
    size: int = 0
    ceiling: str | None = None  # the ``what`` of the row this one is compared to

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mb_s(self) -> float:
        return self.per_s * self.size / 1e6


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: only proves the script runs")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--seconds", type=float, default=1.0, help="target time per measurement")
    return p


def measure(fn: Callable[[], object], *, seconds: float, min_ops: int = 1) -> tuple[int, float]:
    """Call ``fn`` repeatedly for about ``seconds``; return (calls, elapsed). Best of three runs."""
    fn()  # warm up caches and lazily built objects
    calls, t0 = 0, time.perf_counter()
    while True:  # calibrate: how many calls fill about a tenth of the budget
        fn()
        calls += 1
        if time.perf_counter() - t0 >= seconds / 10 and calls >= min_ops:
            break
    per_run = max(min_ops, int(calls * 10 / 3))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(per_run):
            fn()
        best = min(best, time.perf_counter() - t0)
    return per_run, best


def measure_interleaved(fns: Sequence[tuple[Hashable, Callable[[], object], float]], *,
                        seconds: float, rounds: int = 5) -> dict[Hashable, tuple[int, float]]:
    """Measure several functions in ``rounds`` interleaved rounds; each keeps its best round.

    ``fns`` holds (key, function, share): a function gets ``share * seconds`` in all. Other
    processes share these cores, so a busy moment should not land on one row only: every row
    is measured in every round, and a ratio compares rows measured side by side.
    """
    best: dict[Hashable, tuple[int, float]] = {}
    for _ in range(rounds):
        for key, fn, share in fns:
            ops, t = measure(fn, seconds=seconds * share / rounds)
            old = best.get(key)
            if old is None or t / ops < old[1] / old[0]:
                best[key] = (ops, t)
    return best


def report(rows: Sequence[Row], *, as_json: bool) -> str:
    """Render rows with each one's ratio to its ceiling row (same case)."""
    index = {(r.case, r.what): r for r in rows}

    def ratio(r: Row) -> float | None:
        base = index.get((r.case, r.ceiling)) if r.ceiling else None
        return base.seconds / base.ops * r.ops / r.seconds if base else None

    if as_json:
        return json.dumps(
            [asdict(r) | {"per_s": r.per_s, "mb_s": r.mb_s, "ratio_to_ceiling": ratio(r)} for r in rows], indent=2
        )
    lines = [f"{'case':<28} {'what':<22} {'ops/s':>12} {'MB/s':>9}  ratio"]
    for r in rows:
        q = ratio(r)
        shown = f"{q:6.3f} of {r.ceiling}" if q is not None else "(ceiling)" if r.ceiling is None else "-"
        lines.append(f"{r.case:<28} {r.what:<22} {r.per_s:12,.0f} {r.mb_s:9.1f}  {shown}")
    return "\n".join(lines)
