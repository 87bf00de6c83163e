"""Writing every trial of a study to a file: CSV (one flat row per trial) or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tuner.errors import OpttuneError
from tuner.results.queries import open_study
from tuner.results.summaries import StudyTrials, WrittenFile, to_csv_rows, to_json_data
from tuner.study.locations import redact
from tuner.study.meta import objective_of, task_of
from tuner.study.trial_record import read_trial


def export_study(name: str, output: str | Path, *, home: str | Path | None = None,
                 storage: str | None = None, tracking_uri: str | None = None) -> WrittenFile:
    """Write every trial of `name` to `output` (.csv or .json: one record per trial)."""
    path = Path(output).expanduser()
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise OpttuneError(f"-o must end in .csv or .json, but got {str(output)!r}")
    stores, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, direction = objective_of(study)
    records = [read_trial(t, metric=metric) for t in study.get_trials(deepcopy=False)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        document = StudyTrials(study=name, task=task_of(study), metric=metric,
                               direction=direction, storage=redact(stores.storage_url),
                               trials=records)
        path.write_text(json.dumps(to_json_data(document), indent=2, default=str) + "\n",
                        encoding="utf-8")
    else:
        rows, columns = to_csv_rows(records)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return WrittenFile(study=name, path=path.resolve(), format=kind, kind="trials",
                       records=len(records))
