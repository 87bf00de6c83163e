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

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tuner.events import TrialOutcome

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


def print_tasks(tasks: list[Any]) -> None:
    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "what it trains", "data", "model", "objective"):
        table.add_column(column)
    for t in tasks:
        objective = f"{t.metric} ({'max' if t.direction == 'maximize' else 'min'})"
        table.add_row(t.name, t.summary, t.data, t.model, objective)
    console.print(table)


class SearchDisplay:
    """The Observer the CLI hands to a search: live progress, then the summary."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self.line = ""
        self.best: TrialOutcome | None = None
        self.device = ""
        self.metric = ""
        self.current: dict[str, Any] = {}

    # Observer protocol
    def notice(self, text: str) -> None:
        print_notice(text)

    def study_start(self, info: dict[str, Any]) -> None:
        self.device, self.metric = info["device"], info["metric"]
        console.print(f"Study [bold]{info['study']}[/]: {info['done']} of {info['target']} "
                      f"trials done · device [bold]{info['device']}[/] · data: "
                      f"{info['data_source']}")
        console.print(f"Stores: {info['stores'].storage_url} · MLflow "
                      f"{info['stores'].tracking_uri}", style="dim")
        if console.is_terminal:
            self.live = Live(Text(""), console=console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_start(self, number: int, config: dict[str, Any], index: int, total: int) -> None:
        self.current = {"number": number, "index": index, "total": total, "config": config}
        self._update(f"trial {index} of {total} (#{number}) · {_describe(config)}")

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        c = self.current
        self._update(f"trial {c['index']} of {c['total']} (#{number}) · epoch {epoch + 1}/"
                     f"{epochs} · {self.metric} {value:.4f} · best "
                     f"{_fmt(self.best.value if self.best else None)} · {self.device}")

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        self.best = best
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
    console.print(table)
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
                  f"{result.stores.tracking_uri})", style="dim")


def print_error(message: str) -> None:
    err_console.print(f"Error: {message}", style="red", markup=False)
