"""Stopping cleanly: SIGTERM is handled like Ctrl-C everywhere opttune runs something long.

A search marks its running trial and re-queues it; the MLflow UI stops its server. Both go
through :func:`sigterm_as_interrupt`, so a `kill` and a Ctrl-C take the same clean path.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(Exception):
    """The work was stopped by SIGINT or SIGTERM after marking everything cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Within the block, SIGTERM raises KeyboardInterrupt; yields the signals received.

    Outside the main thread signals cannot be handled, and are left alone.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
