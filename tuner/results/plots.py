"""Plots of a study: .html (interactive, plotly) or .png/.svg/.pdf (static, matplotlib).

The kinds are Optuna's own views (optimization history, parameter importances, parallel
coordinates, slice, contour) plus `curves`: the per-epoch validation values of the best trial
of each optimizer family on one chart. Nothing here needs a browser or a display. When a
search ends, :func:`log_study_plots` puts the quick ones on the study's MLflow parent run.
This module checks a request and picks the data; :mod:`tuner.results.figures` draws (it loads
plotly and matplotlib, so only once there is something to draw).
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject
from tuner.results.queries import open_study
from tuner.results.summaries import WrittenFile
from tuner.study.direction import best_of
from tuner.study.meta import objective_of
from tuner.study.studies import best_complete
from tuner.study.trial_record import read_trial

if TYPE_CHECKING:
    from tuner.results.figures import Curve
    from tuner.study.tracker import Tracker

KINDS = ("history", "importance", "parallel", "slice", "contour", "curves")
STATIC_SUFFIXES = (".png", ".svg", ".pdf")
HTML_SUFFIXES = (".html", ".htm")
ARTIFACT_KINDS = ("history", "curves", "parallel", "slice")  # fast enough for every search


def write_plot(name: str, *, kind: str, output: str | Path,
               params: Sequence[str] | None = None, home: str | Path | None = None,
               storage: str | None = None, tracking_uri: str | None = None) -> WrittenFile:
    """Draw `kind` for study `name` into `output`; its suffix picks HTML or a static image."""
    path = Path(output).expanduser()
    suffix = path.suffix.lower()
    if kind not in KINDS:
        raise OpttuneError(f"--kind must be one of {', '.join(KINDS)}, but got {kind!r}")
    if suffix not in HTML_SUFFIXES + STATIC_SUFFIXES:
        raise OpttuneError(f"-o must end in .html (interactive) or .png, .svg or .pdf (static), "
                           f"but got {str(output)!r}")
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, _ = objective_of(study)
    checked = _check(study, kind, params)  # before the drawing libraries load: a quick refusal
    curves = best_curves(study) if kind == "curves" else []
    path.parent.mkdir(parents=True, exist_ok=True)
    from tuner.results import figures  # noqa: PLC0415  (heavy plotting; every search imports plots)

    if suffix in HTML_SUFFIXES:
        figure = figures.plotly_figure(study, kind, metric=metric, params=checked, curves=curves)
        figure.write_html(str(path), include_plotlyjs=True, full_html=True)
    else:
        figures.save_static(figures.matplotlib_figure(study, kind, metric=metric, params=checked,
                                                      curves=curves), path)
    return WrittenFile(study=name, path=path.resolve(), format=suffix.lstrip("."), kind=kind)


def _check(study: optuna.Study, kind: str, params: Sequence[str] | None) -> list[str] | None:
    """Clear errors for what Optuna would draw as an empty chart or refuse cryptically."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    need = 2 if kind == "importance" else 1
    if kind != "curves" and len(complete) < need:
        raise OpttuneError(f"the {kind} plot needs at least {need} complete trial"
                           f"{'s' if need > 1 else ''}, but study {study.study_name!r} has "
                           f"{len(complete)}; run `opttune resume {study.study_name}` first")
    if kind == "curves" and not any(t.intermediate_values for t in trials):
        raise OpttuneError(f"study {study.study_name!r} has no trial with per-epoch values yet")
    known = {p for t in complete for p in t.params}
    if params:
        unknown = [p for p in params if p not in known]
        if unknown:
            raise OpttuneError(f"--params {','.join(unknown)}: the study's trials have no such "
                               f"parameter; they have {', '.join(sorted(known))}")
        return list(params)
    if kind == "contour":
        numeric = [p for p in _by_frequency(complete) if p != "optimizer"]
        if len(numeric) < 2:
            raise OpttuneError(f"the contour plot needs two searched parameters, but study "
                               f"{study.study_name!r} searches {', '.join(numeric) or 'none'}")
        return numeric[:2]  # a grid of every pair is slow and unreadable; --params picks
    return None


def _by_frequency(trials: list[FrozenTrial]) -> list[str]:
    """Parameter names, most used first (lr before all others when tied)."""
    counts: dict[str, int] = {}
    for t in trials:
        for p in t.params:
            counts[p] = counts.get(p, 0) + 1
    return sorted(counts, key=lambda p: (-counts[p], p != "lr", p))


def best_curves(study: optuna.Study) -> list[Curve]:
    """(label, epochs, values) for the best trial of each family: :func:`best_complete`'s pick,
    or, for a family without one, the trial with the best last value (labelled with its
    state)."""
    _, direction = objective_of(study)
    families: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.intermediate_values:
            families.setdefault(str(read_trial(t).optimizer or "trial"), []).append(t)
    out: list[Curve] = []
    for family, trials in families.items():
        t = best_complete(trials, direction) or best_of(
            trials, key=lambda t: t.intermediate_values[max(t.intermediate_values)],
            direction=direction)
        steps = sorted(t.intermediate_values)
        state = "" if t.state.name == "COMPLETE" else f", {t.state.name.lower()}"
        out.append((f"{family} (trial {t.number}{state})", [s + 1 for s in steps],
                    [t.intermediate_values[s] for s in steps]))
    return out


# -- at the end of a search -------------------------------------------------------------------
# What drawing them imports (about 1.5 s): the tracker's process does it while trials train.
PLOT_MODULES = ("tuner.results.figures",)


@dataclass(frozen=True)
class StudySnapshot:
    """What the plots read of a study, as plain data for the tracker's process."""

    name: str
    direction: StudyDirection
    user_attrs: JsonObject
    trials: list[FrozenTrial]  # the finished ones

    @classmethod
    def of(cls, study: optuna.Study) -> StudySnapshot:
        finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        return cls(study.study_name, study.direction, dict(study.user_attrs),
                   finished)

    def study(self) -> optuna.Study:
        """An in-memory study holding the same trials."""
        study = optuna.create_study(study_name=self.name, direction=self.direction)
        for key, value in self.user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trials(self.trials)
        return study


def log_snapshot_plots(tracker: Tracker, snapshot: StudySnapshot, *, run_id: str) -> list[str]:
    """:func:`log_study_plots` of a snapshot: what a search runs where its tracker lives."""
    return log_study_plots(snapshot.study(), tracker=tracker, run_id=run_id)


def log_study_plots(study: optuna.Study, *, tracker: Tracker, run_id: str) -> list[str]:
    """Put one self-contained HTML page of the quick plots on the study's parent run.

    Returns the kinds drawn. A kind that cannot be drawn is left out; a study with fewer
    than two complete trials gets none (there is nothing to see yet).
    """
    complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    if complete < 2:
        return []
    from tuner.results import figures  # noqa: PLC0415  (heavy plotting; every search imports plots)

    metric, _ = objective_of(study)
    parts: list[str] = []
    drawn: list[str] = []
    for kind in ARTIFACT_KINDS:
        try:
            figure = figures.plotly_figure(
                study, kind, metric=metric, params=_check(study, kind, None),
                curves=best_curves(study) if kind == "curves" else [])
        except Exception:  # a plot is a nicety: never let it cost the search
            continue
        parts.append(figure.to_html(include_plotlyjs=not parts, full_html=False))
        drawn.append(kind)
    if not parts:
        return []
    title = html.escape(f"{study.study_name} plots")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body>{''.join(parts)}</body></html>")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study_plots.html"
        path.write_text(page, encoding="utf-8")
        tracker.log_artifact(run_id, path, artifact_path="plots")
    return drawn
