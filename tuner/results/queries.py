"""Reading studies back: the studies of a store, a study's trials, its best trial, per-group
comparisons, the summary a search ends with, and the tasks there are to tune.

Every function opens the stores named by `home`/`storage`/`tracking_uri` (as `search` does),
reads the Optuna store and returns the typed records of :mod:`tuner.results.summaries`, which the
CLI renders as tables or JSON. Whichever trial is "best" is :func:`best_complete`'s pick: a
complete trial with a finite value.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonValue
from tuner.results.summaries import (
    BestTrial,
    Comparison,
    GroupStats,
    SearchSummary,
    StudyComparison,
    StudyList,
    StudySummary,
    TrialList,
)
from tuner.space.families import ALL_PARAM_NAMES
from tuner.study import optuna_adapter
from tuner.study.direction import Direction, improvement, sign
from tuner.study.locations import Stores, redact, resolve_stores
from tuner.study.meta import (
    data_source_of,
    objective_of,
    settings_of,
    space_of,
    task_of,
)
from tuner.study.stores import open_storage
from tuner.study.studies import best_complete, load_study
from tuner.study.trial_record import (
    STATES,
    TRAINING_KEYS,
    State,
    TrialRecord,
    iso,
    read_trial,
)
from tuner.training.seeds import trial_seed

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.space.searchspace import Space

SORTS = ("number", "value", "duration")
_Member: TypeAlias = "tuple[FrozenTrial, TrialRecord]"  # a trial, and its record


def open_study(name: str, *, home: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> tuple[Stores, optuna.Study]:
    """The resolved stores and the Optuna study `name` (a clear error lists known names)."""
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    storage_obj = open_storage(stores.storage_url, create=False)
    return stores, load_study(storage_obj, name)


# -- studies ----------------------------------------------------------------------------------
def list_studies(*, home: str | Path | None = None, storage: str | None = None,
                 tracking_uri: str | None = None) -> StudyList:
    """One summary per study in the store, by name; an absent SQLite store lists none."""
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    label = redact(stores.storage_url)
    path = stores.sqlite_path
    if path is not None and not path.exists():
        return StudyList(storage=label, studies=[])  # looking creates no store
    storage_obj = open_storage(stores.storage_url, create=False)
    out = []
    for frozen in sorted(storage_obj.get_all_studies(), key=lambda s: s.study_name):
        trials = storage_obj.get_all_trials(optuna_adapter.study_id(frozen), deepcopy=False)
        metric, direction = objective_of(frozen)
        best = best_complete(trials, direction)
        counts = _state_counts(trials)
        times = [d for t in trials for d in (t.datetime_start, t.datetime_complete) if d]
        out.append(StudySummary(
            study=frozen.study_name, task=task_of(frozen), metric=metric,
            direction=direction, trials=len(trials), complete=counts["COMPLETE"],
            pruned=counts["PRUNED"], failed=counts["FAIL"], running=counts["RUNNING"],
            waiting=counts["WAITING"], budget=settings_of(frozen).n_trials,
            best_value=best.value if best else None, best_trial=best.number if best else None,
            last_activity=iso(max(times)) if times else None,
            data_source=data_source_of(frozen)))
    return StudyList(storage=label, studies=out)


def _state_counts(trials: Sequence[FrozenTrial]) -> dict[State, int]:
    return {state: sum(t.state.name == state for t in trials) for state in STATES}


# -- trials -----------------------------------------------------------------------------------
def list_trials(name: str, *, states: Sequence[str] | None = None, sort: str = "number",
                limit: int | None = None, home: str | Path | None = None,
                storage: str | None = None, tracking_uri: str | None = None) -> TrialList:
    """The trials of `name`, filtered by state, sorted, cut to `limit`.

    `sort`: number (ascending), value (best first, trials without a finite value last) or
    duration (longest first).
    """
    wanted = _check_states(states)
    if sort not in SORTS:
        raise OpttuneError(f"--sort must be one of {', '.join(SORTS)}, but got {sort!r}")
    if limit is not None and limit < 1:
        raise OpttuneError(f"--limit must be >= 1, but got {limit}")
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    rows = [read_trial(t, metric=metric) for t in study.get_trials(deepcopy=False)
            if not wanted or t.state.name in wanted]
    if sort == "value":
        lower_first = -sign(direction)  # best first, whichever way the objective goes

        def rank(r: TrialRecord) -> tuple[bool, float, int]:
            finite = r.value is not None and math.isfinite(r.value)
            return not finite, lower_first * float(r.value or 0.0) if finite else 0.0, r.number

        rows.sort(key=rank)
    elif sort == "duration":
        rows.sort(key=lambda r: (r.seconds is None, -(r.seconds or 0.0), r.number))
    return TrialList(study=name, metric=metric, trials=rows[:limit] if limit else rows)


def _check_states(states: Sequence[str] | None) -> set[State]:
    names: dict[str, State] = {"FAILED": "FAIL", "DONE": "COMPLETE", "COMPLETED": "COMPLETE",
                               **{s: s for s in STATES}}
    out = set()
    for text in states or ():
        for part in text.split(","):
            state = names.get(part.strip().upper())
            if state is None:
                raise OpttuneError("--state must be among complete, pruned, failed, running, "
                                   f"waiting, but got {part.strip()!r}")
            out.add(state)
    return out


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# -- best -------------------------------------------------------------------------------------
def best_trial(name: str, *, home: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> BestTrial:
    """The best trial (:func:`best_complete`), and the command that runs exactly its config."""
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    trials = study.get_trials(deepcopy=False)
    best = best_complete(trials, direction)
    if best is None:
        raise OpttuneError(no_best_reason(name, trials, metric=metric))
    record = read_trial(best, metric=metric)
    return BestTrial(study=name, direction=direction, task=task_of(study),
                     trial=record, command=rerun_command(name, study, record, home=home))


def no_best_reason(name: str, trials: Sequence[FrozenTrial], *, metric: str) -> str:
    """Why study `name` has no best trial, and what to do about it."""
    if any(t.state.name == "COMPLETE" for t in trials):
        return (f"no complete trial of study {name!r} has a finite {metric} (every one ended "
                f"inf or NaN); widen or move the ranges, then run `opttune resume {name}`")
    return f"study {name!r} has no complete trial yet; run `opttune resume {name}` to finish some"


def rerun_command(name: str, study: optuna.Study, record: TrialRecord, *,
                  home: str | Path | None) -> str:
    """`opttune search …` that trains exactly `record`'s configuration, with its seed, as a
    one-trial study: on the same device it reproduces the trial's value."""
    settings = settings_of(study)
    space = space_of(study)
    task_params = set(space.task_params) if space else set()
    parts = ["opttune", "search", "--task", str(task_of(study)),
             "--study", f"{name}-best", "--optimizers", str(record.optimizer)]
    for key, value in record.params.items():
        if key in ALL_PARAM_NAMES:
            parts += [f"--{key.replace('_', '-')}", _exact(value)]
        elif key in task_params:
            parts += ["--param", f"{key}={_exact(value)}"]
    for key in TRAINING_KEYS:
        value = getattr(record, key)
        if value is not None:
            parts += [f"--{key.replace('_', '-')}", _exact(value)]
    # The trial's own seed, pinned: a one-trial study would otherwise seed its trial 0.
    parts += ["--no-defaults", "--n-trials", "1", "--trial-seed",
              str(trial_seed(record.number, seed=settings.seed, pinned=settings.trial_seed))]
    if settings.device != "auto":
        parts += ["--device", settings.device]
    if settings.data_dir:
        parts += ["--data-dir", settings.data_dir]
    if home is not None:
        parts += ["--home", str(Path(home).expanduser().resolve())]
    return shlex.join(parts)


