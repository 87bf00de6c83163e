"""A study continued with a different space: refused with the difference, unless asked.

Optuna alone fails on such a study at the first trial with "CategoricalDistribution does not
support dynamic value space"; opttune says what changed (added, removed, narrowed, widened),
and with --allow-changed-space continues, old trials still counting, as far as Optuna can.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution

from tuner.cli.commands import cli
from tuner.search.runner import search
from tuner.space.diff import diff_lines
from tuner.space.searchspace import build_space
from tuner.study.space_conflicts import optuna_conflicts


def test_each_kind_of_change_is_named() -> None:
    old = build_space(optimizers=["sgd", "adam"], params={"lr": ["1e-4:1e-1"],
                                                          "beta1": ["0.8:0.95"]})
    new = build_space(optimizers=["sgd", "rmsprop"], params={
        "lr": ["sgd=1e-3:1e-2", "rmsprop=1e-4:1e-1"], "weight_decay": ["sgd=1e-7:0.1"]},
        batch_size="64,128", epochs=5)
    lines = diff_lines(old, new)
    assert "optimizer rmsprop added" in lines
    assert "optimizer adam removed" in lines
    assert "sgd.lr narrowed: 0.0001:0.1 (log) -> 0.001:0.01 (log)" in lines
    assert "sgd.weight_decay widened: 1e-06:0.01 (log) -> 1e-07:0.1 (log)" in lines
    assert "batch_size changed: 128 (fixed) -> 64,128" in lines
    assert "epochs changed: 3 -> 5" in lines
    assert diff_lines(old, old) == []


def test_changes_optuna_cannot_take_are_named() -> None:
    recorded = {"optimizer": CategoricalDistribution(["sgd"]),
                "lr": FloatDistribution(1e-4, 1e-1, log=True),
                "batch_size": CategoricalDistribution([64, 128])}
    moved = build_space(optimizers=["sgd"], params={"lr": ["1e-2:1"]}, batch_size="128")
    assert optuna_conflicts(recorded, moved) == []  # bounds move, a fixed value is free
    changed = build_space(optimizers=["sgd", "adam"], params={"lr": ["1e-4:1e-1:linear"]},
                          batch_size="32,64")
    assert optuna_conflicts(recorded, changed) == [
        "the choices of optimizer (sgd -> sgd,adam)",
        "lr from a log range to a linear one",
        "the choices of batch_size (64,128 -> 32,64)"]


def snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["search", "--task", "digits-mlp", "--study", "s",
                                      "--optimizers", "sgd", "--epochs", "1", "--seed", "1",
                                      "--batch-size", "512",
                                      "--home", str(home), *args])
    return result.exit_code, " ".join(result.output.split())


def test_a_changed_space_is_refused_then_allowed(home: Path) -> None:
    search(task="digits-mlp", study="s", optimizers=["sgd"], params={"lr": ["1e-3:1e-1"]},
           n_trials=2, epochs=1, seed=1, batch_size="512", home=home)
    before = snapshot(home)

    code, out = run(home, "--lr", "1e-2:1", "--n-trials", "3")
    assert code == 1 and "Traceback" not in out
    assert out.count("Error:") == 1
    assert ("Error: the search space of study 's' differs from the stored one: sgd.lr moved: "
            "0.001:0.1 (log) -> 0.01:1 (log); run `opttune resume s` to keep the stored space, "
            "pass --allow-changed-space") in out
    code, out = run(home, "--lr", "1e-2:1e-1", "--weight-decay", "1e-7:0.1", "--n-trials", "3")
    assert code == 1
    assert "sgd.lr narrowed" in out and "sgd.weight_decay widened" in out
    assert snapshot(home) == before  # nothing written by a refused search

    code, out = run(home, "--lr", "1e-2:1e-1", "--n-trials", "3", "--allow-changed-space")
    assert code == 0, out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{home / 'opttune.db'}")
    assert len(study.trials) == 3  # the two old trials counted towards the 3
    assert 1e-2 <= study.trials[2].params["lr"] <= 1e-1
    assert '"low": 0.01' in study.user_attrs["space"]  # the new space is the study's now


def test_a_change_optuna_cannot_take_is_refused_even_when_allowed(home: Path) -> None:
    search(task="digits-mlp", study="s", optimizers=["sgd"], n_trials=1, epochs=1, seed=1,
           batch_size="512", home=home)
    before = snapshot(home)
    code, out = run(home, "--optimizers", "sgd,adam", "--n-trials", "2",
                    "--allow-changed-space")
    assert code == 1 and "Traceback" not in out
    assert ("Error: study 's' cannot continue with this space, even with "
            "--allow-changed-space: it changes the choices of optimizer (sgd -> sgd,adam)") in out
    assert "choose another --study name" in out
    assert snapshot(home) == before
