"""Time to target, and the performance profile that MLCommons AlgoPerf scores training
algorithms with (Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023,
section 4.5; Kasimbeg et al., "Accelerating Neural Network Training: An Analysis of the
AlgoPerf Training Algorithms Competition", ICLR 2025). The rules below follow the benchmark's
own statement of them, docs/DOCUMENTATION.md of github.com/mlcommons/algorithmic-efficiency
("Scoring", "Tuning"), and its scoring code, scoring/performance_profile.py and
scoring/score_submissions.py (commit 2c90454, 2025-09).

A run's time to target is the first epoch whose value reaches the target (``>=`` when
maximising, ``<=`` when minimising), with the seconds elapsed at the end of that epoch; a run
that never reaches it takes t = inf. Several runs of one setting give the median time, in
which a never counts as the slowest time of all (AlgoPerf: a miss "receives inf, which
participates in the median").

For entries s (e.g. "adam small") and tasks p, with t_{s,p} a time to target (inf: never):

    r_{s,p}     = t_{s,p} / min_s t_{s,p}              (the ratio to the fastest entry)
    rho_s(tau)  = |{p : r_{s,p} <= tau}| / |P|          (fraction of tasks within tau)
    B_s         = 1/(tau_max - 1) * integral_1^tau_max rho_s(tau) dtau       in [0, 1]

with tau_max = 4, AlgoPerf's r_max ("The upper integration limit will be set to r_max = 4").
AlgoPerf's further rules, followed here:

- a ratio above tau_max counts as infinite: "any submission that requires more than four
  times the runtime of the fastest submission will not get any credit on this workload"
  (the scoring code sets such times to inf before dividing);
- a task counts in |P| for every entry, so an entry missing from a task, or one whose time
  is None or NaN (AlgoPerf's scoring turns NaN, e.g. a run out of memory, into inf), has
  never reached there; where no entry reached, every r on that task is inf;
- times are divided by the per-task minimum (AlgoPerf's default; no reference entry).

rho_s is a step function that jumps by 1/|P| at each finite r_{s,p} <= tau_max (every r is
>= 1), so the integral is exact, a sum of step widths:

    integral_1^tau_max rho_s = (1/|P|) * sum_p max(0, tau_max - r_{s,p}).

(AlgoPerf's code instead samples rho at 100 points and applies the trapezoid rule; this is
the integral that rule approximates.) B_s = 1 means the fastest on every task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tuner.study.direction import Direction, as_direction, reaches

TAU_MAX = 4.0  # AlgoPerf's r_max


@dataclass(frozen=True)
class TargetTime:
    """The median time to target over a setting's runs: None where the median is never."""

    epochs: float | None  # median epoch of the first reach, never = +inf; None: infinite
    seconds: float | None  # median seconds to the first reach, never = +inf; None: infinite
    reached: int  # runs that reached the target
    runs: int  # runs in all


@dataclass(frozen=True)
class Profile:
    """A performance profile: ``ratios[task][entry]`` = r (inf: never, or above tau_max),
    ``scores[entry]`` = B, the normalised integral of rho over [1, tau_max]."""

    entries: list[str]
    tasks: list[str]
    ratios: dict[str, dict[str, float]]
    scores: dict[str, float]
    tau_max: float

    def rho(self, entry: str, tau: float) -> float:
        """The fraction of tasks on which `entry` is within a factor `tau` of the fastest."""
        if entry not in self.scores:
            raise ValueError(f"entry must be one of {self.entries}, but got {entry!r}")
        within = sum(1 for task in self.tasks if self.ratios[task][entry] <= tau)
        return within / len(self.tasks)


def time_to_target(curve: Sequence[tuple[int, float, float]], *, target: float,
                   direction: Direction) -> tuple[int, float] | None:
    """(epoch, seconds) of the first epoch of `curve` (epoch from 1, value, seconds since
    training began at the end of that epoch) whose value reaches `target`: ``>=`` for
    ``maximize``, ``<=`` for ``minimize``. None if no epoch does; a non-finite value never
    reaches."""
    as_direction(direction)  # a caller's typo fails here, not as "never reaches"
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, but got target={target!r}")
    for epoch, value, seconds in sorted(curve, key=lambda point: point[0]):
        value = float(value)
        if not math.isfinite(value):
            continue
        if reaches(value, target, direction):
            return int(epoch), float(seconds)
    return None


def median_time_to_target(runs: Sequence[Sequence[tuple[int, float, float]]], *,
                          target: float, direction: Direction) -> TargetTime:
    """The median over `runs` of each run's time to target, a run that never reaches counting
    as infinitely slow (+inf, AlgoPerf's rule). The median of an even number of runs is the
    mean of the middle two, so it is finite exactly when more than half of the runs reached
    (3 of 5 or 3 of 4 yes, 2 of 4 no); epochs and seconds take their medians separately."""
    if not runs:
        raise ValueError("runs must hold at least one run, but got 0 runs")
    first_reach = [time_to_target(curve, target=target, direction=direction) for curve in runs]
    hits = [r for r in first_reach if r is not None]
    never = [math.inf] * (len(runs) - len(hits))
    return TargetTime(epochs=_median([float(e) for e, _ in hits] + never),
                      seconds=_median([s for _, s in hits] + never),
                      reached=len(hits), runs=len(runs))


def performance_profile(times: Mapping[str, Mapping[str, float | None]], *,
                        tau_max: float = TAU_MAX) -> Profile:
    """AlgoPerf's performance profile and scores from ``times[task][entry]``, a time to
    target in any one unit (seconds, epochs) that is > 0, or None, inf or NaN for never. The
    entries are those named on any task, in order of first appearance; one missing from a
    task has never reached there."""
    if not (math.isfinite(tau_max) and tau_max > 1.0):
        raise ValueError(f"tau_max must be > 1 and finite, but got tau_max={tau_max!r}")
    tasks = list(times)
    if not tasks:
        raise ValueError("times must hold at least one task, but got none")
    entries = list(dict.fromkeys(entry for task in tasks for entry in times[task]))
    if not entries:
        raise ValueError(f"times must name at least one entry, but its tasks {tasks} name none")
    ratios: dict[str, dict[str, float]] = {}
    for task in tasks:
        t = {entry: _time(task, entry, times[task].get(entry)) for entry in entries}
        fastest = min(t.values())
        ratios[task] = {entry: _ratio(t[entry], fastest, tau_max) for entry in entries}
    width = tau_max - 1.0
    scores = {entry: math.fsum(tau_max - ratios[task][entry] for task in tasks
                               if ratios[task][entry] <= tau_max) / len(tasks) / width
              for entry in entries}
    return Profile(entries=entries, tasks=tasks, ratios=ratios, scores=scores,
                   tau_max=float(tau_max))


def _median(values: list[float]) -> float | None:
    """The median, None where it is infinite (never)."""
    ordered = sorted(values)
    n = len(ordered)
    middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0
    return middle if math.isfinite(middle) else None


def _time(task: str, entry: str, value: float | None) -> float:
    """A time to target as a float: inf for never (None, inf or NaN)."""
    if value is None or math.isnan(value):
        return math.inf
    if value <= 0.0:
        raise ValueError(f"a time to target must be > 0 (None for never), but got {value!r} "
                         f"for entry {entry!r} on task {task!r}")
    return float(value)


def _ratio(t: float, fastest: float, tau_max: float) -> float:
    """t / fastest, inf where t is never or above tau_max times the fastest."""
    if math.isinf(t):
        return math.inf
    r = t / fastest
    return r if r <= tau_max else math.inf
