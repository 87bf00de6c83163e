"""What a run of trials works with (:class:`Session`) and what it returns (:class:`SearchResult`),
and the two records both ways of running trials (here, or in `--jobs` processes) build alike.

Shared by the runner, the trial loop and the `--jobs` supervisor, so that none of them needs
another's module for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from tuner.search.events import StudyStart, TrialOutcome, outcome_of
from tuner.search.pruning import STARTUP_TRIALS
from tuner.space.searchspace import Space
from tuner.study.direction import Direction
from tuner.study.locations import Stores
from tuner.study.meta import StudyMeta
from tuner.study.settings import StudySettings
from tuner.study.studies import best_complete, counted

if TYPE_CHECKING:
    import optuna

    from tasks.base import Task
    from tuner.training.loop import DeviceData


@dataclass
class SearchResult:
    study: str
    metric: str
    direction: Direction
    device: str
    data_source: str
    stores: Stores
    trials: list[TrialOutcome] = field(default_factory=list)  # run in this call
    all_trials: list[TrialOutcome] = field(default_factory=list)  # the whole study
    best: TrialOutcome | None = None
    total_counted: int = 0
    target: int = 0


@dataclass
class Session:
    """Everything a run of trials needs, resolved and checked."""

    name: str
    task: Task
    space: Space
    meta: StudyMeta
    data: DeviceData
    device: str
    stores: Stores
    settings: StudySettings  # the study's, with this run's overrides (--device, --population)


def study_start(*, name: str, device: str, target: int, done: int, meta: StudyMeta,
                stores: Stores) -> StudyStart:
    """What an observer's `study_start` is told: the same from one process and from `--jobs`
    (whose processes pipe it, as JSON but for the space and stores, to the display)."""
    return {"study": name, "device": device, "target": target, "done": done,
            "space": meta.space, "metric": meta.metric, "data_source": meta.data_source,
            "pruner": meta.settings.pruner, "startup_trials": STARTUP_TRIALS, "stores": stores}


def finish_result(result: SearchResult, study: optuna.Study) -> SearchResult:
    """`result` with what the whole study holds at the end of a run: its counted trials, its
    best trial and every trial that ran or runs."""
    trials = study.get_trials(deepcopy=False)
    result.total_counted = counted(trials)
    best = best_complete(trials, result.direction)
    result.best = None if best is None else outcome_of(best)
    result.all_trials = [outcome_of(t) for t in trials if t.state != TrialState.WAITING]
    return result
