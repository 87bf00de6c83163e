"""Property-based tests of the search-space language (tuner.space): generated specs, not examples.

Three properties, each over many generated inputs:

1. Round trips. A valid spec parses to exactly the range, choice or fixed value it says, and
   writing that back as DSL (the test's ``to_dsl``: the project has no DSL writer of its own) or
   as a TOML/YAML space-file value parses to the same thing. A whole :class:`Space` survives the
   JSON it is stored as with a study (``StudyMeta``), which ``search`` compares on a restart.
2. Sampling. Every value that ``Space.suggest`` draws from a real Optuna study lies in its
   range, is one of its choices or equals its fixed value, and only the chosen family's
   hyperparameters appear in a trial.
3. Bad specs. Malformed text, inverted or zero-width ranges, non-positive log bounds, unknown
   family prefixes, empty choices, ``nan``/``inf`` and stray colons raise :class:`SpaceError`
   with a one-line message (never ValueError, IndexError, …), and the CLI prints one
   ``Error:`` line with exit code 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tuner.cli.commands import cli
from tuner.errors import SpaceError
from tuner.search.sampling import make_sampler
from tuner.space.dsl import (
    Choice,
    Dist,
    Fixed,
    Range,
    dist_from_dict,
    dist_to_dict,
    parse_float_dist,
    parse_int_choice,
    parse_word_choice,
    split_scope,
)
from tuner.space.families import (
    ALL_PARAM_NAMES,
    FAMILIES,
    LOG_BY_DEFAULT,
    VALID_BOUNDS,
    families_with,
)
from tuner.space.files import load_space_file
from tuner.space.searchspace import (
    RESERVED_NAMES,
    SCHEDULERS,
    ParamSpace,
    Space,
    build_space,
    parse_task_params,
)
from tuner.study.meta import StudyMeta
from tuner.study.settings import MlflowIds, StudySettings
from tuner.study.studies import create_study

PARSING = settings(max_examples=100, deadline=None, database=None)
BUILDING = settings(max_examples=30, deadline=None, database=None)
SAMPLING = settings(max_examples=25, deadline=None, database=None)
# The CLI test reuses one tmp_path across examples; each asserts that it stays empty.
CLI = settings(max_examples=8, deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
# Sampled spaces keep |bounds| <= this: Optuna's own arithmetic overflows near the largest
# floats (RandomSampler: OverflowError on -1.7e308:1.7e308; TPE: nan on 6e307:1.2e308), which
# parsing, tested over every finite float, does not need to care about.
SAMPLE_MAX = 1e300


@pytest.fixture(autouse=True, scope="module")
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines would bury hypothesis's report."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


# -- writing specs -----------------------------------------------------------------------------

def _values(dist: Dist) -> list[Any]:
    return list(dist.values) if isinstance(dist, Choice) else \
        [dist.low, dist.high] if isinstance(dist, Range) else [dist.value]


def to_dsl(dist: Dist) -> str:
    """The DSL text of `dist`: exact floats (repr), and the scale always spelled out."""
    if isinstance(dist, Range):
        return f"{dist.low!r}:{dist.high!r}:{'log' if dist.log else 'linear'}"
    if isinstance(dist, Choice):
        return ",".join(repr(v) for v in dist.values)
    return repr(dist.value)


# The ways a person may write one float that all mean the same float.
FLOAT_STYLES: list[Callable[[float], str]] = [
    repr, lambda v: f"{v:.17g}", lambda v: f"{v:.16E}", lambda v: f"{v!r}".upper(),
]
PAD = st.sampled_from(["", " ", "  "])


@st.composite
def number_text(draw: st.DrawFn, value: float) -> str:
    return draw(PAD) + draw(st.sampled_from(FLOAT_STYLES))(value) + draw(PAD)


def finite_values(name: str, *, positive: bool = False,
                  max_abs: float | None = None) -> st.SearchStrategy[float]:
    """Finite floats that `name` accepts (VALID_BOUNDS; any for a task's own parameter)."""
    low, high, low_incl, high_incl = VALID_BOUNDS.get(
        name, (-math.inf, math.inf, False, False))
    if positive:
        low, low_incl = max(low, 0.0), False
    if max_abs is not None and low < -max_abs:
        low, low_incl = -max_abs, True
    if max_abs is not None and high > max_abs:
        high, high_incl = max_abs, True

    def allowed(v: float) -> bool:
        return (low < v or (low_incl and v == low)) and (v < high or (high_incl and v == high))

    # Powers of ten too, as people write them (1e-05: no dot, which YAML 1.1 reads as text).
    tens = [v for k in range(-12, 4) for v in (10.0**k, -(10.0**k)) if allowed(v)]
    return st.floats(min_value=None if math.isinf(low) else low,
                     max_value=None if math.isinf(high) else high,
                     exclude_min=not low_incl and not math.isinf(low),
                     exclude_max=not high_incl and not math.isinf(high),
                     allow_nan=False, allow_infinity=False) | st.sampled_from(tens)


@dataclass(frozen=True)
class Spec:
    """A generated DSL string and the distribution it must parse to."""

    text: str
    dist: Dist


@st.composite
def range_specs(draw: st.DrawFn, name: str, *, log: bool | None = None,
                positive: bool = False, max_abs: float | None = None) -> Spec:
    """``LOW:HIGH`` with LOW < HIGH, the scale left to the default or spelled (any case)."""
    log = draw(st.booleans()) if log is None else log
    low, high = sorted(draw(st.lists(finite_values(name, positive=positive or log, max_abs=max_abs),
                                     min_size=2, max_size=2, unique=True)))
    default_log = name in LOG_BY_DEFAULT
    words = ["log"] if log else ["linear", "lin"]
    scale = draw(st.sampled_from([*words, *([None] if log == default_log else [])]))
    text = draw(number_text(low)) + ":" + draw(number_text(high))
    if scale is not None:
        text += ":" + draw(PAD) + draw(st.sampled_from([str.lower, str.upper, str.title]))(
            scale) + draw(PAD)
    return Spec(text, Range(low, high, log))


@st.composite
def choice_specs(draw: st.DrawFn, name: str, *, positive: bool = False,
                 max_abs: float | None = None) -> Spec:
    """``a,b,c`` of distinct values, sometimes with a repeat (dropped, order kept)."""
    values = draw(st.lists(finite_values(name, positive=positive, max_abs=max_abs),
                           min_size=2, max_size=5, unique=True))
    tokens = [*values, *draw(st.lists(st.sampled_from(values), max_size=2))]
    return Spec(",".join(draw(number_text(v)) for v in tokens), Choice(tuple(values)))


@st.composite
def fixed_specs(draw: st.DrawFn, name: str, *, positive: bool = False,
                max_abs: float | None = None) -> Spec:
    value = draw(finite_values(name, positive=positive, max_abs=max_abs))
    return Spec(draw(number_text(value)), Fixed(value))


def float_specs(name: str, *, positive: bool = False) -> st.SearchStrategy[Spec]:
    return st.one_of(range_specs(name, positive=positive), choice_specs(name, positive=positive),
                     fixed_specs(name, positive=positive))


def scope_text(family: str) -> st.SearchStrategy[str]:
    """A family prefix as a person may type it: any case, spaces around the name."""
    return st.tuples(PAD, st.sampled_from([family, family.upper(), family.title()]), PAD) \
        .map("".join)


# -- round trips of single specs ---------------------------------------------------------------

@PARSING
@given(data=st.data(), name=st.sampled_from(ALL_PARAM_NAMES))
def test_range_spec_parses_to_its_range_and_round_trips(data: st.DataObject, name: str) -> None:
    """LOW:HIGH keeps both bounds exactly and the scale (log by default for lr, eps, wd)."""
    spec = data.draw(range_specs(name))
    dist = parse_float_dist(name, spec.text)
    assert dist == spec.dist
    assert parse_float_dist(name, to_dsl(dist)) == dist


@PARSING
@given(data=st.data(), name=st.sampled_from(ALL_PARAM_NAMES))
def test_choice_and_fixed_specs_parse_and_round_trip(data: st.DataObject, name: str) -> None:
    """a,b,c is a choice in the order given without repeats; one value fixes the parameter."""
    spec = data.draw(st.one_of(choice_specs(name), fixed_specs(name)))
    dist = parse_float_dist(name, spec.text)
    assert dist == spec.dist
    assert parse_float_dist(name, to_dsl(dist)) == dist


@PARSING
@given(data=st.data(), name=st.sampled_from(ALL_PARAM_NAMES))
def test_family_scoped_spec_round_trips(data: st.DataObject, name: str) -> None:
    """``family=SPEC`` splits into the family (lower case) and the spec, for a real family."""
    family = data.draw(st.sampled_from(families_with(name)))
    spec = data.draw(float_specs(name))
    scope, rest = split_scope(data.draw(scope_text(family)) + "=" + spec.text)
    assert (scope, parse_float_dist(name, rest)) == (family, spec.dist)
    again, rest = split_scope(f"{family}={to_dsl(spec.dist)}")
    assert (again, parse_float_dist(name, rest)) == (family, spec.dist)


@PARSING
@given(sizes=st.lists(st.integers(1, 2**20), min_size=1, max_size=5),
       schedulers=st.lists(st.sampled_from(SCHEDULERS), min_size=1, max_size=5))
def test_int_and_word_choices_round_trip(sizes: list[int], schedulers: list[str]) -> None:
    """Batch sizes (positive integers) and schedulers (known words, any case) as lists."""
    def expected(values: list[Any]) -> Dist:
        unique = tuple(dict.fromkeys(values))
        return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)

    sizes_dist = parse_int_choice("batch_size", " , ".join(map(str, sizes)))
    assert sizes_dist == expected(sizes)
    assert parse_int_choice("batch_size", to_dsl(sizes_dist)) == sizes_dist
    words = ",".join(w.upper() if i % 2 else w for i, w in enumerate(schedulers))
    sched_dist = parse_word_choice("scheduler", words, SCHEDULERS)
    assert sched_dist == expected(schedulers)
    assert parse_word_choice("scheduler", ",".join(_values(sched_dist)), SCHEDULERS) == sched_dist


