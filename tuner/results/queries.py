"""Reading studies back: the list of studies, trial rows, the best trial, per-family comparisons.

Every function opens the stores named by `home`/`storage`/`tracking_uri` (as `search` does),
reads the Optuna store and returns plain dicts that the CLI renders as tables or JSON.
A trial's configuration comes from its `config` user attribute (plain names, the values it
trained with, fixed ones included), which is richer than Optuna's own `params`.
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tuner.errors import OpttuneError
from tuner.space.families import ALL_PARAM_NAMES
from tuner.space.searchspace import DEFAULTS_ATTR
from tuner.study.records import objective_of
from tuner.study.stores import Stores, redact, resolve_stores

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
SORTS = ("number", "value", "duration")
TRAINING_KEYS = ("batch_size", "epochs", "scheduler")  # config keys that are not the optimizer's


def open_study(name: str, *, home: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> tuple[Stores, Any]:
    """The resolved stores and the Optuna study `name` (a clear error lists known names)."""
    from tuner.study import records as studies
    from tuner.study.stores import open_storage

    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    storage_obj = open_storage(stores.storage_url, create=False)
    return stores, studies.load_study(storage_obj, name)


# -- studies ----------------------------------------------------------------------------------
def list_studies(*, home: str | Path | None = None, storage: str | None = None,
                 tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One summary per study in the store, by name; an absent SQLite store lists none."""
    from tuner.study import records as studies
    from tuner.study.stores import open_storage

    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    path = stores.sqlite_path
    if path is not None and not path.exists():
        return []
    storage_obj = open_storage(stores.storage_url, create=False)
    out = []
    for frozen in sorted(storage_obj.get_all_studies(), key=lambda s: s.study_name):
        trials = storage_obj.get_all_trials(frozen._study_id, deepcopy=False)
        attrs = frozen.user_attrs
        metric, direction = objective_of(frozen)
        best = studies.best_complete(trials, direction)
        times = [d for t in trials for d in (t.datetime_start, t.datetime_complete) if d]
        out.append({
            "study": frozen.study_name, "task": attrs.get("task"),
            "metric": metric, "direction": direction,
            "trials": len(trials), **_state_counts(trials),
            "budget": (attrs.get("settings") or {}).get("n_trials"),
            "best_value": best.value if best else None,
            "best_trial": best.number if best else None,
            "last_activity": _iso(max(times)) if times else None,
            "data_source": attrs.get("data_source"),
        })
    return out


def _state_counts(trials: list[Any]) -> dict[str, int]:
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed",
             "RUNNING": "running", "WAITING": "waiting"}
    return {label: sum(t.state.name == state for t in trials) for state, label in names.items()}


# -- trials -----------------------------------------------------------------------------------
def trial_record(t: Any, *, metric: str = "value") -> dict[str, Any]:
    """A stored trial as one plain record (see the module doc for where values come from)."""
    attrs = t.user_attrs
    config = dict(attrs.get("config") or t.params)
    optimizer = config.pop("optimizer", None)
    training = {k: config.pop(k, None) for k in TRAINING_KEYS}
    duration = attrs.get("seconds")
    if duration is None and t.datetime_start and t.datetime_complete:
        duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
    return {
        "number": t.number, "state": t.state.name, "value": t.value, "metric": metric,
        "optimizer": optimizer, "params": config, **training,
        "epochs_run": attrs.get("epochs_run", len(t.intermediate_values)),
        "seconds": duration, "started": _iso(t.datetime_start),
        "finished": _iso(t.datetime_complete), "run_id": attrs.get("mlflow_run_id"),
        "reason": attrs.get("prune_reason") or attrs.get("fail_reason"),
        "defaults_trial": bool(attrs.get(DEFAULTS_ATTR, False)),
        "retry_of": attrs.get("retry_of"),
        "intermediate": {int(k): v for k, v in sorted(t.intermediate_values.items())},
    }


def trial_rows(name: str, *, states: Sequence[str] | None = None, sort: str = "number",
               limit: int | None = None, home: str | Path | None = None,
               storage: str | None = None, tracking_uri: str | None = None
               ) -> list[dict[str, Any]]:
    """The trials of `name` as records, filtered by state, sorted, cut to `limit`.

    `sort`: number (ascending), value (best first, trials without a value last) or
    duration (longest first).
    """
    wanted = _check_states(states)
    if sort not in SORTS:
        raise OpttuneError(f"--sort must be one of {', '.join(SORTS)}, but got {sort!r}")
    if limit is not None and limit < 1:
        raise OpttuneError(f"--limit must be >= 1, but got {limit}")
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    rows = [trial_record(t, metric=metric) for t in study.get_trials(deepcopy=False)
            if not wanted or t.state.name in wanted]
    if sort == "value":
        sign = -1.0 if direction == "maximize" else 1.0
        rows.sort(key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0), r["number"]))
    elif sort == "duration":
        rows.sort(key=lambda r: (r["seconds"] is None, -(r["seconds"] or 0.0), r["number"]))
    return rows[:limit] if limit else rows


