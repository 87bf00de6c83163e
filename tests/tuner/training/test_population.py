"""tuner.training.population: each member trains as its own fit would, members leave, the
configs that cannot share a step and the models that cannot be stacked are refused."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from helpers.population_checks import assert_same as shared_assert_same
from helpers.population_checks import digits_790

from tasks.base import Task
from tasks.digits import DIGITS_MLP
from tasks.images import mlp
from tasks.tabular import DIABETES_MLP, load_diabetes_data
from tuner.space.config import TrialConfig
from tuner.training import population
from tuner.training.loop import DeviceData, Diverged, EpochResult, fit
from tuner.training.population import (
    CannotStack,
    MemberResult,
    fit_population,
    group_configs,
    stack_check,
    stacked_forward,
)

# What README.md promises ("Populations"): over 50 steps a member's losses (and a regression's
# metric) match the same trial trained alone within four float32 epsilons (4.8e-7) relative.
# The stacked products add up in another order (at most 1.8e-7 measured on validation loss),
# and the epoch's training loss is a float32 mean of its 25 steps' losses, which fit adds up
# as one vector and a population as a column of its steps x members matrix: that order alone
# moves the mean by up to about 2 eps (2.4e-7 measured) even where every step's loss is equal.
RTOL = 4 * torch.finfo(torch.float32).eps
TRAIN_RTOL = RTOL
SEEDS = [3, 4, 5]
# Three members per family: different lr, momentum or betas, eps, weight decay.
HYPER: dict[str, list[dict[str, float]]] = {
    "sgd": [{"lr": 0.05}, {"lr": 0.1, "weight_decay": 1e-3}, {"lr": 0.02, "weight_decay": 1e-4}],
    "momentum": [{"lr": 0.01, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.5,
                                                 "weight_decay": 1e-3},
                 {"lr": 0.005, "momentum": 0.99, "weight_decay": 1e-4}],
    "adam": [{"lr": 1e-3}, {"lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "weight_decay": 1e-3},
             {"lr": 5e-4, "beta1": 0.95, "eps": 1e-6, "weight_decay": 1e-4}],
    "adamw": [{"lr": 1e-3}, {"lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1},
              {"lr": 5e-4, "beta1": 0.95, "eps": 1e-6, "weight_decay": 1e-4}],
    "rmsprop": [{"lr": 1e-3}, {"lr": 3e-3, "alpha": 0.9, "momentum": 0.5, "weight_decay": 1e-3},
                {"lr": 5e-4, "eps": 1e-6}],
    "adagrad": [{"lr": 1e-2}, {"lr": 3e-2, "weight_decay": 1e-3}, {"lr": 5e-3, "eps": 1e-6}],
    "nadam": [{"lr": 2e-3}, {"lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "weight_decay": 1e-3},
              {"lr": 5e-4, "beta1": 0.95, "eps": 1e-6}],
    # beta2 0.9 switches the rectification on at step 6, 0.999 not within 50 steps.
    "radam": [{"lr": 1e-3}, {"lr": 3e-3, "beta1": 0.8, "beta2": 0.9, "weight_decay": 1e-3},
              {"lr": 5e-4, "beta1": 0.95, "eps": 1e-6}],
}
HYPER["nesterov"] = HYPER["momentum"]


@pytest.fixture(scope="module")
def digits() -> Iterator[DeviceData]:
    yield from digits_790()


def configs(family: str, *, scheduler: str = "none", epochs: int = 2) -> list[TrialConfig]:
    return [TrialConfig(family, h, 32, epochs, scheduler) for h in HYPER[family]]


def assert_same(member: list[EpochResult], solo: list[EpochResult], n_val: int) -> None:
    shared_assert_same(member, solo, n_val, rtol=RTOL, train_rtol=TRAIN_RTOL)


_SOLO: dict[tuple[str, str, int], list[EpochResult]] = {}


def solo_runs(task: Task, data: DeviceData, cfgs: list[TrialConfig],
              seeds: list[int]) -> list[list[EpochResult]]:
    """Each config trained alone by fit (remembered: both update kinds compare with them)."""
    runs = []
    for config, seed in zip(cfgs, seeds, strict=True):
        key = (task.name, repr(config), seed)
        if key not in _SOLO:
            _SOLO[key] = fit(task, data, config, device="cpu", seed=seed)
        runs.append(_SOLO[key])
    return runs


@pytest.mark.parametrize("update", ["fused", "batched"])
@pytest.mark.parametrize("family", list(HYPER))
def test_each_member_trains_as_its_fit_would(digits: DeviceData, family: str,
                                             update: str) -> None:
    # Every other family follows a schedule: each member's lr follows its own base lr.
    scheduler = "cosine" if family in ("momentum", "adamw", "adagrad", "radam") else "none"
    cfgs = configs(family, scheduler=scheduler)
    seen: list[tuple[int, int]] = []
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=SEEDS,
                             update=update, on_epoch=lambda k, r: seen.append((k, r.epoch)))
    assert seen == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    for member, solo in zip(members, solo_runs(DIGITS_MLP, digits, cfgs, SEEDS), strict=True):
        assert member.stopped is None
        assert_same(member.unwrap(), solo, len(digits.val_x))
    assert members[0].epochs[0].seconds > 0


def test_rmsprop_runs_on_adams_kernel_on_a_cpu_unless_alpha_is_one(digits: DeviceData) -> None:
    from tuner.training.population._fused import _Fused, _make_update

    def update_for(alphas: list[float]) -> object:
        groups = [{"alpha": a, "momentum": 0.0, "weight_decay": 0.0, "eps": 1e-8}
                  for a in alphas]
        return _make_update("rmsprop", groups, [torch.zeros(len(alphas), 3)], update="auto",
                            device_type="cpu")

    assert isinstance(update_for([0.99, 0.9]), _Fused)
    assert not isinstance(update_for([0.99, 1.0]), _Fused)
    # alpha 1 keeps the square average at zero (torch divides by eps alone): the batched
    # rule takes that population, and still trains each member as fit does.
    cfgs = [TrialConfig("rmsprop", {"lr": 1e-3, "alpha": 1.0, "eps": 1.0}, 32, 2),
            TrialConfig("rmsprop", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-3}, 32, 2)]
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=SEEDS[:2],
                             update="fused")
    for member, solo in zip(members, solo_runs(DIGITS_MLP, digits, cfgs, SEEDS[:2]),
                            strict=True):
        assert_same(member.unwrap(), solo, len(digits.val_x))


def test_members_of_one_population_follow_their_own_schedules(digits: DeviceData) -> None:
    kinds = ["none", "cosine", "step", "onecycle", "warmup", "cosine"]
    cfgs = [TrialConfig("adam", {"lr": 1e-3 * (1 + i)}, 32, 2, kind)
            for i, kind in enumerate(kinds)]
    seeds = list(range(len(cfgs)))
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=seeds)
    for member, solo in zip(members, solo_runs(DIGITS_MLP, digits, cfgs, seeds), strict=True):
        assert member.stopped is None
        assert_same(member.unwrap(), solo, len(digits.val_x))
    # The schedules did differ: the second epoch starts from different lr ratios.
    ratios = {round(m.epochs[1].lr / m.epochs[0].lr, 6) for m in members}
    assert len(ratios) >= 4, ratios


@pytest.mark.parametrize("update", ["fused", "batched"])
def test_families_of_one_rule_share_a_step(digits: DeviceData, update: str) -> None:
    """sgd, momentum and nesterov are one rule (per-member momentum and Nesterov flag), adam
    and adamw another (per-member coupled or decoupled weight decay)."""
    for cfgs in ([TrialConfig("sgd", {"lr": 0.05, "weight_decay": 1e-3}, 32, 2),
                  TrialConfig("momentum", {"lr": 0.01, "momentum": 0.9}, 32, 2),
                  TrialConfig("nesterov", {"lr": 0.01, "momentum": 0.8}, 32, 2)],
                 [TrialConfig("adam", {"lr": 1e-3, "weight_decay": 1e-3}, 32, 2),
                  TrialConfig("adamw", {"lr": 2e-3, "weight_decay": 0.1}, 32, 2),
                  TrialConfig("adamw", {"lr": 5e-4}, 32, 2)]):
        members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=SEEDS,
                                 update=update)
        for member, solo in zip(members, solo_runs(DIGITS_MLP, digits, cfgs, SEEDS),
                                strict=True):
            assert_same(member.unwrap(), solo, len(digits.val_x))


class _Gated(torch.nn.Module):
    """Not a plain Sequential (so it runs under vmap), with a buffer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
        self.register_buffer("gate", torch.rand(32) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(torch.relu(self.hidden(x)) * self.get_buffer("gate"))
        return out


def test_the_vmap_forward_trains_as_fit(digits: DeviceData) -> None:
    gated = Task(name="gated", load_data=DIGITS_MLP.load_data, build_model=lambda p: _Gated())
    for task, forward in ((gated, "auto"), (DIGITS_MLP, "vmap")):
        cfgs = configs("adam")
        members = fit_population(task, digits, cfgs, device="cpu", seeds=SEEDS,
                                 forward=forward)
        for member, solo in zip(members, solo_runs(task, digits, cfgs, SEEDS), strict=True):
            assert_same(member.unwrap(), solo, len(digits.val_x))


@pytest.mark.parametrize("family", ["sgd", "rmsprop"])
def test_a_diverging_member_leaves_and_the_others_go_on(
        digits: DeviceData, monkeypatch: pytest.MonkeyPatch, family: str) -> None:
    # RMSprop scales its steps by the gradient's size: at lr 1e6 its ReLUs die and the loss
    # stays finite, at 1e30 the weights overflow.
    lrs = (0.05, 1e6, 0.02) if family == "sgd" else (1e-3, 1e30, 3e-3)
    cfgs = [TrialConfig(family, {"lr": lr}, 32, 2) for lr in lrs]
    sizes: list[int] = []
    forward = population._Stack.forward

    def counting(self: population._Stack, x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(population._Stack, "forward", counting)
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=SEEDS)
    with pytest.raises(Diverged) as alone:
        fit(DIGITS_MLP, digits, cfgs[1], device="cpu", seed=SEEDS[1])
    stopped = members[1].stopped
    assert isinstance(stopped, Diverged) and members[1].epochs == []
    assert (stopped.step, stopped.epoch) == (alone.value.step, alone.value.epoch)
    with pytest.raises(Diverged):
        members[1].unwrap()
    # It stopped costing compute: three members up to the check at the epoch's end, two after
    # (the first forward is the stacking check's).
    assert sizes == [3] + [3] * 25 + [2] * 25
    for k in (0, 2):
        solo = fit(DIGITS_MLP, digits, cfgs[k], device="cpu", seed=SEEDS[k])
        assert_same(members[k].unwrap(), solo, len(digits.val_x))


def test_a_member_pruned_by_on_epoch_leaves(digits: DeviceData) -> None:
    class Pruned(Exception):
        pass

    def on_epoch(k: int, result: EpochResult) -> None:
        if k == 1:
            raise Pruned(f"member {k} after epoch {result.epoch}")

    cfgs = configs("adam", epochs=3)
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=SEEDS,
                             on_epoch=on_epoch)
    assert isinstance(members[1].stopped, Pruned) and len(members[1].epochs) == 1
    assert str(members[1].stopped) == "member 1 after epoch 0"
    for k in (0, 2):
        solo = fit(DIGITS_MLP, digits, cfgs[k], device="cpu", seed=SEEDS[k])
        assert_same(members[k].unwrap(), solo, len(digits.val_x))


