"""`opttune check`: find, and with ``fix`` repair, what a crash can leave in the two stores.

A SIGKILL or a power cut can land between any two writes of a trial's bookkeeping: after
Optuna's ``ask`` (a RUNNING trial nobody will finish), after MLflow's ``create_run`` (a run
no trial refers to), after Optuna's ``tell`` (a RUNNING run for a finished trial), or after
an interrupted trial is marked but before its parameters are queued again. Each of these is
a :class:`Problem` here; :func:`repair` puts it right. ``resume`` runs the same repairs
before its first trial (see ``TrialRunner.recover``), so a crash is healed either way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from optuna.trial import FrozenTrial, TrialState

from tuner.study import studies, trial_attrs
from tuner.study.locations import redact, resolve_stores
from tuner.study.meta import StudyMeta, set_mlflow_ids, study_tracking_uri
from tuner.study.stores import open_storage
from tuner.study.tracker import RunRecord, Tracker

if TYPE_CHECKING:
    import optuna

ORPHAN_TAG = "opttune.orphan"
OWNER_TAG = "opttune.owner"  # the process that set the parent run RUNNING


# What `opttune check` can find; `repair` has one branch for each.
ProblemKind = Literal["stale-trial", "not-requeued", "run-status", "trial-without-run",
                      "run-without-trial", "parent-running", "no-experiment"]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    found: str  # what is wrong, for people
    repair: str  # what the fix does
    trial: int | None = None
    run_id: str | None = None


@dataclass
class CheckReport:
    study: str
    trials: int = 0
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)
    fixed: bool = False  # whether the problems were repaired
    running: list[int] = field(default_factory=list)  # trials training now (left alone)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems or self.fixed


def check(name: str, *, fix: bool = False, home: str | Path | None = None,
          storage: str | None = None, tracking_uri: str | None = None) -> CheckReport:
    """Inspect study `name` in both stores; with `fix`, repair every problem found."""
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    study = studies.load_study(open_storage(stores.storage_url, create=False), name)
    meta = StudyMeta.from_study(study)
    logged_to = study_tracking_uri(name, meta, tracking_uri)
    if logged_to is not None:  # where the study's runs are, not this home's default
        stores = dataclasses.replace(stores, tracking_uri=logged_to)
    tracker = Tracker(stores.tracking_uri, stores.artifact_root)
    report = inspect_study(study, tracker, meta)
    stored = meta.mlflow.tracking_uri
    if stored and stored != redact(stores.tracking_uri):
        report.notes.append(f"the study was logged to MLflow at {stored}; this check looked at "
                            f"{redact(stores.tracking_uri)} (give --tracking-uri or --home)")
    if fix:
        for problem in report.problems:
            repair(study, tracker, problem)
        report.fixed = True
    return report


def expected_run(trial: FrozenTrial) -> tuple[str, str]:
    """(MLflow status, trial_state tag) that a finished trial's run must have."""
    if trial.state == TrialState.FAIL:
        if trial_attrs.fail_reason(trial) in studies.KILLED_FAILS:
            return "KILLED", "KILLED"
        return "FAILED", "FAIL"
    return "FINISHED", trial.state.name


def inspect_study(study: optuna.Study, tracker: Tracker, meta: StudyMeta, *,
                  parent: bool = True) -> CheckReport:
    """Every problem of `study`, without changing anything. `parent`: look at its run too."""
    trials = study.get_trials(deepcopy=False)
    report = CheckReport(study=study.study_name, trials=len(trials))
    runs = _study_trial_runs(study, tracker, meta, report)
    report.runs = len(runs)
    by_id = {r.run_id: r for r in runs}
    by_number: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_number.setdefault(r.tags.get("trial_number", ""), []).append(r)
    stale = {t.number for t in studies.stale_trials(study)}
    retried = {trial_attrs.retry_of(t) for t in trials}
    claimed: set[str] = set()
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        run = run_of(t, by_id, by_number, claimed)
        if run is not None:
            claimed.add(run.run_id)
        if t.state == TrialState.RUNNING:
            if t.number in stale:
                owner = trial_attrs.owner(t)
                who = f"pid {owner['pid']}" if owner and "pid" in owner else "no owner recorded"
                report.problems.append(Problem(
                    "stale-trial", f"trial {t.number} is RUNNING but its process ({who}) is "
                    f"gone", "mark it FAIL (killed), end its run as KILLED and queue its "
                    "parameters once more", t.number, run.run_id if run else None))
            else:
                report.running.append(t.number)
            continue
        status, tag = expected_run(t)
        if run is None:
            report.problems.append(Problem(
                "trial-without-run", f"trial {t.number} ({t.state.name}) has no MLflow run",
                f"log a run for it from the study store, ended as {status}", t.number))
        elif (run.status, run.tags.get("trial_state")) != (status, tag):
            report.problems.append(Problem(
                "run-status", f"trial {t.number} is {t.state.name} but its MLflow run "
                f"{run.run_id} is {run.status}", f"end the run as {status}", t.number,
                run.run_id))
        why = trial_attrs.fail_reason(t)
        if t.state == TrialState.FAIL and t.number not in retried and \
                why in studies.UNCOUNTED_FAILS:
            report.problems.append(Problem(
                "not-requeued", f"trial {t.number} was {why} but its "
                f"parameters were never queued again", "queue its parameters once more",
                t.number))
    report.problems.extend(_runs_without_trial(runs, claimed))
    parent_id = meta.mlflow.parent_run_id
    if parent and parent_id and not report.running:
        record = tracker.run_record(parent_id)
        if record is not None and record.status == "RUNNING" and _owner_gone(record):
            report.problems.append(Problem(
                "parent-running", f"the study's parent run {parent_id} is RUNNING but no "
                f"process is running the study", "end it as KILLED", run_id=parent_id))
    return report


