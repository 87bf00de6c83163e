"""tuner.training.optimizers: each family's torch optimizer and the LR schedules."""

from __future__ import annotations

import math

import pytest
import torch

from tuner.errors import SpaceError
from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES
from tuner.training import optimizers

# Hyperparameters that every optimizer of a family must carry in its param group.
GROUP_KEYS = ("lr", "weight_decay", "eps", "momentum", "alpha", "betas", "nesterov",
              "beta2_decay")


def defaults_config(family: str, **override: float) -> TrialConfig:
    hyper = {p.name: p.default for p in FAMILIES[family].params} | override
    return TrialConfig(family, hyper, batch_size=32, epochs=1)


def params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, dtype=torch.float64, generator=gen))]


# The families that are one torch.optim class (muon is two, and the packages' families are
# tested against their packages in test_new_families.py).
TORCH_FAMILIES = [f.name for f in FAMILIES.values()
                  if ":" not in f.torch_class and f.name != "muon"]


@pytest.mark.parametrize("family", TORCH_FAMILIES)
def test_defaults_equal_torchs_own(family: str) -> None:
    """At its defaults each family is exactly the torch class at torch's defaults."""
    built = optimizers.build(defaults_config(family), params())
    cls = getattr(torch.optim, FAMILIES[family].torch_class)
    assert type(built) is cls
    extra = {"momentum": 0.9, "nesterov": family == "nesterov"} \
        if family in ("momentum", "nesterov") else {}
    reference = cls(params(), **extra)
    group, ref = built.param_groups[0], reference.param_groups[0]
    for key in GROUP_KEYS:
        assert group.get(key) == ref.get(key), (family, key)


def test_classes_and_values() -> None:
    cases = {
        "sgd": (torch.optim.SGD, {"lr": 0.05, "weight_decay": 1e-4},
                {"momentum": 0.0, "nesterov": False, "dampening": 0}),
        "momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.0},
                     {"momentum": 0.8, "nesterov": False}),
        "nesterov": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.0},
                     {"momentum": 0.7, "nesterov": True}),
        "adam": (torch.optim.Adam, {"lr": 3e-4, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
                                    "weight_decay": 1e-3},
                 {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-3}),
        "adamw": (torch.optim.AdamW, {"lr": 3e-4, "beta1": 0.85, "beta2": 0.98, "eps": 1e-7,
                                      "weight_decay": 0.05},
                  {"betas": (0.85, 0.98), "weight_decay": 0.05}),
        "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "momentum": 0.5,
                                          "eps": 1e-7, "weight_decay": 0.0},
                    {"alpha": 0.9, "momentum": 0.5, "eps": 1e-7, "centered": False}),
    }
    for family, (cls, hyper, expected) in cases.items():
        opt = optimizers.build(TrialConfig(family, hyper, 32, 1), params())
        assert type(opt) is cls, family
        group = opt.param_groups[0]
        assert group["lr"] == hyper["lr"]
        for key, value in expected.items():
            assert group[key] == value, (family, key)
        assert isinstance(group.get("betas", ()), tuple)


def test_unknown_hyperparameter_fails_loudly() -> None:
    config = TrialConfig("adam", {"lr": 1e-3, "momentum": 0.9}, 32, 1)
    with pytest.raises(SpaceError, match="adam has no momentum; it takes lr, beta1, beta2, eps, "
                                         "weight_decay"):
        optimizers.build(config, params())
    with pytest.raises(SpaceError, match="unknown optimizer 'lbfgs'"):
        optimizers.build(TrialConfig("lbfgs", {"lr": 1.0}, 32, 1), params())


# --- one step, numerically ----------------------------------------------------------------------


def quadratic_steps(opt: torch.optim.Optimizer, p: torch.nn.Parameter, steps: int) -> None:
    """Minimise sum(a * p^2) / 2: the gradient is a * p, known exactly."""
    a = torch.linspace(0.5, 2.0, p.numel(), dtype=torch.float64)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a * p * p).sum()).backward()
        opt.step()


def adam_by_hand(p0: torch.Tensor, steps: int, *, lr: float, b1: float, b2: float, eps: float,
                 wd: float, decoupled: bool) -> torch.Tensor:
    a = torch.linspace(0.5, 2.0, p0.numel(), dtype=torch.float64)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t in range(1, steps + 1):
        g = a * p
        if decoupled:
            p = p * (1 - lr * wd)  # AdamW: decay the weights, not the gradient
        else:
            g = g + wd * p  # Adam: L2 added to the gradient, then adapted
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p


