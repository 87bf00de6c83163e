"""Which way an objective goes, and everything that follows from it: which of two values is
better, the sign of a change, the worst value a metric can take, and how a table says so.

One place, so that pruning, the best trial, the queries, the plots, the benchmark and the
rendering never test ``== "maximize"`` on their own (and never disagree on a minimised MSE).
A study stores its direction as the plain string, which is what the Literal holds (defined in
tasks.objectives, beside the loss that decides it, since tasks sit below the study).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar, get_args

from tasks.objectives import Direction

__all__ = ["DIRECTIONS", "Direction", "as_direction", "as_loss", "best_of", "improvement",
           "reaches", "short", "sign", "unbounded_worst", "wording", "worst_value"]

DIRECTIONS: tuple[Direction, ...] = get_args(Direction)

_T = TypeVar("_T")


def as_direction(value: str) -> Direction:
    """`value` as a Direction; a ValueError names the two it may be."""
    for direction in DIRECTIONS:
        if value == direction:
            return direction
    raise ValueError(f"direction must be one of {DIRECTIONS}, but got {value!r}")


def sign(direction: Direction) -> float:
    """+1 where higher is better, -1 where lower is: ``sign * value`` is larger the better."""
    return 1.0 if direction == "maximize" else -1.0


def best_of(items: Iterable[_T], *, key: Callable[[_T], float], direction: Direction) -> _T:
    """The item whose `key` is best (the first of equals); a ValueError when there is none."""
    pick = max if direction == "maximize" else min
    return pick(items, key=key)


def improvement(value: float, reference: float, direction: Direction) -> float:
    """How much better `value` is than `reference`: positive is better, whichever way the
    objective goes (`compare`'s gain over defaults and the benchmark's change both use it)."""
    return value - reference if direction == "maximize" else reference - value


def reaches(value: float, target: float, direction: Direction) -> bool:
    """Whether `value` is at least as good as `target` (``>=`` maximising, ``<=`` not)."""
    return value >= target if direction == "maximize" else value <= target


def as_loss(value: float, direction: Direction) -> float:
    """The value as a loss (lower is better); NaN is the worst of all."""
    if math.isnan(value):
        return math.inf
    return -value if direction == "maximize" else value


def unbounded_worst(direction: Direction) -> float:
    """The worst value of an objective without a bound: -inf maximising, +inf minimising."""
    return -math.inf if direction == "maximize" else math.inf


def worst_value(metric: str, direction: Direction) -> float:
    """What a diverged run scores: the worst its metric can be. Accuracy cannot go below 0;
    an objective minimised without an upper bound (MSE) is +inf; maximised without a lower
    bound, -inf."""
    if direction == "maximize" and metric.endswith("acc"):
        return 0.0
    return unbounded_worst(direction)


def wording(direction: Direction) -> str:
    """What a table's title says of its values: "higher is better" or "lower is better"."""
    return f"{'higher' if direction == 'maximize' else 'lower'} is better"


def short(direction: Direction) -> str:
    """"max" or "min", beside a metric's name where a column is narrow."""
    return "max" if direction == "maximize" else "min"
