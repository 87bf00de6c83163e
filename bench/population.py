"""Population training against one trial at a time: seconds per trial-epoch, K = 1 … 16.

`python -m bench.population` trains K Adam trials of the Fashion-MNIST MLP (784-256-128-10,
batch 128, each its own lr and seed) as one stacked population (tuner.training.population)
and the same kind of trial alone with tuner.training.loop.fit, interleaved in one run, and
prints seconds per trial-epoch and their ratio for each K. Validation runs on a small slice
(--val-limit), so that the numbers are the training's. A shared machine makes absolute
times noisy: each side keeps its best of --reps, and only ratios measured side by side, in
the same run, mean anything. `--clock cpu` times the process's CPU seconds instead of the
wall clock: with one thread, that is what the work costs while other work waits its turn
for the cores (all threads' seconds summed with more).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.common import cores, interleaved, load


def _configs(k: int, epochs: int) -> list[Any]:
    from tuner.space.config import TrialConfig

    # lr spread over two decades, as a sampler would try them
    return [TrialConfig("adam", {"lr": 1e-4 * 100 ** (i / max(1, k - 1))}, 128, epochs)
            for i in range(k)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.population",
        description="Seconds per trial-epoch of a stacked population of K trials against "
                    "one trial at a time, in the same run.")
    parser.add_argument("--task", default="fashion-mnist-mlp")
    parser.add_argument("--ks", default="1,2,4,8,16", help="population sizes [%(default)s]")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions, best kept")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="training samples used [default: all]")
    parser.add_argument("--val-limit", type=int, default=512,
                        help="validation samples (small: the bench measures training)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--update", default="auto", help="auto, fused or batched")
    parser.add_argument("--forward", default="auto", help="auto, vmap or bmm")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock or process CPU seconds [%(default)s]")
    parser.add_argument("--quick", action="store_true",
                        help="4,096 samples, K 1,2,4, one repetition: checks the harness")
    args = parser.parse_args(argv)
    import torch

    from tasks.data import TaskData
    from tasks.registry import get_task
    from tuner.training.loop import DeviceData, fit
    from tuner.training.population import fit_population

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ks = [1, 2, 4] if args.quick else [int(k) for k in args.ks.split(",")]
    reps = 1 if args.quick else args.reps
    limit = 4096 if args.quick else args.train_limit
    task = get_task(args.task)
    full = task.read_data()
    data = TaskData(full.train_x[:limit], full.train_y[:limit], full.val_x[:args.val_limit],
                    full.val_y[:args.val_limit], full.test_x[:0], full.test_y[:0],
                    source=full.source)
    device_data = DeviceData.from_task_data(data, "cpu")
    print(f"{args.task}: {len(data.train_x)} training samples, batch 128, {args.epochs} "
          f"epoch(s), {torch.get_num_threads()} torch thread(s) on {cores()} core(s), load "
          f"{load():.1f}; update={args.update}, forward={args.forward}, {args.clock} clock")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"{'K':>3} {'population s':>13} {'one at a time s':>16} {'ratio':>6}   "
          f"(seconds per trial-epoch, best of {reps})")
    for k in ks:
        configs = _configs(k, args.epochs)

        def population(configs: list[Any] = configs, k: int = k) -> float:
            start = clock()
            members = fit_population(task, device_data, configs, device="cpu",
                                     seeds=list(range(k)), update=args.update,
                                     forward=args.forward)
            seconds = clock() - start
            assert all(m.stopped is None for m in members)
            return seconds

        def alone(configs: list[Any] = configs) -> float:
            start = clock()
            fit(task, device_data, configs[0], device="cpu", seed=0)
            return clock() - start

        times = interleaved({"population": population, "alone": alone}, reps)
        per_pop = min(times["population"]) / (k * args.epochs)
        per_alone = min(times["alone"]) / args.epochs
        print(f"{k:>3} {per_pop:>13.3f} {per_alone:>16.3f} {per_alone / per_pop:>5.2f}x",
              flush=True)
    print(f"load average at the end {load():.1f}: on a shared machine, trust the ratios only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
