"""tuner.study.optuna_adapter: the only module with Optuna's private API, and what it does.

Every function is run against a real SQLite store, so that an Optuna release that moves one
of the private names it relies on fails here.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.study import optuna_adapter as adapter
from tuner.study.stores import GRACE_ENV, HEARTBEAT_ENV, _optuna_schema_versions, open_storage
from tuner.study.studies import stale_trials
from tuner.study.trial_attrs import OWNER_ATTR

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = Path("tuner/study/optuna_adapter.py")
# Private Optuna names: a private module or attribute reached through `optuna…`, a private
# name imported from Optuna, the private attributes of studies, trials and storages, and the
# system attribute where Optuna keeps an enqueued trial's parameters.
PRIVATE = re.compile(
    r"optuna[\w.]*\._[A-Za-z]\w*"
    r"|from\s+optuna[\w.]*\s+import\s+[^\n]*\b_[A-Za-z]\w*"
    r"|[.'\"]_(?:storage|trial_id|study_id|backend|get_trials)\b"
    r"|_pop_waiting\w*|_get_stale\w*"
    r"|[\"']fixed_params[\"']")


def private_uses() -> dict[Path, list[str]]:
    """Every private-Optuna match in the project's code, by file (relative to the repo)."""
    found: dict[Path, list[str]] = {}
    for folder in ("tuner", "tasks", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            hits = [m.group(0) for m in PRIVATE.finditer(path.read_text(encoding="utf-8"))]
            if hits:
                found[path.relative_to(ROOT)] = hits
    return found


def test_the_pattern_catches_the_forms_private_uses_take() -> None:
    for line in ("from optuna.storages._heartbeat import BaseHeartbeat",
                 "import optuna.storages._rdb.storage as rdb",
                 "from optuna.storages import _CachedStorage",
                 "for cls in (optuna.storages.RDBStorage, optuna.storages._CachedStorage):",
                 "study._storage.set_trial_system_attr(trial._trial_id, KEY, value)",
                 "storage.get_all_trials(frozen._study_id)",
                 "getattr(storage, '_backend', storage)",
                 "storage._get_stale_trial_ids(sid)",
                 "study._pop_waiting_trial_id = pop",
                 "self._study._get_trials(deepcopy=False)",
                 "trial.system_attrs.get('fixed_params', {})"):
        assert PRIVATE.search(line), line
    for line in ("optuna.storages.fail_stale_trials(study)", "trial.number",
                 "from optuna.trial import FrozenTrial, TrialState", "self._trials = []"):
        assert not PRIVATE.search(line), line


def test_private_optuna_names_appear_in_the_adapter_only() -> None:
    found = private_uses()
    # The scan finds them where they are (so it is able to fail), ...
    in_adapter = " ".join(found.get(ADAPTER, []))
    for name in ("_storage", "_trial_id", "_study_id", "_backend", "_CachedStorage",
                 "_get_stale", "_pop_waiting", "_get_trials", "fixed_params"):
        assert name in in_adapter, name
    # ... and nowhere else.
    elsewhere = {str(path): hits for path, hits in found.items() if path != ADAPTER}
    assert elsewhere == {}


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True)
    return optuna.create_study(study_name="a", storage=storage)


def heartbeat_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, interval: int,
                    grace: int) -> optuna.Study:
    monkeypatch.setenv(HEARTBEAT_ENV, str(interval))
    monkeypatch.setenv(GRACE_ENV, str(grace))
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True, heartbeat=True)
    return optuna.create_study(study_name="h", storage=storage)


def ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # heartbeats outside Study.optimize are ours to run
        warnings.simplefilter("ignore")
        return study.ask()


