"""A trial's seed: one rule for the search, `opttune best`'s re-run command and `retrain`.

The seed depends on the study's seed and the trial's number only, so a trial trains the same
way wherever and whenever it runs (another process, a worker, a resume).
"""

from __future__ import annotations

_STRIDE = 100_003  # a prime, so that studies with nearby seeds do not share trial seeds


def trial_seed(study_seed: int | None, number: int) -> int:
    """The seed that trial `number` of a study seeded with `study_seed` trains with."""
    return (study_seed or 0) * _STRIDE + number
