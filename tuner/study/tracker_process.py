"""The MLflow tracker in a process of its own, for a search.

Importing MLflow costs about 2 s of one core, opening its store another second, and every
write a few ms of Python that contends with the training thread for the interpreter. In a
process of its own all of it runs on another core: MLflow imports while the search imports
torch and reads its data, and writes while it trains.

Calls stay synchronous and in order: each waits for its answer, so what returned is written,
and a search killed at any moment loses at most the call in flight, as in one process. The
process ignores Ctrl-C and SIGTERM (the search still logs its clean-up through it) and ends
when the search closes its pipe, or dies. If it dies first (killed, out of memory), the call
in flight fails, as MLflow trouble does (one notice), and the next call starts it again.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Literal, TypeAlias

from tuner.errors import StoreError
from tuner.study.locations import redact
from tuner.study.tracker import Tracker, preload


def wanted() -> bool:
    """Whether a search should track through a process of its own: not where this process
    has imported MLflow already (a notebook, a test, the Python API after reading runs),
    which would only pay that import a second time."""
    return "mlflow" not in sys.modules


RESTARTS = 3  # how often a search starts its MLflow process again after it died

# What goes through the pipes, pickled: a call (method name, args, kwargs), and its answer,
# (True, the value returned) or (False, (the exception's type name, its text)).
Call: TypeAlias = tuple[str, tuple[object, ...], dict[str, object]]
Answer: TypeAlias = tuple[Literal[True], object] | tuple[Literal[False], tuple[str, str]]


class TrackerCallError(RuntimeError):
    """An exception raised by the tracker process, known here by its type's name and text
    (MLflow's exception classes are not imported here)."""


class TrackerProcess(Tracker):
    """A :class:`Tracker` whose every call runs in a child process.

    Started at once, it imports MLflow there; :meth:`open` then opens the store, and
    :meth:`ready` raises what opening it raised."""

    def __init__(self) -> None:  # not Tracker's: nothing is opened here
        self._lock = threading.Lock()
        self.opened = False
        self._closed = False
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self._open_pending = False
        self._open_error: Exception | None = None
        self._unanswered = 0  # calls sent whose answers are not read yet
        self._torn = False  # a message was cut short: the pipe is out of step
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.study.tracker_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to: IO[bytes] = self._proc.stdin
        self._from: IO[bytes] = self._proc.stdout

    def _revive(self) -> None:
        """Start the process again, and reopen its store, if it died (killed, out of memory)
        since the last call: up to RESTARTS times. What it was writing then is lost, as in
        a crash; `opttune check --fix` logs it."""
        if self._closed or not self.opened or self._proc.poll() is None or \
                self.restarts >= RESTARTS:
            return
        self.restarts += 1
        for pipe in (self._from, self._to):
            try:
                pipe.close()
            except OSError:  # a write cut short leaves bytes that no one will read
                pass
        self._start()
        self._send_open()

    def __enter__(self) -> TrackerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, tracking_uri: str, artifact_root: Path, *, wait: bool) -> None:
        """Open the store in the child; with `wait` False, its errors are raised by the next
        call (or :meth:`ready`)."""
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        with self._lock:
            self._send_open()
            self.opened = True
        if wait:
            self.ready()

    def _send_open(self) -> None:
        """Ask the child to open the store; its answer is read before the next call's."""
        self._send(("open", (self.tracking_uri, self.artifact_root), {}))
        self._open_pending = True

    def ready(self) -> None:
        with self._lock:
            self._revive()
            self._settle_open()

    def warm(self, modules: Sequence[str]) -> None:
        """The child imports `modules` on a thread of its own, between and during calls."""
        self._call("warm", (tuple(modules),), {})

    def close(self) -> None:
        """End the process once it has answered every call (a no-op when it has ended).

        One never asked to open a store has nothing to finish: it is stopped at once (a
        search refused before its first call does not wait for MLflow's import)."""
        self._closed = True
        if not self.opened and self._proc.poll() is None:
            self._proc.kill()
        try:
            self._to.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a call stuck in MLflow's retries: not ours to wait
            self._proc.kill()
            self._proc.wait()
        self._from.close()

    def _call(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        with self._lock:
            self._revive()
            self._settle_open()
            self._send((name, args, kwargs))
            return _unpacked(self._receive())

    def _settle_open(self) -> None:
        if self._open_pending:
            answer = self._receive()
            self._open_pending = False
            try:
                _unpacked(answer)
            except Exception as exc:
                self._open_error = exc
        if self._open_error is not None:
            raise self._open_error

    def _send(self, message: Call) -> None:
        if self._torn:
            raise StoreError("the MLflow process cannot take more calls: an interruption cut "
                             "one short")
        try:
            pickle.dump(message, self._to, protocol=pickle.HIGHEST_PROTOCOL)
            self._to.flush()
        except (OSError, ValueError):
            raise self._ended() from None
        except BaseException:  # Ctrl-C mid-write: the child may hold half a message
            self._torn = True
            raise
        self._unanswered += 1

    def _receive(self) -> Answer:
        """The answer to the last call sent. A Ctrl-C while waiting leaves an answer in the
        pipe; it is skipped here, so that each call gets its own."""
        while True:
            try:
                answer: Answer = pickle.load(self._from)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                raise self._ended() from None
            self._unanswered -= 1
            if self._unanswered == 0:
                return answer

    def _ended(self) -> StoreError:
        code = self._proc.poll()
        return StoreError("the MLflow process ended" + (
            f" (exit code {code})" if code is not None else ""))


def _unpacked(answer: Answer) -> object:
    """The value of an answer, or the exception it carries raised here."""
    if answer[0]:
        return answer[1]
    kind, text = answer[1]
    if kind == "StoreError":
        raise StoreError(text)
    raise type(kind, (TrackerCallError,), {})(text)


def _forwarded(name: str) -> Callable[..., object]:
    def call(self: TrackerProcess, *args: object, **kwargs: object) -> object:
        return self._call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = getattr(Tracker, name).__doc__
    return call


# Every public method of Tracker that TrackerProcess does not define itself runs in the child.
FORWARDED = tuple(name for name, value in vars(Tracker).items()
                  if callable(value) and not name.startswith("_")
                  and name not in vars(TrackerProcess))
for _name in FORWARDED:
    setattr(TrackerProcess, _name, _forwarded(_name))


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child: import MLflow, then answer each call in order until the pipe closes."""
    preload()  # what this process is for: MLflow's import, off the search's core
    tracker: Tracker | None = None
    while True:
        try:
            name, args, kwargs = pickle.load(requests)
        except EOFError:
            return
        try:
            value: object = None
            if name == "open":
                tracker = Tracker(*args, **kwargs)
            elif name == "warm":
                threading.Thread(target=_import_all, args=args, name="warm", daemon=True).start()
            elif tracker is None or name not in FORWARDED:
                raise StoreError(f"the MLflow process cannot run {name!r} before the store "
                                 f"is open")
            else:
                value = getattr(tracker, name)(*args, **kwargs)
            answer: Answer = (True, value)
        except Exception as exc:
            answer = (False, (type(exc).__name__, redact(str(exc))))  # may name the URL
        try:
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
        except (OSError, ValueError):
            return  # the search is gone


def _import_all(modules: Sequence[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # the call that needs it will say why
            return


def main() -> None:
    # Ctrl-C reaches the whole process group; the search logs its clean-up through us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    # What a library prints must not corrupt the answers: stdout goes nowhere.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for this process's life)
    _serve(requests, answers)
    # Every answer is written and flushed, every write committed: nothing is left to do, and
    # an interpreter that imported MLflow takes about a second to tear itself down.
    os._exit(0)


if __name__ == "__main__":
    main()
