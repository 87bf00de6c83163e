"""Stopping cleanly: SIGTERM is handled like Ctrl-C everywhere opttune runs something long.

A search marks its running trial and re-queues it; the MLflow UI stops its server. Both go
through :func:`sigterm_as_interrupt`, so a `kill` and a Ctrl-C take the same clean path.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_Handler = Callable[[int, FrameType | None], object] | int | None  # what signal.signal takes


class Interrupted(Exception):
    """The work was stopped by SIGINT or SIGTERM after marking everything cleanly.

    `held`: how many more signals came while it cleaned up (they waited for it to finish).
    """

    def __init__(self, signum: int, *, held: int = 0) -> None:
        note = " (asked again while stopping; the clean-up finished first)" if held else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}{note}")
        self.signum = signum
        self.held = held
        self.exit_code = 128 + signum


@contextmanager
def sigterm_as_interrupt(*, hold_repeats: bool = False) -> Iterator[list[int]]:
    """Within the block, SIGTERM raises KeyboardInterrupt; yields the signals received.

    With `hold_repeats`, SIGINT and SIGTERM are both recorded and only the first raises:
    the ones after it are held until the block ends, so the clean-up the first one started
    (marking the trial, queueing it again, ending its runs) is never cut between two writes
    by a second Ctrl-C. Outside the main thread signals cannot be handled, and are left alone.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if not hold_repeats or len(received) == 1:
            raise KeyboardInterrupt

    watched = (signal.SIGTERM, signal.SIGINT) if hold_repeats else (signal.SIGTERM,)
    previous: dict[int, _Handler] = {}
    try:
        for watched_signal in watched:
            previous[watched_signal] = signal.signal(watched_signal, handler)
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        for restored, before in previous.items():
            signal.signal(restored, before)
