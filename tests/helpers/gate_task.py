"""A task whose trials stop after their first epoch until the test lets them go on.

Tests that interrupt a search mid-trial (signals, kills, crashes) used to train 4-40-epoch
trials and race to land the signal while one was still training. A gated trial instead
trains one epoch on scikit-learn's digits (a fraction of a second), reports it, and then
blocks at the first training step of its second epoch, where it writes a `reached-PID-N`
file into the gate folder and waits for the test. So a test knows, from a file and not from a
clock, that a trial is mid-flight: one epoch reported, more to come.

The gate is closed only in a process whose environment names a folder in
``OPTTUNE_TEST_GATE`` (:func:`gate_env`), and with ``OPTTUNE_TEST_GATE_HOLD_NS`` it opens by
itself that long after the trial got there; elsewhere (a ``resume`` run in the test's own
process, say) the task is a plain digits MLP. The test lets trials go on with :func:`release`
(one blocked trial) or :func:`open_gate` (every trial from then on).

Refer to the task by its file path (:data:`TASK_REF`), as a user would to their own task, so
that a search in another process and a resume in this one both find it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tasks.base import Task
from tasks.digits import load_digits_data
from tasks.images import mlp

GATE_ENV = "OPTTUNE_TEST_GATE"
# Nanoseconds after which a held trial lets itself go on (the machine's monotonic clock, as
# --timeout reads it), for a test that needs the time to be up while a trial trains.
HOLD_ENV = "OPTTUNE_TEST_GATE_HOLD_NS"
TASK_REF = f"{Path(__file__).resolve()}:GATE"
_POLL = 0.005  # seconds between looks at the gate folder: a wait on a file, not a margin
_ABANDONED = 900  # seconds: longer than any test may run (pytest-timeout), so never a margin
_tickets = 0  # how many times this process has blocked


class _Gated(torch.nn.Module):
    """An MLP that blocks at its first training step after a validation (see module doc)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.evaluated = False  # a validation ran: one epoch is reported or about to be
        self.passed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.evaluated = True
        elif self.evaluated and not self.passed:
            self.passed = True
            folder = os.environ.get(GATE_ENV)
            if folder:
                _wait_at_gate(Path(folder))
        out: torch.Tensor = self.inner(x)
        return out


def _wait_at_gate(folder: Path) -> None:
    global _tickets
    ticket = f"{os.getpid()}-{_tickets}"
    _tickets += 1
    writing = folder / f"writing-{ticket}"
    arrived = time.monotonic_ns()
    writing.write_text(str(arrived))
    writing.rename(folder / f"reached-{ticket}")  # whole, or not there at all
    hold = os.environ.get(HOLD_ENV)
    until = arrived + int(hold) if hold else None
    given_up = time.monotonic() + _ABANDONED
    while not ((folder / "open").exists() or (folder / f"release-{ticket}").exists()):
        if until is not None and time.monotonic_ns() > until:
            return
        if time.monotonic() > given_up:  # its test died without a word: end, not hang on
            raise RuntimeError(f"gate {ticket} was never opened")
        time.sleep(_POLL)  # a signal lands here, as it would in a training step


def _build(params: Mapping[str, Any]) -> torch.nn.Module:
    return _Gated(mlp([64, int(params.get("hidden", 16)), 10]))


GATE = Task(name="gate", load_data=load_digits_data, build_model=_build, batch_size=64,
            summary="digits MLP that waits after its first epoch (tests only)",
            data="scikit-learn digits", model="MLP 64-16-10", hyperparams={"hidden": "16"})


def gate_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a process whose gated trials block, with `extra` added."""
    folder.mkdir(parents=True, exist_ok=True)
    return {**os.environ, GATE_ENV: str(folder), **extra}


def reached(folder: Path) -> list[str]:
    """The tickets of the trials that have reached the gate, oldest first (each file holds the
    machine's monotonic clock, shared by every process, at the moment its trial got there)."""
    found = sorted((int(p.read_text()), p.name.removeprefix("reached-"))
                   for p in folder.glob("reached-*"))
    return [ticket for _, ticket in found]


def wait_reached(folder: Path, count: int = 1, *, proc: Any = None,
                 timeout: float = 120) -> list[str]:
    """Wait until `count` trials have reached the gate; return their tickets. Fails at once
    if `proc` (a Popen, or a list of them) has exited: no test waits on a dead search."""
    procs = [] if proc is None else proc if isinstance(proc, list) else [proc]
    deadline = time.monotonic() + timeout
    while True:
        tickets = reached(folder)
        if len(tickets) >= count:
            return tickets
        for p in procs:
            if p.poll() is not None:
                out = p.stdout.read() if p.stdout else ""
                raise AssertionError(f"the search exited ({p.returncode}) before {count} "
                                     f"trial(s) reached the gate:\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(tickets)} of {count} trials reached the gate in "
                                 f"{timeout} s")
        time.sleep(_POLL)


def release(folder: Path, ticket: str) -> None:
    """Let the trial that holds `ticket` go on."""
    (folder / f"release-{ticket}").touch()


def open_gate(folder: Path) -> None:
    """Let every blocked trial go on, and every later one pass without stopping."""
    (folder / "open").touch()
