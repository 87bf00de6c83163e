"""`opttune benchmark`: equal budgets per optimizer, seed re-runs scored once on the test split,
one JSON document, MLflow under one experiment, and a benchmark that continues where it stopped.

Real (small) benchmarks on digits-mlp, on the CPU.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
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
from tuner.space.families import FAMILIES
from tuner.study.stores import open_storage
from tuner.study.studies import best_complete, counted

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
    assert report["schedules"] == ["none"] and report["space"] == "opttune"
    assert [(c["optimizer"], c["budget"]) for c in report["cells"]] == [
        ("sgd", "oneshot"), ("sgd", "2"), ("sgd", "3"),
        ("adam", "oneshot"), ("adam", "2"), ("adam", "3")]
    for cell in report["cells"]:
        assert cell["missing"] is None, cell
        assert cell["schedule"] == "none" == cell["setting"]["scheduler"]
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
    rows = [line for line in table if line.startswith("| none |")]
    assert len(rows) == 6 and rows[0].startswith(
        f"| none | sgd | oneshot | {report['cells'][0]['median']:.4f} |")


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
        study = _study(home, f"b.{family}.none")
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
    trial_seeds = {t.number for f in ("sgd", "adam")
                   for t in _study(home, f"b.{f}.none").trials}
    assert not set(next(iter(seeds))) & trial_seeds


def test_the_test_split_is_seen_only_by_the_reruns(tmp_path: Path, home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials and one-shot validations evaluate the validation split; only the re-runs see
    the test split, once after each epoch (one at a time here, through loop.fit)."""
    import torch

    import tuner.training.loop as loop
    from tasks.registry import get_task

    evaluated: list[Any] = []  # the inputs of every evaluation, trials' and re-runs'
    real_evaluate = loop.evaluate

    def seen_evaluate(task: Any, model: Any, x: Any, y: Any) -> Any:
        evaluated.append(x.cpu())
        return real_evaluate(task, model, x, y)

    monkeypatch.setattr(loop, "evaluate", seen_evaluate)
    result = CliRunner().invoke(cli, ["benchmark", "--task", "digits-mlp", "--optimizers", "sgd",
                                      "--budgets", "oneshot,2", "--seeds", "2", "--epochs", "2",
                                      "--population", "1", "--device", "cpu", "--home",
                                      str(home)])
    assert result.exit_code == 0, result.output
    assert len(_reruns(home, "digits-mlp-benchmark")) == 4
    test_x = get_task("digits-mlp").read_data().test_x
    on_test = [x for x in evaluated if x.shape == test_x.shape and torch.equal(x, test_x)]
    # 2 trials and 1 one-shot validation x 2 epochs on validation; 4 re-runs x 2 epochs on test
    assert len(on_test) == 4 * 2 and len(evaluated) == 3 * 2 + 4 * 2


def test_mlflow_holds_the_benchmark_under_one_experiment(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, report, _ = finished
    runs = _runs(home, "b")
    by_role: dict[str, list[Any]] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("opttune.role", ""), []).append(run)
    (top,) = by_role["benchmark"]
    studies = by_role["study"]
    assert sorted(r.data.tags["study"] for r in studies) == ["b.adam.none", "b.sgd.none"]
    assert all(r.data.tags["mlflow.parentRunId"] == top.info.run_id for r in studies)
    parents = {r.info.run_id for r in studies}
    assert len(by_role["trial"]) == 6
    validations = by_role["oneshot-validation"]  # one per family: the headline's choice
    assert sorted(r.data.tags["optimizer"] for r in validations) == ["adam", "sgd"]
    assert all("val_acc" in r.data.metrics for r in validations)
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
    assert logged["adam.none.oneshot.median"] == pytest.approx(
        next(c["median"] for c in report["cells"] if (c["optimizer"], c["budget"])
             == ("adam", "oneshot")))


