"""3. A whole opttune study against the hand-written Optuna study; 4. what bookkeeping costs.

Each study runs in a fresh process with a fresh home whose MLflow store already exists on
both sides (creating one runs MLflow's migrations once per home, a one-off the same for
both; it is measured separately). Same data, model, space (Adam, RMSprop or SGD; lr
1e-5..1e-1 log), TPE seed, median pruner, trials, epochs and batch size; the hand-written
study keeps Optuna's in-memory storage as the example does, opttune its SQLite store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import tasks as bench_tasks
from bench.child import RESULT
from bench.common import Row, Section, Settings, child_env, cores, python

TARGET_WALL_RATIO = 2.0  # opttune's wall time <= 0.5x the hand-written study's
TARGET_BOOKKEEPING = 0.03  # MLflow + Optuna < 3% of a trial
POPULATION = 8
TARGET_POPULATION_RATIO = 2.5  # with --population 8: <= 0.4x the hand-written study's time


def bench_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = child_env()
    env[bench_tasks.BASE_ENV] = settings.task
    for key, value in ((bench_tasks.TRAIN_ENV, settings.train_limit),
                       (bench_tasks.VAL_ENV, settings.val_limit)):
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env | extra


def run_child(args: list[str], env: dict[str, str], *, timeout: float = 900) -> dict[str, Any]:
    """Run `python -m bench.child ARGS`; its result, with the wall time seen from here."""
    start = time.perf_counter()
    proc = subprocess.run([python(), "-m", "bench.child", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"bench child {' '.join(args[:1])} failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    out: dict[str, Any] = json.loads(lines[-1][len(RESULT):])
    out["wall_s"] = wall
    return out


def mlflow_template(folder: Path) -> tuple[Path, float]:
    """An empty, initialised MLflow SQLite store to copy into each home; and what it cost."""
    code = ("import sys; from mlflow import MlflowClient; "
            "MlflowClient(tracking_uri='sqlite:///' + sys.argv[1]).search_experiments()")
    db = folder / "template-mlflow.db"
    start = time.perf_counter()
    subprocess.run([python(), "-c", code, str(db)], check=True, capture_output=True,
                   env=child_env(), timeout=300)
    return db, time.perf_counter() - start


def _home(root: Path, name: str, template: Path) -> Path:
    home = root / name
    home.mkdir()
    shutil.copy(template, home / "mlflow.db")
    return home


def study_throughput(settings: Settings) -> tuple[Section, Section]:
    import sys

    section, overheads = Section("study"), Section("overheads")
    try:
        import optuna_integration  # noqa: F401  (the hand-written study's MLflowCallback)
    except ImportError:
        why = "optuna-integration is not installed (pip install -e \".[bench]\")"
        print(f"  skipping the study comparison: {why}", file=sys.stderr)
        section.details["skipped"] = why
        return section, overheads
    root = Path(tempfile.mkdtemp(prefix="opttune-bench-"))
    try:
        template, creation = mlflow_template(root)
        overheads.details["mlflow_store_creation_s"] = creation
        args = ["--trials", str(settings.study_trials), "--epochs", str(settings.study_epochs),
                "--batch-size", "128", "--seed", str(settings.seed)]
        sides: dict[str, list[str]] = {"opttune": ["opttune"], "handwritten": ["handwritten"]}
        if cores() > 1 and not settings.quick:
            sides["opttune_jobs"] = ["opttune", "--jobs", str(cores())]
        population = 2 if settings.quick else POPULATION
        sides["opttune_population"] = ["opttune", "--population", str(population)]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        reps = 1 if settings.quick else max(1, settings.reps // 2)
        for i in range(reps):
            for side, mode in sides.items():
                home = _home(root, f"{side}-{i}", template)
                runs[side].append(run_child([*mode, "--home", str(home), *args],
                                            bench_env(settings)))
        section.details = {"runs": runs, "trials": settings.study_trials,
                           "epochs": settings.study_epochs, "batch_size": 128}
        best = {side: min(r, key=lambda x: x["wall_s"]) for side, r in runs.items()}
        ours, theirs = best["opttune"], best["handwritten"]
        wall_ratio = theirs["wall_s"] / ours["wall_s"]
        work = f"{settings.study_trials} trials x {settings.study_epochs} epochs"

        def per_epoch(run: dict[str, Any]) -> float:
            return float(run["clock"]["trial"]) / max(1, int(run["epochs_trained"]))

        section.rows += [
            Row("3 study", f"study wall time, {work} (s)", ours["wall_s"], theirs["wall_s"],
                "s", wall_ratio, target=f"<= {1 / TARGET_WALL_RATIO:g}x time",
                holds=wall_ratio >= TARGET_WALL_RATIO,
                note="whole process: start, imports, data, stores, trials, one trial at a time"),
            Row("3 study", "study, trials only (s)", ours["clock"]["trial"],
                theirs["clock"]["trial"], "s", theirs["clock"]["trial"] / ours["clock"]["trial"],
                note=f"epochs trained: {ours['epochs_trained']} vs {theirs['epochs_trained']} "
                     f"(the samplers differ, so do the pruned trials)"),
            Row("3 study", "study, seconds per epoch trained (s)", per_epoch(ours),
                per_epoch(theirs), "s", per_epoch(theirs) / per_epoch(ours)),
            Row("3 study", "best val accuracy", ours["best_value"], theirs["best_value"],
                "accuracy", ours["best_value"] / theirs["best_value"], target="same or better",
                holds=ours["best_value"] >= theirs["best_value"]),
        ]
        if "opttune_jobs" in best:
            jobs = best["opttune_jobs"]
            section.rows.append(Row(
                "3 study", f"study wall time with --jobs {cores()} (s)", jobs["wall_s"],
                theirs["wall_s"], "s", theirs["wall_s"] / jobs["wall_s"],
                note=f"best {jobs['best_value']:.4f}; {cores()} one-thread trials at once"))
        stacked = best["opttune_population"]
        ratio = theirs["wall_s"] / stacked["wall_s"]
        section.rows.append(Row(
            "3 study", f"study wall time with --population {population} (s)", stacked["wall_s"],
            theirs["wall_s"], "s", ratio, target=f"<= {1 / TARGET_POPULATION_RATIO:g}x time, "
                                               f"same or better best",
            holds=ratio >= TARGET_POPULATION_RATIO and
            stacked["best_value"] >= theirs["best_value"],
            note=f"best {stacked['best_value']:.4f} against {theirs['best_value']:.4f}; "
                 f"{population} trials trained as one stacked model"))
        overheads.rows += _bookkeeping_rows(ours, theirs)
        overheads.rows.append(Row(
            "4 overhead", "peak memory of a study (MB, ru_maxrss)", ours["maxrss_mb"],
            theirs["maxrss_mb"], "MB", theirs["maxrss_mb"] / ours["maxrss_mb"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section, overheads


def bookkeeping(run: dict[str, Any]) -> dict[str, float]:
    """Shares of the trials' time: MLflow and Optuna calls, and all that is not training.

    `trial` is every second spent running trials (for opttune: claiming each trial under the
    study's lock, then run_one; for the hand-written study: study.optimize); training is the
    time in fit (the objective) less the Optuna and MLflow calls made from inside it.
    """
    clock = run["clock"]
    trial = clock["trial"]
    calls = clock.get("mlflow_in_trial", 0.0) + clock.get("optuna_in_trial", 0.0)
    training = clock.get("fit", 0.0) - clock.get("mlflow_in_fit", 0.0) - \
        clock.get("optuna_in_fit", 0.0)
    return {"trial_s": trial, "training_s": training,
            "mlflow_s": clock.get("mlflow_in_trial", 0.0),
            "optuna_s": clock.get("optuna_in_trial", 0.0),
            "calls": calls / trial, "not_training": max(0.0, trial - training) / trial}


def _bookkeeping_rows(ours: dict[str, Any], theirs: dict[str, Any]) -> list[Row]:
    mine, yours = bookkeeping(ours), bookkeeping(theirs)
    return [
        Row("4 overhead", "MLflow + Optuna calls, share of trial time", mine["calls"],
            yours["calls"], "share", yours["calls"] / max(mine["calls"], 1e-9),
            target=f"< {TARGET_BOOKKEEPING:.0%}", holds=mine["calls"] < TARGET_BOOKKEEPING,
            note=f"MLflow {mine['mlflow_s']:.2f} s, Optuna {mine['optuna_s']:.2f} s of "
                 f"{mine['trial_s']:.1f} s; all but training: {mine['not_training']:.1%}"),
    ]


def startup(settings: Settings) -> Section:
    """Start-up time of CLI commands (a fresh process each, median of several)."""
    from statistics import median

    section = Section("startup")
    runs = 1 if settings.quick else 5
    script = Path(python()).with_name("opttune")
    cli = [str(script)] if script.exists() else [python(), "-m", "tuner"]
    empty = Path(tempfile.mkdtemp(prefix="opttune-bench-home-"))
    commands = {"python -c pass": [python(), "-c", "pass"], "opttune --help": [*cli, "--help"],
                "opttune tasks": [*cli, "tasks"]}
    if subprocess.run([*cli, "studies", "--help"], capture_output=True,
                      env=child_env()).returncode == 0:
        commands["opttune studies"] = [*cli, "studies", "--home", str(empty)]
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for _ in range(runs):
            for name, cmd in commands.items():
                start = time.perf_counter()
                subprocess.run(cmd, capture_output=True, env=child_env(), check=False,
                               cwd=empty)
                times[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    section.details = {"runs": times}
    floor = median(times.pop("python -c pass"))
    section.details["python_startup_s"] = floor
    for name, values in times.items():
        t = median(values)
        target = name == "opttune --help"
        section.rows.append(Row("4 overhead", f"{name} start-up (s, median of {runs})", t, floor,
                                "s", floor / t, target="< 0.3 s" if target else "",
                                holds=t < 0.3 if target else None,
                                note="reference: python -c pass"))
    return section
