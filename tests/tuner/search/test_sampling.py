"""tuner.search.sampling: each family modelled on its own trials, the family chosen first, seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState, create_trial

from tuner.errors import OpttuneError
from tuner.search.sampling import FamilySampler, make_sampler
from tuner.space.searchspace import build_space
from tuner.study.trial_attrs import DEFAULTS_ATTR, FAMILY_ATTR, is_defaults

FAMILIES = ["sgd", "adam"]
DISTS = {"optimizer": CategoricalDistribution(FAMILIES),
         "lr": FloatDistribution(1e-5, 1.0, log=True)}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def told_history(sampler: BaseSampler) -> optuna.Study:
    """SGD did well (0.9+) only at high lr (~0.3); Adam did less well, and only at low lr."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(0)
    for family, n, best_lr, top in (("sgd", 30, 0.3, 0.95), ("adam", 20, 3e-5, 0.4)):
        for _ in range(n):
            lr = float(10 ** rng.uniform(-5, 0))
            value = top - 0.05 * (math.log10(lr) - math.log10(best_lr)) ** 2
            study.add_trial(create_trial(params={"optimizer": family, "lr": lr},
                                         distributions=DISTS, value=value))
    return study


def adam_lrs(study: optuna.Study, n: int = 10) -> list[float]:
    out = []
    for _ in range(n):
        study.enqueue_trial({"optimizer": "adam"})
        trial = study.ask()
        assert trial.suggest_categorical("optimizer", FAMILIES) == "adam"
        out.append(trial.suggest_float("lr", 1e-5, 1.0, log=True))
        study.tell(trial, state=TrialState.FAIL)  # keep the history the same for every ask
    return out


def test_a_good_sgd_lr_does_not_pull_adams() -> None:
    lrs = adam_lrs(told_history(make_sampler("tpe", families=FAMILIES, seed=0)))
    assert max(lrs) < 1e-3, lrs  # Adam's own good region, around 3e-5
    # The same history with a plain TPE sampler: SGD's good lr drags Adam's up. This is what
    # FamilySampler exists to prevent, and shows that the check above can fail.
    plain = adam_lrs(told_history(optuna.samplers.TPESampler(seed=0, n_startup_trials=4)))
    assert min(plain) > 1e-2, plain


def test_the_family_is_chosen_before_any_other_parameter() -> None:
    study = told_history(make_sampler("tpe", families=FAMILIES, seed=1))
    chosen = set()
    for _ in range(12):
        trial = study.ask()
        family = study._storage.get_trial(trial._trial_id).system_attrs[FAMILY_ATTR]
        # Ask lr first: it is already sampled from the chosen family's model.
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        assert trial.suggest_categorical("optimizer", FAMILIES) == family
        assert (lr > 1e-2) if family == "sgd" else (lr < 1e-3), (family, lr)
        chosen.add(family)
        study.tell(trial, state=TrialState.FAIL)
    assert chosen == {"sgd"}  # TPE favours the better family: all 12 (seed 1)


def test_enqueued_fixed_params_are_honoured() -> None:
    space = build_space(optimizers=["sgd", "momentum", "adam"])
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler("tpe", families=list(space.families),
                                                     seed=0))
    study.enqueue_trial({"optimizer": "momentum", "lr": 0.0123, "momentum": 0.77})
    study.enqueue_trial(space.defaults_params("adam"), user_attrs={DEFAULTS_ATTR: True})
    first = study.ask()
    config = space.suggest(first, use_defaults=is_defaults(first))
    assert config.optimizer == "momentum"
    assert config.hyper["lr"] == 0.0123 and config.hyper["momentum"] == 0.77
    assert first.params["optimizer"] == "momentum"
    study.tell(first, 0.5)
    second = study.ask()
    config = space.suggest(second, use_defaults=is_defaults(second))
    assert config.optimizer == "adam" and config.hyper["lr"] == 1e-3
    assert (config.hyper["beta1"], config.hyper["beta2"]) == (0.9, 0.999)
    study.tell(second, 0.6)


def run_space(sampler_name: str, seed: int | None, n: int = 14) -> list[dict[str, Any]]:
    families = ["sgd", "momentum", "adam"]
    space = build_space(optimizers=families, batch_size="32,64")
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(sampler_name, families=families, seed=seed))
    for family in families:
        study.enqueue_trial(space.defaults_params(family), user_attrs={DEFAULTS_ATTR: True})
    for _ in range(n):
        trial = study.ask()
        config = space.suggest(trial, use_defaults=is_defaults(trial))
        assert set(config.hyper) == set(space.families[config.optimizer])
        # A smooth made-up objective: each family has its own best lr.
        best = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3}[config.optimizer]
        study.tell(trial, -abs(math.log10(config.hyper["lr"] / best)))
    return [t.params for t in study.trials]


def test_seeds_reproduce() -> None:
    first = run_space("tpe", 7)
    assert run_space("tpe", 7) == first
    assert run_space("tpe", 8) != first
    assert [p["optimizer"] for p in first[:3]] == ["sgd", "momentum", "adam"]


@pytest.mark.parametrize("name", ["random", "cmaes", "qmc"])
def test_every_sampler_runs_a_conditional_space(name: str) -> None:
    params = run_space(name, 0, n=10)
    assert run_space(name, 0, n=10) == params
    assert {p["optimizer"] for p in params} == {"sgd", "momentum", "adam"}


