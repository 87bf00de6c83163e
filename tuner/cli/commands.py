"""The command line: thin click commands over the library; each shows its result through
tuner.cli.render.

Only click is imported at start-up, so `opttune --help` is instant; torch, optuna and mlflow
load inside the commands that need them.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypedDict, TypeVar

import click

from tuner.errors import OpttuneError
from tuner.logs import quiet_library_logs
from tuner.signals import Interrupted

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

    from tuner.search.events import Observer
    from tuner.search.session import SearchResult

F = TypeVar("F", bound=Callable[..., object])


class StoreOptions(TypedDict):
    """--home, --storage and --tracking-uri (:func:`store_options`), named as every library
    call that opens the stores takes them."""

    home: str | None
    storage: str | None
    tracking_uri: str | None


class RunOptions(StoreOptions):
    """:func:`job_options` and the stores: what `resume` and `worker` pass on as they are."""

    jobs: int | None
    devices: str | None
    trials_per_device: int
    population: int | None


@contextmanager
def user_errors() -> Iterator[None]:
    """Library errors become one `Error: …` line and exit code 1, with no traceback."""
    from tuner.study.locations import redact

    try:
        yield
    except OpttuneError as exc:  # may wrap a library's text that names a store URL
        raise click.ClickException(redact(str(exc))) from None


def store_options(func: F) -> F:
    func = click.option("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI [default: sqlite:///HOME/mlflow.db].")(func)
    func = click.option("--storage", default=None, metavar="URL",
                        help="Optuna storage URL [default: sqlite:///HOME/opttune.db].")(func)
    func = click.option("--home", default=None, metavar="DIR", type=click.Path(file_okay=False),
                        help="Folder of the stores [default: $OPTTUNE_HOME or ./studies].")(func)
    return func


def job_options(func: F) -> F:
    func = click.option("--population", default=None, type=int, metavar="K",
                        help="Trials trained at once as one stacked model; results do not "
                             "depend on it [default: 1; resume and worker: the study's].")(func)
    func = click.option("--trials-per-device", default=1, show_default=True, type=int,
                        metavar="K", help="Trials that may share one device (small models "
                        "leave most of a GPU idle).")(func)
    func = click.option("--devices", default=None, metavar="LIST",
                        help="Devices for --jobs, e.g. cuda:0,cuda:1 [default: every visible "
                             "GPU, else the CPU].")(func)
    func = click.option("--jobs", default=None, type=int, metavar="N",
                        help="Trials at once on this machine, each in its own process "
                             "[default: 1]; 0 runs none (create the study for workers).")(func)
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
                   "nesterov, adam, adamw, rmsprop; also nadam, radam, adagrad, muon, "
                   "schedulefree, lion, prodigy, adafactor].")
@click.option("--lr", multiple=True, metavar="SPEC", help="Learning rate: LOW:HIGH, a,b,c or "
              "a value; family=SPEC scopes it (repeatable).")
@click.option("--momentum", multiple=True, metavar="SPEC",
              help="Momentum (SGD families, RMSprop, muon).")
@click.option("--beta1", multiple=True, metavar="SPEC",
              help="beta1 (Adam family, schedulefree, lion, prodigy).")
@click.option("--beta2", multiple=True, metavar="SPEC", help="Adam-family beta2.")
@click.option("--alpha", multiple=True, metavar="SPEC", help="RMSprop smoothing constant.")
@click.option("--eps", multiple=True, metavar="SPEC", help="Epsilon (Adam family, RMSprop).")
@click.option("--weight-decay", multiple=True, metavar="SPEC",
              help="Weight decay; 0 turns it off.")
@click.option("--adam-lr", multiple=True, metavar="SPEC",
              help="muon: the learning rate of its AdamW side.")
@click.option("--warmup", multiple=True, metavar="SPEC",
              help="schedulefree: warm-up, a fraction of the trial's steps (e.g. 0:0.1).")
@click.option("--d-coef", multiple=True, metavar="SPEC",
              help="prodigy: scales its estimated step size (its lr stays 1).")
@click.option("--decay", multiple=True, metavar="SPEC",
              help="adafactor: c in beta2_t = 1 - t^-c (0.8 by default).")
@click.option("--batch-size", default=None, metavar="LIST", help="e.g. 64,128,256 [default: "
              "the task's, 128].")
@click.option("--scheduler", default=None, metavar="LIST",
              help="none, cosine, step, onecycle, warmup, or a comma list [default: "
                   "none,cosine, a choice; the defaults trials run none].")
@click.option("--space", "space_file", default=None, type=click.Path(dir_okay=False),
              help="A TOML (or YAML) space file; flags override it.")
@click.option("--no-defaults", is_flag=True, help="Skip the PyTorch-defaults trial per family.")
@click.option("--sampler", default="tpe", show_default=True,
              type=click.Choice(["tpe", "random", "cmaes", "qmc"]))
@click.option("--pruner", default="median", show_default=True,
              type=click.Choice(["median", "hyperband", "none"]))
@click.option("--seed", default=None, type=int, help="Seed for a reproducible study.")
@click.option("--trial-seed", default=None, type=int, metavar="N",
              help="Train every trial with seed N instead of a seed per trial (how `opttune "
                   "best` re-runs one trial exactly).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N or mps (auto: CUDA, then MPS, then CPU).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with the task's data files (e.g. the four MNIST IDX files).")
@click.option("--param", "task_params", multiple=True, metavar="NAME=SPEC",
              help="Search a task hyperparameter differently, e.g. hidden=64,128 or "
                   "dropout=0:0.5 (repeatable; see `opttune tasks`).")
@click.option("--allow-changed-space", is_flag=True,
              help="Continue a study even though its space changed; old trials still count.")
@job_options
@store_options
def search(task: str, study: str | None, n_trials: int, timeout: float | None,
           epochs: int | None, optimizers: str | None, lr: tuple[str, ...],
           momentum: tuple[str, ...], beta1: tuple[str, ...], beta2: tuple[str, ...],
           alpha: tuple[str, ...], eps: tuple[str, ...], weight_decay: tuple[str, ...],
           adam_lr: tuple[str, ...], warmup: tuple[str, ...], d_coef: tuple[str, ...],
           decay: tuple[str, ...], batch_size: str | None, scheduler: str | None,
           space_file: str | None, no_defaults: bool, sampler: str, pruner: str,
           seed: int | None, trial_seed: int | None, device: str, data_dir: str | None,
           task_params: tuple[str, ...], allow_changed_space: bool, jobs: int | None,
           devices: str | None, trials_per_device: int, population: int | None,
           **stores: Unpack[StoreOptions]) -> None:
    """Create a study (or continue the one of that name) and run trials."""
    from tuner.search import runner

    # The optimizers' hyperparameters given (ALL_PARAM_NAMES, in its order): name → specs.
    given = {"lr": lr, "momentum": momentum, "beta1": beta1, "beta2": beta2, "alpha": alpha,
             "eps": eps, "weight_decay": weight_decay, "adam_lr": adam_lr, "warmup": warmup,
             "d_coef": d_coef, "decay": decay}
    params = {name: list(values) for name, values in given.items() if values}
    families = optimizers.split(",") if optimizers else None
    task_specs = _name_specs(task_params)
    _run_search(lambda observer: runner.search(  # shows the space first
        task=task, study=study, n_trials=n_trials, timeout=timeout, epochs=epochs,
        optimizers=families, params=params, task_params=task_specs, batch_size=batch_size,
        scheduler=scheduler, space_file=space_file, defaults_first=not no_defaults,
        sampler=sampler, pruner=pruner, seed=seed, trial_seed=trial_seed, device=device,
        data_dir=data_dir, allow_changed_space=allow_changed_space, jobs=jobs, devices=devices,
        trials_per_device=trials_per_device,
        # a new study's default (resume keeps the stored one)
        population=1 if population is None else population, observer=observer, **stores),
        create_only=jobs == 0)


def _name_specs(values: tuple[str, ...]) -> dict[str, str]:
    """``("hidden=64,128", …)`` → ``{"hidden": "64,128"}``; a later flag for a name wins."""
    out = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise click.BadParameter(f"expected NAME=SPEC such as hidden=64,128, but got "
                                     f"{value!r}", param_hint="--param")
        out[name.strip()] = spec.strip()
    return out


@cli.command()
@click.argument("name")
@click.option("--n-trials", default=None, type=int,
              help="Run N more trials [default: up to the study's budget].")
@click.option("--timeout", default=None, type=float, help="Stop starting trials after S seconds.")
@click.option("--device", default=None, help="Override the stored device.")
@job_options
@store_options
def resume(name: str, n_trials: int | None, timeout: float | None, device: str | None,
           **options: Unpack[RunOptions]) -> None:
    """Continue a study with its stored task, space and settings."""
    from tuner.search import runner

    _run_search(lambda observer: runner.resume(name, n_trials=n_trials, timeout=timeout,
                                               device=device, observer=observer, **options),
                create_only=options["jobs"] == 0)


@cli.command()
@click.argument("name")
@click.option("--timeout", default=None, type=float, help="Stop starting trials after S seconds.")
@click.option("--device", default=None, help="Override the stored device.")
@job_options
@store_options
def worker(name: str, timeout: float | None, device: str | None,
           **options: Unpack[RunOptions]) -> None:
    """Join study NAME from this machine: run its trials until its budget is met.

    Everything else (task, space, settings, the MLflow store) comes from the study, e.g.
    `opttune worker s1 --storage postgresql://user@host/db --jobs 4` (the password in
    ~/.pgpass or $PGPASSWORD).
    """
    from tuner.search.worker import work

    _run_search(lambda observer: work(name, timeout=timeout, device=device, observer=observer,
                                      **options),
                create_only=options["jobs"] == 0)


def _run_search(start: Callable[[Observer], SearchResult], *, create_only: bool) -> None:
    """`start` a search with the live display as its observer, then show how it ended (with
    --jobs 0, `create_only`: how to run the study's trials)."""
    from tuner.cli import render
    from tuner.results import queries

    quiet_library_logs()
    display = render.SearchDisplay()
    try:
        with user_errors():
            result = start(display)
    except Interrupted as exc:
        display.close()
        render.print_error(f"{exc}; finished trials are saved, the interrupted one is marked "
                           f"failed and will run again on resume")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before the first trial: nothing to mark
        display.close()
        render.print_error("interrupted before any trial ran; what the stores hold is intact")
        sys.exit(130)
    finally:
        display.close()
    if create_only:
        render.print_study_ready(result)
        return
    with user_errors():
        summary = queries.search_summary(result.study, storage=result.stores.storage_url)
    render.print_search_summary(result, summary)


@cli.command()
@click.option("--format", "fmt", default="table", type=click.Choice(["table", "json"]),
              show_default=True)
def tasks(fmt: str) -> None:
    """List the tasks: what each trains, on what data, and its objective."""
    from tuner.cli import render
    from tuner.results.task_list import list_tasks

    with user_errors():
        found = list_tasks()
    render.emit(found, fmt=fmt, table=render.print_tasks)


@cli.command("check")
@click.argument("name")
@click.option("--fix", is_flag=True, help="Repair what is found.")
@click.option("--format", "fmt", default="table", type=click.Choice(["table", "json"]),
              show_default=True)
@store_options
def check_command(name: str, fix: bool, fmt: str, **stores: Unpack[StoreOptions]) -> None:
    """Find, and with --fix repair, what a crash can leave: trials left RUNNING, MLflow runs
    out of step with their trials, trials without a run, runs without a trial.

    Exits with 1 while problems remain (0 when none, or all were fixed).
    """
    from tuner.cli import render
    from tuner.study.recovery import check

    quiet_library_logs()
    with user_errors():
        result = check(name, fix=fix, **stores)
    render.emit(result, fmt=fmt, table=render.print_check)
    if not result.clean:
        sys.exit(1)


# -- looking at studies ------------------------------------------------------------------------
def _format_option(*choices: str) -> Callable[[F], F]:
    return click.option("--format", "fmt", default="table", show_default=True,
                        type=click.Choice(list(choices)),
                        help="table for people; " + ", ".join(c for c in choices if c != "table")
                             + " for programs (stdout holds nothing else).")


@cli.command()
@_format_option("table", "json")
@store_options
def studies(fmt: str, **stores: Unpack[StoreOptions]) -> None:
    """List the studies: trials by state, best value, last activity, data source."""
    from tuner.cli import render
    from tuner.results import queries

    quiet_library_logs()
    with user_errors():
        found = queries.list_studies(**stores)
    render.emit(found, fmt=fmt, table=render.print_studies)


@cli.command()
@click.argument("name")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only trials in STATE: complete, pruned, failed, running, waiting "
                   "(repeatable, or a comma list).")