def _check_states(states: Sequence[str] | None) -> set[str]:
    aliases = {"FAILED": "FAIL", "DONE": "COMPLETE", "COMPLETED": "COMPLETE"}
    out = set()
    for text in states or ():
        for part in text.split(","):
            state = aliases.get(part.strip().upper(), part.strip().upper())
            if state not in STATES:
                raise OpttuneError("--state must be among complete, pruned, failed, running, "
                                   f"waiting, but got {part.strip()!r}")
            out.add(state)
    return out


def flat_record(record: dict[str, Any], *, epochs: int | None = None) -> dict[str, Any]:
    """A trial record with params and per-epoch values as columns (for CSV)."""
    flat = {k: v for k, v in record.items() if k not in ("params", "intermediate")}
    flat.update(record["params"])
    steps = epochs if epochs is not None else len(record["intermediate"])
    for step in range(steps):
        flat[f"{record['metric']}_epoch_{step + 1}"] = record["intermediate"].get(step)
    return flat


def csv_columns(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Flat rows and their column order: fixed columns, params in table order, epochs."""
    epochs = max((max(r["intermediate"], default=-1) + 1 for r in records), default=0)
    flats = [flat_record(r, epochs=epochs) for r in records]
    params = {k for r in records for k in r["params"]}
    ordered = [p for p in ALL_PARAM_NAMES if p in params] + sorted(params - set(ALL_PARAM_NAMES))
    head = ["number", "state", "value", "optimizer", *ordered, *TRAINING_KEYS]
    rest = [k for f in flats[:1] for k in f if k not in head and "_epoch_" not in k]
    tail = [k for k in (flats[0] if flats else {}) if "_epoch_" in k]
    return flats, head + rest + tail


# -- best -------------------------------------------------------------------------------------
def best_trial(name: str, *, home: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> dict[str, Any]:
    """The best complete trial: its record, and the command that runs exactly its config."""
    stores, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise OpttuneError(f"study {name!r} has no complete trial yet; run `opttune resume "
                           f"{name}` to finish some")
    best = study.best_trial  # Optuna's own pick, so the answer agrees with the store
    record = trial_record(best, metric=metric)
    return {"study": name, "direction": direction, "task": study.user_attrs.get("task"),
            **record, "command": rerun_command(name, study, record, home=home)}


def rerun_command(name: str, study: Any, record: dict[str, Any], *,
                  home: str | Path | None) -> str:
    """`opttune search …` that trains exactly `record`'s configuration as a one-trial study."""
    settings = study.user_attrs.get("settings") or {}
    task_params = _task_param_names(study)
    parts = ["opttune", "search", "--task", str(study.user_attrs.get("task")),
             "--study", f"{name}-best", "--optimizers", str(record["optimizer"])]
    for key, value in record["params"].items():
        if key in ALL_PARAM_NAMES:
            parts += [f"--{key.replace('_', '-')}", _exact(value)]
        elif key in task_params:
            parts += ["--param", f"{key}={_exact(value)}"]
    for key in TRAINING_KEYS:
        if record.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", _exact(record[key])]
    parts += ["--no-defaults", "--n-trials", "1"]
    if settings.get("seed") is not None:
        parts += ["--seed", str(settings["seed"])]
    if settings.get("device") not in (None, "auto"):
        parts += ["--device", str(settings["device"])]
    if settings.get("data_dir"):
        parts += ["--data-dir", str(settings["data_dir"])]
    if home is not None:
        parts += ["--home", str(Path(home).expanduser().resolve())]
    return shlex.join(parts)


def _task_param_names(study: Any) -> set[str]:
    import json

    space = study.user_attrs.get("space")
    return set(json.loads(space).get("task_params", {})) if space else set()


def _exact(value: Any) -> str:
    """The shortest text that reads back as exactly `value` (0.0 → 0, 1e-08 stays)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


# -- compare ----------------------------------------------------------------------------------
def compare(names: Sequence[str], *, by: str = "optimizer", home: str | Path | None = None,
            storage: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Per group (optimizer family, or `by`): trial counts, best, median, IQR, the
    PyTorch-defaults trial next to the tuned best, and mean trial time; one entry per study."""
    if not names:
        raise OpttuneError("compare needs at least one study name")
    out = []
    for name in names:
        _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
        metric, direction = objective_of(study)
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
        records = [trial_record(t, metric=metric) for t in trials]
        _check_by(name, by, study, records)
        groups: dict[Any, list[dict[str, Any]]] = {}
        for r in records:
            key = r["optimizer"] if by == "optimizer" else r.get(by, r["params"].get(by))
            groups.setdefault(key, []).append(r)
        order = _group_order(study, by, list(groups))
        out.append({"study": name, "task": study.user_attrs.get("task"), "metric": metric,
                    "direction": direction, "trials": len(records),
                    "groups": [_group_stats(by, key, groups[key], direction) for key in order]})
    return {"by": by, "studies": out}


def _check_by(name: str, by: str, study: Any, records: list[dict[str, Any]]) -> None:
    keys = {"optimizer", *TRAINING_KEYS} | {k for r in records for k in r["params"]}
    categorical = {"optimizer", *TRAINING_KEYS} | {
        k for r in records for k, v in r["params"].items() if not isinstance(v, float)}
    if by not in keys:
        raise OpttuneError(f"--by {by}: the trials of study {name!r} have no {by!r}; group by "
                           f"one of {', '.join(sorted(categorical))}")
    if by not in categorical:
        raise OpttuneError(f"--by {by}: {by} takes continuous values, so every trial would be "
                           f"its own group; group by a categorical: "
                           f"{', '.join(sorted(categorical))}")


def _group_order(study: Any, by: str, keys: list[Any]) -> list[Any]:
    if by == "optimizer" and "space" in study.user_attrs:
        import json

        families = list(json.loads(study.user_attrs["space"]).get("optimizers", {}))
        return sorted(keys, key=lambda k: (families.index(k) if k in families else
                                           len(families), str(k)))
    return sorted(keys, key=lambda k: (k is None, str(type(k)), k if k is not None else 0))


def _group_stats(by: str, key: Any, rows: list[dict[str, Any]], direction: str
                 ) -> dict[str, Any]:
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    values = sorted(r["value"] for r in complete)
    best = _best_record(complete, direction)
    q1, median, q3 = _quartiles(values)
    defaults = [r for r in rows if r["defaults_trial"]]
    default = _best_record([r for r in defaults if r["state"] == "COMPLETE"], direction) or \
        (defaults[0] if defaults else None)
    gain = None
    if best is not None and default is not None and default["value"] is not None \
            and default["state"] == "COMPLETE":
        gain = best["value"] - default["value"]
        gain = gain if direction == "maximize" else -gain
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None
               and r["state"] in ("COMPLETE", "PRUNED", "FAIL")]
    return {
        by: key, "trials": len(rows),
        **{s: sum(r["state"] == s.upper() for r in rows) for s in ("complete", "pruned")},
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "running": sum(r["state"] == "RUNNING" for r in rows),
        "best": best["value"] if best else None, "best_trial": best["number"] if best else None,
        "median": median, "q1": q1, "q3": q3,
        "iqr": None if q1 is None or q3 is None else q3 - q1,
        "default_value": default["value"] if default else None,
        "default_trial": default["number"] if default else None,
        "default_state": default["state"] if default else None,
        "gain_over_default": gain,
        "mean_seconds": statistics.fmean(seconds) if seconds else None,
    }


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(Q1, median, Q3) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _best_record(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    if not rows:
        return None
    return (max if direction == "maximize" else min)(rows, key=lambda r: r["value"])


# -- export -----------------------------------------------------------------------------------
def export_study(name: str, output: str | Path, *, home: str | Path | None = None,
                 storage: str | None = None, tracking_uri: str | None = None
                 ) -> dict[str, Any]:
    """Write every trial of `name` to `output` (.csv or .json: one record per trial)."""
    import csv
    import json

    path = Path(output).expanduser()
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise OpttuneError(f"-o must end in .csv or .json, but got {str(output)!r}")
    stores, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    records = [trial_record(t, metric=metric) for t in study.get_trials(deepcopy=False)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        document = {"study": name, "task": study.user_attrs.get("task"), "metric": metric,
                    "direction": direction, "storage": redact(stores.storage_url),
                    "trials": records}
        path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    else:
        flats, columns = csv_columns(records)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(flats)
    return {"study": name, "path": str(path.resolve()), "format": kind,
            "records": len(records)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None
