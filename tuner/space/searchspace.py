"""The search space: optimizer families with their conditional hyperparameters.

A :class:`Space` is resolved once from the built-in family table, a space file and the
command line; it is stored with the study as JSON and asked for one :class:`TrialConfig` per
trial. Each family's hyperparameters only exist in that family's trials (no momentum on an
Adam trial); :mod:`tuner.search.sampling` makes the sampler model each family on its own
trials.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

import tuner.space.dsl as dsl
from tuner.errors import SpaceError
from tuner.jsontypes import JsonObject, JsonValue
from tuner.space.config import TrialConfig
from tuner.space.dsl import Choice, Dist, Fixed, ParamValue, Range
from tuner.space.families import DEFAULT_FAMILIES, FAMILIES, check_installed, families_with

SCHEDULERS: tuple[str, ...] = ("none", "cosine", "step", "onecycle", "warmup")
# What a space searches when neither a flag nor a file names the schedule: with or without a
# cosine decay. On the quality bench (bench/quality.py: 8 trials x 3 epochs, Fashion-MNIST,
# 5 seeds) this choice raised the median best from 0.8765 (no schedule) to 0.8867. The
# defaults trials run without one, as PyTorch's defaults do.
DEFAULT_SCHEDULERS = "none,cosine"


class SpaceFileValues(TypedDict, total=False):
    """A space file's values (:func:`tuner.space.files.load_space_file`), as the flags give
    them: family names, DSL strings, and per hyperparameter its DSL lines (``adam=…``)."""

    optimizers: list[str]
    epochs: int
    batch_size: str
    scheduler: str
    params: dict[str, list[str]]


class Suggester(Protocol):
    """What a space asks of a trial (an Optuna trial has it; the space never imports
    Optuna)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float:
        ...

    def suggest_categorical(self, name: str, choices: Sequence[ParamValue]
                            ) -> ParamValue | None: ...


@dataclass(frozen=True)
class ParamSpace:
    """Where one hyperparameter is searched, and what the defaults trial uses for it.

    `default` is None when the user's range excludes the PyTorch default: then the defaults
    trial samples it like any other trial rather than leave the range the user asked for.
    """

    dist: Dist
    default: ParamValue | None = None

    def to_dict(self) -> JsonObject:
        return {**dsl.dist_to_dict(self.dist), "default": self.default}

    @classmethod
    def from_dict(cls, data: JsonValue) -> ParamSpace:
        if not isinstance(data, dict):
            raise SpaceError(f"a stored parameter space must be an object, but got {data!r}")
        default = data.get("default")
        return cls(dsl.dist_from_dict(data),
                   None if default is None else dsl.stored_value(default))