@PARSING
@given(data=st.data(), name=st.sampled_from(ALL_PARAM_NAMES))
def test_dist_survives_its_json_record(data: st.DataObject, name: str) -> None:
    """dist_to_dict → JSON → dist_from_dict gives an equal distribution."""
    dist = data.draw(float_specs(name)).dist
    assert dist_from_dict(json.loads(json.dumps(dist_to_dict(dist)))) == dist


# -- task hyperparameters (--param NAME=SPEC) ---------------------------------------------------

TASK_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in RESERVED_NAMES)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


WORDS = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda w: not _is_number(w))


@st.composite
def task_specs(draw: st.DrawFn, max_abs: float | None = None) -> Spec:
    """A task hyperparameter: a float range, a choice of ints/floats/words, or a fixed value."""
    if draw(st.booleans()):
        return draw(range_specs("task", max_abs=max_abs))
    values = draw(st.lists(st.one_of(st.integers(-10**6, 10**6),
                                     finite_values("task", max_abs=max_abs), WORDS),
                           min_size=1, max_size=4))
    unique = tuple(dict.fromkeys(values))
    dist = Fixed(unique[0]) if len(unique) == 1 else Choice(unique)
    return Spec(",".join(repr(v) if isinstance(v, float) else str(v) for v in values), dist)


