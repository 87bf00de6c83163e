"""The values JSON holds, as a type: what the study stores (Optuna's user attributes), the
benchmark's record and ``--format json`` are made of. Reading one narrows it (``isinstance``)
or turns it into a typed record at once; nothing passes ``Any`` along.
"""

from __future__ import annotations

from typing import TypeAlias

JsonValue: TypeAlias = (None | bool | int | float | str | list["JsonValue"]
                        | dict[str, "JsonValue"])
JsonObject: TypeAlias = dict[str, JsonValue]


def optional_text(stored: object) -> str | None:
    """A stored value read as text, None where nothing is stored (an attribute that an older
    release, or another program, did not write)."""
    return None if stored is None else str(stored)
