"""What a benchmark found: per schedule, optimizer and budget, the test scores of its re-runs.

A benchmark (tuner.search.benchmark) keeps a record in the study store: a study of its own
name with no trials, whose user attributes hold its settings and one entry per finished
re-run (their types: tuner.results.benchmark_record). Its searches are ordinary studies
named ``NAME.FAMILY.SCHEDULE``, one per optimizer and schedule (the schedule is a condition
of the comparison, never a searched knob). This module holds what both are read back into,
one :class:`BenchmarkReport`: the table, the JSON and the plots all come from it;
tuner.results.benchmark_cells reads a record into one (`read_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject
from tuner.results.paired import PairedChange
from tuner.results.profile import TargetTime
from tuner.results.summaries import HIDDEN
from tuner.space.families import FAMILIES
from tuner.study.direction import Direction
from tuner.study.studies import best_complete, counted

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

RERUN_PREFIX = "rerun:"
ONESHOT_PREFIX = "oneshot-val:"
ONESHOT = "oneshot"
NAMED_BUDGETS: Mapping[str, int] = {ONESHOT: 0, "small": 25, "medium": 50}
BASELINE = ("adam", ONESHOT)  # the paper's reference point: Adam at its defaults
# The benchmark's protocol: 2 since schedules became conditions and every seed counts. A
# record of protocol 1 (schedules searched, diverged seeds left out) is refused, not misread.
PROTOCOL = 2


@dataclass(frozen=True)
class Budget:
    """A tuning budget: its label and its trials per optimizer (0: one-shot, no tuning)."""

    label: str
    trials: int


def parse_budgets(text: str) -> list[Budget]:
    """``oneshot,small,medium`` or numbers (``oneshot,8``) → budgets, smallest first."""
    out: list[Budget] = []
    for token in (t.strip() for t in text.split(",")):
        if token in NAMED_BUDGETS:
            out.append(Budget(token, NAMED_BUDGETS[token]))
        elif token.isdigit() and int(token) >= 1:
            out.append(Budget(token, int(token)))
        else:
            raise OpttuneError(f"--budgets takes oneshot, small (25), medium (50) or a number "
                               f"of trials >= 1, comma-separated, but got {token!r}")
    sizes = [b.trials for b in out]
    if len(set(sizes)) != len(sizes):
        raise OpttuneError(f"--budgets names one budget twice (small is 25 trials, medium "
                           f"50), but got {text!r}")
    return sorted(out, key=lambda b: b.trials)


def family_study(benchmark: str, family: str, schedule: str) -> str:
    """The name of the study that searches `family` under `schedule` for `benchmark`."""
    return f"{benchmark}.{family}.{schedule}"


def families_under(optimizers: Sequence[str], schedule: str) -> list[str]:
    """The optimizers a benchmark compares under `schedule`: every one without a schedule;
    under a schedule, those that follow one (schedulefree takes none: it has only `none`
    cells)."""
    return [f for f in optimizers
            if schedule == "none" or f not in FAMILIES or FAMILIES[f].schedule]


def rerun_key(family: str, schedule: str, source: str, index: int) -> str:
    """The record's key of a re-run: family, schedule, chosen setting (``oneshot`` or
    ``trial-N``), seed index."""
    return f"{RERUN_PREFIX}{family}:{schedule}:{source}:{index}"


def oneshot_key(family: str, schedule: str) -> str:
    """The record's key of a one-shot setting's validation score (for choosing among them)."""
    return f"{ONESHOT_PREFIX}{family}:{schedule}"


def trial_source(number: int) -> str:
    return f"trial-{number}"


def within_budget(trials: Sequence[FrozenTrial], budget: int) -> list[FrozenTrial]:
    """The trials that make up a budget of `budget`: the study's first `budget` counted trials
    by number (a killed trial that ran again counts once, as its re-run). Budgets are nested,
    so a family's small budget is the start of its medium one, as random search allows."""
    return [t for t in sorted(trials, key=lambda t: t.number) if counted([t])][:budget]


@dataclass(frozen=True)
class SeedScore:
    """One re-run: trained on train+validation with seed `seed`, scored once on the test split
    (`value`, `loss`); `curve` is its test value after each epoch, as (epoch from 1, value,
    training seconds so far), which only the time to target reads."""

    seed: int
    value: float | None  # None when the re-run diverged (the cell scores it as the worst)
    loss: float | None
    seconds: float
    run_id: str
    diverged: str | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    population: int = 1  # the size of the stacked model it trained in (1: alone)


@dataclass(frozen=True)
class BenchmarkCell:
    """One optimizer at one budget under one schedule."""

    optimizer: str
    budget: str
    trials: int  # tuning trials it had (0 for one-shot)
    trial: int | None  # the chosen trial of its study (None: one-shot, or none completed)
    setting: JsonObject  # the chosen configuration (its `scheduler` is the schedule)
    validation: float | None  # the chosen setting's validation value
    scores: list[SeedScore]
    # Over every re-run, a diverged one counted as the worst value (BenchmarkReport.worst).
    median: float | None
    low: float | None
    high: float | None
    change: float | None  # its median against the baseline's (positive: better)
    tuning_seconds: float
    rerun_seconds: float
    missing: str | None = None  # why the cell has no (or not all its) scores
    # Its re-runs against the same schedule's one-shot Adam, paired by seed index: the mean
    # improvement with a 95% percentile bootstrap interval (tuner.results.paired).
    paired: PairedChange | None = None
    schedule: str = "none"
    diverged: int = 0  # how many of its re-runs diverged
    to_target: TargetTime | None = None  # median epochs and seconds to the report's target


@dataclass(frozen=True)
class Headline:
    """The paper's headline comparison under one schedule: the best one-shot setting of all
    optimizers (chosen by validation) against each optimizer tuned with the smallest budget,
    paired by seed index (positive: the tuned one is better)."""

    schedule: str
    oneshot: str  # the optimizer whose one-shot setting validated best
    budget: str
    rows: dict[str, PairedChange | None]  # tuned optimizer → its change against that one-shot


@dataclass(frozen=True)
class BenchmarkReport:
    benchmark: str
    task: str
    metric: str  # test_acc or test_mse
    direction: Direction
    budgets: list[str]
    seeds: int
    baseline: str | None  # "adam oneshot" when it is part of the benchmark
    cells: list[BenchmarkCell]
    studies: list[str]
    data_source: str
    files: list[Path] = field(default_factory=list)
    run_id: str = ""
    experiment_id: str = ""
    notes: list[str] = field(default_factory=list, metadata=HIDDEN)
    # Per schedule and optimizer with a search: its expected best validation value after
    # k = 1..N trials of the largest budget (Dodge et al. 2019; tuner.results.tunability).
    tunability: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    tuning_metric: str = ""  # the searches' validation metric, which those curves are in
    schedules: list[str] = field(default_factory=lambda: ["none"])
    worst: float = 0.0  # what a diverged re-run scores
    target: float | None = None  # the test value the time to target is measured to
    target_source: str = ""  # where it comes from
    space: str = "opttune"
    oneshot_source: str = "paper"
    headline: list[Headline] = field(default_factory=list)


def chosen_trial(trials: Sequence[FrozenTrial], budget: int,
                 direction: Direction) -> FrozenTrial | None:
    """The best complete trial within the budget: the setting its re-runs train."""
    return best_complete(within_budget(trials, budget), direction)
