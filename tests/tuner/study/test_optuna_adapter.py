"""tuner.study.optuna_adapter: the only module with Optuna's private API, and what it does.

Every function is run against a real SQLite store, so that an Optuna release that moves one
of the private names it relies on fails here.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.study import optuna_adapter as adapter
from tuner.study.records import OWNER_ATTR, stale_trials
from tuner.study.stores import GRACE_ENV, HEARTBEAT_ENV, _optuna_schema_versions, open_storage

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


def test_stale_ids_are_the_running_trials_whose_heartbeat_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = heartbeat_study(tmp_path, monkeypatch, interval=1, grace=1)
    assert adapter.heartbeat_interval(study) == 1
    silent, alive = ask(study), ask(study)
    for trial in (silent, alive):  # another machine's trials: no pid here can tell
        adapter.set_trial_system_attr(study, trial, OWNER_ATTR,
                                      {"host": "elsewhere", "pid": 1, "start": None})
        adapter.record_heartbeat(study, trial)
    finished = ask(study)
    adapter.record_heartbeat(study, finished)
    study.tell(finished, 1.0)
    assert adapter.stale_trial_ids(study) == []  # all beat just now
    time.sleep(2.5)
    adapter.record_heartbeat(study, alive)
    assert adapter.stale_trial_ids(study) == [adapter.trial_id(silent)]
    assert study.trials[silent.number].state == TrialState.RUNNING  # found, not changed
    assert [t.number for t in stale_trials(study)] == [silent.number]


def test_the_heartbeat_context_beats_while_the_block_runs_and_stops_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = heartbeat_study(tmp_path, monkeypatch, interval=1, grace=2)
    trial = ask(study)
    with adapter.heartbeat(study, trial):
        assert "opttune-heartbeat" in {t.name for t in threading.enumerate()}
        time.sleep(3.5)  # longer than the grace period: only the thread keeps it fresh
        assert adapter.stale_trial_ids(study) == []
    assert "opttune-heartbeat" not in {t.name for t in threading.enumerate()}
    time.sleep(3.0)
    assert adapter.stale_trial_ids(study) == [adapter.trial_id(trial)]


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