def test_its_searches_check_clean_and_the_record_is_not_a_study(
        finished: tuple[Path, dict[str, Any], str]) -> None:
    home, _, _ = finished
    runner = CliRunner()
    # Two searches share one experiment: neither takes the other's runs for orphans.
    for family in ("sgd", "adam"):
        checked = runner.invoke(cli, ["check", f"b.{family}.none", "--home", str(home)])
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
    (["--optimizers", "sgd,nope"], f"Error: unknown optimizer 'nope'; known: "
                                   f"{', '.join(FAMILIES)}"),
    (["--schedules", "none,linear"], "Error: --schedules takes none, cosine, step, onecycle, "
                                     "warmup, comma-separated, but got 'none,linear'"),
    (["--schedules", "cosine,cosine"], "Error: --schedules names one schedule twice, but got "
                                       "'cosine,cosine'"),
    (["--target", "nan"], "Error: --target must be a finite number, but got target=nan"),
    (["--population", "0"], "Error: --population must be >= 1, but got 0"),
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
    study = runner.invoke(cli, ["benchmark", *BENCH, "--name", "b.sgd.none", "--home",
                                str(home)])
    assert study.exit_code == 1 and "'b.sgd.none' is a study, not a benchmark" in study.output


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
    # the searches' trainings (two families, the largest budget each), then the two one-shot
    # settings' validations
    trials = 2 * 3 + 2
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
                    states = [t.state for t in _study(home, f"k.{family}.none").trials]
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
    searched = {f: [(t.number, t.datetime_start) for t in _study(home, f"k.{f}.none").trials]
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
        (seed,) = kwargs["seeds"]  # --population 1: one re-run at a time
        trained.append((json.dumps(config, sort_keys=True), seed))
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
                for t in _study(home, f"k.{family}.none").trials] == trials_before
    runs = _runs(home, "k")
    reruns = [r for r in runs if r.data.tags.get("opttune.role") == "rerun"]
    assert sorted(r.info.run_id for r in reruns) == sorted(v["run_id"] for v in done.values())
    assert len({r.data.tags["rerun_key"] for r in reruns}) == len(reruns) == len(done)
    assert len([r for r in runs if r.data.tags.get("opttune.role") == "trial"]) == 6


