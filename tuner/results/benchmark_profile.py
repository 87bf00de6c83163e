"""Several tasks' benchmarks, one verdict: MLCommons AlgoPerf's performance profile
(Dahl et al. 2023, sec. 4.5; the rules in tuner.results.profile) over the benchmarks' cells.

An entry is one optimizer at one budget (and schedule, where a benchmark has several); its
time on a task is the median training seconds of its re-runs to that task's target (each
task's own: its `--target`, else its one-shot Adam's median). The profile gives, per entry,
the fraction of tasks on which it is within a factor tau of the fastest entry, and the
normalised area under that curve as one score in [0, 1].
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from tuner.results.benchmark_report import BenchmarkReport
from tuner.results.profile import TAU_MAX, Profile, performance_profile
from tuner.results.summaries import HIDDEN, to_json_data
from tuner.study.names import folder_name
from tuner.study.tracker import Tracker


@dataclass(frozen=True)
class TaskProfile:
    """The benchmarks of several tasks and their performance profile."""

    reports: list[BenchmarkReport]
    times: dict[str, dict[str, float | None]]  # task → entry → median seconds to its target
    scores: dict[str, float]  # entry → normalised area under its profile (1: always fastest)
    tau_max: float
    profile: Profile = field(metadata=HIDDEN)  # the ratios and curves: its plot draws them
    files: list[Path] = field(default_factory=list)


def entry_name(optimizer: str, budget: str, schedule: str, *, several: bool) -> str:
    return f"{optimizer} {budget}" + (f" {schedule}" if several else "")


def task_profile(reports: Sequence[BenchmarkReport], *, tau_max: float = TAU_MAX) -> TaskProfile:
    """The profile of these benchmarks (one per task) over their cells."""
    several = any(len(r.schedules) > 1 for r in reports)
    times: dict[str, dict[str, float | None]] = {}
    for report in reports:
        times[report.task] = {
            entry_name(c.optimizer, c.budget, c.schedule, several=several):
                c.to_target.seconds if c.to_target is not None else None
            for c in report.cells}
    profile = performance_profile(times, tau_max=tau_max)
    return TaskProfile(reports=list(reports), times=times, scores=profile.scores,
                       tau_max=profile.tau_max, profile=profile)


def write_profile_files(result: TaskProfile, *, home: Path, tracker: Tracker) -> TaskProfile:
    """profile.json and profile.png under ``<home>/benchmarks/profile-A+B/``, also logged on
    each benchmark's MLflow run."""
    names = "+".join(r.benchmark for r in result.reports)
    folder = home / "benchmarks" / folder_name(f"profile-{names}")
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / "profile.json", folder / "profile.png"
    data = {"benchmarks": [r.benchmark for r in result.reports],
            "tasks": [r.task for r in result.reports], "tau_max": result.tau_max,
            "times": result.times, "scores": result.scores}
    json_path.write_text(json.dumps(to_json_data(data), indent=2) + "\n", encoding="utf-8")
    profile_png(result.profile, png_path, title=f"Performance profile over {len(result.reports)} "
                                         f"tasks: {', '.join(r.task for r in result.reports)}")
    for report in result.reports:
        if report.run_id:
            for path in (json_path, png_path):
                tracker.log_artifact(report.run_id, path)
    return dataclasses.replace(result, files=[json_path, png_path])


def profile_png(profile: Profile, path: Path, *, title: str) -> None:
    """rho_s(tau) for tau in [1, tau_max] as step curves, one line per entry, the legend
    giving each entry's score."""
    figure = Figure(figsize=(6.4, 4.2))  # pyplot's never: files only, no window
    axes = figure.subplots()
    for i, entry in enumerate(profile.entries):
        steps = sorted({r for task in profile.tasks
                        if 1.0 <= (r := profile.ratios[task][entry]) <= profile.tau_max})
        xs = [1.0, *steps, profile.tau_max]
        axes.step(xs, [profile.rho(entry, x) for x in xs], where="post",
                  linestyle=("-", "--", "-.", ":")[i % 4],  # tied steps stay visible
                  label=f"{entry} (score {profile.scores[entry]:.3f})")
    axes.set_xlim(1.0, profile.tau_max)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("tau: time to target / fastest entry's")
    axes.set_ylabel(f"fraction of tasks within tau ({len(profile.tasks)} tasks)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8, loc="lower right")
    figure.savefig(str(path), dpi=110, bbox_inches="tight")
