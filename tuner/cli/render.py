"""Everything opttune shows a person: the only module that prints.

On a terminal a live line shows the trial, epoch, current and best value and the device; when
the output is a file or a pipe it prints one plain line per trial instead.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from rich import box
from rich.console import Console
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from tuner.jsontypes import JsonValue
from tuner.results.benchmark_text import paired_text, reading, target_text
from tuner.results.summaries import (
    BestTrial,
    Comparison,
    GroupStats,
    SearchSummary,
    StudyList,
    TaskSummary,
    TrialList,
    WrittenFile,
    to_csv_rows,
    to_json_data,
)
from tuner.search.events import NullObserver, StudyStart, TrialOutcome
from tuner.space.families import ALL_PARAM_NAMES, AUTHORS_DEFAULTS
from tuner.study.direction import short, wording
from tuner.study.locations import redact
from tuner.study.trial_record import TRAINING_KEYS

if TYPE_CHECKING:
    from tuner.results.benchmark_profile import TaskProfile
    from tuner.results.benchmark_record import RerunEntry
    from tuner.results.benchmark_report import BenchmarkCell, BenchmarkReport
    from tuner.results.dashboard_server import DashboardPlan
    from tuner.results.deletion import Deleted
    from tuner.results.mlflow_ui import UiPlan
    from tuner.results.retrain import RetrainResult
    from tuner.search.reruns import Rerun
    from tuner.search.session import SearchResult
    from tuner.space.searchspace import Space
    from tuner.study.recovery import CheckReport

R = TypeVar("R")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def emit(result: R, *, fmt: str, table: Callable[[R], None]) -> None:
    """`result` as `fmt`: "table" (`table` draws it) for people, "json" or "csv" for programs;
    then stdout holds that one document and nothing else."""
    if fmt == "json":
        _print_json(to_json_data(result))
    elif fmt == "csv":
        if not isinstance(result, TrialList):
            raise TypeError(f"{type(result).__name__} has no CSV form")
        _print_csv(*to_csv_rows(result.trials))
    else:
        table(result)


def _print_json(data: JsonValue) -> None:
    """One JSON document on stdout (for --format json)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _print_csv(rows: Sequence[Mapping[str, object]], columns: list[str]) -> None:
    """CSV on stdout (for --format csv): a header, then one line per row."""
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def print_notice(text: str) -> None:
    err_console.print(Text(f"Note: {redact(text)}", style="bold yellow"))


def print_space(space: Space) -> None:
    table = Table(title="Search space", title_justify="left")
    for column in ("optimizer", "parameter", "searched over", "default trial"):
        table.add_column(column)
    for row in space.rows():
        table.add_row(*row)
    console.print(table)
    for family in space.unscheduled():
        console.print(f"{family} takes no learning-rate schedule (its averaging replaces one): "
                      f"its trials run without one, whatever --scheduler says.")
    if not space.defaults_first:
        return
    excluded = {f: space.defaults_excluded(f) for f in space.families}
    runs = [f for f, names in excluded.items() if not names]
    if runs and len(runs) == len(excluded):
        console.print("The first trial of each optimizer runs its PyTorch defaults.")
    elif runs:
        console.print(f"The first trial of {', '.join(runs)} runs its PyTorch defaults.")
    # torch's SGD defaults to momentum 0, which is plain SGD: say what these families run.
    with_momentum = [f for f in runs if f in ("momentum", "nesterov")]
    if with_momentum:
        console.print(f"For {' and '.join(with_momentum)} that is torch's SGD with momentum "
                      f"0.9 (torch's own default momentum, 0, is plain SGD).")
    authors = [f for f in runs if f in AUTHORS_DEFAULTS]
    if authors:
        console.print(f"For {', '.join(authors)} those are the authors' defaults (README, "
                      f"\"Optimizer families\").")
    for family, names in excluded.items():
        if names:
            console.print(f"{family} has no defaults trial: the space leaves out its default "
                          f"{', '.join(names)}.")


def print_tasks(tasks: list[TaskSummary]) -> None:
    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "what it trains", "data", "model", "params", "objective"):
        table.add_column(column, no_wrap=column in ("task", "objective"))
    for t in tasks:
        objective = f"{t.metric} ({short(t.direction)})"
        model = t.model + ("\ntask params: " + ", ".join(
            f"{k}={v}" for k, v in t.hyperparams.items()) if t.hyperparams else "")
        table.add_row(t.name, t.summary, t.data, model, _count(t.parameters), objective)
    console.print(table)