@pytest.mark.parametrize("update", ["fused", "batched"])
def test_members_of_every_rule_share_one_population(digits: DeviceData, update: str) -> None:
    """One stacked forward and backward; each rule's update on its own members' rows (the
    rules interleaved in the configs, so that the stack must reorder them), and members of
    two rules leaving after the first epoch."""
    families = ["adam", "sgd", "rmsprop", "momentum", "adagrad", "adamw", "nadam", "radam",
                "nesterov", "adam"]
    cfgs = [TrialConfig(f, HYPER[f][i % 3], 32, 2, "cosine" if i % 2 else "none")
            for i, f in enumerate(families)]
    seeds = list(range(len(cfgs)))
    leaving = {2, 9}

    def on_epoch(k: int, result: EpochResult) -> None:
        if k in leaving:
            raise RuntimeError(f"member {k} leaves")

    seen: list[int] = []
    members = fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=seeds,
                             update=update,
                             on_epoch=lambda k, r: (seen.append(k), on_epoch(k, r))[1])
    assert sorted(seen[:len(cfgs)]) == list(range(len(cfgs)))  # each member, first epoch
    for k, (member, solo) in enumerate(zip(members, solo_runs(DIGITS_MLP, digits, cfgs, seeds),
                                           strict=True)):
        assert member.index == k and member.config is cfgs[k]
        if k in leaving:
            assert str(member.stopped) == f"member {k} leaves" and len(member.epochs) == 1
            assert_same(member.epochs, solo[:1], len(digits.val_x))
        else:
            assert_same(member.unwrap(), solo, len(digits.val_x))


