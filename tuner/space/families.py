"""Optimizer families: which hyperparameters each one has, their defaults and default ranges.

Pure data, no torch import, so that the CLI can show and check a space instantly. The
defaults are PyTorch's own (Adam and AdamW after Kingma & Ba 2014 and Loshchilov & Hutter
2019); where torch has no default for a knob a family is built around (momentum for the
`momentum` and `nesterov` families), the classic 0.9 is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """An optimizer family: a torch optimizer class plus what is tuned and what is fixed."""

    name: str
    torch_class: str
    summary: str
    params: tuple[HyperParam, ...]
    fixed: dict[str, object] = field(default_factory=dict)

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
}
LOG_BY_DEFAULT = frozenset({"lr", "eps", "weight_decay"})


def _lr(low: float, high: float, default: float) -> HyperParam:
    return HyperParam("lr", low, high, True, default)


def _wd(default: float = 0.0, low: float = 1e-6, high: float = 1e-2) -> HyperParam:
    return HyperParam("weight_decay", low, high, True, default)


_BETA1 = HyperParam("beta1", 0.5, 0.99, False, 0.9)
_BETA2 = HyperParam("beta2", 0.9, 0.9999, False, 0.999)
_EPS = HyperParam("eps", 1e-10, 1e-4, True, 1e-8)
_MOMENTUM = HyperParam("momentum", 0.5, 0.99, False, 0.9)

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

# What a study tunes when --optimizers is not given: the design's core families.
DEFAULT_FAMILIES: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")

ALL_PARAM_NAMES: tuple[str, ...] = ("lr", "momentum", "beta1", "beta2", "alpha", "eps",
                                    "weight_decay")


def families_with(param: str) -> list[str]:
    """The names of the families that tune `param`, in table order."""
    return [f.name for f in FAMILIES.values() if f.param(param) is not None]