def _count(n: int | None) -> str:
    """235146 -> '235k'."""
    if n is None:
        return "-"
    return str(n) if n < 1000 else f"{n / 1e3:.3g}k" if n < 1e6 else f"{n / 1e6:.3g}M"


class SearchDisplay:
    """The Observer the CLI hands to a search: the space, then live progress and one line per
    finished trial."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self.line = ""
        self.best: TrialOutcome | None = None
        self.device = ""
        self.metric = ""
        self.current: dict[int, tuple[int, int]] = {}  # trial → (index, total) of this run

    # Observer protocol
    def notice(self, text: str) -> None:
        print_notice(text)

    def space_ready(self, space: Space) -> None:
        print_space(space)  # before any data is read or store is touched

    def study_start(self, info: StudyStart) -> None:
        self.device, self.metric = info["device"], info["metric"]
        console.print(f"Study [bold]{info['study']}[/]: {info['done']} of {info['target']} "
                      f"trials done · device [bold]{info['device']}[/] · data: "
                      f"{info['data_source']}")
        console.print(f"Stores: {redact(info['stores'].storage_url)} · MLflow "
                      f"{redact(info['stores'].tracking_uri)}", style="dim")
        if info.get("pruner") not in (None, "none"):
            console.print(f"Pruning ({info['pruner']}): each trial is judged against trials of "
                          f"its own optimizer only; a family's first {info['startup_trials']} "
                          f"complete trials and every trial's last epoch are never pruned.")
        if console.is_terminal:
            self.live = Live(Text(""), console=console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_start(self, number: int, config: Mapping[str, object], index: int,
                    total: int) -> None:
        # Keyed by trial: with --jobs, several trials run at once.
        self.current[number] = (index, total)
        self._update(f"trial {index} of {total} (#{number}) · {_describe(config)}")

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        index, total = self.current.get(number, ("?", "?"))
        self._update(f"trial {index} of {total} (#{number}) · epoch {epoch + 1}/"
                     f"{epochs} · {self.metric} {value:.4f} · best "
                     f"{_fmt(self.best.value if self.best else None)} · {self.device}")

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        self.best = best
        self.current.pop(outcome.number, None)
        style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}[outcome.state]
        tail = f" ({outcome.reason})" if outcome.reason else ""
        line = (f"trial {outcome.number:>3} {outcome.state.lower():<8} "
                f"{self.metric}={_fmt(outcome.value)} · {_describe(outcome.config)} · "
                f"{outcome.seconds:.1f}s{tail} · best {_fmt(best.value if best else None)}")
        if self.live is not None:
            self.live.console.print(Text(line, style=style))
        else:
            console.print(Text(line, style=style))

    def _update(self, text: str) -> None:
        if self.live is not None:
            self.live.update(Text(text, style="cyan"))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _describe(config: Mapping[str, object]) -> str:
    parts = [str(config.get("optimizer"))]
    parts += [f"{k}={_fmt(config[k])}" for k in ALL_PARAM_NAMES if k in config]
    if "batch_size" in config:
        parts.append(f"bs={config['batch_size']}")
    # The task's own hyperparameters (hidden, dropout, …): whatever else the config holds.
    skip = {"optimizer", *ALL_PARAM_NAMES, *TRAINING_KEYS}
    parts += [f"{k}={_fmt(v)}" for k, v in config.items() if k not in skip]
    return " ".join(parts)


def print_search_summary(result: SearchResult, summary: SearchSummary) -> None:
    """The top trials and the numbers per optimizer, over the whole study."""
    if not summary.trials:
        console.print(f"Study {result.study} already has {result.total_counted} of "
                      f"{result.target} trials; `opttune resume {result.study} --n-trials N` "
                      f"runs more.")
        return
    if summary.top:
        table = Table(title=f"Top trials of {summary.study} ({summary.metric}, "
                            f"{wording(summary.direction)})", title_justify="left")
        for column in ("trial", summary.metric, "optimizer", "config", "epochs", "seconds"):
            table.add_column(column)
        for r in summary.top:
            table.add_row(str(r.number), _fmt(r.value), str(r.optimizer),
                          _describe(r.config).partition(" ")[2], str(r.epochs_run),
                          "-" if r.seconds is None else f"{r.seconds:.1f}")
        console.print(table)
    else:  # e.g. every learning rate diverged: say so rather than show an empty table
        console.print(Text(f"No trial of {summary.study} completed, so there is no best value "
                           f"yet (most ended: {', '.join(summary.endings)}); widen or move the "
                           f"ranges, or run more trials.", style="yellow"))
    per = Table(title="Per optimizer", title_justify="left")
    for column in ("optimizer", "trials", "complete", "pruned", "failed", "best", "median"):
        per.add_column(column)
    for g in summary.families:
        per.add_row(_fmt(g.key), str(g.trials), str(g.complete), str(g.pruned), str(g.failed),
                    _fmt(g.best), _fmt(g.median))
    console.print(per)
    if summary.best is not None:
        console.print(f"Best: trial {summary.best.number}, {summary.metric}="
                      f"{_fmt(summary.best.value)} ({_describe(summary.best.config)})")
    console.print(f"See it in MLflow: opttune ui (or mlflow ui --backend-store-uri "
                  f"{redact(result.stores.tracking_uri)})", style="dim")


def print_study_ready(result: SearchResult) -> None:
    """After `--jobs 0`: the study exists with its budget; say how to run its trials."""
    stores = result.stores
    where = f"--storage {redact(stores.storage_url)}" if stores.sqlite_path is None or \
        stores.sqlite_path.parent != stores.home else f"--home {stores.home}"
    console.print(f"Study [bold]{result.study}[/] is ready: {result.total_counted} of "
                  f"{result.target} trials done; none run here (--jobs 0).")
    console.print("Run its trials from any machine that reaches the store:")
    console.print(f"  opttune worker {result.study} {where}", markup=False, soft_wrap=True)


def print_error(message: str) -> None:
    err_console.print(f"Error: {redact(message)}", style="red", markup=False)


def print_check(result: CheckReport) -> None:
    """What `opttune check` found in a study's two stores, and what it repaired."""
    console.print(f"Study [bold]{result.study}[/]: {result.trials} trials, {result.runs} MLflow "
                  f"trial runs")
    if result.running:
        console.print(f"Running now (left alone): trials "
                      f"{', '.join(str(n) for n in result.running)}", style="dim")
    for note in result.notes:
        print_notice(note)
    if not result.problems:
        console.print(Text("No problems: no trial is left RUNNING, and every finished trial "
                           "has an MLflow run with the matching status.", style="green"))
        return
    table = Table(title="Problems", title_justify="left")
    for column in ("problem", "found", "fixed" if result.fixed else "--fix will"):
        table.add_column(column)
    for p in result.problems:
        table.add_row(p.kind, p.found, p.repair)
    console.print(table)
    if result.fixed:
        console.print(Text(f"Repaired {len(result.problems)} problem(s).", style="green"))
    else:
        console.print(Text(f"Run `opttune check {result.study} --fix` to repair them "
                           f"(`opttune resume {result.study}` repairs them too).", style="yellow"))


