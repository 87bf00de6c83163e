"""1. Epoch throughput against the hand-written loop; 2. the training step against the hardware.

An epoch is what a trial pays per epoch on both sides: build the model and Adam, train once
over the training set, validate on the validation set.
"""

from __future__ import annotations

import time

from bench import handwritten
from bench.common import Row, Section, Settings, interleaved, summary
from bench.data import Loaded, linear_flops

TARGET_EPOCH_RATIO = 2.0  # at batch 128 on CPU
TARGET_MATMUL_SHARE = 0.70  # at batch >= 256 on CPU


def _opttune_epoch(loaded: Loaded, batch_size: int, seed: int) -> float:
    from tuner.config import TrialConfig
    from tuner.train import fit

    config = TrialConfig("adam", {"lr": 1e-3}, batch_size, 1)
    return fit(loaded.task, loaded.device_data, config, device="cpu", seed=seed)[-1].value


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
    """Achieved FLOP/s of whole epochs of opttune's loop over a large matmul's, same run."""
    section = Section("flops")
    n = 512 if settings.quick else 2048
    batch_sizes = (256,) if settings.quick else (128, 256, 512)
    model = loaded.task.build_model({})
    for bs in batch_sizes:
        step = linear_flops(model, 1)
        # Everything the epoch computes: training steps over the train set, one forward pass
        # over the validation set. The time includes everything else the loop does too.
        flops = step["train_step"] * loaded.n_train + step["forward"] * loaded.n_val
        rule = step["six_n_b"] * loaded.n_train + 2 * step["params"] * loaded.n_val
        mm: list[float] = []

        def matmul(mm: list[float] = mm) -> None:
            mm.append(matmul_gflops(n, 3))

        times = interleaved({"epoch": lambda bs=bs: _opttune_epoch(loaded, bs, 0) and None,
                             "matmul": matmul}, settings.reps)
        achieved = flops / min(times["epoch"]) / 1e9
        peak = max(mm)
        share = achieved / peak
        section.details[f"batch_{bs}"] = {
            "epoch": summary(times["epoch"]), "matmul_gflops": mm, "matmul_n": n,
            "epoch_gflop": flops / 1e9, "achieved_gflops": achieved,
            "achieved_gflops_6nb_rule": rule / min(times["epoch"]) / 1e9}
        section.rows.append(Row(
            "2 hardware", f"train step, batch {bs} (GFLOP/s vs {n}² matmul)", achieved, peak,
            "GFLOP/s", share, target=f">= {TARGET_MATMUL_SHARE:.0%}" if bs >= 256 else "",
            holds=share >= TARGET_MATMUL_SHARE if bs >= 256 else None,
            note=f"6·N·B rule: {rule / min(times['epoch']) / 1e9 / peak:.0%}"))
    return section
