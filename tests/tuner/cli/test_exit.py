"""How the `opttune` process ends: without the interpreter's teardown once torch is loaded,
but with its output, its exit code and its stores whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tuner.cli.commands import cli

SEARCH = [sys.executable, "-m", "tuner", "search", "--task", "digits-mlp", "--optimizers",
          "adam", "--pruner", "none", "--device", "cpu", "--epochs", "1"]


@pytest.mark.slow
def test_a_search_process_ends_with_its_summary_its_code_and_its_runs(home: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as sink:  # a file, not a terminal: block-buffered until flushed
        done = subprocess.run([*SEARCH, "--n-trials", "2", "--study", "s", "--home", str(home)],
                              stdout=sink, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # Its last line, the MLflow UI's command, which rich wraps at 80 columns anywhere in the
    # store's path (the path's length varies): compared without the line breaks.
    assert "Best: trial" in text
    assert "".join(text.split()).endswith(f"--backend-store-uri sqlite:///{home}/mlflow.db)"
                                          .replace(" ", ""))
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{home / 'opttune.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = study.user_attrs["mlflow"]["experiment_id"]
    runs = client.search_runs([experiment])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # parent and two trials
    parent = client.get_run(study.user_attrs["mlflow"]["parent_run_id"])
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == \
        ["plots/study_plots.html"]


@pytest.mark.slow
def test_an_error_after_torch_is_loaded_keeps_its_line_and_exit_code(home: Path) -> None:
    created = CliRunner().invoke(cli, [*SEARCH[3:], "--study", "s", "--home", str(home),
                                       "--jobs", "0"])
    assert created.exit_code == 0, created.output
    # another space for the same study: refused once the task's data is read (torch loaded)
    done = subprocess.run([*SEARCH, "--study", "s", "--lr", "1e-4:1e-2", "--home", str(home)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the search space of study 's' differs")
    assert "Traceback" not in done.stderr and done.stdout.startswith("Search space")
