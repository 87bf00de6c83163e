"""A benchmark record read into its report: one cell per schedule, optimizer and budget, with
the statistics the protocol asks for.

Rules (each in one place, here):

* **Every seed counts.** A re-run that diverged scores the worst value (``direction.worst_value``:
  accuracy 0, the lowest it can be; for a minimised metric such as MSE, +inf), so a cell's
  median, range and paired interval include it, and the cell says ``k/n diverged``.
* **The change** of a cell is against one-shot Adam *under the same schedule*, so a schedule
  never passes for tuning: the difference of medians, and the mean of the per-seed paired
  differences with a 95% bootstrap interval (tuner.results.paired).
* **Time to target** (AlgoPerf, Dahl et al. 2023): the median epochs and training seconds
  of a cell's re-runs to first reach the target on the test split (tuner.results.profile).
  One target per benchmark, so that cells compare: ``--target``, else one-shot Adam's median
  final value under the first schedule.
* **The headline** (Schmidt et al. 2021, their Fig. 4 question): per schedule, the one-shot
  setting that validated best among all optimizers, against each optimizer tuned with the
  smallest budget. One-shot settings are scored on validation once, with the tuning seed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject, JsonValue
from tuner.results.benchmark_record import BenchmarkRecord, seed_score, validation_value
from tuner.results.benchmark_report import (
    BASELINE,
    ONESHOT,
    RERUN_PREFIX,
    BenchmarkCell,
    BenchmarkReport,
    Budget,
    Headline,
    SeedScore,
    chosen_trial,
    family_study,
    trial_source,
    within_budget,
)
from tuner.results.paired import paired_change
from tuner.results.profile import median_time_to_target
from tuner.results.tunability import tunability_curve
from tuner.study import trial_attrs
from tuner.study.direction import Direction, best_of, improvement, unbounded_worst, worst_value
from tuner.study.meta import is_benchmark, objective_of
from tuner.study.studies import exists, load_study


def read_report(storage: BaseStorage, name: str) -> BenchmarkReport:
    """The report of benchmark `name` as its stores hold it now."""
    record = load_study(storage, name)
    if not is_benchmark(record):
        raise OpttuneError(f"{name!r} is a study, not a benchmark; see `opttune compare {name}`")
    return build_cells(storage, name, record.user_attrs)


def build_cells(storage: BaseStorage, name: str,
                attrs: Mapping[str, JsonValue]) -> BenchmarkReport:
    """The report of the benchmark whose record has user attributes `attrs` (a
    first-protocol record is refused)."""
    head = BenchmarkRecord.from_attrs(name, attrs)
    settings, direction = head.settings, head.direction
    budgets, seeds, schedules = settings.budgets, settings.seeds, list(settings.schedules)
    worst = worst_value(head.metric, direction)
    reruns = {k[len(RERUN_PREFIX):]: seed_score(v) for k, v in attrs.items()
              if k.startswith(RERUN_PREFIX)}
    cells: list[BenchmarkCell] = []
    studies: list[str] = []
    curves: dict[str, dict[str, list[float]]] = {}
    tuning_metric = ""
    largest = settings.largest_budget
    for schedule in schedules:
        for family in settings.families_under(schedule):
            trials: list[FrozenTrial] = []
            if largest:
                study_name = family_study(name, family, schedule)
                studies.append(study_name)
                if exists(storage, study_name):
                    search = load_study(storage, study_name)
                    trials = search.get_trials(deepcopy=False)
                    tuning_metric = tuning_metric or objective_of(search)[0]
                curves.setdefault(schedule, {})[family] = tunability_curve(
                    within_budget(trials, largest), direction=direction)
            for budget in budgets:
                cells.append(_cell(family, schedule, budget, trials, reruns, seeds=seeds,
                                   oneshot=settings.oneshot[schedule][family],
                                   validation=validation_value(attrs, family, schedule),
                                   direction=direction, worst=worst))
    reference = reference_family(settings.optimizers)
    cells = _with_changes(cells, direction, worst, reference=reference)
    target, target_source = _target(settings.target, cells, schedules[0], reference)
    if target is not None:
        cells = [_with_target(c, target, direction) for c in cells]
    return BenchmarkReport(
        benchmark=name, task=head.task, metric=head.metric, direction=direction,
        budgets=[b.label for b in budgets], seeds=seeds,
        baseline=f"{reference} {ONESHOT}" if any(_is_baseline(c, reference) for c in cells)
        else None,
        cells=cells, studies=studies, data_source=head.data_source,
        run_id=head.mlflow.run_id, experiment_id=head.mlflow.experiment_id,
        tunability=curves, tuning_metric=tuning_metric, schedules=schedules, worst=worst,
        target=target, target_source=target_source, space=settings.space,
        oneshot_source=settings.oneshot_source,
        headline=_headline(cells, schedules, budgets, direction, worst))


def _cell(family: str, schedule: str, budget: Budget, trials: list[FrozenTrial],
          reruns: Mapping[str, SeedScore], *, seeds: int, oneshot: JsonObject,
          validation: float | None, direction: Direction, worst: float) -> BenchmarkCell:
    tuned = within_budget(trials, budget.trials)
    tuning = sum(t.duration.total_seconds() for t in tuned if t.duration is not None)
    chosen = chosen_trial(trials, budget.trials, direction) if budget.trials else None
    missing = None
    if budget.trials and len(tuned) < budget.trials:
        missing = f"{len(tuned)} of {budget.trials} trials run so far"
    elif budget.trials and chosen is None:
        missing = f"none of its {budget.trials} trials completed"
    source = ONESHOT if not budget.trials else (trial_source(chosen.number) if chosen else "")
    setting: JsonObject = {**(trial_attrs.config(chosen) or {})} if chosen else dict(oneshot)
    scores = [reruns[key] for i in range(seeds)
              if source and (key := f"{family}:{schedule}:{source}:{i}") in reruns]
    if missing is None and len(scores) < seeds:
        missing = f"{len(scores)} of {seeds} re-runs done"
    values = [_scored(s, worst) for s in scores]
    return BenchmarkCell(
        optimizer=family, budget=budget.label, schedule=schedule, trials=len(tuned),
        setting=setting, trial=chosen.number if chosen else None,
        validation=chosen.value if chosen else validation, scores=scores,
        median=statistics.median(values) if values else None,
        low=min(values) if values else None, high=max(values) if values else None,
        change=None, tuning_seconds=round(tuning, 1),
        rerun_seconds=round(sum(s.seconds for s in scores), 1), missing=missing,
        diverged=sum(s.value is None for s in scores))


def _scored(score: SeedScore, worst: float) -> float:
    return worst if score.value is None else float(score.value)


def reference_family(optimizers: Sequence[str]) -> str:
    """The optimizer whose one-shot cells every change is against: Adam, the paper's reference
    point, when the benchmark compares it; else the first optimizer given (a benchmark of
    newer optimizers still gets a change column, against the one the user named first)."""
    return BASELINE[0] if BASELINE[0] in optimizers or not optimizers else optimizers[0]


def _is_baseline(cell: BenchmarkCell, reference: str = BASELINE[0]) -> bool:
    return (cell.optimizer, cell.budget) == (reference, ONESHOT)


def _with_changes(cells: list[BenchmarkCell], direction: Direction,
                  worst: float | None = None, *,
                  reference: str = BASELINE[0]) -> list[BenchmarkCell]:
    """Each cell's median against its schedule's one-shot `reference` (Adam): positive is
    better, for an objective maximised (accuracy) or minimised (MSE) alike, as `compare`'s
    gain; and its re-runs against the reference's paired by seed index, with a bootstrap
    interval (`paired`)."""
    if worst is None:
        worst = unbounded_worst(direction)
    baselines = {c.schedule: c for c in cells if _is_baseline(c, reference)}
    out: list[BenchmarkCell] = []
    for c in cells:
        base = baselines.get(c.schedule)
        if base is None:
            out.append(c)
            continue
        out.append(dataclasses.replace(
            c, change=None if c.median is None or base.median is None else
            improvement(c.median, base.median, direction),
            paired=paired_change(_by_seed(c, worst), _by_seed(base, worst),
                                 direction=direction)))
    return out


def _by_seed(cell: BenchmarkCell, worst: float) -> dict[int, float]:
    """The cell's finished re-runs' test values by seed, a diverged one as the worst."""
    return {s.seed: _scored(s, worst) for s in cell.scores}


def _target(given: float | None, cells: Sequence[BenchmarkCell],
            first: str, reference: str) -> tuple[float | None, str]:
    if given is not None:
        return given, "--target"
    base = next((c for c in cells if _is_baseline(c, reference) and c.schedule == first),
                None)
    if base is None or base.median is None or base.missing:
        return None, ""
    return base.median, f"one-shot {reference}'s median ({first})"


def _with_target(cell: BenchmarkCell, target: float, direction: Direction) -> BenchmarkCell:
    if not cell.scores:
        return cell
    return dataclasses.replace(cell, to_target=median_time_to_target(
        [s.curve for s in cell.scores], target=target, direction=direction))


def _headline(cells: Sequence[BenchmarkCell], schedules: Sequence[str],
              budgets: Sequence[Budget], direction: Direction, worst: float) -> list[Headline]:
    """Per schedule: the one-shot cell whose setting validated best, against each optimizer's
    cell at the smallest tuning budget (see the module docstring)."""
    tuned = [b for b in budgets if b.trials]
    if not tuned or not any(b.trials == 0 for b in budgets):
        return []
    out: list[Headline] = []
    for schedule in schedules:
        oneshots = [c for c in cells if c.schedule == schedule and c.budget == ONESHOT
                    and c.validation is not None and math.isfinite(c.validation)]
        if not oneshots:
            continue
        best = best_of(oneshots, key=lambda c: float(c.validation or 0.0), direction=direction)
        rows = {c.optimizer: paired_change(_by_seed(c, worst), _by_seed(best, worst),
                                           direction=direction)
                for c in cells if c.schedule == schedule and c.budget == tuned[0].label}
        out.append(Headline(schedule=schedule, oneshot=best.optimizer, budget=tuned[0].label,
                            rows=rows))
    return out
