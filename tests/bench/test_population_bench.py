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
         "digits-mlp,mnist-mlp", "--processes", "2", "--update", "auto,batched", "--out",
         str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    sides = {(row["task"], row["side"]) for row in rows}
    assert sides == {(task, side) for task in ("digits-mlp", "mnist-mlp")
                     for side in ("alone", "at_once", "K=1", "K=2", "K=1 batched",
                                  "K=2 batched", "floor")}
    for row in rows:
        assert row["seconds_per_trial_epoch"] > 0 and row["versus_at_once"] > 0, row
        assert row["device"] == "cpu" and row["processes"] == 2
    # The floor (the matrix products alone at a large matmul's rate) is below any side.
    for task in ("digits-mlp", "mnist-mlp"):
        mine = {row["side"]: row["seconds_per_trial_epoch"] for row in rows if row["task"] == task}
        assert mine["floor"] < min(v for side, v in mine.items() if side != "floor"), mine
    assert "2 at once" in proc.stdout and "population K=2 batched" in proc.stdout
    assert "no population gains more than" in proc.stdout


def test_the_gpu_mode_says_plainly_where_there_is_no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the GPU mode would run")
    proc = subprocess.run([sys.executable, "-m", "bench.population", "--device", "cuda"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--device cuda: torch sees no CUDA device here" in proc.stderr


def test_the_gpu_targets_are_read_from_the_k64_rows_of_mnist_mlp() -> None:
    from bench.population import _gpu_targets

    rows = [{"task": "mnist-mlp", "side": "K=64", "versus_alone": 25.0, "versus_at_once": 2.5},
            {"task": "mnist-mlp", "side": "K=64 batched", "versus_alone": 30.0,
             "versus_at_once": 3.5},
            {"task": "mnist-mlp", "side": "K=8", "versus_alone": 5.0, "versus_at_once": 1.0},
            {"task": "fashion-mnist-mlp", "side": "K=64", "versus_alone": 1.0,
             "versus_at_once": 1.0}]
    assert _gpu_targets(rows) == [
        "target: K=64 on mnist-mlp versus_alone >= 20.0x: 25.00x, holds",
        "target: K=64 on mnist-mlp versus_at_once >= 3.0x: 2.50x, does NOT hold",
        "target: K=64 batched on mnist-mlp versus_alone >= 20.0x: 30.00x, holds",
        "target: K=64 batched on mnist-mlp versus_at_once >= 3.0x: 3.50x, holds"]


def test_an_unknown_update_kind_is_refused_before_anything_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.population", "--update", "auto,fast"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--update takes auto, fused, batched or a comma list of them, but got 'fast'" \
        in proc.stderr
    assert "s/trial-epoch" not in proc.stdout


def test_the_floor_counts_a_trial_epochs_matrix_products() -> None:
    """The floor's FLOPs are an MLP's Linear layers, forward and backward (no gradient for
    the data), per training step times the steps, plus validation's forwards."""
    from bench.data import linear_flops
    from bench.population import _epoch_flops
    from tasks.registry import get_task
    from tuner.training.loop import DeviceData

    task = get_task("digits-mlp")
    full = task.read_data()
    data = DeviceData(full.train_x[:300], full.train_y[:300], full.val_x[:50], full.val_y[:50])
    per_sample = linear_flops(task.build_model({}), 1)
    assert per_sample["train_step"] > 0
    steps = 3  # 300 samples in batches of 128: 128, 128, 44
    expected = per_sample["train_step"] * 128 * steps + per_sample["forward"] * 50
    assert _epoch_flops(task, data, 128) == expected


def test_the_cpu_target_says_when_the_floor_rules_it_out() -> None:
    from bench.population import _cpu_target

    def rows(k8: float, floor: float) -> list[dict[str, object]]:
        return [{"task": "fashion-mnist-mlp", "side": side, "versus_alone": ratio}
                for side, ratio in (("alone", 1.0), ("K=8", k8), ("floor", floor))]

    assert _cpu_target(rows(2.1, 3.0)) == [
        "target: K=8 on fashion-mnist-mlp versus_alone >= 2.0x: 2.10x, holds; the floor "
        "allows at most 3.00x here"]
    assert _cpu_target(rows(1.4, 1.8)) == [
        "target: K=8 on fashion-mnist-mlp versus_alone >= 2.0x: 1.40x, does NOT hold; the "
        "floor allows at most 1.80x here, so it cannot hold on this machine"]
    assert _cpu_target([{"task": "mnist-mlp", "side": "K=8", "versus_alone": 3.0}]) == []
