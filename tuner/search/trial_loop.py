"""The trial loop: claim a trial, train it, report each epoch, tell the outcome, log it all,
until the study has its budget (or the time is up, or three trials in a row failed).

What happens to each trial is :class:`TrialSteps`' (tuner.search.trial_steps); several
trials trained as one stacked model are :class:`StackedTrials`'; every MLflow call goes
through one :class:`MlflowQueue`. This module holds the loop, the repairs before it, and
the study's parent run around it.
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from tuner.errors import OpttuneError
from tuner.results.plots import PLOT_MODULES, StudySnapshot, log_snapshot_plots
from tuner.search.events import Observer, TrialOutcome
from tuner.search.mlflow_queue import MlflowQueue, first_line
from tuner.search.session import SearchResult, Session, finish_result, study_start
from tuner.search.stacked_trials import StackedTrials
from tuner.search.trial_steps import TrialSteps
from tuner.signals import Interrupted, sigterm_as_interrupt
from tuner.study import claims, studies, trial_attrs
from tuner.study.locations import Stores
from tuner.study.meta import mlflow_ids_of
from tuner.study.recovery import OWNER_TAG, Problem, inspect_study, repair
from tuner.study.settings import StudySettings
from tuner.study.tracker import Tracker
from tuner.training.loop import DeviceData

if TYPE_CHECKING:
    from tasks.base import Task
    from tasks.data import TaskData
    from tuner.study.meta import StudyMeta

_MAX_FAILS_IN_A_ROW = 3


def run_here(*, name: str, task: Task, meta: StudyMeta, task_data: TaskData, device: str,
             stores: Stores, settings: StudySettings, study: optuna.Study, tracker: Tracker,
             observer: Observer, target: int, timeout: float | None) -> SearchResult:
    """Run study `name`'s trials in this process, on `device`, until it has `target`: the
    task's data moved to the device once, for every trial."""
    session = Session(name=name, task=task, space=meta.space, meta=meta,
                      data=DeviceData.from_task_data(task_data, device), device=device,
                      stores=stores, settings=settings)
    runner = TrialRunner(session=session, study=study, tracker=tracker, observer=observer)
    return runner.run(target=target, timeout=timeout)


