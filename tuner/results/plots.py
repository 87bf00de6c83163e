"""Plots of a study: .html (interactive, plotly) or .png/.svg/.pdf (static, matplotlib).

The kinds are Optuna's own views (optimization history, parameter importances, parallel
coordinates, slice, contour) plus `curves`: the per-epoch validation values of the best trial
of each optimizer family on one chart. Nothing here needs a browser or a display. When a
search ends, :func:`log_study_plots` puts the quick ones on the study's MLflow parent run.
"""

from __future__ import annotations

import html
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import OpttuneError
from tuner.results.summaries import WrittenFile
from tuner.study.direction import best_of
from tuner.study.trial_record import read_trial

KINDS = ("history", "importance", "parallel", "slice", "contour", "curves")
STATIC_SUFFIXES = (".png", ".svg", ".pdf")
HTML_SUFFIXES = (".html", ".htm")
ARTIFACT_KINDS = ("history", "curves", "parallel", "slice")  # fast enough for every search


def write_plot(name: str, *, kind: str, output: str | Path,
               params: Sequence[str] | None = None, home: str | Path | None = None,
               storage: str | None = None, tracking_uri: str | None = None) -> WrittenFile:
    """Draw `kind` for study `name` into `output`; its suffix picks HTML or a static image."""
    from tuner.results.queries import open_study
    from tuner.study.meta import objective_of

    path = Path(output).expanduser()
    suffix = path.suffix.lower()
    if kind not in KINDS:
        raise OpttuneError(f"--kind must be one of {', '.join(KINDS)}, but got {kind!r}")
    if suffix not in HTML_SUFFIXES + STATIC_SUFFIXES:
        raise OpttuneError(f"-o must end in .html (interactive) or .png, .svg or .pdf (static), "
                           f"but got {str(output)!r}")
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    metric, _ = objective_of(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in HTML_SUFFIXES:
        figure = plotly_figure(study, kind, metric=metric, params=params)
        figure.write_html(str(path), include_plotlyjs=True, full_html=True)
    else:
        import matplotlib.pyplot as plt

        mpl_figure = matplotlib_figure(study, kind, metric=metric, params=params)
        try:
            mpl_figure.savefig(str(path), dpi=110, bbox_inches="tight")
        finally:
            plt.close(mpl_figure)
    return WrittenFile(study=name, path=path.resolve(), format=suffix.lstrip("."), kind=kind)


# -- figures ----------------------------------------------------------------------------------
def plotly_figure(study: Any, kind: str, *, metric: str,
                  params: Sequence[str] | None = None) -> Any:
    import optuna.visualization as vis

    params = _check(study, kind, params)
    with _quiet():
        if kind == "curves":
            import plotly.graph_objects as go

            figure = go.Figure()
            for label, epochs, values in best_curves(study):
                figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers",
                                            name=label))
            figure.update_layout(xaxis_title="epoch", yaxis_title=metric,
                                 title="Validation curves: best trial of each optimizer")
        else:
            figure = _optuna_call(vis, kind, study, metric, params)
    figure.update_layout(title=f"{study.study_name}: {figure.layout.title.text or kind}")
    return figure


def matplotlib_figure(study: Any, kind: str, *, metric: str,
                      params: Sequence[str] | None = None) -> Any:
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window or need a display
    import matplotlib.pyplot as plt
    import numpy as np

    params = _check(study, kind, params)
    with _quiet():
        if kind == "curves":
            figure, axes = plt.subplots(figsize=(8, 5))
            for label, epochs, values in best_curves(study):
                axes.plot(epochs, values, marker="o", label=label)
            axes.set_xlabel("epoch")
            axes.set_ylabel(metric)
            axes.set_title("Validation curves: best trial of each optimizer")
            axes.legend()
            axes.grid(alpha=0.3)
            from matplotlib.ticker import MaxNLocator

            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            panels = 1
        else:
            import optuna.visualization.matplotlib as mvis

            drawn = np.asarray(_optuna_call(mvis, kind, study, metric, params))
            axes, panels = drawn.flat[0], drawn.size
            figure = axes.figure
            if kind == "parallel":  # one axis per parameter: give them room
                figure.set_size_inches(max(8.0, 1.4 * len(figure.axes[0].get_xticks())), 5.5)
    if panels > 1:
        figure.suptitle(study.study_name)
    else:
        axes.set_title(f"{study.study_name}: {axes.get_title()}")
    return figure


