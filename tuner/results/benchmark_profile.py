"""Several tasks' benchmarks, one verdict: MLCommons AlgoPerf's performance profile
(Dahl et al. 2023, sec. 4.5; the rules in tuner.results.profile) over the benchmarks' cells.

An entry is one optimizer at one budget (and schedule, where a benchmark has several); its
time on a task is the median training seconds of its re-runs to that task's target (each
task's own: its `--target`, else its one-shot Adam's median). The profile gives, per entry,
the fraction of tasks on which it is within a factor tau of the fastest entry, and the
normalised area under that curve as one score in [0, 1].
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.results.benchmark_report import BenchmarkReport
from tuner.results.profile import TAU_MAX, Profile, performance_profile, profile_png
from tuner.results.summaries import HIDDEN, to_json_data
from tuner.study.names import folder_name


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


def write_profile_files(result: TaskProfile, *, home: Path, tracker: Any) -> TaskProfile:
    """profile.json and profile.png under ``<home>/benchmarks/profile-A+B/``, also logged on
    each benchmark's MLflow run."""
    import dataclasses

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