@click.option("--sort", default="number", show_default=True,
              type=click.Choice(["number", "value", "duration"]),
              help="value: best first; duration: longest first.")
@click.option("--limit", default=None, type=int, help="Show the first N trials only.")
@_format_option("table", "csv", "json")
@store_options
def trials(name: str, states: tuple[str, ...], sort: str, limit: int | None, fmt: str,
           **stores: Unpack[StoreOptions]) -> None:
    """One row per trial: state, value, optimizer and params, epochs, time, MLflow run."""
    from tuner.cli import render
    from tuner.results import queries

    quiet_library_logs()
    with user_errors():
        found = queries.list_trials(name, states=states, sort=sort, limit=limit, **stores)
    render.emit(found, fmt=fmt, table=render.print_trials)


@cli.command()
@click.argument("name")
@_format_option("table", "json")
@store_options
def best(name: str, fmt: str, **stores: Unpack[StoreOptions]) -> None:
    """The best trial: value, params, MLflow run, and the command that re-runs it."""
    from tuner.cli import render
    from tuner.results import queries

    quiet_library_logs()
    with user_errors():
        found = queries.best_trial(name, **stores)
    render.emit(found, fmt=fmt, table=render.print_best)


@cli.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--by", default="optimizer", show_default=True, metavar="PARAM",
              help="Group by another categorical instead, e.g. batch_size or scheduler.")
