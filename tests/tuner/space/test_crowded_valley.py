"""tuner.space.crowded_valley: the paper's one-shot table and search space (Schmidt et al. 2021)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import optuna
import pytest
import torch

from tuner.space.crowded_valley import (
    ONESHOT_SOURCES,
    OneshotSetting,
    crowded_valley_differences,
    crowded_valley_overrides,
    oneshot_setting,
)
from tuner.space.dsl import Fixed, Range
from tuner.space.families import DEFAULT_FAMILIES, FAMILIES, VALID_BOUNDS
from tuner.space.searchspace import build_space

PAPER_FAMILIES = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "nadam", "radam", "adagrad")


def _inside_valid_bounds(name: str, value: float) -> bool:
    low, high, low_incl, high_incl = VALID_BOUNDS[name]
    above = value > low or (low_incl and value == low)
    below = value < high or (high_incl and value == high)
    return math.isfinite(value) and above and below


@pytest.mark.parametrize("source", ONESHOT_SOURCES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_a_complete_valid_oneshot_setting(family: str, source: Any) -> None:
    setting = oneshot_setting(family, source=source)
    assert isinstance(setting, OneshotSetting) and setting.family == family
    assert set(setting.hyper) == set(FAMILIES[family].param_names)
    for name, value in setting.hyper.items():
        assert _inside_valid_bounds(name, value), (family, name, value)
    assert setting.source  # says where the values come from
    with pytest.raises(TypeError):  # the table cannot be changed through a returned setting
        setting.hyper["lr"] = 1.0  # type: ignore[index]


def test_paper_rows_are_the_papers_released_oneshot_runs() -> None:
    # Values as recorded in Crowded-Valley---Results results/oneshot/none/fmnist_2c2d/*/
    assert oneshot_setting("sgd", source="paper").hyper == {"lr": 1e-2, "weight_decay": 0.0}
    for family in ("momentum", "nesterov"):
        assert dict(oneshot_setting(family, source="paper").hyper) == {
            "lr": 1e-2, "momentum": 0.99, "weight_decay": 0.0}
    assert oneshot_setting("adam", source="paper").hyper["eps"] == 1e-8
    for family in ("nadam", "radam"):
        hyper = oneshot_setting(family, source="paper").hyper
        assert (hyper["lr"], hyper["beta1"], hyper["beta2"], hyper["eps"]) == \
            (1e-3, 0.9, 0.999, 1e-7)
    rmsprop = oneshot_setting("rmsprop", source="paper").hyper
    assert (rmsprop["lr"], rmsprop["alpha"], rmsprop["eps"], rmsprop["momentum"]) == \
        (1e-3, 0.9, 1e-10, 0.0)
    assert oneshot_setting("adagrad", source="paper").hyper["lr"] == 1e-2
    for family in PAPER_FAMILIES:
        setting = oneshot_setting(family, source="paper")
        assert setting.hyper["weight_decay"] == 0.0
        assert "Schmidt et al. 2021" in setting.source and "not in" not in setting.source


def test_paper_source_falls_back_to_torch_for_adamw() -> None:
    paper, torch_row = (oneshot_setting("adamw", source=s) for s in ("paper", "torch"))
    assert paper.hyper == torch_row.hyper
    assert "torch.optim.AdamW" in paper.source and "not in Schmidt et al. 2021" in paper.source


def _torch_defaults(family: str) -> dict[str, float]:
    """`family`'s knobs at the defaults of its torch class's constructor."""
    signature = inspect.signature(getattr(torch.optim, FAMILIES[family].torch_class).__init__)
    defaults = {name: p.default for name, p in signature.parameters.items()}
    out = {}
    for name in FAMILIES[family].param_names:
        if name in ("beta1", "beta2"):
            out[name] = float(defaults["betas"][int(name[-1]) - 1])
        else:
            out[name] = float(defaults[name])
    return out


TORCH_ROWS = ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "nadam", "radam",
              "adagrad"]


@pytest.mark.parametrize("family", TORCH_ROWS)
def test_torch_rows_are_torchs_own_defaults(family: str) -> None:
    setting = oneshot_setting(family, source="torch")
    expected = _torch_defaults(family)
    if family in ("momentum", "nesterov"):
        # torch's momentum default is 0, which would make these families plain SGD.
        assert expected["momentum"] == 0.0
        expected["momentum"] = 0.9
        assert "0.9" in setting.source
    assert dict(setting.hyper) == expected
    assert setting.source.startswith(f"torch.optim.{FAMILIES[family].torch_class} defaults")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in TORCH_ROWS])
def test_newer_families_run_their_own_cited_defaults_under_both_sources(family: str) -> None:
    assert family in ("muon", "schedulefree", "lion", "prodigy", "adafactor")
    for source in ("paper", "torch"):
        setting = oneshot_setting(family, source=source)
        assert dict(setting.hyper) == {p.name: p.default for p in FAMILIES[family].params}
        assert "tuner/space/families.py" in setting.source


def test_overrides_are_scoped_per_covered_family() -> None:
    overrides = crowded_valley_overrides(list(FAMILIES))
    assert "sgd=1e-4:1" in overrides["lr"]
    assert all(not spec.startswith("adamw=") for specs in overrides.values() for spec in specs)
    for specs in overrides.values():
        assert all(spec.split("=", 1)[0] in PAPER_FAMILIES for spec in specs)
    assert crowded_valley_overrides(["adamw"]) == {}
    assert crowded_valley_overrides(["sgd"]) == {"lr": ["sgd=1e-4:1"], "weight_decay": ["sgd=0"]}


@pytest.mark.parametrize("families", [list(DEFAULT_FAMILIES), list(FAMILIES)])
def test_overrides_build_the_papers_space(families: list[str]) -> None:
    """Each family's space on its own, as the benchmark searches it (one study per family):
    a log momentum for the paper's momentum families and muon's linear one cannot share one
    space, which build_space refuses)."""
    for family in families:
        space = build_space(optimizers=[family], params=crowded_valley_overrides([family]))
        params = space.families[family]
        if family not in PAPER_FAMILIES:  # adamw keeps opttune's built-in ranges
            assert {n: ps.dist for n, ps in params.items()} == {
                p.name: Range(p.low, p.high, p.log) for p in FAMILIES[family].params}
            continue
        assert params["lr"].dist == Range(1e-4, 1.0, True)
        assert params["weight_decay"].dist == Fixed(0.0)
        # The paper's one-shot setting is a point of the paper's own space.
        for name, value in oneshot_setting(family, source="paper").hyper.items():
            assert params[name].dist.contains(value), (family, name, value)
    together = build_space(optimizers=list(DEFAULT_FAMILIES),
                           params=crowded_valley_overrides(list(DEFAULT_FAMILIES)))
    assert together.families["momentum"]["momentum"].dist == Range(0.001, 0.999, True)
    assert together.families["rmsprop"]["momentum"].dist == Fixed(0.0)
    assert together.families["rmsprop"]["alpha"].dist == Range(0.001, 1.0, True)


def test_a_space_with_the_overrides_samples_inside_the_papers_ranges() -> None:
    families = ["sgd", "momentum", "adam"]
    space = build_space(optimizers=families, params=crowded_valley_overrides(families))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = space.suggest(trial)
        seen.add(config.optimizer)
        assert 1e-4 <= config.hyper["lr"] <= 1.0
        assert config.hyper["weight_decay"] == 0.0
        if config.optimizer == "momentum":
            assert 1e-3 <= config.hyper["momentum"] <= 0.999
        if config.optimizer == "adam":
            assert 0.5 <= config.hyper["beta1"] <= 0.999
            assert 0.8 <= config.hyper["beta2"] <= 0.999
            assert config.hyper["eps"] == 1e-8
        study.tell(trial, config.hyper["lr"])
    assert seen == set(families)
    # Log-uniform over four decades: some learning rates fall above 0.1, outside opttune's own
    # Adam range, and some below 1e-3.
    lrs = [t.params["lr"] for t in study.trials]
    assert any(lr > 0.1 for lr in lrs) and any(lr < 1e-3 for lr in lrs)


def test_differences_come_from_the_data() -> None:
    lines = crowded_valley_differences()
    assert len(lines) == len(set(lines))
    assert "adam lr: opttune 1e-05:0.1 (log), paper 0.0001:1 (log)" in lines
    assert any(line.startswith("adamw: not in Schmidt et al. 2021") for line in lines)
    assert any(line.startswith("momentum momentum:") and "0.001:0.999 (log)" in line
               for line in lines)
    # sgd's lr range is already the paper's: no line for it.
    assert not any(line.startswith("sgd lr:") for line in lines)
    # One line per differing (family, parameter) of the paper's families.
    spaces = {f: build_space(optimizers=[f], params=crowded_valley_overrides([f]))
              for f in PAPER_FAMILIES}
    differing = [f"{family} {p.name}:" for family in FAMILIES if family in PAPER_FAMILIES
                 for p in FAMILIES[family].params
                 if spaces[family].families[family][p.name].dist != Range(p.low, p.high, p.log)]
    outside = [f"{f}: not in Schmidt et al. 2021; opttune's ranges" for f in FAMILIES
               if f not in PAPER_FAMILIES]
    assert [line for line in lines if ":" in line.split()[0]] == outside
    assert [line for line in lines if line not in outside] == \
        [line for prefix in differing for line in lines if line.startswith(prefix)]


def test_unknown_family_or_source_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'.*known: sgd"):
        oneshot_setting("adamx", source="paper")
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        crowded_valley_overrides(["sgd", "nope"])
    with pytest.raises(ValueError, match="unknown one-shot source 'keras'.*paper, torch"):
        oneshot_setting("sgd", source="keras")  # type: ignore[arg-type]
