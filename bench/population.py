"""Population training against one trial at a time and against several at once: trials per
hour, on the CPU or on a GPU.

`python -m bench.population` trains K Adam trials (batch 128, each its own lr and seed) as
one stacked population (tuner.training.population) for each task, K = 1, 2, 4, 8, 16; the
same kind of trial alone with tuner.training.loop.fit (one at a time, all torch threads);
and N such trials at once in N processes started together: on the CPU one process of one
thread per core (what `--jobs 2` does on two cores), on a GPU four processes on the one
device (what `--trials-per-device 4` does). All in one run, interleaved. It prints seconds
per trial-epoch, trial-epochs per hour, and the ratios against one at a time and against
the processes at once.

`--device cuda` is the GPU mode, one short script for any CUDA machine: K = 1, 8, 64, 256
on mnist-mlp and fashion-mnist-mlp against one at a time and `--trials-per-device 4`, with
the GPU targets checked (K=64 on mnist-mlp: >= 20x one at a time, >= 3x four per device).
There each K is timed twice, with the update `auto` takes (torch's fused kernel, launched
once per member) and with the batched rules (a fixed number of launches for any K), so
that one run shows which the auto choice should take on a GPU.

On the CPU (wall clock) it also prints the floor: the least time a trial-epoch could take
here, its matrix products alone (counted by torch's FLOP counter on one real step) at the
rate of a 2048² matmul measured in the same run, with every other cost gone. One at a time
over that floor is the most any population, of any size, can gain on this machine; a target
above it cannot hold here, and the CPU target line says so.

`--families adam,muon` times each family with a stacked rule the same way (each family's
trials against its own one at a time and its own processes at once): the Muon rows ("K=8
muon") measure its Newton-Schulz iteration batched over the members' hidden matrices
(bfloat16 batched matrix products), against torch's Muon on one trial at a time. Muon's
trials spread their lr over its family's range, its other settings at their defaults.

Validation runs on a small slice (--val-limit), so that the numbers are the training's.
Each side keeps its best of --reps: only ratios measured side by side mean anything on a
shared machine. `--clock cpu` times the process's CPU seconds instead of the wall clock
(one-at-a-time and population sides only, on the CPU).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from typing import Any

from bench.common import cores, interleaved, load

TASKS = "mnist-mlp,fashion-mnist-mlp,fashion-mnist-cnn"
GPU_TASKS = "mnist-mlp,fashion-mnist-mlp"
BATCH_SIZE = 128
MATMUL_N = 2048  # the floor's matmul: n×n by n×n, float32


def _configs(k: int, epochs: int, family: str = "adam") -> list[Any]:
    from tuner.space.config import TrialConfig
    from tuner.space.families import FAMILIES

    if family == "adam":
        # lr spread over two decades, as a sampler would try them
        return [TrialConfig("adam", {"lr": 1e-4 * 100 ** (i / max(1, k - 1))}, BATCH_SIZE,
                            epochs)
                for i in range(k)]
    # Another family: lr over its range, its other hyperparameters at their defaults.
    params = {p.name: p for p in FAMILIES[family].params}
    low, high = params["lr"].low, params["lr"].high
    defaults = {name: p.default for name, p in params.items()}
    return [TrialConfig(family, {**defaults, "lr": low * (high / low) ** (i / max(1, k - 1))},
                        BATCH_SIZE, epochs)
            for i in range(k)]


def _unstackable(family: str) -> str | None:
    """Why `family` cannot be timed as a population, or None."""
    from tuner.space.families import FAMILIES
    from tuner.training.population import group_configs

    if family not in FAMILIES:
        return f"unknown family {family!r}; known: {', '.join(FAMILIES)}"
    if "lr" not in {p.name for p in FAMILIES[family].params}:
        return f"{family} has no lr to spread over its members"
    alone = group_configs(_configs(2, 1, family)).alone
    return alone.get(0)


def _device_data(task_name: str, train_limit: int | None, val_limit: int,
                 device: str) -> tuple[Any, Any]:
    from bench.tasks import cut
    from tasks.registry import get_task
    from tuner.training.loop import DeviceData

    task = get_task(task_name)
    data = cut(task.read_data(), train_limit, val_limit)
    return task, DeviceData.from_task_data(data, device)


def _synced(device: str) -> None:
    """Wait for the device's queued work, so that the clock reads what it did."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _one_of_many(task_name: str, train_limit: int | None, val_limit: int, epochs: int,
                 device: str, seed: int, ready: Any, results: Any,
                 family: str = "adam") -> None:
    """One of the processes at once: its data read and a warm-up trial, then one timed
    trial when all are ready (on the CPU with one thread, as `--jobs` gives each)."""
    import torch

    from tuner.training.loop import fit

    if device == "cpu":
        torch.set_num_threads(1)
    task, data = _device_data(task_name, train_limit, val_limit, device)
    config = _configs(1, epochs, family)[0]
    fit(task, data, config, device=device, seed=seed)  # warm-up, untimed
    _synced(device)
    ready.wait()
    start = time.perf_counter()
    fit(task, data, config, device=device, seed=seed)
    _synced(device)
    results.put(time.perf_counter() - start)


