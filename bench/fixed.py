"""5. The fixed cost of a search: its wall time minus its trials' own time, against the time
`python -c "import torch, optuna, mlflow"` takes (target: at most 1.5x that import line).

Measured on `opttune search --task digits-mlp --optimizers adam --n-trials 6 --epochs 4
--pruner none` in three situations: the first search on a machine (a new home and an empty
user cache: the MLflow store runs its migrations), a search in another new home (its MLflow
store starts as a copy of the empty one the first search kept), and a second study in a home
that already has both stores. Each in a fresh process; the trials' own time is read back
from the study store (each trial's start to its end).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, Section, Settings, child_env, python

TARGET = 1.5  # fixed cost <= 1.5x the import line
SEARCH = ["search", "--task", "digits-mlp", "--optimizers", "adam", "--pruner", "none",
          "--device", "cpu"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def _trials_seconds(home: Path, study: str) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{home / 'opttune.db'}")
    return sum(t.duration.total_seconds() for t in loaded.trials if t.duration is not None)


def fixed_cost(settings: Settings) -> Section:
    section = Section("fixed")
    trials, epochs = ("2", "1") if settings.quick else ("6", "4")
    root = Path(tempfile.mkdtemp(prefix="opttune-bench-fixed-"))
    env = child_env() | {"OPTTUNE_CACHE": str(root / "cache")}
    cli = [python(), "-m", "tuner", *SEARCH, "--n-trials", trials, "--epochs", epochs]
    try:
        imports = min(_timed([python(), "-c", "import torch, optuna, mlflow"], env)
                      for _ in range(1 if settings.quick else 3))
        cases = (("first search on the machine", "a", "s"), ("a search in a new home", "b", "s"),
                 ("a second study in the same home", "b", "t"))
        measured = {}
        for label, home, study in cases:
            wall = _timed([*cli, "--home", str(root / home), "--study", study], env)
            own = _trials_seconds(root / home, study)
            measured[label] = {"wall_s": wall, "trials_s": own, "fixed_s": wall - own}
            section.rows.append(Row(
                "4 fixed cost", f"{label}: wall minus trials (s)", wall - own, imports, "s",
                imports / (wall - own), target=f"<= {TARGET}x the import line",
                holds=wall - own <= TARGET * imports,
                note=f"wall {wall:.1f} s, trials {own:.1f} s; reference: the import line"))
        section.details = {"import_line_s": imports, "cases": measured, "trials": trials,
                           "epochs": epochs}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section
