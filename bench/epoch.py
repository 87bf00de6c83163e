"""1. Epoch throughput against the hand-written loop; 2. the training step against the hardware.

An epoch is what a trial pays per epoch on both sides: build the model and Adam, train once
over the training set, validate on the validation set.
"""

from __future__ import annotations

import time
from functools import partial

from bench import handwritten
from bench.common import Row, Section, Settings, interleaved, summary
from bench.data import Loaded, linear_flops

TARGET_EPOCH_RATIO = 2.0  # at batch 128 on CPU
TARGET_MATMUL_SHARE = 0.70  # at batch >= 256 on CPU


def _opttune_epoch(loaded: Loaded, batch_size: int, seed: int) -> float:
    from tuner.space.config import TrialConfig
    from tuner.training.loop import fit

    config = TrialConfig("adam", {"lr": 1e-3}, batch_size, 1)
    return fit(loaded.task, loaded.device_data, config, device="cpu", seed=seed)[-1].value


def _untimed_epoch(loaded: Loaded, batch_size: int) -> None:
    _opttune_epoch(loaded, batch_size, 0)


def epoch_throughput(loaded: Loaded, settings: Settings) -> Section:
    section = Section("epoch")
    for bs in settings.batch_sizes:
        scores: dict[str, float] = {}

        def ours(bs: int = bs, scores: dict[str, float] = scores) -> None:
            scores["opttune"] = _opttune_epoch(loaded, bs, settings.seed)

        def theirs(bs: int = bs, scores: dict[str, float] = scores) -> None:
            scores["handwritten"] = handwritten.one_epoch(loaded.task, loaded.data,
                                                          batch_size=bs, seed=settings.seed)

        times = interleaved({"opttune": ours, "handwritten": theirs}, settings.reps)
        best = {k: min(v) for k, v in times.items()}
        section.details[f"batch_{bs}"] = {k: summary(v) for k, v in times.items()} | {
            "val_acc": scores}
        ratio = best["handwritten"] / best["opttune"]
        target = bs == 128
        section.rows.append(Row(
            "1 epoch", f"epoch, batch {bs} (samples/s)", loaded.n_train / best["opttune"],
            loaded.n_train / best["handwritten"], "samples/s", ratio,
            target=f">= {TARGET_EPOCH_RATIO:g}x" if target else "",
            holds=ratio >= TARGET_EPOCH_RATIO if target else None))
    return section


def matmul_gflops(n: int, reps: int) -> float:
    """Best FLOP/s of an n×n by n×n float32 product on the CPU, in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up (thread pool, allocator)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def against_matmul(loaded: Loaded, settings: Settings) -> Section:
    """Achieved FLOP/s of opttune's training step over a large matmul's, same run.

    The step is timed as the loop runs it (fused Adam, index_select batches, a list of
    losses: bench.loop.StepRunner) in chunks of steps of about the matmul's duration,
    alternating with the matmul, best of each; a whole epoch (with its shuffle and validation)
    is reported too.
    """
    from bench.loop import StepRunner

    section = Section("flops")
    n = 512 if settings.quick else 2048
    batch_sizes = (256,) if settings.quick else (128, 256, 512)
    rounds = 2 if settings.quick else 10
    model = loaded.task.build_model({})
    for bs in batch_sizes:
        per_sample = linear_flops(model, 1)
        runner = StepRunner(loaded, batch_size=bs)
        steps = max(2, int(2e10 / (per_sample["train_step"] * bs)))  # ~20 GFLOP, like the matmul
        steps = min(steps, runner.steps) if not settings.quick else 3
        mm: list[float] = []

        def matmul(mm: list[float] = mm) -> None:
            mm.append(matmul_gflops(n, 1))

        times = interleaved({"step": partial(runner.chunk, steps), "matmul": matmul}, rounds)
        achieved = per_sample["train_step"] * bs / min(times["step"]) / 1e9
        rule = per_sample["six_n_b"] * bs / min(times["step"]) / 1e9
        peak = max(mm)
        epoch_s = min(interleaved({"epoch": partial(_untimed_epoch, loaded, bs)},
                                  1 if settings.quick else 2)["epoch"])
        epoch_flops = per_sample["train_step"] * loaded.n_train + \
            per_sample["forward"] * loaded.n_val
        share = achieved / peak
        section.details[f"batch_{bs}"] = {
            "step_s": summary(times["step"]), "steps_per_chunk": steps, "matmul_gflops": mm,
            "matmul_n": n, "achieved_gflops": achieved, "achieved_gflops_6nb_rule": rule,
            "epoch_s": epoch_s, "epoch_gflops": epoch_flops / epoch_s / 1e9}
        section.rows.append(Row(
            "2 hardware", f"train step, batch {bs} (GFLOP/s vs {n}² matmul)", achieved, peak,
            "GFLOP/s", share, target=f">= {TARGET_MATMUL_SHARE:.0%}" if bs >= 256 else "",
            holds=share >= TARGET_MATMUL_SHARE if bs >= 256 else None,
            note=f"6·N·B rule: {rule / peak:.0%}; whole epoch incl. validation: "
                 f"{epoch_flops / epoch_s / 1e9 / peak:.0%}"))
    return section
