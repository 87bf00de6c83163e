"""The small language for ranges on the command line and in space files.

``LOW:HIGH`` is a range (log-scaled by default for lr, eps and weight decay; ``:log`` or
``:linear`` after it says so explicitly), ``a,b,c`` a choice, a single value fixes it, and a
``family=`` prefix scopes any of them to one optimizer family (``adam=1e-5:1e-2``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from tuner.errors import SpaceError
from tuner.jsontypes import JsonObject, JsonValue
from tuner.space.families import LOG_BY_DEFAULT, VALID_BOUNDS

# A searched or fixed value: a float hyperparameter, an integer (batch size, a task's
# layer width) or a word (a schedule, a task's choice of activation).
ParamValue: TypeAlias = float | int | str


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool

    def contains(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def show(self) -> str:
        return f"{_num(self.low)}:{_num(self.high)}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    values: tuple[ParamValue, ...]

    def contains(self, value: object) -> bool:
        return value in self.values

    def show(self) -> str:
        return ",".join(_num(v) for v in self.values)


@dataclass(frozen=True)
class Fixed:
    value: ParamValue

    def contains(self, value: object) -> bool:
        return bool(value == self.value)

    def show(self) -> str:
        return f"{_num(self.value)} (fixed)"


Dist = Range | Choice | Fixed


def _num(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def split_scope(text: str) -> tuple[str | None, str]:
    """``'adam=1e-5:1e-2'`` → ``('adam', '1e-5:1e-2')``; no prefix → ``(None, text)``."""
    if "=" in text:
        scope, _, rest = text.partition("=")
        return scope.strip().lower(), rest.strip()
    return None, text.strip()


def _to_float(name: str, token: str, spec: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise SpaceError(
            f"{name} must be a number, a LOW:HIGH range or a comma list, but got {spec!r}"
        ) from None
    if not math.isfinite(value):
        raise SpaceError(f"{name} must be finite, but got {spec!r}")
    return value


def check_value(name: str, value: float, spec: str) -> None:
    """Raise unless `value` is allowed for hyperparameter `name` (lr > 0, 0 <= momentum < 1…)."""
    if name not in VALID_BOUNDS:
        return
    low, high, low_incl, high_incl = VALID_BOUNDS[name]
    too_low = value < low or (value == low and not low_incl)
    too_high = value > high or (value == high and not high_incl)
    if too_low or too_high:
        lo = f"{'>=' if low_incl else '>'} {_num(low)}"
        hi = "" if math.isinf(high) else f" and {'<=' if high_incl else '<'} {_num(high)}"
        raise SpaceError(f"{name} must be {lo}{hi}, but got {name}={_num(value)} (in {spec!r})")


def parse_float_dist(name: str, spec: str) -> Dist:
    """Parse a DSL string for a float hyperparameter such as lr or momentum."""
    if not spec:
        raise SpaceError(f"{name} needs a value, a LOW:HIGH range or a comma list, but got ''")
    if ":" in spec:
        parts = spec.split(":")
        scale = None
        if len(parts) == 3 and parts[2].strip().lower() in ("log", "linear", "lin"):
            scale = parts[2].strip().lower()
            parts = parts[:2]
        if len(parts) != 2:
            raise SpaceError(f"{name} range must be LOW:HIGH (optionally :log or :linear), "
                             f"but got {spec!r}")
        low, high = (_to_float(name, p.strip(), spec) for p in parts)
        check_value(name, low, spec)
        check_value(name, high, spec)
        if low == high:
            raise SpaceError(f"{name} range {spec!r} has zero width; to fix {name}, give a "
                             f"single value ({_num(low)})")
        if low > high:
            raise SpaceError(f"{name} range must have LOW < HIGH, but got {spec!r}; "
                             f"write it as {parts[1].strip()}:{parts[0].strip()}")
        log = (name in LOG_BY_DEFAULT) if scale is None else scale == "log"
        if log and low <= 0:
            raise SpaceError(f"{name} range {spec!r} is log-scaled, so LOW must be > 0, but got "
                             f"{_num(low)}; use a positive LOW, or add ':linear'")
        return Range(low, high, log)
    if "," in spec:
        values = [_to_float(name, p.strip(), spec) for p in spec.split(",") if p.strip()]
        if not values:
            raise SpaceError(f"{name} needs at least one value, but got {spec!r}")
        for v in values:
            check_value(name, v, spec)
        return _choice_or_fixed(values)
    value = _to_float(name, spec, spec)
    check_value(name, value, spec)
    return Fixed(value)


def parse_int_choice(name: str, spec: str) -> Dist:
    """Parse a positive-integer knob given as one value or a comma list (batch size)."""
    values = []
    for token in (p.strip() for p in spec.split(",")):
        if not token:
            continue
        try:
            value = int(token)
        except ValueError:
            raise SpaceError(f"{name} must be a positive integer or a comma list of them, "
                             f"but got {spec!r}") from None
        if value <= 0:
            raise SpaceError(f"{name} must be > 0, but got {name}={value}")
        values.append(value)
    if not values:
        raise SpaceError(f"{name} needs at least one value, but got {spec!r}")
    return _choice_or_fixed(values)


def parse_word_choice(name: str, spec: str, known: tuple[str, ...]) -> Dist:
    """Parse a categorical knob given as one word or a comma list of known words."""
    values = [p.strip().lower() for p in spec.split(",") if p.strip()]
    for value in values:
        if value not in known:
            raise SpaceError(f"unknown {name} {value!r}; choose from {', '.join(known)}")
    if not values:
        raise SpaceError(f"{name} needs at least one of {', '.join(known)}, but got {spec!r}")
    return _choice_or_fixed(values)


def _choice_or_fixed(values: Sequence[ParamValue]) -> Dist:
    unique = tuple(dict.fromkeys(values))  # keep order, drop repeats
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def dist_to_dict(dist: Dist) -> JsonObject:
    if isinstance(dist, Range):
        return {"kind": "range", "low": dist.low, "high": dist.high, "log": dist.log}
    if isinstance(dist, Choice):
        return {"kind": "choice", "values": list(dist.values)}
    return {"kind": "fixed", "value": dist.value}


def dist_from_dict(data: Mapping[str, JsonValue]) -> Dist:
    kind = data["kind"]
    if kind == "range":
        return Range(_stored_number(data["low"]), _stored_number(data["high"]),
                     bool(data["log"]))
    if kind == "choice":
        values = data["values"]
        if not isinstance(values, list):
            raise SpaceError(f"a stored choice needs a list of values, but got {values!r}")
        return Choice(tuple(stored_value(v) for v in values))
    return Fixed(stored_value(data["value"]))


def stored_value(value: JsonValue) -> ParamValue:
    """A value read back from a stored space: a number or a word, never null or a list."""
    if isinstance(value, (int, float, str)):
        return value
    raise SpaceError(f"a stored space value must be a number or a word, but got {value!r}")


def _stored_number(value: JsonValue) -> float:
    if isinstance(value, (int, float, str)):
        return float(value)
    raise SpaceError(f"a stored range bound must be a number, but got {value!r}")
