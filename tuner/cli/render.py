"""Everything opttune shows a person: the only module that prints.

On a terminal a live line shows the trial, epoch, current and best value and the device; when
the output is a file or a pipe it prints one plain line per trial instead.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tuner.search.events import TrialOutcome
from tuner.study.stores import redact

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else (for --format json)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_notice(text: str) -> None:
    err_console.print(Text(f"Note: {text}", style="bold yellow"))


def print_space(space: Any, *, title: str = "Search space") -> None:
    table = Table(title=title, title_justify="left")
    for column in ("optimizer", "parameter", "searched over", "default trial"):
        table.add_column(column)
    for row in space.rows():
        table.add_row(*row)
    console.print(table)
    if space.defaults_first:
        console.print("The first trial of each optimizer runs its PyTorch defaults.")


def print_tasks(tasks: list[Any], *, sizes: dict[str, int | None] | None = None) -> None:
    """One row per task; `sizes` maps a task's name to its model's parameter count."""
    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "what it trains", "data", "model", "params", "objective"):
        table.add_column(column, no_wrap=column in ("task", "objective"))
    for t in tasks:
        objective = f"{t.metric} ({'max' if t.direction == 'maximize' else 'min'})"
        model = t.model + ("\ntask params: " + ", ".join(
            f"{k}={v}" for k, v in t.hyperparams.items()) if t.hyperparams else "")
        table.add_row(t.name, t.summary, t.data, model, _count((sizes or {}).get(t.name)),
                      objective)
    console.print(table)


def _count(n: int | None) -> str:
    """235146 -> '235k'."""
    if n is None:
        return "-"
    return str(n) if n < 1000 else f"{n / 1e3:.3g}k" if n < 1e6 else f"{n / 1e6:.3g}M"


class SearchDisplay:
    """The Observer the CLI hands to a search: live progress, then the summary."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self.line = ""
        self.best: TrialOutcome | None = None
        self.device = ""
        self.metric = ""
        self.current: dict[int, dict[str, Any]] = {}

    # Observer protocol
    def notice(self, text: str) -> None:
        print_notice(text)

    def study_start(self, info: dict[str, Any]) -> None:
        self.device, self.metric = info["device"], info["metric"]
        console.print(f"Study [bold]{info['study']}[/]: {info['done']} of {info['target']} "
                      f"trials done · device [bold]{info['device']}[/] · data: "
                      f"{info['data_source']}")
        console.print(f"Stores: {redact(info['stores'].storage_url)} · MLflow "
                      f"{redact(info['stores'].tracking_uri)}", style="dim")
        if console.is_terminal:
            self.live = Live(Text(""), console=console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_start(self, number: int, config: dict[str, Any], index: int, total: int) -> None:
        # Keyed by trial: with --jobs, several trials run at once.
        self.current[number] = {"index": index, "total": total}
        self._update(f"trial {index} of {total} (#{number}) · {_describe(config)}")

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        c = self.current.get(number, {"index": "?", "total": "?"})
        self._update(f"trial {c['index']} of {c['total']} (#{number}) · epoch {epoch + 1}/"
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


def _describe(config: dict[str, Any]) -> str:
    keys = ("lr", "momentum", "beta1", "beta2", "alpha", "eps", "weight_decay")
    parts = [str(config.get("optimizer"))]
    parts += [f"{k}={_fmt(config[k])}" for k in keys if k in config]
    if "batch_size" in config:
        parts.append(f"bs={config['batch_size']}")
    # The task's own hyperparameters (hidden, dropout, …): whatever else the config holds.
    skip = {"optimizer", *keys, "batch_size", "epochs", "scheduler"}
    parts += [f"{k}={_fmt(v)}" for k, v in config.items() if k not in skip]
    return " ".join(parts)


def print_search_summary(result: Any, trials: list[TrialOutcome]) -> None:
    """Top trials and the best per optimizer, over the whole study."""
    if not trials:
        console.print(f"Study {result.study} already has {result.total_counted} of "
                      f"{result.target} trials; `opttune resume {result.study} --n-trials N` "
                      f"runs more.")
        return
    reverse = result.direction == "maximize"
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    done.sort(key=lambda t: t.value, reverse=reverse)  # type: ignore[arg-type,return-value]
    table = Table(title=f"Top trials of {result.study} ({result.metric}, "
                        f"{'higher' if reverse else 'lower'} is better)", title_justify="left")
    for column in ("trial", result.metric, "optimizer", "config", "epochs", "seconds"):
        table.add_column(column)
    for t in done[:5]:
        table.add_row(str(t.number), _fmt(t.value), str(t.config.get("optimizer")),
                      _describe(t.config).partition(" ")[2], str(t.epochs_run), f"{t.seconds:.1f}")
    if done:
        console.print(table)
    else:  # e.g. every learning rate diverged: say so rather than show an empty table
        reasons = statistics.multimode([t.reason or t.state.lower() for t in trials])
        console.print(Text(f"No trial of {result.study} completed, so there is no best value "
                           f"yet (most ended: {', '.join(reasons)}); widen or move the ranges, "
                           f"or run more trials.", style="yellow"))
    per = Table(title="Per optimizer", title_justify="left")
    for column in ("optimizer", "trials", "complete", "pruned", "failed", "best", "median"):
        per.add_column(column)
    families: dict[str, list[TrialOutcome]] = {}
    for t in trials:
        families.setdefault(str(t.config.get("optimizer")), []).append(t)
    for name, group in families.items():
        values = [t.value for t in group if t.state == "COMPLETE" and t.value is not None]
        best = (max if reverse else min)(values) if values else None
        per.add_row(name, str(len(group)), str(sum(t.state == "COMPLETE" for t in group)),
                    str(sum(t.state == "PRUNED" for t in group)),
                    str(sum(t.state == "FAIL" for t in group)), _fmt(best),
                    _fmt(statistics.median(values) if values else None))
    console.print(per)
    if result.best is not None:
        console.print(f"Best: trial {result.best.number}, {result.metric}="
                      f"{_fmt(result.best.value)} ({_describe(result.best.config)})")
    console.print(f"See it in MLflow: opttune ui (or mlflow ui --backend-store-uri "
                  f"{redact(result.stores.tracking_uri)})", style="dim")


def print_study_ready(result: Any) -> None:
    """After `--jobs 0`: the study exists with its budget; say how to run its trials."""
    stores = result.stores
    where = f"--storage {redact(stores.storage_url)}" if stores.sqlite_path is None or \
        stores.sqlite_path.parent != stores.home else f"--home {stores.home}"
    console.print(f"Study [bold]{result.study}[/] is ready: {result.total_counted} of "
                  f"{result.target} trials done; none run here (--jobs 0).")
    console.print("Run its trials from any machine that reaches the store:")
    console.print(f"  opttune worker {result.study} {where}", markup=False, soft_wrap=True)


def print_error(message: str) -> None:
    err_console.print(f"Error: {message}", style="red", markup=False)


def print_check(result: Any) -> None:
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


# -- looking at studies (studies, trials, best, compare, plot, export, retrain, ui, delete) ----
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
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    Console(highlight=False, width=max(console.width, natural)).print(table)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def print_studies(rows: list[dict[str, Any]], *, storage: str) -> None:
    if not rows:
        console.print(f"No studies in {storage} yet; `opttune search --task T` starts one.",
                      markup=False, soft_wrap=True)
        return
    table = _table(f"Studies in {storage}", ("study", "task", "complete", "pruned", "failed",
                                              "running", "best", "last activity", "data"),
                   wide=("study", "task", "data"))
    for r in rows:
        best = f"{r['metric']} {_fmt(r['best_value'])} #{r['best_trial']}" \
            if r["best_value"] is not None else "-"
        table.add_row(r["study"], str(r["task"]), str(r["complete"]), str(r["pruned"]),
                      str(r["failed"]), str(r["running"]), best,
                      (r["last_activity"] or "-").replace("T", " "), str(r["data_source"]))
    _print_table(table)


def print_trials(rows: list[dict[str, Any]], *, study: str) -> None:
    if not rows:
        console.print(f"No trials of {study} match.", markup=False)
        return
    metric = rows[0]["metric"]
    table = _table(f"Trials of {study}", ("#", "state", metric, "optimizer", "params",
                                          "batch", "epochs", "seconds", "MLflow run"),
                   wide=("params", "MLflow run"))
    for r in rows:
        params = ("(PyTorch defaults) " if r["defaults_trial"] else "") + \
            _params_text(r["params"])
        table.add_row(str(r["number"]), r["state"].lower(), _fmt(r["value"]),
                      str(r["optimizer"]), params, _fmt(r["batch_size"]),
                      f"{r['epochs_run']}/{_fmt(r['epochs'])}", _fmt(r["seconds"]),
                      r["run_id"] or "-")
    _print_table(table)


def print_csv(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """CSV on stdout (for --format csv): a header, then one line per row."""
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def print_best(best: dict[str, Any]) -> None:
    console.print(f"Best trial of [bold]{best['study']}[/]: #{best['number']}, "
                  f"{best['metric']} = [bold]{_fmt(best['value'])}[/] "
                  f"({'higher' if best['direction'] == 'maximize' else 'lower'} is better)")
    table = _table("Configuration", ("parameter", "value"))
    table.add_row("optimizer", str(best["optimizer"]))
    for key, value in [*best["params"].items(), ("batch_size", best["batch_size"]),
                       ("epochs", best["epochs"]), ("scheduler", best["scheduler"])]:
        table.add_row(key, repr(value) if isinstance(value, float) else str(value))
    _print_table(table)
    console.print(f"MLflow run: {best['run_id'] or '-'} · trained {_fmt(best['seconds'])} s"
                  f"{' · the PyTorch-defaults trial' if best['defaults_trial'] else ''}")
    console.print("Run exactly this configuration again:")
    console.print(f"  {best['command']}", markup=False, soft_wrap=True)


def _spread(g: dict[str, Any]) -> str:
    if g["median"] is None:
        return "-"
    return f"{_fmt(g['median'])} [{_fmt(g['iqr'])}]"


def _default_text(g: dict[str, Any]) -> str:
    if g["default_trial"] is None:
        return "-"
    if g["default_state"] != "COMPLETE":
        return f"{g['default_state'].lower()} #{g['default_trial']}"
    return f"{_fmt(g['default_value'])} #{g['default_trial']}"


def print_compare(result: dict[str, Any]) -> None:
    """One study: every column per group; several: the key numbers side by side."""
    by, studies = result["by"], result["studies"]
    if len(studies) == 1:
        s = studies[0]
        better = "higher" if s["direction"] == "maximize" else "lower"
        table = _table(f"{s['study']}: {s['metric']} by {by} ({better} is better; median and "
                       f"IQR of complete trials; gain = tuned best vs PyTorch defaults)",
                       (by, "trials", "complete", "pruned", "failed", "best", "median", "IQR",
                        "defaults", "gain", "mean s"), wide=(by,))
        for g in s["groups"]:
            gain = g["gain_over_default"]
            table.add_row(_fmt(g[by]), str(g["trials"]), str(g["complete"]), str(g["pruned"]),
                          str(g["failed"]), _best_text(g), _fmt(g["median"]), _fmt(g["iqr"]),
                          _default_text(g), "-" if gain is None else f"{gain:+.4g}",
                          _fmt(g["mean_seconds"]))
        _print_table(table)
        return
    columns = [by]
    for s in studies:
        columns += [f"{s['study']}\nbest", f"{s['study']}\nmedian [IQR]",
                    f"{s['study']}\ndefaults"]
    table = _table(f"{', '.join(s['study'] for s in studies)}: "
                   f"{' / '.join(dict.fromkeys(s['metric'] for s in studies))} by {by}",
                   tuple(columns), wide=(by,))
    keys = list(dict.fromkeys(g[by] for s in studies for g in s["groups"]))
    for key in keys:
        row = [_fmt(key)]
        for s in studies:
            g = next((g for g in s["groups"] if g[by] == key), None)
            row += ["-", "-", "-"] if g is None else [_best_text(g), _spread(g),
                                                       _default_text(g)]
        table.add_row(*row)
    _print_table(table)


def _best_text(g: dict[str, Any]) -> str:
    return "-" if g["best"] is None else f"{_fmt(g['best'])} #{g['best_trial']}"


def print_written(what: str, path: str) -> None:
    console.print(f"Wrote {what} to {path}", markup=False)


def print_retrain(result: dict[str, Any]) -> None:
    config = dict(result["config"])
    console.print(f"Retrained trial {result['trial']} of [bold]{result['study']}[/] "
                  f"({_describe(config)}, {config.get('epochs')} epochs) on train+validation "
                  f"({result['train_samples']} samples) in {result['seconds']:.1f} s on "
                  f"{result['device']}")
    metrics = "  ".join(f"{k} = {v:.4f}" for k, v in result["test"].items())
    console.print(f"Test split ({result['test_samples']} samples, scored once): "
                  f"[bold]{metrics}[/]")
    console.print(f"Saved {result['model_path']} and {result['config_path']}", markup=False)
    console.print(f"MLflow run: {result['run_id']}", style="dim")


def print_ui(plan: Any) -> None:
    what = f"study {plan.study}" if plan.study else "all studies"
    console.print(f"MLflow UI for {what} ({plan.tracking_uri}), on 127.0.0.1 only:",
                  markup=False, soft_wrap=True)
    console.print(plan.url, markup=False, soft_wrap=True)
    if plan.study:
        console.print("The study's run holds its trials: click + beside it to list them.",
                      style="dim")
    console.print("Starting the server; Ctrl-C stops it.", style="dim")
    sys.stdout.flush()


def print_ui_ready(plan: Any) -> None:
    err_console.print(f"Ready: {plan.url}", style="green", markup=False, soft_wrap=True)


def print_deleted(info: dict[str, Any]) -> None:
    experiment = info["experiment_id"]
    mlflow = {"deleted": f"its MLflow experiment {experiment} is marked deleted",
              "not found": "it had no MLflow experiment to delete"}.get(
        info["mlflow"], f"its MLflow experiment {experiment} was left: {info['mlflow']}")
    console.print(f"Deleted study {info['study']} ({info['trials']} trials); {mlflow}.",
                  markup=False)
