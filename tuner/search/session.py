"""What a run of trials works with (:class:`Session`) and what it returns (:class:`SearchResult`).

Shared by the runner, the trial loop and the `--jobs` supervisor, so that none of them needs
another's module for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuner.search.events import TrialOutcome
from tuner.space.searchspace import Space
from tuner.study.records import StudyMeta
from tuner.study.stores import Stores

if TYPE_CHECKING:
    from tasks.base import Task
    from tuner.training.loop import DeviceData


@dataclass
class SearchResult:
    study: str
    metric: str
    direction: str
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
    settings: dict[str, Any]
