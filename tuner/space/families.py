"""Optimizer families: which hyperparameters each one has, their defaults and default ranges.

Pure data, no torch import, so that the CLI can show and check a space instantly. The
defaults are PyTorch's own (Adam and AdamW after Kingma & Ba 2014 and Loshchilov & Hutter
2019); where torch has no default for a knob a family is built around (momentum for the
`momentum` and `nesterov` families), the classic 0.9 is used. The recent families (muon,
schedulefree, lion, prodigy, adafactor) take their authors' defaults, each with its source.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import TypeAlias

from tuner.errors import SpaceError

# A keyword argument of an optimizer class: a number, a flag, or a tuple of numbers (betas).
OptimizerArg: TypeAlias = float | bool | tuple[float, ...]


@dataclass(frozen=True)
class HyperParam:
    """One tunable hyperparameter of a family: its default range and its torch default."""

    name: str
    low: float
    high: float
    log: bool
    default: float


@dataclass(frozen=True)
class Family:
    """An optimizer family: an optimizer class plus what is tuned and what is fixed.

    `torch_class` names a class of ``torch.optim`` (``"Adam"``) or, as ``"module:Class"``, of
    the package `package` (its pip name) that provides it. `schedule` is False for a family
    that takes no learning-rate schedule (schedule-free: its averaging replaces one).
    """

    name: str
    torch_class: str
    summary: str
    params: tuple[HyperParam, ...]
    fixed: dict[str, OptimizerArg] = field(default_factory=dict)
    package: str | None = None
    schedule: bool = True

    def param(self, name: str) -> HyperParam | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


# Range bounds that any value of a hyperparameter must respect (inclusive low, high), and
# whether a range of it is log-scaled by default. Used to validate user input.
VALID_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    # name: (min, max, min inclusive, max inclusive)
    "lr": (0.0, float("inf"), False, False),
    "eps": (0.0, float("inf"), False, False),
    "weight_decay": (0.0, float("inf"), True, False),
    "momentum": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "alpha": (0.0, 1.0, True, True),
    "adam_lr": (0.0, float("inf"), False, False),  # muon: the AdamW side's learning rate
    "warmup": (0.0, 1.0, True, False),  # schedulefree: warm-up, a fraction of the steps
    "d_coef": (0.0, float("inf"), False, False),  # prodigy: scales its estimate of the step
    "decay": (0.0, 1.0, False, True),  # adafactor: c in beta2_t = 1 - t^-c
}
LOG_BY_DEFAULT = frozenset({"lr", "eps", "weight_decay", "adam_lr", "d_coef"})


def _lr(low: float, high: float, default: float) -> HyperParam:
    return HyperParam("lr", low, high, True, default)


def _wd(default: float = 0.0, low: float = 1e-6, high: float = 1e-2) -> HyperParam:
    return HyperParam("weight_decay", low, high, True, default)


_BETA1 = HyperParam("beta1", 0.5, 0.99, False, 0.9)
_BETA2 = HyperParam("beta2", 0.9, 0.9999, False, 0.999)
_EPS = HyperParam("eps", 1e-10, 1e-4, True, 1e-8)
_MOMENTUM = HyperParam("momentum", 0.5, 0.99, False, 0.9)

# The families of 2018-2024, each with its authors' defaults (the defaults trial and the
# benchmark's one-shot setting) and ranges scaled as their authors advise.
RECENT_FAMILIES: tuple[Family, ...] = (
    # Keller Jordan, "Muon: An optimizer for hidden layers in neural networks" (2024), and
    # github.com/KellerJordan/Muon README: Muon lr 0.02, momentum 0.95 (Nesterov, 5
    # Newton-Schulz steps: torch.optim.Muon's own), weight decay 0.01 on the hidden weight
    # matrices; AdamW lr 3e-4, betas (0.9, 0.95), eps 1e-10 (MuonWithAuxAdam's), the same
    # weight decay, on the rest. "Only the learning rate and weight decay must be tuned":
    # ranges a decade either side of 0.02 and 3e-4, and momentum near its 0.95.
    Family("muon", "Muon", "Muon on hidden weight matrices, AdamW on the rest (Jordan 2024)",
           (_lr(2e-3, 2e-1, 0.02), HyperParam("momentum", 0.8, 0.99, False, 0.95),
            _wd(0.01, 1e-4, 1e-1), HyperParam("adam_lr", 3e-5, 3e-3, True, 3e-4)),
           {"adam_betas": (0.9, 0.95), "adam_eps": 1e-10}),
    # Defazio et al. 2024, "The Road Less Scheduled"; schedulefree.AdamWScheduleFree's
    # defaults: lr 0.0025, betas (0.9, 0.999), eps 1e-8, weight decay 0. Its README: warm-up
    # is recommended, lr 1x-10x a scheduled AdamW's (range: AdamW's, its lowest decade cut),
    # beta1 0.9, raised to 0.95-0.98 for long runs. Warm-up 2% of the steps, as the authors'
    # AlgoPerf self-tuning submission (warmup_factor 0.02, in the package's algoperf folder).
    Family("schedulefree", "schedulefree:AdamWScheduleFree",
           "AdamW Schedule-Free: averaging instead of a schedule (Defazio et al. 2024)",
           (_lr(1e-4, 1e-1, 2.5e-3), HyperParam("beta1", 0.8, 0.99, False, 0.9), _BETA2,
            _wd(0.0, 1e-5, 1e-1), HyperParam("warmup", 0.0, 0.1, False, 0.02)),
           package="schedulefree", schedule=False),
    # Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; the authors' code
    # (github.com/google/automl lion/lion_pytorch.py): lr 1e-4, betas (0.9, 0.99), weight
    # decay 0. Their README: lr 3-10x smaller than AdamW's, weight decay 3-10x larger, so
    # AdamW's ranges scaled by 10 (lr 1e-6:1e-2, weight decay 1e-4:1).
    Family("lion", "lion_pytorch:Lion", "Lion, the sign of interpolated momentum (Chen et al. "
           "2023)", (_lr(1e-6, 1e-2, 1e-4), _BETA1, HyperParam("beta2", 0.9, 0.9999, False, 0.99),
                     _wd(0.0, 1e-4, 1.0)), package="lion-pytorch"),
    # Mishchenko & Defazio 2024 (ICML), "Prodigy"; prodigyopt's README: lr 1 for every
    # network (not searched: "it is better to change the value of d_coef", 1 by default,
    # 0.1 to 10 named), weight decay 0 by default (0.001, 0.01, 0.1 to try), betas (0.9,
    # 0.999).
    Family("prodigy", "prodigyopt:Prodigy", "Prodigy: Adam with an estimated step size "
           "(Mishchenko & Defazio 2024)",
           (HyperParam("d_coef", 0.1, 10.0, True, 1.0), _BETA1, _BETA2, _wd(0.0, 1e-4, 1e-1)),
           package="prodigyopt"),
    # Shazeer & Stern 2018, "Adafactor"; torch.optim.Adafactor's defaults: lr 1e-2 (the
    # paper's relative step cap, rho_t = min(1e-2, 1/sqrt(t))), beta2_t = 1 - t^-0.8 (decay
    # 0.8, the paper's choice; 0.5 is its other studied value), no weight decay.
    Family("adafactor", "Adafactor", "Adafactor: factored second moments (Shazeer & Stern "
           "2018)", (_lr(1e-4, 1e-1, 1e-2), HyperParam("decay", 0.5, 1.0, False, 0.8), _wd())),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sgd", "SGD", "plain stochastic gradient descent",
               (_lr(1e-4, 1.0, 1e-3), _wd()), {"momentum": 0.0}),
        Family("momentum", "SGD", "SGD with heavy-ball momentum (Qian 1999)",
               (_lr(1e-4, 1.0, 1e-3), _MOMENTUM, _wd()), {"nesterov": False}),
        Family("nesterov", "SGD", "SGD with Nesterov momentum",
               (_lr(1e-4, 1.0, 1e-3), _MOMENTUM, _wd()), {"nesterov": True}),
        Family("adam", "Adam", "Adam, L2 weight decay coupled to the gradient (Kingma & Ba 2014)",
               (_lr(1e-5, 1e-1, 1e-3), _BETA1, _BETA2, _EPS, _wd())),
        Family("adamw", "AdamW", "Adam with decoupled weight decay (Loshchilov & Hutter 2019)",
               (_lr(1e-5, 1e-1, 1e-3), _BETA1, _BETA2, _EPS, _wd(1e-2, 1e-5, 1e-1))),
        Family("rmsprop", "RMSprop", "RMSprop (Hinton 2012), optional momentum",
               (_lr(1e-5, 1e-1, 1e-2), HyperParam("alpha", 0.8, 0.999, False, 0.99),
                HyperParam("momentum", 0.0, 0.95, False, 0.0), _EPS, _wd())),
        Family("nadam", "NAdam", "Adam with Nesterov momentum (Dozat 2016)",
               (_lr(1e-5, 1e-1, 2e-3), _BETA1, _BETA2, _EPS, _wd())),
        Family("radam", "RAdam", "Rectified Adam (Liu et al. 2020)",
               (_lr(1e-5, 1e-1, 1e-3), _BETA1, _BETA2, _EPS, _wd())),
        Family("adagrad", "Adagrad", "Adagrad (Duchi et al. 2011)",
               (_lr(1e-4, 1.0, 1e-2), HyperParam("eps", 1e-12, 1e-4, True, 1e-10), _wd())),
    )
}
FAMILIES.update((f.name, f) for f in RECENT_FAMILIES)
# Families whose defaults trial runs their authors' settings rather than a torch class's.
AUTHORS_DEFAULTS = frozenset({"muon", "schedulefree", "lion", "prodigy"})

# What a study tunes when --optimizers is not given: the design's core families.
DEFAULT_FAMILIES: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")

ALL_PARAM_NAMES: tuple[str, ...] = ("lr", "momentum", "beta1", "beta2", "alpha", "eps",
                                    "weight_decay", "adam_lr", "warmup", "d_coef", "decay")


def families_with(param: str) -> list[str]:
    """The names of the families that tune `param`, in table order."""
    return [f.name for f in FAMILIES.values() if f.param(param) is not None]


def missing_package_message(family: Family) -> str:
    """The one line that says `family`'s package is not installed, and how to install it."""
    return (f"optimizer {family.name} needs the package {family.package}, which is not "
            f"installed; install it with: pip install {family.package} (a dependency of "
            f"opttune, so reinstalling opttune installs it too)")


def check_installed(names: list[str]) -> None:
    """Raise SpaceError for the first family of `names` whose package is missing (found
    without importing it, so that the check stays instant)."""
    for name in names:
        family = FAMILIES.get(name)
        if family is None or family.package is None:
            continue
        module = family.torch_class.rpartition(":")[0]
        if importlib.util.find_spec(module) is None:
            raise SpaceError(missing_package_message(family))
