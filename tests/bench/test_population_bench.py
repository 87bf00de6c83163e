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
         "digits-mlp,mnist-mlp", "--processes", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    sides = {(row["task"], row["side"]) for row in rows}
    assert sides == {(task, side) for task in ("digits-mlp", "mnist-mlp")
                     for side in ("alone", "at_once", "K=1", "K=2")}
    for row in rows:
        assert row["seconds_per_trial_epoch"] > 0 and row["versus_at_once"] > 0, row
        assert row["device"] == "cpu" and row["processes"] == 2
    assert "2 at once" in proc.stdout and "population K=2" in proc.stdout


def test_the_gpu_mode_says_plainly_where_there_is_no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the GPU mode would run")
    proc = subprocess.run([sys.executable, "-m", "bench.population", "--device", "cuda"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--device cuda: torch sees no CUDA device here" in proc.stderr


def test_the_gpu_targets_are_read_from_the_k64_row_of_mnist_mlp() -> None:
    from bench.population import _gpu_targets

    rows = [{"task": "mnist-mlp", "side": "K=64", "versus_alone": 25.0, "versus_at_once": 2.5},
            {"task": "fashion-mnist-mlp", "side": "K=64", "versus_alone": 1.0,
             "versus_at_once": 1.0}]
    assert _gpu_targets(rows) == [
        "target: K=64 on mnist-mlp versus_alone >= 20.0x: 25.00x, holds",
        "target: K=64 on mnist-mlp versus_at_once >= 3.0x: 2.50x, does NOT hold"]
