"""The recent families in the space: their authors' defaults, their own hyperparameters
through flags, scoped flags and space files, schedule-free's refusal of a schedule, the
samplers that keep a model per family, and one clear line when a package is missing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from tuner.errors import SpaceError
from tuner.search.sampling import make_sampler
from tuner.space.dsl import Fixed, Range
from tuner.space.families import FAMILIES, RECENT_FAMILIES
from tuner.space.files import load_space_file
from tuner.space.searchspace import build_space

RECENT = [f.name for f in RECENT_FAMILIES]


def test_the_defaults_trials_run_the_authors_defaults() -> None:
    space = build_space(optimizers=RECENT, scheduler="none")
    assert RECENT == ["muon", "schedulefree", "lion", "prodigy", "adafactor"]
    assert space.defaults_params("muon") == {
        "optimizer": "muon", "lr": 0.02, "momentum": 0.95, "weight_decay": 0.01,
        "adam_lr": 3e-4}
    # schedulefree's weight decay 0 lies below its log range: run, not enqueued (as Adam's)
    assert space.defaults_params("schedulefree") == {
        "optimizer": "schedulefree", "lr": 2.5e-3, "beta1": 0.9, "beta2": 0.999,
        "warmup": 0.02}
    assert space.defaults_params("lion") == {"optimizer": "lion", "lr": 1e-4, "beta1": 0.9,
                                             "beta2": 0.99}
    assert space.defaults_params("prodigy") == {"optimizer": "prodigy", "d_coef": 1.0,
                                                "beta1": 0.9, "beta2": 0.999}
    assert space.defaults_params("adafactor") == {"optimizer": "adafactor", "lr": 1e-2,
                                                  "decay": 0.8}
    assert all(space.runs_defaults(f) for f in RECENT)
    # Lion's ranges are AdamW's scaled as its authors advise: lr / 10, weight decay x 10.
    adamw = build_space(optimizers=["adamw"]).families["adamw"]
    lion = space.families["lion"]
    assert isinstance(lion["lr"].dist, Range) and isinstance(adamw["lr"].dist, Range)
    assert lion["lr"].dist.high == pytest.approx(adamw["lr"].dist.high / 10)
    assert lion["weight_decay"].dist == Range(1e-4, 1.0, True)


def test_their_own_hyperparameters_take_flags_and_scopes() -> None:
    space = build_space(optimizers=RECENT, params={
        "d_coef": ["prodigy=0.5:2"], "adam_lr": ["1e-4"], "warmup": ["0:0.05"],
        "decay": ["adafactor=0.5,0.8"], "lr": ["1e-5:1e-1", "lion=1e-5:1e-3"]})
    assert space.families["prodigy"]["d_coef"].dist == Range(0.5, 2.0, True)
    assert space.families["muon"]["adam_lr"].dist == Fixed(1e-4)
    assert space.families["schedulefree"]["warmup"].dist == Range(0.0, 0.05, False)
    assert space.families["lion"]["lr"].dist == Range(1e-5, 1e-3, True)
    assert "lr" not in space.families["prodigy"]  # its lr stays 1: d_coef scales its step
    with pytest.raises(SpaceError, match="prodigy has no lr; lr applies to"):
        build_space(optimizers=RECENT, params={"lr": ["prodigy=0.5"]})
    with pytest.raises(SpaceError, match=r"decay must be > 0 and <= 1, but got decay=1.5"):
        build_space(optimizers=["adafactor"], params={"decay": ["0.5:1.5"]})


def test_a_space_file_holds_them_too(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text('optimizers = ["muon", "prodigy"]\nweight_decay = "1e-3:1e-1"\n'
                    '[muon]\nadam_lr = "1e-4:1e-3"\n[prodigy]\nd_coef = [0.5, 1.0, 2.0]\n')
    from_file = build_space(file_values=load_space_file(path))
    from_flags = build_space(optimizers=["muon", "prodigy"], params={
        "weight_decay": ["1e-3:1e-1"], "adam_lr": ["muon=1e-4:1e-3"],
        "d_coef": ["prodigy=0.5,1.0,2.0"]})
    assert from_file == from_flags


def test_schedule_free_takes_no_schedule_and_says_so() -> None:
    with pytest.raises(SpaceError, match="--scheduler cosine: schedulefree takes no "
                                         "learning-rate schedule"):
        build_space(optimizers=["schedulefree"], scheduler="cosine")
    assert build_space(optimizers=["schedulefree"], scheduler="none")
    alone = build_space(optimizers=["schedulefree"])  # the default choice: run without one
    assert alone.unscheduled() == ["schedulefree"]
    mixed = build_space(optimizers=["adamw", "schedulefree"], scheduler="cosine")
    assert "scheduler" not in mixed.searched()["schedulefree"]
    assert "scheduler" not in mixed.defaults_params("schedulefree")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        config = mixed.suggest(trial)
        expected = "none" if config.optimizer == "schedulefree" else "cosine"
        assert config.scheduler == expected
        study.tell(trial, 0.5)


@pytest.mark.parametrize("sampler", ["cmaes", "qmc", "tpe"])
def test_every_sampler_models_each_recent_family_on_its_own(sampler: str) -> None:
    space = build_space(optimizers=["adamw", *RECENT])
    study = optuna.create_study(direction="maximize", sampler=make_sampler(
        sampler, families=list(space.families), seed=1, searched=space.searched()))
    seen = set()
    for i in range(40):
        trial = study.ask()
        config = space.suggest(trial)
        seen.add(config.optimizer)
        for name, value in config.hyper.items():
            dist = space.families[config.optimizer][name].dist
            assert dist.contains(value), (config.optimizer, name, value)
        study.tell(trial, (i * 7 % 10) / 10)
    assert len(seen) >= 4


def test_a_missing_package_is_one_clear_line_before_any_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(FAMILIES["lion"], torch_class="no_such_lion_module:Lion",
                               package="no-such-lion")
    monkeypatch.setitem(FAMILIES, "lion", gone)
    with pytest.raises(SpaceError) as info:
        build_space(optimizers=["adam", "lion"])
    assert str(info.value) == (
        "optimizer lion needs the package no-such-lion, which is not installed; install it "
        "with: pip install no-such-lion (a dependency of opttune, so reinstalling opttune "
        "installs it too)")
