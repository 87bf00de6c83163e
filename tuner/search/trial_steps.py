"""One trial, from its claim to its outcome: sample its configuration and open its MLflow
run, report each epoch (to Optuna, which may prune it, to MLflow and to the display), and
record how it ended in both stores.

A trial ends in one of three ways, each recorded in both stores: COMPLETE with its value;
PRUNED (by the pruner, or because its loss diverged, with the step); FAIL (out of memory,
an error, or an interruption; an interrupted trial's parameters are queued to run again).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
import torch
from optuna.trial import TrialState

from tuner.errors import OpttuneError
from tuner.search.events import Observer, TrialOutcome, outcome_of
from tuner.search.mlflow_queue import MlflowQueue, first_line
from tuner.search.session import Session
from tuner.study import optuna_adapter, studies, trial_attrs
from tuner.study.trial_attrs import Divergence, TrialEnd
from tuner.study.trial_record import FinalState
from tuner.training.devices import is_out_of_memory, out_of_memory_reason
from tuner.training.loop import Diverged, EpochResult, fit
from tuner.training.seeds import trial_seed

if TYPE_CHECKING:
    from tuner.space.config import TrialConfig
    from tuner.study.tracker import Tracker


@dataclass
class Started:
    """A trial that has its config and MLflow run, while it trains."""

    trial: optuna.Trial
    config: TrialConfig
    run_id: str | None
    started: float  # perf_counter at its start
    history: list[float] = field(default_factory=list)  # its metric after each epoch
    settled: bool = False  # its outcome is recorded (or another process failed it)


@dataclass(frozen=True)
class Ending:
    """How a trial's training ended: its state, the reason and where it diverged."""

    state: FinalState
    reason: str | None = None
    diverged: Divergence | None = None


