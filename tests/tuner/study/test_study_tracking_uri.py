"""Commands on a study log where the study logs: the MLflow store it was made with, unless
--tracking-uri says otherwise (tuner.study.meta.study_tracking_uri)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

from tuner.cli.commands import cli


def _roles(tracking_db: Path, experiment: str) -> list[str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tracking_db}")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return sorted(r.data.tags.get("opttune.role", "")
                  for r in client.search_runs([found.experiment_id]))


def test_resume_retrain_and_check_follow_the_studys_mlflow_store(home: Path,
                                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(home / "mlflow.db", elsewhere / "mlflow.db")  # a ready, empty MLflow store
    other = elsewhere / "mlflow.db"
    runner = CliRunner()
    made = runner.invoke(cli, ["search", "--task", "digits-mlp", "--study", "s", "--n-trials",
                               "1", "--epochs", "1", "--optimizers", "adam", "--device", "cpu",
                               "--home", str(home), "--tracking-uri", f"sqlite:///{other}"])
    assert made.exit_code == 0, made.output
    assert _roles(other, "s") == ["study", "trial"] and _roles(home / "mlflow.db", "s") == []

    for command in (["resume", "s", "--n-trials", "1"], ["retrain", "s"], ["check", "s"]):
        result = runner.invoke(cli, [*command, "--home", str(home)])  # no --tracking-uri
        assert result.exit_code == 0, result.output
    assert _roles(other, "s") == ["retrain", "study", "trial", "trial"]
    assert _roles(home / "mlflow.db", "s") == []

    # A home moved elsewhere (the stored SQLite file is gone): its own store is used.
    shutil.move(str(elsewhere), str(tmp_path / "moved"))
    checked = runner.invoke(cli, ["check", "s", "--home", str(home)])
    flat = " ".join(checked.output.split())
    assert checked.exit_code == 1 and "Study s: 2 trials, 0 MLflow trial runs" in flat
    assert f"thischecklookedatsqlite:///{home / 'mlflow.db'}" in "".join(flat.split())
    assert not other.exists()  # nothing re-created at the old path