@PARSING
@given(name=TASK_NAMES, spec=task_specs())
def test_task_param_spec_parses_to_what_it_says(name: str, spec: Spec) -> None:
    """Integers stay integers, words stay words; a choice's first value is its default."""
    parsed = parse_task_params({name: spec.text})[name]
    assert parsed.dist == spec.dist
    assert [type(v) for v in _values(parsed.dist)] == [type(v) for v in _values(spec.dist)]
    if isinstance(spec.dist, Choice):
        assert parsed.default == spec.dist.values[0]
    if isinstance(spec.dist, Range):
        assert parsed.default is None


# -- whole spaces --------------------------------------------------------------------------------

@dataclass
class Flags:
    """Generated command-line flags and, per family and parameter, the distribution expected."""

    optimizers: list[str]
    params: dict[str, list[str]] = field(default_factory=dict)
    expected: dict[str, dict[str, Dist]] = field(default_factory=dict)
    batch_size: str | None = None
    scheduler: str | None = None
    epochs: int | None = None
    defaults_first: bool = True
    task_params: dict[str, str] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        return {"optimizers": self.optimizers, "params": self.params,
                "batch_size": self.batch_size, "scheduler": self.scheduler,
                "epochs": self.epochs, "defaults_first": self.defaults_first,
                "task_params": self.task_params}


