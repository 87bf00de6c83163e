"""Members of several update rules in one population: the stack shares the forward and the
backward, and each rule's own update (:mod:`._fused` or :mod:`._batched`) runs on views of
its members' rows, which the stack keeps adjacent. :func:`make_update` chooses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tuner.training.population._fused import _make_update
from tuner.training.population._updates import ParamGroup, _Update


def make_update(rules: Sequence[str], groups: Sequence[ParamGroup],
                params: Sequence[torch.Tensor], *, update: str, device_type: str,
                hidden: Sequence[bool] = (), transposed: Sequence[bool] = ()) -> _Update:
    """The update of a stack whose row r follows `rules[r]` with torch group `groups[r]`
    (rows of one rule adjacent). The muon rule needs `hidden` (which parameters are the
    hidden matrices Muon updates) and `transposed` (which are held as (K, in, out)), one
    flag per parameter."""
    if len(set(rules)) == 1:
        return _make_update(rules[0], groups, params, update=update, device_type=device_type,
                            hidden=hidden, transposed=transposed)
    return _Mixed(rules, groups, params, update=update, device_type=device_type,
                  hidden=hidden, transposed=transposed)


class _Mixed(_Update):
    """One update per run of adjacent rows of one rule, each over views of those rows."""

    def __init__(self, rules: Sequence[str], groups: Sequence[ParamGroup],
                 params: Sequence[torch.Tensor], *, update: str, device_type: str,
                 hidden: Sequence[bool] = (), transposed: Sequence[bool] = ()) -> None:
        # No state of its own (super().__init__ would make some): the parts hold it.
        self.rules, self.groups = list(rules), list(groups)
        self.data = [p.detach() for p in params]
        self.parts: list[tuple[int, int, _Update]] = []
        start = 0
        while start < len(self.rules):
            end = start
            while end < len(self.rules) and self.rules[end] == self.rules[start]:
                end += 1
            if self.rules[start] in self.rules[:start]:
                raise ValueError(f"rows of one rule must be adjacent, but rule "
                                 f"{self.rules[start]!r} is split: {self.rules}")
            self.parts.append((start, end, _make_update(
                self.rules[start], groups[start:end], [p[start:end] for p in self.data],
                update=update, device_type=device_type, hidden=hidden,
                transposed=transposed)))
            start = end

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        for start, end, part in self.parts:
            part.step([None if g is None else g[start:end] for g in grads], lrs[start:end])

    def step_members(self, grads: Sequence[torch.Tensor | None],
                     lrs: Sequence[Sequence[float]]) -> None:
        for start, end, part in self.parts:
            part.step_members([None if g is None else g[start:end] for g in grads],
                              lrs[start:end])

    def keep(self, rows: torch.Tensor, positions: Sequence[int],
             params: Sequence[torch.Tensor]) -> None:
        self.rules = [self.rules[i] for i in positions]
        self.groups = [self.groups[i] for i in positions]
        self.data = [p.detach() for p in params]
        parts, offset = [], 0
        for start, end, part in self.parts:
            kept = [i - start for i in positions if start <= i < end]
            if not kept:
                continue  # every member of this rule left
            n = len(kept)
            part.keep(torch.tensor(kept, device=rows.device), kept,
                      [p[offset:offset + n] for p in self.data])
            parts.append((offset, offset + n, part))
            offset += n
        self.parts = parts
