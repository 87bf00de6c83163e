"""benchmark_cells: the change against one-shot Adam reads as `compare`'s gain does, is taken
under the cell's own schedule, and every seed counts (a diverged one as the worst value)."""

from __future__ import annotations

import math
import statistics

import pytest

from tuner.results.benchmark_cells import _headline, _with_changes, _with_target
from tuner.results.benchmark_report import BASELINE, BenchmarkCell, Budget, SeedScore
from tuner.results.paired import paired_change
from tuner.study.direction import improvement, worst_value


def _cell(optimizer: str, budget: str, median: float | None, *, schedule: str = "none",
          values: list[float | None] | None = None,
          validation: float | None = None) -> BenchmarkCell:
    scores = [SeedScore(seed=100 + i, value=v, loss=None, seconds=1.0, run_id="",
                        diverged=None if v is not None else "diverged: loss nan",
                        curve=[(1, v if v is not None else math.nan, 1.0)])
              for i, v in enumerate(values or [])]
    return BenchmarkCell(optimizer=optimizer, budget=budget, trials=0, trial=None, setting={},
                         validation=validation, scores=scores, median=median, low=median,
                         high=median, change=None, tuning_seconds=0.0, rerun_seconds=0.0,
                         schedule=schedule, diverged=sum(v is None for v in values or []))


@pytest.mark.parametrize(("direction", "better", "worse"),
                         [("maximize", 0.93, 0.85), ("minimize", 0.20, 0.40)])
def test_a_change_is_positive_where_the_cell_beats_one_shot_adam(
        direction: str, better: float, worse: float) -> None:
    """Guards the sign: positive means better than one-shot Adam for accuracy (maximised) and
    for MSE (minimised) alike, never "higher is positive" for a regression."""
    base = 0.90 if direction == "maximize" else 0.30
    cells = [_cell(*BASELINE, base), _cell("sgd", "small", better),
             _cell("momentum", "small", worse), _cell("nadam", "small", None)]
    changed = {c.optimizer: c.change for c in _with_changes(cells, direction)}
    assert changed["adam"] == 0.0 and changed["nadam"] is None
    assert changed["sgd"] == pytest.approx(abs(better - base)) and changed["sgd"] > 0
    assert changed["momentum"] == pytest.approx(-abs(worse - base)) and changed["momentum"] < 0
    # the one rule `compare` uses for its gain over a family's defaults
    assert changed["sgd"] == improvement(better, base, direction)


def test_without_one_shot_adam_there_is_no_change() -> None:
    cells = [_cell("sgd", "small", 0.9)]
    assert [c.change for c in _with_changes(cells, "maximize")] == [None]


def test_each_schedule_is_compared_with_its_own_one_shot_adam() -> None:
    """A cosine cell against cosine Adam, never against Adam without a schedule: otherwise
    the schedule would pass for what tuning bought."""
    cells = [_cell("adam", "oneshot", 0.80, values=[0.80, 0.80]),
             _cell("adam", "oneshot", 0.90, schedule="cosine", values=[0.90, 0.90]),
             _cell("sgd", "small", 0.92, schedule="cosine", values=[0.92, 0.92]),
             _cell("sgd", "small", 0.85, values=[0.85, 0.85])]
    out = {(c.optimizer, c.schedule): c for c in _with_changes(cells, "maximize", 0.0)}
    assert out[("sgd", "cosine")].change == pytest.approx(0.02)  # not 0.12
    assert out[("sgd", "none")].change == pytest.approx(0.05)
    assert out[("sgd", "cosine")].paired is not None
    assert out[("sgd", "cosine")].paired.mean == pytest.approx(0.02)


def test_a_diverged_seed_counts_as_the_worst_value_in_the_pairs() -> None:
    worst = worst_value("test_acc", "maximize")
    assert worst == 0.0
    cells = _with_changes([_cell("adam", "oneshot", None, values=[0.8, 0.7, 0.9]),
                           _cell("sgd", "oneshot", None, values=[0.85, None, 0.95])],
                          "maximize", worst)
    sgd = cells[1].paired
    assert sgd is not None and sgd.pairs == 3  # the diverged seed is paired, as 0
    assert sgd.mean == pytest.approx((0.05 - 0.7 + 0.05) / 3)
    assert sgd.low < 0 < sgd.high or sgd.high < 0  # it no longer looks like a gain
    assert worst_value("test_mse", "minimize") == math.inf


