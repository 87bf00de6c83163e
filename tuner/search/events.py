"""What a running study tells whoever watches it (the CLI's live display, or nobody)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tuner.space.searchspace import DEFAULTS_ATTR

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL
    value: float | None
    config: dict[str, Any]
    reason: str | None = None
    seconds: float = 0.0
    run_id: str | None = None
    epochs_run: int = 0
    history: list[float] = field(default_factory=list)


class Observer(Protocol):
    def notice(self, text: str) -> None: ...

    def study_start(self, info: dict[str, Any]) -> None: ...

    def trial_start(self, number: int, config: dict[str, Any], index: int, total: int) -> None: ...

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None: ...

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None: ...


class NullObserver:
    """Watches nothing: the library's default, so that it never prints."""

    def notice(self, text: str) -> None:
        pass

    def study_start(self, info: dict[str, Any]) -> None:
        pass

    def trial_start(self, number: int, config: dict[str, Any], index: int, total: int) -> None:
        pass

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        pass

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        pass


def outcome_of(t: FrozenTrial) -> TrialOutcome:
    """A stored trial as a TrialOutcome."""
    attrs = t.user_attrs
    reason = attrs.get("prune_reason") or attrs.get("fail_reason")
    if reason is None and attrs.get(DEFAULTS_ATTR):
        reason = "defaults"
    return TrialOutcome(number=t.number, state=t.state.name, value=t.value,
                        config=dict(attrs.get("config", {})), reason=reason,
                        seconds=float(attrs.get("seconds", 0.0)),
                        run_id=attrs.get("mlflow_run_id"),
                        epochs_run=int(attrs.get("epochs_run", 0)),
                        history=[t.intermediate_values[k] for k in sorted(t.intermediate_values)])
