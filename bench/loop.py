"""The choices inside the training loop, each measured against its alternative.

Steps of the same model on the same batches, timed per step: the optimizer kernel (fused,
foreach, for-loop), how a batch is taken (a slice of a per-epoch shuffled copy, or a gather
per step), how the per-step loss is kept (a list, or an indexed write into a tensor), and
torch's thread count. What wins here is what tuner/train.py and tuner/optimizers.py do.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Row, Section, Settings, cores, interleaved, summary
from bench.data import Loaded


def step_seconds(loaded: Loaded, *, batch_size: int, steps: int, implementation: str = "auto",
                 batches: str = "copy", record: str = "list", threads: int | None = None) -> float:
    """Seconds per training step (Adam, lr 1e-3), after a few warm-up steps."""
    import torch

    from tuner import optimizers
    from tuner.config import TrialConfig

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = loaded.task.build_model({})
        opt = optimizers.build(TrialConfig("adam", {"lr": 1e-3}, batch_size, 1),
                               model.parameters(), implementation=implementation)
        x, y = loaded.device_data.train_x, loaded.device_data.train_y
        n = len(x)
        steps = min(steps, n // batch_size)
        perm = torch.randperm(n)
        copy_start = time.perf_counter()
        xs, ys = (x[perm], y[perm]) if batches == "copy" else (x, y)
        # The shuffled copy is made once per epoch: charge each step its share.
        copy_per_step = (time.perf_counter() - copy_start) * batch_size / n
        losses: Any = [] if record == "list" else torch.empty(steps)
        warm = 5
        start = 0.0
        for step in range(steps + warm):
            if step == warm:
                start = time.perf_counter()
            i = step % steps
            lo, hi = i * batch_size, (i + 1) * batch_size
            if batches == "copy":
                xb, yb = xs[lo:hi], ys[lo:hi]
            else:
                idx = perm[lo:hi]
                xb, yb = x[idx], y[idx]
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if record == "list":
                losses.append(loss.detach())
            else:
                losses[i] = loss.detach()
        float(torch.stack(losses).sum() if record == "list" else losses.sum())
        return (time.perf_counter() - start) / steps + copy_per_step
    finally:
        torch.set_num_threads(before)


def loop_choices(loaded: Loaded, settings: Settings) -> Section:
    import torch

    section = Section("choices")
    steps = 20 if settings.quick else 150
    batch_sizes = (128,) if settings.quick else (64, 128, 256)
    default_threads = torch.get_num_threads()
    comparisons: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("Adam: fused vs foreach kernel", {"implementation": "fused"},
         {"implementation": "foreach"}),
        ("Adam: fused vs for-loop (torch's CPU default)", {"implementation": "fused"},
         {"implementation": "for-loop"}),
        ("batches: slice of shuffled copy vs gather", {"batches": "copy"},
         {"batches": "gather"}),
        ("losses: list + stack vs indexed write", {"record": "list"}, {"record": "index"}),
    ]
    if cores() > 1:
        comparisons.append((f"threads: {default_threads} vs 1", {"threads": default_threads},
                            {"threads": 1}))
    for bs in batch_sizes:
        for label, ours, theirs in comparisons:
            times = interleaved({
                "chosen": lambda o=ours, b=bs: step_seconds(loaded, batch_size=b, steps=steps, **o),
                "alternative": lambda t=theirs, b=bs: step_seconds(loaded, batch_size=b,
                                                                   steps=steps, **t),
            }, settings.reps)
            best = {k: min(v) for k, v in times.items()}
            section.details[f"{label}, batch {bs}"] = {k: summary(v) for k, v in times.items()}
            section.rows.append(Row("loop", f"{label}, batch {bs} (ms/step)",
                                    best["chosen"] * 1e3, best["alternative"] * 1e3, "ms/step",
                                    best["alternative"] / best["chosen"]))
    return section
