"""Every attribute opttune stores on a trial: its key, its type, its reader and its writer.

Optuna keeps two dicts per trial: user attributes (shown by `optuna` tools; what the stored
study says of a trial) and system attributes (opttune's bookkeeping between processes). The
keys below are what every stored study holds, so they never change; nothing outside this
module spells one. Readers take any trial (a live ``optuna.Trial`` or a ``FrozenTrial``);
writers on a live trial use Optuna's public setter; those that go through the storage (on a
trial another process ran, or a system attribute) are :mod:`tuner.study.studies`'
(set_owner, set_family, fail_stale), as they need Optuna's storage where this module does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypedDict, cast

from tuner.jsontypes import JsonObject, JsonValue, optional_text

if TYPE_CHECKING:  # reading a record must not import optuna: the CLI renders records
    import optuna
    from optuna.trial import FrozenTrial

AnyTrial: TypeAlias = "optuna.Trial | FrozenTrial"
# TrialConfig.flat(), as stored: plain names → the values it trained with (JSON scalars).
FlatConfig: TypeAlias = JsonObject
Scalar = str | int | float  # what the attributes of a trial's end hold (also its run's tags)

# -- user attributes --------------------------------------------------------------------------
CONFIG_ATTR = "config"  # FlatConfig, fixed values included: richer than Optuna's params
RUN_ID_ATTR = "mlflow_run_id"  # str: the trial's MLflow run
DEFAULTS_ATTR = "defaults_trial"  # True: the trial runs its family's PyTorch defaults
RETRY_OF_ATTR = "retry_of"  # int: the trial whose parameters this one runs again
POPULATION_ATTR = "population"  # int: how many trials trained as one stacked model with it
FAIL_REASON_ATTR = "fail_reason"  # str: why it failed (see studies.UNCOUNTED_FAILS)
PRUNE_REASON_ATTR = "prune_reason"  # str: the pruner's message, or "diverged"
EPOCHS_RUN_ATTR = "epochs_run"  # int
SECONDS_ATTR = "seconds"  # float: its training time, rounded to the millisecond
DIVERGED_STEP_ATTR = "diverged_step"  # int: the optimizer step whose loss was not finite
DIVERGED_EPOCH_ATTR = "diverged_epoch"  # int, 0-based
DIVERGED_LOSS_ATTR = "diverged_loss"  # str: the loss as text (NaN and inf are not JSON)
# The attributes of how a trial ended that its MLflow run carries as tags too.
RESULT_TAG_ATTRS = (PRUNE_REASON_ATTR, FAIL_REASON_ATTR, DIVERGED_STEP_ATTR,
                    DIVERGED_EPOCH_ATTR, DIVERGED_LOSS_ATTR, EPOCHS_RUN_ATTR)

# -- system attributes ------------------------------------------------------------------------
OWNER_ATTR = "opttune:owner"  # Owner: the process that claimed the trial
FAMILY_ATTR = "opttune:family"  # str: the family the sampler chose before any parameter


class Owner(TypedDict):
    """The process that runs a trial: `start` (the kernel's start time of `pid`, None where
    there is no /proc) tells a live process from a reused pid."""

    host: str
    pid: int
    start: str | None


# -- readers ----------------------------------------------------------------------------------
def config(trial: AnyTrial) -> FlatConfig | None:
    """The flat configuration the trial trained with; None before it was sampled."""
    stored = trial.user_attrs.get(CONFIG_ATTR)
    return dict(stored) if stored else None


def run_id(trial: AnyTrial) -> str | None:
    return optional_text(trial.user_attrs.get(RUN_ID_ATTR))


def is_defaults(trial: AnyTrial) -> bool:
    return bool(trial.user_attrs.get(DEFAULTS_ATTR, False))


def retry_of(trial: AnyTrial) -> int | None:
    found = trial.user_attrs.get(RETRY_OF_ATTR)
    return None if found is None else int(found)


def fail_reason(trial: AnyTrial) -> str | None:
    return optional_text(trial.user_attrs.get(FAIL_REASON_ATTR))


def reason(trial: AnyTrial) -> str | None:
    """Why the trial was pruned or failed (None when it was neither, or says nothing)."""
    return optional_text(trial.user_attrs.get(PRUNE_REASON_ATTR)
                         or trial.user_attrs.get(FAIL_REASON_ATTR))


def epochs_run(trial: FrozenTrial) -> int:
    """Epochs it trained: as recorded at its end, else the epochs it reported."""
    return int(trial.user_attrs.get(EPOCHS_RUN_ATTR, len(trial.intermediate_values)))


def seconds(trial: FrozenTrial) -> float | None:
    """Its training time as recorded at its end, else its time in the store (None: neither)."""
    found = trial.user_attrs.get(SECONDS_ATTR)
    if found is None and trial.datetime_start and trial.datetime_complete:
        return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)
    return None if found is None else float(found)


def result_tags(trial: FrozenTrial) -> dict[str, Scalar]:
    """The attributes of how `trial` ended that its MLflow run carries as tags."""
    return {k: trial.user_attrs[k] for k in RESULT_TAG_ATTRS if k in trial.user_attrs}


def owner(trial: FrozenTrial) -> Owner | None:
    """The process that claimed the trial; None where none was recorded (a kill right after
    `ask`, or a trial opttune did not run)."""
    found = trial.system_attrs.get(OWNER_ATTR)
    return cast(Owner, found) if isinstance(found, dict) else None


# -- writers ----------------------------------------------------------------------------------
def queued(*, defaults: bool = False, retry_of: int | None = None) -> dict[str, int | bool]:
    """The user attributes a trial is queued with (``Study.enqueue_trial(user_attrs=...)``)."""
    attrs: dict[str, int | bool] = {}
    if retry_of is not None:
        attrs[RETRY_OF_ATTR] = retry_of
    if defaults:
        attrs[DEFAULTS_ATTR] = True
    return attrs


def set_config(trial: optuna.Trial, flat: Mapping[str, JsonValue]) -> None:
    trial.set_user_attr(CONFIG_ATTR, flat)


def set_run_id(trial: optuna.Trial, run: str) -> None:
    trial.set_user_attr(RUN_ID_ATTR, run)


def set_population(trial: optuna.Trial, size: int) -> None:
    trial.set_user_attr(POPULATION_ATTR, size)


def set_fail_reason(trial: optuna.Trial, why: str) -> None:
    """On a trial this process runs, before it is told FAIL."""
    trial.set_user_attr(FAIL_REASON_ATTR, why)



@dataclass(frozen=True)
class Divergence:
    """Where a trial's loss stopped being finite."""

    step: int
    epoch: int
    loss: str


@dataclass(frozen=True)
class TrialEnd:
    """How a trial ended, as its attributes record it (beside Optuna's state and value)."""

    epochs_run: int
    seconds: float
    prune_reason: str | None = None
    fail_reason: str | None = None
    diverged: Divergence | None = None

    def attrs(self) -> dict[str, Scalar]:
        out: dict[str, Scalar] = {}
        if self.diverged is not None:
            out.update({DIVERGED_STEP_ATTR: self.diverged.step,
                        DIVERGED_EPOCH_ATTR: self.diverged.epoch,
                        DIVERGED_LOSS_ATTR: self.diverged.loss})
        out.update({EPOCHS_RUN_ATTR: self.epochs_run, SECONDS_ATTR: round(self.seconds, 3)})
        if self.prune_reason:
            out[PRUNE_REASON_ATTR] = self.prune_reason
        if self.fail_reason:
            out[FAIL_REASON_ATTR] = self.fail_reason
        return out


def write_end(trial: optuna.Trial, end: TrialEnd) -> dict[str, Scalar]:
    """Record `end` on `trial` (before it is told); the MLflow tags that go with it."""
    attrs = end.attrs()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return {k: v for k, v in attrs.items() if k in RESULT_TAG_ATTRS}
