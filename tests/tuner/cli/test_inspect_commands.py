"""The inspection commands end to end through the CLI: table and JSON forms, files, delete."""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from helpers.small_study import small_study_copy

from tuner.cli.commands import cli


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1 (sgd, adam: 6 trials; see small_study.py) and s2 (adam, momentum: 2 trials)."""
    from tuner.search.runner import search

    folder = small_study_copy(tmp_path_factory, _mlflow_template, "cli-inspect")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTTUNE_NO_DOWNLOAD", "1")
        env.setenv("OPTTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        search(task="mnist-mlp", study="s2", n_trials=2, epochs=1, seed=0,
               optimizers=["adam", "momentum"], home=folder)
    return folder


def _run(home: Path, *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, [*args, "--home", str(home)], input=input)
    assert result.exit_code == 0, result.output
    return result


def _study(home: Path, name: str = "s1") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'opttune.db'}")


def test_studies_table_and_json(study_home: Path) -> None:
    rows = json.loads(_run(study_home, "studies", "--format", "json").stdout)
    assert [r["study"] for r in rows] == ["s1", "s2"]
    s1 = _study(study_home)
    assert rows[0]["complete"] == sum(t.state.name == "COMPLETE" for t in s1.trials)
    assert rows[0]["best_value"] == s1.best_value
    table = _run(study_home, "studies").stdout
    assert "s1" in table and "s2" in table and "mnist-mlp" in table
    assert f"val_acc {s1.best_value:.4g} #{s1.best_trial.number}" in table


def test_trials_in_table_csv_and_json(study_home: Path) -> None:
    study = _study(study_home)
    rows = json.loads(_run(study_home, "trials", "s1", "--format", "json").stdout)
    assert [(r["number"], r["value"]) for r in rows] == [(t.number, t.value)
                                                         for t in study.trials]
    table = _run(study_home, "trials", "s1").stdout
    for t in study.trials:
        assert t.user_attrs["mlflow_run_id"] in table  # one row per trial, with its run id
    text = _run(study_home, "trials", "s1", "--format", "csv", "--state", "pruned").stdout
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == sum(t.state.name == "PRUNED" for t in study.trials)
    assert all(r["state"] == "PRUNED" for r in records)
    top = json.loads(_run(study_home, "trials", "s1", "--sort", "value", "--limit", "1",
                          "--format", "json").stdout)
    assert [r["number"] for r in top] == [study.best_trial.number]


def test_best_in_table_and_json(study_home: Path) -> None:
    study = _study(study_home)
    best = json.loads(_run(study_home, "best", "s1", "--format", "json").stdout)
    assert (best["number"], best["value"]) == (study.best_trial.number, study.best_value)
    table = _run(study_home, "best", "s1").stdout
    assert f"#{study.best_trial.number}" in table and best["run_id"] in table
    assert best["command"] in table


@pytest.mark.slow
def test_the_best_command_reruns_exactly_that_config(study_home: Path) -> None:
    best = json.loads(_run(study_home, "best", "s1", "--format", "json").stdout)
    argv = shlex.split(best["command"])
    assert argv[:2] == ["opttune", "search"] and argv[argv.index("--home") + 1] == \
        str(study_home)
    result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    [trial] = _study(study_home, "s1-best").trials
    assert trial.user_attrs["config"] == _study(study_home).best_trial.user_attrs["config"]
    optuna.delete_study(study_name="s1-best", storage=f"sqlite:///{study_home / 'opttune.db'}")


def test_compare_one_and_two_studies(study_home: Path) -> None:
    data = json.loads(_run(study_home, "compare", "s1", "--format", "json").stdout)
    groups = {g["optimizer"]: g for g in data["studies"][0]["groups"]}
    assert set(groups) == {"sgd", "adam"}
    assert all(g["default_value"] is not None for g in groups.values())
    table = _run(study_home, "compare", "s1").stdout
    for family, g in groups.items():
        line = next(line for line in table.splitlines() if line.split()[:1] == [family])
        assert f"{g['best']:.4g} #{g['best_trial']}" in line
        assert f"{g['default_value']:.4g} #{g['default_trial']}" in line
    both = json.loads(_run(study_home, "compare", "s1", "s2", "--format", "json").stdout)
    assert [s["study"] for s in both["studies"]] == ["s1", "s2"]
    assert [g["optimizer"] for g in both["studies"][1]["groups"]] == ["adam", "momentum"]
    table = _run(study_home, "compare", "s1", "s2").stdout
    assert "s1" in table and "s2" in table and "momentum" in table
    by_batch = json.loads(_run(study_home, "compare", "s1", "--by", "batch-size",
                               "--format", "json").stdout)
    assert [g["batch_size"] for g in by_batch["studies"][0]["groups"]] == [128]


def test_export_and_plot_write_files(study_home: Path, tmp_path: Path) -> None:
    out = _run(study_home, "export", "s1", "-o", str(tmp_path / "t.csv")).stdout
    assert "Wrote 6 trials of s1" in out
    assert len(list(csv.DictReader((tmp_path / "t.csv").open()))) == 6
    _run(study_home, "export", "s1", "-o", str(tmp_path / "t.json"))
    assert len(json.loads((tmp_path / "t.json").read_text())["trials"]) == 6
    _run(study_home, "plot", "s1", "--kind", "curves", "-o", str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_study_is_one_clear_error(study_home: Path) -> None:
    for command in (["trials", "nope"], ["best", "nope", "--format", "json"],
                    ["compare", "s1", "nope"], ["export", "nope", "-o", "x.csv"],
                    ["delete", "nope", "--yes"]):
        result = CliRunner().invoke(cli, [*command, "--home", str(study_home)])
        assert result.exit_code == 1
        assert "Error: no study named 'nope'" in result.output
        assert "known studies: s1, s2" in result.output and "Traceback" not in result.output
        assert result.stdout == ""  # nothing on stdout, not even in JSON mode


def test_delete_asks_then_removes_the_study_and_its_experiment(study_home: Path,
                                                               tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(study_home, home)  # the other tests keep their studies
    no = CliRunner().invoke(cli, ["delete", "s2", "--home", str(home)], input="n\n")
    assert no.exit_code == 1 and "Aborted" in no.output
    assert "s2" in [s.study_name for s in optuna.get_all_study_summaries(
        f"sqlite:///{home / 'opttune.db'}")]
    experiment = _study(home, "s2").user_attrs["mlflow"]["experiment_id"]
    out = _run(home, "delete", "s2", "--yes").stdout
    assert "Deleted study s2 (2 trials)" in out and "marked deleted" in out
    names = [r["study"] for r in json.loads(_run(home, "studies", "--format", "json").stdout)]
    assert names == ["s1"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"
