"""One small real study, searched once per test session, and a private copy for each module.

Study `s1` on mnist-mlp: the families sgd and adam, 6 trials of 2 epochs, seed 0 (the first
trial of each family runs its PyTorch defaults). Copying the study home (two SQLite files)
costs milliseconds where a search costs seconds; each test module owns its copy, so one
module's deletes and retrains never show in another's numbers. (MLflow artifact locations
stay absolute, pointing into the original home; tests only read artifacts through runs.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

_BUILT: dict[str, Path] = {}


def small_study_copy(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path,
                     label: str) -> Path:
    if "home" not in _BUILT:
        from tuner.search.runner import search

        folder = tmp_path_factory.mktemp("small-study") / "home"
        folder.mkdir()
        shutil.copy(mlflow_template, folder / "mlflow.db")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("OPTTUNE_NO_DOWNLOAD", "1")
            env.setenv("OPTTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
            search(task="mnist-mlp", study="s1", n_trials=6, epochs=2, seed=0,
                   optimizers=["sgd", "adam"], device="cpu", home=folder)
        _BUILT["home"] = folder
    copy = tmp_path_factory.mktemp(label) / "home"
    shutil.copytree(_BUILT["home"], copy)
    return copy
