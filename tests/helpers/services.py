"""What a test needs from outside Python (a server, a browser, a data set), and what happens
when it is missing: on a user's machine the test skips with its reason; in CI (`CI` set, as
`.ci/run` sets it) it fails, because CI installs every service and a skip there would hide a
broken install behind a green run.

Use :func:`missing` inside a test or fixture, or the :func:`needs` mark on a test; the
conftest turns the mark into a call of :func:`missing` before the test runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

MARK = "needs_service"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(reason: str) -> None:
    """Stop this test because `reason` (what is missing, and how to install it)."""
    if in_ci():
        pytest.fail(f"CI promises this service, but: {reason}", pytrace=False)
    pytest.skip(reason)


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """A mark: run the test when `available`, else skip (or fail in CI) with `reason`."""
    return getattr(pytest.mark, MARK)(available=available, reason=reason)


def check_marks(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARK):
        if not mark.kwargs["available"]:
            missing(mark.kwargs["reason"])


def require_module(name: str, reason: str, *, promised: bool = False) -> ModuleType:
    """Import `name` for a test module: skip the module without it (with `reason`), but where
    CI, or the caller (`promised`: a server was given), promises it, fail to import instead."""
    if in_ci() or promised:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)
