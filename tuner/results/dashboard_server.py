"""Optuna Dashboard for a study store: `optuna-dashboard` bound to 127.0.0.1, and the URL to open.

Where `opttune ui` shows the MLflow side (runs, metrics, artifacts), the dashboard reads the
Optuna store itself: the history, the parameter importances, the per-epoch curves that the
pruner judged, every trial's parameters and attributes. It is optional (`pip install
'opttune[dashboard]'`) and runs as a child process of this one, which stops it on the way out.

The store URL reaches the server in a private TOML file (`--from-config`), never on its
command line, so a password in it never shows in a process list. The server's own messages
(it logs every request) go to a log file beside it; the last of them are shown if it fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from tuner.errors import OpttuneError
from tuner.results.mlflow_ui import HOST, answers, stop_server
from tuner.signals import sigterm_as_interrupt
from tuner.study.locations import driver_url, redact, resolve_stores
from tuner.study.optuna_adapter import study_id
from tuner.study.stores import open_storage
from tuner.study.studies import load_study

DEFAULT_PORT = 8080  # optuna-dashboard's own default
INSTALL = "pip install 'opttune[dashboard]'"
_LOG_LINES = 8  # of the server's log, shown when it fails


@dataclass(frozen=True)
class DashboardPlan:
    """How to serve the dashboard (`command`, on `port`) and the page to open (`url`)."""

    command: list[str]
    storage_url: str = field(repr=False)  # may hold a password: only ever written to a 0600 file
    url: str
    port: int
    study: str | None
    storage: str  # redacted, for display
    version: str


def study_url(port: int, study_id: int | None) -> str:
    base = f"http://{HOST}:{port}/dashboard"
    return base if study_id is None else f"{base}/studies/{study_id}"


def dashboard_command() -> tuple[list[str], str]:
    """The command that runs the installed optuna-dashboard with this Python, and its version.

    It goes through the package's console-script entry point rather than whatever
    `optuna-dashboard` comes first on $PATH, so it always serves with the Optuna installed here.
    """
    try:
        import optuna_dashboard  # noqa: PLC0415  (optional: `pip install 'opttune[dashboard]'`)
    except ImportError:
        raise OpttuneError(f"`opttune dashboard` needs the optuna-dashboard package, which is "
                           f"not installed in {sys.prefix}; install it with {INSTALL}"
                           ) from None
    found = list(entry_points(group="console_scripts", name="optuna-dashboard"))
    if not found:
        raise OpttuneError(f"optuna-dashboard is importable but not installed as a package "
                           f"(no `optuna-dashboard` entry point in {sys.prefix}); reinstall it "
                           f"with {INSTALL}")
    module, attr = found[0].module, found[0].attr
    code = (f"import sys; from {module} import {attr} as main; "
            f"sys.argv[0] = 'optuna-dashboard'; sys.exit(main())")
    return [sys.executable, "-c", code], str(getattr(optuna_dashboard, "__version__", "?"))


def plan_dashboard(name: str | None = None, *, port: int = DEFAULT_PORT,
                   home: str | Path | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> DashboardPlan:
    """Check the install, the port number, the store, the study and the port; what to run."""
    command, version = dashboard_command()
    if not 1 <= port <= 65535:
        raise OpttuneError(f"--port must be between 1 and 65535, but got {port}")
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    # Refuses a missing SQLite file, a damaged one, another schema or an unreachable server,
    # and never creates a store: the dashboard would otherwise show an empty new one.
    storage_obj = open_storage(stores.storage_url, create=False)
    number = None
    if name is not None:
        number = study_id(load_study(storage_obj, name))  # unknown: the error lists the known
    _check_port_free(port)
    command += ["--host", HOST, "--port", str(port), "--server", "wsgiref"]
    return DashboardPlan(command=command, storage_url=driver_url(stores.storage_url),
                         url=study_url(port, number), port=port, study=name,
                         storage=redact(stores.storage_url), version=version)


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise OpttuneError(f"port {port} on {HOST} is already in use (another `opttune "
                               f"dashboard`, or another server?); choose another with --port"
                               ) from None


def serve(plan: DashboardPlan, *, ready: Callable[[], None] | None = None,
          start_timeout: float = 60.0) -> int:
    """Run the dashboard until it exits, Ctrl-C or SIGTERM; `ready` is called once it answers.

    Returns 0 when stopped by Ctrl-C or SIGTERM; a server that fails is an OpttuneError
    that ends with the last lines of its log.
    """
    with tempfile.TemporaryDirectory(prefix="opttune-dashboard-") as private:  # mode 0700
        config = Path(private) / "dashboard.toml"
        config.touch(mode=0o600)
        # A TOML basic string takes JSON's escapes for the characters a URL can hold.
        config.write_text(f"[optuna_dashboard]\nstorage = {json.dumps(plan.storage_url)}\n",
                          encoding="utf-8")
        log = Path(private) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen([*plan.command, "--from-config", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=subprocess.STDOUT)
        try:
            with sigterm_as_interrupt():
                deadline = time.monotonic() + start_timeout
                while process.poll() is None and not answers(plan.port):
                    if time.monotonic() > deadline:
                        raise OpttuneError(f"optuna-dashboard did not answer on {HOST}:"
                                           f"{plan.port} within {start_timeout:.0f} s"
                                           f"{_tail(log)}")
                    time.sleep(0.1)
                if process.poll() is None and ready is not None:
                    ready()
                code = process.wait()
                raise OpttuneError(f"optuna-dashboard stopped by itself with exit code "
                                   f"{code}{_tail(log)}")
        except KeyboardInterrupt:
            return 0
        finally:
            stop_server(process)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    if not lines:
        return ""
    return "; its last messages:\n" + redact("\n".join(lines[-_LOG_LINES:]))