def test_a_diverged_seed_in_a_minimised_metric_gives_an_unbounded_interval() -> None:
    """MSE has no worst finite value: one diverged seed on our side makes that pair -inf, and
    the interval's lower end -inf, without NaN."""
    inf = math.inf
    change = paired_change({1: 0.2, 2: inf, 3: 0.1}, {1: 0.3, 2: 0.3, 3: 0.3},
                           direction="minimize")
    assert change is not None and change.pairs == 3
    assert change.mean == -inf and change.low == -inf
    # d = (0.1, -inf, 0.2): of the 27 resamples, the 8 without seed 2 are finite; sorted,
    # the last two means are 1/6 and 0.2, and the 0.975 quantile lies 0.35 of the way
    # between them (position 0.975 * 26 = 25.35).
    assert change.high == pytest.approx(1 / 6 + (0.2 - 1 / 6) * 0.35)
    assert not change.differs
    both = paired_change({1: inf, 2: 0.2}, {1: inf, 2: 0.3}, direction="minimize")
    assert both is not None and both.mean == pytest.approx(0.05)  # both diverged: a tie
    mixed = paired_change({1: inf, 2: 0.2}, {1: 0.3, 2: inf}, direction="minimize")
    assert mixed is not None and (mixed.low, mixed.high) == (-inf, inf)


def test_time_to_target_counts_a_run_that_never_reaches_it_as_slowest() -> None:
    cell = _cell("sgd", "small", None, values=[0.9, 0.95, None])
    timed = _with_target(cell, 0.92, "maximize").to_target
    assert timed is not None and timed.reached == 1 and timed.runs == 3
    assert timed.epochs is None and timed.seconds is None  # 2 of 3 never: the median never
    fast = _with_target(_cell("adam", "small", None, values=[0.93, 0.95, 0.8]), 0.92,
                        "maximize").to_target
    assert fast is not None and (fast.epochs, fast.seconds, fast.reached) == (1, 1.0, 2)


def test_the_headline_pairs_each_tuned_cell_with_the_best_validated_one_shot() -> None:
    cells = [_cell("sgd", "oneshot", None, values=[0.7, 0.8], validation=0.75),
             _cell("adam", "oneshot", None, values=[0.9, 0.85], validation=0.88),
             _cell("sgd", "small", None, values=[0.92, 0.86]),
             _cell("adam", "small", None, values=[0.91, 0.83])]
    (head,) = _headline(cells, ["none"], [Budget("oneshot", 0), Budget("small", 25)],
                        "maximize", 0.0)
    assert head.oneshot == "adam" and head.budget == "small"  # adam validated best
    assert set(head.rows) == {"sgd", "adam"}
    sgd = head.rows["sgd"]
    assert sgd is not None
    assert sgd.mean == pytest.approx(statistics.mean([0.92 - 0.9, 0.86 - 0.85]))
    minimized = _headline(cells, ["none"], [Budget("oneshot", 0), Budget("small", 25)],
                          "minimize", math.inf)
    assert minimized[0].oneshot == "sgd"  # lower validation wins when minimising


def test_without_adam_the_first_optimizers_one_shot_cells_are_the_reference() -> None:
    from tuner.results.benchmark_cells import reference_family

    assert reference_family(["sgd", "adam"]) == "adam"  # the paper's reference when compared
    assert reference_family(["adamw", "lion", "muon"]) == "adamw"
    cells = [_cell("adamw", "oneshot", 0.87, values=[0.87, 0.86]),
             _cell("lion", "small", 0.88, values=[0.88, 0.88])]
    changed = _with_changes(cells, "maximize", 0.0, reference="adamw")
    assert changed[1].change == pytest.approx(0.01)
    assert changed[1].paired is not None and changed[1].paired.mean == pytest.approx(0.015)
    assert [c.change for c in _with_changes(cells, "maximize", 0.0)] == [None, None]
