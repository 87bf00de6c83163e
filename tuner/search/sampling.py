"""Samplers and pruners, with each optimizer family modelled on its own trials.

Parameters keep plain names (``lr``, ``momentum``) across families so that Optuna's tables and
MLflow read naturally; but a good SGD learning rate must not pull Adam's. So the family of a
trial is chosen first (by the base sampler, over all trials: it learns which family does
well), and every other parameter is then sampled by the base sampler looking only at the
trials of that family.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import OpttuneError

SAMPLERS = ("tpe", "random", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "none")
FAMILY_ATTR = "opttune:family"


class _FamilyView:
    """A read-only view of a study that shows only the trials of one family."""

    def __init__(self, study: optuna.Study, family: str) -> None:
        self._study = study
        self._family = family

    def _keep(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return [t for t in trials if t.params.get("optimizer") == self._family]

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return self._keep(self._study._get_trials(*args, **kwargs))

    def get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return self._keep(self._study.get_trials(*args, **kwargs))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class FamilySampler(BaseSampler):
    """Wraps a base sampler so that each optimizer family is modelled separately.

    `base` chooses the family over all trials. `family_samplers` (one per family) sample the
    family's parameters; samplers that keep a search space between trials (CMA-ES, QMC) need
    their own instance per family, since each family has other parameters and ranges.
    """

    def __init__(self, base: BaseSampler, families: Sequence[str], *,
                 family_samplers: Mapping[str, BaseSampler] | None = None) -> None:
        self._base = base
        self._families = list(families)
        self._per_family = dict(family_samplers or {})
        self._chosen: dict[int, str] = {}

    def _family_of(self, trial: FrozenTrial) -> str | None:
        return self._chosen.get(trial._trial_id)

    def _sampler(self, family: str) -> BaseSampler:
        return self._per_family.get(family, self._base)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)
        fixed = trial.system_attrs.get("fixed_params", {})
        family = fixed.get("optimizer") or trial.params.get("optimizer")
        if family is None:
            dist = CategoricalDistribution(self._families)
            family = self._base.sample_independent(study, trial, "optimizer", dist)
        self._chosen[trial._trial_id] = str(family)
        study._storage.set_trial_system_attr(trial._trial_id, FAMILY_ATTR, str(family))
        if self._sampler(str(family)) is not self._base:
            view: Any = _FamilyView(study, str(family))
            self._sampler(str(family)).before_trial(view, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        family = self._family_of(trial)
        if family is None:
            return {}
        view: Any = _FamilyView(study, family)  # duck-typed Study
        space = self._sampler(family).infer_relative_search_space(view, trial)
        space.pop("optimizer", None)
        return space

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        family = self._family_of(trial)
        if family is None or not search_space:
            return {}
        view: Any = _FamilyView(study, family)
        return self._sampler(family).sample_relative(view, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        family = self._family_of(trial)
        if param_name == "optimizer" and family is not None:
            return family
        if family is None:
            return self._base.sample_independent(study, trial, param_name, param_distribution)
        view: Any = _FamilyView(study, family)
        return self._sampler(family).sample_independent(view, trial, param_name,
                                                        param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        family = self._chosen.pop(trial._trial_id, None)
        if family is not None and self._sampler(family) is not self._base:
            view: Any = _FamilyView(study, family)
            self._sampler(family).after_trial(view, trial, state, values)
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
        for sampler in self._per_family.values():
            sampler.reseed_rng()


def make_sampler(name: str, *, families: Sequence[str], seed: int | None) -> BaseSampler:
    if name not in SAMPLERS:
        raise OpttuneError(f"--sampler must be one of {', '.join(SAMPLERS)}, but got {name!r}")
    families = list(families)
    base = _base_sampler(name, seed)
    if name not in ("cmaes", "qmc"):
        return FamilySampler(base, families)
    # Each family its own instance (and seed): these samplers keep state between trials.
    per_family = {f: _base_sampler(name, None if seed is None else seed + 1 + i)
                  for i, f in enumerate(families)}
    # The family itself is a categorical choice, which CMA-ES and QMC leave to a random sampler.
    return FamilySampler(optuna.samplers.RandomSampler(seed=seed), families,
                         family_samplers=per_family)


def _base_sampler(name: str, seed: int | None) -> BaseSampler:
    if name == "tpe":
        # Few startup trials: each family is modelled on its own, smaller, set of trials.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    with warnings.catch_warnings():  # "experimental" is Optuna's note to itself, not to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str, *, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise OpttuneError(f"--pruner must be one of {', '.join(PRUNERS)}, but got {name!r}")
