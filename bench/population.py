"""Population training against one trial at a time and against two at once: trials per hour.

`python -m bench.population` trains K Adam trials (batch 128, each its own lr and seed) as
one stacked population (tuner.training.population) for each task, K = 1, 2, 4, 8, 16; the
same kind of trial alone with tuner.training.loop.fit (one at a time, all torch threads);
and two such trials at once in two processes of one thread each (what `--jobs 2` does on
two cores). All in one run, interleaved. It prints seconds per trial-epoch, trial-epochs per
hour, and the ratios against one at a time and against two at once.

Validation runs on a small slice (--val-limit), so that the numbers are the training's.
Each side keeps its best of --reps: only ratios measured side by side mean anything on a
shared machine. `--clock cpu` times the process's CPU seconds instead of the wall clock
(one-at-a-time and population sides only).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from typing import Any

from bench.common import cores, interleaved, load

TASKS = "mnist-mlp,fashion-mnist-mlp,fashion-mnist-cnn"


def _configs(k: int, epochs: int) -> list[Any]:
    from tuner.space.config import TrialConfig

    # lr spread over two decades, as a sampler would try them
    return [TrialConfig("adam", {"lr": 1e-4 * 100 ** (i / max(1, k - 1))}, 128, epochs)
            for i in range(k)]


def _device_data(task_name: str, train_limit: int | None, val_limit: int) -> tuple[Any, Any]:
    from bench.tasks import cut
    from tasks.registry import get_task
    from tuner.training.loop import DeviceData

    task = get_task(task_name)
    data = cut(task.read_data(), train_limit, val_limit)
    return task, DeviceData.from_task_data(data, "cpu")


def _one_of_two(task_name: str, train_limit: int | None, val_limit: int, epochs: int,
                seed: int, ready: Any, results: Any) -> None:
    """A `--jobs 2` process: one thread, its data read, then one trial when both are ready."""
    import torch

    from tuner.training.loop import fit

    torch.set_num_threads(1)
    task, data = _device_data(task_name, train_limit, val_limit)
    config = _configs(1, epochs)[0]
    fit(task, data, config, device="cpu", seed=seed)  # warm-up, untimed
    ready.wait()
    start = time.perf_counter()
    fit(task, data, config, device="cpu", seed=seed)
    results.put(time.perf_counter() - start)


def _two_at_once(task_name: str, train_limit: int | None, val_limit: int,
                 epochs: int) -> float:
    """Wall seconds for two one-thread processes to train one trial each, side by side."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(3), context.Queue()
    procs = [context.Process(target=_one_of_two, args=(task_name, train_limit, val_limit,
                                                       epochs, seed, ready, results))
             for seed in (0, 1)]
    for proc in procs:
        proc.start()
    ready.wait()
    seconds: list[float] = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    return max(seconds)


def _task_rows(task_name: str, args: argparse.Namespace, ks: list[int], reps: int,
               limit: int | None) -> list[dict[str, Any]]:
    from tuner.training.loop import fit
    from tuner.training.population import fit_population

    task, data = _device_data(task_name, limit, args.val_limit)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"\n{task_name}: {len(data.train_x)} training samples, batch 128, {args.epochs} "
          f"epoch(s); load {load():.1f}", flush=True)

    def alone() -> float:
        start = clock()
        fit(task, data, _configs(1, args.epochs)[0], device="cpu", seed=0)
        return clock() - start

    def two_at_once() -> float:
        return _two_at_once(task_name, limit, args.val_limit, args.epochs)

    sides: dict[str, Any] = {"alone": alone}
    if not args.no_jobs:
        sides["jobs2"] = two_at_once
    for k in ks:
        def population(k: int = k) -> float:
            start = clock()
            members = fit_population(task, data, _configs(k, args.epochs), device="cpu",
                                     seeds=list(range(k)), update=args.update,
                                     forward=args.forward)
            seconds = clock() - start
            assert all(m.stopped is None for m in members)
            return seconds

        sides[f"K={k}"] = population
    times = interleaved(sides, reps)
    per_alone = min(times["alone"]) / args.epochs
    per_jobs = min(times["jobs2"]) / (2 * args.epochs) if "jobs2" in times else None
    print(f"{'side':>16} {'s/trial-epoch':>14} {'trial-epochs/h':>15} {'x alone':>8} "
          f"{'x jobs 2':>9}   (best of {reps})")
    rows = []
    for name in times:
        per = min(times[name]) / (args.epochs * (2 if name == "jobs2" else
                                                 int(name[2:]) if name.startswith("K=") else 1))
        label = {"alone": "one at a time", "jobs2": "two at once"}.get(name, f"population {name}")
        versus_jobs = f"{per_jobs / per:>8.2f}x" if per_jobs else f"{'-':>9}"
        print(f"{label:>16} {per:>14.3f} {3600 / per:>15.0f} {per_alone / per:>7.2f}x "
              f"{versus_jobs}", flush=True)
        rows.append({"task": task_name, "side": name, "seconds_per_trial_epoch": per,
                     "versus_alone": per_alone / per,
                     "versus_jobs2": per_jobs / per if per_jobs else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.population", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=TASKS, help="comma list [%(default)s]")
    parser.add_argument("--ks", default="1,2,4,8,16", help="population sizes [%(default)s]")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions, best kept")
    parser.add_argument("--train-limit", type=int, default=12800,
                        help="training samples used [%(default)s; 0: all]")
    parser.add_argument("--val-limit", type=int, default=512,
                        help="validation samples (small: the bench measures training)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--update", default="auto", help="auto, fused or batched")
    parser.add_argument("--forward", default="auto", help="auto, vmap or bmm")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock or process CPU seconds [%(default)s]")
    parser.add_argument("--no-jobs", action="store_true", help="leave out two at once")
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="2,048 samples, K 1,2, one repetition: checks the harness")
    args = parser.parse_args(argv)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ks = [1, 2] if args.quick else [int(k) for k in args.ks.split(",")]
    reps = 1 if args.quick else args.reps
    limit = 2048 if args.quick else (args.train_limit or None)
    if args.clock == "cpu":
        args.no_jobs = True  # two processes' CPU seconds are not this process's
    print(f"{torch.get_num_threads()} torch thread(s) on {cores()} core(s); "
          f"update={args.update}, forward={args.forward}, {args.clock} clock")
    rows = [row for name in args.tasks.split(",")
            for row in _task_rows(name.strip(), args, ks, reps, limit)]
    if args.out:
        import json
        from pathlib import Path

        Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2)
                                  + "\n", encoding="utf-8")
    print(f"\nload average at the end {load():.1f}: on a shared machine, trust the ratios only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
