"""A running study's MLflow calls, on one thread of their own and in order.

An SQLite write costs tens of ms: epoch metrics and a trial's end are logged while training
goes on (:meth:`MlflowQueue.later`), and a caller that needs a call done waits for it and for
every call queued before it (:meth:`MlflowQueue.safe`). MLflow trouble is reported, never
fatal to the study: Optuna's record is primary, and `opttune check --fix` logs what MLflow
missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from tuner.study.locations import redact

# An MLflow call that fails only after this long was retried by MLflow's client (about four
# minutes by default for a server that is down): the store is unreachable, and every queued
# call would wait as long, holding up each trial's start. MLflow is then left alone for
# _PAUSE_S while the study goes on; `opttune check --fix` logs what it missed.
_SLOW_FAILURE_S = 10.0
_PAUSE_S = 600.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


class MlflowQueue:
    """The MLflow thread of study `study`; its failures are told through `notice`."""

    def __init__(self, *, study: str, notice: Callable[[str], None]) -> None:
        self._study = study
        self._notice = notice
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opttune-mlflow")
        self._errors: list[str] = []
        self._paused_until = 0.0  # monotonic; read and written on the MLflow thread only

    def safe(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """Call `fn` on the MLflow thread and wait for it (and so for every call queued
        before it); None if it failed, which is told now with every failure before it."""
        result = self.later(fn, *args, **kwargs).result()
        while self._errors:
            self._notice(self._errors.pop(0))
        return result

    def later(self, fn: Callable[_P, _T], *args: _P.args,
              **kwargs: _P.kwargs) -> Future[_T | None]:
        """Queue a call of `fn`; a failure is told by the next :meth:`safe`."""
        def call() -> _T | None:
            if time.monotonic() < self._paused_until:
                return None  # unreachable a moment ago: skipped, not waited for
            began = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                self._errors.append(f"MLflow: {type(exc).__name__}: {first_line(exc)}")
                waited = time.monotonic() - began
                if waited >= _SLOW_FAILURE_S:
                    self._paused_until = time.monotonic() + _PAUSE_S
                    self._errors.append(
                        f"MLflow: unreachable (a call failed after {waited:.0f} s of retries); "
                        f"the study goes on without it for {_PAUSE_S / 60:.0f} minutes, "
                        f"then tries again; `opttune check {self._study} --fix` logs the "
                        f"trials it missed")
                return None

        return self._thread.submit(call)

    def shutdown(self) -> None:
        """Wait for every queued call; the thread ends (nothing is left to log)."""
        self._thread.shutdown(wait=True)


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, passwords masked ("" for none): what a notice and a
    stored fail reason say of an error."""
    lines = redact(str(exc)).splitlines()
    return lines[0] if lines else ""
