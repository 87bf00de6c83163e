"""The paired change against the baseline: exact and Monte Carlo percentile bootstrap."""

from __future__ import annotations

import itertools

import pytest

from tuner.results.benchmark_text import paired_text
from tuner.results.paired import PairedChange, paired_change


def _hand_interval(d: list[float], level: float) -> tuple[float, float]:
    """The percentile rule done by hand: every ordered resample's mean, sorted, and the
    quantiles at (1 -/+ level) / 2 interpolated linearly at position q * (m - 1)."""
    n = len(d)
    means = sorted(sum(d[i] for i in pick) / n for pick in itertools.product(range(n), repeat=n))

    def quantile(q: float) -> float:
        pos = q * (len(means) - 1)
        below = int(pos)
        above = min(below + 1, len(means) - 1)
        return means[below] + (pos - below) * (means[above] - means[below])

    return quantile((1 - level) / 2), quantile((1 + level) / 2)


def _maximised(d: list[float]) -> tuple[dict[int, float], dict[int, float]]:
    """ours and base by seed index whose improvements (maximised) are d."""
    return {i: 1.0 + x for i, x in enumerate(d)}, {i: 1.0 for i in range(len(d))}


def test_exact_path_matches_a_hand_enumeration_of_the_27_resamples() -> None:
    d = [0.1, 0.2, 0.6]
    ours, base = _maximised(d)
    got = paired_change(ours, base, direction="maximize")
    assert got is not None
    low, high = _hand_interval(d, 0.95)
    assert got.mean == pytest.approx(0.3, abs=1e-12)
    assert got.low == pytest.approx(low, abs=1e-12)
    assert got.high == pytest.approx(high, abs=1e-12)
    assert got.pairs == 3
    assert got.differs


def test_exact_path_at_another_level() -> None:
    d = [-0.05, 0.02, 0.04, 0.1]
    ours, base = _maximised(d)
    got = paired_change(ours, base, direction="maximize", level=0.8)
    assert got is not None
    low, high = _hand_interval(d, 0.8)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


def test_monte_carlo_approaches_the_exact_interval() -> None:
    d = [0.03, -0.01, 0.05, 0.02, 0.08]  # 5 ** 5 = 3125 resamples
    ours, base = _maximised(d)
    exact = paired_change(ours, base, direction="maximize")
    drawn = paired_change(ours, base, direction="maximize", resamples=200_000, seed=3)
    small = paired_change(ours, base, direction="maximize", resamples=3124, seed=3)
    assert exact is not None and drawn is not None and small is not None
    assert (exact.low, exact.high) == pytest.approx(_hand_interval(d, 0.95), abs=1e-12)
    assert drawn.low == pytest.approx(exact.low, abs=0.01)
    assert drawn.high == pytest.approx(exact.high, abs=0.01)
    assert drawn.mean == exact.mean
    assert small != exact  # 3124 < 5 ** 5: drawn, not enumerated


def test_monte_carlo_is_reproducible_by_seed() -> None:
    ours, base = _maximised([0.1, 0.2, 0.3, -0.1, 0.0, 0.05])
    first = paired_change(ours, base, direction="maximize", seed=7)
    assert first == paired_change(ours, base, direction="maximize", seed=7)


def test_a_minimised_objective_with_lower_values_is_better() -> None:
    got = paired_change({0: 0.5, 1: 0.4, 2: 0.3}, {0: 0.6, 1: 0.6, 2: 0.6},
                        direction="minimize")
    assert got is not None
    assert got.mean == pytest.approx(0.2)
    assert got.low > 0 and got.differs


def test_pairs_only_by_shared_seed_indices_with_finite_values() -> None:
    ours = {0: 0.9, 1: 0.8, 2: 0.7, 5: 0.1, 6: float("nan")}
    base = {0: 0.5, 2: 0.6, 3: 0.2, 6: 0.4, 7: 0.3}
    got = paired_change(ours, base, direction="maximize")
    assert got is not None
    assert got.pairs == 2
    assert got.mean == pytest.approx((0.4 + 0.1) / 2)


def test_none_with_fewer_than_two_pairs() -> None:
    assert paired_change({0: 1.0, 1: 2.0}, {1: 1.0, 2: 2.0}, direction="maximize") is None
    assert paired_change({}, {}, direction="minimize") is None


def test_differs_only_where_the_interval_excludes_zero() -> None:
    up = paired_change(*_maximised([0.01, 0.02, 0.03, 0.04]), direction="maximize")
    straddle = paired_change(*_maximised([-0.2, 0.1, 0.3, -0.1]), direction="maximize")
    down = paired_change(*_maximised([-0.01, -0.02, -0.03]), direction="maximize")
    assert up is not None and straddle is not None and down is not None
    assert up.differs and up.low > 0
    assert not straddle.differs and straddle.low < 0 < straddle.high
    assert down.differs and down.high < 0


def test_bad_arguments_are_refused() -> None:
    ours, base = _maximised([0.1, 0.2])
    with pytest.raises(ValueError):
        paired_change(ours, base, direction="maximize", level=1.0)
    with pytest.raises(ValueError):
        paired_change(ours, base, direction="maximize", resamples=0)


def test_text() -> None:
    assert paired_text(None) == "-"
    shown = paired_text(PairedChange(mean=0.0123, low=0.004, high=0.021, pairs=5, differs=True))
    assert shown == "+0.0123 [+0.0040, +0.0210] * (n=5)"
    plain = paired_text(PairedChange(mean=0.01, low=-0.01, high=0.03, pairs=3, differs=False))
    assert "*" not in plain