def _no_dropout_regressor(params: Mapping[str, Any]) -> torch.nn.Module:
    return mlp([10, 16, 1])


def test_a_regression_population_matches_fit(digits: DeviceData) -> None:
    """The MSE loss, per member. (digits: only for the one-thread fixture.)"""
    task = Task(name="diabetes-plain", load_data=load_diabetes_data,
                build_model=_no_dropout_regressor, loss="mse")
    raw = task.read_data()
    data = DeviceData(raw.train_x, raw.train_y, raw.val_x, raw.val_y)
    cfgs = [TrialConfig("adam", {"lr": lr}, 16, 3) for lr in (1e-3, 1e-2, 3e-3)]
    members = fit_population(task, data, cfgs, device="cpu", seeds=SEEDS)
    for member, solo in zip(members, solo_runs(task, data, cfgs, SEEDS), strict=True):
        for ours, theirs in zip(member.unwrap(), solo, strict=True):
            assert ours.train_loss == pytest.approx(theirs.train_loss, rel=TRAIN_RTOL)
            assert ours.value == pytest.approx(theirs.value, rel=RTOL)


def test_dropout_trains_but_is_not_exact() -> None:
    raw = DIABETES_MLP.read_data()
    data = DeviceData(raw.train_x, raw.train_y, raw.val_x, raw.val_y)
    cfgs = [TrialConfig("adam", {"lr": 1e-3}, 8, 1, task_params={"hidden": 16, "dropout": 0.2})
            for _ in range(2)]
    members = fit_population(DIABETES_MLP, data, cfgs, device="cpu", seeds=[0, 1])
    assert all(m.stopped is None and len(m.epochs) == 1 for m in members)