@dataclass(frozen=True)
class Space:
    families: dict[str, dict[str, ParamSpace]]
    batch_size: ParamSpace
    epochs: int
    scheduler: ParamSpace
    defaults_first: bool = True
    task_params: dict[str, ParamSpace] = field(default_factory=dict)

    # -- per trial -------------------------------------------------------------------------
    def suggest(self, trial: Suggester, *, use_defaults: bool = False) -> TrialConfig:
        """Ask an Optuna trial for one configuration; conditional on the chosen family.
        `use_defaults`: the trial runs its family's defaults (queued with their values), so
        a default that its range leaves out (weight decay 0 in a log range) is taken as is."""
        family = str(trial.suggest_categorical("optimizer", list(self.families)))
        hyper = {name: _number(name, _suggest(trial, name, ps, use_defaults))
                 for name, ps in self.families[family].items()}
        task_params = {name: _suggest(trial, name, ps, use_defaults)
                       for name, ps in self.task_params.items()}
        return TrialConfig(
            optimizer=family,
            hyper=hyper,
            batch_size=int(_suggest(trial, "batch_size", self.batch_size, use_defaults)),
            epochs=self.epochs,
            scheduler=str(_suggest(trial, "scheduler", self.scheduler, use_defaults))
            if FAMILIES[family].schedule else "none",  # schedule-free: never one
            task_params=task_params,
        )

    def searched(self) -> dict[str, list[str]]:
        """Per family, the names of the parameters a trial of it samples (not fixed ones)."""
        return {family: [name for name, ps in {**params, **self._shared(family)}.items()
                         if not isinstance(ps.dist, Fixed)]
                for family, params in self.families.items()}

    def _shared(self, family: str) -> dict[str, ParamSpace]:
        """What every trial of `family` samples besides its own hyperparameters: batch size,
        the schedule (not for a family that takes none), the task's hyperparameters."""
        schedule = {"scheduler": self.scheduler} if FAMILIES[family].schedule else {}
        return {"batch_size": self.batch_size, **schedule, **self.task_params}

    def unscheduled(self) -> list[str]:
        """The families of this space that take no learning-rate schedule (schedulefree)."""
        return [f for f in self.families if not FAMILIES[f].schedule]

    def defaults_excluded(self, family: str) -> list[str]:
        """The hyperparameters of `family` whose PyTorch default this space leaves out (a
        user's range or fixed value without it). Such a family gets no defaults trial: its
        first trial would not be "the PyTorch defaults", so none is labelled so."""
        return [name for name, ps in self.families[family].items() if ps.default is None]

    def runs_defaults(self, family: str) -> bool:
        """Whether the study runs `family`'s PyTorch-defaults trial (its one-shot baseline)."""
        return self.defaults_first and not self.defaults_excluded(family)

    def defaults_params(self, family: str) -> dict[str, ParamValue]:
        """Optuna fixed params of the trial that runs `family` at its PyTorch defaults."""
        fixed: dict[str, ParamValue] = {"optimizer": family}
        spaces = {**self.families[family], **self._shared(family)}
        for name, ps in spaces.items():
            if not isinstance(ps.dist, Fixed) and ps.default is not None \
                    and ps.dist.contains(ps.default):
                fixed[name] = ps.default
        return fixed

    # -- storage ---------------------------------------------------------------------------
    def to_dict(self) -> JsonObject:
        return {
            "optimizers": {f: {n: ps.to_dict() for n, ps in params.items()}
                           for f, params in self.families.items()},
            "batch_size": self.batch_size.to_dict(),
            "epochs": self.epochs,
            "scheduler": self.scheduler.to_dict(),
            "defaults_first": self.defaults_first,
            "task_params": {n: ps.to_dict() for n, ps in self.task_params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JsonValue]) -> Space:
        epochs = data["epochs"]
        if not isinstance(epochs, (int, float, str)):
            raise SpaceError(f"a stored space's epochs must be a number, but got {epochs!r}")
        return cls(
            families={f: _param_spaces(params) for f, params in _table(data["optimizers"])},
            batch_size=ParamSpace.from_dict(data["batch_size"]),
            epochs=int(epochs),
            scheduler=ParamSpace.from_dict(data["scheduler"]),
            defaults_first=bool(data.get("defaults_first", True)),
            task_params=_param_spaces(data.get("task_params", {})),
        )

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(family, parameter, where it is searched, default) for display."""
        out = []
        for family, params in self.families.items():
            for name, ps in params.items():
                out.append((family, name, ps.dist.show(), _show_default(ps)))
        for name, ps in (("batch_size", self.batch_size), ("scheduler", self.scheduler)):
            out.append(("(all)", name, ps.dist.show(), _show_default(ps)))
        for name, ps in self.task_params.items():
            out.append(("(task)", name, ps.dist.show(), _show_default(ps)))
        out.append(("(all)", "epochs", f"{self.epochs} (fixed)", ""))
        return out


def _table(value: JsonValue) -> list[tuple[str, JsonValue]]:
    """The entries of a stored JSON object (a stored space is made of them)."""
    if not isinstance(value, dict):
        raise SpaceError(f"a stored space needs an object here, but got {value!r}")
    return list(value.items())


def _param_spaces(value: JsonValue) -> dict[str, ParamSpace]:
    return {name: ParamSpace.from_dict(data) for name, data in _table(value)}


def _show_default(ps: ParamSpace) -> str:
    return "" if ps.default is None else dsl._num(ps.default)


def _suggest(trial: Suggester, name: str, ps: ParamSpace, use_defaults: bool) -> ParamValue:
    dist = ps.dist
    if isinstance(dist, Fixed):
        return dist.value
    if use_defaults and ps.default is not None and not dist.contains(ps.default):
        return ps.default  # a default outside a built-in log range (weight decay 0)
    if isinstance(dist, Range):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, Choice)
    value = trial.suggest_categorical(name, list(dist.values))
    assert value is not None  # one of the choices, and none is None
    return value


def _number(name: str, value: ParamValue) -> float:
    """An optimizer hyperparameter's value, as sampled (an int stays an int: it is logged)."""
    if isinstance(value, str):
        raise SpaceError(f"{name} must be a number, but the space gives {value!r}")
    return value


