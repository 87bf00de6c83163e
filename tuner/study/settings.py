"""A study's settings and its MLflow ids: the two user attributes that `resume`, workers,
`opttune best`, retrain and `opttune check` read back, as typed records.

Both are stored as plain JSON dicts, and studies written by every earlier release must still
read: a key an older release did not write takes the value that release behaved by (no
`population`: 1; no `trial_seed`: none; no `tracking_uri_given`: not given). `to_attrs`
writes the keys the current release writes, in the same order, so that the study's parent
MLflow run logs the same params as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tuner.jsontypes import JsonValue, optional_text


@dataclass(frozen=True, kw_only=True)
class StudySettings:
    """How a study searches: the `settings` user attribute.

    `n_trials` is the budget every process works to (None only in a store that never had
    one); `device` may be overridden for one run (`resume --device`), as may `population`;
    `benchmark` and `benchmark_run_id` make the study one of a benchmark's searches.
    """

    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    trial_seed: int | None = None  # one seed for every trial (`opttune best`'s re-run)
    device: str = "auto"
    n_trials: int | None = None
    population: int = 1
    data_dir: str | None = None  # absolute, or None: the task's own data search
    benchmark: str | None = None
    benchmark_run_id: str | None = None

    def to_attrs(self) -> dict[str, str | int | None]:
        out: dict[str, str | int | None] = {
            "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
            "trial_seed": self.trial_seed, "device": self.device, "n_trials": self.n_trials,
            "population": self.population, "data_dir": self.data_dir}
        if self.benchmark is not None:  # only a benchmark's searches carry these keys
            out["benchmark"], out["benchmark_run_id"] = self.benchmark, self.benchmark_run_id
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, JsonValue] | None) -> StudySettings:
        """The settings stored as `attrs` (None or {}: a study opttune did not make)."""
        stored = attrs or {}
        return cls(
            sampler=str(stored.get("sampler", "tpe")), pruner=str(stored.get("pruner", "median")),
            seed=_optional_int(stored.get("seed")),
            trial_seed=_optional_int(stored.get("trial_seed")),
            device=str(stored.get("device") or "auto"),
            n_trials=_optional_int(stored.get("n_trials")),
            population=_optional_int(stored.get("population")) or 1,  # before populations: 1
            data_dir=optional_text(stored.get("data_dir") or None),
            benchmark=optional_text(stored.get("benchmark")),
            benchmark_run_id=optional_text(stored.get("benchmark_run_id")))


@dataclass(frozen=True, kw_only=True)
class MlflowIds:
    """Where a study's runs are: the `mlflow` user attribute.

    `tracking_uri` is stored redacted (a password shows as ***); `tracking_uri_given` says it
    was given with --tracking-uri, so that resume and workers log there rather than to the
    home's own store. It is stored as the string "true" or "false", as MLflow tags are.
    """

    experiment_id: str = ""
    parent_run_id: str = ""
    tracking_uri: str = ""
    tracking_uri_given: bool = False

    def to_attrs(self) -> dict[str, str]:
        return {"experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id,
                "tracking_uri": self.tracking_uri,
                "tracking_uri_given": str(self.tracking_uri_given).lower()}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, JsonValue] | None) -> MlflowIds:
        """The ids stored as `attrs` (None or {}: none, as in a study opttune did not make)."""
        stored = attrs or {}
        return cls(experiment_id=str(stored.get("experiment_id") or ""),
                   parent_run_id=str(stored.get("parent_run_id") or ""),
                   tracking_uri=str(stored.get("tracking_uri") or ""),
                   tracking_uri_given=stored.get("tracking_uri_given") == "true")


def _optional_int(value: JsonValue) -> int | None:
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise ValueError(f"not a whole number: {value!r}")
    return int(value)
