"""How a benchmark's numbers read as text, in the terminal (tuner.cli.render) and in table.md
(tuner.results.benchmark_files) alike. Light on purpose: every command imports render."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.results.benchmark_report import BenchmarkCell, BenchmarkReport
    from tuner.results.paired import PairedChange


def paired_text(paired: PairedChange | None) -> str:
    """``+0.0123 [+0.0040, +0.0210] *`` (pairs n): the mean paired change, its 95% bootstrap
    interval, and ``*`` where that interval excludes 0; ``-`` with under 2 pairs."""
    if paired is None:
        return "-"
    return (f"{paired.mean:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"
            f"{' *' if paired.differs else ''} (n={paired.pairs})")


def target_text(cell: BenchmarkCell) -> str:
    """``3 / 12.4s (8/10)``: median epochs and seconds to the target, and how many re-runs
    reached it; ``never`` where the median re-run did not."""
    t = cell.to_target
    if t is None:
        return "-"
    if t.epochs is None or t.seconds is None:
        return f"never ({t.reached}/{t.runs})"
    return f"{t.epochs:g} / {t.seconds:.3g}s ({t.reached}/{t.runs})"


def reading(report: BenchmarkReport) -> str:
    """How to read the table, in one paragraph (also under the terminal's table)."""
    worst = f"{report.worst:g}"
    target = ("no target (no one-shot reference cell, and no --target)"
              if report.target is None
              else f"the target {report.target:.4f} is {report.target_source}")
    base = report.baseline or "baseline"
    return (f"Every re-run counts: a diverged one scores {worst}, the worst {report.metric} "
            f"can be. vs {base}: the median minus {base}'s under the same schedule. paired: "
            f"the mean of the per-seed differences from that cell, with a 95% percentile "
            f"bootstrap interval; * marks an interval that excludes 0, the only changes this "
            f"table supports. Positive is better. Time to target: median epochs and training "
            f"seconds to first reach it on the test split; {target}.")
