"""What a running study tells whoever watches it (the CLI's live display, or nobody)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


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
