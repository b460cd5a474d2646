"""Every benchmark script runs with tiny sizes, so none can rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from _harness import Row, measure, report  # noqa: E402

SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_benchmark_runs_with_tiny_sizes(script: Path):
    """The script finishes in smoke mode and prints JSON rows with positive rates."""
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--json", "--seconds", "0.01"],
        capture_output=True, text=True, timeout=300, cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(r["per_s"] > 0 for r in rows)


def test_harness_reports_ratio_to_ceiling():
    """A row's ratio is its rate divided by the rate of its ceiling row in the same case."""
    rows = [Row("c", "bare", ops=100, seconds=1.0), Row("c", "ours", ops=50, seconds=1.0, ceiling="bare")]
    data = json.loads(report(rows, as_json=True))
    assert data[0]["ratio_to_ceiling"] is None
    assert data[1]["ratio_to_ceiling"] == pytest.approx(0.5)
    assert "0.500 of bare" in report(rows, as_json=False)


def test_measure_counts_calls():
    """measure() returns how many calls it timed, and a positive elapsed time."""
    calls = []
    ops, seconds = measure(lambda: calls.append(1), seconds=0.01)
    assert ops >= 1 and seconds > 0 and len(calls) >= ops
