"""A cell's change against one-shot Adam as a paired difference with a bootstrap interval.

Every cell of a benchmark re-runs its setting with the same seed indices, so re-run ``i`` of a
cell and re-run ``i`` of the baseline share a seed. :func:`paired_change` pairs them by seed
index, takes each pair's improvement ``d_i`` (positive: better, for an objective maximised or
minimised alike) and gives the mean of ``d`` with a percentile bootstrap interval of that mean
(Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13): the pairs are resampled
with replacement, and the interval is read off the distribution of the resampled means.

Percentile rule (both paths): the lower end is the ``(1 - level) / 2`` quantile and the upper
end the ``(1 + level) / 2`` quantile of the resampled means, by numpy's ``"linear"`` method
(the sorted means interpolated linearly at position ``q * (m - 1)``, ``m`` of them).

A diverged re-run enters as its metric's worst value (tuner.results.benchmark_cells), which
may be infinite (MSE): a pair where only one side diverged then differs by +-inf, a pair where
both did is a tie (0). The quantiles take an infinite neighbour as it is (the linear rule's
limit), and a resample holding both +inf and -inf differences has no mean: where any has
none, the interval is (-inf, +inf) and excludes nothing.

When the ``n ** n`` ordered resamples of ``n`` pairs number at most `resamples`, all of them
are enumerated, each equally likely, so the interval is exact (no simulation error); otherwise
`resamples` of them are drawn with numpy's ``Generator(PCG64(seed))``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tuner.study.direction import Direction, improvement


@dataclass(frozen=True)
class PairedChange:
    """The mean paired improvement over the baseline and its bootstrap interval."""

    mean: float  # mean of d_i = improvement(ours_i, base_i): positive is better
    low: float  # lower end of the percentile bootstrap interval of the mean
    high: float  # upper end
    pairs: int  # seed indices with a value on both sides
    differs: bool  # the interval excludes 0


def paired_change(ours: Mapping[int, float], base: Mapping[int, float], *, direction: Direction,
                  level: float = 0.95, resamples: int = 10_000,
                  seed: int = 0) -> PairedChange | None:
    """`ours` against `base`, both by seed index, paired on the indices with a value (not
    None or NaN; +-inf counts) on both sides; None with fewer than 2 pairs."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples!r}")
    shared = sorted(i for i in ours.keys() & base.keys()
                    if _known(ours[i]) and _known(base[i]))
    if len(shared) < 2:
        return None
    d = np.array([0.0 if ours[i] == base[i] else  # two equal infinities: a tie
                  improvement(float(ours[i]), float(base[i]), direction) for i in shared])
    n = len(d)
    if n ** n <= resamples:  # exact: every ordered resample once, each equally likely
        index = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.intp)
    else:
        rng = np.random.Generator(np.random.PCG64(seed))
        index = rng.integers(0, n, size=(resamples, n))
    with np.errstate(invalid="ignore"):  # +inf and -inf in one resample: no mean (NaN)
        means = d[index].mean(axis=1)
        mean = float(d.mean())
    qs = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    if np.isnan(means).any():
        low, high = -math.inf, math.inf
    elif np.isfinite(means).all():
        low, high = np.quantile(means, qs, method="linear")  # the one rule, both paths
    else:
        low, high = (_linear_quantile(np.sort(means), q) for q in qs)
    return PairedChange(mean=mean, low=float(low), high=float(high), pairs=n,
                        differs=bool(low > 0.0 or high < 0.0))


def _linear_quantile(ordered: npt.NDArray[np.float64], q: float) -> float:
    """numpy's "linear" quantile of sorted values, where an infinite neighbour is taken as
    it is (the limit of the interpolation) instead of giving NaN."""
    position = q * (len(ordered) - 1)
    below = int(math.floor(position))
    above = min(below + 1, len(ordered) - 1)
    a, b, t = float(ordered[below]), float(ordered[above]), position - below
    if t == 0.0 or a == b or math.isinf(a):
        return a
    if math.isinf(b):
        return b
    return a + (b - a) * t


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
