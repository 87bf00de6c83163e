"""The command line: thin click commands over the library; each renders through tuner.report.

Only click is imported at start-up, so `opttune --help` is instant; torch, optuna and mlflow
load inside the commands that need them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
PARAM_FLAGS = ("lr", "momentum", "beta1", "beta2", "alpha", "eps", "weight_decay")


@contextmanager
def user_errors() -> Iterator[None]:
    """Library errors become one `Error: …` line and exit code 1, with no traceback."""
    from tuner.errors import OpttuneError

    try:
        yield
    except OpttuneError as exc:
        raise click.ClickException(str(exc)) from None


def store_options(func: F) -> F:
    func = click.option("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI [default: sqlite:///HOME/mlflow.db].")(func)
    func = click.option("--storage", default=None, metavar="URL",
                        help="Optuna storage URL [default: sqlite:///HOME/opttune.db].")(func)
    func = click.option("--home", default=None, metavar="DIR", type=click.Path(file_okay=False),
                        help="Folder of the stores [default: $OPTTUNE_HOME or ./studies].")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="opttune")
def cli() -> None:
    """Tune the optimizer of a PyTorch model with Optuna, logged to MLflow."""


@cli.command()
@click.option("--task", required=True, help="Built-in task name, module:attr or file.py:attr.")
@click.option("--study", default=None, help="Study name [default: the task's name].")
@click.option("--n-trials", default=20, show_default=True, type=int,
              help="The study's total number of trials.")
@click.option("--timeout", default=None, type=float, help="Stop starting trials after S seconds.")
@click.option("--epochs", default=None, type=int, help="Epochs per trial [default: 3].")
@click.option("--optimizers", default=None, metavar="LIST",
              help="Families to compare, e.g. sgd,momentum,adam [default: sgd, momentum, "
                   "nesterov, adam, adamw, rmsprop].")
@click.option("--lr", multiple=True, metavar="SPEC", help="Learning rate: LOW:HIGH, a,b,c or "
              "a value; family=SPEC scopes it (repeatable).")
@click.option("--momentum", multiple=True, metavar="SPEC", help="Momentum (SGD families, RMSprop).")
@click.option("--beta1", multiple=True, metavar="SPEC", help="Adam-family beta1.")
@click.option("--beta2", multiple=True, metavar="SPEC", help="Adam-family beta2.")
@click.option("--alpha", multiple=True, metavar="SPEC", help="RMSprop smoothing constant.")
@click.option("--eps", multiple=True, metavar="SPEC", help="Epsilon (Adam family, RMSprop).")
@click.option("--weight-decay", multiple=True, metavar="SPEC",
              help="Weight decay; 0 turns it off.")
@click.option("--batch-size", default=None, metavar="LIST", help="e.g. 64,128,256 [default: "
              "the task's, 128].")
@click.option("--scheduler", default=None, metavar="LIST",
              help="none, cosine, step, onecycle, warmup, or a comma list [default: none].")
@click.option("--space", "space_file", default=None, type=click.Path(dir_okay=False),
              help="A TOML (or YAML) space file; flags override it.")
@click.option("--no-defaults", is_flag=True, help="Skip the PyTorch-defaults trial per family.")
@click.option("--sampler", default="tpe", show_default=True,
              type=click.Choice(["tpe", "random", "cmaes", "qmc"]))
@click.option("--pruner", default="median", show_default=True,
              type=click.Choice(["median", "hyperband", "none"]))
@click.option("--seed", default=None, type=int, help="Seed for a reproducible study.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N or mps (auto: CUDA, then MPS, then CPU).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with the task's data files (e.g. the four MNIST IDX files).")
@click.option("--allow-changed-space", is_flag=True,
              help="Continue a study even though its space changed; old trials still count.")
@store_options
def search(**kwargs: Any) -> None:
    """Create a study (or continue the one of that name) and run trials."""
    params = {name: list(kwargs.pop(name)) for name in PARAM_FLAGS if kwargs.get(name)}
    for name in PARAM_FLAGS:
        kwargs.pop(name, None)
    optimizers = kwargs.pop("optimizers")
    kwargs["optimizers"] = optimizers.split(",") if optimizers else None
    kwargs["defaults_first"] = not kwargs.pop("no_defaults")
    _run_search("search", params=params, **kwargs)


@cli.command()
@click.argument("name")
@click.option("--n-trials", default=None, type=int,
              help="Run N more trials [default: up to the study's budget].")
@click.option("--timeout", default=None, type=float, help="Stop starting trials after S seconds.")
@click.option("--device", default=None, help="Override the stored device.")
@store_options
def resume(**kwargs: Any) -> None:
    """Continue a study with its stored task, space and settings."""
    _run_search("resume", **kwargs)


def _run_search(kind: str, **kwargs: Any) -> None:
    from tuner import report, runner

    quiet_libraries()
    display = report.SearchDisplay()
    try:
        with user_errors():
            if kind == "search":
                _show_space(kwargs)
                result = runner.search(observer=display, **kwargs)
            else:
                result = runner.resume(kwargs.pop("name"), observer=display, **kwargs)
    except runner.Interrupted as exc:
        display.close()
        report.print_error(f"{exc}; finished trials are saved, the interrupted one is marked "
                           f"failed and will run again on resume")
        sys.exit(exc.exit_code)
    finally:
        display.close()
    report.print_search_summary(result, result.all_trials)


def quiet_libraries() -> None:
    """Optuna's and MLflow's INFO lines repeat what our display shows."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _show_space(kwargs: dict[str, Any]) -> None:
    """Resolve and print the space before any data is read or store is touched."""
    from pathlib import Path

    from tasks.registry import get_task
    from tuner import report
    from tuner.space import build_space
    from tuner.spacefile import load_space_file

    task = get_task(kwargs["task"])
    file_values = load_space_file(Path(kwargs["space_file"])) if kwargs.get("space_file") else None
    space = build_space(optimizers=kwargs["optimizers"], params=kwargs["params"],
                        batch_size=kwargs["batch_size"], epochs=kwargs["epochs"],
                        scheduler=kwargs["scheduler"], file_values=file_values,
                        default_batch_size=task.batch_size,
                        defaults_first=kwargs["defaults_first"])
    report.print_space(space)


@cli.command()
@click.option("--format", "fmt", default="table", type=click.Choice(["table", "json"]),
              show_default=True)
def tasks(fmt: str) -> None:
    """List the tasks: what each trains, on what data, and its objective."""
    from tasks.registry import list_tasks
    from tuner import report

    with user_errors():
        found = list_tasks()
    if fmt == "json":
        report.print_json([{"name": t.name, "summary": t.summary, "data": t.data,
                            "model": t.model, "metric": t.metric, "direction": t.direction}
                           for t in found])
    else:
        report.print_tasks(found)


def main() -> None:
    cli(prog_name="opttune")


if __name__ == "__main__":
    main()
