"""`opttune benchmark`: equal budgets per optimizer, seed re-runs scored once on the test split,
one JSON document, MLflow under one experiment, and a benchmark that continues where it stopped.

Real (small) benchmarks on digits-mlp, on the CPU.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.gate_task import GATE_ENV, TASK_REF, gate_env, release, wait_reached
from mlflow import MlflowClient

from tuner.cli.commands import cli
from tuner.results.benchmark_report import parse_budgets, within_budget
from tuner.study.records import best_complete, counted
from tuner.study.stores import open_storage

BENCH = ["--task", "digits-mlp", "--optimizers", "sgd,adam", "--budgets", "oneshot,2,3",
         "--seeds", "2", "--epochs", "1", "--device", "cpu"]


def _storage(home: Path) -> Any:
    return open_storage(f"sqlite:///{home / 'opttune.db'}", create=True)


def _study(home: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(home))


def _reruns(home: Path, name: str) -> dict[str, Any]:
    attrs = _study(home, name).user_attrs
    return {k: v for k, v in attrs.items() if k.startswith("rerun:")}


def _runs(home: Path, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory,
             _mlflow_template: Path) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """One real benchmark, run once for the tests that only read it: (home, JSON, stderr)."""
    home = tmp_path_factory.mktemp("bench") / "home"
    home.mkdir()
    shutil.copy(_mlflow_template, home / "mlflow.db")
    result = CliRunner().invoke(cli, ["benchmark", *BENCH, "--name", "b", "--home", str(home),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    yield home, json.loads(result.stdout), result.stderr


def test_json_has_one_entry_per_family_and_budget_with_a_test_value_per_seed(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    _, report, _ = finished
    assert report["benchmark"] == "b" and report["metric"] == "test_acc"
    assert report["budgets"] == ["oneshot", "2", "3"] and report["seeds"] == 2
    assert [(c["optimizer"], c["budget"]) for c in report["cells"]] == [
        ("sgd", "oneshot"), ("sgd", "2"), ("sgd", "3"),
        ("adam", "oneshot"), ("adam", "2"), ("adam", "3")]
    for cell in report["cells"]:
        assert cell["missing"] is None, cell
        values = [s["value"] for s in cell["scores"]]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        assert cell["median"] == pytest.approx(sum(values) / 2)
        assert cell["low"] == min(values) and cell["high"] == max(values)
        assert cell["setting"]["optimizer"] == cell["optimizer"]
    adam = next(c for c in report["cells"] if (c["optimizer"], c["budget"]) == ("adam", "oneshot"))
    assert report["baseline"] == "adam oneshot" and adam["change"] == 0.0
    for cell in report["cells"]:
        assert cell["change"] == pytest.approx(cell["median"] - adam["median"])
    assert {Path(p).name for p in report["files"]} == {"report.json", "table.md", "plot.png",
                                                       "plot.html", "tunability.png"}
    for path in report["files"]:
        assert Path(path).stat().st_size > 0
    table = Path(report["files"][1]).read_text(encoding="utf-8").splitlines()
    assert len(table) == 4 + 6 and table[4].startswith(
        f"| sgd | oneshot | {report['cells'][0]['median']:.4f} |")


def test_oneshot_runs_the_defaults_and_the_papers_sgd_values_untuned(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    _, report, _ = finished
    oneshot = {c["optimizer"]: c for c in report["cells"] if c["budget"] == "oneshot"}
    assert oneshot["adam"]["setting"] == {
        "optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
        "weight_decay": 0.0, "batch_size": 16, "epochs": 1, "scheduler": "none", "hidden": 64}
    assert oneshot["sgd"]["setting"]["lr"] == 1e-2  # the paper's, not PyTorch's 1e-3
    assert all(c["trials"] == 0 and c["trial"] is None for c in oneshot.values())


def test_every_family_gets_exactly_the_budget_and_its_best_within_it(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, report, _ = finished
    for family in ("sgd", "adam"):
        study = _study(home, f"b.{family}")
        trials = study.get_trials(deepcopy=False)
        assert counted(trials) == 3 == len(trials)  # the largest budget, no more
        assert {t.params["optimizer"] for t in trials} == {family}
        assert not any(t.user_attrs.get("defaults_trial") for t in trials)  # one-shot is apart
        assert study.user_attrs["settings"]["sampler"] == "random"
        for budget in (2, 3):
            cell = next(c for c in report["cells"]
                        if (c["optimizer"], c["budget"]) == (family, str(budget)))
            chosen = best_complete(within_budget(trials, budget), "maximize")
            assert chosen is not None and cell["trials"] == budget
            assert cell["trial"] == chosen.number and chosen.number < budget
            assert cell["validation"] == chosen.value
            assert cell["setting"] == chosen.user_attrs["config"]


def test_reruns_train_each_chosen_setting_once_per_seed_with_shared_seeds(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, report, _ = finished
    reruns = _reruns(home, "b")
    chosen = {(c["optimizer"], c["trial"]) for c in report["cells"]}
    assert len(reruns) == 2 * len(chosen)  # a setting two budgets chose is trained once
    # Every optimizer and budget is re-run with the same two seeds (paired comparisons) ...
    seeds = {tuple(s["seed"] for s in c["scores"]) for c in report["cells"]}
    assert len(seeds) == 1 and len(next(iter(seeds))) == 2
    # ... which differ from every tuning trial's seed.
    trial_seeds = {t.number for f in ("sgd", "adam") for t in _study(home, f"b.{f}").trials}
    assert not set(next(iter(seeds))) & trial_seeds


def test_the_test_split_is_scored_only_in_the_reruns(tmp_path: Path, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import tuner.results.retrain as retrain
    import tuner.training.loop as loop

    scored: list[Any] = []  # the test inputs each scoring saw
    real_score = retrain.score_test

    def counting_score(task: Any, model: Any, data: Any, device: str, metric: str) -> Any:
        scored.append(data.test_x)
        return real_score(task, model, data, device, metric)

    evaluated: list[Any] = []  # the inputs of every evaluation, trials' and re-runs'
    real_evaluate = loop.evaluate

    def seen_evaluate(task: Any, model: Any, x: Any, y: Any) -> Any:
        evaluated.append(x.cpu())
        return real_evaluate(task, model, x, y)

    monkeypatch.setattr(retrain, "score_test", counting_score)
    monkeypatch.setattr(loop, "evaluate", seen_evaluate)
    result = CliRunner().invoke(cli, ["benchmark", "--task", "digits-mlp", "--optimizers", "sgd",
                                      "--budgets", "oneshot,2", "--seeds", "2", "--epochs", "1",
                                      "--device", "cpu", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert len(scored) == 4 == len(_reruns(home, "digits-mlp-benchmark"))
    test_x = scored[0]
    on_test = [x for x in evaluated if x.shape == test_x.shape and torch.equal(x, test_x)]
    # The trials' epochs (and the fit on train+validation) evaluate the validation split;
    # only the 4 re-runs' final scoring sees the test split.
    assert len(on_test) == 4 and len(evaluated) > 4


def test_mlflow_holds_the_benchmark_under_one_experiment(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, report, _ = finished
    runs = _runs(home, "b")
    by_role: dict[str, list[Any]] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("opttune.role", ""), []).append(run)
    (top,) = by_role["benchmark"]
    studies = by_role["study"]
    assert sorted(r.data.tags["study"] for r in studies) == ["b.adam", "b.sgd"]
    assert all(r.data.tags["mlflow.parentRunId"] == top.info.run_id for r in studies)
    parents = {r.info.run_id for r in studies}
    assert len(by_role["trial"]) == 6
    assert all(r.data.tags["mlflow.parentRunId"] in parents for r in by_role["trial"])
    reruns = by_role["rerun"]
    assert len(reruns) == len(_reruns(home, "b"))
    assert all(r.data.tags["mlflow.parentRunId"] == top.info.run_id
               and r.info.status == "FINISHED" and "test_acc" in r.data.metrics
               for r in reruns)
    assert len({r.data.tags["rerun_key"] for r in reruns}) == len(reruns)
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    names = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"report.json", "table.md", "plot.png", "plot.html", "tunability.png"} == names
    logged = client.get_run(top.info.run_id).data.metrics
    assert logged["adam.oneshot.median"] == pytest.approx(
        next(c["median"] for c in report["cells"] if (c["optimizer"], c["budget"])
             == ("adam", "oneshot")))


def test_its_searches_check_clean_and_the_record_is_not_a_study(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, _, _ = finished
    runner = CliRunner()
    # Two searches share one experiment: neither takes the other's runs for orphans.
    for family in ("sgd", "adam"):
        checked = runner.invoke(cli, ["check", f"b.{family}", "--home", str(home)])
        assert checked.exit_code == 0, checked.output
    resumed = runner.invoke(cli, ["resume", "b", "--home", str(home)])
    assert resumed.exit_code == 1
    assert "'b' is a benchmark, not a study: run its `opttune benchmark` command again" in \
        resumed.output


def test_running_it_again_does_nothing_twice(finished: tuple[Path, dict[str, Any], str]) -> None:
    home, report, _ = finished
    before = len(_runs(home, "b"))
    again = CliRunner().invoke(cli, ["benchmark", *BENCH, "--name", "b", "--home", str(home),
                                     "--format", "json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["cells"] == report["cells"]
    assert len(_runs(home, "b")) == before


@pytest.mark.parametrize(("args", "line"), [
    (["--budgets", "oneshot,huge"], "Error: --budgets takes oneshot, small (25), medium (50) or "
                                    "a number of trials >= 1, comma-separated, but got 'huge'"),
    (["--budgets", "small,25"], "Error: --budgets names one budget twice (small is 25 trials, "
                                "medium 50), but got 'small,25'"),
    (["--seeds", "0"], "Error: --seeds must be >= 1, but got seeds=0"),
    (["--optimizers", "sgd,lion"], "Error: unknown optimizer 'lion'; known: sgd, momentum, "
                                   "nesterov, adam, adamw, rmsprop, nadam, radam, adagrad"),
])
def test_bad_input_fails_before_any_work(home: Path, args: list[str], line: str) -> None:
    """Guards the contract of a refused benchmark: exit code 1, the one `Error: …` line (on
    stderr, nothing on stdout, no traceback), and nothing made: no study store, so no study,
    and the MLflow store byte for byte as it was (no experiment, no run), nothing else in
    the home folder."""
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    assert set(before) == {"mlflow.db"}  # the home fixture's ready, empty MLflow store
    result = CliRunner().invoke(cli, ["benchmark", "--task", "digits-mlp", "--device", "cpu",
                                      "--home", str(home), *args])
    # A crash is exit code 1 too under CliRunner: only click's own exit is the error path.
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [line], result.output
    assert result.stderr == line + "\n" and result.stdout == ""
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


def test_a_changed_benchmark_or_a_study_name_is_refused(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, _, _ = finished
    runner = CliRunner()
    changed = runner.invoke(cli, ["benchmark", *BENCH[:-4], "--epochs", "2", "--device", "cpu",
                                  "--name", "b", "--home", str(home)])
    assert changed.exit_code == 1
    assert "benchmark 'b' was started with other settings (epochs 1 → 2)" in changed.output
    study = runner.invoke(cli, ["benchmark", *BENCH, "--name", "b.sgd", "--home", str(home)])
    assert study.exit_code == 1 and "'b.sgd' is a study, not a benchmark" in study.output


def test_parse_budgets() -> None:
    assert [(b.label, b.trials) for b in parse_budgets("medium,oneshot,8")] == [
        ("oneshot", 0), ("8", 8), ("medium", 50)]


@pytest.mark.slow
def test_a_killed_benchmark_continues_without_redoing_or_duplicating(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL while a re-run is mid-training, after the searches ended and two re-runs were
    recorded; then the same command: it finishes, the searches keep their trials, what
    finished is not redone, the cut-short re-run is trained again exactly once, and MLflow
    holds each trial and re-run once.

    The kill lands mid-training by construction: the benchmark trains the gate task
    (helpers.gate_task), so every training stops after its first epoch until the test
    releases it, one ticket per training, in order. Trials train one by one (`--population
    1`: a stacked population would train its members without calling each gated model), and
    re-runs always do, in the benchmark's process, with loop.fit, which validates every
    epoch, so they stop at the gate too. Tickets 0-5 are the two searches' 3 trials each,
    then the re-runs: the test lets the first two re-runs finish and kills the benchmark
    while the third one is held with one epoch done."""
    import tuner.search.benchmark as benchmark_module
    import tuner.search.reruns as reruns_module

    gate, log = tmp_path / "gate", tmp_path / "killed.log"
    command = ["benchmark", "--task", TASK_REF, "--optimizers", "sgd,adam", "--budgets",
               "oneshot,2,3", "--seeds", "2", "--epochs", "2", "--population", "1",
               "--device", "cpu", "--name", "k", "--home", str(home)]
    trials = 2 * 3  # the searches' trainings: two families, the largest budget each
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuner", *command], stdout=out,
                                stderr=subprocess.STDOUT, env=gate_env(gate))
    try:
        for ticket in range(trials + 3):
            try:
                held = wait_reached(gate, ticket + 1, proc=proc)[ticket]
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()}") from None
            if ticket >= trials:  # a re-run is held: the searches ended, every trial done
                for family in ("sgd", "adam"):
                    states = [t.state for t in _study(home, f"k.{family}").trials]
                    assert states == [optuna.trial.TrialState.COMPLETE] * 3, (family, states)
                assert len(_reruns(home, "k")) == ticket - trials  # those released before
            if ticket < trials + 2:
                release(gate, held)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGKILL)  # the third re-run: one epoch trained, one to go
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    kept = _reruns(home, "k")
    assert len(kept) == 2  # recorded before the kill: the re-run cut short is not
    searched = {f: [(t.number, t.datetime_start) for t in _study(home, f"k.{f}").trials]
                for f in ("sgd", "adam")}
    assert all(len(v) == 3 for v in searched.values())  # the searches ended before the kill

    # The same command, without the gate (this process has no GATE_ENV): what it re-runs.
    monkeypatch.delenv(GATE_ENV, raising=False)
    todo: list[str] = []
    trained: list[tuple[str, int]] = []
    real_run_reruns, real_train = benchmark_module.run_reruns, reruns_module.train_and_score

    def watched_run_reruns(pending: Any, **kwargs: Any) -> Any:
        todo.extend(r.key for r in pending)
        return real_run_reruns(pending, **kwargs)

    def counted_train(task_obj: Any, data: Any, config: dict[str, Any], **kwargs: Any) -> Any:
        trained.append((json.dumps(config, sort_keys=True), kwargs["seed"]))
        return real_train(task_obj, data, config, **kwargs)

    monkeypatch.setattr(benchmark_module, "run_reruns", watched_run_reruns)
    monkeypatch.setattr(reruns_module, "train_and_score", counted_train)
    result = CliRunner().invoke(cli, [*command, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(c["missing"] is None and len(c["scores"]) == 2 for c in report["cells"])
    done = _reruns(home, "k")
    assert {k: done[k] for k in kept} == kept  # what finished was not redone
    # The rest, the cut-short re-run first (re-runs go in the same order every time), each
    # trained exactly once, and nothing else trained.
    assert sorted(todo) == sorted(set(done) - set(kept)) and len(set(todo)) == len(todo)
    assert len(trained) == len(todo) == len(set(trained))
    for family, trials_before in searched.items():
        assert [(t.number, t.datetime_start)
                for t in _study(home, f"k.{family}").trials] == trials_before
    runs = _runs(home, "k")
    reruns = [r for r in runs if r.data.tags.get("opttune.role") == "rerun"]
    assert sorted(r.info.run_id for r in reruns) == sorted(v["run_id"] for v in done.values())
    assert len({r.data.tags["rerun_key"] for r in reruns}) == len(reruns) == len(done)
    assert len([r for r in runs if r.data.tags.get("opttune.role") == "trial"]) == 6