def _at_once(task_name: str, train_limit: int | None, val_limit: int, epochs: int,
             device: str, processes: int, family: str = "adam") -> float:
    """Wall seconds for `processes` processes to train one trial each, side by side."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes + 1), context.Queue()
    procs = [context.Process(target=_one_of_many, args=(task_name, train_limit, val_limit,
                                                        epochs, device, seed, ready, results,
                                                        family))
             for seed in range(processes)]
    for proc in procs:
        proc.start()
    ready.wait()
    seconds: list[float] = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    return max(seconds)


def _epoch_flops(task: Any, data: Any, batch_size: int) -> float:
    """FLOPs of one trial-epoch: a real training step of the task's model on `batch_size`
    samples (forward, backward), counted by torch, times the steps; plus validation's
    forward. The data needs no gradient, as in training."""
    import math

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.losses import loss_function

    model = task.build_model({}).to(data.train_x.device)
    loss_fn = loss_function(task.loss)
    x, y = data.train_x[:batch_size], data.train_y[:batch_size]
    with FlopCounterMode(display=False) as step:
        loss_fn(model(x), y).backward()  # type: ignore[no-untyped-call]
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model(data.val_x[:1])
    steps = math.ceil(len(data.train_x) / batch_size)
    return float(step.get_total_flops() * steps + forward.get_total_flops() * len(data.val_x))


def _task_rows(task_name: str, args: argparse.Namespace, ks: list[int], reps: int,
               limit: int | None) -> list[dict[str, Any]]:
    from bench.epoch import matmul_gflops
    from tuner.training.loop import fit
    from tuner.training.population import fit_population

    device = args.device
    task, data = _device_data(task_name, limit, args.val_limit, device)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"\n{task_name}: {len(data.train_x)} training samples, batch {BATCH_SIZE}, {args.epochs} "
          f"epoch(s) on {device}; load {load():.1f}", flush=True)

    families = args.families
    gflops: list[float] = []

    def matmul() -> float:
        gflops.append(matmul_gflops(MATMUL_N, 1))
        return 0.0

    sides: dict[str, Any] = {}
    trials: dict[str, int] = {}
    family_of: dict[str, str] = {}
    for family in families:
        def alone(family: str = family) -> float:
            start = clock()
            fit(task, data, _configs(1, args.epochs, family)[0], device=device, seed=0)
            _synced(device)
            return clock() - start

        def at_once(family: str = family) -> float:
            return _at_once(task_name, limit, args.val_limit, args.epochs, device,
                            args.processes, family)

        suffix = "" if family == families[0] else f" {family}"
        sides["alone" + suffix], trials["alone" + suffix] = alone, 1
        if args.processes > 1:
            sides["at_once" + suffix], trials["at_once" + suffix] = at_once, args.processes
        family_of["alone" + suffix] = family_of["at_once" + suffix] = family
    # Not on a GPU, whose small steps are bound by kernel launches; nor in CPU seconds, which
    # count both threads of the matmul.
    floor = not device.startswith("cuda") and args.clock == "wall"
    if floor:
        sides["matmul"] = matmul
    for family in families:
        for k in ks:
            for update in args.updates:
                def population(k: int = k, update: str = update, family: str = family
                               ) -> float:
                    start = clock()
                    members = fit_population(task, data, _configs(k, args.epochs, family),
                                             device=device, seeds=list(range(k)),
                                             update=update, forward=args.forward)
                    _synced(device)
                    seconds = clock() - start
                    assert all(m.stopped is None for m in members)
                    return seconds

                name = _side(k, update, args.updates, family, families)
                sides[name], trials[name], family_of[name] = population, k, family
    times = interleaved(sides, reps)
    times.pop("matmul", None)
    n = args.processes
    per = {name: min(times[name]) / (args.epochs * trials[name]) for name in times}
    if floor:
        peak = max(gflops)
        per["floor"] = _epoch_flops(task, data, BATCH_SIZE) / (peak * 1e9)
        family_of["floor"] = families[0]  # the matrix products of any family's step

    def own(side: str, name: str) -> float | None:
        """`side` ("alone", "at_once") of the family that `name` measured."""
        family = family_of[name]
        return per.get(side if family == families[0] else f"{side} {family}")

    print(f"{'side':>24} {'s/trial-epoch':>14} {'trial-epochs/h':>15} {'x alone':>8} "
          f"{f'x {n} at once':>12}   (best of {reps})")
    rows = []
    for name, seconds in per.items():
        family = family_of[name]
        suffix = "" if family == families[0] else f" ({family})"
        label = {"alone": "one at a time", "at_once": f"{n} at once",
                 "floor": "floor"}.get(name.split()[0], f"population {name}")
        label += suffix if name.split()[0] in ("alone", "at_once") else ""
        per_alone, per_at_once = own("alone", name), own("at_once", name)
        assert per_alone is not None
        versus = f"{per_at_once / seconds:>11.2f}x" if per_at_once else f"{'-':>12}"
        print(f"{label:>24} {seconds:>14.4f} {3600 / seconds:>15.0f} "
              f"{per_alone / seconds:>7.2f}x {versus}", flush=True)
        rows.append({"task": task_name, "side": name, "family": family, "device": device,
                     "processes": n, "seconds_per_trial_epoch": seconds,
                     "versus_alone": per_alone / seconds,
                     "versus_at_once": per_at_once / seconds if per_at_once else None})
    if floor:
        print(f"floor: the trial-epoch's matrix products alone at the rate of a {MATMUL_N}² "
              f"matmul ({peak:.0f} GFLOP/s, best of {len(gflops)}); no population gains more "
              f"than {per['alone'] / per['floor']:.2f}x one at a time here", flush=True)
    return rows


def _side(k: int, update: str, updates: list[str], family: str = "adam",
          families: tuple[str, ...] | list[str] = ("adam",)) -> str:
    """A population side's name: "K=8" for the first update kind and family, "K=8 batched"
    for other update kinds, "K=8 muon" (and "K=8 batched muon") for other families."""
    name = f"K={k}" if update == updates[0] else f"K={k} {update}"
    return name if family == families[0] else f"{name} {family}"


def _target_line(row: dict[str, Any], key: str, target: float) -> str:
    """What `row` measured against a target on `key`, and whether it holds."""
    got = row[key]
    return (f"target: {row['side']} on {row['task']} {key} >= {target}x: {got:.2f}x, "
            f"{'holds' if got >= target else 'does NOT hold'}")


# The CPU target (issue: populations): K=8 on fashion-mnist-mlp, >= 2x one at a time, for
# the bench's Adam trials.
CPU_TARGET = {"task": "fashion-mnist-mlp", "side": "K=8", "versus_alone": 2.0}
TARGET_FAMILY = "adam"


def _cpu_target(rows: list[dict[str, Any]]) -> list[str]:
    """The CPU target's line: what was measured, whether it holds, and whether it could
    (the floor row's ratio is the most any population gains here)."""
    mine = {row["side"]: row for row in rows if row["task"] == CPU_TARGET["task"]
            and row.get("family", TARGET_FAMILY) == TARGET_FAMILY}
    if CPU_TARGET["side"] not in mine:
        return []
    target = CPU_TARGET["versus_alone"]
    line = _target_line(mine[CPU_TARGET["side"]], "versus_alone", target)
    if "floor" in mine:
        most = mine["floor"]["versus_alone"]
        line += (f"; the floor allows at most {most:.2f}x here"
                 + (", so it cannot hold on this machine" if most < target else ""))
    return [line]


# The GPU targets (issue: populations): K=64 on mnist-mlp against one at a time and against
# four trials per device.
GPU_TARGETS = {"task": "mnist-mlp", "side": "K=64", "versus_alone": 20.0,
               "versus_at_once": 3.0}


def _gpu_targets(rows: list[dict[str, Any]]) -> list[str]:
    """One line per GPU target: what was measured, and whether it holds."""
    lines = []
    for row in rows:
        # "K=64" and, where other update kinds were timed, "K=64 batched" …
        if row["task"] == GPU_TARGETS["task"] and \
                row["side"].split()[0] == GPU_TARGETS["side"] and \
                row.get("family", TARGET_FAMILY) == TARGET_FAMILY:
            for key in ("versus_alone", "versus_at_once"):
                if row[key] is not None:
                    lines.append(_target_line(row, key, GPU_TARGETS[key]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.population", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda[:N] for the GPU mode [%(default)s]")
    parser.add_argument("--tasks", default=None,
                        help=f"comma list [{TASKS}; on a GPU: {GPU_TASKS}]")
    parser.add_argument("--ks", default=None,
                        help="population sizes [1,2,4,8,16; on a GPU: 1,8,64,256]")
    parser.add_argument("--processes", type=int, default=None,
                        help="trials at once in as many processes [one per core; on a GPU: "
                             "4, as --trials-per-device 4]; 1 leaves that side out")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions, best kept")
    parser.add_argument("--train-limit", type=int, default=12800,
                        help="training samples used [%(default)s; 0: all]")
    parser.add_argument("--val-limit", type=int, default=512,
                        help="validation samples (small: the bench measures training)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--update", default=None,
                        help="auto, fused or batched, or a comma list: each K is timed with "
                             "each [auto; on a GPU: auto,batched, to see which update the "
                             "auto choice should take there]")
    parser.add_argument("--forward", default="auto", help="auto, vmap or bmm")
    parser.add_argument("--families", default="adam",
                        help="comma list of optimizer families with a stacked rule, each "
                             "timed on its own (e.g. adam,muon: the Muon rows) [%(default)s]")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock or process CPU seconds [%(default)s]")
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="2,048 samples, K 1,2 (GPU: 1,8), one repetition: checks the "
                             "harness")
    args = parser.parse_args(argv)
    import torch

    from tuner.training.population import UPDATES

    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.tasks = args.tasks or (GPU_TASKS if gpu else TASKS)
    ks_text = args.ks or ("1,8,64,256" if gpu else "1,2,4,8,16")
    ks = ([1, 8] if gpu else [1, 2]) if args.quick else [int(k) for k in ks_text.split(",")]
    reps = 1 if args.quick else args.reps
    limit = 2048 if args.quick else (args.train_limit or None)
    if args.processes is None:
        args.processes = 4 if gpu else cores()
    args.updates = (args.update or ("auto,batched" if gpu else "auto")).split(",")
    for update in args.updates:
        if update not in UPDATES:
            parser.error(f"--update takes {', '.join(UPDATES)} or a comma list of them, but "
                         f"got {update!r}")
    args.families = args.families.split(",")
    for family in args.families:
        reason = _unstackable(family)
        if reason is not None:
            parser.error(f"--families: {family} cannot be timed as a population: {reason}")
    if args.clock == "cpu":
        if gpu:
            parser.error("--clock cpu times the CPU; a GPU's work is timed by the wall clock")
        args.processes = 1  # several processes' CPU seconds are not this process's
    where = torch.cuda.get_device_name(args.device) if gpu else f"{cores()} core(s)"
    print(f"{torch.get_num_threads()} torch thread(s), {where}; "
          f"update={','.join(args.updates)}, forward={args.forward}, {args.clock} clock, "
          f"families {','.join(args.families)}")
    rows = [row for name in args.tasks.split(",")
            for row in _task_rows(name.strip(), args, ks, reps, limit)]
    for line in (_gpu_targets(rows) if gpu else _cpu_target(rows)):
        print(line)
    if args.out:
        import json
        from pathlib import Path

        Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2)
                                  + "\n", encoding="utf-8")
    print(f"\nload average at the end {load():.1f}: on a shared machine, trust the ratios only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
