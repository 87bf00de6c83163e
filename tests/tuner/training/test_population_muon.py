"""Populations and Muon: the Newton-Schulz orthogonalisation of K stacked matrices at once
equals torch's own on each; the batched Muon rule steps each member as torch.optim.Muon
steps it alone; a population of muon trials (Muon on the hidden matrices, AdamW on the
rest) trains each member as `fit` trains it alone, in either stacked layout and with either
AdamW update, alone or mixed with other rules.

Why the end-to-end tests train in float64: Muon's Newton-Schulz iteration runs in bfloat16
and is steep (its first coefficient, 3.4445, to the 5th power at small singular values), so
the float32 re-association of the stacked forward and backward (a few ulps in a gradient,
as for every family) sometimes moves a bfloat16 rounding, and training amplifies it: a
float32 member moved up to 1.3e-3 relative from its solo run (val loss after 50 steps, 24
seeds, this CPU), and torch's own Muon alone moves up to 2.7e-4 between one and two
threads (AdamW: 1.9e-7). In float64 the re-association is too small to move any bfloat16
rounding: members match their solo runs within the other families' four float32 epsilons
(validation losses were equal to the bit over those 24 seeds). The rule itself is checked
step by step against torch's Muon, in float32, on equal gradients."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from helpers.population_checks import assert_population_matches_fit, assert_same

from tasks.base import Task
from tasks.digits import DIGITS_MLP, load_digits_data
from tasks.images import mlp
from tuner.space.config import TrialConfig
from tuner.training.loop import DeviceData, Diverged, fit
from tuner.training.muon import split_params
from tuner.training.population import fit_population, group_configs
from tuner.training.population._muon import _MuonBatched, zeropower_batched

torch_muon = pytest.importorskip("torch.optim._muon")

# As tests/tuner/training/test_population.py: four float32 epsilons (README, Populations).
RTOL = 4 * torch.finfo(torch.float32).eps
# A float32 muon member against its solo run (see the module docstring): 1.3e-3 measured.
FLOAT32_RTOL = 5e-3
SEEDS = [3, 4, 5]
MUON = [{"lr": 0.02, "momentum": 0.95, "weight_decay": 0.01, "adam_lr": 3e-4},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "adam_lr": 1e-3},
        {"lr": 0.005, "momentum": 0.99, "weight_decay": 1e-4, "adam_lr": 1e-4}]
NS = ((torch_muon.DEFAULT_A, torch_muon.DEFAULT_B, torch_muon.DEFAULT_C),
      torch_muon.DEFAULT_NS_STEPS, torch_muon.EPS)


def _deep_mlp(params: Mapping[str, Any]) -> torch.nn.Module:
    # Hidden matrices (torch's (out, in)): 24x48 (wide) and 40x24 (tall); the first and the
    # output layer go to AdamW.
    return mlp([64, 48, 24, 40, 10]).double()


DEEP = Task(name="digits-deep-mlp", load_data=load_digits_data, build_model=_deep_mlp,
            batch_size=32)
DEEP32 = Task(name="digits-deep-mlp32", load_data=load_digits_data,
              build_model=lambda params: _deep_mlp(params).float(), batch_size=32)


def _data(dtype: torch.dtype) -> Iterator[DeviceData]:
    """790 training digits: 25 steps of 32 per epoch (the last one short), 2 epochs = 50."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order for the solo and the stacked runs
    data = load_digits_data()
    yield DeviceData(data.train_x[:790].to(dtype), data.train_y[:790], data.val_x.to(dtype),
                     data.val_y)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Iterator[DeviceData]:
    yield from _data(torch.float64)


@pytest.fixture(scope="module")
def digits32() -> Iterator[DeviceData]:
    yield from _data(torch.float32)


def test_the_model_has_a_wide_and_a_tall_hidden_matrix() -> None:
    hidden, _ = split_params(DEEP.build_model({}))
    assert [tuple(p.shape) for p in hidden] == [(24, 48), (40, 24)]


@pytest.mark.parametrize("shape", [(5, 8, 24), (5, 24, 8), (3, 16, 16), (2, 1, 7),
                                   (2, 128, 256)])
def test_newton_schulz_of_a_stack_is_torchs_on_each_matrix(shape: tuple[int, ...]) -> None:
    """Equal to the bit: the same bfloat16 operands, and bmm sums each member's products in
    float32 in the order mm does (measured here; a CPU whose bfloat16 kernels differ would
    show it first in this test)."""
    generator = torch.Generator().manual_seed(sum(shape))
    grads = torch.randn(shape, generator=generator)
    grads[0] *= 1e-3  # a small matrix: the norm's scale, not its direction, changes
    ours = zeropower_batched(grads, *NS)
    assert ours.dtype == torch.bfloat16 and ours.shape == grads.shape
    for k in range(shape[0]):
        theirs = torch_muon._zeropower_via_newtonschulz(grads[k], *NS)
        torch.testing.assert_close(ours[k], theirs, rtol=0, atol=0)


def test_newton_schulz_of_a_zero_matrix_is_zero_as_torchs() -> None:
    zeros = torch.zeros(2, 3, 5)
    assert not zeropower_batched(zeros, *NS).any()
    assert not torch_muon._zeropower_via_newtonschulz(zeros[0], *NS).any()


