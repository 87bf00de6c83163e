"""A trial's seed: one rule for the search, `opttune best`'s re-run command and `retrain`.

The seed depends on the study's seed and the trial's number only, so a trial trains the
same way wherever and whenever it runs (another process, a worker, a resume, a retrain).
A study made to re-run one trial exactly pins it with ``trial_seed`` in its settings
(`opttune search --trial-seed`, which `opttune best` prints). Training knows nothing of
studies: callers pass the two numbers from the study's settings.
"""

from __future__ import annotations

_STRIDE = 100_003  # a prime, so that studies with nearby seeds do not share trial seeds


def trial_seed(number: int, *, seed: int | None, pinned: int | None = None) -> int:
    """The seed that trial `number` of a study with seed `seed` trains with: `pinned` (the
    study's ``trial_seed``) where the study pins one."""
    if pinned is not None:
        return int(pinned)
    return int(seed or 0) * _STRIDE + number


def rerun_seed(seed: int | None, index: int) -> int:
    """The seed of a benchmark's `index`-th re-run of a chosen setting: the same seeds for
    every optimizer and budget (paired comparisons), apart from every trial's seed."""
    return int(seed or 0) * _STRIDE + _STRIDE // 2 + index
