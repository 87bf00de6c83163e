"""bench.population measures every side it names, for each task, and writes its rows.

A check of the harness on a tiny configuration (--quick), not of speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_population_bench_measures_each_side_of_each_task(tmp_path: Path) -> None:
    out = tmp_path / "population.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.population", "--quick", "--tasks",
         "digits-mlp,mnist-mlp", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    sides = {(row["task"], row["side"]) for row in rows}
    assert sides == {(task, side) for task in ("digits-mlp", "mnist-mlp")
                     for side in ("alone", "jobs2", "K=1", "K=2")}
    for row in rows:
        assert row["seconds_per_trial_epoch"] > 0 and row["versus_jobs2"] > 0, row
    assert "two at once" in proc.stdout and "population K=2" in proc.stdout
