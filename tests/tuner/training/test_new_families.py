"""The recent families (muon, schedulefree, lion, prodigy, adafactor): one trial trained by
opttune's `fit` equals the library's own optimizer driven by a plain hand-written loop over
the same batches and seed; a schedule-free model is validated, retrained and saved at its
average x, never at y."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import lion_pytorch
import prodigyopt
import pytest
import schedulefree
import torch
import torch.nn.functional as F

from tasks.base import Task
from tasks.data import TaskData
from tasks.digits import DIGITS_MLP
from tasks.images import mlp
from tuner.errors import SpaceError
from tuner.results.retrain import train_full
from tuner.space.config import TrialConfig
from tuner.training import optimizers
from tuner.training.loop import DeviceData, EpochResult, fit

RTOL = 1e-6  # what the issue asks: the same numbers up to float noise
SEED = 7
# Two hidden layers, so that Muon has a hidden matrix (64-48-32-10: 48x64 input layer,
# 32x48 hidden, 10x32 output).
DEEP = dataclasses.replace(DIGITS_MLP, name="digits-deep",
                           build_model=lambda params: mlp([64, 48, 32, 10]))


def _with_batch_norm(params: Any) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 10))


BATCH_NORM = dataclasses.replace(DIGITS_MLP, name="digits-bn", build_model=_with_batch_norm)


@pytest.fixture(scope="module")
def digits() -> Iterator[DeviceData]:
    """790 training digits: 25 steps of 32 per epoch (the last one short), 2 epochs = 50."""
    data = DIGITS_MLP.read_data()
    yield DeviceData(data.train_x[:790], data.train_y[:790], data.val_x, data.val_y)


def hand_loop(task: Task, data: DeviceData, config: TrialConfig,
              make: Callable[[torch.nn.Module, int], torch.optim.Optimizer], *,
              schedule: Callable[[torch.optim.Optimizer, int], Any] | None = None,
              schedule_free: bool = False, eval_before_validation: bool = True,
              recalibrate: bool = False) -> tuple[torch.nn.Module, list[tuple[float, float]]]:
    """A plain training loop, as a user writes it from the libraries' READMEs: the model
    under the seed, one permutation per epoch from a generator of the seed, cross-entropy,
    zero_grad/backward/step; (train loss, validation loss) per epoch."""
    torch.manual_seed(SEED)
    model = task.build_model({})
    n, bs = len(data.train_x), config.batch_size
    steps = math.ceil(n / bs)
    opt = make(model, steps * config.epochs)
    sched = schedule(opt, steps * config.epochs) if schedule is not None else None
    generator = torch.Generator().manual_seed(SEED)
    out = []
    for _ in range(config.epochs):
        model.train()
        if schedule_free:
            opt.train()  # type: ignore[attr-defined]
        perm = torch.randperm(n, generator=generator)
        total = 0.0
        for step in range(steps):
            idx = perm[step * bs:(step + 1) * bs]
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
        if schedule_free and eval_before_validation:
            opt.eval()  # type: ignore[attr-defined]
        if recalibrate:  # the schedulefree README's BatchNorm recipe: 50 batches at x
            with torch.no_grad():
                for step in range(min(50, steps)):
                    model(data.train_x[perm[step * bs:(step + 1) * bs]])
        model.eval()
        with torch.no_grad():
            val = float(F.cross_entropy(model(data.val_x), data.val_y))
        out.append((total / n, val))
    return model, out


def opttune_fit(task: Task, data: DeviceData,
                config: TrialConfig) -> tuple[torch.nn.Module, list[EpochResult]]:
    """`fit`, and the model it trained (caught from the task's factory)."""
    built: list[torch.nn.Module] = []

    def build(params: Any) -> torch.nn.Module:
        built.append(task.build_model(params))
        return built[-1]

    results = fit(dataclasses.replace(task, build_model=build), data, config, device="cpu",
                  seed=SEED)
    return built[-1], results


def assert_same(ours: tuple[torch.nn.Module, list[EpochResult]],
                theirs: tuple[torch.nn.Module, list[tuple[float, float]]]) -> None:
    (model, results), (hand_model, hand) = ours, theirs
    assert len(results) == len(hand)
    for r, (train_loss, val_loss) in zip(results, hand, strict=True):
        assert r.train_loss == pytest.approx(train_loss, rel=RTOL)
        assert r.val_loss == pytest.approx(val_loss, rel=RTOL)
    for p, q in zip(model.parameters(), hand_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-9)


def _muon(model: torch.nn.Module, total: int) -> torch.optim.Optimizer:
    # By hand, after KellerJordan/Muon's README: Muon on the hidden 32x48 matrix only.
    hidden = [model[2].weight]
    rest = [model[0].weight, model[0].bias, model[2].bias, model[4].weight, model[4].bias]
    muon = torch.optim.Muon(hidden, lr=0.03, momentum=0.9, weight_decay=0.02)
    adamw = torch.optim.AdamW(rest, lr=1e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.02,
                              fused=True)  # the kernel opttune's AdamW takes on a CPU

    class Both(torch.optim.Optimizer):
        def __init__(self) -> None:
            super().__init__([*muon.param_groups, *adamw.param_groups], {})

        def step(self, closure: Any = None) -> None:  # type: ignore[override]
            muon.step()
            adamw.step()

    return Both()


# family -> (opttune's hyperparameters, the library's optimizer built by hand)
CASES: dict[str, tuple[dict[str, float],
                       Callable[[torch.nn.Module, int], torch.optim.Optimizer]]] = {
    "muon": ({"lr": 0.03, "momentum": 0.9, "weight_decay": 0.02, "adam_lr": 1e-3}, _muon),
    "lion": ({"lr": 3e-4, "beta1": 0.95, "beta2": 0.98, "weight_decay": 0.1},
             lambda m, total: lion_pytorch.Lion(m.parameters(), lr=3e-4, betas=(0.95, 0.98),
                                                weight_decay=0.1)),
    "prodigy": ({"d_coef": 0.5, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.01},
                lambda m, total: prodigyopt.Prodigy(m.parameters(), lr=1.0, d_coef=0.5,
                                                    betas=(0.9, 0.99), weight_decay=0.01)),
    "adafactor": ({"lr": 2e-2, "decay": 0.6, "weight_decay": 1e-3},
                  lambda m, total: torch.optim.Adafactor(
                      m.parameters(), lr=2e-2, beta2_decay=-0.6, weight_decay=1e-3,
                      foreach=True)),  # the kernel opttune asks for
    "schedulefree": ({"lr": 5e-3, "beta1": 0.95, "beta2": 0.995, "weight_decay": 1e-3,
                      "warmup": 0.1},
                     lambda m, total: schedulefree.AdamWScheduleFree(
                         m.parameters(), lr=5e-3, betas=(0.95, 0.995), weight_decay=1e-3,
                         warmup_steps=int(0.1 * total))),
}


@pytest.mark.parametrize("family", list(CASES))
def test_fit_equals_the_librarys_optimizer_in_a_plain_loop(digits: DeviceData,
                                                           family: str) -> None:
    hyper, make = CASES[family]
    config = TrialConfig(family, hyper, batch_size=32, epochs=2)
    assert_same(opttune_fit(DEEP, digits, config),
                hand_loop(DEEP, digits, config, make, schedule_free=family == "schedulefree"))


@pytest.mark.parametrize("family", ["muon", "lion", "prodigy"])
def test_a_cosine_schedule_moves_every_learning_rate(digits: DeviceData, family: str) -> None:
    hyper, make = CASES[family]
    config = TrialConfig(family, hyper, batch_size=32, epochs=2, scheduler="cosine")
    assert_same(opttune_fit(DEEP, digits, config), hand_loop(
        DEEP, digits, config, make,
        schedule=lambda opt, total: torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)))


