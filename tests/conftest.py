"""Shared fixtures: offline data, and a fresh study home with a ready MLflow store.

Creating an MLflow SQLite store runs its migrations (seconds); tests copy one made once per
session instead, so that each test still gets its own real, empty store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# One compute thread for every test and every process a test starts: pytest-xdist runs one
# worker per core, and two threads per process on a busy core mostly wait for each other
# (OpenMP spins at each barrier for a thread that is not running). Set before torch loads.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from helpers import services  # noqa: E402
from helpers.search_process import kill_started  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{services.MARK}(available, reason): a service the "
                            "test needs (skips without it; fails in CI)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    services.check_marks(item)


@pytest.fixture(autouse=True)
def _no_search_left_behind() -> Iterator[None]:
    """A test that fails while a search it started is held at the gate leaves no process."""
    yield
    kill_started()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never download in tests, and never touch the user's cache or home."""
    monkeypatch.setenv("OPTTUNE_NO_DOWNLOAD", "1")
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("OPTTUNE_HOME", raising=False)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)
    return db


@pytest.fixture
def home(tmp_path: Path, _mlflow_template: Path) -> Iterator[Path]:
    """An empty study home whose MLflow store already exists (and is empty)."""
    folder = tmp_path / "home"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    yield folder
