"""Study lifecycle: create or load a study, its stored metadata, and repairs after a crash.

Everything `resume` and `worker` need lives in the study's user attributes: the task, the
space, the data source, the objective and the settings, and the MLflow ids.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner._version import __version__
from tuner.errors import OpttuneError, StoreError, StudyNotFoundError
from tuner.space.searchspace import DEFAULTS_ATTR, Space
from tuner.study import optuna_adapter
from tuner.study.stores import redact

OWNER_ATTR = "opttune:owner"
# A population's members that ran out of memory together run again in smaller populations.
POPULATION_OUT_OF_MEMORY = "out of memory in a population"
KILLED_FAILS = ("killed", "interrupted")
UNCOUNTED_FAILS = (*KILLED_FAILS, POPULATION_OUT_OF_MEMORY)  # failures that run again
KIND_ATTR = "kind"  # "benchmark" on a benchmark's record (a study with no trials of its own)
BENCHMARK_KIND = "benchmark"
UNOWNED_GRACE_S = 120  # a RUNNING trial with no owner record this old was killed right after ask


@dataclass(frozen=True)
class StudyMeta:
    """What a study stores about itself."""

    task: str
    space: Space
    data_source: str
    metric: str
    direction: str
    settings: dict[str, Any]
    mlflow: dict[str, str]

    def user_attrs(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "space": json.dumps(self.space.to_dict()),  # key order is choice order
            "data_source": self.data_source,
            "objective": {"metric": self.metric, "direction": self.direction},
            "settings": self.settings,
            "mlflow": self.mlflow,
            "opttune_version": __version__,
        }

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyMeta:
        attrs = study.user_attrs
        if attrs.get(KIND_ATTR) == BENCHMARK_KIND:
            raise OpttuneError(f"{study.study_name!r} is a benchmark, not a study: run its "
                               f"`opttune benchmark` command again to continue it; its searches "
                               f"are the studies {study.study_name}.FAMILY")
        missing = [k for k in ("task", "space", "data_source") if k not in attrs]
        if missing:
            raise OpttuneError(f"study {study.study_name!r} was not made by opttune (no "
                               f"{', '.join(missing)} attribute); it cannot be resumed here")
        metric, direction = objective_of(study)
        return cls(task=attrs["task"], space=Space.from_dict(json.loads(attrs["space"])),
                   data_source=attrs["data_source"], metric=metric, direction=direction,
                   settings=dict(attrs.get("settings", {})), mlflow=dict(attrs.get("mlflow", {})))


def objective_of(study: optuna.Study | Any) -> tuple[str, str]:
    """(metric, direction) of a study: as stored by opttune, else Optuna's direction and the
    metric named "value" (a study opttune did not make)."""
    objective = study.user_attrs.get("objective") or {}
    direction = objective.get("direction") or study.direction.name.lower()
    return str(objective.get("metric", "value")), str(direction)


def study_names(storage: Any) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage: Any, name: str, *, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = study_names(storage)
        listing = ", ".join(known) if known else "none yet"
        raise StudyNotFoundError(f"no study named {name!r} in {redact(storage.url)}; known "
                                 f"studies: {listing}") from None


def exists(storage: Any, name: str) -> bool:
    return name in study_names(storage)


def create_study(storage: Any, name: str, meta: StudyMeta, *, sampler: Any,
                 pruner: Any) -> optuna.Study:
    direction = optuna.study.StudyDirection[meta.direction.upper()]
    study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                sampler=sampler, pruner=pruner)
    for key, value in meta.user_attrs().items():
        study.set_user_attr(key, value)
    return study  # each family's defaults trial is queued when it is claimed (claims.py)


def space_of(study: optuna.Study) -> Space | None:
    """The search space stored with the study; None for a study opttune did not make."""
    stored = study.user_attrs.get("space")
    return Space.from_dict(json.loads(stored)) if stored else None


def family_of(trial: FrozenTrial) -> str | None:
    """The optimizer family of a trial: sampled, or fixed when it was queued (a trial
    interrupted while sampling may hold only the latter)."""
    family = trial.params.get("optimizer") or optuna_adapter.enqueued_params(trial).get(
        "optimizer")
    return str(family) if family is not None else None


def queue_next_defaults(study: optuna.Study, trials: list[FrozenTrial]) -> bool:
    """Queue the defaults trial of the first family (in the space's order) that has none yet,
    unless a queued trial is already waiting to go first; whether one was queued.

    Called under the study's lock right before ``ask``, so the trial queued here is the one
    that ``ask`` pops. A defaults trial in any state counts, a re-run of an interrupted one
    too (it keeps the attribute, see :func:`requeue`), so each family gets one; a family
    whose defaults the space excludes gets none (``Space.runs_defaults``). Studies made
    when all defaults trials were queued at creation still hold them WAITING: they are popped
    as they are, and none is queued twice.
    """
    if any(t.state == TrialState.WAITING for t in trials):
        return False  # a re-run, or a defaults trial queued earlier: it goes first
    space = space_of(study)
    if space is None or not space.defaults_first:
        return False
    have = {family_of(t) for t in trials if t.user_attrs.get(DEFAULTS_ATTR)}
    for family in space.families:
        if family not in have and space.runs_defaults(family):
            study.enqueue_trial(space.defaults_params(family), user_attrs={DEFAULTS_ATTR: True},
                                skip_if_exists=False)
            return True
    return False


# -- bookkeeping per trial --------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a live process from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _owner_dead(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return False  # another machine's trial: its heartbeat decides
    pid = int(owner.get("pid", -1))
    if pid == os.getpid():
        return False
    if os.path.isdir("/proc"):
        start = _process_start(pid)
        return start is None or (owner.get("start") is not None and start != owner["start"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that count towards the budget: finished, or failed for a reason of their own."""
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") not in UNCOUNTED_FAILS:
            n += 1
    return n


def best_complete(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best COMPLETE trial with a finite value (never an inf or NaN), or None."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE
                and t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda t: float(t.value or 0.0))


def improvement(value: float, reference: float, direction: str) -> float:
    """How much better `value` is than `reference`: positive is better, whichever way the
    objective goes (`compare`'s gain over defaults and the benchmark's change both use it)."""
    return value - reference if direction == "maximize" else reference - value


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Enqueue `trial`'s parameters once more, unless a retry of it already exists."""
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    attrs: dict[str, Any] = {"retry_of": trial.number}
    if trial.user_attrs.get(DEFAULTS_ATTR):
        attrs[DEFAULTS_ATTR] = True
    # An enqueued trial interrupted while sampling has only some params: keep its fixed ones.
    params = {**optuna_adapter.enqueued_params(trial), **trial.params}
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True


def stale_trials(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials whose process is gone (killed, crashed, power loss).

    On this machine the process id tells; on a server store, a heartbeat older than the grace
    period tells for any machine.
    """
    late = set(optuna_adapter.stale_trial_ids(study))
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER_ATTR)
        if optuna_adapter.trial_id(t) in late or \
                (isinstance(owner, dict) and _owner_dead(owner)) or \
                (owner is None and _unowned_too_long(t)):
            out.append(t)
    return out


def _unowned_too_long(trial: FrozenTrial) -> bool:
    """opttune records the owner right after `ask`; a kill in between leaves no record."""
    import datetime

    start = trial.datetime_start
    return start is not None and (datetime.datetime.now() - start).total_seconds() > \
        UNOWNED_GRACE_S


def owner_gone(owner: dict[str, Any]) -> bool:
    """Whether the process of an owner record (see :func:`owner_record`) has ended."""
    return _owner_dead(owner)


def fail_stale(study: optuna.Study, trial: FrozenTrial, *, reason: str = "killed") -> None:
    """Mark a dead process's trial FAIL and queue its parameters to run again once.

    Not Optuna's ``fail_stale_trials``: it would fail the trial without the reason, which
    decides that the trial does not count and runs again.
    """
    try:
        optuna_adapter.set_trial_user_attr(study, trial, "fail_reason", reason)
        study.tell(trial.number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):  # UpdateFinishedTrialError; "cannot tell a COMPLETE"
        return  # finished meanwhile by someone else
    requeue(study, trial)


def study_tracking_uri(name: str, meta: StudyMeta, given: str | None, *,
                       always: bool = False) -> str | None:
    """The MLflow store a command on study `name` logs to: `given` (--tracking-uri), else the
    one the study was made with when that was given explicitly then (or `always`: a worker on
    another machine has no home of the study's), so that resume, workers and retrain never
    log elsewhere. None: the home's own store, as for a study made without --tracking-uri (a
    copied home logs to its copy), or when the stored one is an SQLite file that is gone.
    A stored URI with a password was stored masked."""
    from tuner.study.stores import sqlite_path

    if given is not None:
        return given
    if not (always or meta.mlflow.get("tracking_uri_given") == "true"):
        return None
    stored = meta.mlflow.get("tracking_uri", "")
    path = sqlite_path(stored)
    if path is not None and not path.exists():
        return None
    if "***" in stored:
        raise StoreError(f"study {name!r} logs to the MLflow store {stored}, whose password "
                         f"is not stored; give it with --tracking-uri")
    return stored or None
