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

When the ``n ** n`` ordered resamples of ``n`` pairs number at most `resamples`, all of them
are enumerated, each equally likely, so the interval is exact (no simulation error); otherwise
`resamples` of them are drawn with numpy's ``Generator(PCG64(seed))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedChange:
    """The mean paired improvement over the baseline and its bootstrap interval."""

    mean: float  # mean of d_i = improvement(ours_i, base_i): positive is better
    low: float  # lower end of the percentile bootstrap interval of the mean
    high: float  # upper end
    pairs: int  # seed indices with a finite value on both sides
    differs: bool  # the interval excludes 0


def paired_change(ours: Mapping[int, float], base: Mapping[int, float], *, direction: str,
                  level: float = 0.95, resamples: int = 10_000,
                  seed: int = 0) -> PairedChange | None:
    """`ours` against `base`, both by seed index, paired on the indices with a finite value on
    both sides; None with fewer than 2 pairs."""
    import numpy as np

    from tuner.study.records import improvement

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, not {level!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples!r}")
    shared = sorted(i for i in ours.keys() & base.keys()
                    if _finite(ours[i]) and _finite(base[i]))
    if len(shared) < 2:
        return None
    d = np.array([improvement(float(ours[i]), float(base[i]), direction) for i in shared])
    n = len(d)
    if n ** n <= resamples:  # exact: every ordered resample once, each equally likely
        import itertools

        index = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.intp)
    else:
        rng = np.random.Generator(np.random.PCG64(seed))
        index = rng.integers(0, n, size=(resamples, n))
    means = d[index].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0],
                            method="linear")  # the one rule, both paths
    return PairedChange(mean=float(d.mean()), low=float(low), high=float(high), pairs=n,
                        differs=bool(low > 0.0 or high < 0.0))


def paired_text(paired: PairedChange | None) -> str:
    """``+0.0123 [+0.0040, +0.0210] *`` (pairs n): the mean paired change, its 95% bootstrap
    interval, and ``*`` where that interval excludes 0; ``-`` with under 2 pairs."""
    if paired is None:
        return "-"
    return (f"{paired.mean:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"
            f"{' *' if paired.differs else ''} (n={paired.pairs})")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