@st.composite
def space_flags(draw: st.DrawFn, max_abs: float | None = None) -> Flags:
    """Flags that build a valid space: per parameter an unscoped spec and/or family-scoped
    overrides, kept consistent the way Optuna needs (one scale, or one choice list, per name;
    a fixed value may differ per family). Momentum stays above 0 (nesterov refuses 0);
    `max_abs` bounds every number."""
    families = draw(st.lists(st.sampled_from(list(FAMILIES)), min_size=1, max_size=4,
                             unique=True))
    flags = Flags(optimizers=families)
    flags.expected = {f: {p.name: Range(p.low, p.high, p.log) for p in FAMILIES[f].params}
                      for f in families}
    for name in ALL_PARAM_NAMES:
        users = [f for f in families if name in FAMILIES[f].param_names]
        if not users or not draw(st.booleans()):
            continue
        mode = draw(st.sampled_from(["range", "choice", "fixed"]))
        unscoped = mode == "choice" or draw(st.booleans())
        log = draw(st.booleans()) if unscoped else name in LOG_BY_DEFAULT
        kw: dict[str, Any] = {"positive": name == "momentum", "max_abs": max_abs}
        shared = draw(range_specs(name, log=log, **kw) if mode == "range" else
                      choice_specs(name, **kw) if mode == "choice" else fixed_specs(name, **kw))
        texts = []
        if unscoped:
            texts.append(shared.text)
            for f in users:
                flags.expected[f][name] = shared.dist
        for family in draw(st.lists(st.sampled_from(users), unique=True)):
            own = draw(st.sampled_from(["same kind", "fixed"]))
            spec = (draw(fixed_specs(name, **kw)) if own == "fixed" else
                    draw(range_specs(name, log=log, **kw)) if mode == "range" else shared)
            texts.append(draw(scope_text(family)) + "=" + spec.text)
            flags.expected[family][name] = spec.dist
        if texts:
            flags.params[name] = texts
    if draw(st.booleans()):
        flags.batch_size = ",".join(map(str, draw(st.lists(st.integers(1, 4096), min_size=1,
                                                           max_size=4))))
    # A space of schedule-free families alone refuses any --scheduler but none.
    if draw(st.booleans()) and any(FAMILIES[f].schedule for f in families):
        flags.scheduler = ",".join(draw(st.lists(st.sampled_from(SCHEDULERS), min_size=1,
                                                 max_size=3)))
    flags.epochs = draw(st.none() | st.integers(1, 50))
    flags.defaults_first = draw(st.booleans())
    flags.task_params = draw(st.dictionaries(
        TASK_NAMES, task_specs(max_abs=max_abs).map(lambda s: s.text), max_size=3))
    return flags


@BUILDING
@given(flags=space_flags())
def test_flags_resolve_to_the_last_spec_that_applies(flags: Flags) -> None:
    """Per family and parameter: the built-in range, then the flags in order, a scoped one for
    its family only; every family keeps exactly its own hyperparameters."""
    space = build_space(**flags.kwargs())
    assert list(space.families) == flags.optimizers
    got = {f: {n: ps.dist for n, ps in params.items()} for f, params in space.families.items()}
    assert got == flags.expected


