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