def build_space(
    *,
    optimizers: Sequence[str] | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
    batch_size: str | None = None,
    epochs: int | None = None,
    scheduler: str | None = None,
    file_values: SpaceFileValues | None = None,
    default_batch_size: int = 128,
    default_epochs: int = 3,
    defaults_first: bool = True,
    task_params: Mapping[str, str] | None = None,
) -> Space:
    """Resolve the space from the family table, a parsed space file and command-line flags.

    `params` maps a hyperparameter name to DSL strings such as ``["1e-5:1e-1",
    "adam=1e-5:1e-2"]``; flags are applied after the file's, so they win.
    """
    file_values = file_values or SpaceFileValues()
    names = _family_names(optimizers, file_values)
    if epochs is None:
        epochs = int(file_values.get("epochs", default_epochs))
    if epochs < 1:
        raise SpaceError(f"epochs must be >= 1, but got epochs={epochs}")

    specs: dict[str, list[tuple[str, bool]]] = {}  # name -> [(DSL text, from the file)]
    for source, from_file in ((file_values.get("params", {}), True), (params or {}, False)):
        for pname, values in source.items():
            specs.setdefault(pname, []).extend((text, from_file) for text in values)

    families: dict[str, dict[str, ParamSpace]] = {}
    for fname in names:
        family = FAMILIES[fname]
        families[fname] = {p.name: ParamSpace(Range(p.low, p.high, p.log), p.default)
                           for p in family.params}
    for pname, entries in specs.items():
        for text, from_file in entries:
            # --optimizers narrows a file's families: its lines for the others do not apply.
            if from_file and optimizers and not _applies(families, pname, text):
                continue
            _apply(families, pname, text)
    _check_consistent(families)

    bs_text = batch_size if batch_size is not None else file_values.get("batch_size")
    bs_dist = dsl.parse_int_choice("batch_size", str(bs_text)) if bs_text is not None \
        else Fixed(default_batch_size)
    sched_dist = _scheduler_dist(scheduler, file_values, names)
    return Space(
        families=families,
        batch_size=ParamSpace(bs_dist, default_batch_size if bs_dist.contains(
            default_batch_size) else None),
        epochs=epochs,
        scheduler=ParamSpace(sched_dist, "none" if sched_dist.contains("none") else None),
        defaults_first=defaults_first,
        task_params=parse_task_params(task_params or {}),
    )


def _family_names(optimizers: Sequence[str] | None,
                  file_values: SpaceFileValues) -> list[str]:
    """The space's families, from the flag or else the file or the defaults: checked, known,
    installed and without repeats."""
    names = list(optimizers) if optimizers else list(file_values.get("optimizers") or
                                                      DEFAULT_FAMILIES)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    if not names:
        raise SpaceError("--optimizers needs at least one family, e.g. --optimizers sgd,adam")
    for name in names:
        if name not in FAMILIES:
            raise SpaceError(unknown_family_message(name))
    check_installed(names)
    return names


def _scheduler_dist(scheduler: str | None, file_values: SpaceFileValues,
                    names: Sequence[str]) -> Dist:
    """The schedules searched: the flag's, else the file's, else the default choice."""
    sched_text = scheduler if scheduler is not None else file_values.get("scheduler",
                                                                         DEFAULT_SCHEDULERS)
    sched_dist = dsl.parse_word_choice("scheduler", str(sched_text), SCHEDULERS)
    # A flag asking for a schedule no chosen family can use is a mistake, not a no-op.
    if scheduler is not None and all(not FAMILIES[n].schedule for n in names) \
            and sched_dist != Fixed("none"):
        raise SpaceError(f"--scheduler {scheduler}: {', '.join(names)} takes no learning-rate "
                         f"schedule (its averaging replaces one); leave --scheduler out or "
                         f"give none")
    return sched_dist


def _applies(families: dict[str, dict[str, ParamSpace]], pname: str, text: str) -> bool:
    scope, _ = dsl.split_scope(text)
    targets = [scope] if scope is not None else list(families)
    return any(pname in families.get(f, {}) for f in targets)


def _apply(families: dict[str, dict[str, ParamSpace]], pname: str, text: str) -> None:
    scope, spec = dsl.split_scope(text)
    where = f"--{pname.replace('_', '-')} {' '.join(text.split())}"  # on one line
    users = families_with(pname)
    if not users:
        raise SpaceError(f"unknown hyperparameter {pname!r}")
    if scope is not None:
        if scope not in FAMILIES:
            raise SpaceError(f"{where}: " + unknown_family_message(scope))
        if pname not in FAMILIES[scope].param_names:
            raise SpaceError(f"{where}: {scope} has no {pname}; {pname} applies to "
                             f"{', '.join(users)}")
        if scope not in families:
            raise SpaceError(f"{where}: {scope} is not among the optimizers of this "
                             f"study ({', '.join(families)}); add it to --optimizers")
        targets = [scope]
    else:
        targets = [f for f in families if pname in families[f]]
        if not targets:
            raise SpaceError(f"{where}: none of the optimizers of this study "
                             f"({', '.join(families)}) has {pname}; it applies to "
                             f"{', '.join(users)}")
    dist = dsl.parse_float_dist(pname, spec)
    if pname == "momentum" and "nesterov" in targets and _allows_zero(dist):
        # torch refuses Nesterov without momentum; say so now, not in every trial.
        raise SpaceError(f"{where}: nesterov needs momentum > 0, but {dist.show()} "
                         f"allows 0; give a range above 0 (e.g. --momentum nesterov=0.5:0.99)")
    for fname in targets:
        builtin = FAMILIES[fname].param(pname)
        assert builtin is not None
        default = builtin.default if dist.contains(builtin.default) else None
        families[fname][pname] = ParamSpace(dist, default)


