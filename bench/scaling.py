"""5. Scaling: trial time against data size and model width, and trials side by side.

If the loop's fixed costs are small, an epoch's time grows as its FLOPs do: 4x the data,
4x the time. Side by side: on a CPU with C cores, C single-thread trials at once against one
C-thread trial after another (what `--jobs C` against `--jobs 1` does to the training).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench import tasks as bench_tasks
from bench.common import Row, Section, Settings, cores, interleaved, python, summary
from bench.data import Loaded, linear_flops
from bench.study import bench_env


def _epoch_seconds(task: Any, data: Any, batch_size: int, reps: int) -> list[float]:
    from tuner.space.config import TrialConfig
    from tuner.training.loop import fit

    config = TrialConfig("adam", {"lr": 1e-3}, batch_size, 1)

    def epoch() -> None:
        fit(task, data, config, device="cpu")

    return interleaved({"fit": epoch}, reps, warmup=False)["fit"]


def size_and_width(loaded: Loaded, settings: Settings) -> Section:
    from tuner.training.loop import DeviceData

    section = Section("scaling")
    bs = 128
    n = loaded.n_train
    sizes = [n // 4, n // 2, n]
    by_size = {}
    for size in sizes:
        part = DeviceData(loaded.device_data.train_x[:size], loaded.device_data.train_y[:size],
                          loaded.device_data.val_x, loaded.device_data.val_y)
        by_size[size] = min(_epoch_seconds(loaded.task, part, bs, settings.reps))
    widths = (128, 256, 512) if settings.quick else (128, 256, 512, 1024)
    by_width, flops = {}, {}
    inputs = loaded.data.train_x[0].numel()
    classes = int(loaded.data.train_y.max()) + 1
    for width in widths:
        task = bench_tasks.widened(loaded.task, width, inputs=inputs, classes=classes)
        flops[width] = linear_flops(task.build_model({}), 1)["train_step"]
        by_width[width] = min(_epoch_seconds(task, loaded.device_data, bs, settings.reps))
    section.details = {"batch_size": bs, "epoch_s_by_train_size": by_size,
                       "epoch_s_by_width": by_width, "train_step_flops_per_sample": flops}
    # The validation pass does not grow with the training set, so the FLOP ratio of the data
    # rows is a little under 4.
    time_ratio = by_size[n] / by_size[sizes[0]]
    section.rows.append(Row("5 scaling", f"epoch time x{n / sizes[0]:.0f} data (time ratio)",
                            time_ratio, n / sizes[0], "x", (n / sizes[0]) / time_ratio,
                            note="ratio > 1: grows slower than FLOPs (fixed costs)"))
    lo, hi = widths[0], widths[-1]
    section.rows.append(Row("5 scaling", f"epoch time width {lo}->{hi} (time ratio)",
                            by_width[hi] / by_width[lo], flops[hi] / flops[lo], "x",
                            (flops[hi] / flops[lo]) / (by_width[hi] / by_width[lo]),
                            note="reference: FLOP ratio"))
    return section


def _start(settings: Settings, threads: int, trials: int, epochs: int) -> subprocess.Popen[str]:
    env = bench_env(settings, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if not settings.quick:  # a third of the data: throughput ratios, not epochs, are measured
        env[bench_tasks.TRAIN_ENV] = "18000"
    return subprocess.Popen([python(), "-m", "bench.child", "trials", "--threads", str(threads),
                             "--trials", str(trials), "--epochs", str(epochs)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _together(settings: Settings, threads: list[int], trials: int, epochs: int) -> float:
    """Start one process per entry of `threads`, let them train at the same moment; the wall
    time until the last one is done."""
    import json

    from bench.child import RESULT

    procs = [_start(settings, t, trials, epochs) for t in threads]
    for proc in procs:
        assert proc.stdout is not None
        while proc.stdout.readline().strip() != "READY":
            if proc.poll() is not None:
                raise RuntimeError("a bench child died before it was ready")
    start = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    fit_times = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        line = [ln for ln in out.splitlines() if ln.startswith(RESULT)][-1]
        fit_times.append(json.loads(line[len(RESULT):])["fit_s"])
    wall = time.perf_counter() - start
    return max(wall, *fit_times)


def side_by_side(settings: Settings) -> Section:
    section = Section("parallel")
    c = cores()
    if c < 2:
        section.details["skipped"] = "one core"
        return section
    trials, epochs = 1, 1
    times = interleaved({
        "parallel": lambda: _together(settings, [1] * c, trials, epochs),
        "one_multi_thread": lambda: _together(settings, [c], trials * c, epochs),
        "one_single_thread": lambda: _together(settings, [1], trials, epochs),
    }, 1 if settings.quick else 2, warmup=False)
    best = {k: min(v) for k, v in times.items()}
    section.details = {k: summary(v) for k, v in times.items()} | {
        "cores": c, "trials_per_process": trials, "epochs": epochs}
    # Throughput in trials/s: c*trials in each of the first two, trials in the third.
    parallel = c * trials / best["parallel"]
    multi = c * trials / best["one_multi_thread"]
    single = trials / best["one_single_thread"]
    section.rows += [
        Row("5 scaling", f"{c} one-thread trials at once vs one {c}-thread trial (trials/s)",
            parallel, multi, "trials/s", parallel / multi),
        Row("5 scaling", f"one {c}-thread trial vs one 1-thread trial (trials/s)", multi, single,
            "trials/s", multi / single),
    ]
    return section
