"""The search header says exactly what each family's defaults trial runs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tuner.cli.commands import cli


def _header(home: Path, *args: str) -> str:
    """The search's output as one flowing text: rich breaks lines at its console's width."""
    result = CliRunner().invoke(cli, ["search", "--task", "digits-mlp", "--jobs", "0",
                                      "--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_the_momentum_families_defaults_trial_is_named_for_what_it_runs(home: Path) -> None:
    """Guards the wording: torch's SGD defaults to momentum 0 (plain SGD), so the momentum
    families' first trial, which runs momentum 0.9, is said to be that, not just "defaults"."""
    text = _header(home, "--optimizers", "sgd,momentum,nesterov,adam")
    assert "The first trial of each optimizer runs its PyTorch defaults." in text
    assert ("For momentum and nesterov that is torch's SGD with momentum 0.9 (torch's own "
            "default momentum, 0, is plain SGD).") in text


def test_without_a_momentum_family_nothing_more_is_said(home: Path) -> None:
    text = _header(home, "--optimizers", "sgd,adam")
    assert "The first trial of each optimizer runs its PyTorch defaults." in text
    assert "momentum 0.9" not in text


def test_a_momentum_family_whose_space_leaves_out_0_9_has_no_defaults_trial(
        home: Path) -> None:
    text = _header(home, "--study", "narrow", "--optimizers", "sgd,momentum",
                   "--momentum", "0.5:0.8")
    assert "The first trial of sgd runs its PyTorch defaults." in text
    assert "momentum has no defaults trial: the space leaves out its default momentum." in text
    assert "momentum 0.9" not in text
