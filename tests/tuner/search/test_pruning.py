"""Per-family pruning, on real Optuna studies with scripted learning curves."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
import pytest
from optuna.trial import TrialState

from tuner.errors import OpttuneError
from tuner.search.pruning import FamilyHyperbandPruner, FamilyMedianPruner, make_pruner
from tuner.study.trial_attrs import DEFAULTS_ATTR

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ["sgd", "adam"]
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Outcome:
    family: str
    defaults: bool
    state: TrialState
    epochs_done: int  # epochs reported before the trial ended


def run_trial(study: optuna.Study, family: str, curve: Sequence[float], *,
              defaults: bool = False) -> Outcome:
    """Run one trial as the trial loop does: report 0-based epochs, ask whether to prune."""
    study.enqueue_trial({"optimizer": family}, user_attrs={DEFAULTS_ATTR: True} if defaults
                        else None)
    trial = study.ask()
    assert trial.suggest_categorical("optimizer", FAMILIES) == family
    for epoch, value in enumerate(curve):
        trial.report(value, epoch)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return Outcome(family, defaults, TrialState.PRUNED, epoch + 1)
    study.tell(trial, curve[-1])
    return Outcome(family, defaults, TrialState.COMPLETE, len(curve))


def run_script(pruner: optuna.pruners.BasePruner,
               script: Sequence[tuple[str, Sequence[float]]], *,
               direction: Direction = "maximize") -> list[Outcome]:
    """Each family's first trial in the script is its defaults trial."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    seen: set[str] = set()
    outcomes = []
    for family, curve in script:
        outcomes.append(run_trial(study, family, curve, defaults=family not in seen))
        seen.add(family)
    return outcomes


# Accuracy over 3 epochs: Adam leads; tuned SGD trials each beat SGD's defaults.
LEADER = [("adam", [0.85, 0.90, 0.92]), ("adam", [0.86, 0.91, 0.93]),
          ("adam", [0.84, 0.89, 0.91]), ("adam", [0.87, 0.92, 0.94])]
TRAILER = [("sgd", [0.50, 0.55, 0.60]), ("sgd", [0.55, 0.62, 0.68]),
           ("sgd", [0.56, 0.63, 0.70]), ("sgd", [0.57, 0.64, 0.71]),
           ("sgd", [0.58, 0.66, 0.72]), ("sgd", [0.60, 0.68, 0.75])]
TRAILING_STUDY = [LEADER[0], TRAILER[0], *LEADER[1:], *TRAILER[1:]]


def test_study_wide_median_prunes_a_trailing_family_that_the_family_pruner_lets_run() -> None:
    old = run_script(optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
                     TRAILING_STUDY)
    new = run_script(make_pruner("median", epochs=3), TRAILING_STUDY)
    tuned_sgd = [i for i, o in enumerate(old) if o.family == "sgd" and not o.defaults]
    assert len(tuned_sgd) == 5  # the subject exists: tuned trials of the trailing family
    assert all(old[i].state == TrialState.PRUNED and old[i].epochs_done == 1 for i in tuned_sgd)
    assert all(new[i].state == TrialState.COMPLETE for i in tuned_sgd)
    assert all(o.state == TrialState.COMPLETE for o in new)


@pytest.mark.parametrize("epochs, pruned_after", [(3, 1), (10, 3)])
def test_a_bad_trial_is_pruned_within_its_family_after_the_warm_up(
        epochs: int, pruned_after: int) -> None:
    good = [0.80 + 0.01 * e for e in range(epochs)]
    bad = [0.20] * epochs
    # The other family is far worse: a study-wide median would not prune the bad Adam trial.
    script = [("sgd", [0.10] * epochs)] * 4 + [("adam", good)] * 3 + [("adam", bad)]
    outcomes = run_script(make_pruner("median", epochs=epochs), script)
    assert [o.state for o in outcomes[:-1]] == [TrialState.COMPLETE] * 7
    assert outcomes[-1].state == TrialState.PRUNED
    assert outcomes[-1].epochs_done == pruned_after


