"""Time to target and AlgoPerf's performance profile (tuner/results/profile.py), checked
against hand computations and a brute-force integral."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from tuner.results.benchmark_profile import profile_png
from tuner.results.profile import (
    Profile,
    TargetTime,
    median_time_to_target,
    performance_profile,
    time_to_target,
)

INF = math.inf


# -- time_to_target -----------------------------------------------------------------------

def test_maximize_returns_the_first_crossing_not_the_best_epoch() -> None:
    curve = [(1, 0.50, 1.0), (2, 0.80, 2.0), (3, 0.92, 3.1), (4, 0.90, 4.0), (5, 0.97, 5.2)]
    assert time_to_target(curve, target=0.9, direction="maximize") == (3, 3.1)
    assert time_to_target(curve, target=0.92, direction="maximize") == (3, 3.1)  # >= counts
    assert time_to_target(curve, target=0.95, direction="maximize") == (5, 5.2)


def test_minimize_reaches_at_or_below_the_target() -> None:
    curve = [(1, 2.0, 1.5), (2, 0.7, 3.0), (3, 0.5, 4.5), (4, 0.3, 6.0)]
    assert time_to_target(curve, target=0.5, direction="minimize") == (3, 4.5)
    assert time_to_target(curve, target=1.0, direction="minimize") == (2, 3.0)
    # The same curve maximised reaches 1.0 at epoch 1 (2.0 >= 1.0): direction matters.
    assert time_to_target(curve, target=1.0, direction="maximize") == (1, 1.5)


def test_never_reaching_gives_none() -> None:
    curve = [(1, 0.1, 1.0), (2, 0.2, 2.0)]
    assert time_to_target(curve, target=0.9, direction="maximize") is None
    assert time_to_target(curve, target=0.05, direction="minimize") is None
    assert time_to_target([], target=0.0, direction="maximize") is None


def test_non_finite_values_never_reach() -> None:
    # NaN compares False and inf/-inf would compare True: neither may count as a reach.
    maximise = [(1, math.nan, 1.0), (2, INF, 2.0), (3, 0.4, 3.0), (4, 0.6, 4.0)]
    assert time_to_target(maximise, target=0.5, direction="maximize") == (4, 4.0)
    minimise = [(1, -INF, 1.0), (2, math.nan, 2.0), (3, 0.2, 3.0)]
    assert time_to_target(minimise, target=0.3, direction="minimize") == (3, 3.0)
    assert time_to_target([(1, math.nan, 1.0)], target=0.0, direction="minimize") is None


def test_time_to_target_rejects_a_bad_direction_or_target() -> None:
    with pytest.raises(ValueError, match="direction must be one of"):
        time_to_target([(1, 1.0, 1.0)], target=0.5, direction="max")
    with pytest.raises(ValueError, match="target must be finite"):
        time_to_target([(1, 1.0, 1.0)], target=math.nan, direction="maximize")


# -- median_time_to_target ----------------------------------------------------------------

NEVER = [(1, 0.1, 5.0), (2, 0.2, 10.0)]  # never reaches 0.9


def test_median_with_three_of_five_reached_is_finite() -> None:
    runs = [
        [(1, 0.95, 30.0)],  # epoch 1 at 30 s (one slow epoch)
        [(1, 0.3, 4.0), (2, 0.6, 8.0), (3, 0.91, 12.0)],  # epoch 3 at 12 s
        [(1, 0.5, 10.0), (2, 0.9, 20.0)],  # epoch 2 at 20 s
        NEVER, NEVER,
    ]
    # Hand: epochs sorted [1, 2, 3, inf, inf] -> median 3 (the 3rd of 5, from run 2);
    # seconds sorted [12, 20, 30, inf, inf] -> median 30 (from run 1): each takes its own
    # median, and both are finite because 3 of 5 (more than half) reached.
    assert median_time_to_target(runs, target=0.9, direction="maximize") == TargetTime(
        epochs=3.0, seconds=30.0, reached=3, runs=5)


def test_median_with_two_of_five_reached_is_never() -> None:
    runs = [[(1, 0.95, 3.0)], [(1, 0.5, 2.0), (2, 0.9, 4.0)], NEVER, NEVER, NEVER]
    # Hand: seconds sorted [3, 4, inf, inf, inf] -> median inf -> None ("never").
    assert median_time_to_target(runs, target=0.9, direction="maximize") == TargetTime(
        epochs=None, seconds=None, reached=2, runs=5)


def test_median_of_an_even_count_averages_the_middle_two() -> None:
    runs = [[(1, 0.95, 3.0)], [(1, 0.5, 2.0), (2, 0.9, 5.0)], [(1, 0.2, 4.0),
            (2, 0.3, 8.0), (3, 0.99, 9.0)], NEVER]
    # Hand: epochs [1, 2, 3, inf] -> (2 + 3) / 2 = 2.5; seconds [3, 5, 9, inf] -> 7.
    assert median_time_to_target(runs, target=0.9, direction="maximize") == TargetTime(
        epochs=2.5, seconds=7.0, reached=3, runs=4)
    # 2 of 3 (more than half): epochs [2, 3, inf] -> 3; seconds [5, 9, inf] -> 9.
    assert median_time_to_target(runs[1:], target=0.9, direction="maximize") == TargetTime(
        epochs=3.0, seconds=9.0, reached=2, runs=3)
    # 2 of 4 (exactly half): the middle two are 5 and inf -> inf -> never.
    half = [runs[0], runs[1], NEVER, NEVER]
    assert median_time_to_target(half, target=0.9, direction="maximize") == TargetTime(
        epochs=None, seconds=None, reached=2, runs=4)


def test_median_minimize_and_empty_runs() -> None:
    runs = [[(1, 1.0, 2.0), (2, 0.4, 4.0)], [(1, 0.3, 1.0)], [(1, 0.9, 3.0)]]
    # Hand: run 1 reaches 0.5 at epoch 2 (4 s), run 2 at epoch 1 (1 s), run 3 never:
    # seconds [1, 4, inf] -> 4; epochs [1, 2, inf] -> 2.
    assert median_time_to_target(runs, target=0.5, direction="minimize") == TargetTime(
        epochs=2.0, seconds=4.0, reached=2, runs=3)
    with pytest.raises(ValueError, match="at least one run"):
        median_time_to_target([], target=0.5, direction="minimize")


# -- performance_profile ------------------------------------------------------------------

def _hand_example() -> Profile:
    return performance_profile({
        "p1": {"A": 10.0, "B": 20.0, "C": 50.0},
        "p2": {"A": 30.0, "B": 15.0, "C": None},
        "p3": {"A": 12.0, "C": 4.0},  # B is missing: never reached
    })


def test_hand_example_ratios() -> None:
    profile = _hand_example()
    # p1: fastest A = 10 -> A 1, B 2, C 5 > tau_max = 4 -> inf (no credit beyond tau_max).
    # p2: fastest B = 15 -> A 2, B 1, C never -> inf.
    # p3: fastest C = 4 -> A 3, B missing -> inf, C 1.
    assert profile.entries == ["A", "B", "C"]
    assert profile.tasks == ["p1", "p2", "p3"]
    assert profile.tau_max == 4.0
    assert profile.ratios == {"p1": {"A": 1.0, "B": 2.0, "C": INF},
                              "p2": {"A": 2.0, "B": 1.0, "C": INF},
                              "p3": {"A": 3.0, "B": INF, "C": 1.0}}


def test_hand_example_rho() -> None:
    profile = _hand_example()
    # A's ratios {1, 2, 3}: rho = 1/3 on [1, 2), 2/3 on [2, 3), 1 on [3, 4].
    expected = {("A", 1.0): 1 / 3, ("A", 1.5): 1 / 3, ("A", 2.0): 2 / 3, ("A", 2.999): 2 / 3,
                ("A", 3.0): 1.0, ("A", 4.0): 1.0,
                # B's {2, 1, inf}: 1/3 on [1, 2), 2/3 from 2 on, never 1.
                ("B", 1.0): 1 / 3, ("B", 1.99): 1 / 3, ("B", 2.0): 2 / 3, ("B", 100.0): 2 / 3,
                # C's {inf, inf, 1}: 1/3 from 1 on; its p1 ratio 5 counts as inf, so even
                # tau = 10 leaves it at 1/3. Below tau = 1 nobody is within.
                ("C", 0.5): 0.0, ("C", 1.0): 1 / 3, ("C", 10.0): 1 / 3}
    for (entry, tau), rho in expected.items():
        assert profile.rho(entry, tau) == pytest.approx(rho, abs=1e-12), (entry, tau)
    with pytest.raises(ValueError, match="entry must be one of"):
        profile.rho("D", 2.0)


def test_hand_example_exact_scores() -> None:
    profile = _hand_example()
    # A: integral of rho over [1, 4] = 1 * 1/3 + 1 * 2/3 + 1 * 1 = 2; / (4 - 1) = 2/3.
    # B: 1 * 1/3 + 2 * 2/3 = 5/3; / 3 = 5/9.
    # C: 3 * 1/3 = 1; / 3 = 1/3.
    assert profile.scores["A"] == pytest.approx(2 / 3, abs=1e-15)
    assert profile.scores["B"] == pytest.approx(5 / 9, abs=1e-15)
    assert profile.scores["C"] == pytest.approx(1 / 3, abs=1e-15)


def test_hand_example_with_a_larger_tau_max_credits_the_slow_ratio() -> None:
    profile = performance_profile({
        "p1": {"A": 10.0, "B": 20.0, "C": 50.0},
        "p2": {"A": 30.0, "B": 15.0, "C": None},
        "p3": {"A": 12.0, "C": 4.0},
    }, tau_max=6.0)
    # C's ratio 5 on p1 now lies within tau_max = 6: its steps are widths 5 (from 1) and 1
    # (from 5): (5 + 1) / 3 tasks / (6 - 1) = 0.4. A: (5 + 4 + 3) / 3 / 5 = 0.8.
    assert profile.ratios["p1"]["C"] == 5.0
    assert profile.scores["C"] == pytest.approx(0.4, abs=1e-15)
    assert profile.scores["A"] == pytest.approx(0.8, abs=1e-15)


def test_a_task_nobody_reached_gives_every_entry_nothing_there() -> None:
    profile = performance_profile({
        "easy": {"A": 5.0, "B": 10.0},
        "hard": {"A": None, "B": math.nan},  # NaN (e.g. out of memory) is never, too
        "gone": {},  # nobody even ran it: every entry is missing, so never
    })
    assert profile.ratios["hard"] == {"A": INF, "B": INF}
    assert profile.ratios["gone"] == {"A": INF, "B": INF}
    # The three tasks all count: A is fastest on 1 of 3 -> rho 1/3 everywhere -> score 1/3;
    # B's ratio 2 on easy -> (4 - 2) / 3 / 3 = 2/9.
    assert profile.rho("A", 4.0) == pytest.approx(1 / 3)
    assert profile.scores == pytest.approx({"A": 1 / 3, "B": 2 / 9})


def test_fastest_everywhere_scores_one() -> None:
    profile = performance_profile({"p": {"A": 1.0, "B": 3.0}, "q": {"A": 2.0, "B": 2.0}})
    # A is fastest on both (a tie on q gives both ratio 1): score 1. B: (4 - 3 + 3) / 2 / 3.
    assert profile.scores["A"] == 1.0
    assert profile.scores["B"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("tau_max", [1.0, 0.5, -2.0, math.inf, math.nan])
def test_tau_max_must_exceed_one(tau_max: float) -> None:
    with pytest.raises(ValueError, match=r"tau_max must be > 1 and finite, but got tau_max="):
        performance_profile({"p": {"A": 1.0}}, tau_max=tau_max)


def test_bad_times_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        performance_profile({"p": {"A": 0.0, "B": 1.0}})
    with pytest.raises(ValueError, match="at least one task"):
        performance_profile({})
    with pytest.raises(ValueError, match="at least one entry"):
        performance_profile({"p": {}})


@pytest.mark.parametrize("seed", range(12))
def test_exact_score_equals_a_fine_riemann_sum(seed: int) -> None:
    rng = random.Random(seed)
    tau_max = rng.uniform(1.2, 8.0)
    entries = [f"e{i}" for i in range(rng.randint(1, 5))]
    times: dict[str, dict[str, float | None]] = {}
    for p in range(rng.randint(1, 7)):
        row: dict[str, float | None] = {}
        for entry in entries:
            draw = rng.random()
            if draw < 0.15 and p > 0:  # the first task names every entry
                continue  # missing
            row[entry] = None if draw < 0.3 else rng.uniform(1.0, 30.0)
        times[f"p{p}"] = row
    profile = performance_profile(times, tau_max=tau_max)
    tau = np.linspace(1.0, tau_max, 200_001)
    for entry in profile.entries:
        r = np.array([profile.ratios[task][entry] for task in profile.tasks])
        rho = (r[None, :] <= tau[:, None]).mean(axis=1)
        riemann = float(np.trapezoid(rho, tau)) / (tau_max - 1.0)
        assert profile.scores[entry] == pytest.approx(riemann, abs=1e-4), (seed, entry)
        for t in rng.sample(list(tau), 5):  # the method agrees with the brute force too
            assert profile.rho(entry, float(t)) == pytest.approx(
                float((r <= t).mean()), abs=1e-12)


# -- profile_png --------------------------------------------------------------------------

def test_png_is_written(tmp_path: Path) -> None:
    path = tmp_path / "profile.png"
    profile_png(_hand_example(), path, title="hand example: time to target")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
