"""`--population K`: up to K trials claimed together and trained as one stacked model where
they can (tuner.training.population), the others one at a time. Every member is a full
trial: its own Optuna trial, MLflow run and outcome, as :class:`TrialSteps` records them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import optuna

from tuner.search.events import TrialOutcome
from tuner.search.trial_steps import Ending, Started, TrialSteps, ending_of, free_memory
from tuner.space.config import TrialConfig
from tuner.study import claims, optuna_adapter, studies, trial_attrs
from tuner.training.devices import is_out_of_memory
from tuner.training.loop import EpochResult
from tuner.training.population import (
    CannotStack,
    fit_population,
    group_configs,
    stack_check,
    stacked_forward,
)


class StackedTrials:
    """The populations of one run of a study; `size` halves when a stack runs out of memory."""

    def __init__(self, steps: TrialSteps, *, size: int) -> None:
        self.steps = steps
        self.size = size
        self._unstackable: dict[str, str | None] = {}  # task params → why not (None: can)
        self._unstacked_families: set[str] = set()  # families without a rule, noticed once

    def run(self, first: claims.Claim, *, target: int,
            recover: Callable[[], None]) -> list[TrialOutcome]:
        """Claim up to `size` trials (one claim each, so the budget stays exact), then train
        those that can share a step as one stacked model, the others alone."""
        assert first.trial is not None
        study = self.steps.study
        members: list[Started] = []
        with ExitStack() as beats:
            try:
                trial: optuna.Trial | None = first.trial
                while trial is not None:
                    beats.enter_context(claims.heartbeat(study, trial))
                    # Sampled before the next claim: a sampler with a constant liar then sees
                    # this trial's parameters while it proposes the next one's.
                    members.append(self.steps.start(trial, index=first.done + len(members) + 1,
                                                    total=target))
                    if len(members) >= self.size:
                        break
                    trial = claims.claim_next(study, target=target, recover=recover).trial
            except BaseException:  # the members started so far never trained: run them again
                for m in members:
                    self.steps.interrupted(m)
                raise
            try:
                return self._train_members(members)
            except KeyboardInterrupt:
                for m in members:
                    self.steps.interrupted(m)
                raise

    def _train_members(self, members: Sequence[Started]) -> list[TrialOutcome]:
        outcomes: dict[int, TrialOutcome | None] = {}
        grouping = group_configs([m.config for m in members])
        for i, reason in grouping.alone.items():
            family = members[i].config.optimizer
            if reason.endswith("has no stacked update rule") and \
                    family not in self._unstacked_families:
                self._unstacked_families.add(family)
                self.steps.observer.notice(f"--population {self.size}: {reason}; its trials "
                                           f"train one at a time")
        units = list(grouping.groups) + [[i] for i in grouping.alone]
        for unit in sorted(units, key=lambda u: u[0]):  # in the order they were claimed
            group = [members[i] for i in unit]
            if len(group) > 1 and self._stackable(group[0].config):
                found = self._train_stacked(group)
            else:
                for m in group:
                    trial_attrs.set_population(m.trial, 1)  # claimed together, trained alone
                found = [self._settle_or_lost(m, None) for m in group]
            outcomes.update(zip(unit, found, strict=True))
        return [o for _, o in sorted(outcomes.items()) if o is not None]

    def _stackable(self, config: TrialConfig) -> bool:
        """Whether the task's model for these task params can train stacked; checked once per
        architecture, a refusal noticed once."""
        s = self.steps.session
        key = json.dumps(config.task_params, sort_keys=True, default=repr)
        if key not in self._unstackable:
            reason = stack_check(s.task, s.data, config, device=s.device)
            self._unstackable[key] = reason
            if reason is not None:
                self._notice_unstackable(reason)
            elif s.device == "cpu" and stacked_forward(
                    s.task, s.data, config, device=s.device) == "vmap":
                self.steps.observer.notice(
                    f"--population {self.size}: on a CPU this model trains stacked "
                    f"through vmap, which was measured slower than one trial at a time for "
                    f"a convolutional model (python -m bench.population); --jobs may serve "
                    f"better")
        return self._unstackable[key] is None

    def _notice_unstackable(self, reason: str) -> None:
        self.steps.observer.notice(f"--population {self.size}: these trials cannot train as "
                                   f"one stacked model ({reason}); they train one at a time")

    def _settle_or_lost(self, t: Started, ending: Ending | None) -> TrialOutcome | None:
        """Settle `t` (None: train it alone first); None if another process failed it."""
        try:
            return self.steps.train_alone(t) if ending is None else self.steps.settle(t, ending)
        except optuna.exceptions.UpdateFinishedTrialError:
            t.settled = True
            self.steps.lost(t.trial.number)
            return None

    def _train_stacked(self, group: Sequence[Started]) -> list[TrialOutcome | None]:
        s = self.steps.session
        settled: dict[int, TrialOutcome | None] = {}
        callbacks = [self.steps.on_epoch(m) for m in group]
        for m in group:  # what `opttune trials` and the MLflow params can tell about it
            trial_attrs.set_population(m.trial, len(group))

        def on_epoch(k: int, r: EpochResult) -> None:
            try:
                callbacks[k](r)
            except optuna.TrialPruned as exc:  # recorded now: the others train on for a while
                settled[k] = self._settle_or_lost(group[k], ending_of(exc))
                raise

        try:
            results = fit_population(
                s.task, s.data, [m.config for m in group], device=s.device,
                seeds=[self.steps.seed(m.trial.number) for m in group], on_epoch=on_epoch)
        except CannotStack as exc:  # nothing was trained
            self._notice_unstackable(exc.reason)
            for m in group:
                trial_attrs.set_population(m.trial, 1)
            return [self._settle_or_lost(m, None) for m in group]
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # out of memory, or an error: every member ends with it
            failed = ending_of(exc)
            endings = [failed] * len(group)
            out_of_memory = is_out_of_memory(exc)
        else:
            endings = [Ending("COMPLETE") if r.stopped is None else ending_of(r.stopped)
                       for r in results]
            out_of_memory = False
        if out_of_memory and len(group) > 1:
            # Handled here, after the except block: only then is the population's memory free.
            return self._out_of_memory(group, settled, endings[0].reason or "")
        return [settled[k] if k in settled or m.settled else self._settle_or_lost(m, ending)
                for k, (m, ending) in enumerate(zip(group, endings, strict=True))]

    def _out_of_memory(self, group: Sequence[Started], settled: dict[int, TrialOutcome | None],
                       reason: str) -> list[TrialOutcome | None]:
        """K trials stacked did not fit where one might: the members still training fail
        uncounted and their parameters run again, in populations half the size from now on."""
        device = self.steps.session.device
        free_memory(device)
        self.size = max(1, min(self.size, len(group) // 2))
        self.steps.observer.notice(
            f"--population: {len(group)} trials stacked ran out of memory on {device} "
            f"({reason.removeprefix('out of memory: ')}); their parameters run again, at most "
            f"{self.size} at a time from now on")
        outcomes: list[TrialOutcome | None] = []
        for k, m in enumerate(group):
            if k in settled or m.settled:  # pruned before the stack ran out
                outcomes.append(settled.get(k))
                continue
            m.settled = True
            outcomes.append(self.steps.finish(m, "FAIL", None,
                                              studies.POPULATION_OUT_OF_MEMORY, None))
            study = self.steps.study
            studies.requeue(study, optuna_adapter.frozen_trial(study, m.trial))
        return outcomes