@pytest.mark.parametrize("name", ["cmaes", "qmc"])
def test_stateful_samplers_model_each_family_in_its_own_space(name: str) -> None:
    """CMA-ES and QMC keep a search space between trials; one shared across families with
    other parameters and ranges would leave them sampling almost nothing (only ~3 of 40
    trials got a CMA-ES lr before each family had its own instance)."""
    families = ["sgd", "adam"]
    space = build_space(optimizers=families)
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(name, families=families, seed=0))
    modelled = 0
    for _ in range(30):
        trial = study.ask()
        config = space.suggest(trial)
        lr_space = space.families[config.optimizer]["lr"].dist
        assert lr_space.contains(config.hyper["lr"])
        if "lr" in (trial.relative_params or {}):
            modelled += 1
            assert trial.relative_search_space is not None
            # Every hyperparameter of the family (CMA-ES leaves the schedule, a categorical,
            # to independent sampling; QMC models it too).
            assert set(trial.relative_search_space) - {"scheduler"} == \
                set(space.families[config.optimizer])
        study.tell(trial, -abs(math.log10(config.hyper["lr"]) + 2))
    assert modelled >= 24


def test_family_sampler_reports_the_family_in_system_attrs() -> None:
    sampler = make_sampler("random", families=FAMILIES, seed=0)
    assert isinstance(sampler, FamilySampler)
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    family = trial.suggest_categorical("optimizer", FAMILIES)
    study.tell(trial, 1.0)
    assert study.trials[0].system_attrs[FAMILY_ATTR] == family


def test_unknown_sampler_name() -> None:
    with pytest.raises(OpttuneError, match="--sampler must be one of tpe, random, cmaes, qmc, "
                                           "but got 'grid'"):
        make_sampler("grid", families=FAMILIES, seed=0)


def _study_of(space_families: list[str], sampler_name: str, *, trials: int,
              seed: int = 0) -> tuple[optuna.Study, Any]:
    """A study the way opttune runs one (defaults trials first, Space.suggest) on a scripted
    objective: adam reaches 0.9 near lr 1e-3 with some weight decay; sgd stays near 0.2."""
    space = build_space(optimizers=space_families)
    sampler = make_sampler(sampler_name, families=space_families, seed=seed,
                           searched=space.searched())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for family in space_families:
        study.enqueue_trial(space.defaults_params(family), user_attrs={DEFAULTS_ATTR: True})

    def objective(trial: optuna.Trial) -> float:
        config = space.suggest(trial, use_defaults=is_defaults(trial))
        lr, wd = config.hyper["lr"], config.hyper["weight_decay"]
        if config.optimizer == "sgd":
            return 0.2 - 0.01 * abs(math.log10(lr) + 1)
        return 0.9 - 0.05 * (math.log10(lr) + 3) ** 2 - 0.02 * abs(math.log10(wd or 1e-8) + 4)

    study.optimize(objective, n_trials=trials)
    return study, space


@pytest.mark.parametrize("name", ["cmaes", "qmc"])
def test_cmaes_and_qmc_choose_families_by_their_results(name: str) -> None:
    study, _ = _study_of(["sgd", "adam"], name, trials=40)
    later = [t.params["optimizer"] for t in study.trials[20:]]
    assert len(later) == 20
    # Drawn uniformly (as before) adam would get about 10 of these 20.
    assert later.count("adam") >= 15, later


@pytest.mark.parametrize("name", ["cmaes", "qmc"])
def test_weight_decay_stays_in_the_joint_model(name: str) -> None:
    """adam's defaults trial has no weight_decay parameter (0 is outside its log range); the
    family's joint model must still span weight_decay, so it is left out, not the parameter."""
    study, _ = _study_of(["adam"], name, trials=8)
    defaults = study.trials[0]
    assert defaults.user_attrs.get(DEFAULTS_ATTR) and "weight_decay" not in defaults.params
    trial = study.ask()  # the sampler chose its family (adam) in before_trial
    running = study.trials[trial.number]
    space = study.sampler.infer_relative_search_space(study, running)
    assert {"lr", "beta1", "beta2", "eps", "weight_decay"} <= set(space), space


def _qmc_lrs(seed: int, families: list[str], *, per_family: int) -> dict[str, list[float]]:
    """Each family's sampled lr on its unit interval (log scale), in trial order, from a QMC
    study whose trials alternate between `families` (enqueued family, sampled values)."""
    space = build_space(optimizers=families)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(
        "qmc", families=families, seed=seed, searched=space.searched()))
    drawn: dict[str, list[float]] = {f: [] for f in families}
    for _ in range(per_family):
        for family in families:
            study.enqueue_trial({"optimizer": family})
            trial = study.ask()
            config = space.suggest(trial)
            dist = space.families[family]["lr"].dist
            low, high = math.log10(dist.low), math.log10(dist.high)
            drawn[family].append((math.log10(config.hyper["lr"]) - low) / (high - low))
            study.tell(trial, 0.5)
    return drawn


def test_qmc_gives_each_family_its_own_seeded_sequence() -> None:
    """Guards --sampler qmc: the points change with --seed (scrambled; QMC samples a family's
    first trial at random, so its later trials are compared), and momentum and Nesterov, which
    have the same parameters, each run the whole sequence it would run alone in the study,
    not every other point of one sequence shared through the study's sample counter."""
    families = ["momentum", "nesterov"]
    first = _qmc_lrs(1, families, per_family=9)
    assert _qmc_lrs(1, families, per_family=9) == first  # reproducible for a seed
    other = _qmc_lrs(2, families, per_family=9)
    for family in families:
        assert other[family][1:] != first[family][1:]  # the seed moves the sequence itself
        alone = _qmc_lrs(1, [family], per_family=9)[family]
        assert first[family][1:] == alone[1:], family
        # and it is a low-discrepancy sequence: 8 points, one in each eighth of the range
        assert sorted(int(u * 8) for u in first[family][1:]) == list(range(8))
