"""Pruners that judge a trial only against trials of its own optimizer family.

A trial's family is its ``optimizer`` parameter. Plain SGD trailing Adam says nothing about
whether an SGD trial is a good SGD trial, so a study-wide median would prune every tuned trial
of a trailing family; here each family is its own population. Steps are the 0-based epochs the
trial loop reports, so ``step + 1`` is the number of epochs done, and the objective is the
value of the last epoch. The rules both pruners share, and the defaults they use:

* Never prune at the last epoch: a trial that trained every epoch is complete.
* ``STARTUP_TRIALS = 3``: no trial of a family is pruned before the family has three COMPLETE
  trials (its defaults trial counts as one). Two tuned trials beside the defaults make a
  median that is more than the PyTorch defaults; a larger count would leave a small study
  (three or four trials per family) nothing to prune.
* ``WARMUP_FRACTION = 0.25`` (median): a trial is judged only once it has done a quarter of
  its epochs (rounded up, at least one). The first epoch mostly shows the learning-rate
  transient, so a 10-epoch trial waits three epochs; a 3-epoch trial can still be stopped after
  one, the only point where stopping it saves much.
* Hyperband: ``min_resource = 1`` epoch, and a reduction factor ``eta`` of 2 below 10 epochs
  (3, as in Optuna, from 10 on). With 3 epochs and ``eta = 3`` only one rung would come before
  the last epoch, while ``eta = 2`` gives rungs at 1 and 2 epochs done and keeps the top half
  of a family's few trials rather than the top third.

The median pruner compares the trial's value at this epoch (the objective is the last epoch's
value, not the best one) with the median of the same family's COMPLETE and PRUNED trials at
the same epoch, respecting the study's direction; a NaN value is worse than any other.

Hyperband: the rungs are ``min_resource * eta ** k`` epochs done, for every such number below
the last epoch, and there are as many brackets as rungs; bracket ``b`` is a successive-halving
schedule over rungs ``b, b + 1, ...``, so every bracket prunes somewhere (the hedge of trials
that run in full is each family's startup trials). A trial's bracket is a BLAKE2b hash of its
trial number modulo the number of brackets: the same in every process, and not in step with
the order in which the sampler picks families (as ``number % n_brackets`` could be). At a rung,
its competitors are the trials of the same family and the same bracket (complete, pruned or
running) that reported that epoch; it goes on if its value is among the best
``max(1, n // eta)`` of those ``n`` values, its own included. The trial loop reports every
epoch, so a trial is judged exactly at each rung of its bracket.
"""

from __future__ import annotations

import abc
import hashlib
import math
import statistics
from collections.abc import Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import OpttuneError
from tuner.study.direction import Direction, as_direction, as_loss

PRUNERS = ("median", "hyperband", "none")
STARTUP_TRIALS = 3
WARMUP_FRACTION = 0.25
MIN_RESOURCE = 1

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_REACHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def make_pruner(name: str, *, epochs: int) -> BasePruner:
    """The pruner for ``--pruner name`` of a study whose trials train ``epochs`` epochs."""
    if name not in PRUNERS:
        raise OpttuneError(f"--pruner must be one of {', '.join(PRUNERS)}, but got {name!r}")
    if epochs < 1:
        raise OpttuneError(f"epochs must be >= 1, but got epochs={epochs}")
    if name == "median":
        return FamilyMedianPruner(epochs=epochs)
    if name == "hyperband":
        return FamilyHyperbandPruner(epochs=epochs)
    return optuna.pruners.NopPruner()


def family_of(trial: FrozenTrial) -> str | None:
    family = trial.params.get("optimizer")
    return None if family is None else str(family)


