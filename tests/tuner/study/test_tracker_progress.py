"""The study's history on its parent run: `trial_value` and `best_value` at step = trial number.

MLflow's UI charts a run's metric history, so these two series draw the study's progress
on the experiment's chart view without opening a single trial. A small real study mixes
complete trials with diverged (pruned) ones: a pruned trial has no value, but the running
best is still recorded at its step. The browser check needs Chromium (Debian: apt-get
install chromium) and is skipped without it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.chromium import CHROMIUM, Chromium
from helpers.servers import opttune_ui
from helpers.services import needs
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli

pytestmark = pytest.mark.slow


# The learning rate of each trial, queued before the study runs: lr 1e9 diverges (a pruned
# trial before any value, and one after some), the others complete with different values.
LRS = [1e9, 0.01, 0.5, 1e9, 0.01, 0.1]
DIVERGES = 1e9


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study p: SGD at four learning rates, 6 one-epoch trials with the learning rates of
    LRS, queued in the study before it runs (the sampler draws only what is not queued)."""
    home = tmp_path_factory.mktemp("progress") / "home"
    home.mkdir()
    shutil.copy(_mlflow_template, home / "mlflow.db")
    args = ["search", "--task", "digits-mlp", "--study", "p", "--optimizers", "sgd",
            "--lr", "0.01,0.1,0.5,1e9", "--weight-decay", "0", "--n-trials", str(len(LRS)),
            "--epochs", "1", "--sampler", "random", "--seed", "7", "--pruner", "none",
            "--no-defaults", "--scheduler", "none", "--device", "cpu", "--home", str(home)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTTUNE_NO_DOWNLOAD", "1")
        env.setenv("OPTTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        # --jobs 0 creates the study and runs nothing; the same search then runs the queue.
        created = CliRunner().invoke(cli, [*args, "--jobs", "0"], catch_exceptions=False)
        assert created.exit_code == 0, created.output
        study = _study(home)
        assert study.trials == []
        for lr in LRS:
            study.enqueue_trial({"lr": lr})
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return home


def _study(home: Path) -> optuna.Study:
    return optuna.load_study(study_name="p", storage=f"sqlite:///{home / 'opttune.db'}")


def _expected(study: optuna.Study) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(trial_value points, best_value points) as (step, value), from the study itself."""
    values: list[tuple[int, float]] = []
    best: list[tuple[int, float]] = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.value is not None:
            values.append((t.number, t.value))
        if values:
            best.append((t.number, max(v for _, v in values)))
    return values, best


def test_the_parent_run_charts_each_trial_and_the_running_best(study_home: Path) -> None:
    """Guards the parent run's `trial_value` (complete trials) and `best_value` (every trial
    from the first value on, pruned ones too) series, and its latest values."""
    study = _study(study_home)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # val_acc
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    # The subject exists: trials of different values, and trials without one (the diverging
    # lr's), among them the first (no best at its step yet) and one after values.
    assert [t.params["lr"] for t in trials] == LRS  # the queued trials ran, in order
    assert [t.state for t in trials] == [TrialState.PRUNED if lr == DIVERGES
                                         else TrialState.COMPLETE for lr in LRS]
    assert len({t.value for t in complete}) >= 2, [t.value for t in complete]
    assert all(t.user_attrs["prune_reason"] == "diverged" for t in pruned)

    client = MlflowClient(tracking_uri=f"sqlite:///{study_home / 'mlflow.db'}")
    parent = study.user_attrs["mlflow"]["parent_run_id"]
    values = sorted(client.get_metric_history(parent, "trial_value"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in values] == [(t.number, t.value) for t in complete]

    best = sorted(client.get_metric_history(parent, "best_value"), key=lambda m: m.step)
    expected_values, expected_best = _expected(study)
    assert [(m.step, m.value) for m in values] == expected_values
    assert [(m.step, m.value) for m in best] == expected_best
    assert [m.step for m in best] == [t.number for t in trials[1:]]  # pruned ones too
    points = [m.value for m in best]
    assert points == sorted(points) and points[-1] == study.best_value
    assert len(set(points)) >= 2  # the best moved during the study

    # The run's latest values (the runs table's columns) are the last trial's and the best.
    run = client.get_run(parent)
    assert run.data.metrics["best_value"] == study.best_value
    assert trials[-1].state == TrialState.COMPLETE
    assert run.data.metrics["trial_value"] == trials[-1].value
    # The trial runs themselves carry no study series.
    for t in trials:
        child = client.get_run(t.user_attrs["mlflow_run_id"])
        assert "best_value" not in child.data.metrics
        assert "trial_value" not in child.data.metrics


# -- in the MLflow UI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui(study_home: Path) -> Iterator[str]:
    """`opttune ui p` as a real process group, always stopped after; yields its printed URL."""
    with opttune_ui(study_home, "p") as running:
        yield running.url


CHARTS = """Array.from(document.querySelectorAll(
  '[data-testid=experiment-view-compare-runs-card]')).map(card => {
    const plot = card.querySelector('.js-plotly-plot');
    const box = plot ? plot.getBoundingClientRect() : null;
    return {title: card.innerText.trim().split('\\n')[0].trim(),
            traces: (plot && plot.data || []).map(d => ({name: d.name, x: Array.from(d.x || []),
                                                         y: Array.from(d.y || [])})),
            box: box ? [box.left, box.top, box.width, box.height] : null};
  }).filter(c => c.traces.length)"""


@needs(CHROMIUM is not None, "needs Chromium (Debian: apt-get install chromium)")
def test_the_experiments_chart_view_draws_the_study_history(ui: str, study_home: Path,
                                                            tmp_path: Path) -> None:
    study = _study(study_home)
    expected_values, expected_best = _expected(study)
    assert len(expected_best) >= 2  # something to draw
    browser = Chromium(tmp_path / "profile")
    try:
        # The study's page that `opttune ui` prints, in its chart view.
        browser.open(f"{ui}&compareRunsMode=CHART")
        wanted = {"best_value", "trial_value"}
        found = f"(c => {sorted(wanted)}.every(t => c.some(x => x.title === t)) && c)({CHARTS})"
        charts: list[dict[str, Any]] = browser.wait_for(found, timeout=90)
        png = browser.screenshot(tmp_path / "study-history.png")
    finally:
        browser.close()
    by_title = {c["title"]: c for c in charts}
    for title, points in (("best_value", expected_best), ("trial_value", expected_values)):
        traces = by_title[title]["traces"]
        assert {t["name"] for t in traces} == {"p"}  # the study's parent run, no trial run
        assert traces[0]["x"] == [step for step, _ in points]
        assert traces[0]["y"] == pytest.approx([value for _, value in points])
        left, top, width, height = by_title[title]["box"]
        assert width > 100 and height > 100 and 0 <= left and 0 <= top < 1100  # on screen
    # A real picture of the page: a PNG of the whole viewport.
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1600, 1100)
