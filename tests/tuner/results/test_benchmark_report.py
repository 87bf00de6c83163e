"""benchmark_report: the change against one-shot Adam reads as `compare`'s gain does."""

from __future__ import annotations

import pytest

from tuner.results.benchmark_report import BASELINE, BenchmarkCell, _with_changes
from tuner.study.records import improvement


def _cell(optimizer: str, budget: str, median: float | None) -> BenchmarkCell:
    return BenchmarkCell(optimizer=optimizer, budget=budget, trials=0, trial=None, setting={},
                         validation=None, scores=[], median=median, low=median, high=median,
                         change=None, tuning_seconds=0.0, rerun_seconds=0.0)


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