def _exact(value: object) -> str:
    """The shortest text that reads back as exactly `value` (0.0 → 0, 1e-08 stays)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


# -- compare ----------------------------------------------------------------------------------
def compare(names: Sequence[str], *, by: str = "optimizer", home: str | Path | None = None,
            storage: str | None = None, tracking_uri: str | None = None) -> Comparison:
    """Per group (optimizer family, or `by`): trial counts, best, median, IQR, the
    PyTorch-defaults trial next to the tuned best, and mean trial time; one entry per study."""
    if not names:
        raise OpttuneError("compare needs at least one study name")
    out = []
    for name in names:
        _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
        metric, direction = objective_of(study)
        members = _members(study, metric=metric)
        out.append(StudyComparison(
            study=name, task=task_of(study), metric=metric, direction=direction,
            trials=len(members),
            groups=_group_stats(name, members, by=by, direction=direction,
                                space=space_of(study))))
    return Comparison(by=by, studies=out)


def _members(study: optuna.Study, *, metric: str) -> list[_Member]:
    """Every trial that ran or runs (not those still waiting), with its record."""
    return [(t, read_trial(t, metric=metric)) for t in study.get_trials(deepcopy=False)
            if t.state.name != "WAITING"]


def _group_stats(name: str, members: list[_Member], *, by: str, direction: Direction,
                 space: Space | None) -> list[GroupStats]:
    """One GroupStats per value of `by`: families in the space's order, others sorted."""
    _check_by(name, by, [r for _, r in members])
    families = list(space.families) if space else []
    groups: dict[JsonValue, list[_Member]] = {}
    for t, r in members:
        key = r.optimizer if by == "optimizer" else \
            getattr(r, by) if by in TRAINING_KEYS else r.params.get(by)
        groups.setdefault(key, []).append((t, r))
    if by == "optimizer" and families:
        order = sorted(groups, key=lambda k: (families.index(k) if k in families else
                                              len(families), str(k)))
    else:
        order = sorted(groups, key=lambda k: (k is None, str(type(k)),
                                              k if k is not None else 0))
    return [_one_group(by, key, groups[key], direction, space=space) for key in order]


