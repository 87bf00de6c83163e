"""The trial loop: ask a trial, train it, report each epoch, tell the outcome, log it all.

A trial ends in one of three ways, each recorded in both stores: COMPLETE with its value;
PRUNED (by the pruner, or because its loss diverged, with the step); FAIL (out of memory,
an error, or an interruption; an interrupted trial's parameters are queued to run again).
"""

from __future__ import annotations

import gc
import json
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner.errors import OpttuneError
from tuner.search.events import Observer, TrialOutcome, outcome_of
from tuner.search.session import SearchResult, Session
from tuner.signals import Interrupted, sigterm_as_interrupt
from tuner.study import claims as budget
from tuner.study import optuna_adapter
from tuner.study import records as studies
from tuner.study.recovery import OWNER_TAG, Problem
from tuner.study.stores import redact
from tuner.training.devices import is_out_of_memory, out_of_memory_reason
from tuner.training.seeds import trial_seed

if TYPE_CHECKING:
    from tuner.space.config import TrialConfig
    from tuner.study.tracker import Tracker
    from tuner.training.loop import EpochResult

_MAX_FAILS_IN_A_ROW = 3
# An MLflow call that fails only after this long was retried by MLflow's client (about four
# minutes by default for a server that is down): the store is unreachable, and every queued
# call would wait as long, holding up each trial's start. MLflow is then left alone for
# _MLFLOW_PAUSE_S while the study goes on; `opttune check --fix` logs what it missed.
_MLFLOW_SLOW_FAILURE_S = 10.0
_MLFLOW_PAUSE_S = 600.0


