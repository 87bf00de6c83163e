"""A new SQLite store (MLflow's or Optuna's), copied from an empty one made once per version
of the library that writes it.

Creating an MLflow SQLite store runs MLflow's schema migrations, several seconds that every
new home would pay again (the largest part of a short study's fixed cost); creating Optuna's
reads its migration scripts to stamp the schema version (about a second). The first store
this machine creates is copied, while still empty, to the user cache; later new stores start
as a copy of it. A template that is missing, unreadable or of another version is simply not
used. `library` is "mlflow" or "optuna".
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from tasks.datasets import default_cache_dir

_SQLITE_HEADER = b"SQLite format 3\x00"


LIBRARIES = ("mlflow", "optuna")


def template_path(library: str) -> Path:

    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {', '.join(LIBRARIES)}, but got {library!r}")
    return default_cache_dir() / f"{library}-store-{version(library)}.db"


def is_new(path: Path) -> bool:
    """No store yet at `path` (absent, or an empty file that SQLite would initialise)."""
    return not path.exists() or path.stat().st_size == 0


@contextlib.contextmanager
def template_for(path: Path | None, *, library: str) -> Iterator[None]:
    """Around the code that opens (so creates) the SQLite store at `path` (None: not an
    SQLite store, nothing done): a new store starts as a copy of `library`'s template; one
    that the library had to make from scratch becomes the template once that code succeeds
    (the store is still empty then)."""
    made_here = path is not None and is_new(path) and \
        not start_from_template(path, library=library)
    yield
    if made_here and path is not None:
        keep_as_template(path, library=library)


def start_from_template(path: Path, *, library: str) -> bool:
    """Make the new store at `path` a copy of `library`'s template; False when there is none
    (or another process made the store first)."""
    template = template_path(library)
    if not _is_sqlite(template):
        return False
    try:
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, staged)
        try:
            if path.exists() and path.stat().st_size == 0:
                path.unlink()  # an empty file: SQLite would have made it a new database
            os.link(staged, path)  # never over a store that another process just made
        finally:
            staged.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def keep_as_template(path: Path, *, library: str) -> None:
    """Save the just-created, still empty store at `path` as `library`'s template (best
    effort: a read-only cache only means the next new store is made from scratch again)."""
    template = template_path(library)
    if _is_sqlite(template):
        return  # another process saved one first (a bad one is replaced)
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        staged = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, staged)
        os.replace(staged, template)
    except OSError:
        pass


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == _SQLITE_HEADER
    except OSError:
        return False
