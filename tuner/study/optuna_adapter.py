"""The one module that touches Optuna's private API: each use small, typed and explained here.

Checked on Optuna 5.0.0; pyproject.toml admits ``optuna>=5,<6`` only. The test
``tests/tuner/study/test_optuna_adapter.py`` fails when a private Optuna name appears in any
other module, and runs every function here against a real SQLite store, so an Optuna release
that moves one of them fails there, with this module as the one place to mend.

Public API is used wherever Optuna has one: a finished trial is read back from
``Study.tell``'s return value, a stale trial is failed with ``Study.tell(number, ...)``, and
heartbeats are recorded by a thread of our own over the storage's public ``record_heartbeat``
and ``get_heartbeat_interval`` (not ``optuna.storages._heartbeat``'s thread). What remains,
and why no public API does it:

- ``Study._storage``: a study offers no public way to set a *system* attribute on a trial
  (opttune's owner record, the family), nor a user attribute on a trial that a dead process
  owned; the storage's (public) methods do both.
- ``Trial._trial_id`` / ``FrozenTrial._trial_id`` and ``Study._study_id`` /
  ``FrozenStudy._study_id``: the storage API takes these ids, and nothing public holds them
  (``get_study_id_from_name`` would cost a database round trip for an id already at hand).
- ``_CachedStorage._backend``: a loaded study wraps its RDBStorage in Optuna's cache; the
  per-study lock needs the RDBStorage's url and engine. ``optuna.storages._CachedStorage``
  itself is named for the benchmark, whose timers wrap its methods.
- ``_get_stale_trial_ids`` of a heartbeat store: the public ``fail_stale_trials`` fails the
  stale trials itself (without opttune's fail reason and single re-queue), and
  ``opttune check`` must find them without changing anything.
- ``optuna.storages._rdb.models``: the tables where RDBStorage keeps heartbeats, read to give
  each running trial's last heartbeat (nothing public returns it), so that staleness can be
  judged at a moment the caller names (tests judge it without waiting out a grace period).
- ``Study._pop_waiting_trial_id``: ``Study.ask`` pops queued trials lowest number first and
  has no parameter to pick another; replaced per study object to set that order.
- ``Study._get_trials``: Optuna's samplers read a study's trials through it, so a view that
  shows a sampler only some trials must answer it.
- The ``fixed_params`` system attribute: where ``Study.enqueue_trial`` keeps the parameters
  of a queued trial (also those a trial interrupted while sampling never reached).
- The ``alembic`` folder next to RDBStorage's module: the schema revisions this Optuna knows,
  read without opening a store (opening one creates missing tables). The public
  ``RDBStorage.get_all_versions`` needs an opened store: about a second, even in memory.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import threading
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject, JsonValue

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison
    from optuna.study._frozen import FrozenStudy  # what get_all_studies returns; not exported

CHECKED_ON = ("5.0.0",)  # the Optuna versions this module was read against
FIXED_PARAMS_ATTR = "fixed_params"  # the system attribute Study.enqueue_trial writes

AnyTrial = optuna.Trial | FrozenTrial


@runtime_checkable
class _Heartbeats(Protocol):
    """The heartbeat methods of a storage that can keep heartbeats (RDBStorage and its cache
    wrapper): two public ones, and the private query for stale trials."""

    def record_heartbeat(self, trial_id: int) -> None: ...

    def get_heartbeat_interval(self) -> int | None: ...

    def _get_stale_trial_ids(self, study_id: int) -> list[int]: ...


# -- ids and the storage ----------------------------------------------------------------------
def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study reads and writes (Optuna's cache wrapper for a database)."""
    return study._storage


def backend_of(study: optuna.Study) -> BaseStorage:
    """The storage behind Optuna's cache wrapper: the RDBStorage, with its url and engine."""
    storage = storage_of(study)
    if isinstance(storage, optuna.storages._CachedStorage):
        return cast(BaseStorage, storage._backend)
    return storage


