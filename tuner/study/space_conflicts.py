"""What a study's recorded parameters refuse: the changes of space Optuna cannot take.

Optuna keeps, for the whole study, the distribution each parameter was first recorded with;
a resume with `--allow-changed-space` is checked here before the first trial, so that the
user reads which parameter changed instead of Optuna's error at the first `ask`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial

from tuner.space.dsl import Choice, Fixed, Range
from tuner.space.searchspace import ParamSpace, Space


def recorded_distributions(trials: Iterable[FrozenTrial]) -> dict[str, BaseDistribution]:
    """The Optuna distribution each parameter name was first recorded with in `trials`."""
    out: dict[str, BaseDistribution] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            out.setdefault(name, dist)
    return out


def optuna_conflicts(recorded: Mapping[str, BaseDistribution], new: Space) -> list[str]:
    """Changes a study cannot take even with --allow-changed-space.

    Optuna keeps, for the whole study, the choice list of a categorical parameter and the
    scale (log or linear) of a range that its trials recorded; a range's bounds may move, and
    a fixed value is never recorded, so it can be fixed or freed at will.
    """
    out = []
    for name, ps in _named(new):
        old = recorded.get(name)
        if old is None or isinstance(ps.dist, Fixed):
            continue
        if isinstance(ps.dist, Choice):
            values = list(ps.dist.values)
            if not isinstance(old, CategoricalDistribution):
                out.append(f"{name} from a range to the choices {_show(values)}")
            elif list(old.choices) != values:
                out.append(f"the choices of {name} ({_show(old.choices)} -> {_show(values)})")
        elif isinstance(ps.dist, Range):
            if isinstance(old, CategoricalDistribution):
                out.append(f"{name} from the choices {_show(old.choices)} to a range")
            elif not isinstance(old, FloatDistribution):  # not made by opttune: an int range
                out.append(f"{name} from {old!r} to a range")
            elif old.log != ps.dist.log:
                out.append(f"{name} from a {'log' if old.log else 'linear'} range to a "
                           f"{'log' if ps.dist.log else 'linear'} one")
    return list(dict.fromkeys(out))  # a name shared by several families is reported once


def _named(space: Space) -> list[tuple[str, ParamSpace]]:
    """Every parameter as Optuna sees it: one name, whatever the family."""
    named = [("optimizer", ParamSpace(Choice(tuple(space.families))))]
    named += [(n, ps) for params in space.families.values() for n, ps in params.items()]
    named += [("batch_size", space.batch_size), ("scheduler", space.scheduler),
              *space.task_params.items()]
    return named


def _show(values: Iterable[object]) -> str:
    return ",".join(str(v) for v in values)