class _FamilyPruner(BasePruner):
    """The rules shared by both pruners; subclasses judge a trial against its family."""

    def __init__(self, *, epochs: int, n_startup_trials: int) -> None:
        if epochs < 1:
            raise OpttuneError(f"epochs must be >= 1, but got epochs={epochs}")
        if n_startup_trials < 0:
            raise OpttuneError(f"n_startup_trials must be >= 0, but got "
                               f"n_startup_trials={n_startup_trials}")
        self.epochs = epochs
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step + 1 >= self.epochs:
            return False  # nothing reported yet, or every epoch trained: the trial completes
        family = family_of(trial)
        others = [t for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and family_of(t) == family]
        if sum(t.state == TrialState.COMPLETE for t in others) < self.n_startup_trials:
            return False
        return self._judge(trial, step, others, as_direction(study.direction.name.lower()))

    @abc.abstractmethod
    def _judge(self, trial: FrozenTrial, step: int, family: Sequence[FrozenTrial],
               direction: Direction) -> bool:
        """Whether ``trial``, at ``step`` and past the family's startup, is pruned."""


class FamilyMedianPruner(_FamilyPruner):
    """Prune a trial whose value at an epoch is worse than the median of its family's complete
    and pruned trials at that epoch, once it has done ``warmup_epochs`` epochs."""

    def __init__(self, *, epochs: int, n_startup_trials: int = STARTUP_TRIALS,
                 warmup_epochs: int | None = None) -> None:
        super().__init__(epochs=epochs, n_startup_trials=n_startup_trials)
        if warmup_epochs is None:
            warmup_epochs = max(1, math.ceil(epochs * WARMUP_FRACTION))
        if warmup_epochs < 1:
            raise OpttuneError(f"warmup_epochs must be >= 1, but got warmup_epochs={warmup_epochs}")
        self.warmup_epochs = warmup_epochs

    def _judge(self, trial: FrozenTrial, step: int, family: Sequence[FrozenTrial],
               direction: Direction) -> bool:
        if step + 1 < self.warmup_epochs:
            return False
        value = as_loss(trial.intermediate_values[step], direction)
        peers = [as_loss(t.intermediate_values[step], direction) for t in family
                 if t.state in _FINISHED and step in t.intermediate_values]
        peers = [p for p in peers if not math.isinf(p)]
        if not peers:
            return False
        return value > statistics.median(peers)


class FamilyHyperbandPruner(_FamilyPruner):
    """Hyperband over epochs done, each bracket's successive halving within one family."""

    def __init__(self, *, epochs: int, n_startup_trials: int = STARTUP_TRIALS,
                 min_resource: int = MIN_RESOURCE, reduction_factor: int | None = None) -> None:
        super().__init__(epochs=epochs, n_startup_trials=n_startup_trials)
        if reduction_factor is None:
            reduction_factor = 2 if epochs < 10 else 3
        if min_resource < 1:
            raise OpttuneError(f"min_resource must be >= 1, but got min_resource={min_resource}")
        if reduction_factor < 2:
            raise OpttuneError(f"reduction_factor must be >= 2, but got "
                               f"reduction_factor={reduction_factor}")
        self.reduction_factor = reduction_factor
        rungs: list[int] = []
        resource = min_resource
        while resource < epochs:  # the last epoch is never a rung: it is never pruned
            rungs.append(resource)
            resource *= reduction_factor
        self._rungs = tuple(rungs)

    @property
    def n_brackets(self) -> int:
        return len(self._rungs)

    def bracket_of(self, trial_number: int) -> int:
        digest = hashlib.blake2b(str(trial_number).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % max(1, self.n_brackets)

    def rungs(self, bracket: int) -> tuple[int, ...]:
        """The epochs done at which a trial of ``bracket`` is judged."""
        return self._rungs[bracket:]

    def _judge(self, trial: FrozenTrial, step: int, family: Sequence[FrozenTrial],
               direction: Direction) -> bool:
        bracket = self.bracket_of(trial.number)
        if step + 1 not in self.rungs(bracket):
            return False
        losses = [as_loss(t.intermediate_values[step], direction) for t in family
                  if t.state in _REACHED and step in t.intermediate_values
                  and self.bracket_of(t.number) == bracket]
        value = as_loss(trial.intermediate_values[step], direction)
        losses = sorted([*losses, value])
        kept = max(1, len(losses) // self.reduction_factor)
        return value > losses[kept - 1]