def storage_classes() -> tuple[type[BaseStorage], ...]:
    """The classes whose methods a study's storage calls go through (for timing them)."""
    return (optuna.storages.RDBStorage, optuna.storages._CachedStorage)


def study_id(study: optuna.Study | FrozenStudy) -> int:
    """The id that the storage API takes for `study` (a Study or a FrozenStudy)."""
    return int(study._study_id)


def trial_id(trial: AnyTrial) -> int:
    """The id that the storage API takes for `trial` (a Trial or a FrozenTrial)."""
    return int(trial._trial_id)


def frozen_trial(study: optuna.Study, trial: AnyTrial) -> FrozenTrial:
    """`trial` as stored now (state, attributes, parameters)."""
    return storage_of(study).get_trial(trial_id(trial))


def set_trial_system_attr(study: optuna.Study, trial: AnyTrial, key: str,
                          value: JsonValue) -> None:
    """Set a system attribute of `trial` (Trial has no public setter since Optuna 3)."""
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def set_trial_user_attr(study: optuna.Study, trial: AnyTrial, key: str,
                        value: JsonValue) -> None:
    """Set a user attribute of any trial of `study`, also one this process does not run."""
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def enqueued_params(trial: FrozenTrial) -> JsonObject:
    """The parameters `Study.enqueue_trial` fixed for `trial` ({} for a sampled trial)."""
    return dict(trial.system_attrs.get(FIXED_PARAMS_ATTR) or {})


# -- heartbeats -------------------------------------------------------------------------------
def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between heartbeats if the study's store keeps them, else None."""
    storage = storage_of(study)
    return storage.get_heartbeat_interval() if isinstance(storage, _Heartbeats) else None


def heartbeats_enabled(study: optuna.Study) -> bool:
    return heartbeat_interval(study) is not None