def test_grouping_says_why_a_config_trains_alone() -> None:
    def cfg(optimizer: str, hyper: dict[str, float], batch_size: int = 64,
            **kw: Any) -> TrialConfig:
        return TrialConfig(optimizer, hyper, batch_size, 5, **kw)

    cfgs = [cfg("adam", {"lr": 1e-3}), cfg("sgd", {"lr": 0.1}),  # rules may differ
            cfg("adamw", {"lr": 1e-3}),
            cfg("nesterov", {"lr": 0.1, "momentum": 0.9}),
            cfg("adam", {"lr": 1e-3}, 128),  # alone: its batch size
            cfg("nesterov", {"lr": 0.1, "momentum": 0.0}),  # torch refuses it
            cfg("lbfgs", {}),
            cfg("rmsprop", {"lr": 1e-3}, scheduler="cosine"),  # schedules may differ
            cfg("rmsprop", {"lr": 1e-3}),
            cfg("adam", {"lr": 1e-3}, task_params={"hidden": 32}),
            cfg("adagrad", {"lr": 1e-2})]
    grouping = group_configs(cfgs)
    assert grouping.groups == [[0, 1, 2, 3, 7, 8, 10]]
    assert sorted(grouping.alone) == [4, 5, 6, 9]
    assert "batch size 128" in grouping.alone[4] and "no other config" in grouping.alone[4]
    assert "invalid" in grouping.alone[5] and "Nesterov" in grouping.alone[5]
    assert "unknown optimizer 'lbfgs'" in grouping.alone[6]
    assert 'task params {"hidden": 32}' in grouping.alone[9]
    assert all("\n" not in reason for reason in grouping.alone.values())
    many = [cfg("adam", {"lr": 1e-3 * i}) for i in range(1, 10)]
    assert group_configs(many, max_members=4).groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError, match=r"max_members must be at least 2 .*, but got 1"):
        group_configs(many, max_members=1)


