"""One trial's configuration: a plain, flat, loggable record."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from tuner.errors import SpaceError
from tuner.jsontypes import JsonValue
from tuner.space.dsl import ParamValue
from tuner.space.families import ALL_PARAM_NAMES


@dataclass(frozen=True)
class TrialConfig:
    """What one trial trains with. `hyper` holds only the chosen family's hyperparameters."""

    optimizer: str
    hyper: dict[str, float]
    batch_size: int
    epochs: int
    scheduler: str = "none"
    task_params: dict[str, ParamValue] = field(default_factory=dict)

    def flat(self) -> dict[str, ParamValue]:
        """One flat dict with plain names (optimizer, lr, momentum, …) for logs and tables."""
        return {"optimizer": self.optimizer, **self.hyper, "batch_size": self.batch_size,
                "epochs": self.epochs, "scheduler": self.scheduler, **self.task_params}

    @classmethod
    def from_flat(cls, flat: Mapping[str, JsonValue], *,
                  task_params: Collection[str] = ()) -> TrialConfig:
        """Rebuild from :meth:`flat` (or its stored JSON). A key that is neither the
        optimizer's, the training's nor one of the task's hyperparameters `task_params` fails
        loudly."""
        rest = {key: _value(key, value) for key, value in flat.items()}
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


def _value(key: str, value: JsonValue) -> ParamValue:
    if isinstance(value, (int, float, str)):
        return value
    raise SpaceError(f"trial config key {key} must be a number or a word, but got {value!r}")