@_format_option("table", "json")
@store_options
def compare(names: tuple[str, ...], by: str, fmt: str, **stores: Unpack[StoreOptions]) -> None:
    """Per optimizer: best, median and IQR, defaults vs tuned, trials, pruned, time.

    Several studies (compare A B) are lined up side by side.
    """
    from tuner.cli import render
    from tuner.results import queries

    quiet_library_logs()
    with user_errors():
        result = queries.compare(list(names), by=by.replace("-", "_"), **stores)
    render.emit(result, fmt=fmt, table=render.print_compare)


@cli.command()
@click.argument("name")
@click.option("--kind", required=True,
              type=click.Choice(["history", "importance", "parallel", "slice", "contour",
                                 "curves"]),
              help="curves: per-epoch validation values of each optimizer's best trial.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="FILE.html (interactive) or FILE.png/.svg/.pdf (static).")
@click.option("--params", default=None, metavar="LIST",
              help="Parameters to draw (slice, parallel, contour, importance), e.g. lr,momentum.")
@store_options
def plot(name: str, kind: str, output: str, params: str | None,
         **stores: Unpack[StoreOptions]) -> None:
    """Draw a plot of a study into an HTML or PNG file (no browser needed)."""
    from tuner.cli import render
    from tuner.results import plots

    quiet_library_logs()
    with user_errors():
        written = plots.write_plot(name, kind=kind, output=output,
                                   params=params.split(",") if params else None, **stores)
    render.print_written(written)


@cli.command()
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="FILE.csv or FILE.json")
@store_options
def export(name: str, output: str, **stores: Unpack[StoreOptions]) -> None:
    """Write all trials (params, values, states, times, per-epoch values) to CSV or JSON."""
    from tuner.cli import render
    from tuner.results.export import export_study

    quiet_library_logs()
    with user_errors():
        written = export_study(name, output, **stores)
    render.print_written(written)


