"""Errors that reach the user as one clear line.

Every error opttune raises on purpose derives from :class:`OpttuneError`; the CLI turns it
into ``Error: <message>`` and exit code 1, with no traceback.
"""

from __future__ import annotations


class OpttuneError(Exception):
    """An error whose message is meant for the user: it states the rule, the value and the fix."""


class SpaceError(OpttuneError):
    """A search space (flags or file) that cannot be used."""


class TaskError(OpttuneError):
    """A task that cannot be found, imported or used."""


class DataError(OpttuneError):
    """Data that is missing, malformed or fails its checksum."""


class StoreError(OpttuneError):
    """A study store or tracking store that cannot be opened or used."""


class StudyNotFoundError(StoreError):
    """A study name that is not in the store."""