def _allows_zero(dist: Dist) -> bool:
    return dist.low <= 0 if isinstance(dist, Range) else dist.contains(0.0)


def _check_consistent(families: dict[str, dict[str, ParamSpace]]) -> None:
    """Optuna keeps one distribution kind (and scale, and choice list) per parameter name."""
    seen: dict[str, tuple[str, object]] = {}
    for fname, params in families.items():
        for pname, ps in params.items():
            if isinstance(ps.dist, Fixed):
                continue
            key: object = ps.dist.log if isinstance(ps.dist, Range) else ps.dist.values
            kind = (type(ps.dist).__name__, key)
            if pname in seen and seen[pname][1] != kind:
                other = seen[pname][0]
                raise SpaceError(
                    f"{pname} must be searched the same way in every family (all log ranges, "
                    f"all linear ranges, or one common choice list), but {other} has "
                    f"{families[other][pname].dist.show()} and {fname} has {ps.dist.show()}")
            seen.setdefault(pname, (fname, kind))


# Names a task hyperparameter may not take: they are the optimizer's and the trial's own.
RESERVED_NAMES = frozenset({"optimizer", "batch_size", "epochs", "scheduler",
                            *(p.name for f in FAMILIES.values() for p in f.params)})


def parse_task_params(specs: Mapping[str, str]) -> dict[str, ParamSpace]:
    """Parse a task's hyperparameters, name -> DSL string, into the space's task_params.

    ``"0:0.5"`` is a float range (``:log`` for a log scale), ``"64,128,256"`` a choice whose
    first value is the default (integers stay integers, words stay words), ``"64"`` fixed.
    A range has no default: the defaults trials sample it like any other trial.
    """
    out: dict[str, ParamSpace] = {}
    for name, spec in specs.items():
        if name in RESERVED_NAMES:
            raise SpaceError(f"task hyperparameter {name!r} clashes with opttune's own "
                             f"{name!r}; rename it, e.g. 'model_{name}'")
        if not name.isidentifier():
            raise SpaceError(f"task hyperparameter names must be Python identifiers such as "
                             f"'hidden' or 'dropout', but got {name!r}")
        text = str(spec).strip()
        if ":" in text:
            dist: Dist = dsl.parse_float_dist(name, text)
        else:
            values = [_task_value(token.strip()) for token in text.split(",") if token.strip()]
            if not values:
                raise SpaceError(f"task hyperparameter {name} needs a value, a LOW:HIGH range "
                                 f"or a comma list, but got {spec!r}")
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                # as for the optimizer's own: nan would never equal itself in the stored space
                raise SpaceError(f"{name} must be finite, but got {spec!r}")
            unique = tuple(dict.fromkeys(values))
            dist = Fixed(unique[0]) if len(unique) == 1 else Choice(unique)
        default = dist.value if isinstance(dist, Fixed) else \
            dist.values[0] if isinstance(dist, Choice) else None
        out[name] = ParamSpace(dist, default)
    return out


def _task_value(token: str) -> ParamValue:
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token


def task_param_values(task_params: Mapping[str, ParamSpace]) -> dict[str, ParamValue]:
    """One value per task hyperparameter (its default, else the middle of its range), for
    checking and sizing the model before any trial."""
    out: dict[str, ParamValue] = {}
    for name, ps in task_params.items():
        dist = ps.dist
        if ps.default is not None:
            out[name] = ps.default
        elif isinstance(dist, Range):
            out[name] = math.sqrt(dist.low * dist.high) if dist.log else \
                (dist.low + dist.high) / 2
        elif isinstance(dist, Choice):
            out[name] = dist.values[0]
        else:
            out[name] = dist.value
    return out


def unknown_family_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(FAMILIES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown optimizer {name!r}; {hint}known: {', '.join(FAMILIES)}"