@cli.command()
@click.argument("name")
@click.option("--trial", "trial", default=None, type=int,
              help="Retrain this trial's config [default: the best trial].")
@click.option("--epochs", default=None, type=int, help="Train this many epochs instead.")
@click.option("--device", default=None, help="Override the stored device.")
@_format_option("table", "json")
@store_options
def retrain(name: str, trial: int | None, epochs: int | None, device: str | None, fmt: str,
            **stores: Unpack[StoreOptions]) -> None:
    """Train a config on train+validation, score the test split once, save the model."""
    from tuner.cli import render
    from tuner.results.retrain import retrain as run_retrain

    quiet_library_logs()
    with user_errors():
        result = run_retrain(name, trial=trial, epochs=epochs, device=device,
                             notice=render.print_notice, **stores)
    render.emit(result, fmt=fmt, table=render.print_retrain)


@cli.command()
@click.option("--task", "tasks", required=True, multiple=True,
              help="Built-in task name, module:attr or file.py:attr; give it several times for "
                   "one verdict across tasks (a performance profile).")
@click.option("--optimizers", default=None, metavar="LIST",
              help="Families to compare [default: as `search`: sgd, momentum, nesterov, adam, "
                   "adamw, rmsprop].")
@click.option("--budgets", default="oneshot,small", show_default=True, metavar="LIST",
              help="Tuning budgets per optimizer: oneshot (its defaults, untuned), small (25 "
                   "trials), medium (50), or numbers of trials, e.g. oneshot,8.")
