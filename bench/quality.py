"""Does opttune's answer beat the study a user writes by hand, on equal budgets?

The hand-written study is the one Optuna's examples teach: TPE seeded, the default median
pruner, optuna-integration's ``MLflowCallback``, a ``DataLoader`` over the same
Fashion-MNIST split, the MLP 784-256-128-10, SGD with momentum (0-0.99) / Adam / AdamW with
lr 1e-5..1e-1 (log), weight decay 1e-6..1e-1 (log), betas searched, batch 128. opttune gets
the command a user would type for the same question::

    opttune search --task fashion-mnist-mlp --optimizers momentum,adam,adamw \\
        --lr 1e-5:1e-1 --weight-decay 1e-6:1e-1 --batch-size 128 --n-trials 8 --epochs 3 \\
        --seed S

Both run `--trials` trials of `--epochs` epochs for each seed; what is compared is the best
validation accuracy each finds, as the median over the seeds with its min-max spread. The
two sides of one seed run at once, one thread each, in processes of their own: the measure
is quality, not time.

    python -m bench.quality                 # 5 seeds, 8 trials x 3 epochs
    python -m bench.quality --seeds 0,1 --trials 4 --epochs 1 --train-limit 5000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import child_result, one_thread_child

TASK = "fashion-mnist-mlp"
RESULT = "QUALITY-RESULT "
LR = (1e-5, 1e-1)
WEIGHT_DECAY = (1e-6, 1e-1)
MOMENTUM = (0.0, 0.99)
BETA1 = (0.5, 0.99)  # opttune's default ranges for the Adam family's betas
BETA2 = (0.9, 0.9999)


def _data(train_limit: int | None) -> Any:
    import dataclasses

    from tasks.registry import get_task

    task = get_task(TASK)
    data = task.read_data()
    if train_limit is not None:
        data = dataclasses.replace(data, train_x=data.train_x[:train_limit],
                                   train_y=data.train_y[:train_limit])
    return task, data


def handwritten(seed: int, *, trials: int, epochs: int, home: Path,
                train_limit: int | None) -> dict[str, Any]:
    """Optuna's PyTorch example with this question's space, as a user writes it."""
    import optuna
    import torch
    import torch.nn.functional as F
    from optuna_integration.mlflow import MLflowCallback

    from bench.handwritten import accuracy, loaders, train_epoch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task, data = _data(train_limit)
    train, valid = loaders(data, 128)

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("optimizer", ["SGD", "Adam", "AdamW"])
        lr = trial.suggest_float("lr", *LR, log=True)
        weight_decay = trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True)
        model = task.build_model({})
        if name == "SGD":
            momentum = trial.suggest_float("momentum", *MOMENTUM)
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            betas = (trial.suggest_float("beta1", *BETA1), trial.suggest_float("beta2", *BETA2))
            optimizer = getattr(torch.optim, name)(model.parameters(), lr=lr, betas=betas,
                                                   weight_decay=weight_decay)
        score = 0.0
        for epoch in range(epochs):
            train_epoch(model, train, optimizer, F.cross_entropy)
            score = accuracy(model, valid)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    torch.manual_seed(seed)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=trials,
                   callbacks=[MLflowCallback(tracking_uri=f"sqlite:///{home}/mlflow.db",
                                             metric_name="accuracy")])
    states = [t.state.name for t in study.trials]
    return {"best_value": study.best_value, "best_config": study.best_params,
            "states": {s: states.count(s) for s in sorted(set(states))}}


def opttune(seed: int, *, trials: int, epochs: int, home: Path,
            train_limit: int | None) -> dict[str, Any]:
    """The command in the module doc, through the library's one code path."""
    import tuner

    if train_limit is not None:  # the same cut as the hand-written side, through a task file
        os.environ["OPTTUNE_QUALITY_TRAIN_LIMIT"] = str(train_limit)
    result = tuner.search(task=TASK if train_limit is None else f"{__file__}:LIMITED_TASK",
                          study="quality", optimizers=["momentum", "adam", "adamw"],
                          params={"lr": [f"{LR[0]:g}:{LR[1]:g}"],
                                  "weight_decay": [f"{WEIGHT_DECAY[0]:g}:{WEIGHT_DECAY[1]:g}"]},
                          batch_size="128", n_trials=trials, epochs=epochs, seed=seed,
                          device="cpu", home=home)
    best = result.best
    states = [t.state for t in result.all_trials]
    return {"best_value": best.value if best else None, "best_config": best.config if best
            else None, "states": {s: states.count(s) for s in sorted(set(states))},
            "defaults_best": bool(best and best.reason == "defaults")}


def _limited_task() -> Any:
    import dataclasses

    from tasks.registry import get_task

    base = get_task(TASK)
    limit = int(os.environ.get("OPTTUNE_QUALITY_TRAIN_LIMIT", "0")) or None

    def load(*, data_dir: Path | None = None) -> Any:
        data = base.load_data(data_dir=data_dir)
        return dataclasses.replace(data, train_x=data.train_x[:limit],
                                   train_y=data.train_y[:limit])

    return dataclasses.replace(base, name="fashion-mnist-mlp-limited", load_data=load, ref="")