def test_ids_storage_and_attributes_agree_with_the_public_storage_api(
        study: optuna.Study) -> None:
    storage = adapter.storage_of(study)
    assert isinstance(storage, adapter.storage_classes())
    backend = adapter.backend_of(study)
    assert isinstance(backend, optuna.storages.RDBStorage) and backend.url.startswith("sqlite")
    sid = adapter.study_id(study)
    assert sid == storage.get_study_id_from_name("a")
    [frozen_study] = backend.get_all_studies()
    assert adapter.study_id(frozen_study) == sid

    study.enqueue_trial({"x": 0.25})
    trial = study.ask()
    assert adapter.trial_id(trial) == storage.get_trial_id_from_study_id_trial_number(
        sid, trial.number)
    adapter.set_trial_system_attr(study, trial, "k", {"v": 1})
    adapter.set_trial_user_attr(study, trial, "u", "w")
    stored = adapter.frozen_trial(study, trial)
    assert stored.number == trial.number and stored.state == TrialState.RUNNING
    assert stored.system_attrs["k"] == {"v": 1} and stored.user_attrs["u"] == "w"
    assert adapter.trial_id(stored) == adapter.trial_id(trial)
    assert adapter.enqueued_params(stored) == {"x": 0.25}
    sampled = study.ask()
    assert adapter.enqueued_params(adapter.frozen_trial(study, sampled)) == {}


def test_a_store_without_heartbeats_reports_none_and_beats_no_thread(
        study: optuna.Study) -> None:
    trial = study.ask()
    assert adapter.heartbeat_interval(study) is None and not adapter.heartbeats_enabled(study)
    adapter.record_heartbeat(study, trial)  # a no-op, not an error
    with adapter.heartbeat(study, trial):
        assert "opttune-heartbeat" not in {t.name for t in threading.enumerate()}
    assert adapter.stale_trial_ids(study) == []
    assert adapter.grace_period(study) is None and adapter.last_heartbeats(study) == {}
    assert adapter.stale_trial_ids(study, now=datetime.datetime.max) == []


TICK = datetime.timedelta(microseconds=1)  # the smallest step past a moment
DEADLINE_S = 60.0  # how long a wait for an event may take before the test fails


def wait_for(what: str, done: Callable[[], bool]) -> None:
    """Poll `done` until it holds; fail after DEADLINE_S (a generous bound, not a margin: a
    loaded machine only makes this slower, and the test passes as soon as the event happens)."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.02)


def test_stale_ids_are_the_running_trials_whose_heartbeat_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staleness is "RUNNING, and the last beat older than the grace period": judged at moments
    the test picks from the stored beats (never a guess at how long a sleep takes), and then by
    Optuna's own query against the database clock, which opttune uses, waited for as an event."""
    study = heartbeat_study(tmp_path, monkeypatch, interval=1, grace=1)
    assert adapter.heartbeat_interval(study) == 1 and adapter.grace_period(study) == 1
    grace = datetime.timedelta(seconds=1)
    silent, alive = ask(study), ask(study)
    sid, aid = adapter.trial_id(silent), adapter.trial_id(alive)
    assert adapter.last_heartbeats(study) == {}  # none has beaten yet: none can be stale
    for trial in (silent, alive):  # another machine's trials: no pid here can tell
        adapter.set_trial_system_attr(study, trial, OWNER_ATTR,
                                      {"host": "elsewhere", "pid": 1, "start": None})
        adapter.record_heartbeat(study, trial)
    finished = ask(study)
    adapter.record_heartbeat(study, finished)
    study.tell(finished, 1.0)
    beats = adapter.last_heartbeats(study)
    assert set(beats) == {sid, aid}  # a finished trial is never stale, whatever its beat

    # `alive` beats again until the store's clock (whole seconds on SQLite) shows it later.
    def alive_beat_later() -> bool:
        adapter.record_heartbeat(study, alive)
        return adapter.last_heartbeats(study)[aid] > beats[sid]

    wait_for("the store's clock to move past the first beats", alive_beat_later)
    beats = adapter.last_heartbeats(study)

    assert adapter.stale_trial_ids(study, now=beats[sid]) == []
    assert adapter.stale_trial_ids(study, now=beats[sid] + grace) == []  # older than, not equal
    assert adapter.stale_trial_ids(study, now=beats[sid] + grace + TICK) == [sid]
    assert adapter.stale_trial_ids(study, now=beats[aid] + grace + TICK) == sorted([sid, aid])

    # What opttune calls: Optuna's query, "now" being the database's clock. It must name
    # `silent` (a query that finds nothing never gets there) and only it, while `alive` beats.
    # So does opttune's stale_trials, which goes by it for trials of other machines.
    found: list[tuple[list[int], list[int]]] = []

    def optuna_finds_only_silent() -> bool:
        adapter.record_heartbeat(study, alive)
        found.append((adapter.stale_trial_ids(study), [t.number for t in stale_trials(study)]))
        return found[-1] == ([sid], [silent.number])

    wait_for(f"Optuna to find only trial {sid} stale", optuna_finds_only_silent)
    assert study.trials[silent.number].state == TrialState.RUNNING  # found, not changed


