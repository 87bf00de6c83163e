"""What a study stores about itself: everything `resume` and `worker` need (the task, the
space, the data source, the objective, the settings and the MLflow ids), in the study's user
attributes. Their keys are spelled here only; trials' attributes are tuner.study.trial_attrs'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tuner._version import __version__
from tuner.errors import OpttuneError, StoreError
from tuner.jsontypes import JsonObject, JsonValue, optional_text
from tuner.space.searchspace import Space
from tuner.study.direction import Direction, as_direction
from tuner.study.locations import sqlite_path
from tuner.study.settings import MlflowIds, StudySettings

if TYPE_CHECKING:
    import optuna
    from optuna.study import StudyDirection

TASK_ATTR = "task"
SPACE_ATTR = "space"  # JSON text: its key order is the choice order
DATA_SOURCE_ATTR = "data_source"
OBJECTIVE_ATTR = "objective"  # {"metric": ..., "direction": ...}
SETTINGS_ATTR = "settings"  # StudySettings (a benchmark's record: its own settings)
MLFLOW_ATTR = "mlflow"  # MlflowIds (a benchmark's record: its experiment and run)
VERSION_ATTR = "opttune_version"
KIND_ATTR = "kind"  # "benchmark" on a benchmark's record (a study with no trials of its own)
BENCHMARK_KIND = "benchmark"


class StoredStudy(Protocol):
    """A study as its attributes are read: an ``optuna.Study``, or the ``FrozenStudy`` that a
    storage lists (without loading each study)."""

    @property
    def user_attrs(self) -> dict[str, JsonValue]: ...

    @property
    def direction(self) -> StudyDirection: ...


@dataclass(frozen=True)
class StudyMeta:
    """What a study stores about itself."""

    task: str
    space: Space
    data_source: str
    metric: str
    direction: Direction
    settings: StudySettings
    mlflow: MlflowIds

    def to_attrs(self) -> JsonObject:
        return {
            TASK_ATTR: self.task,
            SPACE_ATTR: space_attr(self.space),
            DATA_SOURCE_ATTR: self.data_source,
            OBJECTIVE_ATTR: {"metric": self.metric, "direction": self.direction},
            SETTINGS_ATTR: {**self.settings.to_attrs()},
            MLFLOW_ATTR: {**self.mlflow.to_attrs()},
            VERSION_ATTR: __version__,
        }

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyMeta:
        attrs = study.user_attrs
        if is_benchmark(study):
            raise OpttuneError(f"{study.study_name!r} is a benchmark, not a study: run its "
                               f"`opttune benchmark` command again to continue it; its searches "
                               f"are the studies {study.study_name}.FAMILY")
        missing = [k for k in (TASK_ATTR, SPACE_ATTR, DATA_SOURCE_ATTR) if k not in attrs]
        if missing:
            raise OpttuneError(f"study {study.study_name!r} was not made by opttune (no "
                               f"{', '.join(missing)} attribute); it cannot be resumed here")
        metric, direction = objective_of(study)
        return cls(task=attrs[TASK_ATTR], space=Space.from_dict(json.loads(attrs[SPACE_ATTR])),
                   data_source=attrs[DATA_SOURCE_ATTR], metric=metric, direction=direction,
                   settings=settings_of(study), mlflow=mlflow_ids_of(study))


# -- one attribute at a time (also of studies opttune did not make) ---------------------------
def objective_of(study: StoredStudy) -> tuple[str, Direction]:
    """(metric, direction) of a study: as stored by opttune, else Optuna's direction and the
    metric named "value" (a study opttune did not make)."""
    objective = _json_object(study.user_attrs.get(OBJECTIVE_ATTR)) or {}
    direction = objective.get("direction") or study.direction.name.lower()
    return str(objective.get("metric", "value")), as_direction(str(direction))


def space_of(study: StoredStudy) -> Space | None:
    """The search space stored with the study; None for a study opttune did not make."""
    stored = study.user_attrs.get(SPACE_ATTR)  # JSON text (see SPACE_ATTR)
    return Space.from_dict(json.loads(stored)) if isinstance(stored, str) and stored else None


def space_attr(space: Space) -> str:
    return json.dumps(space.to_dict())


def task_of(study: StoredStudy) -> str | None:
    return optional_text(study.user_attrs.get(TASK_ATTR))


def data_source_of(study: StoredStudy) -> str | None:
    return optional_text(study.user_attrs.get(DATA_SOURCE_ATTR))


def settings_of(study: StoredStudy) -> StudySettings:
    return StudySettings.from_attrs(_json_object(study.user_attrs.get(SETTINGS_ATTR)))


def mlflow_ids_of(study: StoredStudy) -> MlflowIds:
    return MlflowIds.from_attrs(_json_object(study.user_attrs.get(MLFLOW_ATTR)))


def _json_object(stored: JsonValue) -> JsonObject | None:
    """A stored attribute that opttune writes as a JSON object (None: absent, or not one)."""
    return stored if isinstance(stored, dict) else None


def is_benchmark(study: StoredStudy) -> bool:
    return bool(study.user_attrs.get(KIND_ATTR) == BENCHMARK_KIND)


def set_space(study: optuna.Study, space: Space) -> None:
    study.set_user_attr(SPACE_ATTR, space_attr(space))


def set_settings(study: optuna.Study, settings: StudySettings) -> None:
    study.set_user_attr(SETTINGS_ATTR, settings.to_attrs())


def set_mlflow_ids(study: optuna.Study, ids: MlflowIds) -> None:
    study.set_user_attr(MLFLOW_ATTR, ids.to_attrs())


# -- where its runs go ------------------------------------------------------------------------
def study_tracking_uri(name: str, meta: StudyMeta, given: str | None, *,
                       always: bool = False) -> str | None:
    """The MLflow store a command on study `name` logs to: `given` (--tracking-uri), else the
    one the study was made with when that was given explicitly then (or `always`: a worker on
    another machine has no home of the study's), so that resume, workers and retrain never
    log elsewhere. None: the home's own store, as for a study made without --tracking-uri (a
    copied home logs to its copy), or when the stored one is an SQLite file that is gone.
    A stored URI with a password was stored masked."""
    if given is not None:
        return given
    if not (always or meta.mlflow.tracking_uri_given):
        return None
    stored = meta.mlflow.tracking_uri
    path = sqlite_path(stored)
    if path is not None and not path.exists():
        return None
    if "***" in stored:
        raise StoreError(f"study {name!r} logs to the MLflow store {stored}, whose password "
                         f"is not stored; give it with --tracking-uri")
    return stored or None
