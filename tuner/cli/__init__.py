"""The command line: ``commands`` (thin click commands over the library) and ``render`` (the
only module that prints)."""

from __future__ import annotations

from tuner.cli.commands import cli, main

__all__ = ["cli", "main"]
