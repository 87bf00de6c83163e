"""The recent families everywhere a family goes, end to end: `search` (a QMC sampler, which
keeps a model per family), `compare`, `export`, MLflow params, the re-run command of each
family's best trial (which reproduces it), `retrain` of a schedule-free trial, and one
`Error:` line for a missing package."""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from tuner.cli.commands import cli
from tuner.results.queries import rerun_command
from tuner.space.families import FAMILIES
from tuner.study.trial_record import read_trial

RECENT = ["muon", "schedulefree", "lion", "prodigy", "adafactor"]


def _run(home: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, [*args, "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result


def _study(home: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'opttune.db'}")


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study `recent`: the five recent families and AdamW on digits, 12 trials of 2 epochs."""
    import shutil

    folder = tmp_path_factory.mktemp("recent") / "home"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--study", "recent", "--optimizers",
        "adamw," + ",".join(RECENT), "--n-trials", "12", "--epochs", "2", "--seed", "0",
        "--sampler", "qmc", "--pruner", "none", "--device", "cpu", "--home", str(folder)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "schedulefree takes no learning-rate schedule" in out
    assert "For muon, schedulefree, lion, prodigy those are the authors' defaults" in out
    return folder


@pytest.mark.slow
def test_compare_and_export_show_every_family(study_home: Path) -> None:
    data = json.loads(_run(study_home, "compare", "recent", "--format", "json").stdout)
    groups = {g["optimizer"]: g for g in data["studies"][0]["groups"]}
    assert set(groups) == {"adamw", *RECENT}
    assert all(g["default_value"] is not None for g in groups.values())
    out = study_home / "trials.csv"
    _run(study_home, "export", "recent", "-o", str(out))
    with out.open() as f:
        rows = list(csv.DictReader(f))
    by_family = {r["optimizer"]: r for r in rows}
    assert set(by_family) >= {"adamw", *RECENT}
    assert by_family["prodigy"]["d_coef"] and by_family["muon"]["adam_lr"]
    assert by_family["schedulefree"]["warmup"] and by_family["adafactor"]["decay"]
    assert all(r["scheduler"] == "none" for r in rows if r["optimizer"] == "schedulefree")


@pytest.mark.slow
def test_mlflow_runs_carry_each_familys_own_params(study_home: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study_home / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "recent"]
    runs = client.search_runs([experiment.experiment_id], "tags.`opttune.role` = 'trial'")
    params = {r.data.params["optimizer"]: r.data.params for r in runs}
    assert set(params) >= {"adamw", *RECENT}
    for family in RECENT:
        assert set(FAMILIES[family].param_names) <= set(params[family]), family
    assert "eps" not in params["prodigy"] and "lr" not in params["prodigy"]


@pytest.mark.slow
@pytest.mark.parametrize("family", RECENT)
def test_the_rerun_command_reproduces_a_trial_of_each_family(study_home: Path,
                                                             family: str) -> None:
    study = _study(study_home, "recent")
    original = next(t for t in study.trials if t.params.get("optimizer") == family)
    command = rerun_command("recent", study, read_trial(original), home=study_home)
    argv = shlex.split(command)
    for name in FAMILIES[family].param_names:
        assert f"--{name.replace('_', '-')}" in argv
    argv[argv.index("--study") + 1] = f"again-{family}"
    result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    [trial] = _study(study_home, f"again-{family}").trials
    assert trial.user_attrs["config"] == original.user_attrs["config"]
    assert trial.value == original.value
    assert trial.intermediate_values == original.intermediate_values


@pytest.mark.slow
def test_retrain_a_schedule_free_trial(study_home: Path) -> None:
    study = _study(study_home, "recent")
    number = next(t.number for t in study.trials if t.params.get("optimizer") == "schedulefree")
    result = json.loads(_run(study_home, "retrain", "recent", "--trial", str(number),
                             "--format", "json").stdout)
    assert result["config"]["optimizer"] == "schedulefree"
    assert result["config"]["scheduler"] == "none"
    assert 0.5 < result["test"]["test_acc"] <= 1.0
    assert Path(result["model_path"]).is_file()


def test_a_missing_package_is_one_error_line_and_no_store(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(FAMILIES["prodigy"], torch_class="no_such_prodigy:Prodigy",
                               package="no-such-prodigy")
    monkeypatch.setitem(FAMILIES, "prodigy", gone)
    before = sorted(p.name for p in home.iterdir())
    result = CliRunner().invoke(cli, ["search", "--task", "digits-mlp", "--optimizers",
                                      "adam,prodigy", "--home", str(home)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "optimizer prodigy needs the package no-such-prodigy" in " ".join(
        result.output.split())
    assert sorted(p.name for p in home.iterdir()) == before


@pytest.mark.slow
def test_a_population_stacks_lion_and_says_once_which_families_train_alone(
        home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--optimizers", "lion,prodigy", "--n-trials", "8",
        "--epochs", "1", "--seed", "0", "--sampler", "random", "--pruner", "none",
        "--population", "4", "--device", "cpu", "--home", str(home)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert out.count("prodigy (prodigyopt:Prodigy) has no stacked update rule; its trials "
                     "train one at a time") == 1
    assert "lion (" not in out
    trials = _study(home, "digits-mlp").trials
    stacked = [t.user_attrs["population"] for t in trials if t.params["optimizer"] == "lion"]
    alone = [t.user_attrs["population"] for t in trials if t.params["optimizer"] == "prodigy"]
    assert max(stacked) > 1 and set(alone) == {1}
