"""A benchmark's record as types: the user attributes of the study named as the benchmark (a
study with no trials of its own), which tuner.search.benchmark writes and every reader reads
through here.

They are stored as plain JSON, as every earlier release stored them:

* ``settings``: :class:`BenchmarkSettings`; a record without ``protocol: 2`` is refused in
  one line (:func:`check_protocol`), never misread;
* ``task``, ``data_source``, ``objective`` ({metric, direction}) and ``mlflow`` (the
  benchmark's experiment and run, :class:`BenchmarkIds`): with the settings, the record's
  fixed part, :class:`BenchmarkRecord`;
* ``rerun:FAMILY:SCHEDULE:SOURCE:INDEX``: one :class:`RerunEntry` per finished re-run, read
  back as a :class:`~tuner.results.benchmark_report.SeedScore` (:func:`seed_score`);
* ``oneshot-val:FAMILY:SCHEDULE``: one :class:`OneshotValidation` per one-shot setting.

Entries are written as they are built (TypedDicts of JSON values); what is read is narrowed
to its type here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject, JsonValue
from tuner.results.benchmark_report import (
    PROTOCOL,
    Budget,
    SeedScore,
    families_under,
    family_study,
    oneshot_key,
)
from tuner.study.direction import Direction, as_direction
from tuner.study.meta import (
    BENCHMARK_KIND,
    DATA_SOURCE_ATTR,
    KIND_ATTR,
    MLFLOW_ATTR,
    OBJECTIVE_ATTR,
    SETTINGS_ATTR,
    TASK_ATTR,
)


class RerunEntry(TypedDict):
    """A finished re-run as the record keeps it (``rerun:...``)."""

    seed: int
    value: float | None  # its last epoch's test value; None: it diverged
    loss: float | None
    diverged: str | None  # why it diverged
    seconds: float  # training seconds
    population: int  # the size of the stacked model it trained in (1: alone)
    curve: list[tuple[int, float, float]]  # (epoch from 1, test value, seconds so far)
    run_id: str
    source: str  # "oneshot" or "trial-N"


class OneshotValidation(TypedDict):
    """A one-shot setting's validation score (``oneshot-val:...``; None: it diverged)."""

    value: float | None
    run_id: str


