"""The expected best validation value after k trials (Dodge et al. 2019): the exact expected
maximum (minimum) of k draws with replacement, checked against brute force, and carried by a
real benchmark's report and plot."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tuner.cli.commands import cli
from tuner.results.benchmark_report import within_budget
from tuner.results.tunability import expected_best, tunability_curve, validation_values
from tuner.study.stores import open_storage

VALUES = [0.7, 0.25, 0.9, 0.25]  # N = 4, with a tie


def _brute_force(values: list[float], k: int, direction: str) -> float:
    """The mean best over all N^k ordered draws with replacement, in exact arithmetic."""
    pick = max if direction == "maximize" else min
    draws = list(itertools.product(values, repeat=k))
    return float(sum(Fraction(pick(d)) for d in draws) / len(draws))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_curve_is_the_exact_expected_best_of_k_draws(direction: str) -> None:
    curve = expected_best(VALUES, direction=direction)
    assert len(curve) == len(VALUES)
    for k, value in enumerate(curve, start=1):
        assert value == pytest.approx(_brute_force(VALUES, k, direction), abs=1e-12, rel=0)


@pytest.mark.parametrize("values", [[3.0, 3.0, 3.0], [0.5, 0.1, 0.5, 0.5, 0.2], [-1.0, 2.0]])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_ties_and_order_do_not_matter(values: list[float], direction: str) -> None:
    curve = expected_best(values, direction=direction)
    assert curve == pytest.approx(expected_best(sorted(values), direction=direction), abs=1e-15)
    for k, value in enumerate(curve, start=1):
        assert value == pytest.approx(_brute_force(values, k, direction), abs=1e-12, rel=0)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_one_trial_is_the_mean_and_many_tend_to_the_best(direction: str) -> None:
    curve = expected_best(VALUES, direction=direction, k_max=400)
    best = max(VALUES) if direction == "maximize" else min(VALUES)
    assert curve[0] == pytest.approx(sum(VALUES) / len(VALUES), abs=1e-12)
    sign = 1 if direction == "maximize" else -1
    assert all(sign * (b - a) >= -1e-15 for a, b in itertools.pairwise(curve))  # never worse
    assert curve[-1] == pytest.approx(best, abs=1e-12)
    assert abs(curve[9] - best) > 1e-4  # still on its way after 10 draws of 4 values


def test_no_values_give_an_empty_curve_and_bad_input_is_refused() -> None:
    assert expected_best([], direction="maximize") == []
    assert expected_best([], direction="minimize", k_max=5) == []
    assert expected_best([1.0], direction="maximize", k_max=0) == []
    with pytest.raises(ValueError, match="direction"):
        expected_best([1.0], direction="max")


def test_only_complete_trials_with_a_finite_value_count() -> None:
    study = optuna.create_study(direction="maximize")
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for value, state in [(0.5, "COMPLETE"), (math.inf, "COMPLETE"), (None, "PRUNED"),
                         (None, "FAIL"), (0.9, "COMPLETE"), (0.5, "COMPLETE")]:
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.1}, distributions=dist, value=value,
            state=optuna.trial.TrialState[state]))
    trials = study.get_trials(deepcopy=False)
    assert validation_values(trials) == [0.5, 0.9, 0.5]
    assert tunability_curve(trials, direction="maximize") == pytest.approx(
        expected_best([0.5, 0.9, 0.5], direction="maximize"), abs=1e-15)
    assert tunability_curve(trials[1:4], direction="maximize") == []


def test_a_benchmark_report_carries_each_optimizers_curve_and_its_plot(home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "benchmark", "--task", "digits-mlp", "--optimizers", "sgd,adam", "--budgets",
        "oneshot,3", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--name", "t",
        "--home", str(home), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["tunability"]) == {"none"}  # per schedule, then per optimizer
    assert set(report["tunability"]["none"]) == {"sgd", "adam"}
    assert report["tuning_metric"] == "val_acc"
    storage = open_storage(f"sqlite:///{home / 'opttune.db'}", create=True)
    for family, curve in report["tunability"]["none"].items():
        trials = optuna.load_study(study_name=f"t.{family}.none", storage=storage).get_trials()
        values = validation_values(within_budget(trials, 3))
        assert curve == pytest.approx(expected_best(values, direction="maximize"), abs=1e-12)
        assert len(curve) == len(values) and 1 <= len(curve) <= 3
        tuned = next(c for c in report["cells"] if (c["optimizer"], c["budget"]) == (family, "3"))
        assert curve[0] == pytest.approx(sum(values) / len(values))
        assert curve[-1] <= tuned["validation"] + 1e-12  # the expected best never beats the best
    plot = next(Path(p) for p in report["files"] if Path(p).name == "tunability.png")
    assert plot.parent == home / "benchmarks" / "t" and plot.stat().st_size > 0