def test_configs_that_differ_are_refused_before_training(digits: DeviceData) -> None:
    cfgs = [TrialConfig("adam", {"lr": 1e-3}, 32, 2), TrialConfig("adam", {"lr": 1e-3}, 64, 2)]
    with pytest.raises(CannotStack, match="config 1 .* batch size is 64, config 0's is 32"):
        fit_population(DIGITS_MLP, digits, cfgs, device="cpu", seeds=[0, 1])
    with pytest.raises(ValueError, match="one seed per config, but got 1 seeds for 2"):
        fit_population(DIGITS_MLP, digits, cfgs[:1] * 2, device="cpu", seeds=[0])


class _Branchy(torch.nn.Module):
    """Data-dependent control flow: cannot run under vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out if bool(out.sum() > 0) else -out


def _task(build: Any) -> Task:
    return Task(name="custom", load_data=DIGITS_MLP.load_data, build_model=build)


def test_models_that_cannot_be_stacked_are_refused(digits: DeviceData) -> None:
    def batch_norm(params: Mapping[str, Any]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                   torch.nn.ReLU(), torch.nn.Linear(32, 10))

    config = TrialConfig("adam", {"lr": 1e-3}, 32, 1)
    reason = stack_check(_task(batch_norm), digits, config, device="cpu")
    assert reason is not None and reason.startswith("BatchNorm1d at '1' ")
    with pytest.raises(CannotStack) as info:
        fit_population(_task(batch_norm), digits, [config, config], device="cpu", seeds=[0, 1])
    assert info.value.reason == reason
    branchy = stack_check(_task(lambda p: _Branchy()), digits, config, device="cpu")
    assert branchy is not None and branchy.startswith("its forward/backward fails when stacked")
    assert "\n" not in branchy

    class Hidden(torch.nn.Module):  # its offset is no parameter or buffer: not stackable
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.offset = torch.nn.Linear(64, 10), torch.randn(10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.linear(x) + self.offset
            return out

    hidden = stack_check(_task(lambda p: Hidden()), digits, config, device="cpu")
    assert hidden is not None and hidden.startswith("the stacked forward differs")

    def broken(params: Mapping[str, Any]) -> torch.nn.Module:
        raise RuntimeError("no such layer")

    assert stack_check(_task(broken), digits, config, device="cpu") == (
        "building the model fails: RuntimeError: no such layer")
    with pytest.raises(CannotStack, match="building the model fails"):
        fit_population(_task(broken), digits, [config], device="cpu", seeds=[0])
    assert stack_check(DIGITS_MLP, digits, config, device="cpu") is None


def test_member_result_unwraps_like_fit() -> None:
    config = TrialConfig("adam", {"lr": 1e-3}, 32, 1)
    done = MemberResult(0, config, 0, [EpochResult(0, 1.0, 1.0, 0.5, 1e-3, 0.1)])
    assert done.unwrap() == done.epochs
    with pytest.raises(Diverged):
        MemberResult(1, config, 0, [], Diverged(step=3, epoch=0, loss=float("nan"))).unwrap()


def test_stacked_forward_names_the_path_auto_takes(digits: DeviceData) -> None:
    config = TrialConfig("adam", {"lr": 1e-3}, 32, 1)
    assert stacked_forward(DIGITS_MLP, digits, config, device="cpu") == "bmm"
    tanh = _task(lambda p: torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(),
                                               torch.nn.Linear(8, 10)))
    assert stacked_forward(tanh, digits, config, device="cpu") == "vmap"
