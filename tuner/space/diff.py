"""A readable difference between two search spaces (for refusing a changed space on resume)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tuner.space.dsl import Choice, Fixed, Range
from tuner.space.searchspace import ParamSpace, Space


def _flatten(space: Space) -> dict[str, ParamSpace]:
    out = {f"{family}.{name}": ps for family, params in space.families.items()
           for name, ps in params.items()}
    out["batch_size"] = space.batch_size
    out["scheduler"] = space.scheduler
    out.update({f"task.{name}": ps for name, ps in space.task_params.items()})
    return out


def diff_lines(old: Space, new: Space) -> list[str]:
    """One line per change: added, removed, narrowed, widened, changed."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for family in new.families:
        if family not in old.families:
            lines.append(f"optimizer {family} added")
    for family in old.families:
        if family not in new.families:
            lines.append(f"optimizer {family} removed")
    for key in sorted(set(a) | set(b)):
        family = key.split(".", 1)[0]
        if (family in old.families) != (family in new.families):
            continue  # covered by the family line
        if key not in a:
            lines.append(f"{key} added ({b[key].dist.show()})")
        elif key not in b:
            lines.append(f"{key} removed (was {a[key].dist.show()})")
        elif a[key].dist != b[key].dist:
            lines.append(f"{key} {_how(a[key], b[key])}: {a[key].dist.show()} -> "
                         f"{b[key].dist.show()}")
    if old.epochs != new.epochs:
        lines.append(f"epochs changed: {old.epochs} -> {new.epochs}")
    if old.defaults_first != new.defaults_first:
        lines.append("defaults-first trials " + ("on" if new.defaults_first else "off"))
    return lines


def _how(old: ParamSpace, new: ParamSpace) -> str:
    x, y = old.dist, new.dist
    if isinstance(x, Range) and isinstance(y, Range) and x.log == y.log:
        if y.low >= x.low and y.high <= x.high:
            return "narrowed"
        if y.low <= x.low and y.high >= x.high:
            return "widened"
        return "moved"
    return "changed"


def describe_diff(old: Space, new: Space) -> str:
    return "; ".join(diff_lines(old, new)) or "no visible difference"


def recorded_distributions(trials: Iterable[Any]) -> dict[str, Any]:
    """The Optuna distribution each parameter name was first recorded with in `trials`."""
    out: dict[str, Any] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            out.setdefault(name, dist)
    return out


def optuna_conflicts(recorded: Mapping[str, Any], new: Space) -> list[str]:
    """Changes a study cannot take even with --allow-changed-space.

    Optuna keeps, for the whole study, the choice list of a categorical parameter and the
    scale (log or linear) of a range that its trials recorded; a range's bounds may move, and
    a fixed value is never recorded, so it can be fixed or freed at will.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

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
            if not isinstance(old, FloatDistribution):
                out.append(f"{name} from the choices {_show(old.choices)} to a range")
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


def _show(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values)
