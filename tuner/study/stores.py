"""Opening the Optuna store, and checking store files and servers before any work: a bad
store (a corrupt file, a schema from another Optuna, an unreachable server) becomes one clear
error here, before any training starts. Where the stores are, and the mask for their
passwords (redact, which every message and log uses), are tuner.study.locations'.

SQLAlchemy (0.12 s to import) is imported by the functions that use it: a search imports
this module before it starts its MLflow process, which should start as early as it can.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage

try:
    import fcntl
except ImportError:  # Windows: no flock; the retry in open_storage still covers the race
    fcntl = None  # type: ignore[assignment]

from tuner.errors import StoreError
from tuner.study import store_template
from tuner.study.locations import PASSWORD_PARAM, Stores, driver_url, redact, sqlite_path
from tuner.study.optuna_adapter import alembic_folder

HEARTBEAT_ENV = "OPTTUNE_HEARTBEAT_INTERVAL"
GRACE_ENV = "OPTTUNE_HEARTBEAT_GRACE"
def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not an SQLite database before anything writes to it."""
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not an SQLite store file")
    header = _read_header(path)
    # An empty file is a store SQLite has not written yet. (The header read is the test, not
    # a later stat: another process may be writing the first page right now.)
    if header and header[:16] != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not an SQLite database (it may be corrupt or another "
                         f"kind of file); move it away, or point --home/--storage elsewhere")
    _check_not_truncated(path, header)


def _read_header(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc.strerror}") from None


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


def open_storage(url: str, *, create: bool, heartbeat: bool = False) -> RDBStorage:
    """Open the Optuna RDB storage at `url`, turning every failure into a StoreError."""
    import sqlalchemy  # noqa: PLC0415  (0.12 s: see the module docstring)
    path = sqlite_path(url)
    _check_store_location(url, path, create=create)
    engine_kwargs: dict[str, object] = {}
    if path is not None:
        # Wait for the lock rather than fail at once when another process is writing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    # No retry callback: studies.fail_stale fails and re-queues a stale trial once.
    beats = heartbeat_settings() if heartbeat else {}
    try:
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                with warnings.catch_warnings(), _folder_lock(path):
                    if path is not None:  # checked under the lock: no half-made store is seen
                        check_sqlite_file(path)
                        check_optuna_schema(path)
                    # heartbeats are "experimental" in Optuna since 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    with store_template.template_for(path, library="optuna"):
                        return RDBStorage(
                            driver_url(url), engine_kwargs=engine_kwargs,
                            heartbeat_interval=beats.get("heartbeat_interval"),
                            grace_period=beats.get("grace_period"))
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                    sqlalchemy.exc.ProgrammingError) as exc:
                # Processes opening a new store at once (--jobs, workers) race to create its
                # tables; the losers fail on a table or version row the winner just made.
                # Once it is made, opening again finds it.
                if attempt == _CREATE_ATTEMPTS or not _lost_creation_race(exc):
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(f"--storage {redact(url)!r} is not a valid database URL "
                         f"(e.g. sqlite:///path/opttune.db or postgresql://user@host/db)") from None
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        raise StoreError(_driver_message(url, exc)) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = redact(str(getattr(exc, "orig", exc)) or type(exc).__name__).splitlines()[0]
        where = path if path is not None else redact(url)
        raise StoreError(f"cannot open the study store {where}: {detail}") from None
    except RuntimeError as exc:  # Optuna's schema-version check (server databases)
        raise StoreError(_schema_message(redact(url), older="storage upgrade" in str(exc))
                         ) from None


def _check_store_location(url: str, path: Path | None, *, create: bool) -> None:
    """Refuse a missing SQLite store (unless `create`) and make its folder; or refuse a server
    URL that SQLAlchemy would misread (see check_password_encoded)."""
    if path is not None:
        if not path.exists() and not create:
            raise StoreError(f"there is no study store at {path}; run `opttune search` first, "
                             f"or give the right --home or --storage")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {path.parent}: "
                             f"{exc.strerror or exc}; give a writable --home or --storage"
                             ) from None
    else:
        check_password_encoded(url)


_CREATE_ATTEMPTS = 8
_RACE_SIGNS = ("already exists", "UNIQUE constraint failed", "duplicate key")


