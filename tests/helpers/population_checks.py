"""What the population tests share: the digits they train on and the one comparison of a
member with its trial trained alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tasks.base import Task
from tasks.digits import DIGITS_MLP
from tuner.space.config import TrialConfig
from tuner.training.loop import DeviceData, EpochResult, fit
from tuner.training.population import fit_population

# Four float32 epsilons: the stacked products and the epoch's mean of step losses add up in
# another order than one model's.
RTOL = 4 * torch.finfo(torch.float32).eps


def digits_790() -> Iterator[DeviceData]:
    """790 training digits: 25 steps of 32 per epoch (the last one short), 2 epochs = 50, on
    one thread (one summation order for the solo and the stacked runs); for a fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = DIGITS_MLP.read_data()
    yield DeviceData(data.train_x[:790], data.train_y[:790], data.val_x, data.val_y)
    torch.set_num_threads(threads)


def assert_same(member: list[EpochResult], solo: list[EpochResult], n_val: int, *,
                rtol: float = RTOL, train_rtol: float | None = None) -> None:
    """A member's epochs against its trial's alone: losses within `rtol` (the training loss
    within `train_rtol`, default `rtol`), accuracy within one validation sample (a float tie
    could move one sample at most)."""
    assert len(member) == len(solo)
    for ours, theirs in zip(member, solo, strict=True):
        assert ours.epoch == theirs.epoch and ours.lr == theirs.lr
        assert ours.train_loss == pytest.approx(theirs.train_loss, rel=train_rtol or rtol)
        assert ours.val_loss == pytest.approx(theirs.val_loss, rel=rtol)
        assert ours.value == pytest.approx(theirs.value, abs=1.01 / n_val)


def assert_population_matches_fit(task: Task, data: DeviceData, configs: list[TrialConfig],
                                  seeds: list[int], *, rtol: float = RTOL,
                                  **options: str) -> None:
    """`configs` trained as one population (`options`: fit_population's forward/update)
    against each trained alone by `fit` with its seed, member by member (assert_same)."""
    members = fit_population(task, data, configs, device="cpu", seeds=seeds, **options)
    for member, config, seed in zip(members, configs, seeds, strict=True):
        solo = fit(task, data, config, device="cpu", seed=seed)
        assert_same(member.unwrap(), solo, len(data.val_x), rtol=rtol)
