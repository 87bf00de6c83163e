"""One trial's configuration: a plain, flat, loggable record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        """Rebuild from :meth:`flat`; unknown keys fail loudly in :func:`optimizers.build`."""
        from tuner.space.families import ALL_PARAM_NAMES

        rest = dict(flat)
        optimizer = str(rest.pop("optimizer"))
        batch_size = int(rest.pop("batch_size"))
        epochs = int(rest.pop("epochs"))
        scheduler = str(rest.pop("scheduler", "none"))
        hyper = {k: float(rest.pop(k)) for k in list(rest) if k in ALL_PARAM_NAMES}
        return cls(optimizer, hyper, batch_size, epochs, scheduler, rest)