def test_schedule_free_is_validated_at_x_and_skipping_eval_shows(digits: DeviceData) -> None:
    """If fit skipped optimizer.eval() before validation it would validate at y: it would
    equal the second hand loop, not the first, and this test fails."""
    hyper, make = CASES["schedulefree"]
    config = TrialConfig("schedulefree", hyper, batch_size=32, epochs=2)
    ours = opttune_fit(DEEP, digits, config)
    at_x = hand_loop(DEEP, digits, config, make, schedule_free=True)
    at_y = hand_loop(DEEP, digits, config, make, schedule_free=True,
                     eval_before_validation=False)
    assert_same(ours, at_x)
    for r, (_, val_at_y) in zip(ours[1], at_y[1], strict=True):
        assert abs(r.val_loss - val_at_y) > 1e-3 * val_at_y  # y and x really differ


def test_schedule_free_batch_norm_statistics_are_refreshed_at_x(digits: DeviceData) -> None:
    hyper, make = CASES["schedulefree"]
    config = TrialConfig("schedulefree", hyper, batch_size=32, epochs=2)
    ours = opttune_fit(BATCH_NORM, digits, config)
    assert_same(ours, hand_loop(BATCH_NORM, digits, config, make, schedule_free=True,
                                recalibrate=True))
    stale = hand_loop(BATCH_NORM, digits, config, make, schedule_free=True)
    assert abs(ours[1][-1].val_loss - stale[1][-1][1]) > 1e-4 * stale[1][-1][1]


