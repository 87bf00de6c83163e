"""The MLflow UI for a study home: an `mlflow server` bound to 127.0.0.1, and the URL to open.

The URL lands on the study's runs table in MLflow's model-training view (MLflow 3 opens an
experiment in its GenAI view otherwise): the study's parent run, with its trials as child
runs under it. The server runs as a child process of this one and stops with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import OpttuneError, StoreError
from tuner.results.queries import open_study
from tuner.signals import sigterm_as_interrupt
from tuner.study.locations import redact, resolve_stores, sqlite_path
from tuner.study.meta import mlflow_ids_of

HOST = "127.0.0.1"  # never other interfaces: the UI can change and delete runs


@dataclass(frozen=True)
class UiPlan:
    """How to serve the UI (`command` with `env`, on `port`) and the page to open (`url`)."""

    command: list[str]
    env: dict[str, str]
    url: str
    port: int
    study: str | None
    tracking_uri: str  # redacted, for display


def study_url(port: int, experiment_id: str | None) -> str:
    base = f"http://{HOST}:{port}/"
    if experiment_id is None:
        return base
    return f"{base}#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def plan_ui(name: str | None = None, *, port: int = 5000, home: str | Path | None = None,
            storage: str | None = None, tracking_uri: str | None = None) -> UiPlan:
    """Check the store, the study and the port; the command that serves the UI, and its URL."""
    if not 1 <= port <= 65535:
        raise OpttuneError(f"--port must be between 1 and 65535, but got {port}")
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    uri = stores.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise OpttuneError(f"the tracking store {redact(uri)} is an MLflow server already; "
                           f"open it in a browser instead of starting another")
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise StoreError(f"there is no MLflow store at {path}; run `opttune search` first, or "
                         f"give the right --home or --tracking-uri")
    experiment_id = None
    if name is not None:
        _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
        experiment_id = mlflow_ids_of(study).experiment_id or None
        if not experiment_id:
            raise OpttuneError(f"study {name!r} has no MLflow experiment recorded; run "
                               f"`opttune check {name} --fix` to recreate it")
    _check_port_free(port)
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port),
               "--workers", "1",
               "--default-artifact-root", stores.artifact_root.resolve().as_uri(),
               "--artifacts-destination", stores.artifact_root.resolve().as_uri()]
    # The store URI goes by environment, so a password in it never shows in a process list.
    # MLflow's background job runner (GenAI judges and scorers) is not needed to browse runs;
    # without it the server starts faster and leaves no helper processes behind.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return UiPlan(command=command, env=env, url=study_url(port, experiment_id), port=port,
                  study=name, tracking_uri=redact(uri))


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise OpttuneError(f"port {port} on {HOST} is already in use (another `opttune ui` "
                               f"or MLflow?); choose another with --port") from None


def answers(port: int, *, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def serve(plan: UiPlan, *, ready: Callable[[], None] | None = None,
          start_timeout: float = 180.0) -> int:
    """Run the server until it exits, Ctrl-C or SIGTERM; `ready` is called once it answers.

    Returns the server's exit code (0 when stopped by Ctrl-C or SIGTERM).
    """
    process = subprocess.Popen(plan.command, env=plan.env, stdout=sys.stderr,
                               stdin=subprocess.DEVNULL)
    try:
        with sigterm_as_interrupt():
            deadline = time.monotonic() + start_timeout
            while process.poll() is None and not answers(plan.port):
                if time.monotonic() > deadline:
                    raise OpttuneError(f"the MLflow server did not answer on {HOST}:"
                                       f"{plan.port} within {start_timeout:.0f} s")
                time.sleep(0.2)
            if process.poll() is None and ready is not None:
                ready()
            code = process.wait()
            if code != 0:
                raise OpttuneError(f"the MLflow server stopped with exit code {code}; its "
                                   f"messages are above")
            return code
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a local server process: politely, then after 15 s for good."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
