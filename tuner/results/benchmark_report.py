"""What a benchmark found: per optimizer and budget, the test scores of its re-runs.

A benchmark (tuner.search.benchmark) keeps a record in the study store: a study of its own
name with no trials, whose user attributes hold its settings and one entry per finished
re-run. Its optimizers' searches are ordinary studies named ``NAME.family``. This module reads
both back into one :class:`BenchmarkReport`: the table, the JSON and the plot all come from it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import OpttuneError
from tuner.results.paired import PairedChange, paired_change
from tuner.results.records import HIDDEN
from tuner.results.tunability import tunability_curve
from tuner.study.records import BENCHMARK_KIND, KIND_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

RERUN_PREFIX = "rerun:"
ONESHOT = "oneshot"
NAMED_BUDGETS: Mapping[str, int] = {ONESHOT: 0, "small": 25, "medium": 50}
BASELINE = ("adam", ONESHOT)  # the paper's reference point: Adam at its defaults


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


def family_study(benchmark: str, family: str) -> str:
    """The name of the study that searches `family` for benchmark `benchmark`."""
    return f"{benchmark}.{family}"


def rerun_key(family: str, source: str, index: int) -> str:
    """The record's key of a re-run: family, chosen setting (``oneshot`` or ``trial-N``), seed."""
    return f"{RERUN_PREFIX}{family}:{source}:{index}"


def trial_source(number: int) -> str:
    return f"trial-{number}"


def within_budget(trials: Sequence[FrozenTrial], budget: int) -> list[FrozenTrial]:
    """The trials that make up a budget of `budget`: the study's first `budget` counted trials
    by number (a killed trial that ran again counts once, as its re-run). Budgets are nested,
    so a family's small budget is the start of its medium one, as random search allows."""
    from tuner.study.records import counted

    return [t for t in sorted(trials, key=lambda t: t.number) if counted([t])][:budget]


@dataclass(frozen=True)
class SeedScore:
    """One re-run: trained on train+validation with seed `seed`, scored once on the test split."""

    seed: int
    value: float | None  # None when the re-run diverged
    loss: float | None
    seconds: float
    run_id: str
    diverged: str | None = None


@dataclass(frozen=True)
class BenchmarkCell:
    """One optimizer at one budget."""

    optimizer: str
    budget: str
    trials: int  # tuning trials it had (0 for one-shot)
    trial: int | None  # the chosen trial of its study (None: one-shot, or none completed)
    setting: dict[str, Any]  # the chosen configuration
    validation: float | None  # the chosen trial's validation value (None for one-shot)
    scores: list[SeedScore]
    median: float | None
    low: float | None
    high: float | None
    change: float | None  # how much better its median is than the baseline's (positive: better)
    tuning_seconds: float
    rerun_seconds: float
    missing: str | None = None  # why the cell has no scores
    # Its re-runs against the baseline's, paired by seed index: the mean improvement with a 95%
    # percentile bootstrap interval (tuner.results.paired). Diverged re-runs (value None) are
    # left out of the pairs for now, which its `pairs` count shows. None: under 2 pairs.
    paired: PairedChange | None = None


@dataclass(frozen=True)
class BenchmarkReport:
    benchmark: str
    task: str
    metric: str  # test_acc or test_mse
    direction: str
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
    # Per optimizer with a search: its expected best validation value after k = 1..N trials of
    # the largest budget (Dodge et al. 2019; tuner.results.tunability), N its COMPLETE trials
    # with a finite value. No "best one-shot optimizer by validation" row beside it: one-shot
    # settings are never scored on the validation split (their cells' validation is None).
    tunability: dict[str, list[float]] = field(default_factory=dict)
    tuning_metric: str = ""  # the searches' validation metric, which those curves are in


def is_benchmark(study: optuna.Study | Any) -> bool:
    return bool(study.user_attrs.get(KIND_ATTR) == BENCHMARK_KIND)


