"""The one-shot settings and the search space of Schmidt, Schneider & Hennig, "Descending
through a Crowded Valley - Benchmarking Deep Learning Optimizers" (ICML 2021).

The values are read from the paper's released runs, github.com/SirRob1997/Crowded-Valley---Results
(``RESULTS``): each run's directory name records its hyperparameters with TensorFlow's names.
One-shot runs live in ``results/oneshot/<schedule>/<problem>/<Optimizer>/`` (identical on every
problem); the tuning distributions are those of the random search's draws in
``results/large_budget/none/<problem>/<Optimizer>/`` (the same draws on every problem). The paper
has no AdamW, and it never sets the optimizer's weight decay: its DeepOBS problems carry their own
L2 term in the loss. Pure data, no torch import, like :mod:`tuner.space.families`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from tuner.errors import SpaceError
from tuner.space.dsl import Range, parse_float_dist
from tuner.space.families import FAMILIES

OneshotSource = Literal["paper", "torch"]
ONESHOT_SOURCES: tuple[str, ...] = ("paper", "torch")

PAPER = "Schmidt et al. 2021"
RESULTS = "Crowded-Valley---Results"
_ONESHOT_DIR = f"{RESULTS} results/oneshot/none/fmnist_2c2d"


class UnknownFamilyError(SpaceError, ValueError):
    """A family name opttune does not know (a ValueError, and a clean CLI error)."""


@dataclass(frozen=True)
class OneshotSetting:
    """The hyperparameters `family` runs untuned with, and where they come from."""

    family: str
    hyper: Mapping[str, float] = field(hash=False)
    source: str


# The paper's one-shot values per family: (hyperparameters, where they are recorded).
# weight_decay is 0 throughout (the paper never sets the optimizer's).
_PAPER_ONESHOT: dict[str, tuple[dict[str, float], str]] = {
    # GradientDescentOptimizer/..learning_rate__1.e-02
    "sgd": ({"lr": 1e-2, "weight_decay": 0.0}, f"{_ONESHOT_DIR}/GradientDescentOptimizer"),
    # MomentumOptimizer/..learning_rate__1.e-02__momentum__9.9e-01..use_nesterov__False
    "momentum": ({"lr": 1e-2, "momentum": 0.99, "weight_decay": 0.0},
                 f"{_ONESHOT_DIR}/MomentumOptimizer"),
    # NAGOptimizer/..learning_rate__1.e-02__momentum__9.9e-01..use_nesterov__True
    "nesterov": ({"lr": 1e-2, "momentum": 0.99, "weight_decay": 0.0},
                 f"{_ONESHOT_DIR}/NAGOptimizer"),
    # AdamOptimizer/..beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-08__learning_rate__1.e-03
    "adam": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
             f"{_ONESHOT_DIR}/AdamOptimizer"),
    # RMSPropOptimizer/..decay__9.e-01__epsilon__1.e-10__learning_rate__1.e-03__momentum__0.e+00
    # (TF's decay is torch's alpha)
    "rmsprop": ({"lr": 1e-3, "alpha": 0.9, "momentum": 0.0, "eps": 1e-10, "weight_decay": 0.0},
                f"{_ONESHOT_DIR}/RMSPropOptimizer"),
    # NadamOptimizer/..beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-07__learning_rate__1.e-03
    "nadam": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
              f"{_ONESHOT_DIR}/NadamOptimizer"),
    # RAdamOptimizer/..beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-07__learning_rate__1.e-03
    "radam": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
              f"{_ONESHOT_DIR}/RAdamOptimizer"),
    # AdagradOptimizer/..initial_accumulator_value__1.e-01__learning_rate__1.e-02: TF's Adagrad
    # has no epsilon (its accumulator starts at 0.1, which opttune does not expose), so eps is
    # torch's 1e-10.
    "adagrad": ({"lr": 1e-2, "eps": 1e-10, "weight_decay": 0.0},
                f"{_ONESHOT_DIR}/AdagradOptimizer; eps is torch's (TF Adagrad has none)"),
}

_MOMENTUM_NOTE = "momentum 0.9: torch's default 0 would make this plain SGD"
# PyTorch 2.x defaults, as in inspect.signature(torch.optim.X.__init__).
_TORCH_ONESHOT: dict[str, tuple[dict[str, float], str]] = {
    # torch.optim.SGD: lr=1e-3, weight_decay=0
    "sgd": ({"lr": 1e-3, "weight_decay": 0.0}, "torch.optim.SGD defaults"),
    # torch.optim.SGD: lr=1e-3, momentum=0 -> 0.9, weight_decay=0
    "momentum": ({"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
                 f"torch.optim.SGD defaults; {_MOMENTUM_NOTE}"),
    # torch.optim.SGD(nesterov=True): as momentum; torch refuses Nesterov without momentum
    "nesterov": ({"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
                 f"torch.optim.SGD defaults; {_MOMENTUM_NOTE}"),
    # torch.optim.Adam: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
    "adam": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
             "torch.optim.Adam defaults"),
    # torch.optim.AdamW: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2
    "adamw": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2},
              "torch.optim.AdamW defaults"),
    # torch.optim.RMSprop: lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0
    "rmsprop": ({"lr": 1e-2, "alpha": 0.99, "momentum": 0.0, "eps": 1e-8, "weight_decay": 0.0},
                "torch.optim.RMSprop defaults"),
    # torch.optim.NAdam: lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
    "nadam": ({"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
              "torch.optim.NAdam defaults"),
    # torch.optim.RAdam: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
    "radam": ({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
              "torch.optim.RAdam defaults"),
    # torch.optim.Adagrad: lr=1e-2, eps=1e-10, weight_decay=0
    "adagrad": ({"lr": 1e-2, "eps": 1e-10, "weight_decay": 0.0}, "torch.optim.Adagrad defaults"),
}

# The paper's tuning distributions as DSL specs (results/large_budget/none/*/<Optimizer>/).
_LR = "1e-4:1"  # learning_rate: log-uniform [1e-4, 1] for every optimizer (draws 1.05e-4..0.756)
# Momentum/NAG momentum and RMSProp decay: rho itself (not 1-rho) log-uniform on [1e-3, 1]
# (draws 1.38e-3..0.913, the same draws for all three). The DSL needs momentum < 1, so the top
# is 0.999: it leaves out 0.01 % of the paper's log-range.
_RHO = "0.001:0.999:log"
# Adam/NAdam/RAdam beta1 in [0.5, 0.999] (draws 0.507..0.980), beta2 in [0.8, 0.999] (draws
# 0.801..0.992). Linear: adamw keeps its linear beta ranges and build_space wants one scale per
# name; whether the paper drew them log- or linearly-uniform cannot be told from its ~20 draws
# (on these ranges the two densities differ by at most 2x).
_BETA1, _BETA2 = "0.5:0.999", "0.8:0.999"
_ADAMS = {"lr": _LR, "beta1": _BETA1, "beta2": _BETA2, "weight_decay": "0"}
_PAPER_SPACE: dict[str, dict[str, str]] = {
    "sgd": {"lr": _LR, "weight_decay": "0"},
    "momentum": {"lr": _LR, "momentum": _RHO, "weight_decay": "0"},
    "nesterov": {"lr": _LR, "momentum": _RHO, "weight_decay": "0"},
    "adam": {**_ADAMS, "eps": "1e-8"},
    "rmsprop": {"lr": _LR, "alpha": "0.001:1:log", "momentum": "0", "eps": "1e-10",
                "weight_decay": "0"},
    "nadam": {**_ADAMS, "eps": "1e-7"},
    "radam": {**_ADAMS, "eps": "1e-7"},
    "adagrad": {"lr": _LR, "eps": "1e-10", "weight_decay": "0"},  # eps: torch's, TF has none
}
# Where the overrides are not exactly what the paper drew: (family, parameter) -> how.
_BETA_NOTE = "the paper's scale (log or linear) is not recoverable; linear here"
_INEXACT: dict[tuple[str, str], str] = {
    **{(f, "momentum"): "paper: up to 1, the DSL stops below 1"
       for f in ("momentum", "nesterov")},
    **{(f, b): _BETA_NOTE for f in ("adam", "nadam", "radam") for b in ("beta1", "beta2")},
    ("adagrad", "eps"): "the paper's TF Adagrad has none; its accumulator starts at 0.1",
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise UnknownFamilyError(f"unknown optimizer {family!r}; known: {', '.join(FAMILIES)}")


def oneshot_setting(family: str, *, source: OneshotSource) -> OneshotSetting:
    """The complete setting `family` runs untuned: the paper's (torch's for a family the paper
    lacks) or torch's defaults."""
    _check_family(family)
    if source not in ONESHOT_SOURCES:
        raise ValueError(f"unknown one-shot source {source!r}; choose from "
                         f"{', '.join(ONESHOT_SOURCES)}")
    if source == "paper" and family in _PAPER_ONESHOT:
        hyper, where = _PAPER_ONESHOT[family]
        cite = f"{PAPER}, {where}"
    elif family not in _TORCH_ONESHOT:
        # The families newer than the paper (muon, schedulefree, lion, prodigy, adafactor):
        # their authors' defaults (torch's for Adafactor), each cited in tuner/space/families.py.
        hyper = {p.name: p.default for p in FAMILIES[family].params}
        cite = f"{family}'s defaults as cited in tuner/space/families.py (not in {PAPER})"
    else:
        hyper, cite = _TORCH_ONESHOT[family]
        if source == "paper":
            cite = f"{cite} (not in {PAPER})"
    return OneshotSetting(family, MappingProxyType(dict(hyper)), cite)


def crowded_valley_overrides(families: Sequence[str]) -> dict[str, list[str]]:
    """The paper's tuning distributions as `build_space(params=...)` overrides, scoped to each
    of `families` the paper covers; the others keep opttune's ranges."""
    out: dict[str, list[str]] = {}
    for family in families:
        _check_family(family)
        for name, spec in _PAPER_SPACE.get(family, {}).items():
            out.setdefault(name, []).append(f"{family}={spec}")
    return out


def crowded_valley_differences() -> list[str]:
    """One line per hyperparameter whose paper space differs from opttune's default one."""
    lines = []
    for family in FAMILIES.values():
        paper = _PAPER_SPACE.get(family.name)
        if paper is None:
            lines.append(f"{family.name}: not in {PAPER}; opttune's ranges")
            continue
        for p in family.params:
            dist = parse_float_dist(p.name, paper[p.name])
            if dist == Range(p.low, p.high, p.log):
                continue
            note = _INEXACT.get((family.name, p.name))
            lines.append(f"{family.name} {p.name}: opttune {Range(p.low, p.high, p.log).show()}"
                         f", paper {dist.show()}" + (f" ({note})" if note else ""))
    return lines