@pytest.mark.parametrize(("family", "decoupled"), [("adam", False), ("adamw", True)])
def test_adam_weight_decay_coupled_adamw_decoupled(family: str, decoupled: bool) -> None:
    hyper = {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.5}
    (p,) = params()
    p0 = p.detach().clone()
    quadratic_steps(optimizers.build(TrialConfig(family, hyper, 32, 1), [p]), p, 5)
    expected = adam_by_hand(p0, 5, lr=0.05, b1=0.8, b2=0.95, eps=1e-8, wd=0.5,
                            decoupled=decoupled)
    other = adam_by_hand(p0, 5, lr=0.05, b1=0.8, b2=0.95, eps=1e-8, wd=0.5,
                         decoupled=not decoupled)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(expected, other, rtol=1e-3)  # the two really differ


@pytest.mark.parametrize("family", ["sgd", "momentum", "nesterov"])
def test_sgd_momentum_and_nesterov_as_torch_computes_them(family: str) -> None:
    lr, mu, wd = 0.1, 0.9, 0.01
    hyper = {"lr": lr, "weight_decay": wd} | ({} if family == "sgd" else {"momentum": mu})
    (p,) = params()
    p0 = p.detach().clone()
    quadratic_steps(optimizers.build(TrialConfig(family, hyper, 32, 1), [p]), p, 3)
    a = torch.linspace(0.5, 2.0, p0.numel(), dtype=torch.float64)
    q, buf = p0.clone(), None
    for _ in range(3):
        g = a * q + wd * q
        if family != "sgd":
            buf = g if buf is None else mu * buf + g
            g = g + mu * buf if family == "nesterov" else buf
        q = q - lr * g
    torch.testing.assert_close(p.detach(), q, rtol=1e-12, atol=1e-14)


# --- schedules ----------------------------------------------------------------------------------


def lrs(name: str, total: int, *, family: str = "sgd", lr: float = 0.1) -> list[float]:
    """The learning rate used at each of `total` steps, then the one after the last."""
    opt = optimizers.build(defaults_config(family, lr=lr), params())
    sched = optimizers.build_scheduler(name, opt, total_steps=total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    out.append(opt.param_groups[0]["lr"])
    return out


def test_no_schedule() -> None:
    opt = optimizers.build(defaults_config("sgd"), params())
    assert optimizers.build_scheduler("none", opt, total_steps=10) is None


def test_cosine_reaches_zero_at_the_end() -> None:
    seen = lrs("cosine", 100)
    assert seen[0] == pytest.approx(0.1)
    assert seen[50] == pytest.approx(0.05)
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_step_drops_by_ten() -> None:
    seen = lrs("step", 100)
    assert seen[49] == pytest.approx(0.1)
    assert seen[50] == pytest.approx(0.01)
    assert seen[74] == pytest.approx(0.01)
    assert seen[75] == pytest.approx(0.001)


def test_onecycle_warms_up_then_anneals_without_touching_momentum() -> None:
    seen = lrs("onecycle", 100)
    peak = max(range(len(seen)), key=seen.__getitem__)
    assert seen[peak] == pytest.approx(0.1)
    assert 20 <= peak <= 40  # torch's default: 30% of the steps rising
    assert seen[0] == pytest.approx(0.1 / 25)
    assert seen[-2] == pytest.approx(0.1 / 25 / 1e4)  # the last step trains at the floor
    # The tuned beta1 (and plain SGD's zero momentum) stay as configured.
    adam = optimizers.build(defaults_config("adam", beta1=0.7), params())
    optimizers.build_scheduler("onecycle", adam, total_steps=10)
    assert adam.param_groups[0]["betas"] == (0.7, 0.999)
    sgd = optimizers.build(defaults_config("sgd"), params())
    optimizers.build_scheduler("onecycle", sgd, total_steps=10)
    assert sgd.param_groups[0]["momentum"] == 0.0
    # A family with neither momentum nor betas still gets the schedule.
    assert lrs("onecycle", 10, family="adagrad")[0] == pytest.approx(0.1 / 25)


def test_warmup_ramps_up_then_decays() -> None:
    seen = lrs("warmup", 100)
    warm = seen[:5]  # 5% of the steps
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1 / 5)
    assert seen[4] == pytest.approx(0.1)
    assert seen[5] == pytest.approx(0.1)
    assert seen[50] < 0.1 and seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(max(seen), 0.1)


def test_unknown_scheduler() -> None:
    opt = optimizers.build(defaults_config("sgd"), params())
    with pytest.raises(SpaceError, match="unknown scheduler 'linear'; choose from none, cosine"):
        optimizers.build_scheduler("linear", opt, total_steps=10)
