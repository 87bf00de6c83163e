"""tuner.dsl and the flag-level rules of tuner.space: ranges, choices, fixed values, scopes."""

from __future__ import annotations

import pytest

from tuner.errors import SpaceError
from tuner.space.dsl import (
    Choice,
    Fixed,
    Range,
    dist_from_dict,
    dist_to_dict,
    parse_float_dist,
    parse_int_choice,
    parse_word_choice,
    split_scope,
)
from tuner.space.searchspace import build_space

# --- ranges, choices, fixed values -------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr", "eps", "weight_decay"])
def test_range_is_log_by_default_for_scale_free_params(name: str) -> None:
    assert parse_float_dist(name, "1e-5:1e-1") == Range(1e-5, 1e-1, True)


@pytest.mark.parametrize("name", ["momentum", "beta1", "beta2", "alpha"])
def test_range_is_linear_by_default_for_bounded_params(name: str) -> None:
    assert parse_float_dist(name, "0.5:0.9") == Range(0.5, 0.9, False)


def test_explicit_scale_overrides_the_default() -> None:
    assert parse_float_dist("lr", "1e-3:1e-1:linear") == Range(1e-3, 1e-1, False)
    assert parse_float_dist("lr", "1e-3:1e-1:lin") == Range(1e-3, 1e-1, False)
    assert parse_float_dist("momentum", "0.5:0.99:log") == Range(0.5, 0.99, True)
    assert parse_float_dist("momentum", " 0.5 : 0.99 : LOG ") == Range(0.5, 0.99, True)


def test_choice_keeps_order_and_drops_repeats() -> None:
    assert parse_float_dist("lr", "0.1,0.01,0.1,0.001") == Choice((0.1, 0.01, 0.001))


def test_a_single_value_fixes_it_zero_included() -> None:
    assert parse_float_dist("weight_decay", "0") == Fixed(0.0)
    assert parse_float_dist("momentum", "0") == Fixed(0.0)
    assert parse_float_dist("lr", "3e-4") == Fixed(3e-4)
    # A one-element list is a fixed value too, not a one-choice categorical.
    assert parse_float_dist("lr", "0.01,0.01") == Fixed(0.01)


def test_contains() -> None:
    assert Range(1e-4, 1e-2, True).contains(1e-3)
    assert not Range(1e-4, 1e-2, True).contains(0.0)
    assert not Range(1e-4, 1e-2, True).contains("0.001")
    assert Choice((64, 128)).contains(128) and not Choice((64, 128)).contains(256)
    assert Fixed(0.0).contains(0) and not Fixed(0.0).contains(1e-4)


def test_dist_dict_round_trip() -> None:
    for dist in (Range(1e-5, 0.1, True), Range(0.5, 0.9, False), Choice((64, 128)),
                 Choice(("cosine", "none")), Fixed(0.0)):
        assert dist_from_dict(dist_to_dict(dist)) == dist


def test_split_scope() -> None:
    assert split_scope("adam=1e-5:1e-2") == ("adam", "1e-5:1e-2")
    assert split_scope(" Adam = 1e-5:1e-2 ") == ("adam", "1e-5:1e-2")
    assert split_scope("1e-5:1e-2") == (None, "1e-5:1e-2")


def test_int_and_word_choices() -> None:
    assert parse_int_choice("batch_size", "64,128,256") == Choice((64, 128, 256))
    assert parse_int_choice("batch_size", "128") == Fixed(128)
    assert parse_word_choice("scheduler", "Cosine,none", ("none", "cosine")) == \
        Choice(("cosine", "none"))


