"""`opttune ui` as a real process for tests: started on a free port, always stopped after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.sockets import answers, free_port


@dataclass(frozen=True)
class RunningUi:
    port: int
    url: str  # the study's page, as `opttune ui` printed it
    process: subprocess.Popen[str]


@contextmanager
def opttune_ui(home: Path, study: str) -> Iterator[RunningUi]:
    """`opttune ui STUDY --port P` in a process group of its own; killed (the whole group)
    afterwards, and its port checked closed."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuner", "ui", study, "--port", str(port),
                                "--home", str(home)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not answers(port):
            assert process.poll() is None, "opttune ui exited before serving"
            assert time.monotonic() < deadline, "the MLflow UI did not start in 180 s"
            time.sleep(0.3)
        assert process.stdout is not None
        url = next(line.strip() for line in process.stdout if line.startswith("http"))
        yield RunningUi(port, url, process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert not answers(port)


def _mlflow_healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def mlflow_server(db: Path, artifacts: Path, port: int, log: Path,
                  start_seconds: float = 180) -> Iterator[subprocess.Popen[bytes]]:
    """`mlflow server` on 127.0.0.1:`port` over the SQLite store `db`, as a process group of
    its own, waited for until it answers; killed (the whole group) afterwards. One worker and
    MLflow's job runner off: it answers in 12 to 30 s on two shared cores."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    try:
        started = time.monotonic()
        while not _mlflow_healthy(url):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() - started < start_seconds, \
                f"the MLflow server did not answer in {start_seconds} s"
            time.sleep(0.3)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """End `process` and its group: SIGTERM (SIGKILL with `kill`, or after 30 s)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    try:  # a child that outlived its parent (a server's worker)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
