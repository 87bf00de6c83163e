"""`opttune ui`: a real MLflow server on 127.0.0.1 only, its REST API, and its page in Chromium.

The Chromium check needs the `chromium` package (Debian: apt-get install chromium); it is
skipped when no Chromium is installed. It drives the browser over the DevTools protocol on
a pipe (--remote-debugging-pipe), so it needs no extra Python package.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers.chromium import CHROMIUM, Chromium
from helpers.servers import opttune_ui
from helpers.services import needs
from helpers.small_study import small_study_copy
from helpers.sockets import answers, listening_addresses

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "ui")


@pytest.fixture(scope="module")
def server(study_home: Path) -> Iterator[dict[str, Any]]:
    """`opttune ui s1 --port P` as a real process; always killed (its whole group) after."""
    with opttune_ui(study_home, "s1") as ui:
        yield {"port": ui.port, "url": ui.url, "process": ui.process}


def _api(port: int, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def test_ui_serves_the_study_on_loopback_only(server: dict[str, Any], study_home: Path) -> None:
    port = server["port"]
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{study_home / 'opttune.db'}")
    ids = study.user_attrs["mlflow"]
    assert server["url"] == (f"http://127.0.0.1:{port}/#/experiments/{ids['experiment_id']}"
                             f"/runs?workflowType=machine_learning")
    runs = _api(port, "runs/search", {"experiment_ids": [ids["experiment_id"]],
                                      "max_results": 100})["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    trial_ids = {t.user_attrs["mlflow_run_id"] for t in study.get_trials()}
    assert set(by_id) == trial_ids | {ids["parent_run_id"]}
    for run_id in trial_ids:
        tags = {t["key"]: t["value"] for t in by_id[run_id]["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == ids["parent_run_id"]
    names = {r["info"]["run_name"] for r in runs}
    assert {"s1", "trial 0 · sgd · lr=0.001", "trial 1 · adam · lr=0.001"} <= names
    experiment = _api(port, f"experiments/get?experiment_id={ids['experiment_id']}")
    tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # model-training view

    # Bound to 127.0.0.1 only: no listening socket on another address, no answer elsewhere.
    assert listening_addresses(port) == ["127.0.0.1"]
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None,
                                                        socket.AF_INET)}
    for address in others - {"127.0.0.1", "127.0.1.1"}:
        assert not answers(port, address)


ROWS = "Array.from(document.querySelectorAll('[role=row]')).map(r => r.innerText)"
EXPANDER = "button[data-component-id*=runnamecellrenderer]"


@needs(CHROMIUM is not None, "needs Chromium (Debian: apt-get install chromium)")
def test_the_printed_url_shows_the_runs_table_with_nested_trials(
        server: dict[str, Any], tmp_path: Path) -> None:
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(server["url"])
        # The model-training runs table: the study's parent run, its trials folded under it.
        browser.wait_for(f"document.querySelector('{EXPANDER}') !== null")
        rows = " | ".join(browser.wait_for(ROWS))
        assert re.search(r"\bs1\b", rows) and "trial 0" not in rows
        browser.js(f"document.querySelector('{EXPANDER}').click()")
        rows = browser.wait_for(f"(r => r.some(t => t.includes('trial 5')) && r)({ROWS})")
        texts = [" ".join(r.split()) for r in rows]
        parent = next(i for i, t in enumerate(texts) if re.search(r"\bs1\b", t))
        trials = [i for i, t in enumerate(texts) if re.search(r"trial \d · (sgd|adam)", t)]
        assert len(trials) == 6 and min(trials) > parent  # listed under the study's run
        assert any("trial 0 · sgd" in t for t in texts)
        assert any("trial 1 · adam" in t for t in texts)
    finally:
        browser.close()