class TrialRunner:
    def __init__(self, *, session: Session, study: optuna.Study, tracker: Tracker,
                 observer: Observer) -> None:
        self.session = session
        self.study = study
        self.tracker = tracker
        self.observer = observer
        self.mlflow = MlflowQueue(study=session.name, notice=observer.notice)
        self.steps = TrialSteps(session=session, study=study, tracker=tracker,
                                observer=observer, mlflow=self.mlflow)
        # Trials trained at once as one stacked model (tuner.training.population); size 1
        # trains each trial alone, with tuner.training.loop.fit.
        self.stacked = StackedTrials(self.steps, size=session.settings.population)

    def run(self, *, target: int, timeout: float | None) -> SearchResult:
        s = self.session
        result = SearchResult(study=s.name, metric=s.meta.metric, direction=s.meta.direction,
                              device=s.device, data_source=s.meta.data_source,
                              stores=s.stores, target=target)
        with claims.study_lock(self.study):  # one process at a time repairs and re-queues
            self.recover()
        self.observer.study_start(study_start(
            name=s.name, device=s.device, target=target, meta=s.meta, stores=s.stores,
            done=studies.counted(self.study.get_trials(deepcopy=False))))
        self._parent_status("RUNNING")
        self.mlflow.later(self.tracker.warm, PLOT_MODULES)  # for the plots at the end
        # A second Ctrl-C waits for the clean-up the first one started (see _interrupted).
        with sigterm_as_interrupt(hold_repeats=True) as received:
            try:
                self._loop(result, target=target, timeout=timeout)
            except KeyboardInterrupt:
                signum = received[0] if received else signal.SIGINT
                self._parent_status("KILLED")
                raise Interrupted(signum, held=max(0, len(received) - 1)) from None
            except OpttuneError:  # stopped by failures: the parent run ends like the study
                self._parent_status("FAILED")
                raise
        self._parent_status("FINISHED")
        self.mlflow.safe(lambda: None)  # every queued MLflow write is in (and its trouble told)
        # The study's plots, on its parent run: drawn by the last of its processes to finish.
        if self.steps.parent and result.trials and not self._running_elsewhere():
            self.mlflow.safe(self.tracker.run, log_snapshot_plots,
                             StudySnapshot.of(self.study), run_id=self.steps.parent)
        self.mlflow.shutdown()
        return finish_result(result, self.study)

    def _loop(self, result: SearchResult, *, target: int, timeout: float | None) -> None:
        """Claim and train trials until the budget is taken or `timeout` seconds passed."""
        start = time.monotonic()
        fails_in_a_row = 0
        while timeout is None or time.monotonic() - start < timeout:
            # Atomic across processes: the study's total is never exceeded.
            claim = claims.claim_next(self.study, target=target, recover=self._recover_stale)
            if claim.trial is None:
                if not claim.wait:
                    return
                time.sleep(claims.POLL_SECONDS)  # a running trial may yet need a re-run
                continue
            if self.stacked.size > 1:
                outcomes = self.stacked.run(claim, target=target, recover=self._recover_stale)
            else:
                try:
                    with claims.heartbeat(self.study, claim.trial):
                        outcomes = [self.run_one(index=claim.done + 1, total=target,
                                                 trial=claim.trial)]
                except optuna.exceptions.UpdateFinishedTrialError:
                    self.steps.lost(claim.trial.number)
                    continue
            for outcome in outcomes:  # in the order the trials were claimed
                result.trials.append(outcome)
                reason = outcome.reason or ""
                fails_in_a_row = fails_in_a_row + 1 if outcome.state == "FAIL" and \
                    not reason.startswith("out of memory") else 0
                if fails_in_a_row >= _MAX_FAILS_IN_A_ROW:
                    raise OpttuneError(f"{fails_in_a_row} trials in a row failed; the "
                                       f"last with: {reason}")

    def run_one(self, *, index: int, total: int,
                trial: optuna.Trial | None = None) -> TrialOutcome:
        """Train one trial alone (`trial`: one claimed already; None: asked for here)."""
        return self.steps.train_alone(self.steps.start(trial, index=index, total=total))

    def _running_elsewhere(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    # -- repairs ---------------------------------------------------------------------------
    def _recover_stale(self) -> None:
        """Between trials, under the study's lock: fail the trials of dead processes (pid gone,
        or heartbeat silent) and queue them again once; the cheap part of :meth:`recover`."""
        for trial in studies.stale_trials(self.study):
            studies.fail_stale(self.study, trial)
            run_id = trial_attrs.run_id(trial)
            if run_id:
                self.mlflow.safe(self.tracker.end_trial, run_id, state="KILLED",
                                 tags={trial_attrs.FAIL_REASON_ATTR: "killed"})
            self.observer.notice(f"trial {trial.number} was left running by a process that is "
                                 f"gone; marked failed, its parameters will run again")

    def recover(self) -> None:
        """Repair what a crash left (see `opttune check`): fail the trials of dead processes
        and queue them again, end MLflow runs that disagree with their trial, log missing
        runs."""
        try:
            found = inspect_study(self.study, self.tracker, self.session.meta,
                                  parent=False).problems
        except Exception as exc:  # MLflow trouble: still repair the Optuna side
            self.observer.notice(f"MLflow: {type(exc).__name__}: {first_line(exc)}")
            found = [Problem("stale-trial", f"trial {t.number} is RUNNING but its process is "
                             f"gone", "mark it FAIL (killed)", t.number)
                     for t in studies.stale_trials(self.study)]
        for problem in found:
            try:
                repair(self.study, self.tracker, problem)
            except Exception as exc:
                self.observer.notice(f"could not repair: {problem.found} ({type(exc).__name__}: "
                                     f"{first_line(exc)})")
                continue
            if problem.kind == "stale-trial":
                self.observer.notice(f"trial {problem.trial} was left running by a process "
                                     f"that is gone; marked failed, its parameters will run "
                                     f"again")
            else:
                self.observer.notice(f"repaired: {problem.found} ({problem.repair})")
        ids = mlflow_ids_of(self.study)  # recreated if it was missing
        self.steps.parent = ids.parent_run_id or self.steps.parent
        self.steps.experiment = ids.experiment_id or self.steps.experiment

    def _parent_status(self, status: str) -> None:
        parent = self.steps.parent
        if parent:
            self.mlflow.safe(self.tracker.parent_running, parent, status == "RUNNING",
                             status=status)
            if status == "RUNNING":  # lets `opttune check` tell a live search from a dead one
                self.mlflow.safe(self.tracker.set_tags, parent,
                                 {OWNER_TAG: json.dumps(studies.owner_record())})
