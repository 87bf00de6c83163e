"""MLflow: one experiment per study, one parent run per study, one child run per trial.

The only module that imports mlflow. It uses an explicit :class:`MlflowClient` with the
study's tracking URI, never the global fluent state, so nothing depends on the current
directory's stray ``mlruns/``. Calls are synchronous here; the trial loop makes them on a
thread of its own, off the step loop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import requests

from tuner.errors import StoreError
from tuner.jsontypes import JsonValue
from tuner.logs import quiet_library_logs
from tuner.study import store_template
from tuner.study.locations import redact, sqlite_path
from tuner.study.names import artifact_folder
from tuner.study.stores import check_sqlite_file, probe_database

if TYPE_CHECKING:
    from mlflow import MlflowClient

P = ParamSpec("P")
R = TypeVar("R")

# Off the training thread is our own doing (the trial loop's MLflow thread); MLflow's async
# logging would add a second queue whose failures surface late or never.
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# With a tracking server, MLflow prints "View run … at: URL" on stdout as each run ends (and
# asks the server for the run to do so): noise in the console, and it breaks --format json.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # opens the model-training view in MLflow 3's UI
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED",
                   "KILLED": "KILLED"}


def is_tracking_server(tracking_uri: str) -> bool:
    """An MLflow tracking server (``http(s)://host:port``), which owns its artifact store."""
    return tracking_uri.strip().lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class RunRecord:
    """What `opttune check` needs to know about one MLflow run."""

    run_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    tags: dict[str, str]


def preload() -> None:
    """Import what opening a store will need, before the store is known: MLflow's client and
    its SQL store (the default; a server's store needs less), about 3 s of one core."""
    # (importing the SQL store imports mlflow itself)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401, PLC0415  (heavy: see Tracker)


class Tracker:
    """The MLflow side of one study.

    mlflow (about 2 s to import) is imported when a tracker opens a store, not with this
    module: a search imports it to track through :class:`TrackerProcess`, a subclass whose
    child process alone imports MLflow, and `opttune check` reads a study before its runs."""

    client: MlflowClient

    def __init__(self, tracking_uri: str, artifact_root: Path) -> None:
        path = sqlite_path(tracking_uri)
        if path is not None:
            check_sqlite_file(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        elif "://" in tracking_uri and not tracking_uri.startswith(
                ("http:", "https:", "file:", "databricks")):
            probe_database(tracking_uri, what="MLflow store")  # MLflow retries for minutes
        elif is_tracking_server(tracking_uri):
            _probe_server(tracking_uri)  # MLflow retries a refused connection for minutes
        from mlflow import MlflowClient  # noqa: PLC0415  (heavy: see the class docstring)

        quiet_library_logs()  # MLflow sets its own level when imported

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        try:
            with store_template.template_for(path, library="mlflow"):
                self.client = MlflowClient(tracking_uri=tracking_uri)
                self.client.search_experiments(max_results=1)  # fail here, not mid-study
        except Exception as exc:
            raise StoreError(f"cannot open the MLflow store {redact(tracking_uri)}: "
                             f"{redact(str(exc)).splitlines()[0]}") from None

    def ready(self) -> None:
        """Raise what opening the store raised: here, :meth:`__init__` already did."""

    def warm(self, modules: Sequence[str]) -> None:
        """Import `modules` ahead of a :meth:`run` that needs them, where that costs the
        search nothing: not here (a process of its own does it while idle)."""

    def run(self, fn: Callable[Concatenate[Tracker, P], R], *args: P.args,
            **kwargs: P.kwargs) -> R:
        """``fn(self, *args, **kwargs)`` where this tracker lives. `fn` is a module-level
        function and its arguments plain data: a tracker in a process of its own gets them
        pickled."""
        return fn(self, *args, **kwargs)

    # -- study level -----------------------------------------------------------------------
    def ensure_experiment(self, name: str, *, tags: Mapping[str, str]) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            # A study re-created after `delete`: the old experiment keeps its runs, renamed
            # (MLflow renames only active experiments, so restore it for the rename).
            self.client.restore_experiment(experiment.experiment_id)
            self.client.rename_experiment(experiment.experiment_id,
                                          f"{name} (deleted {int(time.time())})")
            self.client.delete_experiment(experiment.experiment_id)
            experiment = None
        if experiment is None:
            if is_tracking_server(self.tracking_uri):
                # The server decides where artifacts go (its default artifact root, or its
                # proxied mlflow-artifacts: store): a path on this machine would leave every
                # worker's artifacts on its own disk, out of the server's and the UI's reach.
                experiment_id = self.client.create_experiment(name)
            else:
                location = (self.artifact_root / artifact_folder(name)).resolve().as_uri()
                experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        for key, value in {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **tags}.items():
            self.client.set_experiment_tag(experiment_id, key, value)
        return str(experiment_id)

    def start_study(self, name: str, *, task: str, data_source: str,
                    settings: Mapping[str, JsonValue],
                    space: Mapping[str, JsonValue] | None = None) -> tuple[str, str]:
        """The experiment and parent run of a new study (or of one whose experiment was lost):
        (experiment id, parent run id). The parent holds the task, data source and settings
        as params, and the space as ``space.json`` when it is given.

        A study of a benchmark (settings ``benchmark`` and ``benchmark_run_id``) lives in the
        benchmark's experiment, its parent run nested under the benchmark's run."""
        benchmark = settings.get("benchmark")
        experiment_id = self.ensure_experiment(str(benchmark) if benchmark else name,
                                               tags={"opttune.task": task})
        params = {"task": task, "data_source": data_source,
                  **{k: v for k, v in settings.items() if v is not None}}
        tags = {"study": name}
        if benchmark and settings.get("benchmark_run_id"):
            tags |= {"benchmark": str(benchmark),
                     "mlflow.parentRunId": str(settings["benchmark_run_id"])}
        parent = self._create_parent(experiment_id, study=name, params=params, tags=tags)
        if space is not None:
            self.log_text(parent, json.dumps(space, indent=2, sort_keys=True), "space.json")
        return experiment_id, parent

    def _create_parent(self, experiment_id: str, *, study: str, params: Mapping[str, object],
                      tags: Mapping[str, str]) -> str:
        run = self.client.create_run(experiment_id, run_name=study,
                                     tags={"opttune.role": "study", **tags})
        self._log_params(run.info.run_id, params)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)

    def parent_running(self, run_id: str, running: bool, *, status: str = "FINISHED") -> None:
        if running:
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        self._log_batch(run_id, tags={k: str(v) for k, v in tags.items()})

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_progress(self, parent_run_id: str, number: int, value: float | None,
                     best: float | None) -> None:
        """The study's history on its parent run, at step = trial `number`: ``trial_value``
        (that trial's value, when it has one) and ``best_value`` (the best so far), which the
        MLflow UI draws as the study's progress chart."""
        batch = {key: v for key, v in (("trial_value", value), ("best_value", best))
                 if v is not None}
        if batch:
            self._log_batch(parent_run_id, metrics=batch, step=number)

    # -- other runs (retrain) and experiments (delete) -------------------------------------
    def create_run(self, experiment_id: str, *, name: str, tags: Mapping[str, str],
                   params: Mapping[str, object]) -> str:
        run = self.client.create_run(experiment_id, run_name=name, tags=dict(tags))
        self._log_params(run.info.run_id, params)
        return str(run.info.run_id)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (MLflow keeps it restorable, out of the UI's list)."""
        self.client.delete_run(run_id)

    def delete_experiment(self, experiment_id: str) -> bool:
        """Mark the experiment deleted (MLflow keeps it restorable); False if it is not there."""
        try:
            experiment = self.client.get_experiment(experiment_id)
        except Exception:
            return False
        if experiment is None or experiment.lifecycle_stage == "deleted":
            return False
        self.client.delete_experiment(experiment_id)
        return True

    # -- trial level -----------------------------------------------------------------------
    def start_trial(self, experiment_id: str, *, parent_run_id: str, study: str, number: int,
                    config: Mapping[str, object]) -> str:
        lr = config.get("lr")
        name = f"trial {number} · {config.get('optimizer')}" + (
            f" · lr={lr:.3g}" if isinstance(lr, float) else "")
        run = self.client.create_run(experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent_run_id, "opttune.role": "trial", "study": study,
            "trial_number": str(number), "optimizer": str(config.get("optimizer")),
            "trial_state": "RUNNING"})
        self._log_params(run.info.run_id, config)
        return str(run.info.run_id)

    def log_epoch(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        self._log_batch(run_id, metrics=metrics, step=step)

    def end_trial(self, run_id: str, *, state: str, tags: Mapping[str, object] | None = None,
                  metrics: Mapping[str, float] | None = None) -> None:
        self._log_batch(run_id, metrics=metrics or {},
                        tags={"trial_state": state} | {k: str(v) for k, v in (tags or {}).items()})
        self.client.set_terminated(run_id, STATUS_OF_STATE.get(state, "FINISHED"))

    # -- integrity (opttune check) ---------------------------------------------------------
    def experiment_exists(self, experiment_id: str) -> bool:
        try:
            experiment = self.client.get_experiment(experiment_id)
        except Exception:
            return False
        return experiment is not None and experiment.lifecycle_stage == "active"

    def run_record(self, run_id: str) -> RunRecord | None:
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        return RunRecord(run.info.run_id, str(run.info.status), dict(run.data.tags))

    def trial_runs(self, experiment_id: str, *, study: str | None = None) -> list[RunRecord]:
        """Every trial (child) run of an experiment, or of its study `study` (a benchmark's
        studies share one experiment): id, status and tags."""
        return self.runs_with(experiment_id, role="trial", tags={"study": study} if study else {})

    def runs_with(self, experiment_id: str, *, role: str,
                  tags: Mapping[str, str] | None = None) -> list[RunRecord]:
        """The runs of an experiment with this ``opttune.role`` and these tags."""
        where = [f"tags.`opttune.role` = '{role}'"]
        where += [f"tags.`{key}` = '{_quoted(value)}'" for key, value in (tags or {}).items()]
        out: list[RunRecord] = []
        token: str | None = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=" and ".join(where),
                                           max_results=1000, page_token=token)
            out += [RunRecord(r.info.run_id, str(r.info.status), dict(r.data.tags))
                    for r in page]
            token = page.token
            if not token:
                return out

    def _log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._log_batch(run_id, params=dict(items[i:i + 100]))

    def _log_batch(self, run_id: str, *, metrics: Mapping[str, float] | None = None,
                   step: int = 0, params: Mapping[str, str] | None = None,
                   tags: Mapping[str, str] | None = None) -> None:
        """One MLflow batch: `metrics` at `step` (timestamped now), `params`, `tags`."""
        from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415  (heavy: see the class)

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def _probe_server(tracking_uri: str) -> None:
    """One request to a tracking server, without MLflow's retries: a server that is down or
    a wrong host or port fails in seconds with one clear line, where MLflow's client would
    retry a refused connection for about four minutes. An answer (even an HTTP error) means
    the server is there; what it answers is for MLflow to judge, and so are TLS troubles
    (MLflow may be told to trust a certificate this request does not)."""
    try:
        requests.head(tracking_uri, timeout=(10, 10), allow_redirects=False).close()
    except requests.exceptions.SSLError:
        return
    except requests.exceptions.ConnectionError as exc:  # refused, unknown host, connect timeout
        reason = exc.args[0] if exc.args else exc
        detail = str(getattr(reason, "reason", reason)) or type(exc).__name__
        detail = detail.split("): ", 1)[-1]  # urllib3 prefixes the connection's repr
        raise StoreError(f"cannot reach the MLflow tracking server {redact(tracking_uri)}: "
                         f"{redact(detail).splitlines()[0]}") from None
    except requests.exceptions.RequestException:  # it answered slowly, or oddly: it is there
        return


def _quoted(value: str) -> str:
    """A value inside an MLflow filter string's single quotes."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
