"""Each family's defaults trial is queued when it is claimed, so the store never holds trials
that were not run: a re-run first, then the next family's defaults trial, then sampled ones."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import FrozenTrial, TrialState

from tuner.cli.commands import cli
from tuner.space.searchspace import Space, build_space
from tuner.study import studies
from tuner.study.claims import claim_next
from tuner.study.meta import StudyMeta, space_of
from tuner.study.settings import MlflowIds, StudySettings
from tuner.study.stores import open_storage
from tuner.study.trial_attrs import DEFAULTS_ATTR

FAMILIES = ["sgd", "adam", "rmsprop"]


def make_study(tmp_path: Path, *, defaults_first: bool = True) -> optuna.Study:
    space = build_space(optimizers=FAMILIES, default_epochs=1, defaults_first=defaults_first)
    meta = StudyMeta(task="digits-mlp", space=space, data_source="test", metric="val_acc",
                     direction="maximize", settings=StudySettings(), mlflow=MlflowIds())
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True)
    return studies.create_study(storage, "q", meta, sampler=optuna.samplers.RandomSampler(0),
                                pruner=None)


def space(study: optuna.Study) -> Space:
    found = space_of(study)
    assert found is not None
    return found


def claim(study: optuna.Study, *, target: int = 10) -> optuna.Trial:
    """Claim one trial and sample its configuration, as the trial loop does."""
    got = claim_next(study, target=target, recover=lambda: None)
    assert got.trial is not None
    space(study).suggest(got.trial, use_defaults=is_defaults(got.trial))
    return got.trial


def stored(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


def is_defaults(trial: FrozenTrial | optuna.Trial) -> bool:
    return bool(trial.user_attrs.get(DEFAULTS_ATTR))


def test_defaults_trials_are_queued_one_claim_at_a_time_in_family_order(
        tmp_path: Path) -> None:
    study = make_study(tmp_path)
    assert stored(study) == []  # nothing is queued when the study is made

    first, second = claim(study), claim(study)  # the first still runs: it counts as done
    assert len(stored(study)) == 2
    third = claim(study)
    assert [t.params["optimizer"] for t in (first, second, third)] == FAMILIES
    assert all(is_defaults(t) for t in (first, second, third))
    assert second.params["lr"] == 1e-3  # Adam at its PyTorch defaults
    for trial in (first, second, third):
        study.tell(trial, 0.5)

    sampled = claim(study)
    assert not is_defaults(sampled)  # every family has had its defaults trial
    study.tell(sampled, 0.5)
    trials = stored(study)
    assert len(trials) == 4 and not [t for t in trials if t.state == TrialState.WAITING]
    assert sum(is_defaults(t) for t in trials) == len(FAMILIES)


def test_a_re_run_goes_first_and_keeps_its_family_from_a_second_defaults_trial(
        tmp_path: Path) -> None:
    study = make_study(tmp_path)
    interrupted = claim(study)
    interrupted.set_user_attr("fail_reason", "interrupted")
    studies.requeue(study, study.tell(interrupted, state=TrialState.FAIL))

    rerun = claim(study)
    assert rerun.user_attrs["retry_of"] == interrupted.number
    assert is_defaults(rerun) and rerun.params == interrupted.params  # SGD's defaults again
    study.tell(rerun, 0.5)
    following = claim(study)
    assert is_defaults(following) and following.params["optimizer"] == "adam"  # not SGD twice
    study.tell(following, 0.5)
    assert [t.params["optimizer"] for t in stored(study) if is_defaults(t)] == \
        ["sgd", "sgd", "adam"]  # the interrupted one and its re-run, then Adam's


def test_a_study_that_queued_every_defaults_trial_up_front_pops_them_without_more(
        tmp_path: Path) -> None:
    study = make_study(tmp_path)
    for family in FAMILIES:  # as studies were made before defaults trials were queued lazily
        study.enqueue_trial(space(study).defaults_params(family),
                            user_attrs={DEFAULTS_ATTR: True})
    ran = []
    for _ in range(len(FAMILIES) + 1):
        trial = claim(study)
        ran.append((trial.params["optimizer"], is_defaults(trial)))
        study.tell(trial, 0.5)
    assert ran[:3] == [(family, True) for family in FAMILIES]
    assert ran[3][1] is False
    assert len(stored(study)) == len(FAMILIES) + 1


def test_no_defaults_trial_when_the_space_turns_them_off_or_the_budget_is_full(
        tmp_path: Path) -> None:
    study = make_study(tmp_path)
    full = claim_next(study, target=0, recover=lambda: None)
    assert full.trial is None and stored(study) == []  # no room: nothing queued

    (tmp_path / "off").mkdir()
    off = make_study(tmp_path / "off", defaults_first=False)
    trial = claim(off)
    assert not is_defaults(trial) and len(stored(off)) == 1


def test_a_study_opttune_did_not_make_gets_sampled_trials_only(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True)
    study = optuna.create_study(study_name="plain", storage=storage)
    got = claim_next(study, target=3, recover=lambda: None)
    assert got.trial is not None and not is_defaults(got.trial)
    assert len(stored(study)) == 1


@pytest.mark.slow
def test_a_two_trial_search_stores_two_trials_and_resume_runs_the_next_defaults(
        home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["search", "--task", "digits-mlp", "--study", "d", "--n-trials",
                                 "2", "--epochs", "1", "--device", "cpu", "--home", str(home)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{home / 'opttune.db'}")
    families = list(space(study).families)
    trials = study.get_trials()
    assert len(trials) == 2
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(is_defaults(t) for t in trials)
    assert [t.params["optimizer"] for t in trials] == families[:2]  # nothing queued beyond

    result = runner.invoke(cli, ["resume", "d", "--n-trials", "2", "--home", str(home)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = study.get_trials()
    assert len(trials) == 4 and not [t for t in trials if not t.state.is_finished()]
    assert all(is_defaults(t) for t in trials)
    assert [t.params["optimizer"] for t in trials] == families[:4]


def test_a_family_whose_defaults_the_space_excludes_gets_no_defaults_trial(home: Path) -> None:
    """`--lr sgd=1e-2:1e-1` leaves out sgd's default lr (1e-3): sgd, first in order, gets no
    defaults trial, so the first trial is adam's defaults and the next one is sampled."""
    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--optimizers", "sgd,adam", "--lr", "sgd=1e-2:1e-1",
        "--n-trials", "2", "--epochs", "1", "--device", "cpu", "--seed", "0",
        "--home", str(home)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits-mlp",
                              storage=f"sqlite:///{home / 'opttune.db'}")
    first, second = study.get_trials(deepcopy=False)
    assert first.user_attrs.get(DEFAULTS_ATTR) and first.params["optimizer"] == "adam"
    assert first.params["lr"] == 1e-3
    assert not second.user_attrs.get(DEFAULTS_ATTR)
