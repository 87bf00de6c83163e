"""tuner.study.store_template: a new MLflow SQLite store starts as a copy of an empty one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.study import store_template
from tuner.study.tracker import Tracker


def _tracker(home: Path) -> Tracker:
    return Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")


def test_the_first_new_store_becomes_the_template_and_later_ones_copy_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "cache"))
    template = store_template.template_path()
    assert not template.exists()
    first = _tracker(tmp_path / "a")
    assert template.is_file()
    assert template.read_bytes() == (tmp_path / "a" / "mlflow.db").read_bytes()  # still empty
    first.ensure_experiment("s", tags={})  # the first store goes on; the template stays empty
    assert template.read_bytes() != (tmp_path / "a" / "mlflow.db").read_bytes()

    copied: list[Path] = []
    real = store_template.start_from_template

    def watched(path: Path) -> bool:
        made = real(path)
        if made:
            copied.append(path)
        return made

    monkeypatch.setattr(store_template, "start_from_template", watched)
    second = _tracker(tmp_path / "b")
    assert copied == [tmp_path / "b" / "mlflow.db"]
    experiment = second.ensure_experiment("s", tags={"k": "v"})  # a working, separate store
    run = second.create_run(experiment, name="r", tags={}, params={"lr": 0.1})
    assert second.run_record(run) is not None and first.run_record(run) is None


def test_a_bad_template_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "cache"))
    template = store_template.template_path()
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database")
    assert not store_template.start_from_template(tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()
    tracker = _tracker(tmp_path / "c")  # migrates as before ...
    assert tracker.ensure_experiment("s", tags={})
    assert template.read_bytes()[:16] == b"SQLite format 3\x00"  # ... and replaces it