@contextlib.contextmanager
def _folder_lock(path: Path | None, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on an SQLite store's folder while Optuna opens it, so that
    processes on one machine create its tables one after another; checks hold it shared, so
    that they never read a store half made. Server stores rely on the retry alone.

    (flock is per open file: a thread holding it must not ask again, or it waits forever.)
    """
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    handle = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _lost_creation_race(exc: Exception) -> bool:
    detail = str(getattr(exc, "orig", exc))
    return any(sign in detail for sign in _RACE_SIGNS)


# -- checks before anything is opened (a refused store stays byte for byte as it was) --------
def check_store_files(stores: Stores) -> None:
    """Check both SQLite store files before either store is opened, so that a bad one is
    refused before the other is created."""
    for url in (stores.storage_url, stores.tracking_uri):
        path = sqlite_path(url)
        if path is not None:
            with _folder_lock(path, shared=True):
                check_sqlite_file(path)
                if url == stores.storage_url:
                    check_optuna_schema(path)


def _check_not_truncated(path: Path, header: bytes) -> None:
    """SQLite's header records the database size; a shorter file lost its tail.

    A writer grows the file after it rewrites the header, and keeps a rollback journal
    beside it until it commits, so a short file is judged only while no journal exists
    (a journal left by a crash is SQLite's to roll back, which it does on opening).
    """
    for _ in range(3):
        recorded, size = _recorded_size(header), path.stat().st_size
        if len(header) < 100 and header:
            why = "it is shorter than an SQLite header"
        elif recorded > size:
            why = f"it holds {size} bytes of the {recorded} its header records"
        else:
            return
        if Path(f"{path}-journal").exists():
            return
        # The journal may have gone since the header was read: read it once more.
        header = _read_header(path)
    raise StoreError(_damaged(path, why))


def _recorded_size(header: bytes) -> int:
    if len(header) < 100:
        return 0
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = header[24:28] == header[92:96]  # as SQLite decides it
    return pages * page_size if size_is_valid else 0


def _damaged(path: Path, why: str) -> str:
    return (f"the store {path} is damaged ({why}: truncated by a full disk or an interrupted "
            f"copy); restore it from a backup, or move it away and point --home/--storage "
            f"elsewhere")


def check_optuna_schema(path: Path) -> None:
    """Refuse an existing Optuna store of another schema version before Optuna opens it
    (opening would first add the tables it misses, changing the file, then fail)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            if "alembic_version" not in tables:
                return  # empty, or made before Optuna used alembic: Optuna decides
            if "version_info" not in tables:
                raise StoreError(f"{path} is not an Optuna study store (it has none of "
                                 f"Optuna's tables; an MLflow store?); give the study store's "
                                 f"--home or --storage")
            found = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
            writers = [r[0] for r in con.execute("SELECT library_version FROM version_info")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(_damaged(path, str(exc))) from None
    if not found or writers == [optuna.__version__]:
        return  # written by this very Optuna (reading its schema history takes a while)
    head, known = _optuna_schema_versions()
    if found[0] != head:
        raise StoreError(_schema_message(str(path), older=found[0] in known, found=found[0],
                                         head=head))


@functools.lru_cache(maxsize=1)
def _optuna_schema_versions() -> tuple[str, frozenset[str]]:
    """The schema revision this Optuna writes, and every revision it knows."""
    # alembic: 0.3 s to import, needed only for a store that another Optuna wrote.
    from alembic.config import Config  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(alembic_folder()))
    script = ScriptDirectory.from_config(config)
    return str(script.get_current_head()), frozenset(r.revision for r in script.walk_revisions())


def _schema_message(where: str, *, older: bool, found: str = "", head: str = "") -> str:
    versions = f" (schema {found}; Optuna {optuna.__version__} uses {head})" if found else ""
    if older:
        url = where if "://" in where else f"sqlite:///{where}"
        return (f"the study store {where} was made by an older Optuna{versions}; back it up, "
                f"then upgrade it in place with: optuna storage upgrade --storage {url}")
    return (f"the study store {where} was made by a newer Optuna than this one{versions}; "
            f"upgrade Optuna (pip install -U optuna), or give another --home/--storage")


def _driver_message(url: str, exc: ImportError) -> str:
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
    name = cause.name or str(cause).split("'")[1 if "'" in str(cause) else 0]
    fix = ("pip install 'opttune[postgres]'" if url.startswith("postgres")
           else "install the driver that the URL names")
    return (f"the database driver {name!r} for {redact(url)} is not installed; {fix}")


def check_password_encoded(url: str) -> None:
    """Refuse a database URL whose password holds a raw "@": SQLAlchemy ends the password at
    the first "@" and takes the rest for the host or database, which the driver's errors
    then name unmasked (``failed to resolve host 'rest@db.example'``). So too a raw "@" in
    a ``?password=`` after a port: SQLAlchemy reads ``u@h:5432/db?password=p@ss`` as user
    ``u@h``, password ``5432/db?password=p``, host ``ss``."""
    import sqlalchemy  # noqa: PLC0415  (0.12 s: see the module docstring)

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return  # opening it says what is wrong
    if parsed.password is None:
        return
    if "@" in f"{parsed.host or ''}{parsed.database or ''}" or \
            PASSWORD_PARAM.search(parsed.password):
        raise StoreError(f"the password in {redact(url)} holds a raw \"@\", where a URL ends "
                         f"it; write each \"@\" in it as %40")


def probe_database(url: str, *, what: str) -> None:
    """One quick connection to a database server, so that a wrong URL fails in seconds with
    one clear line (MLflow alone retries for nearly two minutes)."""
    import sqlalchemy  # noqa: PLC0415  (0.12 s: see the module docstring)

    check_password_encoded(url)

    connect_args = {"connect_timeout": 10} if url.startswith(("postgres", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(driver_url(url), connect_args=connect_args)
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(f"{redact(url)!r} is not a valid database URL for the {what}") from None
    except ImportError as exc:
        raise StoreError(_driver_message(url, exc)) from None
    try:
        with engine.connect():
            pass
    except ImportError as exc:
        raise StoreError(_driver_message(url, exc)) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = redact(str(getattr(exc, "orig", exc)) or type(exc).__name__).splitlines()[0]
        raise StoreError(f"cannot reach the {what} {redact(url)}: {detail}") from None
    finally:
        engine.dispose()
