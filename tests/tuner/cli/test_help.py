"""Every command explains itself (--help) and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner.cli.commands import cli

README = Path(__file__).resolve().parents[3] / "README.md"
COMMANDS = sorted(cli.commands)


def test_the_commands_are_there() -> None:
    assert {"search", "resume", "tasks", "studies", "trials", "best", "compare", "plot",
            "export", "retrain", "ui", "delete"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_text(name: str) -> None:
    command = cli.commands[name]
    assert command.help and len(command.help.strip()) > 20, f"`opttune {name}` has no help"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert f"Usage: cli {name}" in result.output and command.help.split("\n")[0] in \
        " ".join(result.output.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    text = README.read_text(encoding="utf-8")
    assert f"opttune {name}" in text, f"README.md never shows `opttune {name}`"
