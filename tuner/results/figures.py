"""Drawing a study's plots: plotly figures (for .html) and matplotlib ones (.png/.svg/.pdf),
of Optuna's own views or of the per-epoch curves that :mod:`tuner.results.plots` picks.

Importing this module loads plotly, matplotlib and Optuna's visualization (about 1.5 s):
tuner.results.plots, which every search imports, imports it only to draw, and a search's
tracker process imports it ahead of the plots it logs (``plots.PLOT_MODULES``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tuner.errors import OpttuneError

if "matplotlib.pyplot" not in sys.modules:  # a program that already runs pyplot keeps its own
    matplotlib.use("Agg")  # files only: never open a window or need a display

# Only now that the backend is chosen: each of these imports pyplot.
import matplotlib.pyplot as plt  # noqa: E402
import optuna.visualization as vis  # noqa: E402
import optuna.visualization.matplotlib as mvis  # noqa: E402

Curve = tuple[str, list[int], list[float]]  # a label, the epochs (1-based) and their values
CURVES_TITLE = "Validation curves: best trial of each optimizer"


def plotly_figure(study: optuna.Study, kind: str, *, metric: str, params: list[str] | None,
                  curves: Sequence[Curve]) -> go.Figure:
    """`kind` of `study` as a plotly figure; `curves` draws the ``curves`` kind."""
    with _quiet():
        if kind == "curves":
            figure = go.Figure()
            for label, epochs, values in curves:
                figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers",
                                            name=label))
            figure.update_layout(xaxis_title="epoch", yaxis_title=metric, title=CURVES_TITLE)
        else:
            figure = _plotly_view(study, kind, metric, params)
    figure.update_layout(title=f"{study.study_name}: {figure.layout.title.text or kind}")
    return figure


def matplotlib_figure(study: optuna.Study, kind: str, *, metric: str,
                      params: list[str] | None, curves: Sequence[Curve]) -> Figure:
    """`kind` of `study` as a matplotlib figure; `curves` draws the ``curves`` kind."""
    with _quiet():
        if kind == "curves":
            figure, axes = plt.subplots(figsize=(8, 5))
            for label, epochs, values in curves:
                axes.plot(epochs, values, marker="o", label=label)
            axes.set_xlabel("epoch")
            axes.set_ylabel(metric)
            axes.set_title(CURVES_TITLE)
            axes.legend()
            axes.grid(alpha=0.3)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            panels = [axes]
        else:
            panels = _panels(_matplotlib_view(study, kind, metric, params))
            axes = panels[0]
            drawn_on = axes.figure
            figure = drawn_on if isinstance(drawn_on, Figure) else drawn_on.figure
            if kind == "parallel":  # one axis per parameter: give them room
                figure.set_size_inches(max(8.0, 1.4 * len(figure.axes[0].get_xticks())), 5.5)
    if len(panels) > 1:
        figure.suptitle(study.study_name)
    else:
        axes.set_title(f"{study.study_name}: {axes.get_title()}")
    return figure


def save_static(figure: Figure, path: Path) -> None:
    """Write `figure` to `path` (.png, .svg or .pdf) and let pyplot forget it."""
    try:
        figure.savefig(str(path), dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)


def _panels(drawn: Axes | np.ndarray) -> list[Axes]:
    """Optuna's matplotlib views draw one Axes, or a grid of them (slice, contour)."""
    if isinstance(drawn, Axes):
        return [drawn]
    return [axes for axes in drawn.flat if isinstance(axes, Axes)]


def _plotly_view(study: optuna.Study, kind: str, metric: str,
                 params: list[str] | None) -> go.Figure:
    with _refused(study, kind):
        if kind == "history":
            return vis.plot_optimization_history(study, target_name=metric)
        if kind == "importance":
            return vis.plot_param_importances(study, params=params, target_name=metric)
        if kind == "parallel":
            return vis.plot_parallel_coordinate(study, params=params, target_name=metric)
        if kind == "slice":
            return vis.plot_slice(study, params=params, target_name=metric)
        return vis.plot_contour(study, params=params, target_name=metric)


def _matplotlib_view(study: optuna.Study, kind: str, metric: str,
                     params: list[str] | None) -> Axes | np.ndarray:
    with _refused(study, kind):
        if kind == "history":
            return mvis.plot_optimization_history(study, target_name=metric)
        if kind == "importance":
            return mvis.plot_param_importances(study, params=params, target_name=metric)
        if kind == "parallel":
            return mvis.plot_parallel_coordinate(study, params=params, target_name=metric)
        if kind == "slice":
            return mvis.plot_slice(study, params=params, target_name=metric)
        return mvis.plot_contour(study, params=params, target_name=metric)


@contextmanager
def _refused(study: optuna.Study, kind: str) -> Iterator[None]:
    """What Optuna refuses to draw, as one line that says which plot of which study."""
    try:
        yield
    except (ValueError, RuntimeError) as exc:
        raise OpttuneError(f"cannot draw the {kind} plot of study {study.study_name!r}: "
                           f"{str(exc).splitlines()[0]}") from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna flags its matplotlib views as experimental and small studies as inaccurate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
