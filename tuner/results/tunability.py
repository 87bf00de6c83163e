"""How tunable each optimizer is: its expected best validation value after k random-search
trials, for k = 1..N (Dodge, Gururangan, Card, Schwartz & Smith, "Show Your Work: Improved
Reporting of Experimental Results", EMNLP 2019).

From the N validation values a random search observed, the expected best of k trials is the
exact expected maximum of k draws with replacement from those N values (not a simulation).
With the values sorted v_(1) <= ... <= v_(N), all k draws fall among the i smallest with
probability (i/N)^k, so the largest of them is v_(i) with probability (i/N)^k - ((i-1)/N)^k:

    E[max of k] = sum_i v_(i) * ((i/N)^k - ((i-1)/N)^k).

Tied values need no special case: each copy takes its own step of that distribution and the
steps add up to the tied value's probability. For a minimised objective the mirror holds:
the expected minimum, with the values sorted largest first. A curve that rises (falls) fast
belongs to an optimizer that needs few trials; one still climbing at N is far from its best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from tuner.study.direction import Direction, as_direction, sign


def expected_best(values: Sequence[float], *, direction: Direction,
                  k_max: int | None = None) -> list[float]:
    """E[best of k draws with replacement from `values`] for k = 1..`k_max` (default N, the
    number of values): index k-1 holds k's. The best is the maximum for ``maximize``, the
    minimum for ``minimize``. No values: an empty curve."""
    as_direction(direction)  # a caller's typo fails here, not as a minimised curve
    n = len(values)
    if k_max is None:
        k_max = n
    if k_max < 0:
        raise ValueError(f"k_max must be >= 0, but got {k_max}")
    if n == 0:
        return []
    # Worst first: v_(1) is the smallest value when maximising, the largest when minimising.
    ordered = sorted((float(v) for v in values), reverse=sign(direction) < 0)
    curve: list[float] = []
    for k in range(1, k_max + 1):
        # The chance that the best of k draws is the i-th worst value (1-based): (i/n)^k is
        # the chance that all k draws are among the i worst.
        cdf = [(i / n) ** k for i in range(n + 1)]
        curve.append(math.fsum(v * (cdf[i + 1] - cdf[i]) for i, v in enumerate(ordered)))
    return curve


def validation_values(trials: Sequence[FrozenTrial]) -> list[float]:
    """The validation values a search observed, in trial order: its COMPLETE trials with a
    finite value. A pruned or failed trial (a diverged one among them) has no value to draw,
    and an infinite one is no measurement, so neither counts; the curve then has fewer
    points than the budget had trials."""
    return [float(t.value) for t in sorted(trials, key=lambda t: t.number)
            if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value)]


def tunability_curve(trials: Sequence[FrozenTrial], *, direction: Direction) -> list[float]:
    """A search's curve: the expected best validation value after k = 1..N of its trials,
    N its COMPLETE trials with a finite value among `trials` (a budget's trials)."""
    return expected_best(validation_values(trials), direction=direction)