@pytest.mark.parametrize("name", ["median", "hyperband"])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_never_pruned_at_the_last_epoch(name: str, direction: Direction) -> None:
    sign = 1.0 if direction == "maximize" else -1.0
    good = [sign * v for v in (0.80, 0.85, 0.90)]
    late_collapse = [sign * v for v in (0.95, 0.95, 0.01)]
    script = [("adam", good)] * 3 + [("adam", late_collapse)] * 4
    outcomes = run_script(make_pruner(name, epochs=3), script, direction=direction)
    assert all(o.state == TrialState.COMPLETE for o in outcomes)
    # One epoch in all: there is no epoch before the last, so nothing is ever pruned.
    outcomes = run_script(make_pruner(name, epochs=1),
                          [("adam", [0.9])] * 3 + [("adam", [0.01])] * 3)
    assert all(o.state == TrialState.COMPLETE for o in outcomes)


@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_a_familys_first_complete_trials_are_never_pruned(name: str) -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner(name, epochs=3))
    for _ in range(5):  # another family's complete trials do not count
        run_trial(study, "sgd", [0.9, 0.9, 0.9])
    assert run_trial(study, "adam", [0.9, 0.9, 0.9], defaults=True).state == TrialState.COMPLETE
    # A diverged trial, told PRUNED by the trial loop itself: pruned trials do not count either.
    study.enqueue_trial({"optimizer": "adam"})
    diverged = study.ask()
    diverged.suggest_categorical("optimizer", FAMILIES)
    diverged.report(math.nan, 0)
    study.tell(diverged, state=TrialState.PRUNED)
    # The defaults trial is the first of three: two more complete, however bad.
    falling = [run_trial(study, "adam", [v, v, v]) for v in (0.5, 0.4, 0.3, 0.2, 0.1, 0.05)]
    assert [o.state for o in falling[:2]] == [TrialState.COMPLETE] * 2
    assert TrialState.PRUNED in {o.state for o in falling[2:]}
    if name == "median":  # the first one judged is worse than the median (0.9, 0.5, 0.4)
        assert (falling[2].state, falling[2].epochs_done) == (TrialState.PRUNED, 1)


def test_hyperband_schedule_over_epochs_done() -> None:
    three = FamilyHyperbandPruner(epochs=3)
    assert (three.reduction_factor, three.n_brackets) == (2, 2)
    assert (three.rungs(0), three.rungs(1)) == ((1, 2), (2,))
    ten = FamilyHyperbandPruner(epochs=10)
    assert (ten.reduction_factor, ten.n_brackets) == (3, 3)
    assert [ten.rungs(b) for b in range(3)] == [(1, 3, 9), (3, 9), (9,)]
    assert FamilyHyperbandPruner(epochs=1).n_brackets == 0