def check_protocol(name: str, settings: JsonValue) -> None:
    """Refuse a record written under the first protocol: its cells mean something else."""
    if not isinstance(settings, dict) or settings.get("protocol") != PROTOCOL:
        raise OpttuneError(
            f"benchmark {name!r} was run under opttune's first benchmark protocol (schedules "
            f"searched, diverged seeds left out), which this release does not read; run it "
            f"again under another --name, or `opttune delete {name}`")


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    """How a benchmark measures: the record's ``settings``. Those in
    tuner.search.benchmark's ``_FIXED`` must stay as they were when it continues; `budgets`
    and `seeds` may grow, `target` may change."""

    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    space: str  # "opttune" or "crowded-valley"
    oneshot_source: str  # "paper" or "torch"
    epochs: int
    sampler: str
    pruner: str
    seed: int
    batch_size: int  # the task's
    data_dir: str | None  # absolute, or None: the task's own data search
    budgets: tuple[Budget, ...]
    seeds: int
    target: float | None
    oneshot: dict[str, dict[str, JsonObject]]  # schedule → family → its one-shot setting
    protocol: int = PROTOCOL

    def families_under(self, schedule: str) -> list[str]:
        return families_under(self.optimizers, schedule)

    @property
    def largest_budget(self) -> int:
        """The most trials any budget has (0: one-shot only, no searches)."""
        return max((b.trials for b in self.budgets), default=0)

    def search_studies(self, benchmark: str) -> list[str]:
        """Every search study the benchmark has (or will have)."""
        if not self.largest_budget:
            return []
        return [family_study(benchmark, family, schedule) for schedule in self.schedules
                for family in self.families_under(schedule)]

    def to_attrs(self) -> JsonObject:
        """The stored form, keys in the order every release wrote them (the benchmark's
        MLflow run logs them as its params)."""
        oneshot: JsonObject = {s: {f: dict(c) for f, c in by_family.items()}
                               for s, by_family in self.oneshot.items()}
        return {"protocol": self.protocol, "optimizers": [*self.optimizers],
                "schedules": [*self.schedules], "space": self.space,
                "oneshot_source": self.oneshot_source, "epochs": self.epochs,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "batch_size": self.batch_size, "data_dir": self.data_dir,
                "budgets": [{"label": b.label, "trials": b.trials} for b in self.budgets],
                "seeds": self.seeds, "target": self.target, "oneshot": oneshot}

    @classmethod
    def from_attrs(cls, name: str, stored: JsonValue) -> BenchmarkSettings:
        """The settings of benchmark `name` as stored; a first-protocol record is refused."""
        check_protocol(name, stored)
        attrs = _object(stored, "settings")
        budgets = [_object(b, "budget") for b in _list(attrs.get("budgets"), "budgets")]
        oneshot = _object(attrs.get("oneshot"), "one-shot settings")
        return cls(
            optimizers=_strings(attrs.get("optimizers"), "optimizers"),
            schedules=_strings(attrs.get("schedules"), "schedules"),
            space=_str(attrs.get("space"), "space"),
            oneshot_source=_str(attrs.get("oneshot_source"), "oneshot_source"),
            epochs=_int(attrs.get("epochs"), "epochs"),
            sampler=_str(attrs.get("sampler"), "sampler"),
            pruner=_str(attrs.get("pruner"), "pruner"),
            seed=_int(attrs.get("seed"), "seed"),
            batch_size=_int(attrs.get("batch_size"), "batch_size"),
            data_dir=_optional_str(attrs.get("data_dir"), "data_dir"),
            budgets=tuple(Budget(_str(b.get("label"), "budget label"),
                                 _int(b.get("trials"), "budget trials")) for b in budgets),
            seeds=_int(attrs.get("seeds"), "seeds"),
            target=_optional_float(attrs.get("target"), "target"),
            oneshot={schedule: {family: _object(config, "one-shot setting")
                                for family, config in _object(by_family, schedule).items()}
                     for schedule, by_family in oneshot.items()},
            protocol=_int(attrs.get("protocol"), "protocol"))


def stored_search_studies(name: str, stored: JsonValue) -> list[str]:
    """The search studies a record of any protocol may have, for deleting them with it: a
    second-protocol benchmark's, or a first-protocol one's (``NAME.FAMILY``), whose settings
    are not read otherwise."""
    optimizers = stored.get("optimizers") if isinstance(stored, dict) else None
    first = [f"{name}.{family}" for family in optimizers if isinstance(family, str)] \
        if isinstance(optimizers, list) else []
    try:
        return [*BenchmarkSettings.from_attrs(name, stored).search_studies(name), *first]
    except OpttuneError:
        return first


@dataclass(frozen=True, kw_only=True)
class BenchmarkIds:
    """Where the benchmark's runs are: the record's ``mlflow`` (its tracking URI redacted)."""

    experiment_id: str = ""
    run_id: str = ""
    tracking_uri: str = ""

    def to_attrs(self) -> JsonObject:
        return {"experiment_id": self.experiment_id, "run_id": self.run_id,
                "tracking_uri": self.tracking_uri}

    @classmethod
    def from_attrs(cls, stored: JsonValue) -> BenchmarkIds:
        attrs = stored if isinstance(stored, dict) else {}
        return cls(experiment_id=str(attrs.get("experiment_id") or ""),
                   run_id=str(attrs.get("run_id") or ""),
                   tracking_uri=str(attrs.get("tracking_uri") or ""))