def _study_trial_runs(study: optuna.Study, tracker: Tracker, meta: StudyMeta,
                      report: CheckReport) -> list[RunRecord]:
    """The MLflow runs of `study`'s trials; none, with a problem in `report`, when the
    study's experiment is missing."""
    experiment = meta.mlflow.experiment_id
    if not experiment or not tracker.experiment_exists(experiment):
        report.problems.append(Problem(
            "no-experiment", f"the MLflow experiment of the study ({experiment or 'none'}) is "
            f"missing from {redact(tracker.tracking_uri)}", "create it with a new parent run"))
        return []
    return tracker.trial_runs(experiment, study=study.study_name)


def _runs_without_trial(runs: list[RunRecord], claimed: set[str]) -> list[Problem]:
    """A problem for each run no trial claimed (unless already tagged an orphan and ended)."""
    problems: list[Problem] = []
    for r in runs:
        if r.run_id in claimed or (r.tags.get(ORPHAN_TAG) and r.status != "RUNNING"):
            continue
        problems.append(Problem(
            "run-without-trial", f"MLflow run {r.run_id} (trial_number "
            f"{r.tags.get('trial_number', '?')}, {r.status}) belongs to no trial of the study",
            f"end it as KILLED if running and tag it {ORPHAN_TAG}", run_id=r.run_id))
    return problems


def run_of(trial: FrozenTrial, by_id: dict[str, RunRecord],
           by_number: dict[str, list[RunRecord]], claimed: set[str]) -> RunRecord | None:
    """The trial's run: the one it names, else one tagged with its number (a kill can land
    between creating the run and recording its id on the trial)."""
    named = by_id.get(str(trial_attrs.run_id(trial)))
    if named is not None:
        return named
    candidates = [r for r in by_number.get(str(trial.number), []) if r.run_id not in claimed]
    return candidates[0] if candidates else None


def _owner_gone(record: RunRecord) -> bool:
    try:
        owner = json.loads(record.tags.get(OWNER_TAG, "{}"))
    except ValueError:
        owner = {}
    return not owner or studies.owner_gone(owner)


def repair(study: optuna.Study, tracker: Tracker, problem: Problem) -> None:
    """Put one problem right (idempotent: repairing twice does no harm)."""
    trial = _trial(study, problem.trial)
    if problem.kind == "no-experiment":
        _recreate_experiment(study, tracker)
    elif problem.kind == "stale-trial" and trial is not None:
        studies.fail_stale(study, trial)
        _settle_run(study, tracker, _trial(study, problem.trial), problem.run_id)
    elif problem.kind in ("run-status", "trial-without-run") and trial is not None:
        _settle_run(study, tracker, trial, problem.run_id)
    elif problem.kind == "not-requeued" and trial is not None:
        studies.requeue(study, trial)
    elif problem.kind == "run-without-trial" and problem.run_id:
        record = tracker.run_record(problem.run_id)
        tracker.set_tags(problem.run_id, {ORPHAN_TAG: "no trial of the study refers to it"})
        if record is not None and record.status == "RUNNING":
            tracker.end_trial(problem.run_id, state="KILLED")
    elif problem.kind == "parent-running" and problem.run_id:
        tracker.parent_running(problem.run_id, False, status="KILLED")


def _trial(study: optuna.Study, number: int | None) -> FrozenTrial | None:
    if number is None:
        return None
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return found[0] if found else None


def _settle_run(study: optuna.Study, tracker: Tracker, trial: FrozenTrial | None,
                run_id: str | None) -> None:
    """End `trial`'s run with the trial's outcome, logging the run first if it has none."""
    if trial is None or not trial.state.is_finished():
        return
    meta = StudyMeta.from_study(study)  # the experiment may just have been recreated
    if run_id is None:
        run_id = tracker.start_trial(
            meta.mlflow.experiment_id, parent_run_id=meta.mlflow.parent_run_id,
            study=study.study_name, number=trial.number,
            config=trial_attrs.config(trial) or dict(trial.params))
        tracker.set_tags(run_id, {"opttune.logged_by": "opttune check, from the study store"})
        for step, value in sorted(trial.intermediate_values.items()):
            tracker.log_epoch(run_id, step, {meta.metric: value})
    _, tag = expected_run(trial)
    tags = trial_attrs.result_tags(trial)
    metrics = {"value": trial.value} if trial.value is not None else {}
    tracker.end_trial(run_id, state=tag, tags=tags, metrics=metrics)


def _recreate_experiment(study: optuna.Study, tracker: Tracker) -> None:
    meta = StudyMeta.from_study(study)
    experiment, parent = tracker.start_study(study.study_name, task=meta.task,
                                             data_source=meta.data_source,
                                             settings=meta.settings.to_attrs(),
                                             space=meta.space.to_dict())
    set_mlflow_ids(study, dataclasses.replace(meta.mlflow, experiment_id=experiment,
                                              parent_run_id=parent,
                                              tracking_uri=redact(tracker.tracking_uri)))