def __getattr__(name: str) -> Any:
    if name == "LIMITED_TASK":  # built on demand: importing this module stays light
        return _limited_task()
    raise AttributeError(name)


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    side = handwritten if args.side == "handwritten" else opttune
    started = time.perf_counter()
    result = side(args.seed, trials=args.trials, epochs=args.epochs, home=Path(args.home),
                  train_limit=args.train_limit)
    result["seconds"] = time.perf_counter() - started
    print(RESULT + json.dumps(result, default=str), flush=True)


def _start(side: str, seed: int, args: argparse.Namespace,
           root: Path) -> subprocess.Popen[str]:
    home = root / f"{side}-{seed}"
    home.mkdir()
    command = [sys.executable, "-m", "bench.quality", "--side", side, "--seed", str(seed),
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--home", str(home)]
    if args.train_limit is not None:
        command += ["--train-limit", str(args.train_limit)]
    return one_thread_child(command)


def _run_all(seeds: list[int], args: argparse.Namespace, root: Path,
             baseline: dict[int, dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """Every (side, seed) run that the baseline does not already hold, two at a time (one
    thread each: this is a 2-core machine's worth)."""
    todo = [(side, seed) for seed in seeds for side in args.sides.split(",")
            if not (side == "handwritten" and seed in baseline)]
    runs: dict[int, dict[str, dict[str, Any]]] = {
        seed: ({"handwritten": baseline[seed]} if seed in baseline else {}) for seed in seeds}
    for i in range(0, len(todo), args.parallel):
        batch = [(side, seed, _start(side, seed, args, root))
                 for side, seed in todo[i:i + args.parallel]]
        for side, seed, proc in batch:
            runs[seed][side] = child_result(f"{side} (seed {seed})", proc, RESULT)
    return runs


def summary(runs: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median and min-max of each side's best value over the seeds, and the verdict."""
    sides: dict[str, Any] = {}
    for side in ("opttune", "handwritten"):
        values = [runs[seed][side]["best_value"] for seed in sorted(runs)]
        sides[side] = {"median": statistics.median(values), "min": min(values),
                       "max": max(values), "values": values}
    sides["holds"] = sides["opttune"]["median"] >= sides["handwritten"]["median"]
    return sides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list of seeds")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N training samples only (a quick check)")
    parser.add_argument("--out", type=Path, default=None, help="write the runs as JSON")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="reuse the hand-written runs of an earlier --out file (same "
                             "settings): they do not depend on opttune's code")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once [2]")
    parser.add_argument("--sides", default="opttune,handwritten",
                        help="which sides to run (handwritten alone: a --baseline to reuse)")
    parser.add_argument("--side", choices=["opttune", "handwritten"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        _child(args)
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="opttune-quality-"))
    baseline: dict[int, dict[str, Any]] = {}
    if args.baseline is not None:
        earlier = json.loads(args.baseline.read_text(encoding="utf-8"))
        same = all(earlier["settings"].get(k) == getattr(args, k)
                   for k in ("trials", "epochs", "train_limit"))
        if not same:
            raise SystemExit(f"--baseline {args.baseline} was run with other settings: "
                             f"{earlier['settings']}")
        baseline = {int(seed): run["handwritten"] for seed, run in earlier["runs"].items()}
    try:
        runs = _run_all(seeds, args, root, baseline)
        if args.sides == "handwritten":
            if args.out is not None:
                settings = {k: v for k, v in vars(args).items()
                            if k not in ("out", "baseline")}
                args.out.write_text(json.dumps({"settings": settings, "runs": runs}, indent=2,
                                               default=str) + "\n", encoding="utf-8")
            for seed in seeds:
                print(f"seed {seed}: by hand {runs[seed]['handwritten']['best_value']:.4f}")
            return 0
        print(f"{'seed':>4}  {'opttune':>8}  {'by hand':>8}  opttune's best", flush=True)
        for seed in seeds:
            ours, theirs = runs[seed]["opttune"], runs[seed]["handwritten"]
            config = ours["best_config"] or {}
            kind = " (defaults trial)" if ours.get("defaults_best") else ""
            print(f"{seed:>4}  {ours['best_value']:>8.4f}  {theirs['best_value']:>8.4f}  "
                  f"{config.get('optimizer')} lr={config.get('lr', 0):.3g}{kind}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = summary(runs)
    for side, label in (("opttune", "opttune"), ("handwritten", "by hand")):
        s = result[side]
        print(f"{label:>8}: median {s['median']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}) "
              f"over {len(seeds)} seeds")
    ratio = result["opttune"]["median"] / result["handwritten"]["median"]
    print(f"ratio of medians (opttune / by hand): {ratio:.4f}  target >= 1: "
          f"{'holds' if result['holds'] else 'MISSED'}")
    if args.out is not None:
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "baseline")}
        args.out.write_text(json.dumps({"settings": settings, "runs": runs, **result},
                                       indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