# --- every error message -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("lr", "1e-2:1e-4", "lr range must have LOW < HIGH, but got '1e-2:1e-4'; "
                            "write it as 1e-4:1e-2"),
        ("lr", "-1:1", "lr must be > 0, but got lr=-1 (in '-1:1')"),
        ("lr", "0", "lr must be > 0, but got lr=0 (in '0')"),
        ("lr", "1e-3:1e-3", "lr range '1e-3:1e-3' has zero width; to fix lr, give a single "
                            "value (0.001)"),
        ("lr", "fast", "lr must be a number, a LOW:HIGH range or a comma list, but got 'fast'"),
        ("lr", "1e-3:abc", "lr must be a number, a LOW:HIGH range or a comma list, "
                           "but got '1e-3:abc'"),
        ("lr", "0.1,x", "lr must be a number, a LOW:HIGH range or a comma list, "
                        "but got '0.1,x'"),
        ("lr", "nan", "lr must be finite, but got 'nan'"),
        ("lr", "1e-4:inf", "lr must be finite, but got '1e-4:inf'"),
        ("lr", "1:2:3", "lr range must be LOW:HIGH (optionally :log or :linear), "
                        "but got '1:2:3'"),
        ("lr", "", "lr needs a value, a LOW:HIGH range or a comma list, but got ''"),
        ("lr", ",", "lr needs at least one value, but got ','"),
        ("weight_decay", "0:1e-2", "weight_decay range '0:1e-2' is log-scaled, so LOW must be "
                                   "> 0, but got 0; use a positive LOW, or add ':linear'"),
        ("momentum", "0:0.9:log", "momentum range '0:0.9:log' is log-scaled, so LOW must be "
                                  "> 0, but got 0"),
        ("momentum", "0.5:1", "momentum must be >= 0 and < 1, but got momentum=1 (in '0.5:1')"),
        ("beta2", "1.5", "beta2 must be >= 0 and < 1, but got beta2=1.5"),
        ("weight_decay", "-0.1", "weight_decay must be >= 0, but got weight_decay=-0.1"),
        ("alpha", "0.9,1.1", "alpha must be >= 0 and <= 1, but got alpha=1.1 (in '0.9,1.1')"),
    ],
)
def test_float_errors(name: str, spec: str, message: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_float_dist(name, spec)
    assert message in str(info.value)


def test_zero_width_linear_range_is_also_refused() -> None:
    with pytest.raises(SpaceError, match="zero width"):
        parse_float_dist("momentum", "0.9:0.9")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("64,big", "batch_size must be a positive integer or a comma list of them, "
                "but got '64,big'"),
     ("0", "batch_size must be > 0, but got batch_size=0"),
     ("-64", "batch_size must be > 0, but got batch_size=-64"),
     ("64.5", "batch_size must be a positive integer"),
     (",", "batch_size needs at least one value, but got ','")],
)
def test_int_choice_errors(spec: str, message: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_int_choice("batch_size", spec)
    assert message in str(info.value)


def test_word_choice_errors() -> None:
    with pytest.raises(SpaceError, match="unknown scheduler 'cosin'; choose from none, cosine"):
        parse_word_choice("scheduler", "cosin", ("none", "cosine"))
    with pytest.raises(SpaceError, match="scheduler needs at least one of none, cosine"):
        parse_word_choice("scheduler", " , ", ("none", "cosine"))


# --- family= scoping and the rules across families ----------------------------------------------


def test_family_scope_applies_to_that_family_only() -> None:
    space = build_space(optimizers=["sgd", "adam"],
                        params={"lr": ["1e-3:1e-1", "adam=1e-5:1e-2"]})
    assert space.families["sgd"]["lr"].dist == Range(1e-3, 1e-1, True)
    assert space.families["adam"]["lr"].dist == Range(1e-5, 1e-2, True)


def test_unscoped_value_applies_to_every_family_that_has_it() -> None:
    space = build_space(optimizers=["sgd", "momentum", "adam"], params={"momentum": ["0.8:0.95"]})
    assert space.families["momentum"]["momentum"].dist == Range(0.8, 0.95, False)
    assert "momentum" not in space.families["adam"]
    assert "momentum" not in space.families["sgd"]


def test_later_values_win() -> None:
    space = build_space(optimizers=["adam"], params={"lr": ["1e-4:1e-2", "adam=1e-3"]})
    assert space.families["adam"]["lr"].dist == Fixed(1e-3)


@pytest.mark.parametrize(
    ("optimizers", "params", "message"),
    [
        (["adamm"], {}, "unknown optimizer 'adamm'; did you mean 'adam'? known: sgd, momentum"),
        (["sgd"], {"lr": ["adamm=1e-3:1e-2"]},
         "--lr adamm=1e-3:1e-2: unknown optimizer 'adamm'; did you mean 'adam'?"),
        (["sgd", "adam"], {"momentum": ["adam=0.5:0.9"]},
         "--momentum adam=0.5:0.9: adam has no momentum; momentum applies to momentum, "
         "nesterov, rmsprop"),
        (["sgd", "adam"], {"momentum": ["0.9"]},
         "--momentum 0.9: none of the optimizers of this study (sgd, adam) has momentum; it "
         "applies to momentum, nesterov, rmsprop"),
        (["sgd"], {"lr": ["adam=1e-4:1e-2"]},
         "--lr adam=1e-4:1e-2: adam is not among the optimizers of this study (sgd); add it "
         "to --optimizers"),
        (["sgd", "adam"], {"lr": ["adam=1e-4:1e-2:linear"]},
         "lr must be searched the same way in every family (all log ranges, all linear ranges, "
         "or one common choice list), but sgd has 0.0001:1 (log) and adam has 0.0001:0.01"),
        (["sgd", "adam"], {"lr": ["adam=0.001,0.01"]},
         "lr must be searched the same way in every family"),
        (["sgd"], {"weight_decay": ["sgd=-1"]}, "weight_decay must be >= 0"),
        ([" ", ""], {}, "--optimizers needs at least one family"),
        (["nesterov"], {"momentum": ["0:0.9"]},
         "--momentum 0:0.9: nesterov needs momentum > 0, but 0:0.9 allows 0; give a range "
         "above 0 (e.g. --momentum nesterov=0.5:0.99)"),
        (["sgd", "nesterov"], {"momentum": ["nesterov=0,0.9"]},
         "nesterov needs momentum > 0, but 0,0.9 allows 0"),
    ],
)
def test_scope_errors(optimizers: list[str], params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SpaceError) as info:
        build_space(optimizers=optimizers, params=params)
    assert message in str(info.value)


def test_unknown_family_without_a_close_match_lists_the_known() -> None:
    with pytest.raises(SpaceError) as info:
        build_space(optimizers=["lbfgs"])
    assert str(info.value).startswith("unknown optimizer 'lbfgs'; known: sgd, momentum, ")
    assert "did you mean" not in str(info.value)


def test_same_kind_in_every_family_is_accepted() -> None:
    # Different bounds are fine; only the kind and scale must agree (Optuna's rule).
    space = build_space(optimizers=["sgd", "adam"],
                        params={"lr": ["sgd=1e-2:1", "adam=1e-5:1e-3"]})
    assert space.families["sgd"]["lr"].dist.log and space.families["adam"]["lr"].dist.log
    # A fixed value in one family does not clash with a range in another.
    build_space(optimizers=["sgd", "adam"], params={"lr": ["sgd=0.1"]})


def test_momentum_zero_is_fine_where_torch_takes_it() -> None:
    space = build_space(optimizers=["momentum", "rmsprop"], params={"momentum": ["0:0.9"]})
    assert space.families["momentum"]["momentum"].dist == Range(0.0, 0.9, False)
    assert space.families["rmsprop"]["momentum"].dist == Range(0.0, 0.9, False)


def test_other_space_errors() -> None:
    with pytest.raises(SpaceError, match="epochs must be >= 1, but got epochs=0"):
        build_space(epochs=0)
    with pytest.raises(SpaceError, match="unknown scheduler 'linear'"):
        build_space(scheduler="linear")
    with pytest.raises(SpaceError, match="batch_size must be > 0"):
        build_space(batch_size="0")