def _blake2b_bracket(number: int, n_brackets: int) -> int:
    """The documented rule, written out independently: an 8-byte BLAKE2b digest of the trial
    number's decimal text, read big-endian, modulo the number of brackets."""
    digest = hashlib.blake2b(str(number).encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_brackets


BRACKETS_SCRIPT = """
import json, sys
from tuner.search.pruning import FamilyHyperbandPruner
print(json.dumps({e: [FamilyHyperbandPruner(epochs=e).bracket_of(n) for n in range(200)]
                  for e in (3, 10)}))
"""


def test_hyperband_brackets_are_a_fixed_hash_of_the_trial_number() -> None:
    """Guards the bracket rule pruning.py documents: a fixed hash of the trial number (never
    Python's per-process salted hash()), so every process of a study puts a trial in the same
    bracket; each bracket gets its share of trials, also among the trials of a family the
    sampler picks every other (or every third) trial."""
    numbers = range(3000)
    for epochs in (3, 10):
        pruner = FamilyHyperbandPruner(epochs=epochs)
        n = pruner.n_brackets
        brackets = [pruner.bracket_of(k) for k in numbers]
        assert brackets == [_blake2b_bracket(k, n) for k in numbers]
        # Spread evenly: each bracket near 1/n of the trials, not in step with k % n.
        for b in range(n):
            assert abs(brackets.count(b) / len(numbers) - 1 / n) < 0.05, (epochs, b)
        for period in (2, 3):
            for phase in range(period):
                every = brackets[phase::period]
                assert set(every[:30]) == set(range(n)), (epochs, period, phase)
                assert min(every.count(b) for b in range(n)) > len(every) / n / 2
    # The same in other processes, whatever their hash seed.
    here = {str(e): [FamilyHyperbandPruner(epochs=e).bracket_of(k) for k in range(200)]
            for e in (3, 10)}
    for hash_seed in ("0", "1", "4242"):
        proc = subprocess.run([sys.executable, "-c", BRACKETS_SCRIPT], cwd=ROOT, text=True,
                              capture_output=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout) == here, hash_seed


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_hyperband_judges_the_first_rung_after_one_epoch_and_both_brackets_prune(
        direction: Direction) -> None:
    pruner = make_pruner("hyperband", epochs=3)
    assert isinstance(pruner, FamilyHyperbandPruner)
    sign = 1.0 if direction == "maximize" else -1.0
    good = [sign * v for v in (0.80, 0.85, 0.90)]
    bad = [sign * v for v in (0.30, 0.35, 0.40)]
    script = [("adam", good)] * 3 + [("adam", bad if i % 2 else good) for i in range(16)]
    outcomes = run_script(pruner, script, direction=direction)
    assert all(o.state == TrialState.COMPLETE for o in outcomes[:3])  # the startup trials
    pruned = [(pruner.bracket_of(n), o.epochs_done) for n, o in enumerate(outcomes)
              if o.state == TrialState.PRUNED]
    assert (0, 1) in pruned  # bracket 0: judged after one epoch done (step 0)
    assert (1, 2) in pruned  # bracket 1: its only rung, after two epochs of three
    assert all(epochs_done < 3 for _, epochs_done in pruned)
    good_ones = [o for o, (_, curve) in zip(outcomes, script, strict=True) if curve is good]
    assert all(o.state == TrialState.COMPLETE for o in good_ones)  # never worse than a rival


def test_hyperband_competitors_are_the_same_family_only() -> None:
    pruner = make_pruner("hyperband", epochs=3)
    script = [("adam", [0.9, 0.9, 0.9])] * 8 + [("sgd", [0.2, 0.3, 0.4])] * 8
    outcomes = run_script(pruner, script)
    assert all(o.state == TrialState.COMPLETE for o in outcomes)


def test_unknown_pruner_and_bad_epochs() -> None:
    assert isinstance(make_pruner("median", epochs=3), FamilyMedianPruner)
    assert isinstance(make_pruner("none", epochs=3), optuna.pruners.NopPruner)
    with pytest.raises(OpttuneError, match="--pruner must be one of median, hyperband, none, "
                                           "but got 'asha'"):
        make_pruner("asha", epochs=3)
    with pytest.raises(OpttuneError, match="epochs must be >= 1, but got epochs=0"):
        make_pruner("median", epochs=0)


# -- end to end: a real study on real digits ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_every_family_gets_tuned_trials_of_its_own(home: Path, pruner: str) -> None:
    """The issue's check: 24 trials over sgd, momentum and adam, 4 epochs. Each family keeps
    at least two complete trials besides its defaults trial, and no pruned trial reached its
    last epoch (a trial that trained every epoch completes)."""
    from click.testing import CliRunner

    from tuner.cli.commands import cli

    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--optimizers", "sgd,momentum,adam", "--n-trials",
        "24", "--epochs", "4", "--seed", "0", "--pruner", pruner, "--device", "cpu",
        "--home", str(home)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits-mlp",
                              storage=f"sqlite:///{home / 'opttune.db'}")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 24
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the pruner pruned nothing: this study does not test it"
    for t in pruned:
        assert 3 not in t.intermediate_values, (t.number, t.intermediate_values)
    for family in ("sgd", "momentum", "adam"):
        tuned = [t for t in trials if t.params.get("optimizer") == family
                 and t.state == TrialState.COMPLETE and not t.user_attrs.get("defaults_trial")]
        assert len(tuned) >= 2, (family, [(t.number, t.state.name) for t in trials
                                          if t.params.get("optimizer") == family])
