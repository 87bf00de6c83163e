"""Asking K trials at a time: does a population cost search quality at equal trial counts?

With `--population K` the sampler proposes K trials before any of them reports. TPE then
runs with its constant liar (it counts the running trials as bad results near their
parameters), so that it does not propose K copies of one idea. Three arms, each the same
search with the same seeds and trial count:

- ``alone``: one trial at a time (``--population 1``), TPE as every search runs it;
- ``liar``: ``--population K``, as opttune runs it (TPE with the constant liar);
- ``no-liar``: ``--population K`` with the liar switched off (what the liar buys).

For each arm it prints the best validation accuracy over the seeds (median, min-max) and how
far apart the learning rates of each block of K trials are (the median over blocks of the
standard deviation of log10 lr: K copies of one idea would be 0). Runs go two at a time, one
thread each: the measure is quality, not time.

    python -m bench.liar                      # the Fashion-MNIST MLP on 5,000 samples, 10 seeds
    python -m bench.liar --seeds 0,1 --trials 16 --population 4 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import tasks
from bench.common import child_result, one_thread_child

ARMS = ("alone", "liar", "no-liar")
RESULT = "LIAR-RESULT "


def _search(arm: str, seed: int, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from tuner.search import sampling
    from tuner.search.runner import search

    if arm == "no-liar":  # the ablation: the same population search, TPE without its liar
        base = sampling._base_sampler

        def no_liar(name: str, seed: int | None, *, constant_liar: bool = False) -> Any:
            return base(name, seed, constant_liar=False)

        sampling._base_sampler = no_liar
    os.environ[tasks.BASE_ENV] = args.task
    os.environ[tasks.TRAIN_ENV] = str(args.train_limit)
    result = search(task="bench.tasks:LIMITED", study="liar",
                    optimizers=args.optimizers.split(","), n_trials=args.trials,
                    epochs=args.epochs, seed=seed, defaults_first=False, pruner="none",
                    population=1 if arm == "alone" else args.population, device="cpu",
                    home=home)
    trials = sorted(result.all_trials, key=lambda t: t.number)
    values = [t.value for t in trials if t.state == "COMPLETE" and t.value is not None]
    return {"best_value": max(values) if values else None,
            "log_lrs": [math.log10(float(t.config["lr"])) for t in trials]}


def _spread(log_lrs: list[float], k: int) -> float:
    """Median over consecutive blocks of k trials of their log10-lr standard deviation."""
    blocks = [log_lrs[i:i + k] for i in range(0, len(log_lrs) - k + 1, k)]
    return statistics.median(statistics.pstdev(b) for b in blocks)


def _start(arm: str, seed: int, args: argparse.Namespace, root: Path) -> subprocess.Popen[str]:
    home = root / f"{arm}-{seed}"
    home.mkdir()
    command = [sys.executable, "-m", "bench.liar", "--arm", arm, "--seed", str(seed),
               "--home", str(home), "--trials", str(args.trials), "--epochs", str(args.epochs),
               "--population", str(args.population), "--optimizers", args.optimizers,
               "--train-limit", str(args.train_limit), "--task", args.task]
    return one_thread_child(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.liar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="comma list of seeds")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--task", default="fashion-mnist-mlp")
    parser.add_argument("--optimizers", default="sgd,momentum,adam,adamw")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--parallel", type=int, default=2, help="runs at once [2]")
    parser.add_argument("--out", type=Path, default=None, help="write the runs as JSON")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        import torch

        torch.set_num_threads(1)
        run = _search(args.arm, args.seed, args, Path(args.home))
        print(RESULT + json.dumps(run), flush=True)
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    todo = [(arm, seed) for seed in seeds for arm in ARMS]
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
    root = Path(tempfile.mkdtemp(prefix="opttune-liar-"))
    print(f"{args.trials} trials of {args.epochs} epoch(s) of {args.task} on {args.train_limit} "
          f"training samples, {args.optimizers}; population {args.population}; {len(seeds)} "
          f"seeds", flush=True)
    try:
        for i in range(0, len(todo), args.parallel):
            batch = [(arm, seed, _start(arm, seed, args, root))
                     for arm, seed in todo[i:i + args.parallel]]
            for arm, seed, proc in batch:
                runs[arm][seed] = child_result(f"{arm} (seed {seed})", proc, RESULT)
                print(f"seed {seed} {arm:>8}: best {runs[arm][seed]['best_value']:.4f}",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {}
    print(f"{'arm':>8}  {'median':>7}  {'min':>7}  {'max':>7}  lr spread per block of "
          f"{args.population} (median std of log10 lr)")
    for arm in ARMS:
        best = [runs[arm][s]["best_value"] for s in seeds]
        spread = statistics.median(_spread(runs[arm][s]["log_lrs"], args.population)
                                   for s in seeds)
        summary[arm] = {"median": statistics.median(best), "min": min(best), "max": max(best),
                        "values": best, "lr_spread": spread}
        print(f"{arm:>8}  {summary[arm]['median']:>7.4f}  {summary[arm]['min']:>7.4f}  "
              f"{summary[arm]['max']:>7.4f}  {spread:.3f}")
    if args.out is not None:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                        "runs": runs, "summary": summary}, indent=2) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