@BUILDING
@given(flags=space_flags())
def test_space_round_trips_through_the_study_record(flags: Flags) -> None:
    """The space stored with a study (JSON in its user attributes) reads back equal, so
    running `search` again with the same flags finds the same space."""
    space = build_space(**flags.kwargs())
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    meta = StudyMeta(task="digits-mlp", space=space, data_source="sklearn", metric="accuracy",
                     direction="maximize", settings=StudySettings(), mlflow=MlflowIds())
    study = create_study(optuna.storages.InMemoryStorage(), "s", meta, sampler=None,
                         pruner=None)
    assert StudyMeta.from_study(study).space == space
    assert build_space(**flags.kwargs()) == space  # and building is deterministic


# -- space files hold the same as the flags ---------------------------------------------------

def _toml_value(dist: Dist) -> str:
    if isinstance(dist, Range):
        return f"{{low = {dist.low!r}, high = {dist.high!r}, log = {str(dist.log).lower()}}}"
    if isinstance(dist, Choice):
        return "[" + ", ".join(repr(v) for v in dist.values) + "]"
    return repr(dist.value)


def _yaml_value(dist: Dist) -> str:
    # Written by hand, as a person writes YAML: 1e-05, not PyYAML's own 1.0e-05.
    if isinstance(dist, Range):
        return f"{{low: {dist.low!r}, high: {dist.high!r}, log: {str(dist.log).lower()}}}"
    if isinstance(dist, Choice):
        return "[" + ", ".join(repr(v) for v in dist.values) + "]"
    return repr(dist.value)


def write_space_file(folder: Path, suffix: str, flags: Flags, native: list[bool]) -> Path:
    """`flags` as a space file: each spec as the DSL string or as the file's own value (a
    table, a list, a number); family-scoped specs go in a table named after the family."""
    top: list[tuple[str, str]] = []
    tables: dict[str, list[tuple[str, str]]] = {}
    for i, (name, texts) in enumerate(flags.params.items()):
        for text in texts:
            scope, spec = split_scope(text)
            dist = parse_float_dist(name, spec)
            if not native[i % len(native)]:
                value = json.dumps(spec)
            else:
                value = _yaml_value(dist) if suffix == ".yaml" else _toml_value(dist)
            (tables.setdefault(scope, []) if scope else top).append((name, value))
    extra = [("optimizers", json.dumps(flags.optimizers))]
    if flags.batch_size is not None:
        extra.append(("batch_size", json.dumps(flags.batch_size)))
    if flags.scheduler is not None:
        extra.append(("scheduler", json.dumps(flags.scheduler)))
    if flags.epochs is not None:
        extra.append(("epochs", str(flags.epochs)))
    if suffix == ".yaml":
        lines = [f"{k}: {v}" for k, v in [*extra, *top]]
        for family, entries in tables.items():
            lines += [f"{family}:", *(f"  {k}: {v}" for k, v in entries)]
    else:
        lines = [f"{k} = {v}" for k, v in [*extra, *top]]
        for family, entries in tables.items():
            lines += [f"[{family}]", *(f"{k} = {v}" for k, v in entries)]
    path = folder / f"space{suffix}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@BUILDING
@given(flags=space_flags(), suffix=st.sampled_from([".toml", ".yaml"]),
       native=st.lists(st.booleans(), min_size=1, max_size=4))
@example(flags=Flags(["adam"], {"lr": ["1e-5:1e-2"]}), suffix=".yaml", native=[True])
def test_space_file_gives_the_same_space_as_the_flags(
        tmp_path_factory: pytest.TempPathFactory, flags: Flags, suffix: str,
        native: list[bool]) -> None:
    """A TOML or YAML file that says what the flags say builds an equal space."""
    # `momentum` is both a parameter and a family: a file cannot hold `momentum = …` and a
    # [momentum] table at once, so such a draw keeps only the family's table.
    if "momentum" in flags.optimizers and any(
            split_scope(t)[0] == "momentum" for texts in flags.params.values() for t in texts):
        texts = flags.params.get("momentum", [])
        if any(split_scope(t)[0] is None for t in texts):
            flags.params["momentum"] = [t for t in texts if split_scope(t)[0] is not None]
    flags.task_params = {}  # task hyperparameters are flags only (--param)
    path = write_space_file(tmp_path_factory.mktemp("space"), suffix, flags, native)
    from_file = build_space(file_values=load_space_file(path),
                            defaults_first=flags.defaults_first)
    assert from_file == build_space(**flags.kwargs()), path.read_text()


