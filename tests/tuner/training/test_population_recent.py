"""Populations and the recent families: Lion's batched sign update trains each member as
lion-pytorch's Lion trains it alone (through `fit`), alone or mixed with other rules; the
families without a stacked rule train one at a time, and say why (Muon's rule:
test_population_muon.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from helpers.population_checks import assert_population_matches_fit, digits_790

from tasks.digits import DIGITS_MLP
from tuner.space.config import TrialConfig
from tuner.training.loop import DeviceData
from tuner.training.population import group_configs

# As tests/tuner/training/test_population.py: four float32 epsilons (README, Populations).
RTOL = 4 * torch.finfo(torch.float32).eps
SEEDS = [3, 4, 5]
LION = [{"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
        {"lr": 3e-4, "beta1": 0.95, "beta2": 0.98, "weight_decay": 0.1},
        {"lr": 5e-5, "beta1": 0.8, "beta2": 0.999, "weight_decay": 1.0}]


@pytest.fixture(scope="module")
def digits() -> Iterator[DeviceData]:
    yield from digits_790()




@pytest.mark.parametrize("update", ["fused", "batched"])  # Lion has no kernel: both batched
def test_lion_members_train_as_lion_alone(digits: DeviceData, update: str) -> None:
    cfgs = [TrialConfig("lion", h, 32, 2, "cosine" if i == 1 else "none")
            for i, h in enumerate(LION)]
    assert_population_matches_fit(DIGITS_MLP, digits, cfgs, SEEDS, update=update)


def test_lion_shares_a_population_with_other_rules(digits: DeviceData) -> None:
    cfgs = [TrialConfig("adam", {"lr": 1e-3}, 32, 2), TrialConfig("lion", LION[1], 32, 2),
            TrialConfig("sgd", {"lr": 0.05}, 32, 2), TrialConfig("lion", LION[2], 32, 2)]
    assert group_configs(cfgs).groups == [[0, 1, 2, 3]]
    assert_population_matches_fit(DIGITS_MLP, digits, cfgs, [0, 1, 2, 3])


def test_the_other_recent_families_train_alone_and_say_why() -> None:
    # Muon has a stacked rule: tests/tuner/training/test_population_muon.py.
    cfgs = [TrialConfig("schedulefree", {"lr": 2.5e-3}, 32, 2),
            TrialConfig("prodigy", {"d_coef": 1.0}, 32, 2),
            TrialConfig("adafactor", {"lr": 1e-2}, 32, 2),
            TrialConfig("lion", LION[0], 32, 2), TrialConfig("lion", LION[1], 32, 2)]
    grouping = group_configs(cfgs)
    assert grouping.groups == [[3, 4]]
    for k, (family, cls) in enumerate([("schedulefree", "schedulefree:AdamWScheduleFree"),
                                       ("prodigy", "prodigyopt:Prodigy"),
                                       ("adafactor", "Adafactor")]):
        assert grouping.alone[k] == f"{family} ({cls}) has no stacked update rule"