class TrialRunner:
    def __init__(self, *, session: Session, study: optuna.Study, tracker: Tracker,
                 observer: Observer) -> None:
        self.s = session
        self.study = study
        self.tracker = tracker
        self.observer = observer
        self.parent = session.meta.mlflow.get("parent_run_id", "")
        self.experiment = session.meta.mlflow.get("experiment_id", "")
        # Every MLflow call runs on this one thread, in order. An SQLite write costs tens of
        # ms: epoch metrics and a trial's end are logged while training goes on (see _later).
        self._mlflow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opttune-mlflow")
        self._mlflow_errors: list[str] = []
        self._mlflow_paused_until = 0.0  # monotonic; read and written on the MLflow thread only
        # Trials trained at once as one stacked model (tuner.training.population); 1 trains
        # each trial alone, with loop.fit.
        self.population = int(session.settings.get("population") or 1)
        self._unstackable: dict[str, str | None] = {}  # task params → why not (None: can)
        self._unstacked_families: set[str] = set()  # families without a rule, noticed once

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, target: int, timeout: float | None) -> SearchResult:
        result = SearchResult(study=self.s.name, metric=self.s.meta.metric,
                              direction=self.s.meta.direction, device=self.s.device,
                              data_source=self.s.meta.data_source, stores=self.s.stores,
                              target=target)
        with budget.study_lock(self.study):  # one process at a time repairs and re-queues
            self.recover()
        start = time.monotonic()
        fails_in_a_row = 0
        self.observer.study_start({"study": self.s.name, "device": self.s.device,
                                   "target": target, "done": self._counted(),
                                   "space": self.s.space, "metric": self.s.meta.metric,
                                   "data_source": self.s.meta.data_source,
                                   "pruner": self.s.settings.get("pruner"),
                                   "stores": self.s.stores})
        self._parent_status("RUNNING")
        from tuner.results.plots import PLOT_MODULES

        self._later(self.tracker.warm, PLOT_MODULES)  # for the plots at the end
        # A second Ctrl-C waits for the clean-up the first one started (see _interrupted).
        with sigterm_as_interrupt(hold_repeats=True) as received:
            try:
                while True:
                    if timeout is not None and time.monotonic() - start >= timeout:
                        break
                    # Atomic across processes: the study's total is never exceeded.
                    claim = budget.claim_next(self.study, target=target,
                                              recover=self._recover_stale)
                    if claim.trial is None:
                        if not claim.wait:
                            break
                        time.sleep(budget.POLL_SECONDS)  # a running trial may yet need a re-run
                        continue
                    if self.population > 1:
                        outcomes = self._run_population(claim, target=target)
                    else:
                        try:
                            with budget.heartbeat(self.study, claim.trial):
                                outcomes = [self.run_one(index=claim.done + 1, total=target,
                                                         trial=claim.trial)]
                        except optuna.exceptions.UpdateFinishedTrialError:
                            self._lost(claim.trial.number)
                            continue
                    for outcome in outcomes:  # in the order the trials were claimed
                        result.trials.append(outcome)
                        reason = outcome.reason or ""
                        fails_in_a_row = fails_in_a_row + 1 if outcome.state == "FAIL" and \
                            not reason.startswith("out of memory") else 0
                        if fails_in_a_row >= _MAX_FAILS_IN_A_ROW:
                            raise OpttuneError(f"{fails_in_a_row} trials in a row failed; the "
                                               f"last with: {reason}")
            except KeyboardInterrupt:
                signum = received[0] if received else signal.SIGINT
                self._parent_status("KILLED")
                raise Interrupted(signum, held=max(0, len(received) - 1)) from None
            except OpttuneError:  # stopped by failures: the parent run ends like the study
                self._parent_status("FAILED")
                raise
        self._parent_status("FINISHED")
        self._safe(lambda: None)  # every queued MLflow write is in (and its trouble told)
        # The study's plots, on its parent run: drawn by the last of its processes to finish.
        if self.parent and result.trials and not self._running_elsewhere():
            from tuner.results.plots import StudySnapshot, log_snapshot_plots

            self._safe(self.tracker.run, log_snapshot_plots, StudySnapshot.of(self.study),
                       run_id=self.parent)
        self._mlflow.shutdown(wait=True)  # its thread ends: nothing is left to log
        result.total_counted = self._counted()
        result.best = self.best()
        result.all_trials = [outcome_of(t) for t in self.study.get_trials(deepcopy=False)
                             if t.state != TrialState.WAITING]
        return result

    def _counted(self) -> int:
        return studies.counted(self.study.get_trials(deepcopy=False))

    def _running_elsewhere(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _recover_stale(self) -> None:
        """Between trials, under the study's lock: fail the trials of dead processes (pid gone,
        or heartbeat silent) and queue them again once; the cheap part of :meth:`recover`."""
        for trial in studies.stale_trials(self.study):
            studies.fail_stale(self.study, trial)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id:
                self._safe(self.tracker.end_trial, run_id, state="KILLED",
                           tags={"fail_reason": "killed"})
            self.observer.notice(f"trial {trial.number} was left running by a process that is "
                                 f"gone; marked failed, its parameters will run again")

    def recover(self) -> None:
        """Repair what a crash left (see tuner.check): fail the trials of dead processes and
        queue them again, end MLflow runs that disagree with their trial, log missing runs."""
        from tuner.study.recovery import inspect_study, repair

        try:
            found = inspect_study(self.study, self.tracker, self.s.meta, parent=False).problems
        except Exception as exc:  # MLflow trouble: still repair the Optuna side
            self.observer.notice(f"MLflow: {type(exc).__name__}: {_first_line(exc)}")
            found = [Problem("stale-trial", f"trial {t.number} is RUNNING but its process is "
                             f"gone", "mark it FAIL (killed)", t.number)
                     for t in studies.stale_trials(self.study)]
        for problem in found:
            try:
                repair(self.study, self.tracker, problem)
            except Exception as exc:
                self.observer.notice(f"could not repair: {problem.found} ({type(exc).__name__}: "
                                     f"{_first_line(exc)})")
                continue
            if problem.kind == "stale-trial":
                self.observer.notice(f"trial {problem.trial} was left running by a process "
                                     f"that is gone; marked failed, its parameters will run "
                                     f"again")
            else:
                self.observer.notice(f"repaired: {problem.found} ({problem.repair})")
        mlflow_ids = self.study.user_attrs.get("mlflow", {})  # recreated if it was missing
        self.parent = mlflow_ids.get("parent_run_id", self.parent)
        self.experiment = mlflow_ids.get("experiment_id", self.experiment)

    # -- one trial -------------------------------------------------------------------------
    def run_one(self, *, index: int, total: int,
                trial: optuna.Trial | None = None) -> TrialOutcome:
        return self._train_alone(self._start(trial, index=index, total=total))

    def _start(self, trial: optuna.Trial | None, *, index: int, total: int) -> _Started:
        """Sample the trial's config and open its MLflow run; the trial is asked for here when
        not given (a given one was claimed: budget.claim_next recorded its owner)."""
        claimed = trial is not None
        trial = trial if trial is not None else self.study.ask()
        try:
            if not claimed:
                optuna_adapter.set_trial_system_attr(self.study, trial, studies.OWNER_ATTR,
                                                     studies.owner_record())
            config = self.s.space.suggest(trial)
        except BaseException as exc:  # never leave a trial RUNNING, whatever went wrong
            if isinstance(exc, KeyboardInterrupt):
                trial.set_user_attr("fail_reason", "interrupted")
            self.study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, KeyboardInterrupt):
                studies.requeue(self.study, optuna_adapter.frozen_trial(self.study, trial))
            if isinstance(exc, ValueError):
                raise OpttuneError(f"trial {trial.number} could not be sampled: {exc}") from None
            raise
        flat = config.flat()
        trial.set_user_attr("config", flat)
        run_id = self._safe(self.tracker.start_trial, self.experiment, parent_run_id=self.parent,
                            study=self.s.name, number=trial.number, config=flat)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        self.observer.trial_start(trial.number, flat, index, total)
        return _Started(trial, config, run_id, time.perf_counter())

    def _on_epoch(self, t: _Started) -> Callable[[EpochResult], None]:
        """What each validated epoch of trial `t` does: report it to Optuna, MLflow and the
        display, and raise TrialPruned when the pruner says so."""
        trial, config = t.trial, t.config

        def on_epoch(r: EpochResult) -> None:
            t.history.append(r.value)
            trial.report(r.value, r.epoch)
            if t.run_id:
                self._later(self.tracker.log_epoch, t.run_id, r.epoch, {
                    "train_loss": r.train_loss, "val_loss": r.val_loss,
                    self.s.meta.metric: r.value, "lr": r.lr, "epoch_seconds": r.seconds})
            self.observer.epoch_end(trial.number, r.epoch, config.epochs, r.value, r.train_loss)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned by the {self.s.settings.get('pruner')} "
                                         f"pruner after epoch {r.epoch + 1}")

        return on_epoch

    def _train_alone(self, t: _Started) -> TrialOutcome:
        from tuner.training.loop import fit

        try:
            fit(self.s.task, self.s.data, t.config, device=self.s.device,
                seed=trial_seed(self.s.settings, t.trial.number), on_epoch=self._on_epoch(t))
            ending = _Ending("COMPLETE")
        except KeyboardInterrupt:
            self._interrupted(t)
            raise
        except Exception as exc:
            ending = _ending(exc)
        return self._settle(t, ending)

    def _settle(self, t: _Started, ending: _Ending) -> TrialOutcome:
        """Record how trial `t` ended. Called after the except block that caught what ended
        it: only with that exception and its frames gone is an out-of-memory trial's memory
        free."""
        t.settled = True
        if ending.reason and ending.reason.startswith("out of memory"):
            _free_memory(self.s.device)
        value = t.history[-1] if ending.state == "COMPLETE" else None
        return self._finish(t.trial, ending.state, value, ending.reason, ending.extra, t.run_id,
                            t.started, t.history)

    def _interrupted(self, t: _Started) -> None:
        """Ctrl-C or SIGTERM while `t` trained: fail it and queue its parameters once more."""
        if t.settled:
            return
        t.settled = True
        self._finish(t.trial, "FAIL", None, "interrupted", {}, t.run_id, t.started, t.history,
                     mlflow_state="KILLED")
        studies.requeue(self.study, optuna_adapter.frozen_trial(self.study, t.trial))

    def _lost(self, number: int) -> None:
        self.observer.notice(f"trial {number} was failed by another process (its heartbeat "
                             f"came too late); its parameters run again")

    # -- a population of trials ------------------------------------------------------------
    def _run_population(self, first: budget.Claim, *, target: int) -> list[TrialOutcome]:
        """Claim up to `population` trials (one claim each, so the budget stays exact), then
        train those that can share a step as one stacked model, the others alone. Every
        member is a full trial: its own Optuna trial, MLflow run and outcome."""
        assert first.trial is not None
        members: list[_Started] = []
        with ExitStack() as beats:
            try:
                trial: optuna.Trial | None = first.trial
                while trial is not None:
                    beats.enter_context(budget.heartbeat(self.study, trial))
                    # Sampled before the next claim: a sampler with a constant liar then sees
                    # this trial's parameters while it proposes the next one's.
                    members.append(self._start(trial, index=first.done + len(members) + 1,
                                               total=target))
                    if len(members) >= self.population:
                        break
                    trial = budget.claim_next(self.study, target=target,
                                              recover=self._recover_stale).trial
            except BaseException:  # the members started so far never trained: run them again
                for m in members:
                    self._interrupted(m)
                raise
            try:
                return self._train_members(members)
            except KeyboardInterrupt:
                for m in members:
                    self._interrupted(m)
                raise

    def _train_members(self, members: Sequence[_Started]) -> list[TrialOutcome]:
        from tuner.training.population import group_configs

        outcomes: dict[int, TrialOutcome | None] = {}
        grouping = group_configs([m.config for m in members])
        for i, reason in grouping.alone.items():
            family = members[i].config.optimizer
            if reason.endswith("has no stacked update rule") and \
                    family not in self._unstacked_families:
                self._unstacked_families.add(family)
                self.observer.notice(f"--population {self.population}: {reason}; its trials "
                                     f"train one at a time")
        units = list(grouping.groups) + [[i] for i in grouping.alone]
        for unit in sorted(units, key=lambda u: u[0]):  # in the order they were claimed
            group = [members[i] for i in unit]
            if len(group) > 1 and self._stackable(group[0].config):
                found = self._train_stacked(group)
            else:
                for m in group:
                    m.trial.set_user_attr("population", 1)  # claimed together, trained alone
                found = [self._settle_or_lost(m, None) for m in group]
            outcomes.update(zip(unit, found, strict=True))
        return [o for _, o in sorted(outcomes.items()) if o is not None]

    def _stackable(self, config: TrialConfig) -> bool:
        """Whether the task's model for these task params can train stacked; checked once per
        architecture, a refusal noticed once."""
        from tuner.training.population import stack_check, stacked_forward

        key = json.dumps(config.task_params, sort_keys=True, default=repr)
        if key not in self._unstackable:
            reason = stack_check(self.s.task, self.s.data, config, device=self.s.device)
            self._unstackable[key] = reason
            if reason is not None:
                self._notice_unstackable(reason)
            elif self.s.device == "cpu" and stacked_forward(
                    self.s.task, self.s.data, config, device=self.s.device) == "vmap":
                self.observer.notice(
                    f"--population {self.population}: on a CPU this model trains stacked "
                    f"through vmap, which was measured slower than one trial at a time for "
                    f"a convolutional model (python -m bench.population); --jobs may serve "
                    f"better")
        return self._unstackable[key] is None

    def _notice_unstackable(self, reason: str) -> None:
        self.observer.notice(f"--population {self.population}: these trials cannot train as "
                             f"one stacked model ({reason}); they train one at a time")

    def _settle_or_lost(self, t: _Started, ending: _Ending | None) -> TrialOutcome | None:
        """Settle `t` (None: train it alone first); None if another process failed it."""
        try:
            return self._train_alone(t) if ending is None else self._settle(t, ending)
        except optuna.exceptions.UpdateFinishedTrialError:
            t.settled = True
            self._lost(t.trial.number)
            return None

    def _train_stacked(self, group: Sequence[_Started]) -> list[TrialOutcome | None]:
        from tuner.training.population import CannotStack, fit_population

        settled: dict[int, TrialOutcome | None] = {}
        callbacks = [self._on_epoch(m) for m in group]
        for m in group:  # what `opttune trials` and the MLflow params can tell about it
            m.trial.set_user_attr("population", len(group))

        def on_epoch(k: int, r: EpochResult) -> None:
            try:
                callbacks[k](r)
            except optuna.TrialPruned as exc:  # recorded now: the others train on for a while
                settled[k] = self._settle_or_lost(group[k], _ending(exc))
                raise

        try:
            results = fit_population(
                self.s.task, self.s.data, [m.config for m in group], device=self.s.device,
                seeds=[trial_seed(self.s.settings, m.trial.number) for m in group],
                on_epoch=on_epoch)
        except CannotStack as exc:  # nothing was trained
            self._notice_unstackable(exc.reason)
            for m in group:
                m.trial.set_user_attr("population", 1)
            return [self._settle_or_lost(m, None) for m in group]
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # out of memory, or an error: every member ends with it
            failed = _ending(exc)
            endings = [failed] * len(group)
            out_of_memory = is_out_of_memory(exc)
        else:
            endings = [_Ending("COMPLETE") if r.stopped is None else _ending(r.stopped)
                       for r in results]
            out_of_memory = False
        if out_of_memory and len(group) > 1:
            # Handled here, after the except block: only then is the population's memory free.
            return self._population_out_of_memory(group, settled, endings[0].reason or "")
        return [settled[k] if k in settled or m.settled else self._settle_or_lost(m, ending)
                for k, (m, ending) in enumerate(zip(group, endings, strict=True))]

    def _population_out_of_memory(self, group: Sequence[_Started],
                                  settled: dict[int, TrialOutcome | None],
                                  reason: str) -> list[TrialOutcome | None]:
        """K trials stacked did not fit where one might: the members still training fail
        uncounted and their parameters run again, in populations half the size from now on."""
        _free_memory(self.s.device)
        self.population = max(1, min(self.population, len(group) // 2))
        self.observer.notice(
            f"--population: {len(group)} trials stacked ran out of memory on {self.s.device} "
            f"({reason.removeprefix('out of memory: ')}); their parameters run again, at most "
            f"{self.population} at a time from now on")
        outcomes: list[TrialOutcome | None] = []
        for k, m in enumerate(group):
            if k in settled or m.settled:  # pruned before the stack ran out
                outcomes.append(settled.get(k))
                continue
            m.settled = True
            outcomes.append(self._finish(m.trial, "FAIL", None, studies.POPULATION_OUT_OF_MEMORY,
                                         {}, m.run_id, m.started, m.history))
            studies.requeue(self.study, optuna_adapter.frozen_trial(self.study, m.trial))
        return outcomes

    def _finish(self, trial: optuna.Trial, state: str, value: float | None, reason: str | None,
                extra: dict[str, Any], run_id: str | None, started: float,
                history: list[float], *, mlflow_state: str | None = None) -> TrialOutcome:
        seconds = time.perf_counter() - started
        attrs = {**extra, "epochs_run": len(history), "seconds": round(seconds, 3)}
        if reason and state == "PRUNED":
            attrs["prune_reason"] = reason
        if reason and state == "FAIL":
            attrs["fail_reason"] = reason
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
        self.study.tell(trial, value if state == "COMPLETE" else None,
                        state=getattr(TrialState, state))
        best = self.best()
        if run_id:
            tags = {k: v for k, v in attrs.items() if k != "seconds"}
            metrics = {"trial_seconds": seconds} | ({"value": value} if value is not None else {})
            self._later(self.tracker.end_trial, run_id, state=mlflow_state or state, tags=tags,
                        metrics=metrics)
            if best is not None and best.number == trial.number and self.parent:
                self._later(self.tracker.set_tags, self.parent, {
                    "best_trial": best.number, "best_value": best.value,
                    "best_run_id": run_id, "best_optimizer": best.config.get("optimizer")})
            if self.parent:  # the study's history, charted on its parent run
                self._later(self.tracker.log_progress, self.parent, trial.number, value,
                            None if best is None else best.value)
        outcome = TrialOutcome(number=trial.number, state=state, value=value,
                               config=dict(trial.user_attrs.get("config", {})), reason=reason,
                               seconds=seconds, run_id=run_id, epochs_run=len(history),
                               history=history)
        self.observer.trial_end(outcome, best)
        return outcome

    def best(self) -> TrialOutcome | None:
        best = studies.best_complete(self.study.get_trials(deepcopy=False),
                                     self.s.meta.direction)
        return None if best is None else outcome_of(best)

    def _parent_status(self, status: str) -> None:
        if self.parent:
            self._safe(self.tracker.parent_running, self.parent, status == "RUNNING",
                       status=status)
            if status == "RUNNING":  # lets `opttune check` tell a live search from a dead one
                self._safe(self.tracker.set_tags, self.parent,
                           {OWNER_TAG: json.dumps(studies.owner_record())})

    def _safe(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """MLflow trouble is reported, never fatal to the study: Optuna's record is primary.

        Waits for the call (and so for every MLflow call queued before it)."""
        result = self._later(fn, *args, **kwargs).result()
        while self._mlflow_errors:
            self.observer.notice(self._mlflow_errors.pop(0))
        return result

    def _later(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Queue an MLflow call on the MLflow thread; a failure is reported by the next _safe."""
        def call() -> Any:
            if time.monotonic() < self._mlflow_paused_until:
                return None  # unreachable a moment ago: skipped, not waited for
            began = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                first = _first_line(exc)
                self._mlflow_errors.append(f"MLflow: {type(exc).__name__}: {first}")
                waited = time.monotonic() - began
                if waited >= _MLFLOW_SLOW_FAILURE_S:
                    self._mlflow_paused_until = time.monotonic() + _MLFLOW_PAUSE_S
                    self._mlflow_errors.append(
                        f"MLflow: unreachable (a call failed after {waited:.0f} s of retries); "
                        f"the study goes on without it for {_MLFLOW_PAUSE_S / 60:.0f} minutes, "
                        f"then tries again; `opttune check {self.s.name} --fix` logs the "
                        f"trials it missed")
                return None

        return self._mlflow.submit(call)


def _free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


@dataclass
class _Started:
    """A trial that has its config and MLflow run, while it trains."""

    trial: optuna.Trial
    config: TrialConfig
    run_id: str | None
    started: float  # perf_counter at its start
    history: list[float] = field(default_factory=list)  # its metric after each epoch
    settled: bool = False  # its outcome is recorded (or another process failed it)


@dataclass(frozen=True)
class _Ending:
    """How a trial's training ended: its state, the reason and what the stores record."""

    state: str
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ending(exc: Exception) -> _Ending:
    """What stopped a trial's training early, as the state its trial ends in."""
    from tuner.training.loop import Diverged

    if isinstance(exc, optuna.TrialPruned):
        return _Ending("PRUNED", str(exc))
    if isinstance(exc, Diverged):
        return _Ending("PRUNED", "diverged", {"diverged_step": exc.step,
                                              "diverged_epoch": exc.epoch,
                                              "diverged_loss": str(exc.loss)})
    if is_out_of_memory(exc):
        return _Ending("FAIL", out_of_memory_reason(exc))
    return _Ending("FAIL", f"{type(exc).__name__}: {_first_line(exc)[:300]}")


def _first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, passwords masked ("" for none): what a notice and a
    stored fail reason say of an error."""
    lines = redact(str(exc)).splitlines()
    return lines[0] if lines else ""
