"""The inspection commands end to end through the CLI: table and JSON forms, files, delete."""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from helpers.small_study import small_study_copy
from optuna.trial import TrialState

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


# The JSON documents' keys, in order: scripts read them, so they never change by accident.
TRIAL_KEYS = ["number", "state", "value", "metric", "optimizer", "params", "batch_size",
              "epochs", "scheduler", "epochs_run", "seconds", "started", "finished", "run_id",
              "reason", "defaults_trial", "retry_of", "intermediate"]
STUDY_KEYS = ["study", "task", "metric", "direction", "trials", "complete", "pruned", "failed",
              "running", "waiting", "budget", "best_value", "best_trial", "last_activity",
              "data_source"]
GROUP_KEYS = ["trials", "complete", "pruned", "failed", "running", "best", "best_trial",
              "median", "q1", "q3", "iqr", "default_value", "default_trial", "default_state",
              "gain_over_default", "no_gain_reason", "mean_seconds"]


def test_json_documents_keep_their_keys(study_home: Path) -> None:
    [row, _] = json.loads(_run(study_home, "studies", "--format", "json").stdout)
    assert list(row) == STUDY_KEYS
    trials = json.loads(_run(study_home, "trials", "s1", "--format", "json").stdout)
    assert len(trials) == 6 and all(list(r) == TRIAL_KEYS for r in trials)
    best = json.loads(_run(study_home, "best", "s1", "--format", "json").stdout)
    assert list(best) == ["study", "direction", "task", *TRIAL_KEYS, "command"]
    compare = json.loads(_run(study_home, "compare", "s1", "--by", "scheduler",
                              "--format", "json").stdout)
    assert list(compare) == ["by", "studies"] and compare["by"] == "scheduler"
    [study] = compare["studies"]
    assert list(study) == ["study", "task", "metric", "direction", "trials", "groups"]
    assert study["groups"] and all(list(g) == ["scheduler", *GROUP_KEYS]
                                   for g in study["groups"])
    tasks = json.loads(_run_plain("tasks", "--format", "json").stdout)
    assert list(tasks[0]) == ["name", "ref", "summary", "data", "model", "parameters",
                              "hyperparams", "metric", "direction"]


def _run_plain(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def add_infinite_trial(home: Path, name: str = "s1") -> optuna.trial.FrozenTrial:
    """Add a complete trial worth +inf (the best's config again) to a maximized study: Optuna's
    best_trial picks it. Returns the finite best, which opttune must pick instead."""
    study = _study(home, name)
    best = study.best_trial
    attrs = {k: v for k, v in best.user_attrs.items() if k != "defaults_trial"}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=math.inf, params=best.params,
        distributions=best.distributions, user_attrs=attrs,
        intermediate_values={0: 0.5, 1: math.inf}))
    assert _study(home, name).best_value == math.inf  # what Optuna would pick
    return best


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
    assert len(study.trials) == 6  # the subject of every check below
    rows = json.loads(_run(study_home, "trials", "s1", "--format", "json").stdout)
    assert [(r["number"], r["value"]) for r in rows] == [(t.number, t.value)
                                                         for t in study.trials]
    table = _run(study_home, "trials", "s1").stdout
    for t in study.trials:
        assert t.user_attrs["mlflow_run_id"] in table  # one row per trial, with its run id
    text = _run(study_home, "trials", "s1", "--format", "csv", "--state", "pruned").stdout
    records = list(csv.DictReader(io.StringIO(text)))
    assert records, "s1 has no pruned trial: the --state filter would be tested on nothing"
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
    original = _study(study_home).trials[best["number"]]
    assert trial.user_attrs["config"] == original.user_attrs["config"]
    # The same configuration, data order and initialisation: the same value, to the last digit.
    assert trial.value == original.value == best["value"]
    assert trial.intermediate_values == original.intermediate_values
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


def test_an_infinite_value_is_never_the_best(study_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(study_home, home)  # the other tests keep their study as it was
    finite = add_infinite_trial(home)
    best = json.loads(_run(home, "best", "s1", "--format", "json").stdout)
    assert (best["number"], best["value"]) == (finite.number, finite.value)
    assert f"#{finite.number}, val_acc = {finite.value:.4g}" in _run(home, "best", "s1").stdout
    family = finite.params["optimizer"]
    data = json.loads(_run(home, "compare", "s1", "--format", "json").stdout)
    [group] = [g for g in data["studies"][0]["groups"] if g["optimizer"] == family]
    assert (group["best"], group["best_trial"]) == (finite.value, finite.number)
    for key in ("median", "q1", "q3", "iqr", "gain_over_default"):
        assert group[key] is not None and math.isfinite(group[key]), key
    table = _run(home, "compare", "s1").stdout
    line = next(line for line in table.splitlines() if line.split()[:1] == [family])
    assert f"{finite.value:.4g} #{finite.number}" in line and "inf" not in line
    [row, _] = json.loads(_run(home, "studies", "--format", "json").stdout)
    assert (row["best_value"], row["best_trial"]) == (finite.value, finite.number)
    ranked = [r["value"] for r in json.loads(_run(home, "trials", "s1", "--sort", "value",
                                                  "--format", "json").stdout)]
    finite_values = [v for v in ranked if v is not None and math.isfinite(v)]
    assert ranked[:len(finite_values)] == sorted(finite_values, reverse=True)  # inf after them
    assert ranked[0] == finite.value and math.inf in ranked


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
