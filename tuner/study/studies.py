"""Study lifecycle: create or load a study, count and pick its trials, queue the ones that run
first or again, and find the trials of dead processes. What a study stores about itself is
tuner.study.meta's; what it stores on each trial, tuner.study.trial_attrs'.
"""

from __future__ import annotations

import datetime
import math
import os
import socket

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StudyNotFoundError
from tuner.jsontypes import JsonObject
from tuner.study import optuna_adapter, trial_attrs
from tuner.study.direction import Direction, best_of
from tuner.study.locations import redact
from tuner.study.meta import StudyMeta, space_of

# A population's members that ran out of memory together run again in smaller populations.
POPULATION_OUT_OF_MEMORY = "out of memory in a population"
KILLED_FAILS = ("killed", "interrupted")
UNCOUNTED_FAILS = (*KILLED_FAILS, POPULATION_OUT_OF_MEMORY)  # failures that run again
UNOWNED_GRACE_S = 120  # a RUNNING trial with no owner record this old was killed right after ask


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage: BaseStorage, name: str, *, sampler: BaseSampler | None = None,
               pruner: BasePruner | None = None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = study_names(storage)
        listing = ", ".join(known) if known else "none yet"
        where = storage.url if isinstance(storage, RDBStorage) else type(storage).__name__
        raise StudyNotFoundError(f"no study named {name!r} in {redact(where)}; known "
                                 f"studies: {listing}") from None


def exists(storage: BaseStorage, name: str) -> bool:
    return name in study_names(storage)


def create_study(storage: BaseStorage, name: str, meta: StudyMeta, *,
                 sampler: BaseSampler | None, pruner: BasePruner | None) -> optuna.Study:
    direction = optuna.study.StudyDirection[meta.direction.upper()]
    study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                sampler=sampler, pruner=pruner)
    for key, value in meta.to_attrs().items():
        study.set_user_attr(key, value)
    return study  # each family's defaults trial is queued when it is claimed (claims.py)


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
    have = {family_of(t) for t in trials if trial_attrs.is_defaults(t)}
    for family in space.families:
        if family not in have and space.runs_defaults(family):
            study.enqueue_trial(space.defaults_params(family),
                                user_attrs=trial_attrs.queued(defaults=True), skip_if_exists=False)
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


def owner_record() -> trial_attrs.Owner:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def set_owner(study: optuna.Study, trial: optuna_adapter.AnyTrial,
              process: trial_attrs.Owner) -> None:
    """Record the process that runs `trial` (a system attribute: through the storage)."""
    stored: JsonObject = {"host": process["host"], "pid": process["pid"],
                          "start": process["start"]}
    optuna_adapter.set_trial_system_attr(study, trial, trial_attrs.OWNER_ATTR, stored)


def set_family(study: optuna.Study, trial: optuna_adapter.AnyTrial, family: str) -> None:
    """Record the optimizer family the sampler chose for `trial`, before any parameter."""
    optuna_adapter.set_trial_system_attr(study, trial, trial_attrs.FAMILY_ATTR, family)


def owner_gone(owner: trial_attrs.Owner) -> bool:
    """Whether the process of an owner record (see :func:`owner_record`) has ended; another
    machine's never is (its heartbeat decides)."""
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
        elif t.state == TrialState.FAIL and trial_attrs.fail_reason(t) not in UNCOUNTED_FAILS:
            n += 1
    return n


def best_complete(trials: list[FrozenTrial], direction: Direction) -> FrozenTrial | None:
    """The best COMPLETE trial with a finite value (never an inf or NaN), or None."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE
                and t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    return best_of(complete, key=lambda t: float(t.value or 0.0), direction=direction)


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Enqueue `trial`'s parameters once more, unless a retry of it already exists."""
    if any(trial_attrs.retry_of(t) == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    attrs = trial_attrs.queued(defaults=trial_attrs.is_defaults(trial), retry_of=trial.number)
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
        owner = trial_attrs.owner(t)
        if optuna_adapter.trial_id(t) in late or \
                (owner is not None and owner_gone(owner)) or \
                (owner is None and _unowned_too_long(t)):
            out.append(t)
    return out


def _unowned_too_long(trial: FrozenTrial) -> bool:
    """opttune records the owner right after `ask`; a kill in between leaves no record."""
    start = trial.datetime_start
    return start is not None and (datetime.datetime.now() - start).total_seconds() > \
        UNOWNED_GRACE_S


def fail_stale(study: optuna.Study, trial: FrozenTrial, *, reason: str = "killed") -> None:
    """Mark a dead process's trial FAIL and queue its parameters to run again once.

    Not Optuna's ``fail_stale_trials``: it would fail the trial without the reason, which
    decides that the trial does not count and runs again.
    """
    try:
        # A user attribute of a trial this process may not run: through the storage.
        optuna_adapter.set_trial_user_attr(study, trial, trial_attrs.FAIL_REASON_ATTR, reason)
        study.tell(trial.number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):  # UpdateFinishedTrialError; "cannot tell a COMPLETE"
        return  # finished meanwhile by someone else
    requeue(study, trial)