class TrialSteps:
    """What happens to each trial of one run of a study, alone or in a population."""

    def __init__(self, *, session: Session, study: optuna.Study, tracker: Tracker,
                 observer: Observer, mlflow: MlflowQueue) -> None:
        self.session = session
        self.study = study
        self.tracker = tracker
        self.observer = observer
        self.mlflow = mlflow
        # The study's MLflow ids: `opttune check`'s repairs may make new ones (TrialRunner).
        self.parent = session.meta.mlflow.parent_run_id
        self.experiment = session.meta.mlflow.experiment_id

    def start(self, trial: optuna.Trial | None, *, index: int, total: int) -> Started:
        """Sample the trial's config and open its MLflow run; the trial is asked for here when
        not given (a given one was claimed: claims.claim_next recorded its owner)."""
        claimed = trial is not None
        trial = trial if trial is not None else self.study.ask()
        try:
            if not claimed:
                studies.set_owner(self.study, trial, studies.owner_record())
            config = self.session.space.suggest(
                trial, use_defaults=trial_attrs.is_defaults(trial))
        except BaseException as exc:  # never leave a trial RUNNING, whatever went wrong
            if isinstance(exc, KeyboardInterrupt):
                trial_attrs.set_fail_reason(trial, "interrupted")
            self.study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, KeyboardInterrupt):
                studies.requeue(self.study, optuna_adapter.frozen_trial(self.study, trial))
            if isinstance(exc, ValueError):
                raise OpttuneError(f"trial {trial.number} could not be sampled: {exc}") from None
            raise
        flat: trial_attrs.FlatConfig = {**config.flat()}
        trial_attrs.set_config(trial, flat)
        run_id = self.mlflow.safe(self.tracker.start_trial, self.experiment,
                                  parent_run_id=self.parent, study=self.session.name,
                                  number=trial.number, config=flat)
        if run_id:
            trial_attrs.set_run_id(trial, run_id)
        self.observer.trial_start(trial.number, flat, index, total)
        return Started(trial, config, run_id, time.perf_counter())

    def on_epoch(self, t: Started) -> Callable[[EpochResult], None]:
        """What each validated epoch of trial `t` does: report it to Optuna, MLflow and the
        display, and raise TrialPruned when the pruner says so."""
        trial, config = t.trial, t.config
        metric, pruner = self.session.meta.metric, self.session.settings.pruner

        def on_epoch(r: EpochResult) -> None:
            t.history.append(r.value)
            trial.report(r.value, r.epoch)
            if t.run_id:
                self.mlflow.later(self.tracker.log_epoch, t.run_id, r.epoch, {
                    "train_loss": r.train_loss, "val_loss": r.val_loss, metric: r.value,
                    "lr": r.lr, "epoch_seconds": r.seconds})
            self.observer.epoch_end(trial.number, r.epoch, config.epochs, r.value, r.train_loss)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned by the {pruner} pruner after epoch "
                                         f"{r.epoch + 1}")

        return on_epoch

    def seed(self, number: int) -> int:
        settings = self.session.settings
        return trial_seed(number, seed=settings.seed, pinned=settings.trial_seed)

    def train_alone(self, t: Started) -> TrialOutcome:
        s = self.session
        try:
            fit(s.task, s.data, t.config, device=s.device, seed=self.seed(t.trial.number),
                on_epoch=self.on_epoch(t))
            ending = Ending("COMPLETE")
        except KeyboardInterrupt:
            self.interrupted(t)
            raise
        except Exception as exc:
            ending = ending_of(exc)
        return self.settle(t, ending)

    def settle(self, t: Started, ending: Ending) -> TrialOutcome:
        """Record how trial `t` ended. Called after the except block that caught what ended
        it: only with that exception and its frames gone is an out-of-memory trial's memory
        free."""
        t.settled = True
        if ending.reason and ending.reason.startswith("out of memory"):
            free_memory(self.session.device)
        value = t.history[-1] if ending.state == "COMPLETE" else None
        return self.finish(t, ending.state, value, ending.reason, ending.diverged)

    def interrupted(self, t: Started) -> None:
        """Ctrl-C or SIGTERM while `t` trained: fail it and queue its parameters once more."""
        if t.settled:
            return
        t.settled = True
        self.finish(t, "FAIL", None, "interrupted", None, mlflow_state="KILLED")
        studies.requeue(self.study, optuna_adapter.frozen_trial(self.study, t.trial))

    def lost(self, number: int) -> None:
        self.observer.notice(f"trial {number} was failed by another process (its heartbeat "
                             f"came too late); its parameters run again")

    def finish(self, t: Started, state: FinalState, value: float | None, reason: str | None,
               diverged: Divergence | None, *, mlflow_state: str | None = None) -> TrialOutcome:
        """Record the end of trial `t` in both stores, and show it."""
        trial, run_id = t.trial, t.run_id
        seconds = time.perf_counter() - t.started
        tags = trial_attrs.write_end(trial, TrialEnd(
            epochs_run=len(t.history), seconds=seconds, diverged=diverged,
            prune_reason=reason if state == "PRUNED" else None,
            fail_reason=reason if state == "FAIL" else None))
        self.study.tell(trial, value if state == "COMPLETE" else None,
                        state=getattr(TrialState, state))
        best = self.best()
        if run_id:
            metrics = {"trial_seconds": seconds} | ({"value": value} if value is not None else {})
            self.mlflow.later(self.tracker.end_trial, run_id, state=mlflow_state or state,
                              tags=tags, metrics=metrics)
            if best is not None and best.number == trial.number and self.parent:
                self.mlflow.later(self.tracker.set_tags, self.parent, {
                    "best_trial": best.number, "best_value": best.value,
                    "best_run_id": run_id, "best_optimizer": best.config.get("optimizer")})
            if self.parent:  # the study's history, charted on its parent run
                self.mlflow.later(self.tracker.log_progress, self.parent, trial.number, value,
                                  None if best is None else best.value)
        outcome = TrialOutcome(number=trial.number, state=state, value=value,
                               config=trial_attrs.config(trial) or {}, reason=reason,
                               seconds=seconds, run_id=run_id, epochs_run=len(t.history),
                               history=t.history)
        self.observer.trial_end(outcome, best)
        return outcome

    def best(self) -> TrialOutcome | None:
        best = studies.best_complete(self.study.get_trials(deepcopy=False),
                                     self.session.meta.direction)
        return None if best is None else outcome_of(best)


def ending_of(exc: Exception) -> Ending:
    """What stopped a trial's training early, as the state its trial ends in."""
    if isinstance(exc, optuna.TrialPruned):
        return Ending("PRUNED", str(exc))
    if isinstance(exc, Diverged):
        return Ending("PRUNED", "diverged", Divergence(step=exc.step, epoch=exc.epoch,
                                                       loss=str(exc.loss)))
    if is_out_of_memory(exc):
        return Ending("FAIL", out_of_memory_reason(exc))
    return Ending("FAIL", f"{type(exc).__name__}: {first_line(exc)[:300]}")


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
