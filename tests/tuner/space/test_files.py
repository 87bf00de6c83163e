"""tuner.space.files: TOML and YAML space files give what the flags give, or a clear SpaceError."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import SpaceError
from tuner.space.dsl import Choice, Fixed, Range
from tuner.space.files import load_space_file
from tuner.space.searchspace import build_space

TOML = """
optimizers = ["sgd", "momentum", "adam"]
epochs = 2
batch_size = [64, 128]
scheduler = "cosine"
lr = "1e-4:1e-1"
weight_decay = 0

[adam]
lr = {low = 1e-5, high = 1e-2, log = true}
beta2 = [0.99, 0.999]

[momentum]                       # a family named like a hyperparameter
lr = "1e-3:1e-1"
momentum = {low = 0.8, high = 0.95}
"""

YAML = """
optimizers: [sgd, momentum, adam]
epochs: 2
batch_size: [64, 128]
scheduler: cosine
lr: "1e-4:1e-1"
weight_decay: 0
adam:
  lr: {low: 1.0e-5, high: 1.0e-2, log: true}
  beta2: [0.99, 0.999]
momentum:
  lr: "1e-3:1e-1"
  momentum: {low: 0.8, high: 0.95}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file(tmp_path: Path) -> None:
    values = load_space_file(write(tmp_path, "space.toml", TOML))
    assert values["optimizers"] == ["sgd", "momentum", "adam"]
    assert values["epochs"] == 2 and values["batch_size"] == "64,128"
    assert values["scheduler"] == "cosine"
    assert values["params"] == {
        "lr": ["1e-4:1e-1", "adam=1e-05:0.01:log", "momentum=1e-3:1e-1"],
        "weight_decay": ["0"],
        "momentum": ["momentum=0.8:0.95"],
        "beta2": ["adam=0.99,0.999"],
    }
    _check_space(build_space(file_values=values))


def test_yaml_file_gives_the_same_space(tmp_path: Path) -> None:
    from_yaml = build_space(file_values=load_space_file(write(tmp_path, "space.yaml", YAML)))
    from_toml = build_space(file_values=load_space_file(write(tmp_path, "space.toml", TOML)))
    _check_space(from_yaml)
    assert from_yaml == from_toml
    # .yml is YAML too
    assert build_space(file_values=load_space_file(write(tmp_path, "s.yml", YAML))) == from_yaml


def _check_space(space: object) -> None:
    from tuner.space.searchspace import Space

    assert isinstance(space, Space)
    assert list(space.families) == ["sgd", "momentum", "adam"]
    assert space.epochs == 2
    assert space.batch_size.dist == Choice((64, 128))
    assert space.scheduler.dist == Fixed("cosine")
    assert space.families["sgd"]["lr"].dist == Range(1e-4, 1e-1, True)
    assert space.families["momentum"]["lr"].dist == Range(1e-3, 1e-1, True)
    assert space.families["momentum"]["momentum"].dist == Range(0.8, 0.95, False)
    assert space.families["adam"]["lr"].dist == Range(1e-5, 1e-2, True)
    assert space.families["adam"]["beta2"].dist == Choice((0.99, 0.999))
    for family in space.families.values():
        assert family["weight_decay"].dist == Fixed(0.0)


def test_flags_override_the_file(tmp_path: Path) -> None:
    values = load_space_file(write(tmp_path, "space.toml", TOML))
    space = build_space(file_values=values, optimizers=["adam"], epochs=1, batch_size="32",
                        params={"lr": ["1e-3:1e-2"]})
    assert list(space.families) == ["adam"] and space.epochs == 1
    assert space.batch_size.dist == Fixed(32)
    assert space.families["adam"]["lr"].dist == Range(1e-3, 1e-2, True)
    assert space.families["adam"]["beta2"].dist == Choice((0.99, 0.999))  # the file's, kept
    # The file's lines for the families --optimizers left out do not apply.
    path = write(tmp_path, "m.toml", 'momentum = "0.8:0.9"\n[sgd]\nlr = "0.1:1"\n')
    space = build_space(file_values=load_space_file(path), optimizers=["adam"])
    assert list(space.families) == ["adam"]


def test_table_scale_linear(tmp_path: Path) -> None:
    values = load_space_file(write(tmp_path, "s.toml", 'optimizers = "sgd"\n'
                                   "lr = {low = 0.01, high = 0.1, log = false}\n"))
    assert values["optimizers"] == ["sgd"]
    assert build_space(file_values=values).families["sgd"]["lr"].dist == Range(0.01, 0.1, False)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.toml", "lr = [", "is not valid TOML"),
        ("s.yaml", "lr: [1, 2", "is not valid YAML"),
        ("s.yaml", "- sgd\n- adam\n", "the space file must be a table of keys, but got list"),
        ("s.toml", "learning_rate = 0.1", "unknown key 'learning_rate'; known keys: "
                                          "optimizers, epochs, batch_size, scheduler, lr"),
        ("s.toml", "[adam]\nlearning_rate = 0.1", "adam.learning_rate: unknown hyperparameter; "
                                                  "known: lr, momentum"),
        ("s.toml", "adam = 3", "adam must be a table of that family's hyperparameters, but got 3"),
        ("s.toml", "epochs = 2.5", "epochs must be an integer, but got 2.5"),
        ("s.toml", "epochs = true", "epochs must be an integer, but got True"),
        ("s.toml", "optimizers = 3", "optimizers must be a list of family names, but got 3"),
        ("s.toml", "optimizers = [1, 2]", "optimizers must be a list of family names"),
        ("s.toml", "lr = true", "lr must be a number, a string or a list, but got True"),
        ("s.toml", "lr = []", "lr must be a number, a string, a list or a table, but got []"),
        ("s.toml", "lr = [true, false]", "lr must be a number, a string, a list or a table"),
        ("s.toml", "lr = {low = 1e-4}", "lr as a table needs low and high (and optionally log), "
                                        "but got keys ['low']"),
        ("s.toml", "lr = {low = 1e-4, high = 1e-2, scale = 'log'}",
         "lr as a table needs low and high (and optionally log), but got keys "
         "['high', 'low', 'scale']"),
        ("s.toml", "lr = {low = '1e-4', high = 1e-2}", "lr: low and high must be numbers"),
        ("s.toml", "[adam]\nlr = {low = 1e-2, high = 1e-4}", None),
    ],
)
def test_file_errors(tmp_path: Path, name: str, text: str, message: str | None) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(SpaceError) as info:
        build_space(file_values=load_space_file(path))
    assert str(path) in str(info.value) or message is None
    if message is None:  # a bad range is reported by the DSL, the same as on the command line
        assert "lr range must have LOW < HIGH, but got '0.01:0.0001'" in str(info.value)
    else:
        assert message in str(info.value)


def test_file_values_checked_like_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", 'optimizers = ["sgd", "adam"]\n[adam]\nmomentum = 0.9\n')
    with pytest.raises(SpaceError, match="adam has no momentum; momentum applies to momentum"):
        build_space(file_values=load_space_file(path))
    path = write(tmp_path, "s.toml", 'optimizers = ["adam"]\n[sgd]\nlr = "0.1:1"\n')
    with pytest.raises(SpaceError, match="sgd is not among the optimizers of this study"):
        build_space(file_values=load_space_file(path))
    path = write(tmp_path, "s.toml", 'optimizers = ["sgd", "adamm"]\n')
    with pytest.raises(SpaceError, match="unknown optimizer 'adamm'; did you mean 'adam'"):
        build_space(file_values=load_space_file(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"space file .*nope\.toml does not exist"):
        load_space_file(tmp_path / "nope.toml")
