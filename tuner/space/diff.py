"""A readable difference between two search spaces (for refusing a changed space on resume)."""

from __future__ import annotations

from tuner.space.dsl import Range
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