@dataclass(frozen=True, kw_only=True)
class BenchmarkRecord:
    """The record's fixed part: what it measures, how, and where its runs are. Its entries
    (re-runs, one-shot validations) are read by key: they grow while it runs."""

    task: str
    settings: BenchmarkSettings
    data_source: str
    metric: str  # on the test split: test_acc or test_mse
    direction: Direction
    mlflow: BenchmarkIds

    def to_attrs(self) -> JsonObject:
        """The attributes a new record is created with, in the order they are set."""
        return {KIND_ATTR: BENCHMARK_KIND, TASK_ATTR: self.task,
                SETTINGS_ATTR: self.settings.to_attrs(), DATA_SOURCE_ATTR: self.data_source,
                OBJECTIVE_ATTR: {"metric": self.metric, "direction": self.direction},
                MLFLOW_ATTR: self.mlflow.to_attrs()}

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, JsonValue]) -> BenchmarkRecord:
        """Benchmark `name`'s record from its study's user attributes; a first-protocol one
        is refused before anything else is read."""
        settings = BenchmarkSettings.from_attrs(name, attrs.get(SETTINGS_ATTR))
        objective = _object(attrs.get(OBJECTIVE_ATTR), "objective")
        return cls(task=_str(attrs.get(TASK_ATTR), "task"), settings=settings,
                   data_source=_str(attrs.get(DATA_SOURCE_ATTR), "data_source"),
                   metric=_str(objective.get("metric"), "metric"),
                   direction=as_direction(_str(objective.get("direction"), "direction")),
                   mlflow=BenchmarkIds.from_attrs(attrs.get(MLFLOW_ATTR)))


def seed_score(stored: JsonValue) -> SeedScore:
    """A re-run's entry read back (a key an early entry lacks takes its default)."""
    entry = _object(stored, "re-run")
    curve = [_list(point, "curve point") for point in _list(entry.get("curve", []), "curve")]
    return SeedScore(seed=_int(entry.get("seed"), "re-run seed"),
                     value=_optional_float(entry.get("value"), "re-run value"),
                     loss=_optional_float(entry.get("loss"), "re-run loss"),
                     seconds=_float(entry.get("seconds", 0.0), "re-run seconds"),
                     run_id=str(entry.get("run_id", "")),
                     diverged=_optional_str(entry.get("diverged"), "re-run diverged"),
                     curve=[(_int(e, "epoch"), _float(v, "value"), _float(s, "seconds"))
                            for e, v, s in curve],
                     population=_int(entry.get("population", 1), "re-run population"))


def validation_value(attrs: Mapping[str, JsonValue], family: str,
                     schedule: str) -> float | None:
    """`family`'s one-shot validation value under `schedule` (None: not run, or diverged)."""
    entry = attrs.get(oneshot_key(family, schedule))
    return _optional_float(entry.get("value"), "one-shot validation") \
        if isinstance(entry, dict) else None


def recorded_runs(attrs: Mapping[str, JsonValue], prefix: str) -> set[str]:
    """The MLflow run ids of the record's entries whose keys start with `prefix`."""
    return {run for key, entry in attrs.items() if key.startswith(prefix)
            and isinstance(entry, dict) and isinstance(run := entry.get("run_id"), str)}


# -- narrowing stored JSON: a record that is not what it should be says so ------------------
def _wrong(what: str, value: JsonValue) -> OpttuneError:
    return OpttuneError(f"a benchmark record's {what} is malformed: {value!r}")


def _object(value: JsonValue, what: str) -> JsonObject:
    if isinstance(value, dict):
        return value
    raise _wrong(what, value)


def _list(value: JsonValue, what: str) -> list[JsonValue]:
    if isinstance(value, list):
        return value
    raise _wrong(what, value)


def _str(value: JsonValue, what: str) -> str:
    if isinstance(value, str):
        return value
    raise _wrong(what, value)


def _optional_str(value: JsonValue, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _strings(value: JsonValue, what: str) -> tuple[str, ...]:
    return tuple(_str(v, what) for v in _list(value, what))


def _int(value: JsonValue, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _wrong(what, value)


def _float(value: JsonValue, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _wrong(what, value)


def _optional_float(value: JsonValue, what: str) -> float | None:
    return None if value is None else _float(value, what)
