"""tuner.space.searchspace: per-family parameters, defaults trials, storage, suggestion."""

from __future__ import annotations

import json

import optuna
import pytest

from tuner.errors import SpaceError
from tuner.search.sampling import make_sampler
from tuner.space.config import TrialConfig
from tuner.space.dsl import Choice, Fixed, Range
from tuner.space.families import DEFAULT_FAMILIES, FAMILIES
from tuner.space.searchspace import Space, build_space
from tuner.study.trial_attrs import DEFAULTS_ATTR

ADAM_FAMILY = {"adam", "adamw", "nadam", "radam"}


def test_default_space_has_the_design_families_in_order() -> None:
    space = build_space()
    assert list(space.families) == list(DEFAULT_FAMILIES) == [
        "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
    assert space.epochs == 3 and space.batch_size.dist == Fixed(128)
    # With or without a cosine decay, by default; the defaults trials run without one.
    assert space.scheduler.dist == Choice(("none", "cosine"))
    assert space.scheduler.default == "none"
    assert build_space(scheduler="none").scheduler.dist == Fixed("none")


def test_conditional_parameters_per_family() -> None:
    space = build_space(optimizers=list(FAMILIES))
    params = {f: set(p) for f, p in space.families.items()}
    assert params["sgd"] == {"lr", "weight_decay"}
    assert params["momentum"] == params["nesterov"] == {"lr", "momentum", "weight_decay"}
    assert params["adam"] == params["adamw"] == {"lr", "beta1", "beta2", "eps", "weight_decay"}
    assert params["rmsprop"] == {"lr", "alpha", "momentum", "eps", "weight_decay"}
    with_momentum = {f for f, p in params.items() if "momentum" in p}
    with_betas = {f for f, p in params.items() if "beta1" in p or "beta2" in p}
    assert with_momentum == {"momentum", "nesterov", "rmsprop", "muon"}
    assert with_betas == ADAM_FAMILY | {"schedulefree", "lion", "prodigy"}
    assert params["muon"] == {"lr", "momentum", "weight_decay", "adam_lr"}
    assert params["schedulefree"] == {"lr", "beta1", "beta2", "weight_decay", "warmup"}
    assert params["lion"] == {"lr", "beta1", "beta2", "weight_decay"}
    assert params["prodigy"] == {"d_coef", "beta1", "beta2", "weight_decay"}
    assert params["adafactor"] == {"lr", "decay", "weight_decay"}
    # The fixed parts that make the SGD families what they are.
    assert FAMILIES["sgd"].fixed == {"momentum": 0.0}
    assert FAMILIES["momentum"].fixed == {"nesterov": False}
    assert FAMILIES["nesterov"].fixed == {"nesterov": True}


def test_default_ranges_are_log_for_lr_eps_and_weight_decay() -> None:
    space = build_space(optimizers=list(FAMILIES))
    for family, params in space.families.items():
        for name, ps in params.items():
            assert isinstance(ps.dist, Range), (family, name)
            assert ps.dist.log == (name in ("lr", "eps", "weight_decay", "adam_lr", "d_coef")), \
                (family, name)
            assert ps.dist.low < ps.dist.high


def test_defaults_params_are_pytorch_defaults() -> None:
    space = build_space(scheduler="none")
    assert space.defaults_params("sgd") == {"optimizer": "sgd", "lr": 1e-3}
    assert space.defaults_params("momentum") == {"optimizer": "momentum", "lr": 1e-3,
                                                 "momentum": 0.9}
    assert space.defaults_params("adam") == {"optimizer": "adam", "lr": 1e-3, "beta1": 0.9,
                                             "beta2": 0.999, "eps": 1e-8}
    # The default space's schedule is a choice: its defaults trials take no schedule.
    assert build_space().defaults_params("sgd") == {"optimizer": "sgd", "lr": 1e-3,
                                                    "scheduler": "none"}
    # AdamW's default weight decay (1e-2) lies inside its range, so it is a fixed param.
    assert space.defaults_params("adamw")["weight_decay"] == 1e-2
    assert space.defaults_params("rmsprop") == {"optimizer": "rmsprop", "lr": 1e-2,
                                                "alpha": 0.99, "momentum": 0.0, "eps": 1e-8}


def test_defaults_params_of_fixed_knobs_are_left_out() -> None:
    space = build_space(optimizers=["adam"], params={"beta1": ["0.8"]}, batch_size="64,128",
                        scheduler="none,cosine")
    fixed = space.defaults_params("adam")
    assert "beta1" not in fixed  # fixed by the user: nothing to enqueue
    assert fixed["batch_size"] == 128 and fixed["scheduler"] == "none"
    # beta1 fixed at 0.8 is not Adam's default: no trial of this space is "the defaults".
    assert space.defaults_excluded("adam") == ["beta1"] and not space.runs_defaults("adam")
    at_default = build_space(optimizers=["adam"], params={"beta1": ["0.9"]})
    assert at_default.defaults_excluded("adam") == [] and at_default.runs_defaults("adam")


def test_a_default_outside_the_users_range_is_sampled() -> None:
    space = build_space(optimizers=["adam", "sgd"], params={"lr": ["1e-2:1e-1"]},
                        batch_size="32,64")
    assert space.families["adam"]["lr"].default is None
    assert space.batch_size.default is None
    assert "lr" not in space.defaults_params("adam")
    assert space.defaults_excluded("adam") == ["lr"] and not space.runs_defaults("adam")
    assert not space.runs_defaults("sgd")  # sgd's default lr 1e-3 is outside 1e-2:1e-1 too
    assert build_space(optimizers=["adam"]).runs_defaults("adam")
    assert not build_space(optimizers=["adam"], defaults_first=False).runs_defaults("adam")
    assert "batch_size" not in space.defaults_params("adam")
    config = _suggest_defaults(space, "adam")
    assert 1e-2 <= config.hyper["lr"] <= 1e-1
    assert config.hyper["beta1"] == 0.9 and config.hyper["beta2"] == 0.999
    assert config.batch_size in (32, 64)


def test_weight_decay_zero_outside_the_builtin_range_is_used_in_config_only() -> None:
    space = build_space(optimizers=["sgd", "adam"], scheduler="none")
    assert space.families["sgd"]["weight_decay"].dist == Range(1e-6, 1e-2, True)
    assert space.families["sgd"]["weight_decay"].default == 0.0
    assert "weight_decay" not in space.defaults_params("sgd")  # Optuna could not take 0
    study, config = _run_defaults(space, "sgd")
    assert config.hyper == {"lr": 1e-3, "weight_decay": 0.0}
    assert study.trials[0].params == {"optimizer": "sgd", "lr": 1e-3}
    # A user range for weight decay that excludes 0: the defaults trial samples it.
    space = build_space(optimizers=["sgd"], params={"weight_decay": ["1e-5:1e-3"]})
    assert space.families["sgd"]["weight_decay"].default is None
    assert 1e-5 <= _suggest_defaults(space, "sgd").hyper["weight_decay"] <= 1e-3
    # And a user choice that includes 0 makes it a real (enqueued) default.
    space = build_space(optimizers=["sgd"], params={"weight_decay": ["0,1e-4"]})
    assert space.defaults_params("sgd")["weight_decay"] == 0.0


def test_round_trip_preserves_everything_and_the_family_order() -> None:
    space = build_space(optimizers=["rmsprop", "sgd", "adam"],
                        params={"lr": ["adam=1e-5:1e-2"], "weight_decay": ["0"],
                                "momentum": ["0.5,0.9"]},
                        batch_size="64,128", epochs=2, scheduler="cosine,none",
                        defaults_first=False)
    back = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert back == space
    assert list(back.families) == ["rmsprop", "sgd", "adam"]
    assert back.families["rmsprop"]["momentum"].dist == Choice((0.5, 0.9))
    assert back.families["sgd"]["weight_decay"].dist == Fixed(0.0)
    assert back.defaults_first is False and back.epochs == 2
    assert back.to_dict() == space.to_dict()


def test_rows_show_every_family_parameter() -> None:
    rows = build_space(optimizers=["sgd", "adam"], params={"lr": ["adam=1e-4:1e-2"]}).rows()
    assert ("sgd", "lr", "0.0001:1 (log)", "0.001") in rows
    assert ("adam", "lr", "0.0001:0.01 (log)", "0.001") in rows
    assert ("sgd", "weight_decay", "1e-06:0.01 (log)", "0") in rows
    assert not any(r[0] == "sgd" and r[1] == "beta1" for r in rows)
    assert ("(all)", "epochs", "3 (fixed)", "") in rows


def test_suggest_gives_only_the_chosen_familys_params() -> None:
    families = ["sgd", "momentum", "adam", "rmsprop"]
    space = build_space(optimizers=families, batch_size="64,128", scheduler="none,cosine")
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler("random", families=families, seed=3))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        config = space.suggest(trial)
        family = config.optimizer
        seen.add(family)
        assert set(config.hyper) == set(FAMILIES[family].param_names)
        assert set(trial.params) <= {"optimizer", "batch_size", "scheduler",
                                     *FAMILIES[family].param_names}
        assert trial.params["optimizer"] == family
        for name, value in config.hyper.items():
            assert space.families[family][name].dist.contains(value), (family, name, value)
        assert config.batch_size in (64, 128) and config.scheduler in ("none", "cosine")
        assert config.epochs == 3
        study.tell(trial, config.hyper["lr"])
    assert seen == set(families)