@click.option("--schedules", default="none", show_default=True, metavar="LIST",
              help="Learning-rate schedules to compare under, each with its own one-shot and "
                   "tuned cells (none, cosine, step, onecycle, warmup); never searched.")
@click.option("--seeds", default=10, show_default=True, type=int,
              help="Re-runs of each chosen setting (train+validation, scored on the test split).")
@click.option("--oneshot", default="paper", show_default=True,
              type=click.Choice(["paper", "torch"]),
              help="One-shot settings: the Crowded Valley paper's (torch's for AdamW, which it "
                   "lacks), or torch's defaults.")
@click.option("--space", default="opttune", show_default=True,
              type=click.Choice(["opttune", "crowded-valley"]),
              help="Search distributions: opttune's, or the paper's for the optimizers it has.")
@click.option("--target", default=None, type=float,
              help="Test value whose time to reach is measured [default: one-shot Adam's "
                   "median].")
@click.option("--epochs", default=None, type=int, help="Epochs per trial and re-run [default: 3].")
@click.option("--name", default=None, help="Benchmark name [default: TASK-benchmark]; its "
              "searches are the studies NAME.FAMILY.SCHEDULE (several tasks: NAME-TASK).")
@click.option("--sampler", default="random", show_default=True,
              type=click.Choice(["random", "tpe", "cmaes", "qmc"]),
              help="How each optimizer's budget is searched (random, as in the paper).")
@click.option("--pruner", default="none", show_default=True,
              type=click.Choice(["none", "median", "hyperband"]),
              help="none: every trial of a budget trains to the end, as in the paper.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the searches and the re-runs.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with the task's data files.")
@click.option("--jobs", default=None, type=int, metavar="N",
              help="Trials and re-runs at once on this machine, each in its own process.")
@click.option("--population", default=None, type=int, metavar="K",
              help="Trials and re-runs trained at once as one stacked model [default: trials "
                   "one at a time, each setting's re-runs together; 1: everything alone].")