def test_each_schedule_gets_its_own_one_shot_and_tuned_cells(home: Path) -> None:
    """The schedule is a condition: each gets its own search (the schedule fixed in every
    trial), its own one-shot run under it, and cells compared with its own one-shot Adam."""
    result = CliRunner().invoke(cli, [
        "benchmark", "--task", "digits-mlp", "--optimizers", "sgd,adam", "--budgets",
        "oneshot,2", "--seeds", "2", "--epochs", "1", "--schedules", "none,cosine",
        "--device", "cpu", "--name", "s", "--home", str(home), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schedules"] == ["none", "cosine"]
    cells = {(c["schedule"], c["optimizer"], c["budget"]): c for c in report["cells"]}
    assert set(cells) == {(s, f, b) for s in ("none", "cosine") for f in ("sgd", "adam")
                          for b in ("oneshot", "2")}
    for (schedule, family, budget), cell in cells.items():
        assert cell["setting"]["scheduler"] == schedule and cell["missing"] is None
        assert len(cell["scores"]) == 2
        base = cells[(schedule, "adam", "oneshot")]
        assert cell["change"] == pytest.approx(cell["median"] - base["median"])
        if budget == "2":
            trials = _study(home, f"s.{family}.{schedule}").trials
            assert len(trials) == 2
            assert {t.user_attrs["config"]["scheduler"] for t in trials} == {schedule}
            assert "scheduler" not in {k for t in trials for k in t.distributions}
    assert set(report["tunability"]) == {"none", "cosine"}
    assert [h["schedule"] for h in report["headline"]] == ["none", "cosine"]
    # the one-shot cells differ only in their schedule
    for family in ("sgd", "adam"):
        plain = dict(cells[("none", family, "oneshot")]["setting"], scheduler="x")
        assert plain == dict(cells[("cosine", family, "oneshot")]["setting"], scheduler="x")


def test_a_diverging_seed_counts_as_the_worst_value_and_is_marked(home: Path) -> None:
    from helpers.unstable_task import TASK_REF as UNSTABLE
    from helpers.unstable_task import diverges

    from tuner.training.seeds import rerun_seed

    seeds = 6
    broken = [diverges(rerun_seed(0, i)) for i in range(seeds)]
    assert 0 < sum(broken) < seeds  # the subject exists: some diverge, some do not
    result = CliRunner().invoke(cli, [
        "benchmark", "--task", UNSTABLE, "--optimizers", "sgd,adam", "--budgets", "oneshot",
        "--seeds", str(seeds), "--epochs", "1", "--device", "cpu", "--name", "u", "--home",
        str(home), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["worst"] == 0.0
    for cell in report["cells"]:
        scores = cell["scores"]
        assert [s["value"] is None for s in scores] == broken
        assert all(s["diverged"].startswith("diverged: training loss became nan")
                   for s in scores if s["value"] is None)
        assert cell["diverged"] == sum(broken) and cell["missing"] is None
        counted_values = [0.0 if s["value"] is None else s["value"] for s in scores]
        assert cell["median"] == pytest.approx(statistics.median(counted_values))
        assert cell["low"] == 0.0
    sgd = next(c for c in report["cells"] if c["optimizer"] == "sgd")
    assert sgd["paired"]["pairs"] == seeds  # diverged seeds are paired, not left out
    table = Path(next(p for p in report["files"] if p.endswith("table.md"))).read_text()
    assert f"| {sum(broken)}/{seeds} |" in table


def test_reruns_in_a_population_equal_the_same_reruns_one_at_a_time() -> None:
    """The population path and the one-at-a-time path of the re-runs give the same per-seed
    test values (within the population tests' tolerance: float re-association only)."""
    from tasks.registry import get_task
    from tuner.search.benchmark import oneshot_config
    from tuner.search.reruns import rerun_data, train_and_score
    from tuner.space.searchspace import build_space

    task = get_task("digits-mlp")
    space = build_space(optimizers=["adam"], epochs=2, defaults_first=False,
                        default_batch_size=task.batch_size, task_params=task.param_specs({}))
    config = oneshot_config(space, "adam", schedule="cosine", source="paper")
    split = rerun_data(task.read_data(), "cpu")
    seeds = [11, 12, 13]
    together = train_and_score(task, split, config, device="cpu", seeds=seeds)
    alone = [train_and_score(task, split, config, device="cpu", seeds=[s])[0]
             for s in seeds]
    assert [o["population"] for o in together] == [3, 3, 3]
    assert [o["population"] for o in alone] == [1, 1, 1]
    for a, b in zip(together, alone, strict=True):
        assert a["seed"] == b["seed"] and a["value"] is not None
        assert a["value"] == pytest.approx(b["value"], abs=1 / 360)  # at most one test digit
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert [e for e, _, _ in a["curve"]] == [1, 2]
        assert a["curve"][-1][1] == a["value"]  # the last epoch's test value is the score
    assert len({o["value"] for o in alone} | {o["loss"] for o in alone}) > 1  # seeds differ


def test_two_tasks_give_one_performance_profile(home: Path) -> None:
    from helpers.gate_task import TASK_REF as GATED

    result = CliRunner().invoke(cli, [
        "benchmark", "--task", "digits-mlp", "--task", GATED, "--optimizers", "sgd,adam",
        "--budgets", "oneshot,2", "--seeds", "2", "--epochs", "2", "--device", "cpu",
        "--name", "p", "--home", str(home), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["benchmark"] for r in out["reports"]] == ["p-digits-mlp", "p-gate"]
    assert set(out["times"]) == {r["task"] for r in out["reports"]}
    entries = {"sgd oneshot", "sgd 2", "adam oneshot", "adam 2"}
    assert set(out["scores"]) == entries
    assert all(0.0 <= v <= 1.0 for v in out["scores"].values())
    for report in out["reports"]:
        times = out["times"][report["task"]]
        for cell in report["cells"]:
            entry = f"{cell['optimizer']} {cell['budget']}"
            assert times[entry] == cell["to_target"]["seconds"]
    reached = [t for task in out["times"].values() for t in task.values() if t is not None]
    assert reached  # adam one-shot reaches its own median target by construction
    assert {Path(p).name for p in out["files"]} == {"profile.json", "profile.png"}
    again = CliRunner().invoke(cli, ["benchmark", "--task", "digits-mlp", "--task", GATED,
                                     "--target", "0.9", "--home", str(home)])
    assert again.exit_code == 1 and "--target is one task's value" in again.output


def test_the_papers_space_and_torchs_one_shot_settings_on_request(home: Path) -> None:
    from tuner.space.crowded_valley import oneshot_setting

    result = CliRunner().invoke(cli, [
        "benchmark", "--task", "digits-mlp", "--optimizers", "sgd,momentum", "--budgets",
        "oneshot,2", "--seeds", "1", "--epochs", "1", "--space", "crowded-valley",
        "--oneshot", "torch", "--device", "cpu", "--name", "cv", "--home", str(home),
        "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["space"] == "crowded-valley" and report["oneshot_source"] == "torch"
    for cell in report["cells"]:
        if cell["budget"] == "oneshot":
            expected = oneshot_setting(cell["optimizer"], source="torch").hyper
            assert {k: cell["setting"][k] for k in expected} == dict(expected)
    trials = _study(home, "cv.momentum.none").trials
    assert trials and all(t.params["weight_decay"] == 0.0 if "weight_decay" in t.params
                          else t.user_attrs["config"]["weight_decay"] == 0.0 for t in trials)
    assert all(1e-4 <= t.user_attrs["config"]["lr"] <= 1.0 for t in trials)


def test_a_first_protocol_benchmark_is_refused_not_misread(home: Path) -> None:
    ran = CliRunner().invoke(cli, ["benchmark", *BENCH[:6], "--budgets", "oneshot", "--seeds",
                                   "1", "--epochs", "1", "--device", "cpu", "--name", "old",
                                   "--home", str(home)])
    assert ran.exit_code == 0, ran.output
    record = _study(home, "old")
    settings = dict(record.user_attrs["settings"])
    del settings["protocol"]
    record.set_user_attr("settings", settings)
    again = CliRunner().invoke(cli, ["benchmark", *BENCH[:6], "--budgets", "oneshot", "--seeds",
                                     "1", "--epochs", "1", "--device", "cpu", "--name", "old",
                                     "--home", str(home)])
    assert again.exit_code == 1
    assert again.stderr.startswith("Error: benchmark 'old' was run under opttune's first "
                                   "benchmark protocol")
    deleted = CliRunner().invoke(cli, ["delete", "old", "--yes", "--home", str(home)])
    assert deleted.exit_code == 0, deleted.output


def test_reruns_of_a_model_that_cannot_stack_train_one_at_a_time_and_say_so() -> None:
    import torch

    from tasks.base import Task
    from tasks.digits import load_digits_data
    from tuner.search.reruns import rerun_data, train_and_score

    def batch_norm(params: Any) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                   torch.nn.ReLU(), torch.nn.Linear(32, 10))

    task = Task(name="bn", load_data=load_digits_data, build_model=batch_norm, batch_size=64)
    config = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 1,
              "scheduler": "none"}
    outcomes = train_and_score(task, rerun_data(task.read_data(), "cpu"), config,
                               device="cpu", seeds=[1, 2])
    assert [o["population"] for o in outcomes] == [1, 1]
    assert all(o["value"] is not None for o in outcomes)
    assert outcomes[0]["notice"].startswith("adam's re-runs train one at a time: "
                                            "BatchNorm1d at '1'")
