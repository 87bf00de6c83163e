"""A benchmark's report as files (JSON, PNG, HTML) under ``<home>/benchmarks/NAME/``, also
logged on the benchmark's MLflow run with its summary as metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tuner.results.benchmark_report import BenchmarkReport
from tuner.results.benchmark_text import paired_text, reading, target_text
from tuner.results.summaries import json_object
from tuner.study.direction import short
from tuner.study.locations import Stores
from tuner.study.names import folder_name
from tuner.study.tracker import Tracker


def write_report_files(report: BenchmarkReport, *, stores: Stores, tracker: Tracker,
                       seconds: float) -> list[Path]:
    """Write report.json, table.md, plot.png and plot.html (and tunability.png when the
    benchmark has searches); log them, and the medians as metrics, on the benchmark's run."""
    folder = stores.home / "benchmarks" / folder_name(report.benchmark)
    folder.mkdir(parents=True, exist_ok=True)
    data = json_object(report)
    data["seconds_this_run"] = round(seconds, 1)
    files = [folder / "report.json", folder / "table.md", folder / "plot.png",
             folder / "plot.html"]
    files[0].write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    files[1].write_text(markdown_table(report), encoding="utf-8")
    _png(report, files[2])
    _html(report, files[3])
    if report.tunability:
        files.append(folder / "tunability.png")
        _tunability_png(report, files[-1])
    if report.run_id:
        for path in files:
            tracker.log_artifact(report.run_id, path)
        metrics = {f"{c.optimizer}.{c.schedule}.{c.budget}.median": c.median
                   for c in report.cells if c.median is not None and math.isfinite(c.median)}
        if metrics:
            tracker.log_epoch(report.run_id, 0, metrics)
    return files


def markdown_table(report: BenchmarkReport) -> str:
    """The table as Markdown: one row per schedule, optimizer and budget, then the headline
    comparison and how to read both."""
    base = report.baseline or "baseline"
    target = "-" if report.target is None else f"{report.target:.4f}"
    lines = [f"# {report.benchmark}: {report.metric} on the test split "
             f"({report.seeds} seeds per cell; task {report.task}; space {report.space}; "
             f"one-shot settings: {report.oneshot_source})", "",
             f"| schedule | optimizer | budget | median | min | max | diverged | "
             f"vs {base} | paired vs {base} [95% CI] | epochs / s to {target} | trials | "
             f"setting |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report.cells:
        setting = ", ".join(f"{k}={v}" for k, v in c.setting.items() if k != "optimizer")
        lines.append(f"| {c.schedule} | {c.optimizer} | {c.budget} | {_num(c.median)} | "
                     f"{_num(c.low)} | {_num(c.high)} | {c.diverged}/{len(c.scores)} | "
                     f"{_num(c.change, sign=True)} | {paired_text(c.paired)} | "
                     f"{target_text(c)} | {c.trials} | {c.missing or setting} |")
    for head in report.headline:
        lines += ["", f"Best one-shot setting by validation under {head.schedule}: "
                  f"**{head.oneshot}**. Each optimizer tuned ({head.budget}) against it, paired "
                  f"by seed:", "", "| optimizer | paired change [95% CI] |", "|---|---|"]
        lines += [f"| {opt} | {paired_text(change)} |" for opt, change in head.rows.items()]
    lines += ["", reading(report)]
    return "\n".join(lines) + "\n"


def _num(value: float | None, *, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _points(report: BenchmarkReport) -> list[tuple[str, str, list[float], float | None]]:
    """(optimizer, budget · schedule, the seeds' test values, a diverged one as the worst,
    median) per cell; the schedule is named where the benchmark has several."""
    return [(c.optimizer, _label(report, c.budget, c.schedule),
             [report.worst if s.value is None else s.value for s in c.scores], c.median)
            for c in report.cells]


def _label(report: BenchmarkReport, budget: str, schedule: str) -> str:
    return f"{budget} · {schedule}" if len(report.schedules) > 1 else budget


def _labels(report: BenchmarkReport) -> list[str]:
    return [_label(report, b, s) for s in report.schedules for b in report.budgets]


def _title(report: BenchmarkReport) -> str:
    return (f"{report.benchmark}: {report.metric} of the chosen setting, {report.seeds} seeds "
            f"(task {report.task})")


def _png(report: BenchmarkReport, path: Path) -> None:
    families = list(dict.fromkeys(c.optimizer for c in report.cells))
    labels = _labels(report)
    width = 0.8 / max(1, len(labels))
    # A Figure of its own, never pyplot's: files only, no window, no global state to close.
    figure = Figure(figsize=(max(6.0, 1.4 * len(families)), 4.2))
    axes = figure.subplots()
    for b, budget in enumerate(labels):
        for f, family in enumerate(families):
            for optimizer, label, values, median in _points(report):
                if (optimizer, label) != (family, budget):
                    continue
                x = f - 0.4 + width * (b + 0.5)
                values = [v for v in values if math.isfinite(v)]
                axes.scatter([x] * len(values), values, s=14, color=f"C{b}", alpha=0.6,
                             label=budget if f == 0 else None)
                if median is not None and math.isfinite(median):
                    axes.hlines(median, x - width / 2.5, x + width / 2.5, color=f"C{b}")
    base = next((c.median for c in report.cells
                 if report.baseline == f"{c.optimizer} {c.budget}"
                 and c.schedule == report.schedules[0]), None)
    if base is not None and math.isfinite(base):
        axes.axhline(base, color="grey", linestyle="--", linewidth=0.8,
                     label=f"{report.baseline} (median, {report.schedules[0]})")
    axes.set_xticks(range(len(families)), families)
    axes.set_ylabel(report.metric)
    axes.set_title(_title(report), fontsize=9)
    axes.legend(fontsize=8)
    figure.savefig(str(path), dpi=110, bbox_inches="tight")


def _html(report: BenchmarkReport, path: Path) -> None:
    figure = go.Figure()
    for budget in _labels(report):
        xs: list[str] = []
        ys: list[float] = []
        for optimizer, label, values, _ in _points(report):
            if label == budget:
                finite = [v for v in values if math.isfinite(v)]
                xs += [optimizer] * len(finite)
                ys += finite
        figure.add_trace(go.Box(x=xs, y=ys, name=budget, boxpoints="all", jitter=0.3))
    figure.update_layout(boxmode="group", title=_title(report), yaxis_title=report.metric)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _tunability_png(report: BenchmarkReport, path: Path) -> None:
    """Each optimizer's expected best validation value after k = 1..N search trials
    (Dodge et al. 2019): one line per optimizer."""
    metric = report.tuning_metric or "validation value"
    best = short(report.direction)
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    for schedule, curves in report.tunability.items():
        for family, curve in curves.items():
            name = f"{family} · {schedule}" if len(report.tunability) > 1 else family
            label = name if curve else f"{name} (no trial with a value)"
            axes.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
    axes.set_xlabel("trials k")
    axes.set_ylabel(f"expected best {metric}")
    axes.set_title(f"{report.benchmark}: expected {best} {metric} after k trials "
                   f"({report.direction}; task {report.task})", fontsize=9)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=8)
    figure.savefig(str(path), dpi=110, bbox_inches="tight")
