"""What every measurement shares: the machine, timing side by side, rows of the ratio table.

Timings on a shared machine are noisy, so two sides are always measured interleaved (A, B,
A, B, …) and each side's best time is kept: the best is what the code costs when nothing
else is running, and interleaving gives both sides the same chances.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the ratio table: opttune against a reference, and the target if any."""

    section: str
    name: str
    opttune: float
    reference: float
    unit: str
    ratio: float  # > 1 means opttune is better, whatever the unit
    target: str = ""
    holds: bool | None = None  # None: no target
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Section:
    """One measurement's rows plus everything measured on the way (for the JSON file)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    """How big a run is: the full run takes a few minutes, --quick a few seconds."""

    quick: bool
    task: str
    reps: int  # interleaved repetitions of each timed side
    train_limit: int | None  # training samples used (None: all)
    val_limit: int | None
    batch_sizes: tuple[int, ...]
    study_trials: int
    study_epochs: int
    seed: int = 0


def interleaved(sides: Mapping[str, Callable[[], float | None]], reps: int, *,
                warmup: bool = True) -> dict[str, list[float]]:
    """Run each side `reps` times in turn; a side returns its own seconds or None (timed here).

    With `warmup`, each side runs once first, untimed (first calls pay one-off costs).
    """
    if warmup:
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            start = time.perf_counter()
            measured = fn()
            times[name].append(measured if measured is not None else time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"best": min(times), "median": median(times), "runs": len(times)}


def load() -> float:
    """The 1-minute load average (how busy the machine was), or -1 where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return -1.0


def cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine and the versions that the numbers belong to."""
    import mlflow
    import numpy
    import optuna
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": _cpu_model(), "cores": cores(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "optuna": optuna.__version__,
        "mlflow": mlflow.__version__, "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": round(load(), 2),
    }
    try:
        import optuna_integration

        info["optuna_integration"] = optuna_integration.__version__
    except ImportError:
        info["optuna_integration"] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        info["commit"] = commit or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def child_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a measured child process: this checkout first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPTTUNE_NO_DOWNLOAD", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def python() -> str:
    return sys.executable


def one_thread_child(command: list[str]) -> subprocess.Popen[str]:
    """Start a measured child process limited to one thread (two of them fill two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def child_result(label: str, proc: subprocess.Popen[str], prefix: str) -> dict[str, Any]:
    """The JSON a child printed on its last line starting with `prefix`; its stderr's tail
    when it failed."""
    stdout, stderr = proc.communicate(timeout=3600)
    lines = [ln for ln in stdout.splitlines() if ln.startswith(prefix)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{label} failed: {stderr.strip()[-800:]}")
    return dict(json.loads(lines[-1][len(prefix):]))
