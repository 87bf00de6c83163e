"""A stored trial read back as one typed record: the one reader of a stored trial.

A trial's configuration comes from its `config` attribute (plain names, the values it trained
with, fixed ones included), which is richer than Optuna's own `params`; a trial without one
(not made by opttune, or failed before it was sampled) falls back to `params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, cast, get_args

from tuner.jsontypes import JsonValue, optional_text
from tuner.space.families import ALL_PARAM_NAMES
from tuner.study import trial_attrs
from tuner.study.trial_attrs import FlatConfig

if TYPE_CHECKING:  # records are read without importing optuna: the CLI renders them
    from optuna.trial import FrozenTrial

State = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
STATES: tuple[State, ...] = get_args(State)
FinalState = Literal["COMPLETE", "PRUNED", "FAIL"]  # how a trial this process ran can end
TRAINING_KEYS = ("batch_size", "epochs", "scheduler")  # config keys that are not the optimizer's


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, as :func:`read_trial` reads it."""

    number: int
    state: State
    value: float | None
    metric: str
    optimizer: str | None
    params: FlatConfig  # the optimizer's hyperparameters, then the task's
    batch_size: int | None
    epochs: int | None
    scheduler: str | None
    epochs_run: int
    seconds: float | None
    started: str | None  # ISO 8601, to the second
    finished: str | None
    run_id: str | None  # its MLflow run
    reason: str | None  # why it was pruned or failed
    defaults_trial: bool  # it ran its family's PyTorch defaults
    retry_of: int | None  # the trial whose parameters it runs again
    intermediate: dict[int, float]  # the objective after each epoch (0-based)

    @property
    def config(self) -> FlatConfig:
        """The flat configuration it trained with, laid out as ``TrialConfig.flat()`` does."""
        hyper = {k: v for k, v in self.params.items() if k in ALL_PARAM_NAMES}
        task = {k: v for k, v in self.params.items() if k not in ALL_PARAM_NAMES}
        training: FlatConfig = {"batch_size": self.batch_size, "epochs": self.epochs,
                                "scheduler": self.scheduler}
        head: FlatConfig = {} if self.optimizer is None else {"optimizer": self.optimizer}
        return {**head, **hyper, **{k: v for k, v in training.items() if v is not None}, **task}


def state_of(trial: FrozenTrial) -> State:
    return cast(State, trial.state.name)  # Optuna's five state names are exactly these


def read_trial(t: FrozenTrial, *, metric: str = "value") -> TrialRecord:
    """A stored trial as a record."""
    config = trial_attrs.config(t) or dict(t.params)
    optimizer = config.pop("optimizer", None)
    training = {k: config.pop(k, None) for k in TRAINING_KEYS}
    return TrialRecord(
        number=t.number, state=state_of(t), value=t.value, metric=metric,
        optimizer=optional_text(optimizer), params=config,
        batch_size=_whole(training["batch_size"]),
        epochs=_whole(training["epochs"]), scheduler=optional_text(training["scheduler"]),
        epochs_run=trial_attrs.epochs_run(t),
        seconds=trial_attrs.seconds(t), started=iso(t.datetime_start),
        finished=iso(t.datetime_complete), run_id=trial_attrs.run_id(t),
        reason=trial_attrs.reason(t), defaults_trial=trial_attrs.is_defaults(t),
        retry_of=trial_attrs.retry_of(t),
        intermediate={int(k): v for k, v in sorted(t.intermediate_values.items())})


def _whole(stored: JsonValue) -> int | None:
    """A stored whole number (opttune stores ints); None where a study opttune did not make
    holds something else under its name."""
    if isinstance(stored, int | float | str):
        try:
            return int(stored)
        except ValueError:
            return None
    return None


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None
