"""Where studies and runs are kept: the home folder, store URLs, and opening the Optuna store.

Bad stores (a corrupt file, a schema from another Optuna, an unreachable server) become one
clear error here, before any training starts. Passwords in URLs never leave this module
unmasked: :func:`redact` is what every message and log uses.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import StoreError

HOME_ENV = "OPTTUNE_HOME"
HEARTBEAT_ENV = "OPTTUNE_HEARTBEAT_INTERVAL"
GRACE_ENV = "OPTTUNE_HEARTBEAT_GRACE"
# The password runs to the "@" (SQLAlchemy accepts "/" and ":" in it unencoded).
_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)")


def redact(text: str) -> str:
    """Mask the password of every URL in `text` (``user:***@host``)."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***", text)


@dataclass(frozen=True)
class Stores:
    """The resolved locations of one invocation's stores."""

    home: Path
    storage_url: str
    tracking_uri: str
    artifact_root: Path

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_path(self.storage_url)


def resolve_stores(*, home: str | Path | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> Stores:
    """`--home`, else $OPTTUNE_HOME, else ./studies; explicit URLs override the defaults."""
    base = Path(home if home is not None else os.environ.get(HOME_ENV) or "studies")
    base = base.expanduser().resolve()
    return Stores(
        home=base,
        storage_url=storage or f"sqlite:///{base / 'opttune.db'}",
        tracking_uri=tracking_uri or f"sqlite:///{base / 'mlflow.db'}",
        artifact_root=base / "mlartifacts",
    )


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        return Path(rest.split("?", 1)[0]) if rest not in ("", ":memory:") else None
    return None


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not an SQLite database before anything writes to it."""
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not an SQLite store file")
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc.strerror}") from None
    if path.stat().st_size > 0 and header != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not an SQLite database (it may be corrupt or another "
                         f"kind of file); move it away, or point --home/--storage elsewhere")


def heartbeat_settings() -> dict[str, int]:
    """Seconds between a running trial's heartbeats, and silence before it counts as dead.

    $OPTTUNE_HEARTBEAT_INTERVAL and $OPTTUNE_HEARTBEAT_GRACE override 20 and 60 (whole seconds).
    """
    values = {}
    for key, env, default in (("heartbeat_interval", HEARTBEAT_ENV, 20),
                              ("grace_period", GRACE_ENV, 60)):
        raw = os.environ.get(env, "").strip() or str(default)
        try:
            values[key] = int(raw)
        except ValueError:
            values[key] = 0
        if values[key] < 1:
            raise StoreError(f"${env} must be a whole number of seconds >= 1, but got {raw!r}")
    return values


def is_server_url(url: str) -> bool:
    """A database server (PostgreSQL, MySQL): where processes on many machines meet."""
    return sqlite_path(url) is None and not url.startswith("sqlite:")


def driver_url(url: str) -> str:
    """`postgresql://` with the driver the `postgres` extra installs (psycopg 3).

    SQLAlchemy before 2.1 reads a bare postgresql:// as psycopg2, which that extra lacks.
    """
    import importlib.util

    if url.startswith("postgres://"):  # Heroku's spelling, which SQLAlchemy no longer reads
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def open_storage(url: str, *, create: bool, heartbeat: bool = False) -> Any:
    """Open the Optuna RDB storage at `url`, turning every failure into a StoreError."""
    import optuna
    import sqlalchemy.exc

    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path)
        if not path.exists() and not create:
            raise StoreError(f"there is no study store at {path}; run `opttune search` first, "
                             f"or give the right --home or --storage")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {path.parent}: "
                             f"{exc.strerror or exc}; give a writable --home or --storage"
                             ) from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        # Wait for the lock rather than fail at once when another process is writing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    heartbeat_kwargs: dict[str, Any] = {}
    if heartbeat:
        # No retry callback: tuner.study.fail_stale fails and re-queues a stale trial once.
        heartbeat_kwargs = heartbeat_settings()
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine_kwargs,
                                              **heartbeat_kwargs)
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(f"--storage {redact(url)!r} is not a valid database URL "
                         f"(e.g. sqlite:///path/opttune.db or postgresql://user@host/db)") from None
    except ModuleNotFoundError as exc:
        raise StoreError(f"the database driver {exc.name!r} for {redact(url)} is not installed; "
                         f"for PostgreSQL: pip install 'opttune[postgres]'") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = redact(str(getattr(exc, "orig", exc)) or type(exc).__name__).splitlines()[0]
        where = path if path is not None else redact(url)
        raise StoreError(f"cannot open the study store {where}: {detail}") from None
    except RuntimeError as exc:  # Optuna's schema-version check
        msg = redact(str(exc)).splitlines()[0]
        raise StoreError(f"the study store {redact(url)} has a schema this Optuna cannot use: "
                         f"{msg}") from None
