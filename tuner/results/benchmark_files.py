"""A benchmark's report as files (JSON, PNG, HTML) under ``<home>/benchmarks/NAME/``, also
logged on the benchmark's MLflow run with its summary as metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuner.results.benchmark_report import BenchmarkReport
from tuner.results.paired import paired_text
from tuner.results.records import to_json_data
from tuner.study.names import folder_name


def write_report_files(report: BenchmarkReport, *, stores: Any, tracker: Any,
                       seconds: float) -> list[Path]:
    """Write report.json, table.md, plot.png and plot.html (and tunability.png when the
    benchmark has searches); log them, and the medians as metrics, on the benchmark's run."""
    folder = stores.home / "benchmarks" / folder_name(report.benchmark)
    folder.mkdir(parents=True, exist_ok=True)
    data = to_json_data(report)
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
        metrics = {f"{c.optimizer}.{c.budget}.median": c.median for c in report.cells
                   if c.median is not None}
        if metrics:
            tracker.log_epoch(report.run_id, 0, metrics)
    return files


def markdown_table(report: BenchmarkReport) -> str:
    """The table as Markdown: one row per optimizer and budget."""
    base = report.baseline or "baseline"
    lines = [f"# {report.benchmark}: {report.metric} on the test split "
             f"({report.seeds} seeds per cell; task {report.task})", "",
             f"| optimizer | budget | median | min | max | vs {base} | paired vs {base} "
             f"[95% CI] | trials | setting |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report.cells:
        setting = ", ".join(f"{k}={v}" for k, v in c.setting.items() if k != "optimizer")
        lines.append(f"| {c.optimizer} | {c.budget} | {_num(c.median)} | {_num(c.low)} | "
                     f"{_num(c.high)} | {_num(c.change, sign=True)} | {paired_text(c.paired)} | "
                     f"{c.trials} | "
                     f"{c.missing or setting} |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, *, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _points(report: BenchmarkReport) -> list[tuple[str, str, list[float], float | None]]:
    """(optimizer, budget, the seeds' test values, median) per cell."""
    return [(c.optimizer, c.budget, [s.value for s in c.scores if s.value is not None],
             c.median) for c in report.cells]


def _title(report: BenchmarkReport) -> str:
    return (f"{report.benchmark}: {report.metric} of the chosen setting, {report.seeds} seeds "
            f"(task {report.task})")


def _png(report: BenchmarkReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(c.optimizer for c in report.cells))
    width = 0.8 / max(1, len(report.budgets))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(families)), 4.2))
    try:
        for b, budget in enumerate(report.budgets):
            for f, family in enumerate(families):
                for optimizer, label, values, median in _points(report):
                    if (optimizer, label) != (family, budget):
                        continue
                    x = f - 0.4 + width * (b + 0.5)
                    axes.scatter([x] * len(values), values, s=14, color=f"C{b}", alpha=0.6,
                                 label=budget if f == 0 else None)
                    if median is not None:
                        axes.hlines(median, x - width / 2.5, x + width / 2.5, color=f"C{b}")
        base = next((c.median for c in report.cells
                     if report.baseline == f"{c.optimizer} {c.budget}"), None)
        if base is not None:
            axes.axhline(base, color="grey", linestyle="--", linewidth=0.8,
                         label=f"{report.baseline} (median)")
        axes.set_xticks(range(len(families)), families)
        axes.set_ylabel(report.metric)
        axes.set_title(_title(report), fontsize=9)
        axes.legend(fontsize=8)
        figure.savefig(str(path), dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)


def _html(report: BenchmarkReport, path: Path) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    for budget in report.budgets:
        xs: list[str] = []
        ys: list[float] = []
        for optimizer, label, values, _ in _points(report):
            if label == budget:
                xs += [optimizer] * len(values)
                ys += values
        figure.add_trace(go.Box(x=xs, y=ys, name=budget, boxpoints="all", jitter=0.3))
    figure.update_layout(boxmode="group", title=_title(report), yaxis_title=report.metric)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _tunability_png(report: BenchmarkReport, path: Path) -> None:
    """Each optimizer's expected best validation value after k = 1..N search trials
    (Dodge et al. 2019): one line per optimizer."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = report.tuning_metric or "validation value"
    best = "max" if report.direction == "maximize" else "min"
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        for family, curve in report.tunability.items():
            label = family if curve else f"{family} (no trial with a value)"
            axes.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
        axes.set_xlabel("trials k")
        axes.set_ylabel(f"expected best {metric}")
        axes.set_title(f"{report.benchmark}: expected {best} {metric} after k trials "
                       f"({report.direction}; task {report.task})", fontsize=9)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=8)
        figure.savefig(str(path), dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