# -- sampling ------------------------------------------------------------------------------------

def _check_value(where: str, ps: ParamSpace, value: Any) -> None:
    dist = ps.dist
    if isinstance(dist, Range):
        assert isinstance(value, float) and dist.low <= value <= dist.high, (where, dist, value)
    elif isinstance(dist, Choice):
        assert value in dist.values, (where, dist, value)
    else:
        assert value == dist.value, (where, dist, value)


def _sampler(kind: str, families: list[str], seed: int) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)  # Optuna's default sampler
    return make_sampler("tpe", families=families, seed=seed)  # what `opttune search` runs


@SAMPLING
@pytest.mark.parametrize(("kind", "n_trials"), [("random", 6), ("tpe", 4), ("opttune-tpe", 8)])
@given(flags=space_flags(max_abs=SAMPLE_MAX), seed=st.integers(0, 2**16))
def test_every_sampled_value_lies_in_its_space(kind: str, n_trials: int, flags: Flags,
                                               seed: int) -> None:
    """Each trial's values are in range / among the choices / the fixed value; a trial holds
    only its family's hyperparameters, and fixed ones are never asked of Optuna."""
    space = build_space(**flags.kwargs())
    study = optuna.create_study(sampler=_sampler(kind, flags.optimizers, seed))
    for i in range(n_trials):
        trial = study.ask()
        config = space.suggest(trial)
        family = config.optimizer
        assert family in space.families
        assert set(config.hyper) == set(FAMILIES[family].param_names)
        for name, value in config.hyper.items():
            _check_value(f"{family}.{name}", space.families[family][name], value)
        _check_value("batch_size", space.batch_size, config.batch_size)
        if FAMILIES[family].schedule:
            _check_value("scheduler", space.scheduler, config.scheduler)
        else:  # schedule-free: never a schedule, and none asked of Optuna
            assert config.scheduler == "none" and "scheduler" not in trial.params
        assert set(config.task_params) == set(space.task_params)
        for name, value in config.task_params.items():
            _check_value(name, space.task_params[name], value)
        shared = {"optimizer": None, "batch_size": space.batch_size,
                  "scheduler": space.scheduler, **space.task_params}
        asked = {**space.families[family], **shared}
        assert set(trial.params) <= set(asked), (family, trial.params)
        fixed = {n for n, ps in asked.items() if ps is not None and isinstance(ps.dist, Fixed)}
        assert not fixed & set(trial.params)
        study.tell(trial, float((seed + i) % 5))


# -- bad specs -----------------------------------------------------------------------------------

def space_error(call: Callable[[], object]) -> str:
    """The message of the SpaceError `call` raises; any other exception fails the test."""
    with pytest.raises(SpaceError) as info:
        call()
    message = str(info.value)
    assert message.strip() and len(message.splitlines()) == 1, message
    return message


def _assert_valid(space: Space) -> None:
    """What a space that was accepted must hold: finite, ordered bounds inside VALID_BOUNDS."""
    for params in space.families.values():
        for name, ps in params.items():
            dist = ps.dist
            numbers = _values(dist)
            assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), dist
            low, high, low_incl, high_incl = VALID_BOUNDS[name]
            assert all((low < v or (low_incl and v == low)) and
                       (v < high or (high_incl and v == high)) for v in numbers), dist
            if isinstance(dist, Range):
                assert dist.low < dist.high and (dist.low > 0 or not dist.log), dist


JUNK_TOKENS = [*"0123456789.eE+-:,= \t", "\n", "nan", "inf", "log", "linear", "adam", "sgd",
               "momentum", "x", "1e-3", "0.9", "1_0", "é", "\u2028"]
