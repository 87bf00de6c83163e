"""The choices inside the training loop, each measured against its alternative.

Steps of the same model on the same batches, timed per step: the optimizer kernel (fused,
foreach, for-loop), how a batch is taken (index_select, ``x[idx]``, or a slice of a shuffled
copy made once per epoch), how the per-step loss is kept (a list, or an indexed write into a
tensor), and torch's thread count. What wins here is what tuner/train.py and tuner/optimizers.py do.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from bench.common import Row, Section, Settings, cores, interleaved, summary
from bench.data import Loaded


class StepRunner:
    """Training steps of one loop variant (Adam, lr 1e-3), kept alive so that variants can be
    timed in short alternating chunks: on a busy machine, the best chunk is the cost."""

    def __init__(self, loaded: Loaded, *, batch_size: int, implementation: str = "auto",
                 batches: str = "index_select", record: str = "list",
                 threads: int | None = None) -> None:
        import torch

        from tuner.space.config import TrialConfig
        from tuner.training import optimizers

        self.threads, self.bs, self.batches, self.record = threads, batch_size, batches, record
        torch.manual_seed(0)
        self.model = loaded.task.build_model({})
        self.opt = optimizers.build(TrialConfig("adam", {"lr": 1e-3}, batch_size, 1),
                                    self.model.parameters(), implementation=implementation)
        self.x, self.y = loaded.device_data.train_x, loaded.device_data.train_y
        self.steps = len(self.x) // batch_size
        self.perm = torch.randperm(len(self.x))
        self.copy_per_step = 0.0
        if batches == "copy":
            # The shuffled copy is made once per epoch: charge each step its share.
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                self.xs = torch.index_select(self.x, 0, self.perm)
                self.ys = torch.index_select(self.y, 0, self.perm)
                best = min(best, time.perf_counter() - start)
            self.copy_per_step = best / self.steps
        self.losses: Any = [] if record == "list" else torch.empty(self.steps)
        self.i = 0
        self.chunk(5)  # warm up

    def chunk(self, n: int) -> float:
        """Run `n` steps; seconds per step."""
        import torch

        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            for _ in range(n):
                i = self.i % self.steps
                self.i += 1
                lo, hi = i * self.bs, (i + 1) * self.bs
                if self.batches == "copy":
                    xb, yb = self.xs[lo:hi], self.ys[lo:hi]
                elif self.batches == "index_select":
                    idx = self.perm[lo:hi]
                    xb = torch.index_select(self.x, 0, idx)
                    yb = torch.index_select(self.y, 0, idx)
                else:
                    idx = self.perm[lo:hi]
                    xb, yb = self.x[idx], self.y[idx]
                loss = torch.nn.functional.cross_entropy(self.model(xb), yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if self.record == "list":
                    self.losses.append(loss.detach())
                else:
                    self.losses[i] = loss.detach()
            if self.record == "list":  # the loop stacks what it kept, once per epoch
                float(torch.stack(self.losses).sum())
                self.losses.clear()
            return (time.perf_counter() - start) / n + self.copy_per_step
        finally:
            torch.set_num_threads(before)


def loop_choices(loaded: Loaded, settings: Settings) -> Section:
    section = Section("choices")
    chunk, rounds = (5, 2) if settings.quick else (20, 12)  # steps per timing, alternations
    batch_sizes = (128,) if settings.quick else (64, 128, 256)
    all_cores = cores()
    comparisons: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("Adam: fused vs foreach kernel", {"implementation": "fused"},
         {"implementation": "foreach"}),
        ("Adam: fused vs for-loop (torch's CPU default)", {"implementation": "fused"},
         {"implementation": "for-loop"}),
        ("batches: index_select vs x[idx]", {"batches": "index_select"}, {"batches": "index"}),
        ("batches: index_select vs slices of a shuffled copy", {"batches": "index_select"},
         {"batches": "copy"}),
        ("losses: list + stack vs indexed write", {"record": "list"}, {"record": "index"}),
    ]
    if all_cores > 1:
        comparisons.append((f"threads: {all_cores} vs 1", {"threads": all_cores},
                            {"threads": 1}))
    for bs in batch_sizes:
        for label, ours, theirs in comparisons:
            chosen = StepRunner(loaded, batch_size=bs, **ours)
            other = StepRunner(loaded, batch_size=bs, **theirs)
            times = interleaved({"chosen": partial(chosen.chunk, chunk),
                                 "alternative": partial(other.chunk, chunk)}, rounds,
                                warmup=False)
            best = {k: min(v) for k, v in times.items()}
            section.details[f"{label}, batch {bs}"] = {k: summary(v) for k, v in times.items()}
            section.rows.append(Row("loop", f"{label}, batch {bs} (ms/step)",
                                    best["chosen"] * 1e3, best["alternative"] * 1e3, "ms/step",
                                    best["alternative"] / best["chosen"]))
    return section