def _check_by(name: str, by: str, records: list[TrialRecord]) -> None:
    keys = {"optimizer", *TRAINING_KEYS} | {k for r in records for k in r.params}
    categorical = {"optimizer", *TRAINING_KEYS} | {
        k for r in records for k, v in r.params.items() if not isinstance(v, float)}
    if by not in keys:
        raise OpttuneError(f"--by {by}: the trials of study {name!r} have no {by!r}; group by "
                           f"one of {', '.join(sorted(categorical))}")
    if by not in categorical:
        raise OpttuneError(f"--by {by}: {by} takes continuous values, so every trial would be "
                           f"its own group; group by a categorical: "
                           f"{', '.join(sorted(categorical))}")


def _no_gain_reason(by: str, key: JsonValue, default: TrialRecord | None, best: float | None,
                    space: Space | None) -> str | None:
    """Why a group shows no gain over its defaults trial (None: it shows one)."""
    if default is not None:
        if default.state != "COMPLETE":
            return f"its defaults trial #{default.number} was {default.state.lower()}"
        return None if best is not None else "no complete trial"
    if by != "optimizer":
        return "no defaults trial in this group"
    if space is not None and not space.defaults_first:
        return "the study skipped the defaults trials (--no-defaults)"
    if space is not None and isinstance(key, str) and key in space.families \
            and space.defaults_excluded(key):
        return (f"the space leaves out its default {', '.join(space.defaults_excluded(key))}, "
                f"so no trial ran its PyTorch defaults")
    return "its defaults trial has not run yet"


def _one_group(by: str, key: JsonValue, members: list[_Member], direction: Direction, *,
               space: Space | None = None) -> GroupStats:
    records = {r.number: r for _, r in members}
    best = best_complete([t for t, _ in members], direction)
    # The spread is over the values the best is chosen from: complete and finite.
    values = sorted(r.value for r in records.values()
                    if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value))
    q1, median, q3 = _quartiles(values)
    defaults = [t for t, r in members if r.defaults_trial]
    pick = best_complete(defaults, direction) or (defaults[0] if defaults else None)
    default = None if pick is None else records[pick.number]
    best_value = None if best is None else best.value
    gain = None
    if best_value is not None and default is not None and default.state == "COMPLETE" \
            and default.value is not None and math.isfinite(default.value):
        gain = improvement(best_value, default.value, direction)
    seconds = [r.seconds for r in records.values() if r.seconds is not None
               and r.state in ("COMPLETE", "PRUNED", "FAIL")]
    counts = {s: sum(r.state == s for r in records.values()) for s in STATES}
    return GroupStats(
        by=by, key=key, trials=len(records), complete=counts["COMPLETE"],
        pruned=counts["PRUNED"], failed=counts["FAIL"], running=counts["RUNNING"],
        best=best_value, best_trial=None if best is None else best.number,
        median=median, q1=q1, q3=q3, iqr=None if q1 is None or q3 is None else q3 - q1,
        default_value=default.value if default else None,
        default_trial=default.number if default else None,
        default_state=default.state if default else None, gain_over_default=gain,
        no_gain_reason=None if gain is not None else _no_gain_reason(by, key, default,
                                                                      best_value, space),
        mean_seconds=statistics.fmean(seconds) if seconds else None)


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(Q1, median, Q3) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


# -- the end of a search ----------------------------------------------------------------------
def search_summary(name: str, *, top: int = 5, home: str | Path | None = None,
                   storage: str | None = None, tracking_uri: str | None = None
                   ) -> SearchSummary:
    """The whole study after a search: its best trial, the `top` best complete trials, the
    per-family numbers of :func:`compare`, and how most trials ended."""
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    members = _members(study, metric=metric)
    best = best_complete([t for t, _ in members], direction)
    ranked = sorted((r for _, r in members if r.state == "COMPLETE" and _finite(r.value)),
                    key=lambda r: -sign(direction) * float(r.value or 0.0))
    return SearchSummary(
        study=name, metric=metric, direction=direction, trials=len(members),
        best=None if best is None else next(r for t, r in members if t is best),
        top=ranked[:top],
        families=_group_stats(name, members, by="optimizer", direction=direction,
                              space=space_of(study)),
        endings=statistics.multimode(r.reason or r.state.lower() for _, r in members))