@_format_option("table", "json")
@store_options
def benchmark(tasks: tuple[str, ...], optimizers: str | None, budgets: str, schedules: str,
              seeds: int, oneshot: str, space: str, target: float | None, epochs: int | None,
              name: str | None, sampler: str, pruner: str, seed: int, device: str,
              data_dir: str | None, jobs: int | None, population: int | None, fmt: str,
              **stores: Unpack[StoreOptions]) -> None:
    """Which optimizer? Equal budgets, seed re-runs, test scores (the Crowded Valley way).

    Every optimizer gets the same tuning budgets under each schedule; each one's best setting
    is re-run with several seeds and scored on the test split (Schmidt, Schneider & Hennig
    2021), with paired intervals and the time to a target (AlgoPerf).

    Running the same command again continues an interrupted benchmark.
    """
    from tuner.cli import render
    from tuner.search.benchmark import BenchmarkOptions, benchmark_tasks
    from tuner.search.benchmark import benchmark as run_benchmark

    quiet_library_logs()
    display = render.BenchmarkDisplay(quiet=fmt == "json")
    # Each task's benchmark takes the same options (several tasks: one each, in turn).
    options: BenchmarkOptions = {
        "optimizers": optimizers.split(",") if optimizers else None, "budgets": budgets,
        "seeds": seeds, "schedules": schedules, "oneshot": oneshot, "space": space,
        "epochs": epochs, "sampler": sampler, "pruner": pruner, "seed": seed,
        "device": device, "data_dir": data_dir, "jobs": jobs, "population": population,
        **stores}
    try:
        with user_errors():
            if len(tasks) == 1:
                report = run_benchmark(task=tasks[0], name=name, target=target,
                                       observer=display, **options)
            else:
                profile = benchmark_tasks(tasks=list(tasks), name=name, target=target,
                                          observer=display, **options)
    except (Interrupted, KeyboardInterrupt) as exc:
        display.close()
        render.print_error(f"{exc or 'interrupted'}; what finished is kept: run the same "
                           f"command again to continue the benchmark")
        sys.exit(getattr(exc, "exit_code", 130))
    finally:
        display.close()
    if len(tasks) == 1:
        render.emit(report, fmt=fmt, table=render.print_benchmark)
    else:
        render.emit(profile, fmt=fmt, table=render.print_task_profile)


@cli.command()
@click.argument("name", required=False)
@click.option("--port", default=5000, show_default=True, type=int, help="Port on 127.0.0.1.")
@store_options
def ui(name: str | None, port: int, **stores: Unpack[StoreOptions]) -> None:
    """Start the MLflow UI for the store on 127.0.0.1 and print the study's URL."""
    from tuner.cli import render
    from tuner.results import mlflow_ui

    with user_errors():
        plan = mlflow_ui.plan_ui(name, port=port, **stores)
        render.print_ui(plan)
        code = mlflow_ui.serve(plan, ready=lambda: render.print_ui_ready(plan))
    sys.exit(code)


@cli.command()
@click.argument("name", required=False)
@click.option("--port", default=8080, show_default=True, type=int, help="Port on 127.0.0.1.")
@store_options
def dashboard(name: str | None, port: int, **stores: Unpack[StoreOptions]) -> None:
    """Start Optuna Dashboard for the study store on 127.0.0.1 and print the study's URL.

    Needs the optional optuna-dashboard package: pip install 'opttune[dashboard]'.
    """
    from tuner.cli import render
    from tuner.results import dashboard_server

    quiet_library_logs()
    with user_errors():
        plan = dashboard_server.plan_dashboard(name, port=port, **stores)
        render.print_dashboard(plan)
        code = dashboard_server.serve(plan, ready=lambda: render.print_dashboard_ready(plan))
    sys.exit(code)


@cli.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@store_options
def delete(name: str, yes: bool, **stores: Unpack[StoreOptions]) -> None:
    """Delete a study from the store and mark its MLflow experiment deleted."""
    from tuner.cli import render
    from tuner.results import deletion

    quiet_library_logs()
    with user_errors():
        info = deletion.preview(name, **stores)
        if not yes:
            running = f"; {info['running']} of them are RUNNING now" if info["running"] else ""
            click.confirm(f"Delete study {name!r} ({info['trials']} trials{running}) and its "
                          f"MLflow experiment?", abort=True, err=True)
        render.print_deleted(deletion.delete_study(name, **stores))


def main() -> None:
    """The console script (and `python -m tuner`)."""
    try:
        cli(prog_name="opttune")
    except SystemExit as exc:
        _leave(exc.code)
        raise
    _leave(0)


def _leave(code: int | str | None) -> None:
    """End a process that imported torch without tearing its interpreter down.

    That teardown takes about 2 s after torch, Optuna and MLflow, and nothing of ours needs
    it: every store write is committed when its call returns. The exit hooks still run and
    the output is flushed. A process with a thread still working exits the usual way."""
    if "torch" not in sys.modules or any(
            t.is_alive() and not t.daemon and t is not threading.main_thread()
            for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code is None:
        code = 0
    elif isinstance(code, str):  # sys.exit("message") prints it and exits with 1
        print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code)


if __name__ == "__main__":
    main()
