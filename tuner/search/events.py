"""What a running study tells whoever watches it (the CLI's live display, or nobody)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict

from tuner.study.trial_attrs import FlatConfig
from tuner.study.trial_record import State, TrialRecord, read_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from tuner.space.searchspace import Space
    from tuner.study.locations import Stores


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial as the display shows it; a stored one comes from :meth:`from_record`."""

    number: int
    state: State  # COMPLETE, PRUNED or FAIL; RUNNING in a study's list while others train
    value: float | None
    config: FlatConfig
    reason: str | None = None
    seconds: float = 0.0
    run_id: str | None = None
    epochs_run: int = 0
    history: list[float] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: TrialRecord) -> TrialOutcome:
        # A defaults trial that ran to the end says so where others give their reason.
        reason = record.reason or ("defaults" if record.defaults_trial else None)
        return cls(number=record.number, state=record.state, value=record.value,
                   config=record.config, reason=reason, seconds=record.seconds or 0.0,
                   run_id=record.run_id, epochs_run=record.epochs_run,
                   history=list(record.intermediate.values()))


def outcome_of(t: FrozenTrial) -> TrialOutcome:
    """A stored trial as a TrialOutcome, read by the one reader of a stored trial."""
    return TrialOutcome.from_record(read_trial(t))


class StudyStart(TypedDict):
    """What an observer's `study_start` is told: the same from one process and from `--jobs`
    (tuner.search.session.study_start builds it)."""

    study: str
    device: str
    target: int
    done: int  # trials that count towards the budget already
    space: Space
    metric: str
    data_source: str
    pruner: str
    startup_trials: int  # a family's first complete trials, never pruned
    stores: Stores


class Observer(Protocol):
    def notice(self, text: str) -> None: ...

    def space_ready(self, space: Space) -> None: ...

    def study_start(self, info: StudyStart) -> None: ...

    def trial_start(self, number: int, config: FlatConfig, index: int, total: int) -> None: ...

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None: ...

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None: ...


class NullObserver:
    """Watches nothing: the library's default, so that it never prints."""

    def notice(self, text: str) -> None:
        pass

    def space_ready(self, space: Space) -> None:
        pass

    def study_start(self, info: StudyStart) -> None:
        pass

    def trial_start(self, number: int, config: FlatConfig, index: int, total: int) -> None:
        pass

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        pass

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        pass