def test_retrain_scores_and_saves_the_model_at_x(digits: DeviceData) -> None:
    """`opttune retrain` trains through train_full: the model it scores and saves is the
    schedule-free average x, as a hand loop's after eval()."""
    hyper, make = CASES["schedulefree"]
    config = TrialConfig("schedulefree", hyper, batch_size=32, epochs=2)
    half = len(digits.train_x) // 2
    data = TaskData(digits.train_x[:half], digits.train_y[:half], digits.train_x[half:],
                    digits.train_y[half:], digits.val_x, digits.val_y, source="test")
    model, _ = train_full(DEEP, data, config.flat(), device="cpu", seed=SEED)
    hand_model, _ = hand_loop(DEEP, digits, config, make, schedule_free=True)
    for p, q in zip(model.parameters(), hand_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-9)
    y_model, _ = hand_loop(DEEP, digits, config, make, schedule_free=True,
                           eval_before_validation=False)
    assert not torch.allclose(model[2].weight, y_model[2].weight, rtol=1e-4)


def test_schedule_free_takes_no_schedule(digits: DeviceData) -> None:
    hyper, _ = CASES["schedulefree"]
    config = TrialConfig("schedulefree", hyper, batch_size=32, epochs=1, scheduler="cosine")
    with pytest.raises(SpaceError, match=r"schedulefree takes no learning-rate schedule \(its "
                                         r"averaging replaces one\), but got scheduler 'cosine'"):
        fit(DEEP, digits, config, device="cpu")


def test_prodigy_takes_its_authors_warmup_safeguard_with_a_warming_schedule() -> None:
    def kwargs(scheduler: str) -> dict[str, Any]:
        return optimizers.optimizer_kwargs(TrialConfig("prodigy", {"d_coef": 1.0}, 32, 1,
                                                       scheduler))

    assert kwargs("warmup")["safeguard_warmup"] and kwargs("onecycle")["safeguard_warmup"]
    assert "safeguard_warmup" not in kwargs("cosine") and "safeguard_warmup" not in \
        kwargs("none")


def test_schedule_free_warmup_is_a_fraction_of_the_steps() -> None:
    config = TrialConfig("schedulefree", {"warmup": 0.05}, 32, 1)
    assert optimizers.optimizer_kwargs(config, total_steps=1000)["warmup_steps"] == 50
    with pytest.raises(ValueError, match="warmup is a fraction of the trial's steps"):
        optimizers.optimizer_kwargs(config)
