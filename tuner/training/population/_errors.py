"""Why a population cannot train: :class:`CannotStack`, and an exception as one line of
a reason."""

from __future__ import annotations


class CannotStack(Exception):
    """These configs or this model cannot train as one population; `reason` says why (one
    line). Nothing was trained: train the members one at a time with ``fit``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"

