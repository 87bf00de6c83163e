"""The typed records that reading a study back returns, and the two shapes programs get them
in (JSON for ``--format json`` and exports, flat CSV rows). A single trial's record, and its
one reader, are tuner.study.trial_record's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tuner.jsontypes import JsonObject, JsonValue
from tuner.space.families import ALL_PARAM_NAMES
from tuner.study.direction import Direction
from tuner.study.trial_record import TRAINING_KEYS, State, TrialRecord

# How a field shows in JSON, as its `metadata`. Users' scripts read these documents, so their
# keys stay as they were when the records were plain dicts.
_JSON = "json"
HIDDEN: Mapping[str, str] = {_JSON: "hidden"}  # for people only (a title), not in the JSON
INLINE: Mapping[str, str] = {_JSON: "inline"}  # the nested record's keys sit beside our own
WHOLE: Mapping[str, str] = {_JSON: "whole"}  # the document is this field alone (a list)


def named_by(other: str) -> Mapping[str, str]:
    """The field's JSON key is the value of the field `other` (e.g. ``"optimizer": "adam"``)."""
    return {_JSON: "named_by", "field": other}


@dataclass(frozen=True)
class TrialList:
    """The trials of one study that `opttune trials` shows (JSON: the list alone)."""

    study: str = field(metadata=HIDDEN)
    metric: str = field(metadata=HIDDEN)
    trials: list[TrialRecord] = field(metadata=WHOLE)


@dataclass(frozen=True)
class StudyTrials:
    """Every trial of a study with what they are measured by: the JSON export document."""

    study: str
    task: str | None
    metric: str
    direction: Direction
    storage: str  # redacted
    trials: list[TrialRecord]


# -- studies ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudySummary:
    """One study of a store, at a glance."""

    study: str
    task: str | None
    metric: str
    direction: Direction
    trials: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    budget: int | None  # the study's n_trials
    best_value: float | None
    best_trial: int | None
    last_activity: str | None  # ISO 8601, to the second
    data_source: str | None


@dataclass(frozen=True)
class StudyList:
    """The studies of a store (JSON: the list alone)."""

    storage: str = field(metadata=HIDDEN)  # redacted, for the title
    studies: list[StudySummary] = field(metadata=WHOLE)


@dataclass(frozen=True)
class BestTrial:
    """The best trial of a study, and the command that trains exactly its configuration."""

    study: str
    direction: Direction
    task: str | None
    trial: TrialRecord = field(metadata=INLINE)
    command: str


# -- comparisons ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupStats:
    """The trials of one group (an optimizer family, or one value of `by`) of one study."""

    by: str = field(metadata=HIDDEN)
    key: JsonValue = field(metadata=named_by("by"))  # the group's value of `by`
    trials: int
    complete: int
    pruned: int
    failed: int
    running: int
    best: float | None
    best_trial: int | None
    median: float | None  # of the finite values of complete trials, as are q1, q3 and iqr
    q1: float | None
    q3: float | None
    iqr: float | None
    default_value: float | None  # the group's PyTorch-defaults trial
    default_trial: int | None
    default_state: State | None
    gain_over_default: float | None  # how much the best beat the defaults (> 0: better)
    no_gain_reason: str | None  # why gain_over_default is None (None when there is a gain)
    mean_seconds: float | None  # of finished trials


@dataclass(frozen=True)
class StudyComparison:
    study: str
    task: str | None
    metric: str
    direction: Direction
    trials: int
    groups: list[GroupStats]


@dataclass(frozen=True)
class Comparison:
    """`opttune compare`: per group of each study, lined up by `by`."""

    by: str
    studies: list[StudyComparison]


@dataclass(frozen=True)
class SearchSummary:
    """What the end of a search shows about the whole study."""

    study: str
    metric: str
    direction: Direction
    trials: int  # every trial that ran or runs (not those still waiting)
    best: TrialRecord | None
    top: list[TrialRecord]  # the best complete trials, best first
    families: list[GroupStats]  # per optimizer family, in the space's order
    endings: list[str]  # how most trials ended (a reason, or a state)


# -- files and tasks --------------------------------------------------------------------------
@dataclass(frozen=True)
class WrittenFile:
    """A file that a command wrote: a plot (`kind`), or an export of `records` trials."""

    study: str
    path: Path  # absolute
    format: str  # html, png, svg, pdf, csv or json
    kind: str  # the plot's kind, or "trials"
    records: int | None = None


@dataclass(frozen=True)
class TaskSummary:
    """One task that `opttune tasks` lists."""

    name: str
    ref: str
    summary: str
    data: str
    model: str
    parameters: int | None  # of its model, with the task hyperparameters' defaults
    hyperparams: dict[str, str]  # name → its search-space string (Task.hyperparams)
    metric: str
    direction: Direction


# -- the shapes programs read -----------------------------------------------------------------
def to_json_data(obj: object) -> JsonValue:
    """`obj` (a record, a list of them, or plain data) as plain JSON data: the one place that
    shapes ``--format json`` and the JSON export. Keys and values JSON has no type for become
    the text ``json.dumps(..., default=str)`` would write for them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: JsonObject = {}
        for f in dataclasses.fields(obj):
            how = f.metadata.get(_JSON)
            value = getattr(obj, f.name)
            if how == "whole":
                return to_json_data(value)
            if how == "inline":
                out.update(json_object(value))
            elif how == "named_by":
                out[str(getattr(obj, f.metadata["field"]))] = to_json_data(value)
            elif how != "hidden":
                out[f.name] = to_json_data(value)
        return out
    if isinstance(obj, Mapping):
        return {_json_key(k): to_json_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_data(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)  # a Path, a datetime: as json.dumps(default=str) writes it


def json_object(obj: object) -> JsonObject:
    """:func:`to_json_data` of a record: a JSON object (a TypeError for anything else)."""
    data = to_json_data(obj)
    if not isinstance(data, dict):
        raise TypeError(f"{type(obj).__name__} is not a JSON object but {type(data).__name__}")
    return data


def _json_key(key: object) -> str:
    """A mapping's key as JSON writes it (1 → "1", None → "null")."""
    return key if isinstance(key, str) else json.dumps(key, default=str)


def to_csv_rows(records: Sequence[TrialRecord]) -> tuple[list[JsonObject], list[str]]:
    """Flat rows (params and per-epoch values as columns) and their column order: fixed
    columns, params in table order, then one column per epoch."""
    epochs = max((max(r.intermediate, default=-1) + 1 for r in records), default=0)
    flats = [_flat(r, epochs=epochs) for r in records]
    params = {k for r in records for k in r.params}
    ordered = [p for p in ALL_PARAM_NAMES if p in params] + sorted(params - set(ALL_PARAM_NAMES))
    head = ["number", "state", "value", "optimizer", *ordered, *TRAINING_KEYS]
    rest = [k for f in flats[:1] for k in f if k not in head and "_epoch_" not in k]
    tail = [k for k in (flats[0] if flats else {}) if "_epoch_" in k]
    return flats, head + rest + tail


def _flat(record: TrialRecord, *, epochs: int) -> JsonObject:
    flat = {k: v for k, v in json_object(record).items() if k not in ("params", "intermediate")}
    flat.update(record.params)
    for step in range(epochs):
        flat[f"{record.metric}_epoch_{step + 1}"] = record.intermediate.get(step)
    return flat