JUNK = st.one_of(st.lists(st.sampled_from(JUNK_TOKENS), max_size=10).map("".join), st.text())


@PARSING
@given(name=st.sampled_from(ALL_PARAM_NAMES), text=JUNK)
def test_any_text_is_a_valid_spec_or_one_space_error(name: str, text: str) -> None:
    """Whatever the text after --NAME, the result is a valid space or a one-line SpaceError."""
    kwargs = {"optimizers": list(FAMILIES), "params": {name: [text]}}
    try:
        space = build_space(**kwargs)  # type: ignore[arg-type]
    except SpaceError:
        space_error(lambda: build_space(**kwargs))  # type: ignore[arg-type]
    else:
        _assert_valid(space)


@PARSING
@given(data=st.data(), name=st.sampled_from(ALL_PARAM_NAMES))
def test_inverted_and_zero_width_ranges_are_refused(data: st.DataObject, name: str) -> None:
    """HIGH:LOW says to swap them; LOW:LOW says to give a single value instead."""
    spec = data.draw(range_specs(name))
    assert isinstance(spec.dist, Range)
    low, high = spec.dist.low, spec.dist.high
    message = space_error(lambda: parse_float_dist(name, f"{high!r}:{low!r}"))
    assert "LOW < HIGH" in message and f"write it as {low!r}:{high!r}" in message
    assert "zero width" in space_error(lambda: parse_float_dist(name, f"{low!r}:{low!r}"))


@PARSING
@given(name=st.sampled_from(ALL_PARAM_NAMES), low=st.floats(max_value=0.0, allow_nan=False,
                                                            allow_infinity=False),
       high=st.floats(min_value=1e-6, max_value=0.9))
def test_non_positive_low_of_a_log_range_is_refused(name: str, low: float, high: float) -> None:
    """A log range needs LOW > 0: lr and eps must be > 0 at all, the others say ':log' is why."""
    for text in (f"{low!r}:{high!r}:log", *([f"{low!r}:{high!r}"] if name in LOG_BY_DEFAULT
                                            else [])):
        message = space_error(lambda t=text: parse_float_dist(name, t))  # type: ignore[misc]
        assert name in message and ("must be >" in message or "log-scaled" in message)


@PARSING
@given(name=st.sampled_from(ALL_PARAM_NAMES),
       scope=st.from_regex(r"[A-Za-z][a-z0-9_-]{0,9}", fullmatch=True).filter(
           lambda s: s.strip().lower() not in FAMILIES))
def test_unknown_family_prefix_is_refused(name: str, scope: str) -> None:
    """``adamx=…`` names the families there are (and the closest one)."""
    message = space_error(lambda: build_space(params={name: [f"{scope}=0.5"]}))
    assert f"unknown optimizer {scope.lower()!r}" in message and "known: sgd" in message


@PARSING
@given(name=st.sampled_from([n for n in ALL_PARAM_NAMES if len(families_with(n)) < len(FAMILIES)]),
       data=st.data())
def test_family_prefix_without_that_parameter_is_refused(name: str, data: st.DataObject) -> None:
    """``sgd=…`` for beta1 says which families have beta1."""
    others = [f for f in FAMILIES if f not in families_with(name)]
    family = data.draw(st.sampled_from(others))
    message = space_error(lambda: build_space(optimizers=list(FAMILIES),
                                              params={name: [f"{family}=0.5"]}))
    assert f"{family} has no {name}" in message


@PARSING
@given(name=st.sampled_from(ALL_PARAM_NAMES), text=st.from_regex(r"[ ,\t]*", fullmatch=True))
def test_empty_choices_are_refused(name: str, text: str) -> None:
    """Only commas and blanks: every kind of knob asks for at least one value."""
    space_error(lambda: parse_float_dist(name, text))  # blanks alone: "must be a number"
    family = families_with(name)[0]
    assert "needs" in space_error(lambda: build_space(optimizers=[family],
                                                      params={name: [text]}))
    assert "needs" in space_error(lambda: build_space(optimizers=[family],
                                                      params={name: [f"{family}={text}"]}))
    assert "needs" in space_error(lambda: parse_int_choice("batch_size", text))
    assert "needs" in space_error(lambda: parse_word_choice("scheduler", text, SCHEDULERS))
    assert "needs" in space_error(lambda: parse_task_params({"hidden": text}))


