"""bench.liar runs its three arms end to end and writes what it measured.

A check of the harness on a tiny configuration, not of search quality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_liar_bench_runs_three_arms_on_equal_trials(tmp_path: Path) -> None:
    out = tmp_path / "liar.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.liar", "--seeds", "0", "--trials", "4", "--population",
         "2", "--epochs", "1", "--train-limit", "600", "--optimizers", "adam", "--out",
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"alone", "liar", "no-liar"}
    for arm, runs in result["runs"].items():
        run = runs["0"]
        assert len(run["log_lrs"]) == 4, arm  # every arm ran the same four trials' worth
        assert 0.1 < run["best_value"] <= 1.0
        assert result["summary"][arm]["lr_spread"] > 0  # two trials of a block never alike
    assert "lr spread per block of 2" in proc.stdout