def record_heartbeat(study: optuna.Study, trial: AnyTrial) -> None:
    """One heartbeat for `trial` now (nothing where the store keeps none)."""
    storage = storage_of(study)
    if isinstance(storage, _Heartbeats) and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial_id(trial))


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: AnyTrial) -> Iterator[None]:
    """Record `trial`'s heartbeat every interval while the block runs (stores with heartbeats
    only; elsewhere a no-op)."""
    interval = heartbeat_interval(study)
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                record_heartbeat(study, trial)
            except Exception:
                pass  # one missed beat is harmless; only a whole grace period of them is not
            if stop.wait(timeout=interval):
                return

    thread = threading.Thread(target=beat, name="opttune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def grace_period(study: optuna.Study) -> int | None:
    """Seconds of silence after which a RUNNING trial counts as stale (None without heartbeats);
    Optuna's rule: the store's grace period, or twice the interval where none is set."""
    interval = heartbeat_interval(study)
    if interval is None:
        return None
    grace = getattr(backend_of(study), "grace_period", None)
    return int(grace) if grace is not None else 2 * interval


def last_heartbeats(study: optuna.Study) -> dict[int, datetime.datetime]:
    """The last stored heartbeat of each RUNNING trial of `study` that has beaten, by trial id
    ({} where the store keeps no heartbeats).

    The times are on the store's clock and naive, as RDBStorage stores them (its SQL ``now()``:
    UTC on SQLite, whole seconds there; the session's time zone on a server).
    """
    backend = backend_of(study)
    engine = getattr(backend, "engine", None)
    if heartbeat_interval(study) is None or engine is None:
        return {}
    # SQLAlchemy's ORM and Optuna's tables: 0.17 s to import, and only a store with
    # heartbeats (a server's) needs them, once it is open; a search spawns its MLflow process
    # before that, so that the two imports overlap (tuner.search.runner).
    import sqlalchemy  # noqa: PLC0415
    from optuna.storages._rdb import models  # noqa: PLC0415

    beats, trials = models.TrialHeartbeatModel, models.TrialModel
    query = (sqlalchemy.select(beats.trial_id, beats.heartbeat)
             .join(trials, trials.trial_id == beats.trial_id)
             .where(trials.study_id == study_id(study), trials.state == TrialState.RUNNING))
    with engine.connect() as conn:
        return {int(tid): beat for tid, beat in conn.execute(query)}


def stale_trial_ids(study: optuna.Study, *,
                    now: datetime.datetime | None = None) -> list[int]:
    """Ids of the RUNNING trials whose heartbeat is older than the store's grace period,
    without changing them ([] where the store keeps no heartbeats).

    `now` None (what opttune itself does): Optuna judges against the database's clock now.
    `now` given, a naive time on the store's clock like those of :func:`last_heartbeats`: the
    same judgement at that moment (stale when ``now - last beat > grace``), smallest id first.
    """
    storage = storage_of(study)
    if not isinstance(storage, _Heartbeats) or storage.get_heartbeat_interval() is None:
        return []
    if now is None:
        return [int(i) for i in storage._get_stale_trial_ids(study_id(study))]
    grace = datetime.timedelta(seconds=cast(int, grace_period(study)))
    return sorted(tid for tid, beat in last_heartbeats(study).items() if now - beat > grace)


# -- the queue of waiting trials --------------------------------------------------------------
def set_waiting_order(study: optuna.Study,
                      key: Callable[[FrozenTrial], SupportsRichComparison]) -> None:
    """Make `study.ask()` pop its WAITING trials in the order of `key`, smallest first.

    Optuna pops the lowest-numbered one. Two processes may pop at once: a trial another
    process set RUNNING (or finished) first is skipped, as Optuna's own pop does.
    """
    if not hasattr(optuna.study.Study, "_pop_waiting_trial_id"):
        raise OpttuneError(f"opttune orders queued trials through Optuna's "
                           f"Study._pop_waiting_trial_id (checked on Optuna "
                           f"{', '.join(CHECKED_ON)}), which Optuna {optuna.__version__} lacks; "
                           f"install a version the project admits (pip install 'optuna>=5,<6')")
    storage, sid = storage_of(study), study_id(study)

    def pop() -> int | None:
        waiting = storage.get_all_trials(sid, deepcopy=False, states=(TrialState.WAITING,))
        for t in sorted(waiting, key=key):
            try:
                if storage.set_trial_state_values(trial_id(t), state=TrialState.RUNNING):
                    return trial_id(t)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    study._pop_waiting_trial_id = pop  # type: ignore[method-assign]


# -- a study seen through a filter (for samplers) ---------------------------------------------
class _TrialsView:
    """A read-only view of a study that shows only the trials `keep` accepts."""

    def __init__(self, study: optuna.Study, keep: Callable[[FrozenTrial], bool]) -> None:
        self._study = study
        self._keep_trial = keep

    def _keep(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return [t for t in trials if self._keep_trial(t)]

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        return self._keep(self._study._get_trials(deepcopy=deepcopy, states=states,
                                                  use_cache=use_cache))

    def get_trials(self, deepcopy: bool = True,
                   states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._keep(self._study.get_trials(deepcopy=deepcopy, states=states))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> object:
        return getattr(self._study, name)


def trials_view(study: optuna.Study, keep: Callable[[FrozenTrial], bool]) -> optuna.Study:
    """`study` as a sampler should see it when only the trials `keep` accepts count (reads
    go through the filter; everything else, writes included, reaches the study)."""
    return cast(optuna.Study, _TrialsView(study, keep))


# -- the schema of a database store -----------------------------------------------------------
def alembic_folder() -> Path:
    """The folder of the alembic migrations this Optuna's RDBStorage applies."""
    folder = Path(inspect.getfile(optuna.storages.RDBStorage)).parent / "alembic"
    if not folder.is_dir():
        raise OpttuneError(f"Optuna {optuna.__version__} keeps no alembic folder next to "
                           f"RDBStorage (looked in {folder}; checked on Optuna "
                           f"{', '.join(CHECKED_ON)}); install a version the project admits "
                           f"(pip install 'optuna>=5,<6')")
    return folder