def test_suggest_with_fixed_values_does_not_ask_optuna() -> None:
    space = build_space(optimizers=["adam"], params={"beta1": ["0.85"], "weight_decay": ["0"]})
    study = optuna.create_study(sampler=make_sampler("random", families=["adam"], seed=0))
    trial = study.ask()
    config = space.suggest(trial)
    assert config.hyper["beta1"] == 0.85 and config.hyper["weight_decay"] == 0.0
    assert "beta1" not in trial.params and "weight_decay" not in trial.params


def test_flat_config_round_trip() -> None:
    config = TrialConfig("adam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                  "weight_decay": 0.0}, 128, 2, "cosine", {"hidden": 64})
    flat = config.flat()
    assert flat == {"optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                    "weight_decay": 0.0, "batch_size": 128, "epochs": 2, "scheduler": "cosine",
                    "hidden": 64}
    assert TrialConfig.from_flat(flat, task_params=["hidden"]) == config
    with pytest.raises(SpaceError, match="unknown trial config key.*hidden"):
        TrialConfig.from_flat(flat)  # a key the task does not declare fails loudly


def _run_defaults(space: Space, family: str) -> tuple[optuna.Study, TrialConfig]:
    """Run `family`'s defaults trial the way a study does: enqueued with its fixed params."""
    study = optuna.create_study(sampler=make_sampler("tpe", families=list(space.families),
                                                     seed=0))
    study.enqueue_trial(space.defaults_params(family), user_attrs={DEFAULTS_ATTR: True})
    trial = study.ask()
    config = space.suggest(trial, use_defaults=True)
    assert config.optimizer == family
    study.tell(trial, 0.5)
    return study, config


def _suggest_defaults(space: Space, family: str) -> TrialConfig:
    return _run_defaults(space, family)[1]


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_defaults_trial_config_matches_the_family_defaults(family: str) -> None:
    config = _suggest_defaults(build_space(), family)
    assert config.hyper == {p.name: p.default for p in FAMILIES[family].params}
