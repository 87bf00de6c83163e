"""One trial's configuration: a plain, flat, loggable record."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import SpaceError
from tuner.space.families import ALL_PARAM_NAMES


@dataclass(frozen=True)
class TrialConfig:
    """What one trial trains with. `hyper` holds only the chosen family's hyperparameters."""

    optimizer: str
    hyper: dict[str, float]
    batch_size: int
    epochs: int
    scheduler: str = "none"
    task_params: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """One flat dict with plain names (optimizer, lr, momentum, …) for logs and tables."""
        return {"optimizer": self.optimizer, **self.hyper, "batch_size": self.batch_size,
                "epochs": self.epochs, "scheduler": self.scheduler, **self.task_params}

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], *,
                  task_params: Collection[str] = ()) -> TrialConfig:
        """Rebuild from :meth:`flat`. A key that is neither the optimizer's, the training's
        nor one of the task's hyperparameters `task_params` fails loudly."""
        rest = dict(flat)
        missing = [k for k in ("optimizer", "batch_size", "epochs") if k not in rest]
        if missing:
            raise SpaceError(f"a trial config needs {', '.join(missing)}, but got keys "
                             f"{', '.join(sorted(rest))}")
        optimizer = str(rest.pop("optimizer"))
        batch_size = int(rest.pop("batch_size"))
        epochs = int(rest.pop("epochs"))
        scheduler = str(rest.pop("scheduler", "none"))
        hyper = {k: float(rest.pop(k)) for k in list(rest) if k in ALL_PARAM_NAMES}
        unknown = sorted(set(rest) - set(task_params))
        if unknown:
            raise SpaceError(f"unknown trial config key(s) {', '.join(unknown)}; known: "
                             f"optimizer, {', '.join(ALL_PARAM_NAMES)}, batch_size, epochs, "
                             f"scheduler" + (f", {', '.join(task_params)}" if task_params else ""))
        return cls(optimizer, hyper, batch_size, epochs, scheduler, rest)
