"""bench.population measures every side it names, for each task, and writes its rows.

A check of the harness on a tiny configuration (--quick), not of speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


FLOOR_LINE = re.compile(r"^floor: .* \(([0-9]+) GFLOP/s, best of [0-9]+\); no population "
                        r"gains more than ([0-9.]+)x one at a time here$", re.MULTILINE)


def _quick_epoch_flops(task_name: str) -> float:
    """The FLOPs of one trial-epoch on the data `--quick` trains on (2,048 training samples at
    most, the default 512 validation samples), counted as the bench counts them."""
    from bench.population import BATCH_SIZE, _device_data, _epoch_flops

    task, data = _device_data(task_name, 2048, 512, "cpu")
    return _epoch_flops(task, data, BATCH_SIZE)


@pytest.mark.slow
def test_population_bench_measures_each_side_of_each_task(tmp_path: Path) -> None:
    """Guards the harness: every side of every task measured and written as a row, and the
    floor row computed as documented (FLOPs over the measured matmul rate) and printed."""
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
    # The floor is what the bench says it is: the trial-epoch's FLOPs (of the same data) at the
    # matmul rate it printed, and the gain it prints is one at a time over that floor. (Not
    # compared with the measured sides: two timings on a loaded machine prove no order.)
    floors = FLOOR_LINE.findall(proc.stdout)
    assert len(floors) == 2, proc.stdout
    for task, (gflops, gain) in zip(("digits-mlp", "mnist-mlp"), floors, strict=True):
        mine = {row["side"]: row for row in rows if row["task"] == task}
        rate = float(gflops) * 1e9  # printed to the GFLOP/s: within half of one
        assert rate > 0, proc.stdout
        flops = _quick_epoch_flops(task)
        assert mine["floor"]["seconds_per_trial_epoch"] == pytest.approx(
            flops / rate, rel=0.5e9 / rate + 1e-9), (task, flops, gflops)
        alone = mine["alone"]["seconds_per_trial_epoch"]
        assert mine["floor"]["versus_alone"] == pytest.approx(
            alone / mine["floor"]["seconds_per_trial_epoch"])
        assert gain == f"{mine['floor']['versus_alone']:.2f}"
    assert "2 at once" in proc.stdout and "population K=2 batched" in proc.stdout


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