@pytest.mark.parametrize("transposed", [False, True])
def test_the_batched_rule_steps_each_member_as_torchs_muon(transposed: bool) -> None:
    """Per-member lr, momentum, weight decay, Nesterov on and off and both lr adjustments,
    on a wide and a tall matrix, held as torch holds them or transposed (the bmm layout),
    ten steps on equal gradients (equal to the bit here; four float32 epsilons allowed)."""
    settings: list[dict[str, Any]] = [{"lr": 0.02, "momentum": 0.95, "weight_decay": 0.01},
                {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.0, "nesterov": False},
                {"lr": 0.003, "momentum": 0.9, "weight_decay": 0.2,
                 "adjust_lr_fn": "match_rms_adamw"}]
    shapes = [(6, 10), (12, 4), (24, 48), (40, 24)]  # torch's (out, in)
    generator = torch.Generator().manual_seed(0)
    solo = [[torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
            for _ in settings]
    optimizers = [torch.optim.Muon(params, **kw)
                  for params, kw in zip(solo, settings, strict=True)]
    groups = [{key: value for key, value in opt.param_groups[0].items() if key != "params"}
              for opt in optimizers]
    stacked = [torch.stack([params[i].detach() for params in solo])
               for i in range(len(shapes))]
    if transposed:
        stacked = [s.mT.contiguous() for s in stacked]
    rule = _MuonBatched(groups, stacked, [transposed] * len(shapes))
    for _ in range(10):
        grads = [[torch.randn(s, generator=generator) for s in shapes] for _ in settings]
        for params, opt, gs in zip(solo, optimizers, grads, strict=True):
            for p, g in zip(params, gs, strict=True):
                p.grad = g.clone()
            opt.step()  # type: ignore[no-untyped-call]
        batched = [torch.stack([gs[i] for gs in grads]) for i in range(len(shapes))]
        rule.step([b.mT.contiguous() if transposed else b for b in batched],
                  [kw["lr"] for kw in settings])
    for i in range(len(shapes)):
        ours = stacked[i].mT if transposed else stacked[i]
        theirs = torch.stack([params[i].detach() for params in solo])
        torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=1e-7)


def _configs(scheduler: str = "none") -> list[TrialConfig]:
    return [TrialConfig("muon", h, 32, 2, scheduler if i == 1 else "none")
            for i, h in enumerate(MUON)]


@pytest.mark.parametrize(("forward", "update"), [("bmm", "fused"), ("bmm", "batched"),
                                                 ("vmap", "fused")])
def test_muon_members_train_as_muon_alone(digits: DeviceData, forward: str,
                                          update: str) -> None:
    cfgs = _configs("cosine")  # the second member follows a schedule: both sides' lrs move
    assert group_configs(cfgs).groups == [[0, 1, 2]]
    members = fit_population(DEEP, digits, cfgs, device="cpu", seeds=SEEDS, forward=forward,
                             update=update)
    for member, config, seed in zip(members, cfgs, SEEDS, strict=True):
        solo = fit(DEEP, digits, config, device="cpu", seed=seed)
        assert member.unwrap()[0].lr == config.hyper["lr"]  # Muon's, as fit reports it
        assert_same(member.unwrap(), solo, len(digits.val_x))


def test_muon_shares_a_population_with_adam_and_lion(digits: DeviceData) -> None:
    cfgs = [TrialConfig("adam", {"lr": 1e-3}, 32, 2), TrialConfig("muon", MUON[0], 32, 2),
            TrialConfig("lion", {"lr": 3e-4, "weight_decay": 0.1}, 32, 2, "cosine"),
            TrialConfig("muon", MUON[1], 32, 2, "cosine")]
    assert group_configs(cfgs).groups == [[0, 1, 2, 3]]
    assert_population_matches_fit(DEEP, digits, cfgs, [0, 1, 2, 3])


def test_a_float32_population_matches_within_what_muon_moves_alone(
        digits32: DeviceData) -> None:
    assert_population_matches_fit(DEEP32, digits32, _configs("cosine"), SEEDS,
                                  rtol=FLOAT32_RTOL)


def test_muon_without_a_hidden_matrix_trains_its_adamw_side_alone(
        digits32: DeviceData) -> None:
    """digits-mlp (64-64-10) has no hidden matrix: fit's muon optimizer is AdamW alone, at
    adam_lr (what it reports as its lr), and so is each member's (no bfloat16: float32)."""
    cfgs = _configs("cosine")
    members = fit_population(DIGITS_MLP, digits32, cfgs, device="cpu", seeds=SEEDS)
    for member, config, seed in zip(members, cfgs, SEEDS, strict=True):
        solo = fit(DIGITS_MLP, digits32, config, device="cpu", seed=seed)
        assert solo[0].lr == config.hyper["adam_lr"]
        assert_same(member.unwrap(), solo, len(digits32.val_x))


def test_a_diverging_muon_member_leaves_and_the_others_go_on(digits: DeviceData) -> None:
    cfgs = [TrialConfig("muon", MUON[0], 32, 2),
            TrialConfig("muon", {**MUON[1], "lr": 1e30}, 32, 2)]
    members = fit_population(DEEP, digits, cfgs, device="cpu", seeds=SEEDS[:2])
    assert isinstance(members[1].stopped, Diverged) and members[0].stopped is None
    assert_same(members[0].unwrap(), fit(DEEP, digits, cfgs[0], device="cpu", seed=SEEDS[0]),
                len(digits.val_x))