def test_the_heartbeat_context_beats_while_the_block_runs_and_stops_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The context's thread beats again and again while the block runs (the stored beat moves
    on after the thread's own first one), and is gone when the block ends, leaving the last
    beat to go stale; waited for as events, judged at moments taken from the stored beats."""
    study = heartbeat_study(tmp_path, monkeypatch, interval=1, grace=2)
    grace = datetime.timedelta(seconds=2)
    trial = ask(study)
    tid = adapter.trial_id(trial)
    before = set(threading.enumerate())
    first: list[datetime.datetime] = []

    def beat_of_the_thread() -> bool:
        first.extend(adapter.last_heartbeats(study).values())
        return bool(first)

    with adapter.heartbeat(study, trial):
        started = [t for t in threading.enumerate() if t not in before]
        assert [t.name for t in started] == ["opttune-heartbeat"]
        wait_for("the thread's first beat", beat_of_the_thread)  # nobody else beats `trial`
        wait_for("a later beat of the thread",
                 lambda: adapter.last_heartbeats(study)[tid] > first[0])
        # Without a later beat, `trial` would be stale at this moment; with it, it is not
        # (stored beats only move on, so more beats meanwhile change nothing).
        assert adapter.stale_trial_ids(study, now=first[0] + grace + TICK) == []
    # The thread has ended, so nothing beats any more: the last beat is what goes stale.
    assert not any(t.is_alive() for t in started)
    assert "opttune-heartbeat" not in {t.name for t in threading.enumerate()}
    last = adapter.last_heartbeats(study)[tid]
    assert last > first[0]
    assert adapter.stale_trial_ids(study, now=last + grace) == []
    assert adapter.stale_trial_ids(study, now=last + grace + TICK) == [tid]
    assert study.trials[trial.number].state == TrialState.RUNNING


def test_waiting_trials_are_popped_in_the_order_given(study: optuna.Study) -> None:
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
    # Another process pops the last one first: it is skipped, not popped twice.
    other = optuna.load_study(study_name="a", storage=adapter.backend_of(study))
    adapter.set_waiting_order(other, lambda t: -t.number)
    assert other.ask().suggest_float("x", 0.0, 5.0) == 3.0

    adapter.set_waiting_order(study, lambda t: -t.number)
    assert study.ask().suggest_float("x", 0.0, 5.0) == 2.0
    assert study.ask().suggest_float("x", 0.0, 5.0) == 1.0
    assert study.ask().number == 3  # the queue is empty: a new trial


def test_a_trials_view_shows_a_sampler_only_the_kept_trials(study: optuna.Study) -> None:
    for x in (1.0, 2.0, 3.0, 4.0):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 5.0)
        study.tell(trial, x)
    view = adapter.trials_view(study, lambda t: t.value is not None and t.value % 2 == 0)
    assert [t.value for t in view.trials] == [2.0, 4.0]
    assert [t.value for t in view.get_trials(deepcopy=False)] == [2.0, 4.0]
    # What Optuna's samplers call (TPE's history, with its per-trial cache) is filtered too.
    assert [t.value for t in view._get_trials(deepcopy=False, states=None, use_cache=True)] \
        == [2.0, 4.0]
    assert view.study_name == "a" and view.direction == study.direction
    view.set_user_attr("through", "the view")  # writes reach the study
    assert study.user_attrs["through"] == "the view"


def test_the_alembic_folder_gives_the_revisions_rdbstorage_reports(tmp_path: Path) -> None:
    folder = adapter.alembic_folder()
    assert (folder / "versions").is_dir()
    head, known = _optuna_schema_versions()
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'public.db'}")
    assert head == storage.get_head_version() == storage.get_current_version()
    assert known == frozenset(storage.get_all_versions())
