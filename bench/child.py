"""Measured child processes: a whole study (opttune's or the hand-written one), or trials.

Run by the parent as ``python -m bench.child MODE …``; prints one ``BENCH_RESULT {json}``
line. A study runs in a fresh process so that its wall time includes what a user waits for
(interpreter, imports, data) and its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

RESULT = "BENCH_RESULT "
TASK_REF = "bench.tasks:LIMITED"
# The same space on both sides: Optuna's PyTorch example (Adam, RMSprop or SGD, lr 1e-5..1e-1
# log), every other hyperparameter at its torch default.
OPTIMIZERS = ["adam", "rmsprop", "sgd"]
FIXED = {"lr": ["1e-5:1e-1"], "beta1": ["0.9"], "beta2": ["0.999"], "eps": ["1e-8"],
         "weight_decay": ["0"], "alpha": ["0.99"], "momentum": ["0"]}


class Clock:
    """Seconds the main thread spends in wrapped calls, by bucket; nested calls count once.

    Buckets wrapped with `nested` (a trial, a fit) time everything inside them and also
    collect "<bucket>_in_<nested>" for the calls made within them. Calls on other threads
    (opttune's MLflow thread) are not on the trial's critical path and are not counted.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth = 0
        self._inside: list[str] = []  # the nested buckets running now (fit inside loop)

    def _add(self, bucket: str, seconds: float) -> None:
        self.seconds[bucket] = self.seconds.get(bucket, 0.0) + seconds
        self.calls[bucket] = self.calls.get(bucket, 0) + 1

    def wrap(self, owner: Any, name: str, bucket: str, *, nested: bool = False) -> None:
        setattr(owner, name, self.timed(getattr(owner, name), bucket, nested=nested))

    def timed(self, fn: Callable[..., Any], bucket: str, *,
              nested: bool = False) -> Callable[..., Any]:
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread() or (
                    clock._depth and not nested):
                return fn(*args, **kwargs)
            if nested:
                clock._inside.append(bucket)
            else:
                clock._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                clock._add(bucket, seconds)
                if nested:
                    clock._inside.pop()
                else:
                    clock._depth -= 1
                    for outer in clock._inside:  # e.g. MLflow time spent inside fit's epochs
                        clock._add(f"{bucket}_in_{outer}", seconds)

        return timed


def _optuna_calls(clock: Clock) -> None:
    import optuna

    from tuner.study.optuna_adapter import storage_classes

    for name in ("ask", "tell", "get_trials", "set_user_attr", "enqueue_trial"):
        clock.wrap(optuna.study.Study, name, "optuna")
    for name in ("report", "should_prune", "set_user_attr", "suggest_float",
                 "suggest_categorical", "suggest_int"):
        clock.wrap(optuna.trial.Trial, name, "optuna")
    # Direct storage calls (attributes, heartbeats) outside the Study/Trial API.
    for cls in storage_classes():
        for name in ("set_trial_system_attr", "set_trial_user_attr", "get_trial",
                     "get_all_trials", "record_heartbeat", "set_trial_state_values"):
            if hasattr(cls, name):
                clock.wrap(cls, name, "optuna")


def study_opttune(args: argparse.Namespace) -> dict[str, Any]:
    from tuner.search import trial_loop, trial_steps
    from tuner.search.mlflow_queue import MlflowQueue
    from tuner.search.runner import search
    from tuner.study import claims

    clock = Clock()
    # What the trial loop waits for: MLflow calls go through these two (on the MLflow thread).
    for name in ("safe", "later"):
        clock.wrap(MlflowQueue, name, "mlflow")
    _optuna_calls(clock)
    clock.wrap(claims, "claim_next", "trial", nested=True)  # taking the next trial, under lock
    clock.wrap(trial_loop.TrialRunner, "run_one", "trial", nested=True)
    clock.wrap(trial_steps, "fit", "fit", nested=True)  # the name a trial's step calls
    ready = time.perf_counter()
    result = search(task=TASK_REF, study="bench", n_trials=args.trials, epochs=args.epochs,
                    optimizers=OPTIMIZERS, params=FIXED, batch_size=str(args.batch_size),
                    seed=args.seed, sampler="tpe", pruner="median", device="cpu",
                    home=args.home, jobs=args.jobs, population=args.population)
    states = [t.state for t in result.all_trials]
    return {"best_value": result.best.value if result.best else None,
            "best_config": result.best.config if result.best else None,
            "states": {s: states.count(s) for s in set(states)}, "import_s": ready - _STARTED,
            "epochs_trained": sum(t.epochs_run for t in result.all_trials),
            "clock": clock.seconds, "calls": clock.calls}


def study_handwritten(args: argparse.Namespace) -> dict[str, Any]:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    from bench import handwritten
    from tasks.registry import get_task

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = Clock()
    clock.wrap(MLflowCallback, "__call__", "mlflow")
    _optuna_calls(clock)
    clock.wrap(optuna.study.Study, "optimize", "trial", nested=True)
    make = handwritten.make_objective

    def timed_objective(*a: Any, **k: Any) -> Any:
        return clock.timed(make(*a, **k), "fit", nested=True)

    handwritten.make_objective = timed_objective
    ready = time.perf_counter()
    task = get_task(TASK_REF)
    data = task.read_data()
    study = handwritten.run_study(task, data, tracking_uri=f"sqlite:///{args.home}/mlflow.db",
                                  trials=args.trials, epochs=args.epochs,
                                  batch_size=args.batch_size, seed=args.seed)
    states = [t.state.name for t in study.trials]
    return {"best_value": study.best_value, "best_config": study.best_params,
            "states": {s: states.count(s) for s in set(states)}, "import_s": ready - _STARTED,
            "epochs_trained": sum(len(t.intermediate_values) for t in study.trials),
            "clock": clock.seconds, "calls": clock.calls}


def trials_at_once(args: argparse.Namespace) -> dict[str, Any]:
    """`--trials` fits of the task, started when the parent says go (stdin)."""
    import torch

    from tasks.registry import get_task
    from tuner.space.config import TrialConfig
    from tuner.training.loop import DeviceData, fit

    torch.set_num_threads(args.threads)
    task = get_task(TASK_REF)
    data = DeviceData.from_task_data(task.read_data(), "cpu")
    config = TrialConfig("adam", {"lr": 1e-3}, args.batch_size, args.epochs)
    fit(task, data, TrialConfig("adam", {"lr": 1e-3}, args.batch_size, 1), device="cpu")
    print("READY", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(args.trials):
        fit(task, data, config, device="cpu", seed=i)
    return {"fit_s": time.perf_counter() - start, "threads": torch.get_num_threads()}


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "opttune": study_opttune, "handwritten": study_handwritten, "trials": trials_at_once}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--home", default="")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="opttune's --jobs")
    parser.add_argument("--population", type=int, default=1, help="opttune's --population")
    args = parser.parse_args(argv)
    out = MODES[args.mode](args)
    out["process_s"] = time.perf_counter() - _STARTED
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