# -- looking at studies (studies, trials, best, compare, plot, export, retrain, ui, dashboard,
# delete) ---------------------------------------------------------------------------------------
def _table(title: str, columns: tuple[str, ...], *, wide: tuple[str, ...] = ()) -> Table:
    """A compact table whose headers stay whole; long cells (the `wide` columns) fold."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold",
                         min_width=None if column in wide else
                         max(len(line) for line in column.split("\n")))
    return table


def _print_table(table: Table) -> None:
    """On a terminal, fit its width; into a file or pipe, never wrap a row."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    Console(highlight=False, width=max(console.width, natural)).print(table)


def _params_text(params: Mapping[str, object]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def print_studies(found: StudyList) -> None:
    if not found.studies:
        console.print(f"No studies in {found.storage} yet; `opttune search --task T` starts "
                      f"one.", markup=False, soft_wrap=True)
        return
    table = _table(f"Studies in {found.storage}", ("study", "task", "complete", "pruned",
                                                    "failed", "running", "best",
                                                    "last activity", "data"),
                   wide=("study", "task", "data"))
    for r in found.studies:
        best = f"{r.metric} {_fmt(r.best_value)} #{r.best_trial}" \
            if r.best_value is not None else "-"
        table.add_row(r.study, str(r.task), str(r.complete), str(r.pruned), str(r.failed),
                      str(r.running), best, (r.last_activity or "-").replace("T", " "),
                      str(r.data_source))
    _print_table(table)


def print_trials(found: TrialList) -> None:
    if not found.trials:
        console.print(f"No trials of {found.study} match.", markup=False)
        return
    table = _table(f"Trials of {found.study}", ("#", "state", found.metric, "optimizer",
                                                "params", "batch", "epochs", "seconds",
                                                "MLflow run"),
                   wide=("params", "MLflow run"))
    for r in found.trials:
        params = ("(PyTorch defaults) " if r.defaults_trial else "") + _params_text(r.params)
        table.add_row(str(r.number), r.state.lower(), _fmt(r.value), str(r.optimizer), params,
                      _fmt(r.batch_size), f"{r.epochs_run}/{_fmt(r.epochs)}", _fmt(r.seconds),
                      r.run_id or "-")
    _print_table(table)


def print_best(best: BestTrial) -> None:
    t = best.trial
    console.print(f"Best trial of [bold]{best.study}[/]: #{t.number}, {t.metric} = "
                  f"[bold]{_fmt(t.value)}[/] "
                  f"({wording(best.direction)})")
    table = _table("Configuration", ("parameter", "value"))
    table.add_row("optimizer", str(t.optimizer))
    for key, value in [*t.params.items(), ("batch_size", t.batch_size), ("epochs", t.epochs),
                       ("scheduler", t.scheduler)]:
        table.add_row(key, repr(value) if isinstance(value, float) else str(value))
    _print_table(table)
    console.print(f"MLflow run: {t.run_id or '-'} · trained {_fmt(t.seconds)} s"
                  f"{' · the PyTorch-defaults trial' if t.defaults_trial else ''}")
    console.print("Run exactly this configuration again:")
    console.print(f"  {best.command}", markup=False, soft_wrap=True)


def _spread(g: GroupStats) -> str:
    if g.median is None:
        return "-"
    return f"{_fmt(g.median)} [{_fmt(g.iqr)}]"


def _default_text(g: GroupStats) -> str:
    if g.default_trial is None or g.default_state is None:
        return "-"
    if g.default_state != "COMPLETE":
        return f"{g.default_state.lower()} #{g.default_trial}"
    return f"{_fmt(g.default_value)} #{g.default_trial}"


def _best_text(g: GroupStats) -> str:
    return "-" if g.best is None else f"{_fmt(g.best)} #{g.best_trial}"


def print_compare(result: Comparison) -> None:
    """One study: every column per group; several: the key numbers side by side."""
    by, studies = result.by, result.studies
    if len(studies) == 1:
        s = studies[0]
        table = _table(f"{s.study}: {s.metric} by {by} ({wording(s.direction)}; median and IQR of "
                       f"complete trials; gain = tuned best vs PyTorch defaults)",
                       (by, "trials", "complete", "pruned", "failed", "best", "median", "IQR",
                        "defaults", "gain", "mean s"), wide=(by,))
        for g in s.groups:
            gain = g.gain_over_default
            table.add_row(_fmt(g.key), str(g.trials), str(g.complete), str(g.pruned),
                          str(g.failed), _best_text(g), _fmt(g.median), _fmt(g.iqr),
                          _default_text(g), "-" if gain is None else f"{gain:+.4g}",
                          _fmt(g.mean_seconds))
        _print_table(table)
        for g in s.groups:
            if g.no_gain_reason and g.complete:
                console.print(f"{_fmt(g.key)}: no gain shown, {g.no_gain_reason}.",
                              markup=False)
        return
    columns = [by]
    for s in studies:
        columns += [f"{s.study}\nbest", f"{s.study}\nmedian [IQR]", f"{s.study}\ndefaults"]
    table = _table(f"{', '.join(s.study for s in studies)}: "
                   f"{' / '.join(dict.fromkeys(s.metric for s in studies))} by {by}",
                   tuple(columns), wide=(by,))
    for key in dict.fromkeys(g.key for s in studies for g in s.groups):
        row = [_fmt(key)]
        for s in studies:
            found = next((g for g in s.groups if g.key == key), None)
            row += ["-", "-", "-"] if found is None else [_best_text(found), _spread(found),
                                                           _default_text(found)]
        table.add_row(*row)
    _print_table(table)


def print_written(written: WrittenFile) -> None:
    what = f"{written.records} trials" if written.records is not None else \
        f"the {written.kind} plot"
    console.print(f"Wrote {what} of {written.study} to {written.path}", markup=False)


def print_retrain(result: RetrainResult) -> None:
    console.print(f"Retrained trial {result.trial} of [bold]{result.study}[/] "
                  f"({_describe(result.config)}, {result.config.get('epochs')} epochs) on "
                  f"train+validation ({result.train_samples} samples) in "
                  f"{result.seconds:.1f} s on {result.device}")
    metrics = "  ".join(f"{k} = {v:.4f}" for k, v in result.test.items())
    console.print(f"Test split ({result.test_samples} samples, scored once): "
                  f"[bold]{metrics}[/]")
    console.print(f"Saved {result.model_path} and {result.config_path}", markup=False)
    console.print(f"MLflow run: {result.run_id}", style="dim")


def print_ui(plan: UiPlan) -> None:
    what = f"study {plan.study}" if plan.study else "all studies"
    console.print(f"MLflow UI for {what} ({plan.tracking_uri}), on 127.0.0.1 only:",
                  markup=False, soft_wrap=True)
    console.print(plan.url, markup=False, soft_wrap=True)
    if plan.study:
        console.print("The study's run holds its trials: click + beside it to list them.",
                      style="dim")
    console.print("Starting the server; Ctrl-C stops it.", style="dim")
    sys.stdout.flush()


def print_ui_ready(plan: UiPlan) -> None:
    err_console.print(f"Ready: {plan.url}", style="green", markup=False, soft_wrap=True)


def print_dashboard(plan: DashboardPlan) -> None:
    what = f"study {plan.study}" if plan.study else "all studies"
    console.print(f"Optuna Dashboard {plan.version} for {what} ({plan.storage}), on 127.0.0.1 "
                  f"only:", markup=False, soft_wrap=True)
    console.print(plan.url, markup=False, soft_wrap=True)
    console.print("Starting the server; Ctrl-C stops it.", style="dim")
    sys.stdout.flush()


def print_dashboard_ready(plan: DashboardPlan) -> None:
    err_console.print(f"Ready: {plan.url}", style="green", markup=False, soft_wrap=True)


def print_deleted(info: Deleted) -> None:
    experiment = info["experiment_id"]
    mlflow = {"deleted": f"its MLflow experiment {experiment} is marked deleted",
              "not found": "it had no MLflow experiment to delete"}.get(
        info["mlflow"], f"its MLflow experiment {experiment} was left: {info['mlflow']}")
    console.print(f"Deleted study {info['study']} ({info['trials']} trials); {mlflow}.",
                  markup=False)


# -- benchmark ------------------------------------------------------------------------------
class BenchmarkDisplay(NullObserver):
    """The Observer of `opttune benchmark`: the space once, one line per search trial and per
    re-run. With --format json it writes to stderr, so that stdout holds the document alone."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.out = err_console if quiet else console
        self.metric = ""
        self.space_shown = False
        self.shown: set[str] = set()  # the optimizers whose space is shown

    def notice(self, text: str) -> None:
        print_notice(text)

    def space_ready(self, space: Space) -> None:
        # Called with every optimizer's space, or once per optimizer (each searched in a
        # space of its own), and again by each search: each optimizer is shown once. The
        # schedule is a condition of the benchmark, not searched.
        if not self.space_shown:
            self.space_shown = True
            self.out.print(f"Each optimizer's search space ({space.epochs} epochs per trial "
                           f"and re-run):")
        rows = [r for r in space.rows() if r[1] not in ("epochs", "scheduler")
                and r[0] not in self.shown and (r[0] in space.families or not self.shown)]
        if not any(r[0] in space.families for r in rows):
            return
        self.shown.update(space.families)
        table = _table("", ("optimizer", "parameter", "searched over"))
        for family, name, where, _ in rows:
            table.add_row(family, name, where)
        self.out.print(table)

    def study_start(self, info: StudyStart) -> None:
        self.metric = info["metric"]
        self.out.print(f"Searching [bold]{info['study']}[/]: {info['done']} of "
                       f"{info['target']} trials done · device {info['device']}")

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        tail = f" ({outcome.reason})" if outcome.reason else ""
        self.out.print(Text(f"  trial {outcome.number:>3} {outcome.state.lower():<8} "
                            f"{self.metric}={_fmt(outcome.value)} · {_describe(outcome.config)}"
                            f" · {outcome.seconds:.1f}s{tail}"))

    def rerun_end(self, rerun: Rerun, entry: RerunEntry, done: int, total: int) -> None:
        result = (f"diverged ({entry['diverged']})" if entry["value"] is None
                  else f"test {_fmt(entry['value'])}")
        stacked = f" · population of {entry['population']}" if entry["population"] > 1 else ""
        self.out.print(Text(f"re-run {done}/{total}: {rerun.family} {rerun.schedule} "
                            f"{rerun.source} seed {rerun.index} → {result} · "
                            f"{entry['seconds']:.1f}s{stacked}"))

    def close(self) -> None:
        pass


def print_task_profile(result: TaskProfile) -> None:
    """Each task's benchmark table, then the performance profile's scores across them."""
    for report in result.reports:
        print_benchmark(report)
    table = _table(f"Performance profile over {len(result.reports)} tasks (AlgoPerf): area "
                   f"under the fraction of tasks within tau of the fastest, tau 1 to "
                   f"{result.tau_max:g}; 1 is fastest everywhere",
                   ("entry", "score", *(r.task for r in result.reports)))
    for entry, score in sorted(result.scores.items(), key=lambda kv: -kv[1]):
        seconds = [result.times[r.task].get(entry) for r in result.reports]
        table.add_row(entry, f"{score:.3f}",
                      *("never" if t is None else f"{t:.3g}s" for t in seconds))
    _print_table(table)
    for path in result.files:
        console.print(f"Wrote {path}", markup=False)


def _cell_range(c: BenchmarkCell) -> str:
    if c.low is None or c.high is None:
        return "-"
    return f"{c.low:.4f}–{c.high:.4f}"


def _change(c: BenchmarkCell) -> str:
    return "-" if c.change is None else f"{c.change:+.4f}"


def print_benchmark(report: BenchmarkReport) -> None:
    """The schedule × optimizer × budget table, the paper's view (change against one-shot
    Adam), the headline comparison, how to read them, files."""
    several = len(report.schedules) > 1
    target = "-" if report.target is None else f"{report.target:.4f}"
    table = _table(f"Benchmark {report.benchmark} · task {report.task} · {report.metric} on "
                   f"the test split, {report.seeds} seed(s) per cell ({wording(report.direction)})",
                   (*(("schedule",) if several else ()), "optimizer", "budget", "median",
                    "min–max", "diverged", "vs " + (report.baseline or "baseline"),
                    "paired\n[95% CI]", f"to {target}\nepochs / s", "trials", "setting",
                    "time"), wide=("setting",))
    for c in report.cells:
        setting = _describe(c.setting).partition(" ")[2] if c.setting else "-"
        if c.missing:
            setting = f"({c.missing}) " + (setting if c.scores else "")
        table.add_row(*((c.schedule,) if several else ()), c.optimizer, c.budget,
                      _fmt(c.median), _cell_range(c), f"{c.diverged}/{len(c.scores)}",
                      _change(c), paired_text(c.paired), target_text(c),
                      str(c.trials) if c.budget != "oneshot" else "-", setting,
                      f"{c.tuning_seconds + c.rerun_seconds:.0f}s")
    _print_table(table)
    for head in report.headline:
        rows = ", ".join(f"{opt} {paired_text(change)}" for opt, change in head.rows.items())
        console.print(f"Best one-shot by validation ({head.schedule}): {head.oneshot}. Tuned "
                      f"({head.budget}) against it, paired: {rows}", markup=False)
    if report.baseline is None:
        console.print("No change column: it compares each cell with a one-shot cell (Adam's, "
                      "else the first optimizer's), which this benchmark does not run (add "
                      "oneshot to --budgets).", style="dim")
    console.print(reading(report), style="dim", markup=False)
    console.print(f"Searches: {', '.join(report.studies) or 'none (one-shot only)'} · data: "
                  f"{report.data_source}", style="dim")
    for path in report.files:
        console.print(f"Wrote {path}", markup=False)