def _optuna_call(module: Any, kind: str, study: Any, metric: str,
                 params: list[str] | None) -> Any:
    try:
        if kind == "history":
            return module.plot_optimization_history(study, target_name=metric)
        if kind == "importance":
            return module.plot_param_importances(study, params=params, target_name=metric)
        if kind == "parallel":
            return module.plot_parallel_coordinate(study, params=params, target_name=metric)
        if kind == "slice":
            return module.plot_slice(study, params=params, target_name=metric)
        return module.plot_contour(study, params=params, target_name=metric)
    except (ValueError, RuntimeError) as exc:
        raise OpttuneError(f"cannot draw the {kind} plot of study {study.study_name!r}: "
                           f"{str(exc).splitlines()[0]}") from None


def _check(study: Any, kind: str, params: Sequence[str] | None) -> list[str] | None:
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


def _by_frequency(trials: list[Any]) -> list[str]:
    """Parameter names, most used first (lr before all others when tied)."""
    counts: dict[str, int] = {}
    for t in trials:
        for p in t.params:
            counts[p] = counts.get(p, 0) + 1
    return sorted(counts, key=lambda p: (-counts[p], p != "lr", p))


def best_curves(study: Any) -> list[tuple[str, list[int], list[float]]]:
    """(label, epochs, values) for the best trial of each family: :func:`best_complete`'s pick,
    or, for a family without one, the trial with the best last value (labelled with its
    state)."""
    from tuner.study.meta import objective_of
    from tuner.study.studies import best_complete

    _, direction = objective_of(study)
    families: dict[str, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.intermediate_values:
            families.setdefault(str(read_trial(t).optimizer or "trial"), []).append(t)
    out = []
    for family, trials in families.items():
        t = best_complete(trials, direction) or best_of(
            trials, key=lambda t: t.intermediate_values[max(t.intermediate_values)],
            direction=direction)
        steps = sorted(t.intermediate_values)
        state = "" if t.state.name == "COMPLETE" else f", {t.state.name.lower()}"
        out.append((f"{family} (trial {t.number}{state})", [s + 1 for s in steps],
                    [t.intermediate_values[s] for s in steps]))
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna flags its matplotlib views as experimental and small studies as inaccurate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- at the end of a search -------------------------------------------------------------------
# What drawing them imports (about 1.5 s): the tracker's process does it while trials train.
PLOT_MODULES = ("optuna.visualization", "plotly.io", "plotly.graph_objects")


@dataclass(frozen=True)
class StudySnapshot:
    """What the plots read of a study, as plain data for the tracker's process."""

    name: str
    direction: Any  # optuna's StudyDirection
    user_attrs: dict[str, Any]
    trials: list[Any]  # FrozenTrial: finished ones

    @classmethod
    def of(cls, study: Any) -> StudySnapshot:
        finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        return cls(study.study_name, study.direction, dict(study.user_attrs),
                   finished)

    def study(self) -> Any:
        """An in-memory study holding the same trials."""
        import optuna

        study = optuna.create_study(study_name=self.name, direction=self.direction)
        for key, value in self.user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trials(self.trials)
        return study


def log_snapshot_plots(tracker: Any, snapshot: StudySnapshot, *, run_id: str) -> list[str]:
    """:func:`log_study_plots` of a snapshot: what a search runs where its tracker lives."""
    return log_study_plots(snapshot.study(), tracker=tracker, run_id=run_id)


def log_study_plots(study: Any, *, tracker: Any, run_id: str) -> list[str]:
    """Put one self-contained HTML page of the quick plots on the study's parent run.

    Returns the kinds drawn. A kind that cannot be drawn is left out; a study with fewer
    than two complete trials gets none (there is nothing to see yet).
    """
    complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    if complete < 2:
        return []
    import plotly.io as pio

    from tuner.study.meta import objective_of

    metric, _ = objective_of(study)
    parts: list[str] = []
    drawn: list[str] = []
    for kind in ARTIFACT_KINDS:
        try:
            figure = plotly_figure(study, kind, metric=metric)
        except Exception:  # a plot is a nicety: never let it cost the search
            continue
        parts.append(pio.to_html(figure, include_plotlyjs=not parts, full_html=False))
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