def read_report(storage: Any, name: str) -> BenchmarkReport:
    """The report of benchmark `name` as its stores hold it now."""
    from tuner.study.records import load_study, objective_of

    record = load_study(storage, name)
    if not is_benchmark(record):
        raise OpttuneError(f"{name!r} is a study, not a benchmark; see `opttune compare {name}`")
    attrs = record.user_attrs
    settings = attrs["settings"]
    budgets = [Budget(b["label"], b["trials"]) for b in settings["budgets"]]
    seeds = int(settings["seeds"])
    metric, direction = attrs["objective"]["metric"], attrs["objective"]["direction"]
    reruns = {k[len(RERUN_PREFIX):]: v for k, v in attrs.items() if k.startswith(RERUN_PREFIX)}
    cells: list[BenchmarkCell] = []
    studies: list[str] = []
    curves: dict[str, list[float]] = {}
    tuning_metric = ""  # the searches' validation metric, which the curves are in
    largest = max((b.trials for b in budgets), default=0)
    for family in settings["optimizers"]:
        trials: list[FrozenTrial] = []
        if any(b.trials for b in budgets):
            studies.append(family_study(name, family))
            search = _study_of(storage, family_study(name, family))
            if search is not None:
                trials = search.get_trials(deepcopy=False)
                tuning_metric = tuning_metric or objective_of(search)[0]
            curves[family] = tunability_curve(within_budget(trials, largest),
                                              direction=direction)
        for budget in budgets:
            cells.append(_cell(family, budget, trials, reruns, seeds=seeds,
                               oneshot=settings["oneshot"].get(family, {}), direction=direction))
    cells = _with_changes(cells, direction)
    baseline = " ".join(BASELINE) if any((c.optimizer, c.budget) == BASELINE
                                         for c in cells) else None
    mlflow = attrs.get("mlflow", {})
    return BenchmarkReport(
        benchmark=name, task=attrs["task"], metric=metric, direction=direction,
        budgets=[b.label for b in budgets], seeds=seeds, baseline=baseline, cells=cells,
        studies=studies, data_source=attrs["data_source"], run_id=mlflow.get("run_id", ""),
        experiment_id=mlflow.get("experiment_id", ""), tunability=curves,
        tuning_metric=tuning_metric)


def chosen_trial(trials: Sequence[FrozenTrial], budget: int,
                 direction: str) -> FrozenTrial | None:
    """The best complete trial within the budget: the setting its re-runs train."""
    from tuner.study.records import best_complete

    return best_complete(within_budget(trials, budget), direction)


def _study_of(storage: Any, study_name: str) -> optuna.Study | None:
    from tuner.study.records import exists, load_study

    return load_study(storage, study_name) if exists(storage, study_name) else None


def _cell(family: str, budget: Budget, trials: list[FrozenTrial], reruns: Mapping[str, Any],
          *, seeds: int, oneshot: dict[str, Any], direction: str) -> BenchmarkCell:
    tuned = within_budget(trials, budget.trials)
    tuning = sum(t.duration.total_seconds() for t in tuned if t.duration is not None)
    chosen = chosen_trial(trials, budget.trials, direction) if budget.trials else None
    missing = None
    if budget.trials and len(tuned) < budget.trials:
        missing = f"{len(tuned)} of {budget.trials} trials run so far"
    elif budget.trials and chosen is None:
        missing = f"none of its {budget.trials} trials completed"
    source = ONESHOT if not budget.trials else (trial_source(chosen.number) if chosen else "")
    setting = dict(chosen.user_attrs.get("config", {})) if chosen else dict(oneshot)
    scores = [_score(reruns[key]) for i in range(seeds)
              if source and (key := f"{family}:{source}:{i}") in reruns]
    if missing is None and len(scores) < seeds:
        missing = f"{len(scores)} of {seeds} re-runs done"
    values = [s.value for s in scores if s.value is not None]
    return BenchmarkCell(
        optimizer=family, budget=budget.label, trials=len(tuned), setting=setting,
        trial=chosen.number if chosen else None,
        validation=chosen.value if chosen else None, scores=scores,
        median=statistics.median(values) if values else None,
        low=min(values) if values else None, high=max(values) if values else None,
        change=None, tuning_seconds=round(tuning, 1),
        rerun_seconds=round(sum(s.seconds for s in scores), 1), missing=missing)


def _score(entry: Mapping[str, Any]) -> SeedScore:
    return SeedScore(seed=int(entry["seed"]), value=entry.get("value"), loss=entry.get("loss"),
                     seconds=float(entry.get("seconds", 0.0)), run_id=str(entry.get("run_id", "")),
                     diverged=entry.get("diverged"))


def _with_changes(cells: list[BenchmarkCell], direction: str) -> list[BenchmarkCell]:
    """Each cell's median against one-shot Adam's: positive is better, for an objective
    maximised (accuracy) or minimised (MSE) alike, as `compare`'s gain; and its re-runs against
    Adam's paired by seed index, with a bootstrap interval (`paired`)."""
    import dataclasses

    from tuner.study.records import improvement

    baseline = next((c for c in cells if (c.optimizer, c.budget) == BASELINE), None)
    if baseline is None:
        return cells
    base = baseline.median
    reference = _by_seed(baseline)
    return [dataclasses.replace(
        c, change=None if c.median is None or base is None else
        improvement(c.median, base, direction),
        paired=paired_change(_by_seed(c), reference, direction=direction)) for c in cells]


def _by_seed(cell: BenchmarkCell) -> dict[int, float]:
    """The cell's finished, non-diverged re-runs' test values by seed index."""
    return {s.seed: s.value for s in cell.scores if s.value is not None}
