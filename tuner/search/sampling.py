"""Samplers, with each optimizer family modelled on its own trials.

Parameters keep plain names (``lr``, ``momentum``) across families so that Optuna's tables and
MLflow read naturally; but a good SGD learning rate must not pull Adam's. So the family of a
trial is chosen first (by the base sampler, over all trials: it learns which family does
well), and every other parameter is then sampled by the base sampler looking only at the
trials of that family.

With a population (trials trained K at a time, `--population K`), K trials are sampled before
any of them reports: TPE then runs with ``constant_liar=True``, so that it counts the running
trials as bad results near their parameters and does not propose K copies of one idea.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Collection, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import OpttuneError
from tuner.study import optuna_adapter, studies

SAMPLERS = ("tpe", "random", "cmaes", "qmc")


def _family_view(study: optuna.Study, family: str,
                 needs: Collection[str] = ()) -> optuna.Study:
    """`study` as the sampler of `family` sees it: that family's trials only, and of those only
    the ones that carry every parameter in `needs`."""
    return optuna_adapter.trials_view(
        study, lambda t: t.params.get("optimizer") == family and all(p in t.params
                                                                     for p in needs))


class FamilySampler(BaseSampler):
    """Wraps a base sampler so that each optimizer family is modelled separately.

    `base` chooses the family over all trials. `family_samplers` (one per family) sample the
    family's parameters; samplers that keep a search space between trials (CMA-ES, QMC) need
    their own instance per family, since each family has other parameters and ranges.
    """

    def __init__(self, base: BaseSampler, families: Sequence[str], *,
                 family_samplers: Mapping[str, BaseSampler] | None = None,
                 searched: Mapping[str, Collection[str]] | None = None) -> None:
        self._base = base
        self._families = list(families)
        self._per_family = dict(family_samplers or {})
        # A joint model (CMA-ES, QMC) spans the parameters every trial it sees has. A defaults
        # trial may lack one (weight decay 0 lies outside its log range, so it is no Optuna
        # parameter there): such a trial is left out of the family's joint model rather than
        # the parameter.
        self._needs = {f: tuple(searched.get(f, ())) for f in self._families} \
            if searched and self._per_family else {}
        self._chosen: dict[int, str] = {}  # by trial number: one sampler serves one study

    def _family_of(self, trial: FrozenTrial) -> str | None:
        return self._chosen.get(trial.number)

    def _sampler(self, family: str) -> BaseSampler:
        return self._per_family.get(family, self._base)

    def _view(self, study: optuna.Study, family: str) -> optuna.Study:
        return _family_view(study, family, self._needs.get(family, ()))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)
        fixed = optuna_adapter.enqueued_params(trial)
        family = fixed.get("optimizer") or trial.params.get("optimizer")
        if family is None:
            dist = CategoricalDistribution(self._families)
            family = self._base.sample_independent(study, trial, "optimizer", dist)
        self._chosen[trial.number] = str(family)
        studies.set_family(study, trial, str(family))
        if self._sampler(str(family)) is not self._base:
            self._sampler(str(family)).before_trial(self._view(study, str(family)), trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        family = self._family_of(trial)
        if family is None:
            return {}
        view = self._view(study, family)
        space = self._sampler(family).infer_relative_search_space(view, trial)
        space.pop("optimizer", None)
        return space

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, object]:
        family = self._family_of(trial)
        if family is None or not search_space:
            return {}
        view = self._view(study, family)
        return self._sampler(family).sample_relative(view, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> object:
        family = self._family_of(trial)
        if param_name == "optimizer" and family is not None:
            return family
        if family is None:
            return self._base.sample_independent(study, trial, param_name, param_distribution)
        view = self._view(study, family)
        return self._sampler(family).sample_independent(view, trial, param_name,
                                                        param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        family = self._chosen.pop(trial.number, None)
        if family is not None and self._sampler(family) is not self._base:
            self._sampler(family).after_trial(self._view(study, family), trial, state, values)
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
        for sampler in self._per_family.values():
            sampler.reseed_rng()


def make_sampler(name: str, *, families: Sequence[str], seed: int | None,
                 searched: Mapping[str, Collection[str]] | None = None,
                 population: int = 1) -> BaseSampler:
    """The study's sampler. `searched` names each family's searched parameters (what a joint
    model of CMA-ES or QMC must span; see :class:`FamilySampler`); `population` is how many
    trials are sampled before any reports (TPE's constant liar above 1)."""
    if name not in SAMPLERS:
        raise OpttuneError(f"--sampler must be one of {', '.join(SAMPLERS)}, but got {name!r}")
    families = list(families)
    liar = population > 1
    base = _base_sampler(name, seed, constant_liar=liar)
    if name not in ("cmaes", "qmc"):
        return FamilySampler(base, families)
    # Each family its own instance (and seed): these samplers keep state between trials.
    per_family = {f: _base_sampler(name, _family_seed(seed, f)) for f in families}
    # The family is a categorical choice, which CMA-ES and QMC sample at random for ever; TPE
    # chooses it by the results instead, so the families that do well get more trials.
    return FamilySampler(_base_sampler("tpe", seed, constant_liar=liar), families,
                         family_samplers=per_family, searched=searched)


def _family_seed(seed: int | None, family: str) -> int:
    """A family's own seed, the same in every process of a study (no seed: a fixed one).

    QMC keeps its place in the sequence in the study, under a key made of its search space
    and, when scrambled, its seed: families with the same space (momentum and Nesterov) would
    share one counter, each getting every other point of one sequence, and a sampler seeded
    at random in each process (Optuna's default without a seed) would give every `--jobs`
    process and worker a sequence of its own. One seed per family, from `--seed`, avoids both.
    """
    return zlib.crc32(f"{'' if seed is None else seed}:{family}".encode())


def _base_sampler(name: str, seed: int | None, *, constant_liar: bool = False) -> BaseSampler:
    if name == "tpe":
        # Few startup trials: each family is modelled on its own, smaller, set of trials.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4,
                                          constant_liar=constant_liar)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    with warnings.catch_warnings():  # "experimental" is Optuna's note to itself, not to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Scrambled (Owen's scrambling, the default of scipy.stats.qmc.Sobol): an
        # unscrambled Sobol sequence ignores the seed, so --seed would not change the points.
        return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                          warn_independent_sampling=False)
