"""tuner.study.store_template: a new MLflow or Optuna SQLite store starts as a copy of an
empty one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.study import store_template
from tuner.study.tracker import Tracker


def _tracker(home: Path) -> Tracker:
    return Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")


def _watch_copies(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The stores made as copies of a template from now on (filled as they are made)."""
    copied: list[Path] = []
    real = store_template.start_from_template

    def watched(path: Path, *, library: str) -> bool:
        made = real(path, library=library)
        if made:
            copied.append(path)
        return made

    monkeypatch.setattr(store_template, "start_from_template", watched)
    return copied


def test_the_first_new_store_becomes_the_template_and_later_ones_copy_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "cache"))
    template = store_template.template_path("mlflow")
    assert not template.exists()
    first = _tracker(tmp_path / "a")
    assert template.is_file()
    assert template.read_bytes() == (tmp_path / "a" / "mlflow.db").read_bytes()  # still empty
    first.ensure_experiment("s", tags={})  # the first store goes on; the template stays empty
    assert template.read_bytes() != (tmp_path / "a" / "mlflow.db").read_bytes()

    copied = _watch_copies(monkeypatch)
    second = _tracker(tmp_path / "b")
    assert copied == [tmp_path / "b" / "mlflow.db"]
    experiment = second.ensure_experiment("s", tags={"k": "v"})  # a working, separate store
    run = second.create_run(experiment, name="r", tags={}, params={"lr": 0.1})
    assert second.run_record(run) is not None and first.run_record(run) is None


def test_a_bad_template_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "cache"))
    template = store_template.template_path("mlflow")
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database")
    assert not store_template.start_from_template(tmp_path / "new.db", library="mlflow")
    assert not (tmp_path / "new.db").exists()
    tracker = _tracker(tmp_path / "c")  # migrates as before ...
    assert tracker.ensure_experiment("s", tags={})
    assert template.read_bytes()[:16] == b"SQLite format 3\x00"  # ... and replaces it


def test_a_new_optuna_store_starts_as_a_copy_of_the_first(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from tuner.study.stores import open_storage

    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "cache"))
    template = store_template.template_path("optuna")
    assert not template.exists()
    first = open_storage(f"sqlite:///{tmp_path / 'a' / 'opttune.db'}", create=True)
    assert template.read_bytes() == (tmp_path / "a" / "opttune.db").read_bytes()  # empty
    optuna.create_study(study_name="s", storage=first)
    assert template.read_bytes() != (tmp_path / "a" / "opttune.db").read_bytes()

    copied = _watch_copies(monkeypatch)
    second = open_storage(f"sqlite:///{tmp_path / 'b' / 'opttune.db'}", create=True)
    assert copied == [tmp_path / "b" / "opttune.db"]
    assert second.get_all_studies() == []  # a working, separate, empty store
    study = optuna.create_study(study_name="s", storage=second)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=second).trials) == 2
    assert len(optuna.load_study(study_name="s", storage=first).trials) == 0
    # The template of one library is never the other's.
    assert store_template.template_path("mlflow") != template
    with pytest.raises(ValueError, match="library must be one of mlflow, optuna, but got 'x'"):
        store_template.template_path("x")