NON_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "-Infinity", "1e999",
              "-1e400"]


@PARSING
@given(name=st.sampled_from([*ALL_PARAM_NAMES, "hidden"]), bad=st.sampled_from(NON_FINITE),
       where=st.sampled_from(["{}", "{}:0.5", "1e-9:{}", "0.5,{}", "{},0.5,0.7", "{}:{}:log"]))
def test_nan_and_inf_are_refused(name: str, bad: str, where: str) -> None:
    """nan/inf anywhere (a bound, a choice, a fixed value, a task's own parameter): finite."""
    text = where.format(bad, bad)
    if name == "hidden":
        message = space_error(lambda: parse_task_params({name: text}))
    else:
        message = space_error(lambda: parse_float_dist(name, text))
    assert "must be finite" in message


@PARSING
@given(name=st.sampled_from(ALL_PARAM_NAMES), a=st.sampled_from(["0.1", "1e-3", ""]),
       b=st.sampled_from(["0.5", "1e-2", ""]),
       pattern=st.sampled_from(["{a}:", ":{b}", "{a}::{b}", "{a}:{b}:", "::", "{a}:{b}:lg",
                                "{a}:{b}:log:", ":{a}:{b}:log", "{a}:{b}:log:linear",
                                "{a},{b}:", "{a}:{b},", "adam=sgd={a}"]))
def test_stray_colons_are_refused(name: str, a: str, b: str, pattern: str) -> None:
    """A range is LOW:HIGH with at most one ':log'/':linear' after it."""
    space_error(lambda: parse_float_dist(name, pattern.format(a=a, b=b)))


YAML_OR_TOML_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=True) |
    st.sampled_from([*ALL_PARAM_NAMES, *FAMILIES, *SCHEDULERS, "1e-5:1e-2", "0.5,0.9", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["low", "high", "log", "lr", "beta1", "x"]), inner, max_size=3),
    max_leaves=6)
SPACE_FILE_KEYS = st.sampled_from(
    ["optimizers", "epochs", "batch_size", "scheduler", *ALL_PARAM_NAMES, *FAMILIES, "lr_x"])


@BUILDING
@given(content=st.dictionaries(SPACE_FILE_KEYS, YAML_OR_TOML_VALUES, max_size=4),
       garbage=st.text(max_size=30))
def test_malformed_space_files_give_one_space_error(
        tmp_path_factory: pytest.TempPathFactory, content: dict[str, Any], garbage: str) -> None:
    """Any YAML mapping (and any text at all) as a space file: a space, or one SpaceError."""
    import yaml

    folder = tmp_path_factory.mktemp("bad")
    for name, text in (("space.yaml", yaml.safe_dump(content)), ("junk.yaml", garbage),
                       ("junk.toml", garbage)):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        try:
            build_space(file_values=load_space_file(path))
        except SpaceError:
            space_error(lambda p=path: build_space(  # type: ignore[misc]
                file_values=load_space_file(p)))


# -- the CLI -------------------------------------------------------------------------------------

BAD_LR = st.one_of(
    st.sampled_from(["BAD", "1e-1:1e-3", "0:1e-2", "-1:1", "nan", "1e-3:inf", ",", "1:2:3",
                     "adamx=1e-3:1e-2", "0.1:0.1"]),
    st.from_regex(r"[a-z]{1,6}", fullmatch=True),
)


@CLI
@given(bad=BAD_LR)
def test_cli_prints_one_error_line_for_a_bad_spec(tmp_path: Path, bad: str) -> None:
    """`opttune search --lr BAD`: exit code 1, one `Error:` line, no traceback, no store."""
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, ["search", "--task", "digits-mlp", "--lr", bad,
                                      "--home", str(home)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert not home.exists()
